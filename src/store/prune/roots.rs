//! Where reachability starts: which refs (or commits) are roots in each of
//! libostree's prune modes, with what depth, plus what arbor's stages pin.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FileType, Mode, OFlags};

use super::reach::{Depth, Reach};
use super::{PruneError, PruneOptions};
use crate::fs::list_dir_typed;
use crate::ostree::Checksum;
use crate::ostree::checksum::is_checksum_hex;
use crate::store::error::IoContext;
use crate::store::{Repo, StoreError};

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
                let refs = all_refs(repo, true)?;
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
                let refs = all_refs(repo, true)?;
                for (name, c) in &refs {
                    if name.starts_with('(') {
                        reach.add_commit(*c, Depth::ALL)?;
                        continue;
                    }
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

/// Every ref with its commit, named as `arbor refs` prints them; with
/// `mirrors`, also the collection refs of `refs/mirrors/COLLECTION/`
/// (named `(COLLECTION, REF)`).
pub(crate) fn all_refs(repo: &Repo, mirrors: bool) -> Result<Vec<(String, Checksum)>, PruneError> {
    let mut out: Vec<(String, Checksum)> = repo
        .list_refs()?
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    if mirrors {
        out.extend(mirror_refs(repo)?);
    }
    Ok(out)
}

/// Refs below `refs/mirrors/` (libostree's collection refs of other
/// collections), read through directory descriptors.
fn mirror_refs(repo: &Repo) -> Result<Vec<(String, Checksum)>, StoreError> {
    let base = repo.path().join("refs/mirrors");
    let top = match crate::fs::open_dir(repo.dir(), "refs/mirrors") {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(&base),
    };
    let mut out = Vec::new();
    for (cid, ty) in list_dir_typed(top.as_fd()).at(&base)? {
        let Some(cid) = cid.to_str() else { continue };
        if ty != FileType::Directory {
            continue;
        }
        let dir = crate::fs::open_dir(&top, cid).at(base.join(cid))?;
        let mut stack: Vec<(OwnedFd, String)> = vec![(dir, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let here = base.join(cid).join(&prefix);
            for (name, ty) in list_dir_typed(dir.as_fd()).at(&here)? {
                let Some(name) = name.to_str() else { continue };
                let full = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                };
                match ty {
                    FileType::Directory if stack.len() < 64 => {
                        let sub = crate::fs::open_dir(&dir, name).at(here.join(name))?;
                        stack.push((sub, full));
                    }
                    FileType::RegularFile => {
                        if let Some(c) = read_ref_file(&dir, name, &here.join(name))? {
                            out.push((format!("({cid}, {full})"), c));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

fn read_ref_file(
    dir: &OwnedFd,
    name: &str,
    path: &std::path::Path,
) -> Result<Option<Checksum>, StoreError> {
    use std::io::Read;
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(257)
        .read_to_end(&mut buf)
        .at(path)?;
    let text = std::str::from_utf8(&buf).unwrap_or("").trim_end();
    if !is_checksum_hex(text) {
        return Err(StoreError::BadRef {
            name: path.display().to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(Some(Checksum::from_hex(text)?))
}
