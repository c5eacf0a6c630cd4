//! The checkout cache: one read-only checkout per commit, kept in the
//! store and shared by every stage that layers the commit.
//!
//! `extensions/arbor/checkouts/` holds, per commit `C`:
//! * `C/`: the commit's tree, checked out with whiteouts processed (so no
//!   `.wh.` file appears in it), hardlinked to the store's objects when the
//!   store's mode allows, else reflinked or copied;
//! * `C.wh`: the commit's whiteouts (see [`LayerWhiteouts::encode`]),
//!   from which each stage builds the layer that applies them;
//! * `C.lock`: held (OFD, exclusive) while `C` is being built;
//! * `C.tmp/`: the checkout in progress.
//!
//! An entry is built in `C.tmp`, its sidecar written, the filesystem
//! synced once for all the entries a stage needs, and only then renamed to
//! `C`; so a visible entry is always complete, even after a power loss. A
//! `C.tmp` found by whoever holds `C.lock` is a dead builder's leftover
//! and is removed. Builders hold the store's shared lock, as writers do,
//! so no prune runs while they read objects.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rustix::fs::{Mode, OFlags};

use super::StageError;
use super::merge::{LayerWhiteouts, Merger};
use crate::checkout::{CheckoutOptions, LinkMode, checkout};
use crate::fs::{ensure_dir, remove_tree};
use crate::ostree::Checksum;
use crate::progress::{Event, Phase, Progress};
use crate::store::{LockMode, Repo};

pub const CACHE_DIR: &str = "checkouts";

/// A cache entry ready for use.
#[derive(Clone, Debug)]
pub struct Entry {
    pub whiteouts: LayerWhiteouts,
}

pub struct Cache<'r> {
    repo: &'r Repo,
    dir: OwnedFd,
    path: PathBuf,
}

impl<'r> Cache<'r> {
    /// Opens (creating) the cache of `repo`; `base` is arbor's extension
    /// directory in the store.
    pub fn open(repo: &'r Repo, base: &OwnedFd, base_path: &Path) -> Result<Self, StageError> {
        let path = base_path.join(CACHE_DIR);
        ensure_dir(base, CACHE_DIR, 0o755).map_err(|e| StageError::io(&path, "creating", e))?;
        let dir = crate::store::repo::open_dir(base, CACHE_DIR)?;
        Ok(Cache { repo, dir, path })
    }

    /// Makes sure every commit of `commits` has an entry, building the
    /// missing ones; returns the entries in the same order, and how many
    /// were built.
    pub fn ensure(
        &self,
        commits: &[Checksum],
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<(Vec<Entry>, usize), StageError> {
        let mut entries: Vec<Option<Entry>> = commits.iter().map(|c| self.lookup(c)).collect();
        if entries.iter().all(Option::is_some) {
            return Ok((entries.into_iter().flatten().collect(), 0));
        }
        let _store_lock = self.repo.lock(LockMode::Shared)?;
        let mut missing: Vec<Checksum> = commits
            .iter()
            .zip(&entries)
            .filter(|(_, e)| e.is_none())
            .map(|(c, _)| *c)
            .collect();
        // Locks are taken in one order, so two stages building overlapping
        // sets cannot deadlock.
        missing.sort();
        missing.dedup();
        let mut held = Vec::new();
        let mut built = Vec::new();
        let total = Some(missing.len() as u64);
        progress.report(Event::Start {
            phase: Phase::StageCreate,
            total,
        });
        for (i, c) in missing.iter().enumerate() {
            crate::progress::check(interrupt)?;
            held.push(self.lock_entry(c)?);
            // Someone else may have finished it while we waited.
            if self.lookup(c).is_none() {
                self.build(c, progress, interrupt)?;
                built.push(*c);
            }
            progress.report(Event::Advance {
                phase: Phase::StageCreate,
                done: i as u64 + 1,
                total,
                bytes: 0,
            });
        }
        progress.report(Event::Finish {
            phase: Phase::StageCreate,
        });
        if !built.is_empty() {
            rustix::fs::syncfs(&self.dir)
                .map_err(|e| StageError::io(&self.path, "syncing", e.into()))?;
            for c in &built {
                let tmp = format!("{c}.tmp");
                rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, c.to_string().as_str())
                    .map_err(|e| StageError::io(&self.path.join(&tmp), "publishing", e.into()))?;
            }
            rustix::fs::fsync(&self.dir)
                .map_err(|e| StageError::io(&self.path, "syncing", e.into()))?;
        }
        drop(held);
        for (e, c) in entries.iter_mut().zip(commits) {
            if e.is_none() {
                *e = Some(
                    self.lookup(c)
                        .ok_or_else(|| StageError::CacheEntryVanished {
                            path: self.path.join(c.to_string()),
                        })?,
                );
            }
        }
        Ok((entries.into_iter().flatten().collect(), built.len()))
    }

    fn lookup(&self, c: &Checksum) -> Option<Entry> {
        let path = self.path.join(c.to_string());
        if !path.is_dir() {
            return None;
        }
        let data = std::fs::read(self.path.join(format!("{c}.wh"))).ok()?;
        Some(Entry {
            whiteouts: LayerWhiteouts::decode(&data)?,
        })
    }

    /// Removes every entry (with its sidecars) whose commit is not in
    /// `used`; the caller holds the stage registry lock exclusively.
    pub fn remove_unused(
        &self,
        used: &std::collections::HashSet<Checksum>,
    ) -> Result<usize, StageError> {
        let mut removed = 0;
        for c in self.entries()? {
            if !used.contains(&c) && self.remove_entry(&c)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The commits with an entry (complete or being built).
    pub fn entries(&self) -> Result<Vec<Checksum>, StageError> {
        let names = crate::fs::list_dir(self.dir.as_fd())
            .map_err(|e| StageError::io(&self.path, "listing", e))?;
        let mut out: Vec<Checksum> = names
            .iter()
            .filter_map(|n| n.to_str().and_then(|n| n.parse().ok()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The path of `c`'s entry.
    pub fn entry_path(&self, c: &Checksum) -> PathBuf {
        self.path.join(c.to_string())
    }

    /// Removes `c`'s entry with its sidecars; false when it is being built
    /// (left alone). The caller holds the stage registry lock exclusively.
    pub fn remove_entry(&self, c: &Checksum) -> Result<bool, StageError> {
        let Some(_lock) = self.try_lock_entry(c)? else {
            return Ok(false);
        };
        // `C` out of the way first (no entry without `C` is used, see
        // `lookup`), then its sidecars, then its files: killed at any
        // point this leaves `C.tmp`, which the next build of C clears, or
        // sidecars alone, which it rewrites; never a `C` that would block
        // that build's rename.
        let dir = c.to_string();
        let tmp = format!("{c}.tmp");
        remove_tree(self.dir.as_fd(), &tmp)
            .map_err(|e| StageError::io(&self.path.join(&tmp), "removing", e))?;
        match rustix::fs::renameat(&self.dir, dir.as_str(), &self.dir, tmp.as_str()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(StageError::io(&self.path.join(&dir), "renaming", e.into())),
        }
        crate::failpoint::crash("stage-cache:remove");
        for side in ["wh", "ok-overlay", "ok-fuse-overlayfs", "ok-unionfs"] {
            let _ = rustix::fs::unlinkat(
                &self.dir,
                format!("{c}.{side}").as_str(),
                rustix::fs::AtFlags::empty(),
            );
        }
        remove_tree(self.dir.as_fd(), &tmp)
            .map_err(|e| StageError::io(&self.path.join(&tmp), "removing", e))?;
        let _ = rustix::fs::unlinkat(
            &self.dir,
            format!("{c}.lock").as_str(),
            rustix::fs::AtFlags::empty(),
        );
        Ok(true)
    }

    /// Removes `C.tmp` builds whose builder is gone (its lock is free).
    pub fn sweep(&self) {
        let Ok(names) = crate::fs::list_dir(self.dir.as_fd()) else {
            return;
        };
        for name in names {
            let Some(c) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".tmp"))
                .and_then(|c| c.parse::<Checksum>().ok())
            else {
                continue;
            };
            if let Ok(Some(_lock)) = self.try_lock_entry(&c) {
                let _ = remove_tree(self.dir.as_fd(), &format!("{c}.tmp"));
            }
        }
    }

    fn try_lock_entry(&self, c: &Checksum) -> Result<Option<OwnedFd>, StageError> {
        self.lock_entry_with(c, false)
    }

    fn lock_entry(&self, c: &Checksum) -> Result<OwnedFd, StageError> {
        // A blocking lock is granted or fails with an error of its own.
        self.lock_entry_with(c, true)?.ok_or_else(|| {
            StageError::io(
                &self.path.join(format!("{c}.lock")),
                "waiting for the lock",
                std::io::ErrorKind::WouldBlock.into(),
            )
        })
    }

    /// `C.lock`, exclusive; `None` when `wait` is false and it is held.
    fn lock_entry_with(&self, c: &Checksum, wait: bool) -> Result<Option<OwnedFd>, StageError> {
        let name = format!("{c}.lock");
        let path = self.path.join(&name);
        let fd = rustix::fs::openat(
            &self.dir,
            name.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| StageError::io(&path, "opening", e.into()))?;
        Ok(crate::fs::ofd_lock(fd.as_fd(), true, wait)
            .map_err(|e| StageError::io(&path, "locking", e))?
            .then_some(fd))
    }

    /// Checks `c` out into `C.tmp` and writes its sidecar (caller holds
    /// `C.lock`).
    fn build(
        &self,
        c: &Checksum,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<(), StageError> {
        let tmp = format!("{c}.tmp");
        let tmp_path = self.path.join(&tmp);
        remove_tree(self.dir.as_fd(), &tmp)
            .map_err(|e| StageError::io(&tmp_path, "removing a dead build", e))?;
        // A `C` without its sidecar (`lookup` found no entry, and we hold
        // `C.lock`) is what an interrupted removal by an older arbor left
        // (it unlinked the sidecar first): not an entry, and in the way of
        // the rename that publishes this one.
        remove_tree(self.dir.as_fd(), &c.to_string())
            .map_err(|e| StageError::io(&self.path.join(c.to_string()), "removing", e))?;
        let whiteouts = Merger::new(self.repo).layer_whiteouts(c)?;
        let mut opts = CheckoutOptions::new(*c);
        opts.whiteouts = true;
        opts.link = LinkMode::Auto;
        opts.user_mode = !rustix::process::geteuid().is_root();
        // The stage's view shows the commit as it is: a layer with
        // xattrs that would steer the union is refused when mounted
        // (`mount::check_layer`), not silently changed here.
        opts.keep_overlay_xattrs = true;
        checkout(self.repo, &tmp_path, &opts, progress, interrupt)?;
        crate::failpoint::crash("stage-create:cache");
        let sidecar = format!("{c}.wh");
        crate::store::repo::write_file_atomic(
            self.dir.as_fd(),
            &self.path,
            &sidecar,
            &whiteouts.encode(),
            0o644,
        )?;
        Ok(())
    }
}
