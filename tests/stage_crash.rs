//! Crash safety of `arbor stage`: commands killed (SIGKILL, through the
//! crash points of the `failpoints` feature) at each documented point, FUSE daemons killed
//! under a live stage, and destroying a stage whose mount is busy. After
//! each, `stage list` must tell the truth, `stage destroy` must clean up
//! (nothing mounted, no stage dir), a new stage of the same name must show
//! the right tree, and the store must be intact.
//!
//! Needs root, /dev/fuse, fuse-overlayfs and unionfs-fuse.

mod common;
#[path = "common/stage.rs"]
mod stage_support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use stage_support::*;

// ---------------------------------------------------------------------------
// The layers
// ---------------------------------------------------------------------------

const LAYERS: usize = 4;

/// Four small layers with enough files each that a checkout takes several
/// steps: overlapping files, a whiteout, an opaque directory, a setuid
/// file and a non-root owner (no xattrs: unionfs-fuse as built here has
/// no xattr support and arbor refuses it such layers). Shared directories are 0755
/// root:root everywhere.
fn build_layer(dir: &Path, n: usize) {
    let p = |rel: &str| dir.join(rel);
    make_dir(dir, 0o755);
    for d in ["etc", "usr", "usr/bin", "usr/lib", "doc"] {
        make_dir(&p(d), 0o755);
    }
    make_dir(&p(&format!("usr/lib/l{n}")), 0o755);
    for i in 0..40 {
        write_file(
            &p(&format!("usr/lib/l{n}/f{i:02}")),
            format!("layer {n} file {i}\n").as_bytes(),
            0o644,
        );
    }
    write_file(&p("etc/a.conf"), format!("a from {n}\n").as_bytes(), 0o644);
    write_file(
        &p(&format!("doc/d{n}")),
        format!("doc {n}\n").as_bytes(),
        0o644,
    );
    match n {
        1 => {
            write_file(&p("etc/b.conf"), b"b\n", 0o644);
            write_file(&p("usr/bin/x"), b"x1\n", 0o755);
            write_file(&p("usr/bin/y"), b"y1\n", 0o755);
        }
        2 => {
            write_file(&p("etc/.wh.b.conf"), b"", 0o644);
            symlink("../lib/l2/f00", p("usr/bin/link")).unwrap();
            write_file(&p("usr/bin/owned"), b"owned\n", 0o640);
            chown_mode(&p("usr/bin/owned"), 1000, 1001, 0o640);
        }
        3 => {
            write_file(&p("doc/.wh..wh..opq"), b"", 0o644);
            write_file(&p("usr/bin/x"), b"x3\n", 0o700);
        }
        4 => {
            write_file(&p("usr/bin/z"), b"z4\n", 0o755);
            chown_mode(&p("usr/bin/z"), 0, 0, 0o4755);
        }
        _ => unreachable!(),
    }
    chown_mode(dir, 0, 0, 0o755);
}

struct Layers {
    template: PathBuf,
    commits: Vec<String>,
    /// Manifest of the stacked layers (`ostree checkout --union --whiteouts`).
    base: String,
    /// Per commit: the manifest of its checkout alone (whiteouts processed),
    /// without the root entry: what a complete cache entry holds.
    singles: BTreeMap<String, String>,
}

fn layer_ref(n: usize) -> String {
    format!("layer/{n}")
}

fn checkout_args(rev: &str, out: &Path, union: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "checkout".into(),
        "--whiteouts".into(),
        "--force-copy".into(),
    ];
    if union {
        a.push("--union".into());
    }
    a.push(rev.into());
    a.push(out.into());
    a
}

fn without_root_line(m: &str) -> String {
    m.lines()
        .filter(|l| !l.starts_with("\".\" "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn layers() -> &'static Layers {
    static L: OnceLock<Layers> = OnceLock::new();
    L.get_or_init(|| {
        let scratch = scratch_dir("stage-crash");
        let template = scratch.join("template");
        arbor_init(&template, Mode::Bare);
        let mut commits = Vec::new();
        let mut singles = BTreeMap::new();
        for n in 1..=LAYERS {
            let src = scratch.join(format!("src/layer{n}"));
            build_layer(&src, n);
            let opts = CommitOpts::new(&format!("layer {n}"), "", 1_700_000_000 + n as u64);
            let c = ostree_commit(&template, &src, &layer_ref(n), &opts);
            let single = scratch.join(format!("single{n}"));
            ostree_repo_ok(&template, checkout_args(&c, &single, false));
            singles.insert(c.clone(), without_root_line(&manifest(&single)));
            commits.push(c);
        }
        let all = scratch.join("all");
        for n in 1..=LAYERS {
            ostree_repo_ok(&template, checkout_args(&layer_ref(n), &all, true));
        }
        assert!(!all.join("etc/b.conf").exists() && !all.join("doc/d1").exists());
        let base = manifest(&all);
        Layers {
            template,
            commits,
            base,
            singles,
        }
    })
}

fn all_refs() -> Vec<String> {
    (1..=LAYERS).map(layer_ref).collect()
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A private store (see [`PrivateStore`]) holding the layers.
fn private_store() -> PrivateStore {
    PrivateStore::copy_of(&layers().template)
}

/// Kills and reaps a child on drop (a `sleep` holding a mount).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stage_cmd(repo: &Path, crash_at: Option<&str>) -> Command {
    let mut c = arbor_command();
    if let Some(p) = crash_at {
        if !cfg!(feature = "failpoints") {
            panic!(
                "crash points need the failpoints feature: cargo test --features failpoints (scripts/test passes it)"
            );
        }
        c.env("FAILPOINTS", format!("{p}=return"));
    }
    c.arg("--repo").arg(repo).arg("stage");
    c
}

fn create_cmd(repo: &Path, name: &str, backend: &str, crash_at: Option<&str>) -> Command {
    let mut c = stage_cmd(repo, crash_at);
    c.args(["create", name])
        .args(all_refs())
        .args(["--backend", backend]);
    c
}

/// Asserts the command was killed by SIGKILL (the crash hook fired).
#[track_caller]
fn assert_killed(r: &Run) {
    assert_eq!(
        r.status.signal(),
        Some(9),
        "expected the command to die by SIGKILL at the crash point\n{}",
        r.describe()
    );
}

/// Every cache entry visible under its final name (the commit checksum) is
/// a complete checkout of that commit.
#[track_caller]
fn assert_cache_entries_complete(f: &PrivateStore, what: &str) {
    let l = layers();
    let Ok(rd) = fs::read_dir(f.cache_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_hex64(&name) {
            continue;
        }
        let expected = l
            .singles
            .get(&name)
            .unwrap_or_else(|| panic!("{what}: cache entry {name} is not one of the commits"));
        assert_manifest_eq(
            &without_root_line(&manifest(&e.path())),
            expected,
            &format!("{what}: cache entry {name}"),
        );
    }
}

/// Number of regular files under the store's objects/ and tmp/.
fn store_file_count(repo: &Path) -> usize {
    ["objects", "tmp"]
        .iter()
        .filter(|d| repo.join(d).is_dir())
        .map(|d| {
            manifest_entries(&repo.join(d))
                .iter()
                .filter(|e| e.kind == 'f')
                .count()
        })
        .sum()
}

/// Nothing mounted under the fixture and no stage dir for `name`.
#[track_caller]
fn assert_clean(f: &PrivateStore, name: &str, what: &str) {
    let m = mounts_under(&f.base);
    assert!(m.is_empty(), "{what}: still mounted: {m:?}");
    assert!(
        !f.stage_dir(name).exists(),
        "{what}: stage dir {} remains",
        f.stage_dir(name).display()
    );
}

/// After a crash: the listed state is one of `allowed` (or the stage is
/// absent), destroy (if listed) succeeds, then nothing is left; a new
/// stage of the same name gives the right view and is destroyed cleanly.
#[track_caller]
fn recover_and_recreate(f: &PrivateStore, name: &str, backend: &str, allowed: &[&str], what: &str) {
    let l = layers();
    if let Some(row) = list_row(&f.repo, name) {
        assert!(
            allowed.contains(&row.state.as_str()),
            "{what}: `stage list` says {:?}, expected one of {allowed:?} (or absent); mounts: {:?}",
            row.state,
            mounts_under(&f.base)
        );
        let r = arbor_repo(&f.repo, ["stage", "destroy", name]);
        assert!(
            r.success(),
            "{what}: destroy after the crash failed\n{}",
            r.describe()
        );
    }
    assert_clean(f, name, &format!("{what}, after destroy"));
    assert_eq!(
        list_row(&f.repo, name),
        None,
        "{what}: still listed after destroy"
    );

    let r = run(create_cmd(&f.repo, name, backend, None));
    assert!(r.success(), "{what}: re-create failed\n{}", r.describe());
    assert_eq!(
        r.stdout_str(),
        format!("{}\n", f.default_root(name).display()),
        "{}",
        r.describe()
    );
    let row = list_row(&f.repo, name).expect("re-created stage listed");
    assert_eq!(
        (
            row.backend.as_str(),
            row.layers.as_str(),
            row.state.as_str()
        ),
        (backend, "4", "mounted"),
        "{what}: re-created stage"
    );
    assert_manifest_eq(
        &manifest(&f.default_root(name)),
        &l.base,
        &format!("{what}: re-created view"),
    );
    assert_cache_entries_complete(f, what);
    let entries: std::collections::BTreeSet<String> = fs::read_dir(f.cache_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_hex64(n))
        .collect();
    let expected: std::collections::BTreeSet<String> = l.commits.iter().cloned().collect();
    assert_eq!(entries, expected, "{what}: cache entries after re-create");
    arbor_repo_ok(&f.repo, ["stage", "destroy", name]);
    assert_clean(f, name, &format!("{what}, final destroy"));
}

// ---------------------------------------------------------------------------
// Crash points of `stage create`
// ---------------------------------------------------------------------------

fn create_crash(backend: &str, point: &str) {
    let l = layers();
    let f = private_store();
    let before = object_snapshot(&f.repo);
    let name = "victim";
    let r = run(create_cmd(&f.repo, name, backend, Some(point)));
    assert_killed(&r);
    let what = format!("{backend}, crash at {point}");
    // A half-built checkout is never visible as a cache entry.
    assert_cache_entries_complete(&f, &what);
    if point == "stage-create:cache" {
        // The hook fired mid-checkout: a temporary `<commit>.*` dir with
        // files in it exists (not under the commit's own name).
        let partial = fs::read_dir(f.cache_dir())
            .map(|rd| {
                rd.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    l.commits.iter().any(|c| n.starts_with(&format!("{c}.")))
                        && e.path().is_dir()
                        && manifest_entries(&e.path()).iter().any(|x| x.kind == 'f')
                })
            })
            .unwrap_or(false);
        assert!(
            partial,
            "{what}: no partial checkout in {} (did the hook fire mid-checkout?)\n{}",
            f.cache_dir().display(),
            r.describe()
        );
        let m = mounts_under(&f.base);
        assert!(
            m.is_empty(),
            "{what}: mounted before the cache was complete: {m:?}"
        );
    } else {
        // The hook fired after the mount, which nobody unmounted since.
        assert!(
            mounts_under(&f.base).contains(&f.default_root(name)),
            "{what}: {} not mounted at the crash point\n{}",
            f.default_root(name).display(),
            r.describe()
        );
    }
    recover_and_recreate(&f, name, backend, &["incomplete"], &what);
    assert_objects_unchanged(&before, &f.repo);
    ostree_repo_ok(&f.repo, ["fsck"]);
}

/// Killed while checking a commit out into the cache (kernel overlay): no
/// partial cache entry is visible, the stage is `incomplete` or absent, it
/// can be destroyed and created again with the right view.
#[test]
fn overlay_create_killed_in_cache() {
    create_crash("overlay", "stage-create:cache");
}

/// As above with fuse-overlayfs.
#[test]
fn fuse_overlayfs_create_killed_in_cache() {
    create_crash("fuse-overlayfs", "stage-create:cache");
}

/// Killed after the kernel overlay was mounted but before the record was
/// complete: `incomplete` (never `mounted`), destroy unmounts it and
/// removes everything, a new create works.
#[test]
fn overlay_create_killed_after_mount() {
    create_crash("overlay", "stage-create:mounted");
}

/// As above with fuse-overlayfs (its daemon outlives the killed arbor).
#[test]
fn fuse_overlayfs_create_killed_after_mount() {
    create_crash("fuse-overlayfs", "stage-create:mounted");
}

/// As above with unionfs-fuse.
#[test]
fn unionfs_create_killed_after_mount() {
    create_crash("unionfs", "stage-create:mounted");
}

// ---------------------------------------------------------------------------
// `stage commit` killed after writing objects
// ---------------------------------------------------------------------------

fn commit_crash(backend: &str) {
    let f = private_store();
    let before = object_snapshot(&f.repo);
    let name = "sys";
    let branch = "system/sys";
    // The expected trees: the layers' union (copied, so the scripts do not
    // write through hardlinks into the store) with the same changes.
    const CHANGE1: &str = "printf 'new\\n' > etc/new.conf && chmod 0644 etc/new.conf && rm usr/bin/y \
                           && rm -rf usr/lib/l1 && printf '+\\n' >> etc/a.conf \
                           && printf '+\\n' >> usr/bin/x";
    const CHANGE2: &str =
        "printf 'second\\n' > etc/second.conf && chmod 0644 etc/second.conf && rm etc/a.conf";
    let expect_dir = f.base.join("expect");
    for n in 1..=LAYERS {
        ostree_repo_ok(&f.repo, checkout_args(&layer_ref(n), &expect_dir, true));
    }
    let sh = |script: &str| {
        let mut c = Command::new("sh");
        c.args(["-c", script]).current_dir(&expect_dir);
        run(c).assert_ok();
        manifest(&expect_dir)
    };
    let expect1 = sh(CHANGE1);
    let expect2 = sh(CHANGE2);

    run(create_cmd(&f.repo, name, backend, None)).assert_ok();
    exec_sh(&f.repo, name, CHANGE1).assert_ok();
    let root = f.default_root(name);
    assert_manifest_eq(
        &manifest(&root),
        &expect1,
        &format!("{backend}: view before commit 1"),
    );

    // First commit on a new branch: killed, the ref must not exist.
    let files_before = store_file_count(&f.repo);
    let mut c = stage_cmd(&f.repo, Some("stage-commit:objects"));
    c.args(["commit", name, "--branch", branch]);
    let r = run(c);
    assert_killed(&r);
    // The objects were written (published or still staged) before the kill.
    let files_after = store_file_count(&f.repo);
    assert!(
        files_after > files_before,
        "{backend}: nothing written under objects/ or tmp/ at the stage-commit:objects crash \
         point ({files_before} -> {files_after} files)\n{}",
        r.describe()
    );
    let rp = ostree_repo(&f.repo, ["rev-parse", branch]);
    assert!(
        !rp.success(),
        "{backend}: ref created by a killed commit\n{}",
        rp.describe()
    );
    ostree_repo_ok(&f.repo, ["fsck"]);
    let row = list_row(&f.repo, name).expect("stage still listed");
    assert_eq!(
        row.state, "mounted",
        "{backend}: a killed commit changed the stage state"
    );

    let r = arbor_repo_ok(&f.repo, ["stage", "commit", name, "--branch", branch]);
    let first = expect_checksum_line(&r);
    assert_eq!(ostree_rev_parse(&f.repo, branch), first);
    let out = f.base.join("out1");
    ostree_repo_ok(
        &f.repo,
        vec![
            OsString::from("checkout"),
            branch.into(),
            out.clone().into(),
        ],
    );
    assert_manifest_eq(&manifest(&out), &expect1, &format!("{backend}: commit 1"));

    // Second commit: killed, the ref must not move.
    exec_sh(&f.repo, name, CHANGE2).assert_ok();
    let mut c = stage_cmd(&f.repo, Some("stage-commit:objects"));
    c.args(["commit", name, "--branch", branch]);
    let r = run(c);
    assert_killed(&r);
    assert_eq!(
        ostree_rev_parse(&f.repo, branch),
        first,
        "{backend}: a killed commit moved the ref"
    );
    ostree_repo_ok(&f.repo, ["fsck"]);

    let r = arbor_repo_ok(&f.repo, ["stage", "commit", name, "--branch", branch]);
    let second = expect_checksum_line(&r);
    assert_ne!(first, second);
    assert_eq!(ostree_rev_parse(&f.repo, branch), second);
    assert_eq!(ostree_rev_parse(&f.repo, &format!("{branch}^")), first);
    let out = f.base.join("out2");
    ostree_repo_ok(
        &f.repo,
        vec![
            OsString::from("checkout"),
            branch.into(),
            out.clone().into(),
        ],
    );
    assert_manifest_eq(&manifest(&out), &expect2, &format!("{backend}: commit 2"));
    ostree_repo_ok(&f.repo, ["fsck"]);

    arbor_repo_ok(&f.repo, ["stage", "destroy", name]);
    assert_clean(&f, name, backend);
    assert_objects_unchanged(&before, &f.repo);
}

/// `stage commit` killed after writing objects (kernel overlay): the ref
/// neither appears nor moves, fsck passes, re-running the commit works.
#[test]
fn overlay_commit_killed_before_ref() {
    commit_crash("overlay");
}

/// As above with fuse-overlayfs.
#[test]
fn fuse_overlayfs_commit_killed_before_ref() {
    commit_crash("fuse-overlayfs");
}

/// As above with unionfs-fuse (deletions recorded as `_HIDDEN~` markers).
#[test]
fn unionfs_commit_killed_before_ref() {
    commit_crash("unionfs");
}

// ---------------------------------------------------------------------------
// `stage destroy` killed after unmounting
// ---------------------------------------------------------------------------

fn destroy_crash(backend: &str) {
    let f = private_store();
    let before = object_snapshot(&f.repo);
    let name = "doomed";
    run(create_cmd(&f.repo, name, backend, None)).assert_ok();
    exec_sh(&f.repo, name, "printf 'x\\n' > written && rm etc/a.conf").assert_ok();
    let mut c = stage_cmd(&f.repo, Some("stage-destroy:unmounted"));
    c.args(["destroy", name]);
    let r = run(c);
    assert_killed(&r);
    let what = format!("{backend}, crash at stage-destroy:unmounted");
    let m = mounts_under(&f.base);
    assert!(
        m.is_empty(),
        "{what}: still mounted after the unmount step: {m:?}"
    );
    assert!(
        f.stage_dir(name).is_dir(),
        "{what}: the stage dir was already gone at the crash point\n{}",
        r.describe()
    );
    recover_and_recreate(&f, name, backend, &["unmounted", "incomplete"], &what);
    assert_objects_unchanged(&before, &f.repo);
}

/// `stage destroy` killed between unmount and removal (kernel overlay):
/// listed as not mounted (or gone), a second destroy finishes the job.
#[test]
fn overlay_destroy_killed_after_unmount() {
    destroy_crash("overlay");
}

/// As above with fuse-overlayfs.
#[test]
fn fuse_overlayfs_destroy_killed_after_unmount() {
    destroy_crash("fuse-overlayfs");
}

/// As above with unionfs-fuse.
#[test]
fn unionfs_destroy_killed_after_unmount() {
    destroy_crash("unionfs");
}

// ---------------------------------------------------------------------------
// A FUSE daemon killed under a stage
// ---------------------------------------------------------------------------

/// Pids (other than ours) whose command line mentions `root`.
fn pids_mentioning(root: &Path) -> Vec<u32> {
    let needle = root.as_os_str().as_bytes();
    let me = std::process::id();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether the process is gone or a zombie.
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}

fn daemon_killed(backend: &str) {
    let l = layers();
    let f = private_store();
    let before = object_snapshot(&f.repo);
    let name = "fused";
    let root = f.default_root(name);
    run(create_cmd(&f.repo, name, backend, None)).assert_ok();
    assert_manifest_eq(&manifest(&root), &l.base, &format!("{backend}: view"));
    let pids = pids_mentioning(&root);
    assert!(
        !pids.is_empty(),
        "{backend}: no process mentions {} in its command line",
        root.display()
    );
    for &pid in &pids {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let t = Instant::now();
    while !pids.iter().all(|&p| is_dead(p)) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{backend}: daemon {pids:?} did not die"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let row = list_row(&f.repo, name).expect("stage listed");
    assert_eq!(
        row.state, "broken",
        "{backend}: state after the daemon died: {row:?}"
    );

    let r = arbor_repo(&f.repo, ["stage", "destroy", name]);
    assert!(
        r.success(),
        "{backend}: destroy of a broken stage failed\n{}",
        r.describe()
    );
    assert_clean(
        &f,
        name,
        &format!("{backend}: after destroying a broken stage"),
    );
    assert_eq!(list_row(&f.repo, name), None);
    assert_objects_unchanged(&before, &f.repo);
    recover_and_recreate(&f, name, backend, &[], &format!("{backend}: after broken"));
}

/// fuse-overlayfs daemon killed: the stage is listed `broken`; destroy
/// unmounts the dead mount and removes everything.
#[test]
fn fuse_overlayfs_daemon_killed_is_broken() {
    daemon_killed("fuse-overlayfs");
}

/// unionfs-fuse daemon killed: the stage is listed `broken`; destroy
/// unmounts the dead mount and removes everything.
#[test]
fn unionfs_daemon_killed_is_broken() {
    daemon_killed("unionfs");
}

// ---------------------------------------------------------------------------
// Destroying a busy stage
// ---------------------------------------------------------------------------

fn busy_destroy(backend: &str) {
    let f = private_store();
    let before = object_snapshot(&f.repo);
    let name = "busy";
    let root = f.default_root(name);
    run(create_cmd(&f.repo, name, backend, None)).assert_ok();
    exec_sh(&f.repo, name, "printf 'keep me\\n' > mine && rm etc/a.conf").assert_ok();
    let view = manifest(&root);
    let child = KillOnDrop(
        Command::new("sleep")
            .arg("30")
            .current_dir(&root)
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();

    // Refused (a busy mount stops the removal): a clean error naming the
    // holder, and the stage untouched.
    let r = arbor_repo(&f.repo, ["stage", "destroy", name]).assert_clean_failure();
    assert!(
        r.stderr_str().contains(&pid.to_string()),
        "{backend}: the error should name the holding pid {pid}\n{}",
        r.describe()
    );
    let row = list_row(&f.repo, name).expect("refused destroy keeps the stage listed");
    assert_eq!(row.state, "mounted", "{backend}: {row:?}");
    assert!(
        mounts_under(&f.base).contains(&root),
        "{backend}: root unmounted anyway"
    );
    assert_manifest_eq(
        &manifest(&root),
        &view,
        &format!("{backend}: view after refused destroy"),
    );
    let r2 = exec_sh(&f.repo, name, "cat mine").assert_ok();
    assert_eq!(r2.stdout_str(), "keep me\n");
    drop(child);

    let r = arbor_repo(&f.repo, ["stage", "destroy", name]);
    assert!(
        r.success(),
        "{backend}: destroy after the holder exited\n{}",
        r.describe()
    );
    assert_clean(
        &f,
        name,
        &format!("{backend}: destroy after the holder exited"),
    );
    assert_objects_unchanged(&before, &f.repo);
    recover_and_recreate(
        &f,
        name,
        backend,
        &[],
        &format!("{backend}: after busy destroy"),
    );
}

/// Destroying a kernel-overlay stage that a process sits in either fails
/// naming the holder (stage intact) or succeeds completely; never debris.
#[test]
fn overlay_busy_destroy() {
    busy_destroy("overlay");
}

/// As above with fuse-overlayfs.
#[test]
fn fuse_overlayfs_busy_destroy() {
    busy_destroy("fuse-overlayfs");
}
