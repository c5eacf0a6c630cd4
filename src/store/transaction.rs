//! Write transactions: staging, verification, atomic publication.
//!
//! A transaction writes every object into its own staging directory
//! `tmp/arbor-txn-<id>/XX/<rest>.<ext>`, each first under a temporary name,
//! then renamed to its checksum name once the checksum is known and
//! verified. [`Transaction::commit`] syncs the filesystem once, renames the
//! staged objects into `objects/XX/` (never replacing an existing object),
//! replaces refs atomically, and syncs once more so the renames and refs are
//! durable. A crash at any point leaves only complete objects under
//! `objects/`; what is left in `tmp/` is cleaned on the next start.
//!
//! Liveness: the transaction holds an exclusive OFD lock on
//! `tmp/arbor-txn-<id>.lock` for its whole life (the file is created as an
//! anonymous `O_TMPFILE`, locked, and only then linked under its name, so a
//! lock file is never visible unlocked while its owner lives). A later
//! process that can lock it knows the owner died and removes both.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::DeflateEncoder;
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use sha2::Digest;

use super::error::{IoContext, Result, StoreError};
use super::lock::{LockMode, RepoLock};
use super::refs::RefName;
use super::repo::{Repo, RepoMode, open_dir};
use crate::fs as sys;
use crate::fs::{
    Tmpfiles, ensure_dir, link_tmpfile, list_dir_typed, remove_tree, rename_noreplace,
};
use crate::ostree::content::FileHeader;
use crate::ostree::{Checksum, ObjectName, ObjectType};

const TXN_PREFIX: &str = "arbor-txn-";
const COPY_BUF: usize = 256 * 1024;
/// Bytes written between background syncs (see `maybe_sync_behind`).
const SYNC_STEP: u64 = 64 << 20;
/// The zlib level libostree uses for `.filez` by default.
const ARCHIVE_LEVEL: u32 = 6;

/// What one content write did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub checksum: Checksum,
    /// False when the object was already present.
    pub new: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TransactionStats {
    pub objects_written: u64,
    pub content_bytes_written: u64,
}

pub struct Transaction<'r> {
    repo: &'r Repo,
    _lock: RepoLock,
    _liveness: OwnedFd,
    id: String,
    staging: OwnedFd,
    refs: Mutex<Vec<(RefName, Option<Checksum>)>>,
    counter: AtomicU64,
    /// Which staging subdirectories `XX` exist.
    subdirs: [AtomicBool; 256],
    /// Owner that new files in staging get (staging is not setgid).
    euid: u32,
    egid: u32,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    /// `bytes_written` when the last background sync was started.
    synced_mark: AtomicU64,
    /// `FICLONE` failed once: the filesystems cannot share blocks.
    no_reflink: AtomicBool,
    /// Whether the repository's filesystem makes `O_TMPFILE`s.
    tmpfiles: Tmpfiles,
    /// The running background `syncfs`, if any.
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
    done: bool,
}

impl<'r> Transaction<'r> {
    /// Begins a transaction under the repository's shared lock. The first
    /// transaction of a [`Repo`] handle first recovers what dead writers
    /// left in `tmp/` (see [`clean_stale`]).
    pub fn begin(repo: &'r Repo) -> Result<Transaction<'r>> {
        if repo.is_read_only() {
            return Err(StoreError::ReadOnly(repo.path().to_path_buf()));
        }
        if !repo.recovered.swap(true, Ordering::Relaxed) {
            clean_stale(repo)?;
        }
        let lock = repo.lock(LockMode::Shared)?;
        let tmp = open_dir(repo.dir(), "tmp")?;
        let tmp_path = repo.path().join("tmp");
        let id = format!(
            "{}-{}-{}",
            boot_id(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let lock_name = format!("{TXN_PREFIX}{id}.lock");
        let tmpfiles = Tmpfiles::default();
        let liveness = create_liveness(&tmp, &tmp_path, &lock_name, &tmpfiles)?;
        let staging_name = format!("{TXN_PREFIX}{id}");
        rustix::fs::mkdirat(&tmp, staging_name.as_str(), Mode::from_raw_mode(0o755))
            .at(tmp_path.join(&staging_name))?;
        let staging = open_dir(&tmp, &staging_name)?;
        // A setgid tmp/ would pass its group to new files; objects must get
        // exactly the owner we give them.
        rustix::fs::fchmod(&staging, Mode::from_raw_mode(0o755)).at(tmp_path.join(&staging_name))?;
        // A default ACL inherited from tmp/ would replace the umask in
        // new files' modes (so the umask-based guess in write_content_temp
        // would skip a needed fchmod) and, if extended, give every object
        // an access-ACL xattr that is not part of its content.
        match rustix::fs::fremovexattr(&staging, "system.posix_acl_default") {
            // No such ACL, or a filesystem without xattrs (FUSE may say
            // ENOSYS): nothing to remove.
            Ok(())
            | Err(rustix::io::Errno::NODATA)
            | Err(rustix::io::Errno::OPNOTSUPP)
            | Err(rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e).at(tmp_path.join(&staging_name)),
        }
        Ok(Transaction {
            repo,
            _lock: lock,
            _liveness: liveness,
            id,
            staging,
            refs: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            subdirs: std::array::from_fn(|_| AtomicBool::new(false)),
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            objects_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            synced_mark: AtomicU64::new(0),
            no_reflink: AtomicBool::new(false),
            tmpfiles,
            syncer: Mutex::new(None),
            done: false,
        })
    }

    pub fn repo(&self) -> &'r Repo {
        self.repo
    }

    fn staging_path(&self) -> PathBuf {
        self.repo
            .path()
            .join("tmp")
            .join(format!("{TXN_PREFIX}{}", self.id))
    }

    fn temp_name(&self) -> String {
        format!("tmp-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// An anonymous file (`O_TMPFILE`) in the staging directory. Creating
    /// one takes no lock on the directory's names, so parallel writers do
    /// not serialise on it; it gets a name only once complete. Where the
    /// filesystem has no `O_TMPFILE`, a named temporary file (never taken
    /// for an object: its name is not one).
    fn tmpfile(&self, mode: u32) -> Result<TempFile<'_>> {
        let dir = self.staging.as_fd();
        if let Some(fd) = self
            .tmpfiles
            .open(&self.staging, OFlags::RDWR, mode)
            .at(self.staging_path())?
        {
            return Ok(TempFile {
                file: File::from(fd),
                name: NameGuard { dir, name: None },
            });
        }
        let tmp = self.temp_name();
        let fd = rustix::fs::openat(
            &self.staging,
            tmp.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .at(self.staging_path().join(&tmp))?;
        Ok(TempFile {
            file: File::from(fd),
            name: NameGuard {
                dir,
                name: Some(tmp),
            },
        })
    }

    /// An anonymous read-write file in the staging directory for data a
    /// writer needs on disk for a while (a static-delta part and its
    /// decompressed payload): on the store's filesystem, never visible
    /// under a name, gone when closed and with the transaction.
    pub fn scratch_file(&self) -> Result<File> {
        let t = self.tmpfile(0o600)?;
        if let Some(name) = t.name.keep() {
            // No O_TMPFILE here: the open descriptor is all that is needed.
            rustix::fs::unlinkat(&self.staging, name.as_str(), AtFlags::empty())
                .at(self.staging_path().join(&name))?;
        }
        Ok(t.file)
    }

    /// Creates the staging subdirectory `XX` once per transaction.
    fn ensure_staging_subdir(&self, name: &ObjectName) -> Result<()> {
        let dir = name.loose_dir();
        let dir = dir.as_str();
        let idx = subdir_index(name);
        if self.subdirs[idx].load(Ordering::Acquire) {
            return Ok(());
        }
        // 0775 like ostree's object directories: it may be moved into
        // objects/ as it is.
        ensure_dir(&self.staging, dir, 0o775).at(self.staging_path().join(dir))?;
        self.subdirs[idx].store(true, Ordering::Release);
        Ok(())
    }

    /// Gives a finished object its name in staging. Returns false when the
    /// same object was staged meanwhile by another thread.
    fn stage(&self, staged: Staged, name: ObjectName) -> Result<bool> {
        self.ensure_staging_subdir(&name)?;
        let dest = name.loose_path(self.repo.mode().is_archive());
        let dest_path = self.staging_path().join(&dest);
        let r = match staged {
            Staged::File(file) => link_tmpfile(&file, &self.staging, &dest),
            Staged::Named(tmp) => {
                let r = rename_noreplace(&self.staging, &tmp, &self.staging, &dest);
                if r.is_err() {
                    let _ = rustix::fs::unlinkat(&self.staging, tmp.as_str(), AtFlags::empty());
                }
                r
            }
        };
        match r {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => return Ok(false),
            Err(e) => return Err(e).at(&dest_path),
        }
        self.objects_written.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Present in the repository or staged in this transaction. Staged
    /// objects are looked up on disk, not in a set, so a transaction's
    /// memory does not grow with the number of objects it writes.
    pub fn has_object(&self, name: &ObjectName) -> Result<bool> {
        if self.repo.has_object(name)? {
            return Ok(true);
        }
        if !self.subdirs[subdir_index(name)].load(Ordering::Acquire) {
            return Ok(false);
        }
        let rel = name.loose_path(self.repo.mode().is_archive());
        match rustix::fs::statat(&self.staging, rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e).at(self.staging_path().join(rel)),
        }
    }

    /// Writes a metadata object; its checksum is the SHA-256 of `data`.
    /// With `expected`, a mismatch is an error and nothing is written.
    pub fn write_metadata(
        &self,
        objtype: ObjectType,
        data: &[u8],
        expected: Option<Checksum>,
    ) -> Result<Written> {
        let checksum = Checksum::digest(data);
        let name = ObjectName::new(checksum, objtype);
        if let Some(exp) = expected
            && exp != checksum
        {
            return Err(StoreError::ChecksumMismatch {
                object: ObjectName::new(exp, objtype),
                actual: checksum,
            });
        }
        // Callers that know the checksum (pulls) checked presence before
        // fetching; others are spared the write when it is there.
        // Only `objects/`: a copy staged meanwhile is caught by the
        // no-replace link in `stage`.
        if expected.is_none() && self.repo.has_object(&name)? {
            return Ok(Written {
                checksum,
                new: false,
            });
        }
        let mut f = self.tmpfile(0o644)?;
        f.write_all(data).at(self.staging_path())?;
        let new = self.stage(f.staged(), name)?;
        Ok(Written { checksum, new })
    }

    /// The bytes of a metadata object staged by this transaction.
    pub fn load_staged(&self, name: &ObjectName) -> Result<Vec<u8>> {
        let rel = format!(
            "{}/{}",
            name.loose_dir(),
            name.loose_file_name(self.repo.mode().is_archive())
        );
        let path = self.staging_path().join(&rel);
        let fd = match rustix::fs::openat(
            &self.staging,
            rel.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(StoreError::MissingObject(*name)),
            Err(e) => return Err(e).at(&path),
        };
        let mut data = Vec::new();
        File::from(fd)
            .take(crate::ostree::MAX_METADATA_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .at(&path)?;
        Ok(data)
    }

    /// Writes (or replaces) a commit's detached metadata, `CHECKSUM.commitmeta`;
    /// it is named after the commit, not its own bytes.
    pub fn write_commitmeta(&self, commit: Checksum, data: &[u8]) -> Result<()> {
        let name = ObjectName::new(commit, ObjectType::CommitMeta);
        crate::ostree::Metadata::parse(data).map_err(|source| StoreError::CorruptObject {
            object: name,
            source,
        })?;
        let mut f = self.tmpfile(0o644)?;
        f.write_all(data).at(self.staging_path())?;
        // Replacing: drop an earlier staged copy first.
        let rel = format!("{}/{}", name.loose_dir(), name.loose_file_name(false));
        let _ = rustix::fs::unlinkat(&self.staging, rel.as_str(), AtFlags::empty());
        self.stage(f.staged(), name).map(drop)
    }

    /// Publishes the objects staged so far without touching refs: used by a
    /// pull that failed part-way, so that a retry fetches only the rest.
    pub fn publish_objects_only(mut self) -> Result<()> {
        self.publish_objects()?;
        self.done = true;
        self.cleanup();
        Ok(())
    }

    /// Makes the staged data durable, then moves the objects into place.
    fn publish_objects(&self) -> Result<()> {
        let staging_path = self.staging_path();
        self.join_syncer();
        if self.repo.fsync_enabled() {
            rustix::fs::syncfs(&self.staging).at(&staging_path)?;
        }
        publish_dir(self.repo, &self.staging, &staging_path)
    }

    /// Takes content object `checksum` from another local repository `src`
    /// by hardlinking its object file into staging, after verifying it
    /// (header and data re-hashed). Possible when both repositories store
    /// objects the same way (same mode) on the same filesystem; `None`
    /// when not, and the caller copies through [`write_content`] instead.
    /// The two stores then share the inode, as with `ostree pull-local`.
    ///
    /// [`write_content`]: Self::write_content
    pub fn import_content(&self, src: &Repo, checksum: Checksum) -> Result<Option<Written>> {
        let mode = self.repo.mode();
        if src.mode() != mode {
            return Ok(None);
        }
        // Same filesystem, and repositories of the same owner (as libostree
        // requires): whoever owns the other store could otherwise change
        // our objects later through the shared inodes.
        let stat = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).ok().map(|st| (st.st_dev, st.st_uid));
        let theirs = stat(src.objects_dir());
        if theirs.is_none() || theirs != stat(self.repo.objects_dir()) {
            return Ok(None);
        }
        let name = ObjectName::new(checksum, ObjectType::File);
        let obj = src.open_content(&checksum)?;
        obj.header
            .validate()
            .map_err(|source| StoreError::CorruptObject {
                object: name,
                source,
            })?;
        if mode == RepoMode::BareUserOnly
            && obj.header.is_regular()
            && obj.header.mode & 0o7777 & !0o775 != 0
        {
            // Let write_content refuse it with its message.
            return Ok(None);
        }
        let size = obj.size;
        let actual = super::objects::hash_content(&obj.header, obj.reader)
            .map_err(StoreError::SourceRead)?;
        if actual != checksum {
            return Err(StoreError::ChecksumMismatch {
                object: name,
                actual,
            });
        }
        self.ensure_staging_subdir(&name)?;
        let rel = name.loose_path(mode.is_archive());
        match rustix::fs::linkat(
            src.objects_dir(),
            rel.as_str(),
            &self.staging,
            rel.as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                return Ok(Some(Written {
                    checksum,
                    new: false,
                }));
            }
            // Not linkable here (protected hardlinks, link count, a
            // filesystem without links): copy instead.
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::PERM
                | rustix::io::Errno::MLINK
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::ACCESS,
            ) => return Ok(None),
            Err(e) => return Err(e).at(self.staging_path().join(&rel)),
        }
        self.objects_written.fetch_add(1, Ordering::Relaxed);
        if obj.header.is_regular() {
            self.bytes_written.fetch_add(size, Ordering::Relaxed);
        }
        Ok(Some(Written {
            checksum,
            new: true,
        }))
    }

    /// Writes a content object from its header and, for regular files,
    /// exactly `size` bytes of `data` (streamed, hashed on the way). With
    /// `expected`, a mismatch is an error and nothing becomes visible.
    pub fn write_content(
        &self,
        header: &FileHeader,
        size: u64,
        data: impl Read,
        expected: Option<Checksum>,
    ) -> Result<Written> {
        self.write_content_cloning(header, size, data, None, expected)
    }

    /// [`write_content`](Self::write_content) of an object read from
    /// another local repository: where both store uncompressed files on a
    /// filesystem that shares blocks, the data is reflinked (`FICLONE`)
    /// from the other object file instead of copied, then re-read from the
    /// clone to be hashed and verified.
    pub fn write_content_object(
        &self,
        obj: super::ContentObject,
        expected: Option<Checksum>,
    ) -> Result<Written> {
        let file = obj.file.clone();
        self.write_content_cloning(&obj.header, obj.size, obj.reader, file.as_deref(), expected)
    }

    fn write_content_cloning(
        &self,
        header: &FileHeader,
        size: u64,
        data: impl Read,
        clone_from: Option<&File>,
        expected: Option<Checksum>,
    ) -> Result<Written> {
        header.validate()?;
        let mode = self.repo.mode();
        if mode == RepoMode::BareUserOnly
            && header.is_regular()
            && header.mode & 0o7777 & !0o775 != 0
        {
            return Err(StoreError::ModeNotStorable {
                object: expected,
                mode: header.mode,
            });
        }
        let (staged, checksum) = self.write_content_temp(header, size, data, clone_from)?;
        let name = ObjectName::new(checksum, ObjectType::File);
        if let Some(exp) = expected.filter(|e| *e != checksum) {
            // Dropping `staged` discards it: an O_TMPFILE vanishes on close.
            staged.discard(&self.staging);
            return Err(StoreError::ChecksumMismatch {
                object: ObjectName::new(exp, ObjectType::File),
                actual: checksum,
            });
        }
        // As for metadata: a caller with `expected` checked presence before
        // fetching. A duplicate that slipped in meanwhile is dropped by the
        // no-replace link here or the no-replace rename at publication.
        // Only `objects/`: a copy staged meanwhile is caught by the
        // no-replace link in `stage`.
        if expected.is_none() && self.repo.has_object(&name)? {
            staged.discard(&self.staging);
            return Ok(Written {
                checksum,
                new: false,
            });
        }
        let new = self.stage(staged, name)?;
        if new && header.is_regular() {
            let total = self.bytes_written.fetch_add(size, Ordering::Relaxed) + size;
            self.maybe_sync_behind(total);
        }
        Ok(Written { checksum, new })
    }

    /// Writes the object as an unnamed staged file (or, for symlinks in
    /// modes that store real symlinks, a named one) with its metadata
    /// applied, and returns it with its content checksum.
    fn write_content_temp(
        &self,
        header: &FileHeader,
        size: u64,
        data: impl Read,
        clone_from: Option<&File>,
    ) -> Result<(Staged, Checksum)> {
        let mode = self.repo.mode();
        let at = self.staging_path();
        let mut hasher = header.hasher();
        if header.is_symlink() {
            let target = header.symlink_target.as_str();
            let staged = match mode {
                RepoMode::Bare | RepoMode::BareUserOnly => {
                    let tmp = self.temp_name();
                    let tmp_path = at.join(&tmp);
                    rustix::fs::symlinkat(target, &self.staging, tmp.as_str()).at(&tmp_path)?;
                    let staged = Staged::Named(tmp.clone());
                    if mode == RepoMode::Bare {
                        let r = rustix::fs::chownat(
                            &self.staging,
                            tmp.as_str(),
                            Some(rustix::fs::Uid::from_raw(header.uid)),
                            Some(rustix::fs::Gid::from_raw(header.gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .at(&tmp_path)
                        .and_then(|()| {
                            sys::set_link_xattrs(
                                &sys::proc_path(self.staging.as_fd(), &tmp),
                                &header.xattrs,
                            )
                            .at(&tmp_path)
                        });
                        if let Err(e) = r {
                            staged.discard(&self.staging);
                            return Err(e);
                        }
                    }
                    staged
                }
                RepoMode::BareUser => {
                    let mut f = self.tmpfile(0o644)?;
                    f.write_all(target.as_bytes()).at(&at)?;
                    f.write_all(&[0]).at(&at)?;
                    sys::set_fd_xattrs(&f.file, &user_meta(header)).at(&at)?;
                    zero_mtime(&f.file).at(&at)?;
                    f.staged()
                }
                RepoMode::Archive => {
                    let mut f = self.tmpfile(0o644)?;
                    f.write_all(&header.archive_prefix(0)).at(&at)?;
                    f.staged()
                }
            };
            return Ok((staged, Checksum::from_hasher(hasher)));
        }

        let perms = header.mode & 0o7777;
        // The mode the object file must end up with.
        let want = match mode {
            RepoMode::Bare | RepoMode::BareUserOnly => perms,
            RepoMode::BareUser => (perms & 0o775) | 0o400,
            RepoMode::Archive => 0o644,
        };
        // Created with its final permission bits where the umask allows, so
        // most files need no fchmod. Writing goes through our fd whatever
        // the mode says.
        let TempFile { file, name: temp } = self.tmpfile(want & 0o777)?;
        let created = want & 0o777 & !process_umask();
        let mut file = match mode {
            RepoMode::Archive => {
                let mut w = BufWriter::with_capacity(COPY_BUF, file);
                w.write_all(&header.archive_prefix(size)).at(&at)?;
                let mut enc = DeflateEncoder::new(w, Compression::new(ARCHIVE_LEVEL));
                copy_hashing(data, size, &mut hasher, &mut enc).map_err(|e| e.at(&at))?;
                let w = enc.finish().at(&at)?;
                w.into_inner().map_err(|e| e.into_error()).at(&at)?
            }
            _ => {
                let mut f = file;
                let cloned = match clone_from {
                    Some(src) if size > 0 => self.reflink(&f, src, size).at(&at)?,
                    _ => false,
                };
                if cloned {
                    // The clone is ours: hash what it holds.
                    copy_hashing(&f, size, &mut hasher, &mut std::io::sink()).map_err(
                        |e| match e {
                            CopyError::Read(e) | CopyError::Write(e) => StoreError::Io {
                                path: at.clone(),
                                source: e,
                            },
                        },
                    )?;
                } else {
                    copy_hashing(data, size, &mut hasher, &mut f).map_err(|e| e.at(&at))?;
                }
                f
            }
        };
        match mode {
            RepoMode::Bare => {
                // A new file is owned by our euid/egid (the staging
                // directory is not setgid): chown only when that differs.
                if (header.uid, header.gid) != (self.euid, self.egid) {
                    rustix::fs::fchown(
                        &file,
                        Some(rustix::fs::Uid::from_raw(header.uid)),
                        Some(rustix::fs::Gid::from_raw(header.gid)),
                    )
                    .at(&at)?;
                }
                sys::set_fd_xattrs(&file, &header.xattrs).at(&at)?;
            }
            RepoMode::BareUser => sys::set_fd_xattrs(&file, &user_meta(header)).at(&at)?,
            RepoMode::BareUserOnly | RepoMode::Archive => {}
        }
        // After chown, which clears setuid/setgid.
        if created != want {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(want)).at(&at)?;
        }
        if mode != RepoMode::Archive {
            zero_mtime(&file).at(&at)?;
        }
        file.flush().at(&at)?;
        let staged = TempFile { file, name: temp }.staged();
        Ok((staged, Checksum::from_hasher(hasher)))
    }

    /// Makes `dst` (new and empty) share `src`'s blocks; false, with `dst`
    /// still empty, when the filesystem cannot (then remembered) or the
    /// clone is not `size` bytes long. `dst`'s position stays at 0.
    fn reflink(&self, dst: &File, src: &File, size: u64) -> std::io::Result<bool> {
        if self.no_reflink.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) if rustix::fs::fstat(dst)?.st_size as u64 == size => Ok(true),
            Ok(()) => {
                // The copy that follows must start from an empty file.
                rustix::fs::ftruncate(dst, 0)?;
                Ok(false)
            }
            // Another filesystem: this source only.
            Err(rustix::io::Errno::XDEV) => Ok(false),
            Err(_) => {
                self.no_reflink.store(true, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    /// Starts a background `syncfs` of the staging filesystem each time
    /// [`SYNC_STEP`] more bytes have been written, so the data reaches the
    /// disk while the pull goes on and the one `syncfs` that makes the
    /// transaction durable finds little left to do. Durability still comes
    /// from that final `syncfs`; this only moves the waiting earlier.
    fn maybe_sync_behind(&self, total: u64) {
        if !self.repo.fsync_enabled() {
            return;
        }
        let mark = self.synced_mark.load(Ordering::Relaxed);
        if total < mark + SYNC_STEP {
            return;
        }
        let mut syncer = self.syncer.lock().unwrap_or_else(|p| p.into_inner());
        if syncer.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if self
            .synced_mark
            .compare_exchange(mark, total, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Ok(fd) = self.staging.try_clone() else {
            return;
        };
        // Errors are left for the final syncfs to report; no thread to
        // spare (EAGAIN) just means no early sync.
        *syncer = std::thread::Builder::new()
            .name("arbor-sync".into())
            .spawn(move || {
                let _ = rustix::fs::syncfs(&fd);
            })
            .ok();
    }

    /// Waits for a background sync (before the final one, or on abort).
    fn join_syncer(&self) {
        let h = self.syncer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    /// Queues a ref update, applied by [`commit`](Self::commit) after the
    /// objects are in place. `None` deletes the ref.
    pub fn set_ref(&self, name: RefName, target: Option<Checksum>) {
        self.refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, target));
    }

    /// Publishes everything staged, then the refs.
    pub fn commit(mut self) -> Result<TransactionStats> {
        let repo = self.repo;
        self.publish_objects()?;
        let refs = std::mem::take(&mut *self.refs.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, target) in refs {
            repo.write_ref(&name, target)?;
        }
        // The renames and refs.
        if repo.fsync_enabled() {
            rustix::fs::syncfs(repo.dir()).at(repo.path())?;
        }
        self.done = true;
        self.cleanup();
        Ok(TransactionStats {
            objects_written: self.objects_written.load(Ordering::Relaxed),
            content_bytes_written: self.bytes_written.load(Ordering::Relaxed),
        })
    }

    fn cleanup(&self) {
        if let Ok(tmp) = open_dir(self.repo.dir(), "tmp") {
            let _ = remove_tree(tmp.as_fd(), &format!("{TXN_PREFIX}{}", self.id));
            let _ = rustix::fs::unlinkat(
                &tmp,
                format!("{TXN_PREFIX}{}.lock", self.id).as_str(),
                AtFlags::empty(),
            );
        }
    }
}

impl Drop for Transaction<'_> {
    /// An uncommitted transaction is aborted: nothing it staged appears.
    fn drop(&mut self) {
        self.join_syncer();
        if !self.done {
            self.cleanup();
        }
    }
}

/// A file being written in staging: anonymous, or under a temporary name
/// where the filesystem has no `O_TMPFILE`.
struct TempFile<'t> {
    file: File,
    name: NameGuard<'t>,
}

impl TempFile<'_> {
    fn staged(self) -> Staged {
        match self.name.keep() {
            None => Staged::File(self.file),
            // Complete: the name is what counts from here on.
            Some(name) => Staged::Named(name),
        }
    }
}

/// The name of a temporary file in staging, removed on drop unless kept:
/// a write that fails part-way leaves nothing behind.
struct NameGuard<'t> {
    dir: BorrowedFd<'t>,
    name: Option<String>,
}

impl NameGuard<'_> {
    fn keep(mut self) -> Option<String> {
        self.name.take()
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let _ = rustix::fs::unlinkat(self.dir, name.as_str(), AtFlags::empty());
        }
    }
}

impl std::ops::Deref for TempFile<'_> {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl std::ops::DerefMut for TempFile<'_> {
    fn deref_mut(&mut self) -> &mut File {
        &mut self.file
    }
}

/// An object written but not yet named in staging.
enum Staged {
    /// An `O_TMPFILE`, linked into place by [`Transaction::stage`].
    File(File),
    /// A symlink (symlinks cannot be anonymous), or any file where
    /// `O_TMPFILE` is unsupported, under a temporary name.
    Named(String),
}

impl Staged {
    fn discard(self, staging: &OwnedFd) {
        if let Staged::Named(tmp) = self {
            let _ = rustix::fs::unlinkat(staging, tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Creates and locks a transaction's lock file `tmp/NAME`. It must never be
/// visible unlocked while its owner lives, or a cleaner would take the
/// owner for dead: an `O_TMPFILE` is locked before it gets its name. Where
/// the filesystem has no `O_TMPFILE`, the file is created under its name
/// and locked at once; a cleaner may have removed it in between, which is
/// seen by comparing inodes, and then it is made again.
pub(crate) fn create_liveness(
    tmp: &OwnedFd,
    tmp_path: &std::path::Path,
    name: &str,
    tmpfiles: &Tmpfiles,
) -> Result<OwnedFd> {
    let path = tmp_path.join(name);
    if let Some(fd) = tmpfiles.open(tmp, OFlags::RDWR, 0o600).at(tmp_path)? {
        sys::ofd_lock(fd.as_fd(), true, true).at(&path)?;
        link_tmpfile(&fd, tmp, name).at(&path)?;
        return Ok(fd);
    }
    loop {
        let fd = rustix::fs::openat(
            tmp,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .at(&path)?;
        sys::ofd_lock(fd.as_fd(), true, true).at(&path)?;
        let ours = rustix::fs::fstat(&fd).at(&path)?;
        match rustix::fs::statat(tmp, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino) => return Ok(fd),
            Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e).at(&path),
        }
    }
}

/// Which `XX/` staging subdirectory an object goes to, as an index.
fn subdir_index(name: &ObjectName) -> usize {
    usize::from(name.checksum.as_bytes()[0])
}

/// The process umask, read once from /proc (reading it through umask(2)
/// would change it for a moment under other threads).
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            // Unknown: assume everything may be masked, so fchmod always runs.
            .unwrap_or(0o777)
    })
}

/// Objects stored as regular files have mtime 0, as libostree's do.
fn zero_mtime(file: &File) -> rustix::io::Result<()> {
    let zero = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let omit = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    };
    rustix::fs::futimens(
        file,
        &Timestamps {
            last_access: omit,
            last_modification: zero,
        },
    )
}

/// bare-user's `user.ostreemeta` xattr carrying the real metadata.
fn user_meta(header: &FileHeader) -> crate::ostree::Xattrs {
    crate::ostree::Xattrs::from_unsorted(vec![crate::ostree::Xattr {
        name: b"user.ostreemeta".to_vec(),
        value: header.to_ostreemeta(),
    }])
    .expect("static xattr name is valid")
}

/// Where a copy into an object failed.
enum CopyError {
    /// Reading the source: reported as the source's problem.
    Read(std::io::Error),
    /// Writing the staged object.
    Write(std::io::Error),
}

impl CopyError {
    fn at(self, staging: &std::path::Path) -> StoreError {
        match self {
            CopyError::Read(e) => StoreError::SourceRead(e),
            CopyError::Write(e) => StoreError::Io {
                path: staging.to_path_buf(),
                source: e,
            },
        }
    }
}

/// Copies exactly `size` bytes, feeding the hasher; a source that ends
/// early or has more bytes changed while being read.
fn copy_hashing(
    src: impl Read,
    size: u64,
    hasher: &mut sha2::Sha256,
    dst: &mut impl Write,
) -> std::result::Result<(), CopyError> {
    thread_local! {
        // One copy buffer per thread, not a freshly zeroed one per object.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; COPY_BUF]);
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => copy_hashing_with(src, size, hasher, dst, &mut buf),
        Err(_) => copy_hashing_with(src, size, hasher, dst, &mut vec![0u8; COPY_BUF]),
    })
}

fn copy_hashing_with(
    mut src: impl Read,
    size: u64,
    hasher: &mut sha2::Sha256,
    dst: &mut impl Write,
    buf: &mut [u8],
) -> std::result::Result<(), CopyError> {
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = src.read(&mut buf[..want]).map_err(CopyError::Read)?;
        if n == 0 {
            return Err(CopyError::Read(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "data ended {left} bytes short of the expected {size} (file changed or truncated?)"
                ),
            )));
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    if src.read(&mut probe).map_err(CopyError::Read)? != 0 {
        return Err(CopyError::Read(std::io::Error::other(format!(
            "data is longer than the expected {size} bytes (file changed while being read?)"
        ))));
    }
    Ok(())
}

/// Moves every finished object staged in `staging` into `objects/`, never
/// replacing an object already there. The caller has synced the data.
fn publish_dir(repo: &Repo, staging: &OwnedFd, staging_path: &std::path::Path) -> Result<()> {
    let archive = repo.mode().is_archive();
    for (dir, _) in list_dir_typed(staging.as_fd()).at(staging_path)? {
        let Some(dir) = dir.to_str().filter(|d| d.len() == 2) else {
            continue;
        };
        // Into a store without this subdirectory yet (a first pull or
        // commit), the whole directory moves in one rename: staging
        // subdirectories only ever hold finished objects.
        match rename_noreplace(staging, dir, repo.objects_dir(), dir) {
            Ok(()) => continue,
            Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => {}
            Err(e) => return Err(e).at(repo.path().join("objects").join(dir)),
        }
        let sub = open_dir(staging, dir)?;
        for (file, _) in list_dir_typed(sub.as_fd()).at(staging_path.join(dir))? {
            let Some(file) = file.to_str() else { continue };
            // Only finished objects; in archive mode content is `.filez`.
            if ObjectName::from_loose(dir, file)
                .is_none_or(|(n, z)| z != (archive && !n.objtype.is_meta()))
            {
                continue;
            }
            let dest = format!("{dir}/{file}");
            // Detached metadata is replaced whole; other objects are
            // immutable, so an existing one is kept.
            let r = if file.ends_with(".commitmeta") {
                rustix::fs::renameat(&sub, file, repo.objects_dir(), dest.as_str())
            } else {
                rename_noreplace(&sub, file, repo.objects_dir(), &dest)
            };
            match r {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {
                    rustix::fs::unlinkat(&sub, file, AtFlags::empty())
                        .at(staging_path.join(&dest))?;
                }
                Err(e) => return Err(e).at(repo.path().join("objects").join(&dest)),
            }
        }
    }
    Ok(())
}

/// This boot's id: staged objects of a dead process are only trusted
/// (adopted) within the boot that wrote them, since unsynced data may not
/// survive a power loss.
fn boot_id() -> String {
    std::env::var("OSTREE_BOOTID")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())
        .map(|s| s.trim().replace(|c: char| !c.is_ascii_alphanumeric(), ""))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "noboot".into())
}

/// Removes what dead transactions left in `tmp/`. Objects a dead
/// transaction of this boot had finished (written, verified and renamed to
/// their checksum name) are synced and published first, so an interrupted
/// pull does not fetch them again.
pub(crate) fn clean_stale(repo: &Repo) -> Result<()> {
    let tmp_path = repo.path().join("tmp");
    let tmp = match open_dir(repo.dir(), "tmp") {
        Ok(t) => t,
        Err(_) => return Ok(()),
    };
    let entries = list_dir_typed(tmp.as_fd()).at(&tmp_path)?;
    let names: HashSet<String> = entries
        .iter()
        .filter_map(|(n, _)| n.to_str().map(String::from))
        .collect();
    for name in &names {
        let Some(id) = name
            .strip_prefix(TXN_PREFIX)
            .and_then(|r| r.strip_suffix(".lock"))
        else {
            continue;
        };
        let Ok(fd) = rustix::fs::openat(
            &tmp,
            name.as_str(),
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) else {
            continue;
        };
        if sys::ofd_lock(fd.as_fd(), true, false).unwrap_or(false) {
            let staging_name = format!("{TXN_PREFIX}{id}");
            if id.starts_with(&format!("{}-", boot_id()))
                && let Ok(staging) = open_dir(&tmp, &staging_name)
            {
                // Publishing needs the shared lock. Opening a repository
                // must not wait behind a prune holding it exclusively:
                // leave the leftovers for a later open.
                let Some(_lock) = RepoLock::try_acquire(repo, LockMode::Shared)? else {
                    continue;
                };
                let staging_path = tmp_path.join(&staging_name);
                if repo.fsync_enabled() {
                    rustix::fs::syncfs(&staging).at(&staging_path)?;
                }
                publish_dir(repo, &staging, &staging_path)?;
            }
            remove_tree(tmp.as_fd(), &staging_name).at(tmp_path.join(&staging_name))?;
            let _ = rustix::fs::unlinkat(&tmp, name.as_str(), AtFlags::empty());
        }
    }
    // Staging dirs whose lock file is gone belong to dead processes too.
    for name in &names {
        if let Some(rest) = name.strip_prefix(TXN_PREFIX)
            && !rest.ends_with(".lock")
            && !names.contains(&format!("{name}.lock"))
            // Re-check: the listing is not a snapshot, and a live owner
            // creates its lock file before its staging directory.
            && rustix::fs::statat(&tmp, format!("{name}.lock").as_str(), AtFlags::SYMLINK_NOFOLLOW).is_err()
        {
            remove_tree(tmp.as_fd(), name).at(tmp_path.join(name))?;
        }
    }
    // Working directories of killed generations and summary updates.
    super::workdir::clean_dead(repo)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::Xattrs;

    /// A reader that fails after some bytes, like a dropped connection or
    /// a file that cannot be read.
    struct Failing(usize);

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("the source broke"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    fn header() -> FileHeader {
        FileHeader {
            uid: 0,
            gid: 0,
            mode: 0o100644,
            symlink_target: String::new(),
            xattrs: Xattrs::default(),
        }
    }

    /// Errors reading the data are the source's, not the staging file's:
    /// they carry no store path, so callers can name the source.
    #[test]
    fn source_errors_are_not_store_errors() {
        for mode in [RepoMode::Bare, RepoMode::Archive] {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repo::init(&dir.path().join("repo"), mode).unwrap();
            let txn = Transaction::begin(&repo).unwrap();
            let e = txn
                .write_content(&header(), 100_000, Failing(70_000), None)
                .unwrap_err();
            assert!(
                matches!(&e, StoreError::SourceRead(s) if s.to_string() == "the source broke"),
                "{mode:?}: {e:?}"
            );
            // Short data is the source's fault too.
            let e = txn
                .write_content(&header(), 10, &b"short"[..], None)
                .unwrap_err();
            assert!(
                matches!(&e, StoreError::SourceRead(s) if s.kind() == std::io::ErrorKind::UnexpectedEof),
                "{mode:?}: {e:?}"
            );
            let e = txn
                .write_content(&header(), 2, &b"longer"[..], None)
                .unwrap_err();
            assert!(matches!(&e, StoreError::SourceRead(_)), "{mode:?}: {e:?}");
            drop(txn);
            let left: Vec<_> = std::fs::read_dir(dir.path().join("repo/tmp"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with(TXN_PREFIX))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    /// Where the filesystem makes no `O_TMPFILE`, objects are staged under
    /// temporary names; that choice is the transaction's, and leaves
    /// nothing behind.
    #[test]
    fn named_staging_files() {
        for mode in [RepoMode::Bare, RepoMode::Archive] {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repo::init(&dir.path().join("repo"), mode).unwrap();
            let mut txn = Transaction::begin(&repo).unwrap();
            txn.tmpfiles = Tmpfiles::named();
            let w = txn
                .write_content(&header(), 5, &b"hello"[..], None)
                .unwrap();
            // A failed write leaves no temporary name either.
            txn.write_content(&header(), 10, &b"short"[..], None)
                .unwrap_err();
            txn.commit().unwrap();
            repo.verify_content(&w.checksum).unwrap();
            let left: Vec<_> = std::fs::read_dir(dir.path().join("repo/tmp"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with(TXN_PREFIX))
                .collect();
            assert!(left.is_empty(), "{mode:?}: {left:?}");
        }
    }
}
