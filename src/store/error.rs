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
    #[error("no repository at {0}")]
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
    #[error("ref {0} not found")]
    RefNotFound(String),
    #[error("{rev}: {reason}")]
    BadRev { rev: String, reason: String },
    /// A revision that is neither a ref nor the prefix of a commit here.
    #[error("{0}: no ref or commit matches")]
    UnknownRev(String),
    /// An entry of a refs directory that cannot be read as a ref, found by
    /// a listing that must know every ref (prune and gc: what such a ref
    /// names could otherwise be deleted).
    #[error("{path}: {reason}; prune and gc must be able to read every ref (rename or remove it)", path = .path.display())]
    UnlistableRef { path: PathBuf, reason: String },
    /// A ref file that does not hold a checksum.
    #[error("ref {name} ({path}) does not contain a valid checksum", path = .path.display())]
    BadRef { name: String, path: PathBuf },
    /// A path that a commit's tree does not have.
    #[error("{path}: {reason}")]
    PathNotFound { path: String, reason: &'static str },
    /// A tree nested deeper than the store accepts.
    #[error("{what}: directories nest deeper than {max} levels")]
    TooDeep { what: String, max: usize },
    /// The repository lock could not be had in time.
    #[error(
        "timed out after {}s waiting for the {mode} lock on {path} (another arbor or ostree process is using the repository)",
        .waited.as_secs(), path = .path.display()
    )]
    LockTimeout {
        path: PathBuf,
        mode: &'static str,
        waited: std::time::Duration,
    },
    #[error("no remote named {name:?} in {config}", config = .config.display())]
    NoSuchRemote { name: String, config: PathBuf },
    #[error("remote {0:?} already exists")]
    RemoteExists(String),
    /// `refs --create` never replaces a ref.
    #[error("ref {0} already exists")]
    RefExists(String),
    /// A `sign-verify` key specification (`TYPE=inline:KEY`,
    /// `TYPE=file:PATH`) that cannot be used.
    #[error("{spec:?}: {reason}")]
    BadSignSpec { spec: String, reason: String },
    /// Signing keys were given for a remote added without verification.
    #[error("signature keys were given for a remote added without signature verification")]
    SignSpecWithoutVerify,
    /// A config value that cannot be written (e.g. it contains a newline).
    #[error("{path}: {source}", path = .path.display())]
    ConfigWrite {
        path: PathBuf,
        #[source]
        source: Box<super::keyfile::KeyFileError>,
    },
    /// A key file that must be a regular file is missing or is not one.
    #[error("{path}: {reason}", path = .path.display())]
    BadKeyFile { path: PathBuf, reason: &'static str },
    /// A content object whose mode the repository's mode cannot store.
    #[error(
        "content object {}: invalid mode {mode:#o} with bits {:#o} for a bare-user-only repository",
        .object.map(|c| c.to_hex()).unwrap_or_else(|| "(new)".into()),
        .mode & 0o7777 & !0o775
    )]
    ModeNotStorable { object: Option<Checksum>, mode: u32 },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// A write to a repository opened read-only.
    #[error("{0}: opened read-only, refusing to write")]
    ReadOnly(PathBuf),
    /// The operation's interrupt flag was set (see [`crate::progress`]).
    #[error("interrupted")]
    Interrupted,
    /// A stack of trees to merge that has no tree.
    #[error("a merged tree needs at least one layer")]
    NoLayers,
    /// A whiteout of a layer being merged names no entry it may hide
    /// (`.wh..`, `.wh...`: it would remove `.` or `..`).
    #[error("whiteout {name:?} in dirtree {dirtree}: it would remove {target:?}")]
    InvalidWhiteout {
        dirtree: Checksum,
        name: String,
        target: String,
    },
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
