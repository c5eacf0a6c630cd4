//! Prune against concurrent writers, deterministically: the test plays an
//! in-flight writer by holding the repository's shared lock, so the prune
//! computes what to delete and then waits for its first batch; meanwhile
//! a real writer (`ostree commit`, `arbor commit`, `arbor refs --create`,
//! a stage) starts using objects the prune found unreachable. When the
//! "writer" lets go, the prune's re-check must spare exactly those objects
//! (its JSON reports how many), and the store must pass both fscks. This
//! is the race of libostree#2337 (which ostree avoids by holding the
//! exclusive lock for the whole prune, stalling every writer meanwhile,
//! and which its 2022.7 selective path loses).

mod common;
#[path = "common/prune.rs"]
mod prune_support;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use prune_support::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

fn start_prune(repo: &Path, args: &[&str]) -> Child {
    arbor_command()
        .arg("--repo")
        .arg(repo)
        .arg("prune")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A store whose "gone" branch was deleted: a refs-only prune deletes
/// g1, g2 and what only they reach.
fn store(tmp: &Path, mode: Mode) -> (std::path::PathBuf, History) {
    let repo = tmp.join("repo");
    let h = build_history(&repo, &tmp.join("work"), mode);
    ostree_repo_ok(&repo, ["config", "set", "core.fsync", "false"]);
    (repo, h)
}

/// Waits long enough for the prune to have listed and walked the small
/// store and to be polling for the exclusive lock.
fn let_it_compute() {
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn commit_reusing_doomed_objects_is_spared() {
    for writer in ["ostree", "arbor"] {
        let tmp = tempdir();
        let (repo, h) = store(tmp.path(), Mode::Archive);
        // The tree g2 had, committed again while the prune waits: every
        // object is "already present", so the writer adds only a commit.
        let tree = tmp.path().join("g2-tree");
        ostree_repo_ok(&repo, ["checkout", &h.g[1], tree.to_str().unwrap()]);

        let lock = lock_repo(&repo, false);
        let prune = start_prune(&repo, &["--refs-only"]);
        let_it_compute();
        let opts = CommitOpts::new("again", "", TS + 20 * DAY);
        let again = if writer == "ostree" {
            ostree_commit(&repo, &tree, "again", &opts)
        } else {
            arbor_commit(&repo, &tree, "again", &opts)
        };
        drop(lock);
        let v = finish(prune);

        assert!(v["spared"].as_u64().unwrap() > 0, "{writer}: {v}");
        let deleted: Vec<&str> = v["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        // g1 and g2 still go; nothing of the new commit's tree does.
        assert!(
            deleted.contains(&format!("{}.commit", h.g[1]).as_str()),
            "{writer}: {v}"
        );
        let needed = ostree_repo_ok(&repo, ["ls", "-R", "-C", &again]).stdout_str();
        for line in needed.lines() {
            let csum = line.split_whitespace().nth(4).unwrap();
            assert!(
                !deleted.iter().any(|d| d.starts_with(csum)),
                "{writer}: {csum} of the new commit was deleted"
            );
        }
        assert_fsck_clean(&repo);
        assert_arbor_fsck_clean(&repo);
        let co = tmp.path().join("co");
        ostree_repo_ok(&repo, ["checkout", &again, co.to_str().unwrap()]);
    }
}

/// A ref created meanwhile to a doomed commit keeps it and its tree.
#[test]
fn ref_created_meanwhile_is_honoured() {
    let tmp = tempdir();
    let (repo, h) = store(tmp.path(), Mode::Archive);
    let lock = lock_repo(&repo, false);
    let prune = start_prune(&repo, &["--refs-only"]);
    let_it_compute();
    arbor_repo_ok(&repo, ["refs", "--create", "revived", &h.g[1]]);
    drop(lock);
    let v = finish(prune);
    assert!(v["spared"].as_u64().unwrap() > 0, "{v}");
    let present = commits_present(&repo);
    // g2 revived with its parent g1 (a ref's whole history, --refs-only).
    assert!(
        present.contains(&h.g[1]) && present.contains(&h.g[0]),
        "{v}"
    );
    assert_fsck_clean(&repo);
    assert_arbor_fsck_clean(&repo);
}

/// The exclusive lock is held in short batches: with one object per batch
/// the prune takes the lock once per object, and a writer blocked behind
/// it waits at most one batch, not the whole prune.
#[test]
fn batches_release_the_lock() {
    let tmp = tempdir();
    let (repo, _h) = store(tmp.path(), Mode::Archive);
    let r = arbor_repo_ok(
        &repo,
        [
            "prune",
            "--refs-only",
            "--depth=0",
            "--batch-size",
            "1",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let deleted = v["deleted"].as_array().unwrap().len() as u64;
    assert!(deleted > 20, "{v}");
    assert_eq!(v["lock_holds"].as_u64().unwrap(), deleted, "{v}");
    assert!(v["longest_lock_hold_ms"].as_f64().unwrap() < 1000.0, "{v}");
    assert_fsck_clean(&repo);
}

/// A prune never waits for nothing: with the lock held exclusively by
/// another process (an `ostree prune`, say) it waits, then goes on.
#[test]
fn waits_for_another_pruner() {
    let tmp = tempdir();
    let (repo, h) = store(tmp.path(), Mode::Archive);
    let lock = lock_repo(&repo, true);
    let prune = start_prune(&repo, &["--refs-only"]);
    std::thread::sleep(Duration::from_millis(800));
    // Nothing deleted while the other holds the lock.
    assert!(commits_present(&repo).contains(&h.g[1]));
    drop(lock);
    let v = finish(prune);
    assert!(!commits_present(&repo).contains(&h.g[1]), "{v}");
    assert_fsck_clean(&repo);
}

/// Whether an OFD lock conflicting with an exclusive one is held on `path`.
fn locked_elsewhere(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: plain fcntl on an open descriptor with an initialised flock.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        assert_eq!(libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl), 0);
        fl.l_type != libc::F_UNLCK as libc::c_short
    }
}

/// A writer waiting for the shared lock says so (a shared lock on
/// `tmp/arbor-lock-waiters`), which is how a prune between two batches
/// knows to leave it a turn; the signal goes once it has the lock.
#[test]
fn waiting_writers_announce_themselves() {
    let tmp = tempdir();
    let (repo, h) = store(tmp.path(), Mode::Archive);
    let waiters = repo.join("tmp/arbor-lock-waiters");
    let lock = lock_repo(&repo, true);
    let mut writer = arbor_command()
        .arg("--repo")
        .arg(&repo)
        .args(["refs", "--create", "waiting", &h.m[0]])
        .spawn()
        .unwrap();
    let mut seen = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        if locked_elsewhere(&waiters) {
            seen = true;
            break;
        }
    }
    assert!(seen, "the waiting writer did not announce itself");
    drop(lock);
    assert!(writer.wait().unwrap().success());
    assert!(!locked_elsewhere(&waiters));
    assert!(repo.join("refs/heads/waiting").exists());
}

/// Ctrl-C while the prune waits for the exclusive lock (behind a writer):
/// it stops at once with exit status 130, having deleted nothing, and a
/// re-run finishes.
#[test]
fn interrupted_while_waiting_for_the_lock() {
    let tmp = tempdir();
    let (repo, h) = store(tmp.path(), Mode::Archive);
    let before = all_object_files(&repo);
    let lock = lock_repo(&repo, false);
    let prune = arbor_command()
        .arg("--repo")
        .arg(&repo)
        .args(["prune", "--refs-only"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let_it_compute();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(prune.id() as libc::pid_t, libc::SIGINT);
    }
    let started = std::time::Instant::now();
    let out = prune.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "slow to stop");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all_object_files(&repo), before);
    drop(lock);
    arbor_repo_ok(&repo, ["prune", "--refs-only"]);
    assert!(!commits_present(&repo).contains(&h.g[1]));
    assert_fsck_clean(&repo);
}

/// A store where a refs-only prune deletes `n` content objects, and the
/// commit and root dirtree of the deleted ref `gone` (its dirmeta is
/// `keep`'s too).
fn store_with_garbage(tmp: &Path, n: u64) -> std::path::PathBuf {
    let repo = tmp.join("repo");
    ostree_init(&repo, Mode::Archive);
    ostree_repo_ok(&repo, ["config", "set", "core.fsync", "false"]);
    let gone = tmp.join("gone");
    make_dir(&gone, 0o755);
    for i in 0..n {
        write_file(
            &gone.join(format!("f{i}")),
            &pseudo_random_bytes(500, 7001 + 2 * i),
            0o644,
        );
    }
    ostree_commit(&repo, &gone, "gone", &CommitOpts::new("gone", "", TS));
    ostree_repo_ok(&repo, ["refs", "--delete", "gone"]);
    let keep = tmp.join("keep");
    make_dir(&keep, 0o755);
    write_file(&keep.join("k"), b"kept", 0o644);
    ostree_commit(&repo, &keep, "keep", &CommitOpts::new("keep", "", TS));
    repo
}

/// libostree's writers try the lock once a second and tell nobody they
/// wait: two long prunes (every one-object batch holds the exclusive lock
/// 80 ms, through the `prune:batch` failpoint's sleep; 1.8 s of holds
/// each) still let a waiting `ostree commit` in within HOLD_BUDGET +
/// FAIR_GAP (1.5 s + 1.1 s, plus a batch), and an `arbor commit` within a
/// batch or two, while a prune is still running. The second prune waits
/// through the first one's gaps instead of filling them (when it took
/// them, the `ostree commit` waited 4 s, for both prunes).
#[test]
fn writers_get_the_lock_during_long_prunes() {
    if !cfg!(feature = "failpoints") {
        panic!("this test slows batches down with a failpoint: cargo test --features failpoints");
    }
    let tmp = tempdir();
    let repo = store_with_garbage(tmp.path(), 20);
    let commits_before = commits_present(&repo);
    let slow_prune = || {
        arbor_command()
            .env("FAILPOINTS", "prune:batch=sleep(80)")
            .arg("--repo")
            .arg(&repo)
            .args(["prune", "--refs-only", "--batch-size=1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both prunes compute, then wait for the lock this "writer" holds.
    let lock = lock_repo(&repo, false);
    let mut first = slow_prune();
    let mut second = slow_prune();
    let_it_compute();
    drop(lock);
    // Wait for the deleting to start (the commit goes first).
    let start = std::time::Instant::now();
    while commits_present(&repo) == commits_before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no prune started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let ostree_tree = tmp.path().join("w1");
    make_dir(&ostree_tree, 0o755);
    write_file(&ostree_tree.join("a"), b"ostree writer", 0o644);
    let arbor_tree = tmp.path().join("w2");
    make_dir(&arbor_tree, 0o755);
    write_file(&arbor_tree.join("a"), b"arbor writer", 0o644);
    let (ostree_wait, arbor_wait) = std::thread::scope(|s| {
        let o = s.spawn(|| {
            let t = std::time::Instant::now();
            ostree_commit(&repo, &ostree_tree, "w1", &CommitOpts::new("w1", "", TS));
            t.elapsed()
        });
        let a = s.spawn(|| {
            let t = std::time::Instant::now();
            arbor_commit(&repo, &arbor_tree, "w2", &CommitOpts::new("w2", "", TS));
            t.elapsed()
        });
        (o.join().unwrap(), a.join().unwrap())
    });
    let running = [&mut first, &mut second]
        .into_iter()
        .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
        .count();
    assert!(
        ostree_wait < Duration::from_millis(3500),
        "ostree commit waited {ostree_wait:?}"
    );
    assert!(
        arbor_wait < Duration::from_millis(1500),
        "arbor commit waited {arbor_wait:?}"
    );
    assert!(running > 0, "the prunes ended before the writers did");
    let first = finish(first);
    let second = finish(second);
    // Between them, the garbage went: the commit, the dirtree and the 20
    // files.
    let deleted =
        first["deleted"].as_array().unwrap().len() + second["deleted"].as_array().unwrap().len();
    assert_eq!(deleted, 22, "{first}\n{second}");
    eprintln!("waited: ostree {ostree_wait:?}, arbor {arbor_wait:?}");
    assert_fsck_clean(&repo);
    assert_arbor_fsck_clean(&repo);
    for b in ["w1", "w2", "keep"] {
        let co = tmp.path().join(format!("co-{b}"));
        ostree_repo_ok(&repo, ["checkout", b, co.to_str().unwrap()]);
    }
}
