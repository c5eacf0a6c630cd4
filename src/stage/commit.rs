//! Committing a stage: the layers' merged tree, minus what the writable
//! layer deleted, plus what it holds.
//!
//! Only the writable (upper) directory is walked. Everything it does not
//! touch is taken from the layers' dirtrees as they are (see [`merge`]), so
//! unchanged files — hardlinks into the store in the checkout cache, or
//! anything else a lower layer provides — are never opened, let alone
//! hashed; the cost follows what changed, not the size of the root.
//! Entries the upper directory holds are read through the mounted root, so
//! what is committed is exactly what the stage shows (owners, modes and
//! xattrs as the union filesystem presents them, without its bookkeeping
//! xattrs); a file with several links is hashed once (a (device, inode)
//! cache in [`TreeWriter`]).
//!
//! The copy backend has no upper directory: its whole root is walked, and
//! files its index ([`super::copy_index`]) shows unchanged are not read.
//!
//! [`merge`]: super::merge

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType};

use super::StageError;
use super::merge::{MergedDir, Merger, Node, write_dirtree};
use super::record::{Record, StageBackend};
use crate::fs::list_dir_typed;
use crate::ostree::{Checksum, DirTree, TreeDir, TreeFile, Xattrs};
use crate::progress::{Phase, Progress};
use crate::stage::mount::{Backend, Deletion, is_marker, list_deletions};
use crate::store::commit::{Entry, KnownFile, MAX_DEPTH, TreeOptions, TreeWriter, entry_name};
use crate::store::repo::open_dir;
use crate::store::{StoreError, Transaction};

/// Writes the stage's current tree in `txn`; returns its (dirtree,
/// dirmeta) and those of the layers' merged tree (the base), which is
/// computed and written unless `known_base` gives it.
/// The last value is the number of files and symlinks read.
#[allow(clippy::type_complexity)]
pub fn write_stage_tree<'t>(
    txn: &'t Transaction<'_>,
    record: &Record,
    known_base: Option<(Checksum, Checksum)>,
    known_files: HashMap<(u64, u64), KnownFile>,
    progress: &'t dyn Progress,
    interrupt: &'t AtomicBool,
) -> Result<(Checksum, Checksum, Option<(Checksum, Checksum)>, u64), StageError> {
    let repo = txn.repo();
    let writer = TreeWriter::new(txn, TreeOptions::for_mode(repo.mode(), None, None))
        .with_known_files(known_files)
        .watched(progress, interrupt, Phase::StageCommit);
    let root_path = record.root();
    let root = open_dir(rustix::fs::CWD, &root_path)?;
    let backend = match record.backend {
        Some(StageBackend::Union(b)) => b,
        _ => {
            let (t, m) = writer.write_dir(root, root_path, 0)?;
            return Ok((t, m, None, writer.files_written()));
        }
    };
    let upper_path = record.upper();
    let upper = open_dir(rustix::fs::CWD, &upper_path)?;
    let deletions = list_deletions(backend, &upper_path)
        .map_err(|e| StageError::io(&upper_path, "reading deletions in", e))?;
    let mut changes = Changes::default();
    for d in deletions {
        match d {
            Deletion::Whiteout(p) => {
                let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                if let Some(name) = p.file_name() {
                    changes
                        .hidden
                        .entry(parent)
                        .or_default()
                        .insert(name.as_bytes().to_vec());
                }
            }
            Deletion::Opaque(p) => {
                changes.opaque.insert(p);
            }
        }
    }
    let mut touched = BTreeSet::new();
    for p in changes.hidden.keys().chain(changes.opaque.iter()) {
        touched.extend(p.ancestors().map(Path::to_path_buf));
    }
    changes.touched = touched;
    let merger = Merger::with_transaction(txn);
    let (bt, bm) = match known_base {
        Some(b) => b,
        None => merger.write(txn, &merger.root(&record.layers)?, 0)?,
    };
    let base = MergedDir::merged(bt, bm);
    let walk = Walk {
        txn,
        writer,
        merger,
        backend,
        changes,
        root_path,
        upper_path,
    };
    let (t, m) = walk.dir(Some(upper.as_fd()), root, PathBuf::new(), Some(base), 0)?;
    Ok((t, m, Some((bt, bm)), walk.writer.files_written()))
}

#[derive(Default)]
struct Changes {
    /// Directory (relative to the root) → names deleted in it.
    hidden: HashMap<PathBuf, BTreeSet<Vec<u8>>>,
    /// Directories that hide everything the layers have in them.
    opaque: BTreeSet<PathBuf>,
    /// Directories holding deletions, and their ancestors: these must be
    /// visited even where the writable layer has no copy of them.
    touched: BTreeSet<PathBuf>,
}

struct Walk<'t, 'r> {
    txn: &'t Transaction<'r>,
    writer: TreeWriter<'t, 'r>,
    merger: Merger<'r>,
    backend: Backend,
    changes: Changes,
    root_path: PathBuf,
    upper_path: PathBuf,
}

/// An entry of a directory being committed.
/// An entry of a directory once everything below it is written.
enum Written {
    File(Checksum),
    /// (dirtree, dirmeta).
    Dir(Checksum, Checksum),
}

enum Out {
    /// As the layers have it.
    Base(Node),
    File(Checksum),
    Dir(Checksum, Checksum),
}

impl Walk<'_, '_> {
    /// unionfs-fuse (as Debian builds it) shows no xattrs and drops them
    /// when it copies a file up, and cannot set any: an entry it holds has
    /// the xattrs of the entry it replaced, as overlayfs would show them.
    fn inherit_xattrs(&self) -> bool {
        self.backend == Backend::Unionfs
    }

    /// `upper` and `merged` are the same directory `rel` in the writable
    /// layer and in the mounted root; `base` is what the layers have there.
    /// `upper` is `None` for a directory the writable layer does not have
    /// but that holds deletions (unionfs-fuse records those elsewhere).
    fn dir(
        &self,
        upper: Option<BorrowedFd<'_>>,
        merged: OwnedFd,
        rel: PathBuf,
        base: Option<MergedDir>,
        depth: usize,
    ) -> Result<(Checksum, Checksum), StageError> {
        let merged_path = self.root_path.join(&rel);
        if depth > MAX_DEPTH {
            return Err(StageError::Store(StoreError::TooDeep {
                what: merged_path.display().to_string(),
                max: MAX_DEPTH,
            }));
        }
        let base_meta = base.as_ref().and_then(|b| b.parts.last()).map(|p| p.1);
        let mut out: BTreeMap<String, Out> = BTreeMap::new();
        if let Some(b) = base.filter(|_| !self.changes.opaque.contains(&rel)) {
            for (name, node) in self.merger.children(&b)? {
                out.insert(name, Out::Base(node));
            }
        }
        if let Some(names) = self.changes.hidden.get(&rel) {
            for n in names {
                if let Ok(n) = std::str::from_utf8(n) {
                    out.remove(n);
                }
            }
        }
        let upper_path = self.upper_path.join(&rel);
        let entries = match upper {
            Some(fd) => list_dir_typed(fd)
                .map_err(|e| StageError::io(&upper_path, "listing the writable layer of", e))?,
            None => Vec::new(),
        };
        // Sort the writable layer's entries into directories and the rest,
        // then write both kinds in parallel.
        let mut sub_dirs = Vec::new();
        let mut files = Vec::new();
        for (name, dtype) in entries {
            let child_rel = rel.join(&name);
            if is_marker(self.backend, &child_rel) {
                continue;
            }
            let mut dtype = dtype;
            if dtype == FileType::Unknown || dtype == FileType::CharacterDevice {
                let Some(upper) = upper else { continue };
                let st = rustix::fs::statat(upper, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| StageError::io(&upper_path.join(&name), "reading", e.into()))?;
                dtype = FileType::from_raw_mode(st.st_mode);
                if dtype == FileType::CharacterDevice
                    && st.st_rdev == 0
                    && self.backend != Backend::Unionfs
                {
                    // A whiteout; already in `changes`.
                    continue;
                }
            }
            let name = entry_name(&name, &merged_path)?;
            if dtype == FileType::Directory {
                let child_base = match out.remove(&name) {
                    Some(Out::Base(Node::Dir(d))) => Some(d),
                    _ => None,
                };
                sub_dirs.push((name, child_rel, child_base, true));
            } else {
                let inherited = match (self.inherit_xattrs(), out.get(&name)) {
                    (false, _) => None,
                    (true, Some(Out::Base(Node::File(c)))) => {
                        Some(self.txn.repo().open_content(c)?.header.xattrs)
                    }
                    (true, _) => Some(Xattrs::new()),
                };
                files.push((name, inherited));
            }
        }
        // Directories only the layers have, but with deletions below them.
        for (name, o) in &out {
            if let Out::Base(Node::Dir(d)) = o {
                let child_rel = rel.join(name);
                if self.changes.touched.contains(&child_rel) {
                    sub_dirs.push((name.clone(), child_rel, Some(d.clone()), false));
                }
            }
        }
        for (name, ..) in &sub_dirs {
            out.remove(name);
        }
        let merged_fd = merged.as_fd();
        let (written_files, written_dirs) = rayon::join(
            || {
                files
                    .into_par_iter()
                    .map(|(name, inherited)| {
                        let e = self.writer.write_entry(
                            merged_fd,
                            &merged_path,
                            &name,
                            depth,
                            inherited.as_ref(),
                        )?;
                        Ok(match e {
                            Entry::File(f) => (name, Out::File(f.checksum)),
                            Entry::Dir(d) => (name, Out::Dir(d.tree, d.meta)),
                        })
                    })
                    .collect::<Result<Vec<_>, StageError>>()
            },
            || {
                sub_dirs
                    .into_par_iter()
                    .map(|(name, child_rel, child_base, in_upper)| {
                        let sub_upper = match upper {
                            Some(u) if in_upper => Some(open_dir(u, name.as_str())?),
                            _ => None,
                        };
                        let sub_merged = open_dir(merged_fd, name.as_str())?;
                        let (t, m) = self.dir(
                            sub_upper.as_ref().map(|f| f.as_fd()),
                            sub_merged,
                            child_rel,
                            child_base,
                            depth + 1,
                        )?;
                        Ok((name, Out::Dir(t, m)))
                    })
                    .collect::<Result<Vec<_>, StageError>>()
            },
        );
        out.extend(written_files?);
        out.extend(written_dirs?);
        let inherited = match (self.inherit_xattrs(), &base_meta) {
            (false, _) => None,
            (true, Some(m)) => Some(self.txn.repo().load_dirmeta(m)?.xattrs),
            (true, None) => Some(Xattrs::new()),
        };
        let meta = match (upper, base_meta) {
            // Not in the writable layer: its metadata is the layers'.
            (None, Some(m)) => m,
            _ => self
                .writer
                .write_dirmeta(merged.as_fd(), &merged_path, inherited.as_ref())?,
        };
        // Directories the writable layer does not touch: the layers' own,
        // merged where several layers have them.
        let done: Vec<(String, Written)> = out
            .into_iter()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(name, o)| match o {
                Out::Base(Node::Dir(d)) => {
                    let (t, m) = self.merger.write(self.txn, &d, depth + 1)?;
                    Ok((name, Written::Dir(t, m)))
                }
                Out::Dir(t, m) => Ok((name, Written::Dir(t, m))),
                Out::Base(Node::File(c)) | Out::File(c) => Ok((name, Written::File(c))),
            })
            .collect::<Result<_, StageError>>()?;
        let mut tree = DirTree::default();
        for (name, o) in done {
            match o {
                Written::File(checksum) => tree.files.push(TreeFile { name, checksum }),
                Written::Dir(t, m) => tree.dirs.push(TreeDir {
                    name,
                    tree: t,
                    meta: m,
                }),
            }
        }
        Ok((write_dirtree(self.txn, tree)?, meta))
    }
}
