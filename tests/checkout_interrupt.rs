//! Ctrl-C (SIGINT) during `arbor checkout` of a tree big enough to take a
//! while: arbor stops, exits 130 with a summary of how far it got, removes
//! the DEST it created (a half-made tree could not be finished by a
//! re-run: directories get their modes last), leaves the store clean, and
//! running the same command again gives the whole tree.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const DIRS: usize = 16;
const FILES_PER_DIR: usize = 500;

fn build_big_tree(dir: &Path) {
    make_dir(dir, 0o755);
    for d in 0..DIRS {
        let sub = dir.join(format!("d{d:02}"));
        make_dir(&sub, 0o755);
        for f in 0..FILES_PER_DIR {
            let data = pseudo_random_bytes(512, (2 * (d * FILES_PER_DIR + f)) as u64);
            write_file(&sub.join(format!("f{f:03}")), &data, 0o644);
        }
    }
}

#[test]
fn interrupted_checkout_is_removed_and_reruns() {
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    build_big_tree(&src);
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::BareUser);
    let c = ostree_commit(
        &repo,
        &src,
        "main",
        &CommitOpts::new("big", "", 1_700_000_000),
    );
    let dest = tmp.path().join("dest");
    let stderr_path = tmp.path().join("stderr");

    let mut child = arbor_command()
        .arg("--repo")
        .arg(&repo)
        .args(["checkout", "--link", "copy", "main"])
        .arg(&dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    // Mid-way: once the first files are in place.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the checkout finished before it could be interrupted"
        );
        if std::fs::read_dir(dest.join("d00")).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "the checkout made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on the pid of our own child, not yet reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let stop = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < stop,
            "arbor did not stop within 10 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{status}: {stderr}");
    let total = DIRS * FILES_PER_DIR;
    assert!(
        stderr.starts_with("interrupted (checking out: ")
            && stderr.contains(&format!(" of {total})"))
            && stderr.contains("was removed again: run the command again"),
        "{stderr}"
    );
    assert!(!dest.exists(), "the interrupted checkout left DEST behind");
    ostree_repo_ok(&repo, ["fsck"]);

    arbor_repo_ok(
        &repo,
        ["checkout", "--link", "copy", &c, dest.to_str().unwrap()],
    );
    let full = tmp.path().join("full");
    ostree_repo_ok(
        &repo,
        ["checkout", "--force-copy", &c, full.to_str().unwrap()],
    );
    assert_manifest_eq(&manifest(&dest), &manifest(&full), "the re-run checkout");
}
