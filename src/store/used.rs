//! When each commit was last used, for gc's least-recently-used order.
//!
//! "Used" means pulled, committed, checked out or staged. Each use of a
//! commit sets the modification time of an empty file
//! `extensions/arbor/used/CHECKSUM` to now: one `utimensat` per commit per
//! operation (the file is created on first use), nothing per file read.
//! A ref's last use is the later of its commit's mark and the ref file's
//! own mtime (when it was last set). Marks of commits no longer in the
//! store are removed by gc. Recording is best effort: a store the user
//! cannot write (someone else's, read-only) is used without marks.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};

use super::Repo;
use crate::ostree::Checksum;

/// Where the marks live, relative to the repository.
pub const USED_DIR: &str = "extensions/arbor/used";

fn open(repo: &Repo, create: bool) -> Option<OwnedFd> {
    match crate::fs::open_dir(repo.dir(), USED_DIR) {
        Ok(fd) => Some(fd),
        Err(_) if create => {
            for d in ["extensions", "extensions/arbor", USED_DIR] {
                crate::fs::ensure_dir(repo.dir(), d, 0o755).ok()?;
            }
            crate::fs::open_dir(repo.dir(), USED_DIR).ok()
        }
        Err(_) => None,
    }
}

/// Records that `commits` were used now.
pub fn record(repo: &Repo, commits: &[Checksum]) {
    let Some(dir) = open(repo, true) else { return };
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    for c in commits {
        let name = c.to_string();
        let times = Timestamps {
            last_access: now,
            last_modification: now,
        };
        match rustix::fs::utimensat(&dir, name.as_str(), &times, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => {
                let _ = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                );
            }
            Err(_) => {}
        }
    }
}

/// When `commit` was last used, if it ever was since marks exist.
pub fn last_use(repo: &Repo, commit: &Checksum) -> Option<SystemTime> {
    let dir = open(repo, false)?;
    mtime_at(dir.as_fd(), &commit.to_string())
}

/// Every commit with a mark and the time of its mark.
pub fn all_marks(repo: &Repo) -> Vec<(Checksum, SystemTime)> {
    let Some(dir) = open(repo, false) else {
        return Vec::new();
    };
    let Ok(names) = crate::fs::list_dir(dir.as_fd()) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter_map(|n| {
            let n = n.into_string().ok()?;
            let c: Checksum = n.parse().ok()?;
            Some((c, mtime_at(dir.as_fd(), &n)?))
        })
        .collect()
}

/// Removes the mark of `commit`.
pub fn forget(repo: &Repo, commit: &Checksum) {
    if let Some(dir) = open(repo, false) {
        let _ = rustix::fs::unlinkat(&dir, commit.to_string().as_str(), AtFlags::empty());
    }
}

/// The modification time of `name` in `dir` (not following symlinks).
pub(crate) fn mtime_at(dir: impl AsFd, name: &str) -> Option<SystemTime> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(
        st.st_mtime.max(0) as u64,
        st.st_mtime_nsec as u32,
    ))
}
