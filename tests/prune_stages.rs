//! Prune and gc never break a stage: its layers and the merged tree its
//! commits build on stay while it exists, even when no ref names them, and
//! its next commit works; once it is destroyed they go like anything else.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::Path;

use common::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

const TS: u64 = 1_700_000_000;

fn layer(dir: &Path, n: u64) -> std::path::PathBuf {
    let src = dir.join(format!("layer{n}"));
    make_dir(&src, 0o755);
    make_dir(&src.join("etc"), 0o755);
    write_file(
        &src.join(format!("etc/l{n}.conf")),
        format!("layer {n}\n").as_bytes(),
        0o644,
    );
    write_file(
        &src.join(format!("data{n}")),
        &pseudo_random_bytes(30_000, 2 * n + 1),
        0o644,
    );
    src
}

fn commits(repo: &Path) -> Vec<String> {
    list_objects(repo)
        .into_iter()
        .filter_map(|o| {
            let (d, rest) = o.split_once('/')?;
            Some(format!("{d}{}", rest.strip_suffix(".commit")?))
        })
        .collect()
}

#[test]
fn stages_pin_their_layers_and_base() {
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    let l1 = arbor_commit(&repo, &layer(dir, 1), "l1", &CommitOpts::new("l1", "", TS));
    let l2 = arbor_commit(
        &repo,
        &layer(dir, 2),
        "l2",
        &CommitOpts::new("l2", "", TS + 1),
    );
    // A union stage: its commits build on the layers' merged tree, which
    // it remembers (`base`) and no commit or ref names.
    arbor_repo_ok(
        &repo,
        ["stage", "create", "s", "l1", "l2", "--backend", "overlay"],
    );
    let root = arbor_repo_ok(&repo, ["stage", "path", "s"]).stdout_str();
    let root = Path::new(root.trim()).to_path_buf();
    write_file(&root.join("new1"), b"one\n", 0o644);
    arbor_repo_ok(
        &repo,
        ["stage", "commit", "s", "-b", "out", "--timestamp", "0"],
    );

    // Nothing names the layers or the stage's commit any more.
    arbor_repo_ok(&repo, ["refs", "--delete", "l1", "l2", "out"]);
    arbor_repo_ok(&repo, ["prune", "--refs-only", "--depth=0"]);
    let left = commits(&repo);
    assert!(left.contains(&l1) && left.contains(&l2), "{left:?}");
    let base_file = repo.join("extensions/arbor/stages/s/base");
    let base = std::fs::read_to_string(&base_file).unwrap();
    let mut it = base.split_whitespace();
    let (t, m) = (it.next().unwrap(), it.next().unwrap());
    assert!(
        object_path(&repo, t, "dirtree").exists(),
        "base tree pruned"
    );
    assert!(
        object_path(&repo, m, "dirmeta").exists(),
        "base meta pruned"
    );
    assert_fsck_clean(&repo);
    assert_arbor_fsck_clean(&repo);

    // The stage goes on: another change, another commit, all there.
    write_file(&root.join("new2"), b"two\n", 0o644);
    let c = arbor_repo_ok(
        &repo,
        ["stage", "commit", "s", "-b", "out2", "--timestamp", "0"],
    )
    .stdout_str();
    let co = dir.join("co");
    arbor_repo_ok(&repo, ["checkout", c.trim(), co.to_str().unwrap()]);
    for f in [
        "new1",
        "new2",
        "data1",
        "data2",
        "etc/l1.conf",
        "etc/l2.conf",
    ] {
        assert!(co.join(f).exists(), "{f} missing from the stage's commit");
    }
    assert_fsck_clean(&repo);

    // Destroyed, the stage pins nothing: its layers go, and gc removes
    // its cached checkouts.
    arbor_repo_ok(&repo, ["stage", "destroy", "s"]);
    arbor_repo_ok(&repo, ["refs", "--delete", "out2"]);
    arbor_repo_ok(&repo, ["prune", "--refs-only"]);
    assert!(commits(&repo).is_empty(), "{:?}", commits(&repo));
    let r = arbor_repo_ok(&repo, ["gc", "--max-size", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["cache_evicted"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        std::fs::read_dir(repo.join("extensions/arbor/checkouts"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_fsck_clean(&repo);
}

/// The checkout cache's entries (`extensions/arbor/checkouts/C`).
fn cache_entries(repo: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo.join("extensions/arbor/checkouts"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A copy stage is checked out from its merged tree: it builds no cache
/// entry (one would never be used, and gc counted it in use while the
/// stage lived).
#[test]
fn copy_stages_build_no_cache_entries() {
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    arbor_commit(&repo, &layer(dir, 1), "l1", &CommitOpts::new("l1", "", TS));
    arbor_commit(
        &repo,
        &layer(dir, 2),
        "l2",
        &CommitOpts::new("l2", "", TS + 1),
    );
    arbor_repo_ok(
        &repo,
        ["stage", "create", "c", "l1", "l2", "--backend", "copy"],
    );
    assert_eq!(cache_entries(&repo), Vec::<String>::new());
    let root = arbor_repo_ok(&repo, ["stage", "path", "c"]).stdout_str();
    assert!(Path::new(root.trim()).join("etc/l2.conf").exists());
}

/// Removing a cache entry killed half way (between moving the entry away
/// and removing its sidecars), or an entry left without its sidecar by an
/// older arbor: the next stage over those commits builds it again.
#[test]
fn cache_entry_removal_killed_midway() {
    if !cfg!(feature = "failpoints") {
        panic!("crash points need the failpoints feature (scripts/test passes it)");
    }
    let tmp = tempdir();
    let dir = tmp.path();
    let repo = dir.join("repo");
    arbor_init(&repo, Mode::Bare);
    arbor_commit(&repo, &layer(dir, 1), "l1", &CommitOpts::new("l1", "", TS));
    arbor_commit(
        &repo,
        &layer(dir, 2),
        "l2",
        &CommitOpts::new("l2", "", TS + 1),
    );
    let create = |name: &str| {
        arbor_repo_ok(
            &repo,
            ["stage", "create", name, "l1", "l2", "--backend", "overlay"],
        );
        let root = arbor_repo_ok(&repo, ["stage", "path", name]).stdout_str();
        let root = Path::new(root.trim()).to_path_buf();
        for f in ["etc/l1.conf", "etc/l2.conf", "data1", "data2"] {
            assert!(root.join(f).exists(), "{name}: {f} missing");
        }
        arbor_repo_ok(&repo, ["stage", "destroy", name]);
    };
    create("s1");
    let entries = cache_entries(&repo);
    assert_eq!(entries.len(), 2);

    let mut gc = arbor_command();
    gc.env("FAILPOINTS", "stage-cache:remove=return")
        .arg("--repo")
        .arg(&repo)
        .args(["stage", "gc"]);
    let r = run(gc);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(r.status.signal(), Some(9), "{}", r.describe());
    create("s2");
    assert_eq!(cache_entries(&repo), entries);

    // What an interrupted removal of an older arbor left: `C` without
    // `C.wh`.
    let checkouts = repo.join("extensions/arbor/checkouts");
    std::fs::remove_file(checkouts.join(format!("{}.wh", entries[0]))).unwrap();
    create("s3");
    assert!(checkouts.join(format!("{}.wh", entries[0])).exists());
    assert_eq!(cache_entries(&repo), entries);
}

/// A live stage of either backend, whatever prunes and gcs run meanwhile:
/// gc evicts neither its layers' refs nor (overlay) the cached checkouts
/// it mounts; with the refs gone a refs-only prune keeps its layers and
/// base; its files stay readable (the overlay's lower layers are
/// hardlinks into the store's objects) and its next commit, which reuses
/// what the first one wrote, is complete.
/// Destroys a stage when dropped, so that a failing test leaves no mount.
struct Destroy<'a>(&'a Path, &'a str);

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let _ = arbor_repo(self.0, ["stage", "destroy", self.1]);
    }
}

#[test]
fn live_stages_survive_prune_and_gc() {
    for backend in ["overlay", "copy"] {
        let tmp = tempdir();
        let dir = tmp.path();
        let repo = dir.join("repo");
        arbor_init(&repo, Mode::Bare);
        let l1 = arbor_commit(&repo, &layer(dir, 1), "l1", &CommitOpts::new("l1", "", TS));
        let l2 = arbor_commit(
            &repo,
            &layer(dir, 2),
            "l2",
            &CommitOpts::new("l2", "", TS + 1),
        );
        arbor_repo_ok(
            &repo,
            ["stage", "create", "s", "l1", "l2", "--backend", backend],
        );
        let _destroy = Destroy(&repo, "s");
        let cached = cache_entries(&repo);
        assert_eq!(cached.len(), if backend == "overlay" { 2 } else { 0 });
        let root = arbor_repo_ok(&repo, ["stage", "path", "s"]).stdout_str();
        let root = Path::new(root.trim()).to_path_buf();
        write_file(&root.join("new"), b"new\n", 0o644);
        // The first commit remembers the merged tree (the base).
        arbor_repo_ok(
            &repo,
            ["stage", "commit", "s", "-b", "out0", "--timestamp", "0"],
        );

        let r = arbor_repo_ok(&repo, ["gc", "--max-size=1", "--evict=l", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(v["refs_evicted"], serde_json::json!([]), "{backend}: {v}");
        assert_eq!(v["cache_evicted"], serde_json::json!([]), "{backend}: {v}");
        assert_eq!(cache_entries(&repo), cached, "{backend}");

        arbor_repo_ok(&repo, ["refs", "--delete", "l1", "l2", "out0"]);
        arbor_repo_ok(&repo, ["prune", "--refs-only", "--depth=0"]);
        arbor_repo_ok(&repo, ["prune"]);
        let left = commits(&repo);
        assert!(
            left.contains(&l1) && left.contains(&l2),
            "{backend}: {left:?}"
        );
        if backend == "overlay" {
            // (A copy stage keeps an index of its files instead.)
            let base =
                std::fs::read_to_string(repo.join("extensions/arbor/stages/s/base")).unwrap();
            let t = base.split_whitespace().next().unwrap();
            assert!(object_path(&repo, t, "dirtree").exists(), "{backend}");
        }
        assert_eq!(
            std::fs::read(root.join("data1")).unwrap(),
            pseudo_random_bytes(30_000, 3),
            "{backend}"
        );
        assert_fsck_clean(&repo);
        assert_arbor_fsck_clean(&repo);

        write_file(&root.join("new2"), b"two\n", 0o644);
        let c = arbor_repo_ok(
            &repo,
            ["stage", "commit", "s", "-b", "out", "--timestamp", "0"],
        )
        .stdout_str();
        let co = dir.join("co");
        arbor_repo_ok(&repo, ["checkout", c.trim(), co.to_str().unwrap()]);
        for f in [
            "new",
            "new2",
            "data1",
            "data2",
            "etc/l1.conf",
            "etc/l2.conf",
        ] {
            assert!(
                co.join(f).exists(),
                "{backend}: {f} missing from the commit"
            );
        }
        assert_fsck_clean(&repo);
        assert_arbor_fsck_clean(&repo);
    }
}
