//! The delta superblock, `(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))`,
//! and its signed wrapper `(taya{sv})`.
//!
//! ```text
//! a{sv}        metadata: caller keys, ostree.endianness (y), inline parts
//!              ("deltas/…/<i>" → (yay)), "deltas/…/commitmeta" → a{sv}
//! t            generation time, big-endian
//! ay           FROM checksum, empty for a from-scratch delta
//! ay           TO checksum
//! (commit)     the complete TO commit object
//! ay           "recursive deltas": always empty
//! a(uayttay)   part headers: version, SHA-256 of the part file, part file
//!              size, uncompressed object size, object list (type ‖ csum)*
//! a(yaytt)     fallbacks: type, checksum, compressed and uncompressed size
//! ```
//! The part version and sizes and the fallback sizes are in the byte order
//! named by `ostree.endianness` ('l' or 'B'); deltas made before that key
//! existed are in their producer's order, which libostree guesses with a
//! heuristic reproduced here.

use std::ops::Range;

use gvariant::{Marker, Structure, gv};

use super::super::checksum::Checksum;
use super::super::commit::Commit;
use super::super::gv::{MAX_METADATA_SIZE, aligned, check_normal_form, check_size};
use super::super::metadata::{Metadata, Value};
use super::super::object::{ObjectName, ObjectType};
use super::error::{DeltaError, Result};
use super::frame::{self, Member};
use super::name::DeltaName;

/// libostree fetches superblocks with its metadata size limit.
pub const MAX_SUPERBLOCK_SIZE: usize = MAX_METADATA_SIZE;
/// The only part format version.
pub const PART_VERSION: u32 = 0;
/// Superblock metadata key naming the byte order of the native fields.
pub const ENDIANNESS_KEY: &str = "ostree.endianness";
/// One object-list entry: type byte and raw checksum.
pub const OBJECT_ENTRY_LEN: usize = 33;
/// `OSTSGNDT`, the first member of a signed superblock (stored big-endian).
pub const SIGNED_MAGIC: u64 = 0x4F53_5453_474E_4454;

const MEMBERS: [Member; 8] = [
    Member::var(8),      // a{sv}
    Member::fixed(8, 8), // t
    Member::var(1),      // ay from
    Member::var(1),      // ay to
    Member::var(8),      // commit
    Member::var(1),      // ay recurse
    Member::var(8),      // a(uayttay)
    Member::var(8),      // a(yaytt)
];

/// Byte order of a superblock's native-endian fields.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Endianness {
    Little,
    Big,
}

impl Endianness {
    /// This machine's order, which libostree writes by default.
    pub const NATIVE: Endianness = if cfg!(target_endian = "big") {
        Endianness::Big
    } else {
        Endianness::Little
    };

    /// The `ostree.endianness` byte.
    pub fn marker(self) -> u8 {
        match self {
            Endianness::Little => b'l',
            Endianness::Big => b'B',
        }
    }

    fn opposite(self) -> Endianness {
        match self {
            Endianness::Little => Endianness::Big,
            Endianness::Big => Endianness::Little,
        }
    }

    /// Host value of a field read by the `gvariant` crate (native order).
    fn u32_from(self, raw: u32) -> u32 {
        match self {
            Endianness::Little => u32::from_le(raw),
            Endianness::Big => u32::from_be(raw),
        }
    }

    fn u64_from(self, raw: u64) -> u64 {
        match self {
            Endianness::Little => u64::from_le(raw),
            Endianness::Big => u64::from_be(raw),
        }
    }

    fn u32_to(self, v: u32) -> u32 {
        match self {
            Endianness::Little => v.to_le(),
            Endianness::Big => v.to_be(),
        }
    }

    fn u64_to(self, v: u64) -> u64 {
        match self {
            Endianness::Little => v.to_le(),
            Endianness::Big => v.to_be(),
        }
    }
}

/// One part's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartHeader {
    pub version: u32,
    /// SHA-256 of the whole part file (compression byte included).
    pub checksum: Checksum,
    /// Size of the part file.
    pub size: u64,
    /// Sum of the sizes of the objects the part creates.
    pub usize: u64,
    /// The objects the part creates, in the order its opcodes create them.
    pub objects: Vec<ObjectName>,
}

/// An object to fetch on its own (`.filez`) rather than from a part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub object: ObjectName,
    /// Size of the compressed object on the server.
    pub size: u64,
    pub usize: u64,
}

/// A parsed superblock (unsigned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Every metadata entry in order, inline parts included.
    pub metadata: Metadata,
    /// Generation time, seconds since the epoch.
    pub timestamp: u64,
    pub from: Option<Checksum>,
    pub to: Checksum,
    pub commit: Commit,
    /// The always-empty "recursive deltas" array, kept for round trips.
    pub recurse: Vec<u8>,
    pub parts: Vec<PartHeader>,
    pub fallbacks: Vec<Fallback>,
    /// Byte order of the native-endian fields.
    pub endianness: Endianness,
    /// True when `ostree.endianness` was absent and the order was guessed.
    pub endianness_guessed: bool,
}

type RawPart<'a> = (u32, &'a [u8], u64, u64, &'a [u8]);
type RawFallback<'a> = (u8, &'a [u8], u64, u64);

impl Superblock {
    pub fn parse(data: &[u8]) -> Result<Self> {
        const WHAT: &str = "static delta superblock";
        check_size(WHAT, data, MAX_SUPERBLOCK_SIZE)?;
        let r = frame::split(WHAT, &MEMBERS, data)?;
        let member = |i: usize| &data[r[i].clone()];
        let metadata = Metadata::parse(member(0))?;
        let rest: [&[u8]; 7] = std::array::from_fn(|i| member(i + 1));
        Self::from_members(metadata, &rest)
    }

    /// How many trailing bytes of a `len`-byte superblock frame it.
    pub fn tail_len(len: usize) -> usize {
        frame::tail_len(&MEMBERS, len)
    }

    /// Where the members of a `len`-byte superblock lie, from its last
    /// [`tail_len`](Self::tail_len) bytes, and the padding ranges between
    /// them (which the caller must check are zero): for reading a
    /// superblock too large to hold whole (its inline parts) by range.
    pub fn split_from_tail(len: usize, tail: &[u8]) -> Result<frame::Split> {
        Ok(frame::split_from_tail(
            "static delta superblock",
            &MEMBERS,
            len,
            tail,
        )?)
    }

    /// The superblock from its metadata and its other seven members'
    /// bytes (timestamp to fallbacks).
    pub fn from_members(metadata: Metadata, rest: &[&[u8]; 7]) -> Result<Self> {
        let member = |i: usize| rest[i - 1];
        let ts = u64::from_be_bytes(member(1).try_into().expect("fixed 8-byte member"));
        let from = match member(2) {
            [] => None,
            f => Some(Checksum::from_slice(f, "superblock FROM")?),
        };
        let to = Checksum::from_slice(member(3), "superblock TO")?;
        let commit = Commit::parse(member(4))?;
        let recurse = member(5).to_vec();

        let (endianness, guessed) = match metadata.get(ENDIANNESS_KEY) {
            Some(Value::Other { typestr, data }) if typestr == "y" && data.len() == 1 => {
                match data[0] {
                    b'l' => (Endianness::Little, false),
                    b'B' => (Endianness::Big, false),
                    b => return Err(DeltaError::Endianness(b)),
                }
            }
            Some(v) => {
                return Err(DeltaError::MetadataType {
                    key: ENDIANNESS_KEY.into(),
                    found: v.typestr().into(),
                    expected: "y",
                });
            }
            None => (Endianness::NATIVE, true),
        };

        let parts_bytes = member(6);
        let buf = aligned(parts_bytes);
        let raw_parts: Vec<RawPart<'_>> = gv!("a(uayttay)")
            .cast(&buf)
            .iter()
            .map(|p| {
                let (v, c, s, u, o) = p.to_tuple();
                (*v, c, *s, *u, o)
            })
            .collect();
        check_normal_form(
            "superblock part headers",
            parts_bytes,
            &gv!("a(uayttay)").serialize_to_vec(&raw_parts),
        )?;
        let fb_bytes = member(7);
        let buf = aligned(fb_bytes);
        let raw_fallbacks: Vec<RawFallback<'_>> = gv!("a(yaytt)")
            .cast(&buf)
            .iter()
            .map(|f| {
                let (t, c, s, u) = f.to_tuple();
                (*t, c, *s, *u)
            })
            .collect();
        check_normal_form(
            "superblock fallbacks",
            fb_bytes,
            &gv!("a(yaytt)").serialize_to_vec(&raw_fallbacks),
        )?;

        let (endianness, guessed) = if guessed {
            (guess_endianness(&raw_parts), true)
        } else {
            (endianness, false)
        };
        let e = endianness;
        let mut parts = Vec::with_capacity(raw_parts.len());
        for (i, (v, c, s, u, o)) in raw_parts.into_iter().enumerate() {
            let version = e.u32_from(v);
            if version != PART_VERSION {
                return Err(DeltaError::PartVersion { part: i, version });
            }
            parts.push(PartHeader {
                version,
                checksum: Checksum::from_slice(c, "part checksum")?,
                size: e.u64_from(s),
                usize: e.u64_from(u),
                objects: parse_object_list(o)?,
            });
        }
        let mut fallbacks = Vec::with_capacity(raw_fallbacks.len());
        for (t, c, s, u) in raw_fallbacks {
            let objtype = ObjectType::from_u8(t).ok_or(DeltaError::ObjectType(t))?;
            fallbacks.push(Fallback {
                object: ObjectName::new(Checksum::from_slice(c, "fallback checksum")?, objtype),
                size: e.u64_from(s),
                usize: e.u64_from(u),
            });
        }
        Ok(Superblock {
            metadata,
            timestamp: ts,
            from,
            to,
            commit,
            recurse,
            parts,
            fallbacks,
            endianness,
            endianness_guessed: guessed,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let e = self.endianness;
        let md = self.metadata.serialize();
        let ts = self.timestamp.to_be_bytes();
        let from: &[u8] = match &self.from {
            Some(f) => f.as_bytes(),
            None => &[],
        };
        let commit = self.commit.serialize();
        let objects: Vec<Vec<u8>> = self
            .parts
            .iter()
            .map(|p| serialize_object_list(&p.objects))
            .collect();
        let parts: Vec<RawPart<'_>> = self
            .parts
            .iter()
            .zip(&objects)
            .map(|(p, o)| {
                (
                    e.u32_to(p.version),
                    &p.checksum.as_bytes()[..],
                    e.u64_to(p.size),
                    e.u64_to(p.usize),
                    o.as_slice(),
                )
            })
            .collect();
        let parts = gv!("a(uayttay)").serialize_to_vec(&parts);
        let fallbacks: Vec<RawFallback<'_>> = self
            .fallbacks
            .iter()
            .map(|f| {
                (
                    f.object.objtype as u8,
                    &f.object.checksum.as_bytes()[..],
                    e.u64_to(f.size),
                    e.u64_to(f.usize),
                )
            })
            .collect();
        let fallbacks = gv!("a(yaytt)").serialize_to_vec(&fallbacks);
        frame::join(&[
            (MEMBERS[0], &md),
            (MEMBERS[1], &ts),
            (MEMBERS[2], from),
            (MEMBERS[3], self.to.as_bytes()),
            (MEMBERS[4], &commit),
            (MEMBERS[5], &self.recurse),
            (MEMBERS[6], &parts),
            (MEMBERS[7], &fallbacks),
        ])
    }

    pub fn name(&self) -> DeltaName {
        DeltaName::new(self.from, self.to)
    }

    /// The bytes of inline part `i` (exactly what a part file would hold),
    /// if the superblock carries it. Like libostree, an entry of another
    /// type is not an inline part.
    pub fn inline_part(&self, i: usize) -> Option<&[u8]> {
        match self.metadata.get(&self.name().part_path(i)) {
            Some(Value::Other { typestr, data }) if typestr == "(yay)" => Some(data),
            _ => None,
        }
    }

    /// The target commit's detached metadata (`a{sv}` bytes), if carried.
    pub fn commitmeta(&self) -> Option<&[u8]> {
        match self.metadata.get(&self.name().commitmeta_key()) {
            Some(Value::Other { typestr, data }) if typestr == "a{sv}" => Some(data),
            _ => None,
        }
    }

    /// The metadata value of `ostree.endianness` for `e`.
    pub fn endianness_value(e: Endianness) -> Value {
        Value::Other {
            typestr: "y".into(),
            data: vec![e.marker()],
        }
    }

    /// The metadata value of an inline part holding `part_file` (the bytes
    /// a part file would contain).
    pub fn inline_part_value(part_file: &[u8]) -> Value {
        Value::Other {
            typestr: "(yay)".into(),
            data: part_file.to_vec(),
        }
    }
}

/// libostree's guess for superblocks without `ostree.endianness`
/// (`_ostree_delta_get_endianness`): read in this machine's order, the
/// delta is taken as byte-swapped when some part is more than 1.2 times
/// larger compressed than uncompressed, or when the average object is
/// over 4 GiB. The same test, in exact integer arithmetic where libostree
/// divides doubles. (An `ostree.endianness` other than 'l' or 'B' is
/// refused; libostree reads such a delta in its own order.) A wrong guess
/// cannot pass for a right one: part sizes and checksums are checked.
fn guess_endianness(parts: &[RawPart<'_>]) -> Endianness {
    let native = Endianness::NATIVE;
    let mut total_size: u64 = 0;
    let mut total_objects: u64 = 0;
    for (_, _, s, u, o) in parts {
        let (size, usize) = (native.u64_from(*s), native.u64_from(*u));
        total_objects += (o.len() / OBJECT_ENTRY_LEN) as u64;
        total_size = total_size.wrapping_add(size);
        // size / usize > 1.2, exactly, without floating point.
        if size > usize && u128::from(size) * 5 > u128::from(usize) * 6 {
            return native.opposite();
        }
    }
    if total_objects > 0 && total_size / total_objects > u64::from(u32::MAX) {
        return native.opposite();
    }
    native
}

/// Parses a part's object list, 33-byte entries of type and checksum.
pub fn parse_object_list(data: &[u8]) -> Result<Vec<ObjectName>> {
    if !data.len().is_multiple_of(OBJECT_ENTRY_LEN) {
        return Err(DeltaError::ObjectListLength { len: data.len() });
    }
    data.chunks_exact(OBJECT_ENTRY_LEN)
        .map(|e| {
            let t = ObjectType::from_u8(e[0]).ok_or(DeltaError::ObjectType(e[0]))?;
            Ok(ObjectName::new(
                Checksum::from_slice(&e[1..], "part object")?,
                t,
            ))
        })
        .collect()
}

pub fn serialize_object_list(objects: &[ObjectName]) -> Vec<u8> {
    let mut out = Vec::with_capacity(objects.len() * OBJECT_ENTRY_LEN);
    for o in objects {
        out.push(o.objtype as u8);
        out.extend_from_slice(o.checksum.as_bytes());
    }
    out
}

/// True when `data` starts like a signed superblock (`OSTSGNDT`), which is
/// how libostree tells the two apart.
pub fn is_signed(data: &[u8]) -> bool {
    data.starts_with(&SIGNED_MAGIC.to_be_bytes())
}

const SIGNED_MEMBERS: [Member; 3] = [Member::fixed(8, 8), Member::var(1), Member::var(8)];

/// A signed superblock `(taya{sv})`: the superblock's bytes and signatures
/// over them (`ostree.sign.ed25519` → `aay`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSuperblock<'a> {
    pub superblock: &'a [u8],
    pub signatures: Metadata,
}

impl<'a> SignedSuperblock<'a> {
    /// How many trailing bytes of a `len`-byte signed superblock frame it.
    pub fn tail_len(len: usize) -> usize {
        frame::tail_len(&SIGNED_MEMBERS, len)
    }

    /// Where the magic, the superblock and the signatures of a `len`-byte
    /// signed superblock lie, from its tail, and the padding ranges.
    pub fn split_from_tail(len: usize, tail: &[u8]) -> Result<frame::Split> {
        Ok(frame::split_from_tail(
            "signed static delta superblock",
            &SIGNED_MEMBERS,
            len,
            tail,
        )?)
    }

    pub fn parse(data: &'a [u8]) -> Result<Self> {
        const WHAT: &str = "signed static delta superblock";
        check_size(WHAT, data, MAX_SUPERBLOCK_SIZE)?;
        let r: Vec<Range<usize>> = frame::split(WHAT, &SIGNED_MEMBERS, data)?;
        let magic = u64::from_be_bytes(data[r[0].clone()].try_into().expect("fixed member"));
        if magic != SIGNED_MAGIC {
            return Err(DeltaError::SignedMagic(magic));
        }
        Ok(SignedSuperblock {
            superblock: &data[r[1].clone()],
            signatures: Metadata::parse(&data[r[2].clone()])?,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let md = self.signatures.serialize();
        frame::join(&[
            (SIGNED_MEMBERS[0], &SIGNED_MAGIC.to_be_bytes()),
            (SIGNED_MEMBERS[1], self.superblock),
            (SIGNED_MEMBERS[2], &md),
        ])
    }

    /// The `aay` signatures under `key` (e.g. `ostree.sign.ed25519`).
    pub fn signatures_of(&self, key: &str) -> Option<&[Vec<u8>]> {
        match self.signatures.get(key) {
            Some(Value::ByteArrays(v)) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(endianness: Endianness, inline: bool) -> Superblock {
        let commit = Commit {
            metadata: Metadata::new(),
            parent: None,
            related: vec![],
            subject: "s".into(),
            body: String::new(),
            timestamp: 1_600_000_000,
            root_tree: Checksum::from_array([1; 32]),
            root_meta: Checksum::from_array([2; 32]),
        };
        let to = commit.checksum();
        let from = Some(Checksum::from_array([7; 32]));
        let name = DeltaName::new(from, to);
        let mut metadata = Metadata::new();
        metadata.insert(ENDIANNESS_KEY, Superblock::endianness_value(endianness));
        if inline {
            metadata.insert(name.part_path(0), Superblock::inline_part_value(b"\0abc"));
        }
        let mut cm = Metadata::new();
        cm.insert("ostree.sign.ed25519", Value::ByteArrays(vec![vec![5; 64]]));
        metadata.insert(
            name.commitmeta_key(),
            Value::Other {
                typestr: "a{sv}".into(),
                data: cm.serialize(),
            },
        );
        Superblock {
            metadata,
            timestamp: 1_700_000_000,
            from,
            to,
            commit,
            recurse: vec![],
            parts: vec![PartHeader {
                version: 0,
                checksum: Checksum::from_array([3; 32]),
                size: 1234,
                usize: 99999,
                objects: vec![
                    ObjectName::new(Checksum::from_array([4; 32]), ObjectType::DirTree),
                    ObjectName::new(Checksum::from_array([5; 32]), ObjectType::File),
                ],
            }],
            fallbacks: vec![Fallback {
                object: ObjectName::new(Checksum::from_array([6; 32]), ObjectType::File),
                size: 5_000_000,
                usize: 6_000_000,
            }],
            endianness,
            endianness_guessed: false,
        }
    }

    #[test]
    fn round_trips_both_orders() {
        for e in [Endianness::Little, Endianness::Big] {
            let sb = sample(e, true);
            let bytes = sb.serialize();
            let back = Superblock::parse(&bytes).unwrap();
            assert_eq!(back, sb);
            assert_eq!(back.serialize(), bytes);
            assert_eq!(back.inline_part(0), Some(&b"\0abc"[..]));
            assert_eq!(back.inline_part(1), None);
            assert!(Metadata::parse(back.commitmeta().unwrap()).is_ok());
            for cut in [1, 8, bytes.len() / 2] {
                assert!(Superblock::parse(&bytes[..bytes.len() - cut]).is_err());
            }
        }
    }

    #[test]
    fn endianness_heuristic() {
        // Without the key, a big-endian delta read on a little-endian host
        // has absurd sizes, and the heuristic swaps.
        for e in [Endianness::Little, Endianness::Big] {
            let mut sb = sample(e, false);
            sb.metadata.0.retain(|(k, _)| k != ENDIANNESS_KEY);
            let back = Superblock::parse(&sb.serialize()).unwrap();
            assert!(back.endianness_guessed);
            assert_eq!(back.endianness, e);
            assert_eq!(back.parts[0].size, 1234);
        }
    }

    #[test]
    fn signed_wrapper() {
        let inner = sample(Endianness::Little, false).serialize();
        let mut sigs = Metadata::new();
        sigs.insert("ostree.sign.ed25519", Value::ByteArrays(vec![vec![1; 64]]));
        let s = SignedSuperblock {
            superblock: &inner,
            signatures: sigs,
        };
        let bytes = s.serialize();
        assert!(is_signed(&bytes));
        assert!(!is_signed(&inner));
        let back = SignedSuperblock::parse(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.signatures_of("ostree.sign.ed25519").unwrap().len(), 1);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(SignedSuperblock::parse(&bad).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        let mut sb = sample(Endianness::Little, false);
        sb.metadata.insert(
            ENDIANNESS_KEY,
            Value::Other {
                typestr: "y".into(),
                data: vec![b'x'],
            },
        );
        assert_eq!(
            Superblock::parse(&sb.serialize()),
            Err(DeltaError::Endianness(b'x'))
        );
        let mut sb = sample(Endianness::Little, false);
        sb.parts[0].version = 1;
        assert!(matches!(
            Superblock::parse(&sb.serialize()),
            Err(DeltaError::PartVersion { .. })
        ));
        assert!(parse_object_list(&[1; 32]).is_err());
        let mut bad = vec![0u8; 33];
        bad[0] = 42;
        assert!(parse_object_list(&bad).is_err());
    }
}
