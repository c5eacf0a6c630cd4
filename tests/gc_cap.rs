//! The size cap: artifacts committed in a loop under `[arbor] max-size`
//! stay under it after every commit (measured with `du`), the most
//! recently used survive in LRU order, refs outside the evictable prefix
//! and a live stage's layer are never evicted, and the stage still commits.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

const TS: u64 = 1_700_000_000;

fn du(repo: &Path) -> u64 {
    let out = Command::new("du").arg("-sB1").arg(repo).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Artifact `i`: four distinct 50 kB files.
fn artifact(dir: &Path, i: u64) -> std::path::PathBuf {
    let src = dir.join(format!("src{i}"));
    make_dir(&src, 0o755);
    for f in 0..4 {
        write_file(
            &src.join(format!("f{f}")),
            &pseudo_random_bytes(50_000, i * 1000 + f * 2 + 1),
            0o644,
        );
    }
    src
}

fn commit(repo: &Path, dir: &Path, i: u64) {
    arbor_commit(
        repo,
        &artifact(dir, i),
        &format!("artifacts/{i}"),
        &CommitOpts::new("artifact", "", TS + i),
    );
}

fn refs(repo: &Path) -> BTreeSet<String> {
    arbor_repo_ok(repo, ["refs"])
        .stdout_str()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn artifacts_stay_under_the_cap_in_lru_order() {
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    let base = dir.join("base");
    make_dir(&base, 0o755);
    write_file(&base.join("b"), &pseudo_random_bytes(100_000, 7), 0o644);
    arbor_commit(&repo, &base, "base", &CommitOpts::new("base", "", TS));
    commit(&repo, dir, 0);
    // A live stage over artifact 0 (its root outside the store).
    arbor_repo_ok(
        &repo,
        [
            "stage",
            "create",
            "s0",
            "artifacts/0",
            "--backend",
            "copy",
            "--workdir",
            dir.join("s0").to_str().unwrap(),
        ],
    );
    let du0 = du(&repo);
    commit(&repo, dir, 1);
    let per = du(&repo) - du0;
    let cap = du(&repo) + per * 7 / 2;
    ostree_repo_ok(&repo, ["config", "set", "arbor.max-size", &cap.to_string()]);
    ostree_repo_ok(
        &repo,
        ["config", "set", "arbor.evict-prefixes", "artifacts/;"],
    );

    let mut reused = None;
    for i in 2..=12 {
        if i == 11 {
            // The oldest artifact still there is used again: it becomes
            // more recent than every other but 11 and 12.
            let oldest = (1..i)
                .find(|j| refs(&repo).contains(&format!("artifacts/{j}")))
                .unwrap();
            let co = dir.join("co");
            arbor_repo_ok(
                &repo,
                [
                    "checkout",
                    &format!("artifacts/{oldest}"),
                    co.to_str().unwrap(),
                ],
            );
            std::fs::remove_dir_all(&co).unwrap();
            reused = Some(oldest);
        }
        commit(&repo, dir, i);
        let size = du(&repo);
        assert!(size <= cap, "after artifact {i}: du {size} > cap {cap}");
    }
    let reused = reused.unwrap();
    assert!(reused < 10, "nothing was evicted before artifact 11");

    let have = refs(&repo);
    assert!(
        have.contains("base") && have.contains("artifacts/0"),
        "{have:?}"
    );
    // Most recently used first; what survives is a prefix of this order.
    let mut mru = vec![12, 11, reused];
    mru.extend((1..=10).rev().filter(|j| *j != reused));
    let alive: Vec<bool> = mru
        .iter()
        .map(|i| have.contains(&format!("artifacts/{i}")))
        .collect();
    let survivors = alive.iter().take_while(|a| **a).count();
    assert!(
        alive[survivors..].iter().all(|a| !a),
        "not in LRU order ({mru:?}): {have:?}"
    );
    assert!(survivors >= 3 && survivors < mru.len(), "{have:?}");

    assert_fsck_clean(&repo);
    assert_arbor_fsck_clean(&repo);
    // The stage over the oldest artifact still works and commits.
    write_file(&dir.join("s0/root/new"), b"new\n", 0o644);
    arbor_repo_ok(&repo, ["stage", "commit", "s0", "-b", "from-stage"]);
    assert_fsck_clean(&repo);
}

/// `arbor gc` by hand: nothing happens under the cap; over it, unused
/// cached checkouts go first; `--dry-run` deletes nothing and names what a
/// real run then removes; without a cap configured it says how to set one.
#[test]
fn gc_by_hand() {
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    for i in 0..6 {
        commit(&repo, dir, i);
    }
    let r = arbor_repo(&repo, ["gc"]);
    assert!(
        !r.success() && r.stderr_str().contains("max-size"),
        "{}",
        r.describe()
    );

    let big = (du(&repo) * 2).to_string();
    let r = arbor_repo_ok(
        &repo,
        ["gc", "--max-size", &big, "--evict", "artifacts/", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["refs_evicted"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(refs(&repo).len(), 6);

    let cap = (du(&repo) / 2).to_string();
    let before = list_objects(&repo);
    let r = arbor_repo_ok(
        &repo,
        [
            "gc",
            "--max-size",
            &cap,
            "--evict",
            "artifacts/",
            "--dry-run",
            "--json",
        ],
    );
    let dry: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(list_objects(&repo), before);
    let r = arbor_repo_ok(
        &repo,
        ["gc", "--max-size", &cap, "--evict", "artifacts/", "--json"],
    );
    let real: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(dry["refs_evicted"], real["refs_evicted"], "{dry}\n{real}");
    let evicted: Vec<&str> = real["refs_evicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ref"].as_str().unwrap())
        .collect();
    // Oldest first, as many as needed and no more than the cap asks for
    // (down to 80 % of it).
    let expected: Vec<String> = (0..evicted.len())
        .map(|i| format!("artifacts/{i}"))
        .collect();
    assert_eq!(evicted, expected, "{real}");
    assert!((1..6).contains(&evicted.len()), "{real}");
    assert!(du(&repo) <= cap.parse::<u64>().unwrap());
    assert!(!real["still_over"].as_bool().unwrap());
    assert_fsck_clean(&repo);

    // Refs outside the prefixes are never evicted, even over the cap.
    let left = refs(&repo).len();
    let r = arbor_repo_ok(
        &repo,
        ["gc", "--max-size", "1K", "--evict", "nothing/", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(v["still_over"].as_bool().unwrap(), "{v}");
    assert_eq!(refs(&repo).len(), left);
}

/// The automatic gc after a pull by checksum (which names the commit by
/// no ref) evicts the old artifact and prunes what it alone held, but
/// never the commit the pull just brought, nor any other commit no ref
/// names: evicting refs frees what those refs held, nothing else.
#[test]
fn gc_after_a_pull_by_checksum_keeps_the_pulled_commit() {
    let tmp = tempdir();
    let dir = tmp.path();
    let src = dir.join("src");
    ostree_init(&src, Mode::Archive);
    let small = dir.join("small");
    make_dir(&small, 0o755);
    write_file(&small.join("s"), &pseudo_random_bytes(60_000, 5), 0o644);
    let pulled = ostree_commit(&src, &small, "small", &CommitOpts::new("s", "", TS));

    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    let old = dir.join("old");
    make_dir(&old, 0o755);
    for f in 0..10 {
        write_file(
            &old.join(format!("f{f}")),
            &pseudo_random_bytes(50_000, 100 + f),
            0o644,
        );
    }
    arbor_commit(
        &repo,
        &old,
        "artifacts/old",
        &CommitOpts::new("old", "", TS),
    );
    // An unnamed commit that was there before: gc leaves it too.
    let loose = dir.join("loose");
    make_dir(&loose, 0o755);
    write_file(&loose.join("l"), &pseudo_random_bytes(3_000, 9), 0o644);
    let unnamed = arbor_commit(&repo, &loose, "tmp", &CommitOpts::new("l", "", TS));
    arbor_repo_ok(&repo, ["refs", "--delete", "tmp"]);
    // Over the cap once the pull is in; evicting the old artifact alone
    // brings the store well under it.
    let cap = du(&repo) - (20 << 10);
    ostree_repo_ok(&repo, ["config", "set", "arbor.max-size", &cap.to_string()]);
    ostree_repo_ok(
        &repo,
        ["config", "set", "arbor.evict-prefixes", "artifacts/;"],
    );

    arbor_repo_ok(&repo, ["pull", src.to_str().unwrap(), &pulled, "-q"]);
    assert!(!refs(&repo).contains("artifacts/old"));
    assert!(du(&repo) <= cap, "{} > {cap}", du(&repo));
    for c in [&pulled, &unnamed] {
        assert!(object_path(&repo, c, "commit").exists(), "{c} was pruned");
    }
    assert!(!repo.join("extensions/arbor/gc-evicted").exists());
    assert_fsck_clean(&repo);
    assert_arbor_fsck_clean(&repo);
    let co = dir.join("co");
    arbor_repo_ok(&repo, ["checkout", &pulled, co.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(co.join("s")).unwrap(),
        pseudo_random_bytes(60_000, 5)
    );
}

/// A `stage create` holding the stage registry (shared, until its record
/// names its layers) keeps gc from evicting cache entries meanwhile, but
/// never blocks it without limit: gc waits at most the lock timeout, then
/// goes on without the cache, and Ctrl-C stops the wait at once.
#[test]
fn gc_does_not_hang_on_a_busy_stage_registry() {
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    for i in 0..3 {
        commit(&repo, dir, i);
    }
    std::fs::create_dir_all(repo.join("extensions/arbor")).unwrap();
    let registry = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(repo.join("extensions/arbor/stages.lock"))
        .unwrap();
    ofd_lock(&registry, false);

    ostree_repo_ok(&repo, ["config", "set", "core.lock-timeout-secs", "1"]);
    let started = std::time::Instant::now();
    let r = arbor_repo_ok(
        &repo,
        ["gc", "--max-size=1", "--evict=artifacts/", "--json"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["refs_evicted"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["cache_evicted"].as_array().unwrap().len(), 0, "{v}");

    // Without a limit (-1, as libostree), Ctrl-C ends the wait.
    ostree_repo_ok(
        &repo,
        ["config", "set", "--", "core.lock-timeout-secs", "-1"],
    );
    let child = arbor_command()
        .arg("--repo")
        .arg(&repo)
        .args(["gc", "--max-size=1", "--evict=artifacts/"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(registry);
}

/// The automatic gc after a commit waits for the exclusive lock (a
/// writer holds the shared one) at most its 10 s, and Ctrl-C ends that
/// wait at once: the commit is done and reported, nothing is evicted, and
/// the message says how to finish.
#[test]
fn auto_gc_stops_on_ctrl_c() {
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    for i in 0..3 {
        commit(&repo, dir, i);
    }
    ostree_repo_ok(&repo, ["config", "set", "arbor.max-size", "1"]);
    ostree_repo_ok(
        &repo,
        ["config", "set", "arbor.evict-prefixes", "artifacts/;"],
    );
    let before = refs(&repo);
    let writer = lock_repo(&repo, false);
    let child = arbor_command()
        .arg("--repo")
        .arg(&repo)
        .args(CommitOpts::new("artifact", "", TS + 3).arbor_args(&artifact(dir, 3), "artifacts/3"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the ref is written the commit is done and its gc begins.
    let start = std::time::Instant::now();
    while !repo.join("refs/heads/artifacts/3").exists() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let signalled = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let waited = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        waited < std::time::Duration::from_secs(2),
        "{waited:?}: {stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("gc: interrupted"), "{stderr}");
    assert!(is_hex64(String::from_utf8_lossy(&out.stdout).trim()));
    drop(writer);
    let mut expected = before;
    expected.insert("artifacts/3".to_string());
    assert_eq!(refs(&repo), expected);
    assert_fsck_clean(&repo);
}
