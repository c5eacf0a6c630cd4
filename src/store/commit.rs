//! Committing a directory: walk it through directory descriptors (never
//! following symlinks), write content, dirmeta and dirtree objects, then the
//! commit object.
//!
//! Files of a directory and its subdirectories are processed in parallel on
//! rayon's pool; each file is read once, hashed and written on the way. A
//! (device, inode) cache lets hardlinked files be hashed once.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::error::{IoContext, Result, StoreError};
use super::repo::{RepoMode, open_dir};
use super::transaction::Transaction;
use crate::fs as sys;
use crate::fs::list_dir_typed;
use crate::ostree::names::validate_file_name;
use crate::ostree::{
    Checksum, Commit, DirMeta, DirTree, FileHeader, Metadata, ObjectType, TreeDir, TreeFile,
    Xattrs, mode,
};

/// Deepest directory nesting accepted (libostree's recursion limit).
pub const MAX_DEPTH: usize = 256;

/// How file metadata is recorded.
#[derive(Clone, Debug, Default)]
pub struct TreeOptions {
    /// Record this owner for every file and directory.
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    /// What libostree does for bare-user-only repositories: uid/gid 0, no
    /// xattrs, regular files and directories masked to 0755.
    pub canonical_permissions: bool,
}

impl TreeOptions {
    /// The options a repository's mode implies (bare-user-only needs
    /// canonical permissions), plus explicit owners.
    pub fn for_mode(mode: RepoMode, owner_uid: Option<u32>, owner_gid: Option<u32>) -> Self {
        TreeOptions {
            owner_uid,
            owner_gid,
            canonical_permissions: mode == RepoMode::BareUserOnly,
        }
    }
}

/// The fields of a commit other than its tree.
#[derive(Clone, Debug, Default)]
pub struct CommitInfo {
    pub metadata: Metadata,
    pub parent: Option<Checksum>,
    pub subject: String,
    pub body: String,
    pub timestamp: u64,
}

/// Writes directories, files and symlinks found on disk as objects of a
/// transaction. Used whole by [`write_directory`], and piecemeal by stage
/// commits, which only visit what changed.
pub struct TreeWriter<'t, 'r> {
    txn: &'t Transaction<'r>,
    opts: TreeOptions,
    /// (dev, ino) → checksum of files with several links.
    devino: Mutex<HashMap<(u64, u64), Checksum>>,
    /// (dev, ino) → a file known to be a store object as long as its size
    /// and ctime are unchanged (see [`TreeWriter::with_known_files`]).
    known: HashMap<(u64, u64), KnownFile>,
}

/// A file whose content object is known without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownFile {
    pub size: u64,
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub checksum: Checksum,
}

/// An entry of a directory, as written.
pub enum Entry {
    File(TreeFile),
    Dir(TreeDir),
}

/// Writes the tree below `dir` and returns (root dirtree, root dirmeta).
pub fn write_directory(
    txn: &Transaction<'_>,
    dir: &Path,
    opts: TreeOptions,
) -> Result<(Checksum, Checksum)> {
    let fd = open_dir(rustix::fs::CWD, dir)?;
    TreeWriter::new(txn, opts).dir(fd, dir.to_path_buf(), 0)
}

/// Writes a commit object for a tree written earlier.
pub fn write_commit(
    txn: &Transaction<'_>,
    root_tree: Checksum,
    root_meta: Checksum,
    info: CommitInfo,
) -> Result<Checksum> {
    let commit = Commit {
        metadata: info.metadata,
        parent: info.parent,
        related: Vec::new(),
        subject: info.subject,
        body: info.body,
        timestamp: info.timestamp,
        root_tree,
        root_meta,
    };
    Ok(txn
        .write_metadata(ObjectType::Commit, &commit.serialize(), None)?
        .checksum)
}

impl<'t, 'r> TreeWriter<'t, 'r> {
    pub fn new(txn: &'t Transaction<'r>, opts: TreeOptions) -> Self {
        TreeWriter {
            txn,
            opts,
            devino: Mutex::new(HashMap::new()),
            known: HashMap::new(),
        }
    }

    /// Files to take as the given objects without reading them while their
    /// (device, inode), size and ctime match: any change to a file's
    /// content, owner, mode or xattrs moves its ctime. The caller vouches
    /// that the record was taken after the files were last written (and
    /// after a tick of the coarse clock).
    pub fn with_known_files(mut self, known: HashMap<(u64, u64), KnownFile>) -> Self {
        self.known = known;
        self
    }

    /// Writes the directory open as `fd` and everything below it; `path`
    /// names it in errors, `depth` is its nesting below the root.
    pub fn write_dir(
        &self,
        fd: OwnedFd,
        path: PathBuf,
        depth: usize,
    ) -> Result<(Checksum, Checksum)> {
        self.dir(fd, path, depth)
    }

    /// Writes the entry `name` of the directory `dir` (a directory is
    /// written recursively).
    pub fn write_entry(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &str,
        depth: usize,
        xattrs: Option<&Xattrs>,
    ) -> Result<Entry> {
        self.entry(dir, dir_path, name, depth, xattrs)
    }

    /// Writes the dirmeta of the directory open as `fd`; `xattrs`, when
    /// given, are recorded instead of the directory's own (for a
    /// filesystem that cannot show them).
    pub fn write_dirmeta(
        &self,
        fd: BorrowedFd<'_>,
        path: &Path,
        xattrs: Option<&Xattrs>,
    ) -> Result<Checksum> {
        let st = rustix::fs::fstat(fd).at(path)?;
        let (uid, gid) = self.owner(st.st_uid, st.st_gid);
        let meta = DirMeta {
            uid,
            gid,
            mode: self.canonical_mode(st.st_mode),
            xattrs: match xattrs {
                Some(x) if !self.opts.canonical_permissions => x.clone(),
                _ => self.xattrs(|| sys::fd_xattrs(fd), path)?,
            },
        };
        Ok(self
            .txn
            .write_metadata(ObjectType::DirMeta, &meta.serialize(), None)?
            .checksum)
    }

    fn owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        if self.opts.canonical_permissions {
            return (0, 0);
        }
        (
            self.opts.owner_uid.unwrap_or(uid),
            self.opts.owner_gid.unwrap_or(gid),
        )
    }

    fn canonical_mode(&self, m: u32) -> u32 {
        if self.opts.canonical_permissions && (mode::is_reg(m) || mode::is_dir(m)) {
            m & (mode::S_IFMT | 0o755)
        } else {
            m
        }
    }

    fn xattrs(
        &self,
        read: impl FnOnce() -> std::io::Result<Xattrs>,
        path: &Path,
    ) -> Result<Xattrs> {
        if self.opts.canonical_permissions {
            return Ok(Xattrs::new());
        }
        read().at(path)
    }

    fn dir(&self, fd: OwnedFd, path: PathBuf, depth: usize) -> Result<(Checksum, Checksum)> {
        if depth > MAX_DEPTH {
            return Err(StoreError::Unsupported {
                path,
                reason: format!("directories nest deeper than {MAX_DEPTH} levels"),
            });
        }
        let meta_csum = self.write_dirmeta(fd.as_fd(), &path, None)?;

        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for (name, dtype) in list_dir_typed(fd.as_fd()).at(&path)? {
            let name = entry_name(&name, &path)?;
            if dtype == FileType::Directory {
                dirs.push(name);
            } else {
                files.push(name);
            }
        }

        let (files, dirs) = rayon::join(
            || {
                files
                    .par_iter()
                    .map(|name| self.entry(fd.as_fd(), &path, name, depth, None))
                    .collect::<Result<Vec<_>>>()
            },
            || {
                dirs.par_iter()
                    .map(|name| {
                        let child = path.join(name);
                        let sub = open_dir(&fd, name)?;
                        let (tree, meta) = self.dir(sub, child, depth + 1)?;
                        Ok(TreeDir {
                            name: name.clone(),
                            tree,
                            meta,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            },
        );
        let mut tree = DirTree {
            files: Vec::new(),
            dirs: dirs?,
        };
        for entry in files? {
            match entry {
                Entry::File(f) => tree.files.push(f),
                // d_type was unknown and the entry turned out a directory.
                Entry::Dir(d) => tree.dirs.push(d),
            }
        }
        tree.sort();
        let tree_csum = self
            .txn
            .write_metadata(ObjectType::DirTree, &tree.serialize(), None)?
            .checksum;
        Ok((tree_csum, meta_csum))
    }

    fn entry(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &str,
        depth: usize,
        xattrs: Option<&Xattrs>,
    ) -> Result<Entry> {
        let path = dir_path.join(name);
        let xattrs_or = |read: &dyn Fn() -> std::io::Result<Xattrs>| match xattrs {
            Some(x) if !self.opts.canonical_permissions => Ok(x.clone()),
            _ => self.xattrs(read, &path),
        };
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).at(&path)?;
        let ftype = FileType::from_raw_mode(st.st_mode);
        let (uid, gid) = self.owner(st.st_uid, st.st_gid);
        match ftype {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new()).at(&path)?;
                let target = target.into_string().map_err(|_| StoreError::Unsupported {
                    path: path.clone(),
                    reason: "symlink target is not valid UTF-8".into(),
                })?;
                let header = FileHeader {
                    uid,
                    gid,
                    mode: st.st_mode,
                    symlink_target: target,
                    xattrs: xattrs_or(&|| sys::link_xattrs(&sys::proc_path(dir, name)))?,
                };
                let w = self
                    .txn
                    .write_content(&header, 0, std::io::empty(), None)
                    .map_err(|e| with_path(e, &path))?;
                Ok(Entry::File(TreeFile {
                    name: name.to_string(),
                    checksum: w.checksum,
                }))
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if xattrs.is_none()
                    && self.opts.owner_uid.is_none()
                    && self.opts.owner_gid.is_none()
                    && !self.opts.canonical_permissions
                    && let Some(k) = self.known.get(&key)
                    && k.size == st.st_size as u64
                    && k.ctime == st.st_ctime as i64
                    && k.ctime_nsec == st.st_ctime_nsec as u32
                {
                    return Ok(Entry::File(TreeFile {
                        name: name.to_string(),
                        checksum: k.checksum,
                    }));
                }
                let shared = st.st_nlink > 1
                    && self.opts.owner_uid.is_none()
                    && self.opts.owner_gid.is_none();
                if shared
                    && let Some(c) = self
                        .devino
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&key)
                {
                    return Ok(Entry::File(TreeFile {
                        name: name.to_string(),
                        checksum: *c,
                    }));
                }
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .at(&path)?;
                // Trust the open file, not the earlier lstat.
                let st = rustix::fs::fstat(&fd).at(&path)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(StoreError::Unsupported {
                        path,
                        reason: "changed type while being committed".into(),
                    });
                }
                let header = FileHeader {
                    uid,
                    gid,
                    mode: self.canonical_mode(st.st_mode),
                    symlink_target: String::new(),
                    xattrs: xattrs_or(&|| sys::fd_xattrs(&fd))?,
                };
                let w = self
                    .txn
                    .write_content(&header, st.st_size as u64, File::from(fd), None)
                    .map_err(|e| with_path(e, &path))?;
                if shared {
                    self.devino
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, w.checksum);
                }
                Ok(Entry::File(TreeFile {
                    name: name.to_string(),
                    checksum: w.checksum,
                }))
            }
            FileType::Directory => {
                let sub = open_dir(dir, name)?;
                let (tree, meta) = self.dir(sub, path, depth + 1)?;
                Ok(Entry::Dir(TreeDir {
                    name: name.to_string(),
                    tree,
                    meta,
                }))
            }
            other => Err(StoreError::Unsupported {
                path,
                reason: format!(
                    "is a {}; only regular files, symlinks and directories can be committed",
                    match other {
                        FileType::Fifo => "FIFO",
                        FileType::Socket => "socket",
                        FileType::CharacterDevice => "character device",
                        FileType::BlockDevice => "block device",
                        _ => "special file",
                    }
                ),
            }),
        }
    }
}

/// A directory entry's name as a tree entry name: UTF-8 and valid, else an
/// error naming `dir/name`.
pub fn entry_name(name: &std::ffi::OsStr, dir: &Path) -> Result<String> {
    let s = name.to_str().ok_or_else(|| StoreError::Unsupported {
        path: dir.join(name),
        reason: "file name is not valid UTF-8 (OSTree names are UTF-8 strings)".into(),
    })?;
    validate_file_name(s).map_err(|e| StoreError::Unsupported {
        path: dir.join(name),
        reason: e.to_string(),
    })?;
    Ok(s.to_string())
}

/// Names the source path in errors that only name an object or a tmp file.
fn with_path(e: StoreError, path: &Path) -> StoreError {
    match e {
        StoreError::SourceRead(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        StoreError::Io { .. } | StoreError::Unsupported { .. } => e,
        other => StoreError::Unsupported {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
