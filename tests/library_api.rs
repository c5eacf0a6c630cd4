//! The library used directly, as another program would: options in,
//! outcomes out, progress through `Progress`, cancellation through the
//! interrupt flag; no command line involved.
//!
//! * a pull over nginx whose progress reporter sets the interrupt flag half
//!   way: it stops with `Interrupted`, moves no ref, and a second pull
//!   requests exactly the objects the first did not store; the result
//!   passes `ostree fsck`;
//! * a checkout, a commit, fsck and a stage build (create, write a file in
//!   the root, commit) through the API, with the progress each reports;
//! * a remote with `gpg-verify=true` refuses an unsigned commit without the
//!   caller configuring any verification.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use arbor::checkout::{CheckoutOptions, LinkMode, checkout};
use arbor::ostree::Checksum;
use arbor::progress::{Event, NoProgress, Phase};
use arbor::pull::{
    OpenedSource, PullError, PullOptions, PullSource, PullTarget, SignatureError, pull, pull_from,
};
use arbor::stage::{BackendChoice, CreateOptions, Stages};
use arbor::store::commit::{CommitOptions, commit};
use arbor::store::fsck::{FsckOptions, fsck};
use arbor::store::remotes::AddRemote;
use arbor::store::{RefName, Repo, RepoMode};
use common::*;
use pull_support::*;

/// One event as recorded: phase, kind, done, total.
type Row = (Phase, &'static str, u64, Option<u64>);

/// What a reporter saw, in order.
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<Row>>,
}

impl Seen {
    fn record(&self, e: &Event<'_>) {
        let row = match *e {
            Event::Start { phase, total } => (phase, "start", 0, total),
            Event::Advance {
                phase, done, total, ..
            } => (phase, "advance", done, total),
            Event::Finish { phase } => (phase, "finish", 0, None),
            _ => return,
        };
        self.events.lock().unwrap().push(row);
    }

    /// Kinds of event seen for `phase`, in order, with repeats of
    /// "advance" collapsed; and the last advance's (done, total).
    fn shape(&self, phase: Phase) -> (Vec<&'static str>, Option<(u64, Option<u64>)>) {
        let events = self.events.lock().unwrap();
        let mut kinds: Vec<&'static str> = Vec::new();
        let mut last = None;
        for (p, kind, done, total) in events.iter().filter(|r| r.0 == phase) {
            let _ = p;
            if kinds.last() != Some(kind) {
                kinds.push(kind);
            }
            if *kind == "advance" {
                last = Some((*done, *total));
            }
        }
        (kinds, last)
    }
}

fn hex(c: &str) -> Checksum {
    Checksum::from_hex(c).unwrap()
}

/// `www/r`: an archive repository with `main`, a medium tree.
fn served_repo(base: &Path) -> (std::path::PathBuf, String) {
    let www = base.join("www");
    let repo = www.join("r");
    std::fs::create_dir_all(&www).unwrap();
    ostree_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    build_medium_tree(&tree, 8, 300, 7);
    let c = ostree_commit(&repo, &tree, "main", &CommitOpts::new("m", "", TS));
    ostree_summary_update(&repo);
    (www, c)
}

#[test]
fn pull_interrupted_by_its_reporter_then_resumed() {
    let tmp = shared_tempdir();
    let (www, c) = served_repo(tmp.path());
    let nginx = Nginx::start(&www);
    let url = nginx.url("r");
    let store_path = tmp.path().join("store");
    let repo = Repo::init(&store_path, RepoMode::BareUser).unwrap();
    let all = commit_objects(&www.join("r"), &c);

    let opts = PullOptions {
        targets: vec!["main".parse::<PullTarget>().unwrap()],
        jobs: 4,
        ..PullOptions::default()
    };
    let source = PullSource::parse(&repo, &url).unwrap();
    assert_eq!(source, PullSource::Url(url.clone()));
    // Half way through the objects, the reporter asks the pull to stop.
    let interrupt = AtomicBool::new(false);
    let seen = Seen::default();
    let half = all.len() as u64 / 2;
    let reporter = |e: Event<'_>| {
        seen.record(&e);
        if let Event::Advance {
            phase: Phase::Fetch,
            done,
            ..
        } = e
            && done >= half
        {
            interrupt.store(true, Ordering::Relaxed);
        }
    };
    let mark = nginx.mark();
    let e = pull(&repo, &source, &opts, &reporter, &interrupt).unwrap_err();
    assert!(matches!(e, PullError::Interrupted), "{e:?}");
    let (kinds, last) = seen.shape(Phase::Fetch);
    assert_eq!(kinds[..2], ["start", "advance"], "{kinds:?}");
    let (done, _) = last.unwrap();
    assert!(done >= half && done < all.len() as u64, "stopped at {done}");
    let first = nginx.requests_since(mark);
    assert!(
        requested_set(&first).len() < all.len(),
        "the interrupted pull requested everything"
    );
    // No ref moved; what is there is sound.
    assert_eq!(repo.list_refs().unwrap(), vec![]);
    assert_fsck_clean(&store_path);
    let kept = store_objects(&store_path);
    assert!(kept.len() as u64 >= half / 2, "only {} kept", kept.len());

    // Resumed: only the rest is requested.
    let mark = nginx.mark();
    let seen2 = Seen::default();
    let opened = OpenedSource::open(&repo, &source, &opts).unwrap();
    let outcome = pull_from(
        &repo,
        &opened,
        &opts,
        &|e: Event<'_>| seen2.record(&e),
        &AtomicBool::new(false),
    )
    .unwrap();
    let second = nginx.requests_since(mark);
    assert_no_duplicate_requests(&second);
    let rest: BTreeSet<String> = all.difference(&kept).cloned().collect();
    assert_set_eq(
        &requested_set(&second),
        &rest,
        "objects the resumed pull requested",
    );
    assert_eq!(outcome.refs, vec![(RefName::Head("main".into()), hex(&c))]);
    assert_eq!(
        (outcome.metadata_fetched + outcome.content_fetched) as usize,
        rest.len()
    );
    let (kinds, _) = seen2.shape(Phase::Fetch);
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"finish"));
    assert_set_eq(&store_objects(&store_path), &all, "objects in the store");
    assert_fsck_clean(&store_path);
}

#[test]
fn checkout_commit_fsck_and_stage_build() {
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let files = regular_file_paths(&src).len() as u64;
    let repo_path = tmp.path().join("repo");
    let repo = Repo::init(&repo_path, RepoMode::BareUser).unwrap();
    let never = AtomicBool::new(false);

    // commit
    let seen = Seen::default();
    let mut copts = CommitOptions::new(RefName::Head("base".into()));
    copts.subject = "base".into();
    copts.timestamp = Some(TS);
    let base = commit(&repo, &src, &copts, &|e: Event<'_>| seen.record(&e), &never).unwrap();
    assert_eq!(base.parent, None);
    assert_eq!(
        ostree_rev_parse(&repo_path, "base"),
        base.commit.to_hex(),
        "ostree sees the new branch"
    );
    let (kinds, _) = seen.shape(Phase::Commit);
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"finish"));

    // checkout, copied: what ostree makes of the same commit.
    let seen = Seen::default();
    let mut opts = CheckoutOptions::new(base.commit);
    opts.link = LinkMode::Copy;
    opts.user_mode = true;
    let dest = tmp.path().join("co");
    let o = checkout(&repo, &dest, &opts, &|e: Event<'_>| seen.record(&e), &never).unwrap();
    assert_eq!(o.files, files);
    assert_eq!(o.hardlinked + o.reflinked, 0);
    assert!(o.overlay_xattrs_dropped.is_empty());
    // Progress counts every entry placed: files and symlinks.
    let placed = o.files + o.symlinks;
    assert_eq!(
        seen.shape(Phase::Checkout),
        (
            vec!["start", "advance", "finish"],
            Some((placed, Some(placed)))
        )
    );
    let oracle = tmp.path().join("oracle");
    ostree_repo_ok(
        &repo_path,
        [
            "checkout",
            "-U",
            "--force-copy",
            "base",
            oracle.to_str().unwrap(),
        ],
    );
    assert_manifest_eq(&manifest(&dest), &manifest(&oracle), "API checkout");

    // fsck
    let seen = Seen::default();
    let report = fsck(
        &repo,
        &FsckOptions::default(),
        &|e: Event<'_>| seen.record(&e),
        &never,
    )
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.commits_checked, 1);
    let n = list_objects(&repo_path).len() as u64;
    assert_eq!(report.objects_checked, n);
    assert_eq!(seen.shape(Phase::Fsck).0, ["start", "advance", "finish"]);

    // A stage build: create (a copy: no mounts needed), write, commit.
    let stages = Stages::open(&repo).unwrap();
    let seen = Seen::default();
    let created = stages
        .create(
            "build",
            &CreateOptions {
                layers: vec![base.commit],
                backend: BackendChoice::Copy,
                workdir: None,
                integrate: None,
            },
            &|e: Event<'_>| seen.record(&e),
            &never,
        )
        .unwrap();
    assert_eq!(
        seen.shape(Phase::StageCreate),
        (vec!["start", "advance", "finish"], Some((1, Some(1))))
    );
    write_file(
        &created.root.join("built-by-api"),
        b"made in a stage\n",
        0o644,
    );
    let mut sopts = CommitOptions::new(RefName::Head("built".into()));
    sopts.subject = "built".into();
    sopts.timestamp = Some(TS + 1);
    sopts.parent = arbor::store::commit::Parent::Commit(base.commit);
    let seen = Seen::default();
    let built = stages
        .commit("build", &sopts, &|e: Event<'_>| seen.record(&e), &never)
        .unwrap();
    assert_eq!(built.parent, Some(base.commit));
    let (kinds, _) = seen.shape(Phase::StageCommit);
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"finish"));
    stages.destroy("build").unwrap();
    // ostree reads the result: the base tree plus the new file.
    let out = ostree_repo_ok(&repo_path, ["cat", "built", "/built-by-api"]).stdout_str();
    assert_eq!(out, "made in a stage\n");
    let expected = tmp.path().join("expected");
    copy_tree(&oracle, &expected);
    write_file(&expected.join("built-by-api"), b"made in a stage\n", 0o644);
    let got = tmp.path().join("got");
    ostree_repo_ok(
        &repo_path,
        [
            "checkout",
            "-U",
            "--force-copy",
            "built",
            got.to_str().unwrap(),
        ],
    );
    assert_manifest_eq(&manifest(&got), &manifest(&expected), "the stage's commit");
    ostree_repo_ok(&repo_path, ["fsck"]);
}

#[test]
fn gpg_verify_remote_refuses_unsigned_commits_by_default() {
    let tmp = shared_tempdir();
    let (www, c) = served_repo(tmp.path());
    let nginx = Nginx::start(&www);
    let store_path = tmp.path().join("store");
    let mut repo = Repo::init(&store_path, RepoMode::BareUser).unwrap();
    // As `ostree remote add` writes it: gpg-verify defaults to true.
    repo.add_remote(
        "origin",
        &nginx.url("r"),
        &AddRemote {
            gpg_verify: true,
            sign_verify: true,
            settings: vec![],
            sign_specs: vec![],
        },
    )
    .unwrap();
    let source = PullSource::parse(&repo, "origin").unwrap();
    assert_eq!(source, PullSource::Remote("origin".into()));
    // Default options: the caller configures no verification at all.
    let opts = PullOptions {
        targets: vec!["main".parse().unwrap()],
        ..PullOptions::default()
    };
    let e = pull(&repo, &source, &opts, &NoProgress, &AtomicBool::new(false)).unwrap_err();
    match &e {
        PullError::CommitSignature {
            commit,
            remote,
            source: SignatureError::Gpg(_),
        } => {
            assert_eq!(commit.to_hex(), c);
            assert_eq!(remote, "origin");
        }
        other => panic!("expected a GPG signature refusal, got {other:?}"),
    }
    assert_eq!(repo.list_refs().unwrap(), vec![]);
    // Nothing of the tree was requested: the commit is checked first.
    let trees = nginx
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(".dirtree") || r.path.ends_with(".filez"))
        .count();
    assert_eq!(trees, 0);
}
