//! HTTP(S) sources: an archive-mode repository served as plain files.
//!
//! One blocking reqwest client is shared by all pull workers: its pool keeps
//! connections alive (HTTP/2 when a TLS server offers it through ALPN, so
//! many requests share one connection). The client's timeout applies to
//! every read of a body, so it detects stalled transfers, not slow ones.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};

use super::source::{FetchError, NetworkError, ObjectSource};
use crate::ostree::checksum::is_checksum_hex;
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::store::objects::{ArchiveHeaderError, read_archive_object};
use crate::store::{ContentObject, RemoteTls};

pub struct HttpSource {
    base: String,
    client: Client,
    received: Arc<AtomicU64>,
}

impl HttpSource {
    /// `url` is the repository's base URL; `timeout` bounds connecting and
    /// each wait for data; `connections` is the pool size per host.
    pub fn new(
        url: &str,
        timeout: Duration,
        connections: usize,
        tls: &RemoteTls,
    ) -> Result<HttpSource, FetchError> {
        let fatal = |message: String| FetchError::Fatal {
            location: url.to_string(),
            message,
        };
        let builder = Client::builder()
            .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(connections.max(1))
            .tcp_nodelay(true)
            // Our own rustls configuration, with its own crypto provider
            // (see super::tls): no process-wide provider is installed.
            .tls_backend_preconfigured(super::tls::client_config(tls).map_err(fatal)?);
        let client = builder
            .build()
            .map_err(|e| fatal(format!("cannot set up an HTTP client: {}", error_chain(&e))))?;
        let base = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        Ok(HttpSource {
            base,
            client,
            received: Arc::new(AtomicU64::new(0)),
        })
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{}", self.base, rel)
    }

    fn get(&self, rel: &str) -> Result<Response, FetchError> {
        let url = self.url(rel);
        let resp = self
            .client
            .get(&url)
            .send()
            .map_err(|e| classify(&url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        match status {
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
                Err(FetchError::NotFound { location: url })
            }
            // Worth asking again: the server is overloaded or failing,
            // or the request timed out.
            s if s.is_server_error()
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                Err(FetchError::Transient {
                    location: url,
                    message: format!("server answered {s}"),
                })
            }
            s => Err(FetchError::Fatal {
                location: url,
                message: format!("server answered {s}"),
            }),
        }
    }

    /// Reads a whole (small) body, refusing more than `max` bytes.
    fn get_bytes(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        let resp = match self.get(rel) {
            Ok(r) => r,
            Err(FetchError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let url = self.url(rel);
        if let Some(len) = resp.content_length()
            && len > max
        {
            return Err(FetchError::Fatal {
                location: url,
                message: format!("{len} bytes, over the limit of {max}"),
            });
        }
        let mut body = Vec::new();
        let mut reader = self.counting(resp).take(max + 1);
        reader
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Transient {
                location: url.clone(),
                message: format!("reading the body failed: {e}"),
            })?;
        if body.len() as u64 > max {
            return Err(FetchError::Fatal {
                location: url,
                message: format!("more than the limit of {max} bytes"),
            });
        }
        Ok(Some(body))
    }

    fn counting(&self, resp: Response) -> CountingReader {
        CountingReader {
            inner: resp,
            received: self.received.clone(),
        }
    }
}

/// Counts received bytes and tags read errors as network errors.
struct CountingReader {
    inner: Response,
    received: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.received.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => Err(std::io::Error::new(e.kind(), NetworkError(e.to_string()))),
        }
    }
}

/// A PEM file named by a remote option, bounded in size.
fn classify(url: &str, e: reqwest::Error) -> FetchError {
    let message = if e.is_timeout() {
        "timed out waiting for the server".to_string()
    } else if e.is_connect() {
        format!("cannot connect: {}", error_chain(&e))
    } else {
        error_chain(&e)
    };
    if e.is_builder() || is_tls_rejection(&e) {
        FetchError::Fatal {
            location: url.to_string(),
            message,
        }
    } else {
        FetchError::Transient {
            location: url.to_string(),
            message,
        }
    }
}

/// A TLS handshake that failed on a certificate or protocol error: asking
/// again gives the same answer, so it is not retried.
fn is_tls_rejection(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // hyper wraps the TLS error in io::Errors, whose `source` skips the
    // error they wrap: look inside them too.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && is_tls_rejection(inner)
    {
        return true;
    }
    e.source().is_some_and(is_tls_rejection)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
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
            return Err(FetchError::Fatal {
                location: self.url(&rel),
                message: "does not contain a checksum".into(),
            });
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
        let resp = self.get(&format!("objects/{}", name.loose_path(true)))?;
        read_archive_object(self.counting(resp), name).map_err(|e| {
            let location = self.location(&name);
            match e {
                // A body cut short (or a read that failed) is worth
                // another request; a bad header will not get better.
                ArchiveHeaderError::Truncated(e) => FetchError::Transient {
                    location,
                    message: format!("reading the header failed: {e}"),
                },
                ArchiveHeaderError::Corrupt(e) => FetchError::Fatal {
                    location,
                    message: format!("invalid object header: {e}"),
                },
            }
        })
    }

    fn fetch_file(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        self.get_bytes(rel, max)
    }

    fn open_file(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, FetchError> {
        match self.get(rel) {
            Ok(resp) => Ok(Some(Box::new(self.counting(resp)))),
            Err(FetchError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn file_location(&self, rel: &str) -> String {
        self.url(rel)
    }

    fn bytes_transferred(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}
