//! Looking paths up in a commit's tree.

use super::error::{Result, StoreError};
use super::repo::Repo;
use crate::ostree::names::validate_file_name;
use crate::ostree::{Checksum, Commit};

/// What a path in a tree names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeNode {
    Dir { tree: Checksum, meta: Checksum },
    File { checksum: Checksum },
}

/// Most symlinks followed while resolving one path (as the kernel's 40).
const MAX_SYMLINK_HOPS: usize = 40;

impl Repo {
    /// Resolves an absolute or relative `path` inside a commit's tree,
    /// without following symlinks. `""` and `/` name the root.
    pub fn lookup_path(&self, commit: &Commit, path: &str) -> Result<TreeNode> {
        self.lookup_path_in(commit.root_tree, commit.root_meta, path)
    }

    /// [`lookup_path`](Self::lookup_path) in a tree no commit needs to
    /// name (the merged tree of a stage, say).
    pub fn lookup_path_in(
        &self,
        root_tree: Checksum,
        root_meta: Checksum,
        path: &str,
    ) -> Result<TreeNode> {
        let comps = split_path(path)?;
        self.lookup_components((root_tree, root_meta), &comps, path, false)
    }

    /// Like [`lookup_path`](Self::lookup_path) but follows symlinks inside
    /// the tree (never on the host), as `ostree cat` does.
    pub fn lookup_path_follow(&self, commit: &Commit, path: &str) -> Result<TreeNode> {
        let comps = split_path(path)?;
        self.lookup_components((commit.root_tree, commit.root_meta), &comps, path, true)
    }

    fn lookup_components(
        &self,
        (root_tree, root_meta): (Checksum, Checksum),
        comps: &[String],
        path: &str,
        follow: bool,
    ) -> Result<TreeNode> {
        let not_found = |reason| StoreError::PathNotFound {
            path: path.to_string(),
            reason,
        };
        let mut hops = 0;
        // Resolution state: the remaining components and the stack of
        // directories walked so far (for `..` in symlink targets).
        let mut todo: Vec<String> = comps.iter().rev().cloned().collect();
        let mut stack: Vec<(Checksum, Checksum)> = vec![(root_tree, root_meta)];
        let mut result = TreeNode::Dir {
            tree: root_tree,
            meta: root_meta,
        };
        while let Some(comp) = todo.pop() {
            if comp == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                let (tree, meta) = *stack.last().expect("root stays");
                result = TreeNode::Dir { tree, meta };
                continue;
            }
            if comp == "." {
                continue;
            }
            let (tree_csum, _) = *stack.last().expect("root stays");
            if !matches!(result, TreeNode::Dir { .. }) {
                return Err(not_found("a path component is not a directory"));
            }
            let tree = self.load_dirtree(&tree_csum)?;
            if let Some(d) = tree.dir(&comp) {
                stack.push((d.tree, d.meta));
                result = TreeNode::Dir {
                    tree: d.tree,
                    meta: d.meta,
                };
            } else if let Some(f) = tree.file(&comp) {
                if follow {
                    let obj = self.open_content(&f.checksum)?;
                    if obj.header.is_symlink() {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(not_found("too many levels of symbolic links"));
                        }
                        let target = obj.header.symlink_target;
                        if target.starts_with('/') {
                            stack.truncate(1);
                        }
                        for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                            todo.push(c.to_string());
                        }
                        let (tree, meta) = *stack.last().expect("root stays");
                        result = TreeNode::Dir { tree, meta };
                        continue;
                    }
                }
                result = TreeNode::File {
                    checksum: f.checksum,
                };
                if !todo.is_empty() {
                    return Err(not_found("a path component is not a directory"));
                }
            } else {
                return Err(not_found("no such file or directory in the commit"));
            }
        }
        Ok(result)
    }
}

/// Splits a tree path into validated components.
pub fn split_path(path: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c != ".." {
            validate_file_name(c)?;
        }
        out.push(c.to_string());
    }
    Ok(out)
}
