//! The server side of OSTree: what a repository publishes for `ostree
//! pull`, `flatpak` and arbor clients, as plain files any static HTTP
//! server or CDN serves.
//!
//! - [`summary`]: `summary`, `summary.sig` and the delta indexes
//!   (`arbor summary -u`);
//! - [`deltas`]: the static deltas a repository holds (list, digests,
//!   delete, reindex);
//! - [`generate`]: static-delta generation (`arbor static-delta generate`),
//!   planned by [`plan`] (which objects, which file pairs) and
//!   [`rollsum`], built on every core;
//! - [`sign`]: signing keys (ed25519, GnuPG through `gpg`, OpenPGP key
//!   files); [`commit_sign`]: signing commits.
//!
//! Formats are those of [`crate::ostree`] (summary, delta superblock and
//! parts): this module decides what goes in them and writes the files.

pub mod build;
pub mod commit_sign;
pub mod deltas;
pub mod files;
pub mod generate;
pub mod layout;
pub mod plan;
pub mod rollsum;
pub mod show;
pub mod sign;
pub mod summary;

pub use commit_sign::{CommitSignError, SignOutcome, commit_signed, sign_commit};
pub use files::PublishIo;
pub use generate::{DeltaError, DeltaFrom, DeltaOptions, DeltaOutcome, generate_delta};
pub use sign::{SignError, SigningKey};
pub use summary::{SummaryError, SummaryOptions, SummaryOutcome, update_summary};
