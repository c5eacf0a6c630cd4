//! Listing the store's loose objects, and noticing what appeared since.
//!
//! Reachability is computed without the repository lock (see the module
//! docs of [`super`]), so every deletion batch first asks "which commits
//! appeared since the listing?". Re-listing all of `objects/` for that
//! would cost as much as the listing itself each time; instead a
//! [`Snapshot`] of the 256 `objects/XX` directories (inode and mtime),
//! taken *before* the listing, shows which directories changed, and only
//! those are listed again.
//!
//! Directory mtimes come from a coarse clock (a timer tick; one or two
//! seconds on some filesystems), so an entry added within the same tick
//! as the snapshot may leave the mtime unchanged. A directory whose mtime
//! was within [`HOT_WINDOW`] of the snapshot is therefore "hot": listed
//! again at every check until a check sees it quiet for longer than that.

use std::os::fd::AsFd;
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use rustix::fs::AtFlags;

use super::reach::FastSet;
use crate::fs::list_dir_typed;
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::store::Repo;
use crate::store::error::{IoContext, Result};

/// Longer than any filesystem's timestamp granularity (FAT's is 2 s).
const HOT_WINDOW: Duration = Duration::from_secs(3);

/// What `objects/` holds, sorted by kind.
#[derive(Default)]
pub(super) struct Listing {
    /// Objects prune may delete (libostree's candidates): commits,
    /// dirtrees, dirmetas, content objects and payload links.
    pub candidates: Vec<ObjectName>,
    /// Every commit seen (also when `candidates` holds only commits).
    pub commits: FastSet<Checksum>,
    /// Commits with detached metadata.
    pub commitmeta: Vec<Checksum>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime: (i64, i64),
}

/// The state of each `objects/XX` directory at one moment.
pub(super) struct Snapshot {
    taken: SystemTime,
    dirs: Vec<Option<Stamp>>,
}

fn dir_name(i: usize) -> String {
    format!("{i:02x}")
}

fn stamp(repo: &Repo, i: usize) -> Result<Option<Stamp>> {
    match rustix::fs::statat(repo.objects_dir(), dir_name(i).as_str(), AtFlags::empty()) {
        Ok(st) => Ok(Some(Stamp {
            ino: st.st_ino,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        })),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e).at(repo.path().join("objects").join(dir_name(i))),
    }
}

impl Snapshot {
    pub fn take(repo: &Repo) -> Result<Snapshot> {
        let taken = SystemTime::now();
        let dirs = (0..256).map(|i| stamp(repo, i)).collect::<Result<_>>()?;
        Ok(Snapshot { taken, dirs })
    }

    fn is_hot(&self, s: &Stamp) -> bool {
        let mtime = SystemTime::UNIX_EPOCH
            .checked_add(Duration::new(s.mtime.0.max(0) as u64, s.mtime.1 as u32))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        mtime + HOT_WINDOW > self.taken
    }

    /// Lists again every directory that changed (or may have: hot) since
    /// the snapshot and returns the commits in them that `known` lacks,
    /// adding them to it. The snapshot then describes the present. The
    /// caller holds the exclusive lock, so nothing is being written.
    pub fn new_commits(
        &mut self,
        repo: &Repo,
        known: &mut FastSet<Checksum>,
    ) -> Result<Vec<Checksum>> {
        let now = SystemTime::now();
        let mut found = Vec::new();
        for i in 0..256 {
            let current = stamp(repo, i)?;
            let changed = match (&self.dirs[i], &current) {
                (None, None) => false,
                (Some(old), Some(new)) => old != new || self.is_hot(old),
                _ => true,
            };
            if changed && current.is_some() {
                for name in list_one(repo, i)? {
                    if name.objtype == ObjectType::Commit && known.insert(name.checksum) {
                        found.push(name.checksum);
                    }
                }
            }
            self.dirs[i] = current;
        }
        self.taken = now;
        Ok(found)
    }
}

/// Every loose object of `objects/XX` (archive content as `.filez`, other
/// modes as `.file`, as libostree lists them).
fn list_one(repo: &Repo, i: usize) -> Result<Vec<ObjectName>> {
    let name = dir_name(i);
    let path = repo.path().join("objects").join(&name);
    let dir = match crate::fs::open_dir(repo.objects_dir(), name.as_str()) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(path),
    };
    let archive = repo.mode().is_archive();
    let mut out = Vec::new();
    for (file, _) in list_dir_typed(dir.as_fd()).at(&path)? {
        let Some(file) = file.to_str() else { continue };
        if let Some((obj, z)) = ObjectName::from_loose(&name, file)
            && (obj.objtype.is_meta() || z == archive)
        {
            out.push(obj);
        }
    }
    Ok(out)
}

/// Lists the store, the 256 directories in parallel. With `commit_only`
/// only commits are candidates.
pub(super) fn list(repo: &Repo, commit_only: bool) -> Result<Listing> {
    let per_dir: Vec<Vec<ObjectName>> = (0..256usize)
        .into_par_iter()
        .map(|i| list_one(repo, i))
        .collect::<Result<_>>()?;
    let mut listing = Listing::default();
    for name in per_dir.into_iter().flatten() {
        match name.objtype {
            ObjectType::Commit => {
                listing.commits.insert(name.checksum);
                listing.candidates.push(name);
            }
            ObjectType::CommitMeta => listing.commitmeta.push(name.checksum),
            ObjectType::DirTree
            | ObjectType::DirMeta
            | ObjectType::File
            | ObjectType::PayloadLink
                if !commit_only =>
            {
                listing.candidates.push(name)
            }
            // Tombstones and detached metadata are never candidates;
            // split-xattr objects belong to a mode arbor does not write.
            _ => {}
        }
    }
    Ok(listing)
}
