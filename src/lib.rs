//! arbor: pull OSTree commits into a local content-addressed store, check
//! them out, and stage writable roots for system assembly.
//!
//! Layout: [`ostree`] is pure format code (no I/O); [`store`] is the local
//! repository; [`pull`] fetches from other repositories; [`checkout`]
//! materialises trees; [`publish`] writes what a server publishes
//! (summaries, static deltas, signatures); [`stage`] layers writable roots over checkouts
//! (union mounts or copies) and commits them back; [`fs`] holds the
//! directory-descriptor helpers all of them use. The command line is the
//! `arbor` binary's own code (`src/cli`, behind the default `cli` feature),
//! a thin shell over this library.
//!
//! # The contract of long operations
//! Every long operation (pull, checkout, commit, fsck, stage create and
//! commit) takes an `Options` value, returns an `Outcome`, reports
//! progress through [`progress::Progress`] and stops early, leaving the
//! store consistent, when its interrupt flag is set (see [`progress`]).
//! The library never prints and reads no `ARBOR_*` environment variable;
//! its errors are typed, one enum per operation.
//!
//! Module documentation describes the internals for developers and links
//! to private items: read it with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod checkout;
mod failpoint;
pub mod fs;
pub mod ostree;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod stage;
pub mod store;
mod workers;
