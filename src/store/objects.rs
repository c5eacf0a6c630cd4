//! Reading objects in each repository mode.
//!
//! | mode | regular file object | symlink object | metadata from |
//! |---|---|---|---|
//! | bare | the file itself | a real symlink | the inode (owner, mode, xattrs) |
//! | bare-user | the file itself | a file: target ‖ NUL | `user.ostreemeta` xattr |
//! | bare-user-only | the file itself | a real symlink | mode only; uid/gid 0, no xattrs |
//! | archive | `.filez`: header ‖ raw deflate | `.filez`: header only | the header |

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use flate2::read::DeflateDecoder;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use thiserror::Error;

use super::error::{IoContext, Result, StoreError};
use super::repo::{Repo, RepoMode, open_dir};
use crate::fs as sys;
use crate::fs::list_dir_typed;
use crate::ostree::content::{FRAME_PREFIX, archive_header_len, parse_archive_header};
use crate::ostree::{
    Checksum, Commit, DirMeta, DirTree, FileHeader, FormatError, MAX_METADATA_SIZE, ObjectName,
    ObjectType, Xattrs,
};

/// A content object opened for reading: its header, and a reader yielding
/// exactly `size` bytes (nothing for symlinks). Nothing is verified: the
/// reader of the object's checksum hashes it. Pull sources hand out the same
/// type ([`crate::pull::ObjectSource::fetch_content`]).
pub struct ContentObject {
    pub header: FileHeader,
    pub size: u64,
    pub reader: Box<dyn Read + Send>,
    /// The object file itself, for uncompressed regular files: checkout
    /// clones (`FICLONE`) or copies (`copy_file_range`, at explicit
    /// offsets) from it without opening it again. It shares its file
    /// position with `reader`.
    pub file: Option<Arc<File>>,
}

impl ContentObject {
    fn uncompressed(header: FileHeader, size: u64, file: File, name: ObjectName) -> Self {
        let file = Arc::new(file);
        ContentObject {
            header,
            size,
            reader: Box::new(ExactReader::new(SharedFile(file.clone()), size, name)),
            file: Some(file),
        }
    }
}

/// The content checksum of a file with this header and data.
pub(crate) fn hash_content(header: &FileHeader, mut data: impl Read) -> std::io::Result<Checksum> {
    let mut hasher = header.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha2::Digest::update(&mut hasher, &buf[..n]);
    }
    Ok(Checksum::from_hasher(hasher))
}

/// Reads an object file shared with [`ContentObject::file`].
struct SharedFile(Arc<File>);

impl Read for SharedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// Why a `.filez` stream could not be opened. The two cases are kept apart
/// because a caller reading from the network retries the first only.
#[derive(Debug, Error)]
pub enum ArchiveHeaderError {
    /// The stream failed or ended inside the header.
    #[error("truncated header: {0}")]
    Truncated(#[source] std::io::Error),
    /// The header was read whole but is invalid.
    #[error("invalid object header: {0}")]
    Corrupt(#[source] FormatError),
}

/// Opens an archive-mode content object (`.filez`: header ‖ raw deflate)
/// from `r`, positioned at its first byte: reads and parses the header and
/// returns a reader of exactly the declared size of file data. Used for the
/// store's own objects and for objects streamed from an HTTP source, so
/// both read the format the same way. `name` is for messages.
pub(crate) fn read_archive_object(
    r: impl Read + Send + 'static,
    name: ObjectName,
) -> std::result::Result<ContentObject, ArchiveHeaderError> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut head = vec![0u8; FRAME_PREFIX];
    r.read_exact(&mut head)
        .map_err(ArchiveHeaderError::Truncated)?;
    let total = archive_header_len(&head).map_err(ArchiveHeaderError::Corrupt)?;
    head.resize(total, 0);
    r.read_exact(&mut head[FRAME_PREFIX..])
        .map_err(ArchiveHeaderError::Truncated)?;
    let a = parse_archive_header(&head).map_err(ArchiveHeaderError::Corrupt)?;
    // The size in the header is not covered by the object's checksum (the
    // data is): a stream holding more than it declares is refused, or a
    // reader that stopped at the declared size would hand out a prefix of
    // the checksummed data (see `ExactReader::whole`).
    let reader: Box<dyn Read + Send> = if a.header.is_symlink() {
        // Symlinks have no deflate stream; their checksum covers no data.
        Box::new(std::io::empty())
    } else if a.size == 0
        && r.fill_buf()
            .map_err(ArchiveHeaderError::Truncated)?
            .is_empty()
    {
        // An empty file without a deflate stream at all (some flate2
        // versions reject empty input).
        Box::new(std::io::empty())
    } else {
        Box::new(ExactReader::whole(DeflateDecoder::new(r), a.size, name))
    };
    Ok(ContentObject {
        header: a.header,
        size: a.size,
        reader,
        file: None,
    })
}

impl Repo {
    pub(crate) fn object_path(&self, name: &ObjectName) -> String {
        name.loose_path(self.mode().is_archive())
    }

    /// Full filesystem path of a loose object (for messages and tests).
    pub fn object_fs_path(&self, name: &ObjectName) -> PathBuf {
        self.path().join("objects").join(self.object_path(name))
    }

    pub fn has_object(&self, name: &ObjectName) -> Result<bool> {
        match rustix::fs::statat(
            self.objects_dir(),
            self.object_path(name).as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e).at(self.object_fs_path(name)),
        }
    }

    pub(crate) fn open_object(&self, name: &ObjectName) -> Result<OwnedFd> {
        match rustix::fs::openat(
            self.objects_dir(),
            self.object_path(name).as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::NOENT) => Err(StoreError::MissingObject(*name)),
            Err(e) => Err(e).at(self.object_fs_path(name)),
        }
    }

    /// The bytes of a metadata object, bounded by the metadata size limit.
    pub fn load_metadata(&self, name: &ObjectName) -> Result<Vec<u8>> {
        let fd = self.open_object(name)?;
        // Most metadata objects fit: one read and the end-of-file read,
        // instead of read_to_end's small first probes.
        let mut data = Vec::with_capacity(16 << 10);
        File::from(fd)
            .take(MAX_METADATA_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .at(self.object_fs_path(name))?;
        if data.len() > MAX_METADATA_SIZE {
            return Err(StoreError::BadObject {
                object: *name,
                reason: format!("larger than the {MAX_METADATA_SIZE}-byte metadata limit"),
            });
        }
        Ok(data)
    }

    /// Loads a metadata object and checks that its bytes hash to its name.
    pub fn load_verified_metadata(&self, name: &ObjectName) -> Result<Vec<u8>> {
        let data = self.load_metadata(name)?;
        let actual = Checksum::digest(&data);
        if actual != name.checksum {
            return Err(StoreError::ChecksumMismatch {
                object: *name,
                actual,
            });
        }
        Ok(data)
    }

    fn parse_meta<T>(
        &self,
        c: &Checksum,
        t: ObjectType,
        parse: fn(&[u8]) -> crate::ostree::error::Result<T>,
    ) -> Result<T> {
        let name = ObjectName::new(*c, t);
        let data = self.load_metadata(&name)?;
        parse(&data).map_err(|source| StoreError::CorruptObject {
            object: name,
            source,
        })
    }

    pub fn load_commit(&self, c: &Checksum) -> Result<Commit> {
        self.parse_meta(c, ObjectType::Commit, Commit::parse)
    }

    pub fn load_dirtree(&self, c: &Checksum) -> Result<DirTree> {
        self.parse_meta(c, ObjectType::DirTree, DirTree::parse)
    }

    pub fn load_dirmeta(&self, c: &Checksum) -> Result<DirMeta> {
        self.parse_meta(c, ObjectType::DirMeta, DirMeta::parse)
    }

    /// Whether `state/CHECKSUM.commitpartial` marks the commit's tree as
    /// possibly incomplete.
    pub fn is_commit_partial(&self, c: &Checksum) -> Result<bool> {
        match rustix::fs::statat(
            self.dir(),
            format!("state/{c}.commitpartial").as_str(),
            AtFlags::empty(),
        ) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e).at(self.path().join(format!("state/{c}.commitpartial"))),
        }
    }

    /// Creates `state/CHECKSUM.commitpartial` before a commit's object is
    /// written, so the commit never looks complete before its tree is.
    /// The marker is made durable at once: it must reach the disk before
    /// the commit object can.
    pub fn mark_commit_partial(&self, c: &Checksum) -> Result<()> {
        let rel = format!("state/{c}.commitpartial");
        let path = self.path().join(&rel);
        crate::fs::ensure_dir(self.dir(), "state", 0o775).at(self.path().join("state"))?;
        let fd = rustix::fs::openat(
            self.dir(),
            rel.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .at(&path)?;
        if self.fsync_enabled() {
            rustix::fs::fsync(&fd).at(&path)?;
            let state = open_dir(self.dir(), "state")?;
            rustix::fs::fsync(&state).at(self.path().join("state"))?;
        }
        Ok(())
    }

    /// Removes the partial marker once the whole tree is present.
    pub fn clear_commit_partial(&self, c: &Checksum) -> Result<()> {
        let rel = format!("state/{c}.commitpartial");
        match rustix::fs::unlinkat(self.dir(), rel.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e).at(self.path().join(rel)),
        }
    }

    /// Opens a content object, reading its metadata as the repository's
    /// mode stores it.
    pub fn open_content(&self, c: &Checksum) -> Result<ContentObject> {
        let name = ObjectName::new(*c, ObjectType::File);
        let path = self.object_fs_path(&name);
        let corrupt = |source| StoreError::CorruptObject {
            object: name,
            source,
        };
        let bad = |reason: String| StoreError::BadObject {
            object: name,
            reason,
        };
        let mode = self.mode();
        if mode == RepoMode::Archive {
            let fd = self.open_object(&name)?;
            return read_archive_object(File::from(fd), name).map_err(|e| match e {
                ArchiveHeaderError::Truncated(_) => bad("truncated header".into()),
                ArchiveHeaderError::Corrupt(source) => corrupt(source),
            });
        }

        let rel = self.object_path(&name);
        let st =
            match rustix::fs::statat(self.objects_dir(), rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => return Err(StoreError::MissingObject(name)),
                Err(e) => return Err(e).at(&path),
            };
        let ftype = FileType::from_raw_mode(st.st_mode);
        if ftype == FileType::Symlink {
            if mode == RepoMode::BareUser {
                return Err(bad(
                    "bare-user repositories store symlinks as regular files".into(),
                ));
            }
            let target =
                rustix::fs::readlinkat(self.objects_dir(), rel.as_str(), Vec::new()).at(&path)?;
            let target = target
                .into_string()
                .map_err(|_| bad("symlink target is not UTF-8".into()))?;
            let header = self.bare_header(&st, target, || {
                let (dir, file) = rel.split_once('/').unwrap_or(("", &rel));
                let dfd = open_dir(self.objects_dir(), dir)?;
                sys::link_xattrs(&sys::proc_path(dfd.as_fd(), file)).at(&path)
            })?;
            header.validate().map_err(corrupt)?;
            return Ok(ContentObject {
                header,
                size: 0,
                reader: Box::new(std::io::empty()),
                file: None,
            });
        }
        if ftype != FileType::RegularFile {
            return Err(bad(format!(
                "unexpected file type {ftype:?} in the object store"
            )));
        }
        let fd = self.open_object(&name)?;
        let size = st.st_size as u64;
        match mode {
            RepoMode::BareUser => {
                let meta = sys::fd_xattr(&fd, "user.ostreemeta")
                    .at(&path)?
                    .ok_or_else(|| bad("the user.ostreemeta xattr is missing".into()))?;
                let mut file = File::from(fd);
                // A symlink's target is the file's content up to its NUL.
                if crate::ostree::mode::is_symlink(stored_mode(&meta)) {
                    let mut data = Vec::new();
                    (&mut file).take(4097).read_to_end(&mut data).at(&path)?;
                    let target = data
                        .strip_suffix(&[0])
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .ok_or_else(|| {
                            bad(
                                "bare-user symlink object is not a NUL-terminated UTF-8 target"
                                    .into(),
                            )
                        })?;
                    let header =
                        FileHeader::from_ostreemeta(&meta, target.to_string()).map_err(corrupt)?;
                    return Ok(ContentObject {
                        header,
                        size: 0,
                        reader: Box::new(std::io::empty()),
                        file: None,
                    });
                }
                let header = FileHeader::from_ostreemeta(&meta, String::new()).map_err(corrupt)?;
                Ok(ContentObject::uncompressed(header, size, file, name))
            }
            RepoMode::Bare | RepoMode::BareUserOnly => {
                let header =
                    self.bare_header(&st, String::new(), || sys::fd_xattrs(&fd).at(&path))?;
                header.validate().map_err(corrupt)?;
                Ok(ContentObject::uncompressed(
                    header,
                    size,
                    File::from(fd),
                    name,
                ))
            }
            RepoMode::Archive => unreachable!("handled above"),
        }
    }

    /// The header of a bare or bare-user-only object from its inode: owner
    /// and xattrs count only in bare mode (bare-user-only reads as 0:0).
    fn bare_header(
        &self,
        st: &rustix::fs::Stat,
        symlink_target: String,
        xattrs: impl FnOnce() -> Result<Xattrs>,
    ) -> Result<FileHeader> {
        let bare = self.mode() == RepoMode::Bare;
        Ok(FileHeader {
            uid: if bare { st.st_uid } else { 0 },
            gid: if bare { st.st_gid } else { 0 },
            mode: st.st_mode,
            symlink_target,
            xattrs: if bare && !self.xattrs_disabled() {
                xattrs()?
            } else {
                Xattrs::new()
            },
        })
    }

    /// `core.disable-xattrs`: ignore xattrs of bare objects.
    fn xattrs_disabled(&self) -> bool {
        matches!(
            self.config().get_bool("core", "disable-xattrs"),
            Ok(Some(true))
        )
    }

    /// Re-reads a content object and checks its checksum.
    pub fn verify_content(&self, c: &Checksum) -> Result<()> {
        let name = ObjectName::new(*c, ObjectType::File);
        let obj = self.open_content(c)?;
        let actual = hash_content(&obj.header, obj.reader).map_err(|e| StoreError::BadObject {
            object: name,
            reason: e.to_string(),
        })?;
        if actual != *c {
            return Err(StoreError::ChecksumMismatch {
                object: name,
                actual,
            });
        }
        Ok(())
    }

    /// Every loose object in the repository.
    pub fn list_objects(&self) -> Result<Vec<ObjectName>> {
        let archive = self.mode().is_archive();
        let objects_path = self.path().join("objects");
        let mut out = Vec::new();
        for (dir, ty) in list_dir_typed(self.objects_dir()).at(&objects_path)? {
            let Some(dir) = dir.to_str() else { continue };
            if ty != FileType::Directory || dir.len() != 2 {
                continue;
            }
            let fd = open_dir(self.objects_dir(), dir)?;
            for (file, _) in list_dir_typed(fd.as_fd()).at(objects_path.join(dir))? {
                let Some(file) = file.to_str() else { continue };
                if let Some((name, z)) = ObjectName::from_loose(dir, file)
                    && (z == archive || name.objtype.is_meta())
                {
                    out.push(name);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The mode field of a `(uuua(ayay))`, read without validation.
fn stored_mode(meta: &[u8]) -> u32 {
    meta.get(8..12)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Yields exactly `size` bytes from `inner`, failing on a short stream
/// (and, made with [`ExactReader::whole`], on a longer one).
pub struct ExactReader<R> {
    inner: R,
    left: u64,
    size: u64,
    name: ObjectName,
    /// Check that `inner` ends after `size` bytes.
    check_end: bool,
}

impl<R: Read> ExactReader<R> {
    pub fn new(inner: R, size: u64, name: ObjectName) -> Self {
        ExactReader {
            inner,
            left: size,
            size,
            name,
            check_end: false,
        }
    }

    /// Like [`ExactReader::new`], for a stream that must hold exactly
    /// `size` bytes: the read that delivers the last byte fails instead if
    /// `inner` has more (a hostile archive object whose header declares
    /// less data than its checksum covers).
    pub fn whole(inner: R, size: u64, name: ObjectName) -> Self {
        ExactReader {
            check_end: true,
            ..ExactReader::new(inner, size, name)
        }
    }

    fn ensure_end(&mut self) -> std::io::Result<()> {
        self.check_end = false;
        let mut byte = [0u8; 1];
        loop {
            return match self.inner.read(&mut byte) {
                Ok(0) => Ok(()),
                Ok(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "object {} holds more data than the {} bytes its header declares",
                        self.name, self.size
                    ),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            if self.check_end {
                self.ensure_end()?;
            }
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "object {} ends after {} of its {} bytes",
                    self.name,
                    self.size - self.left,
                    self.size
                ),
            ));
        }
        self.left -= n as u64;
        if self.left == 0 && self.check_end {
            self.ensure_end()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn filez(declared: u64, data: &[u8]) -> Vec<u8> {
        let header = FileHeader {
            uid: 0,
            gid: 0,
            mode: 0o100644,
            symlink_target: String::new(),
            xattrs: Xattrs::new(),
        };
        let mut out = header.archive_prefix(declared);
        out.extend(deflate(data));
        out
    }

    fn read_all(declared: u64, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let name = ObjectName::new(Checksum::digest(b"x"), ObjectType::File);
        let obj = read_archive_object(std::io::Cursor::new(filez(declared, data)), name).unwrap();
        assert_eq!(obj.size, declared);
        let mut out = Vec::new();
        let mut r = obj.reader;
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The header's size is not checksummed: data beyond it is refused,
    /// never cut off; missing data too.
    #[test]
    fn archive_data_must_match_the_declared_size() {
        assert_eq!(read_all(6, b"abcdef").unwrap(), b"abcdef");
        assert_eq!(read_all(0, b"").unwrap(), b"");
        let e = read_all(3, b"abcdef").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("more data than the 3 bytes"), "{e}");
        let e = read_all(0, b"abcdef").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        let e = read_all(9, b"abcdef").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
}
