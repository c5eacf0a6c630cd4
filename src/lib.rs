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
//! its errors are typed, one enum per operation, with their sources kept.
//! They say what went wrong (naming the object, path or URL), not which
//! command-line flag would help: the command line adds those hints
//! (`src/cli/hint.rs`), and turns Outcomes into text, `--json` and progress
//! bars.
//!
//! # No process-wide state
//! Nothing a library call learns or sets is global to the process: whether
//! a filesystem makes `O_TMPFILE`s is learnt per transaction and per
//! checkout ([`fs::Tmpfiles`]); every HTTP client has its own TLS
//! configuration with an explicit crypto provider (`pull::tls`); the
//! directory walks run in their own thread pool ([`workers`]). The
//! exception is a fact about the process itself: whether it may
//! `linkat(AT_EMPTY_PATH)`.
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
