//! The tree a stack of commits shows when layered: what every union
//! backend displays before anything is written, computed from the commits'
//! dirtrees alone (no file is read).
//!
//! Layering rules, per directory, bottom layer first (the rules of a
//! checkout with [`Overwrite::Union`](crate::checkout::Overwrite::Union)
//! and whiteouts, with overlayfs's choice for directory metadata):
//! * `.wh..wh..opq` in a layer's directory hides what the layers below
//!   have in it; a regular file `.wh.NAME` hides `NAME` of the layers
//!   below. Neither marker is itself part of the result; a *symlink*
//!   named `.wh.NAME` is ordinary content, as in libostree.
//! * a file or symlink replaces whatever the layers below have at its
//!   name; a directory replaces a non-directory and merges into a
//!   directory.
//! * a merged directory takes its metadata (owner, mode, xattrs) from the
//!   top-most layer that has it, as overlayfs shows it. (`ostree checkout
//!   --union` keeps the first layer's instead.)
//!
//! A directory only one layer provides, with no whiteout anywhere below
//! it, is that layer's dirtree unchanged; everything else is written as
//! new dirtree objects in the caller's transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::ostree::{Checksum, DirTree, ObjectType, TreeDir, TreeFile};
use crate::store::commit::MAX_DEPTH;
use crate::store::{Repo, Result, StoreError, Transaction};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A directory of the merged tree: the layers' dirtrees that make it up,
/// bottom first, as (dirtree, dirmeta).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedDir {
    pub parts: Vec<(Checksum, Checksum)>,
    /// Known to hold no whiteout marker anywhere below (it comes from an
    /// already merged tree), so a single part is used as it is.
    pub clean: bool,
}

impl MergedDir {
    /// An already merged tree (no markers below it).
    pub fn merged(tree: Checksum, meta: Checksum) -> Self {
        MergedDir {
            parts: vec![(tree, meta)],
            clean: true,
        }
    }
}

/// An entry of a merged directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Checksum),
    Dir(MergedDir),
}

/// Whiteout markers of one directory of one layer.
#[derive(Default)]
struct Markers {
    opaque: bool,
    hidden: Vec<String>,
    /// Indices into the dirtree's files that are markers, not content.
    skip: Vec<usize>,
}

/// Computes merged directories, caching what it loads.
pub struct Merger<'r> {
    repo: &'r Repo,
    /// Also read dirtrees this transaction wrote but has not published.
    txn: Option<&'r Transaction<'r>>,
    /// Per dirtree: whether it or any directory below has a `.wh.` file.
    has_markers: Mutex<HashMap<Checksum, bool>>,
}

impl<'r> Merger<'r> {
    pub fn new(repo: &'r Repo) -> Self {
        Merger {
            repo,
            txn: None,
            has_markers: Mutex::new(HashMap::new()),
        }
    }

    /// A merger that also sees the objects `txn` has written so far.
    pub fn with_transaction(txn: &'r Transaction<'r>) -> Self {
        Merger {
            txn: Some(txn),
            ..Merger::new(txn.repo())
        }
    }

    fn load_dirtree(&self, c: &Checksum) -> Result<DirTree> {
        match (self.repo.load_dirtree(c), self.txn) {
            (Err(StoreError::MissingObject(name)), Some(txn)) => {
                let data = txn.load_staged(&name)?;
                let tree = DirTree::parse(&data)?;
                let actual = tree.checksum();
                if actual != *c {
                    return Err(StoreError::ChecksumMismatch {
                        object: name,
                        actual,
                    });
                }
                Ok(tree)
            }
            (r, _) => r,
        }
    }

    /// The root of the stack `layers` (commits, bottom first).
    pub fn root(&self, layers: &[Checksum]) -> Result<MergedDir> {
        let mut parts = Vec::new();
        for c in layers {
            let commit = self.repo.load_commit(c)?;
            parts.push((commit.root_tree, commit.root_meta));
        }
        Ok(MergedDir {
            parts,
            clean: false,
        })
    }

    fn markers(&self, tree_csum: &Checksum, tree: &DirTree) -> Result<Markers> {
        let mut m = Markers::default();
        if !tree
            .files
            .iter()
            .any(|f| f.name.starts_with(WHITEOUT_PREFIX))
        {
            return Ok(m);
        }
        for (i, f) in tree.files.iter().enumerate() {
            if f.name == OPAQUE_MARKER {
                m.opaque = true;
                m.skip.push(i);
            } else if let Some(target) = f.name.strip_prefix(WHITEOUT_PREFIX) {
                if self.repo.open_content(&f.checksum)?.header.is_symlink() {
                    continue;
                }
                // The dirtree parser validated `f.name`; `target` may still
                // be "." or "..": refused, as a checkout with whiteouts
                // refuses it (a union stage's layers are such checkouts).
                if crate::ostree::names::validate_file_name(target).is_err() {
                    return Err(StoreError::InvalidWhiteout {
                        dirtree: *tree_csum,
                        name: f.name.clone(),
                        target: target.to_string(),
                    });
                }
                m.hidden.push(target.to_string());
                m.skip.push(i);
            }
        }
        Ok(m)
    }

    /// The entries of a merged directory, by name.
    pub fn children(&self, dir: &MergedDir) -> Result<BTreeMap<String, Node>> {
        let mut out: BTreeMap<String, Node> = BTreeMap::new();
        for (tree_csum, _) in &dir.parts {
            let tree = self.load_dirtree(tree_csum)?;
            let m = if dir.clean {
                Markers::default()
            } else {
                self.markers(tree_csum, &tree)?
            };
            if m.opaque {
                out.clear();
            }
            for name in &m.hidden {
                out.remove(name);
            }
            for (i, f) in tree.files.iter().enumerate() {
                if !m.skip.contains(&i) {
                    out.insert(f.name.clone(), Node::File(f.checksum));
                }
            }
            for d in &tree.dirs {
                match out.get_mut(&d.name) {
                    Some(Node::Dir(sub)) => sub.parts.push((d.tree, d.meta)),
                    _ => {
                        out.insert(
                            d.name.clone(),
                            Node::Dir(MergedDir {
                                parts: vec![(d.tree, d.meta)],
                                clean: dir.clean,
                            }),
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    fn subtree_has_markers(&self, tree_csum: &Checksum, depth: usize) -> Result<bool> {
        if let Some(v) = self.lock().get(tree_csum) {
            return Ok(*v);
        }
        if depth > MAX_DEPTH {
            return Err(StoreError::TooDeep {
                what: format!("dirtree {tree_csum}"),
                max: MAX_DEPTH,
            });
        }
        let tree = self.load_dirtree(tree_csum)?;
        let mut has = tree
            .files
            .iter()
            .any(|f| f.name.starts_with(WHITEOUT_PREFIX));
        if !has {
            for d in &tree.dirs {
                if self.subtree_has_markers(&d.tree, depth + 1)? {
                    has = true;
                    break;
                }
            }
        }
        self.lock().insert(*tree_csum, has);
        Ok(has)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Checksum, bool>> {
        self.has_markers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `dir` (and what it needs below it) as objects, returning its
    /// (dirtree, dirmeta). Reuses a layer's own dirtree where it can.
    pub fn write(
        &self,
        txn: &Transaction<'_>,
        dir: &MergedDir,
        depth: usize,
    ) -> Result<(Checksum, Checksum)> {
        let top_meta = dir.parts.last().map(|p| p.1).ok_or(StoreError::NoLayers)?;
        if let [(tree, meta)] = dir.parts[..]
            && (dir.clean || !self.subtree_has_markers(&tree, depth)?)
        {
            return Ok((tree, meta));
        }
        if depth > MAX_DEPTH {
            return Err(StoreError::TooDeep {
                what: "merged tree".into(),
                max: MAX_DEPTH,
            });
        }
        let children = self.children(dir)?;
        let tree = self.write_children(txn, children, depth)?;
        Ok((tree, top_meta))
    }

    /// Writes a dirtree holding `children` (merged directories are
    /// written as needed).
    pub fn write_children(
        &self,
        txn: &Transaction<'_>,
        children: BTreeMap<String, Node>,
        depth: usize,
    ) -> Result<Checksum> {
        let entries: Vec<(String, Node)> = children.into_iter().collect();
        let written = entries
            .into_par_iter()
            .map(|(name, node)| match node {
                Node::File(c) => Ok((name, None, c)),
                Node::Dir(sub) => {
                    let (t, m) = self.write(txn, &sub, depth + 1)?;
                    Ok((name, Some(m), t))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tree = DirTree::default();
        for (name, meta, c) in written {
            match meta {
                None => tree.files.push(TreeFile { name, checksum: c }),
                Some(meta) => tree.dirs.push(TreeDir {
                    name,
                    tree: c,
                    meta,
                }),
            }
        }
        write_dirtree(txn, tree)
    }

    /// The whiteouts of one commit, for building the layer that makes a
    /// union filesystem apply them: (directory path, hidden name) pairs and
    /// opaque directory paths, paths relative to the root, `/`-joined.
    pub fn layer_whiteouts(&self, commit: &Checksum) -> Result<LayerWhiteouts> {
        let c = self.repo.load_commit(commit)?;
        let mut out = LayerWhiteouts::default();
        self.collect_whiteouts(&c.root_tree, String::new(), 0, &mut out)?;
        Ok(out)
    }

    fn collect_whiteouts(
        &self,
        tree_csum: &Checksum,
        rel: String,
        depth: usize,
        out: &mut LayerWhiteouts,
    ) -> Result<()> {
        if !self.subtree_has_markers(tree_csum, depth)? {
            return Ok(());
        }
        let tree = self.load_dirtree(tree_csum)?;
        let m = self.markers(tree_csum, &tree)?;
        if m.opaque {
            out.opaque.push(rel.clone());
        }
        for name in m.hidden {
            out.hidden.push((rel.clone(), name));
        }
        for d in &tree.dirs {
            let child = if rel.is_empty() {
                d.name.clone()
            } else {
                format!("{rel}/{}", d.name)
            };
            self.collect_whiteouts(&d.tree, child, depth + 1, out)?;
        }
        Ok(())
    }
}

/// See [`Merger::layer_whiteouts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerWhiteouts {
    pub hidden: Vec<(String, String)>,
    pub opaque: Vec<String>,
}

impl LayerWhiteouts {
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty() && self.opaque.is_empty()
    }

    /// NUL-separated records `h DIR NAME` / `o DIR`, for the checkout
    /// cache's sidecar file (names may hold any byte but NUL and `/`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (dir, name) in &self.hidden {
            for field in ["h", dir, name] {
                out.extend_from_slice(field.as_bytes());
                out.push(0);
            }
        }
        for dir in &self.opaque {
            for field in ["o", dir] {
                out.extend_from_slice(field.as_bytes());
                out.push(0);
            }
        }
        out
    }

    pub fn decode(data: &[u8]) -> Option<LayerWhiteouts> {
        let mut out = LayerWhiteouts::default();
        let text = std::str::from_utf8(data).ok()?;
        let mut fields = text.split('\0');
        loop {
            match fields.next() {
                Some("h") => {
                    let dir = fields.next()?;
                    let name = fields.next().filter(|n| !n.is_empty())?;
                    out.hidden.push((dir.to_string(), name.to_string()));
                }
                Some("o") => out.opaque.push(fields.next()?.to_string()),
                Some("") | None => return Some(out),
                Some(_) => return None,
            }
        }
    }
}

pub fn write_dirtree(txn: &Transaction<'_>, mut tree: DirTree) -> Result<Checksum> {
    tree.sort();
    Ok(txn
        .write_metadata(ObjectType::DirTree, &tree.serialize(), None)?
        .checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_records_round_trip() {
        let w = LayerWhiteouts {
            hidden: vec![
                ("usr/bin".into(), "old tool".into()),
                (String::new(), "x".into()),
            ],
            opaque: vec!["etc".into()],
        };
        assert_eq!(LayerWhiteouts::decode(&w.encode()), Some(w));
        assert_eq!(LayerWhiteouts::decode(b""), Some(LayerWhiteouts::default()));
        assert_eq!(LayerWhiteouts::decode(b"h\0dir\0"), None);
        assert_eq!(LayerWhiteouts::decode(b"z\0"), None);
    }
}
