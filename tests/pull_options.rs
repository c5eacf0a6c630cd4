//! `arbor pull` options, each shown by exactly which objects were (and were
//! not) requested from nginx, read from its access log: `--base`,
//! `--localcache-repo`, `--depth`, `--subpath`, `--mirror`,
//! `--commit-metadata-only`, update pulls and repeated pulls.
//!
//! The source is an archive repository made by `ostree` with a history of
//! three commits of a "medium" tree (a few hundred files): C2 rewrites one
//! directory of C1 and adds another, C3 does the same again and removes a
//! file. Expected object sets come from `ostree ls -R -C` on the source.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use pull_support::*;

/// `www/hist`: `main` = C1 ← C2 ← C3, `stable` = C1, with a summary.
/// `www/trunc`: the same without C1's commit object (truncated history).
struct Fixture {
    www: PathBuf,
    c: [String; 3],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("pull-options");
        let www = base.join("www");
        let repo = www.join("hist");
        std::fs::create_dir_all(&www).unwrap();
        let c = commit_medium_history(&repo, &base.join("work"), "main", 3, 10, 300);
        ostree_repo_ok(&repo, ["refs", "--create=stable", &c[0]]);
        ostree_summary_update(&repo);
        copy_tree(&repo, &www.join("trunc"));
        std::fs::remove_file(object_path(&www.join("trunc"), &c[0], "commit")).unwrap();
        Fixture {
            www,
            c: [c[0].clone(), c[1].clone(), c[2].clone()],
        }
    })
}

fn hist() -> PathBuf {
    fixture().www.join("hist")
}

/// Every object of commit `i` (0-based), the commit included.
fn objs(i: usize) -> BTreeSet<String> {
    commit_objects(&hist(), &fixture().c[i])
}

fn minus(a: &BTreeSet<String>, b: &BTreeSet<String>) -> BTreeSet<String> {
    a.difference(b).cloned().collect()
}

fn union(a: &BTreeSet<String>, b: &BTreeSet<String>) -> BTreeSet<String> {
    a.union(b).cloned().collect()
}

/// Runs a pull and returns the requests nginx saw for it.
#[track_caller]
fn pull_counted(nginx: &Nginx, store: &Path, args: &[&str]) -> Vec<Request> {
    let mark = nginx.mark();
    pull_ok(store, args);
    nginx.requests_since(mark)
}

/// A second, third, ... commit is fetched as the objects it adds only; a
/// pull of a commit already present requests no object but its detached
/// metadata.
#[test]
fn update_pull_fetches_only_new_objects() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let url = nginx.url("hist");
    let (_t, store) = new_store(Mode::Bare);

    let r1 = pull_counted(&nginx, &store, &[&url, &format!("main@{}", f.c[0])]);
    assert_set_eq(&requested_set(&r1), &objs(0), "first pull");
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[0]));

    let r2 = pull_counted(
        &nginx,
        &store,
        &[&url, &format!("main@{}", f.c[1]), "--jobs", "1"],
    );
    assert_no_duplicate_requests(&r2);
    let new2 = minus(&objs(1), &objs(0));
    assert_set_eq(&requested_set(&r2), &new2, "update pull C1 → C2");
    assert!(
        new2.len() < objs(1).len() / 4,
        "the fixture's second commit should share most objects with the first"
    );
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[1]));
    assert_pulled(&store, &hist(), &f.c[1], false);

    // The same commit again: nothing but its detached metadata (asked for
    // again, as libostree does, for signatures added since).
    let r3 = pull_counted(&nginx, &store, &[&url, &format!("main@{}", f.c[1])]);
    let c3 = Counts::of(&r3);
    assert_eq!(
        (c3.objects(), c3.commitmeta),
        (1, 1),
        "re-pull requested objects: {r3:#?}"
    );

    // Up to date through the summary: only the summary (and the commit's
    // detached metadata) is read.
    let r4 = pull_counted(&nginx, &store, &[&url, "main", "--quiet"]);
    assert_set_eq(&requested_set(&r4), &minus(&objs(2), &objs(1)), "C2 → C3");
    let r5 = pull_counted(&nginx, &store, &[&url, "main"]);
    let c5 = Counts::of(&r5);
    assert_eq!(
        (c5.summary, c5.objects(), c5.commitmeta, c5.refs, c5.other),
        (1, 1, 1, 0, 0)
    );
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[2]));
    assert_pulled(&store, &hist(), &f.c[2], false);
    // Everything in the store belongs to one of the commits.
    assert_set_eq(
        &store_objects(&store),
        &union(&union(&objs(0), &objs(1)), &objs(2)),
        "objects in the store",
    );
}

/// `--quiet` prints nothing on success.
#[test]
fn quiet_prints_nothing() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Archive);
    let r = pull_ok(&store, &[&nginx.url("hist"), "stable", "--quiet"]);
    assert!(
        r.stdout.is_empty() && r.stderr.is_empty(),
        "--quiet printed something\n{}",
        r.describe()
    );
    assert_pulled(&store, &hist(), &f.c[0], false);
}

/// `--base C1`: objects reachable from C1 are known present and never
/// requested; only what C2 adds is.
#[test]
fn base_skips_objects_reachable_from_base() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let url = nginx.url("hist");
    let (_t, store) = new_store(Mode::BareUser);
    // C1 arrives from a local copy (no ref), so only --base ties it to C2.
    pull_ok(&store, &[hist().to_str().unwrap(), &f.c[0]]);
    assert!(all_refs(&store).is_empty());
    assert!(nginx.requests().is_empty());

    let reqs = pull_counted(
        &nginx,
        &store,
        &[&url, &format!("main@{}", f.c[1]), "--base", &f.c[0]],
    );
    assert_no_duplicate_requests(&reqs);
    assert_set_eq(
        &requested_set(&reqs),
        &minus(&objs(1), &objs(0)),
        "objects requested with --base C1",
    );
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[1]));
    assert_pulled(&store, &hist(), &f.c[1], false);
}

/// `--base` must name a complete local commit: a partial one, or one not
/// in the store, is refused before anything is fetched.
#[test]
fn base_must_be_complete_and_present() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let url = nginx.url("hist");
    let (_t, store) = new_store(Mode::Archive);
    let r = pull(&store, &[&url, "main", "--base", &f.c[0]]).assert_clean_failure();
    assert_mentions(&r, &[&f.c[0]]);
    assert_eq!(Counts::of(&nginx.requests()).objects(), 0);
    pull_ok(&store, &[&url, &f.c[0], "--commit-metadata-only"]);
    assert!(is_partial(&store, &f.c[0]));
    let mark = nginx.mark();
    let r = pull(&store, &[&url, "main", "--base", &f.c[0]]).assert_clean_failure();
    assert_mentions(&r, &["partial"]);
    assert_eq!(Counts::of(&nginx.requests_since(mark)).objects(), 0);
    assert!(read_ref(&store, "heads/main").is_none());
    assert_fsck_clean(&store);
}

/// A local cache of `mode` holding C1, made by `ostree pull-local`.
fn c1_cache(cache: &Path, mode: Mode) {
    ostree_init(cache, mode);
    ostree_repo_ok(
        cache,
        ["pull-local", hist().to_str().unwrap(), &fixture().c[0]],
    );
}

/// Pulls C2 from nginx into `store` with `cache` as `--localcache-repo`.
fn pull_c2_with_cache(nginx: &Nginx, store: &Path, cache: &Path) -> Vec<Request> {
    pull_counted(
        nginx,
        store,
        &[
            &nginx.url("hist"),
            &format!("main@{}", fixture().c[1]),
            "--localcache-repo",
            cache.to_str().unwrap(),
        ],
    )
}

/// `--localcache-repo`: objects present in the cache (another mode, made
/// by ostree) are taken from it and never requested; repeated options are
/// all used.
#[test]
fn localcache_objects_are_not_requested() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let t = shared_tempdir();
    let cache = t.path().join("cache");
    c1_cache(&cache, Mode::BareUser);
    let empty = t.path().join("empty");
    ostree_init(&empty, Mode::Archive);

    let (_t, store) = new_store(Mode::Archive);
    let reqs = pull_counted(
        &nginx,
        &store,
        &[
            &nginx.url("hist"),
            &format!("main@{}", f.c[1]),
            "--localcache-repo",
            empty.to_str().unwrap(),
            "--localcache-repo",
            cache.to_str().unwrap(),
        ],
    );
    assert_no_duplicate_requests(&reqs);
    assert_set_eq(
        &requested_set(&reqs),
        &minus(&objs(1), &objs(0)),
        "objects requested with C1 in a local cache",
    );
    // Exactly C2's objects are in the store: the cache's other objects
    // (C1's own commit and replaced files) were not copied.
    assert_set_eq(&store_objects(&store), &objs(1), "objects in the store");
    assert_pulled(&store, &hist(), &f.c[1], false);
}

/// A cache that stores objects as the store does (same mode, same
/// filesystem) gives its objects by hardlink, after verifying them: the
/// store's copy of every shared content object is the cache's inode; what
/// the cache lacks came from the network as new files. A cache in another
/// mode is copied from (no shared inode).
#[test]
fn localcache_objects_are_hardlinked_when_the_mode_matches() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let t = shared_tempdir();
    let ino = |repo: &Path, key: &str| {
        let md = std::fs::symlink_metadata(object_path(repo, &key[..64], "file")).unwrap();
        (md.dev(), md.ino())
    };
    for (cache_mode, linked) in [(Mode::Bare, true), (Mode::BareUser, false)] {
        let cache = t.path().join(format!("cache-{}", cache_mode.name()));
        c1_cache(&cache, cache_mode);
        let (_t, store) = new_store(Mode::Bare);
        let reqs = pull_c2_with_cache(&nginx, &store, &cache);
        assert_set_eq(
            &requested_set(&reqs),
            &minus(&objs(1), &objs(0)),
            "objects requested with C1 in a local cache",
        );
        assert_pulled(&store, &hist(), &f.c[1], false);
        let cache_inodes: BTreeSet<_> = objs(0)
            .iter()
            .filter(|k| k.ends_with(".file"))
            .map(|k| ino(&cache, k))
            .collect();
        for k in objs(1).iter().filter(|k| k.ends_with(".file")) {
            let shared = objs(0).contains(k);
            assert_eq!(
                cache_inodes.contains(&ino(&store, k)),
                shared && linked,
                "{cache_mode:?} cache: {k} (in the cache: {shared})"
            );
        }
    }
}

/// A corrupt object in a local cache never reaches the store: the bad
/// cached copy is skipped and the object fetched from the network, and the
/// store passes fsck.
#[test]
fn corrupt_localcache_object_is_not_trusted() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let t = shared_tempdir();
    let cache = t.path().join("cache");
    c1_cache(&cache, Mode::Bare);
    // A file C1 and C2 share.
    let shared: Vec<_> = objs(0).intersection(&objs(1)).cloned().collect();
    let victim = shared
        .iter()
        .find(|k| {
            k.ends_with(".file") && {
                let p = object_path(&cache, &k[..64], "file");
                std::fs::symlink_metadata(&p).unwrap().file_type().is_file()
                    && std::fs::metadata(&p).unwrap().len() > 100
            }
        })
        .expect("a shared regular file")
        .clone();
    flip_byte(&object_path(&cache, &victim[..64], "file"), 10);

    let (_t, store) = new_store(Mode::Bare);
    let r = pull(
        &store,
        &[
            &nginx.url("hist"),
            &format!("main@{}", f.c[1]),
            "--localcache-repo",
            cache.to_str().unwrap(),
        ],
    );
    // A bad copy in a cache is skipped for the source's good one.
    let r = r.assert_ok();
    assert_pulled(&store, &hist(), &f.c[1], false);
    assert_eq!(
        read_ref(&store, "heads/main").as_deref(),
        Some(&*f.c[1]),
        "{}",
        r.describe()
    );
    let reqs = requested_set(&nginx.requests());
    assert!(
        reqs.contains(&victim),
        "the corrupt cached object must have come from the network"
    );
}

/// `--depth 1` fetches the parent (with its tree) but not the grandparent;
/// `--depth -1` then fetches only what the rest of the history adds.
#[test]
fn depth_fetches_parents() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let url = nginx.url("hist");
    let (_t, store) = new_store(Mode::Archive);

    let r1 = pull_counted(&nginx, &store, &[&url, "main", "--depth", "1"]);
    assert_no_duplicate_requests(&r1);
    assert_set_eq(
        &requested_set(&r1),
        &union(&objs(2), &objs(1)),
        "objects requested with --depth 1",
    );
    assert_eq!(Counts::of(&r1).commitmeta, 2);
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[2]));
    assert_pulled(&store, &hist(), &f.c[2], false);
    assert_pulled(&store, &hist(), &f.c[1], false);
    assert!(!has_object(&store, &format!("{}.commit", f.c[0])));

    let r2 = pull_counted(&nginx, &store, &[&url, "main", "--depth=-1"]);
    assert_no_duplicate_requests(&r2);
    assert_set_eq(
        &requested_set(&r2),
        &minus(&minus(&objs(0), &objs(1)), &objs(2)),
        "objects requested by --depth -1 after --depth 1",
    );
    for c in &f.c {
        assert_pulled(&store, &hist(), c, false);
    }
    let log = ostree_repo_ok(&store, ["log", "main"]).stdout_str();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("commit ")).count(),
        3,
        "ostree log:\n{log}"
    );
}

/// `--depth -1` (and a depth beyond the history) into an empty store
/// fetches every commit of the history once.
#[test]
fn depth_infinite_and_beyond_history() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let all = union(&union(&objs(0), &objs(1)), &objs(2));
    for depth in ["-1", "7"] {
        let (_t, store) = new_store(Mode::Bare);
        let reqs = pull_counted(
            &nginx,
            &store,
            &[&nginx.url("hist"), "main", &format!("--depth={depth}")],
        );
        assert_no_duplicate_requests(&reqs);
        assert_set_eq(&requested_set(&reqs), &all, &format!("--depth {depth}"));
        for c in &f.c {
            assert_pulled(&store, &hist(), c, false);
        }
    }
}

/// A parent the server does not have (404) ends the history walk without
/// failing the pull.
#[test]
fn depth_tolerates_missing_parent() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::BareUser);
    let reqs = pull_counted(&nginx, &store, &[&nginx.url("trunc"), "main", "--depth=-1"]);
    let missing: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.ends_with(&format!("{}.commit", &f.c[0][2..])))
        .collect();
    assert_eq!(
        missing.len(),
        1,
        "the missing parent is requested once: {missing:?}"
    );
    assert_eq!(missing[0].status, 404);
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[2]));
    assert_pulled(&store, &hist(), &f.c[2], false);
    assert_pulled(&store, &hist(), &f.c[1], false);
    assert!(!has_object(&store, &format!("{}.commit", f.c[0])));
    assert!(
        !is_partial(&store, &f.c[0]),
        "a marker for a commit not pulled"
    );
}

/// `--subpath`: only content under the path is requested (and the
/// directories leading to it); the commit stays partial; ostree and arbor
/// can read the pulled part; a later full pull fetches only the rest.
#[test]
fn subpath_fetches_only_that_part() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let url = nginx.url("hist");
    let c3 = &f.c[2];
    let (_t, store) = new_store(Mode::Bare);

    let reqs = pull_counted(&nginx, &store, &[&url, "main", "--subpath", "/d03"]);
    assert_no_duplicate_requests(&reqs);
    let part = TreeObjects::of(&hist(), c3, "/d03");
    let (root_tree, root_meta) = dir_checksums(&hist(), c3, "/");
    let req = requested_set(&reqs);
    assert_set_eq(&of_type(&req, "file"), &part.files, "content requested");
    let mut trees = part.dirtrees.clone();
    trees.insert(format!("{root_tree}.dirtree"));
    assert_set_eq(&of_type(&req, "dirtree"), &trees, "dirtrees requested");
    let mut metas = part.dirmetas.clone();
    metas.insert(format!("{root_meta}.dirmeta"));
    assert_set_eq(&of_type(&req, "dirmeta"), &metas, "dirmetas requested");
    assert_eq!(of_type(&req, "commit").len(), 1);

    assert!(
        is_partial(&store, c3),
        "a subpath pull must leave the commit partial"
    );
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&**c3));
    assert_fsck_clean(&store);
    // Both tools read the pulled part.
    let ours = arbor_repo_ok(&store, ["ls", "-R", "-C", "main", "/d03"]).stdout_str();
    let theirs = ostree_repo_ok(&hist(), ["ls", "-R", "-C", "main", "/d03"]).stdout_str();
    assert_eq!(ours, theirs, "arbor ls of the pulled subpath");
    assert_manifest_eq(
        &checkout_manifest(&store, c3, false, Some("/d03")),
        &checkout_manifest(&hist(), c3, false, Some("/d03")),
        "ostree checkout --subpath=/d03",
    );

    // Two more paths, one of them a single file.
    let before = store_objects(&store);
    let reqs = pull_counted(
        &nginx,
        &store,
        &[&url, "main", "--subpath", "/d01", "--subpath", "/new_1/n0"],
    );
    let want: BTreeSet<String> = TreeObjects::of(&hist(), c3, "/d01")
        .files
        .union(&TreeObjects::of(&hist(), c3, "/new_1/n0").files)
        .cloned()
        .collect();
    assert_set_eq(
        &of_type(&requested_set(&reqs), "file"),
        &minus(&want, &before),
        "content requested for /d01 and /new_1/n0",
    );
    assert!(is_partial(&store, c3));
    assert_fsck_clean(&store);

    // The full pull completes the commit, fetching only what is missing.
    let before = store_objects(&store);
    let reqs = pull_counted(&nginx, &store, &[&url, "main"]);
    assert_no_duplicate_requests(&reqs);
    assert_set_eq(
        &requested_set(&reqs),
        &minus(&objs(2), &before),
        "objects requested by the full pull after subpath pulls",
    );
    assert_pulled(&store, &hist(), c3, false);
}

/// `--mirror` without refs: every ref of the summary goes to
/// `refs/heads`, and the summary is copied verbatim. With a named remote
/// and a ref: `refs/heads/REF`, not `refs/remotes/…`, and no summary copy.
#[test]
fn mirror_writes_heads_and_copies_summary() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Archive);
    pull_ok(&store, &[&nginx.url("hist"), "--mirror"]);
    assert_eq!(
        all_refs(&store),
        BTreeMap::from([
            ("heads/main".to_string(), f.c[2].clone()),
            ("heads/stable".to_string(), f.c[0].clone()),
        ])
    );
    assert_eq!(
        std::fs::read(store.join("summary")).expect("summary copied"),
        std::fs::read(hist().join("summary")).unwrap(),
        "the mirrored summary must be the server's, byte for byte"
    );
    assert_pulled(&store, &hist(), &f.c[2], false);
    assert_pulled(&store, &hist(), &f.c[0], false);
    assert_set_eq(
        &requested_set(&nginx.requests()),
        &union(&objs(0), &objs(2)),
        "objects requested by the mirror pull",
    );
    // ostree reads the mirrored summary.
    ostree_repo_ok(&store, ["summary", "--view"]);

    let (_t2, store2) = new_store(Mode::Bare);
    arbor_repo_ok(
        &store2,
        [
            "remote",
            "add",
            "origin",
            &nginx.url("hist"),
            "--no-sign-verify",
        ],
    );
    pull_ok(&store2, &["origin", "main", "--mirror"]);
    assert_eq!(
        all_refs(&store2),
        BTreeMap::from([("heads/main".to_string(), f.c[2].clone())])
    );
    assert!(
        !store2.join("summary").exists(),
        "summary copied with refs named"
    );
    assert_pulled(&store2, &hist(), &f.c[2], false);
}

/// `--commit-metadata-only`: only commits (and their commitmeta) are
/// requested, never a dirtree, dirmeta or file; the commits stay partial;
/// a later full pull completes the one it names.
#[test]
fn commit_metadata_only_fetches_commits_only() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let url = nginx.url("hist");
    let (_t, store) = new_store(Mode::BareUser);

    let reqs = pull_counted(&nginx, &store, &[&url, "main", "--commit-metadata-only"]);
    let c = Counts::of(&reqs);
    assert_eq!(
        (c.commit, c.commitmeta, c.dirtree, c.dirmeta, c.filez),
        (1, 1, 0, 0, 0),
        "{reqs:#?}"
    );
    assert_set_eq(
        &store_objects(&store),
        &BTreeSet::from([format!("{}.commit", f.c[2])]),
        "objects in the store",
    );
    assert!(is_partial(&store, &f.c[2]));
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c[2]));
    assert_fsck_clean(&store);
    let log = arbor_repo_ok(&store, ["log", "main"]).stdout_str();
    assert!(log.contains("commit 3"), "arbor log:\n{log}");

    let reqs = pull_counted(
        &nginx,
        &store,
        &[&url, "main", "--commit-metadata-only", "--depth=-1"],
    );
    assert_set_eq(
        &requested_set(&reqs),
        &BTreeSet::from([format!("{}.commit", f.c[1]), format!("{}.commit", f.c[0])]),
        "objects requested with --commit-metadata-only --depth -1",
    );
    for c in &f.c {
        assert!(is_partial(&store, c), "{c} should be partial");
    }
    assert_fsck_clean(&store);

    let before = store_objects(&store);
    let reqs = pull_counted(&nginx, &store, &[&url, "main"]);
    assert_set_eq(
        &requested_set(&reqs),
        &minus(&objs(2), &before),
        "full pull after --commit-metadata-only",
    );
    assert_pulled(&store, &hist(), &f.c[2], false);
    assert!(is_partial(&store, &f.c[1]) && is_partial(&store, &f.c[0]));
}
