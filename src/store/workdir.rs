//! Private working directories under `tmp/`, for operations that build
//! files before moving them into the repository (a static delta, a
//! summary and its signature).
//!
//! `tmp/arbor-work-<purpose>-<id>/` lives as long as its owner holds an
//! exclusive OFD lock on `tmp/arbor-work-<purpose>-<id>.lock`, made as a
//! transaction's is (locked before it gets its name, see
//! [`super::transaction`]): an owner that is killed leaves both behind with
//! the lock free, and [`clean_dead`] (run by every generation, summary
//! update and the store's first transaction) removes them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::error::{IoContext, Result};
use super::repo::{Repo, open_dir};
use super::transaction::create_liveness;
use crate::fs as sys;
use crate::fs::{Tmpfiles, list_dir_typed, remove_tree};

const PREFIX: &str = "arbor-work-";
const LOCK_SUFFIX: &str = ".lock";

/// A private directory of `tmp/`, removed on drop (with whatever is still
/// in it), and by [`clean_dead`] once its owner is gone.
pub struct WorkDir {
    tmp: OwnedFd,
    name: String,
    dir: OwnedFd,
    path: PathBuf,
    _liveness: OwnedFd,
}

impl WorkDir {
    /// Creates `tmp/arbor-work-<purpose>-<id>/` with `mode` (applied
    /// exactly, whatever the umask), after its lock file.
    pub fn create(repo: &Repo, purpose: &str, mode: u32) -> Result<WorkDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let tmp = open_dir(repo.dir(), "tmp")?;
        let tmp_path = repo.path().join("tmp");
        let name = format!(
            "{PREFIX}{purpose}-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let liveness = create_liveness(
            &tmp,
            &tmp_path,
            &format!("{name}{LOCK_SUFFIX}"),
            &Tmpfiles::default(),
        )?;
        let path = tmp_path.join(&name);
        let made = rustix::fs::mkdirat(&tmp, name.as_str(), Mode::from_raw_mode(mode))
            .at(&path)
            .and_then(|()| open_dir(&tmp, &name))
            .and_then(|dir| {
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode)).at(&path)?;
                Ok(dir)
            });
        let dir = match made {
            Ok(d) => d,
            Err(e) => {
                let _ = remove_tree(tmp.as_fd(), &name);
                let _ = rustix::fs::unlinkat(
                    &tmp,
                    format!("{name}{LOCK_SUFFIX}").as_str(),
                    AtFlags::empty(),
                );
                return Err(e);
            }
        };
        Ok(WorkDir {
            tmp,
            name,
            dir,
            path,
            _liveness: liveness,
        })
    }

    /// The directory.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Its path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its path relative to the repository (`tmp/NAME`), to rename it.
    pub fn rel(&self) -> String {
        format!("tmp/{}", self.name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // The directory may have been renamed away (a delta put in place):
        // then there is nothing to remove under the name.
        let _ = remove_tree(self.tmp.as_fd(), &self.name);
        let _ = rustix::fs::unlinkat(
            &self.tmp,
            format!("{}{LOCK_SUFFIX}", self.name).as_str(),
            AtFlags::empty(),
        );
    }
}

/// Removes the working directories of dead owners (their lock file is
/// free, or gone) from `tmp/`; returns how many.
pub fn clean_dead(repo: &Repo) -> Result<usize> {
    let tmp_path = repo.path().join("tmp");
    let tmp = match open_dir(repo.dir(), "tmp") {
        Ok(t) => t,
        Err(_) => return Ok(0),
    };
    let names: Vec<String> = list_dir_typed(tmp.as_fd())
        .at(&tmp_path)?
        .into_iter()
        .filter_map(|(n, _)| n.to_str().map(String::from))
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    let mut removed = 0;
    for name in &names {
        let Some(dir) = name.strip_suffix(LOCK_SUFFIX) else {
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
            remove_tree(tmp.as_fd(), dir).at(tmp_path.join(dir))?;
            let _ = rustix::fs::unlinkat(&tmp, name.as_str(), AtFlags::empty());
            removed += 1;
        }
    }
    // A directory without its lock file: its owner died after the cleaner
    // above took the lock file, or between unlinking the two.
    for name in &names {
        if !name.ends_with(LOCK_SUFFIX)
            && !names.contains(&format!("{name}{LOCK_SUFFIX}"))
            // Re-check: the listing is not a snapshot, and a live owner
            // creates its lock file before its directory.
            && rustix::fs::statat(
                &tmp,
                format!("{name}{LOCK_SUFFIX}").as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_err()
        {
            match remove_tree(tmp.as_fd(), name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(tmp_path.join(name)),
            }
        }
    }
    Ok(removed)
}
