//! `arbor pull` against a misbehaving HTTP server written for these tests
//! ([`FaultServer`]): truncated bodies, connection resets, 5xx then 200,
//! stalls (with `--timeout 1`), slow-but-steady transfers, final 4xx
//! statuses, wrong and flipped bytes, and all of these at random points
//! with a fixed seed. Bodies cut off resume with `Range` requests (counted:
//! each byte is sent once); objects that arrive corrupt are fetched again;
//! connections are kept alive (counted on the server).
//!
//! Every pull must either complete with a correct store (`ostree fsck`
//! clean, `ostree checkout` equal to the source's, ref moved) or fail
//! cleanly (non-zero exit, no panic, a message naming the object or URL)
//! with the ref NOT moved, the faulty object absent, C2's commit stored and
//! marked partial exactly when the fault came after it, every object kept
//! re-hashing to its name, and `ostree fsck` clean. Retries are counted on the server: the
//! retry policy (`--network-retries`, 4xx final) is asserted exactly.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pull_support::*;

/// `www/f`: archive repo (summary) with `main` = C2, a small medium tree
/// plus `big.bin` (600 KB, incompressible); `prev` = C1, the small tree.
/// `www/nosum`: the same without a summary.
struct Fixture {
    www: PathBuf,
    c1: String,
    c2: String,
    /// Content checksum of `/big.bin` in C2.
    big: String,
    /// Content checksum of a small file in C2.
    small_file: String,
    /// Content checksum of another file in C2.
    other_file: String,
    /// Dirtree of `/d01` in C2.
    dirtree: String,
    /// Dirtree of `/d02` in C2.
    other_dirtree: String,
    /// Dirmeta of `/d00/sub` (0750) and of `/d01` (0755) in C2.
    dirmeta: String,
    other_dirmeta: String,
}

const BIG_LEN: usize = 600 * 1024;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("pull-faults");
        let www = base.join("www");
        let repo = www.join("f");
        std::fs::create_dir_all(&www).unwrap();
        ostree_init(&repo, Mode::Archive);
        let small = base.join("small");
        build_small_tree(&small);
        let c1 = ostree_commit(&repo, &small, "prev", &CommitOpts::new("c1", "", TS));
        let tree = base.join("tree");
        build_medium_tree(&tree, 4, 40, 9);
        write_file(
            &tree.join("big.bin"),
            &pseudo_random_bytes(BIG_LEN, 0xb16),
            0o644,
        );
        let c2 = ostree_commit(
            &repo,
            &tree,
            "main",
            &CommitOpts::new("c2", "", TS + 1).parent(&c1),
        );
        ostree_summary_update(&repo);
        copy_tree(&repo, &www.join("nosum"));
        std::fs::remove_file(www.join("nosum/summary")).unwrap();
        Fixture {
            dirmeta: dir_checksums(&repo, &c2, "/d00/sub").1,
            other_dirmeta: dir_checksums(&repo, &c2, "/d01").1,
            big: file_checksum(&repo, &c2, "/big.bin"),
            small_file: file_checksum(&repo, &c2, "/d01/f0001"),
            other_file: file_checksum(&repo, &c2, "/d02/f0002"),
            dirtree: dir_checksums(&repo, &c2, "/d01").0,
            other_dirtree: dir_checksums(&repo, &c2, "/d02").0,
            www,
            c1,
            c2,
        }
    })
}

fn repo() -> PathBuf {
    fixture().www.join("f")
}

/// URL path of an object of the source repo.
fn obj(csum: &str, ext: &str) -> String {
    format!("/f/objects/{}/{}.{ext}", &csum[..2], &csum[2..])
}

fn obj_bytes(csum: &str, ext: &str) -> Vec<u8> {
    std::fs::read(object_path(&repo(), csum, ext)).unwrap()
}

/// A store whose `heads/main` already points at C1 (pulled through the
/// same server before any fault applies to C2's objects).
fn store_at_c1(server: &FaultServer) -> (tempfile::TempDir, PathBuf) {
    let f = fixture();
    let (t, store) = new_store(Mode::Bare);
    pull_ok(&store, &[&server.url("f"), &format!("main@{}", f.c1)]);
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c1));
    (t, store)
}

fn pull_main(store: &Path, server: &FaultServer, extra: &[&str]) -> Run {
    let url = server.url("f");
    let mut args = vec![url.as_str(), "main"];
    args.extend_from_slice(extra);
    pull(store, &args)
}

/// The pull succeeded and the store is exactly right.
#[track_caller]
fn assert_success(store: &Path, run: Run) {
    let f = fixture();
    run.assert_ok();
    assert_eq!(read_ref(store, "heads/main").as_deref(), Some(&*f.c2));
    assert_pulled(store, &repo(), &f.c2, false);
}

/// How far a failed pull of C2 got when the fault stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    /// At C2's commit object or its detached metadata: both are checked
    /// when fetched, before anything of C2 is written, so neither the
    /// commit nor its `commitpartial` marker is in the store.
    AtCommit,
    /// In C2's tree: the commit had been checked and written (its
    /// `commitpartial` marker created before it), and the tree could not be
    /// completed, so the commit is stored and the marker stays.
    InTree,
}

/// The pull failed cleanly, mentioning `needles`, and left the store as a
/// failed pull must; see each check for why it holds.
#[track_caller]
fn assert_failed(store: &Path, run: Run, needles: &[&str], absent: &str, stopped: Stopped) -> Run {
    let f = fixture();
    let run = run.assert_clean_failure();
    assert_mentions(&run, needles);
    // A ref is written only once every object of its commit is stored, so
    // `heads/main` still names C1.
    assert_eq!(
        read_ref(store, "heads/main").as_deref(),
        Some(&*f.c1),
        "the ref moved although the pull failed\n{}",
        run.describe()
    );
    // Every object is verified before it becomes visible: the one never
    // served correctly cannot be there.
    assert!(
        !has_object(store, absent),
        "{absent} is in the store although it was never served correctly"
    );
    let commit = format!("{}.commit", f.c2);
    let (stored, partial) = (has_object(store, &commit), is_partial(store, &f.c2));
    match stopped {
        Stopped::AtCommit => assert!(
            !stored && !partial,
            "stopped at C2's commit, yet its commit is stored ({stored}) or marked partial \
             ({partial})\n{}",
            run.describe()
        ),
        Stopped::InTree => assert!(
            stored && partial,
            "stopped in C2's tree: its commit must be stored ({stored}) and \
             state/{}.commitpartial must exist ({partial})\n{}",
            f.c2,
            run.describe()
        ),
    }
    // What the failed pull kept was verified before it was written, so it
    // all re-hashes to its name, although no complete commit reaches it.
    assert_objects_hash_to_names(store);
    // C1 is still complete and intact.
    assert_fsck_clean(store);
    run
}

/// A fault server answering the first `times` requests of `path` with
/// `fault` (`usize::MAX`: all of them) and everything else normally, and a
/// store at C1 pulled through it (see [`store_at_c1`]).
fn faulty(path: &str, times: usize, fault: Fault) -> (FaultServer, tempfile::TempDir, PathBuf) {
    let server = FaultServer::only(&fixture().www, path, times, fault);
    let (t, store) = store_at_c1(&server);
    (server, t, store)
}

/// Attempts of one path seen by the server.
fn attempts(server: &FaultServer, path: &str) -> usize {
    of_path(server, path).len()
}

/// The requests of one path, in order.
fn of_path(server: &FaultServer, path: &str) -> Vec<Request> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

#[test]
fn truncated_bodies_are_retried() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let tree = obj(&f.dirtree, "dirtree");
    let (b, t) = (big.clone(), tree.clone());
    let server = FaultServer::start(&f.www, move |p, n| {
        if p == b && n == 0 {
            Fault::Truncate(BIG_LEN / 3)
        } else if p == t && n == 0 {
            Fault::Truncate(10)
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = store_at_c1(&server);
    assert_success(&store, pull_main(&store, &server, &[]));
    // The rest is asked for with a range; this server ignores ranges and
    // sends the whole body again, which is read past what had arrived.
    let reqs = of_path(&server, &big);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range_start(), Some(BIG_LEN / 3));
    assert_eq!(reqs[1].status, 200);
    assert_eq!(attempts(&server, &tree), 2);
}

#[test]
fn always_truncated_fails_after_the_retries() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let (server, _t, store) = faulty(&big, usize::MAX, Fault::Truncate(BIG_LEN / 2));
    let r = pull_main(&store, &server, &["--network-retries", "2"]);
    assert_failed(
        &store,
        r,
        &[&big],
        &format!("{}.file", f.big),
        Stopped::InTree,
    );
    assert_eq!(attempts(&server, &big), 3, "1 attempt + 2 retries");
}

#[test]
fn connection_resets_are_retried() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let commit = obj(&f.c2, "commit");
    let small = obj(&f.small_file, "filez");
    let (b, c, s) = (big.clone(), commit.clone(), small.clone());
    let server = FaultServer::start(&f.www, move |p, n| {
        if (p == b || p == c) && n == 0 || p == s && n < 2 {
            Fault::Reset
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = store_at_c1(&server);
    assert_success(&store, pull_main(&store, &server, &[]));
    assert_eq!(attempts(&server, &big), 2);
    assert_eq!(attempts(&server, &commit), 2);
    assert_eq!(attempts(&server, &small), 3);
}

/// The ostree-verified case: 500 twice then 200 succeeds with the default
/// retries.
#[test]
fn status_500_twice_then_200_succeeds() {
    let f = fixture();
    let small = obj(&f.small_file, "filez");
    let tree = obj(&f.dirtree, "dirtree");
    let (s, t) = (small.clone(), tree.clone());
    let server = FaultServer::start(&f.www, move |p, n| {
        if (p == s || p == t) && n < 2 {
            Fault::Status(500)
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = store_at_c1(&server);
    assert_success(&store, pull_main(&store, &server, &[]));
    assert_eq!(attempts(&server, &small), 3);
    assert_eq!(attempts(&server, &tree), 3);
}

#[test]
fn network_retries_0_makes_a_single_500_fatal() {
    let f = fixture();
    let small = obj(&f.small_file, "filez");
    let (server, _t, store) = faulty(&small, 1, Fault::Status(500));
    let r = pull_main(&store, &server, &["--network-retries", "0"]);
    assert_failed(
        &store,
        r,
        &[&small, "server answered 500"],
        &format!("{}.file", f.small_file),
        Stopped::InTree,
    );
    assert_eq!(attempts(&server, &small), 1);
    // The same pull then succeeds (the server answers now), fetching only
    // what is missing: objects verified before the failure were kept.
    let before = store_objects(&store);
    let mark = server.requests().len();
    assert_success(&store, pull_main(&store, &server, &[]));
    let again = requested_set(&server.requests()[mark..]);
    for o in &again {
        assert!(
            !before.contains(o),
            "{o} was fetched again after the failed pull"
        );
    }
}

/// 404, 403 and 410 for an object are final: one request, no retry, even
/// with the default retries.
#[test]
fn not_found_is_final() {
    let f = fixture();
    for code in [404u16, 403, 410] {
        let small = obj(&f.small_file, "filez");
        let (server, _t, store) = faulty(&small, usize::MAX, Fault::Status(code));
        let r = pull_main(&store, &server, &[]);
        assert_failed(
            &store,
            r,
            &[&small],
            &format!("{}.file", f.small_file),
            Stopped::InTree,
        );
        assert_eq!(
            attempts(&server, &small),
            1,
            "HTTP {code} must not be retried"
        );
    }
}

/// A transfer that stops mid-body is abandoned after `--timeout` and
/// retried; so is a server that never answers. The pull does not wait for
/// the stalled connection.
#[test]
fn stalls_time_out_and_are_retried() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let tree = obj(&f.dirtree, "dirtree");
    let (b, t) = (big.clone(), tree.clone());
    let stall = Duration::from_secs(12);
    let server = FaultServer::start(&f.www, move |p, n| {
        if p == b && n == 0 {
            Fault::StallBody {
                after: 100_000,
                stall,
            }
        } else if p == t && n == 0 {
            Fault::StallBeforeHeaders(stall)
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = store_at_c1(&server);
    let start = Instant::now();
    let r = pull_main(&store, &server, &["--timeout", "1"]);
    let took = start.elapsed();
    assert_success(&store, r);
    assert_eq!(attempts(&server, &big), 2);
    assert_eq!(attempts(&server, &tree), 2);
    assert!(
        took < Duration::from_secs(8),
        "the pull took {took:?}: it waited for the stalled transfers instead of timing out"
    );
}

#[test]
fn permanent_stall_fails_after_the_retries() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let (server, _t, store) = faulty(
        &big,
        usize::MAX,
        Fault::StallBody {
            after: 50_000,
            stall: Duration::from_secs(15),
        },
    );
    let start = Instant::now();
    let r = pull_main(
        &store,
        &server,
        &["--timeout", "1", "--network-retries", "1"],
    );
    let took = start.elapsed();
    assert_failed(
        &store,
        r,
        &[&big],
        &format!("{}.file", f.big),
        Stopped::InTree,
    );
    assert_eq!(attempts(&server, &big), 2);
    assert!(took < Duration::from_secs(10), "the pull took {took:?}");
}

/// `--timeout` bounds a stall, not a transfer: a body arriving slowly but
/// steadily (a chunk every 250 ms, 2.5 s in all) with `--timeout 1` is
/// received in one attempt.
#[test]
fn slow_but_steady_transfer_is_not_a_stall() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let (server, _t, store) = faulty(
        &big,
        usize::MAX,
        Fault::Drip {
            chunk: 64 * 1024,
            interval: Duration::from_millis(250),
        },
    );
    assert_success(&store, pull_main(&store, &server, &["--timeout", "1"]));
    assert_eq!(
        attempts(&server, &big),
        1,
        "a steady transfer was restarted"
    );
}

/// Transient failures of every kind on every single request (each path's
/// first attempt: 503, reset, or truncation, by turns): the pull still
/// completes, with exactly two attempts per object.
#[test]
fn every_request_failing_once_still_completes() {
    let f = fixture();
    let server = FaultServer::start(&f.www, move |p, n| {
        if n > 0 || !p.contains("/objects/") {
            return Fault::Serve;
        }
        match p.len() % 3 + p.as_bytes()[12] as usize % 3 {
            0 | 3 => Fault::Status(503),
            1 | 4 => Fault::Reset,
            _ => Fault::Truncate(5),
        }
    });
    let (_t, store) = new_store(Mode::Archive);
    let r = pull(&store, &[&server.url("f"), "main"]);
    r.assert_ok();
    assert_pulled(&store, &repo(), &f.c2, false);
    let reqs = server.requests();
    for note in ["status", "reset", "truncated"] {
        assert!(
            reqs.iter().filter(|r| r.note == note).count() >= 3,
            "too few `{note}` faults were injected"
        );
    }
    for (o, n) in requested_objects(&reqs) {
        if o.ends_with(".commitmeta") {
            continue;
        }
        assert_eq!(n, 2, "attempts for {o}");
    }
}

/// Another object's valid bytes served for a content object: refused with
/// the object, URL, expected and actual checksums named.
#[test]
fn wrong_content_bytes_are_refused() {
    let f = fixture();
    let small = obj(&f.small_file, "filez");
    let wrong = obj_bytes(&f.other_file, "filez");
    let (server, _t, store) = faulty(&small, usize::MAX, Fault::Body(wrong));
    let r = pull_main(&store, &server, &[]);
    assert_failed(
        &store,
        r,
        &[&small, &f.small_file, &f.other_file, "fetched 6 times"],
        &format!("{}.file", f.small_file),
        Stopped::InTree,
    );
    // Fetched again, in case the path damaged it, then given up on.
    assert_eq!(attempts(&server, &small), 6, "1 + --network-retries 5");
}

/// One byte flipped inside the compressed data of the big object.
#[test]
fn flipped_byte_in_content_is_refused() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let mut bad = obj_bytes(&f.big, "filez");
    let i = bad.len() / 2;
    bad[i] ^= 0x55;
    let (server, _t, store) = faulty(&big, usize::MAX, Fault::Body(bad));
    let r = pull_main(&store, &server, &["--network-retries", "1"]);
    assert_failed(
        &store,
        r,
        &[&f.big],
        &format!("{}.file", f.big),
        Stopped::InTree,
    );
}

/// Random bytes instead of a content object: an invalid header, refused.
#[test]
fn garbage_content_is_refused() {
    let f = fixture();
    let small = obj(&f.small_file, "filez");
    let (server, _t, store) = faulty(&small, usize::MAX, Fault::Body(pseudo_random_bytes(300, 5)));
    let r = pull_main(&store, &server, &["--network-retries", "1"]);
    assert_failed(
        &store,
        r,
        &[&small],
        &format!("{}.file", f.small_file),
        Stopped::InTree,
    );
}

/// Another dirtree's bytes for a dirtree: refused, naming it; nothing of
/// that directory's files is requested.
#[test]
fn wrong_dirtree_bytes_are_refused() {
    let f = fixture();
    let tree = obj(&f.dirtree, "dirtree");
    let wrong = obj_bytes(&f.other_dirtree, "dirtree");
    let (server, _t, store) = faulty(&tree, usize::MAX, Fault::Body(wrong));
    let r = pull_main(&store, &server, &[]);
    assert_failed(
        &store,
        r,
        &[&tree, &f.dirtree],
        &format!("{}.dirtree", f.dirtree),
        Stopped::InTree,
    );
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.path == obj(&f.small_file, "filez")),
        "a file of the refused dirtree was requested"
    );
}

/// C1's commit served for C2's: refused, nothing of C2's tree requested.
#[test]
fn wrong_commit_bytes_are_refused() {
    let f = fixture();
    let commit = obj(&f.c2, "commit");
    let wrong = obj_bytes(&f.c1, "commit");
    let (server, _t, store) = faulty(&commit, usize::MAX, Fault::Body(wrong));
    let mark = server.requests().len();
    let r = pull_main(&store, &server, &[]);
    assert_failed(
        &store,
        r,
        &[&commit, &f.c2],
        &format!("{}.commit", f.c2),
        Stopped::AtCommit,
    );
    let after = Counts::of(&server.requests()[mark..]);
    assert_eq!(
        (after.dirtree, after.dirmeta, after.filez),
        (0, 0, 0),
        "tree objects requested for a refused commit"
    );
}

/// A corrupt summary, or a ref file without a checksum, fail cleanly
/// before any object is requested.
#[test]
fn corrupt_summary_and_ref_fail_cleanly() {
    let f = fixture();
    let server = FaultServer::start(&f.www, move |p, _| {
        if p == "/f/summary" {
            Fault::Body(pseudo_random_bytes(1000, 3))
        } else if p == "/nosum/summary" {
            Fault::Status(404)
        } else if p == "/nosum/refs/heads/main" {
            Fault::Body(b"not a checksum\n".to_vec())
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = new_store(Mode::Bare);
    let r = pull(&store, &[&server.url("f"), "main"]).assert_clean_failure();
    assert_mentions(&r, &["summary"]);
    let r = pull(&store, &[&server.url("nosum"), "main"]).assert_clean_failure();
    assert_mentions(&r, &["refs/heads/main"]);
    assert_eq!(Counts::of(&server.requests()).objects(), 0);
    assert!(all_refs(&store).is_empty());
    assert!(store_objects(&store).is_empty());
}

/// Nothing listening: a clean failure naming the URL, quickly.
#[test]
fn connection_refused_fails_cleanly() {
    let (_t, store) = new_store(Mode::Bare);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/f");
    let start = Instant::now();
    let r = pull(&store, &[&url, "main", "--network-retries", "1"]).assert_clean_failure();
    assert_mentions(&r, &[&format!("127.0.0.1:{port}")]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(all_refs(&store).is_empty());
}

/// Transient errors on the summary and on `refs/heads/REF` are retried like
/// those on objects (ostree retries every request): 500, then a reset,
/// then a truncated body, then the file.
#[test]
fn summary_and_ref_transient_errors_are_retried() {
    let f = fixture();
    let server = FaultServer::start(&f.www, move |p, n| {
        if p == "/f/summary" || p == "/nosum/refs/heads/main" {
            match n {
                0 => Fault::Status(500),
                1 => Fault::Reset,
                2 => Fault::Truncate(3),
                _ => Fault::Serve,
            }
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = store_at_c1(&server);
    assert_success(&store, pull_main(&store, &server, &[]));
    assert_eq!(attempts(&server, "/f/summary"), 4, "summary attempts");

    let (_t2, store2) = new_store(Mode::Archive);
    pull(&store2, &[&server.url("nosum"), "main"]).assert_ok();
    assert_eq!(read_ref(&store2, "heads/main").as_deref(), Some(&*f.c2));
    assert_pulled(&store2, &repo(), &f.c2, false);
    assert_eq!(
        attempts(&server, "/nosum/refs/heads/main"),
        4,
        "ref attempts"
    );
}

/// A stalled summary request times out (`--timeout 1`) and is retried.
#[test]
fn stalled_summary_is_retried() {
    let f = fixture();
    let server = FaultServer::start(&f.www, move |p, n| {
        if p == "/f/summary" && n == 0 {
            Fault::StallBeforeHeaders(Duration::from_secs(12))
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = new_store(Mode::Bare);
    let start = Instant::now();
    let r = pull(&store, &[&server.url("f"), "main", "--timeout", "1"]);
    assert_success(&store, r);
    assert_eq!(attempts(&server, "/f/summary"), 2);
    assert!(start.elapsed() < Duration::from_secs(8));
}

/// Another dirmeta's bytes for a dirmeta: refused, naming it.
#[test]
fn wrong_dirmeta_bytes_are_refused() {
    let f = fixture();
    let meta = obj(&f.dirmeta, "dirmeta");
    let wrong = obj_bytes(&f.other_dirmeta, "dirmeta");
    let (server, _t, store) = faulty(&meta, usize::MAX, Fault::Body(wrong));
    let r = pull_main(&store, &server, &[]);
    assert_failed(
        &store,
        r,
        &[&meta, &f.dirmeta],
        &format!("{}.dirmeta", f.dirmeta),
        Stopped::InTree,
    );
}

/// Garbage served as the commit's detached metadata (normally a 404) is
/// refused, naming the object; it is never stored and the ref does not move.
#[test]
fn garbage_commitmeta_is_not_stored() {
    let f = fixture();
    let cm = obj(&f.c2, "commitmeta");
    let (server, _t, store) = faulty(&cm, usize::MAX, Fault::Body(vec![0xff; 7]));
    let r = pull_main(&store, &server, &[]);
    assert_failed(
        &store,
        r,
        &[&f.c2, "commitmeta"],
        &format!("{}.commit", f.c2),
        Stopped::AtCommit,
    );
    assert!(!has_object(&store, &format!("{}.commitmeta", f.c2)));
}

/// A copy of the source repo with a self-consistent but hostile commit:
/// C2 with its root dirtree changed by `mutate` (checksums recomputed, so
/// only validation can catch it). Returns (dir, commit, hostile dirtree).
fn hostile_repo(
    mutate: impl FnOnce(&mut arbor::ostree::DirTree, &Path),
) -> (tempfile::TempDir, String, String) {
    use arbor::ostree::{Commit, DirTree};
    let f = fixture();
    let t = shared_tempdir();
    let r = t.path().join("evil");
    copy_tree(&repo(), &r);
    let mut commit = Commit::parse(&obj_bytes(&f.c2, "commit")).unwrap();
    let root_hex = commit.root_tree.to_hex();
    let mut root = DirTree::parse(&obj_bytes(&root_hex, "dirtree")).unwrap();
    mutate(&mut root, &r);
    let tree = write_metadata_object(&r, "dirtree", &root.serialize());
    commit.root_tree = arbor::ostree::Checksum::from_hex(&tree).unwrap();
    let c = write_metadata_object(&r, "commit", &commit.serialize());
    (t, c, tree)
}

/// Dirtrees whose checksums are right but whose contents are not valid
/// (names `..`, `.`, empty, with a slash; unsorted; a name both file and
/// directory) are refused when fetched, naming the object; nothing under
/// them is requested, no ref is written, fsck stays clean.
#[test]
fn hostile_dirtrees_are_refused() {
    type Mutation = Box<dyn FnOnce(&mut arbor::ostree::DirTree)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("dotdot", Box::new(|t| t.files[0].name = "..".into())),
        ("dot", Box::new(|t| t.files[0].name = ".".into())),
        ("empty", Box::new(|t| t.files[0].name = String::new())),
        ("slash", Box::new(|t| t.files[0].name = "a/b".into())),
        ("dir-dotdot", Box::new(|t| t.dirs[0].name = "..".into())),
        ("unsorted", Box::new(|t| t.dirs.swap(0, 1))),
        (
            "file-and-dir",
            Box::new(|t| {
                let n = t.dirs[0].name.clone();
                t.files[0].name = n;
                t.sort();
            }),
        ),
    ];
    for (what, mutate) in cases {
        let (t, commit, tree) = hostile_repo(|t, _| mutate(t));
        let server = FaultServer::start(t.path(), |_, _| Fault::Serve);
        let (_s, store) = new_store(Mode::Bare);
        let r = pull(&store, &[&server.url("evil"), &format!("main@{commit}")]);
        let r = r.assert_clean_failure();
        assert_mentions(&r, &[&tree]);
        assert!(all_refs(&store).is_empty(), "{what}: a ref was written");
        assert!(
            !has_object(&store, &format!("{tree}.dirtree")),
            "{what}: the hostile dirtree was stored"
        );
        let c = Counts::of(&server.requests());
        assert_eq!(
            (c.dirtree, c.filez),
            (1, 0),
            "{what}: requests after the hostile root dirtree: {:#?}",
            server.requests()
        );
        assert_fsck_clean(&store);
    }
}

/// Content objects whose checksums are right but whose headers are not
/// storable (device nodes, FIFOs, sockets, a symlink without target, a
/// regular file with one) are refused, naming the object; none is stored.
#[test]
fn hostile_content_headers_are_refused() {
    use arbor::ostree::{FileHeader, TreeFile};
    use std::io::Write;
    let cases: [(&str, u32, &str, &[u8]); 5] = [
        ("chardev", 0o020644, "", b""),
        ("fifo", 0o010644, "", b""),
        ("socket", 0o140755, "", b""),
        ("symlink-no-target", 0o120777, "", b""),
        ("regular-with-target", 0o100644, "x", b"data\n"),
    ];
    for (what, mode, target, data) in cases {
        let header = FileHeader {
            uid: 0,
            gid: 0,
            mode,
            symlink_target: target.to_string(),
            xattrs: Default::default(),
        };
        let csum = header.checksum(data).to_hex();
        let mut filez = header.archive_prefix(data.len() as u64);
        if !data.is_empty() {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).unwrap();
            filez.extend(enc.finish().unwrap());
        }
        let (t, commit, _) = hostile_repo(|tree, repo| {
            let p = object_path(repo, &csum, "filez");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &filez).unwrap();
            tree.files.push(TreeFile {
                name: "zzz-evil".into(),
                checksum: arbor::ostree::Checksum::from_hex(&csum).unwrap(),
            });
            tree.sort();
        });
        let server = FaultServer::start(t.path(), |_, _| Fault::Serve);
        let (_s, store) = new_store(Mode::Bare);
        let r = pull(
            &store,
            &[
                &server.url("evil"),
                &format!("main@{commit}"),
                "--network-retries",
                "1",
            ],
        );
        let r = r.assert_clean_failure();
        // The checksum, or the object's URL (`…/5c/a7b0….filez`).
        assert_mentions(&r, &[&csum[2..]]);
        assert!(all_refs(&store).is_empty(), "{what}: a ref was written");
        assert!(
            !has_object(&store, &format!("{csum}.file")),
            "{what}: the hostile object was stored"
        );
        assert_eq!(
            server
                .requests()
                .iter()
                .filter(|r| r.path.contains(&csum[2..]))
                .count(),
            1,
            "{what}: an invalid object is not a transient failure (no retry)"
        );
        assert_fsck_clean(&store);
    }
}

// ---------------------------------------------------------------------------
// Resumption, re-fetching and random faults
// ---------------------------------------------------------------------------

/// `www/huge`: `main` has one 3 MiB incompressible file (its `.filez` is
/// about as big), for bodies cut off several times.
struct Huge {
    www: PathBuf,
    commit: String,
    /// URL path of the big object, and its `.filez` size.
    path: String,
    len: usize,
}

fn huge() -> &'static Huge {
    static H: OnceLock<Huge> = OnceLock::new();
    H.get_or_init(|| {
        let base = scratch_dir("pull-faults-huge");
        let www = base.join("www");
        let repo = www.join("huge");
        std::fs::create_dir_all(&www).unwrap();
        ostree_init(&repo, Mode::Archive);
        let tree = base.join("tree");
        make_dir(&tree, 0o755);
        write_file(
            &tree.join("huge.bin"),
            &pseudo_random_bytes(3 * 1024 * 1024 + 777, 0x4u64),
            0o644,
        );
        let commit = ostree_commit(&repo, &tree, "main", &CommitOpts::new("h", "", TS));
        ostree_summary_update(&repo);
        let csum = file_checksum(&repo, &commit, "/huge.bin");
        let len = std::fs::metadata(object_path(&repo, &csum, "filez"))
            .unwrap()
            .len() as usize;
        Huge {
            path: format!("/huge/objects/{}/{}.filez", &csum[..2], &csum[2..]),
            len,
            www,
            commit,
        }
    })
}

/// A body cut off twice (closed after 200,000 bytes, then reset 100,000
/// bytes into the rest) resumes each time where it stopped: `Range`
/// requests with `If-Range` (the server's ETag), answered 206, and every
/// byte of the object sent exactly once.
#[test]
fn cut_off_bodies_resume_with_ranges() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let b = big.clone();
    let server = FaultServer::with_ranges(&f.www, move |p, n| match (p == b, n) {
        (true, 0) => Fault::Truncate(200_000),
        (true, 1) => Fault::ResetAfter(100_000),
        _ => Fault::Serve,
    });
    let (_t, store) = store_at_c1(&server);
    let run = pull_main(&store, &server, &[]);
    assert_mentions(&run, &["2 resumed with a range"]);
    assert_success(&store, run);
    let reqs = of_path(&server, &big);
    let len = obj_bytes(&f.big, "filez").len();
    let etag = format!("\"{len:x}\"");
    assert_eq!(
        reqs.iter()
            .map(|r| (r.range_start(), r.if_range.as_deref(), r.status))
            .collect::<Vec<_>>(),
        [
            (None, None, 200),
            (Some(200_000), Some(&*etag), 206),
            (Some(300_000), Some(&*etag), 206),
        ]
    );
    assert_eq!(reqs.iter().map(|r| r.sent).sum::<usize>(), len);
}

/// A 3 MiB body that breaks off after 1.1 MB twice still arrives, even
/// with `--network-retries 0`: an attempt that brought 1 MiB or more is
/// progress, not a failure to count.
#[test]
fn a_big_body_that_keeps_breaking_off_still_arrives() {
    let h = huge();
    let path = h.path.clone();
    let server = FaultServer::with_ranges(&h.www, move |p, n| {
        if p == path && n < 2 {
            Fault::Truncate(1_100_000)
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = new_store(Mode::Bare);
    let run = pull(
        &store,
        &[&server.url("huge"), "main", "--network-retries", "0"],
    );
    run.assert_ok();
    assert_pulled(&store, &h.www.join("huge"), &h.commit, false);
    let reqs = of_path(&server, &h.path);
    assert_eq!(
        reqs.iter().map(|r| r.range_start()).collect::<Vec<_>>(),
        [None, Some(1_100_000), Some(2_200_000)]
    );
    assert_eq!(reqs.iter().map(|r| r.sent).sum::<usize>(), h.len);
    // Without progress, the same budget means one attempt only.
    let path = h.path.clone();
    let server = FaultServer::with_ranges(&h.www, move |p, _| {
        if p == path {
            Fault::ResetAfter(1000)
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = new_store(Mode::Bare);
    let run = pull(
        &store,
        &[&server.url("huge"), "main", "--network-retries", "0"],
    )
    .assert_clean_failure();
    assert_mentions(&run, &[&h.path]);
    assert_eq!(attempts(&server, &h.path), 1);
}

/// Bytes damaged on the way (one byte inverted in a content object's
/// stored data, in a small compressed one, in a dirtree) are noticed and
/// fetched again; the pull completes with the exact commit.
#[test]
fn transiently_corrupt_objects_are_fetched_again() {
    let f = fixture();
    let paths = [
        obj(&f.big, "filez"),
        obj(&f.small_file, "filez"),
        obj(&f.dirtree, "dirtree"),
    ];
    let p2 = paths.clone();
    let server = FaultServer::start(&f.www, move |p, n| {
        if n == 0 && p2.iter().any(|q| q == p) {
            Fault::Flip(BIG_LEN / 2)
        } else {
            Fault::Serve
        }
    });
    let (_t, store) = store_at_c1(&server);
    let run = pull_main(&store, &server, &[]);
    assert_mentions(&run, &["3 objects fetched again (corrupt)"]);
    assert_success(&store, run);
    for p in &paths {
        assert_eq!(attempts(&server, p), 2, "{p}");
    }
}

/// A dirtree corrupt on every attempt: the pull fails after
/// 1 + `--network-retries` fetches, naming the URL, the expected checksum
/// and the checksum of what arrived.
#[test]
fn corrupt_on_every_attempt_fails_naming_url_and_checksums() {
    let f = fixture();
    let tree = obj(&f.dirtree, "dirtree");
    let mut bad = obj_bytes(&f.dirtree, "dirtree");
    let at = bad.len() / 2;
    bad[at] ^= 0xff;
    let actual = sha256_hex(&bad);
    let (server, _t, store) = faulty(&tree, usize::MAX, Fault::Flip(at));
    let r = pull_main(&store, &server, &["--network-retries", "2"]);
    assert_failed(
        &store,
        r,
        &[
            &tree,
            &format!("expected={}", f.dirtree),
            &format!("actual={actual}"),
            "fetched 3 times",
        ],
        &format!("{}.dirtree", f.dirtree),
        Stopped::InTree,
    );
    assert_eq!(attempts(&server, &tree), 3);
}

/// A deterministic hash of (seed, path, attempt).
fn roll(seed: u64, path: &str, attempt: usize) -> u64 {
    let mut x = seed ^ (attempt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in path.bytes() {
        x = (x ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `www/many`: `main` = a medium tree of 400 files in 12 directories and a
/// 600 KB incompressible file (streamed, not held whole): about 440
/// objects.
struct Many {
    www: PathBuf,
    commit: String,
}

fn many() -> &'static Many {
    static M: OnceLock<Many> = OnceLock::new();
    M.get_or_init(|| {
        let base = scratch_dir("pull-faults-many");
        let www = base.join("www");
        let repo = www.join("many");
        std::fs::create_dir_all(&www).unwrap();
        ostree_init(&repo, Mode::Archive);
        let tree = base.join("tree");
        build_medium_tree(&tree, 12, 400, 5);
        write_file(
            &tree.join("big.bin"),
            &pseudo_random_bytes(BIG_LEN, 0xb17),
            0o644,
        );
        let commit = ostree_commit(&repo, &tree, "main", &CommitOpts::new("m", "", TS));
        ostree_summary_update(&repo);
        Many { www, commit }
    })
}

/// The random faults: for the first three attempts at each object file the
/// server has, one in three requests goes wrong, by turns a reset before
/// the answer, a reset or a clean close at a random point of the body, one
/// byte inverted at a random point, or a 503.
fn random_fault(www: &Path, seed: u64, p: &str, n: usize) -> Fault {
    let len = std::fs::metadata(www.join(p.trim_start_matches('/')))
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    if !p.contains("/objects/") || n >= 3 || len == 0 {
        return Fault::Serve;
    }
    let r = roll(seed, p, n);
    let at = (r >> 16) as usize % len;
    match r % 15 {
        0 => Fault::Reset,
        1 => Fault::ResetAfter(at),
        2 => Fault::Truncate(at),
        3 => Fault::Flip(at),
        4 => Fault::Status(503),
        _ => Fault::Serve,
    }
}

const SEED: u64 = 0x005e_ed0f_a175;

/// Resets, truncations, flipped bytes and 503s at random points (fixed
/// seed), with and without range support: the pull completes with the
/// exact commit, nothing corrupt is stored, every kind of fault was
/// injected, cut-off bodies were resumed with ranges where the server
/// allowed it, and connections were only opened to replace broken ones.
#[test]
fn random_faults_with_a_fixed_seed() {
    let m = many();
    for ranges in [true, false] {
        let www = m.www.clone();
        let policy = move |p: &str, n| random_fault(&www, SEED, p, n);
        let server = if ranges {
            FaultServer::with_ranges(&m.www, policy)
        } else {
            FaultServer::start(&m.www, policy)
        };
        let (_t, store) = new_store(Mode::Bare);
        let run = pull(&store, &[&server.url("many"), "main", "--jobs", "8"]);
        run.assert_ok();
        assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*m.commit));
        assert_pulled(&store, &m.www.join("many"), &m.commit, false);
        assert_objects_hash_to_names(&store);
        let reqs = server.requests();
        let count = |note: &str| reqs.iter().filter(|r| r.note == note).count();
        for note in ["reset", "reset in body", "truncated", "flipped", "status"] {
            assert!(count(note) >= 10, "only {} `{note}` faults", count(note));
        }
        let resumed = reqs.iter().filter(|r| r.status == 206).count();
        if ranges {
            assert!(resumed >= 10, "only {resumed} bodies resumed with a range");
        } else {
            assert_eq!(resumed, 0);
        }
        // Each fault that ends a connection costs one; the rest reuse the
        // few opened for 8 requests in flight.
        let broken = count("reset") + count("reset in body") + count("truncated");
        let opened = server.connections() as usize;
        assert!(
            opened <= broken + 12,
            "{opened} connections for {} requests, {broken} of which ended theirs",
            reqs.len()
        );
    }
}

/// The same random faults, and one object corrupt on every attempt: the
/// pull fails cleanly naming it, with the ref unmoved and nothing corrupt
/// stored.
#[test]
fn random_faults_and_one_object_always_corrupt() {
    let f = fixture();
    let big = obj(&f.big, "filez");
    let www = f.www.clone();
    let b = big.clone();
    let server = FaultServer::with_ranges(&f.www, move |p, n| {
        if p == b {
            // Inside the stored (incompressible) data: always a mismatch.
            Fault::Flip(BIG_LEN / 2 + roll(SEED, p, n) as usize % 1000)
        } else {
            random_fault(&www, SEED, p, n)
        }
    });
    let (_t, store) = store_at_c1(&server);
    let r = pull_main(&store, &server, &["--jobs", "8"]);
    assert_failed(
        &store,
        r,
        &[&big, &format!("expected={}", f.big), "fetched 6 times"],
        &format!("{}.file", f.big),
        Stopped::InTree,
    );
    assert_eq!(attempts(&server, &big), 6);
}

/// Requests share kept-alive connections: a pull of about 440 objects
/// with at most 4 requests in flight opens a handful of connections.
#[test]
fn connections_are_kept_alive() {
    let m = many();
    let server = FaultServer::start(&m.www, |_, _| Fault::Serve);
    let (_t, store) = new_store(Mode::Bare);
    let run = pull(&store, &[&server.url("many"), "main", "--jobs", "4"]);
    assert_mentions(&run, &["at most 4 in flight"]);
    run.assert_ok();
    let requests = server.requests().len();
    let opened = server.connections();
    assert!(requests > 400, "{requests} requests");
    assert!(opened <= 6, "{opened} connections for {requests} requests");
}

/// The interrupt flag stops a pull within about a second even while its
/// transfers are stalled (the server sends part of a body, then nothing
/// for 30 s, under a 30 s timeout): the readers waiting for the network
/// are woken. What was verified is kept; the ref does not move.
#[test]
fn interrupt_stops_a_stalled_pull_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = fixture();
    let big = obj(&f.big, "filez");
    let (server, _t, store) = faulty(
        &big,
        usize::MAX,
        Fault::StallBody {
            after: 100_000,
            stall: Duration::from_secs(30),
        },
    );
    let repo = arbor::store::Repo::open(&store).unwrap();
    let opts = arbor::pull::PullOptions {
        targets: vec!["main".parse().unwrap()],
        ..Default::default()
    };
    let flag = AtomicBool::new(false);
    let source = arbor::pull::PullSource::Url(server.url("f"));
    let (set_at, returned_at) = std::thread::scope(|s| {
        let setter = s.spawn(|| {
            // Once the stalled body is being read.
            while !server.requests().iter().any(|r| r.path == big) {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let r = arbor::pull::pull(&repo, &source, &opts, &arbor::progress::NoProgress, &flag);
        let returned_at = Instant::now();
        assert!(
            matches!(r, Err(arbor::pull::PullError::Interrupted)),
            "{r:?}"
        );
        (setter.join().unwrap(), returned_at)
    });
    let took = returned_at.saturating_duration_since(set_at);
    assert!(
        took < Duration::from_secs(2),
        "stopped {took:?} after the flag"
    );
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c1));
    assert!(is_partial(&store, &f.c2));
    assert_objects_hash_to_names(&store);
    assert_fsck_clean(&store);
}

/// Static-delta parts over a flaky path: the 3 MB part, cut off after
/// 1,000,000 bytes, resumes with a range; the 200 KB part, arriving with
/// one byte inverted (its SHA-256 then differs from the superblock's), is
/// fetched again; the pull completes through the delta, with no object
/// fetched loose.
#[test]
fn delta_parts_resume_and_are_fetched_again() {
    use arbor::ostree::delta::DeltaName;
    let base = scratch_dir("pull-faults-delta");
    let www = base.join("www");
    let repo = www.join("d");
    std::fs::create_dir_all(&www).unwrap();
    ostree_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    make_dir(&tree, 0o755);
    write_file(
        &tree.join("big"),
        &pseudo_random_bytes(3_000_000, 21),
        0o644,
    );
    write_file(&tree.join("mid"), &pseudo_random_bytes(200_000, 22), 0o644);
    for i in 0..20 {
        write_file(
            &tree.join(format!("f{i}")),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    let commit = ostree_commit(&repo, &tree, "main", &CommitOpts::new("d", "", TS));
    ostree_repo_ok(
        &repo,
        [
            "static-delta",
            "generate",
            "--empty",
            "--to",
            &commit,
            "--max-chunk-size=1",
        ],
    );
    ostree_summary_update(&repo);
    let name = DeltaName::new(None, arbor::ostree::Checksum::from_hex(&commit).unwrap());
    let part = |i: usize| format!("/d/{}", name.part_path(i));
    let size = |i: usize| {
        std::fs::metadata(repo.join(name.part_path(i)))
            .unwrap()
            .len()
    };
    // Which part is which, by size.
    let mut parts: Vec<usize> = (0..3).collect();
    parts.sort_by_key(|&i| size(i));
    let (mid, big) = (part(parts[1]), part(parts[2]));
    assert!(size(parts[2]) > 2_000_000 && size(parts[1]) > 150_000);
    let (m, b) = (mid.clone(), big.clone());
    let server = FaultServer::with_ranges(&www, move |p, n| match (n, p) {
        (0, p) if p == b => Fault::Truncate(1_000_000),
        (0, p) if p == m => Fault::Flip(100_000),
        _ => Fault::Serve,
    });
    let (_t, store) = new_store(Mode::Bare);
    let run = pull(&store, &[&server.url("d"), "main"]);
    assert_mentions(&run, &["1 resumed with a range"]);
    run.assert_ok();
    assert_pulled(&store, &repo, &commit, false);
    let big_reqs = of_path(&server, &big);
    assert_eq!(
        big_reqs
            .iter()
            .map(|r| (r.range_start(), r.status))
            .collect::<Vec<_>>(),
        [(None, 200), (Some(1_000_000), 206)]
    );
    assert_eq!(
        big_reqs.iter().map(|r| r.sent).sum::<usize>() as u64,
        size(parts[2])
    );
    assert_eq!(attempts(&server, &mid), 2);
    let loose: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/objects/") && !r.path.ends_with(".commitmeta"))
        .collect();
    assert!(loose.is_empty(), "objects fetched loose: {loose:#?}");
}
