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
//!   life; any number of writers run at once (objects are content-addressed
//!   and published with no-replace renames, refs replaced atomically);
//! - an **exclusive** lock is taken by operations that delete objects
//!   (prune, fsck repairs), so nothing they delete is being referenced by a
//!   transaction in flight;
//! - readers take no lock: objects never change once visible, and a ref
//!   always names a fully published commit.
//!
//! Waiting for a lock is bounded by `core.lock-timeout-secs` (300 s).
//!
//! # Crash safety
//! See [`transaction`]: objects are staged under `tmp/`, synced once, then
//! renamed into `objects/`; refs are written after the objects they name,
//! then synced. A crash at any point leaves every visible object complete
//! and every ref pointing to a complete commit. Staging directories of dead
//! processes are detected by their liveness lock and removed by the next
//! [`Repo::open`].

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

pub use error::{Result, StoreError};
pub use lock::LockMode;
pub use objects::{ContentObject, ExactReader};
pub use refs::RefName;
pub use remotes::{Remote, RemoteTls};
pub use repo::{Repo, RepoMode};
pub use transaction::Transaction;
pub use tree::TreeNode;
