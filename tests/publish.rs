//! The publishing side: arbor writes summaries, delta indexes, static
//! deltas and signatures that the real `ostree` reads, pulls over nginx
//! (with `gpg-verify` and `gpg-verify-summary`) and verifies, and that
//! arbor's own HTTP pull verifies (GPG and ed25519).
//!
//! Keys are made in the test with `gpg --batch`; ed25519 keys are fixed
//! seeds (this Debian ostree is built without libsodium, so ed25519
//! signatures are checked by arbor and by [`ed25519_verifies`]).

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use arbor::ostree::delta::superblock::{SignedSuperblock, is_signed};
use arbor::ostree::delta::{DeltaName, Superblock};
use arbor::ostree::{Checksum, Metadata, Summary, Value};
use base64::Engine;
use common::*;
use pull_support::*;

const TS: u64 = 1_700_000_000;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An ed25519 key pair from a fixed seed: (secret key as `ostree sign`
/// takes it, public key as `sign-verify` takes it).
fn ed25519_key(seed: u8) -> (String, String) {
    let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    (
        b64(&k.to_keypair_bytes()),
        b64(k.verifying_key().as_bytes()),
    )
}

/// Whether `sigs` (an `a{sv}`) holds an ed25519 signature of `data` by the
/// public key `pk` (base64): the check ostree makes, done independently.
fn ed25519_verifies(sigs: &[u8], data: &[u8], pk: &str) -> bool {
    use ed25519_dalek::Verifier;
    let md = Metadata::parse(sigs).unwrap();
    let Some(Value::ByteArrays(list)) = md.get("ostree.sign.ed25519") else {
        return false;
    };
    let pk: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(pk)
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    list.iter().any(|s| {
        <[u8; 64]>::try_from(s.as_slice()).is_ok_and(|s| {
            key.verify(data, &ed25519_dalek::Signature::from_bytes(&s))
                .is_ok()
        })
    })
}

fn gpg<I, S>(home: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home)
        .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
        .args(["--passphrase", ""])
        .args(args);
    run(c)
}

/// A GnuPG home with one ed25519 signing key; returns (home, fingerprint,
/// path of the armored public key).
fn gpg_key(base: &Path) -> (PathBuf, String, PathBuf) {
    let home = base.join("gnupg");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let uid = "Publisher <pub@example.com>";
    gpg(&home, ["--quick-gen-key", uid, "ed25519", "sign", "0"]).assert_ok();
    let out = gpg(&home, ["--with-colons", "--list-keys", uid])
        .assert_ok()
        .stdout_str();
    let fpr = out
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .unwrap()
        .split(':')
        .nth(9)
        .unwrap()
        .to_string();
    let asc = base.join("pub.asc");
    fs::write(
        &asc,
        gpg(&home, ["--armor", "--export", fpr.as_str()])
            .assert_ok()
            .stdout,
    )
    .unwrap();
    (home, fpr, asc)
}

fn rev_parse(repo: &Path, rev: &str) -> String {
    arbor_repo_ok(repo, ["rev-parse", rev])
        .stdout_str()
        .trim()
        .to_string()
}

/// The tree of C1: the small tree, a 300 kB file (rollsum'd in C2), a
/// 120 kB file (bsdiff'd in C2) and a 1.5 MB file (a fallback of the
/// scratch delta with --min-fallback-size 1).
fn build_tree(dir: &Path) {
    build_small_tree(dir);
    write_file(
        &dir.join("big.bin"),
        &pseudo_random_bytes(300_000, 1),
        0o644,
    );
    write_file(&dir.join("lib.so"), &pseudo_random_bytes(120_000, 2), 0o644);
    write_file(
        &dir.join("huge.dat"),
        &pseudo_random_bytes(1_500_000, 3),
        0o644,
    );
}

/// C2: `big.bin` changed late (rollsum: the prefix is intact), `lib.so`
/// changed near its start (bsdiff), one new small file.
fn evolve_tree(dir: &Path) {
    let mut big = fs::read(dir.join("big.bin")).unwrap();
    big[200_000..200_010].copy_from_slice(b"0123456789");
    fs::write(dir.join("big.bin"), big).unwrap();
    let mut lib = fs::read(dir.join("lib.so")).unwrap();
    lib[100..110].copy_from_slice(b"abcdefghij");
    lib.extend_from_slice(b"more");
    fs::write(dir.join("lib.so"), lib).unwrap();
    write_file(&dir.join("sub/new.txt"), b"new in C2\n", 0o644);
}

/// The objects carried in a delta's parts, and its fallbacks.
fn delta_objects(repo: &Path, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let d = DeltaName::parse(name).unwrap();
    let raw = fs::read(repo.join(d.superblock_path())).unwrap();
    let sb = Superblock::parse(&raw).unwrap();
    let parts = sb
        .parts
        .iter()
        .flat_map(|p| p.objects.iter())
        .map(|o| format!("{}.{}", o.checksum, o.objtype.name()))
        .collect();
    let fallbacks = sb
        .fallbacks
        .iter()
        .map(|f| format!("{}.{}", f.object.checksum, f.object.objtype.name()))
        .collect();
    (parts, fallbacks)
}

/// No object travels twice: each appears in one part only, once, and
/// never also as a fallback; no fallback is listed twice. (Object *sets*,
/// as [`delta_objects`] gives them, would hide a duplicate.)
#[track_caller]
fn assert_no_duplicate_objects(repo: &Path, name: &str) {
    let d = DeltaName::parse(name).unwrap();
    let raw = fs::read(repo.join(d.superblock_path())).unwrap();
    let sb = Superblock::parse(&raw).unwrap();
    let mut seen = BTreeSet::new();
    for (i, p) in sb.parts.iter().enumerate() {
        for o in &p.objects {
            assert!(
                seen.insert(*o),
                "{name}: {}.{} twice in the parts (again in part {i})",
                o.checksum,
                o.objtype.name()
            );
        }
    }
    let mut fallbacks = BTreeSet::new();
    for f in &sb.fallbacks {
        assert!(
            fallbacks.insert(f.object),
            "{name}: fallback {} listed twice",
            f.object.checksum
        );
        assert!(
            !seen.contains(&f.object),
            "{name}: {} is both in a part and a fallback",
            f.object.checksum
        );
    }
}

/// Bytes of a delta as clients fetch it: superblock and part files.
fn delta_bytes(repo: &Path, name: &str) -> u64 {
    let d = DeltaName::parse(name).unwrap();
    fs::read_dir(repo.join(d.dir()))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// `ostree summary -u` and `arbor summary -u` on the same repository (refs
/// with and without a version, deltas made by ostree, `-m` metadata) write
/// the same bytes, timestamps aside; the delta indexes are identical; the
/// config gets core.indexed-deltas=true; `ostree summary --view` reads it.
#[test]
fn summary_matches_ostree_byte_for_byte() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    ostree_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    build_small_tree(&tree);
    ostree_commit(
        &repo,
        &tree,
        "main",
        &CommitOpts::new("one", "", TS).meta("version", "1.0"),
    );
    write_file(&tree.join("x"), b"x", 0o644);
    let c2 = ostree_commit(&repo, &tree, "main", &CommitOpts::new("two", "", TS + 1));
    ostree_commit(&repo, &tree, "Zeta", &CommitOpts::new("z", "", TS + 2));
    ostree_commit(
        &repo,
        &tree,
        "alpha/beta",
        &CommitOpts::new("ab", "", TS + 3),
    );
    ostree_repo_ok(&repo, ["static-delta", "generate", "main"]);
    ostree_repo_ok(&repo, ["static-delta", "generate", "--empty", "main"]);
    ostree_repo_ok(&repo, ["static-delta", "generate", "--empty", "Zeta"]);
    let m = [
        "-m",
        "title='My repo'",
        "-m",
        "n=uint32 7",
        "-m",
        "ostree.summary.mode='x'",
    ];
    let mut args = vec!["summary", "-u"];
    args.extend_from_slice(&m);
    ostree_repo_ok(&repo, &args);
    let theirs = fs::read(repo.join("summary")).unwrap();
    let their_indexes = index_files(&repo);
    fs::remove_dir_all(repo.join("delta-indexes")).unwrap();
    ostree_repo_ok(&repo, ["config", "unset", "core.indexed-deltas"]);
    arbor_repo_ok(&repo, &args);
    let ours = fs::read(repo.join("summary")).unwrap();

    let (a, b) = (
        Summary::parse(&theirs).unwrap(),
        Summary::parse(&ours).unwrap(),
    );
    assert_eq!(a.refs, b.refs);
    assert_eq!(
        a.refs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["Zeta", "alpha/beta", "main"]
    );
    assert_eq!(a.find("main").unwrap().checksum.to_hex(), c2);
    // Same keys in the same order, same values except the time.
    let keys = |s: &Summary| {
        s.metadata
            .0
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&a), keys(&b));
    let mut b2 = b.clone();
    let lm = "ostree.summary.last-modified";
    b2.metadata.insert(lm, a.metadata.get(lm).unwrap().clone());
    assert_bytes_eq(
        &b2.serialize(),
        &theirs,
        "summary with the same last-modified",
    );
    assert_eq!(
        b.metadata.get("ostree.summary.mode"),
        Some(&Value::Str("archive-z2".into()))
    );
    assert_eq!(index_files(&repo), their_indexes);
    assert_eq!(their_indexes.len(), 2);
    let config = fs::read_to_string(repo.join("config")).unwrap();
    assert!(config.contains("indexed-deltas=true"), "{config}");
    let view = ostree_repo_ok(&repo, ["summary", "--view"]).stdout_str();
    assert!(
        view.contains("* alpha/beta") && view.contains("title: 'My repo'"),
        "{view}"
    );
    let ours_view = arbor_repo_ok(&repo, ["summary", "--view"]).stdout_str();
    assert!(
        ours_view.contains("Version (ostree.commit.version): 1.0") || ours_view.contains("* main")
    );
}

fn index_files(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for d in fs::read_dir(repo.join("delta-indexes")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            out.push((
                format!(
                    "{}/{}",
                    d.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ),
                fs::read(f.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// ed25519-signed summaries: the signature covers the summary's exact
/// bytes; an unsigned update removes the stale summary.sig; deleting a
/// delta drops its index at the next update.
#[test]
fn summary_signature_and_stale_signature() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    build_small_tree(&tree);
    arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    arbor_repo_ok(
        &repo,
        ["static-delta", "generate", "--empty", "--to", "main"],
    );
    let (sk, pk) = ed25519_key(1);
    let (sk2, pk2) = ed25519_key(2);
    arbor_repo_ok(&repo, ["summary", "-u", "--sign", &sk, "--sign", &sk2]);
    let sig = fs::read(repo.join("summary.sig")).unwrap();
    let summary = fs::read(repo.join("summary")).unwrap();
    assert!(ed25519_verifies(&sig, &summary, &pk));
    assert!(ed25519_verifies(&sig, &summary, &pk2));
    assert!(!ed25519_verifies(&sig, b"other", &pk));
    assert_eq!(
        fs::metadata(repo.join("summary"))
            .unwrap()
            .modified()
            .unwrap(),
        fs::metadata(repo.join("summary.sig"))
            .unwrap()
            .modified()
            .unwrap()
    );
    let idx = DeltaName::index_path(&Checksum::from_hex(&rev_parse(&repo, "main")).unwrap());
    assert!(repo.join(&idx).is_file());
    let c = rev_parse(&repo, "main");
    arbor_repo_ok(&repo, ["static-delta", "delete", &c]);
    assert!(
        arbor_repo_ok(&repo, ["static-delta", "list"])
            .stdout_str()
            .is_empty()
    );
    // Moved out whole, then removed: nothing left in deltas/ or tmp/.
    assert_eq!(files_below(&repo.join("deltas")), Vec::<String>::new());
    assert_eq!(tmp_entries(&repo, "arbor-work-"), Vec::<String>::new());
    arbor_repo_ok(&repo, ["summary", "-u"]);
    assert!(!repo.join("summary.sig").exists());
    assert!(!repo.join(&idx).exists());
    assert!(
        !Summary::parse(&fs::read(repo.join("summary")).unwrap())
            .unwrap()
            .metadata
            .0
            .iter()
            .any(|(k, _)| k == "ostree.static-deltas")
    );
    // Nothing of the temporary directory is left.
    assert_eq!(
        fs::read_dir(repo.join("tmp"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("summary"))
            .count(),
        0
    );
}

/// The whole publishing flow with no other tool: commit signed (GPG through
/// gpg, ed25519) into a bare store, `pull --mirror` into an archive
/// repository, deltas, a signed summary. `ostree pull` with gpg-verify and
/// gpg-verify-summary uses arbor's deltas (superblock and parts, no loose
/// objects but fallbacks), from scratch and C1→C2, and `ostree fsck`
/// passes; `ostree static-delta show` and `ostree summary --view` read
/// arbor's files; arbor's own HTTP pull verifies both kinds of signature.
#[test]
fn publish_flow_ostree_pull_over_nginx() {
    let base = scratch_dir("publish-flow");
    let (home, fpr, asc) = gpg_key(&base);
    let homedir = home.to_str().unwrap();
    let (sk, pk) = ed25519_key(7);
    let src = base.join("src");
    arbor_init(&src, Mode::Bare);
    let tree = base.join("tree");
    build_tree(&tree);
    let sign_args = |v: &mut Vec<String>| {
        v.extend([
            "--gpg-sign".into(),
            fpr.clone(),
            "--gpg-homedir".into(),
            homedir.into(),
        ]);
        v.extend(["--sign".into(), sk.clone()]);
    };
    let commit = |subject: &str, ts: u64| {
        let mut a: Vec<String> = CommitOpts::new(subject, "", ts)
            .arbor_args(&tree, "main")
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        sign_args(&mut a);
        expect_checksum_line(&arbor_repo_ok(&src, &a))
    };
    let c1 = commit("one", TS);
    let meta = fs::read(object_path(&src, &c1, "commitmeta")).unwrap();
    let commit_bytes = fs::read(object_path(&src, &c1, "commit")).unwrap();
    assert!(ed25519_verifies(&meta, &commit_bytes, &pk));

    let www = base.join("www");
    let repo = www.join("repo");
    arbor_init(&repo, Mode::Archive);
    let publish = |extra: &[&str]| {
        arbor_repo_ok(&repo, ["pull", "--mirror", src.to_str().unwrap(), "main"]);
        let mut g = vec!["static-delta", "generate", "--to", "main"];
        g.extend_from_slice(extra);
        arbor_repo_ok(&repo, &g);
        let mut s = vec!["summary".to_string(), "-u".into()];
        sign_args(&mut s);
        arbor_repo_ok(&repo, &s);
    };
    publish(&["--empty", "--min-fallback-size", "1"]);
    assert_eq!(read_ref(&repo, "heads/main").as_deref(), Some(c1.as_str()));
    let huge = file_checksum(&repo, "main", "/huge.dat");
    let (_, fallbacks) = delta_objects(&repo, &c1);
    assert_eq!(fallbacks, BTreeSet::from([format!("{huge}.file")]));

    let nginx = Nginx::start(&www);
    let client = base.join("client");
    ostree_init(&client, Mode::BareUser);
    ostree_repo_ok(
        &client,
        [
            "remote",
            "add",
            "origin",
            &nginx.url("repo"),
            "--set=gpg-verify=true",
            "--set=gpg-verify-summary=true",
            &format!("--gpg-import={}", asc.display()),
        ],
    );
    let mark = nginx.mark();
    ostree_repo_ok(&client, ["pull", "origin", "main"]);
    assert_eq!(rev_parse_ostree(&client, "origin:main"), c1);
    let reqs = nginx.requests_since(mark);
    assert_used_delta(
        &repo,
        &reqs,
        &DeltaName::parse(&c1).unwrap(),
        &[format!("{huge}.file")],
    );
    assert_fsck_clean(&client);

    // C2, from C1.
    evolve_tree(&tree);
    let c2 = commit("two", TS + 100);
    publish(&[]);
    // ostree revalidates its cached summary with If-Modified-Since and
    // If-None-Match, which nginx derives from the mtime in seconds (and
    // the size): a summary rewritten within the same second would look
    // unchanged. Move the new files' mtimes on, as a later second would.
    for f in ["summary", "summary.sig"] {
        let p = repo.join(f);
        let t = fs::metadata(&p).unwrap().modified().unwrap() + std::time::Duration::from_secs(5);
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let name = format!("{c1}-{c2}");
    let show = ostree_repo_ok(&repo, ["static-delta", "show", &name]).stdout_str();
    assert!(show.contains("bspatch=1"), "{show}");
    assert!(show.contains("Number of fallback entries: 0"), "{show}");
    let ours = arbor_repo_ok(&repo, ["static-delta", "show", &name]).stdout_str();
    assert!(
        ours.contains("bspatch=1") && !ours.contains(" write=0 "),
        "{ours}"
    );
    ostree_repo_ok(&repo, ["static-delta", "show", &c1]);
    let view = ostree_repo_ok(&repo, ["summary", "--view"]).stdout_str();
    assert!(view.contains(&c2) && view.contains(&name), "{view}");
    let mut listed: Vec<String> = arbor_repo_ok(&repo, ["static-delta", "list"])
        .stdout_str()
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    let mut expect = vec![c1.clone(), name.clone()];
    expect.sort();
    assert_eq!(listed, expect);

    let mark = nginx.mark();
    ostree_repo_ok(&client, ["pull", "origin", "main"]);
    assert_eq!(rev_parse_ostree(&client, "origin:main"), c2);
    assert_used_delta(
        &repo,
        &nginx.requests_since(mark),
        &DeltaName::parse(&name).unwrap(),
        &[],
    );
    assert_fsck_clean(&client);
    let out = base.join("co");
    ostree_repo_ok(
        &client,
        ["checkout", "-U", "origin:main", out.to_str().unwrap()],
    );
    assert_eq!(
        fs::read(out.join("big.bin")).unwrap(),
        fs::read(tree.join("big.bin")).unwrap()
    );
    assert_eq!(
        fs::read(out.join("lib.so")).unwrap(),
        fs::read(tree.join("lib.so")).unwrap()
    );

    // The same objects as ostree's own delta, in parts and as fallbacks.
    let copy = base.join("copy");
    copy_tree(&repo, &copy);
    ostree_repo_ok(&copy, ["static-delta", "generate", "--to", &c2]);
    ostree_repo_ok(
        &copy,
        [
            "static-delta",
            "generate",
            "--empty",
            "--min-fallback-size=1",
            "--to",
            &c1,
        ],
    );
    assert_eq!(delta_objects(&copy, &name), delta_objects(&repo, &name));
    assert_eq!(delta_objects(&copy, &c1), delta_objects(&repo, &c1));
    assert_no_duplicate_objects(&repo, &name);
    assert_no_duplicate_objects(&repo, &c1);

    // arbor's own HTTP pull verifies GPG and ed25519 signatures, summary too.
    let (_t, store) = new_store(Mode::BareUser);
    add_remote(
        &store,
        "origin",
        &nginx.url("repo"),
        &[
            "--gpg-import",
            asc.to_str().unwrap(),
            "--sign-verify",
            &format!("ed25519=inline:{pk}"),
            "--set",
            "gpg-verify-summary=true",
        ],
    );
    pull_ok(&store, &["origin", "main"]);
    assert_eq!(
        read_ref(&store, "remotes/origin/main").as_deref(),
        Some(c2.as_str())
    );
    assert_fsck_clean(&store);
    // Another ed25519 key is refused.
    let (_, other_pk) = ed25519_key(9);
    let (_t3, s3) = new_store(Mode::BareUser);
    add_remote(
        &s3,
        "origin",
        &nginx.url("repo"),
        &[
            "--no-gpg-verify",
            "--sign-verify",
            &format!("ed25519=inline:{other_pk}"),
        ],
    );
    pull(&s3, &["origin", "main"]).assert_clean_failure();
    assert_eq!(read_ref(&s3, "remotes/origin/main"), None);
}

fn rev_parse_ostree(repo: &Path, rev: &str) -> String {
    ostree_repo_ok(repo, ["rev-parse", rev])
        .stdout_str()
        .trim()
        .to_string()
}

/// `reqs` fetched `delta`'s superblock (from `repo`) and its parts, and of
/// objects only `fallbacks` (by `CHECKSUM.file`) and TO's detached metadata
/// — or objects the parts also carry: libostree fetches the detached
/// metadata after writing the commit from the superblock and then scans the
/// commit (`meta_fetch_on_complete` → `queue_scan_one_metadata_object`),
/// racing the execution of the parts, so on a loaded machine it may fetch
/// some of their objects a second time. That race is ostree's, whoever
/// made the delta.
#[track_caller]
fn assert_used_delta(repo: &Path, reqs: &[Request], delta: &DeltaName, fallbacks: &[String]) {
    let dir = delta.dir();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with(&format!("{dir}/superblock"))),
        "no superblock request: {paths:#?}"
    );
    let (in_parts, _) = delta_objects(repo, &delta.to_string());
    let sb = Superblock::parse(&fs::read(repo.join(delta.superblock_path())).unwrap()).unwrap();
    for i in 0..sb.parts.len() {
        assert!(
            paths.iter().any(|p| p.ends_with(&format!("{dir}/{i}"))),
            "part {i} not fetched: {paths:#?}"
        );
    }
    let commitmeta = format!("{}.commitmeta", delta.to);
    let loose: BTreeSet<String> = reqs
        .iter()
        .filter_map(|r| object_key(&r.path))
        .filter(|o| *o != commitmeta)
        .collect();
    let beyond: BTreeSet<String> = loose.difference(&in_parts).cloned().collect();
    let expected: BTreeSet<String> = fallbacks.iter().cloned().collect();
    assert_eq!(
        beyond, expected,
        "objects fetched besides the delta: {paths:#?}"
    );
    assert!(reqs.iter().all(|r| r.status == 200), "{reqs:#?}");
}

/// `arbor gpg-sign --gpg-key-file` signs with an exported secret key
/// without GnuPG, and `gpg --verify` accepts the signature over the commit
/// object; `arbor sign --keys-file` adds an ed25519 signature and refuses
/// to sign twice with the same key.
#[test]
fn commit_signing_key_files() {
    let base = scratch_dir("publish-keyfiles");
    let (home, fpr, _) = gpg_key(&base);
    let secret = base.join("secret.asc");
    fs::write(
        &secret,
        gpg(&home, ["--armor", "--export-secret-keys", fpr.as_str()])
            .assert_ok()
            .stdout,
    )
    .unwrap();
    let repo = base.join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    build_small_tree(&tree);
    let c = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    arbor_repo_ok(
        &repo,
        [
            "gpg-sign",
            "main",
            "--gpg-key-file",
            secret.to_str().unwrap(),
        ],
    );
    let (sk, pk) = ed25519_key(3);
    let keys = base.join("keys");
    fs::write(&keys, format!("{sk}\n")).unwrap();
    arbor_repo_ok(
        &repo,
        ["sign", "main", "--keys-file", keys.to_str().unwrap()],
    );
    let r = arbor_repo(&repo, ["sign", "main", &sk]).assert_clean_failure();
    assert!(
        r.stderr_str().contains("already signed"),
        "{}",
        r.describe()
    );

    let meta = fs::read(object_path(&repo, &c, "commitmeta")).unwrap();
    let commit = fs::read(object_path(&repo, &c, "commit")).unwrap();
    assert!(ed25519_verifies(&meta, &commit, &pk));
    let md = Metadata::parse(&meta).unwrap();
    let Some(Value::ByteArrays(sigs)) = md.get("ostree.gpgsigs") else {
        panic!("no ostree.gpgsigs in {md:?}");
    };
    assert_eq!(sigs.len(), 1);
    let sig_path = base.join("sig");
    let data_path = base.join("data");
    fs::write(&sig_path, &sigs[0]).unwrap();
    fs::write(&data_path, &commit).unwrap();
    gpg(
        &home,
        [
            OsStr::new("--verify"),
            sig_path.as_os_str(),
            data_path.as_os_str(),
        ],
    )
    .assert_ok();
    // And a tampered commit does not verify.
    let mut bad = commit.clone();
    bad[0] ^= 1;
    fs::write(&data_path, &bad).unwrap();
    assert!(
        !gpg(
            &home,
            [
                OsStr::new("--verify"),
                sig_path.as_os_str(),
                data_path.as_os_str()
            ]
        )
        .success()
    );
}

/// Inline deltas (no part files) and signed superblocks, read by ostree;
/// an inline delta applies offline with `ostree static-delta apply-offline`.
#[test]
fn inline_and_signed_deltas() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    build_tree(&tree);
    let c = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    arbor_repo_ok(
        &repo,
        [
            "static-delta",
            "generate",
            "--empty",
            "--inline",
            "--to",
            "main",
            "--min-fallback-size",
            "0",
        ],
    );
    let d = DeltaName::parse(&c).unwrap();
    let files: Vec<String> = fs::read_dir(repo.join(d.dir()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["superblock"]);
    // ostree's `show` reads part files only (inline parts are for pulls
    // and apply-offline): arbor's reads both.
    let show = arbor_repo_ok(&repo, ["static-delta", "show", &c]).stdout_str();
    assert!(
        show.contains("Number of parts: 1") && show.contains("PartPayload0: nmodes="),
        "{show}"
    );
    let client = t.path().join("client");
    ostree_init(&client, Mode::BareUser);
    ostree_repo_ok(
        &client,
        [
            "static-delta",
            "apply-offline",
            repo.join(d.superblock_path()).to_str().unwrap(),
        ],
    );
    ostree_repo_ok(&client, ["fsck"]);
    ostree_repo_ok(&client, ["show", &c]);

    let (sk, pk) = ed25519_key(5);
    arbor_repo_ok(
        &repo,
        [
            "static-delta",
            "generate",
            "--empty",
            "--to",
            "main",
            "--sign",
            &sk,
        ],
    );
    let raw = fs::read(repo.join(d.superblock_path())).unwrap();
    assert!(is_signed(&raw));
    let signed = SignedSuperblock::parse(&raw).unwrap();
    assert!(ed25519_verifies(
        &signed.signatures.serialize(),
        signed.superblock,
        &pk
    ));
    let show = ostree_repo_ok(&repo, ["static-delta", "show", &c]).stdout_str();
    assert!(show.contains("Signed: yes"), "{show}");
    // Regenerating without --inline replaced the inline delta whole.
    assert!(repo.join(d.part_path(0)).is_file());
}

/// Broken or hostile requests get clear errors and change nothing.
#[test]
fn publishing_errors_are_clear() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    build_small_tree(&tree);
    let a = arbor_commit(&repo, &tree, "a", &CommitOpts::new("a", "", TS));
    write_file(&tree.join("x"), b"x", 0o644);
    let b = arbor_commit(&repo, &tree, "b", &CommitOpts::new("b", "", TS + 1));
    let fail = |args: &[&str], needles: &[&str]| {
        let r = arbor_repo(&repo, args).assert_clean_failure();
        for n in needles {
            assert!(r.stderr_str().contains(n), "{n:?}\n{}", r.describe());
        }
    };
    fail(
        &["static-delta", "generate", "--from", "a", "--to", "b"],
        &["not an ancestor", &a, "--allow-unrelated"],
    );
    fail(
        &["static-delta", "generate", "--to", "b"],
        &["no parent", "--empty"],
    );
    assert!(
        !repo.join("deltas").exists()
            || fs::read_dir(repo.join("deltas")).unwrap().next().is_none()
    );
    arbor_repo_ok(
        &repo,
        [
            "static-delta",
            "generate",
            "--from",
            "a",
            "--to",
            "b",
            "--allow-unrelated",
        ],
    );
    fs::write(repo.join(format!("state/{b}.commitpartial")), b"").unwrap();
    fail(
        &["static-delta", "generate", "--empty", "--to", "b"],
        &["partial", &b],
    );
    fs::remove_file(repo.join(format!("state/{b}.commitpartial"))).unwrap();
    fail(
        &["summary", "-u", "--sign", "bm90IGEga2V5"],
        &["not an ed25519 secret key"],
    );
    fail(
        &["summary", "-u", "--gpg-key-file", "/nonexistent/key"],
        &["/nonexistent/key"],
    );
    let junk = t.path().join("junk.asc");
    fs::write(
        &junk,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n",
    )
    .unwrap();
    fail(
        &["gpg-sign", "a", "--gpg-key-file", junk.to_str().unwrap()],
        &["not an OpenPGP secret key"],
    );
    let empty_home = t.path().join("nogpg");
    fs::create_dir_all(&empty_home).unwrap();
    fail(
        &[
            "gpg-sign",
            "a",
            "DEADBEEFDEADBEEF",
            "--gpg-homedir",
            empty_home.to_str().unwrap(),
        ],
        &["gpg could not sign", "DEADBEEFDEADBEEF"],
    );
    assert!(!object_path(&repo, &a, "commitmeta").exists());
    fail(&["static-delta", "delete", &b], &["no static delta"]);
    fail(&["summary", "-u", "-m", "k=bare"], &["GVariant text"]);
    assert!(!repo.join("summary").exists());

    // A corrupt object fails the delta, named, and leaves no delta: a
    // valid object stored under another's name fails the checksum check
    // (it decompresses and parses fine)...
    let readme = file_checksum(&repo, &a, "/README");
    let obj = object_path(&repo, &readme, "filez");
    let good = fs::read(&obj).unwrap();
    let x = file_checksum(&repo, &b, "/x");
    fs::copy(object_path(&repo, &x, "filez"), &obj).unwrap();
    fail(
        &["static-delta", "generate", "--empty", "--to", "a"],
        &[&format!(
            "object {readme}.file is corrupt: checksum expected={readme} actual={x}"
        )],
    );
    assert!(!repo.join(DeltaName::parse(&a).unwrap().dir()).exists());
    // ... and a damaged stream fails to decompress.
    fs::write(&obj, &good).unwrap();
    let len = good.len() as u64;
    flip_byte(&obj, len - 2);
    fail(
        &["static-delta", "generate", "--empty", "--to", "a"],
        &[&readme],
    );
    assert!(!repo.join(DeltaName::parse(&a).unwrap().dir()).exists());
    fs::write(&obj, &good).unwrap();

    // A bare repository gets a summary, with a warning about HTTP.
    let bare = t.path().join("bare");
    arbor_init(&bare, Mode::Bare);
    arbor_commit(&bare, &tree, "main", &CommitOpts::new("m", "", TS));
    let r = arbor_repo_ok(&bare, ["summary", "-u"]);
    assert!(
        r.stderr_str()
            .contains("cannot fetch its objects over HTTP"),
        "{}",
        r.describe()
    );
    assert!(bare.join("summary").is_file());
}

/// A part big enough to be compressed as several xz blocks at once (one per
/// core) is applied by ostree like any other.
#[test]
fn big_part_in_xz_blocks_applies() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    make_dir(&tree, 0o755);
    // 20 MB that compress fast (repeated 1 kB of noise) but whose blocks
    // still differ.
    let unit = pseudo_random_bytes(1024, 11);
    let mut big = Vec::with_capacity(20_000_000);
    for i in 0..(20_000_000 / 1024) {
        big.extend_from_slice(&unit);
        big.extend_from_slice(&(i as u32).to_le_bytes());
    }
    write_file(&tree.join("big"), &big, 0o644);
    write_file(&tree.join("small"), b"small\n", 0o644);
    let c = arbor_commit(&repo, &tree, "main", &CommitOpts::new("big", "", TS));
    arbor_repo_ok(
        &repo,
        [
            "static-delta",
            "generate",
            "--empty",
            "--to",
            "main",
            "--min-fallback-size",
            "0",
            "--jobs",
            "2",
        ],
    );
    let d = DeltaName::parse(&c).unwrap();
    let sb = Superblock::parse(&fs::read(repo.join(d.superblock_path())).unwrap()).unwrap();
    assert_eq!(sb.parts.len(), 1);
    assert!(sb.parts[0].usize > 20_000_000);
    let client = t.path().join("client");
    ostree_init(&client, Mode::BareUser);
    ostree_repo_ok(
        &client,
        [
            "static-delta",
            "apply-offline",
            repo.join(d.superblock_path()).to_str().unwrap(),
        ],
    );
    ostree_repo_ok(&client, ["fsck"]);
    let out = t.path().join("co");
    ostree_repo_ok(&client, ["checkout", "-U", &c, out.to_str().unwrap()]);
    assert!(fs::read(out.join("big")).unwrap() == big);
}

/// --max-chunk-size cuts parts without splitting objects, --disable-bsdiff
/// sends the file rollsum cannot match whole, and ostree applies both
/// deltas (C1 from scratch, then C1→C2) offline.
#[test]
fn chunked_parts_and_disabled_bsdiff_apply() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    build_tree(&tree);
    let c1 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    evolve_tree(&tree);
    let c2 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("two", "", TS + 1));
    let generate = |args: &[&str]| {
        let mut a = vec![
            "static-delta",
            "generate",
            "--min-fallback-size",
            "0",
            "--max-chunk-size",
            "1",
        ];
        a.extend_from_slice(args);
        arbor_repo_ok(&repo, &a);
    };
    generate(&["--empty", "--to", &c1]);
    generate(&["--to", &c2, "--disable-bsdiff"]);
    let name = format!("{c1}-{c2}");
    let sb = |n: &str| {
        let d = DeltaName::parse(n).unwrap();
        Superblock::parse(&fs::read(repo.join(d.superblock_path())).unwrap()).unwrap()
    };
    let scratch = sb(&c1);
    // huge.dat (1.5 MB) alone in a part: objects are never split.
    assert!(scratch.parts.len() >= 2, "{:?}", scratch.parts.len());
    let huge = file_checksum(&repo, &c1, "/huge.dat");
    assert!(
        scratch
            .parts
            .iter()
            .any(|p| p.objects.len() == 1 && p.objects[0].checksum.to_hex() == huge)
    );
    let show = arbor_repo_ok(&repo, ["static-delta", "show", &name]).stdout_str();
    assert!(
        show.contains("bspatch=0") && !show.contains(" write=0 "),
        "{show}"
    );
    assert_no_duplicate_objects(&repo, &c1);
    assert_no_duplicate_objects(&repo, &name);
    let client = t.path().join("client");
    ostree_init(&client, Mode::BareUser);
    for n in [c1.as_str(), name.as_str()] {
        let d = DeltaName::parse(n).unwrap();
        ostree_repo_ok(
            &client,
            [
                "static-delta",
                "apply-offline",
                repo.join(d.superblock_path()).to_str().unwrap(),
            ],
        );
    }
    ostree_repo_ok(&client, ["fsck"]);
    let out = t.path().join("co");
    ostree_repo_ok(&client, ["checkout", "-U", &c2, out.to_str().unwrap()]);
    assert_eq!(
        fs::read(out.join("lib.so")).unwrap(),
        fs::read(tree.join("lib.so")).unwrap()
    );
}

/// An interrupted generation leaves the previous delta of the same name
/// intact and nothing of the new one, in deltas/ or tmp/.
#[test]
fn interrupted_generation_keeps_the_old_delta() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = shared_tempdir();
    let repo_path = t.path().join("repo");
    arbor_init(&repo_path, Mode::Archive);
    let tree = t.path().join("tree");
    build_tree(&tree);
    let c = arbor_commit(&repo_path, &tree, "main", &CommitOpts::new("one", "", TS));
    arbor_repo_ok(
        &repo_path,
        ["static-delta", "generate", "--empty", "--to", "main"],
    );
    let d = DeltaName::parse(&c).unwrap();
    let before = fs::read(repo_path.join(d.superblock_path())).unwrap();
    let before_ino = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(repo_path.join(d.superblock_path()))
            .unwrap()
            .ino()
    };
    let part0 = fs::read(repo_path.join(d.part_path(0))).unwrap();

    let repo = arbor::store::Repo::open(&repo_path).unwrap();
    let mut opts = arbor::publish::DeltaOptions::new(Checksum::from_hex(&c).unwrap());
    opts.from = arbor::publish::DeltaFrom::Empty;
    opts.min_fallback_size = 0;
    let stop = AtomicBool::new(false);
    // Interrupted once the parts are being written.
    let progress = |e: arbor::progress::Event<'_>| {
        if let arbor::progress::Event::Start { .. } = e {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let r = arbor::publish::generate_delta(&repo, &opts, &progress, &stop);
    assert!(
        matches!(r, Err(arbor::publish::DeltaError::Interrupted)),
        "{r:?}"
    );
    assert_eq!(
        fs::read(repo_path.join(d.superblock_path())).unwrap(),
        before
    );
    assert_eq!(fs::read(repo_path.join(d.part_path(0))).unwrap(), part0);
    let leftovers: Vec<_> = fs::read_dir(repo_path.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("delta"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Not interrupted: the new delta replaces the old one whole.
    let go = AtomicBool::new(false);
    let out =
        arbor::publish::generate_delta(&repo, &opts, &arbor::progress::NoProgress, &go).unwrap();
    assert_eq!(out.fallbacks, 0);
    // Replaced, not rewritten in place (the bytes may be equal: the
    // timestamp has a resolution of a second).
    {
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(repo_path.join(d.superblock_path()))
            .unwrap()
            .ino();
        assert_ne!(ino, before_ino);
    }
    ostree_repo_ok(&repo_path, ["static-delta", "show", &c]);
}

/// A delta of files bsdiff'd (changed near their start, so rollsum cannot
/// match them) carries each one once, as a patch: not also whole or as a
/// fallback. It has ostree's objects, parts and fallbacks, and is about as
/// small as ostree's delta of the same commits (≤ 1.05x, plus the framing of one more xz block); ostree applies it.
#[test]
fn bsdiff_delta_sends_each_file_once() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    make_dir(&tree, 0o755);
    for i in 0..8u64 {
        write_file(
            &tree.join(format!("lib{i}.so")),
            &pseudo_random_bytes(200_000, 101 + 2 * i),
            0o644,
        );
    }
    // Above the fallback size (1 MB here), yet bsdiff'd: paired files
    // never fall back.
    write_file(
        &tree.join("big.img"),
        &pseudo_random_bytes(1_200_000, 201),
        0o644,
    );
    let c1 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    for i in 0..8u64 {
        let p = tree.join(format!("lib{i}.so"));
        let mut b = fs::read(&p).unwrap();
        b[100..110].copy_from_slice(b"0123456789");
        fs::write(&p, b).unwrap();
    }
    let p = tree.join("big.img");
    let mut b = fs::read(&p).unwrap();
    b[100..110].copy_from_slice(b"0123456789");
    fs::write(&p, b).unwrap();
    // New and large: a fallback.
    write_file(
        &tree.join("new.dat"),
        &pseudo_random_bytes(1_100_000, 203),
        0o644,
    );
    let c2 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("two", "", TS + 1));
    let copy = t.path().join("copy");
    copy_tree(&repo, &copy);
    let args = [
        "static-delta",
        "generate",
        "--min-fallback-size=1",
        "--to",
        "main",
    ];
    arbor_repo_ok(&repo, args);
    ostree_repo_ok(&copy, args);
    let name = format!("{c1}-{c2}");
    assert_no_duplicate_objects(&repo, &name);
    assert_eq!(delta_objects(&repo, &name), delta_objects(&copy, &name));
    let big = file_checksum(&repo, &c2, "/big.img");
    let new = file_checksum(&repo, &c2, "/new.dat");
    let (parts, fallbacks) = delta_objects(&repo, &name);
    assert!(parts.contains(&format!("{big}.file")));
    assert_eq!(fallbacks, BTreeSet::from([format!("{new}.file")]));
    let show = arbor_repo_ok(&repo, ["static-delta", "show", &name]).stdout_str();
    assert!(show.contains("bspatch=9"), "{show}");
    // Nine patched files, the new dirtree: nothing else is spliced.
    assert!(show.contains("openspliceclose=1 "), "{show}");
    let (ours, theirs) = (delta_bytes(&repo, &name), delta_bytes(&copy, &name));
    // A delta with fewer parts than cores has its part compressed as one
    // xz block per core: on this 2 KB delta that framing (a block header
    // and index entry, about 130 bytes) is 6 %; on real updates the size
    // is the same (BENCHMARKS.md).
    assert!(
        ours as f64 <= theirs as f64 * 1.05 + 256.0,
        "arbor's delta is {ours} bytes, ostree's {theirs}"
    );
    let client = t.path().join("client");
    ostree_init(&client, Mode::BareUser);
    ostree_repo_ok(&client, ["pull-local", repo.to_str().unwrap(), &c1]);
    // apply-offline cannot fetch fallbacks: regenerated without any.
    arbor_repo_ok(
        &repo,
        [
            "static-delta",
            "generate",
            "--min-fallback-size=0",
            "--to",
            "main",
        ],
    );
    assert_no_duplicate_objects(&repo, &name);
    let d = DeltaName::parse(&name).unwrap();
    ostree_repo_ok(
        &client,
        [
            "static-delta",
            "apply-offline",
            repo.join(d.superblock_path()).to_str().unwrap(),
        ],
    );
    ostree_repo_ok(&client, ["fsck"]);
    let out = t.path().join("co");
    ostree_repo_ok(&client, ["checkout", "-U", &c2, out.to_str().unwrap()]);
    for f in ["big.img", "lib3.so", "new.dat"] {
        assert!(fs::read(out.join(f)).unwrap() == fs::read(tree.join(f)).unwrap());
    }
}

/// A gpg.conf asking for ASCII armor and text mode changes nothing: arbor
/// gets a binary signature over the exact bytes (class 0x00) that `gpg
/// --verify` accepts.
#[test]
fn gpg_conf_cannot_change_signatures() {
    let base = scratch_dir("publish-gpgconf");
    let (home, fpr, _) = gpg_key(&base);
    fs::write(home.join("gpg.conf"), "armor\ntextmode\n").unwrap();
    let repo = base.join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    build_small_tree(&tree);
    let c = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    arbor_repo_ok(
        &repo,
        [
            "gpg-sign",
            "main",
            &fpr,
            "--gpg-homedir",
            home.to_str().unwrap(),
        ],
    );
    let meta = fs::read(object_path(&repo, &c, "commitmeta")).unwrap();
    let md = Metadata::parse(&meta).unwrap();
    let Some(Value::ByteArrays(sigs)) = md.get("ostree.gpgsigs") else {
        panic!("no ostree.gpgsigs");
    };
    let sig_path = base.join("sig");
    fs::write(&sig_path, &sigs[0]).unwrap();
    let packets = gpg(&home, [OsStr::new("--list-packets"), sig_path.as_os_str()])
        .assert_ok()
        .stdout_str();
    assert!(packets.contains("sigclass 0x00"), "{packets}");
    let data_path = base.join("data");
    fs::write(
        &data_path,
        fs::read(object_path(&repo, &c, "commit")).unwrap(),
    )
    .unwrap();
    gpg(
        &home,
        [
            OsStr::new("--verify"),
            sig_path.as_os_str(),
            data_path.as_os_str(),
        ],
    )
    .assert_ok();
}

/// A signed delta (`--sign`, the `OSTSGNDT` wrapper) is left out of the
/// summary and the delta indexes: libostree's HTTP pull reads a listed
/// superblock as a plain one and fails on the wrapper. With a signed delta
/// and an unsigned one in the repository, `ostree pull` over nginx succeeds
/// (using the unsigned delta, never fetching the signed superblock), and
/// arbor's pull verifying ed25519 commit and summary signatures succeeds;
/// the signed delta still applies offline.
#[test]
fn signed_delta_is_not_listed_and_pulls_work() {
    let base = scratch_dir("publish-signed-delta");
    let (sk, pk) = ed25519_key(11);
    let www = base.join("www");
    let repo = www.join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    build_tree(&tree);
    let c1 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    arbor_repo_ok(&repo, ["sign", &c1, &sk]);
    evolve_tree(&tree);
    let c2 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("two", "", TS + 10));
    arbor_repo_ok(&repo, ["sign", &c2, &sk]);
    // C1→C2 signed; C2 from scratch unsigned.
    arbor_repo_ok(
        &repo,
        ["static-delta", "generate", "--to", "main", "--sign", &sk],
    );
    arbor_repo_ok(
        &repo,
        ["static-delta", "generate", "--empty", "--to", "main"],
    );
    let signed = DeltaName::parse(&format!("{c1}-{c2}")).unwrap();
    let scratch = DeltaName::parse(&c2).unwrap();
    assert!(is_signed(
        &fs::read(repo.join(signed.superblock_path())).unwrap()
    ));
    let out = arbor_repo_ok(&repo, ["summary", "-u", "--sign", &sk]);
    assert!(
        out.stderr_str()
            .contains(&format!("static delta {signed} is signed")),
        "{}",
        out.stderr_str()
    );
    let summary = Summary::parse(&fs::read(repo.join("summary")).unwrap()).unwrap();
    let listed = arbor::ostree::delta::DeltaList::from_metadata(&summary.metadata).unwrap();
    let names: Vec<DeltaName> = listed.0.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, [scratch]);
    let index =
        fs::read(repo.join(DeltaName::index_path(&Checksum::from_hex(&c2).unwrap()))).unwrap();
    let index = arbor::ostree::delta::DeltaIndex::parse(&index).unwrap();
    assert_eq!(
        index.deltas.0.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [scratch]
    );

    let nginx = Nginx::start(&www);
    // ostree, from C1: the signed delta is not offered, so it pulls objects.
    let client = base.join("client");
    ostree_init(&client, Mode::BareUser);
    ostree_repo_ok(
        &client,
        [
            "remote",
            "add",
            "--no-gpg-verify",
            "origin",
            &nginx.url("repo"),
        ],
    );
    ostree_repo_ok(&client, ["pull", "origin", &format!("main@{c1}")]);
    let mark = nginx.mark();
    ostree_repo_ok(&client, ["pull", "origin", "main"]);
    assert_eq!(rev_parse_ostree(&client, "origin:main"), c2);
    let reqs = nginx.requests_since(mark);
    assert!(
        !reqs.iter().any(|r| r.path.contains(&signed.dir())),
        "{reqs:#?}"
    );
    assert_fsck_clean(&client);
    // ostree from nothing uses the unsigned scratch delta.
    let fresh = base.join("fresh");
    ostree_init(&fresh, Mode::BareUser);
    ostree_repo_ok(
        &fresh,
        [
            "remote",
            "add",
            "--no-gpg-verify",
            "origin",
            &nginx.url("repo"),
        ],
    );
    let mark = nginx.mark();
    ostree_repo_ok(&fresh, ["pull", "origin", "main"]);
    let (_, fallbacks) = delta_objects(&repo, &c2);
    let fallbacks: Vec<String> = fallbacks.into_iter().collect();
    assert_used_delta(&repo, &nginx.requests_since(mark), &scratch, &fallbacks);
    assert_fsck_clean(&fresh);

    // arbor, verifying ed25519 signatures of commits and summary, from C1.
    let (_t, store) = new_store(Mode::BareUser);
    add_remote(
        &store,
        "origin",
        &nginx.url("repo"),
        &[
            "--no-gpg-verify",
            "--sign-verify",
            &format!("ed25519=inline:{pk}"),
            "--set",
            "sign-verify-summary=true",
        ],
    );
    pull_ok(&store, &["origin", &format!("main@{c1}")]);
    pull_ok(&store, &["origin", "main"]);
    assert_eq!(
        read_ref(&store, "remotes/origin/main").as_deref(),
        Some(c2.as_str())
    );
    assert_fsck_clean(&store);

    // Offline, the signed delta applies.
    let offline = base.join("offline");
    ostree_init(&offline, Mode::BareUser);
    ostree_repo_ok(&offline, ["pull-local", repo.to_str().unwrap(), &c1]);
    ostree_repo_ok(
        &offline,
        [
            "static-delta",
            "apply-offline",
            repo.join(signed.superblock_path()).to_str().unwrap(),
        ],
    );
    ostree_repo_ok(&offline, ["show", &c2]);
}

/// `commit --sign`: the branch moves only once the detached metadata with
/// the signatures is written. A key that fails to sign (a GnuPG key ID the
/// home directory does not have) and a crash just before signing both
/// leave the branch on the old commit and write no detached metadata; a
/// good key moves it to a commit whose signature verifies.
#[test]
fn commit_sign_moves_the_branch_only_once_signed() {
    let base = scratch_dir("publish-commit-sign");
    let repo = base.join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    build_tree(&tree);
    let c1 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    evolve_tree(&tree);
    let home = base.join("empty-gnupg");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let args = |extra: &[&str]| -> Vec<OsString> {
        // The parent given, so the same tree makes the same commit again.
        let mut o = CommitOpts::new("two", "", TS + 1);
        o.parent = Some(c1.clone());
        let mut a = o.arbor_args(&tree, "main");
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let metas = |repo: &Path| -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in fs::read_dir(repo.join("objects")).unwrap().flatten() {
            for f in fs::read_dir(d.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "commitmeta") {
                    out.push(f.path());
                }
            }
        }
        out
    };
    let r = arbor_repo(
        &repo,
        args(&[
            "--gpg-sign",
            "0123456789ABCDEF0123456789ABCDEF01234567",
            "--gpg-homedir",
            home.to_str().unwrap(),
        ]),
    );
    let r = r.assert_clean_failure();
    assert!(
        r.stderr_str().contains("was not moved"),
        "{}",
        r.stderr_str()
    );
    assert_eq!(read_ref(&repo, "heads/main").as_deref(), Some(c1.as_str()));
    assert_eq!(metas(&repo), Vec::<PathBuf>::new());

    let (sk, pk) = ed25519_key(13);
    if !cfg!(feature = "failpoints") {
        panic!("crash points need the failpoints feature: cargo test --features failpoints");
    }
    let mut cmd = arbor_command();
    cmd.arg("--repo")
        .arg(&repo)
        .args(args(&["--sign", &sk]))
        .env("FAILPOINTS", "commit:before-sign=return");
    let r = run(cmd);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&r.status),
        Some(9),
        "{}",
        r.stderr_str()
    );
    assert_eq!(read_ref(&repo, "heads/main").as_deref(), Some(c1.as_str()));
    assert_eq!(metas(&repo), Vec::<PathBuf>::new());

    let c2 = expect_checksum_line(&arbor_repo_ok(&repo, args(&["--sign", &sk])));
    assert_eq!(read_ref(&repo, "heads/main").as_deref(), Some(c2.as_str()));
    let meta = fs::read(object_path(&repo, &c2, "commitmeta")).unwrap();
    let commit = fs::read(object_path(&repo, &c2, "commit")).unwrap();
    assert!(ed25519_verifies(&meta, &commit, &pk));
    // Committing the same again (same commit) keeps the one signature.
    let again = expect_checksum_line(&arbor_repo_ok(&repo, args(&["--sign", &sk])));
    assert_eq!(again, c2);
    assert_eq!(
        fs::read(object_path(&repo, &c2, "commitmeta")).unwrap(),
        meta
    );
    assert_fsck_clean(&repo);
}

/// Names in the repository's `tmp/` starting with `prefix`.
fn tmp_entries(repo: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Runs arbor on `repo` killed (SIGKILL) at crash point `point`.
fn arbor_killed_at(repo: &Path, point: &str, args: &[&str]) {
    if !cfg!(feature = "failpoints") {
        panic!("crash points need the failpoints feature: cargo test --features failpoints");
    }
    let mut cmd = arbor_command();
    cmd.arg("--repo")
        .arg(repo)
        .args(args)
        .env("FAILPOINTS", format!("{point}=return"));
    let r = run(cmd);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&r.status),
        Some(9),
        "{}",
        r.stderr_str()
    );
}

/// A generation or summary update killed (SIGKILL) after writing its files
/// leaves them in its own working directory of `tmp/` only: the served
/// delta, indexes and summary are the old ones, whole. The next
/// generation, summary update or write transaction removes the leftovers,
/// and a re-run replaces the delta directory in one rename.
#[test]
fn killed_generation_and_summary_leave_nothing_behind() {
    let base = scratch_dir("publish-killed");
    let repo = base.join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = base.join("tree");
    build_tree(&tree);
    let c1 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
    evolve_tree(&tree);
    let c2 = arbor_commit(&repo, &tree, "main", &CommitOpts::new("two", "", TS + 1));
    let gen_args = ["static-delta", "generate", "--to", "main"];
    arbor_repo_ok(&repo, gen_args);
    arbor_repo_ok(&repo, ["summary", "-u"]);
    let d = DeltaName::parse(&format!("{c1}-{c2}")).unwrap();
    let delta_dir = repo.join(d.dir());
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        files_below(dir)
            .into_iter()
            .map(|f| {
                let b = fs::read(dir.join(&f)).unwrap();
                (f, b)
            })
            .collect()
    };
    let delta_before = snapshot(&delta_dir);
    let indexes_before = snapshot(&repo.join("delta-indexes"));
    let summary_before = fs::read(repo.join("summary")).unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let dir_ino = ino(&delta_dir);

    // Killed with every part written, before the superblock.
    arbor_killed_at(&repo, "static-delta:parts-written", &gen_args);
    let left = tmp_entries(&repo, "arbor-work-delta-");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[1].ends_with(".lock") && left[1].starts_with(&left[0]));
    assert!(repo.join("tmp").join(&left[0]).join("0").is_file());
    assert_eq!(snapshot(&delta_dir), delta_before);
    // Killed with the summary and indexes written, before their renames.
    arbor_killed_at(&repo, "summary:written", &["summary", "-u"]);
    assert_eq!(tmp_entries(&repo, "arbor-work-summary-").len(), 2);
    assert_eq!(snapshot(&repo.join("delta-indexes")), indexes_before);
    assert_eq!(fs::read(repo.join("summary")).unwrap(), summary_before);
    assert!(
        files_below(&repo)
            .iter()
            .all(|f| f.starts_with("tmp/") || !f.contains(".tmp-")),
        "{:#?}",
        files_below(&repo)
    );

    // The next summary update removes both.
    arbor_repo_ok(&repo, ["summary", "-u"]);
    assert_eq!(tmp_entries(&repo, "arbor-work-"), Vec::<String>::new());
    // A write transaction (a commit) does too.
    arbor_killed_at(&repo, "static-delta:parts-written", &gen_args);
    assert_eq!(tmp_entries(&repo, "arbor-work-").len(), 2);
    arbor_commit(&repo, &tree, "other", &CommitOpts::new("x", "", TS));
    assert_eq!(tmp_entries(&repo, "arbor-work-"), Vec::<String>::new());
    // And a generation; its delta replaces the old directory whole.
    arbor_killed_at(&repo, "static-delta:parts-written", &gen_args);
    arbor_repo_ok(&repo, gen_args);
    assert_eq!(tmp_entries(&repo, "arbor-work-"), Vec::<String>::new());
    assert_ne!(ino(&delta_dir), dir_ino);
    assert_eq!(
        files_below(&delta_dir),
        delta_before
            .iter()
            .map(|(f, _)| f.clone())
            .collect::<Vec<_>>()
    );
    ostree_repo_ok(&repo, ["static-delta", "show", &d.to_string()]);
    ostree_repo_ok(&repo, ["fsck"]);
}

/// `n` files of 256 KiB of pseudo-random bytes (seeded by index), and in
/// generation 2 the same files with one byte in every 2 KiB changed:
/// rollsum finds no chunk in common, so each file is bsdiff'd.
fn random_files(dir: &Path, n: usize, generation: u8) {
    make_dir(dir, 0o755);
    for i in 0..n {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
        let mut b: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if generation == 2 {
            for k in (0..b.len()).step_by(2048) {
                b[k] ^= 0xff;
            }
        }
        fs::write(dir.join(format!("f{i:04}.bin")), b).unwrap();
    }
}

/// Peak RSS in KiB of `arbor --repo REPO ARGS`, through GNU `time` (see
/// tests/pull_memory.rs).
fn arbor_peak_rss(repo: &Path, args: &[&str]) -> (i64, String) {
    let out = repo.with_extension("rss");
    let r = run({
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&out)
            .arg(arbor_bin())
            .arg("--repo")
            .arg(repo)
            .args(args);
        c
    })
    .assert_ok();
    let text = fs::read_to_string(&out).unwrap();
    (
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("time wrote {text:?}")),
        r.stderr_str(),
    )
}

/// Generation memory does not grow with the delta: with 1 MB parts, a
/// C1→C2 delta of 64 bsdiff'd files (16 MiB of patches, 16 parts) peaks
/// within 8 MiB of one of 16 files (4 MiB), where holding the patches (as
/// generation did) adds 12 MiB; and a from-scratch delta of the 16 MiB
/// tree (22 parts) stays as low. Parts and patches are streamed, never held whole.
#[test]
fn generation_memory_does_not_grow_with_the_delta() {
    let base = scratch_dir("publish-memory");
    let mut peaks = Vec::new();
    for n in [16usize, 64] {
        let repo = base.join(format!("repo{n}"));
        arbor_init(&repo, Mode::Archive);
        let tree = base.join(format!("tree{n}"));
        random_files(&tree, n, 1);
        arbor_commit(&repo, &tree, "main", &CommitOpts::new("one", "", TS));
        random_files(&tree, n, 2);
        arbor_commit(&repo, &tree, "main", &CommitOpts::new("two", "", TS + 1));
        let (peak, err) = arbor_peak_rss(
            &repo,
            &[
                "-v",
                "static-delta",
                "generate",
                "--to",
                "main",
                "--max-chunk-size",
                "1",
                "--jobs",
                "2",
            ],
        );
        assert!(err.contains(&format!("bsdiff {n}")), "{err}");
        peaks.push(peak);
        if n == 64 {
            let (scratch, err) = arbor_peak_rss(
                &repo,
                &[
                    "-v",
                    "static-delta",
                    "generate",
                    "--empty",
                    "--to",
                    "main",
                    "--max-chunk-size",
                    "1",
                    "--min-fallback-size",
                    "0",
                    "--jobs",
                    "2",
                ],
            );
            assert!(err.contains(" parts, 66 objects, "), "{err}");
            eprintln!("from scratch: {scratch} KiB");
            assert!(scratch < peaks[0] + 8 * 1024, "{scratch} KiB vs {peaks:?}");
        }
    }
    eprintln!("peak RSS (KiB): {peaks:?}");
    assert!(peaks[1] < peaks[0] + 8 * 1024, "peak RSS (KiB): {peaks:?}");
    let _ = fs::remove_dir_all(&base);
}

/// Runs arbor on `repo` with `SOURCE_DATE_EPOCH=sde`.
fn arbor_with_sde(repo: &Path, sde: &str, args: &[&str]) -> Run {
    let mut cmd = arbor_command();
    cmd.arg("--repo")
        .arg(repo)
        .args(args)
        .env("SOURCE_DATE_EPOCH", sde);
    run(cmd)
}

/// `SOURCE_DATE_EPOCH` stamps the commit, the delta superblock and the
/// summary's last-modified time, so the same inputs give the same bytes;
/// a malformed value is an error (not the epoch).
#[test]
fn source_date_epoch_stamps_commits_deltas_and_summaries() {
    let t = shared_tempdir();
    let repo = t.path().join("repo");
    arbor_init(&repo, Mode::Archive);
    let tree = t.path().join("tree");
    build_tree(&tree);
    let sde = "1234567890";
    let c = expect_checksum_line(
        &arbor_with_sde(
            &repo,
            sde,
            &["commit", tree.to_str().unwrap(), "--branch", "main"],
        )
        .assert_ok(),
    );
    let commit =
        arbor::ostree::Commit::parse(&fs::read(object_path(&repo, &c, "commit")).unwrap()).unwrap();
    assert_eq!(commit.timestamp, 1_234_567_890);
    let d = DeltaName::parse(&c).unwrap();
    let gen_args = [
        "static-delta",
        "generate",
        "--empty",
        "--to",
        "main",
        "--jobs",
        "2",
    ];
    let mut deltas = Vec::new();
    let mut summaries = Vec::new();
    for _ in 0..2 {
        arbor_with_sde(&repo, sde, &gen_args).assert_ok();
        deltas.push(
            files_below(&repo.join(d.dir()))
                .into_iter()
                .map(|f| fs::read(repo.join(d.dir()).join(f)).unwrap())
                .collect::<Vec<_>>(),
        );
        arbor_with_sde(&repo, sde, &["summary", "-u"]).assert_ok();
        summaries.push(fs::read(repo.join("summary")).unwrap());
    }
    assert_eq!(deltas[0], deltas[1]);
    assert_eq!(summaries[0], summaries[1]);
    let sb = Superblock::parse(&fs::read(repo.join(d.superblock_path())).unwrap()).unwrap();
    assert_eq!(sb.timestamp, 1_234_567_890);
    let s = Summary::parse(&summaries[0]).unwrap();
    assert_eq!(
        s.metadata
            .get("ostree.summary.last-modified")
            .and_then(Value::as_u64_be),
        Some(1_234_567_890)
    );
    for args in [&["summary", "-u"][..], &gen_args[..]] {
        let r = arbor_with_sde(&repo, "yesterday", args).assert_clean_failure();
        assert!(
            r.stderr_str().contains("SOURCE_DATE_EPOCH"),
            "{}",
            r.stderr_str()
        );
    }
    assert_eq!(fs::read(repo.join("summary")).unwrap(), summaries[0]);
}
