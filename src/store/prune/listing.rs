//! Listing the store's loose objects, and noticing commits that appear
//! afterwards.
//!
//! Reachability is computed without the repository lock (see the module
//! docs of [`super`]), so every deletion batch first asks "which commits
//! appeared since the listing?". Re-listing all of `objects/` for that
//! would cost as much as the listing itself each time. Instead a
//! [`Watch`] (inotify on `objects/` and its 256 subdirectories, set up
//! *before* the listing) reports every object created or renamed into the
//! store since: the event is queued by the very `linkat`/`renameat` that
//! publishes an object, so once the writer has released its lock and the
//! batch holds the exclusive one, every new commit is in the queue.
//! Directory mtimes would not do: they come from a coarse clock, and an
//! entry added within the same tick as a check leaves them unchanged.
//!
//! Where inotify is unavailable (no watches left, a filesystem without
//! it) or its queue overflowed (a big pull between two batches), the
//! check lists every directory again: slower, never wrong.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rayon::prelude::*;
use rustix::fs::inotify;

use super::reach::FastSet;
use crate::fs::list_dir_typed;
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::store::Repo;
use crate::store::error::{IoContext, Result};

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

fn dir_name(i: usize) -> String {
    format!("{i:02x}")
}

/// Objects arriving in `objects/` (see the module docs).
pub(super) struct Watch {
    /// `None`: no inotify; every check lists everything.
    fd: Option<OwnedFd>,
    /// Watch descriptor of `objects/` itself.
    top: i32,
    /// Watch descriptor → index of `objects/XX`.
    dirs: std::collections::HashMap<i32, usize>,
}

impl Watch {
    /// Starts watching; call before listing.
    pub fn start(repo: &Repo) -> Watch {
        let mut w = Watch {
            fd: None,
            top: -1,
            dirs: std::collections::HashMap::new(),
        };
        let Ok(fd) = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
        else {
            return w;
        };
        let flags = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::DONT_FOLLOW;
        let objects = crate::fs::proc_path(repo.objects_dir(), ".");
        let Ok(top) = inotify::add_watch(&fd, &objects, flags | inotify::WatchFlags::ONLYDIR)
        else {
            return w;
        };
        w.top = top;
        for i in 0..256 {
            match inotify::add_watch(&fd, objects.join(dir_name(i)), flags) {
                Ok(wd) => {
                    w.dirs.insert(wd, i);
                }
                // Not there yet: its creation is seen on `objects/`.
                Err(rustix::io::Errno::NOENT) => {}
                Err(_) => return w,
            }
        }
        w.fd = Some(fd);
        w
    }

    /// Returns the commits that appeared since the watch started (or the
    /// last call) and that `known` lacks, adding them to it. The caller
    /// holds the exclusive lock, so nothing is being written.
    pub fn new_commits(
        &mut self,
        repo: &Repo,
        known: &mut FastSet<Checksum>,
    ) -> Result<Vec<Checksum>> {
        let mut found = Vec::new();
        let mut add = |name: ObjectName, found: &mut Vec<Checksum>| {
            if name.objtype == ObjectType::Commit && known.insert(name.checksum) {
                found.push(name.checksum);
            }
        };
        let Some(fd) = self.fd.take() else {
            for i in 0..256 {
                list_one(repo, i)?
                    .into_iter()
                    .for_each(|n| add(n, &mut found));
            }
            return Ok(found);
        };
        let mut buf = vec![MaybeUninit::uninit(); 64 * 1024];
        let mut new_dirs = Vec::new();
        let mut overflow = false;
        let mut reader = inotify::Reader::new(&fd, &mut buf);
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    overflow = true;
                    break;
                }
            };
            if ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                overflow = true;
                break;
            }
            let Some(name) = ev.file_name().and_then(|n| n.to_str().ok()) else {
                continue;
            };
            if ev.wd() == self.top {
                if let Some(i) = (name.len() == 2)
                    .then(|| usize::from_str_radix(name, 16).ok())
                    .flatten()
                {
                    new_dirs.push(i);
                }
            } else if let Some(&i) = self.dirs.get(&ev.wd())
                && let Some((obj, _)) = ObjectName::from_loose(&dir_name(i), name)
            {
                add(obj, &mut found);
            }
        }
        if overflow {
            // Lost events: look at everything, and from now on always.
            for i in 0..256 {
                list_one(repo, i)?
                    .into_iter()
                    .for_each(|n| add(n, &mut found));
            }
            return Ok(found);
        }
        let flags = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::DONT_FOLLOW;
        let objects = crate::fs::proc_path(repo.objects_dir(), ".");
        for i in new_dirs {
            // A directory moved in whole: watch it, then read what it
            // brought (nothing writes meanwhile: the caller holds the lock).
            match inotify::add_watch(&fd, objects.join(dir_name(i)), flags) {
                Ok(wd) => {
                    self.dirs.insert(wd, i);
                }
                Err(_) => {
                    for j in 0..256 {
                        list_one(repo, j)?
                            .into_iter()
                            .for_each(|n| add(n, &mut found));
                    }
                    return Ok(found);
                }
            }
            list_one(repo, i)?
                .into_iter()
                .for_each(|n| add(n, &mut found));
        }
        self.fd = Some(fd);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::{DirMeta, DirTree};
    use crate::store::{RepoMode, Transaction};

    fn commit_bytes(seed: u8) -> Vec<u8> {
        let tree = DirTree::default().serialize();
        let meta = DirMeta {
            uid: 0,
            gid: 0,
            mode: 0o40755,
            xattrs: Default::default(),
        }
        .serialize();
        crate::ostree::Commit {
            metadata: Default::default(),
            parent: None,
            related: Vec::new(),
            subject: format!("c{seed}"),
            body: String::new(),
            timestamp: u64::from(seed),
            root_tree: Checksum::digest(&tree),
            root_meta: Checksum::digest(&meta),
        }
        .serialize()
    }

    /// New commits are reported once, through inotify or, without it, by
    /// listing everything; objects moved in as a whole new `XX/` too.
    #[test]
    fn watch_reports_new_commits() {
        for with_inotify in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repo::init(&dir.path().join("r"), RepoMode::Archive).unwrap();
            let mut watch = Watch::start(&repo);
            if !with_inotify {
                watch.fd = None;
            }
            let mut known = list(&repo, false).unwrap().commits;
            assert!(watch.new_commits(&repo, &mut known).unwrap().is_empty());
            let mut expected = Vec::new();
            for seed in 0..3 {
                let txn = Transaction::begin(&repo).unwrap();
                let data = commit_bytes(seed);
                expected.push(
                    txn.write_metadata(ObjectType::Commit, &data, None)
                        .unwrap()
                        .checksum,
                );
                txn.commit().unwrap();
            }
            let mut found = watch.new_commits(&repo, &mut known).unwrap();
            found.sort();
            expected.sort();
            assert_eq!(found, expected, "inotify: {with_inotify}");
            assert!(watch.new_commits(&repo, &mut known).unwrap().is_empty());
        }
    }
}
