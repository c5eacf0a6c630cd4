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
#[path = "common/sign.rs"]
mod sign_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbor::ostree::{Metadata, Value};
use base64::Engine as _;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use pull_support::*;
use sign_support::*;

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
        let src = SourceRepo::new("ed25519");
        let (a, b, c) = (key(1), key(2), key(3));
        // Each commit signed by `sigs`, given the commit object's bytes.
        let commit = |branch: &str, sigs: &dyn Fn(&[u8]) -> Vec<Vec<u8>>| {
            let commit = src.commit(branch, &[]);
            let data = commit_bytes(&src.repo, &commit);
            let sigs = sigs(&data);
            if !sigs.is_empty() {
                write_commitmeta(&src.repo, &commit, sigs);
            }
            commit
        };
        let signed = commit("signed", &|d| vec![sign(&a, d)]);
        let unsigned = commit("unsigned", &|_| vec![]);
        let other = commit("other", &|d| vec![sign(&b, d)]);
        let tampered = commit("tampered", &|d| {
            let mut sig = sign(&a, d);
            sig[40] ^= 0x01;
            vec![sig]
        });
        let multi = commit("multi", &|d| vec![sign(&b, d), sign(&a, d)]);
        let badlen = commit("badlen", &|d| vec![vec![7; 63], sign(&a, d)]);

        // Signed summaries: by A in `sum/`, by B in `badsum/`.
        for (dir, k) in [("sum", &a), ("badsum", &b)] {
            let copy = src.copy_with_summary(dir, &[]);
            let summary = fs::read(copy.join("summary")).unwrap();
            let mut md = Metadata::new();
            md.insert(SIGN_KEY, Value::ByteArrays(vec![sign(k, &summary)]));
            fs::write(copy.join("summary.sig"), md.serialize()).unwrap();
        }
        Fixture {
            www: src.www,
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

/// `remote add` options for ed25519 only (gpg-verify defaults to true).
fn inline(k: &Key) -> [String; 2] {
    [
        "--no-gpg-verify".into(),
        format!("--sign-verify=ed25519=inline:{}", k.b64),
    ]
}

/// `remote add` options for ed25519 only, with the keys in `file`.
fn key_file(file: &Path) -> [String; 2] {
    [
        "--no-gpg-verify".into(),
        format!("--sign-verify=ed25519=file:{}", file.display()),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `arbor pull` with system-wide keys looked for under `basedir` only.
fn pull_with_basedir(store: &Path, basedir: &Path, args: &[&str]) -> Run {
    let mut c = arbor_command();
    c.arg("--repo")
        .arg(store)
        .arg("pull")
        .arg("--sign-key-basedir")
        .arg(basedir)
        .args(args);
    run(c)
}

/// A fresh store whose `origin` verifies with the system-wide keys only.
fn store_with_system_keys() -> (tempfile::TempDir, PathBuf) {
    store_with_origin(
        &server().url("repo"),
        &["--no-gpg-verify", "--set", "sign-verify=true"],
    )
}

#[test]
fn signed_commit_pulls_with_an_inline_key() {
    let f = fixture();
    let (_t, store) = store_with_origin(&server().url("repo"), &strs(&inline(&f.a)));
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

    assert_verified_pull(&store, "signed", &f.signed);
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
    let (_t, store) = store_with_origin(&nginx.url("repo"), &strs(&inline(&f.a)));
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
    assert_no_tree_requests(&reqs);
    assert!(
        reqs.iter().any(|r| kind_of(&r.path) == Kind::Commit),
        "the commit itself is fetched and checked: {reqs:?}"
    );

    // Present through another, unverified remote: still refused.
    assert_refused_although_present(
        &store,
        &nginx.url("repo"),
        "--no-sign-verify",
        "unsigned",
        "no detached metadata",
    );
}

#[test]
fn commit_signed_by_another_key_is_refused() {
    let f = fixture();
    assert_origin_refuses(
        &server().url("repo"),
        &strs(&inline(&f.a)),
        "other",
        &f.other,
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
    assert_origin_refuses(
        &server().url("repo"),
        &strs(&inline(&f.a)),
        "tampered",
        &f.tampered,
        &["no valid ed25519 signature"],
    );
}

/// As in ostree, a signature of the wrong length is an error when it is
/// reached, even if a later one would verify.
#[test]
fn signature_of_wrong_length_is_refused() {
    let f = fixture();
    assert_origin_refuses(
        &server().url("repo"),
        &strs(&inline(&f.a)),
        "badlen",
        &f.badlen,
        &["63 bytes, expected 64"],
    );
}

#[test]
fn key_file_with_several_keys() {
    let f = fixture();
    let url = server().url("repo");
    let dir = tempdir();
    // CRLF line ends and a junk line are tolerated (GLib's lenient base64,
    // invalid keys skipped), as long as one key is valid.
    let file = dir.path().join("keys.ed25519");
    fs::write(
        &file,
        format!("{}\r\nnot-a-key\n{}\n{}\n", f.c.b64, f.a.b64, f.b.b64),
    )
    .unwrap();
    let (_t, store) = store_with_origin(&url, &strs(&key_file(&file)));
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
    assert_origin_refuses(
        &url,
        &strs(&key_file(&only_c)),
        "signed",
        &f.signed,
        &[&f.c.hex],
    );

    // File and inline key together: both are trusted.
    let mut both = key_file(&only_c).to_vec();
    both.push(format!("--sign-verify=ed25519=inline:{}", f.a.b64));
    let (_t3, s3) = store_with_origin(&url, &strs(&both));
    pull_ok(&s3, &["origin", "signed"]);

    // ostree (since 2025.2) stops at an empty line and fails the file; a
    // missing file fails too. Nothing is fetched.
    let gap = dir.path().join("gap.ed25519");
    fs::write(&gap, format!("{}\n\n{}\n", f.c.b64, f.a.b64)).unwrap();
    for (path, msg) in [
        (&gap, "line 2 is empty"),
        (&dir.path().join("nope"), "no such file"),
    ] {
        let (_t4, s4) = assert_origin_pull_fails(
            &url,
            &strs(&key_file(path)),
            "signed",
            &[msg, "verification-ed25519-file"],
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
    let (_t, store) = store_with_system_keys();
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
    let (_t2, s2) = store_with_system_keys();
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
    let (_t3, s3) = store_with_origin(
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
    assert_origin_refuses(
        &server().url("repo"),
        &[&format!("--sign-verify=ed25519=inline:{}", f.a.b64)],
        "signed",
        &f.signed,
        &["no GPG signatures"],
    );
}

#[test]
fn signed_summary_is_verified_when_configured() {
    let f = fixture();
    let nginx = server();
    let mut opts = inline(&f.a).to_vec();
    opts.extend(["--set".into(), "sign-verify-summary=true".into()]);
    // Signed by a key the remote does not trust: A is named as the key
    // that was tried.
    assert_summary_verified(nginx, &strs(&opts), &f.a.hex);

    // No summary.sig (and no summary) at all.
    assert_origin_pull_fails(
        &nginx.url("repo"),
        &strs(&opts),
        "signed",
        &["sign-verify-summary"],
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
        let mut args = vec!["--no-gpg-verify"];
        for kv in &set {
            args.extend(["--set", kv]);
        }
        assert_origin_pull_fails(&server().url("repo"), &args, "signed", &[msg]);
    }
}
