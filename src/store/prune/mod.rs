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

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::progress::{Event, Phase, Progress};
use crate::store::lock::RepoLock;
use crate::store::{LockMode, Repo, StoreError};
pub use date::parse_date;
use extras::Freed;
use listing::{Listing, Watch};
pub use reach::Depth;
use reach::{FastSet, Reach};
use roots::RootRule;

/// Longest time one batch holds the exclusive lock while deleting.
pub const MAX_HOLD: Duration = Duration::from_millis(200);
/// Objects deleted in parallel between checks of the hold time.
const CHUNK: usize = 256;
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
/// How long the lock is left free for an arbor writer that announced it
/// waits: two of its polls.
const WRITER_GAP: Duration = crate::store::lock::POLL.saturating_mul(2);

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
    let mut sweep = Sweep {
        repo,
        rule: &rule,
        plan,
        tombstones,
        link_threshold: repo
            .config()
            .get_u64("core", "payload-link-threshold")
            .ok()
            .flatten(),
        batch_size: opts.batch_size.max(1),
        lock_timeout: opts.lock_timeout,
    };
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

/// Leaves the lock free for `d` (stopping early once `interrupt` is
/// set), saying so, so that no other prune or gc takes it meanwhile.
fn leave_gap(repo: &Repo, d: Duration, interrupt: &AtomicBool) -> Result<(), PruneError> {
    let _gap = RepoLock::announce_gap(repo);
    let end = Instant::now() + d;
    loop {
        crate::progress::check(interrupt)?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(crate::store::lock::POLL));
    }
}

impl PruneOutcome {
    fn note_hold(&mut self, d: Duration) {
        self.lock_holds += 1;
        self.longest_lock_hold = self.longest_lock_hold.max(d);
    }
}

/// Deleting what the plan found unreachable.
struct Sweep<'a, 'r> {
    repo: &'r Repo,
    rule: &'a RootRule,
    plan: Plan<'r>,
    tombstones: bool,
    link_threshold: Option<u64>,
    batch_size: usize,
    lock_timeout: Option<Duration>,
}

impl Sweep<'_, '_> {
    /// Whether `name` must stay: reachable, or a payload link whose
    /// target stays and is big enough to deserve one (as libostree).
    fn keep(&self, name: &ObjectName) -> Result<bool, PruneError> {
        if self.plan.reach.contains(name) {
            return Ok(true);
        }
        if name.objtype != ObjectType::PayloadLink {
            return Ok(false);
        }
        let Some(threshold) = self.link_threshold else {
            return Ok(false);
        };
        let Some(target) = extras::payload_link_target(self.repo, name)? else {
            return Ok(false);
        };
        let file = ObjectName::new(target, ObjectType::File);
        if !self.plan.reach.contains(&file) {
            return Ok(false);
        }
        Ok(extras::object_size(self.repo, &file)?.is_some_and(|(s, _)| s.bytes >= threshold))
    }

    /// The unreachable candidates, commits first.
    fn doomed(&self) -> Result<Vec<ObjectName>, PruneError> {
        let mut doomed = Vec::new();
        for name in &self.plan.listing.candidates {
            if !self.keep(name)? {
                doomed.push(*name);
            }
        }
        doomed.sort_by_key(|n| (n.objtype != ObjectType::Commit, *n));
        Ok(doomed)
    }

    fn dry_run(&mut self, out: &mut PruneOutcome) -> Result<(), PruneError> {
        let doomed = self.doomed()?;
        let mut gone_commits = FastSet::default();
        for name in doomed {
            if let Some((size, _)) = extras::object_size(self.repo, &name)? {
                out.bytes_freed += size.bytes;
                out.disk_bytes_freed += size.disk_bytes;
            }
            if name.objtype == ObjectType::Commit {
                gone_commits.insert(name.checksum);
            }
            out.deleted.push(name);
        }
        let present = |c: &Checksum| -> Result<bool, PruneError> {
            Ok(!gone_commits.contains(c)
                && self
                    .repo
                    .has_object(&ObjectName::new(*c, ObjectType::Commit))?)
        };
        for d in extras::list_deltas(self.repo)? {
            if !present(&d.to)? {
                out.deltas_deleted.push(d.name());
            }
        }
        out.summary_caches_removed = extras::stale_summary_caches(self.repo)?;
        for c in extras::partial_markers(self.repo)? {
            if !present(&c)? && !extras::commit_staged(self.repo, &c)? {
                out.markers_removed.push(c);
            }
        }
        for c in self.plan.listing.commitmeta.clone() {
            if !present(&c)? && !extras::commit_staged(self.repo, &c)? {
                out.commitmeta_removed.push(c);
            }
        }
        Ok(())
    }

    /// Under the exclusive lock: makes roots of what appeared since the
    /// plan (new commits, moved refs, new stages) and walks them.
    fn recheck(&mut self, interrupt: &AtomicBool) -> Result<(), PruneError> {
        let plan = &mut self.plan;
        let new = plan
            .watch
            .new_commits(self.repo, &mut plan.listing.commits)?;
        let depth = self.rule.new_commit_depth();
        for c in new {
            plan.reach.add_commit(c, depth)?;
        }
        self.rule.add_ref_roots(self.repo, &mut plan.reach)?;
        self.rule.add_used_since(self.repo, &mut plan.reach)?;
        roots::add_stage_roots(self.repo, &mut plan.reach)?;
        plan.reach.retry_missing();
        plan.reach.finish(interrupt)
    }

    fn run(
        &mut self,
        out: &mut PruneOutcome,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<(), PruneError> {
        let doomed = self.measure(self.doomed()?)?;
        let total = doomed.len() as u64;
        progress.report(Event::Note(&format!(
            "{total} unreachable objects to delete"
        )));
        progress.report(Event::Start {
            phase: Phase::Prune,
            total: Some(total),
        });
        let mut next = 0;
        // Hold time since the lock was last left free for FAIR_GAP.
        let mut since_gap = Duration::ZERO;
        loop {
            crate::progress::check(interrupt)?;
            let lock = exclusive(self.repo, self.lock_timeout, interrupt)?;
            let held = Instant::now();
            self.recheck(interrupt)?;
            let mut handled = 0;
            while next < doomed.len() && handled < self.batch_size && held.elapsed() < MAX_HOLD {
                let end = (next + CHUNK)
                    .min(doomed.len())
                    .min(next + self.batch_size - handled);
                let mut chunk = Vec::with_capacity(end - next);
                for d in &doomed[next..end] {
                    if self.keep(&d.0)? {
                        out.spared += 1;
                    } else {
                        chunk.push(*d);
                    }
                }
                self.delete_chunk(&chunk, out)?;
                handled += end - next;
                next = end;
            }
            let finished = next >= doomed.len();
            if finished {
                crate::failpoint::crash("prune:objects-deleted");
                self.final_cleanup(out)?;
            }
            out.note_hold(held.elapsed());
            since_gap += held.elapsed();
            drop(lock);
            progress.report(Event::Advance {
                phase: Phase::Prune,
                done: out.deleted.len() as u64,
                total: Some(total),
                bytes: out.bytes_freed,
            });
            if finished {
                break;
            }
            if since_gap >= HOLD_BUDGET {
                // Whoever waits without saying so (ostree) gets a turn.
                leave_gap(self.repo, FAIR_GAP, interrupt)?;
                since_gap = Duration::ZERO;
            } else if RepoLock::writers_waiting(self.repo) {
                // An arbor writer waiting for the shared lock polls: give
                // it a turn.
                leave_gap(self.repo, WRITER_GAP, interrupt)?;
            }
        }
        progress.report(Event::Finish {
            phase: Phase::Prune,
        });
        Ok(())
    }

    /// Sizes (and inode numbers) of what is to go, measured before any
    /// lock is taken; objects already gone are dropped. Commits stay first;
    /// the rest is ordered by inode, so that deleting walks the inode
    /// tables in order (each table block and bitmap is updated in one run
    /// instead of in checksum order).
    fn measure(&self, doomed: Vec<ObjectName>) -> Result<Vec<(ObjectName, Freed)>, PruneError> {
        use rayon::prelude::*;
        let measured: Vec<Option<(ObjectName, Freed, u64)>> = doomed
            .par_iter()
            .map(|n| Ok(extras::object_size(self.repo, n)?.map(|(f, ino)| (*n, f, ino))))
            .collect::<Result<_, StoreError>>()?;
        let mut measured: Vec<(ObjectName, Freed, u64)> = measured.into_iter().flatten().collect();
        measured.sort_by_key(|(n, _, ino)| (n.objtype != ObjectType::Commit, *ino));
        Ok(measured.into_iter().map(|(n, f, _)| (n, f)).collect())
    }

    /// Deletes `chunk` in parallel, its commits before anything else.
    fn delete_chunk(
        &mut self,
        chunk: &[(ObjectName, Freed)],
        out: &mut PruneOutcome,
    ) -> Result<(), PruneError> {
        use rayon::prelude::*;
        let split = chunk.partition_point(|(n, _)| n.objtype == ObjectType::Commit);
        for part in [&chunk[..split], &chunk[split..]] {
            if part.is_empty() {
                continue;
            }
            let results: Vec<_> = part
                .par_iter()
                .map(|(n, _)| extras::delete_object(self.repo, n, self.tombstones))
                .collect();
            for ((name, size), r) in part.iter().zip(results) {
                if r? {
                    if name.objtype == ObjectType::Commit {
                        // No longer known: if a pull brings it back, the
                        // watch reports it as new and it becomes a root,
                        // so its tree is not deleted under it.
                        self.plan.listing.commits.remove(&name.checksum);
                    }
                    out.deleted.push(*name);
                    out.bytes_freed += size.bytes;
                    out.disk_bytes_freed += size.disk_bytes;
                    if name.objtype == ObjectType::Commit && self.tombstones {
                        out.tombstones_written += 1;
                    }
                }
            }
            if part[0].0.objtype != ObjectType::Commit {
                crate::failpoint::crash("prune:batch");
            }
        }
        Ok(())
    }

    /// Under the last hold: deltas to absent commits, stale markers and
    /// detached metadata, summary caches of removed remotes.
    fn final_cleanup(&mut self, out: &mut PruneOutcome) -> Result<(), PruneError> {
        let repo = self.repo;
        let present = |c: &Checksum| repo.has_object(&ObjectName::new(*c, ObjectType::Commit));
        for d in extras::list_deltas(repo)? {
            if !present(&d.to)? {
                extras::remove_delta(repo, &d)?;
                out.deltas_deleted.push(d.name());
            }
        }
        crate::failpoint::crash("prune:deltas-deleted");
        for name in extras::stale_summary_caches(repo)? {
            extras::remove_summary_cache(repo, &name)?;
            out.summary_caches_removed.push(name);
        }
        for c in extras::partial_markers(repo)? {
            if !present(&c)? && !extras::commit_staged(repo, &c)? {
                repo.clear_commit_partial(&c)?;
                out.markers_removed.push(c);
            }
        }
        for c in std::mem::take(&mut self.plan.listing.commitmeta) {
            if !present(&c)? && !extras::commit_staged(repo, &c)? {
                extras::delete_commit_leftovers(repo, &c)?;
                out.commitmeta_removed.push(c);
            }
        }
        Ok(())
    }
}
