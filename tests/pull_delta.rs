//! `arbor pull` over HTTP with static deltas made by the real tools:
//! `ostree static-delta generate` (from scratch and from a commit, with and
//! without `--inline`, with and without bsdiff, with fallback objects) and
//! `flatpak build-update-repo --generate-static-deltas`, into bare,
//! bare-user and archive stores. After each pull: `ostree fsck` passes, the
//! commit is complete and checks out exactly as from the source, and
//! nginx's access log shows the superblock and every part fetched, and no
//! object but the fallbacks (detached metadata is asked for once per
//! commit, as libostree does).

mod common;
#[path = "common/delta.rs"]
mod delta_support;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbor::ostree::delta::DeltaName;
use common::*;
use delta_support::*;
use pull_support::*;

struct Www {
    root: PathBuf,
    nginx: Nginx,
}

/// Repositories served by one nginx, each a copy of the delta source with
/// some deltas.
fn www() -> &'static Www {
    static W: OnceLock<Www> = OnceLock::new();
    W.get_or_init(|| {
        let s = delta_source();
        let root = s.base.join("www");
        std::fs::create_dir_all(&root).unwrap();
        let (c1, c2) = (s.c1.as_str(), s.c2.as_str());
        let scratch1: &[&str] = &["--empty", "--to", c1];
        let scratch2: &[&str] = &["--empty", "--to", c2];
        let from: &[&str] = &["--from", c1, "--to", c2];
        serve_copy(&root, "sum", &[scratch1, from, scratch2], true);
        fn inl<'a>(a: &[&'a str]) -> Vec<&'a str> {
            [a, &["--inline"]].concat()
        }
        serve_copy(
            &root,
            "inline",
            &[&inl(scratch1), &inl(from), &inl(scratch2)],
            true,
        );
        let nobs = [from, &["--disable-bsdiff"]].concat();
        serve_copy(&root, "nobsdiff", &[scratch1, &nobs], true);
        // The 1 MiB big.bin is over 1 MB: a fallback object.
        let fb = [scratch2, &["--min-fallback-size=1"]].concat();
        serve_copy(&root, "fallback", &[&fb], true);
        serve_copy(&root, "nosum", &[scratch1, from], false);
        serve_copy(&root, "none", &[], true);
        // Only a scratch delta to C2, for a store that has C1.
        serve_copy(&root, "scratch-only", &[scratch2], true);
        let nginx = Nginx::start(&root);
        Www { root, nginx }
    })
}

const MODES: [Mode; 3] = [Mode::Bare, Mode::BareUser, Mode::Archive];

fn c1() -> String {
    delta_source().c1.clone()
}
fn c2() -> String {
    delta_source().c2.clone()
}

/// Tests run in parallel against one nginx: each serves its repositories
/// under names of its own (symlinks), so its requests can be told apart.
fn alias(test: &str, repo: &str) -> String {
    let name = format!("{test}-{repo}");
    let link = www().root.join(&name);
    if !link.exists() {
        std::os::unix::fs::symlink(repo, &link).unwrap();
    }
    name
}

fn origin(store: &Path, served: &str) {
    add_remote(
        store,
        "origin",
        &www().nginx.url(served),
        &["--no-sign-verify"],
    );
}

fn requests_of(served: &str) -> Vec<Request> {
    www().nginx.requests_under(served)
}

/// The `N already present` of a pull's summary line (absent when none).
fn already_present(r: &Run) -> usize {
    let out = String::from_utf8_lossy(&r.stdout);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[1..] == ["already", "present;"])
        .map_or(0, |w| w[0].parse().unwrap())
}

fn no_objects() -> BTreeSet<String> {
    BTreeSet::new()
}

fn sb_of(repo: &str, name: &DeltaName) -> arbor::ostree::delta::Superblock {
    read_superblock(&www().root.join(repo), name)
}

/// Fresh store: a scratch delta to C1 (pinned, so no summary is read: the
/// delta index finds it), then an update through the C1→C2 delta.
fn scratch_then_update(repo: &str) {
    let s = delta_source();
    let scratch = DeltaName::scratch(s.c1());
    let update = DeltaName::new(Some(s.c1()), s.c2());
    for mode in MODES {
        let served = alias(&format!("stu{}", mode.index()), repo);
        let (_t, store) = new_store(mode);
        origin(&store, &served);
        let r1 = pull_ok(&store, &["origin", &format!("main@{}", c1())]);
        let reqs = requests_of(&served);
        assert_delta_fetched(&reqs, &sb_of(repo, &scratch), &no_objects());
        assert_pulled(&store, &s.repo, &c1(), false);

        let mark = reqs.len();
        let r = pull_ok(&store, &["-v", "origin", "main"]);
        let reqs: Vec<Request> = requests_of(&served).into_iter().skip(mark).collect();
        assert_delta_fetched(&reqs, &sb_of(repo, &update), &no_objects());
        assert_mentions(&r, &[&format!("using static delta {update}")]);
        // The walk that checks C2 after the delta skips the directories C1
        // (complete here) has unchanged: the scratch pull's walk checked
        // every object of C1, this one only the changed directories'.
        let (all, changed) = (already_present(&r1), already_present(&r));
        assert!(changed * 3 < all, "{changed} of {all} objects walked");
        assert_pulled(&store, &s.repo, &c2(), false);
        assert_eq!(read_ref(&store, "remotes/origin/main"), Some(c2()));
    }
}

#[test]
fn scratch_then_update_with_bsdiff() {
    scratch_then_update("sum");
}

#[test]
fn inline_deltas_fetch_no_parts() {
    scratch_then_update("inline");
    // Inline: the superblock carries the parts; no part file exists.
    let s = delta_source();
    let update = DeltaName::new(Some(s.c1()), s.c2());
    assert!(!www().root.join("inline").join(update.part_path(0)).exists());
}

#[test]
fn update_without_bsdiff() {
    scratch_then_update("nobsdiff");
}

/// A fresh pull of C2 by ref: the summary lists the scratch delta.
#[test]
fn scratch_with_fallbacks() {
    let w = www();
    let s = delta_source();
    let name = DeltaName::scratch(s.c2());
    let sb = read_superblock(&w.root.join("fallback"), &name);
    assert_eq!(sb.fallbacks.len(), 1, "big.bin is a fallback");
    let fallbacks: BTreeSet<String> = sb
        .fallbacks
        .iter()
        .map(|f| format!("{}.file", f.object.checksum))
        .collect();
    for mode in MODES {
        let served = alias(&format!("fb{}", mode.index()), "fallback");
        let (_t, store) = new_store(mode);
        origin(&store, &served);
        pull_ok(&store, &["origin", "main"]);
        let reqs = requests_of(&served);
        assert_delta_fetched(&reqs, &sb, &fallbacks);
        assert_pulled(&store, &s.repo, &c2(), false);
    }
}

/// No summary and no index: the superblocks are probed, as libostree does
/// (scratch for a fresh store, from the ref's commit for an update).
#[test]
fn no_summary_probes_superblocks() {
    let w = www();
    let s = delta_source();
    let (_t, store) = new_store(Mode::Archive);
    let served = alias("probe", "nosum");
    let url = w.nginx.url(&served);
    pull_ok(&store, &[&url, &format!("main@{}", c1())]);
    let reqs = requests_of(&served);
    let scratch = DeltaName::scratch(s.c1());
    assert_delta_fetched(&reqs, &sb_of("nosum", &scratch), &no_objects());
    assert_pulled(&store, &s.repo, &c1(), false);
    // Updating the ref: the from-delta is probed first and found.
    let mark = reqs.len();
    pull_ok(&store, &[&url, "main"]);
    let reqs: Vec<Request> = requests_of(&served).into_iter().skip(mark).collect();
    let update = DeltaName::new(Some(s.c1()), s.c2());
    assert_delta_fetched(&reqs, &sb_of("nosum", &update), &no_objects());
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains(&DeltaName::scratch(s.c2()).dir())),
        "no scratch probe once the from-delta was found: {reqs:#?}"
    );
    assert_pulled(&store, &s.repo, &c2(), false);
}

/// A commit named by checksum (libostree#783): found through its index.
#[test]
fn by_commit_checksum() {
    let s = delta_source();
    let (_t, store) = new_store(Mode::BareUser);
    let served = alias("bycommit", "sum");
    origin(&store, &served);
    pull_ok(&store, &["origin", &c2()]);
    let reqs = requests_of(&served);
    let name = DeltaName::scratch(s.c2());
    assert_delta_fetched(&reqs, &sb_of("sum", &name), &no_objects());
    assert_pulled(&store, &s.repo, &c2(), false);
}

#[test]
fn disable_static_deltas_fetches_objects() {
    let s = delta_source();
    let (_t, store) = new_store(Mode::Archive);
    let served = alias("disabled", "sum");
    origin(&store, &served);
    pull_ok(&store, &["--disable-static-deltas", "origin", "main"]);
    let reqs = requests_of(&served);
    assert!(delta_requests(&reqs).is_empty(), "{reqs:#?}");
    assert_set_eq(
        &requested_set(&reqs),
        &commit_objects(&s.repo, &c2()),
        "objects",
    );
    assert_pulled(&store, &s.repo, &c2(), false);
}

#[test]
fn require_static_deltas_without_one_fails() {
    let (_t, store) = new_store(Mode::Archive);
    origin(&store, "none");
    let r = pull(&store, &["--require-static-deltas", "origin", "main"]).assert_clean_failure();
    assert_mentions(&r, &["static deltas required", &c2()]);
    assert_eq!(read_ref(&store, "remotes/origin/main"), None);
    // From a local repository: objects are imported unless deltas are
    // required, and then the local repository's deltas are used.
    let (_t2, store2) = new_store(Mode::Bare);
    let local = www().root.join("sum");
    pull_ok(
        &store2,
        &[
            "--require-static-deltas",
            &local.display().to_string(),
            "main",
        ],
    );
    assert_pulled(&store2, &delta_source().repo, &c2(), false);
}

/// The store has C1 but the server only a scratch delta to C2: nearly all
/// of its objects are here, so fetching the few missing ones one by one
/// transfers less than the part, and `-v` says so.
#[test]
fn present_objects_make_loose_fetches_cheaper() {
    let s = delta_source();
    let (_t, store) = new_store(Mode::Archive);
    let served = alias("cheaper", "scratch-only");
    origin(&store, &served);
    pull_ok(
        &store,
        &[
            "--disable-static-deltas",
            "origin",
            &format!("main@{}", c1()),
        ],
    );
    let mark = requests_of(&served).len();
    let r = pull_ok(&store, &["-v", "origin", "main"]);
    let reqs: Vec<Request> = requests_of(&served).into_iter().skip(mark).collect();
    assert_mentions(&r, &["fetching them one by one"]);
    let name = DeltaName::scratch(s.c2());
    assert!(
        !reqs.iter().any(|q| q.path.ends_with(&name.part_path(0))),
        "the part was not fetched: {reqs:#?}"
    );
    let c1_objects = commit_objects(&s.repo, &c1());
    // The commit itself comes with the superblock.
    let missing: BTreeSet<String> = commit_objects(&s.repo, &c2())
        .difference(&c1_objects)
        .filter(|o| !o.ends_with(".commit"))
        .cloned()
        .collect();
    assert_set_eq(&requested_set(&reqs), &missing, "objects fetched");
    assert_pulled(&store, &s.repo, &c2(), false);
}

/// Objects in a `--localcache-repo` cost no transfer either: with C1 in a
/// cache and only a scratch delta to C2 on the server, the part is left
/// out, the cache supplies C1's objects and the few others are fetched.
#[test]
fn local_cache_objects_count_as_present() {
    let s = delta_source();
    let (_tc, cache) = new_store(Mode::Archive);
    pull_ok(
        &cache,
        &[&s.repo.display().to_string(), &format!("main@{}", c1())],
    );
    let served = alias("cache", "scratch-only");
    let (_t, store) = new_store(Mode::Bare);
    origin(&store, &served);
    let r = pull_ok(
        &store,
        &[
            "-v",
            "--localcache-repo",
            &cache.display().to_string(),
            "origin",
            "main",
        ],
    );
    let reqs = requests_of(&served);
    assert_mentions(&r, &["nor a local cache", "fetching them one by one"]);
    let name = DeltaName::scratch(s.c2());
    assert!(
        !reqs.iter().any(|q| q.path.ends_with(&name.part_path(0))),
        "the part was not fetched: {reqs:#?}"
    );
    let c1_objects = commit_objects(&s.repo, &c1());
    let missing: BTreeSet<String> = commit_objects(&s.repo, &c2())
        .difference(&c1_objects)
        .filter(|o| !o.ends_with(".commit"))
        .cloned()
        .collect();
    assert_set_eq(&requested_set(&reqs), &missing, "objects fetched");
    assert_pulled(&store, &s.repo, &c2(), false);
}

/// A flatpak-built repository: `flatpak build-export` of a plain directory
/// (no runtime needed), then `build-update-repo --generate-static-deltas`.
#[test]
fn flatpak_deltas() {
    let base = scratch_dir("delta-flatpak");
    let repo = base.join("www/repo");
    std::fs::create_dir_all(base.join("www")).unwrap();
    let app = base.join("app");
    let build = |version: &str| {
        let _ = std::fs::remove_dir_all(&app);
        make_dir(&app, 0o755);
        std::fs::write(
            app.join("metadata"),
            "[Application]\nname=org.example.Arbor\nruntime=org.example.Platform/x86_64/1\n",
        )
        .unwrap();
        make_dir(&app.join("files"), 0o755);
        make_dir(&app.join("files/bin"), 0o755);
        write_file(
            &app.join("files/bin/hello"),
            format!("#!/bin/sh\necho {version}\n").as_bytes(),
            0o755,
        );
        let mut data = pseudo_random_bytes(40_000, 3);
        data[39_000..39_010].copy_from_slice(version.as_bytes().repeat(10)[..10].as_ref());
        write_file(&app.join("files/data.bin"), &data, 0o644);
        let mut c = std::process::Command::new("flatpak");
        c.args(["build-finish", "--command=hello"]).arg(&app);
        run(c).assert_ok();
        let mut c = std::process::Command::new("flatpak");
        c.args(["build-export", "--subject", version])
            .arg(&repo)
            .arg(&app)
            .arg("stable");
        run(c).assert_ok();
    };
    build("1");
    let first = ostree_rev_parse(&repo, "app/org.example.Arbor/x86_64/stable");
    build("2");
    let second = ostree_rev_parse(&repo, "app/org.example.Arbor/x86_64/stable");
    let mut c = std::process::Command::new("flatpak");
    c.args(["build-update-repo", "--generate-static-deltas"])
        .arg(&repo);
    run(c).assert_ok();
    let nginx = Nginx::start(&base.join("www"));
    let r = "app/org.example.Arbor/x86_64/stable";
    let (c_first, c_second) = (
        Checksum::from_hex(&first).unwrap(),
        Checksum::from_hex(&second).unwrap(),
    );
    for mode in MODES {
        // Fresh: flatpak published a scratch delta of the head.
        let (_t, store) = new_store(mode);
        add_remote(&store, "flathub", &nginx.url("repo"), &["--no-sign-verify"]);
        let mark = nginx.mark();
        pull_ok(&store, &["flathub", r]);
        let reqs = nginx.requests_since(mark);
        let scratch = DeltaName::scratch(c_second);
        assert_delta_fetched(&reqs, &read_superblock(&repo, &scratch), &no_objects());
        assert_pulled(&store, &repo, &second, false);
        // An update from the previous commit, and its delta.
        let (_t, store) = new_store(mode);
        add_remote(&store, "flathub", &nginx.url("repo"), &["--no-sign-verify"]);
        pull_ok(
            &store,
            &[
                "--disable-static-deltas",
                "flathub",
                &format!("{r}@{first}"),
            ],
        );
        let mark = nginx.mark();
        pull_ok(&store, &["flathub", r]);
        let reqs = nginx.requests_since(mark);
        let update = DeltaName::new(Some(c_first), c_second);
        assert_delta_fetched(&reqs, &read_superblock(&repo, &update), &no_objects());
        assert_pulled(&store, &repo, &second, false);
    }
}

use arbor::ostree::Checksum;

/// Signed superblocks (`OSTSGNDT`) and commit signatures carried in the
/// superblock, for a remote that verifies with ed25519: a superblock
/// signed by a trusted key is used; one signed by another key, or carrying
/// a commit signed by another key, is refused before any part is fetched.
#[test]
fn signed_superblocks_and_commit_signatures() {
    use arbor::ostree::delta::SignedSuperblock;
    use arbor::ostree::{Metadata, Value};
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};

    let s = delta_source();
    let root = s.base.join("signed-www");
    std::fs::create_dir_all(&root).unwrap();
    let trusted = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[9; 32]);
    let sigs = |k: &SigningKey, data: &[u8]| {
        let mut md = Metadata::new();
        md.insert(
            "ostree.sign.ed25519",
            Value::ByteArrays(vec![k.sign(data).to_bytes().to_vec()]),
        );
        md
    };
    let name = DeltaName::scratch(s.c2());
    // `commit_key` signs C2 (its detached metadata is then carried in the
    // superblock); `sb_key` signs the superblock.
    let make = |dir: &str, commit_key: &SigningKey, sb_key: &SigningKey| {
        let repo = serve_copy(&root, dir, &[], false);
        let commit = std::fs::read(object_path(&repo, &s.c2, "commit")).unwrap();
        std::fs::write(
            object_path(&repo, &s.c2, "commitmeta"),
            sigs(commit_key, &commit).serialize(),
        )
        .unwrap();
        generate_in_repo(&repo, &["--empty", "--to", &s.c2]);
        let p = repo.join(name.superblock_path());
        let inner = std::fs::read(&p).unwrap();
        let signed = SignedSuperblock {
            superblock: &inner,
            signatures: sigs(sb_key, &inner),
        };
        std::fs::write(&p, signed.serialize()).unwrap();
        ostree_summary_update(&repo);
        dir.to_string()
    };
    let good = make("good", &trusted, &trusted);
    let bad_sb = make("badsb", &trusted, &other);
    let bad_commit = make("badcommit", &other, &trusted);
    let nginx = Nginx::start(&root);
    let key = base64::engine::general_purpose::STANDARD.encode(trusted.verifying_key().to_bytes());
    let verify = format!("--sign-verify=ed25519=inline:{key}");
    let store_for = |served: &str| {
        let (t, store) = new_store(Mode::Archive);
        add_remote(
            &store,
            "origin",
            &nginx.url(served),
            &["--no-gpg-verify", &verify],
        );
        (t, store)
    };

    let (_t, store) = store_for(&good);
    pull_ok(&store, &["origin", "main"]);
    let reqs = nginx.requests_under(&good);
    let sb = arbor::ostree::delta::Superblock::parse(
        SignedSuperblock::parse(
            &std::fs::read(root.join(&good).join(name.superblock_path())).unwrap(),
        )
        .unwrap()
        .superblock,
    )
    .unwrap();
    assert!(sb.commitmeta().is_some());
    assert_delta_fetched(&reqs, &sb, &no_objects());
    // The superblock carried the verified detached metadata: not fetched.
    assert!(
        reqs.iter().all(|r| !r.path.ends_with(".commitmeta")),
        "{reqs:?}"
    );
    assert_pulled(&store, &s.repo, &c2(), false);

    for (served, needles) in [
        (&bad_sb, vec!["static delta", "signature"]),
        (&bad_commit, vec!["commit", &s.c2[..], "ed25519"]),
    ] {
        let (_t, store) = store_for(served);
        let r = pull(&store, &["origin", "main"]).assert_clean_failure();
        assert_mentions(&r, &needles);
        let reqs = nginx.requests_under(served);
        assert!(
            !reqs.iter().any(|q| q.path.contains(&name.part_path(0))),
            "no part fetched: {reqs:#?}"
        );
        assert_eq!(read_ref(&store, "remotes/origin/main"), None);
        assert!(!object_path(&store, &s.c2, "commit").exists());
    }
}

/// A remote that verifies its (ed25519-signed) summary, whose delta is
/// listed only by the unsigned `delta-indexes/` (as when someone able to
/// rewrite them forged one): the superblock carries the real C2 but forged
/// detached metadata. With neither the superblock nor the commit verifiable
/// the delta is not used (no part fetched, the forged metadata not stored):
/// the pull fetches C2's objects. When the superblock is signed by a
/// trusted key, the same index is trusted.
#[test]
fn unsigned_index_does_not_vouch_for_a_delta_under_a_signed_summary() {
    use arbor::ostree::delta::{DeltaIndex, DeltaList, SignedSuperblock};
    use arbor::ostree::{Metadata, Value};
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};

    let s = delta_source();
    let root = s.base.join("index-trust-www");
    std::fs::create_dir_all(&root).unwrap();
    let key = SigningKey::from_bytes(&[11; 32]);
    let sigs = |data: &[u8]| {
        let mut md = Metadata::new();
        md.insert(
            "ostree.sign.ed25519",
            Value::ByteArrays(vec![key.sign(data).to_bytes().to_vec()]),
        );
        md
    };
    let name = DeltaName::scratch(s.c2());
    let make = |dir: &str, sign_superblock: bool| {
        // The summary (signed) is made before the delta: it does not list it.
        let repo = serve_copy(&root, dir, &[], true);
        let summary = std::fs::read(repo.join("summary")).unwrap();
        let md = arbor::ostree::Summary::parse(&summary).unwrap().metadata;
        assert_eq!(
            md.get("ostree.summary.indexed-deltas"),
            Some(&Value::Bool(true))
        );
        std::fs::write(repo.join("summary.sig"), sigs(&summary).serialize()).unwrap();
        generate_in_repo(&repo, &["--empty", "--to", &s.c2]);
        let mut sb = read_superblock(&repo, &name);
        let mut forged = Metadata::new();
        forged.insert("forged", Value::Str("by whoever wrote the index".into()));
        sb.metadata.insert(
            name.commitmeta_key(),
            Value::Other {
                typestr: "a{sv}".into(),
                data: forged.serialize(),
            },
        );
        let inner = sb.serialize();
        let file = if sign_superblock {
            SignedSuperblock {
                superblock: &inner,
                signatures: sigs(&inner),
            }
            .serialize()
        } else {
            inner.clone()
        };
        std::fs::write(repo.join(name.superblock_path()), &file).unwrap();
        let index = DeltaIndex::new(DeltaList(vec![(name, Checksum::digest(&file))]));
        let p = repo.join(DeltaName::index_path(&s.c2()));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, index.serialize()).unwrap();
        dir.to_string()
    };
    let forged = make("forged", false);
    let signed = make("signed", true);
    let nginx = Nginx::start(&root);
    let pk = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    // The summary is verified with the key, commits are not.
    let key_setting = format!("verification-ed25519-key={pk}");
    let store_for = |served: &str| {
        let (t, store) = new_store(Mode::Archive);
        add_remote(
            &store,
            "origin",
            &nginx.url(served),
            &[
                "--no-gpg-verify",
                "--set",
                &key_setting,
                "--set",
                "sign-verify-summary=true",
            ],
        );
        (t, store)
    };

    let (_t, store) = store_for(&forged);
    let r = pull_ok(&store, &["-v", "origin", "main"]);
    assert_mentions(&r, &["unsigned delta index", "fetching objects"]);
    let reqs = nginx.requests_under(&forged);
    assert!(
        reqs.iter()
            .any(|q| q.path.ends_with(&name.superblock_path())),
        "the superblock was looked at: {reqs:#?}"
    );
    assert!(
        !reqs.iter().any(|q| q.path.contains(&name.part_path(0))),
        "no part fetched: {reqs:#?}"
    );
    assert!(!object_path(&store, &s.c2, "commitmeta").exists());
    assert_pulled(&store, &s.repo, &c2(), false);

    // Signed by the key the remote trusts: used.
    let (_t, store) = store_for(&signed);
    pull_ok(&store, &["origin", "main"]);
    let reqs = nginx.requests_under(&signed);
    assert!(
        reqs.iter().any(|q| q.path.contains(&name.part_path(0))),
        "the delta was used: {reqs:#?}"
    );
    assert_pulled(&store, &s.repo, &c2(), false);
}

/// The store has C1, a local cache every object of C2 but the two that
/// C1 → C2's part makes with bsdiff from C1's files (30 and 60 KB, where
/// the part holds patches of a few hundred bytes): fetching those two as
/// objects would cost their full sizes, so the part is fetched, and `-v`
/// says why. (Their share of the part's file size, a few KB, used to make
/// the loose objects look cheaper.)
#[test]
fn bsdiff_parts_are_not_undercut_by_their_objects() {
    let s = delta_source();
    let (_tc, cache) = new_store(Mode::Archive);
    pull_ok(
        &cache,
        &[&s.repo.display().to_string(), &format!("main@{}", c2())],
    );
    for path in ["/lib/libbar.so.2", "/data/blob.bin"] {
        let ls = ostree_repo_ok(&s.repo, ["ls", "-C", &c2(), path]).stdout_str();
        let sum = ls
            .split_whitespace()
            .find(|w| w.len() == 64)
            .unwrap_or_else(|| panic!("checksum in {ls}"));
        std::fs::remove_file(object_path(&cache, sum, "filez")).unwrap();
    }
    let served = alias("bsdiffcost", "sum");
    let (_t, store) = new_store(Mode::Bare);
    origin(&store, &served);
    pull_ok(
        &store,
        &[
            "--disable-static-deltas",
            "origin",
            &format!("main@{}", c1()),
        ],
    );
    let r = pull_ok(
        &store,
        &[
            "-v",
            "--localcache-repo",
            &cache.display().to_string(),
            "origin",
            "main",
        ],
    );
    assert_mentions(&r, &["2 of its", "rather than them one by one"]);
    let name = DeltaName::new(Some(s.c1()), s.c2());
    let reqs = requests_of(&served);
    assert!(
        reqs.iter().any(|q| q.path.ends_with(&name.part_path(0))),
        "the part was fetched: {reqs:#?}"
    );
    assert_pulled(&store, &s.repo, &c2(), false);
}

/// A delta the summary lists but the server lacks a file of (a part, or
/// the superblock: published incompletely): the pull fetches objects
/// instead, keeping what the delta verified; with
/// `--require-static-deltas` it fails naming the delta. (libostree falls
/// back for a missing superblock only.)
#[test]
fn missing_delta_files_fall_back_to_objects() {
    let s = delta_source();
    let root = s.base.join("missing-www");
    std::fs::create_dir_all(&root).unwrap();
    let from: &[&str] = &["--from", &s.c1, "--to", &s.c2];
    let name = DeltaName::new(Some(s.c1()), s.c2());
    let nopart = serve_copy(&root, "nopart", &[from], true);
    std::fs::remove_file(nopart.join(name.part_path(0))).unwrap();
    let nosb = serve_copy(&root, "nosb", &[from], true);
    std::fs::remove_file(nosb.join(name.superblock_path())).unwrap();
    let nginx = Nginx::start(&root);
    for served in ["nopart", "nosb"] {
        let at_c1 = || {
            let (t, store) = new_store(Mode::Archive);
            add_remote(&store, "origin", &nginx.url(served), &["--no-sign-verify"]);
            pull_ok(
                &store,
                &[
                    "--disable-static-deltas",
                    "origin",
                    &format!("main@{}", c1()),
                ],
            );
            (t, store)
        };
        let (_t, store) = at_c1();
        let r = pull_ok(&store, &["-v", "origin", "main"]);
        assert_mentions(
            &r,
            &[&format!("static delta {name}"), "fetching objects instead"],
        );
        assert_pulled(&store, &s.repo, &c2(), false);

        let (_t, store) = at_c1();
        let r = pull(&store, &["--require-static-deltas", "origin", "main"]).assert_clean_failure();
        assert_mentions(&r, &[&format!("static delta {name}")]);
        assert_eq!(read_ref(&store, "remotes/origin/main"), Some(c1()));
    }
}
