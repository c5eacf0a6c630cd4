//! `arbor pull` over HTTP from archive repositories made by the real
//! `ostree` and served by a real nginx on 127.0.0.1.
//!
//! Every successful pull is checked the same way: `ostree fsck` passes on
//! arbor's store, the commit is complete (no `commitpartial`), `ostree
//! checkout` of the pulled commit from arbor's store has exactly the
//! manifest of `ostree checkout` from the source, the refs written are
//! exactly the expected ones, and nginx's access log shows exactly which
//! files were requested (every object of the commit once, nothing else).

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use pull_support::*;

/// The nginx document root:
/// * `edge/`: archive repo, `main` = the edge tree, `other` = the small
///   tree, with a summary;
/// * `nosum/`: the same repo without a summary;
/// * `canon/`: archive repo whose `main` is the edge tree as committed to a
///   bare-user-only repo (canonical permissions: storable in every mode);
/// * `meta/`: archive repo whose commit has detached metadata
///   (`.commitmeta`);
/// * `bare/`: a bare-mode repo (not servable over HTTP).
struct Fixture {
    www: PathBuf,
    edge: String,
    other: String,
    canon: String,
    /// `meta/`: `main` = the small tree with detached metadata.
    meta: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("pull-http");
        let www = base.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let tree = pull_edge_tree();
        let edge_repo = www.join("edge");
        ostree_init(&edge_repo, Mode::Archive);
        let edge = ostree_commit(
            &edge_repo,
            &tree.path,
            "main",
            &CommitOpts::new("edge", "edge tree", TS),
        );
        let small = base.join("small");
        build_small_tree(&small);
        let other = ostree_commit(
            &edge_repo,
            &small,
            "other",
            &CommitOpts::new("small", "", TS + 1),
        );
        ostree_summary_update(&edge_repo);
        copy_tree(&edge_repo, &www.join("nosum"));
        std::fs::remove_file(www.join("nosum/summary")).unwrap();

        let buo = base.join("buo");
        ostree_init(&buo, Mode::BareUserOnly);
        let canon = ostree_commit(&buo, &tree.path, "main", &CommitOpts::new("canon", "", TS));
        let canon_repo = www.join("canon");
        ostree_init(&canon_repo, Mode::Archive);
        ostree_repo_ok(&canon_repo, ["pull-local", buo.to_str().unwrap(), "main"]);
        ostree_summary_update(&canon_repo);

        let meta_repo = www.join("meta");
        ostree_init(&meta_repo, Mode::Archive);
        let r = ostree_repo_ok(
            &meta_repo,
            [
                "commit".to_string(),
                "--fsync=false".into(),
                "--branch=main".into(),
                format!("--tree=dir={}", small.display()),
                "--subject=detached".into(),
                format!("--timestamp=@{TS}"),
                "--add-detached-metadata-string=arbor.test=detached value".into(),
            ],
        );
        let meta = r.stdout_str().trim().to_string();
        ostree_summary_update(&meta_repo);

        let bare_repo = www.join("bare");
        ostree_init(&bare_repo, Mode::Bare);
        ostree_commit(&bare_repo, &small, "main", &CommitOpts::new("bare", "", TS));
        ostree_summary_update(&bare_repo);
        Fixture {
            www,
            edge,
            other,
            canon,
            meta,
        }
    })
}

fn src(name: &str) -> PathBuf {
    fixture().www.join(name)
}

/// The refs `all_refs` should find, from `(ref, commit)` pairs.
fn refs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

/// The requests of a fresh pull of exactly one commit, with the ref
/// resolved from the summary: the summary once, its delta index once (404:
/// the server has no delta; ostree's summaries always say
/// `ostree.summary.indexed-deltas`), the commitmeta once (404: there is
/// none), every object of the commit once, nothing else.
#[track_caller]
fn assert_fresh_pull_requests(reqs: &[Request], source: &std::path::Path, commit: &str) {
    let c = Counts::of(reqs);
    assert_eq!(c.summary, 1, "summary requests: {reqs:#?}");
    assert_eq!(c.refs, 0, "refs/ requests (the summary has the ref)");
    assert_eq!(c.commitmeta, 1, "commitmeta requests");
    assert_eq!(c.deltas, 1, "delta index requests: {reqs:#?}");
    assert_eq!(c.other, 0, "unexpected requests: {reqs:#?}");
    assert_no_duplicate_requests(reqs);
    assert_set_eq(
        &requested_set(reqs),
        &commit_objects(source, commit),
        "objects requested",
    );
    // Order (as libostree): summary, delta index, commitmeta and commit
    // (both in flight at once, so nginx logs them in either order), then
    // the tree.
    let kinds: Vec<Kind> = reqs.iter().map(|r| kind_of(&r.path)).collect();
    let mut first = kinds[..4].to_vec();
    first[2..].sort();
    assert_eq!(
        first,
        [Kind::Summary, Kind::Delta, Kind::Commit, Kind::CommitMeta],
        "first requests: {:#?}",
        &reqs[..4]
    );
    assert!(reqs[1].path.contains("/delta-indexes/"), "{:#?}", reqs[1]);
    for r in reqs {
        let expected = if matches!(kind_of(&r.path), Kind::CommitMeta | Kind::Delta) {
            404
        } else {
            200
        };
        assert_eq!(r.status, expected, "status of {}", r.path);
    }
}

fn remote_pull_into(mode: Mode) {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    // One mode keeps the default (fsync on), so that path is covered too.
    let (_t, store) = if mode == Mode::Bare {
        new_synced_store(mode)
    } else {
        new_store(mode)
    };
    add_remote(&store, "origin", &nginx.url("edge"), &["--no-sign-verify"]);
    pull_ok(&store, &["origin", "main"]);

    assert_eq!(
        all_refs(&store),
        refs(&[("remotes/origin/main", &f.edge)]),
        "refs after pulling origin main"
    );
    assert_pulled(&store, &src("edge"), &f.edge, user_checkout(mode));
    assert_fresh_pull_requests(&nginx.requests(), &src("edge"), &f.edge);
    // Exactly the commit's objects are in the store.
    assert_set_eq(
        &store_objects(&store),
        &commit_objects(&src("edge"), &f.edge),
        "objects in the store",
    );
    // ostree reads the pulled ref under the remote's name.
    assert_eq!(ostree_rev_parse(&store, "origin:main"), f.edge);
}

#[test]
fn remote_pull_into_bare() {
    remote_pull_into(Mode::Bare);
}

#[test]
fn remote_pull_into_bare_user() {
    remote_pull_into(Mode::BareUser);
}

#[test]
fn remote_pull_into_archive() {
    remote_pull_into(Mode::Archive);
}

/// bare-user-only stores hold canonical-permission trees: the same edge
/// tree committed to a bare-user-only repo by ostree pulls and checks out
/// (user mode) exactly as from the source.
#[test]
fn url_pull_into_bare_user_only() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::BareUserOnly);
    pull_ok(&store, &[&nginx.url("canon"), "main"]);
    assert_eq!(all_refs(&store), refs(&[("heads/main", &f.canon)]));
    assert_pulled(&store, &src("canon"), &f.canon, true);
    assert_fresh_pull_requests(&nginx.requests(), &src("canon"), &f.canon);
}

/// A tree with setuid/setgid files cannot be stored in bare-user-only:
/// the pull fails naming the offending object, no ref is written, and the
/// store stays consistent (the commit stays partial, fsck passes).
#[test]
fn bare_user_only_refuses_setuid_objects() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::BareUserOnly);
    let r = pull(&store, &[&nginx.url("edge"), "main"]).assert_clean_failure();
    let setuid = file_checksum(&src("edge"), &f.edge, "/setuid_04755");
    let setgid = file_checksum(&src("edge"), &f.edge, "/setgid_02755");
    let text = r.combined();
    assert!(
        text.contains(&setuid) || text.contains(&setgid),
        "the error should name the setuid or setgid object ({setuid} / {setgid})\n{}",
        r.describe()
    );
    assert!(all_refs(&store).is_empty(), "no ref may be written");
    assert!(
        !store_objects(&store).contains(&format!("{setuid}.file"))
            && !store_objects(&store).contains(&format!("{setgid}.file")),
        "an unstorable object was written"
    );
    // The refused objects are content, reached only after the commit was
    // written (with its partial marker first): the commit is stored and
    // stays marked partial, since its tree can never be completed here.
    assert!(
        has_object(&store, &format!("{}.commit", f.edge)) && is_partial(&store, &f.edge),
        "the commit must be stored and marked partial\n{}",
        r.describe()
    );
    assert_fsck_clean(&store);
}

/// A URL source writes `refs/heads/REF`, a named remote
/// `refs/remotes/NAME/REF`; the second pull of a commit already present
/// transfers no object, only asks for its detached metadata again.
#[test]
fn url_and_remote_ref_destinations_and_repull() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Archive);
    pull_ok(&store, &[&nginx.url("edge/"), "main"]);
    assert_eq!(all_refs(&store), refs(&[("heads/main", &f.edge)]));
    assert_pulled(&store, &src("edge"), &f.edge, false);
    assert_fresh_pull_requests(&nginx.requests(), &src("edge"), &f.edge);

    add_remote(&store, "origin", &nginx.url("edge"), &["--no-sign-verify"]);
    let mark = nginx.mark();
    pull_ok(&store, &["origin", "main"]);
    let again = nginx.requests_since(mark);
    let c = Counts::of(&again);
    // Only the commit's detached metadata is asked for again (libostree
    // does the same, so that signatures added since reach the store).
    assert_eq!(
        (c.objects(), c.commitmeta),
        (1, 1),
        "pulling a commit already present must request no object but its commitmeta: {again:#?}"
    );
    assert_eq!(c.summary, 1);
    assert_eq!(
        all_refs(&store),
        refs(&[("heads/main", &f.edge), ("remotes/origin/main", &f.edge)])
    );
    assert_pulled(&store, &src("edge"), &f.edge, false);
}

/// With no ref named, every ref of the summary is pulled.
#[test]
fn pull_all_refs_from_summary() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Bare);
    add_remote(&store, "origin", &nginx.url("edge"), &["--no-sign-verify"]);
    pull_ok(&store, &["origin"]);
    assert_eq!(
        all_refs(&store),
        refs(&[
            ("remotes/origin/main", &f.edge),
            ("remotes/origin/other", &f.other)
        ])
    );
    assert_pulled(&store, &src("edge"), &f.edge, false);
    assert_pulled(&store, &src("edge"), &f.other, false);
    let reqs = nginx.requests();
    let c = Counts::of(&reqs);
    assert_eq!((c.summary, c.refs, c.commitmeta, c.other), (1, 0, 2, 0));
    assert_no_duplicate_requests(&reqs);
    let mut expected = commit_objects(&src("edge"), &f.edge);
    expected.extend(commit_objects(&src("edge"), &f.other));
    assert_set_eq(&requested_set(&reqs), &expected, "objects requested");
}

/// Without a summary a named ref resolves through `refs/heads/REF`; pulling
/// every ref is impossible and says why.
#[test]
fn no_summary_named_ref_and_all_refs() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::BareUser);
    pull_ok(&store, &[&nginx.url("nosum"), "main"]);
    assert_eq!(all_refs(&store), refs(&[("heads/main", &f.edge)]));
    assert_pulled(&store, &src("nosum"), &f.edge, false);
    let reqs = nginx.requests();
    let summary: Vec<_> = reqs
        .iter()
        .filter(|r| kind_of(&r.path) == Kind::Summary)
        .collect();
    assert!(
        summary.len() <= 1 && summary.iter().all(|r| r.status == 404),
        "summary requests: {summary:?}"
    );
    let refs: Vec<_> = reqs
        .iter()
        .filter(|r| kind_of(&r.path) == Kind::Ref)
        .collect();
    assert_eq!(refs.len(), 1, "refs/ requests: {refs:?}");
    assert_eq!(refs[0].path, "/nosum/refs/heads/main");
    assert_eq!(refs[0].status, 200);
    assert_no_duplicate_requests(&reqs);
    assert_set_eq(
        &requested_set(&reqs),
        &commit_objects(&src("nosum"), &f.edge),
        "objects requested",
    );

    let (_t2, store2) = new_store(Mode::Archive);
    let mark = nginx.mark();
    let r = pull(&store2, &[&nginx.url("nosum")]).assert_clean_failure();
    assert_mentions(&r, &["summary"]);
    assert_eq!(Counts::of(&nginx.requests_since(mark)).objects(), 0);
    assert!(all_refs(&store2).is_empty());
}

/// `REF@COMMIT` needs neither the summary nor `refs/`; a bare checksum
/// pulls the commit without writing any ref.
#[test]
fn pinned_ref_and_bare_checksum() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Bare);
    pull_ok(
        &store,
        &[&nginx.url("nosum"), &format!("pinned@{}", f.other)],
    );
    let reqs = nginx.requests();
    let c = Counts::of(&reqs);
    assert_eq!((c.summary, c.refs, c.other), (0, 0, 0), "{reqs:#?}");
    assert_eq!(all_refs(&store), refs(&[("heads/pinned", &f.other)]));
    assert_pulled(&store, &src("edge"), &f.other, false);

    let (_t2, store2) = new_store(Mode::Archive);
    let mark = nginx.mark();
    pull_ok(&store2, &[&nginx.url("nosum"), &f.edge]);
    let reqs = nginx.requests_since(mark);
    let c = Counts::of(&reqs);
    assert_eq!((c.summary, c.refs, c.other), (0, 0, 0), "{reqs:#?}");
    assert!(
        all_refs(&store2).is_empty(),
        "a bare checksum writes no ref"
    );
    assert_pulled(&store2, &src("edge"), &f.edge, false);
}

/// A ref the source does not have fails cleanly, naming it, and fetches
/// nothing.
#[test]
fn unknown_ref_fails_cleanly() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Archive);
    for source in ["edge", "nosum"] {
        let r = pull(&store, &[&nginx.url(source), "no-such-ref"]).assert_clean_failure();
        assert_mentions(&r, &["no-such-ref"]);
    }
    assert_eq!(Counts::of(&nginx.requests()).objects(), 0);
    assert!(all_refs(&store).is_empty());
    assert!(store_objects(&store).is_empty());
}

/// Remotes live in the config in ostree's syntax: ostree sees them, and
/// `remote refs/list/delete` work.
#[test]
fn remote_commands_interoperate_with_ostree() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Bare);
    let url = nginx.url("edge");
    add_remote(&store, "origin", &url, &["--no-sign-verify"]);
    let list = arbor_repo_ok(&store, ["remote", "list"]).stdout_str();
    assert_eq!(list, format!("origin\t{url}\n"));
    assert_eq!(
        ostree_repo_ok(&store, ["remote", "list"])
            .stdout_str()
            .trim(),
        "origin"
    );
    assert_eq!(
        ostree_repo_ok(&store, ["remote", "show-url", "origin"])
            .stdout_str()
            .trim(),
        url
    );
    let refs = arbor_repo_ok(&store, ["remote", "refs", "origin"]).stdout_str();
    let mut lines: Vec<&str> = refs.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            format!("origin:main\t{}", f.edge),
            format!("origin:other\t{}", f.other)
        ]
    );
    // The same remote as ostree sees it: ostree itself can pull with it.
    let ostree_store = shared_tempdir();
    let orepo = ostree_store.path().join("o");
    ostree_init(&orepo, Mode::Archive);
    std::fs::copy(store.join("config"), orepo.join("config")).unwrap();
    ostree_repo_ok(&orepo, ["config", "set", "core.mode", "archive-z2"]);
    ostree_repo_ok(&orepo, ["pull", "origin", "other"]);
    assert_eq!(ostree_rev_parse(&orepo, "origin:other"), f.other);

    arbor_repo_ok(&store, ["remote", "delete", "origin"]);
    assert_eq!(arbor_repo_ok(&store, ["remote", "list"]).stdout_str(), "");
    assert_eq!(
        ostree_repo_ok(&store, ["remote", "list"])
            .stdout_str()
            .trim(),
        ""
    );
    arbor_repo(&store, ["pull", "origin", "main"]).assert_clean_failure();
}

/// A remote added without `--no-sign-verify` requires GPG signatures: an
/// unsigned commit is refused once its commit object is fetched, before
/// any of its tree (tests/pull_gpg.rs covers signed commits).
#[test]
fn signed_remote_is_refused() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Bare);
    arbor_repo_ok(&store, ["remote", "add", "signed", &nginx.url("edge")]);
    let v = ostree_repo(&store, ["config", "get", "remote \"signed\".gpg-verify"]);
    assert!(
        !v.success() || v.stdout_str().trim() == "true",
        "gpg-verify must be on (default) for a remote added without --no-sign-verify\n{}",
        v.describe()
    );
    let r = pull(&store, &["signed", "main"]).assert_clean_failure();
    assert_mentions(&r, &["signed", "no GPG signatures", "--no-sign-verify"]);
    assert_no_tree_requests(&nginx.requests());
    assert!(all_refs(&store).is_empty());
    let _ = f;
}

/// A commit's detached metadata (`.commitmeta`, 200 here) is pulled with
/// it, byte for byte, and ostree reads it from arbor's store.
#[test]
fn detached_metadata_is_pulled() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Bare);
    pull_ok(&store, &[&nginx.url("meta"), "main"]);
    assert_pulled(&store, &src("meta"), &f.meta, false);
    let reqs = nginx.requests();
    let cm: Vec<_> = reqs
        .iter()
        .filter(|r| kind_of(&r.path) == Kind::CommitMeta)
        .collect();
    assert_eq!(cm.len(), 1);
    assert_eq!(cm[0].status, 200);
    assert_eq!(
        std::fs::read(object_path(&store, &f.meta, "commitmeta")).expect("commitmeta stored"),
        std::fs::read(object_path(&src("meta"), &f.meta, "commitmeta")).unwrap()
    );
    let shown = ostree_repo_ok(
        &store,
        [
            "show",
            "--print-detached-metadata-key=arbor.test",
            f.meta.as_str(),
        ],
    )
    .stdout_str();
    assert!(shown.contains("detached value"), "ostree show: {shown}");
}

/// A repository in bare mode served over HTTP has no `.filez` objects:
/// the pull fails cleanly (ostree refuses it too), writing no ref and
/// leaving a consistent store.
#[test]
fn bare_repo_over_http_fails_cleanly() {
    let f = fixture();
    let nginx = Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Bare);
    let r = pull(&store, &[&nginx.url("bare"), "main"]).assert_clean_failure();
    assert_mentions(&r, &[&nginx.url("bare")]);
    assert!(all_refs(&store).is_empty());
    assert_fsck_clean(&store);
    let _ = f;
}
