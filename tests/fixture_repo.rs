//! The shipped archive-mode fixture (tests/fixtures/archive-repo, generated
//! by tests/fixtures/make-fixtures.sh with the real ostree) is still a valid
//! ostree repository, and arbor reads it exactly like ostree does.
//!
//! Tests always work on a copy: ostree and arbor may create `.lock`,
//! `tmp/` entries or `state/` files in a repository they open.

mod common;

use std::fs;

use common::*;

/// main (second commit) and main^ (first commit), printed by the script.
const C2: &str = "61d42b64fa046b30bcb3c06b6106ae6f04c92233d56cb8e8b9ab09cffae9fbca";
const C1: &str = "8ed0fc3c1891602f8bc72a6b19318e106063799d6d61a771b4cc34320f49be00";

fn copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    copy_fixture(&repo);
    (tmp, repo)
}

#[test]
fn fixture_is_shipped() {
    let f = fixture_repo();
    assert_eq!(
        fs::read_to_string(f.join("refs/heads/main")).unwrap(),
        format!("{C2}\n")
    );
    assert!(f.join("summary").is_file(), "fixture summary missing");
    assert!(object_path(&f, C1, "commit").is_file());
    assert!(object_path(&f, C2, "commit").is_file());
    assert!(
        !f.join(".lock").exists(),
        "the fixture was opened in place (stray .lock)"
    );
    let total: u64 = walk_sizes(&f);
    assert!(
        total < 100 * 1024,
        "fixture is {total} bytes, keep it small"
    );
}

fn walk_sizes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        n += if md.is_dir() {
            walk_sizes(&e.path())
        } else {
            md.len()
        };
    }
    n
}

#[test]
fn fixture_passes_ostree_fsck() {
    let (_tmp, repo) = copy();
    ostree_repo_ok(&repo, ["fsck"]);
    assert_eq!(ostree_rev_parse(&repo, "main"), C2);
    assert_eq!(ostree_rev_parse(&repo, "main^"), C1);
    let m = ostree_repo_ok(&repo, ["config", "get", "core.mode"]).stdout_str();
    assert_eq!(m.trim(), "archive-z2");
    let summary = ostree_repo_ok(&repo, ["summary", "-v"]).stdout_str();
    assert!(summary.contains(C2), "summary lists main:\n{summary}");
}

#[test]
fn arbor_reads_fixture_refs_and_history() {
    let (_tmp, repo) = copy();
    assert_eq!(arbor_repo_ok(&repo, ["refs"]).stdout_str(), "main\n");
    assert_eq!(
        arbor_repo_ok(&repo, ["rev-parse", "main"]).stdout_str(),
        format!("{C2}\n")
    );
    assert_eq!(
        arbor_repo_ok(&repo, ["rev-parse", "main^"]).stdout_str(),
        format!("{C1}\n")
    );
    arbor_repo(&repo, ["rev-parse", "main^^"]).assert_clean_failure();
    let log = arbor_repo_ok(&repo, ["log", "main"]).stdout_str();
    let commits: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("commit "))
        .collect();
    assert_eq!(commits, [C2, C1], "log:\n{log}");
    assert!(log.contains("Second fixture commit") && log.contains("Initial fixture commit"));
    let show = arbor_repo_ok(&repo, ["show", "main"]).stdout_str();
    assert!(
        show.contains(C2) && show.contains("Second fixture commit"),
        "show:\n{show}"
    );
}

#[test]
fn arbor_ls_and_cat_match_ostree_on_fixture() {
    let (_tmp, repo) = copy();
    for rev in ["main", "main^"] {
        for flags in [&["-R"][..], &["-R", "-C"]] {
            let mut o = vec!["ls"];
            o.extend_from_slice(flags);
            o.push(rev);
            let mut a = vec!["ls", rev];
            a.extend_from_slice(flags);
            let expected = ostree_repo_ok(&repo, &o);
            let actual = arbor_repo_ok(&repo, &a);
            assert_bytes_eq(
                &actual.stdout,
                &expected.stdout,
                &format!("ls {rev} {flags:?}"),
            );
        }
    }
    let cat = |rev: &str, path: &str| arbor_repo_ok(&repo, ["cat", rev, path]).stdout;
    assert_eq!(
        cat("main", "/README.txt"),
        b"Hello from the arbor fixture, second edition.\n"
    );
    assert_eq!(
        cat("main^", "/README.txt"),
        b"Hello from the arbor fixture.\n"
    );
    let numbers: String = (1..=200).map(|i| format!("{i}\n")).collect();
    assert_eq!(cat("main", "/data/numbers.txt"), numbers.as_bytes());
    assert_eq!(cat("main", "/bin/tool"), b"#!/bin/sh\necho tool\n");
    assert_eq!(cat("main^", "/etc/empty"), b"");
    assert_eq!(cat("main", "/etc/app/config.ini"), b"[app]\nname=fixture\n");
    arbor_repo(&repo, ["cat", "main", "/etc/empty"]).assert_clean_failure();
}

#[test]
fn arbor_fsck_accepts_fixture() {
    let (_tmp, repo) = copy();
    let r = arbor_repo(&repo, ["fsck"]);
    assert!(
        r.success(),
        "arbor fsck failed on the ostree-made fixture\n{}",
        r.describe()
    );
}
