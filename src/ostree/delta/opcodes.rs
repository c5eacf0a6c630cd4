//! A part's opcode stream (§8.4).
//!
//! Each operation is one byte followed by unsigned LEB128 varints (at most
//! 10 bytes each). A cursor walks the part's object list: `S` creates the
//! next object whole from the data blob, `o` … `c` builds the next content
//! object from `w` (blob or read-source bytes) and `B` (a bsdiff patch
//! applied to the read source set by `r`).
//!
//! [`Op`] is one operation as encoded; [`OpChecker`] follows the stream's
//! state and turns each op into a [`Step`] whose blob ranges, table indexes
//! and objects are all checked, so the code that executes a step only has
//! to read what it names. Read-source offsets are checked by that code,
//! since only it knows the source's size.

use std::ops::Range;

use super::super::object::{ObjectName, ObjectType};
use super::error::{DeltaError, OpError, Result};

pub const OP_OPEN_SPLICE_AND_CLOSE: u8 = b'S';
pub const OP_OPEN: u8 = b'o';
pub const OP_WRITE: u8 = b'w';
pub const OP_SET_READ_SOURCE: u8 = b'r';
pub const OP_UNSET_READ_SOURCE: u8 = b'R';
pub const OP_CLOSE: u8 = b'c';
pub const OP_BSPATCH: u8 = b'B';

/// Longest varint libostree reads.
pub const MAX_VARINT_LEN: usize = 10;
/// Longest encoded operation (`S` of a content object: 4 varints).
pub const MAX_OP_LEN: usize = 1 + 4 * MAX_VARINT_LEN;
/// Largest metadata object a delta may splice (libostree's metadata limit).
pub const MAX_SPLICED_METADATA: u64 = super::super::gv::MAX_METADATA_SIZE as u64;

/// Reads one varint from the start of `buf`: value and bytes used.
pub fn read_varint(buf: &[u8]) -> std::result::Result<(u64, usize), OpError> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return Err(OpError::VarintTooLong);
        }
        // Bits past 64 are dropped, as libostree's reader does.
        v |= u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(OpError::VarintTooLong)
    } else {
        Err(OpError::Truncated)
    }
}

pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// One operation as encoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `S` for a metadata object: its serialized bytes are `blob[offset..+len]`.
    SpliceMeta { len: u64, offset: u64 },
    /// `S` for a content object: file data (or symlink target) from the
    /// blob, metadata from the tables.
    SpliceContent {
        mode: u64,
        xattr: u64,
        len: u64,
        offset: u64,
    },
    /// `o`: start a regular file of `size` bytes.
    Open { mode: u64, xattr: u64, size: u64 },
    /// `w`: append `len` bytes from the read source at `offset`, or from
    /// the blob when no read source is set.
    Write { len: u64, offset: u64 },
    /// `r`: the read source is the content object whose raw checksum is
    /// `blob[offset..+32]`.
    SetReadSource { offset: u64 },
    /// `R`
    UnsetReadSource,
    /// `c`: finish the open object.
    Close,
    /// `B`: the open object is the read source patched by
    /// `blob[offset..+len]`.
    Bspatch { offset: u64, len: u64 },
}

impl Op {
    /// Decodes the operation at the start of `buf`. What `S` carries
    /// depends on the object it creates: `next_is_meta` says whether that
    /// is a metadata object. Returns the op and its encoded length.
    pub fn decode(buf: &[u8], next_is_meta: bool) -> std::result::Result<(Op, usize), OpError> {
        let (&code, mut rest) = buf.split_first().ok_or(OpError::Truncated)?;
        let mut used = 1;
        let mut arg = || -> std::result::Result<u64, OpError> {
            let (v, n) = read_varint(rest)?;
            rest = &rest[n..];
            used += n;
            Ok(v)
        };
        let op = match code {
            OP_OPEN_SPLICE_AND_CLOSE if next_is_meta => {
                let len = arg()?;
                Op::SpliceMeta {
                    len,
                    offset: arg()?,
                }
            }
            OP_OPEN_SPLICE_AND_CLOSE => {
                let (mode, xattr, len) = (arg()?, arg()?, arg()?);
                Op::SpliceContent {
                    mode,
                    xattr,
                    len,
                    offset: arg()?,
                }
            }
            OP_OPEN => {
                let (mode, xattr) = (arg()?, arg()?);
                Op::Open {
                    mode,
                    xattr,
                    size: arg()?,
                }
            }
            OP_WRITE => {
                let len = arg()?;
                Op::Write {
                    len,
                    offset: arg()?,
                }
            }
            OP_SET_READ_SOURCE => Op::SetReadSource { offset: arg()? },
            OP_UNSET_READ_SOURCE => Op::UnsetReadSource,
            OP_CLOSE => Op::Close,
            OP_BSPATCH => {
                let offset = arg()?;
                Op::Bspatch {
                    offset,
                    len: arg()?,
                }
            }
            other => return Err(OpError::UnknownOpcode(other)),
        };
        Ok((op, used))
    }

    pub fn code(&self) -> u8 {
        match self {
            Op::SpliceMeta { .. } | Op::SpliceContent { .. } => OP_OPEN_SPLICE_AND_CLOSE,
            Op::Open { .. } => OP_OPEN,
            Op::Write { .. } => OP_WRITE,
            Op::SetReadSource { .. } => OP_SET_READ_SOURCE,
            Op::UnsetReadSource => OP_UNSET_READ_SOURCE,
            Op::Close => OP_CLOSE,
            Op::Bspatch { .. } => OP_BSPATCH,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        let args: &[u64] = match self {
            Op::SpliceMeta { len, offset } => &[*len, *offset],
            Op::SpliceContent {
                mode,
                xattr,
                len,
                offset,
            } => &[*mode, *xattr, *len, *offset],
            Op::Open { mode, xattr, size } => &[*mode, *xattr, *size],
            Op::Write { len, offset } => &[*len, *offset],
            Op::SetReadSource { offset } => &[*offset],
            Op::UnsetReadSource | Op::Close => &[],
            Op::Bspatch { offset, len } => &[*offset, *len],
        };
        for a in args {
            write_varint(out, *a);
        }
    }
}

/// Encodes a whole stream.
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Where a `w` reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteSource {
    Blob(Range<u64>),
    /// `len` bytes at `offset` of the read source (checked by the caller).
    ReadSource {
        offset: u64,
        len: u64,
    },
}

/// A checked operation, ready to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write metadata object `object` from `blob` (then it is closed).
    SpliceMeta {
        object: ObjectName,
        blob: Range<u64>,
    },
    /// Write content object `object`: mode and xattr table entries, and
    /// its data (or symlink target) in `blob` (then it is closed).
    SpliceContent {
        object: ObjectName,
        mode: usize,
        xattr: usize,
        blob: Range<u64>,
    },
    /// Start content object `object`, a regular file of `size` bytes.
    Open {
        object: ObjectName,
        mode: usize,
        xattr: usize,
        size: u64,
    },
    Write(WriteSource),
    /// The read source's raw checksum is `blob` (32 bytes).
    SetReadSource {
        blob: Range<u64>,
    },
    UnsetReadSource,
    /// The open object has all its bytes.
    Close {
        object: ObjectName,
    },
    /// The open object is the read source patched with `patch`; it
    /// produces the object's `size` bytes.
    Bspatch {
        patch: Range<u64>,
        size: u64,
    },
}

/// Follows a part's opcode stream, checking every operation against the
/// part's object list, blob length and tables.
#[derive(Clone, Debug)]
pub struct OpChecker<'o> {
    objects: &'o [ObjectName],
    next: usize,
    /// Index, size and bytes written so far of the object open with `o`.
    open: Option<(usize, u64, u64)>,
    read_source: bool,
    blob_len: u64,
    n_modes: usize,
    n_xattrs: usize,
}

impl<'o> OpChecker<'o> {
    pub fn new(objects: &'o [ObjectName], blob_len: u64, n_modes: usize, n_xattrs: usize) -> Self {
        OpChecker {
            objects,
            next: 0,
            open: None,
            read_source: false,
            blob_len,
            n_modes,
            n_xattrs,
        }
    }

    /// Whether the object the next `S` would create is metadata (decides
    /// how `S` is decoded). At the end of the list, content.
    pub fn next_is_meta(&self) -> bool {
        self.objects
            .get(self.next)
            .is_some_and(|o| o.objtype.is_meta())
    }

    /// How many objects were created (closed) so far.
    pub fn created(&self) -> usize {
        self.next
    }

    fn blob(&self, op: char, offset: u64, length: u64) -> std::result::Result<Range<u64>, OpError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.blob_len => Ok(offset..end),
            _ => Err(OpError::BlobRange {
                op,
                offset,
                length,
                blob_len: self.blob_len,
            }),
        }
    }

    fn mode(&self, op: char, index: u64) -> std::result::Result<usize, OpError> {
        usize::try_from(index)
            .ok()
            .filter(|i| *i < self.n_modes)
            .ok_or(OpError::ModeIndex {
                op,
                index,
                count: self.n_modes,
            })
    }

    fn xattr(&self, op: char, index: u64) -> std::result::Result<usize, OpError> {
        usize::try_from(index)
            .ok()
            .filter(|i| *i < self.n_xattrs)
            .ok_or(OpError::XattrIndex {
                op,
                index,
                count: self.n_xattrs,
            })
    }

    /// The next object, which `op` is about to create.
    fn take_next(&self, op: char, meta: bool) -> std::result::Result<ObjectName, OpError> {
        if let Some((index, ..)) = self.open {
            return Err(OpError::StillOpen { op, index });
        }
        let object = *self.objects.get(self.next).ok_or(OpError::NoObjectLeft {
            op,
            index: self.next,
            count: self.objects.len(),
        })?;
        let creatable = if meta {
            matches!(
                object.objtype,
                ObjectType::DirTree | ObjectType::DirMeta | ObjectType::Commit
            )
        } else {
            object.objtype == ObjectType::File
        };
        if !creatable {
            return Err(OpError::WrongObjectType {
                op,
                index: self.next,
                objtype: object.objtype.name(),
            });
        }
        Ok(object)
    }

    /// Checks `op`, found at byte `at` of the stream, and advances.
    pub fn check(&mut self, op: Op, at: u64) -> Result<Step> {
        self.check_inner(op)
            .map_err(|error| DeltaError::Op { offset: at, error })
    }

    fn check_inner(&mut self, op: Op) -> std::result::Result<Step, OpError> {
        let c = op.code() as char;
        match op {
            Op::SpliceMeta { len, offset } => {
                let object = self.take_next(c, true)?;
                if len > MAX_SPLICED_METADATA {
                    return Err(OpError::MetadataTooLarge {
                        op: c,
                        length: len,
                        max: MAX_SPLICED_METADATA,
                    });
                }
                let blob = self.blob(c, offset, len)?;
                self.close();
                Ok(Step::SpliceMeta { object, blob })
            }
            Op::SpliceContent {
                mode,
                xattr,
                len,
                offset,
            } => {
                let object = self.take_next(c, false)?;
                let (mode, xattr) = (self.mode(c, mode)?, self.xattr(c, xattr)?);
                let blob = self.blob(c, offset, len)?;
                self.close();
                Ok(Step::SpliceContent {
                    object,
                    mode,
                    xattr,
                    blob,
                })
            }
            Op::Open { mode, xattr, size } => {
                let object = self.take_next(c, false)?;
                let (mode, xattr) = (self.mode(c, mode)?, self.xattr(c, xattr)?);
                self.open = Some((self.next, size, 0));
                Ok(Step::Open {
                    object,
                    mode,
                    xattr,
                    size,
                })
            }
            Op::Write { len, offset } => {
                let source = if self.read_source {
                    WriteSource::ReadSource { offset, len }
                } else {
                    WriteSource::Blob(self.blob(c, offset, len)?)
                };
                self.advance_open(c, len)?;
                Ok(Step::Write(source))
            }
            Op::SetReadSource { offset } => {
                let blob = self.blob(c, offset, 32)?;
                self.read_source = true;
                Ok(Step::SetReadSource { blob })
            }
            Op::UnsetReadSource => {
                self.read_source = false;
                Ok(Step::UnsetReadSource)
            }
            Op::Close => {
                let (index, size, written) = self.open.ok_or(OpError::NotOpen { op: c })?;
                if written != size {
                    return Err(OpError::Short {
                        index,
                        written,
                        size,
                    });
                }
                let object = self.objects[index];
                self.close();
                Ok(Step::Close { object })
            }
            Op::Bspatch { offset, len } => {
                if !self.read_source {
                    return Err(OpError::NoReadSource { op: c });
                }
                let patch = self.blob(c, offset, len)?;
                let (_, size, _) = self.open.ok_or(OpError::NotOpen { op: c })?;
                // The patch produces the whole object: nothing may have
                // been written before it.
                self.advance_open(c, size)?;
                Ok(Step::Bspatch { patch, size })
            }
        }
    }

    fn advance_open(&mut self, op: char, length: u64) -> std::result::Result<(), OpError> {
        let (index, size, written) = self.open.ok_or(OpError::NotOpen { op })?;
        match written.checked_add(length) {
            Some(w) if w <= size => {
                self.open = Some((index, size, w));
                Ok(())
            }
            _ => Err(OpError::Overrun {
                op,
                written,
                length,
                size,
            }),
        }
    }

    /// Finishes the current object: like libostree's `close`, it also
    /// clears the read source.
    fn close(&mut self) {
        self.open = None;
        self.read_source = false;
        self.next += 1;
    }

    /// Checks the stream may end here, `at` bytes in: nothing open, every
    /// listed object created.
    pub fn finish(&self, at: u64) -> Result<()> {
        let error = if let Some((index, ..)) = self.open {
            OpError::EndsOpen { index }
        } else if self.next != self.objects.len() {
            OpError::ObjectsLeft {
                created: self.next,
                count: self.objects.len(),
            }
        } else {
            return Ok(());
        };
        Err(DeltaError::Op { offset: at, error })
    }
}

/// Decodes and checks a whole opcode stream held in memory.
pub struct Decoder<'a, 'o> {
    ops: &'a [u8],
    pos: usize,
    checker: OpChecker<'o>,
    done: bool,
}

impl<'a, 'o> Decoder<'a, 'o> {
    pub fn new(ops: &'a [u8], checker: OpChecker<'o>) -> Self {
        Decoder {
            ops,
            pos: 0,
            checker,
            done: false,
        }
    }
}

impl Iterator for Decoder<'_, '_> {
    type Item = Result<Step>;

    fn next(&mut self) -> Option<Result<Step>> {
        if self.done {
            return None;
        }
        let at = self.pos as u64;
        if self.pos == self.ops.len() {
            self.done = true;
            return self.checker.finish(at).err().map(Err);
        }
        let decoded = Op::decode(&self.ops[self.pos..], self.checker.next_is_meta());
        let r = decoded
            .map_err(|error| DeltaError::Op { offset: at, error })
            .and_then(|(op, n)| {
                self.pos += n;
                self.checker.check(op, at)
            });
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::checksum::Checksum;
    use super::*;

    fn obj(b: u8, t: ObjectType) -> ObjectName {
        ObjectName::new(Checksum::from_array([b; 32]), t)
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        write_varint(&mut v, 551);
        assert_eq!(v, [0xa7, 0x04]);
        for n in [0, 1, 127, 128, 551, u32::MAX as u64, u64::MAX] {
            let mut v = Vec::new();
            write_varint(&mut v, n);
            assert!(v.len() <= MAX_VARINT_LEN);
            assert_eq!(read_varint(&v).unwrap(), (n, v.len()));
        }
        assert_eq!(read_varint(&[0x80]), Err(OpError::Truncated));
        assert_eq!(read_varint(&[0x80; 11]), Err(OpError::VarintTooLong));
        assert_eq!(read_varint(&[]), Err(OpError::Truncated));
    }

    /// The reference sequence `S(551,0) S(0,0,4,551) S(1,0,14,555)`.
    #[test]
    fn reference_sequence() {
        let objects = [
            obj(1, ObjectType::DirTree),
            obj(2, ObjectType::File),
            obj(3, ObjectType::File),
        ];
        let ops = [
            Op::SpliceMeta {
                len: 551,
                offset: 0,
            },
            Op::SpliceContent {
                mode: 0,
                xattr: 0,
                len: 4,
                offset: 551,
            },
            Op::SpliceContent {
                mode: 1,
                xattr: 0,
                len: 14,
                offset: 555,
            },
        ];
        let bytes = encode_ops(&ops);
        assert_eq!(&bytes[..4], b"S\xa7\x04\x00");
        let steps: Vec<Step> = Decoder::new(&bytes, OpChecker::new(&objects, 569, 2, 1))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            steps[0],
            Step::SpliceMeta {
                object: objects[0],
                blob: 0..551
            }
        );
        assert_eq!(
            steps[2],
            Step::SpliceContent {
                object: objects[2],
                mode: 1,
                xattr: 0,
                blob: 555..569
            }
        );
        // One byte less of blob: out of range.
        let e = Decoder::new(&bytes, OpChecker::new(&objects, 568, 2, 1))
            .find_map(|r| r.err())
            .unwrap();
        assert!(matches!(
            e,
            DeltaError::Op {
                error: OpError::BlobRange { .. },
                ..
            }
        ));
        // Mode index out of range.
        let e = Decoder::new(&bytes, OpChecker::new(&objects, 569, 1, 1))
            .find_map(|r| r.err())
            .unwrap();
        assert!(matches!(
            e,
            DeltaError::Op {
                error: OpError::ModeIndex { index: 1, .. },
                ..
            }
        ));
        // Truncated stream.
        let e = Decoder::new(
            &bytes[..bytes.len() - 1],
            OpChecker::new(&objects, 569, 2, 1),
        )
        .find_map(|r| r.err())
        .unwrap();
        assert!(matches!(
            e,
            DeltaError::Op {
                error: OpError::Truncated,
                ..
            }
        ));
        // An object left uncreated.
        let e = Decoder::new(&encode_ops(&ops[..2]), OpChecker::new(&objects, 569, 2, 1))
            .find_map(|r| r.err())
            .unwrap();
        assert!(matches!(
            e,
            DeltaError::Op {
                error: OpError::ObjectsLeft {
                    created: 2,
                    count: 3
                },
                ..
            }
        ));
    }

    #[test]
    fn open_write_close_and_bspatch() {
        let objects = [obj(1, ObjectType::File), obj(2, ObjectType::File)];
        let ops = [
            Op::Open {
                mode: 0,
                xattr: 0,
                size: 10,
            },
            Op::SetReadSource { offset: 0 },
            Op::Write {
                len: 6,
                offset: 100,
            },
            Op::UnsetReadSource,
            Op::Write { len: 4, offset: 32 },
            Op::Close,
            Op::SetReadSource { offset: 0 },
            Op::Open {
                mode: 0,
                xattr: 0,
                size: 7,
            },
            Op::Bspatch {
                offset: 36,
                len: 24,
            },
            Op::Close,
            Op::UnsetReadSource,
        ];
        let bytes = encode_ops(&ops);
        let steps: Vec<Step> = Decoder::new(&bytes, OpChecker::new(&objects, 60, 1, 1))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            steps[2],
            Step::Write(WriteSource::ReadSource {
                offset: 100,
                len: 6
            })
        );
        assert_eq!(steps[4], Step::Write(WriteSource::Blob(32..36)));
        assert_eq!(
            steps[8],
            Step::Bspatch {
                patch: 36..60,
                size: 7
            }
        );
        // Overrun, short close, write with nothing open, B without source.
        let bad: [&[Op]; 4] = [
            &[
                Op::Open {
                    mode: 0,
                    xattr: 0,
                    size: 1,
                },
                Op::Write { len: 2, offset: 0 },
            ],
            &[
                Op::Open {
                    mode: 0,
                    xattr: 0,
                    size: 1,
                },
                Op::Close,
            ],
            &[Op::Write { len: 0, offset: 0 }],
            &[
                Op::Open {
                    mode: 0,
                    xattr: 0,
                    size: 1,
                },
                Op::Bspatch { offset: 0, len: 1 },
            ],
        ];
        for ops in bad {
            assert!(
                Decoder::new(&encode_ops(ops), OpChecker::new(&objects, 60, 1, 1))
                    .any(|r| r.is_err()),
                "{ops:?}"
            );
        }
        // `o` cannot create a metadata object; unknown opcodes fail.
        let meta = [obj(1, ObjectType::DirMeta)];
        let open = encode_ops(&[Op::Open {
            mode: 0,
            xattr: 0,
            size: 1,
        }]);
        assert!(Decoder::new(&open, OpChecker::new(&meta, 0, 1, 1)).any(|r| r.is_err()));
        assert!(Decoder::new(b"Z", OpChecker::new(&meta, 0, 1, 1)).any(|r| r.is_err()));
        // Commitmeta objects are not content-addressed: never created.
        let cm = [obj(1, ObjectType::CommitMeta)];
        let splice = encode_ops(&[Op::SpliceMeta { len: 0, offset: 0 }]);
        assert!(Decoder::new(&splice, OpChecker::new(&cm, 0, 1, 1)).any(|r| r.is_err()));
    }
}
