//! Everything at once on one store, for a fixed number of rounds: arbor
//! pulls over HTTP and from a local repository, commits, checkouts, stage
//! create/commit, prunes and gcs, plus a real `ostree prune` and
//! `ostree pull`, all concurrently. Every command must succeed (the lock
//! protocol makes them wait, never fail), and afterwards both fscks pass
//! (every ref's commit is complete), every stage still commits, and every
//! ref checks out to exactly its tree.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;
use pull_support::*;

const ROUNDS: u64 = 6;

struct Ctx {
    store: PathBuf,
    src: PathBuf,
    url: String,
    main: Vec<String>,
    dev: Vec<String>,
    work: PathBuf,
    failures: Mutex<Vec<String>>,
}

impl Ctx {
    fn arbor(&self, who: &str, args: &[&str]) -> bool {
        let r = arbor_repo(&self.store, args);
        if !r.success() {
            self.failures
                .lock()
                .unwrap()
                .push(format!("{who}: {}", r.describe()));
        }
        r.success()
    }

    fn ostree(&self, who: &str, args: &[&str]) {
        let r = ostree_repo(&self.store, args);
        if !r.success() {
            self.failures
                .lock()
                .unwrap()
                .push(format!("{who}: {}", r.describe()));
        }
    }
}

/// The source: main with ROUNDS commits, dev with ROUNDS commits (other
/// content), archive mode, with a summary, served by nginx.
fn source(dir: &Path) -> (PathBuf, Vec<String>, Vec<String>) {
    let src = dir.join("srv/repo");
    std::fs::create_dir_all(dir.join("srv")).unwrap();
    let main = commit_medium_history(&src, &dir.join("t-main"), "main", ROUNDS, 6, 60);
    build_medium_tree(&dir.join("t-dev"), 4, 40, 9);
    let mut dev = Vec::new();
    for r in 0..ROUNDS {
        if r > 0 {
            evolve_medium_tree(&dir.join("t-dev"), r + 50);
        }
        dev.push(ostree_commit(
            &src,
            &dir.join("t-dev"),
            "dev",
            &CommitOpts::new("dev", "", TS + 100 + r),
        ));
    }
    ostree_summary_update(&src);
    (src, main, dev)
}

#[test]
fn everything_at_once() {
    let tmp = tempdir();
    let (src, main, dev) = source(tmp.path());
    let nginx = Nginx::start(&tmp.path().join("srv"));
    let (_s, store) = new_store(Mode::Bare);
    add_remote(&store, "origin", &nginx.url("repo"), &["--no-gpg-verify"]);
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        src: src.clone(),
        url: nginx.url("repo"),
        main,
        dev,
        work: tmp.path().join("work"),
        failures: Mutex::new(Vec::new()),
    });
    std::fs::create_dir_all(&ctx.work).unwrap();
    // A first pull so that main and dev exist from the start.
    arbor_repo_ok(&store, ["pull", &ctx.url, "main", "-q"]);
    arbor_repo_ok(&store, ["pull", src.to_str().unwrap(), "dev", "-q"]);

    let mut threads = Vec::new();
    let spawn = |threads: &mut Vec<thread::JoinHandle<()>>, f: fn(&Ctx, u64)| {
        let ctx = ctx.clone();
        threads.push(thread::spawn(move || {
            for round in 0..ROUNDS {
                f(&ctx, round);
            }
        }));
    };
    // HTTP pulls move main through its history.
    spawn(&mut threads, |c, r| {
        let rev = format!("main@{}", c.main[r as usize]);
        c.arbor("http pull", &["pull", &c.url, &rev, "-q"]);
    });
    // Local pulls move dev.
    spawn(&mut threads, |c, r| {
        let rev = format!("dev@{}", c.dev[(ROUNDS - 1 - r) as usize]);
        c.arbor("local pull", &["pull", c.src.to_str().unwrap(), &rev, "-q"]);
    });
    // Commits of new artifacts (gc evicts them).
    spawn(&mut threads, |c, r| {
        let t = c.work.join(format!("art{r}"));
        build_medium_tree(&t, 3, 20, 100 + r);
        c.arbor(
            "commit",
            &[
                "commit",
                t.to_str().unwrap(),
                "-b",
                &format!("work/{r}"),
                "--timestamp",
                "0",
            ],
        );
    });
    // Checkouts of whatever main and dev are now.
    spawn(&mut threads, |c, r| {
        for rev in ["main", "dev"] {
            let d = c.work.join(format!("co-{rev}-{r}"));
            if c.arbor("checkout", &["checkout", rev, d.to_str().unwrap()]) {
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
    });
    // Stages over main and dev, written to and committed.
    spawn(&mut threads, |c, r| {
        let name = format!("st{r}");
        if !c.arbor(
            "stage create",
            &["stage", "create", &name, "dev", "main", "--backend", "copy"],
        ) {
            return;
        }
        let root = arbor_repo_ok(&c.store, ["stage", "path", &name]).stdout_str();
        write_file(
            &Path::new(root.trim()).join(format!("added-{r}")),
            b"x\n",
            0o644,
        );
        c.arbor(
            "stage commit",
            &[
                "stage",
                "commit",
                &name,
                "-b",
                &format!("staged/{r}"),
                "--timestamp",
                "0",
            ],
        );
        if r % 2 == 0 {
            c.arbor("stage destroy", &["stage", "destroy", &name]);
        }
    });
    // arbor prune and gc, alternately.
    spawn(&mut threads, |c, r| {
        if r % 2 == 0 {
            c.arbor(
                "prune",
                &["prune", "--refs-only", "--depth=1", "--batch-size=16"],
            );
        } else {
            c.arbor("gc", &["gc", "--max-size=1", "--evict=work/"]);
        }
    });
    // The real ostree: pulls from the remote, and plain prunes.
    spawn(&mut threads, |c, r| {
        if r % 2 == 0 {
            c.ostree("ostree pull", &["pull", "origin", "dev"]);
        } else {
            c.ostree("ostree prune", &["prune"]);
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    let failures = ctx.failures.lock().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The end state.
    assert_fsck_clean(&store);
    assert_arbor_fsck_clean(&store);
    let refs = arbor_repo_ok(&store, ["refs"]).stdout_str();
    for r in refs.lines() {
        let c = arbor_repo_ok(&store, ["rev-parse", r]).stdout_str();
        let c = c.trim();
        // Complete: ostree lists its whole tree and arbor checks it out.
        ostree_repo_ok(&store, ["ls", "-R", c]);
        let d = tmp
            .path()
            .join(format!("final-{}", r.replace(['/', ':'], "_")));
        arbor_repo_ok(&store, ["checkout", r, d.to_str().unwrap()]);
    }
    // Stages left (odd rounds) still commit.
    for r in (1..ROUNDS).step_by(2) {
        arbor_repo_ok(
            &store,
            ["stage", "commit", &format!("st{r}"), "-b", "final"],
        );
    }
    assert_fsck_clean(&store);
    // gc had work: artifacts were evicted.
    assert!(!refs.lines().any(|l| l == "work/0"), "{refs}");
}
