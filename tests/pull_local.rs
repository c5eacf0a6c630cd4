//! `arbor pull` from local repositories made by the real `ostree` in all
//! four modes, by path and by `file://` URL (also as a configured remote),
//! into stores of every mode.
//!
//! Checks as for HTTP: `ostree fsck` passes on the store, the commit is
//! complete, `ostree checkout` from the store equals `ostree checkout` from
//! the source, exactly the expected refs exist, and the store holds exactly
//! the commit's objects. A local source is not trusted: a corrupt object in
//! it fails the pull, naming the object, and leaves the ref alone.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use pull_support::*;

struct Source {
    repo: PathBuf,
    /// `main`: the edge tree.
    main: String,
    /// `small`: the small tree.
    small: String,
}

/// One ostree repo per mode, each with `main` (edge tree) and `small`, no
/// summary. The bare-user-only commit has canonical permissions (ostree
/// canonicalises when committing to that mode), so it differs from the
/// others.
fn source(mode: Mode) -> &'static Source {
    static CELLS: [OnceLock<Source>; 4] = [const { OnceLock::new() }; 4];
    CELLS[mode.index()].get_or_init(|| {
        let base = scratch_dir(&format!("pull-local-src{}", mode.index()));
        let repo = base.join("repo");
        ostree_init(&repo, mode);
        let main = ostree_commit(
            &repo,
            &pull_edge_tree().path,
            "main",
            &CommitOpts::new("edge", "", TS),
        );
        let small_dir = base.join("small");
        build_small_tree(&small_dir);
        let small = ostree_commit(
            &repo,
            &small_dir,
            "small",
            &CommitOpts::new("small", "", TS),
        );
        Source { repo, main, small }
    })
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Pulls `main` from the `src_mode` source into a `dst_mode` store, by path
/// or by file:// URL, and checks the result.
fn local_pull(src_mode: Mode, dst_mode: Mode, by_url: bool) {
    let s = source(src_mode);
    let (_t, store) = new_store(dst_mode);
    let spec = if by_url {
        file_url(&s.repo)
    } else {
        s.repo.display().to_string()
    };
    pull_ok(&store, &[&spec, "main"]);
    assert_eq!(
        all_refs(&store),
        BTreeMap::from([("heads/main".to_string(), s.main.clone())]),
        "refs after pulling main from {spec}"
    );
    let user = src_mode == Mode::BareUserOnly || dst_mode == Mode::BareUserOnly;
    assert_pulled(&store, &s.repo, &s.main, user);
    assert_set_eq(
        &store_objects(&store),
        &commit_objects(&s.repo, &s.main),
        "objects in the store",
    );
}

#[test]
fn bare_source_by_path_into_bare() {
    local_pull(Mode::Bare, Mode::Bare, false);
}

#[test]
fn bare_source_by_url_into_bare_user() {
    local_pull(Mode::Bare, Mode::BareUser, true);
}

#[test]
fn bare_user_source_by_path_into_bare_user() {
    local_pull(Mode::BareUser, Mode::BareUser, false);
}

#[test]
fn bare_user_source_by_url_into_archive() {
    local_pull(Mode::BareUser, Mode::Archive, true);
}

#[test]
fn bare_user_only_source_by_path_into_bare_user_only() {
    local_pull(Mode::BareUserOnly, Mode::BareUserOnly, false);
}

#[test]
fn bare_user_only_source_by_url_into_bare() {
    local_pull(Mode::BareUserOnly, Mode::Bare, true);
}

#[test]
fn archive_source_by_path_into_archive() {
    local_pull(Mode::Archive, Mode::Archive, false);
}

#[test]
fn archive_source_by_url_into_bare() {
    local_pull(Mode::Archive, Mode::Bare, true);
}

/// A `file://` remote writes `refs/remotes/NAME/REF`; without refs named
/// and without a summary, a local source's `refs/heads` are all pulled.
#[test]
fn file_remote_pulls_all_heads() {
    let s = source(Mode::Bare);
    let (_t, store) = new_store(Mode::BareUser);
    arbor_repo_ok(
        &store,
        [
            "remote",
            "add",
            "local",
            &file_url(&s.repo),
            "--no-sign-verify",
        ],
    );
    let refs = arbor_repo_ok(&store, ["remote", "refs", "local"]).stdout_str();
    let mut lines: Vec<&str> = refs.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            format!("local:main\t{}", s.main),
            format!("local:small\t{}", s.small)
        ]
    );
    pull_ok(&store, &["local"]);
    assert_eq!(
        all_refs(&store),
        BTreeMap::from([
            ("remotes/local/main".to_string(), s.main.clone()),
            ("remotes/local/small".to_string(), s.small.clone()),
        ])
    );
    assert_pulled(&store, &s.repo, &s.main, false);
    assert_pulled(&store, &s.repo, &s.small, false);
    let mut expected = commit_objects(&s.repo, &s.main);
    expected.extend(commit_objects(&s.repo, &s.small));
    assert_set_eq(&store_objects(&store), &expected, "objects in the store");
}

/// Pulling from a local repository that stores objects as the store does
/// (same mode, same filesystem) hardlinks its content objects after
/// verifying them, as `ostree pull-local` does; across modes they are
/// copied. Either way the store is complete and sound.
#[test]
fn same_mode_local_pulls_hardlink_objects() {
    use std::os::unix::fs::MetadataExt;
    for (src_mode, dst_mode, linked) in [
        (Mode::Bare, Mode::Bare, true),
        (Mode::Archive, Mode::Archive, true),
        (Mode::Bare, Mode::BareUser, false),
    ] {
        let s = source(src_mode);
        let (_t, store) = new_store(dst_mode);
        pull_ok(&store, &[s.repo.to_str().unwrap(), "main"]);
        assert_pulled(&store, &s.repo, &s.main, false);
        let files: Vec<_> = commit_objects(&s.repo, &s.main)
            .into_iter()
            .filter(|k| k.ends_with(".file"))
            .collect();
        assert!(!files.is_empty());
        let ext = if dst_mode == Mode::Archive {
            "filez"
        } else {
            "file"
        };
        for k in &files {
            let a = std::fs::symlink_metadata(object_path(&s.repo, &k[..64], ext)).unwrap();
            let b = std::fs::symlink_metadata(object_path(&store, &k[..64], ext)).unwrap();
            assert_eq!(
                (a.dev(), a.ino()) == (b.dev(), b.ino()),
                linked,
                "{src_mode:?} -> {dst_mode:?}: {k}"
            );
        }
    }
}

/// A corrupt content object in a local source (one byte flipped in a bare
/// repo's `.file`) fails the pull with a message naming the object, the ref
/// keeps its old value, and no corrupt object lands in the store.
#[test]
fn corrupt_content_in_local_source_is_refused() {
    let s = source(Mode::Bare);
    let t = shared_tempdir();
    let bad = t.path().join("bad");
    copy_tree(&s.repo, &bad);
    let victim = file_checksum(&bad, &s.main, "/file_0644.txt");
    flip_byte(&object_path(&bad, &victim, "file"), 0);

    let (_t, store) = new_store(Mode::Bare);
    // The ref already points at another commit: it must stay there.
    pull_ok(
        &store,
        &[s.repo.to_str().unwrap(), &format!("main@{}", s.small)],
    );
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*s.small));

    let r = pull(&store, &[bad.to_str().unwrap(), "main"]).assert_clean_failure();
    assert_mentions(&r, &[&victim]);
    assert_eq!(
        read_ref(&store, "heads/main").as_deref(),
        Some(&*s.small),
        "the ref moved after a failed pull"
    );
    assert!(
        !has_object(&store, &format!("{victim}.file")),
        "the corrupt object was stored"
    );
    assert!(
        is_partial(&store, &s.main) || !has_object(&store, &format!("{}.commit", s.main)),
        "the incomplete commit is not marked partial"
    );
    assert_fsck_clean(&store);

    // From the good source the same pull then completes, fetching the rest.
    pull_ok(&store, &[s.repo.to_str().unwrap(), "main"]);
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*s.main));
    assert_pulled(&store, &s.repo, &s.main, false);
}

/// A corrupt dirtree in an archive source is refused the same way.
#[test]
fn corrupt_dirtree_in_local_source_is_refused() {
    let s = source(Mode::Archive);
    let t = shared_tempdir();
    let bad = t.path().join("bad");
    copy_tree(&s.repo, &bad);
    let (victim, _) = dir_checksums(&bad, &s.main, "/sort");
    let p = object_path(&bad, &victim, "dirtree");
    flip_byte(&p, std::fs::metadata(&p).unwrap().len() / 2);

    let (_t, store) = new_store(Mode::Archive);
    let r = pull(&store, &[&file_url(&bad), "main"]).assert_clean_failure();
    assert_mentions(&r, &[&victim]);
    assert!(all_refs(&store).is_empty(), "a ref was written");
    assert!(!has_object(&store, &format!("{victim}.dirtree")));
    assert_fsck_clean(&store);
}

/// A path that is not a repository, and a missing one, fail cleanly.
#[test]
fn not_a_repository_fails_cleanly() {
    let (_t, store) = new_store(Mode::Bare);
    let t = shared_tempdir();
    let r = pull(&store, &[t.path().to_str().unwrap(), "main"]).assert_clean_failure();
    assert_mentions(&r, &[&t.path().display().to_string()]);
    pull(&store, &["file:///nonexistent/arbor-repo", "main"]).assert_clean_failure();
    assert!(all_refs(&store).is_empty());
}
