//! Executing one part's opcodes into a store transaction.
//!
//! Every object goes through the transaction's verifying writes: metadata
//! is parsed (as for a normal pull) and written with its expected checksum,
//! content is streamed through `write_content` with its expected checksum,
//! so an object whose bytes do not hash to its name is refused and never
//! becomes visible. An object already present (in the store or staged) is
//! skipped, as libostree does.
//!
//! `o … c` objects are streamed too: the reader handed to `write_content`
//! pulls the next `w`/`r`/`R`/`B` steps from the opcode stream on demand,
//! so no object is ever held whole in memory, whatever its size. Read
//! sources (`r`) are content objects already in the store, in any mode:
//! uncompressed object files are read in place (`pread`); an `archive`
//! store's `.filez` is inflated once into a scratch file for random access.
//! bsdiff patches are applied by streaming [`Patcher`] stretches.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::PartError;
use super::payload::PartData;
use crate::ostree::content::MAX_SYMLINK_TARGET;
use crate::ostree::delta::bspatch::{CONTROL_LEN, Control, Patcher};
use crate::ostree::delta::opcodes::MAX_OP_LEN;
use crate::ostree::delta::part::{FileMode, XattrTableFrame, parse_xattr_entry, read_offset};
use crate::ostree::delta::{
    BspatchError, DeltaError, Op, OpChecker, PayloadLayout, Step, WriteSource,
};
use crate::ostree::{
    Checksum, Commit, DirMeta, DirTree, FileHeader, FormatError, ObjectName, ObjectType, Xattrs,
};
use crate::store::{StoreError, Transaction};

const OPS_WINDOW: usize = 64 * 1024;
const MODE_ENTRY_LEN: u64 = 12;
const COPY_CHUNK: usize = 128 * 1024;

/// What applying a part did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PartStats {
    /// Objects written by this part.
    pub written: u64,
    /// Objects the part lists that were already present.
    pub present: u64,
}

/// Applies the payload `data` of a part creating `objects`.
pub(crate) fn execute_part(
    txn: &Transaction<'_>,
    objects: &[ObjectName],
    data: &PartData,
    interrupt: &AtomicBool,
) -> Result<PartStats, PartError> {
    let len = data.len();
    let tail_len = PayloadLayout::tail_len(len)? as u64;
    if tail_len > len {
        return Err(DeltaError::Format(FormatError::Truncated {
            what: "delta part payload",
        })
        .into());
    }
    let tail = data
        .read_range(&(len - tail_len..len))
        .map_err(PartError::Io)?;
    let layout = PayloadLayout::from_tail(len, &tail)?;
    let tables = Tables::open(data, &layout, interrupt)?;
    let blob_len = layout.blob.end - layout.blob.start;
    let (n_modes, n_xattrs) = (tables.mode_count, tables.xattr_count());
    let mut exec = Exec {
        txn,
        data,
        blob_start: layout.blob.start,
        tables,
        ops: OpStream {
            start: layout.ops.start,
            end: layout.ops.end,
            pos: layout.ops.start,
            base: layout.ops.start,
            buf: Vec::new(),
        },
        checker: OpChecker::new(objects, blob_len, 0, 0),
        read_source: None,
        pending: None,
        interrupt,
        stats: PartStats::default(),
    };
    exec.checker = OpChecker::new(objects, blob_len, n_modes, n_xattrs);
    exec.run()?;
    Ok(exec.stats)
}

/// The part's mode and xattr tables, read from the payload entry by entry
/// as objects use them. A table's bytes are bounded ([`MAX_TABLES_SIZE`])
/// but can frame millions of empty entries, so they are never parsed whole
/// (4 million empty xattr lists took 351 MB): the xattr table's framing is
/// checked as a stream up front, and each entry parsed when used.
///
/// [`MAX_TABLES_SIZE`]: crate::ostree::delta::part::MAX_TABLES_SIZE
struct Tables {
    modes_start: u64,
    mode_count: usize,
    xattrs_start: u64,
    xattrs: XattrTableFrame,
    /// The last xattr entry parsed: a part's objects mostly share one.
    cached: Option<(usize, Xattrs)>,
}

impl Tables {
    fn open(
        data: &PartData,
        layout: &PayloadLayout,
        interrupt: &AtomicBool,
    ) -> Result<Tables, PartError> {
        let modes_len = layout.modes.end - layout.modes.start;
        if !modes_len.is_multiple_of(MODE_ENTRY_LEN) {
            return Err(DeltaError::Format(FormatError::NotNormalForm {
                what: "delta part mode table",
            })
            .into());
        }
        let xattrs_len = layout.xattrs.end - layout.xattrs.start;
        let w = XattrTableFrame::width(xattrs_len)?;
        let mut last = vec![0u8; w];
        data.read_exact_at(layout.xattrs.end - w as u64, &mut last)
            .map_err(PartError::Io)?;
        let frame = XattrTableFrame::from_last_offset(xattrs_len, &last)?;
        // Every framing offset, a window at a time.
        let mut buf = vec![0u8; OPS_WINDOW / 8 * 8];
        let mut pos = frame.offset_pos(0);
        let mut prev_end = 0;
        while pos < xattrs_len {
            if interrupt.load(Ordering::Relaxed) {
                return Err(PartError::Interrupted);
            }
            let n = (xattrs_len - pos).min(buf.len() as u64) as usize;
            data.read_exact_at(layout.xattrs.start + pos, &mut buf[..n])
                .map_err(PartError::Io)?;
            prev_end = frame.check_offsets(&buf[..n], prev_end)?;
            pos += n as u64;
        }
        Ok(Tables {
            modes_start: layout.modes.start,
            mode_count: usize::try_from(modes_len / MODE_ENTRY_LEN).unwrap_or(usize::MAX),
            xattrs_start: layout.xattrs.start,
            xattrs: frame,
            cached: None,
        })
    }

    fn xattr_count(&self) -> usize {
        usize::try_from(self.xattrs.count).unwrap_or(usize::MAX)
    }

    /// Mode entry `i` (the checker has bounded `i`).
    fn mode(&self, data: &PartData, i: usize) -> Result<FileMode, PartError> {
        let mut e = [0u8; MODE_ENTRY_LEN as usize];
        data.read_exact_at(self.modes_start + i as u64 * MODE_ENTRY_LEN, &mut e)
            .map_err(PartError::Io)?;
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Ok(FileMode {
            uid: be(&e[0..4]),
            gid: be(&e[4..8]),
            mode: be(&e[8..12]),
        })
    }

    /// Xattr entry `i` (the checker has bounded `i`), parsed and checked.
    fn xattrs(&mut self, data: &PartData, i: usize) -> Result<Xattrs, PartError> {
        if let Some((c, x)) = &self.cached
            && *c == i
        {
            return Ok(x.clone());
        }
        let f = &self.xattrs;
        let w = f.width;
        let mut off = [0u8; 8];
        let mut end_of = |k: u64| -> Result<u64, PartError> {
            data.read_exact_at(self.xattrs_start + f.offset_pos(k), &mut off[..w])
                .map_err(PartError::Io)?;
            Ok(read_offset(&off[..w]))
        };
        let start = if i == 0 { 0 } else { end_of(i as u64 - 1)? };
        let end = end_of(i as u64)?;
        let bytes = data
            .read_range(&(self.xattrs_start + start..self.xattrs_start + end))
            .map_err(PartError::Io)?;
        let x = parse_xattr_entry(&bytes)?;
        self.cached = Some((i, x.clone()));
        Ok(x)
    }
}

/// The opcode stream, read through a small window.
struct OpStream {
    start: u64,
    end: u64,
    pos: u64,
    /// Payload offset of `buf[0]`.
    base: u64,
    buf: Vec<u8>,
}

/// A read source's data.
struct ReadSource {
    checksum: Checksum,
    size: u64,
    /// `None` for an empty object (a symlink or empty file).
    file: Option<Arc<File>>,
}

impl ReadSource {
    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Result<(), PartError> {
        let range_err = || PartError::ReadSourceRange {
            checksum: self.checksum,
            offset: off,
            len: buf.len() as u64,
            size: self.size,
        };
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(range_err());
        }
        match &self.file {
            Some(f) => f.read_exact_at(buf, off).map_err(PartError::Io),
            None if buf.is_empty() => Ok(()),
            None => Err(range_err()),
        }
    }
}

struct Exec<'a, 't> {
    txn: &'a Transaction<'t>,
    data: &'a PartData,
    blob_start: u64,
    tables: Tables,
    ops: OpStream,
    checker: OpChecker<'a>,
    read_source: Option<ReadSource>,
    /// An error met inside a content reader, which `write_content` can
    /// only see as an I/O error.
    pending: Option<PartError>,
    interrupt: &'a AtomicBool,
    stats: PartStats,
}

impl Exec<'_, '_> {
    fn check_interrupt(&self) -> Result<(), PartError> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(PartError::Interrupted);
        }
        Ok(())
    }

    /// The next checked step; `None` at the end of a valid stream.
    fn next_step(&mut self) -> Result<Option<Step>, PartError> {
        let s = &mut self.ops;
        let at = s.pos - s.start;
        if s.pos == s.end {
            self.checker.finish(at)?;
            return Ok(None);
        }
        let have = s.base + s.buf.len() as u64 - s.pos;
        if have < MAX_OP_LEN as u64 && s.base + (s.buf.len() as u64) < s.end {
            let n = (s.end - s.pos).min(OPS_WINDOW as u64) as usize;
            s.buf.resize(n, 0);
            s.base = s.pos;
            self.data
                .read_exact_at(s.pos, &mut s.buf)
                .map_err(PartError::Io)?;
        }
        let window = &s.buf[(s.pos - s.base) as usize..];
        let (op, n) = Op::decode(window, self.checker.next_is_meta())
            .map_err(|error| DeltaError::Op { offset: at, error })?;
        s.pos += n as u64;
        Ok(Some(self.checker.check(op, at)?))
    }

    fn blob(&self, r: &Range<u64>) -> Range<u64> {
        self.blob_start + r.start..self.blob_start + r.end
    }

    fn run(&mut self) -> Result<(), PartError> {
        while let Some(step) = self.next_step()? {
            self.check_interrupt()?;
            match step {
                Step::SpliceMeta { object, blob } => self.splice_meta(object, &blob)?,
                Step::SpliceContent {
                    object,
                    mode,
                    xattr,
                    blob,
                } => self.splice_content(object, mode, xattr, &blob)?,
                Step::Open {
                    object,
                    mode,
                    xattr,
                    size,
                } => self.open(object, mode, xattr, size)?,
                Step::SetReadSource { blob } => self.set_read_source(&blob)?,
                Step::UnsetReadSource => self.read_source = None,
                // Only zero-length writes and patches reach here: an open
                // object's bytes are all consumed by its reader, and the
                // checker refuses writes past its size.
                Step::Write(_) | Step::Bspatch { .. } => {}
                Step::Close { .. } => self.read_source = None,
            }
        }
        Ok(())
    }

    fn present(&mut self, object: &ObjectName) -> Result<bool, PartError> {
        if self.txn.has_object(object)? {
            self.stats.present += 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn splice_meta(&mut self, object: ObjectName, blob: &Range<u64>) -> Result<(), PartError> {
        self.read_source = None;
        if self.present(&object)? {
            return Ok(());
        }
        let bytes = self
            .data
            .read_range(&self.blob(blob))
            .map_err(PartError::Io)?;
        // Checked before its structure, so a mismatch is reported as such.
        let actual = Checksum::digest(&bytes);
        if actual != object.checksum {
            return Err(PartError::ObjectChecksum { object, actual });
        }
        let parsed = match object.objtype {
            ObjectType::DirTree => DirTree::parse(&bytes).map(drop),
            ObjectType::DirMeta => DirMeta::parse(&bytes).map(drop),
            ObjectType::Commit => Commit::parse(&bytes).map(drop),
            // The checker only lets the three types above through.
            _ => Ok(()),
        };
        parsed.map_err(|source| PartError::InvalidObject { object, source })?;
        self.txn
            .write_metadata(object.objtype, &bytes, Some(object.checksum))?;
        self.stats.written += 1;
        Ok(())
    }

    fn header(&mut self, mode: usize, xattr: usize) -> Result<FileHeader, PartError> {
        let m = self.tables.mode(self.data, mode)?;
        Ok(FileHeader {
            uid: m.uid,
            gid: m.gid,
            mode: m.mode,
            symlink_target: String::new(),
            xattrs: self.tables.xattrs(self.data, xattr)?,
        })
    }

    fn splice_content(
        &mut self,
        object: ObjectName,
        mode: usize,
        xattr: usize,
        blob: &Range<u64>,
    ) -> Result<(), PartError> {
        self.read_source = None;
        if self.present(&object)? {
            return Ok(());
        }
        let mut header = self.header(mode, xattr)?;
        let range = self.blob(blob);
        let invalid = |source| PartError::InvalidObject { object, source };
        let size = if header.is_symlink() {
            if range.end - range.start > MAX_SYMLINK_TARGET as u64 {
                return Err(invalid(FormatError::InvalidSymlinkTarget {
                    target: String::new(),
                    reason: "longer than PATH_MAX",
                }));
            }
            let target = self.data.read_range(&range).map_err(PartError::Io)?;
            header.symlink_target = String::from_utf8(target).map_err(|_| {
                invalid(FormatError::InvalidSymlinkTarget {
                    target: String::new(),
                    reason: "not UTF-8",
                })
            })?;
            0
        } else {
            range.end - range.start
        };
        header.validate().map_err(invalid)?;
        let reader = self.data.reader(if size == 0 {
            range.start..range.start
        } else {
            range
        });
        write_content(self.txn, &header, size, reader, object)?;
        self.stats.written += 1;
        Ok(())
    }

    fn open(
        &mut self,
        object: ObjectName,
        mode: usize,
        xattr: usize,
        size: u64,
    ) -> Result<(), PartError> {
        if self.present(&object)? {
            // Walk to its `c` without reading any data.
            loop {
                match self.next_step()? {
                    Some(Step::Close { .. }) => {
                        self.read_source = None;
                        return Ok(());
                    }
                    Some(Step::SetReadSource { .. }) | Some(Step::UnsetReadSource) => {}
                    Some(_) => {}
                    // next_step reports a stream ending with an open object.
                    None => return Ok(()),
                }
            }
        }
        let header = self.header(mode, xattr)?;
        if !header.is_regular() {
            return Err(PartError::InvalidObject {
                object,
                source: FormatError::InvalidMode {
                    what: "object opened with 'o' (must be a regular file)",
                    mode: header.mode,
                },
            });
        }
        header
            .validate()
            .map_err(|source| PartError::InvalidObject { object, source })?;
        let txn = self.txn;
        let reader = OpReader {
            exec: self,
            size,
            produced: 0,
            current: Current::Idle,
        };
        match write_content(txn, &header, size, reader, object) {
            Ok(()) => {}
            Err(PartError::Store(StoreError::SourceRead(e))) => {
                return Err(self.pending.take().unwrap_or(PartError::Io(e)));
            }
            Err(e) => return Err(e),
        }
        self.stats.written += 1;
        Ok(())
    }

    fn set_read_source(&mut self, blob: &Range<u64>) -> Result<(), PartError> {
        let mut raw = [0u8; 32];
        self.data
            .read_exact_at(self.blob(blob).start, &mut raw)
            .map_err(PartError::Io)?;
        let checksum = Checksum::from_array(raw);
        if self
            .read_source
            .as_ref()
            .is_some_and(|s| s.checksum == checksum)
        {
            return Ok(());
        }
        self.read_source = Some(open_read_source(self.txn, checksum)?);
        Ok(())
    }
}

/// Opens a content object of the store for random reads.
fn open_read_source(txn: &Transaction<'_>, checksum: Checksum) -> Result<ReadSource, PartError> {
    let obj = match txn.repo().open_content(&checksum) {
        Ok(o) => o,
        Err(StoreError::MissingObject(_)) => return Err(PartError::ReadSourceMissing(checksum)),
        Err(e) => return Err(PartError::Store(e)),
    };
    let size = obj.size;
    if size == 0 {
        return Ok(ReadSource {
            checksum,
            size,
            file: None,
        });
    }
    if let Some(f) = obj.file {
        return Ok(ReadSource {
            checksum,
            size,
            file: Some(f),
        });
    }
    // Compressed (archive): inflate once into a scratch file.
    let mut scratch = txn.scratch_file()?;
    let copied = std::io::copy(&mut obj.reader.take(size), &mut scratch).map_err(PartError::Io)?;
    if copied != size {
        return Err(PartError::Store(StoreError::BadObject {
            object: ObjectName::new(checksum, ObjectType::File),
            reason: format!("holds {copied} of its {size} bytes"),
        }));
    }
    scratch.flush().map_err(PartError::Io)?;
    Ok(ReadSource {
        checksum,
        size,
        file: Some(Arc::new(scratch)),
    })
}

fn write_content(
    txn: &Transaction<'_>,
    header: &FileHeader,
    size: u64,
    reader: impl Read,
    object: ObjectName,
) -> Result<(), PartError> {
    match txn.write_content(header, size, reader, Some(object.checksum)) {
        Ok(_) => Ok(()),
        Err(StoreError::Format(source)) => Err(PartError::InvalidObject { object, source }),
        Err(e) => Err(e.into()),
    }
}

/// The data of an `o … c` object, produced step by step.
struct OpReader<'e, 'a, 't> {
    exec: &'e mut Exec<'a, 't>,
    size: u64,
    produced: u64,
    current: Current,
}

enum Current {
    Idle,
    /// Payload bytes `pos..end`.
    Blob {
        pos: u64,
        end: u64,
    },
    /// Read-source bytes `pos..end`.
    Source {
        pos: u64,
        end: u64,
    },
    Patch(Box<PatchState>),
}

struct PatchState {
    patcher: Patcher,
    /// Payload offsets of the rest of the patch.
    pos: u64,
    end: u64,
    diff_left: u64,
    old_pos: u64,
    extra_left: u64,
    old_buf: Vec<u8>,
}

impl OpReader<'_, '_, '_> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, PartError> {
        loop {
            let want = buf.len().min(COPY_CHUNK);
            match &mut self.current {
                Current::Blob { pos, end } if *pos < *end => {
                    let n = ((*end - *pos) as usize).min(want);
                    self.exec
                        .data
                        .read_exact_at(*pos, &mut buf[..n])
                        .map_err(PartError::Io)?;
                    *pos += n as u64;
                    return Ok(n);
                }
                Current::Source { pos, end } if *pos < *end => {
                    let n = ((*end - *pos) as usize).min(want);
                    let src = self.exec.read_source.as_ref().ok_or(DeltaError::Op {
                        offset: self.exec.ops.pos - self.exec.ops.start,
                        error: crate::ostree::delta::OpError::NoReadSource { op: 'w' },
                    })?;
                    src.read_exact_at(*pos, &mut buf[..n])?;
                    *pos += n as u64;
                    return Ok(n);
                }
                Current::Patch(_) => {}
                _ => {}
            }
            if matches!(self.current, Current::Patch(_)) {
                let n = self.patch(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.current = Current::Idle;
                continue;
            }
            if self.produced == self.size {
                return Ok(0);
            }
            self.exec.check_interrupt()?;
            let step = self.exec.next_step()?;
            match step {
                Some(Step::Write(WriteSource::Blob(r))) => {
                    let r = self.exec.blob(&r);
                    self.current = Current::Blob {
                        pos: r.start,
                        end: r.end,
                    };
                }
                Some(Step::Write(WriteSource::ReadSource { offset, len })) => {
                    let src = self.exec.read_source.as_ref().expect("checker tracks it");
                    let end = offset.checked_add(len).filter(|e| *e <= src.size).ok_or(
                        PartError::ReadSourceRange {
                            checksum: src.checksum,
                            offset,
                            len,
                            size: src.size,
                        },
                    )?;
                    self.current = Current::Source { pos: offset, end };
                }
                Some(Step::SetReadSource { blob }) => self.exec.set_read_source(&blob)?,
                Some(Step::UnsetReadSource) => self.exec.read_source = None,
                Some(Step::Bspatch { patch, size }) => {
                    let old_size = self.exec.read_source.as_ref().map_or(0, |s| s.size);
                    let r = self.exec.blob(&patch);
                    self.current = Current::Patch(Box::new(PatchState {
                        patcher: Patcher::new(old_size, size),
                        pos: r.start,
                        end: r.end,
                        diff_left: 0,
                        old_pos: 0,
                        extra_left: 0,
                        old_buf: vec![0u8; COPY_CHUNK],
                    }));
                }
                // The checker refuses anything else while an object is
                // open and short (a `c` before its size, another object,
                // the end of the stream).
                Some(other) => unreachable!("checker let {other:?} through an open object"),
                None => unreachable!("checker let the stream end inside an open object"),
            }
        }
    }

    /// The next bytes of the patch being applied; 0 once it is done.
    fn patch(&mut self, buf: &mut [u8]) -> Result<usize, PartError> {
        let Current::Patch(p) = &mut self.current else {
            return Ok(0);
        };
        let data = self.exec.data;
        let truncated = || PartError::Format(DeltaError::Bspatch(BspatchError::Truncated));
        loop {
            let want = buf.len().min(COPY_CHUNK);
            if p.diff_left > 0 || p.extra_left > 0 {
                let diff = p.diff_left > 0;
                let left = if diff { p.diff_left } else { p.extra_left };
                let n = (left as usize).min(want);
                if p.pos + n as u64 > p.end {
                    return Err(truncated());
                }
                data.read_exact_at(p.pos, &mut buf[..n])
                    .map_err(PartError::Io)?;
                p.pos += n as u64;
                if diff {
                    let src = self.exec.read_source.as_ref().expect("B needs a source");
                    src.read_exact_at(p.old_pos, &mut p.old_buf[..n])?;
                    for (b, o) in buf[..n].iter_mut().zip(&p.old_buf[..n]) {
                        *b = b.wrapping_add(*o);
                    }
                    p.old_pos += n as u64;
                    p.diff_left -= n as u64;
                } else {
                    p.extra_left -= n as u64;
                }
                return Ok(n);
            }
            if p.patcher.is_done() {
                return Ok(0);
            }
            let mut ctrl = [0u8; CONTROL_LEN];
            if p.pos + CONTROL_LEN as u64 > p.end {
                return Err(truncated());
            }
            data.read_exact_at(p.pos, &mut ctrl)
                .map_err(PartError::Io)?;
            p.pos += CONTROL_LEN as u64;
            let s = p.patcher.next(Control::parse(&ctrl)?)?;
            p.old_pos = s.old_start;
            p.diff_left = s.diff;
            p.extra_left = s.extra;
        }
    }
}

impl Read for OpReader<'_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = (self.size - self.produced).min(buf.len() as u64) as usize;
        if room == 0 && self.produced == self.size {
            return Ok(0);
        }
        match self.fill(&mut buf[..room]) {
            Ok(n) => {
                self.produced += n as u64;
                Ok(n)
            }
            Err(e) => {
                let msg = e.to_string();
                self.exec.pending = Some(e);
                Err(std::io::Error::other(msg))
            }
        }
    }
}
