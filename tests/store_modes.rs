//! Repositories written by `arbor init` + `arbor commit` must be valid ostree
//! repositories in every mode: `ostree fsck` passes, `ostree checkout`
//! reproduces the source tree exactly, and the loose objects are stored the
//! way ostree itself stores them.
//!
//! Every check is also run against a repository written by `ostree commit`
//! (the `*_control` tests), which validates the expectations themselves.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

const SUBJECT: &str = "store test";
const TIMESTAMP: u64 = 1_700_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writer {
    Arbor,
    Ostree,
}

/// A repository holding one commit of the shared edge tree.
struct Setup {
    src: &'static SharedTree,
    repo: PathBuf,
    commit: String,
}

/// One repository per (mode, writer), created on first use and shared by
/// the (read-only) tests of this file: committing the 2000-file edge tree is
/// the expensive part of these tests.
fn setup(mode: Mode, writer: Writer) -> &'static Setup {
    static CELLS: [OnceLock<Setup>; 8] = [const { OnceLock::new() }; 8];
    let idx = mode.index() * 2 + (writer == Writer::Ostree) as usize;
    CELLS[idx].get_or_init(|| {
        let src = shared_edge_tree();
        let repo = scratch_dir(&format!("store-{}-{writer:?}", mode.name())).join("repo");
        let opts = CommitOpts::new(SUBJECT, "body", TIMESTAMP);
        let commit = match writer {
            Writer::Arbor => {
                arbor_init(&repo, mode);
                arbor_commit(&repo, &src.path, "main", &opts)
            }
            Writer::Ostree => {
                ostree_init(&repo, mode);
                ostree_commit(&repo, &src.path, "main", &opts)
            }
        };
        Setup { src, repo, commit }
    })
}

/// `ostree fsck` passes and `ostree checkout` reproduces the source tree.
fn roundtrip(mode: Mode, writer: Writer) {
    let s = setup(mode, writer);

    let fsck = ostree_repo_ok(&s.repo, ["fsck"]);
    let out = fsck.combined();
    assert!(
        !out.contains("partial") || out.contains("0 partial"),
        "fsck reported partial commits\n{}",
        fsck.describe()
    );

    // The repo config and ref are what ostree expects.
    let cfg = ostree_repo_ok(&s.repo, ["config", "get", "core.mode"]).stdout_str();
    assert_eq!(cfg.trim(), mode.config_name());
    let ver = ostree_repo_ok(&s.repo, ["config", "get", "core.repo_version"]).stdout_str();
    assert_eq!(ver.trim(), "1");
    assert_eq!(ostree_rev_parse(&s.repo, "main"), s.commit);
    let subject = ostree_repo_ok(&s.repo, ["log", "main"]).stdout_str();
    assert!(
        subject.contains(SUBJECT),
        "ostree log does not show the subject:\n{subject}"
    );

    let tmp = tempdir();
    let out_dir = tmp.path().join("checkout");
    let user_mode = mode == Mode::BareUserOnly;
    let mut args = vec!["checkout".to_string()];
    if user_mode {
        args.push("-U".into());
    }
    args.push(s.commit.clone());
    args.push(out_dir.to_string_lossy().into_owned());
    ostree_repo_ok(&s.repo, &args);

    let expected = if user_mode {
        render_manifest(&expected_bare_user_only_checkout(&s.src.entries))
    } else {
        render_manifest(&without_empty_xattrs(&s.src.entries))
    };
    assert_manifest_eq(
        &manifest(&out_dir),
        &expected,
        &format!("ostree checkout of a {mode:?} repo vs source tree"),
    );
}

/// Every loose object has the canonical name and extension for the mode,
/// metadata objects hash to their name, and the refs file is well formed.
fn layout(mode: Mode, writer: Writer) {
    let s = setup(mode, writer);
    assert!(s.repo.join("objects").is_dir());
    assert!(s.repo.join("refs/heads").is_dir());
    assert!(s.repo.join("tmp").is_dir());
    assert_eq!(
        fs::read_to_string(s.repo.join("refs/heads/main")).unwrap(),
        format!("{}\n", s.commit)
    );
    let objects = list_objects(&s.repo);
    assert!(!objects.is_empty());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for o in &objects {
        let (dir, rest) = o
            .split_once('/')
            .unwrap_or_else(|| panic!("stray file objects/{o}"));
        let (hash, ext) = rest
            .split_once('.')
            .unwrap_or_else(|| panic!("object without extension: {o}"));
        let csum = format!("{dir}{hash}");
        assert!(is_hex64(&csum), "bad object name objects/{o}");
        let allowed: &[&str] = match mode {
            Mode::Archive => &["commit", "dirtree", "dirmeta", "commitmeta", "filez"],
            _ => &["commit", "dirtree", "dirmeta", "commitmeta", "file"],
        };
        assert!(
            allowed.contains(&ext),
            "object objects/{o} has an unexpected extension for {mode:?}"
        );
        *counts.entry(ext.to_string()).or_default() += 1;
        if matches!(ext, "commit" | "dirtree" | "dirmeta") {
            let bytes = fs::read(s.repo.join("objects").join(o)).unwrap();
            assert_eq!(
                sha256_hex(&bytes),
                csum,
                "metadata object objects/{o} does not hash to its name"
            );
        }
    }
    assert_eq!(
        counts.get("commit"),
        Some(&1),
        "exactly one commit object expected: {counts:?}"
    );
    assert!(object_path(&s.repo, &s.commit, "commit").is_file());
    let content = counts.get(mode.content_ext()).copied().unwrap_or(0);
    // Distinct content objects in the edge tree: far more than the 1500
    // distinct contents of many/, fewer than the total number of files.
    assert!(content > 1500, "too few content objects: {counts:?}");
}

/// Content objects are stored exactly as ostree stores them: same file type,
/// mode, owner, xattrs and bytes (bare modes), same set of object names
/// (all modes). Compares an arbor-written repo with an ostree-written repo of
/// the same tree.
fn objects_match_ostree(mode: Mode) {
    let a = setup(mode, Writer::Arbor);
    let o = setup(mode, Writer::Ostree);
    let o_repo = &o.repo;

    let describe = |repo: &Path| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for e in manifest_entries(&repo.join("objects")) {
            if e.kind == 'd' {
                continue;
            }
            let name = String::from_utf8(e.path.clone()).unwrap();
            let line = if name.ends_with(".file") {
                // Bare-mode content objects: everything matters.
                e.render()
            } else {
                // Metadata objects are content-addressed (bytes checked by the
                // names); .filez payload compression may legitimately differ.
                format!("{name} {}", e.kind)
            };
            m.insert(name, line);
        }
        m
    };
    let am = describe(&a.repo);
    let om = describe(o_repo);
    // First the objects both repos have (independent of checksum bugs)...
    let common: Vec<&String> = am.keys().filter(|k| om.contains_key(*k)).collect();
    let a_lines: String = common.iter().map(|k| format!("{}\n", am[*k])).collect();
    let o_lines: String = common.iter().map(|k| format!("{}\n", om[*k])).collect();
    assert_manifest_eq(
        &a_lines,
        &o_lines,
        &format!("{mode:?} objects present in both repos (arbor vs ostree)"),
    );
    // ...then the full sets.
    let only_a: Vec<&String> = am
        .keys()
        .filter(|k| !om.contains_key(*k))
        .take(10)
        .collect();
    let only_o: Vec<&String> = om
        .keys()
        .filter(|k| !am.contains_key(*k))
        .take(10)
        .collect();
    assert!(
        only_a.is_empty() && only_o.is_empty(),
        "{mode:?}: object sets differ; only in arbor repo: {only_a:?}; only in ostree repo: {only_o:?}"
    );
    assert_eq!(a.commit, o.commit);
}

/// Regular-file content objects in bare modes get mtime 0, as libostree does
/// (verified with ostree 2022.7), so that hardlinked checkouts have
/// reproducible timestamps. In bare-user this includes symlink objects, which
/// are stored as regular files; real symlinks (bare, bare-user-only) keep
/// their creation time in ostree too and are not checked.
fn content_objects_mtime_zero(mode: Mode, writer: Writer) {
    let s = setup(mode, writer);
    let mut bad = Vec::new();
    for o in list_objects(&s.repo) {
        if !o.ends_with(".file") {
            continue;
        }
        let p = s.repo.join("objects").join(&o);
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_file() && md.mtime() != 0 {
            bad.push(format!("{o} mtime={}", md.mtime()));
        }
    }
    assert!(
        bad.is_empty(),
        "{} regular content objects with non-zero mtime, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

mod arbor_written {
    use super::*;
    per_mode!(roundtrip, Writer::Arbor);
    per_mode!(layout, Writer::Arbor);
}

mod ostree_control {
    use super::*;
    per_mode!(roundtrip, Writer::Ostree);
    per_mode!(layout, Writer::Ostree);
}

per_mode!(objects_match_ostree);

mod mtime_zero {
    use super::*;
    #[test]
    fn bare() {
        content_objects_mtime_zero(Mode::Bare, Writer::Arbor)
    }
    #[test]
    fn bare_user() {
        content_objects_mtime_zero(Mode::BareUser, Writer::Arbor)
    }
    #[test]
    fn bare_user_only() {
        content_objects_mtime_zero(Mode::BareUserOnly, Writer::Arbor)
    }
    #[test]
    fn ostree_control_bare_user() {
        content_objects_mtime_zero(Mode::BareUser, Writer::Ostree)
    }
}
