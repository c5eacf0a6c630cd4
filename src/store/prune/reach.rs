//! The reachable set: commits (with the history depth they were reached
//! with) and the trees below them, walked the way libostree's
//! `ostree_repo_traverse_commit_with_flags` walks, but independent of the
//! order roots are added in (see [`Reach::add_commit`]).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::PruneError;
use crate::ostree::{Checksum, DirTree, ObjectName, ObjectType};
use crate::store::{Repo, StoreError};

/// Hashes SHA-256 checksums (and names made of one) by folding their bytes:
/// they are uniformly distributed already, and SipHash over 32 bytes costs
/// more than the rest of a set insert. std has no such hasher and the
/// crates that do are not in our tree.
#[derive(Default, Clone, Copy)]
pub(crate) struct ChecksumHasher(u64);

impl Hasher for ChecksumHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastSet<T> = HashSet<T, BuildHasherDefault<ChecksumHasher>>;
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<ChecksumHasher>>;

/// How much history to keep below a commit: `--depth`'s meaning, with
/// libostree's encoding normalised (−1 is unlimited, below −1 acts as 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Depth(u64);

impl Depth {
    pub const ALL: Depth = Depth(u64::MAX);
    pub const TIP: Depth = Depth(0);

    pub fn from_ostree(n: i64) -> Depth {
        match n {
            -1 => Depth::ALL,
            n if n < -1 => Depth::TIP,
            n => Depth(n as u64),
        }
    }

    fn parent(self) -> Option<Depth> {
        match self {
            Depth::ALL => Some(Depth::ALL),
            Depth(0) => None,
            Depth(n) => Some(Depth(n - 1)),
        }
    }
}

/// A dirtree waiting to be read, and the commit it was reached from (for
/// messages, and whether a missing tree is tolerated).
#[derive(Clone, Copy)]
struct Pending {
    tree: Checksum,
    commit: Option<Checksum>,
    partial: bool,
}

/// Objects reachable from the roots added so far.
pub(crate) struct Reach<'r> {
    repo: &'r Repo,
    /// Only commits are walked (`--commit-only`): trees are not read.
    commit_only: bool,
    /// Commits reached, with the most history any root asked for below them.
    commits: FastMap<Checksum, Depth>,
    trees: FastSet<Checksum>,
    metas: FastSet<Checksum>,
    files: FastSet<Checksum>,
    pending: Vec<Pending>,
    /// Dirtrees found missing where a gap is tolerated (below a partial
    /// commit or a stage's tree), still marked reached: read again by
    /// [`retry_missing`](Self::retry_missing). The pull that completes such
    /// a commit fetches the tree but not the objects below it that it finds
    /// already present, and those must then be reached too.
    missing: Vec<Pending>,
    /// Objects newly reached since logging began (for gc's attribution).
    log: Option<Vec<ObjectName>>,
}

impl<'r> Reach<'r> {
    pub fn new(repo: &'r Repo, commit_only: bool) -> Self {
        Reach {
            repo,
            commit_only,
            commits: FastMap::default(),
            trees: FastSet::default(),
            metas: FastSet::default(),
            files: FastSet::default(),
            pending: Vec::new(),
            missing: Vec::new(),
            log: None,
        }
    }

    /// Starts recording what is newly reached, or returns (and restarts)
    /// the record.
    pub fn take_log(&mut self) -> Vec<ObjectName> {
        self.log.replace(Vec::new()).unwrap_or_default()
    }

    fn logged(&mut self, name: ObjectName) {
        if let Some(log) = &mut self.log {
            log.push(name);
        }
    }

    pub fn contains(&self, name: &ObjectName) -> bool {
        let c = &name.checksum;
        match name.objtype {
            ObjectType::Commit => self.commits.contains_key(c),
            ObjectType::DirTree => self.trees.contains(c),
            ObjectType::DirMeta => self.metas.contains(c),
            ObjectType::File => self.files.contains(c),
            _ => false,
        }
    }

    /// Marks `commit` and, following parents, `depth` ancestors (their
    /// trees are read by [`finish`](Self::finish)). A missing commit ends
    /// the walk quietly, as in libostree: histories are often shallow.
    ///
    /// libostree stops at the first commit already marked, so with finite
    /// depths what it keeps depends on the order refs come out of a hash
    /// table (ostree#2338). Here a commit is walked again when reached
    /// with more history to keep than before, so the result is the union
    /// of what each root asks for, whatever the order: never less than
    /// libostree keeps, and the same whenever its answer does not depend
    /// on that order.
    pub fn add_commit(&mut self, commit: Checksum, depth: Depth) -> Result<(), PruneError> {
        let mut next = Some((commit, depth));
        while let Some((c, d)) = next.take() {
            let first = match self.commits.get(&c) {
                Some(&had) if had >= d => return Ok(()),
                Some(_) => false,
                None => true,
            };
            let parsed = match self.repo.load_commit(&c) {
                Ok(p) => p,
                Err(StoreError::MissingObject(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            self.commits.insert(c, d);
            if first {
                self.logged(ObjectName::new(c, ObjectType::Commit));
            }
            if first && !self.commit_only {
                let partial = self.repo.is_commit_partial(&c)?;
                self.add_meta(parsed.root_meta);
                self.queue_tree(parsed.root_tree, Some(c), partial);
            }
            if let (Some(parent), Some(pd)) = (parsed.parent, d.parent()) {
                next = Some((parent, pd));
            }
        }
        Ok(())
    }

    /// `--keep-younger-than` for one ref: the tip always, then ancestors
    /// while each (the tip included) is at least `since` seconds old,
    /// stopping at the first older or missing one; as libostree's
    /// `traverse_keep_younger_than`.
    pub fn add_younger_than(&mut self, tip: Checksum, since: i64) -> Result<(), PruneError> {
        self.add_commit(tip, Depth::TIP)?;
        let mut next = Some(tip);
        while let Some(c) = next.take() {
            let commit = match self.repo.load_commit(&c) {
                Ok(p) => p,
                Err(StoreError::MissingObject(_)) => break,
                Err(e) => return Err(e.into()),
            };
            // libostree compares as unsigned 64-bit (a date before 1970
            // keeps only tips).
            if commit.timestamp < since as u64 {
                break;
            }
            self.add_commit(c, Depth::TIP)?;
            next = commit.parent;
        }
        Ok(())
    }

    /// Marks a tree that no commit needs to name (a stage's merged tree).
    pub fn add_tree(&mut self, tree: Checksum, meta: Checksum) {
        if self.commit_only {
            return;
        }
        self.add_meta(meta);
        self.queue_tree(tree, None, true);
    }

    fn add_meta(&mut self, meta: Checksum) {
        if self.metas.insert(meta) {
            self.logged(ObjectName::new(meta, ObjectType::DirMeta));
        }
    }

    fn queue_tree(&mut self, tree: Checksum, commit: Option<Checksum>, partial: bool) {
        if self.trees.insert(tree) {
            self.logged(ObjectName::new(tree, ObjectType::DirTree));
            self.pending.push(Pending {
                tree,
                commit,
                partial,
            });
        }
    }

    /// Queues again every dirtree found missing so far, for the next
    /// [`finish`](Self::finish) (see [`Reach::missing`]): a re-check under
    /// the exclusive lock calls it, since what was missing may have
    /// arrived.
    pub fn retry_missing(&mut self) {
        self.pending.append(&mut self.missing);
    }

    /// Reads every queued dirtree and what is below it, a level at a time,
    /// the dirtrees of a level in parallel. A dirtree missing below a
    /// complete commit is an error (the store is damaged: prune must not
    /// guess); below a partial commit or a stage's tree it is skipped, as
    /// libostree does for partial commits, and remembered for
    /// [`retry_missing`](Self::retry_missing).
    pub fn finish(&mut self, interrupt: &AtomicBool) -> Result<(), PruneError> {
        while !self.pending.is_empty() {
            crate::progress::check(interrupt).map_err(|_| PruneError::Interrupted)?;
            let level = std::mem::take(&mut self.pending);
            let read: Vec<Result<Option<DirTree>, PruneError>> = level
                .par_iter()
                .map(|p| match self.repo.load_dirtree(&p.tree) {
                    Ok(t) => Ok(Some(t)),
                    Err(StoreError::MissingObject(_)) if p.partial => Ok(None),
                    Err(StoreError::MissingObject(object)) => Err(PruneError::MissingObject {
                        object,
                        commit: p.commit,
                    }),
                    Err(e) => Err(e.into()),
                })
                .collect();
            for (p, r) in level.iter().zip(read) {
                let Some(tree) = r? else {
                    self.missing.push(*p);
                    continue;
                };
                for f in &tree.files {
                    if self.files.insert(f.checksum) {
                        self.logged(ObjectName::new(f.checksum, ObjectType::File));
                    }
                }
                for d in &tree.dirs {
                    self.add_meta(d.meta);
                    self.queue_tree(d.tree, p.commit, p.partial);
                }
            }
        }
        Ok(())
    }
}
