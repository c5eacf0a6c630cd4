//! Opening and creating repositories; the repository's mode and config.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::error::{IoContext, Result, StoreError};
use super::keyfile::KeyFile;
use super::lock::{LockMode, RepoLock};

/// How a repository stores content objects (`core.mode` in `config`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RepoMode {
    /// Files as themselves, with real owners, modes and xattrs (root only).
    Bare,
    /// Files owned by the writer; real metadata in `user.ostreemeta`.
    BareUser,
    /// No ownership or xattrs at all; for user-mode checkouts.
    BareUserOnly,
    /// Compressed `.filez` objects; what HTTP servers publish.
    Archive,
}

impl RepoMode {
    /// The value written to `config` (`archive` is written by its legacy
    /// name, as ostree does).
    pub fn config_name(self) -> &'static str {
        match self {
            RepoMode::Bare => "bare",
            RepoMode::BareUser => "bare-user",
            RepoMode::BareUserOnly => "bare-user-only",
            RepoMode::Archive => "archive-z2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bare" => RepoMode::Bare,
            "bare-user" => RepoMode::BareUser,
            "bare-user-only" => RepoMode::BareUserOnly,
            "archive" | "archive-z2" => RepoMode::Archive,
            _ => return None,
        })
    }

    pub fn is_archive(self) -> bool {
        self == RepoMode::Archive
    }

    /// Mode for a new repository when none is asked for: `bare` for root
    /// (it can own files as anybody), `bare-user` otherwise.
    pub fn default_for_user() -> Self {
        if rustix::process::geteuid().is_root() {
            RepoMode::Bare
        } else {
            RepoMode::BareUser
        }
    }
}

impl std::fmt::Display for RepoMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RepoMode::Archive => "archive",
            m => m.config_name(),
        })
    }
}

/// An open repository.
pub struct Repo {
    path: PathBuf,
    dir: OwnedFd,
    objects: OwnedFd,
    mode: RepoMode,
    config: KeyFile,
    /// Opened with [`Repo::open_read_only`]: no transaction may begin.
    read_only: bool,
    /// Dead transactions' leftovers have been dealt with (see
    /// [`super::transaction::clean_stale`]); done once, by the first transaction.
    pub(crate) recovered: std::sync::atomic::AtomicBool,
}

const INIT_DIRS: [&str; 9] = [
    "tmp",
    "extensions",
    "state",
    "refs",
    "refs/heads",
    "refs/mirrors",
    "refs/remotes",
    "objects",
    "tmp/cache",
];

impl Repo {
    /// Creates a repository at `path` (which may exist as an empty
    /// directory). The config is written last, by rename, so a crash leaves
    /// either no repository or a complete one.
    pub fn init(path: &Path, mode: RepoMode) -> Result<Repo> {
        if path.join("config").exists() || path.join("objects").exists() {
            return Err(StoreError::AlreadyExists(path.to_path_buf()));
        }
        std::fs::create_dir_all(path).at(path)?;
        let dir = open_dir(rustix::fs::CWD, path)?;
        for d in INIT_DIRS {
            match rustix::fs::mkdirat(&dir, d, Mode::from_raw_mode(0o775)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e).at(path.join(d)),
            }
        }
        let config = format!("[core]\nrepo_version=1\nmode={}\n", mode.config_name());
        write_file_atomic(dir.as_fd(), path, "config", config.as_bytes(), 0o644)?;
        if mode == RepoMode::BareUser {
            probe_user_xattrs(&dir, path)?;
        }
        Repo::open(path)
    }

    /// Opens an existing repository. Opening writes nothing: what dead
    /// writers left in `tmp/` is recovered when this process first begins
    /// a transaction (see [`super::transaction`]).
    pub fn open(path: &Path) -> Result<Repo> {
        Repo::open_with(path, false)
    }

    /// Opens an existing repository that this process will only read (a
    /// pull source, a `--localcache-repo`): beginning a transaction in it
    /// fails with [`StoreError::ReadOnly`], and nothing in it is ever
    /// written, not even recovery of dead writers' leftovers.
    pub fn open_read_only(path: &Path) -> Result<Repo> {
        Repo::open_with(path, true)
    }

    fn open_with(path: &Path, read_only: bool) -> Result<Repo> {
        let dir = match open_dir(rustix::fs::CWD, path) {
            Ok(d) => d,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotARepo(path.to_path_buf()));
            }
            Err(e) => return Err(e),
        };
        let objects = match open_dir(&dir, "objects") {
            Ok(d) => d,
            Err(_) => return Err(StoreError::NotARepo(path.to_path_buf())),
        };
        let config_path = path.join("config");
        let text = std::fs::read_to_string(&config_path).at(&config_path)?;
        let config = KeyFile::parse(&text).map_err(|e| StoreError::Config {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| StoreError::Config {
            path: config_path.clone(),
            reason,
        };
        match config.get("core", "repo_version").as_deref() {
            Some("1") => {}
            other => {
                return Err(bad(format!(
                    "unsupported repo_version {other:?} (expected 1)"
                )));
            }
        }
        let mode_name = config.get("core", "mode").unwrap_or_else(|| "bare".into());
        let mode = RepoMode::parse(&mode_name)
            .ok_or_else(|| bad(format!("unsupported mode {mode_name:?}")))?;
        Ok(Repo {
            path: path.to_path_buf(),
            dir,
            objects,
            mode,
            config,
            read_only,
            recovered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether this handle was opened with [`Repo::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Opens `path`, creating it with the default mode if it does not exist.
    pub fn open_or_init(path: &Path) -> Result<Repo> {
        match Repo::open(path) {
            Err(StoreError::NotARepo(_)) => Repo::init(path, RepoMode::default_for_user()),
            r => r,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> RepoMode {
        self.mode
    }

    pub fn config(&self) -> &KeyFile {
        &self.config
    }

    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    pub fn objects_dir(&self) -> BorrowedFd<'_> {
        self.objects.as_fd()
    }

    /// `core.collection-id`, when the repository has one.
    pub fn collection_id(&self) -> Option<String> {
        self.config.get("core", "collection-id")
    }

    /// Whether writes are made durable (`core.fsync`, default true).
    pub fn fsync_enabled(&self) -> bool {
        !matches!(self.config.get_bool("core", "fsync"), Ok(Some(false)))
    }

    /// Takes the repository lock (see the module docs for the protocol).
    pub fn lock(&self, mode: LockMode) -> Result<RepoLock> {
        RepoLock::acquire(self, mode)
    }

    /// The repository lock, waiting at most `timeout`.
    pub fn lock_within(&self, mode: LockMode, timeout: std::time::Duration) -> Result<RepoLock> {
        RepoLock::acquire_within(self, mode, timeout)
    }

    /// The shared lock a reader holds while it relies on objects staying
    /// (see [`RepoLock::acquire_for_reading`]).
    pub fn lock_for_reading(&self) -> Result<Option<RepoLock>> {
        RepoLock::acquire_for_reading(self)
    }

    /// Replaces the config file atomically.
    pub fn write_config(&mut self, config: KeyFile) -> Result<()> {
        write_file_atomic(
            self.dir(),
            &self.path,
            "config",
            config.to_string().as_bytes(),
            0o644,
        )?;
        self.config = config;
        Ok(())
    }
}

/// Replaces the repository's `summary` (as a mirror pull does) and drops a
/// `summary.sig` that would no longer match it.
pub fn write_summary(repo: &Repo, data: &[u8]) -> Result<()> {
    write_file_atomic(repo.dir(), repo.path(), "summary", data, 0o644)?;
    match rustix::fs::unlinkat(repo.dir(), "summary.sig", AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e).at(repo.path().join("summary.sig")),
    }
}

/// Opens a directory relative to `dirfd` without following a final symlink.
pub(crate) fn open_dir(dirfd: impl AsFd, path: impl AsRef<Path>) -> Result<OwnedFd> {
    let path = path.as_ref();
    crate::fs::open_dir(dirfd, path).at(path)
}

/// Writes `name` in `dir` through a temporary file and rename, so readers
/// see the old or the new content, never a mix. Not synced: callers batch
/// durability.
pub(crate) fn write_file_atomic(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<()> {
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .at(dir_path.join(&tmp))?;
    let mut f = File::from(fd);
    f.write_all(data).at(dir_path.join(&tmp))?;
    drop(f);
    rustix::fs::renameat(dir, tmp.as_str(), dir, name).at(dir_path.join(name))
}

/// bare-user keeps metadata in `user.*` xattrs: refuse a filesystem that
/// cannot store them now rather than at the first write.
fn probe_user_xattrs(dir: &OwnedFd, path: &Path) -> Result<()> {
    let name = format!("tmp/.xattr-probe-{}", std::process::id());
    let fd = rustix::fs::openat(
        dir,
        name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .at(path.join(&name))?;
    let r = rustix::fs::fsetxattr(
        &fd,
        "user.arbor-probe",
        b"1",
        rustix::fs::XattrFlags::empty(),
    );
    let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
    r.map_err(|e| StoreError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("bare-user mode needs user.* xattrs, which this filesystem refuses: {e}"),
    })
}
