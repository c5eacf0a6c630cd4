//! Typed errors for static-delta formats.

use thiserror::Error;

use super::super::error::FormatError;

/// Something in a delta's bytes (name, index, superblock, part, opcode
/// stream, bsdiff patch, xz framing) is not valid. Callers add which delta
/// and which part.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeltaError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("invalid static delta name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("superblock metadata has an invalid ostree.endianness {0:#04x} (expected 'l' or 'B')")]
    Endianness(u8),
    #[error("part {part} has version {version}; only version 0 is known")]
    PartVersion { part: usize, version: u32 },
    #[error("object list of {len} bytes is not a whole number of 33-byte entries")]
    ObjectListLength { len: usize },
    #[error("invalid object type {0} in a static delta")]
    ObjectType(u8),
    #[error("superblock value {key:?} has type {found:?}, expected {expected:?}")]
    MetadataType {
        key: String,
        found: String,
        expected: &'static str,
    },
    #[error("signed superblock starts with {0:#018x}, not the OSTSGNDT magic")]
    SignedMagic(u64),
    #[error("unknown part compression type {0:#04x} (expected 0 or 'x')")]
    Compression(u8),
    #[error("{what} holds {count} entries, over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("opcode stream, byte {offset}: {error}")]
    Op { offset: u64, error: OpError },
    #[error("bsdiff patch: {0}")]
    Bspatch(BspatchError),
    #[error("xz stream: {0}")]
    Xz(&'static str),
}

/// What is wrong at one point of a part's opcode stream.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpError {
    #[error("ends in the middle of an operation")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("{op}: range {offset}+{length} is outside the {blob_len}-byte data blob")]
    BlobRange {
        op: char,
        offset: u64,
        length: u64,
        blob_len: u64,
    },
    #[error("{op}: mode index {index} is outside the {count}-entry mode table")]
    ModeIndex { op: char, index: u64, count: usize },
    #[error("{op}: xattr index {index} is outside the {count}-entry xattr table")]
    XattrIndex { op: char, index: u64, count: usize },
    #[error("{op}: opens object {index}, but the part lists {count} objects")]
    NoObjectLeft {
        op: char,
        index: usize,
        count: usize,
    },
    #[error("{op}: object {index} is a {objtype}, which this operation cannot create")]
    WrongObjectType {
        op: char,
        index: usize,
        objtype: &'static str,
    },
    #[error("{op}: no object is open")]
    NotOpen { op: char },
    #[error("{op}: object {index} is still open")]
    StillOpen { op: char, index: usize },
    #[error("{op}: no read source is set")]
    NoReadSource { op: char },
    #[error("{op}: {length} bytes is more than the metadata size limit {max}")]
    MetadataTooLarge { op: char, length: u64, max: u64 },
    #[error("{op}: writes {length} bytes at {written} into an object of {size} bytes")]
    Overrun {
        op: char,
        written: u64,
        length: u64,
        size: u64,
    },
    #[error("c: object {index} has {written} of its {size} bytes")]
    Short {
        index: usize,
        written: u64,
        size: u64,
    },
    #[error("the stream ends with object {index} still open")]
    EndsOpen { index: usize },
    #[error("the stream creates {created} of the part's {count} objects")]
    ObjectsLeft { created: usize, count: usize },
}

/// What is wrong in a bsdiff patch (§8.4: mendsley's headerless format).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BspatchError {
    #[error("negative length in control triple ({0}, {1})")]
    NegativeLength(i64, i64),
    #[error("control triple writes {length} bytes at {new_pos} into a {new_size}-byte file")]
    PastNewEnd {
        new_pos: u64,
        length: u64,
        new_size: u64,
    },
    #[error("diff reads old bytes {start}..{end} of a {old_size}-byte file")]
    OldOutOfBounds { start: i64, end: i64, old_size: u64 },
    #[error("seek moves the old position out of range")]
    SeekOverflow,
    #[error("the patch ends before the new file is complete")]
    Truncated,
}

pub type Result<T, E = DeltaError> = std::result::Result<T, E>;
