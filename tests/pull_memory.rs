//! Pull memory does not grow with the number of files: a pull of ten times
//! as many files peaks at about the same resident size, well under the
//! 64 MiB budget. Peak RSS is the kernel's own count for the pull process
//! (`wait4`'s `ru_maxrss`), not a timing. A coarse guard: per-object state
//! of ~100 bytes would only show at hundreds of thousands of files, which
//! BENCHMARKS.md measures instead (60,000 files: 12.5 MiB).

mod common;

use std::path::Path;

use common::*;

/// `n` small files with distinct contents, spread over 300 directories.
fn many_files(dir: &Path, n: usize) {
    for d in 0..300 {
        make_dir(&dir.join(format!("d{d:03}")), 0o755);
    }
    for i in 0..n {
        std::fs::write(
            dir.join(format!("d{:03}/f{i:06}", i % 300)),
            format!("file {i}\n"),
        )
        .unwrap();
    }
}

/// Peak RSS in KiB of `arbor --repo STORE pull SOURCE main`.
fn pull_peak_rss(store: &Path, source: &Path) -> i64 {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let child = arbor_command()
        .arg("--repo")
        .arg(store)
        .args(["pull", "--quiet"])
        .arg(source)
        .arg("main")
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "pull failed: status {status:#x}"
    );
    usage.ru_maxrss
}

#[test]
fn pull_memory_does_not_grow_with_the_number_of_files() {
    // tmpfs when there is one: creating and deleting tens of thousands of
    // files on a journal-less ext4 costs far more than the pull itself.
    let tmp = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::Builder::new()
            .prefix("arbor-it-")
            .tempdir_in("/dev/shm")
            .unwrap(),
        false => tempdir(),
    };
    let mut peaks = Vec::new();
    for n in [1_500, 15_000] {
        let src = tmp.path().join(format!("src{n}"));
        make_dir(&src, 0o755);
        many_files(&src, n);
        let source = tmp.path().join(format!("source{n}"));
        ostree_init(&source, Mode::Archive);
        ostree_repo_ok(
            &source,
            [
                "commit".into(),
                "-b".into(),
                "main".into(),
                "--fsync=false".into(),
                format!("--tree=dir={}", src.display()),
            ],
        );
        let store = tmp.path().join(format!("store{n}"));
        arbor_init(&store, Mode::Bare);
        peaks.push(pull_peak_rss(&store, &source));
        ostree_repo_ok(&store, ["fsck", "-q"]);
    }
    let (small, big) = (peaks[0], peaks[1]);
    eprintln!("peak RSS: 1,500 files {small} KiB, 15,000 files {big} KiB");
    assert!(big < 64 * 1024, "15,000 files: {big} KiB, over 64 MiB");
    assert!(
        big < small + 8 * 1024,
        "ten times the files took {big} KiB against {small} KiB: memory grows with the commit"
    );
}
