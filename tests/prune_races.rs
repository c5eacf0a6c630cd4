//! Prune against a pull that runs at an exact moment of it: the library's
//! prune is driven here, and its progress reporter starts a real `arbor
//! pull` (another process) when the prune has computed what to delete
//! (`Start` of the prune phase, before the first batch) or between two
//! batches (an `Advance`). Whatever the pull found already present and
//! relied on must survive, and both fscks must pass afterwards.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use arbor::progress::{Event, Phase};
use arbor::store::Repo;
use arbor::store::prune::{PruneOptions, prune};
use common::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

const TS: u64 = 1_700_000_000;

/// A source with `a` (`/x/f`, `/x/g`) and `b` (`/sub/s`, and `/other/f`
/// with the very bytes of `a`'s `/x/f`, so the same content object).
fn source(dir: &Path) -> (PathBuf, String, String) {
    let src = dir.join("src");
    ostree_init(&src, Mode::Archive);
    let shared = pseudo_random_bytes(20_000, 1);
    let a = dir.join("a");
    make_dir(&a, 0o755);
    make_dir(&a.join("x"), 0o755);
    write_file(&a.join("x/f"), &shared, 0o644);
    write_file(&a.join("x/g"), &pseudo_random_bytes(9_000, 2), 0o644);
    let ca = ostree_commit(&src, &a, "a", &CommitOpts::new("a", "", TS));
    let b = dir.join("b");
    make_dir(&b, 0o755);
    make_dir(&b.join("sub"), 0o755);
    make_dir(&b.join("other"), 0o755);
    write_file(&b.join("sub/s"), &pseudo_random_bytes(7_000, 3), 0o644);
    write_file(&b.join("other/f"), &shared, 0o644);
    let cb = ostree_commit(&src, &b, "b", &CommitOpts::new("b", "", TS + 1));
    (src, ca, cb)
}

/// Runs `arbor --repo STORE ARGS` once, from a progress reporter.
fn pull_once(store: &Path, args: &[&str], done: &Mutex<bool>) {
    let mut done = done.lock().unwrap();
    if !*done {
        *done = true;
        arbor_repo_ok(store, args);
    }
}

/// A partial commit (pulled with `--subpath`) whose missing subtree a full
/// pull fetches while the prune is under way: the pull finds `/other/f`
/// already present (it came with `a`, whose commit the prune deletes, or
/// was left an orphan by a commit-only prune) and does not fetch it. The
/// prune walked the partial commit before that, with `/other` missing; it
/// must walk it again under the lock and keep `/other/f`.
#[test]
fn partial_commit_completed_during_prune_keeps_what_the_pull_found() {
    for (case, before, opts) in [
        (
            "refs-only",
            None,
            PruneOptions {
                refs_only: true,
                ..Default::default()
            },
        ),
        (
            "default, orphan left by a commit-only prune",
            Some(["prune", "--refs-only", "--commit-only"]),
            PruneOptions::default(),
        ),
    ] {
        let tmp = tempdir();
        let (src, ca, cb) = source(tmp.path());
        let store = tmp.path().join("store");
        arbor_init(&store, Mode::Bare);
        let src_arg = src.to_str().unwrap();
        arbor_repo_ok(&store, ["pull", src_arg, "a", "-q"]);
        arbor_repo_ok(&store, ["pull", src_arg, "b", "--subpath=/sub", "-q"]);
        assert!(store.join(format!("state/{cb}.commitpartial")).exists());
        arbor_repo_ok(&store, ["refs", "--delete", "a"]);
        if let Some(args) = before {
            arbor_repo_ok(&store, args);
            assert!(!object_path(&store, &ca, "commit").exists(), "{case}");
        }

        let repo = Repo::open(&store).unwrap();
        let done = Mutex::new(false);
        let hook = |e: Event<'_>| {
            if let Event::Start {
                phase: Phase::Prune,
                ..
            } = e
            {
                pull_once(&store, &["pull", src_arg, "b", "-q"], &done);
            }
        };
        let out = prune(&repo, &opts, &hook, &AtomicBool::new(false)).unwrap();
        assert!(*done.lock().unwrap(), "{case}: the pull did not run");
        assert!(out.spared > 0, "{case}: {out:?}");
        assert!(!store.join(format!("state/{cb}.commitpartial")).exists());
        assert_fsck_clean(&store);
        assert_arbor_fsck_clean(&store);
        let co = tmp.path().join("co");
        arbor_repo_ok(&store, ["checkout", "b", co.to_str().unwrap()]);
        assert_eq!(
            std::fs::read(co.join("other/f")).unwrap(),
            pseudo_random_bytes(20_000, 1),
            "{case}"
        );
    }
}

/// A commit deleted by an early batch and pulled again by checksum before
/// a later one (by arbor, or by `ostree pull-local`): after the first
/// batch only the commit is gone (deleted commits go first) and the pull
/// fetches just the commit; after the third, two of the three objects
/// only its tree had are gone too and the pull fetches them again. Either
/// way the prune must see the commit as new (a root) and keep its whole
/// tree: what is left of it, and what the pull wrote again.
#[test]
fn commit_recreated_between_batches_keeps_its_tree() {
    for (after, puller) in [(1u64, "arbor"), (3, "arbor"), (3, "ostree")] {
        let case = format!("pulled by {puller} after {after} deleted");
        let tmp = tempdir();
        let (src, ca, _cb) = source(tmp.path());
        let store = tmp.path().join("store");
        arbor_init(&store, Mode::Bare);
        let src_arg = src.to_str().unwrap();
        arbor_repo_ok(&store, ["pull", src_arg, "a", "b", "-q"]);
        arbor_repo_ok(&store, ["refs", "--delete", "a"]);
        // What only a's tree has: its root and /x dirtrees and /x/g.
        let tree = |rev: &str| -> std::collections::BTreeSet<String> {
            let co = ostree_repo_ok(&src, ["ls", "-R", "-C", rev]).stdout_str();
            co.lines()
                .flat_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // dirs: checksum of the dirtree and the dirmeta.
                    f[4..f.len() - 1]
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let only_a: Vec<String> = tree(&ca).difference(&tree("b")).cloned().collect();
        assert_eq!(only_a.len(), 3, "{case}: {only_a:?}");

        let repo = Repo::open(&store).unwrap();
        let opts = PruneOptions {
            refs_only: true,
            batch_size: 1,
            ..Default::default()
        };
        let done = Mutex::new(false);
        let hook = |e: Event<'_>| {
            if let Event::Advance {
                phase: Phase::Prune,
                done: d,
                ..
            } = e
                && d == after
                && !*done.lock().unwrap()
            {
                assert!(!object_path(&store, &ca, "commit").exists());
                if puller == "arbor" {
                    pull_once(&store, &["pull", src_arg, &ca, "-q"], &done);
                } else {
                    *done.lock().unwrap() = true;
                    ostree_repo_ok(&store, ["pull-local", src_arg, &ca]);
                }
            }
        };
        let out = prune(&repo, &opts, &hook, &AtomicBool::new(false)).unwrap();
        assert!(*done.lock().unwrap(), "{case}: the pull did not run");
        assert!(out.spared > 0, "{case}: {out:?}");
        let deleted_of_a = out
            .deleted
            .iter()
            .filter(|n| only_a.contains(&n.checksum.to_hex()))
            .count() as u64;
        assert_eq!(deleted_of_a, after - 1, "{case}: {out:?}");
        assert!(object_path(&store, &ca, "commit").exists(), "{case}");
        assert_fsck_clean(&store);
        assert_arbor_fsck_clean(&store);
        let co = tmp.path().join("co");
        arbor_repo_ok(&store, ["checkout", &ca, co.to_str().unwrap()]);
        assert_eq!(
            std::fs::read(co.join("x/g")).unwrap(),
            pseudo_random_bytes(9_000, 2),
            "{case}"
        );
        assert_eq!(
            std::fs::read(co.join("x/f")).unwrap(),
            pseudo_random_bytes(20_000, 1),
            "{case}"
        );
    }
}
