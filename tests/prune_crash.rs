//! kill -9 during prune and gc: at each named step (the crash points of
//! the `failpoints` feature) and at arbitrary moments. Afterwards `ostree fsck` and `arbor fsck` pass, a
//! re-run finishes, and a prune re-run ends with exactly what an
//! uninterrupted prune leaves.

mod common;
#[path = "common/prune.rs"]
mod prune_support;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use prune_support::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

const PRUNE: [&str; 4] = ["prune", "--refs-only", "--depth=0", "--batch-size=7"];

fn fixture() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch_dir("prune-crash");
        let repo = dir.join("repo");
        build_history(&repo, &dir.join("work"), Mode::Archive);
        repo
    })
}

/// What an uninterrupted prune leaves: objects, deltas, markers.
fn reference() -> &'static (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    static R: OnceLock<(BTreeSet<String>, BTreeSet<String>, BTreeSet<String>)> = OnceLock::new();
    R.get_or_init(|| {
        let dir = scratch_dir("prune-crash-ref");
        let repo = copy_repo(fixture(), &dir.join("repo"));
        arbor_repo_ok(&repo, PRUNE);
        end_state(&repo)
    })
}

fn end_state(repo: &Path) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    (
        all_object_files(repo),
        delta_dirs(repo),
        dir_names(repo, "state"),
    )
}

/// Arms the crash point `point` of `cmd` (the `failpoints` feature).
fn crash_at(cmd: &mut Command, point: &str) {
    if !cfg!(feature = "failpoints") {
        panic!(
            "crash points need the failpoints feature: cargo test --features failpoints (scripts/test passes it)"
        );
    }
    // A bare name kills at the first pass; `NAME=K*off->return` at the
    // (K+1)-th.
    if point.contains('=') {
        cmd.env("FAILPOINTS", point);
    } else {
        cmd.env("FAILPOINTS", format!("{point}=return"));
    }
}

fn arbor_in(repo: &Path, args: &[&str]) -> Command {
    let mut c = arbor_command();
    c.arg("--repo").arg(repo).args(args);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

#[track_caller]
fn assert_consistent_then_finish(repo: &Path, what: &str) {
    assert_fsck_clean(repo);
    assert_arbor_fsck_clean(repo);
    arbor_repo_ok(repo, PRUNE);
    assert_eq!(
        &end_state(repo),
        reference(),
        "{what}: the re-run ends elsewhere"
    );
    assert_fsck_clean(repo);
}

#[test]
fn prune_killed_at_each_step() {
    for point in [
        "prune:computed",
        "prune:commit-deleted",
        "prune:batch",
        "prune:objects-deleted",
    ] {
        let tmp = tempdir();
        let repo = copy_repo(fixture(), &tmp.path().join("repo"));
        let mut cmd = arbor_in(&repo, &PRUNE);
        crash_at(&mut cmd, point);
        let r = run(cmd);
        assert_eq!(
            r.status.signal(),
            Some(9),
            "{point}: not killed\n{}",
            r.describe()
        );
        assert_consistent_then_finish(&repo, point);
    }
}

/// Kills in the middle of the deleting, at exact points instead of after
/// arbitrary delays: with one object per batch, at the first, a middle
/// and the last commit deleted (`prune:commit-deleted`, after the commit
/// and before its detached metadata and marker), and after the first, a
/// quarter, half and the last but one of the other objects
/// (`prune:batch`), and between the deltas and the markers of the final
/// clean-up (`prune:deltas-deleted`).
#[test]
fn prune_killed_mid_deletion() {
    let args = ["prune", "--refs-only", "--depth=0", "--batch-size=1"];
    let dry = arbor_repo_ok(
        fixture(),
        ["prune", "--refs-only", "--depth=0", "--dry-run", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let deleted: Vec<&str> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let commits = deleted.iter().filter(|d| d.ends_with(".commit")).count();
    let others = deleted.len() - commits;
    assert!(commits >= 3 && others >= 8, "{v}");
    let mut points = Vec::new();
    for k in [0, commits / 2, commits - 1] {
        points.push(format!("prune:commit-deleted={k}*off->return"));
    }
    for k in [0, others / 4, others / 2, others - 2] {
        points.push(format!("prune:batch={k}*off->return"));
    }
    points.push("prune:deltas-deleted=return".to_string());
    for point in points {
        let tmp = tempdir();
        let repo = copy_repo(fixture(), &tmp.path().join("repo"));
        let mut cmd = arbor_in(&repo, &args);
        crash_at(&mut cmd, &point);
        let r = run(cmd);
        assert_eq!(
            r.status.signal(),
            Some(9),
            "{point}: not killed\n{}",
            r.describe()
        );
        assert_consistent_then_finish(&repo, &point);
    }
}

// ---------------------------------------------------------------------------
// gc
// ---------------------------------------------------------------------------

/// A bare store with eight artifacts (≈ 200 KiB each, distinct) under
/// `artifacts/`, a `keep` ref, and cached checkouts of the first four left
/// by (union) stages since destroyed; a7 is the most recently used (checked out).
fn gc_store(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    for i in 0..8u64 {
        let src = dir.join(format!("a{i}"));
        make_dir(&src, 0o755);
        for f in 0..4 {
            write_file(
                &src.join(format!("f{f}")),
                &pseudo_random_bytes(50_000, i * 1000 + f * 2 + 1),
                0o644,
            );
        }
        arbor_commit(
            &repo,
            &src,
            &format!("artifacts/a{i}"),
            &CommitOpts::new("artifact", "", TS + i),
        );
    }
    let keep = dir.join("keep");
    make_dir(&keep, 0o755);
    write_file(&keep.join("k"), &pseudo_random_bytes(100_000, 9999), 0o644);
    arbor_commit(&repo, &keep, "keep", &CommitOpts::new("keep", "", TS));
    for i in 0..4 {
        let name = format!("s{i}");
        arbor_repo_ok(
            &repo,
            [
                "stage",
                "create",
                &name,
                &format!("artifacts/a{i}"),
                "--backend",
                "overlay",
            ],
        );
        arbor_repo_ok(&repo, ["stage", "destroy", &name]);
    }
    // The most recently used artifact: checked out last.
    std::thread::sleep(Duration::from_millis(20));
    let co = dir.join("co");
    arbor_repo_ok(&repo, ["checkout", "artifacts/a7", co.to_str().unwrap()]);
    std::fs::remove_dir_all(&co).unwrap();
    repo
}

fn du(repo: &Path) -> u64 {
    let out = Command::new("du").arg("-sxB1").arg(repo).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn gc_killed_at_each_step() {
    let scratch = scratch_dir("gc-crash");
    let template = gc_store(&scratch);
    let cap = du(&template) * 6 / 10;
    let cap_arg = format!("--max-size={cap}");
    // One object per batch, so that kills between batches are exact.
    let gc = [
        "gc",
        cap_arg.as_str(),
        "--evict=artifacts/",
        "--batch-size=1",
    ];
    for point in [
        "gc:cache-entry",
        "gc:journaled",
        "gc:ref-deleted",
        "gc:ref-deleted=1*off->return",
        "gc:refs-deleted",
        "prune:computed",
        "prune:commit-deleted",
        "prune:commit-deleted=1*off->return",
        "prune:batch",
        "prune:batch=5*off->return",
        "prune:objects-deleted",
        "gc:pruned",
    ] {
        let tmp = tempdir();
        let repo = copy_repo(&template, &tmp.path().join("repo"));
        let mut cmd = arbor_in(&repo, &gc);
        crash_at(&mut cmd, point);
        let r = run(cmd);
        assert_eq!(
            r.status.signal(),
            Some(9),
            "{point}: not killed\n{}",
            r.describe()
        );
        assert_fsck_clean(&repo);
        assert_arbor_fsck_clean(&repo);
        arbor_repo_ok(&repo, gc);
        assert!(
            du(&repo) <= cap,
            "{point}: {} > {cap} after the re-run",
            du(&repo)
        );
        assert_fsck_clean(&repo);
        assert_arbor_fsck_clean(&repo);
        let refs = arbor_repo_ok(&repo, ["refs"]).stdout_str();
        assert!(refs.lines().any(|l| l == "keep"), "{point}: {refs}");
        assert!(refs.lines().any(|l| l == "artifacts/a7"), "{point}: {refs}");
        // What the killed run evicted was pruned by the re-run: every
        // commit left is a ref's, and nothing waits in the journal.
        let named: BTreeSet<String> = refs
            .lines()
            .map(|r| {
                arbor_repo_ok(&repo, ["rev-parse", r])
                    .stdout_str()
                    .trim()
                    .to_string()
            })
            .collect();
        assert_eq!(commits_present(&repo), named, "{point}");
        assert!(
            !repo.join("extensions/arbor/gc-evicted").exists(),
            "{point}"
        );
    }
}
