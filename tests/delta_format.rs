//! arbor's static-delta model against deltas written by the real
//! `ostree static-delta generate` (tests/fixtures/deltas, made by
//! tests/fixtures/make-delta-fixtures.sh): every superblock parses and
//! re-serializes to the same bytes, every part's checksum, size and xz
//! framing agree with its header, every payload re-serializes exactly, and
//! every opcode stream decodes and checks, creating each listed object.

use std::path::{Path, PathBuf};

use arbor::ostree::delta::opcodes::Decoder;
use arbor::ostree::delta::part::{encode_part_file, max_payload_size};
use arbor::ostree::delta::{
    Compression, DeltaName, Endianness, OpChecker, PartPayload, Step, Superblock, WriteSource, xz,
};
use arbor::ostree::{Checksum, ObjectType};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deltas")
}

fn commits() -> (Checksum, Checksum) {
    let text = std::fs::read_to_string(fixtures().join("commits")).unwrap();
    let mut l = text.lines().map(|l| Checksum::from_hex(l).unwrap());
    (l.next().unwrap(), l.next().unwrap())
}

fn decompress(part: &[u8]) -> Vec<u8> {
    match Compression::from_byte(part[0]).unwrap() {
        Compression::None => part[1..].to_vec(),
        Compression::Xz => {
            let mut out = Vec::new();
            let mut s = liblzma::stream::Stream::new_stream_decoder(u64::MAX, 0).unwrap();
            let mut input = &part[1..];
            loop {
                out.reserve(1 << 16);
                let before = s.total_in();
                let st = s
                    .process_vec(input, &mut out, liblzma::stream::Action::Run)
                    .unwrap();
                input = &input[(s.total_in() - before) as usize..];
                if st == liblzma::stream::Status::StreamEnd {
                    break;
                }
            }
            assert!(input.is_empty());
            out
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    splice: usize,
    open: usize,
    blob_writes: usize,
    source_writes: usize,
    bspatch: usize,
}

/// Checks one delta directory and counts its operations.
fn check_delta(dir: &str) -> (Superblock, Tally) {
    let path = fixtures().join(dir);
    let bytes = std::fs::read(path.join("superblock")).unwrap();
    let sb = Superblock::parse(&bytes).unwrap();
    assert_eq!(sb.serialize(), bytes, "{dir}: superblock round trip");
    assert_eq!(sb.commit.checksum(), sb.to, "{dir}: commit is TO");
    assert!(!sb.endianness_guessed, "{dir}: ostree.endianness is set");
    assert!(sb.recurse.is_empty());
    assert!(sb.fallbacks.is_empty());
    let name: DeltaName = sb.name();
    let mut tally = Tally::default();
    for (i, h) in sb.parts.iter().enumerate() {
        let file = match sb.inline_part(i) {
            Some(inline) => inline.to_vec(),
            None => {
                let f = std::fs::read(path.join(i.to_string())).unwrap();
                assert_eq!(Checksum::digest(&f), h.checksum, "{dir}/{i}: checksum");
                assert_eq!(f.len() as u64, h.size, "{dir}/{i}: size");
                f
            }
        };
        assert_eq!(file[0], b'x', "{dir}/{i}: ostree always compresses");
        let payload_bytes = decompress(&file);
        assert_eq!(
            xz::declared_size(&file[1..]).unwrap(),
            payload_bytes.len() as u64,
            "{dir}/{i}: declared size"
        );
        // Byte-exact with libostree's compressor (same preset and check).
        assert_eq!(
            encode_part_file(&payload_bytes, Compression::Xz),
            file,
            "{dir}/{i}: xz encoding"
        );
        // Within the bound arbor holds declared sizes to.
        let max = max_payload_size(h.objects.len(), h.usize);
        assert!(
            payload_bytes.len() as u64 <= max,
            "{dir}/{i}: payload {} over the bound {max}",
            payload_bytes.len()
        );
        let payload = PartPayload::parse(&payload_bytes).unwrap();
        assert_eq!(
            payload.serialize(),
            payload_bytes,
            "{dir}/{i}: payload round trip"
        );
        let checker = OpChecker::new(
            &h.objects,
            payload.blob.len() as u64,
            payload.modes.len(),
            payload.xattrs.len(),
        );
        let steps: Vec<Step> = Decoder::new(payload.ops, checker)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{dir}/{i}: {e}"));
        for s in &steps {
            match s {
                Step::SpliceMeta { .. } | Step::SpliceContent { .. } => tally.splice += 1,
                Step::Open { .. } => tally.open += 1,
                Step::Write(WriteSource::Blob(_)) => tally.blob_writes += 1,
                Step::Write(WriteSource::ReadSource { .. }) => tally.source_writes += 1,
                Step::Bspatch { .. } => tally.bspatch += 1,
                _ => {}
            }
        }
        // The commit is never in a part.
        assert!(h.objects.iter().all(|o| o.objtype != ObjectType::Commit));
    }
    assert_eq!(name, sb.name());
    (sb, tally)
}

#[test]
fn from_delta_with_bsdiff_and_rollsum() {
    let (c1, c2) = commits();
    let (sb, t) = check_delta("from-to");
    assert_eq!((sb.from, sb.to), (Some(c1), c2));
    assert_eq!(sb.endianness, Endianness::NATIVE);
    assert_eq!(t.bspatch, 2, "{t:?}");
    assert_eq!(t.open, 3, "{t:?}");
    assert!(t.source_writes > 0 && t.blob_writes > 0, "{t:?}");
}

#[test]
fn from_delta_without_bsdiff() {
    let (_, t) = check_delta("nobsdiff");
    assert_eq!(t.bspatch, 0, "{t:?}");
    assert_eq!(t.open, 1, "{t:?}");
}

#[test]
fn swapped_endianness() {
    let (plain, _) = check_delta("from-to");
    let (sb, _) = check_delta("swapped");
    assert_ne!(sb.endianness, Endianness::NATIVE);
    // Same parts, read the same through the other byte order.
    assert_eq!(sb.parts, plain.parts);
}

#[test]
fn scratch_and_inline() {
    let (_, c2) = commits();
    let (sb, t) = check_delta("scratch");
    assert_eq!((sb.from, sb.to), (None, c2));
    assert_eq!((t.open, t.bspatch), (0, 0), "{t:?}");
    let (inl, t2) = check_delta("inline");
    assert!(inl.inline_part(0).is_some());
    assert!(!fixtures().join("inline/0").exists());
    assert_eq!(inl.parts.len(), sb.parts.len());
    assert_eq!(t.splice, t2.splice);
}
