//! Prune and gc know every ref: many refs directories side by side are
//! all listed (a bound on pending directories once dropped refs past the
//! 64th), and a ref that cannot be read stops them instead of being
//! skipped (what it names would be deleted).

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;

use common::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

const TS: u64 = 1_700_000_000;

/// 100 refs `artifacts/aNNN/x86_64`, each on its own commit of one tree.
#[test]
fn hundred_ref_directories_are_all_roots() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::Archive);
    let tree = tmp.path().join("t");
    make_dir(&tree, 0o755);
    write_file(&tree.join("f"), b"artifact\n", 0o644);
    let mut expected = BTreeSet::new();
    for i in 0..100 {
        let name = format!("artifacts/a{i:03}/x86_64");
        ostree_commit(&repo, &tree, &name, &CommitOpts::new("a", "", TS + i));
        expected.insert(name);
    }
    let listed: BTreeSet<String> = arbor_repo_ok(&repo, ["refs"])
        .stdout_str()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(listed, expected);
    let r = arbor_repo_ok(&repo, ["prune", "--refs-only", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["deleted"].as_array().unwrap().len(), 0, "{v}");
    assert_fsck_clean(&repo);
    assert_arbor_fsck_clean(&repo);
}

/// A file in `refs/heads` whose name is no ref name: `arbor refs` ignores
/// it as `ostree refs` does, but prune and gc refuse to run and name it;
/// hidden files (leftovers of interrupted ref writes) are ignored.
#[test]
fn unreadable_ref_stops_prune_and_gc() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::Archive);
    let tree = tmp.path().join("t");
    make_dir(&tree, 0o755);
    write_file(&tree.join("f"), b"x\n", 0o644);
    let c = ostree_commit(&repo, &tree, "main", &CommitOpts::new("m", "", TS));
    let other = tmp.path().join("o");
    make_dir(&other, 0o755);
    write_file(&other.join("g"), b"held only by a badly named ref\n", 0o644);
    let held = ostree_commit(&repo, &other, "tmp", &CommitOpts::new("o", "", TS));
    std::fs::remove_file(repo.join("refs/heads/tmp")).unwrap();
    std::fs::write(repo.join("refs/heads/.main.tmp-1"), format!("{c}\n")).unwrap();
    std::fs::write(repo.join("refs/heads/bad name"), format!("{held}\n")).unwrap();

    assert_eq!(arbor_repo_ok(&repo, ["refs"]).stdout_str(), "main\n");
    for args in [
        &["prune", "--refs-only"][..],
        &["gc", "--max-size=1", "--evict=main"][..],
    ] {
        let r = arbor_repo(&repo, args);
        assert!(!r.success(), "{}", r.describe());
        assert!(r.stderr_str().contains("bad name"), "{}", r.describe());
    }
    assert!(object_path(&repo, &held, "commit").exists());
    std::fs::remove_file(repo.join("refs/heads/bad name")).unwrap();
    arbor_repo_ok(&repo, ["prune", "--refs-only"]);
    assert!(!object_path(&repo, &held, "commit").exists());
    assert!(object_path(&repo, &c, "commit").exists());
    assert_fsck_clean(&repo);
}
