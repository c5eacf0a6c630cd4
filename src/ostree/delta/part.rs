//! Delta part files: a compression byte, then the (compressed) payload
//! `(a(uuu)aa(ayay)ayay)`.
//!
//! ```text
//! byte 0      0 = none, 'x' = xz (preset 8, CRC64 as libostree writes it)
//! a(uuu)      mode table: uid, gid, full mode, big-endian
//! aa(ayay)    xattr table: one xattr list per entry
//! ay          data blob: spliced object bytes, bsdiff patches, checksums
//! ay          opcode stream (see [`super::opcodes`])
//! ```
//! A payload can be gigabytes, so besides parsing one held in memory
//! ([`PartPayload`]) the layout can be read from the payload's last bytes
//! alone ([`PayloadLayout`]), leaving the blob on disk.

use std::ops::Range;

use gvariant::aligned_bytes::AsAligned;
use gvariant::{Marker, Structure, gv};

use super::super::content::MAX_SYMLINK_TARGET;
use super::super::error::FormatError;
use super::super::gv::{aligned, check_normal_form};
use super::super::normal_form::offset_size;
use super::super::xattrs::Xattrs;
use super::error::{DeltaError, Result};
use super::frame::{self, Member};
use super::opcodes::MAX_OP_LEN;

/// Most bytes of mode and xattr tables read into memory for one part.
/// Tables are deduplicated per part; real ones are kilobytes.
pub const MAX_TABLES_SIZE: u64 = 16 << 20;

const MEMBERS: [Member; 4] = [
    Member::var(4),
    Member::var(1),
    Member::var(1),
    Member::var(1),
];
const MODE_ENTRY_LEN: usize = 12;

/// Payload bytes per byte of the objects a part creates (its header's
/// `usize`), at most, for what libostree's (and arbor's) compiler writes;
/// see [`max_payload_size`].
pub const MAX_PAYLOAD_PER_BYTE: u64 = 28;
/// Payload bytes per object beyond [`MAX_PAYLOAD_PER_BYTE`], at most: a
/// symlink's target, which libostree counts as 0 bytes of `usize` when it
/// reads an `archive` repository, and its `S` operation.
pub const MAX_PAYLOAD_PER_OBJECT: u64 = MAX_SYMLINK_TARGET as u64 + MAX_OP_LEN as u64;
/// The payload's three framing offsets.
const PAYLOAD_FRAMING: u64 = 3 * 8;

/// The largest decompressed payload a part creating `objects` objects of
/// `usize` bytes in all can have, when a real compiler made it: an xz part
/// declaring more is refused before a byte is decompressed.
///
/// The payload is not bounded by `usize` alone: `usize` counts the objects
/// a part creates, while the payload holds what creates them. libostree's
/// compiler (which flatpak and rpm-ostree call; arbor's mirrors it) writes,
/// per object of `s` bytes:
/// - `S`: the object's bytes (`s`) and one operation (at most 41 bytes),
///   or for a symlink its target (at most 4095 bytes, counted 0 in
///   `usize` when the source repository is `archive`);
/// - bsdiff: a 32-byte source checksum, 5 operations (65 bytes) and the
///   patch: every new byte once (diff or extra) plus a 24-byte control
///   triple each time bsdiff's scan emits one, which it does at distinct
///   positions of the new file, so at most `s + 1` of them: `25 s + 24`;
/// - rollsum: a 32-byte source checksum, `o`, `c`, a final `R` and `w`
///   (54 bytes) and, per matched chunk, the literal bytes before it and up
///   to 54 bytes of `R w r w`. Chunks end where bup's rolling sum says, so
///   a 1-byte literal and a 1-byte match are possible: 55 bytes per 2
///   bytes of object, 27.5 per byte (varints at their 10-byte maximum).
///
/// So the payload is at most 28 bytes per byte of `usize`, plus 4136 per
/// object, plus the tables (at most [`MAX_TABLES_SIZE`], checked again
/// once decompressed) and the framing. Real parts are close to `usize`
/// (chunks average 8 KiB, patches a little over the file), but a
/// tighter bound would be a heuristic: libostree 2026.3 bounded the
/// payload by `usize` plus a per-object margin and refused real Flathub
/// deltas with large bsdiff'd files (ostree#3635). The free space of the
/// staging filesystem bounds the rest (see `pull::delta`).
pub fn max_payload_size(objects: usize, usize: u64) -> u64 {
    (objects as u64)
        .saturating_mul(MAX_PAYLOAD_PER_OBJECT)
        .saturating_add(usize.saturating_mul(MAX_PAYLOAD_PER_BYTE))
        .saturating_add(MAX_TABLES_SIZE)
        .saturating_add(PAYLOAD_FRAMING)
}

/// How a part file's payload is stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
}

impl Compression {
    pub fn from_byte(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Compression::None),
            b'x' => Ok(Compression::Xz),
            other => Err(DeltaError::Compression(other)),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Xz => b'x',
        }
    }
}

/// One mode-table entry (host values).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FileMode {
    pub uid: u32,
    pub gid: u32,
    /// Full mode, file type bits included.
    pub mode: u32,
}

/// Where the four members of a payload of known length lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadLayout {
    pub modes: Range<u64>,
    pub xattrs: Range<u64>,
    pub blob: Range<u64>,
    pub ops: Range<u64>,
}

impl PayloadLayout {
    /// How many trailing bytes of a `len`-byte payload [`from_tail`] needs.
    ///
    /// [`from_tail`]: Self::from_tail
    pub fn tail_len(len: u64) -> Result<usize> {
        Ok(frame::tail_len(&MEMBERS, to_usize(len)?))
    }

    /// The layout, from the payload's last [`tail_len`](Self::tail_len)
    /// bytes. The members need no padding, so the framing is fully checked.
    pub fn from_tail(len: u64, tail: &[u8]) -> Result<Self> {
        const WHAT: &str = "delta part payload";
        let (r, padding) = frame::split_from_tail(WHAT, &MEMBERS, to_usize(len)?, tail)?;
        if !padding.is_empty() {
            // Impossible: only the first member is aligned, at offset 0.
            return Err(FormatError::NotNormalForm { what: WHAT }.into());
        }
        let r64 = |i: usize| r[i].start as u64..r[i].end as u64;
        let layout = PayloadLayout {
            modes: r64(0),
            xattrs: r64(1),
            blob: r64(2),
            ops: r64(3),
        };
        let tables = layout.xattrs.end;
        if tables > MAX_TABLES_SIZE {
            return Err(FormatError::TooLarge {
                what: "delta part mode and xattr tables",
                size: tables,
                max: MAX_TABLES_SIZE,
            }
            .into());
        }
        Ok(layout)
    }
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| {
        DeltaError::Format(FormatError::TooLarge {
            what: "delta part payload",
            size: v,
            max: usize::MAX as u64,
        })
    })
}

/// Parses the `a(uuu)` mode table.
pub fn parse_modes(data: &[u8]) -> Result<Vec<FileMode>> {
    if !data.len().is_multiple_of(MODE_ENTRY_LEN) {
        return Err(FormatError::NotNormalForm {
            what: "delta part mode table",
        }
        .into());
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(data
        .chunks_exact(MODE_ENTRY_LEN)
        .map(|e| FileMode {
            uid: be(&e[0..4]),
            gid: be(&e[4..8]),
            mode: be(&e[8..12]),
        })
        .collect())
}

pub fn serialize_modes(modes: &[FileMode]) -> Vec<u8> {
    let mut out = Vec::with_capacity(modes.len() * MODE_ENTRY_LEN);
    for m in modes {
        out.extend_from_slice(&m.uid.to_be_bytes());
        out.extend_from_slice(&m.gid.to_be_bytes());
        out.extend_from_slice(&m.mode.to_be_bytes());
    }
    out
}

/// Parses the `aa(ayay)` xattr table (names NUL-terminated on the wire).
pub fn parse_xattr_table(data: &[u8]) -> Result<Vec<Xattrs>> {
    let buf = aligned(data);
    let mut out = Vec::new();
    for list in gv!("aa(ayay)").cast(buf.as_aligned()) {
        out.push(Xattrs::from_wire(list.iter().map(|e| e.to_tuple()))?);
    }
    check_normal_form("delta part xattr table", data, &serialize_xattr_table(&out))?;
    Ok(out)
}

/// Where the entries of an `aa(ayay)` xattr table of `len` bytes lie,
/// from its framing alone. A table of a few megabytes can frame millions
/// of (empty) entries, so a part's table is never parsed whole: its
/// framing offsets are checked as a stream ([`check_offsets`]) and entries
/// are read and parsed one at a time ([`parse_xattr_entry`]), which keeps
/// memory bounded by the largest entry read, not by the entry count.
///
/// [`check_offsets`]: XattrTableFrame::check_offsets
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct XattrTableFrame {
    /// Width of the framing offsets (0 for an empty table).
    pub width: usize,
    /// Where the entries end and the offsets start.
    pub body_end: u64,
    /// Number of entries: the table's own bytes bound it.
    pub count: u64,
}

impl XattrTableFrame {
    const WHAT: &'static str = "delta part xattr table";

    /// The width of the offsets of a `len`-byte table: the number of
    /// trailing bytes [`from_last_offset`](Self::from_last_offset) needs.
    pub fn width(len: u64) -> Result<usize> {
        Ok(offset_size(to_usize(len)?))
    }

    /// The frame, from the table's last [`width`](Self::width) bytes (its
    /// last entry's end, which is where the offsets start).
    pub fn from_last_offset(len: u64, last: &[u8]) -> Result<Self> {
        let bad = || DeltaError::from(FormatError::NotNormalForm { what: Self::WHAT });
        let width = Self::width(len)?;
        if last.len() != width {
            return Err(FormatError::Truncated { what: Self::WHAT }.into());
        }
        if width == 0 {
            return Ok(XattrTableFrame {
                width,
                body_end: 0,
                count: 0,
            });
        }
        let body_end = read_le(last);
        let offsets = len.checked_sub(body_end).ok_or_else(bad)?;
        if offsets == 0 || !offsets.is_multiple_of(width as u64) {
            return Err(bad());
        }
        Ok(XattrTableFrame {
            width,
            body_end,
            count: offsets / width as u64,
        })
    }

    /// Table offset of the framing offset holding entry `i`'s end.
    pub fn offset_pos(&self, i: u64) -> u64 {
        self.body_end + i * self.width as u64
    }

    /// Checks a run of consecutive framing offsets (starting at entry
    /// `first`, whose predecessor ends at `prev_end`): each entry ends
    /// where or after the previous one, inside the body. Returns the last
    /// end, for the next run.
    pub fn check_offsets(&self, bytes: &[u8], mut prev_end: u64) -> Result<u64> {
        for o in bytes.chunks_exact(self.width.max(1)) {
            let end = read_le(o);
            if end < prev_end || end > self.body_end {
                return Err(FormatError::NotNormalForm { what: Self::WHAT }.into());
            }
            prev_end = end;
        }
        Ok(prev_end)
    }
}

fn read_le(b: &[u8]) -> u64 {
    b.iter()
        .enumerate()
        .fold(0u64, |v, (i, b)| v | (u64::from(*b) << (8 * i)))
}

/// Reads a framing offset of `width` bytes.
pub fn read_offset(b: &[u8]) -> u64 {
    read_le(b)
}

/// Parses one entry of the xattr table, an `a(ayay)` (normal form checked).
pub fn parse_xattr_entry(data: &[u8]) -> Result<Xattrs> {
    let buf = aligned(data);
    let list = gv!("a(ayay)").cast(buf.as_aligned());
    let x = Xattrs::from_wire(list.iter().map(|e| e.to_tuple()))?;
    let names = x.wire_names();
    let pairs: Vec<(&[u8], &[u8])> = names
        .iter()
        .zip(x.iter())
        .map(|(n, x)| (n.as_slice(), x.value.as_slice()))
        .collect();
    check_normal_form(
        "delta part xattr table entry",
        data,
        &gv!("a(ayay)").serialize_to_vec(&pairs),
    )?;
    Ok(x)
}

pub fn serialize_xattr_table(table: &[Xattrs]) -> Vec<u8> {
    let names: Vec<Vec<Vec<u8>>> = table.iter().map(|x| x.wire_names()).collect();
    let lists: Vec<Vec<(&[u8], &[u8])>> = table
        .iter()
        .zip(&names)
        .map(|(x, n)| {
            n.iter()
                .zip(x.iter())
                .map(|(n, x)| (n.as_slice(), x.value.as_slice()))
                .collect()
        })
        .collect();
    gv!("aa(ayay)").serialize_to_vec(&lists)
}

/// A payload held in memory (inline parts, small parts, tests, writers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartPayload<'a> {
    pub modes: Vec<FileMode>,
    pub xattrs: Vec<Xattrs>,
    pub blob: &'a [u8],
    pub ops: &'a [u8],
}

impl<'a> PartPayload<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let t = PayloadLayout::tail_len(data.len() as u64)?;
        if t > data.len() {
            return Err(FormatError::Truncated {
                what: "delta part payload",
            }
            .into());
        }
        let l = PayloadLayout::from_tail(data.len() as u64, &data[data.len() - t..])?;
        let at = |r: &Range<u64>| &data[r.start as usize..r.end as usize];
        Ok(PartPayload {
            modes: parse_modes(at(&l.modes))?,
            xattrs: parse_xattr_table(at(&l.xattrs))?,
            blob: at(&l.blob),
            ops: at(&l.ops),
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let modes = serialize_modes(&self.modes);
        let xattrs = serialize_xattr_table(&self.xattrs);
        frame::join(&[
            (MEMBERS[0], &modes),
            (MEMBERS[1], &xattrs),
            (MEMBERS[2], self.blob),
            (MEMBERS[3], self.ops),
        ])
    }
}

/// A payload's bytes around its data blob, for writers that stream the
/// blob rather than hold it: `head` (the mode and xattr tables) comes
/// before the blob, `tail` (the opcodes and the framing offsets) after.
/// `head ‖ blob ‖ tail` is exactly [`PartPayload::serialize`]'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadFrame {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl PayloadFrame {
    pub fn new(modes: &[FileMode], xattrs: &[Xattrs], blob_len: u64, ops: &[u8]) -> Result<Self> {
        let mut head = serialize_modes(modes);
        let modes_end = head.len();
        head.extend_from_slice(&serialize_xattr_table(xattrs));
        // No padding anywhere: only the first member is aligned (4), at 0,
        // and the others are byte arrays.
        let blob_end =
            to_usize(blob_len)?
                .checked_add(head.len())
                .ok_or(FormatError::TooLarge {
                    what: "delta part payload",
                    size: blob_len,
                    max: usize::MAX as u64,
                })?;
        let body_len = blob_end
            .checked_add(ops.len())
            .ok_or(FormatError::TooLarge {
                what: "delta part payload",
                size: blob_len,
                max: usize::MAX as u64,
            })?;
        let mut tail = ops.to_vec();
        tail.extend_from_slice(&frame::offsets_trailer(
            body_len,
            &[modes_end, head.len(), blob_end],
        ));
        Ok(PayloadFrame { head, tail })
    }

    /// Bytes of the whole payload.
    pub fn payload_len(&self, blob_len: u64) -> u64 {
        self.head.len() as u64 + blob_len + self.tail.len() as u64
    }
}

/// The xz preset and check libostree compresses parts with.
pub const XZ_PRESET: u32 = 8;

/// A part file for `payload`: the compression byte, then the payload as
/// is or xz-compressed the way libostree does (preset 8, CRC64).
pub fn encode_part_file(payload: &[u8], compression: Compression) -> Vec<u8> {
    let mut out = vec![compression.byte()];
    match compression {
        Compression::None => out.extend_from_slice(payload),
        Compression::Xz => {
            let mut stream =
                liblzma::stream::Stream::new_easy_encoder(XZ_PRESET, liblzma::stream::Check::Crc64)
                    .expect("preset 8 is a valid xz preset");
            let mut input = payload;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let before_in = stream.total_in();
                let before_out = stream.total_out();
                let action = if input.is_empty() {
                    liblzma::stream::Action::Finish
                } else {
                    liblzma::stream::Action::Run
                };
                let status = stream
                    .process(input, &mut buf, action)
                    .expect("xz encoding of memory cannot fail");
                let used = (stream.total_in() - before_in) as usize;
                input = &input[used..];
                let made = (stream.total_out() - before_out) as usize;
                out.extend_from_slice(&buf[..made]);
                if status == liblzma::stream::Status::StreamEnd {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::xattrs::Xattr;
    use super::*;

    #[test]
    fn payload_round_trip() {
        let x = Xattrs::from_unsorted(vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"1".to_vec(),
        }])
        .unwrap();
        let p = PartPayload {
            modes: vec![
                FileMode {
                    uid: 0,
                    gid: 0,
                    mode: 0o100644,
                },
                FileMode {
                    uid: 1000,
                    gid: 1000,
                    mode: 0o120777,
                },
            ],
            xattrs: vec![Xattrs::new(), x],
            blob: b"hello world",
            ops: b"S\x00\x00\x05\x00",
        };
        let bytes = p.serialize();
        assert_eq!(PartPayload::parse(&bytes).unwrap(), p);
        // The same bytes, framed around a streamed blob.
        let f = PayloadFrame::new(&p.modes, &p.xattrs, p.blob.len() as u64, p.ops).unwrap();
        assert_eq!([&f.head[..], p.blob, &f.tail[..]].concat(), bytes);
        assert_eq!(f.payload_len(p.blob.len() as u64), bytes.len() as u64);
        // Wider framing offsets (2 and 4 bytes) too.
        for n in [300usize, 70_000] {
            let blob = vec![7u8; n];
            let q = PartPayload {
                blob: &blob,
                ..p.clone()
            };
            let f = PayloadFrame::new(&q.modes, &q.xattrs, n as u64, q.ops).unwrap();
            assert_eq!([&f.head[..], &blob, &f.tail[..]].concat(), q.serialize());
        }
        // The layout from the tail alone agrees.
        let t = PayloadLayout::tail_len(bytes.len() as u64).unwrap();
        let l = PayloadLayout::from_tail(bytes.len() as u64, &bytes[bytes.len() - t..]).unwrap();
        assert_eq!(
            &bytes[l.blob.start as usize..l.blob.end as usize],
            b"hello world"
        );
        // Truncations never panic (some may frame a smaller valid payload).
        for cut in 1..bytes.len() {
            let _ = PartPayload::parse(&bytes[..bytes.len() - cut]);
        }
        // Empty payload: all four members empty is "(a(uuu)aa(ayay)ayay)" of 3 zero offsets.
        let empty = PartPayload {
            modes: vec![],
            xattrs: vec![],
            blob: b"",
            ops: b"",
        };
        assert_eq!(empty.serialize(), vec![0, 0, 0]);
        assert_eq!(PartPayload::parse(&[0, 0, 0]).unwrap(), empty);
    }

    #[test]
    fn part_file_encoding() {
        let payload = b"payload payload payload".to_vec();
        assert_eq!(
            encode_part_file(&payload, Compression::None),
            [&[0u8][..], &payload].concat()
        );
        let xz = encode_part_file(&payload, Compression::Xz);
        assert_eq!(xz[0], b'x');
        assert_eq!(&xz[1..7], &[0xfd, b'7', b'z', b'X', b'Z', 0]);
        assert!(Compression::from_byte(b'z').is_err());
    }

    #[test]
    fn payload_bound() {
        let tables = MAX_TABLES_SIZE + PAYLOAD_FRAMING;
        assert_eq!(max_payload_size(0, 0), tables);
        assert_eq!(max_payload_size(2, 100), tables + 2 * 4136 + 2800);
        assert_eq!(max_payload_size(usize::MAX, u64::MAX), u64::MAX);
    }

    /// Entries read one by one through the frame agree with the whole
    /// table's parse, for every offset width; bad framing is refused.
    fn lazy_entries(t: &[u8]) -> Result<Vec<Xattrs>> {
        let len = t.len() as u64;
        let w = XattrTableFrame::width(len)?;
        let f = XattrTableFrame::from_last_offset(len, &t[t.len() - w..])?;
        let offsets = &t[f.offset_pos(0) as usize..];
        assert_eq!(f.check_offsets(offsets, 0)?, f.body_end);
        let mut out = Vec::new();
        let mut start = 0;
        for i in 0..f.count {
            let at = f.offset_pos(i) as usize;
            let end = read_offset(&t[at..at + w]);
            out.push(parse_xattr_entry(&t[start as usize..end as usize])?);
            start = end;
        }
        Ok(out)
    }

    #[test]
    fn xattr_table_read_lazily() {
        let x = |n: usize, v: usize| {
            Xattrs::from_unsorted(
                (0..n)
                    .map(|i| Xattr {
                        name: format!("user.a{i}").into_bytes(),
                        value: vec![7; v],
                    })
                    .collect(),
            )
            .unwrap()
        };
        for table in [
            vec![],
            vec![Xattrs::new()],
            vec![Xattrs::new(), x(1, 1), Xattrs::new(), x(3, 2)],
            vec![x(2, 200), x(1, 0)],
            vec![x(3, 30_000), Xattrs::new(), x(2, 60_000)],
            vec![Xattrs::new(); 300],
        ] {
            let bytes = serialize_xattr_table(&table);
            assert_eq!(parse_xattr_table(&bytes).unwrap(), table);
            assert_eq!(lazy_entries(&bytes).unwrap(), table);
        }
        // An offset before its predecessor's, or past the body.
        let mut bad = serialize_xattr_table(&[x(1, 1), x(1, 1)]);
        let n = bad.len();
        bad[n - 2] = bad[n - 1] + 1;
        assert!(lazy_entries(&bad).is_err());
        let bad2 = [0u8, 1, 0];
        assert!(lazy_entries(&bad2).is_err());
        // The last offset leaving no whole offsets.
        assert!(XattrTableFrame::from_last_offset(5, &[5]).is_err());
        assert!(XattrTableFrame::from_last_offset(5, &[6]).is_err());
        assert_eq!(XattrTableFrame::from_last_offset(5, &[1]).unwrap().count, 4);
    }

    #[test]
    fn rejects_bad_tables() {
        assert!(parse_modes(&[0; 11]).is_err());
        assert!(parse_xattr_table(&[0xff; 5]).is_err());
    }
}
