//! A pull killed with SIGKILL (or interrupted with SIGINT) midway leaves a
//! consistent store (`ostree fsck` and `arbor fsck` clean, no ref moved, an
//! incomplete commit marked partial), and running it again completes it
//! while requesting only what the killed run had not received (counted in
//! nginx's access log). Two pulls of the same commit into one store at the
//! same time both succeed.
//!
//! nginx serves the medium tree through `limit_req` (120 requests/s,
//! excess requests queued, not refused) so that a pull of ~450 objects takes
//! ~4 s and can be killed once about a third of the content has arrived.

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pull_support::*;

/// Requests in flight in these pulls: bounds how many objects the killed
/// run can have received without having stored them.
const JOBS: usize = 4;

/// `www/r`: `main` = C2, `prev` = C1; C2 shares nothing with C1 but the
/// layout (every file's content differs).
struct Fixture {
    www: PathBuf,
    c1: String,
    c2: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("pull-resume");
        let www = base.join("www");
        let repo = www.join("r");
        std::fs::create_dir_all(&www).unwrap();
        ostree_init(&repo, Mode::Archive);
        let t1 = base.join("t1");
        build_medium_tree(&t1, 12, 400, 1);
        let c1 = ostree_commit(&repo, &t1, "prev", &CommitOpts::new("c1", "", TS));
        let t2 = base.join("t2");
        build_medium_tree(&t2, 12, 400, 2);
        let c2 = ostree_commit(
            &repo,
            &t2,
            "main",
            &CommitOpts::new("c2", "", TS + 1).parent(&c1),
        );
        ostree_summary_update(&repo);
        Fixture { www, c1, c2 }
    })
}

fn repo() -> PathBuf {
    fixture().www.join("r")
}

fn slow_nginx() -> Nginx {
    Nginx::start_with(
        &fixture().www,
        "limit_req_zone $server_port zone=slow:1m rate=120r/s;",
        "limit_req zone=slow burst=100000;",
    )
}

/// Objects nginx finished sending (status 200).
fn delivered(reqs: &[Request]) -> BTreeSet<String> {
    reqs.iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| object_key(&r.path))
        .filter(|k| !k.ends_with(".commitmeta"))
        .collect()
}

/// Starts `arbor pull URL main --jobs JOBS` and SIGKILLs it (our own child,
/// by pid) once nginx has delivered `threshold` content objects. Returns
/// how many content objects were delivered when it was killed.
fn pull_and_kill(nginx: &Nginx, store: &Path, threshold: usize) -> usize {
    pull_and_signal(nginx, store, threshold, libc::SIGKILL)
}

/// [`pull_and_kill`] with another signal; the process must end within
/// 10 s, and a SIGINT must be handled (exit 130 with a summary).
fn pull_and_signal(nginx: &Nginx, store: &Path, threshold: usize, signal: i32) -> usize {
    let mark = nginx.mark();
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = arbor_command()
        .arg("--repo")
        .arg(store)
        .args(["pull", &nginx.url("r"), "main", "--jobs", &JOBS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file.reopen().unwrap())
        .spawn()
        .expect("spawn arbor pull");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the pull finished ({status}) before it could be killed: the server is not slow enough"
            );
        }
        // The raw log is enough here (no need to wait for in-flight lines).
        let files = nginx
            .access_log_text()
            .lines()
            .skip(mark)
            .filter(|l| l.contains(".filez 200 "))
            .count();
        if files >= threshold {
            // A busy machine can stall this thread long enough for the
            // pull to end first; kill(2) would then hit a zombie and the
            // test would wrongly blame arbor. Look without reaping.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own child with a zeroed siginfo_t.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    child.id() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            assert_eq!(rc, 0, "waitid failed");
            // SAFETY: si_pid is valid to read after a successful waitid.
            if unsafe { info.si_pid() } != 0 {
                panic!(
                    "the pull ended before it could be signalled (this thread was stalled): \
                     the server is not slow enough for this machine"
                );
            }
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            assert_eq!(rc, 0, "kill failed");
            let stop = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                if Instant::now() > stop {
                    child.kill().unwrap();
                    panic!("arbor did not stop within 10 s of signal {signal}");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            assert!(
                !status.success(),
                "arbor reported success after signal {signal}: {status}"
            );
            if signal == libc::SIGKILL {
                assert!(status.code().is_none(), "arbor was not killed: {status}");
            } else {
                // Handled: exit 130 and a summary of what was done.
                let stderr = std::fs::read_to_string(stderr_file.path()).unwrap();
                assert_eq!(status.code(), Some(130), "{status}: {stderr}");
                assert!(
                    stderr.starts_with("interrupted (pulling: ")
                        && stderr.contains("what was completed is kept: run the command again"),
                    "{stderr}"
                );
            }
            return files;
        }
        assert!(Instant::now() < deadline, "the pull made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The store after the kill: consistent, no ref moved, and C2 not
/// presented as complete.
#[track_caller]
fn assert_consistent_after_kill(store: &Path, expected_refs: &[(&str, &str)]) {
    let f = fixture();
    let refs = all_refs(store);
    let expected: std::collections::BTreeMap<String, String> = expected_refs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(refs, expected, "refs after the kill");
    if has_object(store, &format!("{}.commit", f.c2)) {
        assert!(
            is_partial(store, &f.c2),
            "C2's commit object is visible without its commitpartial marker"
        );
    }
    assert_fsck_clean(store);
    assert_arbor_fsck_clean(store);
}

/// The re-run completes; it requests nothing the killed run had already
/// received, except at most the JOBS objects that were in flight; between
/// them the two runs requested every object of C2 not in `pre` (the store's
/// objects before the killed run).
#[track_caller]
fn rerun_and_check(nginx: &Nginx, store: &Path, pre: &BTreeSet<String>, first: &[Request]) {
    let f = fixture();
    let mark = nginx.mark();
    pull_ok(
        store,
        &[&nginx.url("r"), "main", "--jobs", &JOBS.to_string()],
    );
    let second = nginx.requests_since(mark);
    assert_no_duplicate_requests(&second);
    let got_first = delivered(first);
    let asked_second = requested_set(&second);
    let needed: BTreeSet<String> = commit_objects(&repo(), &f.c2)
        .difference(pre)
        .cloned()
        .collect();
    let refetched: Vec<_> = asked_second.intersection(&got_first).collect();
    assert!(
        refetched.len() <= JOBS,
        "the re-run fetched again {} objects the killed run had received (at most {JOBS} in flight): {refetched:?}",
        refetched.len()
    );
    assert!(
        asked_second.len() < needed.len(),
        "the re-run requested {} objects, as many as a full pull ({})",
        asked_second.len(),
        needed.len()
    );
    let all: BTreeSet<String> = got_first.union(&asked_second).cloned().collect();
    for o in &needed {
        assert!(all.contains(o), "{o} was never requested");
    }
    assert_eq!(read_ref(store, "heads/main").as_deref(), Some(&*f.c2));
    assert_pulled(store, &repo(), &f.c2, false);
    assert_arbor_fsck_clean(store);
    // The killed run's staging directory is gone (adopted and cleaned).
    let leftovers: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("arbor-txn"))
        .collect();
    assert!(leftovers.is_empty(), "left in tmp/: {leftovers:?}");
}

#[test]
fn killed_fresh_pull_resumes() {
    let f = fixture();
    let nginx = slow_nginx();
    let (_t, store) = new_store(Mode::Archive);
    let total_files = TreeObjects::of(&repo(), &f.c2, "/").files.len();
    let pre = store_objects(&store);
    let mark = nginx.mark();
    let killed_at = pull_and_kill(&nginx, &store, total_files / 3);
    let first = nginx.requests_since(mark);
    assert!(
        killed_at < total_files,
        "killed after all {total_files} files"
    );
    assert_consistent_after_kill(&store, &[]);
    rerun_and_check(&nginx, &store, &pre, &first);
}

#[test]
fn killed_update_pull_keeps_the_old_ref_and_resumes() {
    let f = fixture();
    let nginx = slow_nginx();
    let (_t, store) = new_store(Mode::Bare);
    // C1 through a local path (no requests), as the current main.
    pull_ok(
        &store,
        &[repo().to_str().unwrap(), &format!("main@{}", f.c1)],
    );
    let total_files = TreeObjects::of(&repo(), &f.c2, "/").files.len();
    let pre = store_objects(&store);
    let mark = nginx.mark();
    pull_and_kill(&nginx, &store, total_files / 2);
    let first = nginx.requests_since(mark);
    assert_consistent_after_kill(&store, &[("heads/main", &f.c1)]);
    // C1 is intact.
    assert_pulled(&store, &repo(), &f.c1, false);
    rerun_and_check(&nginx, &store, &pre, &first);
}

/// Two pulls of the same commit into the same store at the same time
/// (overlapping for their whole length on the slow server) both succeed,
/// and the store is exactly right.
#[test]
fn concurrent_pulls_into_one_store() {
    let f = fixture();
    let nginx = slow_nginx();
    let (_t, store) = new_store(Mode::BareUser);
    let spawn = || {
        arbor_command()
            .arg("--repo")
            .arg(&store)
            .args(["pull", &nginx.url("r"), "main", "--jobs", &JOBS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn arbor pull")
    };
    let a = spawn();
    let b = spawn();
    for (name, child) in [("first", a), ("second", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the {name} concurrent pull failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(read_ref(&store, "heads/main").as_deref(), Some(&*f.c2));
    assert_pulled(&store, &repo(), &f.c2, false);
    assert_arbor_fsck_clean(&store);
    assert_set_eq(
        &store_objects(&store),
        &commit_objects(&repo(), &f.c2),
        "objects in the store",
    );
}

/// Ctrl-C (SIGINT) midway: arbor stops, exits 130 saying how far it got,
/// and the same guarantees as after SIGKILL hold.
#[test]
fn interrupted_pull_resumes() {
    let f = fixture();
    let nginx = slow_nginx();
    let (_t, store) = new_store(Mode::BareUser);
    let total_files = TreeObjects::of(&repo(), &f.c2, "/").files.len();
    let pre = store_objects(&store);
    let mark = nginx.mark();
    pull_and_signal(&nginx, &store, total_files / 4, libc::SIGINT);
    let first = nginx.requests_since(mark);
    assert_consistent_after_kill(&store, &[]);
    rerun_and_check(&nginx, &store, &pre, &first);
}
