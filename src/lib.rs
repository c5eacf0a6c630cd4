//! arbor: pull OSTree commits into a local content-addressed store, check
//! them out, and stage writable roots for system assembly.
//!
//! Layout: [`ostree`] is pure format code (no I/O); [`store`] is the local
//! repository; [`pull`] fetches from other repositories; [`checkout`]
//! materialises trees. The command-line interface lives in [`cli`].
//!
//! Module documentation describes the internals for developers and links
//! to private items: read it with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod checkout;
pub mod cli;
pub mod ostree;
pub mod pull;
pub mod store;
