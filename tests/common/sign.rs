//! Helpers shared by the signature suites (`tests/pull_gpg.rs`,
//! `tests/pull_ed25519.rs`), included with
//! `#[path = "common/sign.rs"] mod sign_support;` next to `mod common;`
//! and `mod pull_support;`, which these helpers build on.
//!
//! Both suites serve the same layout: `www/repo`, an archive repository
//! without a summary holding one commit of the small tree per ref, and
//! copies of it with a signed summary (`www/sum` signed by a trusted key,
//! `www/badsum` by another), and check the same outcomes: a verified pull,
//! a refusal that fetched nothing of the tree, summary verification.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::pull_support::*;

/// The repository a signature suite serves, under `scratch_dir(name)`.
pub struct SourceRepo {
    /// `scratch_dir(name)`, for the suite's other files.
    pub base: PathBuf,
    /// The nginx document root.
    pub www: PathBuf,
    /// `www/repo`: archive, no summary.
    pub repo: PathBuf,
    /// The small tree every commit holds.
    pub tree: PathBuf,
}

impl SourceRepo {
    pub fn new(name: &str) -> SourceRepo {
        let base = scratch_dir(name);
        let www = base.join("www");
        let repo = www.join("repo");
        std::fs::create_dir_all(&www).unwrap();
        ostree_init(&repo, Mode::Archive);
        let tree = base.join("tree");
        build_small_tree(&tree);
        SourceRepo {
            base,
            www,
            repo,
            tree,
        }
    }

    /// `ostree commit` of the tree on `branch`, with `extra` options (e.g.
    /// `--gpg-sign`); returns the commit.
    pub fn commit(&self, branch: &str, extra: &[String]) -> String {
        let mut args = CommitOpts::new(branch, "", TS).ostree_args(&self.tree, branch);
        args.extend(extra.iter().map(OsString::from));
        ostree_repo_ok(&self.repo, args)
            .stdout_str()
            .trim()
            .to_string()
    }

    /// A copy of the repository at `www/DIR` with a summary made by
    /// `ostree summary -u EXTRA...`; returns its path.
    pub fn copy_with_summary(&self, dir: &str, extra: &[String]) -> PathBuf {
        let copy = self.www.join(dir);
        copy_tree(&self.repo, &copy);
        let mut args = vec!["summary".to_string(), "-u".into()];
        args.extend_from_slice(extra);
        ostree_repo_ok(&copy, args);
        copy
    }
}

/// `origin BRANCH` pulls into `store` and the commit arrives verified and
/// complete: the remote ref names it, its detached metadata (the
/// signatures) is stored, it is not marked partial, `ostree fsck` passes.
#[track_caller]
pub fn assert_verified_pull(store: &Path, branch: &str, commit: &str) {
    pull_ok(store, &["origin", branch]);
    assert_eq!(
        read_ref(store, &format!("remotes/origin/{branch}")).as_deref(),
        Some(commit)
    );
    assert!(object_path(store, commit, "commitmeta").is_file());
    assert!(!is_partial(store, commit));
    assert_fsck_clean(store);
}

/// A fresh store whose `origin` is `url`, added with `opts`, refuses
/// `origin BRANCH`: see [`assert_refused`] (`commit` and the remote named,
/// with `also`; no ref written, the commit not stored).
#[track_caller]
pub fn assert_origin_refuses(url: &str, opts: &[&str], branch: &str, commit: &str, also: &[&str]) {
    let (_t, store) = store_with_origin(url, opts);
    let r = pull(&store, &["origin", branch]);
    assert_refused(&store, r, branch, commit, "origin", also);
}

/// Verification holds for commits already in the store: after `origin
/// BRANCH` was refused, the commit is pulled through a remote `plain` at
/// `url` that does not verify (added with `plain_opt`), and `origin
/// BRANCH` is still refused, naming `why`, its ref not written.
#[track_caller]
pub fn assert_refused_although_present(
    store: &Path,
    url: &str,
    plain_opt: &str,
    branch: &str,
    why: &str,
) {
    add_remote(store, "plain", url, &[plain_opt]);
    pull_ok(store, &["plain", branch]);
    let r = pull(store, &["origin", branch]).assert_clean_failure();
    assert!(r.stderr_str().contains(why), "{}", r.describe());
    assert_eq!(read_ref(store, &format!("remotes/origin/{branch}")), None);
}

/// With `opts` (a trusted key and summary verification on): through
/// `www/sum` (summary signed by the trusted key) `origin signed` pulls and
/// `remote refs` lists it; through `www/badsum` (signed by another key)
/// the pull fails naming the summary and `key` (the key that signed, or
/// the trusted one that was tried), writes no ref, and `remote refs`
/// fails.
#[track_caller]
pub fn assert_summary_verified(nginx: &Nginx, opts: &[&str], key: &str) {
    let (_t, store) = store_with_origin(&nginx.url("sum"), opts);
    pull_ok(&store, &["origin", "signed"]);
    let refs = arbor_repo_ok(&store, ["remote", "refs", "origin"]).stdout_str();
    assert!(refs.contains("origin:signed"), "{refs}");

    let (_t2, s2) = store_with_origin(&nginx.url("badsum"), opts);
    let r = pull(&s2, &["origin", "signed"]).assert_clean_failure();
    let err = r.stderr_str();
    assert!(
        err.contains("summary of remote \"origin\"") && err.contains(key),
        "{}",
        r.describe()
    );
    assert_eq!(read_ref(&s2, "remotes/origin/signed"), None);
    arbor_repo(&s2, ["remote", "refs", "origin"]).assert_clean_failure();
}

/// A fresh store whose `origin` is `url`, added with `opts`, fails to pull
/// `origin BRANCH` cleanly, with every one of `msgs` in the error; returns
/// the store for further checks.
#[track_caller]
pub fn assert_origin_pull_fails(
    url: &str,
    opts: &[&str],
    branch: &str,
    msgs: &[&str],
) -> (tempfile::TempDir, PathBuf) {
    let (t, store) = store_with_origin(url, opts);
    let r = pull(&store, &["origin", branch]).assert_clean_failure();
    for m in msgs {
        assert!(r.stderr_str().contains(m), "{m:?}\n{}", r.describe());
    }
    (t, store)
}
