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
//! `tmp/arbor-txn-<id>.lock` for its whole life (the file is created and
//! locked under another name, then renamed, so a lock file under its final
//! name is always locked by a live owner or belongs to a dead one). A later
//! process that can lock it knows the owner died and removes both.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::DeflateEncoder;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Timestamps};
use sha2::Digest;

use super::error::{IoContext, Result, StoreError};
use super::fsutil::{ensure_dir, list_dir_typed, remove_tree};
use super::lock::{LockMode, RepoLock};
use super::refs::RefName;
use super::repo::{Repo, RepoMode, open_dir, write_file_atomic};
use super::sys;
use crate::ostree::content::FileHeader;
use crate::ostree::{Checksum, ObjectName, ObjectType};

const TXN_PREFIX: &str = "arbor-txn-";
const COPY_BUF: usize = 256 * 1024;
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
    staged: Mutex<HashSet<ObjectName>>,
    refs: Mutex<Vec<(RefName, Option<Checksum>)>>,
    counter: AtomicU64,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    done: bool,
}

impl<'r> Transaction<'r> {
    pub fn begin(repo: &'r Repo) -> Result<Transaction<'r>> {
        let lock = repo.lock(LockMode::Shared)?;
        let tmp = open_dir(repo.dir(), "tmp")?;
        let tmp_path = repo.path().join("tmp");
        let id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let pending = format!(".{TXN_PREFIX}{id}.lock-new");
        let liveness = rustix::fs::openat(
            &tmp,
            pending.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .at(tmp_path.join(&pending))?;
        sys::ofd_lock(liveness.as_fd(), true, true).at(tmp_path.join(&pending))?;
        let lock_name = format!("{TXN_PREFIX}{id}.lock");
        rustix::fs::renameat(&tmp, pending.as_str(), &tmp, lock_name.as_str())
            .at(tmp_path.join(&lock_name))?;
        let staging_name = format!("{TXN_PREFIX}{id}");
        rustix::fs::mkdirat(&tmp, staging_name.as_str(), Mode::from_raw_mode(0o755))
            .at(tmp_path.join(&staging_name))?;
        let staging = open_dir(&tmp, &staging_name)?;
        Ok(Transaction {
            repo,
            _lock: lock,
            _liveness: liveness,
            id,
            staging,
            staged: Mutex::new(HashSet::new()),
            refs: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            objects_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
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

    /// Present in the repository or staged in this transaction.
    pub fn has_object(&self, name: &ObjectName) -> Result<bool> {
        if self
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
        {
            return Ok(true);
        }
        self.repo.has_object(name)
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
        if self.has_object(&name)? {
            return Ok(Written {
                checksum,
                new: false,
            });
        }
        let tmp = self.temp_name();
        let mut f = self.create_temp(&tmp, 0o644)?;
        f.write_all(data).at(self.staging_path().join(&tmp))?;
        drop(f);
        self.publish_staged(&tmp, name)?;
        Ok(Written {
            checksum,
            new: true,
        })
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
        header.validate()?;
        let mode = self.repo.mode();
        if mode == RepoMode::BareUserOnly
            && header.is_regular()
            && header.mode & 0o7777 & !0o775 != 0
        {
            return Err(StoreError::Other(format!(
                "content object {}: invalid mode {:#o} with bits {:#o} for a bare-user-only repository",
                expected
                    .map(|c| c.to_hex())
                    .unwrap_or_else(|| "(new)".into()),
                header.mode,
                header.mode & 0o7777 & !0o775
            )));
        }
        let tmp = self.temp_name();
        let tmp_path = self.staging_path().join(&tmp);
        let result = self.write_content_temp(header, size, data, &tmp);
        let checksum = match result {
            Ok(c) => c,
            Err(e) => {
                let _ = remove_tree(self.staging.as_fd(), &tmp);
                return Err(e);
            }
        };
        let name = ObjectName::new(checksum, ObjectType::File);
        let mismatch = expected.filter(|e| *e != checksum);
        if mismatch.is_some() || self.has_object(&name)? {
            rustix::fs::unlinkat(&self.staging, tmp.as_str(), AtFlags::empty()).at(&tmp_path)?;
            if let Some(exp) = mismatch {
                return Err(StoreError::ChecksumMismatch {
                    object: ObjectName::new(exp, ObjectType::File),
                    actual: checksum,
                });
            }
            return Ok(Written {
                checksum,
                new: false,
            });
        }
        self.publish_staged(&tmp, name)?;
        if header.is_regular() {
            self.bytes_written.fetch_add(size, Ordering::Relaxed);
        }
        Ok(Written {
            checksum,
            new: true,
        })
    }

    /// Writes the temporary object file (or symlink) with its metadata
    /// applied and returns the content checksum.
    fn write_content_temp(
        &self,
        header: &FileHeader,
        size: u64,
        data: impl Read,
        tmp: &str,
    ) -> Result<Checksum> {
        let mode = self.repo.mode();
        let tmp_path = self.staging_path().join(tmp);
        let mut hasher = header.hasher();
        if header.is_symlink() {
            let target = header.symlink_target.as_str();
            match mode {
                RepoMode::Bare | RepoMode::BareUserOnly => {
                    rustix::fs::symlinkat(target, &self.staging, tmp).at(&tmp_path)?;
                    if mode == RepoMode::Bare {
                        rustix::fs::chownat(
                            &self.staging,
                            tmp,
                            Some(rustix::fs::Uid::from_raw(header.uid)),
                            Some(rustix::fs::Gid::from_raw(header.gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .at(&tmp_path)?;
                        sys::set_link_xattrs(
                            &sys::proc_path(self.staging.as_fd(), tmp),
                            &header.xattrs,
                        )
                        .at(&tmp_path)?;
                    }
                }
                RepoMode::BareUser => {
                    let mut f = self.create_temp(tmp, 0o644)?;
                    f.write_all(target.as_bytes()).at(&tmp_path)?;
                    f.write_all(&[0]).at(&tmp_path)?;
                    sys::set_fd_xattrs(&f, &user_meta(header)).at(&tmp_path)?;
                }
                RepoMode::Archive => {
                    let mut f = self.create_temp(tmp, 0o644)?;
                    f.write_all(&header.archive_prefix(0)).at(&tmp_path)?;
                }
            }
            return Ok(Checksum::from_hasher(hasher));
        }

        let file = self.create_temp(tmp, 0o600)?;
        let mut file = match mode {
            RepoMode::Archive => {
                let mut w = BufWriter::with_capacity(COPY_BUF, file);
                w.write_all(&header.archive_prefix(size)).at(&tmp_path)?;
                let mut enc = DeflateEncoder::new(w, Compression::new(ARCHIVE_LEVEL));
                copy_hashing(data, size, &mut hasher, &mut enc).at(&tmp_path)?;
                let w = enc.finish().at(&tmp_path)?;
                w.into_inner().map_err(|e| e.into_error()).at(&tmp_path)?
            }
            _ => {
                let mut f = file;
                copy_hashing(data, size, &mut hasher, &mut f).at(&tmp_path)?;
                f
            }
        };
        let perms = header.mode & 0o7777;
        match mode {
            RepoMode::Bare => {
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(header.uid)),
                    Some(rustix::fs::Gid::from_raw(header.gid)),
                )
                .at(&tmp_path)?;
                sys::set_fd_xattrs(&file, &header.xattrs).at(&tmp_path)?;
                // After chown, which clears setuid/setgid.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(perms)).at(&tmp_path)?;
            }
            RepoMode::BareUser => {
                sys::set_fd_xattrs(&file, &user_meta(header)).at(&tmp_path)?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode((perms & 0o775) | 0o400))
                    .at(&tmp_path)?;
            }
            RepoMode::BareUserOnly => {
                rustix::fs::fchmod(&file, Mode::from_raw_mode(perms)).at(&tmp_path)?;
            }
            RepoMode::Archive => {
                rustix::fs::fchmod(&file, Mode::from_raw_mode(0o644)).at(&tmp_path)?;
            }
        }
        if mode != RepoMode::Archive {
            // Objects have mtime 0, as libostree's do.
            let zero = rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let omit = rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            };
            rustix::fs::futimens(
                &file,
                &Timestamps {
                    last_access: omit,
                    last_modification: zero,
                },
            )
            .at(&tmp_path)?;
        }
        file.flush().at(&tmp_path)?;
        Ok(Checksum::from_hasher(hasher))
    }

    fn create_temp(&self, name: &str, mode: u32) -> Result<File> {
        let fd = rustix::fs::openat(
            &self.staging,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .at(self.staging_path().join(name))?;
        Ok(File::from(fd))
    }

    /// Renames a finished temporary file to its object name in staging.
    fn publish_staged(&self, tmp: &str, name: ObjectName) -> Result<()> {
        let dir = name.loose_dir();
        let staging_path = self.staging_path();
        ensure_dir(&self.staging, &dir, 0o755).at(staging_path.join(&dir))?;
        let dest = format!(
            "{dir}/{}",
            name.loose_file_name(self.repo.mode().is_archive())
        );
        rustix::fs::renameat(&self.staging, tmp, &self.staging, dest.as_str())
            .at(staging_path.join(&dest))?;
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        self.objects_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
        let staging_path = self.staging_path();
        let durable = repo.fsync_enabled();
        if durable {
            rustix::fs::syncfs(&self.staging).at(&staging_path)?;
        }
        let archive = repo.mode().is_archive();
        for (dir, _) in list_dir_typed(self.staging.as_fd()).at(&staging_path)? {
            let Some(dir) = dir.to_str().filter(|d| d.len() == 2) else {
                continue;
            };
            let sub = open_dir(&self.staging, dir)?;
            ensure_dir(repo.objects_dir(), dir, 0o775).at(repo.path().join("objects").join(dir))?;
            for (file, _) in list_dir_typed(sub.as_fd()).at(staging_path.join(dir))? {
                let Some(file) = file.to_str() else { continue };
                // Only finished objects; in archive mode content is `.filez`.
                if ObjectName::from_loose(dir, file)
                    .is_none_or(|(n, z)| z != (archive && !n.objtype.is_meta()))
                {
                    continue;
                }
                let dest = format!("{dir}/{file}");
                match rustix::fs::renameat_with(
                    &sub,
                    file,
                    repo.objects_dir(),
                    dest.as_str(),
                    RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => {}
                    // Another writer published the same object first.
                    Err(rustix::io::Errno::EXIST) => {
                        rustix::fs::unlinkat(&sub, file, AtFlags::empty())
                            .at(staging_path.join(&dest))?;
                    }
                    Err(e) => return Err(e).at(repo.path().join("objects").join(&dest)),
                }
            }
        }
        let refs = std::mem::take(&mut *self.refs.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, target) in refs {
            repo.write_ref(&name, target)?;
        }
        if durable {
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
        if !self.done {
            self.cleanup();
        }
    }
}

/// bare-user's `user.ostreemeta` xattr carrying the real metadata.
fn user_meta(header: &FileHeader) -> crate::ostree::Xattrs {
    crate::ostree::Xattrs::from_unsorted(vec![crate::ostree::Xattr {
        name: b"user.ostreemeta".to_vec(),
        value: header.to_ostreemeta(),
    }])
    .expect("static xattr name is valid")
}

/// Copies exactly `size` bytes, feeding the hasher; a source that ends
/// early or has more bytes changed while being read.
fn copy_hashing(
    mut src: impl Read,
    size: u64,
    hasher: &mut sha2::Sha256,
    dst: &mut impl Write,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF.min(size.max(1) as usize)];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "data ended {left} bytes short of the expected {size} (file changed or truncated?)"
                ),
            ));
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    if src.read(&mut probe)? != 0 {
        return Err(std::io::Error::other(format!(
            "data is longer than the expected {size} bytes (file changed while being read?)"
        )));
    }
    Ok(())
}

/// Removes what dead transactions left in `tmp/`.
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
            // Owner is dead: its staged objects were never published.
            remove_tree(tmp.as_fd(), &format!("{TXN_PREFIX}{id}"))
                .at(tmp_path.join(format!("{TXN_PREFIX}{id}")))?;
            let _ = rustix::fs::unlinkat(&tmp, name.as_str(), AtFlags::empty());
        }
    }
    // Staging dirs whose lock file is gone, and lock files caught between
    // creation and rename, belong to dead processes too.
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
        if name.starts_with(&format!(".{TXN_PREFIX}"))
            && name.ends_with(".lock-new")
            && let Ok(fd) = rustix::fs::openat(
                &tmp,
                name.as_str(),
                OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            && sys::ofd_lock(fd.as_fd(), true, false).unwrap_or(false)
        {
            let _ = rustix::fs::unlinkat(&tmp, name.as_str(), AtFlags::empty());
        }
    }
    Ok(())
}

/// Writes `data` as the file `name` in `dir` atomically (used for refs).
pub(crate) fn replace_file(
    dir: &OwnedFd,
    dir_path: &std::path::Path,
    name: &str,
    data: &[u8],
) -> Result<()> {
    write_file_atomic(dir.as_fd(), dir_path, name, data, 0o644)
}
