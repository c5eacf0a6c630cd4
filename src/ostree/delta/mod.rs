//! Static deltas (§8 of the format reference): one model shared by the
//! pull, which parses and applies them, and by the publishing side, which
//! writes them; every parser has its serializer, byte for byte what
//! libostree writes.
//!
//! - [`name`]: delta names (`FROM-TO`, `TO`), modified base64 and the
//!   paths of superblocks, parts and delta indexes;
//! - [`index`]: `ostree.static-deltas` in summaries and delta indexes;
//! - [`superblock`]: the superblock, its part headers and fallbacks, the
//!   byte-order rules, inline parts, and the signed wrapper;
//! - [`part`]: part files and their payload (mode and xattr tables, blob,
//!   opcodes), readable from its tail alone when the blob stays on disk;
//! - [`opcodes`]: the opcode stream, decoded into checked [`opcodes::Step`]s;
//! - [`bspatch`]: bsdiff control triples, planned for streaming;
//! - [`xz`]: the decompressed size an xz part declares.
//!
//! Nothing here does I/O or trusts its input: every length, offset and
//! index is checked against what it points into, with checked arithmetic.

pub mod bspatch;
pub mod error;
mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod index;
pub mod name;
pub mod opcodes;
pub mod part;
pub mod superblock;
pub mod xz;

pub use error::{BspatchError, DeltaError, OpError};
pub use index::{DeltaIndex, DeltaList};
pub use name::DeltaName;
pub use opcodes::{Op, OpChecker, Step, WriteSource};
pub use part::{Compression, FileMode, PartPayload, PayloadLayout};
pub use superblock::{Endianness, Fallback, PartHeader, SignedSuperblock, Superblock};
