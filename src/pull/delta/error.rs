//! Errors of fetching and applying static deltas. Every one names the
//! delta, and the part when one is at fault.

use thiserror::Error;

use crate::ostree::delta::DeltaName;
use crate::ostree::{Checksum, FormatError, ObjectName};
use crate::pull::FetchError;
use crate::store::StoreError;

/// A delta could not be used or applied: which delta, which part (when
/// one is at fault), and what happened.
#[derive(Debug)]
pub struct DeltaPullError {
    pub delta: DeltaName,
    pub part: Option<usize>,
    pub kind: Box<DeltaFailure>,
}

impl DeltaPullError {
    pub fn new(delta: DeltaName, kind: DeltaFailure) -> Self {
        DeltaPullError {
            delta,
            part: None,
            kind: Box::new(kind),
        }
    }

    pub fn part(delta: DeltaName, part: usize, e: PartError) -> Self {
        DeltaPullError {
            delta,
            part: Some(part),
            kind: Box::new(DeltaFailure::Part(e)),
        }
    }

    /// Whether the objects verified before this failure may be kept (the
    /// network or the machine failed, or the pull was interrupted), rather
    /// than the delta shown hostile or corrupt, in which case nothing of it
    /// is kept.
    pub fn keeps_objects(&self) -> bool {
        match &*self.kind {
            DeltaFailure::SuperblockFetch(_)
            | DeltaFailure::SuperblockRead(_)
            | DeltaFailure::Store(_)
            | DeltaFailure::Read { .. }
            | DeltaFailure::NoSpace { .. }
            | DeltaFailure::Interrupted => true,
            DeltaFailure::Part(p) => matches!(
                p,
                PartError::Fetch(_)
                    | PartError::NoSpace { .. }
                    | PartError::Store(_)
                    | PartError::Io(_)
                    | PartError::Interrupted
            ),
            _ => false,
        }
    }

    /// The server lacks a file of the delta (HTTP 404): not a sign of a
    /// corrupt or hostile delta.
    pub fn is_missing_file(&self) -> bool {
        match &*self.kind {
            DeltaFailure::SuperblockFetch(e) => e.is_not_found(),
            DeltaFailure::Part(PartError::Fetch(e)) => e.is_not_found(),
            _ => false,
        }
    }

    pub fn is_interrupted(&self) -> bool {
        matches!(
            *self.kind,
            DeltaFailure::Interrupted | DeltaFailure::Part(PartError::Interrupted)
        )
    }
}

impl std::fmt::Display for DeltaPullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "static delta {}", self.delta)?;
        if let Some(p) = self.part {
            write!(f, " part {p}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for DeltaPullError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.kind)
    }
}

#[derive(Debug, Error)]
pub enum DeltaFailure {
    #[error("fetching the superblock failed: {0}")]
    SuperblockFetch(#[source] FetchError),
    #[error("reading the superblock failed: {0}")]
    SuperblockRead(#[source] std::io::Error),
    #[error("the superblock is invalid: {0}")]
    Superblock(#[source] crate::ostree::delta::DeltaError),
    #[error(
        "the superblock's SHA-256 is {actual}, but the {listed_in} lists {expected} (a corrupt or substituted delta)"
    )]
    SuperblockChecksum {
        listed_in: &'static str,
        expected: Checksum,
        actual: Checksum,
    },
    #[error("the superblock is that of delta {found}")]
    WrongDelta { found: DeltaName },
    #[error("the commit in the superblock hashes to {actual}, not to the delta's target commit")]
    WrongCommit { actual: Checksum },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the superblock's signatures: {0}")]
    SuperblockSignature(#[source] crate::pull::SignatureError),
    #[error("{0}")]
    Part(#[source] PartError),
    #[error("{0}")]
    Store(#[source] StoreError),
    #[error(
        "it needs {needed} bytes (the objects it creates and its largest part files), but the filesystem of {path} has {available} free",
        path = .path.display()
    )]
    NoSpace {
        needed: u64,
        available: u64,
        path: std::path::PathBuf,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

/// What went wrong in one part.
#[derive(Debug, Error)]
pub enum PartError {
    #[error("fetching the part failed: {0}")]
    Fetch(#[source] FetchError),
    #[error("the part file is {actual} bytes, but its header says {expected}")]
    Size { expected: u64, actual: u64 },
    #[error("the part file's SHA-256 is {actual}, but its header says {expected}")]
    Checksum {
        expected: Checksum,
        actual: Checksum,
    },
    #[error("{0}")]
    Format(#[from] crate::ostree::delta::DeltaError),
    #[error("xz decompression failed: {0}")]
    Decompress(#[source] liblzma::stream::Error),
    #[error(
        "the xz payload inflates past its declared {declared} bytes (refused as a decompression bomb)"
    )]
    Inflates { declared: u64 },
    #[error(
        "its xz stream declares a {declared}-byte payload, more than the {max} bytes a part with its header can hold (refused as a decompression bomb)"
    )]
    PayloadTooLarge { declared: u64, max: u64 },
    #[error(
        "its xz stream asks for more than the {limit} bytes of decoder memory that libostree's compiler (xz preset 8, a 32 MiB dictionary) needs (refused)"
    )]
    Dictionary { limit: u64 },
    #[error("xz decompression stopped making progress after {at} bytes (a corrupt stream)")]
    DecompressStalled { at: u64 },
    #[error("the xz payload ends after {actual} of its declared {declared} bytes")]
    ShortPayload { declared: u64, actual: u64 },
    #[error(
        "it produced object {object} with checksum {actual} (corrupt or hostile delta; nothing of it was kept)"
    )]
    ObjectChecksum {
        object: ObjectName,
        actual: Checksum,
    },
    #[error("it produced an invalid object {object}: {source}")]
    InvalidObject {
        object: ObjectName,
        #[source]
        source: FormatError,
    },
    #[error("read source {0} is not in the store")]
    ReadSourceMissing(Checksum),
    #[error("it reads {len} bytes at {offset} of read source {checksum}, which has {size}")]
    ReadSourceRange {
        checksum: Checksum,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{0}")]
    Store(#[source] StoreError),
    #[error(
        "it needs {needed} bytes of scratch space, but the staging filesystem has {available} free"
    )]
    NoSpace { needed: u64, available: u64 },
    #[error("reading the part data: {0}")]
    Io(#[source] std::io::Error),
    #[error("interrupted")]
    Interrupted,
}

impl From<super::superblock_file::SuperblockFileError> for DeltaFailure {
    fn from(e: super::superblock_file::SuperblockFileError) -> Self {
        use super::superblock_file::SuperblockFileError as E;
        match e {
            E::Format(e) => DeltaFailure::Superblock(e),
            E::Io(e) => DeltaFailure::SuperblockRead(e),
            E::TooLarge => DeltaFailure::Superblock(crate::ostree::delta::DeltaError::Format(
                FormatError::TooLarge {
                    what: "static delta superblock",
                    size: crate::ostree::delta::superblock::MAX_SUPERBLOCK_SIZE as u64 + 1,
                    max: crate::ostree::delta::superblock::MAX_SUPERBLOCK_SIZE as u64,
                },
            )),
            E::Interrupted => DeltaFailure::Interrupted,
        }
    }
}

impl From<StoreError> for PartError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ChecksumMismatch { object, actual } => {
                PartError::ObjectChecksum { object, actual }
            }
            StoreError::CorruptObject { object, source } => {
                PartError::InvalidObject { object, source }
            }
            other => PartError::Store(other),
        }
    }
}
