//! The repository lock (`.lock`), compatible with libostree's.
//!
//! Writers (transactions) hold it shared; operations that delete objects
//! hold it exclusive. Each [`RepoLock`] opens its own descriptor of
//! `.lock`, so guards are independent and dropping one releases exactly its
//! lock.

use std::os::fd::{AsFd, OwnedFd};
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
        let path = repo.path().join(".lock");
        let fd = Self::open(repo)?;
        let timeout = repo
            .config()
            .get_u64("core", "lock-timeout-secs")
            .ok()
            .flatten()
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        let exclusive = mode == LockMode::Exclusive;
        let start = Instant::now();
        // Poll rather than block so the wait is bounded and can be reported.
        loop {
            if sys::ofd_lock(fd.as_fd(), exclusive, false).at(&path)? {
                return Ok(RepoLock { _fd: fd, mode });
            }
            if start.elapsed() >= timeout {
                return Err(StoreError::LockTimeout {
                    path,
                    mode: if exclusive { "exclusive" } else { "shared" },
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
