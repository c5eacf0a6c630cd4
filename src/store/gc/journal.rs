//! What gc evicted and has not pruned yet: `extensions/arbor/gc-evicted`,
//! one line per commit, `CHECKSUM NANOSECONDS` (when it was evicted, since
//! the epoch).
//!
//! gc deletes refs, then prunes what only they held. Between the two, those
//! commits are named by nothing, like any commit pulled by checksum, and a
//! prune that keeps every unnamed commit (as gc's must: see
//! [`crate::store::prune`]) could not tell them apart. So the commits of
//! the refs to delete, with their ancestors, are written here first, under
//! the exclusive lock and synced before any ref goes; the prune deletes
//! them (and what they alone reach), then they are taken off. A gc killed
//! in between leaves them here for the next gc, which prunes them even
//! when the store is under its cap. Written and rewritten only under the
//! exclusive lock.

use std::time::{Duration, SystemTime};

use crate::ostree::Checksum;
use crate::store::error::{IoContext, Result};
use crate::store::repo::write_file_atomic;
use crate::store::{Repo, StoreError};

const DIR: &str = "extensions/arbor";
const NAME: &str = "gc-evicted";

/// The evicted commits, with when each was evicted. A missing or
/// unreadable journal is empty; malformed lines are skipped (the file is
/// arbor's own, written atomically).
pub(super) fn read(repo: &Repo) -> Vec<(Checksum, SystemTime)> {
    let Ok(text) = std::fs::read_to_string(repo.path().join(DIR).join(NAME)) else {
        return Vec::new();
    };
    let mut out: Vec<(Checksum, SystemTime)> = text
        .lines()
        .filter_map(|l| {
            let (c, nanos) = l.split_once(' ')?;
            let at =
                SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(nanos.parse().ok()?))?;
            Some((c.parse().ok()?, at))
        })
        .collect();
    out.sort();
    out.dedup_by_key(|(c, _)| *c);
    out
}

/// Adds `entries` (keeping an earlier time for a commit already there)
/// and syncs the file. The caller holds the exclusive lock.
pub(super) fn add(
    repo: &Repo,
    entries: impl IntoIterator<Item = (Checksum, SystemTime)>,
) -> Result<()> {
    let mut all = read(repo);
    all.extend(entries);
    all.sort();
    all.dedup_by_key(|(c, _)| *c);
    write(repo, &all)
}

/// Takes `done` off the journal. The caller holds the exclusive lock.
pub(super) fn remove(repo: &Repo, done: impl IntoIterator<Item = Checksum>) -> Result<()> {
    let done: std::collections::HashSet<Checksum> = done.into_iter().collect();
    let left: Vec<_> = read(repo)
        .into_iter()
        .filter(|(c, _)| !done.contains(c))
        .collect();
    write(repo, &left)
}

fn write(repo: &Repo, entries: &[(Checksum, SystemTime)]) -> Result<()> {
    let path = repo.path().join(DIR);
    for d in ["extensions", DIR] {
        crate::fs::ensure_dir(repo.dir(), d, 0o755).at(repo.path().join(d))?;
    }
    let dir = crate::fs::open_dir(repo.dir(), DIR).at(&path)?;
    if entries.is_empty() {
        return match rustix::fs::unlinkat(&dir, NAME, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e).at(path.join(NAME)),
        };
    }
    let mut text = String::with_capacity(entries.len() * 80);
    for (c, at) in entries {
        let nanos = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        text.push_str(&format!("{c} {nanos}\n"));
    }
    write_file_atomic(
        std::os::fd::AsFd::as_fd(&dir),
        &path,
        NAME,
        text.as_bytes(),
        0o644,
    )?;
    if repo.fsync_enabled() {
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io {
            path: path.join(NAME),
            source: e.into(),
        })?;
    }
    Ok(())
}
