//! Deleting what a [`Plan`] found unreachable, in batches under the
//! exclusive lock, leaving it to writers between them (the module docs of
//! [`super`], steps 2 to 4).

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::extras::{self, Freed};
use super::reach::FastSet;
use super::roots::{self, RootRule};
use super::{FAIR_GAP, HOLD_BUDGET, MAX_HOLD, Plan, PruneError, PruneOutcome, exclusive};
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::progress::{Event, Phase, Progress};
use crate::store::lock::RepoLock;
use crate::store::{Repo, StoreError};

/// Objects deleted in parallel between checks of the hold time.
const CHUNK: usize = 256;
/// How long the lock is left free for an arbor writer that announced it
/// waits: two of its polls.
const WRITER_GAP: Duration = crate::store::lock::POLL.saturating_mul(2);

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

/// Deleting what the plan found unreachable.
pub(super) struct Sweep<'a, 'r> {
    repo: &'r Repo,
    rule: &'a RootRule,
    plan: Plan<'r>,
    tombstones: bool,
    link_threshold: Option<u64>,
    batch_size: usize,
    lock_timeout: Option<Duration>,
}

impl<'a, 'r> Sweep<'a, 'r> {
    pub(super) fn new(
        repo: &'r Repo,
        rule: &'a RootRule,
        plan: Plan<'r>,
        tombstones: bool,
        opts: &super::PruneOptions,
    ) -> Self {
        Sweep {
            repo,
            rule,
            plan,
            tombstones,
            link_threshold: repo
                .config()
                .get_u64("core", "payload-link-threshold")
                .ok()
                .flatten(),
            batch_size: opts.batch_size.max(1),
            lock_timeout: opts.lock_timeout,
        }
    }

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

    pub(super) fn dry_run(&mut self, out: &mut PruneOutcome) -> Result<(), PruneError> {
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

    pub(super) fn run(
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
