//! Phase 1: read and validate the whole tree before anything is written.
//!
//! The tree is walked breadth first, so directories come out parents
//! before children, grouped by level, and the subdirectories of one
//! directory are contiguous. Each distinct dirtree and dirmeta is loaded
//! (and parsed, which validates it) once, in parallel per level.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::error::CheckoutError;
use super::{CheckoutOptions, whiteout};
use crate::ostree::names::validate_file_name;
use crate::ostree::{Checksum, DirMeta, DirTree, ObjectName, ObjectType, TreeFile};
use crate::store::commit::MAX_DEPTH;
use crate::store::tree::split_path;
use crate::store::{Repo, TreeNode};

pub(super) struct Plan {
    /// Breadth-first; `dirs[0]` is DEST.
    pub dirs: Vec<PlanDir>,
    /// Index ranges of `dirs`, one per depth.
    pub levels: Vec<Range<usize>>,
    /// Files and symlinks to place (whiteout markers excluded).
    pub n_files: u64,
}

pub(super) struct PlanDir {
    /// Path below DEST, `""` for DEST itself, components joined by `/`.
    pub rel: String,
    pub tree: Arc<DirTree>,
    pub tree_csum: Checksum,
    /// `None` for the directory made to hold a single-file subpath, whose
    /// mode ostree leaves as created (`0700`).
    pub meta: Option<Arc<DirMeta>>,
    /// `dirs[children.start + i]` is `tree.dirs[i]`.
    pub children: Range<usize>,
    /// Names removed from this directory by `.wh.NAME` entries.
    pub whiteouts: Vec<String>,
    /// Indices into `tree.files` that are whiteout markers, not files.
    pub skip: Vec<usize>,
    /// The directory holds `.wh..wh..opq`: whatever DEST had there goes.
    pub opaque: bool,
}

/// `DEST/rel/name` for messages.
pub(super) fn display_path(dest: &Path, rel: &str, name: &str) -> PathBuf {
    let mut p = dest.to_path_buf();
    if !rel.is_empty() {
        p.push(rel);
    }
    if !name.is_empty() {
        p.push(name);
    }
    p
}

fn child_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

pub(super) fn build(
    repo: &Repo,
    (root_tree, root_meta): (Checksum, Checksum),
    opts: &CheckoutOptions,
    dest: &Path,
) -> Result<Plan, CheckoutError> {
    let load_tree = |c: &Checksum, rel: &str| {
        repo.load_dirtree(c)
            .map(Arc::new)
            .map_err(|source| CheckoutError::Object {
                path: display_path(dest, rel, ""),
                object: ObjectName::new(*c, ObjectType::DirTree),
                source: Box::new(source),
            })
    };
    let load_meta = |c: &Checksum, rel: &str| {
        repo.load_dirmeta(c)
            .map(Arc::new)
            .map_err(|source| CheckoutError::Object {
                path: display_path(dest, rel, ""),
                object: ObjectName::new(*c, ObjectType::DirMeta),
                source: Box::new(source),
            })
    };

    let (tree_csum, tree, meta) = match &opts.subpath {
        None => (
            root_tree,
            load_tree(&root_tree, "")?,
            Some(load_meta(&root_meta, "")?),
        ),
        Some(sp) => {
            let subpath_err = |source| CheckoutError::Subpath {
                subpath: sp.clone(),
                source: Box::new(source),
            };
            match repo
                .lookup_path_in(root_tree, root_meta, sp)
                .map_err(subpath_err)?
            {
                TreeNode::Dir { tree, meta } => {
                    (tree, load_tree(&tree, "")?, Some(load_meta(&meta, "")?))
                }
                TreeNode::File { checksum } => {
                    // A file is placed inside DEST: model DEST as a
                    // directory holding just that file.
                    let comps = split_path(sp).map_err(subpath_err)?;
                    let name = comps.last().cloned().unwrap_or_default();
                    let tree = DirTree {
                        files: vec![TreeFile { name, checksum }],
                        dirs: Vec::new(),
                    };
                    (tree.checksum(), Arc::new(tree), None)
                }
            }
        }
    };

    let mut dirs = vec![PlanDir {
        rel: String::new(),
        tree,
        tree_csum,
        meta,
        children: 0..0,
        whiteouts: Vec::new(),
        skip: Vec::new(),
        opaque: false,
    }];
    classify(repo, opts, dest, &mut dirs[0])?;

    let mut trees: HashMap<Checksum, Arc<DirTree>> = HashMap::new();
    let mut metas: HashMap<Checksum, Arc<DirMeta>> = HashMap::new();
    let mut levels = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    while start < dirs.len() {
        let end = dirs.len();
        levels.push(start..end);
        depth += 1;

        // (parent, child rel path, dirtree, dirmeta) for the next level.
        let mut specs = Vec::new();
        for (i, d) in dirs.iter().enumerate().take(end).skip(start) {
            for sub in &d.tree.dirs {
                specs.push((i, child_rel(&d.rel, &sub.name), sub.tree, sub.meta));
            }
        }
        if let Some((_, rel, _, _)) = specs.first()
            && depth > MAX_DEPTH
        {
            return Err(CheckoutError::TooDeep {
                path: display_path(dest, rel, ""),
                max: MAX_DEPTH,
            });
        }

        // Load each dirtree and dirmeta not seen before, once, in parallel.
        let mut want_trees: HashMap<Checksum, &str> = HashMap::new();
        let mut want_metas: HashMap<Checksum, &str> = HashMap::new();
        for (_, rel, t, m) in &specs {
            if !trees.contains_key(t) {
                want_trees.entry(*t).or_insert(rel);
            }
            if !metas.contains_key(m) {
                want_metas.entry(*m).or_insert(rel);
            }
        }
        let new_trees = want_trees
            .into_par_iter()
            .map(|(c, rel)| Ok((c, load_tree(&c, rel)?)))
            .collect::<Result<Vec<_>, CheckoutError>>()?;
        trees.extend(new_trees);
        let new_metas = want_metas
            .into_par_iter()
            .map(|(c, rel)| Ok((c, load_meta(&c, rel)?)))
            .collect::<Result<Vec<_>, CheckoutError>>()?;
        metas.extend(new_metas);

        let first_new = dirs.len();
        for (parent, rel, t, m) in specs {
            let idx = dirs.len();
            let p = &mut dirs[parent];
            if p.children.is_empty() {
                p.children = idx..idx;
            }
            p.children.end = idx + 1;
            dirs.push(PlanDir {
                rel,
                tree: trees[&t].clone(),
                tree_csum: t,
                meta: Some(metas[&m].clone()),
                children: 0..0,
                whiteouts: Vec::new(),
                skip: Vec::new(),
                opaque: false,
            });
        }
        dirs[first_new..]
            .par_iter_mut()
            .try_for_each(|d| classify(repo, opts, dest, d))?;
        start = end;
    }

    let n_files = dirs
        .iter()
        .map(|d| (d.tree.files.len() - d.skip.len()) as u64)
        .sum();
    Ok(Plan {
        dirs,
        levels,
        n_files,
    })
}

/// Validates every entry name of a directory (again: the dirtree parser
/// already did, but these names become paths, so the check sits next to
/// the code that uses them) and finds its whiteouts.
fn classify(
    repo: &Repo,
    opts: &CheckoutOptions,
    dest: &Path,
    d: &mut PlanDir,
) -> Result<(), CheckoutError> {
    let names = d
        .tree
        .files
        .iter()
        .map(|f| &f.name)
        .chain(d.tree.dirs.iter().map(|s| &s.name));
    for name in names {
        validate_file_name(name).map_err(|source| CheckoutError::InvalidName {
            path: display_path(dest, &d.rel, ""),
            dirtree: d.tree_csum,
            source,
        })?;
    }
    if opts.whiteouts {
        whiteout::classify(repo, dest, d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        assert_eq!(child_rel("", "a"), "a");
        assert_eq!(child_rel("a/b", "c"), "a/b/c");
        assert_eq!(
            display_path(Path::new("/d"), "a/b", "c"),
            PathBuf::from("/d/a/b/c")
        );
        assert_eq!(display_path(Path::new("/d"), "", ""), PathBuf::from("/d"));
    }
}
