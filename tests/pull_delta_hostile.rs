//! Hostile and broken static deltas, and interrupted delta pulls.
//!
//! Each hostile delta is a real one (`ostree static-delta generate`,
//! C1 → C2 with bsdiff) rewritten with arbor's own serializers so that
//! exactly one thing is wrong, the summary regenerated so its digests agree.
//! The store holds C1; pulling C2 must fail with an error naming the delta
//! (and the part), leave the ref at C1, and make nothing of the delta
//! visible: the store's objects are exactly those it had, and C2 is
//! neither stored nor marked partial.

mod common;
#[path = "common/delta.rs"]
mod delta_support;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbor::ostree::Commit;
use arbor::ostree::delta::bspatch::Control;
use arbor::ostree::delta::opcodes::{Decoder, Op, encode_ops};
use arbor::ostree::delta::part::encode_part_file;
use arbor::ostree::delta::{Compression, DeltaName, OpChecker, PartPayload, Step};
use common::*;
use delta_support::*;
use pull_support::*;

struct Served {
    root: PathBuf,
    nginx: Nginx,
}

fn served() -> &'static Served {
    static S: OnceLock<Served> = OnceLock::new();
    S.get_or_init(|| {
        let root = delta_source().base.join("hostile-www");
        std::fs::create_dir_all(&root).unwrap();
        Served {
            nginx: Nginx::start(&root),
            root,
        }
    })
}

fn update() -> DeltaName {
    let s = delta_source();
    DeltaName::new(Some(s.c1()), s.c2())
}

/// A served copy with the C1 → C2 delta, broken by `f` (given the repo),
/// then summarised.
fn hostile(name: &str, f: impl FnOnce(&Path)) -> String {
    let s = delta_source();
    let root = &served().root;
    let from: &[&str] = &["--from", &s.c1, "--to", &s.c2];
    let repo = serve_copy(root, name, &[from], false);
    f(&repo);
    ostree_summary_update(&repo);
    name.to_string()
}

/// A store holding C1 (fetched as objects), with `origin` at `served`.
fn store_at_c1(served_name: &str) -> (tempfile::TempDir, PathBuf) {
    let (t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &served().nginx.url(served_name),
        &["--no-sign-verify"],
    );
    pull_ok(
        &store,
        &[
            "--disable-static-deltas",
            "origin",
            &format!("main@{}", delta_source().c1),
        ],
    );
    (t, store)
}

/// Pulling C2 fails, mentioning `needles`; nothing changed in the store.
#[track_caller]
fn assert_refused_delta(served_name: &str, needles: &[&str]) -> Run {
    let s = delta_source();
    let (_t, store) = store_at_c1(served_name);
    let before = store_objects(&store);
    let r = pull(&store, &["origin", "main"]).assert_clean_failure();
    let mut all = vec![format!("static delta {}", update())];
    all.extend(needles.iter().map(|n| n.to_string()));
    assert_mentions(&r, &all.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(read_ref(&store, "remotes/origin/main"), Some(s.c1.clone()));
    assert_set_eq(
        &store_objects(&store),
        &before,
        "objects after the refused delta",
    );
    assert!(!is_partial(&store, &s.c2), "C2 left marked partial");
    assert_fsck_clean(&store);
    r
}

/// The first step of part 0 matching `pred`, with the part's payload.
fn find_step(repo: &Path, pred: impl Fn(&Step, &PartPayload) -> bool) -> (Vec<u8>, Step) {
    let name = update();
    let payload = read_payload(repo, &name, 0);
    let sb = read_superblock(repo, &name);
    let p = PartPayload::parse(&payload).unwrap();
    let checker = OpChecker::new(
        &sb.parts[0].objects,
        p.blob.len() as u64,
        p.modes.len(),
        p.xattrs.len(),
    );
    let step = Decoder::new(p.ops, checker)
        .map(Result::unwrap)
        .find(|s| pred(s, &p))
        .expect("a matching step");
    (payload.clone(), step)
}

/// Rebuilds a payload with a new blob or opcode stream.
fn with(payload: &[u8], blob: Option<&[u8]>, ops: Option<&[u8]>) -> Vec<u8> {
    let p = PartPayload::parse(payload).unwrap();
    PartPayload {
        modes: p.modes.clone(),
        xattrs: p.xattrs.clone(),
        blob: blob.unwrap_or(p.blob),
        ops: ops.unwrap_or(p.ops),
    }
    .serialize()
}

fn blob_of(payload: &[u8]) -> Vec<u8> {
    PartPayload::parse(payload).unwrap().blob.to_vec()
}

fn ops_of(payload: &[u8]) -> Vec<u8> {
    PartPayload::parse(payload).unwrap().ops.to_vec()
}

/// Decodes the raw ops of part 0 (what `S` means depends on the objects).
fn raw_ops(repo: &Path, payload: &[u8]) -> Vec<Op> {
    let sb = read_superblock(repo, &update());
    let ops = ops_of(payload);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut next_obj = 0;
    while pos < ops.len() {
        let meta = sb.parts[0]
            .objects
            .get(next_obj)
            .is_some_and(|o| o.objtype.is_meta());
        let (op, n) = Op::decode(&ops[pos..], meta).unwrap();
        if matches!(
            op,
            Op::SpliceMeta { .. } | Op::SpliceContent { .. } | Op::Close
        ) {
            next_obj += 1;
        }
        out.push(op);
        pos += n;
    }
    out
}

#[test]
fn corrupt_part_checksum() {
    let s = hostile("badsum", |repo| {
        flip_byte(&repo.join(update().part_path(0)), 100);
    });
    assert_refused_delta(&s, &["part 0", "SHA-256"]);
}

#[test]
fn part_producing_a_wrong_object() {
    let s = hostile("badobject", |repo| {
        let (payload, step) = find_step(repo, |s, p| {
            matches!(s, Step::SpliceContent { mode, blob, .. }
                if p.modes[*mode].mode & 0o170000 == 0o100000 && blob.end > blob.start)
        });
        let Step::SpliceContent { blob, .. } = step else {
            unreachable!()
        };
        let mut b = blob_of(&payload);
        b[blob.start as usize] ^= 0xff;
        rewrite_payload(repo, &update(), 0, |_| with(&payload, Some(&b), None));
    });
    assert_refused_delta(&s, &["part 0", "produced object", "checksum"]);
}

#[test]
fn opcode_past_the_end_of_the_payload() {
    let s = hostile("truncops", |repo| {
        let payload = read_payload(repo, &update(), 0);
        let ops = ops_of(&payload);
        // Cut inside the first `S`: its arguments run off the end.
        let at = ops.iter().position(|b| *b == b'S').unwrap();
        rewrite_payload(repo, &update(), 0, |_| {
            with(&payload, None, Some(&ops[..at + 2]))
        });
    });
    assert_refused_delta(&s, &["part 0", "ends in the middle of an operation"]);
}

fn bad_index(which: &str) -> String {
    let mode = which == "mode";
    hostile(&format!("bad{which}"), move |repo| {
        let payload = read_payload(repo, &update(), 0);
        let mut ops = raw_ops(repo, &payload);
        let op = ops
            .iter_mut()
            .find(|o| matches!(o, Op::SpliceContent { .. }))
            .unwrap();
        if let Op::SpliceContent {
            mode: m, xattr: x, ..
        } = op
        {
            if mode {
                *m = 200;
            } else {
                *x = 300;
            }
        }
        let new_ops = encode_ops(&ops);
        rewrite_payload(repo, &update(), 0, |_| with(&payload, None, Some(&new_ops)));
    })
}

#[test]
fn mode_index_out_of_range() {
    let s = bad_index("mode");
    assert_refused_delta(&s, &["part 0", "mode index 200"]);
}

#[test]
fn xattr_index_out_of_range() {
    let s = bad_index("xattr");
    assert_refused_delta(&s, &["part 0", "xattr index 300"]);
}

#[test]
fn bspatch_reading_out_of_bounds() {
    let s = hostile("badpatch", |repo| {
        let (payload, step) = find_step(repo, |s, _| matches!(s, Step::Bspatch { .. }));
        let Step::Bspatch { patch, .. } = step else {
            unreachable!()
        };
        // Seek before the start of the old file, then diff one byte there.
        let mut p = Vec::new();
        Control {
            diff: 0,
            extra: 0,
            seek: -5,
        }
        .encode(&mut p);
        Control {
            diff: 1,
            extra: 0,
            seek: 0,
        }
        .encode(&mut p);
        p.push(0);
        let len = (patch.end - patch.start) as usize;
        assert!(p.len() <= len, "the real patch is long enough");
        p.resize(len, 0);
        let mut b = blob_of(&payload);
        b[patch.start as usize..patch.end as usize].copy_from_slice(&p);
        rewrite_payload(repo, &update(), 0, |_| with(&payload, Some(&b), None));
    });
    assert_refused_delta(&s, &["part 0", "bsdiff", "old bytes"]);
}

/// 64 MiB of zeros (a few KiB of xz) whose index declares 3,000,000 bytes
/// (same varint length, CRC fixed): a valid-looking part that inflates far
/// past what it declares.
fn bomb() -> Vec<u8> {
    let mut part = encode_part_file(&vec![0u8; 64 << 20], Compression::Xz);
    let footer = part.len() - 12;
    let backward = u32::from_le_bytes(part[footer + 4..footer + 8].try_into().unwrap());
    let index_len = (backward as usize + 1) * 4;
    let index = footer - index_len;
    // Index: 00, count, (unpadded, uncompressed)*, padding, CRC32.
    let real = encode_vli(64 << 20);
    let fake = encode_vli(3_000_000);
    assert_eq!(real.len(), fake.len());
    let body = &mut part[index..footer - 4];
    let at = body
        .windows(real.len())
        .position(|w| w == real.as_slice())
        .expect("the uncompressed size is in the index");
    body[at..at + fake.len()].copy_from_slice(&fake);
    let crc = crc32(&part[index..footer - 4]);
    part[footer - 4..footer].copy_from_slice(&crc.to_le_bytes());
    part
}

#[test]
fn xz_bomb_stops_at_its_declared_size() {
    let s = hostile("bomb", |repo| {
        replace_part_file(repo, &update(), 0, &bomb());
    });
    assert_refused_delta(&s, &["part 0", "inflates past its declared 3000000 bytes"]);
}

/// An xz index whose records add up to 2^64 − 1 bytes ((2^63 − 1) twice,
/// then 1): refused before anything is decompressed, rather than
/// overflowing the room computation (a panic in debug builds, an endless
/// loop in release ones).
#[test]
fn xz_index_declaring_u64_max() {
    let s = hostile("maxdecl", |repo| {
        let big = (1u64 << 63) - 1;
        let part = xz_part_with_index(&[(16, big), (16, big), (16, 1)]);
        replace_part_file(repo, &update(), 0, &part);
    });
    assert_refused_delta(&s, &["part 0", "18446744073709551615-byte payload"]);
}

#[test]
fn truncated_superblock() {
    let s = hostile("truncsb", |repo| {
        let p = repo.join(update().superblock_path());
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    });
    assert_refused_delta(&s, &["superblock is invalid"]);
}

#[test]
fn superblock_carrying_another_commit() {
    let s = hostile("wrongcommit", |repo| {
        let c1 = delta_source().c1.clone();
        let mut sb = read_superblock(repo, &update());
        sb.commit =
            Commit::parse(&std::fs::read(object_path(repo, &c1, "commit")).unwrap()).unwrap();
        write_superblock(repo, &update(), &sb);
    });
    assert_refused_delta(&s, &["hashes to", &delta_source().c1]);
}

/// A superblock that is not the one the summary lists.
#[test]
fn superblock_not_matching_the_summary() {
    let s = hostile("swapped-sb", |_| {});
    let repo = served().root.join(&s);
    // After the summary was made: append a metadata entry.
    let mut sb = read_superblock(&repo, &update());
    sb.metadata
        .insert("x", arbor::ostree::Value::Str("tampered".into()));
    write_superblock(&repo, &update(), &sb);
    assert_refused_delta(&s, &["superblock's SHA-256", "summary lists"]);
}

/// `kill -9` of a pull in the middle of a delta (parts served slowly), then
/// the same pull again: it finishes, skipping the part already applied, and
/// the store is consistent.
#[test]
fn killed_mid_delta_then_resumed() {
    let s = delta_source();
    let root = delta_source().base.join("slow-www");
    std::fs::create_dir_all(&root).unwrap();
    let scratch: &[&str] = &["--empty", "--to", &s.c2, "--max-chunk-size=1"];
    let repo = serve_copy(&root, "repo", &[scratch], true);
    let name = DeltaName::scratch(s.c2());
    let sb = read_superblock(&repo, &name);
    assert!(sb.parts.len() >= 2, "{} parts", sb.parts.len());
    // The big part (big.bin, 1 MiB) takes about 4 s at 256 KiB/s.
    let nginx = Nginx::start_with(&root, "", "limit_rate 256k;");
    let (_t, store) = new_store(Mode::Bare);
    add_remote(&store, "origin", &nginx.url("repo"), &["--no-sign-verify"]);
    let mut child = arbor_command()
        .arg("--repo")
        .arg(&store)
        .args(["pull", "--quiet", "origin", "main"])
        .spawn()
        .unwrap();
    // Wait until a part has been served whole, then a moment to apply it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let small = sb
        .parts
        .iter()
        .enumerate()
        .min_by_key(|(_, h)| h.size)
        .map(|(i, _)| i)
        .unwrap();
    let small_path = name.part_path(small);
    loop {
        let done = nginx
            .requests()
            .iter()
            .any(|r| r.status == 200 && r.path.ends_with(&small_path));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "part {small} never fetched");
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Applying it takes a few milliseconds, but a debug build on a
    // loaded machine (the whole suite in parallel) has needed more than
    // 0.7 s; the big part takes about 4 s to arrive, so 1.5 s still kills
    // the pull mid-delta.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pull ended before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(read_ref(&store, "remotes/origin/main"), None);

    let mark = nginx.mark();
    pull_ok(&store, &["origin", "main"]);
    let reqs = nginx.requests_since(mark);
    assert!(
        !reqs.iter().any(|r| r.path.ends_with(&small_path)),
        "part {small}, applied before the kill, was fetched again: {reqs:#?}"
    );
    assert!(object_requests(&reqs).is_empty(), "{reqs:#?}");
    assert_pulled(&store, &s.repo, &s.c2, false);
    assert_eq!(read_ref(&store, "remotes/origin/main"), Some(s.c2.clone()));
}

/// Peak RSS in KiB of `arbor --repo STORE pull origin main` (GNU `time`'s
/// count, as `pull_memory` measures it), and the run.
fn pull_peak_rss(store: &Path) -> (i64, Run) {
    let dir = tempdir();
    let out = dir.path().join("rss");
    let r = run({
        let mut c = std::process::Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&out)
            .arg(arbor_bin())
            .arg("--repo")
            .arg(store)
            .args(["pull", "origin", "main"]);
        c
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("time wrote {text:?}"));
    (kib, r)
}

/// A part whose xattr table frames 4,000,000 empty entries (16 MB of
/// offsets, inside the tables' bound) is a valid delta: it applies, and the
/// table is read entry by entry as objects use it, never parsed whole
/// (which took 351 MB).
#[test]
fn xattr_table_of_millions_of_entries() {
    let s = hostile("xattrmillions", |repo| {
        rewrite_payload(repo, &update(), 0, |payload| {
            let p = PartPayload::parse(&payload).unwrap();
            let mut x = p.xattrs.clone();
            x.resize(4_000_000, arbor::ostree::Xattrs::new());
            PartPayload {
                modes: p.modes.clone(),
                xattrs: x,
                blob: p.blob,
                ops: p.ops,
            }
            .serialize()
        });
    });
    let (_t, store) = store_at_c1(&s);
    let (kib, r) = pull_peak_rss(&store);
    r.assert_ok();
    assert_eq!(
        read_ref(&store, "remotes/origin/main"),
        Some(delta_source().c2.clone())
    );
    assert_fsck_clean(&store);
    eprintln!("peak RSS with a 4,000,000-entry xattr table: {kib} KiB");
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB, over 64 MiB");
}

/// A real part whose LZMA2 block header asks for a 48 MiB dictionary
/// (libostree's compiler writes 32 MiB): refused before the dictionary is
/// allocated, rather than decoded with up to 100 MiB as libostree would.
#[test]
fn xz_part_asking_for_a_huge_dictionary() {
    let s = hostile("bigdict", |repo| {
        let path = repo.join(update().part_path(0));
        let mut part = std::fs::read(&path).unwrap();
        // Part byte 0 is 'x'; the stream header is 12 bytes; then the
        // block header: size, flags (no sizes: libostree's encoder writes
        // none), filter 0x21 (LZMA2), 1 property byte, the dictionary.
        let b = 13;
        let hlen = (part[b] as usize + 1) * 4;
        assert_eq!(
            &part[b + 1..b + 5],
            &[0, 0x21, 1, 26],
            "preset 8 block header"
        );
        part[b + 4] = 27; // 3 << 24: 48 MiB (26 is 2 << 24)
        let crc = crc32(&part[b..b + hlen - 4]);
        part[b + hlen - 4..b + hlen].copy_from_slice(&crc.to_le_bytes());
        replace_part_file(repo, &update(), 0, &part);
    });
    assert_refused_delta(
        &s,
        &["part 0", "more than the 33620600 bytes of decoder memory"],
    );
}

/// A superblock declaring a part of 2^64 − 1 bytes (honest, as far as the
/// superblock goes): refused before any part is fetched, for want of
/// space, rather than computing `size + 1` (a panic in debug builds) and
/// writing until the disk is full.
#[test]
fn part_declaring_u64_max_bytes() {
    let s = hostile("partsizemax", |repo| {
        let mut sb = read_superblock(repo, &update());
        sb.parts[0].size = u64::MAX;
        write_superblock(repo, &update(), &sb);
    });
    let mark = served().nginx.mark();
    assert_refused_delta(&s, &["needs 18446744073709551615 bytes", "free"]);
    let parts: Vec<_> = served()
        .nginx
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.path.contains("/deltas/") && !r.path.ends_with("/superblock"))
        .collect();
    assert!(parts.is_empty(), "parts fetched: {parts:?}");
}

/// Objects declared larger than the disk (the index and superblock honest
/// about it): refused before a part is fetched, naming the sizes.
#[test]
fn objects_larger_than_the_disk() {
    let s = hostile("usizebomb", |repo| {
        let mut sb = read_superblock(repo, &update());
        sb.parts[0].usize = 1 << 60;
        write_superblock(repo, &update(), &sb);
    });
    let mark = served().nginx.mark();
    assert_refused_delta(&s, &["needs", "free"]);
    let parts: Vec<_> = served()
        .nginx
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.path.contains("/deltas/") && !r.path.ends_with("/superblock"))
        .collect();
    assert!(parts.is_empty(), "parts fetched: {parts:?}");
}

/// Through the library: a delta failing in a part still reports the end of
/// its `ApplyDelta` phase (a progress display is not left open).
#[test]
fn failed_delta_finishes_its_progress_phase() {
    use arbor::progress::{Event, Phase, Progress};
    use std::sync::Mutex;
    struct Record(Mutex<Vec<String>>);
    impl Progress for Record {
        fn report(&self, e: Event<'_>) {
            let s = match e {
                Event::Start {
                    phase: Phase::ApplyDelta,
                    ..
                } => "start",
                Event::Finish {
                    phase: Phase::ApplyDelta,
                } => "finish",
                _ => return,
            };
            self.0.lock().unwrap().push(s.into());
        }
    }
    let s = hostile("badsum-lib", |repo| {
        flip_byte(&repo.join(update().part_path(0)), 100);
    });
    let (_t, store) = store_at_c1(&s);
    let repo = arbor::store::Repo::open(&store).unwrap();
    let opts = arbor::pull::PullOptions {
        targets: vec!["main".parse().unwrap()],
        ..Default::default()
    };
    let source = arbor::pull::PullSource::Url(served().nginx.url(&s));
    let rec = Record(Mutex::new(Vec::new()));
    let flag = std::sync::atomic::AtomicBool::new(false);
    let r = arbor::pull::pull(&repo, &source, &opts, &rec, &flag);
    assert!(r.is_err(), "{r:?}");
    assert_eq!(*rec.0.lock().unwrap(), ["start", "finish"]);
}
