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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::error::{IoContext, Result, StoreError};
use super::refs::RefName;
use super::repo::Repo;
use super::repo::{RepoMode, open_dir};
use super::transaction::Transaction;
use crate::fs as sys;
use crate::fs::list_dir_typed;
use crate::ostree::commit::{COLLECTION_BINDING, REF_BINDING};
use crate::ostree::names::validate_file_name;
use crate::ostree::{
    Checksum, Commit, DirMeta, DirTree, FileHeader, Metadata, ObjectType, TreeDir, TreeFile, Value,
    Xattrs, mode,
};
use crate::progress::{Event, Phase, Progress};

/// Deepest directory nesting accepted (libostree's recursion limit).
pub const MAX_DEPTH: usize = 256;

/// Files between two progress reports of a tree walk.
const PROGRESS_EVERY: u64 = 64;

/// The parent of a new commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parent {
    /// The branch's current commit, if it has one (as `ostree commit`).
    #[default]
    BranchHead,
    /// No parent: a commit without history.
    None,
    /// This commit.
    Commit(Checksum),
}

/// What `arbor commit` records, and where.
#[derive(Clone, Debug)]
pub struct CommitOptions {
    /// The local branch moved to the new commit.
    pub branch: RefName,
    pub subject: String,
    pub body: String,
    pub parent: Parent,
    /// Seconds since the epoch; `None`: `$SOURCE_DATE_EPOCH` when set (the
    /// reproducible-builds convention), else now.
    pub timestamp: Option<u64>,
    /// Recorded owner of every file and directory, instead of the real one.
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    /// User metadata, in order; the ref binding is added after it.
    pub metadata: Metadata,
    /// Bind the commit to its branch (`ostree.ref-binding`, and the
    /// repository's collection), as `ostree commit` does by default.
    pub bind_to_branch: bool,
}

impl CommitOptions {
    pub fn new(branch: RefName) -> Self {
        CommitOptions {
            branch,
            subject: String::new(),
            body: String::new(),
            parent: Parent::BranchHead,
            timestamp: None,
            owner_uid: None,
            owner_gid: None,
            metadata: Metadata::new(),
            bind_to_branch: true,
        }
    }
}

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    pub commit: Checksum,
    pub parent: Option<Checksum>,
    /// Files and symlinks read.
    pub files: u64,
    /// Objects new to the repository, and the bytes of new content.
    pub objects_written: u64,
    pub content_bytes_written: u64,
}

/// Commits the tree below `dir` to `opts.branch`, as `ostree commit -b`
/// does: the same checksums for the same tree and options.
///
/// Progress: [`Phase::Commit`] in files (total unknown). An interrupt stops
/// the walk with [`StoreError::Interrupted`]; objects already written are
/// kept (a re-run does not write them again) and the branch does not move.
pub fn commit(
    repo: &Repo,
    dir: &Path,
    opts: &CommitOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<CommitOutcome> {
    commit_then(repo, dir, opts, progress, interrupt, |_, _, _| Ok(()))
}

/// [`commit`], calling `before_ref(txn, checksum, commit_bytes)` once the
/// commit object is written and before the branch is set, in the same
/// transaction: what it stages (the detached metadata with signatures)
/// is published before the branch moves. If it fails, the objects are kept
/// (as on an interrupt) and the branch does not move.
pub fn commit_then<E: From<StoreError>>(
    repo: &Repo,
    dir: &Path,
    opts: &CommitOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
    before_ref: impl FnOnce(&Transaction<'_>, &Checksum, &[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<CommitOutcome, E> {
    let info = commit_info(repo, opts)?;
    let parent = info.parent;
    let txn = Transaction::begin(repo)?;
    progress.report(Event::Start {
        phase: Phase::Commit,
        total: None,
    });
    let tree_opts = TreeOptions::for_mode(repo.mode(), opts.owner_uid, opts.owner_gid);
    let writer = TreeWriter::new(&txn, tree_opts).watched(progress, interrupt, Phase::Commit);
    let written = crate::workers::deep(|| {
        let fd = open_dir(rustix::fs::CWD, dir)?;
        writer.dir(fd, dir.to_path_buf(), 0)
    });
    let (tree, meta) = match written {
        Ok(t) => t,
        Err(e) => {
            // Keep what was written, so a re-run does not write it again.
            let _ = txn.publish_objects_only();
            return Err(e.into());
        }
    };
    let files = writer.files_written();
    drop(writer);
    let (checksum, bytes) = write_commit_bytes(&txn, tree, meta, info)?;
    if let Err(e) = before_ref(&txn, &checksum, &bytes) {
        let _ = txn.publish_objects_only();
        return Err(e);
    }
    txn.set_ref(opts.branch.clone(), Some(checksum));
    let stats = txn.commit()?;
    super::used::record(repo, &[checksum]);
    progress.report(Event::Finish {
        phase: Phase::Commit,
    });
    Ok(CommitOutcome {
        commit: checksum,
        parent,
        files,
        objects_written: stats.objects_written,
        content_bytes_written: stats.content_bytes_written,
    })
}

/// The commit fields `opts` asks for, by `ostree commit`'s rules: the
/// parent (the branch head by default), the timestamp, user metadata then
/// the ref binding. `opts.branch` must be a local branch.
pub fn commit_info(repo: &Repo, opts: &CommitOptions) -> Result<CommitInfo> {
    let RefName::Head(branch) = &opts.branch else {
        return Err(StoreError::BadRev {
            rev: opts.branch.to_string(),
            reason: "commits go to local branches, not remote refs".into(),
        });
    };
    let parent = match opts.parent {
        Parent::BranchHead => repo.read_ref(&opts.branch)?,
        Parent::None => None,
        Parent::Commit(c) => Some(c),
    };
    let mut metadata = opts.metadata.clone();
    if opts.bind_to_branch {
        metadata.insert(REF_BINDING, Value::StrArray(vec![branch.clone()]));
        if let Some(cid) = repo.collection_id() {
            metadata.insert(COLLECTION_BINDING, Value::Str(cid));
        }
    }
    Ok(CommitInfo {
        metadata,
        parent,
        subject: opts.subject.clone(),
        body: opts.body.clone(),
        timestamp: match opts.timestamp {
            Some(t) => t,
            None => default_timestamp()?,
        },
    })
}

/// `$SOURCE_DATE_EPOCH` when set, else the current time.
pub fn default_timestamp() -> Result<u64> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s.trim().parse().map_err(|_| StoreError::BadRev {
            rev: format!("SOURCE_DATE_EPOCH={s:?}"),
            reason: "not a number of seconds since the epoch".into(),
        });
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0))
}

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
    /// Where files written are counted, and the flag that stops the walk.
    watch: Option<Watch<'t>>,
    files_done: AtomicU64,
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
    write_commit_bytes(txn, root_tree, root_meta, info).map(|(c, _)| c)
}

/// [`write_commit`], returning the commit object's bytes too.
fn write_commit_bytes(
    txn: &Transaction<'_>,
    root_tree: Checksum,
    root_meta: Checksum,
    info: CommitInfo,
) -> Result<(Checksum, Vec<u8>)> {
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
    let bytes = commit.serialize();
    let checksum = txn
        .write_metadata(ObjectType::Commit, &bytes, None)?
        .checksum;
    Ok((checksum, bytes))
}

/// A progress reporter and interrupt flag watching a [`TreeWriter`].
struct Watch<'a> {
    progress: &'a dyn Progress,
    interrupt: &'a AtomicBool,
    phase: Phase,
}

impl<'t, 'r> TreeWriter<'t, 'r> {
    pub fn new(txn: &'t Transaction<'r>, opts: TreeOptions) -> Self {
        TreeWriter {
            txn,
            opts,
            watch: None,
            files_done: AtomicU64::new(0),
            devino: Mutex::new(HashMap::new()),
            known: HashMap::new(),
        }
    }

    /// Reports files written as `phase` (every [`PROGRESS_EVERY`] files)
    /// and stops with [`StoreError::Interrupted`] once `interrupt` is set.
    pub fn watched(
        mut self,
        progress: &'t dyn Progress,
        interrupt: &'t AtomicBool,
        phase: Phase,
    ) -> Self {
        self.watch = Some(Watch {
            progress,
            interrupt,
            phase,
        });
        self
    }

    /// Files (and symlinks) written so far.
    pub fn files_written(&self) -> u64 {
        self.files_done.load(Ordering::Relaxed)
    }

    /// Counts one file, reports progress now and then, and checks the
    /// interrupt flag.
    fn file_done(&self) -> Result<()> {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(w) = &self.watch {
            crate::progress::check(w.interrupt)?;
            if done.is_multiple_of(PROGRESS_EVERY) {
                w.progress.report(Event::Advance {
                    phase: w.phase,
                    done,
                    total: None,
                    bytes: 0,
                });
            }
        }
        Ok(())
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
        if ftype != FileType::Directory {
            self.file_done()?;
        }
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
