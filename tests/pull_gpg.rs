//! GPG verification of pulled commits and summaries, against keys made by
//! the real `gpg` and commits signed by the real `ostree commit
//! --gpg-sign`, served by nginx.
//!
//! Besides accepting and refusing, the tests check that arbor and `ostree`
//! agree: a keyring written by `arbor remote gpg-import` works for `ostree
//! pull` and one written by `ostree remote gpg-import` works for arbor, and
//! for revoked keys and signing subkeys both tools reach the same verdict.

mod common;
#[path = "common/pull.rs"]
mod pull_support;
#[path = "common/sign.rs"]
mod sign_support;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arbor::ostree::{Metadata, Value};
use common::*;
use pull_support::*;
use sign_support::*;

/// A key made by `gpg`.
struct Key {
    fpr: String,
    /// Key ID of the key that signs (the subkey's for a subkey key).
    signing_id: String,
    /// `gpg --armor --export`.
    asc: PathBuf,
}

struct Fixture {
    www: PathBuf,
    a: Key,
    b: Key,
    sub: Key,
    /// Exported after its revocation certificate was imported.
    revoked: Key,
    /// Commits in `www/repo` (archive, no summary), one ref each.
    signed: String,
    unsigned: String,
    other: String,
    tampered: String,
    by_subkey: String,
    by_revoked: String,
    /// Key valid for one day, and a commit it signed.
    expiring: Key,
    by_expiring: String,
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

/// `(fingerprint, key id)` of the primary key and of each subkey.
fn colons(home: &Path, who: &str) -> Vec<(String, String, String)> {
    let out = gpg(home, ["--with-colons", "--list-keys", who])
        .assert_ok()
        .stdout_str();
    let mut keys = Vec::new();
    let mut kind = String::new();
    let mut id = String::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(':').collect();
        match f[0] {
            "pub" | "sub" => {
                kind = f[0].to_string();
                id = f[4].to_string();
            }
            "fpr" => keys.push((kind.clone(), f[9].to_string(), id.clone())),
            _ => {}
        }
    }
    keys
}

/// `gpg --armor --export FPR > PATH`.
fn export(home: &Path, fpr: &str, path: &Path) {
    let out = gpg(home, ["--armor", "--export", fpr]).assert_ok();
    fs::write(path, &out.stdout).unwrap();
}

fn make_key(home: &Path, dir: &Path, uid: &str, algo: &str, file: &str) -> Key {
    gpg(home, ["--quick-gen-key", uid, algo, "sign", "0"]).assert_ok();
    let keys = colons(home, uid);
    let (_, fpr, id) = keys.iter().find(|k| k.0 == "pub").expect("primary key");
    let asc = dir.join(file);
    export(home, fpr, &asc);
    Key {
        fpr: fpr.clone(),
        signing_id: id.clone(),
        asc,
    }
}

/// `ostree` options signing with `key` (a fingerprint) from `home`.
fn gpg_sign(key: &str, home: &Path) -> Vec<String> {
    vec![
        format!("--gpg-sign={key}"),
        format!("--gpg-homedir={}", home.display()),
    ]
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let src = SourceRepo::new("gpg");
        let base = &src.base;
        let home = base.join("gnupg");
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let keys = base.join("keys");
        fs::create_dir_all(&keys).unwrap();
        let a = make_key(&home, &keys, "Key A <a@example.com>", "ed25519", "a.asc");
        let b = make_key(&home, &keys, "Key B <b@example.com>", "rsa2048", "b.asc");

        // A certification-only primary key with a signing subkey: gpg signs
        // with the subkey (and embeds the back-signature).
        let sub_uid = "Sub Key <s@example.com>";
        gpg(&home, ["--quick-gen-key", sub_uid, "ed25519", "cert", "0"]).assert_ok();
        let sub_fpr = colons(&home, sub_uid)[0].1.clone();
        gpg(
            &home,
            ["--quick-add-key", sub_fpr.as_str(), "ed25519", "sign", "0"],
        )
        .assert_ok();
        let sub_keys = colons(&home, sub_uid);
        let sub_id = sub_keys
            .iter()
            .find(|k| k.0 == "sub")
            .expect("subkey")
            .2
            .clone();
        let sub_asc = keys.join("sub.asc");
        export(&home, &sub_fpr, &sub_asc);
        let sub = Key {
            fpr: sub_fpr,
            signing_id: sub_id,
            asc: sub_asc,
        };

        let signed = src.commit("signed", &gpg_sign(&a.fpr, &home));
        let unsigned = src.commit("unsigned", &[]);
        let other = src.commit("other", &gpg_sign(&b.fpr, &home));
        let tampered = src.commit("tampered", &gpg_sign(&a.fpr, &home));
        let by_subkey = src.commit("subkey", &gpg_sign(&sub.fpr, &home));

        let mut expiring = make_key(&home, &keys, "Expiring <e@example.com>", "ed25519", "e.asc");
        // make_key made a key without expiry; this one expires in a day.
        gpg(
            &home,
            [
                "--quick-gen-key",
                "Expiring1d <e1@example.com>",
                "ed25519",
                "sign",
                "1d",
            ],
        )
        .assert_ok();
        {
            let keys1 = colons(&home, "Expiring1d <e1@example.com>");
            let fpr = keys1[0].1.clone();
            export(&home, &fpr, &expiring.asc);
            expiring.signing_id = fpr[fpr.len() - 16..].to_string();
            expiring.fpr = fpr;
        }
        let by_expiring = src.commit("expiring", &gpg_sign(&expiring.fpr, &home));

        // Sign first, then revoke (gpg will not sign with a revoked key).
        let mut revoked = make_key(&home, &keys, "Revoked <r@example.com>", "ed25519", "r.asc");
        let by_revoked = src.commit("revoked", &gpg_sign(&revoked.fpr, &home));
        let rev = fs::read_to_string(
            home.join("openpgp-revocs.d")
                .join(format!("{}.rev", revoked.fpr)),
        )
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
        let rev_file = keys.join("r.rev");
        fs::write(&rev_file, rev).unwrap();
        gpg(&home, [OsStr::new("--import"), rev_file.as_os_str()]).assert_ok();
        export(&home, &revoked.fpr, &revoked.asc);
        revoked.signing_id = revoked.fpr[revoked.fpr.len() - 16..].to_string();

        // Alter one byte of the signature itself (inside the signature
        // MPIs at its end); the metadata stays a well-formed a{sv}.
        let meta_path = object_path(&src.repo, &tampered, "commitmeta");
        let mut md = Metadata::parse(&fs::read(&meta_path).unwrap()).unwrap();
        let Some(Value::ByteArrays(sigs)) = md.get("ostree.gpgsigs").cloned() else {
            panic!("no ostree.gpgsigs in {}", meta_path.display());
        };
        let mut sigs = sigs;
        let n = sigs[0].len();
        sigs[0][n - 6] ^= 0x55;
        md.insert("ostree.gpgsigs", Value::ByteArrays(sigs));
        fs::write(&meta_path, md.serialize()).unwrap();

        // Signed summaries: by A in `sum/`, by B in `badsum/`.
        for (dir, key) in [("sum", &a), ("badsum", &b)] {
            src.copy_with_summary(dir, &gpg_sign(&key.fpr, &home));
        }
        let mut c = Command::new("gpgconf");
        c.env("GNUPGHOME", &home).args(["--kill", "gpg-agent"]);
        run(c);
        Fixture {
            www: src.www,
            a,
            b,
            sub,
            revoked,
            signed,
            unsigned,
            other,
            tampered,
            by_subkey,
            by_revoked,
            expiring,
            by_expiring,
        }
    })
}

fn server() -> &'static Nginx {
    static N: OnceLock<Nginx> = OnceLock::new();
    N.get_or_init(|| Nginx::start(&fixture().www))
}

fn asc(k: &Key) -> &str {
    k.asc.to_str().unwrap()
}

#[test]
fn signed_commit_pulls_with_the_imported_key() {
    let f = fixture();
    let (_t, store) = store_with_origin(&server().url("repo"), &["--gpg-import", asc(&f.a)]);
    assert!(store.join("origin.trustedkeys.gpg").is_file());
    assert_verified_pull(&store, "signed", &f.signed);
    // ostree agrees that the stored signature is good.
    ostree_repo_ok(&store, ["show", "--gpg-verify-remote=origin", &f.signed]);
}

#[test]
fn unsigned_commit_is_refused_before_its_tree_is_fetched() {
    let f = fixture();
    // Its own server: requests of tests running alongside on the shared one
    // would fall into the window counted below.
    let nginx = Nginx::start(&f.www);
    let (_t, store) = store_with_origin(&nginx.url("repo"), &["--gpg-import", asc(&f.a)]);
    let mark = nginx.mark();
    let r = pull(&store, &["origin", "unsigned"]);
    assert_refused(
        &store,
        r,
        "unsigned",
        &f.unsigned,
        "origin",
        &["no GPG signatures"],
    );
    assert_no_tree_requests(&nginx.requests_since(mark));

    // The commit fetched by another, unverified remote is present now; a
    // verifying remote still refuses it (ostree verifies every commit it
    // scans, present or not).
    assert_refused_although_present(
        &store,
        &nginx.url("repo"),
        "--no-gpg-verify",
        "unsigned",
        "no GPG signatures",
    );
}

#[test]
fn commit_signed_by_an_untrusted_key_is_refused() {
    let f = fixture();
    assert_origin_refuses(
        &server().url("repo"),
        &["--gpg-import", asc(&f.a)],
        "other",
        &f.other,
        &[&f.b.signing_id, "public key not found"],
    );
}

#[test]
fn tampered_signature_is_refused() {
    let f = fixture();
    let url = server().url("repo");
    let opts = ["--gpg-import", asc(&f.a)];
    assert_origin_refuses(
        &url,
        &opts,
        "tampered",
        &f.tampered,
        &[&f.a.signing_id, "BAD signature"],
    );
    // ostree refuses it too.
    let (_t2, o) = store_with_origin(&url, &opts);
    let r = ostree_repo(&o, ["pull", "origin", "tampered"]).assert_clean_failure();
    assert!(r.stderr_str().contains("BAD signature"), "{}", r.describe());
}

#[test]
fn remote_without_verification_pulls_unsigned_commits() {
    let f = fixture();
    let (_t, store) = store_with_origin(&server().url("repo"), &["--no-sign-verify"]);
    pull_ok(&store, &["origin", "unsigned"]);
    assert_eq!(
        read_ref(&store, "remotes/origin/unsigned").as_deref(),
        Some(f.unsigned.as_str())
    );
    // And a URL (no remote) is never verified, as in ostree.
    let (_t2, s2) = new_store(Mode::Archive);
    pull_ok(&s2, &[&server().url("repo"), "unsigned"]);
}

#[test]
fn arbor_keyring_is_used_by_ostree_and_ostree_keyring_by_arbor() {
    let f = fixture();
    let url = server().url("repo");

    // arbor writes the keyring, ostree pulls with it.
    let (_t, o) = store_with_origin(&url, &[]);
    arbor_repo_ok(&o, ["remote", "gpg-import", "origin", asc(&f.a)]);
    ostree_repo_ok(&o, ["pull", "origin", "signed"]);
    let r = ostree_repo(&o, ["pull", "origin", "other"]).assert_clean_failure();
    assert!(
        r.stderr_str().contains("public key not found"),
        "{}",
        r.describe()
    );
    // Importing the second key (merged into the same keyring file).
    arbor_repo_ok(&o, ["remote", "gpg-import", "origin", asc(&f.b)]);
    ostree_repo_ok(&o, ["pull", "origin", "other"]);

    // ostree writes the keyring (GnuPG keyring format, trust packets
    // included), arbor pulls with it.
    let (_t2, s) = new_store(Mode::Archive);
    ostree_repo_ok(
        &s,
        [
            "remote",
            "add",
            &format!("--gpg-import={}", asc(&f.a)),
            "origin",
            &url,
        ],
    );
    pull_ok(&s, &["origin", "signed"]);
    let r = pull(&s, &["origin", "other"]);
    assert_refused(&s, r, "other", &f.other, "origin", &[&f.b.signing_id]);
    ostree_repo_ok(&s, ["remote", "gpg-import", "origin", "-k", asc(&f.b)]);
    pull_ok(&s, &["origin", "other"]);

    // A binary key file and `gpgkeypath=` work as in ostree.
    let (_t3, k) = store_with_origin(&url, &["--set", &format!("gpgkeypath={}", asc(&f.a))]);
    pull_ok(&k, &["origin", "signed"]);

    // `remote delete` removes the keyring, as ostree does.
    arbor_repo_ok(&o, ["remote", "delete", "origin"]);
    assert!(!o.join("origin.trustedkeys.gpg").exists());
}

#[test]
fn revoked_key_is_refused_like_ostree() {
    let f = fixture();
    let url = server().url("repo");
    let opts = ["--gpg-import", asc(&f.revoked)];
    assert_origin_refuses(&url, &opts, "revoked", &f.by_revoked, &["revoked"]);
    let (_t2, o) = store_with_origin(&url, &opts);
    let r = ostree_repo(&o, ["pull", "origin", "revoked"]).assert_clean_failure();
    assert!(r.stderr_str().contains("revoked"), "{}", r.describe());
}

#[test]
fn signing_subkey_is_accepted_like_ostree() {
    let f = fixture();
    let url = server().url("repo");
    let opts = ["--gpg-import", asc(&f.sub)];
    let (_t, store) = store_with_origin(&url, &opts);
    pull_ok(&store, &["origin", "subkey"]);
    assert_eq!(
        read_ref(&store, "remotes/origin/subkey").as_deref(),
        Some(f.by_subkey.as_str())
    );
    let (_t2, o) = store_with_origin(&url, &opts);
    ostree_repo_ok(&o, ["pull", "origin", "subkey"]);
    // The signature names the subkey, not the primary key.
    assert_origin_refuses(
        &url,
        &["--gpg-import", asc(&f.a)],
        "subkey",
        &f.by_subkey,
        &[&f.sub.signing_id],
    );
}

#[test]
fn signed_summary_is_verified_when_configured() {
    let f = fixture();
    let nginx = server();
    let opts = [
        "--gpg-import",
        asc(&f.a),
        "--set",
        "gpg-verify-summary=true",
    ];
    assert_summary_verified(nginx, &opts, &f.b.signing_id);
    // ostree agrees.
    let (_t3, o) = store_with_origin(&nginx.url("badsum"), &opts);
    let r = ostree_repo(&o, ["pull", "origin", "signed"]).assert_clean_failure();
    assert!(
        r.stderr_str().contains("public key not found"),
        "{}",
        r.describe()
    );

    // No summary at all.
    assert_origin_pull_fails(&nginx.url("repo"), &opts, "signed", &["no summary"]);
}

/// Expiry is judged at verification time (GnuPG's `EXPKEYSIG`, which ostree
/// does not count as valid), checked through the library with a clock
/// moved forward.
#[test]
fn expired_key_is_refused_at_verification_time() {
    use arbor::pull::gpg::{FailureReason, Keyring, VerifyError};
    use std::time::{Duration, SystemTime};

    let f = fixture();
    let repo = f.www.join("repo");
    let commit = fs::read(object_path(&repo, &f.by_expiring, "commit")).unwrap();
    let meta = fs::read(object_path(&repo, &f.by_expiring, "commitmeta")).unwrap();
    let mut keyring = Keyring::new();
    keyring
        .add(&fs::read(&f.expiring.asc).unwrap(), "e.asc")
        .unwrap();
    let now = SystemTime::now();
    let good = keyring
        .verify_with_metadata(&commit, Some(&meta), now)
        .expect("valid today");
    assert_eq!(good[0].key_id, f.expiring.signing_id);
    assert_eq!(good[0].primary_fingerprint, f.expiring.fpr);

    let later = now + Duration::from_secs(2 * 86400);
    match keyring.verify_with_metadata(&commit, Some(&meta), later) {
        Err(VerifyError::NoValidSignature(failures)) => {
            assert!(
                matches!(failures[0].reason, FailureReason::KeyExpired { .. }),
                "{failures:?}"
            );
            assert_eq!(
                failures[0].key_id.as_deref(),
                Some(f.expiring.signing_id.as_str())
            );
        }
        other => panic!("expected an expired key, got {other:?}"),
    }
    // Before the key existed: a time conflict, as in GnuPG.
    let before = now - Duration::from_secs(86400);
    match keyring.verify_with_metadata(&commit, Some(&meta), before) {
        Err(VerifyError::NoValidSignature(failures)) => assert!(
            matches!(failures[0].reason, FailureReason::TimeConflict(_)),
            "{failures:?}"
        ),
        other => panic!("expected a time conflict, got {other:?}"),
    }
    // No metadata, or metadata without signatures.
    assert!(matches!(
        keyring.verify_with_metadata(&commit, None, now),
        Err(VerifyError::NoSignatures)
    ));
    let empty = Metadata::new().serialize();
    assert!(matches!(
        keyring.verify_with_metadata(&commit, Some(&empty), now),
        Err(VerifyError::NoSignatures)
    ));
}

/// Signatures added to a commit after it was pulled reach the store on the
/// next pull, as with libostree (which always fetches a stored commit's
/// detached metadata again): a remote without verification stores them,
/// and one with verification checks them and then stores them, so `ostree`
/// finds the commit signed.
#[test]
fn signatures_added_later_reach_the_store() {
    let f = fixture();
    // `late` serves the signed commit as it was before it was signed.
    let late = f.www.join("late");
    if !late.exists() {
        let tmp = f.www.join(format!("late.tmp-{}", std::process::id()));
        copy_tree(&f.www.join("repo"), &tmp);
        fs::remove_file(object_path(&tmp, &f.signed, "commitmeta")).unwrap();
        let _ = fs::rename(&tmp, &late);
    }
    let meta = fs::read(object_path(&f.www.join("repo"), &f.signed, "commitmeta")).unwrap();
    for verify in [false, true] {
        let (_t, store) = new_store(Mode::Archive);
        add_remote(
            &store,
            "before",
            &server().url("late"),
            &["--no-gpg-verify"],
        );
        pull_ok(&store, &["before", "signed"]);
        assert!(!has_object(&store, &format!("{}.commitmeta", f.signed)));
        let opts: &[&str] = if verify {
            &["--gpg-import", asc(&f.a)]
        } else {
            &["--no-gpg-verify"]
        };
        add_remote(&store, "after", &server().url("repo"), opts);
        pull_ok(&store, &["after", "signed"]);
        assert_eq!(
            fs::read(object_path(&store, &f.signed, "commitmeta")).unwrap(),
            meta,
            "verify={verify}: the signatures were not stored"
        );
        if verify {
            ostree_repo_ok(&store, ["show", "--gpg-verify-remote=after", &f.signed]);
        }
        assert_fsck_clean(&store);
    }
}
