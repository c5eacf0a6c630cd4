//! Where reachability starts: which refs (or commits) are roots in each of
//! libostree's prune modes, with what depth, plus what arbor's stages pin.

use std::collections::HashMap;

use super::reach::{Depth, Reach};
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

    /// The depth every commit of the store is walked with, when all
    /// commits are roots.
    pub fn all_commits_depth(&self) -> Option<Depth> {
        match self {
            RootRule::AllCommits { depth } => Some(*depth),
            _ => None,
        }
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

/// Every ref of every kind with its commit (see [`Repo::list_all_refs`]):
/// one that cannot be read stops the prune rather than being skipped.
pub(crate) fn all_refs(repo: &Repo) -> Result<Vec<(AnyRef, Checksum)>, PruneError> {
    Ok(repo.list_all_refs()?)
}
