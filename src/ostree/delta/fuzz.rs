//! The bodies of the delta fuzz targets (`fuzz/fuzz_targets/delta_*.rs`),
//! kept here so the unit tests run them on real deltas too.

use super::bspatch;
use super::index::DeltaIndex;
use super::opcodes::{Decoder, Op, OpChecker, Step, WriteSource};
use super::part::PartPayload;
use super::superblock::{SignedSuperblock, Superblock};
use super::xz;
use crate::ostree::{Checksum, ObjectName, ObjectType};

/// Superblocks, signed wrappers and delta indexes: anything accepted
/// re-serializes to exactly the input.
pub fn superblock(data: &[u8]) {
    if let Ok(sb) = Superblock::parse(data) {
        assert_eq!(sb.serialize(), data, "accepted a non-normal superblock");
        for i in 0..sb.parts.len() {
            let _ = sb.inline_part(i);
        }
        let _ = sb.commitmeta();
    }
    if let Ok(s) = SignedSuperblock::parse(data) {
        assert_eq!(
            s.serialize(),
            data,
            "accepted a non-normal signed superblock"
        );
    }
    if let Ok(i) = DeltaIndex::parse(data) {
        assert_eq!(i.serialize(), data, "accepted a non-normal delta index");
    }
}

/// Part payloads (with their opcodes run through the checker against a
/// fixed object list), single ops, xz framing and bsdiff patches.
/// The object types of the fixed object list parts are checked against.
pub const OBJECT_TYPES: [ObjectType; 6] = [
    ObjectType::DirTree,
    ObjectType::File,
    ObjectType::File,
    ObjectType::DirMeta,
    ObjectType::File,
    ObjectType::File,
];

pub fn part(data: &[u8]) {
    let objects: Vec<ObjectName> = OBJECT_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| ObjectName::new(Checksum::from_array([i as u8; 32]), *t))
        .collect();
    if let Ok(p) = PartPayload::parse(data) {
        assert_eq!(p.serialize(), data, "accepted a non-normal payload");
        let blob = p.blob.len() as u64;
        let checker = OpChecker::new(&objects, blob, p.modes.len(), p.xattrs.len());
        for step in Decoder::new(p.ops, checker) {
            let Ok(step) = step else { break };
            let in_blob = |r: &std::ops::Range<u64>| assert!(r.start <= r.end && r.end <= blob);
            match &step {
                Step::SpliceMeta { blob: r, .. }
                | Step::SetReadSource { blob: r }
                | Step::Write(WriteSource::Blob(r))
                | Step::Bspatch { patch: r, .. } => in_blob(r),
                Step::SpliceContent {
                    blob: r,
                    mode,
                    xattr,
                    ..
                } => {
                    in_blob(r);
                    assert!(*mode < p.modes.len() && *xattr < p.xattrs.len());
                }
                Step::Open { mode, xattr, .. } => {
                    assert!(*mode < p.modes.len() && *xattr < p.xattrs.len());
                }
                _ => {}
            }
        }
    }
    for meta in [false, true] {
        if let Ok((op, n)) = Op::decode(data, meta) {
            let mut again = Vec::new();
            op.encode(&mut again);
            assert!(n <= data.len() && again.len() <= n);
        }
    }
    let _ = xz::declared_size(data);
    let (old, patch) = data.split_at(data.len() / 2);
    if let Ok(new) = bspatch::apply_in_memory(old, patch, patch.len().min(4096) as u64) {
        assert_eq!(new.len(), patch.len().min(4096));
    }
}

#[cfg(test)]
mod tests {
    use super::super::part::encode_part_file;
    use super::*;

    /// The fuzz bodies on the real deltas of tests/fixtures/deltas and on
    /// every truncation of a small superblock: no panic.
    #[test]
    fn fuzz_bodies_on_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deltas");
        for d in ["from-to", "swapped", "scratch", "inline", "nobsdiff"] {
            let sb = std::fs::read(dir.join(d).join("superblock")).unwrap();
            superblock(&sb);
            let parsed = Superblock::parse(&sb).unwrap();
            for cut in (0..sb.len()).step_by(7) {
                superblock(&sb[..cut]);
            }
            if let Ok(p) = std::fs::read(dir.join(d).join("0")) {
                part(&p[1..]);
            }
            let _ = parsed;
        }
        let payload = PartPayload {
            modes: vec![],
            xattrs: vec![],
            blob: b"abc",
            ops: b"S\x03\x00",
        }
        .serialize();
        part(&payload);
        part(&encode_part_file(&payload, super::super::part::Compression::Xz)[1..]);
        for cut in 0..payload.len() {
            part(&payload[..cut]);
        }
    }
}
