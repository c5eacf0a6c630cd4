//! HTTP(S) sources: an archive-mode repository served as plain files.
//!
//! Every request goes through a [`Fetcher`] (see [`super::fetcher`] for
//! the design): many in flight on one async client whose pool keeps
//! connections alive (HTTP/2 when a TLS server offers it through ALPN, so
//! all requests share one connection), retried and resumed inside, with
//! `timeout` bounding a stall (nothing received), not a slow transfer.

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;

use super::fetcher::{Body, Fetcher, Settings, Want};
use super::source::{FetchError, FetchErrorKind, NetworkStats, ObjectSource, PrefetchReady};
use crate::ostree::checksum::is_checksum_hex;
use crate::ostree::{Checksum, FormatError, ObjectName, ObjectType};
use crate::store::objects::{ArchiveHeaderError, read_archive_object};
use crate::store::{ContentObject, RemoteTls};

pub struct HttpSource {
    base: String,
    fetcher: Fetcher,
}

impl HttpSource {
    /// `url` is the repository's base URL; `timeout` bounds connecting and
    /// each wait for data; `retries` is the retry budget of each request;
    /// `max_in_flight` caps the requests in flight (and so, on HTTP/1.1,
    /// the connections).
    pub fn new(
        url: &str,
        timeout: Duration,
        retries: u32,
        max_in_flight: usize,
        tls: &RemoteTls,
    ) -> Result<HttpSource, FetchError> {
        let fatal = |what: String| FetchError::fatal(url, what);
        let max_in_flight = max_in_flight.max(1);
        let builder = Client::builder()
            .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .pool_max_idle_per_host(max_in_flight)
            .tcp_nodelay(true)
            // Our own rustls configuration, with its own crypto provider
            // (see super::tls): no process-wide provider is installed.
            .tls_backend_preconfigured(super::tls::client_config(tls).map_err(fatal)?);
        let settings = Settings {
            timeout,
            retries,
            max_in_flight,
        };
        let fetcher = Fetcher::new(builder, settings)
            .map_err(|e| fatal("cannot set up an HTTP client".into()).with_source(e))?;
        let base = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        Ok(HttpSource { base, fetcher })
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{}", self.base, rel)
    }

    /// A whole (small) file, `None` when the server does not have it.
    fn get_bytes(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        match self.fetcher.fetch(&self.url(rel), Want::Whole { max }) {
            Ok(Body::Bytes(b)) => Ok(Some(b)),
            Ok(Body::Stream(_)) => unreachable!("whole bodies are not streamed"),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Why a content object's header could not be read, as a fetch error: the
/// network's failure as it was; a body too short for its header, or a
/// header that is not even well-formed, as corruption (worth fetching
/// again); a well-formed header describing something that cannot be
/// stored (a device, a symlink without target) as final: that is what the
/// server has, not damage on the way.
fn header_error(location: String, e: ArchiveHeaderError) -> FetchError {
    match e {
        ArchiveHeaderError::Truncated(io) => match FetchError::from_io(io) {
            Ok(fe) => fe,
            Err(io) => FetchError::new(
                FetchErrorKind::Corrupt,
                location,
                "the body ends inside the object header",
            )
            .with_source(io),
        },
        ArchiveHeaderError::Corrupt(f) => {
            let kind = match f {
                FormatError::InvalidMode { .. }
                | FormatError::NonZeroRdev(_)
                | FormatError::InvalidSymlinkTarget { .. }
                | FormatError::InvalidXattrName { .. } => FetchErrorKind::Fatal,
                _ => FetchErrorKind::Corrupt,
            };
            FetchError::new(kind, location, "invalid object header").with_source(f)
        }
    }
}

impl ObjectSource for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn location(&self, name: &ObjectName) -> String {
        self.url(&format!("objects/{}", name.loose_path(true)))
    }

    fn fetch_summary(&self) -> Result<Option<Vec<u8>>, FetchError> {
        self.get_bytes("summary", crate::ostree::MAX_METADATA_SIZE as u64)
    }

    fn fetch_summary_sig(&self) -> Result<Option<Vec<u8>>, FetchError> {
        self.get_bytes("summary.sig", crate::ostree::MAX_METADATA_SIZE as u64)
    }

    fn fetch_ref(&self, name: &str) -> Result<Option<Checksum>, FetchError> {
        let rel = format!("refs/heads/{name}");
        let Some(body) = self.get_bytes(&rel, 256)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        if !is_checksum_hex(text) {
            return Err(FetchError::fatal(
                self.url(&rel),
                "does not contain a checksum",
            ));
        }
        Ok(Some(Checksum::from_hex(text).expect("checked above")))
    }

    fn list_refs(&self) -> Result<Option<Vec<(String, Checksum)>>, FetchError> {
        // Plain HTTP servers cannot list directories; refs come from the
        // summary, or must be named.
        Ok(None)
    }

    fn fetch_metadata(&self, name: &ObjectName, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        self.get_bytes(&format!("objects/{}", name.loose_path(true)), max)
    }

    fn fetch_content(&self, checksum: &Checksum) -> Result<ContentObject, FetchError> {
        let name = ObjectName::new(*checksum, ObjectType::File);
        let location = self.location(&name);
        let obj = match self.fetcher.fetch(&location, Want::Content)? {
            Body::Bytes(b) => read_archive_object(Cursor::new(b), name),
            Body::Stream(r) => read_archive_object(r, name),
        };
        obj.map_err(|e| header_error(location, e))
    }

    fn prefetch(&self, name: &ObjectName, max: u64, ready: &Arc<dyn PrefetchReady>) -> bool {
        // Metadata first: it reveals the rest of the tree.
        let (want, urgent) = match name.objtype {
            ObjectType::File => (Want::Content, false),
            _ => (Want::Whole { max }, true),
        };
        self.fetcher.prefetch(
            self.location(name),
            want,
            urgent,
            Some((ready.clone(), *name)),
        );
        true
    }

    fn cancel_prefetches(&self) {
        self.fetcher.cancel();
    }

    fn fetch_file(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        self.get_bytes(rel, max)
    }

    fn open_file(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, FetchError> {
        match self.fetcher.fetch(&self.url(rel), Want::Content) {
            Ok(Body::Bytes(b)) => Ok(Some(Box::new(Cursor::new(b)))),
            Ok(Body::Stream(r)) => Ok(Some(Box::new(r))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn prefetch_file(&self, rel: &str) {
        self.fetcher
            .prefetch(self.url(rel), Want::Content, false, None);
    }

    fn file_location(&self, rel: &str) -> String {
        self.url(rel)
    }

    fn bytes_transferred(&self) -> u64 {
        self.fetcher.received()
    }

    fn network_stats(&self) -> NetworkStats {
        self.fetcher.stats()
    }
}
