//! Ed25519 (ostree signapi, `sign-verify`) verification of pulled commits
//! and summaries, served by nginx.
//!
//! The `ostree` on the test machines (Debian 2022.7) is built without
//! libsodium and cannot sign or verify ed25519, so the signatures are made
//! here with ed25519-dalek and written into `.commitmeta` / `summary.sig`
//! as the `a{sv}` ostree writes (`ostree.sign.ed25519` → `aay`), using
//! arbor's own metadata encoder. The commits themselves are made by the
//! real `ostree commit`.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbor::ostree::{Metadata, Value};
use base64::Engine as _;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use pull_support::*;

const SIGN_KEY: &str = "ostree.sign.ed25519";

struct Key {
    sk: SigningKey,
    /// Base64 public key, as in `verification-ed25519-key`.
    b64: String,
    /// Lower-case hex public key, as messages name it.
    hex: String,
}

fn key(seed: u8) -> Key {
    let sk = SigningKey::from_bytes(&[seed; 32]);
    let pk = sk.verifying_key().to_bytes();
    Key {
        b64: base64::engine::general_purpose::STANDARD.encode(pk),
        hex: hex(&pk),
        sk,
    }
}

struct Fixture {
    www: PathBuf,
    a: Key,
    b: Key,
    c: Key,
    /// Commits in `www/repo` (archive, no summary), one ref each.
    signed: String,
    unsigned: String,
    other: String,
    tampered: String,
    /// Signatures by B then A.
    multi: String,
    /// A 63-byte signature, then a good one by A.
    badlen: String,
}

/// Writes `objects/…/<commit>.commitmeta` = `{ostree.sign.ed25519: sigs}`.
fn write_commitmeta(repo: &Path, commit: &str, sigs: Vec<Vec<u8>>) {
    let mut md = Metadata::new();
    md.insert(SIGN_KEY, Value::ByteArrays(sigs));
    fs::write(object_path(repo, commit, "commitmeta"), md.serialize()).unwrap();
}

fn commit_bytes(repo: &Path, commit: &str) -> Vec<u8> {
    fs::read(object_path(repo, commit, "commit")).unwrap()
}

fn sign(k: &Key, data: &[u8]) -> Vec<u8> {
    k.sk.sign(data).to_bytes().to_vec()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("ed25519");
        let (a, b, c) = (key(1), key(2), key(3));
        let www = base.join("www");
        let repo = www.join("repo");
        fs::create_dir_all(&www).unwrap();
        ostree_init(&repo, Mode::Archive);
        let tree = base.join("tree");
        build_small_tree(&tree);
        let commit = |branch: &str| {
            let args = CommitOpts::new(branch, "", TS).ostree_args(&tree, branch);
            ostree_repo_ok(&repo, args).stdout_str().trim().to_string()
        };
        let signed = commit("signed");
        let unsigned = commit("unsigned");
        let other = commit("other");
        let tampered = commit("tampered");
        let multi = commit("multi");
        let badlen = commit("badlen");

        let data = commit_bytes(&repo, &signed);
        write_commitmeta(&repo, &signed, vec![sign(&a, &data)]);
        let data = commit_bytes(&repo, &other);
        write_commitmeta(&repo, &other, vec![sign(&b, &data)]);
        let data = commit_bytes(&repo, &tampered);
        let mut sig = sign(&a, &data);
        sig[40] ^= 0x01;
        write_commitmeta(&repo, &tampered, vec![sig]);
        let data = commit_bytes(&repo, &multi);
        write_commitmeta(&repo, &multi, vec![sign(&b, &data), sign(&a, &data)]);
        let data = commit_bytes(&repo, &badlen);
        write_commitmeta(&repo, &badlen, vec![vec![7; 63], sign(&a, &data)]);

        // Signed summaries: by A in `sum/`, by B in `badsum/`.
        for (dir, k) in [("sum", &a), ("badsum", &b)] {
            let copy = www.join(dir);
            copy_tree(&repo, &copy);
            ostree_repo_ok(&copy, ["summary", "-u"]);
            let summary = fs::read(copy.join("summary")).unwrap();
            let mut md = Metadata::new();
            md.insert(SIGN_KEY, Value::ByteArrays(vec![sign(k, &summary)]));
            fs::write(copy.join("summary.sig"), md.serialize()).unwrap();
        }
        Fixture {
            www,
            a,
            b,
            c,
            signed,
            unsigned,
            other,
            tampered,
            multi,
            badlen,
        }
    })
}

fn server() -> &'static Nginx {
    static N: OnceLock<Nginx> = OnceLock::new();
    N.get_or_init(|| Nginx::start(&fixture().www))
}

fn add_remote(store: &Path, name: &str, url: &str, extra: &[&str]) {
    let mut a = vec!["remote", "add", name, url];
    a.extend_from_slice(extra);
    arbor_repo_ok(store, a);
}

/// `remote add` options for ed25519 only (gpg-verify defaults to true).
fn inline(k: &Key) -> [String; 2] {
    [
        "--no-gpg-verify".into(),
        format!("--sign-verify=ed25519=inline:{}", k.b64),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `arbor pull` with system-wide keys looked for under `basedir` only.
fn pull_with_basedir(store: &Path, basedir: &Path, args: &[&str]) -> Run {
    let mut c = arbor_command();
    c.env("ARBOR_SIGN_KEY_BASEDIR", basedir);
    c.arg("--repo").arg(store).arg("pull").args(args);
    run(c)
}

#[test]
fn signed_commit_pulls_with_an_inline_key() {
    let f = fixture();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &strs(&inline(&f.a)),
    );
    // The config is what ostree's `remote add --sign-verify` writes.
    let get = |k: &str| {
        ostree_repo_ok(&store, ["config", "get", &format!("remote \"origin\".{k}")])
            .stdout_str()
            .trim()
            .to_string()
    };
    assert_eq!(get("sign-verify"), "ed25519");
    assert_eq!(get("verification-ed25519-key"), f.a.b64);
    assert_eq!(get("gpg-verify"), "false");

    pull_ok(&store, &["origin", "signed"]);
    assert_eq!(
        read_ref(&store, "remotes/origin/signed").as_deref(),
        Some(f.signed.as_str())
    );
    assert!(object_path(&store, &f.signed, "commitmeta").is_file());
    assert!(
        !store
            .join(format!("state/{}.commitpartial", f.signed))
            .exists()
    );
    ostree_repo_ok(&store, ["fsck"]);
    // Any signature by any trusted key will do.
    pull_ok(&store, &["origin", "multi"]);
    // Pulling again re-verifies the present commit.
    pull_ok(&store, &["origin", "signed"]);
}

#[test]
fn unsigned_commit_is_refused_before_its_tree_is_fetched() {
    let f = fixture();
    // Its own server, so that other tests' requests are not counted.
    let nginx = &Nginx::start(&f.www);
    let (_t, store) = new_store(Mode::Archive);
    add_remote(&store, "origin", &nginx.url("repo"), &strs(&inline(&f.a)));
    let mark = nginx.mark();
    let r = pull(&store, &["origin", "unsigned"]);
    assert_refused(
        &store,
        r,
        "unsigned",
        &f.unsigned,
        "origin",
        &["no detached metadata", "sign-verify=false"],
    );
    let reqs = nginx.requests_since(mark);
    let tree: Vec<_> = reqs
        .iter()
        .filter(|r| matches!(kind_of(&r.path), Kind::DirTree | Kind::DirMeta | Kind::File))
        .collect();
    assert!(
        tree.is_empty(),
        "tree or content fetched for a refused commit: {tree:?}"
    );
    assert!(
        reqs.iter().any(|r| kind_of(&r.path) == Kind::Commit),
        "the commit itself is fetched and checked: {reqs:?}"
    );

    // Present through another, unverified remote: still refused.
    add_remote(&store, "plain", &nginx.url("repo"), &["--no-sign-verify"]);
    pull_ok(&store, &["plain", "unsigned"]);
    let r = pull(&store, &["origin", "unsigned"]).assert_clean_failure();
    assert!(
        r.stderr_str().contains("no detached metadata"),
        "{}",
        r.describe()
    );
    assert_eq!(read_ref(&store, "remotes/origin/unsigned"), None);
}

#[test]
fn commit_signed_by_another_key_is_refused() {
    let f = fixture();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &strs(&inline(&f.a)),
    );
    let r = pull(&store, &["origin", "other"]);
    assert_refused(
        &store,
        r,
        "other",
        &f.other,
        "origin",
        &[
            &f.a.hex,
            "no valid ed25519 signature",
            "verification-ed25519-key",
        ],
    );
}

#[test]
fn tampered_signature_is_refused() {
    let f = fixture();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &strs(&inline(&f.a)),
    );
    let r = pull(&store, &["origin", "tampered"]);
    assert_refused(
        &store,
        r,
        "tampered",
        &f.tampered,
        "origin",
        &["no valid ed25519 signature"],
    );
}

/// As in ostree, a signature of the wrong length is an error when it is
/// reached, even if a later one would verify.
#[test]
fn signature_of_wrong_length_is_refused() {
    let f = fixture();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &strs(&inline(&f.a)),
    );
    let r = pull(&store, &["origin", "badlen"]);
    assert_refused(
        &store,
        r,
        "badlen",
        &f.badlen,
        "origin",
        &["63 bytes, expected 64"],
    );
}

#[test]
fn key_file_with_several_keys() {
    let f = fixture();
    let dir = tempdir();
    // CRLF line ends and a junk line are tolerated (GLib's lenient base64,
    // invalid keys skipped), as long as one key is valid.
    let file = dir.path().join("keys.ed25519");
    fs::write(
        &file,
        format!("{}\r\nnot-a-key\n{}\n{}\n", f.c.b64, f.a.b64, f.b.b64),
    )
    .unwrap();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &[
            "--no-gpg-verify",
            &format!("--sign-verify=ed25519=file:{}", file.display()),
        ],
    );
    assert_eq!(
        ostree_repo_ok(
            &store,
            [
                "config",
                "get",
                "remote \"origin\".verification-ed25519-file"
            ]
        )
        .stdout_str()
        .trim(),
        file.display().to_string()
    );
    pull_ok(&store, &["origin", "signed"]);
    pull_ok(&store, &["origin", "other"]);

    // A file without the signing key: refused, and the keys tried named.
    let only_c = dir.path().join("c.ed25519");
    fs::write(&only_c, format!("{}\n", f.c.b64)).unwrap();
    let (_t2, s2) = new_store(Mode::Archive);
    add_remote(
        &s2,
        "origin",
        &server().url("repo"),
        &[
            "--no-gpg-verify",
            &format!("--sign-verify=ed25519=file:{}", only_c.display()),
        ],
    );
    let r = pull(&s2, &["origin", "signed"]);
    assert_refused(&s2, r, "signed", &f.signed, "origin", &[&f.c.hex]);

    // File and inline key together: both are trusted.
    let (_t3, s3) = new_store(Mode::Archive);
    add_remote(
        &s3,
        "origin",
        &server().url("repo"),
        &[
            "--no-gpg-verify",
            &format!("--sign-verify=ed25519=file:{}", only_c.display()),
            &format!("--sign-verify=ed25519=inline:{}", f.a.b64),
        ],
    );
    pull_ok(&s3, &["origin", "signed"]);

    // ostree (since 2025.2) stops at an empty line and fails the file; a
    // missing file fails too. Nothing is fetched.
    let gap = dir.path().join("gap.ed25519");
    fs::write(&gap, format!("{}\n\n{}\n", f.c.b64, f.a.b64)).unwrap();
    for (path, msg) in [
        (&gap, "line 2 is empty"),
        (&dir.path().join("nope"), "no such file"),
    ] {
        let (_t4, s4) = new_store(Mode::Archive);
        add_remote(
            &s4,
            "origin",
            &server().url("repo"),
            &[
                "--no-gpg-verify",
                &format!("--sign-verify=ed25519=file:{}", path.display()),
            ],
        );
        let r = pull(&s4, &["origin", "signed"]).assert_clean_failure();
        assert!(
            r.stderr_str().contains(msg) && r.stderr_str().contains("verification-ed25519-file"),
            "{}",
            r.describe()
        );
        assert!(!object_path(&s4, &f.signed, "commit").exists());
    }
}

/// `sign-verify=true` without keys in the remote config: the system-wide
/// `trusted.ed25519` files and `.d` directories, minus `revoked.ed25519`.
#[test]
fn system_keys_and_revoked_keys() {
    let f = fixture();
    let base = tempdir();
    let basedir = base.path();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &["--no-gpg-verify", "--set", "sign-verify=true"],
    );
    // No keys anywhere.
    let r = pull_with_basedir(&store, basedir, &["origin", "signed"]);
    assert_refused(
        &store,
        r,
        "signed",
        &f.signed,
        "origin",
        &["no trusted ed25519 public keys", "trusted.ed25519"],
    );

    fs::write(basedir.join("trusted.ed25519"), format!("{}\n", f.c.b64)).unwrap();
    fs::create_dir_all(basedir.join("trusted.ed25519.d")).unwrap();
    fs::write(
        basedir.join("trusted.ed25519.d/a"),
        format!("{}\n", f.a.b64),
    )
    .unwrap();
    pull_with_basedir(&store, basedir, &["origin", "signed"]).assert_ok();

    // Revoke A: its signatures no longer count (B's key is not trusted).
    let (_t2, s2) = new_store(Mode::Archive);
    add_remote(
        &s2,
        "origin",
        &server().url("repo"),
        &["--no-gpg-verify", "--set", "sign-verify=true"],
    );
    fs::create_dir_all(basedir.join("revoked.ed25519.d")).unwrap();
    fs::write(
        basedir.join("revoked.ed25519.d/a"),
        format!("{}\n", f.a.b64),
    )
    .unwrap();
    let r = pull_with_basedir(&s2, basedir, &["origin", "multi"]);
    let err = r.stderr_str();
    assert_refused(&s2, r, "multi", &f.multi, "origin", &[&f.c.hex]);
    assert!(!err.contains(&f.a.hex), "a revoked key is not tried: {err}");

    // Keys in the remote config replace the system-wide ones, and ostree
    // reads revoked keys only with the system-wide ones.
    let (_t3, s3) = new_store(Mode::Archive);
    add_remote(
        &s3,
        "origin",
        &server().url("repo"),
        &[
            "--no-gpg-verify",
            "--set",
            "sign-verify=true",
            "--set",
            &format!("verification-ed25519-key={}", f.a.b64),
        ],
    );
    pull_with_basedir(&s3, basedir, &["origin", "signed"]).assert_ok();
}

/// GPG and ed25519 both on (gpg-verify defaults to true): both must pass,
/// as in ostree.
#[test]
fn gpg_and_ed25519_must_both_pass() {
    let f = fixture();
    let (_t, store) = new_store(Mode::Archive);
    add_remote(
        &store,
        "origin",
        &server().url("repo"),
        &[&format!("--sign-verify=ed25519=inline:{}", f.a.b64)],
    );
    let r = pull(&store, &["origin", "signed"]);
    assert_refused(
        &store,
        r,
        "signed",
        &f.signed,
        "origin",
        &["no GPG signatures"],
    );
}

#[test]
fn signed_summary_is_verified_when_configured() {
    let f = fixture();
    let nginx = server();
    let mut opts = inline(&f.a).to_vec();
    opts.extend(["--set".into(), "sign-verify-summary=true".into()]);

    let (_t, store) = new_store(Mode::Archive);
    add_remote(&store, "origin", &nginx.url("sum"), &strs(&opts));
    pull_ok(&store, &["origin", "signed"]);
    let refs = arbor_repo_ok(&store, ["remote", "refs", "origin"]).stdout_str();
    assert!(refs.contains("origin:signed"), "{refs}");

    // Signed by a key the remote does not trust.
    let (_t2, s2) = new_store(Mode::Archive);
    add_remote(&s2, "origin", &nginx.url("badsum"), &strs(&opts));
    let r = pull(&s2, &["origin", "signed"]).assert_clean_failure();
    let err = r.stderr_str();
    assert!(
        err.contains("summary of remote \"origin\"") && err.contains(&f.a.hex),
        "{}",
        r.describe()
    );
    assert_eq!(read_ref(&s2, "remotes/origin/signed"), None);
    arbor_repo(&s2, ["remote", "refs", "origin"]).assert_clean_failure();

    // No summary.sig (and no summary) at all.
    let (_t3, s3) = new_store(Mode::Archive);
    add_remote(&s3, "origin", &nginx.url("repo"), &strs(&opts));
    let r = pull(&s3, &["origin", "signed"]).assert_clean_failure();
    assert!(
        r.stderr_str().contains("sign-verify-summary"),
        "{}",
        r.describe()
    );
}

#[test]
fn unsupported_settings_are_refused() {
    let f = fixture();
    let (_t, store) = new_store(Mode::Archive);
    for (spec, msg) in [
        ("dummy=inline:x", "not supported"),
        ("ed25519", "KEYTYPE"),
        ("ed25519=foo:bar", "invalid key reference"),
        ("ed25519=inlinex", "inline:BASE64KEY"),
    ] {
        let r = arbor_repo(
            &store,
            [
                "remote",
                "add",
                "x",
                "http://127.0.0.1:1/",
                &format!("--sign-verify={spec}"),
            ],
        )
        .assert_clean_failure();
        assert!(r.stderr_str().contains(msg), "{spec}: {}", r.describe());
    }
    let r = arbor_repo(
        &store,
        [
            "remote",
            "add",
            "x",
            "http://127.0.0.1:1/",
            "--no-sign-verify",
            &format!("--sign-verify=ed25519=inline:{}", f.a.b64),
        ],
    )
    .assert_clean_failure();
    assert!(r.stderr_str().contains("both"), "{}", r.describe());

    // A listed type with no keys, an unsupported or unknown type, a bad
    // inline key: the pull fails before any request.
    for (set, msg) in [
        (
            vec!["sign-verify=ed25519"],
            "no keys found for required signapi type ed25519",
        ),
        (
            vec!["sign-verify=spki", "verification-ed25519-key=x"],
            "not supported",
        ),
        (
            vec!["sign-verify=ed25519,ed25519"],
            "unknown signature type",
        ),
        (
            vec!["sign-verify=ed25519", "verification-ed25519-key=aGVsbG8="],
            "5 bytes",
        ),
    ] {
        let (_t, s) = new_store(Mode::Archive);
        let mut args = vec!["--no-gpg-verify".to_string()];
        for kv in &set {
            args.push("--set".into());
            args.push(kv.to_string());
        }
        add_remote(&s, "origin", &server().url("repo"), &strs(&args));
        let r = pull(&s, &["origin", "signed"]).assert_clean_failure();
        assert!(r.stderr_str().contains(msg), "{set:?}: {}", r.describe());
    }
}
