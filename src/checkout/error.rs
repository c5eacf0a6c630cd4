//! Errors of a checkout. Each names the path under DEST it concerns (shown
//! as DEST joined with the tree path; never used for I/O) and, where one is
//! involved, the object.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::ostree::{Checksum, FormatError, ObjectName};
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum CheckoutError {
    /// The interrupt flag was set (see [`super::checkout`] for what is
    /// left of DEST).
    #[error("interrupted")]
    Interrupted,
    #[error("loading commit {commit}: {source}")]
    Commit {
        commit: Checksum,
        #[source]
        source: Box<StoreError>,
    },
    #[error("subpath {subpath:?}: {source}")]
    Subpath {
        subpath: String,
        #[source]
        source: Box<StoreError>,
    },
    /// Reading an object from the repository failed (missing, corrupt, I/O).
    #[error("{}", object_message(path, object, source))]
    Object {
        path: PathBuf,
        object: ObjectName,
        #[source]
        source: Box<StoreError>,
    },
    /// A system call on DEST failed.
    #[error("{path}: {op}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Something exists where the checkout would create an entry, and
    /// [`Overwrite::Refuse`](super::Overwrite::Refuse) is in force.
    #[error("{path}: already exists", path = .path.display())]
    Exists { path: PathBuf },
    /// [`Overwrite::UnionIdentical`](super::Overwrite::UnionIdentical)
    /// found a different file.
    #[error("{path}: exists and differs from object {object}", path = .path.display())]
    NotIdentical { path: PathBuf, object: Checksum },
    /// A non-directory where the tree has a directory (only
    /// [`Overwrite::Union`](super::Overwrite::Union) with whiteouts
    /// replaces it).
    #[error(
        "{path}: the tree has a directory here but DEST has a {found}; refusing to follow or replace it",
        path = .path.display()
    )]
    NotADirectory { path: PathBuf, found: &'static str },
    /// A directory where the tree has a file (only
    /// [`Overwrite::Union`](super::Overwrite::Union) with whiteouts
    /// replaces it).
    #[error("{path}: a directory is in the way of file {object}", path = .path.display())]
    DirectoryInTheWay { path: PathBuf, object: Checksum },
    #[error("{path}: invalid entry name in dirtree {dirtree}: {source}", path = .path.display())]
    InvalidName {
        path: PathBuf,
        dirtree: Checksum,
        #[source]
        source: FormatError,
    },
    #[error("{path}: invalid whiteout {name:?} in dirtree {dirtree}: {reason}", path = .path.display())]
    InvalidWhiteout {
        path: PathBuf,
        name: String,
        dirtree: Checksum,
        reason: String,
    },
    #[error("{path}: the tree nests deeper than {max} directories", path = .path.display())]
    TooDeep { path: PathBuf, max: usize },
    /// [`CheckoutOptions::require_hardlinks`](super::CheckoutOptions::require_hardlinks)
    /// and a file that cannot be hardlinked.
    #[error("{path}: cannot hardlink{}: {reason} (hardlinks are required)",
        .object.map(|o| format!(" object {o}")).unwrap_or_default(), path = .path.display())]
    HardlinkRequired {
        path: PathBuf,
        object: Option<Checksum>,
        reason: String,
    },
}

/// `PATH: SOURCE`, naming the object unless the store's message does.
fn object_message(path: &Path, object: &ObjectName, source: &StoreError) -> String {
    let msg = source.to_string();
    if msg.contains(&object.checksum.to_hex()) {
        format!("{}: {msg}", path.display())
    } else {
        format!("{}: object {object}: {msg}", path.display())
    }
}

impl From<crate::progress::Interrupted> for CheckoutError {
    fn from(_: crate::progress::Interrupted) -> Self {
        CheckoutError::Interrupted
    }
}
