//! Progress reporting and interruption: the one contract every long
//! operation of the library follows.
//!
//! An operation takes `progress: &dyn Progress` and `interrupt:
//! &AtomicBool`:
//! * it reports what it is doing as [`Event`]s, from any of its threads
//!   (implementations must be cheap and thread-safe: a counter update, a
//!   progress bar's `set_position`); [`NoProgress`] ignores them;
//! * it checks `interrupt` between units of work (an object, a file, a
//!   directory) and, once it is set, stops within about a second, leaves
//!   the store consistent (what was completed is kept, so running the
//!   operation again resumes), and returns its error type's `Interrupted`
//!   variant. The caller sets the flag, typically from a SIGINT handler.
//!
//! The library never prints: notes that a user asking for detail would want
//! (which method a checkout chose, why a delta was or was not used) are
//! [`Event::Note`]s.

use std::sync::atomic::{AtomicBool, Ordering};

/// Receives progress events. Called from worker threads.
pub trait Progress: Sync {
    fn report(&self, event: Event<'_>);
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _: Event<'_>) {}
}

impl<F: Fn(Event<'_>) + Sync> Progress for F {
    fn report(&self, event: Event<'_>) {
        self(event)
    }
}

/// What an operation is doing. New phases and events may be added, so
/// match with a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Pull: fetching objects (units: objects; bytes: bytes received).
    Fetch,
    /// Pull: applying a static delta (units: parts; bytes: bytes received).
    ApplyDelta,
    /// Checkout: placing files (units: files).
    Checkout,
    /// Commit: reading and hashing the files of a tree (units: files).
    Commit,
    /// Fsck: re-hashing objects (units: objects).
    Fsck,
    /// Stage create: checking out layers, or a copy stage's merged tree
    /// (units: checkouts).
    StageCreate,
    /// Stage commit: writing what changed (units: files).
    StageCommit,
    /// Prune or gc: deleting objects (units: objects; bytes: bytes freed).
    Prune,
    /// Publishing: generating a static delta (units: parts).
    GenerateDelta,
}

impl Phase {
    /// A short verb phrase for progress bars.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Fetch => "pulling",
            Phase::ApplyDelta => "applying delta",
            Phase::Checkout => "checking out",
            Phase::Commit => "committing",
            Phase::Fsck => "verifying",
            Phase::StageCreate => "staging",
            Phase::StageCommit => "committing stage",
            Phase::Prune => "pruning",
            Phase::GenerateDelta => "generating delta",
        }
    }
}

/// One progress report.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A phase began; `total` units are expected when known.
    Start { phase: Phase, total: Option<u64> },
    /// Progress in a phase: `done` units so far (of `total` when known,
    /// which may grow as a pull discovers its tree) and `bytes` so far.
    /// Counts are absolute, not increments.
    Advance {
        phase: Phase,
        done: u64,
        total: Option<u64>,
        bytes: u64,
    },
    /// The phase ended.
    Finish { phase: Phase },
    /// A decision or fact worth telling a user who asked for detail.
    Note(&'a str),
}

/// Returned by operations that were stopped by their interrupt flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// `Err(Interrupted)` once `flag` is set.
pub fn check(flag: &AtomicBool) -> Result<(), Interrupted> {
    if flag.load(Ordering::Relaxed) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
