//! The local repository: an OSTree repository on disk that `ostree` itself
//! can read, in any of the four modes (see [`RepoMode`]).
//!
//! # Layout
//! `config`, `objects/XX/…`, `refs/{heads,remotes,mirrors}/`, `state/`,
//! `tmp/`, `extensions/`, exactly as `ostree init` creates them.
//!
//! # Lock protocol
//! `.lock` in the repository root carries open-file-description locks, the
//! same kind libostree takes, so arbor and ostree processes exclude each
//! other correctly:
//! - a **shared** lock is held by every write transaction, for its whole
//!   life (pull, commit, stage commit, `refs --create/--delete`): any
//!   number of writers run at once (objects are content-addressed and
//!   published with no-replace renames, refs replaced atomically). A
//!   writer finds an object "already present" and then names it only
//!   while holding it, so what it relies on cannot go in between;
//! - a **shared** lock is also held by readers that rely on objects
//!   staying until they are done: a checkout (from resolving the revision
//!   to the last file placed) and a stage create (from checking its layers
//!   until its record names them; from then on the record pins them, see
//!   below). Plain reads (`cat`, `ls`, `log`, fsck) take none: an object
//!   they read is complete or absent, never half-written;
//! - an **exclusive** lock is taken by what deletes: [`prune`] and
//!   [`gc`] (in batches, see below), so nothing they delete is being
//!   relied upon by a writer or reader in flight. A repository the process
//!   cannot write is read without a lock (it cannot prune it either).
//!
//! Waiting for a lock is bounded by `core.lock-timeout-secs` (300 s).
//!
//! # Deleting: prune and gc
//! libostree holds the exclusive lock for a whole prune. arbor computes
//! what is unreachable *without* the lock, then deletes in batches of at
//! most [`prune::PruneOptions::batch_size`] objects or
//! [`prune::MAX_HOLD`], each under the exclusive lock, and re-checks
//! before every batch: commits published since the listing (watched with
//! inotify, see [`prune`]), every ref, and every stage's record (its
//! layers and merged tree, which no ref may name) become roots, and what
//! they reach is spared. Between batches the lock is left free for the
//! writers waiting: arbor's say so and get it after the batch they waited
//! for; libostree's try once a second without saying so, and get it in
//! the 1.1 s gap the prune leaves after every 1.5 s of holding it (while
//! no other prune or gc takes it). So a concurrent `arbor pull` is held up
//! by about one batch, an `ostree pull` or `commit` by at most about
//! 2.8 s, however long the prune (see [`prune`]).
//! gc decides which refs to evict lock-free, then deletes each only if,
//! under the exclusive lock, it still names the same commit, has not been
//! used since and is no stage's layer; then it prunes the same way. The
//! protocol is libostree's (ostree processes take the same locks), but an
//! `ostree prune --refs-only` does not know arbor's stages: keep their
//! layers on refs where ostree prunes too.
//!
//! # Crash safety
//! See [`transaction`]: objects are staged under `tmp/`, synced once, then
//! renamed into `objects/`; refs are written after the objects they name,
//! then synced. A crash at any point leaves every visible object complete
//! and every ref pointing to a complete commit. Staging directories of dead
//! processes are detected by their liveness lock and recovered or removed
//! by the next transaction. Working directories of other long operations
//! (static-delta generation, summary updates, see [`workdir`]) carry the
//! same kind of liveness lock and are removed once their owner is gone.
//!
//! Deleting runs in the opposite order: refs first (gc), then commits,
//! each before its detached metadata and `commitpartial` marker, and only
//! then the trees and files they alone reached. Killed at any point, every
//! remaining commit still has its whole tree (so `arbor fsck` and
//! `ostree fsck` pass), and what is left over (orphaned objects, markers
//! and detached metadata of absent commits) goes at the next prune.

pub mod commit;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod keyfile;
pub mod lock;
pub mod objects;
pub mod prune;
pub mod refs;
pub mod refs_edit;
pub mod remotes;
pub mod repo;
pub mod transaction;
pub mod tree;
pub mod used;
pub mod workdir;

pub use error::{Result, StoreError};
pub use lock::LockMode;
pub use objects::{ContentObject, ExactReader};
pub use refs::RefName;
pub use remotes::{Remote, RemoteTls};
pub use repo::{Repo, RepoMode};
pub use transaction::Transaction;
pub use tree::TreeNode;
