//! The repository lock (`.lock`), compatible with libostree's.
//!
//! Writers (transactions) hold it shared; operations that delete objects
//! hold it exclusive. Each [`RepoLock`] opens its own descriptor of
//! `.lock`, so guards are independent and dropping one releases exactly its
//! lock.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::error::{IoContext, Result, StoreError};
use super::repo::Repo;
use crate::fs as sys;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// libostree's default `core.lock-timeout-secs`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long to wait for the lock, from `core.lock-timeout-secs` read as
/// libostree reads it (`strtoll`: leading digits, anything else 0): N
/// seconds, or `None` (no limit) for −1. libostree's −2 (and
/// `core.locking=false`) turns its locking off; arbor locks all the same,
/// waiting without limit: its prune can only be safe against the writers
/// that lock, and arbor's own processes still do (ostree processes with
/// locking off are not protected from a prune, by ostree's nor arbor's).
pub(crate) fn configured_timeout(repo: &Repo) -> Option<Duration> {
    let Some(text) = repo.config().get("core", "lock-timeout-secs") else {
        return Some(DEFAULT_TIMEOUT);
    };
    match crate::ostree::number::strtoll(&text).unwrap_or(0) {
        n if n < 0 => None,
        n => Some(Duration::from_secs(n as u64)),
    }
}

/// Whether `core.locking` turns ostree's locking off (see
/// [`configured_timeout`]).
pub(crate) fn ostree_locking_off(repo: &Repo) -> bool {
    matches!(repo.config().get_bool("core", "locking"), Ok(Some(false)))
        || repo
            .config()
            .get("core", "lock-timeout-secs")
            .is_some_and(|t| crate::ostree::number::strtoll(&t).unwrap_or(0) <= -2)
}

/// How often a waiter tries the lock again.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// Locked shared by arbor processes while they wait for the shared lock,
/// so that a prune holding the exclusive lock in batches knows to leave a
/// gap between two of them (OFD locks queue nobody: a waiter that polls
/// would otherwise rarely find the lock free).
const WAITERS: &str = "tmp/arbor-lock-waiters";
/// Locked shared by a prune while it leaves the exclusive lock free for
/// writers between two batches: another arbor prune or gc waiting for the
/// exclusive lock does not take it meanwhile (two prunes taking turns
/// would otherwise fill each other's gaps, and a writer would wait for
/// both to end).
const GAP: &str = "tmp/arbor-prune-gap";

pub struct RepoLock {
    _fd: OwnedFd,
    pub mode: LockMode,
}

impl RepoLock {
    fn open(repo: &Repo) -> Result<OwnedFd> {
        rustix::fs::openat(
            repo.dir(),
            ".lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o660),
        )
        .at(repo.path().join(".lock"))
    }

    /// The lock if it is free now; `None` if another process holds it in
    /// a conflicting mode.
    pub(crate) fn try_acquire(repo: &Repo, mode: LockMode) -> Result<Option<RepoLock>> {
        let fd = Self::open(repo)?;
        let got = sys::ofd_lock(fd.as_fd(), mode == LockMode::Exclusive, false)
            .at(repo.path().join(".lock"))?;
        Ok(got.then_some(RepoLock { _fd: fd, mode }))
    }

    pub(crate) fn acquire(repo: &Repo, mode: LockMode) -> Result<RepoLock> {
        Self::wait_for(repo, Self::open(repo)?, mode)
    }

    /// The shared lock for a reader that relies on objects staying
    /// (checkout, stage create), so no prune deletes them meanwhile. A
    /// lock file this process may only read is locked through a read-only
    /// descriptor (shared locks need no more); `None` when there is no
    /// lock file it can open at all (someone else's read-only store).
    pub(crate) fn acquire_for_reading(repo: &Repo) -> Result<Option<RepoLock>> {
        let opened = if repo.is_read_only() {
            // Opened to write nothing: not even a lock file.
            Err(StoreError::Io {
                path: repo.path().join(".lock"),
                source: std::io::Error::from_raw_os_error(libc::EROFS),
            })
        } else {
            Self::open(repo)
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(StoreError::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES | libc::EROFS | libc::EPERM)
                ) =>
            {
                match rustix::fs::openat(
                    repo.dir(),
                    ".lock",
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(_) => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        };
        Self::wait_for(repo, fd, LockMode::Shared).map(Some)
    }

    /// The lock, waiting at most `timeout` (instead of the configured
    /// `core.lock-timeout-secs`).
    pub(crate) fn acquire_within(
        repo: &Repo,
        mode: LockMode,
        timeout: Duration,
    ) -> Result<RepoLock> {
        Self::wait(repo, Self::open(repo)?, mode, Some(timeout), None)
    }

    /// The lock, waiting at most `timeout` (`None`: the configured
    /// [`configured_timeout`]) and, while it waits, stopping with
    /// [`StoreError::Interrupted`] once `interrupt` is set.
    pub(crate) fn acquire_interruptible(
        repo: &Repo,
        mode: LockMode,
        timeout: Option<Duration>,
        interrupt: &AtomicBool,
    ) -> Result<RepoLock> {
        let timeout = timeout.or_else(|| configured_timeout(repo));
        Self::wait(repo, Self::open(repo)?, mode, timeout, Some(interrupt))
    }

    fn wait_for(repo: &Repo, fd: OwnedFd, mode: LockMode) -> Result<RepoLock> {
        Self::wait(repo, fd, mode, configured_timeout(repo), None)
    }

    /// Whether an arbor writer (or lock-reading reader) is waiting for the
    /// shared lock: prune lets it in between two batches.
    pub(crate) fn writers_waiting(repo: &Repo) -> bool {
        locked_elsewhere(repo, WAITERS)
    }

    /// Says "waiting for the shared lock" until the returned file is
    /// closed: a shared lock on [`WAITERS`] (best effort).
    fn announce_wait(repo: &Repo) -> Option<OwnedFd> {
        announce(repo, WAITERS)
    }

    /// Says "this prune leaves the lock to writers" until the returned
    /// file is closed (best effort): other processes waiting for the
    /// exclusive lock do not take it meanwhile.
    pub(crate) fn announce_gap(repo: &Repo) -> Option<OwnedFd> {
        announce(repo, GAP)
    }

    /// Whether another process leaves the lock to writers now.
    fn gap_elsewhere(repo: &Repo) -> bool {
        locked_elsewhere(repo, GAP)
    }

    /// Polls for the lock until `timeout` (`None`: for as long as it
    /// takes) or `interrupt`.
    fn wait(
        repo: &Repo,
        fd: OwnedFd,
        mode: LockMode,
        timeout: Option<Duration>,
        interrupt: Option<&AtomicBool>,
    ) -> Result<RepoLock> {
        let path = repo.path().join(".lock");
        let mut announced = None;
        let exclusive = mode == LockMode::Exclusive;
        let start = Instant::now();
        // Poll rather than block so the wait is bounded and can be reported.
        loop {
            // A prune's gap belongs to writers, not to another prune.
            let may_try = !exclusive || !Self::gap_elsewhere(repo);
            if may_try && sys::ofd_lock(fd.as_fd(), exclusive, false).at(&path)? {
                return Ok(RepoLock { _fd: fd, mode });
            }
            if !exclusive && announced.is_none() {
                announced = Self::announce_wait(repo);
            }
            if let Some(flag) = interrupt {
                crate::progress::check(flag)?;
            }
            if let Some(timeout) = timeout
                && start.elapsed() >= timeout
            {
                return Err(StoreError::LockTimeout {
                    path,
                    mode: if exclusive { "exclusive" } else { "shared" },
                    waited: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

/// A shared lock on the signal file `name` under `tmp/`, held until the
/// returned file is closed; `None` if it cannot be had (best effort).
fn announce(repo: &Repo, name: &str) -> Option<OwnedFd> {
    let fd = rustix::fs::openat(
        repo.dir(),
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o660),
    )
    .ok()?;
    sys::ofd_lock(fd.as_fd(), false, false)
        .ok()
        .filter(|got| *got)
        .map(|_| fd)
}

/// Whether another open file description holds a lock on the signal file
/// `name` (false when there is no such file).
fn locked_elsewhere(repo: &Repo, name: &str) -> bool {
    rustix::fs::openat(
        repo.dir(),
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .ok()
    .is_some_and(|fd| sys::ofd_locked_elsewhere(fd.as_fd()).unwrap_or(false))
}
