//! Building one static-delta part from its recipe ([`super::layout`]),
//! streaming: the payload (tables, data blob, opcodes, framing) goes
//! through an xz encoder as it is read, objects straight from the
//! repository and bsdiff patches from the generation's scratch file, and
//! the compressed bytes go to the part file (or, for inline parts, to
//! memory, within the superblock size limit). Whatever a part holds, a
//! build holds one encoder and a few fixed-size buffers.
//!
//! Every content object is checked against its checksum as it is read
//! (a corrupt object must fail here, named, not on every client that
//! applies the delta); metadata objects are loaded whole (they are
//! bounded) and checked.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::ostree::delta::DeltaName;
use crate::ostree::delta::part::{Compression, PayloadFrame, XZ_PRESET};
use crate::ostree::delta::superblock::{MAX_SUPERBLOCK_SIZE, PART_VERSION, PartHeader};
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::progress;
use crate::store::objects::ContentObject;
use crate::store::{Repo, StoreError};

use super::files::PublishIo;
use super::generate::DeltaError;
use super::layout::{PartRecipe, PatchRef, Segment};

/// Bytes read from an object or the scratch file at a time.
const READ_CHUNK: usize = 256 << 10;

/// Compressed bytes gathered before they are written out.
const OUT_CHUNK: usize = 256 << 10;

/// The match finder's search, narrower than preset 8's (nice length 64,
/// depth 48): compression is nearly all of a delta's generation time (3 MB
/// per second per core at preset 8), and on a debootstrap tree's parts
/// these settings take 15-20 % less CPU for 0.4-0.9 % more bytes (`xz -T1`
/// on libostree's parts of it: 10.4 s and 17,399,708 bytes at `-8`, 8.4 s
/// and 17,471,088 with `nice=32,depth=8`; a more compressible one 6.2 s and
/// 7,529,616, then 5.2 s and 7,600,572; depth 4 cost 2 % in size there).
/// arbor's deltas stay smaller than libostree's, which packs files in hash
/// order rather than tree order.
const XZ_NICE_LEN: u32 = 32;
const XZ_DEPTH: u32 = 8;

/// Smallest xz block of a part compressed on several threads: smaller
/// blocks lose too much of the dictionary.
pub const MIN_XZ_BLOCK: u64 = 8 << 20;

/// Smallest xz block when a delta has fewer parts than there are threads
/// (an update's one small part): on one thread the other cores idle, and
/// preset 8 compresses only a few MB/s. An update's new files share little
/// across a block boundary: on the debootstrap update (one 1.3 MB part) the
/// part is as small as libostree's (906,705 against 906,669 bytes) and
/// built in half the time on 2 cores; a 2 KB delta grows by the second
/// block's framing (about 130 bytes).
pub const MIN_XZ_BLOCK_FEW_PARTS: u64 = 256 << 10;

/// Largest xz block: liblzma's threaded encoder holds about two blocks of
/// input and output per thread, so a part holding one huge file (rollsum
/// literals, `--min-fallback-size 0`) must not make its blocks huge. As
/// large as preset 8's dictionary, so a block loses nothing of it.
pub const MAX_XZ_BLOCK: u64 = 32 << 20;

/// The xz block size for a payload of `len` bytes compressed on `threads`
/// threads: one block per thread, within [`MIN_XZ_BLOCK`] and
/// [`MAX_XZ_BLOCK`]; the whole payload (one block, a plain stream) on one
/// thread.
fn xz_block(len: u64, threads: usize, min: u64) -> u64 {
    if threads > 1 {
        len.div_ceil(threads as u64).clamp(min, MAX_XZ_BLOCK)
    } else {
        len
    }
}

/// bsdiff patches, written as pairs are analysed and read back when the
/// parts holding them are built: an anonymous file in the build directory,
/// so they cost disk, not memory, and vanish with the process.
pub struct Scratch {
    file: File,
    end: std::sync::Mutex<u64>,
    path: PathBuf,
}

impl Scratch {
    /// An anonymous file in `dir` (an unlinked named one where the
    /// filesystem has no `O_TMPFILE`).
    pub fn new(dir: impl AsFd, dir_path: &Path) -> Result<Scratch, PublishIo> {
        let err = |e: rustix::io::Errno| PublishIo::new(dir_path, e.into());
        let tmpfiles = crate::fs::Tmpfiles::default();
        let fd = match tmpfiles
            .open(&dir, rustix::fs::OFlags::RDWR, 0o600)
            .map_err(err)?
        {
            Some(fd) => fd,
            None => {
                let name = super::files::tmp_name("patches");
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    rustix::fs::OFlags::RDWR
                        | rustix::fs::OFlags::CREATE
                        | rustix::fs::OFlags::EXCL
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(0o600),
                )
                .map_err(err)?;
                rustix::fs::unlinkat(&dir, name.as_str(), rustix::fs::AtFlags::empty())
                    .map_err(err)?;
                fd
            }
        };
        Ok(Scratch {
            file: File::from(fd),
            end: std::sync::Mutex::new(0),
            path: dir_path.join("(bsdiff patches)"),
        })
    }

    /// Appends `patch`; returns where it lies.
    pub fn put(&self, patch: &[u8]) -> Result<PatchRef, PublishIo> {
        let offset = {
            let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
            let at = *end;
            *end += patch.len() as u64;
            at
        };
        self.file
            .write_all_at(patch, offset)
            .map_err(|e| PublishIo::new(&self.path, e))?;
        Ok(PatchRef {
            offset,
            len: patch.len() as u64,
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), PublishIo> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| PublishIo::new(&self.path, e))
    }
}

/// Where a part's compressed bytes go.
pub enum PartOut<'a> {
    /// A new file of the build directory.
    File {
        dir: std::os::fd::BorrowedFd<'a>,
        dir_path: &'a Path,
        fsync: bool,
    },
    /// Memory (an inline part); `inline_total` counts the bytes of every
    /// inline part so far, against the superblock size limit.
    Memory {
        name: &'a DeltaName,
        inline_total: &'a AtomicU64,
    },
}

/// A built part: its header, and its bytes when inline.
pub struct BuiltPart {
    pub header: PartHeader,
    pub inline: Option<Vec<u8>>,
}

/// The compressed bytes' destination, hashing and counting as they pass.
struct Sink<'a> {
    file: Option<(File, PathBuf)>,
    memory: Option<Vec<u8>>,
    out: &'a PartOut<'a>,
    hasher: Sha256,
    len: u64,
}

impl Sink<'_> {
    fn put(&mut self, data: &[u8]) -> Result<(), DeltaError> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        if let Some((f, path)) = &mut self.file {
            f.write_all(data)
                .map_err(|e| PublishIo::new(path.as_path(), e))?;
        }
        if let (Some(m), PartOut::Memory { name, inline_total }) = (&mut self.memory, self.out) {
            let total =
                inline_total.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            if total > MAX_SUPERBLOCK_SIZE as u64 {
                return Err(DeltaError::SuperblockTooLarge(**name));
            }
            m.extend_from_slice(data);
        }
        Ok(())
    }
}

/// An xz encoder as libostree compresses parts (preset 8, CRC64; the match
/// search narrower, see [`XZ_NICE_LEN`]), with the
/// dictionary no larger than the payload (or block) needs: the same
/// compression, a fraction of the encoder's memory and setup time for
/// small parts. With `threads` > 1 the payload is cut into blocks (one per
/// thread, see [`xz_block`]) compressed in parallel; readers
/// (libostree, arbor) decode multi-block streams like any other.
struct Xz<'a, 'b> {
    stream: liblzma::stream::Stream,
    buf: Vec<u8>,
    sink: Sink<'b>,
    part: usize,
    fed: u64,
    interrupt: &'a AtomicBool,
}

impl<'a, 'b> Xz<'a, 'b> {
    fn new(
        part: usize,
        payload_len: u64,
        (threads, min_block): (usize, u64),
        sink: Sink<'b>,
        interrupt: &'a AtomicBool,
    ) -> Result<Self, DeltaError> {
        use liblzma::stream::{Check, Filters, LzmaOptions, MtStreamBuilder, Stream};
        let err = |source| DeltaError::Compress { part, source };
        let block = xz_block(payload_len, threads, min_block);
        let mut lz = LzmaOptions::new_preset(XZ_PRESET).map_err(err)?;
        lz.nice_len(XZ_NICE_LEN).depth(XZ_DEPTH);
        let preset_dict = 32u64 << 20;
        lz.dict_size(
            block
                .clamp(4096, preset_dict)
                .next_power_of_two()
                .min(preset_dict) as u32,
        );
        let mut filters = Filters::new();
        filters.lzma2(&lz);
        let stream = if block < payload_len {
            MtStreamBuilder::new()
                .threads(threads.min(64) as u32)
                .block_size(block)
                .filters(filters)
                .check(Check::Crc64)
                .encoder()
        } else {
            Stream::new_stream_encoder(&filters, Check::Crc64)
        }
        .map_err(err)?;
        Ok(Xz {
            stream,
            buf: Vec::with_capacity(OUT_CHUNK),
            sink,
            part,
            fed: 0,
            interrupt,
        })
    }

    fn flush_buf(&mut self) -> Result<(), DeltaError> {
        if !self.buf.is_empty() {
            self.sink.put(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), DeltaError> {
        use liblzma::stream::Action;
        while !data.is_empty() {
            // preset 8 compresses a few MB/s: check the interrupt flag
            // every MiB.
            if self.fed >> 20 != (self.fed + data.len() as u64) >> 20 {
                progress::check(self.interrupt)?;
            }
            let chunk = &data[..data.len().min(1 << 20)];
            let before = self.stream.total_in();
            self.stream
                .process_vec(chunk, &mut self.buf, Action::Run)
                .map_err(|source| DeltaError::Compress {
                    part: self.part,
                    source,
                })?;
            let used = (self.stream.total_in() - before) as usize;
            data = &data[used..];
            self.fed += used as u64;
            if self.buf.len() == self.buf.capacity() || used == 0 {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Sink<'b>, DeltaError> {
        use liblzma::stream::{Action, Status};
        loop {
            progress::check(self.interrupt)?;
            let status = self
                .stream
                .process_vec(&[], &mut self.buf, Action::Finish)
                .map_err(|source| DeltaError::Compress {
                    part: self.part,
                    source,
                })?;
            self.flush_buf()?;
            if status == Status::StreamEnd {
                return Ok(self.sink);
            }
        }
    }
}

/// Reads `object`'s data in chunks, checked: `each(offset, chunk)` sees
/// every byte in order; the object must be `len` bytes and hash to its
/// name.
pub fn stream_content(
    repo: &Repo,
    object: &Checksum,
    len: u64,
    each: impl FnMut(u64, &[u8]) -> Result<(), DeltaError>,
) -> Result<(), DeltaError> {
    stream_open(repo.open_content(object)?, object, len, each)
}

/// [`stream_content`] of an object already open.
fn stream_open(
    mut obj: ContentObject,
    object: &Checksum,
    len: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), DeltaError>,
) -> Result<(), DeltaError> {
    let name = ObjectName::new(*object, ObjectType::File);
    if obj.size != len {
        return Err(DeltaError::ObjectSize {
            object: name,
            expected: len,
            found: obj.size,
        });
    }
    let mut hasher = obj.header.hasher();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(READ_CHUNK as u64) as usize;
        let n = match obj.reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(DeltaError::ObjectSize {
                    object: name,
                    expected: len,
                    found: at,
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(DeltaError::ReadObject {
                    object: name,
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        each(at, &buf[..n])?;
        at += n as u64;
    }
    let actual = Checksum::from_hasher(hasher);
    if actual != *object {
        return Err(StoreError::ChecksumMismatch {
            object: name,
            actual,
        }
        .into());
    }
    Ok(())
}

/// Builds part `i`: streams its payload through xz into `out`.
pub fn build_part(
    repo: &Repo,
    scratch: &Scratch,
    i: usize,
    p: &PartRecipe,
    (threads, min_block): (usize, u64),
    out: &PartOut<'_>,
    interrupt: &AtomicBool,
) -> Result<BuiltPart, DeltaError> {
    let frame = PayloadFrame::new(&p.modes, &p.xattrs, p.blob_len, &p.ops)
        .map_err(|source| DeltaError::Frame { part: i, source })?;
    let file = match out {
        PartOut::File { dir, dir_path, .. } => {
            let path = dir_path.join(i.to_string());
            // The build directory is private until the delta is complete:
            // parts are written under their final names.
            let fd = rustix::fs::openat(
                dir,
                i.to_string().as_str(),
                rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o644),
            )
            .map_err(|e| PublishIo::new(&path, e.into()))?;
            // The umask may have taken bits off: parts are served.
            let _ = rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o644));
            Some((File::from(fd), path))
        }
        PartOut::Memory { .. } => None,
    };
    let mut sink = Sink {
        memory: file.is_none().then(Vec::new),
        file,
        out,
        hasher: Sha256::new(),
        len: 0,
    };
    sink.put(&[Compression::Xz.byte()])?;
    let mut xz = Xz::new(
        i,
        frame.payload_len(p.blob_len),
        (threads, min_block),
        sink,
        interrupt,
    )?;
    xz.write(&frame.head)?;
    let mut buf = Vec::new();
    for placed in &p.segments {
        let len = placed.len;
        match &placed.segment {
            Segment::Meta(name) => {
                let data = repo.load_verified_metadata(name)?;
                if data.len() as u64 != len {
                    return Err(DeltaError::ObjectSize {
                        object: *name,
                        expected: len,
                        found: data.len() as u64,
                    });
                }
                xz.write(&data)?;
            }
            Segment::Content(c) => {
                let info = repo.open_content(c)?;
                if info.header.is_symlink() {
                    let target = info.header.symlink_target.as_bytes();
                    // Symlinks hash their header alone.
                    let actual = Checksum::from_hasher(info.header.hasher());
                    if actual != *c {
                        return Err(StoreError::ChecksumMismatch {
                            object: ObjectName::new(*c, ObjectType::File),
                            actual,
                        }
                        .into());
                    }
                    if target.len() as u64 != len {
                        return Err(DeltaError::ObjectSize {
                            object: ObjectName::new(*c, ObjectType::File),
                            expected: len,
                            found: target.len() as u64,
                        });
                    }
                    xz.write(target)?;
                } else {
                    stream_open(info, c, len, |_, chunk| xz.write(chunk))?;
                }
            }
            Segment::Literals {
                object,
                size,
                ranges,
            } => {
                let mut k = 0usize;
                stream_content(repo, object, *size, |at, chunk| {
                    let end = at + chunk.len() as u64;
                    while let Some(&(start, n)) = ranges.get(k) {
                        if start >= end {
                            break;
                        }
                        let from = start.max(at);
                        let to = (start + n).min(end);
                        xz.write(&chunk[(from - at) as usize..(to - at) as usize])?;
                        if start + n > end {
                            break;
                        }
                        k += 1;
                    }
                    Ok(())
                })?;
            }
            Segment::Patch(r) => {
                let mut at = 0u64;
                while at < r.len {
                    let n = (r.len - at).min(READ_CHUNK as u64) as usize;
                    buf.resize(n, 0);
                    scratch.read_at(&mut buf, r.offset + at)?;
                    xz.write(&buf)?;
                    at += n as u64;
                }
            }
            Segment::Bytes(b) => xz.write(b)?,
        }
    }
    xz.write(&frame.tail)?;
    let sink = xz.finish()?;
    if let (Some((f, path)), PartOut::File { fsync: true, .. }) = (&sink.file, out) {
        f.sync_data()
            .map_err(|e| PublishIo::new(path.as_path(), e))?;
    }
    Ok(BuiltPart {
        header: PartHeader {
            version: PART_VERSION,
            checksum: Checksum::from_hasher(sink.hasher),
            size: sink.len,
            usize: p.usize,
            objects: p.objects.clone(),
        },
        inline: sink.memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xz_blocks_are_bounded() {
        const M: u64 = 1 << 20;
        assert_eq!(xz_block(100 * M, 1, MIN_XZ_BLOCK), 100 * M);
        assert_eq!(xz_block(32 * M, 2, MIN_XZ_BLOCK), 16 * M);
        assert_eq!(xz_block(10 * M, 4, MIN_XZ_BLOCK), MIN_XZ_BLOCK);
        // A 4 GiB part on 2 threads: 32 MiB blocks, not 2 GiB ones.
        assert_eq!(xz_block(4096 * M, 2, MIN_XZ_BLOCK), MAX_XZ_BLOCK);
    }
}
