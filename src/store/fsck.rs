//! Verifying a repository: every loose object is re-hashed and parsed, every
//! ref must point to a loadable commit, and every complete (non-partial)
//! commit must have its whole tree present.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use super::error::{Result, StoreError};
use super::repo::Repo;
use crate::ostree::{Checksum, Commit, DirMeta, DirTree, Metadata, ObjectName, ObjectType};
use crate::progress::{Event, Phase, Progress};

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object concerned, when there is one.
    pub object: Option<ObjectName>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What fsck checks.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FsckOptions {}

/// What fsck found.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub objects_checked: u64,
    pub commits_checked: u64,
    pub partial_commits: u64,
    pub problems: Vec<Problem>,
}

/// Verifies `repo`: re-hashes every object, checks every ref and the tree
/// of every complete commit. Problems found are reported, not returned as
/// errors; an error means fsck itself could not run.
///
/// Progress: [`Phase::Fsck`] in objects. An interrupt stops it with
/// [`StoreError::Interrupted`] (fsck changes nothing).
pub fn fsck(
    repo: &Repo,
    _opts: &FsckOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<FsckReport> {
    let objects = repo.list_objects()?;
    let present: HashSet<ObjectName> = objects.iter().copied().collect();
    let total = objects.len() as u64;
    let done = AtomicU64::new(0);
    progress.report(Event::Start {
        phase: Phase::Fsck,
        total: Some(total),
    });
    let mut problems: Vec<Problem> = objects
        .par_iter()
        .filter_map(|name| {
            if interrupt.load(Ordering::Relaxed) {
                return None;
            }
            let r = verify_object(repo, name);
            progress.report(Event::Advance {
                phase: Phase::Fsck,
                done: done.fetch_add(1, Ordering::Relaxed) + 1,
                total: Some(total),
                bytes: 0,
            });
            r.err().map(|e| Problem {
                object: Some(*name),
                message: e.to_string(),
            })
        })
        .collect();
    crate::progress::check(interrupt)?;
    progress.report(Event::Finish { phase: Phase::Fsck });
    problems.sort_by_key(|p| p.object);
    let corrupt: HashSet<ObjectName> = problems.iter().filter_map(|p| p.object).collect();

    let mut report = FsckReport {
        objects_checked: total,
        ..Default::default()
    };
    for (name, c) in repo.list_refs()? {
        let obj = ObjectName::new(c, ObjectType::Commit);
        if !present.contains(&obj) {
            problems.push(Problem {
                object: Some(obj),
                message: format!("ref {name} points to commit {c}, which is missing"),
            });
        }
    }
    let mut seen_trees = HashSet::new();
    for name in objects.iter().filter(|n| n.objtype == ObjectType::Commit) {
        if corrupt.contains(name) {
            continue;
        }
        if repo.is_commit_partial(&name.checksum)? {
            report.partial_commits += 1;
            continue;
        }
        report.commits_checked += 1;
        let commit = repo.load_commit(&name.checksum)?;
        check_tree_complete(
            repo,
            &commit,
            &present,
            &corrupt,
            &mut seen_trees,
            &mut problems,
            name.checksum,
        )?;
    }
    report.problems = problems;
    Ok(report)
}

fn verify_object(repo: &Repo, name: &ObjectName) -> Result<()> {
    let corrupt = |source| StoreError::CorruptObject {
        object: *name,
        source,
    };
    match name.objtype {
        ObjectType::File => repo.verify_content(&name.checksum),
        ObjectType::Commit => {
            let data = repo.load_verified_metadata(name)?;
            Commit::parse(&data).map(drop).map_err(corrupt)
        }
        ObjectType::DirTree => {
            let data = repo.load_verified_metadata(name)?;
            DirTree::parse(&data).map(drop).map_err(corrupt)
        }
        ObjectType::DirMeta => {
            let data = repo.load_verified_metadata(name)?;
            DirMeta::parse(&data).map(drop).map_err(corrupt)
        }
        // Named after their commit, not their bytes.
        ObjectType::CommitMeta => {
            let data = repo.load_metadata(name)?;
            Metadata::parse(&data).map(drop).map_err(corrupt)
        }
        _ => Ok(()),
    }
}

/// Walks a commit's tree through objects known present, reporting what is
/// missing. Shared subtrees are walked once.
fn check_tree_complete(
    repo: &Repo,
    commit: &Commit,
    present: &HashSet<ObjectName>,
    corrupt: &HashSet<ObjectName>,
    seen: &mut HashSet<Checksum>,
    problems: &mut Vec<Problem>,
    commit_csum: Checksum,
) -> Result<()> {
    let missing = |obj: ObjectName, problems: &mut Vec<Problem>| {
        if !present.contains(&obj) {
            problems.push(Problem {
                object: Some(obj),
                message: format!("commit {commit_csum}: object {obj} is missing (the tree is incomplete; pull the commit again)"),
            });
            false
        } else {
            !corrupt.contains(&obj)
        }
    };
    missing(
        ObjectName::new(commit.root_meta, ObjectType::DirMeta),
        problems,
    );
    let mut stack = vec![commit.root_tree];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        if !missing(ObjectName::new(t, ObjectType::DirTree), problems) {
            continue;
        }
        let tree = repo.load_dirtree(&t)?;
        for f in &tree.files {
            missing(ObjectName::new(f.checksum, ObjectType::File), problems);
        }
        for d in &tree.dirs {
            missing(ObjectName::new(d.meta, ObjectType::DirMeta), problems);
            stack.push(d.tree);
        }
    }
    Ok(())
}
