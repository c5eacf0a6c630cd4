//! Pruning: deleting what nothing needs, with `ostree prune`'s selection.
//!
//! # Selection (as libostree's, §14 of the format notes)
//! Candidates are the loose commits, dirtrees, dirmetas, content objects
//! and payload links ([`listing`]); an object goes when it is not
//! reachable ([`reach`]) from the roots ([`roots`]):
//! * by default every commit in the store, so only objects no commit
//!   reaches go (`--depth` changes nothing);
//! * with `refs_only`, every ref (`refs/heads`, `refs/remotes`,
//!   `refs/mirrors`), each followed `depth` parents down;
//! * with `keep_younger_than`, `retain_branch_depth` or `only_branches`,
//!   local and remote refs, each with its own rule (collection refs in
//!   `refs/mirrors` keep their whole history: see [`RootRule::Selective`]).
//!
//! Whatever the mode, arbor's stages are roots too: their layers (commit
//! and tree) and the merged trees their commits build on, so pruning never
//! breaks a stage or makes its next commit name a missing object. A
//! deleted commit takes its detached metadata and `commitpartial` marker
//! along, and leaves a tombstone when `core.tombstone-commits` is on. Then
//! static deltas whose target commit is gone, summary caches of remotes no
//! longer configured, and markers and detached metadata of absent commits
//! go too ([`extras`]).
//!
//! One deliberate difference: where libostree's result depends on the
//! order of its ref hash table (ostree#2338), arbor keeps the union of what
//! every root asks for (see [`Reach::add_commit`]).
//!
//! # Concurrency: compute, then delete in bounded batches
//! libostree holds the exclusive lock for the whole prune, so a long prune
//! stalls every pull and commit for its whole duration. arbor computes
//! without the lock and deletes in batches, each under the exclusive lock
//! for at most [`PruneOptions::batch_size`] objects or [`MAX_HOLD`]:
//! 1. A [`Watch`] on the `objects/XX` directories is started, then the
//!    store is listed and reachability computed, lock-free.
//! 2. Each batch takes the exclusive lock, so no writer, and no reader that
//!    relies on objects staying (checkout, stage create), is running, and
//!    then re-checks before deleting anything: commits that appeared since
//!    the listing (reported by the watch), every ref, and every stage
//!    record become roots, and what they reach is
//!    spared. A pull that found an object "already present" while prune
//!    was computing, and then referenced it, has finished and published
//!    its commit by then; that commit is one of the new ones.
//! 3. Between two batches the lock is free. OFD locks queue nobody and
//!    waiters poll, so a prune taking the lock again at once would starve
//!    them:
//!    * an arbor writer waiting for the shared lock announces itself (see
//!      `RepoLock::writers_waiting`), and the prune then leaves the lock
//!      free for two of its polls (100 ms);
//!    * libostree's writers (`ostree commit`, `pull`) say nothing and try
//!      the lock once a second (`ostree_repo_lock_push`: a non-blocking
//!      `F_OFD_SETLK`, then `sleep (1)`, up to `core.lock-timeout-secs`),
//!      so after every [`HOLD_BUDGET`] (1.5 s) of holding the lock the
//!      prune leaves it free for [`FAIR_GAP`] (1.1 s), in which every such
//!      waiter tries once. A writer thus waits at most about 2.8 s, however
//!      long the prune; a prune that holds the lock for less than 1.5 s in
//!      all never pauses.
//!
//!    During either pause the prune says so (`RepoLock::announce_gap`),
//!    and another arbor prune or gc waiting for the exclusive lock leaves
//!    it alone: two prunes would otherwise fill each other's gaps.
//! 4. Commits are deleted before anything else, so at every moment each
//!    remaining commit's tree is whole; a kill at any point leaves a store
//!    that `fsck` passes, and orphans that the next prune removes.
//!
//! Only objects present in the first listing are ever deleted: objects
//! written meanwhile are not candidates. If the lock-free walk meets a
//! missing object (another process pruning), it is redone under the lock,
//! where a missing object means a damaged store and stops the prune.

mod date;
mod extras;
mod listing;
pub(crate) mod reach;
pub(crate) mod roots;
mod sweep;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::progress::{Event, Progress};
use crate::store::lock::RepoLock;
use crate::store::{LockMode, Repo, StoreError};
pub use date::parse_date;
use listing::{Listing, Watch};
pub use reach::Depth;
use reach::Reach;
use roots::RootRule;
use sweep::Sweep;

/// Longest time one batch holds the exclusive lock while deleting.
pub const MAX_HOLD: Duration = Duration::from_millis(200);
/// Time holding the exclusive lock after which the prune leaves it free
/// for [`FAIR_GAP`]. libostree's writers (an `ostree commit` or `pull`)
/// do not say that they wait (as arbor's do, see
/// `RepoLock::writers_waiting`) and try the lock once a second: without
/// such gaps they would wait for the whole prune, and fail once it lasts
/// longer than their `core.lock-timeout-secs`.
pub const HOLD_BUDGET: Duration = Duration::from_millis(1500);
/// How long the lock is left free after [`HOLD_BUDGET`]: more than
/// libostree's one-second retry, so that a waiting ostree writer gets it.
pub const FAIR_GAP: Duration = Duration::from_millis(1100);

/// What to prune; `ostree prune`'s options.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Reachability from refs only, not from every commit.
    pub refs_only: bool,
    /// Parents kept below each root: −1 all (the default), 0 the root only.
    pub depth: i64,
    /// Keep, per ref, the commits at least this recent (seconds since the
    /// epoch), stopping at the first older one; the tip is always kept.
    pub keep_younger_than: Option<i64>,
    /// Delete this commit first (refused when a ref points at it), then
    /// prune as usual; turns `core.tombstone-commits` on, as ostree does.
    pub delete_commit: Option<Checksum>,
    /// Prune only these refs (as `arbor refs` names them): all others keep
    /// their whole history.
    pub only_branches: Vec<String>,
    /// Per-ref depth, overriding `depth` and `keep_younger_than`.
    pub retain_branch_depth: Vec<(String, i64)>,
    /// Walk and delete commits only; their trees stay (a later plain prune
    /// removes them).
    pub commit_only: bool,
    /// With `delete_commit`: delete only the static deltas to that commit,
    /// not the commit.
    pub static_deltas_only: bool,
    /// Report what would go, delete nothing.
    pub dry_run: bool,
    /// Objects deleted per hold of the exclusive lock.
    pub batch_size: usize,
    /// How long to wait for the exclusive lock each time; `None` for
    /// `core.lock-timeout-secs` (300 s).
    pub lock_timeout: Option<Duration>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            refs_only: false,
            depth: -1,
            keep_younger_than: None,
            delete_commit: None,
            only_branches: Vec::new(),
            retain_branch_depth: Vec::new(),
            commit_only: false,
            static_deltas_only: false,
            dry_run: false,
            batch_size: 4096,
            lock_timeout: None,
        }
    }
}

/// What a prune did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct PruneOutcome {
    pub dry_run: bool,
    /// Candidate objects found (commits only with `commit_only`).
    pub objects_total: u64,
    /// The commit `delete_commit` named, once deleted (not in `deleted`,
    /// which is what the prune after it found unreachable).
    pub commit_deleted: Option<Checksum>,
    /// Objects deleted, commits first.
    pub deleted: Vec<ObjectName>,
    /// Their sizes summed, as `ostree prune` reports "freed".
    pub bytes_freed: u64,
    /// Blocks released on disk (objects whose last link went).
    pub disk_bytes_freed: u64,
    /// Static deltas removed (`FROM-TO` or `TO`).
    pub deltas_deleted: Vec<String>,
    /// `commitpartial` markers removed with their commit or found stale.
    pub markers_removed: Vec<Checksum>,
    /// Detached metadata of absent commits removed.
    pub commitmeta_removed: Vec<Checksum>,
    /// Summary caches of remotes no longer configured.
    pub summary_caches_removed: Vec<String>,
    /// Tombstones written for deleted commits.
    pub tombstones_written: u64,
    /// Objects found unreachable by the walk but needed by the time they
    /// were to go (written by a concurrent pull or commit), and kept.
    pub spared: u64,
    /// How often, and at most how long, the exclusive lock was held.
    pub lock_holds: u32,
    pub longest_lock_hold: Duration,
}

#[derive(Debug, Error)]
pub enum PruneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deleting only static deltas needs the commit they lead to")]
    StaticDeltasOnlyNeedsCommit,
    #[error("a dry run cannot delete a commit")]
    DryRunDeletesNothing,
    #[error("commit {commit} is referenced by ref {name}")]
    CommitReferenced { commit: Checksum, name: String },
    #[error("commit {0} is not in the repository")]
    NoSuchCommit(Checksum),
    #[error("branch {name}: {source}")]
    NoSuchBranch {
        name: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("object {object} is missing{}; the store is damaged", match commit { Some(c) => format!(" from the tree of commit {c}, which is not marked partial"), None => String::new() })]
    MissingObject {
        object: ObjectName,
        commit: Option<Checksum>,
    },
    #[error("reading the stages of the store: {0}")]
    Stages(#[source] Box<crate::stage::StageError>),
    #[error(
        "timed out after {}s waiting for the exclusive lock on {} (another arbor or ostree process is using the repository)",
        waited.as_secs(),
        path.display()
    )]
    Busy {
        path: std::path::PathBuf,
        waited: Duration,
    },
    #[error("interrupted")]
    Interrupted,
}

impl From<crate::progress::Interrupted> for PruneError {
    fn from(_: crate::progress::Interrupted) -> Self {
        PruneError::Interrupted
    }
}

/// Prunes `repo` (see the module docs).
pub fn prune(
    repo: &Repo,
    opts: &PruneOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<PruneOutcome, PruneError> {
    if opts.static_deltas_only && opts.delete_commit.is_none() {
        return Err(PruneError::StaticDeltasOnlyNeedsCommit);
    }
    if opts.dry_run && opts.delete_commit.is_some() {
        return Err(PruneError::DryRunDeletesNothing);
    }
    let rule = RootRule::from_options(repo, opts)?;
    prune_with(repo, opts, rule, progress, interrupt)
}

/// gc's prune after it deleted refs: deletes what only `evicted` (the
/// commits those refs named and their ancestors, each with when it was
/// evicted) held, and what nothing reaches; every other commit stays, with
/// its tree, as do the refs' whole histories (see
/// [`RootRule::AllCommitsBut`]). Only `batch_size`, `lock_timeout` and
/// `dry_run` of `opts` are used.
pub(crate) fn prune_evicted(
    repo: &Repo,
    opts: &PruneOptions,
    evicted: &[(Checksum, std::time::SystemTime)],
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<PruneOutcome, PruneError> {
    let opts = PruneOptions {
        batch_size: opts.batch_size,
        lock_timeout: opts.lock_timeout,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let rule = RootRule::AllCommitsBut {
        evicted: evicted.iter().copied().collect(),
    };
    prune_with(repo, &opts, rule, progress, interrupt)
}

fn prune_with(
    repo: &Repo,
    opts: &PruneOptions,
    rule: RootRule,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<PruneOutcome, PruneError> {
    let mut out = PruneOutcome {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut tombstones = extras::tombstones_enabled(repo);
    if let Some(c) = opts.delete_commit {
        let lock = exclusive(repo, opts.lock_timeout, interrupt)?;
        let held = Instant::now();
        if opts.static_deltas_only {
            for d in extras::list_deltas(repo)?.into_iter().filter(|d| d.to == c) {
                extras::remove_delta(repo, &d)?;
                out.deltas_deleted.push(d.name());
            }
        } else {
            delete_one_commit(repo, c, &mut out)?;
            tombstones = true;
        }
        out.note_hold(held.elapsed());
        drop(lock);
    }

    if crate::store::lock::ostree_locking_off(repo) {
        progress.report(Event::Note(
            "core.locking is off: ostree processes writing to this repository take no lock, \
             and no prune can keep clear of them",
        ));
    }
    progress.report(Event::Note("finding reachable objects"));
    let plan = match plan(repo, opts, &rule, interrupt) {
        Err(PruneError::MissingObject { .. }) => {
            // Something disappeared under the lock-free walk (another
            // prune?): redo it where nothing can change.
            let _lock = exclusive(repo, opts.lock_timeout, interrupt)?;
            plan(repo, opts, &rule, interrupt)?
        }
        r => r?,
    };
    crate::failpoint::crash("prune:computed");
    out.objects_total = plan.listing.candidates.len() as u64;
    let mut sweep = Sweep::new(repo, &rule, plan, tombstones, opts);
    if opts.dry_run {
        sweep.dry_run(&mut out)?;
    } else {
        sweep.run(&mut out, progress, interrupt)?;
    }
    Ok(out)
}

/// `--delete-commit`: refused while a ref points at the commit; turns
/// tombstones on for good, as ostree does. The caller holds the lock.
fn delete_one_commit(repo: &Repo, c: Checksum, out: &mut PruneOutcome) -> Result<(), PruneError> {
    for (name, target) in roots::all_refs(repo)? {
        if target == c {
            return Err(PruneError::CommitReferenced {
                commit: c,
                name: name.to_string(),
            });
        }
    }
    let name = ObjectName::new(c, ObjectType::Commit);
    if !repo.has_object(&name)? {
        return Err(PruneError::NoSuchCommit(c));
    }
    let marked = repo.is_commit_partial(&c)?;
    extras::enable_tombstones(repo)?;
    if let Some((size, _)) = extras::object_size(repo, &name)?
        && extras::delete_object(repo, &name, true)?
    {
        out.commit_deleted = Some(c);
        out.bytes_freed += size.bytes;
        out.disk_bytes_freed += size.disk_bytes;
        out.tombstones_written += 1;
        if marked {
            out.markers_removed.push(c);
        }
    }
    Ok(())
}

/// The listing, the watch started before it and what is reachable.
struct Plan<'r> {
    watch: Watch,
    listing: Listing,
    reach: Reach<'r>,
}

fn plan<'r>(
    repo: &'r Repo,
    opts: &PruneOptions,
    rule: &RootRule,
    interrupt: &AtomicBool,
) -> Result<Plan<'r>, PruneError> {
    let watch = Watch::start(repo);
    let listing = listing::list(repo, opts.commit_only)?;
    let mut reach = Reach::new(repo, opts.commit_only);
    for c in &listing.commits {
        if let Some(depth) = rule.commit_root(repo, c) {
            reach.add_commit(*c, depth)?;
        }
    }
    rule.add_ref_roots(repo, &mut reach)?;
    roots::add_stage_roots(repo, &mut reach)?;
    reach.finish(interrupt)?;
    Ok(Plan {
        watch,
        listing,
        reach,
    })
}

/// The exclusive lock, waiting at most `timeout` (else the configured
/// `core.lock-timeout-secs`) and no longer than the interrupt flag allows:
/// a prune waiting behind a long pull stops on Ctrl-C.
pub(crate) fn exclusive(
    repo: &Repo,
    timeout: Option<Duration>,
    interrupt: &AtomicBool,
) -> Result<RepoLock, PruneError> {
    RepoLock::acquire_interruptible(repo, LockMode::Exclusive, timeout, interrupt).map_err(|e| {
        match e {
            StoreError::Interrupted => PruneError::Interrupted,
            StoreError::LockTimeout { path, waited, .. } => PruneError::Busy { path, waited },
            e => e.into(),
        }
    })
}

impl PruneOutcome {
    fn note_hold(&mut self, d: Duration) {
        self.lock_holds += 1;
        self.longest_lock_hold = self.longest_lock_hold.max(d);
    }
}
