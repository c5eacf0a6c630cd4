//! Local repositories as pull sources (a path or a `file://` URL), in any
//! of the four modes, read through the same code as the store itself.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::source::{FetchError, ObjectSource};
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::store::{ContentObject, RefName, Repo, StoreError};

pub struct LocalSource {
    repo: Repo,
    /// Bytes read from the source (object data as stored there).
    read: Arc<AtomicU64>,
}

/// Counts the bytes a content reader yields.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl LocalSource {
    pub fn open(path: &Path) -> Result<LocalSource, StoreError> {
        Ok(LocalSource {
            repo: Repo::open_read_only(path)?,
            read: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// A file at the top of the source repository, `None` if absent.
    fn read_optional_file(&self, name: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let path = self.repo.path().join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(FetchError::fatal(path.display().to_string(), "cannot read").with_source(e))
            }
        }
    }

    fn err(&self, location: String, e: StoreError) -> FetchError {
        match e {
            StoreError::MissingObject(_) => FetchError::not_found(location),
            e => FetchError::fatal(location, "cannot read").with_source(e),
        }
    }
}

impl ObjectSource for LocalSource {
    fn describe(&self) -> String {
        self.repo.path().display().to_string()
    }

    fn location(&self, name: &ObjectName) -> String {
        self.repo.object_fs_path(name).display().to_string()
    }

    fn fetch_summary(&self) -> Result<Option<Vec<u8>>, FetchError> {
        self.read_optional_file("summary")
    }

    fn fetch_summary_sig(&self) -> Result<Option<Vec<u8>>, FetchError> {
        self.read_optional_file("summary.sig")
    }

    fn fetch_ref(&self, name: &str) -> Result<Option<Checksum>, FetchError> {
        let r = RefName::Head(name.to_string());
        self.repo.read_ref(&r).map_err(|e| {
            self.err(
                self.repo
                    .path()
                    .join(r.relative_path())
                    .display()
                    .to_string(),
                e,
            )
        })
    }

    fn list_refs(&self) -> Result<Option<Vec<(String, Checksum)>>, FetchError> {
        let refs = self
            .repo
            .list_refs()
            .map_err(|e| self.err(self.describe(), e))?
            .into_iter()
            .filter_map(|(n, c)| match n {
                RefName::Head(n) => Some((n, c)),
                RefName::Remote(..) => None,
            })
            .collect();
        Ok(Some(refs))
    }

    fn fetch_metadata(&self, name: &ObjectName, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        match self.repo.load_metadata(name) {
            Ok(b) if b.len() as u64 > max => Err(FetchError::fatal(
                self.location(name),
                format!("{} bytes, over the limit of {max}", b.len()),
            )),
            Ok(b) => {
                self.read.fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(Some(b))
            }
            Err(StoreError::MissingObject(_)) => Ok(None),
            Err(e) => Err(self.err(self.location(name), e)),
        }
    }

    fn fetch_content(&self, checksum: &Checksum) -> Result<ContentObject, FetchError> {
        let name = ObjectName::new(*checksum, ObjectType::File);
        let obj = self
            .repo
            .open_content(checksum)
            .map_err(|e| self.err(self.location(&name), e))?;
        Ok(ContentObject {
            header: obj.header,
            size: obj.size,
            reader: Box::new(Counting {
                inner: obj.reader,
                read: self.read.clone(),
            }),
            // For reflinks: bytes cloned are not counted as transferred.
            file: obj.file,
        })
    }

    fn fetch_file(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        let Some(r) = self.open_file(rel)? else {
            return Ok(None);
        };
        let mut body = Vec::new();
        r.take(max + 1).read_to_end(&mut body).map_err(|e| {
            FetchError::fatal(self.file_location(rel), "cannot read").with_source(e)
        })?;
        if body.len() as u64 > max {
            return Err(FetchError::fatal(
                self.file_location(rel),
                format!("more than the limit of {max} bytes"),
            ));
        }
        Ok(Some(body))
    }

    fn open_file(&self, rel: &str) -> Result<Option<Box<dyn Read + Send>>, FetchError> {
        // Relative paths come from the pull (delta and index names), never
        // from the source; opened without following a final symlink.
        let fd = match rustix::fs::openat(
            self.repo.dir(),
            rel,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(e) => {
                return Err(FetchError::fatal(self.file_location(rel), "cannot open")
                    .with_source(std::io::Error::from(e)));
            }
        };
        Ok(Some(Box::new(Counting {
            inner: std::fs::File::from(fd),
            read: self.read.clone(),
        })))
    }

    fn file_location(&self, rel: &str) -> String {
        self.repo.path().join(rel).display().to_string()
    }

    fn bytes_transferred(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn local_repo(&self) -> Option<&Repo> {
        Some(&self.repo)
    }
}
