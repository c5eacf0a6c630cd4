//! Helpers shared by the static-delta suites (`tests/pull_delta*.rs`),
//! included with `#[path = "common/delta.rs"] mod delta_support;` next to
//! `mod common;` and `mod pull_support;`.
//!
//! Two commits of a tree chosen so that `ostree static-delta generate`
//! uses every kind of part content: C1 is the edge tree plus
//! `lib/libbar.so.1` and `data/blob.bin`; C2 renames and edits the library
//! near its start (bsdiff), edits the blob near its end (rollsum), changes,
//! adds and removes a few files. Also tools to make hostile deltas by
//! rewriting a real one with arbor's own serializers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbor::ostree::Checksum;
use arbor::ostree::delta::part::encode_part_file;
use arbor::ostree::delta::{Compression, DeltaName, Superblock};

use crate::common::*;
use crate::pull_support::*;

pub struct DeltaSource {
    pub base: PathBuf,
    /// Archive repository with `main` = C2 (parent C1), no deltas.
    pub repo: PathBuf,
    pub c1: String,
    pub c2: String,
}

impl DeltaSource {
    pub fn c1(&self) -> Checksum {
        Checksum::from_hex(&self.c1).unwrap()
    }
    pub fn c2(&self) -> Checksum {
        Checksum::from_hex(&self.c2).unwrap()
    }
}

/// Adds the bsdiff and rollsum candidates to a copy of the edge tree.
pub fn build_c1(dir: &Path) {
    copy_tree(&pull_edge_tree().path, dir);
    make_dir(&dir.join("lib"), 0o755);
    make_dir(&dir.join("data"), 0o755);
    write_file(
        &dir.join("lib/libbar.so.1"),
        &pseudo_random_bytes(30_000, 11),
        0o755,
    );
    write_file(
        &dir.join("data/blob.bin"),
        &pseudo_random_bytes(60_000, 12),
        0o644,
    );
}

pub fn evolve(dir: &Path) {
    let mut lib = std::fs::read(dir.join("lib/libbar.so.1")).unwrap();
    lib[100..110].copy_from_slice(b"0123456789");
    std::fs::remove_file(dir.join("lib/libbar.so.1")).unwrap();
    write_file(&dir.join("lib/libbar.so.2"), &lib, 0o755);
    let mut blob = std::fs::read(dir.join("data/blob.bin")).unwrap();
    let n = blob.len();
    blob[n - 500..n - 490].copy_from_slice(b"abcdefghij");
    write_file(&dir.join("data/blob.bin"), &blob, 0o644);
    write_file(&dir.join("file_0644.txt"), b"hello again\n", 0o644);
    write_file(&dir.join("brand-new.txt"), b"new in C2\n", 0o600);
    std::os::unix::fs::symlink("brand-new.txt", dir.join("new-link")).unwrap();
    std::fs::remove_file(dir.join("exec_0755")).unwrap();
}

/// The source repository, built once per test binary.
pub fn delta_source() -> &'static DeltaSource {
    static S: OnceLock<DeltaSource> = OnceLock::new();
    S.get_or_init(|| {
        let base = scratch_dir("delta-src");
        let repo = base.join("repo");
        ostree_init(&repo, Mode::Archive);
        let tree = base.join("tree");
        build_c1(&tree);
        let c1 = ostree_commit(&repo, &tree, "main", &CommitOpts::new("c1", "", TS));
        evolve(&tree);
        let c2 = ostree_commit(
            &repo,
            &tree,
            "main",
            &CommitOpts::new("c2", "", TS + 10).parent(&c1),
        );
        DeltaSource { base, repo, c1, c2 }
    })
}

/// `ostree static-delta generate ARGS --filename=DIR/NAME/superblock`.
pub fn generate_to_dir(repo: &Path, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let mut a: Vec<String> = vec!["static-delta".into(), "generate".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.push(format!("--filename={}", d.join("superblock").display()));
    ostree_repo_ok(repo, &a);
    d
}

/// `ostree static-delta generate ARGS` into the repository itself.
pub fn generate_in_repo(repo: &Path, args: &[&str]) {
    let mut a: Vec<String> = vec!["static-delta".into(), "generate".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    ostree_repo_ok(repo, &a);
}

/// A copy of the source at `www/NAME` with the deltas `deltas` (each the
/// arguments of one `static-delta generate`), and a summary (which also
/// writes the delta indexes) when `summary`.
pub fn serve_copy(www: &Path, name: &str, deltas: &[&[&str]], summary: bool) -> PathBuf {
    let s = delta_source();
    let dst = www.join(name);
    copy_tree(&s.repo, &dst);
    for d in deltas {
        generate_in_repo(&dst, d);
    }
    if summary {
        ostree_summary_update(&dst);
    }
    dst
}

/// The path of a delta's file in a repository.
pub fn delta_file(repo: &Path, rel: &str) -> PathBuf {
    repo.join(rel)
}

pub fn read_superblock(repo: &Path, name: &DeltaName) -> Superblock {
    Superblock::parse(&std::fs::read(repo.join(name.superblock_path())).unwrap()).unwrap()
}

pub fn write_superblock(repo: &Path, name: &DeltaName, sb: &Superblock) {
    std::fs::write(repo.join(name.superblock_path()), sb.serialize()).unwrap();
}

/// The decompressed payload of part `i`.
pub fn read_payload(repo: &Path, name: &DeltaName, i: usize) -> Vec<u8> {
    let file = std::fs::read(repo.join(name.part_path(i))).unwrap();
    xz_decompress(&file)
}

pub fn xz_decompress(part: &[u8]) -> Vec<u8> {
    match Compression::from_byte(part[0]).unwrap() {
        Compression::None => part[1..].to_vec(),
        Compression::Xz => {
            let mut out = Vec::new();
            let mut s = liblzma::stream::Stream::new_stream_decoder(u64::MAX, 0).unwrap();
            let mut input = &part[1..];
            loop {
                out.reserve(1 << 20);
                let before = s.total_in();
                let st = s
                    .process_vec(input, &mut out, liblzma::stream::Action::Run)
                    .unwrap();
                input = &input[(s.total_in() - before) as usize..];
                if st == liblzma::stream::Status::StreamEnd {
                    break;
                }
            }
            out
        }
    }
}

/// Replaces part `i` by `file` (the bytes of a part file) and makes the
/// superblock's header for it agree (size and checksum), so that only the
/// payload is hostile. The caller regenerates the summary.
pub fn replace_part_file(repo: &Path, name: &DeltaName, i: usize, file: &[u8]) {
    std::fs::write(repo.join(name.part_path(i)), file).unwrap();
    let mut sb = read_superblock(repo, name);
    sb.parts[i].size = file.len() as u64;
    sb.parts[i].checksum = Checksum::digest(file);
    write_superblock(repo, name, &sb);
}

/// Rewrites part `i`'s payload with `f`, recompressed with xz.
pub fn rewrite_payload(
    repo: &Path,
    name: &DeltaName,
    i: usize,
    f: impl FnOnce(Vec<u8>) -> Vec<u8>,
) {
    let payload = f(read_payload(repo, name, i));
    replace_part_file(repo, name, i, &encode_part_file(&payload, Compression::Xz));
}

/// Requests for delta files (superblocks, parts, indexes).
pub fn delta_requests(reqs: &[Request]) -> Vec<&Request> {
    reqs.iter()
        .filter(|r| kind_of(&r.path) == Kind::Delta)
        .collect()
}

/// Requests for objects other than detached metadata (which every pull
/// asks for once per commit, as libostree does).
pub fn object_requests(reqs: &[Request]) -> Vec<&Request> {
    reqs.iter()
        .filter(|r| {
            matches!(
                kind_of(&r.path),
                Kind::Commit | Kind::DirTree | Kind::DirMeta | Kind::File
            )
        })
        .collect()
}

/// A delta's superblock and every one of its parts that is not inline
/// were fetched (200), each exactly once, and no object but
/// `allowed_objects`.
#[track_caller]
pub fn assert_delta_fetched(
    reqs: &[Request],
    sb: &Superblock,
    allowed_objects: &std::collections::BTreeSet<String>,
) {
    let name = sb.name();
    let dir = format!("/{}/", name.dir());
    let ok = |suffix: &str| {
        reqs.iter()
            .filter(|r| r.status == 200 && r.path.contains(&dir) && r.path.ends_with(suffix))
            .count()
    };
    assert_eq!(ok("/superblock"), 1, "superblock of {name}: {reqs:#?}");
    for i in 0..sb.parts.len() {
        let expected = usize::from(sb.inline_part(i).is_none());
        assert_eq!(
            ok(&format!("/{i}")),
            expected,
            "part {i} of {name}: {reqs:#?}"
        );
    }
    let objects: std::collections::BTreeSet<String> = object_requests(reqs)
        .iter()
        .filter_map(|r| object_key(&r.path))
        .collect();
    assert_set_eq(
        &objects,
        allowed_objects,
        "objects fetched beside the delta",
    );
}

/// CRC32 (IEEE), as xz uses for its headers and index.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// An xz variable-length integer.
pub fn encode_vli(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A part file (`'x'` then an xz stream) whose index lists `records`
/// (unpadded, uncompressed size) over blocks of zero bytes: framing that
/// adds up, with every CRC right, but blocks no decoder would accept. What
/// a hostile server can declare before a byte is decompressed.
pub fn xz_part_with_index(records: &[(u64, u64)]) -> Vec<u8> {
    let flags = [0u8, 0x04]; // CRC64, as libostree writes
    let mut s = vec![0xfd, b'7', b'z', b'X', b'Z', 0, flags[0], flags[1]];
    s.extend_from_slice(&crc32(&flags).to_le_bytes());
    for (unpadded, _) in records {
        s.resize(s.len() + (*unpadded as usize).div_ceil(4) * 4, 0);
    }
    let mut index = vec![0u8];
    index.extend(encode_vli(records.len() as u64));
    for (u, n) in records {
        index.extend(encode_vli(*u));
        index.extend(encode_vli(*n));
    }
    index.resize(index.len().div_ceil(4) * 4, 0);
    let crc = crc32(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    let backward = (index.len() / 4 - 1) as u32;
    s.extend_from_slice(&index);
    let mut footer_body = backward.to_le_bytes().to_vec();
    footer_body.extend_from_slice(&flags);
    s.extend_from_slice(&crc32(&footer_body).to_le_bytes());
    s.extend_from_slice(&footer_body);
    s.extend_from_slice(b"YZ");
    [&[b'x'][..], &s].concat()
}
