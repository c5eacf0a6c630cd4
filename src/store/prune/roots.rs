//! Where reachability starts: which refs (or commits) are roots in each of
//! libostree's prune modes, with what depth, plus what arbor's stages pin.

use std::collections::HashMap;
use std::time::SystemTime;

use super::reach::{Depth, FastMap, Reach};
use super::{PruneError, PruneOptions};
use crate::ostree::Checksum;
use crate::store::Repo;
use crate::store::refs::AnyRef;

/// How the roots are chosen, from the options (see §14.2 of the format
/// notes).
#[derive(Clone, Debug)]
pub(super) enum RootRule {
    /// Every commit in the store is a root (`ostree prune` with no ref
    /// option): only objects no commit reaches go.
    AllCommits { depth: Depth },
    /// `--refs-only`: local, remote and collection (`refs/mirrors`) refs.
    Refs { depth: Depth },
    /// `--keep-younger-than`, `--retain-branch-depth`, `--only-branch`:
    /// local and remote refs, each with its own rule. libostree forgets
    /// `refs/mirrors` here and deletes what only a collection ref holds,
    /// leaving that ref dangling (its own fsck then fails); arbor keeps
    /// those refs' whole history instead, as for any ref not being pruned.
    Selective {
        depth: Depth,
        /// Per ref, as `arbor refs` prints it: an explicit depth.
        per_ref: HashMap<String, Depth>,
        /// Refs not named by `--only-branch` keep their whole history.
        only: Option<Vec<String>>,
        younger_than: Option<i64>,
    },
    /// gc's prune, after it deleted refs: only what those refs alone held
    /// goes. Every ref keeps its whole history and every commit is a root
    /// by itself (its parents need not stay), except `evicted`: the
    /// commits of the deleted refs and their ancestors, each with the time
    /// it was evicted. One of them used since then (pulled, checked out)
    /// is a root again.
    AllCommitsBut {
        evicted: FastMap<Checksum, SystemTime>,
    },
}

impl RootRule {
    pub fn from_options(repo: &Repo, opts: &PruneOptions) -> Result<RootRule, PruneError> {
        let depth = Depth::from_ostree(opts.depth);
        let selective = opts.keep_younger_than.is_some()
            || !opts.retain_branch_depth.is_empty()
            || !opts.only_branches.is_empty();
        if !selective {
            return Ok(if opts.refs_only {
                RootRule::Refs { depth }
            } else {
                RootRule::AllCommits { depth }
            });
        }
        for b in &opts.only_branches {
            // Must exist, as in ostree (which resolves it as a revision).
            repo.resolve_rev(b)
                .map_err(|source| PruneError::NoSuchBranch {
                    name: b.clone(),
                    source: Box::new(source),
                })?;
        }
        let per_ref = opts
            .retain_branch_depth
            .iter()
            .map(|(r, d)| (r.clone(), Depth::from_ostree(*d)))
            .collect();
        Ok(RootRule::Selective {
            depth,
            per_ref,
            only: (!opts.only_branches.is_empty()).then(|| opts.only_branches.clone()),
            younger_than: opts.keep_younger_than,
        })
    }

    /// Adds the roots this mode takes from refs (all modes but
    /// [`RootRule::AllCommits`]); returns how many refs were roots.
    pub fn add_ref_roots(&self, repo: &Repo, reach: &mut Reach<'_>) -> Result<usize, PruneError> {
        match self {
            RootRule::AllCommits { .. } => Ok(0),
            RootRule::AllCommitsBut { .. } => {
                let refs = all_refs(repo)?;
                for (_, c) in &refs {
                    reach.add_commit(*c, Depth::ALL)?;
                }
                Ok(refs.len())
            }
            RootRule::Refs { depth } => {
                let refs = all_refs(repo)?;
                for (_, c) in &refs {
                    reach.add_commit(*c, *depth)?;
                }
                Ok(refs.len())
            }
            RootRule::Selective {
                depth,
                per_ref,
                only,
                younger_than,
            } => {
                let refs = all_refs(repo)?;
                for (r, c) in &refs {
                    let AnyRef::Ref(r) = r else {
                        reach.add_commit(*c, Depth::ALL)?;
                        continue;
                    };
                    let name = &r.to_string();
                    let explicit = per_ref.get(name).copied().or_else(|| {
                        only.as_ref()
                            .filter(|o| !o.iter().any(|b| b == name))
                            .map(|_| Depth::ALL)
                    });
                    match (explicit, younger_than) {
                        (Some(d), _) => reach.add_commit(*c, d)?,
                        (None, Some(since)) => reach.add_younger_than(*c, *since)?,
                        (None, None) => reach.add_commit(*c, *depth)?,
                    }
                }
                Ok(refs.len())
            }
        }
    }

    /// Whether commit `c`, found in the store, is a root by itself, and
    /// with what depth.
    pub fn commit_root(&self, repo: &Repo, c: &Checksum) -> Option<Depth> {
        match self {
            RootRule::AllCommits { depth } => Some(*depth),
            RootRule::AllCommitsBut { evicted } => match evicted.get(c) {
                Some(at) if !used_since(repo, c, *at) => None,
                _ => Some(Depth::TIP),
            },
            _ => None,
        }
    }

    /// The depth a commit that appeared during the prune is kept with: it
    /// is always a root (a writer just made it; nothing names it yet).
    pub fn new_commit_depth(&self) -> Depth {
        match self {
            RootRule::AllCommits { depth } => *depth,
            _ => Depth::TIP,
        }
    }

    /// Under the lock, before a batch: the evicted commits used since
    /// their eviction become roots ([`RootRule::AllCommitsBut`]).
    pub fn add_used_since(&self, repo: &Repo, reach: &mut Reach<'_>) -> Result<(), PruneError> {
        if let RootRule::AllCommitsBut { evicted } = self {
            for (c, at) in evicted {
                if used_since(repo, c, *at) {
                    reach.add_commit(*c, Depth::TIP)?;
                }
            }
        }
        Ok(())
    }
}

/// What arbor's stages need kept: their layers (commits, with their
/// trees) and the merged trees their commits build on.
pub(super) fn add_stage_roots(repo: &Repo, reach: &mut Reach<'_>) -> Result<usize, PruneError> {
    let pins = crate::stage::pins::pins(repo).map_err(|e| PruneError::Stages(Box::new(e)))?;
    for c in &pins.commits {
        reach.add_commit(*c, Depth::TIP)?;
    }
    for (t, m) in &pins.trees {
        reach.add_tree(*t, *m);
    }
    Ok(pins.commits.len() + pins.trees.len())
}

/// Whether `c` was marked used at or after `at`.
fn used_since(repo: &Repo, c: &Checksum, at: SystemTime) -> bool {
    crate::store::used::last_use(repo, c).is_some_and(|t| t >= at)
}

/// Every ref of every kind with its commit (see [`Repo::list_all_refs`]):
/// one that cannot be read stops the prune rather than being skipped.
pub(crate) fn all_refs(repo: &Repo) -> Result<Vec<(AnyRef, Checksum)>, PruneError> {
    Ok(repo.list_all_refs()?)
}
