//! Crash safety, concurrent writers and the lock protocol of the store.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A tree big enough that a commit takes a while: many small files and a
/// few larger ones, all distinct.
fn busy_tree(dir: &Path, files: usize) {
    make_dir(dir, 0o755);
    for d in 0..files / 200 + 1 {
        let sub = dir.join(format!("d{d:03}"));
        make_dir(&sub, 0o755);
        for f in 0..200.min(files - (d * 200).min(files)) {
            write_file(
                &sub.join(format!("f{f:03}")),
                format!("file {d}/{f}\n").as_bytes(),
                0o644,
            );
        }
    }
    for i in 0..4 {
        write_file(
            &dir.join(format!("big{i}")),
            &pseudo_random_bytes(2 << 20, i),
            0o644,
        );
    }
}

fn txn_leftovers(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("arbor-txn-"))
        .collect()
}

/// kill -9 an `arbor commit` at several points: what is visible under
/// objects/ is always complete and valid, no ref moves to a commit whose tree
/// is incomplete, and the next start removes the dead transaction's files.
#[test]
fn commit_killed_at_any_point_leaves_a_consistent_store() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    busy_tree(&src, 3000);
    for (i, delay_ms) in [5u64, 40, 120, 300, 700].into_iter().enumerate() {
        for mode in [Mode::Bare, Mode::Archive] {
            let repo = tmp.path().join(format!("repo-{i}-{}", mode.name()));
            arbor_init(&repo, mode);
            let mut child = arbor_command()
                .arg("--repo")
                .arg(&repo)
                .args(["commit", "--branch", "main", "--timestamp", "0"])
                .arg(&src)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill();
            let status = child.wait().unwrap();

            // Every loose object hashes to its name (arbor fsck re-hashes
            // all of them), and whatever ref exists names a complete tree.
            let fsck = arbor_repo(&repo, ["fsck"]);
            assert!(
                fsck.status.success(),
                "after kill at {delay_ms} ms ({status})\n{}",
                fsck.describe()
            );
            ostree_repo_ok(&repo, ["fsck"]);

            // The interrupted commit can simply be run again; its first
            // transaction recovers what the dead one left.
            let c = arbor_repo_ok(
                &repo,
                [
                    "commit",
                    "--branch",
                    "main",
                    "--timestamp",
                    "0",
                    "--parent",
                    "none",
                    src.to_str().unwrap(),
                ],
            );
            let c = expect_checksum_line(&c);
            assert_eq!(ostree_rev_parse(&repo, "main"), c);
            ostree_repo_ok(&repo, ["fsck"]);
            assert!(
                txn_leftovers(&repo).is_empty(),
                "dead transaction left {:?}",
                txn_leftovers(&repo)
            );
        }
    }
}

/// Leftovers of a dead transaction are found by their liveness lock, by
/// the next write: those of a live one are left alone, and commands that
/// only read write nothing.
#[test]
fn stale_staging_is_cleaned_but_live_staging_is_not() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Bare);
    let tmpdir = repo.join("tmp");
    // A dead writer: staging dir and lock file, nobody holds the lock; it
    // is from another boot, so its objects are not adopted.
    std::fs::create_dir_all(tmpdir.join("arbor-txn-otherboot-1-1/ab")).unwrap();
    std::fs::write(tmpdir.join("arbor-txn-otherboot-1-1/ab/tmp-0"), b"partial").unwrap();
    std::fs::write(tmpdir.join("arbor-txn-otherboot-1-1.lock"), b"").unwrap();
    // A live writer: we hold its lock.
    std::fs::create_dir_all(tmpdir.join("arbor-txn-live-2-2")).unwrap();
    let live = std::fs::File::create(tmpdir.join("arbor-txn-live-2-2.lock")).unwrap();
    ofd_lock(&live, true);
    // A staging dir without its lock file (crash between the two).
    std::fs::create_dir_all(tmpdir.join("arbor-txn-orphan-3-3")).unwrap();

    let all = {
        let mut l = txn_leftovers(&repo);
        l.sort();
        l
    };
    arbor_repo_ok(&repo, ["refs"]);
    let mut left = txn_leftovers(&repo);
    left.sort();
    assert_eq!(left, all, "reading the repository changed tmp/");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let write = |branch: &str| {
        arbor_repo_ok(
            &repo,
            ["commit", "--branch", branch, empty.to_str().unwrap()],
        )
    };
    write("a");
    let mut left = txn_leftovers(&repo);
    left.sort();
    assert_eq!(left, vec!["arbor-txn-live-2-2", "arbor-txn-live-2-2.lock"]);
    drop(live);
    write("b");
    assert_eq!(txn_leftovers(&repo), Vec::<String>::new());
}

/// Several writers and readers on one repository at once: every commit
/// lands, with the checksum a lone commit of the same tree gives.
#[test]
fn concurrent_writers_and_readers() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Bare);
    let mut trees = Vec::new();
    for i in 0..4 {
        let dir = tmp.path().join(format!("tree{i}"));
        busy_tree(&dir, 400 + i * 50);
        // Shared content between trees, so writers race on the same objects.
        write_file(&dir.join("shared"), b"the same in every tree\n", 0o644);
        trees.push(dir);
    }
    let mut children = Vec::new();
    for (i, dir) in trees.iter().enumerate() {
        children.push(
            arbor_command()
                .arg("--repo")
                .arg(&repo)
                .args(["commit", "--branch", &format!("b{i}"), "--timestamp", "0"])
                .arg(dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    // Readers while the writers run.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && children.iter_mut().any(|c| c.try_wait().unwrap().is_none())
    {
        let r = arbor_repo(&repo, ["refs"]);
        assert!(r.status.success(), "{}", r.describe());
    }
    let mut got = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        got.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }
    for (i, dir) in trees.iter().enumerate() {
        let alone = tmp.path().join(format!("alone{i}"));
        arbor_init(&alone, Mode::Bare);
        let c = arbor_repo_ok(
            &alone,
            [
                "commit",
                "--branch",
                &format!("b{i}"),
                "--timestamp",
                "0",
                dir.to_str().unwrap(),
            ],
        );
        assert_eq!(expect_checksum_line(&c), got[i]);
        assert_eq!(ostree_rev_parse(&repo, &format!("b{i}")), got[i]);
    }
    ostree_repo_ok(&repo, ["fsck"]);
    arbor_repo_ok(&repo, ["fsck"]);
}

/// Writers take the shared lock on `.lock` (the one ostree uses): while
/// someone holds it exclusively (as ostree's prune does) a commit waits, and
/// gives up with a clear message after `core.lock-timeout-secs`.
#[test]
fn writers_wait_for_an_exclusive_lock_holder() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Bare);
    let cfg = std::fs::read_to_string(repo.join("config")).unwrap();
    std::fs::write(repo.join("config"), format!("{cfg}lock-timeout-secs=1\n")).unwrap();
    let src = tmp.path().join("src");
    build_small_tree(&src);

    let lock = lock_repo(&repo, true);
    let start = Instant::now();
    let r = arbor_repo(&repo, ["commit", "--branch", "main", src.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(r.stderr_str().contains("lock"), "{}", r.describe());
    assert!(ostree_repo(&repo, ["rev-parse", "main"]).status.code() != Some(0));
    drop(lock);

    // A shared holder (another writer) does not block.
    let _shared = lock_repo(&repo, false);
    arbor_repo_ok(&repo, ["commit", "--branch", "main", src.to_str().unwrap()]);
}

/// Transactions starting while other processes run their start-up cleanup
/// (every `arbor` command does): the cleanup must never take a starting
/// writer for dead. (A lock file that was visible unlocked for a moment
/// after its creation once let a concurrent `arbor refs` delete it.)
#[test]
fn starting_writers_survive_concurrent_cleanup() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Bare);
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    write_file(&src.join("f"), b"x\n", 0o644);
    for round in 0..60 {
        let writers: Vec<_> = (0..3)
            .map(|i| {
                arbor_command()
                    .arg("--repo")
                    .arg(&repo)
                    .args([
                        "commit",
                        "--branch",
                        &format!("r{round}w{i}"),
                        "--timestamp",
                        "0",
                    ])
                    .arg(&src)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let cleaners: Vec<_> = (0..3)
            .map(|_| {
                arbor_command()
                    .arg("--repo")
                    .arg(&repo)
                    .arg("refs")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in writers.into_iter().chain(cleaners) {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(
        arbor_repo_ok(&repo, ["refs"]).stdout_str().lines().count(),
        180
    );
    assert!(txn_leftovers(&repo).is_empty());
}
