//! Errors of the local repository.

use std::path::PathBuf;

use thiserror::Error;

use crate::ostree::{Checksum, FormatError, ObjectName};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no repository at {0} (create one with `arbor --repo {0} init`)")]
    NotARepo(PathBuf),
    #[error("a repository already exists at {0}")]
    AlreadyExists(PathBuf),
    #[error("invalid repository config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("object {object} is corrupt: {source}")]
    CorruptObject {
        object: ObjectName,
        #[source]
        source: FormatError,
    },
    #[error("object {object} is corrupt: checksum expected={object_checksum} actual={actual}", object_checksum = .object.checksum)]
    ChecksumMismatch {
        object: ObjectName,
        actual: Checksum,
    },
    /// Reading the data being stored failed (a file being committed, a
    /// network stream, another repository): the source's problem, not the
    /// store's, so it carries no store path; callers name the source.
    #[error("reading the data failed: {0}")]
    SourceRead(#[source] std::io::Error),
    #[error("object {0} is missing from the repository")]
    MissingObject(ObjectName),
    #[error("object {object} is corrupt: {reason}")]
    BadObject { object: ObjectName, reason: String },
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("ref {0} not found (list refs with `arbor refs`)")]
    RefNotFound(String),
    #[error("{rev}: {reason}")]
    BadRev { rev: String, reason: String },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// A write to a repository opened read-only.
    #[error("{0}: opened read-only, refusing to write")]
    ReadOnly(PathBuf),
    /// The operation's interrupt flag was set (see [`crate::progress`]).
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

impl From<crate::progress::Interrupted> for StoreError {
    fn from(_: crate::progress::Interrupted) -> Self {
        StoreError::Interrupted
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| StoreError::Io {
            path: path.into(),
            source: e.into(),
        })
    }
}
