//! Typed errors for parsing and validating OSTree formats.

use thiserror::Error;

/// Something in untrusted bytes or names is not valid OSTree.
///
/// Every variant says *what* was being parsed so the store and the CLI can
/// add *which* object or path it was.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("invalid checksum {0:?}: expected 64 lowercase hex characters")]
    InvalidChecksumHex(String),
    #[error("invalid checksum in {what}: expected 32 bytes, found {len}")]
    InvalidChecksumLength { what: &'static str, len: usize },
    #[error("{what} is not in GVariant normal form (corrupt or non-canonical encoding)")]
    NotNormalForm { what: &'static str },
    #[error("{what} is {size} bytes, over the limit of {max}")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("invalid file name {name:?}: {reason}")]
    InvalidFileName { name: String, reason: &'static str },
    #[error("dirtree entries are not sorted or contain a duplicate at {name:?}")]
    UnsortedOrDuplicate { name: String },
    #[error("invalid mode {mode:#o} for {what}")]
    InvalidMode { what: &'static str, mode: u32 },
    #[error("content object has a non-zero rdev {0}")]
    NonZeroRdev(u32),
    #[error("invalid symlink target {target:?}: {reason}")]
    InvalidSymlinkTarget {
        target: String,
        reason: &'static str,
    },
    #[error("invalid extended attribute name {name:?}: {reason}")]
    InvalidXattrName { name: String, reason: &'static str },
    #[error("invalid ref name {name:?}: {reason}")]
    InvalidRefName { name: String, reason: &'static str },
    #[error("invalid remote name {name:?}: {reason}")]
    InvalidRemoteName { name: String, reason: &'static str },
    #[error("unknown object type {0:?}")]
    UnknownObjectType(String),
    #[error("invalid object name {0:?}: expected CHECKSUM.TYPE")]
    InvalidObjectName(String),
    #[error("invalid commit metadata: {0}")]
    InvalidMetadata(String),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;
