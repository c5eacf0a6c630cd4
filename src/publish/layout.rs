//! Laying objects out into delta parts: which part each object goes to,
//! the part's mode and xattr tables and opcode stream, and where each byte
//! of its data blob comes from (a [`Segment`]), before any object is read.
//!
//! libostree builds parts one object at a time, reading as it goes; its
//! rules for cutting parts only need sizes, so here the whole layout is
//! decided first (exactly, opcodes included), and the blobs are then filled
//! and compressed one part per core.
//!
//! Part rules (§16 of the format reference): objects go in the order
//! metadata, rollsum'd files, bsdiff'd files, plain regular files,
//! symlinks. A new part starts when the current one holds objects and its
//! size estimate (blob + opcodes + tables, as libostree 2026.3+) plus the
//! object's size would pass `max_chunk_size` (plain objects), or the
//! estimate alone already passes it (rollsum and bsdiff). Objects are
//! never split.

use crate::ostree::delta::opcodes::Op;
use crate::ostree::delta::part::FileMode;
use crate::ostree::{Checksum, ObjectName, ObjectType, Xattrs};

use super::rollsum::Matches;

/// Where bytes of a part's blob come from.
#[derive(Clone, Debug)]
pub enum Segment {
    /// A metadata object, whole.
    Meta(ObjectName),
    /// A content object's data (a regular file's bytes, or a symlink's
    /// target), whole.
    Content(Checksum),
    /// Pieces of a regular file of `size` bytes, `(start, len)` in
    /// ascending order (the literal runs of a rollsum'd file), one after
    /// the other.
    Literals {
        object: Checksum,
        size: u64,
        ranges: Vec<(u64, u64)>,
    },
    /// A bsdiff patch, kept in the generation's scratch file.
    Patch(PatchRef),
    /// Literal bytes: a raw checksum.
    Bytes(Vec<u8>),
}

/// Where a bsdiff patch lies in the scratch file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatchRef {
    pub offset: u64,
    pub len: u64,
}

/// A segment and the number of blob bytes it fills.
#[derive(Clone, Debug)]
pub struct Placed {
    pub segment: Segment,
    pub len: u64,
}

/// One part, laid out.
#[derive(Clone, Debug, Default)]
pub struct PartRecipe {
    pub objects: Vec<ObjectName>,
    pub modes: Vec<FileMode>,
    pub xattrs: Vec<Xattrs>,
    pub ops: Vec<u8>,
    pub segments: Vec<Placed>,
    pub blob_len: u64,
    /// Sum of the objects' sizes (symlinks count 0), for the header.
    pub usize: u64,
    /// Serialized size of the table entries, for the estimate.
    tables_size: u64,
}

impl PartRecipe {
    fn estimate(&self) -> u64 {
        self.blob_len + self.ops.len() as u64 + self.tables_size
    }

    fn push(&mut self, segment: Segment, len: u64) -> u64 {
        let at = self.blob_len;
        self.blob_len += len;
        self.segments.push(Placed { segment, len });
        at
    }

    fn op(&mut self, op: Op) {
        op.encode(&mut self.ops);
    }

    /// Indexes of the mode and xattr table entries, added when new
    /// (tables are deduplicated per part).
    fn tables(&mut self, mode: FileMode, xattrs: &Xattrs) -> (u64, u64) {
        let m = match self.modes.iter().position(|m| *m == mode) {
            Some(i) => i,
            None => {
                self.modes.push(mode);
                self.tables_size += 12;
                self.modes.len() - 1
            }
        };
        let x = match self.xattrs.iter().position(|x| x == xattrs) {
            Some(i) => i,
            None => {
                self.xattrs.push(xattrs.clone());
                self.tables_size += xattrs
                    .iter()
                    .map(|x| x.name.len() as u64 + 1 + x.value.len() as u64 + 2)
                    .sum::<u64>();
                self.xattrs.len() - 1
            }
        };
        (m as u64, x as u64)
    }
}

/// A content object's table entries.
#[derive(Clone, Debug)]
pub struct ContentMeta {
    pub mode: FileMode,
    pub xattrs: Xattrs,
}

/// Builds the part list.
pub struct Layout {
    max_chunk: u64,
    pub parts: Vec<PartRecipe>,
}

impl Layout {
    pub fn new(max_chunk: u64) -> Self {
        Layout {
            max_chunk,
            parts: vec![PartRecipe::default()],
        }
    }

    fn current(&mut self) -> &mut PartRecipe {
        self.parts.last_mut().expect("always one part")
    }

    /// Starts a new part when the current one holds objects and `over`
    /// says it is full.
    fn maybe_cut(&mut self, over: impl Fn(u64) -> bool) {
        let cur = self.current();
        if !cur.objects.is_empty() && over(cur.estimate()) {
            self.parts.push(PartRecipe::default());
        }
    }

    /// A metadata object of `size` bytes, spliced whole.
    pub fn add_meta(&mut self, object: ObjectName, size: u64) {
        let max = self.max_chunk;
        self.maybe_cut(|e| e + size > max);
        let p = self.current();
        p.usize += size;
        p.objects.push(object);
        let at = p.push(Segment::Meta(object), size);
        p.op(Op::SpliceMeta {
            len: size,
            offset: at,
        });
    }

    /// A content object spliced whole: `len` bytes of data, or of symlink
    /// target (`size` is 0 for symlinks, as libostree counts them).
    pub fn add_plain(&mut self, object: Checksum, meta: &ContentMeta, size: u64, len: u64) {
        let max = self.max_chunk;
        self.maybe_cut(|e| e + size > max);
        let p = self.current();
        p.usize += size;
        p.objects.push(ObjectName::new(object, ObjectType::File));
        let (m, x) = p.tables(meta.mode, &meta.xattrs);
        let at = p.push(Segment::Content(object), len);
        p.op(Op::SpliceContent {
            mode: m,
            xattr: x,
            len,
            offset: at,
        });
    }

    /// A regular file rebuilt from its old version `from` and the literal
    /// bytes between `matches`: `o r w… R w… c`.
    pub fn add_rollsum(
        &mut self,
        object: Checksum,
        meta: &ContentMeta,
        size: u64,
        from: Checksum,
        matches: &Matches,
    ) {
        let max = self.max_chunk;
        self.maybe_cut(|e| e > max);
        let p = self.current();
        p.usize += size;
        p.objects.push(ObjectName::new(object, ObjectType::File));
        let (m, x) = p.tables(meta.mode, &meta.xattrs);
        let src = p.push(Segment::Bytes(from.as_bytes().to_vec()), 32);
        p.op(Op::Open {
            mode: m,
            xattr: x,
            size,
        });
        // The literal runs follow each other in the blob, read from the
        // new file in one pass when the part is built.
        let lit_start = p.blob_len;
        let mut lit_end = lit_start;
        let mut ranges = Vec::new();
        let mut written = 0u64;
        let mut reading_blob = true;
        for mt in &matches.matches {
            let prefix = mt.to_start - written;
            if prefix > 0 {
                if !reading_blob {
                    p.op(Op::UnsetReadSource);
                    reading_blob = true;
                }
                ranges.push((written, prefix));
                p.op(Op::Write {
                    len: prefix,
                    offset: lit_end,
                });
                lit_end += prefix;
                written += prefix;
            }
            if reading_blob {
                p.op(Op::SetReadSource { offset: src });
                reading_blob = false;
            }
            p.op(Op::Write {
                len: mt.len,
                offset: mt.from_start,
            });
            written += mt.len;
        }
        if !reading_blob {
            p.op(Op::UnsetReadSource);
        }
        let rest = size - written;
        if rest > 0 {
            ranges.push((written, rest));
            p.op(Op::Write {
                len: rest,
                offset: lit_end,
            });
            lit_end += rest;
        }
        if !ranges.is_empty() {
            p.push(
                Segment::Literals {
                    object,
                    size,
                    ranges,
                },
                lit_end - lit_start,
            );
        }
        p.op(Op::Close);
    }

    /// A regular file made by patching its old version `from`:
    /// `r o B c R`, the patch being mendsley's raw bsdiff stream.
    pub fn add_bsdiff(
        &mut self,
        object: Checksum,
        meta: &ContentMeta,
        size: u64,
        from: Checksum,
        patch: PatchRef,
    ) {
        let max = self.max_chunk;
        self.maybe_cut(|e| e > max);
        let p = self.current();
        p.usize += size;
        p.objects.push(ObjectName::new(object, ObjectType::File));
        let (m, x) = p.tables(meta.mode, &meta.xattrs);
        let src = p.push(Segment::Bytes(from.as_bytes().to_vec()), 32);
        p.op(Op::SetReadSource { offset: src });
        p.op(Op::Open {
            mode: m,
            xattr: x,
            size,
        });
        let len = patch.len;
        let at = p.push(Segment::Patch(patch), len);
        p.op(Op::Bspatch { offset: at, len });
        p.op(Op::Close);
        p.op(Op::UnsetReadSource);
    }

    /// The parts; an empty delta (nothing new) still has its one empty
    /// part, as libostree writes it.
    pub fn finish(self) -> Vec<PartRecipe> {
        self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::delta::opcodes::{Decoder, OpChecker, Step};
    use crate::publish::rollsum::Match;

    fn meta() -> ContentMeta {
        ContentMeta {
            mode: FileMode {
                uid: 0,
                gid: 0,
                mode: 0o100644,
            },
            xattrs: Xattrs::new(),
        }
    }

    #[test]
    fn cuts_parts_by_size() {
        let mut l = Layout::new(100);
        let c = |i: u8| Checksum::from_array([i; 32]);
        l.add_plain(c(1), &meta(), 60, 60);
        l.add_plain(c(2), &meta(), 60, 60);
        l.add_plain(c(3), &meta(), 500, 500);
        l.add_plain(c(4), &meta(), 1, 1);
        let parts = l.finish();
        let n: Vec<usize> = parts.iter().map(|p| p.objects.len()).collect();
        assert_eq!(n, [1, 1, 1, 1]);
        assert_eq!(parts[0].modes.len(), 1);
    }

    #[test]
    fn rollsum_ops_check() {
        let mut l = Layout::new(1 << 20);
        let to = Checksum::from_array([1; 32]);
        let m = Matches {
            matches: vec![
                Match {
                    to_start: 10,
                    from_start: 0,
                    len: 20,
                },
                Match {
                    to_start: 30,
                    from_start: 50,
                    len: 5,
                },
            ],
            total: 3,
            match_size: 25,
        };
        l.add_rollsum(to, &meta(), 40, Checksum::from_array([2; 32]), &m);
        l.add_bsdiff(
            Checksum::from_array([3; 32]),
            &meta(),
            7,
            Checksum::from_array([2; 32]),
            PatchRef {
                offset: 1000,
                len: 24,
            },
        );
        let p = &l.finish()[0];
        let checker = OpChecker::new(&p.objects, p.blob_len, p.modes.len(), p.xattrs.len());
        let steps: Vec<Step> = Decoder::new(&p.ops, checker)
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!steps.is_empty());
        // 32 + 10 + 5 literal bytes, then 32 + 24.
        assert_eq!(p.blob_len, 32 + 10 + 5 + 32 + 24);
        assert_eq!(p.usize, 47);
        assert!(matches!(
            &p.segments[1].segment,
            Segment::Literals { ranges, .. } if ranges == &[(0, 10), (35, 5)]
        ));
        assert_eq!(p.segments.iter().map(|s| s.len).sum::<u64>(), p.blob_len);
    }
}
