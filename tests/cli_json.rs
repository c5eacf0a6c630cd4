//! `--json` output (docs/json.md): every command's document is parsed and
//! compared exactly with what `ostree` says about the same repository (or,
//! for counts, with the object sets ostree lists).

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use pull_support::{commit_objects, of_type};
use serde_json::{Value, json};

const TS: u64 = 1_700_000_000;

#[track_caller]
fn parse(run: &Run) -> Value {
    serde_json::from_str(&run.stdout_str())
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", run.describe()))
}

/// `arbor --repo REPO ARGS… --json`, parsed.
#[track_caller]
fn arbor_json(repo: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    parse(&arbor_repo_ok(repo, &a))
}

/// The source tree: `/a` (0644, 6 bytes), `/link -> a`, `/d/f` (0755,
/// 3 bytes, with a user xattr).
fn build_src(dir: &Path) {
    make_dir(dir, 0o755);
    write_file(&dir.join("a"), b"alpha\n", 0o644);
    symlink("a", dir.join("link")).unwrap();
    make_dir(&dir.join("d"), 0o750);
    write_file(&dir.join("d/f"), b"fx\n", 0o755);
    set_xattr(&dir.join("d/f"), "user.tag", b"v1");
}

/// `ContentChecksum` of a commit, from `ostree log`.
fn ostree_content_checksum(repo: &Path, rev: &str) -> String {
    let out = ostree_repo_ok(repo, ["log", rev]).stdout_str();
    out.lines()
        .find_map(|l| l.strip_prefix("ContentChecksum:"))
        .unwrap()
        .trim()
        .to_string()
}

/// A commit as `log --json` and `show --json` describe it.
fn expected_commit(
    repo: &Path,
    c: &str,
    parent: Option<&str>,
    subject: &str,
    metadata: Value,
) -> serde_json::Map<String, Value> {
    let (tree, meta) = dir_checksums(repo, c, "/");
    let version = metadata.get("version").cloned().unwrap_or(Value::Null);
    let Value::Object(m) = json!({
        "checksum": c,
        "parent": parent,
        "timestamp": TS,
        "subject": subject,
        "body": "",
        "version": version,
        "content_checksum": ostree_content_checksum(repo, c),
        "root_tree": tree,
        "root_meta": meta,
        "related": [],
        "metadata": metadata,
    }) else {
        unreachable!()
    };
    m
}

#[test]
fn refs_log_and_show() {
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    build_src(&src);
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::BareUser);
    let c1 = ostree_commit(&repo, &src, "main", &CommitOpts::new("one", "", TS));
    let mut a = ostree_repo_ok(
        &repo,
        CommitOpts::new("two", "", TS)
            .meta("version", "2.0")
            .ostree_args(&src, "main"),
    )
    .stdout_str();
    a.truncate(64);
    let c2 = a;
    // Detached metadata, and a ref under a remote.
    ostree_repo_ok(
        &repo,
        [
            "commit",
            "--fsync=false",
            "--branch=other",
            &format!("--tree=ref={c2}"),
            "--subject=three",
            "--body=",
            &format!("--timestamp=@{TS}"),
            "--add-detached-metadata-string=note=hello",
            "--orphan",
        ],
    );
    let c3 = ostree_rev_parse(&repo, "other");
    ostree_repo_ok(&repo, ["refs", "--create=origin:os/x", &c1]);

    assert_eq!(
        arbor_json(&repo, &["refs"]),
        json!([
            {"ref": "main", "remote": null, "name": "main", "commit": c2},
            {"ref": "other", "remote": null, "name": "other", "commit": c3},
            {"ref": "origin:os/x", "remote": "origin", "name": "os/x", "commit": c1},
        ])
    );

    // ostree 2022.7 binds commits to their branch.
    let bound = |branch: &str, extra: Value| {
        let mut m = json!({"ostree.ref-binding": [branch]});
        if let Value::Object(e) = extra {
            m.as_object_mut().unwrap().extend(e);
        }
        m
    };
    let one = expected_commit(&repo, &c1, None, "one", bound("main", json!({})));
    let two = expected_commit(
        &repo,
        &c2,
        Some(&c1),
        "two",
        bound("main", json!({"version": "2.0"})),
    );
    assert_eq!(
        arbor_json(&repo, &["log", "main"]),
        json!({"commits": [two, one], "missing_parent": null})
    );

    // show: a commit (with its detached metadata), and each object type.
    let mut three = expected_commit(&repo, &c3, None, "three", bound("other", json!({})));
    three.insert("type".into(), json!("commit"));
    three.insert("detached_metadata".into(), json!({"note": "hello"}));
    three.insert("partial".into(), json!(false));
    assert_eq!(arbor_json(&repo, &["show", "other"]), Value::Object(three));
    assert_eq!(
        arbor_json(&repo, &["show", &format!("{c3}.commitmeta")]),
        json!({"type": "commitmeta", "checksum": c3, "metadata": {"note": "hello"}})
    );
    let (root_tree, root_meta) = dir_checksums(&repo, &c1, "/");
    let (d_tree, d_meta) = dir_checksums(&repo, &c1, "/d");
    let fa = file_checksum(&repo, &c1, "/a");
    let flink = file_checksum(&repo, &c1, "/link");
    let ff = file_checksum(&repo, &c1, "/d/f");
    assert_eq!(
        arbor_json(&repo, &["show", &format!("{root_tree}.dirtree")]),
        json!({
            "type": "dirtree",
            "checksum": root_tree,
            "files": [{"name": "a", "checksum": fa}, {"name": "link", "checksum": flink}],
            "dirs": [{"name": "d", "tree": d_tree, "meta": d_meta}],
        })
    );
    let (uid, gid) = (euid(), egid());
    assert_eq!(
        arbor_json(&repo, &["show", &format!("{d_meta}.dirmeta")]),
        json!({
            "type": "dirmeta", "checksum": d_meta,
            "uid": uid, "gid": gid, "mode": 0o40750, "xattrs": [],
        })
    );
    assert_eq!(
        arbor_json(&repo, &["show", &format!("{ff}.file")]),
        json!({
            "type": "file", "checksum": ff, "uid": uid, "gid": gid,
            "mode": 0o100755, "size": 3, "symlink_target": null,
            "xattrs": [{"name": "user.tag", "value": "7631"}],
        })
    );
    assert_eq!(
        arbor_json(&repo, &["show", &format!("{flink}.file")]),
        json!({
            "type": "file", "checksum": flink, "uid": uid, "gid": gid,
            "mode": 0o120777, "size": 0, "symlink_target": "a", "xattrs": [],
        })
    );
    let _ = root_meta;

    // A history whose older commit was not fetched.
    let store = tmp.path().join("store");
    arbor_init(&store, Mode::BareUser);
    arbor_repo_ok(&store, ["pull", repo.to_str().unwrap(), "main", "--quiet"]);
    let log = arbor_json(&store, &["log", "main"]);
    assert_eq!(log, json!({"commits": [two], "missing_parent": c1}));
}

#[test]
fn remotes_pull_checkout_and_fsck() {
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    build_src(&src);
    let origin = tmp.path().join("origin");
    ostree_init(&origin, Mode::Archive);
    let c = ostree_commit(&origin, &src, "os/main", &CommitOpts::new("s", "", TS));
    let store = tmp.path().join("store");
    arbor_init(&store, Mode::BareUser);
    let url = format!("file://{}", origin.display());
    arbor_repo_ok(
        &store,
        ["remote", "add", "origin", &url, "--no-sign-verify"],
    );
    arbor_repo_ok(&store, ["remote", "add", "b", "https://example.invalid/r"]);

    assert_eq!(
        arbor_json(&store, &["remote", "list"]),
        // In the config's order, as the text output.
        json!([
            {"name": "origin", "url": url},
            {"name": "b", "url": "https://example.invalid/r"},
        ])
    );
    assert_eq!(
        arbor_json(&store, &["remote", "refs", "origin"]),
        json!([{"ref": "origin:os/main", "remote": "origin", "name": "os/main", "commit": c}])
    );

    // pull: counts from the object set ostree lists for the commit.
    let objects = commit_objects(&origin, &c);
    let metadata = objects.len() - of_type(&objects, "file").len();
    let mut pulled = arbor_json(&store, &["pull", "origin", "os/main"]);
    let elapsed = pulled
        .as_object_mut()
        .unwrap()
        .remove("elapsed_seconds")
        .unwrap();
    assert!(elapsed.as_f64().is_some_and(|s| s >= 0.0), "{elapsed}");
    let bytes = pulled["bytes_transferred"].as_u64().unwrap();
    assert!(bytes > 0);
    assert_eq!(
        pulled,
        json!({
            "refs": [{"ref": "origin:os/main", "remote": "origin", "name": "os/main", "commit": c}],
            "metadata_fetched": metadata,
            "content_fetched": of_type(&objects, "file").len(),
            "from_cache": 0,
            "already_present": 0,
            "cache_rejected": 0,
            "deltas": [],
            "bytes_transferred": bytes,
        })
    );
    // Again: everything is there; the ref is reported all the same.
    let mut again = arbor_json(&store, &["pull", "origin", "os/main"]);
    again.as_object_mut().unwrap().remove("elapsed_seconds");
    assert_eq!(again["refs"], pulled["refs"]);
    assert_eq!(again["content_fetched"], 0);

    // checkout, copied: every count is known.
    let dest = tmp.path().join("co");
    let o = arbor_json(
        &store,
        &[
            "checkout",
            "--link",
            "copy",
            "origin:os/main",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o,
        json!({
            "commit": c, "dest": dest.to_str().unwrap(),
            "method": "copy", "method_reason": "copying was asked for",
            "dirs": 2, "dirs_merged": 0, "files": 2, "symlinks": 1,
            "hardlinked": 0, "reflinked": 0, "copied": 3,
            "kept": 0, "replaced": 0, "whiteouts": 0, "bytes_copied": 9,
            "overlay_xattrs_dropped": [],
        })
    );
    // A union-add over it keeps everything.
    let o = arbor_json(
        &store,
        &[
            "checkout",
            "--union-add",
            "origin:os/main",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(
        (&o["dirs_merged"], &o["kept"], &o["files"]),
        (&json!(2), &json!(3), &json!(0))
    );

    // fsck: clean, then one corrupt object.
    let n_objects = list_objects(&store).len();
    let clean = arbor_json(&store, &["fsck"]);
    assert_eq!(
        clean,
        json!({"objects_checked": n_objects, "commits_checked": 1, "partial_commits": 0, "problems": []})
    );
    let fa = file_checksum(&origin, &c, "/a");
    fs::write(object_path(&store, &fa, "file"), b"ALPHA\n").unwrap();
    let r = arbor_repo(&store, ["fsck", "--json"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    let report = parse(&r);
    let problems = report["problems"].as_array().unwrap();
    let objects: BTreeSet<&str> = problems
        .iter()
        .map(|p| p["object"].as_str().unwrap_or("-"))
        .collect();
    assert!(
        objects.contains(format!("{fa}.file").as_str()),
        "{report:#}"
    );
    assert!(problems.iter().all(|p| p["message"].is_string()));
}

#[test]
fn stage_list() {
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    build_src(&src);
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::BareUser);
    let c = arbor_commit(&repo, &src, "main", &CommitOpts::new("s", "", TS));
    assert_eq!(arbor_json(&repo, &["stage", "list"]), json!([]));
    let root = arbor_repo_ok(
        &repo,
        ["stage", "create", "s1", "main", "--backend", "copy"],
    )
    .stdout_str()
    .trim()
    .to_string();
    let mut list = arbor_json(&repo, &["stage", "list"]);
    let upper = list[0]
        .as_object_mut()
        .unwrap()
        .remove("upper_bytes")
        .unwrap();
    assert!(upper.as_u64().is_some_and(|n| n > 0), "{upper}");
    assert_eq!(
        list,
        json!([{
            "name": "s1", "state": "ready", "backend": "copy",
            "layers": [c], "root": root,
        }])
    );
    arbor_repo_ok(&repo, ["stage", "destroy", "s1"]);
}

/// `deltas` in `pull --json`: one applied static delta, its counts as
/// `ostree static-delta show` gives them.
#[test]
fn pull_with_a_static_delta() {
    let tmp = shared_tempdir();
    let www = tmp.path().join("www");
    let origin = www.join("r");
    fs::create_dir_all(&www).unwrap();
    ostree_init(&origin, Mode::Archive);
    let src = tmp.path().join("src");
    build_src(&src);
    let c1 = ostree_commit(&origin, &src, "main", &CommitOpts::new("1", "", TS));
    write_file(&src.join("big"), &pseudo_random_bytes(50_000, 9), 0o644);
    write_file(&src.join("a"), b"alpha, again\n", 0o644);
    let c2 = ostree_commit(
        &origin,
        &src,
        "main",
        &CommitOpts::new("2", "", TS + 1).parent(&c1),
    );
    ostree_repo_ok(
        &origin,
        [
            "static-delta",
            "generate",
            &format!("--from={c1}"),
            &format!("--to={c2}"),
        ],
    );
    pull_support::ostree_summary_update(&origin);
    let show =
        ostree_repo_ok(&origin, ["static-delta", "show", &format!("{c1}-{c2}")]).stdout_str();
    let field = |key: &str| -> u64 {
        show.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {show}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(field("Number of parts:"), 1, "{show}");
    assert_eq!(field("Number of fallback entries:"), 0, "{show}");
    let meta = show
        .lines()
        .find_map(|l| l.strip_prefix("PartMeta0: "))
        .unwrap();
    let kv = |k: &str| -> u64 {
        meta.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };

    let nginx = pull_support::Nginx::start(&www);
    let store = tmp.path().join("store");
    arbor_init(&store, Mode::BareUser);
    let url = nginx.url("r");
    arbor_repo_ok(&store, ["pull", &url, &format!("main@{c1}"), "--quiet"]);
    let mut o = arbor_json(&store, &["pull", &url, "main"]);
    let obj = o.as_object_mut().unwrap();
    obj.remove("elapsed_seconds").unwrap();
    obj.remove("bytes_transferred").unwrap();
    assert_eq!(
        o["deltas"],
        json!([{
            "from": c1, "to": c2,
            "parts_applied": 1, "parts_skipped": 0,
            "objects_written": kv("nobjects"), "objects_present": 0,
            "part_bytes": kv("size"), "fallback_objects": 0,
        }]),
        "{show}"
    );
    assert_eq!(
        o["refs"],
        json!([{"ref": "main", "remote": null, "name": "main", "commit": c2}])
    );
    pull_support::assert_fsck_clean(&store);
}
