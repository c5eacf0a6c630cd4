//! arbor must read repositories written by the real `ostree` in every mode:
//! `arbor ls` output is byte-identical to `ostree ls`, `arbor cat` to
//! `ostree cat`, and `arbor fsck` accepts a good repository and reports the
//! checksum of a corrupted or missing object.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;

const SUBJECT: &str = "written by ostree";

/// An ostree-written repository with one commit of the shared edge tree.
struct Shared {
    repo: PathBuf,
    commit: String,
}

fn shared(mode: Mode) -> &'static Shared {
    static CELLS: [OnceLock<Shared>; 4] = [const { OnceLock::new() }; 4];
    CELLS[mode.index()].get_or_init(|| {
        let src = shared_edge_tree();
        let repo = scratch_dir(&format!("read-{}", mode.name())).join("repo");
        ostree_init(&repo, mode);
        let opts = CommitOpts::new(SUBJECT, "body", 1_700_000_000).meta("version", "1.0");
        let commit = ostree_commit(&repo, &src.path, "main", &opts);
        Shared { repo, commit }
    })
}

/// A small tree with just what the corruption tests need (cheap to commit
/// once per test, so every corruption test has its own repository).
fn corruption_tree() -> &'static PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let p = scratch_dir("corruption-tree").join("src");
        make_dir(&p, 0o755);
        write_file(
            &p.join("big.bin"),
            &pseudo_random_bytes(256 * 1024 + 17, 42),
            0o644,
        );
        write_file(&p.join("file_0644.txt"), b"hello\n", 0o644);
        write_file(&p.join("file_0600"), b"private content\n", 0o600);
        write_file(&p.join("setuid"), b"#!/bin/sh\n", 0o755);
        fs::set_permissions(p.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("file_0644.txt", p.join("link")).unwrap();
        make_dir(&p.join("sort"), 0o755);
        for name in ["B", "_", "a", "é"] {
            write_file(&p.join("sort").join(name), name.as_bytes(), 0o644);
        }
        make_dir(&p.join("sort/adir"), 0o755);
        write_file(&p.join("sort/adir/x"), b"x\n", 0o644);
        make_dir(&p.join("xattr_dir"), 0o755);
        write_file(&p.join("xattr_dir/plain.txt"), b"plain\n", 0o644);
        set_xattr(&p.join("xattr_dir"), "user.dir_z", b"zz");
        set_xattr(&p.join("xattr_dir"), "user.dir_a", b"aa");
        make_dir(&p.join("unicode"), 0o755);
        write_file(&p.join("unicode/héllo"), "bonjour\n".as_bytes(), 0o644);
        p
    })
}

// ---------------------------------------------------------------------------
// ls

fn ls_matches_ostree(mode: Mode) {
    let s = shared(mode);
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("", &["-R"]),
        ("", &["-C"]),
        ("", &["-R", "-C"]),
        ("/sort", &[]),
        ("/sort", &["-C"]),
        ("/unicode", &["-R"]),
        ("/unicode/日本", &[]),
        ("/links", &["-C"]),
        ("/deep", &["-R", "-C"]),
        ("/many", &[]),
        ("/empty_dir", &[]),
        ("/xattr_dir", &["-R"]),
        ("/private_dir", &["-R", "-C"]),
        ("/file_0644.txt", &[]),
        ("/setuid_04755", &["-C"]),
        ("/links/long", &[]),
        ("/links/owned_1000", &["-C"]),
    ];
    // Everything by ref name, the first few cases by full checksum too.
    let by_rev = cases
        .iter()
        .map(|c| ("main", c))
        .chain(cases[..4].iter().map(|c| (s.commit.as_str(), c)));
    for (rev, (path, flags)) in by_rev {
        let mut a: Vec<&str> = vec!["ls", rev];
        if !path.is_empty() {
            a.push(path);
        }
        a.extend_from_slice(flags);
        let mut o: Vec<&str> = vec!["ls"];
        o.extend_from_slice(flags);
        o.push(rev);
        if !path.is_empty() {
            o.push(path);
        }
        let expected = ostree_repo_ok(&s.repo, &o);
        let actual = arbor_repo_ok(&s.repo, &a);
        assert_bytes_eq(
            &actual.stdout,
            &expected.stdout,
            &format!(
                "[{mode:?}] `arbor ls {}` vs `ostree ls {}`",
                a[1..].join(" "),
                o[1..].join(" ")
            ),
        );
    }
}

fn ls_missing_path_fails(mode: Mode) {
    let s = shared(mode);
    arbor_repo(&s.repo, ["ls", "main", "/does/not/exist"]).assert_clean_failure();
    arbor_repo(&s.repo, ["ls", "no-such-ref"]).assert_clean_failure();
}

// ---------------------------------------------------------------------------
// cat

fn cat_matches_ostree(mode: Mode) {
    let s = shared(mode);
    let tree = shared_edge_tree();
    let mut checked = 0;
    for e in &tree.entries {
        if e.kind != 'f' {
            continue;
        }
        let rel = String::from_utf8(e.path.clone()).unwrap();
        // Sample many/ (2000 files): first, last and a duplicate-content one.
        if rel.starts_with("many/")
            && !["many/f0000", "many/f1999", "many/f1500"].contains(&rel.as_str())
        {
            continue;
        }
        let path = format!("/{rel}");
        let expected = ostree_repo_ok(&s.repo, ["cat", "main", &path]);
        let actual = arbor_repo_ok(&s.repo, ["cat", "main", &path]);
        assert!(
            actual.stdout == expected.stdout,
            "[{mode:?}] `arbor cat main {path}` differs from ostree cat ({} vs {} bytes)",
            actual.stdout.len(),
            expected.stdout.len()
        );
        assert_eq!(
            Some(sha256_hex(&actual.stdout)),
            e.sha256,
            "[{mode:?}] cat {path}: content differs from the source file"
        );
        checked += 1;
    }
    assert!(checked > 40, "only {checked} files checked");
    // Also by full checksum.
    let a = arbor_repo_ok(&s.repo, ["cat", &s.commit, "/big.bin"]);
    assert_eq!(a.stdout.len(), BIG_FILE_LEN);
}

fn cat_errors(mode: Mode) {
    let s = shared(mode);
    arbor_repo(&s.repo, ["cat", "main", "/does-not-exist"]).assert_clean_failure();
    arbor_repo(&s.repo, ["cat", "main", "/sort"]).assert_clean_failure();
}

// ---------------------------------------------------------------------------
// fsck

fn fsck_clean(mode: Mode) {
    let s = shared(mode);
    let r = arbor_repo(&s.repo, ["fsck"]);
    assert!(
        r.success(),
        "[{mode:?}] arbor fsck failed on a good ostree repo\n{}",
        r.describe()
    );
}

/// A fresh ostree repo of the corruption tree; returns (tempdir, repo, commit).
fn fresh_repo(mode: Mode) -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    ostree_init(&repo, mode);
    let c = ostree_commit(
        &repo,
        corruption_tree(),
        "main",
        &CommitOpts::new("to corrupt", "", 1_650_000_000),
    );
    arbor_repo_ok(&repo, ["fsck"]);
    (tmp, repo, c)
}

/// arbor fsck must fail and name `csum`; then ostree fsck must fail too
/// (which proves the corruption is real).
#[track_caller]
fn expect_fsck_reports(repo: &std::path::Path, csum: &str, what: &str) {
    let r = arbor_repo(repo, ["fsck"]);
    assert!(
        !r.success(),
        "arbor fsck succeeded despite {what}\n{}",
        r.describe()
    );
    assert!(
        r.combined().contains(csum),
        "arbor fsck output does not mention the checksum {csum} of the {what}\n{}",
        r.describe()
    );
    let r = r.assert_clean_failure();
    drop(r);
    let o = ostree_repo(repo, ["fsck"]);
    assert!(
        !o.success(),
        "sanity: ostree fsck should fail too ({what})\n{}",
        o.describe()
    );
}

fn fsck_flipped_content(mode: Mode) {
    let (_tmp, repo, c) = fresh_repo(mode);
    let csum = file_checksum(&repo, &c, "/big.bin");
    let obj = object_path(&repo, &csum, mode.content_ext());
    let len = fs::metadata(&obj).unwrap().len();
    // Middle of the payload (for archive: inside deflate stored blocks of
    // incompressible data).
    flip_byte(&obj, len / 2);
    expect_fsck_reports(&repo, &csum, "content object with a flipped byte");
}

fn fsck_replaced_content(mode: Mode) {
    let (_tmp, repo, c) = fresh_repo(mode);
    let csum = file_checksum(&repo, &c, "/file_0644.txt");
    let obj = object_path(&repo, &csum, mode.content_ext());
    if mode == Mode::Archive {
        // A well-formed .filez of another file, under the wrong name.
        let other = file_checksum(&repo, &c, "/file_0600");
        fs::copy(object_path(&repo, &other, "filez"), &obj).unwrap();
    } else {
        // Same length, different bytes ("hello\n" -> "jello\n"); metadata and
        // xattrs of the object file are untouched.
        let mut f = fs::OpenOptions::new().write(true).open(&obj).unwrap();
        std::io::Write::write_all(&mut f, b"jello\n").unwrap();
    }
    expect_fsck_reports(&repo, &csum, "content object with replaced content");
}

fn fsck_corrupt_dirtree(mode: Mode) {
    let (_tmp, repo, c) = fresh_repo(mode);
    let (dirtree, _) = dir_checksums(&repo, &c, "/sort");
    flip_byte(&object_path(&repo, &dirtree, "dirtree"), 0);
    expect_fsck_reports(&repo, &dirtree, "dirtree object with a flipped byte");
}

fn fsck_corrupt_dirmeta(mode: Mode) {
    let (_tmp, repo, c) = fresh_repo(mode);
    let (_, dirmeta) = dir_checksums(&repo, &c, "/xattr_dir");
    // Byte 3 is the low byte of the big-endian uid.
    flip_byte(&object_path(&repo, &dirmeta, "dirmeta"), 3);
    expect_fsck_reports(&repo, &dirmeta, "dirmeta object with a flipped byte");
}

fn fsck_corrupt_commit(mode: Mode) {
    let (_tmp, repo, c) = fresh_repo(mode);
    let obj = object_path(&repo, &c, "commit");
    let bytes = fs::read(&obj).unwrap();
    // Flip a byte of the subject text ("to corrupt").
    let pos = bytes
        .windows(10)
        .position(|w| w == b"to corrupt")
        .expect("subject in commit");
    flip_byte(&obj, pos as u64 + 3);
    expect_fsck_reports(&repo, &c, "commit object with a flipped byte");
}

fn fsck_missing_content(mode: Mode) {
    let (_tmp, repo, c) = fresh_repo(mode);
    let csum = file_checksum(&repo, &c, "/unicode/héllo");
    fs::remove_file(object_path(&repo, &csum, mode.content_ext())).unwrap();
    expect_fsck_reports(&repo, &csum, "missing content object");
}

per_mode!(ls_matches_ostree);
per_mode!(ls_missing_path_fails);
per_mode!(cat_matches_ostree);
per_mode!(cat_errors);
per_mode!(fsck_clean);
per_mode!(fsck_flipped_content);
per_mode!(fsck_replaced_content);
per_mode!(fsck_corrupt_dirtree);
per_mode!(fsck_corrupt_dirmeta);
per_mode!(fsck_corrupt_commit);
per_mode!(fsck_missing_content);
