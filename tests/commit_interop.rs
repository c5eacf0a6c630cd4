//! `arbor commit` must produce exactly the commit checksum `ostree commit`
//! produces for the same tree and options, in every repository mode.
//!
//! ostree side: `ostree --repo=R commit --branch=REF --tree=dir=DIR
//! --subject=S --body=B --timestamp=@N [--parent=P] [--owner-uid=N
//! --owner-gid=N] [--add-metadata-string=K=V]...` (2022.7 parses
//! `--timestamp` with gnulib parse_datetime, so `@SECONDS` works).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::net::UnixListener;
use std::path::Path;

use common::*;

/// Commits `dir` with both tools into fresh repos of `mode`, asserts equal
/// checksums and identical sets of loose objects, and returns the checksum.
fn both_commit(
    ostree_repo: &Path,
    arbor_repo: &Path,
    dir: &Path,
    branch: &str,
    opts: &CommitOpts,
) -> String {
    let expected = ostree_commit(ostree_repo, dir, branch, opts);
    let actual = arbor_commit(arbor_repo, dir, branch, opts);
    assert_eq!(
        actual, expected,
        "arbor commit checksum differs from ostree commit for the same tree and options {opts:?}"
    );
    expected
}

fn fresh_repos(tmp: &Path, mode: Mode) -> (std::path::PathBuf, std::path::PathBuf) {
    let o = tmp.join("ostree-repo");
    let a = tmp.join("arbor-repo");
    ostree_init(&o, mode);
    arbor_init(&a, mode);
    (o, a)
}

#[track_caller]
fn assert_same_objects(ostree_repo: &Path, arbor_repo: &Path) {
    let o = list_objects(ostree_repo);
    let a = list_objects(arbor_repo);
    if o != a {
        let missing: Vec<_> = o.difference(&a).take(20).collect();
        let extra: Vec<_> = a.difference(&o).take(20).collect();
        panic!(
            "loose objects differ from ostree's for the same commits\n  missing in arbor repo: {missing:?}\n  \
             unexpected in arbor repo: {extra:?}\n  ({} vs {} objects)",
            a.len(),
            o.len()
        );
    }
}

/// Parent of a commit as ostree reads it from arbor's repo ("" if none).
fn parent_of(repo: &Path, commit: &str) -> String {
    let r = ostree_repo(repo, ["rev-parse", &format!("{commit}^")]);
    if r.success() {
        r.stdout_str().trim().to_string()
    } else {
        assert!(
            r.stderr_str().contains("has no parent"),
            "unexpected rev-parse failure\n{}",
            r.describe()
        );
        String::new()
    }
}

// ---------------------------------------------------------------------------

/// The full edge tree, one commit, no parent.
fn edge_tree(mode: Mode) {
    let src = shared_edge_tree();
    let tmp = tempdir();
    let (o, a) = fresh_repos(tmp.path(), mode);
    let opts = CommitOpts::new(
        "Edge tree",
        "Edge-case tree\n\nwith a multi-line body",
        1_700_000_000,
    );
    let c = both_commit(&o, &a, &src.path, "main", &opts);
    assert_same_objects(&o, &a);
    assert_eq!(
        fs::read_to_string(a.join("refs/heads/main")).unwrap(),
        format!("{c}\n"),
        "refs/heads/main must contain the checksum and a newline"
    );
    // Committing must not modify the source tree.
    assert_manifest_eq(
        &manifest(&src.path),
        &src.manifest,
        "source tree after commit",
    );
}

/// Parents: default (current ref), explicit checksum, explicit `none`;
/// user metadata strings (order preserved, '=' in value, UTF-8 value).
fn parents_and_metadata(mode: Mode) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let (o, a) = fresh_repos(tmp.path(), mode);

    let c1 = both_commit(
        &o,
        &a,
        &src,
        "main",
        &CommitOpts::new("one", "first body", 1_600_000_000),
    );
    assert_eq!(parent_of(&a, &c1), "", "first commit must have no parent");

    // Default parent = current value of the ref.
    fs::write(src.join("README"), b"small tree, second version\n").unwrap();
    let c2 = both_commit(
        &o,
        &a,
        &src,
        "main",
        &CommitOpts::new("two", "", 1_600_000_100),
    );
    assert_eq!(
        parent_of(&a, &c2),
        c1,
        "default parent must be the ref's current commit"
    );

    // Explicit parent plus two metadata strings (keys deliberately unsorted).
    let opts3 = CommitOpts::new("three", "body 3", 1_600_000_200)
        .parent(&c1)
        .meta("zeta", "comes first")
        .meta("alpha", "v=with=equals and ünïcode");
    let c3 = both_commit(&o, &a, &src, "main", &opts3);
    assert_eq!(parent_of(&a, &c3), c1, "explicit --parent must be used");
    let meta = ostree_repo_ok(&a, ["show", "--print-metadata-key=zeta", &c3]).stdout_str();
    assert_eq!(meta.trim(), "'comes first'");
    let meta = ostree_repo_ok(&a, ["show", "--print-metadata-key=alpha", &c3]).stdout_str();
    assert_eq!(meta.trim(), "'v=with=equals and ünïcode'");
    let meta =
        ostree_repo_ok(&a, ["show", "--print-metadata-key=ostree.ref-binding", &c3]).stdout_str();
    assert_eq!(meta.trim(), "['main']");

    // Explicit `none` on a branch that already has commits.
    let c4 = both_commit(
        &o,
        &a,
        &src,
        "main",
        &CommitOpts::new("four", "b", 1_600_000_300).parent("none"),
    );
    assert_eq!(
        parent_of(&a, &c4),
        "",
        "--parent none must produce a root commit"
    );

    // A second branch in the same repo starts without a parent.
    let c5 = both_commit(
        &o,
        &a,
        &src,
        "other/branch",
        &CommitOpts::new("five", "b", 1_600_000_400),
    );
    assert_eq!(parent_of(&a, &c5), "");
    assert_eq!(ostree_rev_parse(&a, "main"), c4);
    assert_eq!(ostree_rev_parse(&a, "other/branch"), c5);

    assert_same_objects(&o, &a);
}

/// `--owner-uid/--owner-gid` override the ownership of every entry.
fn owner_override(mode: Mode) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let (o, a) = fresh_repos(tmp.path(), mode);
    let opts = CommitOpts::new("owned", "", 1_650_000_000).owner(4242, 4343);
    let c = both_commit(&o, &a, &src, "main", &opts);
    // Only uid or only gid.
    let mut only_uid = CommitOpts::new("uid only", "", 1_650_000_001).parent(&c);
    only_uid.owner_uid = Some(0);
    both_commit(&o, &a, &src, "main", &only_uid);
    let mut only_gid = CommitOpts::new("gid only", "", 1_650_000_002);
    only_gid.owner_gid = Some(777);
    both_commit(&o, &a, &src, "main", &only_gid);
    assert_same_objects(&o, &a);
}

per_mode!(edge_tree);
per_mode!(parents_and_metadata);
per_mode!(owner_override);

// ---------------------------------------------------------------------------
// Unsupported file types

fn assert_commit_rejects(special: &str, make: impl Fn(&Path)) {
    for mode in Mode::ALL {
        let tmp = tempdir();
        let src = tmp.path().join("src");
        build_small_tree(&src);
        make(&src.join("sub").join(special));
        let repo = tmp.path().join("repo");
        arbor_init(&repo, mode);
        let r = arbor_repo(
            &repo,
            CommitOpts::new("bad", "", 1).arbor_args(&src, "main"),
        )
        .assert_clean_failure();
        assert!(
            r.stderr_str().contains(special),
            "[{mode:?}] the error must name the offending path ({special})\n{}",
            r.describe()
        );
        assert!(
            !repo.join("refs/heads/main").exists(),
            "[{mode:?}] a failed commit must not create the ref"
        );
        // Sanity: ostree refuses it too.
        let o = tmp.path().join("ostree-repo");
        ostree_init(&o, mode);
        assert!(
            !ostree_repo(&o, CommitOpts::new("bad", "", 1).ostree_args(&src, "main")).success()
        );
    }
}

#[test]
fn commit_rejects_fifo() {
    assert_commit_rejects("myfifo", |p| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    });
}

#[test]
fn commit_rejects_device_node() {
    assert_commit_rejects("mydevice", |p| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path; /dev/null's numbers (1, 3).
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod");
    });
}

#[test]
fn commit_rejects_socket() {
    assert_commit_rejects("mysocket", |p| {
        let l = UnixListener::bind(p).expect("bind unix socket");
        std::mem::forget(l);
    });
}

/// Committing the same tree twice with identical options (explicit parent
/// none) yields the same checksum and does not add objects.
#[test]
fn commit_is_deterministic() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::BareUser);
    let opts = CommitOpts::new("same", "same", 1_234_567_890).parent("none");
    let c1 = arbor_commit(&repo, &src, "main", &opts);
    let before: BTreeSet<String> = list_objects(&repo);
    let c2 = arbor_commit(&repo, &src, "main", &opts);
    assert_eq!(c1, c2);
    assert_eq!(list_objects(&repo), before);
}
