//! Pull memory does not grow with the number of files: a pull of ten times
//! as many files peaks at about the same resident size, well under the
//! 64 MiB budget. Peak RSS is the kernel's own count for the pull process
//! (`ru_maxrss`, through GNU `time`), not a timing. A coarse guard: per-object state
//! of ~100 bytes would only show at hundreds of thousands of files, which
//! BENCHMARKS.md measures instead (60,000 files: 12.5 MiB).
//!
//! Nor with the latency: over HTTP from a server 50 ms away (nginx behind
//! the latency proxy), where a hundred requests and more are in flight,
//! with files big enough to be streamed as well as small ones, the pull
//! stays under the same budget.

mod common;
#[path = "common/latency.rs"]
mod latency;
#[path = "common/pull.rs"]
mod pull_support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use common::*;

/// `n` small files with distinct contents, spread over 300 directories.
fn many_files(dir: &Path, n: usize) {
    for d in 0..300 {
        make_dir(&dir.join(format!("d{d:03}")), 0o755);
    }
    for i in 0..n {
        std::fs::write(
            dir.join(format!("d{:03}/f{i:06}", i % 300)),
            format!("file {i}\n"),
        )
        .unwrap();
    }
}

/// Peak RSS in KiB of `arbor --repo STORE pull SOURCE main`, as GNU
/// `time` reports it. Not `wait4` on a child of the test process: a child
/// spawned with `vfork` (what `Command` uses) records the test process's
/// own peak at `exec`.
fn pull_peak_rss(store: &Path, source: impl AsRef<OsStr>) -> i64 {
    let dir = tempdir();
    let out = dir.path().join("rss");
    let run = run({
        let mut c = std::process::Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&out)
            .arg(arbor_bin())
            .arg("--repo")
            .arg(store)
            .args(["pull", "--quiet"])
            .arg(source.as_ref())
            .arg("main");
        c
    });
    run.assert_ok();
    let text = std::fs::read_to_string(&out).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("time wrote {text:?}"))
}

#[test]
fn pull_memory_does_not_grow_with_the_number_of_files() {
    // tmpfs when there is one: creating and deleting tens of thousands of
    // files on a journal-less ext4 costs far more than the pull itself.
    let tmp = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::Builder::new()
            .prefix("arbor-it-")
            .tempdir_in("/dev/shm")
            .unwrap(),
        false => tempdir(),
    };
    let mut peaks = Vec::new();
    for n in [1_500, 15_000] {
        let src = tmp.path().join(format!("src{n}"));
        make_dir(&src, 0o755);
        many_files(&src, n);
        let source = tmp.path().join(format!("source{n}"));
        ostree_init(&source, Mode::Archive);
        ostree_repo_ok(
            &source,
            [
                "commit".into(),
                "-b".into(),
                "main".into(),
                "--fsync=false".into(),
                format!("--tree=dir={}", src.display()),
            ],
        );
        let store = tmp.path().join(format!("store{n}"));
        arbor_init(&store, Mode::Bare);
        peaks.push(pull_peak_rss(&store, &source));
        ostree_repo_ok(&store, ["fsck", "-q"]);
    }
    let (small, big) = (peaks[0], peaks[1]);
    eprintln!("peak RSS: 1,500 files {small} KiB, 15,000 files {big} KiB");
    assert!(big < 64 * 1024, "15,000 files: {big} KiB, over 64 MiB");
    assert!(
        big < small + 8 * 1024,
        "ten times the files took {big} KiB against {small} KiB: memory grows with the commit"
    );
}

#[test]
fn pull_memory_is_bounded_whatever_the_latency() {
    let tmp = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::Builder::new()
            .prefix("arbor-it-")
            .tempdir_in("/dev/shm")
            .unwrap(),
        false => tempdir(),
    };
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    many_files(&src, 6_000);
    // 48 incompressible files of 1 MiB: their bodies are streamed.
    make_dir(&src.join("big"), 0o755);
    for i in 0..48 {
        write_file(
            &src.join(format!("big/b{i:02}")),
            &pseudo_random_bytes(1 << 20, 1000 + i),
            0o644,
        );
    }
    let www = tmp.path().join("www");
    let source = www.join("repo");
    std::fs::create_dir_all(&www).unwrap();
    ostree_init(&source, Mode::Archive);
    ostree_repo_ok(
        &source,
        [
            "commit".into(),
            "-b".into(),
            "main".into(),
            "--fsync=false".into(),
            format!("--tree=dir={}", src.display()),
        ],
    );
    let nginx = pull_support::Nginx::start(&www);
    let proxy = latency::LatencyProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        ([127, 0, 0, 1], nginx.port).into(),
        Duration::from_millis(25),
    );
    let store = tmp.path().join("store");
    arbor_init(&store, Mode::Bare);
    let url = format!("http://127.0.0.1:{}/repo", proxy.port);
    let peak = pull_peak_rss(&store, &url);
    ostree_repo_ok(&store, ["fsck", "-q"]);
    eprintln!("peak RSS over a 50 ms round trip: {peak} KiB");
    assert!(peak < 64 * 1024, "{peak} KiB, over 64 MiB");
}

/// A delta pull stays under the budget too, whatever the delta's size:
/// a from-scratch delta generated by `ostree static-delta generate
/// --inline` over 80 files of 1 MiB (which xz halves), so that its
/// superblock (40 MB: three inline xz parts, each inflating to about the
/// 32 MB chunk size) is all there is to fetch. The superblock is
/// received into a scratch file and its inline parts applied from there;
/// held whole and parsed it took four times its size.
#[test]
fn delta_pull_memory_is_bounded() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    for i in 0..80 {
        write_file(
            &src.join(format!("b{i:02}")),
            &pseudo_random_bytes(1 << 20, 2000 + i),
            0o644,
        );
    }
    let www = tmp.path().join("www");
    let source = www.join("repo");
    std::fs::create_dir_all(&www).unwrap();
    ostree_init(&source, Mode::Archive);
    ostree_repo_ok(
        &source,
        [
            "commit".into(),
            "-b".into(),
            "main".into(),
            "--fsync=false".into(),
            format!("--tree=dir={}", src.display()),
        ],
    );
    ostree_repo_ok(
        &source,
        [
            "static-delta",
            "generate",
            "--empty",
            "--inline",
            "--to=main",
        ],
    );
    pull_support::ostree_summary_update(&source);
    let sb_size: u64 = walk_files(&source.join("deltas"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(sb_size > 40_000_000, "superblock of {sb_size} bytes");
    let nginx = pull_support::Nginx::start(&www);
    let store = tmp.path().join("store");
    arbor_init(&store, Mode::Bare);
    let peak = pull_peak_rss(&store, nginx.url("repo"));
    ostree_repo_ok(&store, ["fsck", "-q"]);
    let reqs = nginx.requests();
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains("/objects/") && r.path.ends_with(".filez")),
        "content fetched as objects, not from the delta"
    );
    eprintln!("peak RSS of a {sb_size}-byte inline delta: {peak} KiB");
    assert!(peak < 64 * 1024, "{peak} KiB, over 64 MiB");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
