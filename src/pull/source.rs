//! Where a pull reads objects from. The pull engine talks to every source —
//! HTTP(S) servers and local repositories in any mode — through
//! [`ObjectSource`], and verifies everything it receives itself.
//!
//! A source with latency (HTTP) fetches ahead: the engine announces the
//! objects it will want with [`ObjectSource::prefetch`] and is told when
//! each can be read without waiting, so that many requests are in flight
//! while a few workers inflate, hash and write. Network retries (and the
//! resumption of cut-off bodies) happen inside the source; the errors it
//! returns are final for the request.

use std::sync::Arc;

use std::io::Read;

use thiserror::Error;

use crate::ostree::{Checksum, ObjectName};
use crate::store::ContentObject;

/// What kind of failure a [`FetchError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchErrorKind {
    /// 403/404/410 or a missing file: final; for optional files, absent.
    NotFound,
    /// The network failed (connection refused or reset, 5xx, a body cut
    /// off, a stall) on every attempt the retry budget allowed.
    Network,
    /// The server answered with bytes that cannot be what was asked for
    /// (a content object whose header does not parse): worth fetching
    /// again, as for a checksum mismatch, since the path may corrupt.
    Corrupt,
    /// Anything else: a refused certificate, another 4xx, a local read
    /// error, a body over its size limit. Not retried.
    Fatal,
    /// The fetch was cancelled ([`ObjectSource::cancel_prefetches`]).
    Cancelled,
}

/// A failed fetch: where, what went wrong, the HTTP status if the server
/// answered, and the underlying error (I/O, HTTP client, format).
#[derive(Debug, Error)]
#[error("{location}: {what}{}", attempts_note(*.attempts))]
pub struct FetchError {
    pub kind: FetchErrorKind,
    /// The URL (or local path) asked for.
    pub location: String,
    /// The last HTTP status, when the server answered with one.
    pub status: Option<u16>,
    /// What went wrong, in words (the source error adds the detail).
    pub what: String,
    /// Requests made before giving up (0 when none could be made).
    pub attempts: u32,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl FetchError {
    pub fn new(kind: FetchErrorKind, location: impl Into<String>, what: impl Into<String>) -> Self {
        FetchError {
            kind,
            location: location.into(),
            status: None,
            what: what.into(),
            attempts: 0,
            source: None,
        }
    }

    pub fn not_found(location: impl Into<String>) -> Self {
        FetchError::new(FetchErrorKind::NotFound, location, "not found")
    }

    pub fn fatal(location: impl Into<String>, what: impl Into<String>) -> Self {
        FetchError::new(FetchErrorKind::Fatal, location, what)
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == FetchErrorKind::NotFound
    }

    /// Bytes that may have been damaged on the way: fetching again may
    /// give the right ones.
    pub fn is_corrupt(&self) -> bool {
        self.kind == FetchErrorKind::Corrupt
    }

    /// Wraps this error in an `io::Error` for readers of object data; see
    /// [`FetchError::from_io`].
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The fetch error an object reader failed with, if that is what `e`
    /// carries.
    pub fn from_io(e: std::io::Error) -> Result<FetchError, std::io::Error> {
        if e.get_ref().is_some_and(|i| i.is::<FetchError>()) {
            let inner = e.into_inner().expect("checked above");
            Ok(*inner.downcast::<FetchError>().expect("checked above"))
        } else {
            Err(e)
        }
    }
}

/// Told when a prefetched object can be fetched without waiting for the
/// network: its bytes arrived, its body started streaming, or its fetch
/// failed. Called from the source's own threads; must be quick and must
/// not call back into the source.
pub trait PrefetchReady: Send + Sync {
    fn ready(&self, name: ObjectName);
    /// Whether the consumer is idle for want of prefetched objects (so
    /// more requests in flight may speed it up), rather than busy with
    /// what arrived.
    fn starved(&self) -> bool {
        true
    }
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
    /// both kinds through the same verifying transaction). A reader that
    /// fails because of the source carries a [`FetchError`] (see
    /// [`FetchError::from_io`]).
    fn fetch_content(&self, checksum: &Checksum) -> Result<ContentObject, FetchError>;
    /// A file of the repository by relative path (`delta-indexes/…`,
    /// `deltas/…/superblock`), at most `max` bytes; `None` when absent.
    fn fetch_file(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError>;
    /// A file of the repository as a stream (a static-delta part), `None`
    /// when absent. The caller bounds and checks what it reads.
    fn open_file(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, FetchError>;
    /// Where a repository file is read from, for messages.
    fn file_location(&self, rel: &str) -> String;
    /// Starts fetching the repository file `rel` in the background (a
    /// static-delta part that will be opened soon): small ones arrive
    /// whole, big ones are requested so their transfer starts once opened.
    /// Local sources ignore it.
    fn prefetch_file(&self, rel: &str) {
        let _ = rel;
    }
    /// Starts fetching `name` (a metadata object of at most `max` bytes, or
    /// a content object) in the background; `ready` is told when the next
    /// `fetch_metadata`/`fetch_content` of it will not wait for the
    /// network. Returns false when the source does not fetch ahead (local
    /// sources): the caller then simply fetches it when it needs it.
    /// Metadata is started before content announced earlier.
    fn prefetch(&self, name: &ObjectName, max: u64, ready: &Arc<dyn PrefetchReady>) -> bool {
        let _ = (name, max, ready);
        false
    }
    /// Drops what was prefetched and not fetched yet, and stops every
    /// transfer in progress: their readers and waiting fetches fail with
    /// [`FetchErrorKind::Cancelled`]. The source stays usable.
    fn cancel_prefetches(&self) {}
    /// Bytes received so far (for progress and the final summary).
    fn bytes_transferred(&self) -> u64 {
        0
    }
    /// Counts of what the source had to do about a flaky path, for the
    /// pull's outcome.
    fn network_stats(&self) -> NetworkStats {
        NetworkStats::default()
    }
    /// The repository itself, for a local source: its objects may then be
    /// hardlinked rather than copied (see `Transaction::import_content`).
    fn local_repo(&self) -> Option<&crate::store::Repo> {
        None
    }
}

/// What a network source did, cumulatively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// HTTP requests sent (retries and resumptions included).
    pub requests: u64,
    /// Requests that failed and were retried.
    pub retries: u64,
    /// Bodies cut off and continued with a `Range` request.
    pub resumed: u64,
    /// The most requests in flight at once.
    pub peak_in_flight: u64,
}
