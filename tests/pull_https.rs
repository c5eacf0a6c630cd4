//! Pulls over HTTPS with HTTP/2, from nginx with a certificate of a test
//! CA made by `openssl`: the remote's `tls-ca-path`, `tls-permissive`,
//! `tls-client-cert-path` and `tls-client-key-path` (libostree's names,
//! so `ostree pull` honours the same remote), and certificate failures
//! that are reported at once instead of retried.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pull_support::*;

const TS: u64 = 1_700_000_000;

/// The served repository and the test PKI.
struct Fixture {
    www: PathBuf,
    source: PathBuf,
    commit: String,
    pki: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed by scripts/test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// each an EC P-256 key (PKCS#8 PEM) and certificate signed by the CA.
fn make_pki(dir: &Path) {
    make_dir(dir, 0o755);
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(key);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3",
        "-subj",
        "/CN=arbor test CA",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (keyfile, csr, pem, extfile, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN=arbor test {name}"),
        );
        let mut req = vec!["req"];
        req.extend(key);
        req.extend(["-keyout", &keyfile, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "3",
                "-extfile",
                &extfile,
            ],
        );
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("pull-https");
        let www = base.join("www");
        let source = www.join("repo");
        make_dir(&www, 0o755);
        ostree_init(&source, Mode::Archive);
        let tree = base.join("tree");
        build_medium_tree(&tree, 4, 60, 3);
        let commit = ostree_commit(&source, &tree, "main", &CommitOpts::new("tls", "", TS));
        ostree_summary_update(&source);
        let pki = base.join("pki");
        make_pki(&pki);
        Fixture {
            www,
            source,
            commit,
            pki,
        }
    })
}

/// nginx over TLS with the test server certificate; `client_ca` makes it
/// require a client certificate from the test CA. Requests are logged with
/// their protocol in `proto.log` under `log_dir`.
fn tls_nginx(log_dir: &Path, client_ca: bool) -> Nginx {
    let f = fixture();
    let pki = f.pki.display();
    let mut conf = format!(
        "ssl_certificate {pki}/server.pem;\n\
         ssl_certificate_key {pki}/server.key;\n\
         access_log {}/proto.log proto;\n",
        log_dir.display()
    );
    if client_ca {
        conf.push_str(&format!(
            "ssl_client_certificate {pki}/ca.pem;\nssl_verify_client on;\n"
        ));
    }
    Nginx::start_tls(
        &f.www,
        "log_format proto '$server_protocol $request_uri $status $connection';",
        &conf,
    )
}

fn https_url(nginx: &Nginx) -> String {
    format!("https://127.0.0.1:{}/repo", nginx.port)
}

/// The `proto.log` lines, once at least `min` are there (nginx logs a
/// request just after answering it).
fn proto_log(log_dir: &Path, min: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(log_dir.join("proto.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= min || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pki(file: &str) -> String {
    fixture().pki.join(file).display().to_string()
}

/// With the test CA as the remote's only trusted root, the pull works over
/// HTTP/2 (every request nginx logs is `HTTP/2.0`), all its requests
/// multiplexed over one connection, and the store is exactly the source's
/// commit. `ostree pull` reads the same remote config and
/// pulls too: the option names are libostree's.
#[test]
fn https_pull_over_http2_with_the_remote_ca() {
    let f = fixture();
    let logs = tempdir();
    let nginx = tls_nginx(logs.path(), false);
    let ca = format!("tls-ca-path={}", pki("ca.pem"));
    let (_t, store) = store_with_origin(&https_url(&nginx), &["--no-gpg-verify", "--set", &ca]);
    pull_ok(&store, &["origin", "main"]);
    assert_eq!(
        read_ref(&store, "remotes/origin/main").as_deref(),
        Some(&*f.commit)
    );
    assert_pulled(&store, &f.source, &f.commit, false);

    let objects = TreeObjects::of(&f.source, &f.commit, "/").all().len();
    let lines = proto_log(logs.path(), objects);
    assert!(lines.len() >= objects, "{} requests logged", lines.len());
    let not_h2: Vec<_> = lines
        .iter()
        .filter(|l| !l.starts_with("HTTP/2.0 "))
        .collect();
    assert!(not_h2.is_empty(), "requests not over HTTP/2: {not_h2:?}");
    let connections: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l.rsplit(' ').next()).collect();
    assert_eq!(connections.len(), 1, "connections: {connections:?}");

    let (_t2, other) = store_with_origin(&https_url(&nginx), &["--no-gpg-verify", "--set", &ca]);
    ostree_repo_ok(&other, ["pull", "origin", "main"]);
    assert_pulled(&other, &f.source, &f.commit, false);
}

/// Without a trusted root the server's certificate is refused: the error
/// names the URL and the certificate problem, comes at once (a certificate
/// does not get better when asked again: no retries), and nothing is
/// stored. `tls-permissive=true` accepts it, as in libostree.
#[test]
fn untrusted_certificates_fail_at_once_unless_permissive() {
    let f = fixture();
    let logs = tempdir();
    let nginx = tls_nginx(logs.path(), false);
    let url = https_url(&nginx);
    let (_t, store) = store_with_origin(&url, &["--no-gpg-verify"]);
    let start = Instant::now();
    // With retries on, a retried certificate error would take 6 s of
    // backoff alone (0.2 + 0.4 + 0.8 + 1.6 + 3.2).
    let r = pull(&store, &["origin", "main", "--network-retries", "5"]).assert_clean_failure();
    let err = r.stderr_str();
    assert!(
        err.contains(&url) && err.to_lowercase().contains("certificate"),
        "{}",
        r.describe()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}: a certificate error was retried\n{}",
        start.elapsed(),
        r.describe()
    );
    assert!(all_refs(&store).is_empty());
    assert!(store_objects(&store).is_empty());

    let (_t2, lax) = store_with_origin(&url, &["--no-gpg-verify", "--set", "tls-permissive=true"]);
    pull_ok(&lax, &["origin", "main"]);
    assert_pulled(&lax, &f.source, &f.commit, false);
}

/// A server that requires a client certificate: refused without one (with
/// the status and URL), served with `tls-client-cert-path` and
/// `tls-client-key-path`; one without the other is a configuration error
/// that names both options.
#[test]
fn client_certificates() {
    let f = fixture();
    let logs = tempdir();
    let nginx = tls_nginx(logs.path(), true);
    let url = https_url(&nginx);
    let ca = format!("tls-ca-path={}", pki("ca.pem"));
    let cert = format!("tls-client-cert-path={}", pki("client.pem"));
    let key = format!("tls-client-key-path={}", pki("client.key"));

    let (_t, store) = store_with_origin(&url, &["--no-gpg-verify", "--set", &ca]);
    let r = pull(&store, &["origin", "main"]).assert_clean_failure();
    assert!(
        r.stderr_str().contains(&url) && r.stderr_str().contains("server answered 400"),
        "{}",
        r.describe()
    );
    assert!(all_refs(&store).is_empty());

    let (_t, half) = store_with_origin(&url, &["--no-gpg-verify", "--set", &ca, "--set", &cert]);
    let r = pull(&half, &["origin", "main"]).assert_clean_failure();
    assert!(
        r.stderr_str()
            .contains("tls-client-cert-path and tls-client-key-path must be set together"),
        "{}",
        r.describe()
    );

    let (_t, with) = store_with_origin(
        &url,
        &[
            "--no-gpg-verify",
            "--set",
            &ca,
            "--set",
            &cert,
            "--set",
            &key,
        ],
    );
    pull_ok(&with, &["origin", "main"]);
    assert_pulled(&with, &f.source, &f.commit, false);
    // `remote refs` goes through the same client.
    let refs = arbor_repo_ok(&with, ["remote", "refs", "origin"]).stdout_str();
    assert_eq!(refs, format!("origin:main\t{}\n", f.commit));
}
