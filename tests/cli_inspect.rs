//! Inspection commands (`refs`, `rev-parse`, `log`, `show`), `init`,
//! `ARBOR_REPO` and ref-name validation. History repositories are written by
//! the real `ostree` so that these tests do not depend on `arbor commit`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

/// ostree-written repo: main = c1 <- c2 <- c3, plus extra refs and a remote ref.
struct History {
    repo: PathBuf,
    c1: String,
    c2: String,
    c3: String,
}

const LOCAL_REFS: [&str; 6] = ["main", "a/b/c", "release/1.0", "Zed", "_under", "héllo"];

fn history() -> &'static History {
    static H: OnceLock<History> = OnceLock::new();
    H.get_or_init(|| {
        let base = scratch_dir("history");
        let src = base.join("src");
        build_small_tree(&src);
        let repo = base.join("repo");
        ostree_init(&repo, Mode::BareUser);
        let commit = |subject: &str, body: &str, timestamp: u64| {
            ostree_commit(
                &repo,
                &src,
                "main",
                &CommitOpts::new(subject, body, timestamp),
            )
        };
        let c1 = commit("first subject", "body one", 1_600_000_000);
        fs::write(src.join("README"), b"v2\n").unwrap();
        let c2 = commit("second subject", "", 1_600_000_100);
        fs::write(src.join("README"), b"v3\n").unwrap();
        let c3 = commit("third subject", "body three", 1_600_000_200);
        for (name, rev) in [
            ("a/b/c", &c2),
            ("release/1.0", &c1),
            ("Zed", &c3),
            ("_under", &c1),
            ("héllo", &c2),
        ] {
            ostree_repo_ok(&repo, ["refs", &format!("--create={name}"), rev]);
        }
        fs::create_dir_all(repo.join("refs/remotes/origin")).unwrap();
        fs::write(repo.join("refs/remotes/origin/main"), format!("{c2}\n")).unwrap();
        History { repo, c1, c2, c3 }
    })
}

#[track_caller]
fn rev_parse(repo: &Path, rev: &str) -> String {
    let r = arbor_repo_ok(repo, ["rev-parse", rev]);
    expect_checksum_line(&r)
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

// ---------------------------------------------------------------------------
// refs

#[test]
fn refs_lists_local_refs() {
    let h = history();
    let out = arbor_repo_ok(&h.repo, ["refs"]).stdout_str();
    assert!(
        out.ends_with('\n'),
        "refs output must end with a newline: {out:?}"
    );
    let all = lines(&out);
    let local: Vec<&String> = all.iter().filter(|l| !l.contains(':')).collect();
    let set: BTreeSet<&str> = local.iter().map(|s| s.as_str()).collect();
    assert_eq!(set.len(), local.len(), "duplicate lines in {out:?}");
    assert_eq!(
        set,
        LOCAL_REFS.iter().copied().collect::<BTreeSet<_>>(),
        "arbor refs output: {out:?}"
    );
}

#[test]
fn refs_lists_remote_refs_like_ostree() {
    let h = history();
    let arbor: BTreeSet<String> = lines(&arbor_repo_ok(&h.repo, ["refs"]).stdout_str())
        .into_iter()
        .collect();
    let ostree: BTreeSet<String> = lines(&ostree_repo_ok(&h.repo, ["refs"]).stdout_str())
        .into_iter()
        .collect();
    assert!(
        ostree.contains("origin:main"),
        "sanity: ostree lists the remote ref"
    );
    assert_eq!(
        arbor, ostree,
        "`arbor refs` and `ostree refs` list different refs"
    );
}

#[test]
fn refs_of_empty_repo_is_empty() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let r = arbor_repo_ok(&repo, ["refs"]);
    assert_eq!(r.stdout_str(), "");
}

// ---------------------------------------------------------------------------
// rev-parse

#[test]
fn rev_parse_refs() {
    let h = history();
    assert_eq!(rev_parse(&h.repo, "main"), h.c3);
    assert_eq!(rev_parse(&h.repo, "a/b/c"), h.c2);
    assert_eq!(rev_parse(&h.repo, "release/1.0"), h.c1);
    assert_eq!(rev_parse(&h.repo, "héllo"), h.c2);
    assert_eq!(rev_parse(&h.repo, "Zed"), h.c3);
}

#[test]
fn rev_parse_full_checksum() {
    let h = history();
    for c in [&h.c1, &h.c2, &h.c3] {
        assert_eq!(&rev_parse(&h.repo, c), c);
    }
}

#[test]
fn rev_parse_unique_prefix() {
    let h = history();
    assert_eq!(rev_parse(&h.repo, &h.c2[..10]), h.c2);
    assert_eq!(rev_parse(&h.repo, &h.c1[..8]), h.c1);
    assert_eq!(rev_parse(&h.repo, &h.c3[..63]), h.c3);
}

#[test]
fn rev_parse_parents() {
    let h = history();
    assert_eq!(rev_parse(&h.repo, "main^"), h.c2);
    assert_eq!(rev_parse(&h.repo, "main^^"), h.c1);
    assert_eq!(rev_parse(&h.repo, &format!("{}^", h.c3)), h.c2);
    assert_eq!(rev_parse(&h.repo, "a/b/c^"), h.c1);
    let r = arbor_repo(&h.repo, ["rev-parse", "main^^^"]).assert_clean_failure();
    assert!(
        r.stdout.is_empty(),
        "no checksum may be printed on error\n{}",
        r.describe()
    );
}

#[test]
fn rev_parse_remote_ref() {
    let h = history();
    assert_eq!(rev_parse(&h.repo, "origin:main"), h.c2);
    assert_eq!(rev_parse(&h.repo, "origin:main^"), h.c1);
    let r = arbor_repo(&h.repo, ["rev-parse", "origin:nope"]).assert_clean_failure();
    assert!(r.stderr_str().contains("nope"), "{}", r.describe());
}

#[test]
fn rev_parse_unknown_ref() {
    let h = history();
    for name in ["nope", "a/b", "main/x"] {
        let r = arbor_repo(&h.repo, ["rev-parse", name]).assert_clean_failure();
        assert!(r.stdout.is_empty(), "{}", r.describe());
        assert!(
            r.stderr_str().contains(name),
            "error must mention the ref {name:?}\n{}",
            r.describe()
        );
    }
}

/// Two orphan commits whose checksums share the prefix `e54de` (found by
/// search; the tree is fully determined: --no-xattrs, owner 0:0, fixed modes).
#[test]
fn rev_parse_ambiguous_prefix() {
    let tmp = tempdir();
    let src = tmp.path().join("amb");
    make_dir(&src, 0o755);
    write_file(&src.join("f"), b"amb\n", 0o644);
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::Archive);
    let mut commits = Vec::new();
    for ts in [1317, 1605] {
        let r = ostree_repo_ok(
            &repo,
            [
                "commit".to_string(),
                "--orphan".into(),
                "--fsync=false".into(),
                "--no-xattrs".into(),
                "--owner-uid=0".into(),
                "--owner-gid=0".into(),
                format!("--tree=dir={}", src.display()),
                "--subject=amb".into(),
                format!("--timestamp=@{ts}"),
            ],
        );
        commits.push(r.stdout_str().trim().to_string());
    }
    assert_eq!(
        commits,
        [
            "e54dee41dc7d13f09fa5c97a3818764a7cdb91c7c4b03b25733a212d6faf1358",
            "e54de0c8d3ccdb7ef4fef29595ba71a14de6401500aaa8f99e897e49c0261837"
        ],
        "sanity: the fixed tree must give the precomputed colliding commits"
    );
    let r = arbor_repo(&repo, ["rev-parse", "e54de"]).assert_clean_failure();
    assert!(r.stdout.is_empty(), "{}", r.describe());
    assert_eq!(rev_parse(&repo, "e54dee"), commits[0]);
    assert_eq!(rev_parse(&repo, "e54de0"), commits[1]);
    // A prefix matching nothing.
    arbor_repo(&repo, ["rev-parse", "e54df"]).assert_clean_failure();
}

// ---------------------------------------------------------------------------
// log

fn commit_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("commit "))
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn log_lists_history_newest_first() {
    let h = history();
    let out = arbor_repo_ok(&h.repo, ["log", "main"]).stdout_str();
    assert!(
        out.starts_with(&format!("commit {}\n", h.c3)),
        "log must start with `commit <newest>`:\n{out}"
    );
    assert_eq!(
        commit_lines(&out),
        vec![h.c3.as_str(), h.c2.as_str(), h.c1.as_str()],
        "log:\n{out}"
    );
    let p3 = out.find("third subject").expect("subject 3 in log");
    let p2 = out.find("second subject").expect("subject 2 in log");
    let p1 = out.find("first subject").expect("subject 1 in log");
    assert!(p3 < p2 && p2 < p1, "subjects out of order:\n{out}");
    // Each subject belongs to its own entry.
    let i2 = out.find(&format!("commit {}", h.c2)).unwrap();
    let i1 = out.find(&format!("commit {}", h.c1)).unwrap();
    assert!(
        p3 < i2 && i2 < p2 && p2 < i1 && i1 < p1,
        "subjects not inside their entries:\n{out}"
    );
}

#[test]
fn log_from_other_revs() {
    let h = history();
    let out = arbor_repo_ok(&h.repo, ["log", "a/b/c"]).stdout_str();
    assert_eq!(commit_lines(&out), vec![h.c2.as_str(), h.c1.as_str()]);
    let out = arbor_repo_ok(&h.repo, ["log", &h.c1]).stdout_str();
    assert_eq!(commit_lines(&out), vec![h.c1.as_str()]);
    let out = arbor_repo_ok(&h.repo, ["log", "main^"]).stdout_str();
    assert_eq!(commit_lines(&out), vec![h.c2.as_str(), h.c1.as_str()]);
    arbor_repo(&h.repo, ["log", "nope"]).assert_clean_failure();
}

// ---------------------------------------------------------------------------
// show

#[test]
fn show_commit() {
    let h = history();
    let out = arbor_repo_ok(&h.repo, ["show", "main"]).stdout_str();
    assert!(
        out.contains(&h.c3) && out.contains("third subject"),
        "show main:\n{out}"
    );
    let out = arbor_repo_ok(&h.repo, ["show", &h.c2]).stdout_str();
    assert!(
        out.contains(&h.c2) && out.contains("second subject"),
        "show c2:\n{out}"
    );
    let out = arbor_repo_ok(&h.repo, ["show", &format!("{}.commit", h.c1)]).stdout_str();
    assert!(
        out.contains(&h.c1) && out.contains("first subject"),
        "show c1.commit:\n{out}"
    );
}

#[test]
fn show_dirtree_and_dirmeta() {
    let h = history();
    let (dirtree, dirmeta) = dir_checksums(&h.repo, &h.c3, "/");
    let out = arbor_repo_ok(&h.repo, ["show", &format!("{dirtree}.dirtree")]).stdout_str();
    assert!(
        out.contains(&dirtree),
        "show of a dirtree must mention its checksum:\n{out}"
    );
    let (sub_tree, _) = dir_checksums(&h.repo, &h.c3, "/sub");
    let out = arbor_repo_ok(&h.repo, ["show", &format!("{sub_tree}.dirtree")]).stdout_str();
    assert!(
        out.contains(&sub_tree),
        "show of a dirtree must mention its checksum:\n{out}"
    );
    let out = arbor_repo_ok(&h.repo, ["show", &format!("{dirmeta}.dirmeta")]).stdout_str();
    assert!(!out.trim().is_empty());
}

#[test]
fn show_errors() {
    let h = history();
    let zeros = "0".repeat(64);
    arbor_repo(&h.repo, ["show", &format!("{zeros}.dirtree")]).assert_clean_failure();
    arbor_repo(&h.repo, ["show", &format!("{zeros}.commit")]).assert_clean_failure();
    arbor_repo(&h.repo, ["show", "nope"]).assert_clean_failure();
    arbor_repo(&h.repo, ["show", &format!("{}.bogustype", h.c1)]).assert_clean_failure();
}

// ---------------------------------------------------------------------------
// init and ARBOR_REPO

#[track_caller]
fn assert_ostree_sees_mode(repo: &Path, mode_name: &str) {
    assert_ostree_mode(repo, mode_name);
    let v = ostree_repo_ok(repo, ["config", "get", "core.repo_version"]).stdout_str();
    assert_eq!(v.trim(), "1");
    for d in ["objects", "refs/heads", "refs/remotes", "tmp", "state"] {
        assert!(repo.join(d).is_dir(), "{d}/ missing in {}", repo.display());
    }
    // ostree can use the repo.
    assert_eq!(ostree_repo_ok(repo, ["refs"]).stdout_str(), "");
}

#[test]
fn init_default_mode_is_bare() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_repo_ok(&repo, ["init"]);
    assert_ostree_sees_mode(&repo, "bare");
    // ostree can commit into it and fsck it.
    let src = tmp.path().join("src");
    build_small_tree(&src);
    ostree_commit(&repo, &src, "main", &CommitOpts::new("by ostree", "", 1));
    ostree_repo_ok(&repo, ["fsck"]);
}

#[test]
fn init_each_mode() {
    for mode in Mode::ALL {
        let tmp = tempdir();
        let repo = tmp.path().join("repo");
        arbor_init(&repo, mode);
        assert_ostree_sees_mode(&repo, mode.config_name());
        let cfg = fs::read_to_string(repo.join("config")).unwrap();
        assert!(
            cfg.contains(&format!("mode={}\n", mode.config_name())),
            "config of a {mode:?} repo:\n{cfg}"
        );
    }
}

#[test]
fn init_rejects_unknown_mode() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_repo(&repo, ["init", "--mode", "bogus"]).assert_clean_failure();
    assert!(!repo.join("objects").exists());
}

#[test]
fn init_existing_repo_is_refused_and_left_intact() {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::BareUser);
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let c = arbor_commit(&repo, &src, "main", &CommitOpts::new("keep me", "", 5));
    let again = arbor_repo(&repo, ["init", "--mode", "bare-user"]).assert_clean_failure();
    assert!(
        again.stderr_str().contains("already exists"),
        "{}",
        again.describe()
    );
    assert_eq!(ostree_rev_parse(&repo, "main"), c);
    assert_ostree_mode(&repo, "bare-user");
    ostree_repo_ok(&repo, ["fsck"]);
    // Re-init with another mode must not silently change the mode.
    let other = arbor_repo(&repo, ["init", "--mode", "archive"]).assert_clean_failure();
    assert!(
        other.stderr_str().contains("already exists"),
        "{}",
        other.describe()
    );
    assert_ostree_mode(&repo, "bare-user");
    assert_eq!(ostree_rev_parse(&repo, "main"), c);
}

#[track_caller]
fn assert_ostree_mode(repo: &Path, mode_name: &str) {
    let m = ostree_repo_ok(repo, ["config", "get", "core.mode"]).stdout_str();
    assert_eq!(m.trim(), mode_name);
}

#[test]
fn arbor_repo_environment_variable() {
    let tmp = tempdir();
    let repo = tmp.path().join("env-repo");
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let env_run = |args: &[&str]| {
        let mut c = arbor_command();
        c.env("ARBOR_REPO", &repo);
        c.args(args);
        run(c)
    };
    env_run(&["init", "--mode", "archive"]).assert_ok();
    assert_ostree_mode(&repo, "archive-z2");
    let r = env_run(&[
        "commit",
        src.to_str().unwrap(),
        "--branch",
        "main",
        "--subject",
        "via env",
        "--timestamp",
        "10",
    ])
    .assert_ok();
    let c = expect_checksum_line(&r);
    assert_eq!(ostree_rev_parse(&repo, "main"), c);
    assert_eq!(env_run(&["refs"]).assert_ok().stdout_str(), "main\n");
    assert_eq!(
        env_run(&["rev-parse", "main"]).assert_ok().stdout_str(),
        format!("{c}\n")
    );
    env_run(&["fsck"]).assert_ok();
}

#[test]
fn missing_repo_is_a_clean_error() {
    let tmp = tempdir();
    let nowhere = tmp.path().join("no-repo-here");
    for args in [
        &["refs"][..],
        &["rev-parse", "main"],
        &["log", "main"],
        &["fsck"],
    ] {
        arbor_repo(&nowhere, args).assert_clean_failure();
    }
    // No --repo: $ARBOR_REPO names the repository, and a missing one is a
    // clean error that names it.
    let missing = tmp.path().join("no-such-repo");
    let mut c = arbor_command();
    c.current_dir(tmp.path());
    c.env("ARBOR_REPO", &missing);
    c.arg("refs");
    let r = run(c).assert_clean_failure();
    assert!(
        r.stderr_str().contains(&*missing.to_string_lossy()),
        "{}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------
// ref-name validation on commit

/// The small tree, and an arbor and an ostree repository (bare-user) to
/// commit it to: `(tmp, src, arbor repo, ostree repo)`.
fn ref_name_repos() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::BareUser);
    let o_repo = tmp.path().join("ostree-repo");
    ostree_init(&o_repo, Mode::BareUser);
    (tmp, src, repo, o_repo)
}

#[test]
fn commit_rejects_invalid_ref_names() {
    let (_tmp, src, repo, o_repo) = ref_name_repos();
    let hex_name = "ab".repeat(32);
    for name in [
        "-x",
        "a//b",
        "a b",
        ".x",
        "x/",
        "a/.b",
        "/x",
        "",
        hex_name.as_str(),
    ] {
        // Sanity: ostree rejects it as well.
        let o = ostree_repo(&o_repo, CommitOpts::new("s", "", 1).ostree_args(&src, name));
        assert!(!o.success(), "sanity: ostree accepted branch {name:?}");
        let r = arbor_repo(
            &repo,
            [
                "commit".to_string(),
                src.to_string_lossy().into_owned(),
                format!("--branch={name}"),
                "--subject=s".into(),
                "--timestamp=1".into(),
            ],
        )
        .assert_clean_failure();
        assert!(r.stdout.is_empty(), "{}", r.describe());
    }
    assert_eq!(
        arbor_repo_ok(&repo, ["refs"]).stdout_str(),
        "",
        "no ref may have been created"
    );
    assert_eq!(
        list_objects(&repo)
            .iter()
            .filter(|o| o.ends_with(".commit"))
            .count(),
        0,
        "no commit may be written"
    );
}

#[test]
fn commit_accepts_unusual_valid_ref_names() {
    let (_tmp, src, repo, o_repo) = ref_name_repos();
    let names = [
        "héllo",
        "_x",
        "x.",
        "a..b",
        "a/b-c.d_e",
        "1.0",
        "UPPER/lower",
    ];
    for name in names {
        let opts = CommitOpts::new("s", "", 1).parent("none");
        let expected = ostree_commit(&o_repo, &src, name, &opts);
        let c = arbor_commit(&repo, &src, name, &opts);
        assert_eq!(
            c, expected,
            "checksum for branch {name:?} (the ref binding contains the name)"
        );
        assert_eq!(rev_parse(&repo, name), c);
    }
    let listed: BTreeSet<String> = lines(&arbor_repo_ok(&repo, ["refs"]).stdout_str())
        .into_iter()
        .collect();
    assert_eq!(
        listed,
        names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
}
