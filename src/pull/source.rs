//! Where a pull reads objects from. The pull engine talks to every source —
//! HTTP(S) servers and local repositories in any mode — through
//! [`ObjectSource`], and verifies everything it receives itself.

use std::io::Read;

use thiserror::Error;

use crate::ostree::{Checksum, ObjectName};
use crate::store::ContentObject;

/// A failed fetch, classified for the retry logic.
#[derive(Debug, Error)]
pub enum FetchError {
    /// 403/404/410 or a missing file: final; for optional objects, absent.
    #[error("{location}: not found")]
    NotFound { location: String },
    /// Connection reset, 5xx, truncated body, stall: retried with backoff.
    #[error("{location}: {message}")]
    Transient { location: String, message: String },
    /// Anything else: not retried.
    #[error("{location}: {message}")]
    Fatal { location: String, message: String },
}

impl FetchError {
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Transient { .. })
    }
}

/// Marks I/O errors that came from the network while a content body was
/// being streamed, so that a failed write can be told apart from a local
/// disk problem and retried.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

/// True when `e` (or what it wraps) is a network read error or a stream
/// that ended early: worth another attempt.
pub fn io_error_is_transient(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
        || e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref().is_some_and(|inner| inner.is::<NetworkError>())
}

pub trait ObjectSource: Send + Sync {
    /// The URL or path, for messages.
    fn describe(&self) -> String;
    /// Where one object is read from, for messages.
    fn location(&self, name: &ObjectName) -> String;
    /// The `summary` file, if the source has one.
    fn fetch_summary(&self) -> Result<Option<Vec<u8>>, FetchError>;
    /// The `summary.sig` file (signatures over `summary`), if present.
    fn fetch_summary_sig(&self) -> Result<Option<Vec<u8>>, FetchError>;
    /// `refs/heads/NAME`, if it exists.
    fn fetch_ref(&self, name: &str) -> Result<Option<Checksum>, FetchError>;
    /// Every ref, when the source can list them without a summary.
    fn list_refs(&self) -> Result<Option<Vec<(String, Checksum)>>, FetchError>;
    /// A metadata object's bytes (at most `max`), `None` when absent.
    fn fetch_metadata(&self, name: &ObjectName, max: u64) -> Result<Option<Vec<u8>>, FetchError>;
    /// A content object: its header and a reader of exactly its size of
    /// file data, nothing verified yet. That is what the store's
    /// [`ContentObject`] is too, so sources return it (the engine writes
    /// both kinds through the same verifying transaction).
    fn fetch_content(&self, checksum: &Checksum) -> Result<ContentObject, FetchError>;
    /// A file of the repository by relative path (`delta-indexes/…`,
    /// `deltas/…/superblock`), at most `max` bytes; `None` when absent.
    fn fetch_file(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError>;
    /// A file of the repository as a stream (a static-delta part), `None`
    /// when absent. The caller bounds and checks what it reads.
    fn open_file(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, FetchError>;
    /// Where a repository file is read from, for messages.
    fn file_location(&self, rel: &str) -> String;
    /// Bytes received so far (for progress and the final summary).
    fn bytes_transferred(&self) -> u64 {
        0
    }
    /// The repository itself, for a local source: its objects may then be
    /// hardlinked rather than copied (see `Transaction::import_content`).
    fn local_repo(&self) -> Option<&crate::store::Repo> {
        None
    }
}
