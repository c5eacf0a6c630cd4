//! From a part file to its payload: size and checksum checked first, then
//! the payload decompressed to exactly the size the xz stream declares
//! (see [`crate::ostree::delta::xz`]), into memory when small, else into
//! a scratch file in the transaction's staging directory. The payload is
//! then read by range (`pread`), so memory stays bounded whatever its size.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use super::error::PartError;
use crate::ostree::Checksum;
use crate::ostree::delta::part::max_payload_size;
use crate::ostree::delta::{Compression, PartHeader, xz};
use crate::pull::FetchError;
use crate::store::Transaction;

/// Payloads up to this size are decompressed into memory.
pub(crate) const MEMORY_PAYLOAD_MAX: u64 = 4 << 20;
/// liblzma's decoder memory limit: exactly what decoding a stream made
/// with preset 8 takes: its 32 MiB dictionary and the decoder's state,
/// 66,168 bytes in the liblzma 5.8 the `liblzma` crate bundles (65,592 in
/// 5.4's `xz --list -vv`; the unit test below pins it). libostree's
/// compiler (and so flatpak's) has always written preset 8
/// (`lzma_easy_encoder (…, 8, LZMA_CHECK_CRC64)` in
/// ostree-lzma-compressor.c since 2014), so no real part asks for more; a
/// part whose header asks for a larger dictionary is refused before any of
/// it is allocated. (libostree's own decoder allows 100 MiB: a hostile part
/// could make it hold 96 MiB of dictionary.) The dictionary's pages are
/// touched only as far as the output goes, so a part uses at most the
/// smaller of 32 MiB and its declared payload, which is what the
/// [`super::MemoryBudget`] is charged.
pub(crate) const XZ_MEMLIMIT: u64 = (32 << 20) + 66_168;
const IO_BUF: usize = 128 * 1024;

/// A part file: `len` bytes of a file from `start` (a fetched part's
/// scratch file, or an inline part in its superblock's file).
pub(crate) struct PartFile {
    pub file: File,
    pub start: u64,
    pub len: u64,
}

impl PartFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(eof("part file"));
        }
        self.file.read_exact_at(buf, self.start + off)
    }
}

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("{what} ends early"),
    )
}

/// A part's payload, `(a(uuu)aa(ayay)ayay)`.
pub(crate) enum PartData {
    Memory(Vec<u8>),
    /// `len` bytes of `file` from `start`.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

impl PartData {
    pub fn len(&self) -> u64 {
        match self {
            PartData::Memory(b) => b.len() as u64,
            PartData::File { len, .. } => *len,
        }
    }

    /// Fills `buf` from payload offset `off`; the range must lie inside.
    pub fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len()) {
            return Err(eof("delta part payload"));
        }
        match self {
            PartData::Memory(b) => {
                let o = off as usize;
                buf.copy_from_slice(&b[o..o + buf.len()]);
                Ok(())
            }
            PartData::File { file, start, .. } => file.read_exact_at(buf, start + off),
        }
    }

    /// The bytes of `r` (bounded by the caller).
    pub fn read_range(&self, r: &Range<u64>) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; (r.end - r.start) as usize];
        self.read_exact_at(r.start, &mut v)?;
        Ok(v)
    }

    /// A reader of the bytes of `r`.
    pub fn reader(&self, r: Range<u64>) -> RangeReader<'_> {
        RangeReader {
            data: self,
            pos: r.start,
            end: r.end,
        }
    }
}

/// Reads a range of a payload.
pub(crate) struct RangeReader<'a> {
    data: &'a PartData,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.data.read_exact_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The scratch file about to receive `len` bytes must fit in the staging
/// filesystem's free space now: a part's header (or its xz index) may
/// declare honest but huge sizes, and the disk must not be filled first.
pub(crate) fn check_scratch_space(txn: &Transaction<'_>, len: u64) -> Result<(), PartError> {
    let Ok(st) = rustix::fs::fstatvfs(txn.repo().dir()) else {
        return Ok(());
    };
    let available = st.f_bavail.saturating_mul(st.f_frsize);
    if len > available {
        return Err(PartError::NoSpace {
            needed: len,
            available,
        });
    }
    Ok(())
}

/// Copies a part file from `src` into a scratch file, hashing it on the
/// way: it must be exactly `header.size` bytes with checksum
/// `header.checksum`. Stops reading at one byte past the size.
pub(crate) fn receive_part(
    txn: &Transaction<'_>,
    mut src: impl Read,
    header: &PartHeader,
    location: &str,
    interrupt: &AtomicBool,
) -> Result<PartFile, PartError> {
    check_scratch_space(txn, header.size)?;
    let mut file = txn.scratch_file()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; IO_BUF];
    let mut total: u64 = 0;
    loop {
        if interrupt.load(Ordering::Relaxed) {
            return Err(PartError::Interrupted);
        }
        // One byte more than expected is enough to know it is too long.
        // (The size is the superblock's: any u64, hence no `+ 1`.)
        let limit = header.size.saturating_add(1);
        let want = (limit - total.min(limit)).min(IO_BUF as u64) as usize;
        if want == 0 {
            break;
        }
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The network's failure as the source reported it (after
                // its own retries); any other read error is final.
                return Err(PartError::Fetch(FetchError::from_io(e).unwrap_or_else(
                    |e| FetchError::fatal(location, "reading the part failed").with_source(e),
                )));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(PartError::Io)?;
        total += n as u64;
    }
    if total != header.size {
        return Err(PartError::Size {
            expected: header.size,
            actual: total,
        });
    }
    let actual = Checksum::from_hasher(hasher);
    if actual != header.checksum {
        return Err(PartError::Checksum {
            expected: header.checksum,
            actual,
        });
    }
    Ok(PartFile {
        file,
        start: 0,
        len: total,
    })
}

/// What an xz part declares: its decompressed size (read from the end of
/// the stream, which starts at byte 1 of the part file).
pub(crate) fn declared_size(part: &PartFile) -> Result<u64, PartError> {
    let total = part.len();
    let stream_len = total.saturating_sub(1);
    if stream_len < (xz::HEADER_LEN + xz::FOOTER_LEN) as u64 {
        return Err(crate::ostree::delta::DeltaError::Xz("stream too short").into());
    }
    let mut header = [0u8; xz::HEADER_LEN];
    part.read_exact_at(1, &mut header).map_err(PartError::Io)?;
    let flags = xz::parse_header(&header)?;
    let mut footer = [0u8; xz::FOOTER_LEN];
    part.read_exact_at(total - xz::FOOTER_LEN as u64, &mut footer)
        .map_err(PartError::Io)?;
    let index_len = xz::parse_footer(&footer, flags)?;
    let index_start = (total - xz::FOOTER_LEN as u64)
        .checked_sub(index_len)
        .filter(|s| *s > xz::HEADER_LEN as u64)
        .ok_or(crate::ostree::delta::DeltaError::Xz(
            "index larger than the stream",
        ))?;
    let mut index = vec![0u8; index_len as usize];
    part.read_exact_at(index_start, &mut index)
        .map_err(PartError::Io)?;
    let totals = xz::parse_index(&index)?;
    xz::check_stream_len(stream_len, index_len, &totals)?;
    Ok(totals.uncompressed)
}

/// The payload of a part file whose size and checksum were checked (or
/// an inline part). Payloads over [`MEMORY_PAYLOAD_MAX`] go to a scratch
/// file.
pub(crate) fn open_payload(
    txn: &Transaction<'_>,
    part: PartFile,
    header: &PartHeader,
    budget: &super::MemoryBudget,
    interrupt: &AtomicBool,
) -> Result<PartData, PartError> {
    let mut first = [0u8; 1];
    part.read_exact_at(0, &mut first).map_err(PartError::Io)?;
    match Compression::from_byte(first[0])? {
        Compression::None => Ok(PartData::File {
            file: part.file,
            start: part.start + 1,
            len: part.len - 1,
        }),
        Compression::Xz => {
            let declared = declared_size(&part)?;
            let max = max_payload_size(header.objects.len(), header.usize);
            if declared > max {
                return Err(PartError::PayloadTooLarge { declared, max });
            }
            if declared > MEMORY_PAYLOAD_MAX {
                check_scratch_space(txn, declared)?;
            }
            // The decoder's dictionary is touched as far as the output
            // goes, up to its size (32 MiB for libostree's preset 8).
            let _charge = budget.acquire(declared.min(XZ_MEMLIMIT) + (1 << 20));
            let stream_len = part.len() - 1;
            let mut f = &part.file;
            f.seek(SeekFrom::Start(part.start + 1))
                .map_err(PartError::Io)?;
            let input = BufReader::with_capacity(IO_BUF, f.take(part.len - 1));
            if declared <= MEMORY_PAYLOAD_MAX {
                let mut out = Vec::with_capacity(declared as usize);
                decompress(input, stream_len, declared, &mut out, interrupt)?;
                Ok(PartData::Memory(out))
            } else {
                let file = txn.scratch_file()?;
                decompress_to_file(input, stream_len, declared, &file, interrupt)?;
                Ok(PartData::File {
                    file,
                    start: 0,
                    len: declared,
                })
            }
        }
    }
}

/// Bytes handed from the decoder to the scratch file's writer at a time.
const WRITE_CHUNK: usize = 1 << 20;

/// [`decompress`] into `file`, written by a second thread. One part's
/// decoding is the serial path of a delta pull (one dictionary in memory
/// at a time): the decoder only decodes, and the page-cache writes (a
/// tenth of a scratch delta's CPU) run on the other core. At most three
/// chunks are held.
fn decompress_to_file(
    input: impl Read,
    stream_len: u64,
    declared: u64,
    file: &File,
    interrupt: &AtomicBool,
) -> Result<(), PartError> {
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    /// Lends the decoder the unfilled end of the current chunk (it decodes
    /// straight into it: no copy) and hands full chunks to the writer,
    /// taking written ones back.
    struct ToWriter {
        buf: Vec<u8>,
        filled: usize,
        full: SyncSender<(Vec<u8>, usize)>,
        empty: Receiver<Vec<u8>>,
    }
    impl ToWriter {
        fn send(&mut self) -> std::io::Result<()> {
            let next = self
                .empty
                .try_recv()
                .unwrap_or_else(|_| vec![0; WRITE_CHUNK]);
            let full = std::mem::replace(&mut self.buf, next);
            let n = std::mem::take(&mut self.filled);
            // A closed channel: the writer failed; its error is returned.
            self.full
                .send((full, n))
                .map_err(|_| std::io::Error::other("scratch writer stopped"))
        }
    }
    impl DecodeOut for ToWriter {
        fn space(&mut self) -> &mut [u8] {
            &mut self.buf[self.filled..]
        }
        fn filled(&mut self, n: usize) -> std::io::Result<()> {
            self.filled += n;
            if self.filled == self.buf.len() {
                self.send()?;
            }
            Ok(())
        }
        fn finish(&mut self) -> std::io::Result<()> {
            if self.filled > 0 {
                self.send()?;
            }
            Ok(())
        }
    }
    std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(1);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(2);
        let writer = s.spawn(move || -> std::io::Result<()> {
            for (chunk, n) in full_rx {
                let mut f = file;
                f.write_all(&chunk[..n])?;
                let _ = empty_tx.try_send(chunk);
            }
            Ok(())
        });
        let mut out = ToWriter {
            buf: vec![0; WRITE_CHUNK],
            filled: 0,
            full: full_tx,
            empty: empty_rx,
        };
        let decoded = decompress(input, stream_len, declared, &mut out, interrupt)
            .and_then(|()| out.finish().map_err(PartError::Io));
        drop(out);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("scratch writer panicked")));
        match (decoded, written) {
            // The writer's own error explains a decoder stopped by it.
            (Err(PartError::Io(_)), Err(e)) => Err(PartError::Io(e)),
            (Err(e), _) => Err(e),
            (Ok(()), w) => w.map_err(PartError::Io),
        }
    })
}

/// Where [`decompress`] puts its output: it decodes straight into the
/// space lent (a scratch file's chunk is not copied again on the serial
/// path of a delta pull: that copy was a tenth of the decoding thread's
/// time).
trait DecodeOut {
    /// Room for more output (never empty).
    fn space(&mut self) -> &mut [u8];
    /// The first `n` bytes of the last space lent were filled.
    fn filled(&mut self, n: usize) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A payload decoded into memory (small ones, and tests).
impl DecodeOut for Vec<u8> {
    fn space(&mut self) -> &mut [u8] {
        let l = self.len();
        self.resize(l + IO_BUF, 0);
        &mut self[l..]
    }
    fn filled(&mut self, n: usize) -> std::io::Result<()> {
        self.truncate(self.len() - IO_BUF + n);
        Ok(())
    }
}

/// Decompresses one xz stream of `stream_len` bytes into `out`: exactly
/// `declared` bytes, refusing the first byte past it.
fn decompress(
    mut input: impl Read,
    stream_len: u64,
    declared: u64,
    out: &mut impl DecodeOut,
    interrupt: &AtomicBool,
) -> Result<(), PartError> {
    use liblzma::stream::{Action, Status, Stream};
    // xz's own CRC64 is not checked: the part's SHA-256 was (inline parts
    // aside), and every object it produces is verified against its name.
    // On libostree's parts the CRC cost a tenth of the decoding time, which
    // is the serial path of a delta pull (one dictionary at a time).
    let mut s = Stream::new_stream_decoder(XZ_MEMLIMIT, liblzma::stream::IGNORE_CHECK)
        .map_err(PartError::Decompress)?;
    let mut inbuf = vec![0u8; IO_BUF];
    let (mut in_pos, mut in_len) = (0usize, 0usize);
    let mut eof = false;
    loop {
        if interrupt.load(Ordering::Relaxed) {
            return Err(PartError::Interrupted);
        }
        if in_pos == in_len && !eof {
            in_len = loop {
                match input.read(&mut inbuf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(PartError::Io(e)),
                }
            };
            in_pos = 0;
            eof = in_len == 0;
        }
        // Room for at most one byte past the declared size.
        let space = out.space();
        let room = declared
            .saturating_sub(s.total_out())
            .saturating_add(1)
            .min(space.len() as u64) as usize;
        let (before_in, before_out) = (s.total_in(), s.total_out());
        let action = if eof { Action::Finish } else { Action::Run };
        let status = s
            .process(&inbuf[in_pos..in_len], &mut space[..room], action)
            .map_err(|e| match e {
                liblzma::stream::Error::MemLimit => PartError::Dictionary { limit: XZ_MEMLIMIT },
                e => PartError::Decompress(e),
            })?;
        in_pos += (s.total_in() - before_in) as usize;
        let made = (s.total_out() - before_out) as usize;
        if s.total_out() > declared {
            return Err(PartError::Inflates { declared });
        }
        out.filled(made).map_err(PartError::Io)?;
        if status == Status::StreamEnd {
            break;
        }
        if made == 0 && s.total_in() == before_in {
            // Room and input (or the end of it) were there, yet liblzma
            // moved neither: a stream that ends early, or one it can make
            // nothing of. Never loop on it.
            if eof {
                return Err(PartError::ShortPayload {
                    declared,
                    actual: s.total_out(),
                });
            }
            if in_pos < in_len {
                return Err(PartError::DecompressStalled { at: s.total_out() });
            }
        }
    }
    if s.total_out() != declared {
        return Err(PartError::ShortPayload {
            declared,
            actual: s.total_out(),
        });
    }
    if s.total_in() != stream_len {
        return Err(
            crate::ostree::delta::DeltaError::Xz("data after the end of the stream").into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::delta::part::encode_part_file;

    fn run(part: &[u8], declared_override: Option<u64>) -> Result<Vec<u8>, PartError> {
        let declared = declared_override.unwrap_or_else(|| xz::declared_size(&part[1..]).unwrap());
        let mut out = Vec::new();
        decompress(
            &part[1..],
            part.len() as u64 - 1,
            declared,
            &mut out,
            &AtomicBool::new(false),
        )
        .map(|()| out)
    }

    /// The memory limit is exactly what preset 8 needs: one byte less and
    /// liblzma refuses a real part.
    #[test]
    fn memlimit_is_exactly_preset_8() {
        use liblzma::stream::{Action, Stream};
        let part = encode_part_file(b"some payload", Compression::Xz);
        for (limit, ok) in [(XZ_MEMLIMIT, true), (XZ_MEMLIMIT - 1, false)] {
            let mut s = Stream::new_stream_decoder(limit, 0).unwrap();
            let mut out = vec![0u8; 64];
            let r = s.process(&part[1..], &mut out, Action::Finish);
            assert_eq!(r.is_ok(), ok, "limit {limit}: {r:?}");
        }
        assert_eq!(run(&part, None).unwrap(), b"some payload");
    }

    #[test]
    fn exact_size_and_bombs() {
        let payload = vec![0u8; 1 << 20];
        let part = encode_part_file(&payload, Compression::Xz);
        assert_eq!(run(&part, None).unwrap(), payload);
        // A stream inflating past what is expected stops at once.
        assert!(matches!(
            run(&part, Some(1000)),
            Err(PartError::Inflates { declared: 1000 })
        ));
        assert!(matches!(
            run(&part, Some(2 << 20)),
            Err(PartError::ShortPayload { .. })
        ));
        assert!(run(&part[..part.len() - 10], Some(1 << 20)).is_err());
        // However large the declared size, no overflow and no endless loop.
        assert!(matches!(
            run(&part, Some(u64::MAX)),
            Err(PartError::ShortPayload { .. })
        ));
    }
}
