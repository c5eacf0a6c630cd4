//! The stage's build environment (`stage exec --sandbox`, `stage
//! integrate`, `stage create --integrate`), with bubblewrap and with the
//! built-in implementation (`--sandbox-tool bwrap|builtin`): every test
//! that checks what the command sees runs with both.
//!
//! The systems are made of the host's own programs and libraries (copied
//! with what `ldd` says they load), so nothing is downloaded: a `base`
//! chunk with a shell and a few tools, and chunks carrying integration
//! commands. None of them has `/dev`, `/proc`, `/sys`, `/tmp` or `/run`
//! unless a test says so, which is what makes a leak visible.
//!
//! Needs root, bubblewrap, /dev/fuse, fuse-overlayfs and unionfs-fuse.

mod common;
#[path = "common/stage.rs"]
mod stage_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use stage_support::*;

const TOOLS: [&str; 2] = ["bwrap", "builtin"];

/// Programs of the `base` chunk.
const PROGRAMS: [&str; 16] = [
    "/usr/bin/sh",
    "/usr/bin/bash",
    "/usr/bin/cat",
    "/usr/bin/env",
    "/usr/bin/sleep",
    "/usr/bin/ls",
    "/usr/bin/grep",
    "/usr/bin/mkdir",
    "/usr/bin/touch",
    "/usr/bin/stat",
    "/usr/bin/sort",
    "/usr/bin/readlink",
    "/usr/bin/mount",
    "/usr/bin/mknod",
    "/usr/bin/chown",
    "/usr/bin/chmod",
];

// ---------------------------------------------------------------------------
// Trees made of the host's files
// ---------------------------------------------------------------------------

/// Copies the host's `path` into `dir` at the same place: symlinks on the
/// way (of the last component) are made as they are, the file it leads
/// to is copied with its mode.
fn copy_host_path(dir: &Path, path: &Path) {
    let mut path = path.to_path_buf();
    loop {
        let parent = fs::canonicalize(path.parent().unwrap()).unwrap();
        let here = parent.join(path.file_name().unwrap());
        let dest = dir.join(here.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let md = fs::symlink_metadata(&here).unwrap();
        if md.file_type().is_symlink() {
            let target = fs::read_link(&here).unwrap();
            if fs::symlink_metadata(&dest).is_err() {
                symlink(&target, &dest).unwrap();
            }
            path = parent.join(target);
            continue;
        }
        if !dest.exists() {
            fs::copy(&here, &dest).unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(md.permissions().mode()))
                .unwrap();
        }
        return;
    }
}

/// The host's top-level symlinks (`/bin -> usr/bin` on a merged-/usr
/// system) in `dir`.
fn copy_top_level_links(dir: &Path) {
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        if let Ok(target) = fs::read_link(&host) {
            symlink(target, dir.join(top)).unwrap();
        }
    }
}

/// Copies host programs and the libraries `ldd` says they load.
fn copy_host_programs(dir: &Path, programs: &[&str]) {
    for p in programs {
        copy_host_path(dir, Path::new(p));
        let real = fs::canonicalize(p).unwrap();
        let out = Command::new("ldd").arg(&real).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for word in text.split_whitespace().filter(|w| w.starts_with('/')) {
            copy_host_path(dir, Path::new(word));
        }
    }
}

// ---------------------------------------------------------------------------
// The template store
// ---------------------------------------------------------------------------

/// A chunk: its source tree and its integration commands (NAME=CMD).
struct ChunkDef {
    name: &'static str,
    build: fn(&Path),
    integration: &'static [&'static str],
}

/// Every command appends `NAME@CHUNK` to /order, so the run order shows.
const CHUNKS: &[ChunkDef] = &[
    ChunkDef {
        name: "a",
        build: |d| {
            make_dir(&d.join("etc"), 0o755);
            write_file(&d.join("etc/a.conf"), b"a\n", 0o644);
        },
        integration: &[
            "10-devnull=umask 022; echo discarded > /dev/null; echo ok > /etc/a-devnull; \
             echo 10-devnull@a >> /order",
            "20-proc=umask 022; echo sh $$ > /etc/a-proc; \
             grep '^Pid:' /proc/self/status >> /etc/a-proc; \
             readlink /proc/self/exe >> /etc/a-proc; echo 20-proc@a >> /order",
            "30-tmp=umask 022; echo scratch > /tmp/x; cat /tmp/x > /etc/a-tmp; \
             mkdir -p /run/a; echo r > /run/a/f; echo 30-tmp@a >> /order",
        ],
    },
    ChunkDef {
        name: "b",
        build: |d| {
            make_dir(&d.join("usr/share/b"), 0o755);
            write_file(&d.join("usr/share/b/data"), b"b\n", 0o644);
        },
        integration: &[
            "15-root=umask 022; mkdir -p /var/lib/b; echo state > /var/lib/b/state; \
             echo 15-root@b >> /order",
            "25-dev=umask 022; echo s > /dev/shm/s; test -c /dev/null; test -c /dev/zero; \
             test -c /dev/full; test -c /dev/random; test -c /dev/urandom; test -c /dev/tty; \
             test -d /dev/pts; test -L /dev/ptmx; ! touch /sys/x 2>/dev/null; \
             echo 25-dev@b >> /order",
        ],
    },
    ChunkDef {
        name: "c",
        build: |d| {
            make_dir(&d.join("etc"), 0o755);
            write_file(&d.join("etc/c.conf"), b"c\n", 0o644);
        },
        integration: &[
            "20-proc=echo 20-proc@c >> /order",
            "05-first=umask 022; echo 05-first@c > /order",
        ],
    },
    ChunkDef {
        name: "hasdev",
        build: |d| {
            make_dir(&d.join("dev"), 0o755);
            write_file(
                &d.join("dev/null"),
                b"a regular file of the commit\n",
                0o644,
            );
            make_dir(&d.join("tmp"), 0o1777);
            write_file(&d.join("tmp/keep"), b"kept\n", 0o644);
            make_dir(&d.join("run"), 0o755);
            make_dir(&d.join("proc"), 0o555);
        },
        integration: &[],
    },
    ChunkDef {
        name: "fail",
        build: |d| {
            make_dir(&d.join("etc"), 0o755);
            write_file(&d.join("etc/fail.conf"), b"f\n", 0o644);
        },
        integration: &[
            "10-ok=echo 10-ok >> /order",
            "20-bad=echo failing; exit 3",
            "30-never=echo 30-never >> /order",
        ],
    },
];

struct Template {
    repo: PathBuf,
    /// Source trees by chunk name (and "base").
    sources: BTreeMap<String, PathBuf>,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let scratch = scratch_dir("stage-sandbox");
        let repo = scratch.join("repo");
        arbor_init(&repo, Mode::Bare);
        let mut sources = BTreeMap::new();
        let base = scratch.join("src/base");
        make_dir(&base, 0o755);
        copy_top_level_links(&base);
        copy_host_programs(&base, &PROGRAMS);
        commit_dir(&repo, &base, "base", &[]);
        sources.insert("base".to_string(), base);
        for c in CHUNKS {
            let dir = scratch.join("src").join(c.name);
            make_dir(&dir, 0o755);
            (c.build)(&dir);
            commit_dir(&repo, &dir, &format!("chunk/{}", c.name), c.integration);
            sources.insert(c.name.to_string(), dir);
        }
        Template { repo, sources }
    })
}

fn commit_dir(repo: &Path, dir: &Path, branch: &str, integration: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "commit".into(),
        "-b".into(),
        branch.into(),
        "--timestamp".into(),
        "1700000000".into(),
        dir.to_str().unwrap().into(),
    ];
    for i in integration {
        args.push("--integration".into());
        args.push((*i).into());
    }
    expect_checksum_line(&arbor_repo_ok(repo, &args))
}

fn store() -> PrivateStore {
    PrivateStore::copy_of(&template().repo)
}

/// The union of source trees (later ones on top), as a plain copy.
fn union_of(dest: &Path, names: &[&str]) {
    make_dir(dest, 0o755);
    for n in names {
        let src = &template().sources[*n];
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dest)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a {}", src.display());
    }
}

fn create(repo: &Path, name: &str, revs: &[&str], extra: &[&str]) -> Run {
    let mut args = vec!["stage", "create", name];
    args.extend(revs);
    args.extend(extra);
    arbor_repo(repo, args)
}

fn sandbox_args<'a>(
    name: &'a str,
    tool: &'a str,
    extra: &[&'a str],
    cmd: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["stage", "exec", name, "--sandbox", "--sandbox-tool", tool];
    args.extend(extra);
    args.push("--");
    args.extend(cmd);
    args
}

fn sandbox(repo: &Path, name: &str, tool: &str, extra: &[&str], cmd: &[&str]) -> Run {
    arbor_repo(repo, sandbox_args(name, tool, extra, cmd))
}

/// The committed tree of `rev`, checked out into a fresh directory.
fn checkout(repo: &Path, rev: &str, base: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    fs::create_dir_all(base).unwrap();
    let dest = base.join(format!("co-{n}"));
    arbor_repo_ok(repo, ["checkout", rev, dest.to_str().unwrap()]);
    dest
}

fn root_of(repo: &Path, name: &str) -> PathBuf {
    PathBuf::from(
        arbor_repo_ok(repo, ["stage", "path", name])
            .stdout_str()
            .trim_end(),
    )
}

/// The root's top-level names.
fn top_level(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Mount points at or below `root` in this (the host's) mount namespace,
/// other than `root` itself.
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    mounts_under(root)
        .into_iter()
        .filter(|m| m != root)
        .collect()
}

/// Pids whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<u32> {
    let mut want = Vec::new();
    for a in argv {
        want.extend_from_slice(a.as_bytes());
        want.push(0);
    }
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[track_caller]
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `arbor`, killed (and with it its sandbox) if a failing test
/// drops it.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `arbor` with stdout piped (and its own process group when asked).
fn spawn_arbor(repo: &Path, args: &[&str], own_group: bool) -> Running {
    let mut c = arbor_command();
    c.arg("--repo").arg(repo).args(args);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if own_group {
        c.process_group(0);
    }
    Running(c.spawn().unwrap())
}

fn read_line(child: &mut Running) -> String {
    use std::os::fd::AsRawFd;
    let mut line = String::new();
    let out = child.stdout.as_mut().unwrap();
    // Byte by byte: a BufReader would swallow what follows.
    let mut b = [0u8; 1];
    loop {
        // A line that never comes fails the test instead of hanging the
        // suite (a lost signal once did).
        let mut pfd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, ours, for the length given.
        let ready = unsafe { libc::poll(&mut pfd, 1, 60_000) };
        if ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        assert!(ready > 0, "no output for 60 s (line so far: {line:?})");
        if out.read(&mut b).unwrap() != 1 {
            break;
        }
        line.push(b[0] as char);
        if b[0] == b'\n' {
            break;
        }
    }
    line
}

// ---------------------------------------------------------------------------
// Integration commands build a clean system
// ---------------------------------------------------------------------------

/// The issue's test: chunks whose integration commands write to
/// /dev/null, read /proc/self/status, use /tmp, /run and /dev/shm and
/// create files in the root; `stage create --integrate` runs them in name
/// order, and the committed system holds exactly the chunks' files plus
/// what the commands made in the root: no /dev, /proc, /sys, /tmp or /run.
fn integration_builds_a_clean_system(tool: &str) {
    let s = store();
    let r = create(
        &s.repo,
        "sys",
        &["base", "chunk/a", "chunk/b", "chunk/c"],
        &[
            "--backend",
            "overlay",
            "--integrate",
            "--sandbox-tool",
            tool,
        ],
    )
    .assert_ok();
    let root = s.default_root("sys");
    // stdout is the root's path alone: the commands' output went to stderr.
    assert_eq!(
        r.stdout_str(),
        format!("{}\n", root.display()),
        "{}",
        r.describe()
    );
    let err = r.stderr_str();
    assert!(
        err.contains("integration 1/7: 05-first of chunk/c (commit ")
            && err.contains("7 integration commands run"),
        "{}",
        r.describe()
    );
    let mut want = top_level(&template().sources["base"]);
    want.extend(["etc", "order", "var"].map(String::from));
    want.sort();
    assert_eq!(
        top_level(&root),
        want,
        "no mount point may stay in the root"
    );
    let commit = expect_checksum_line(&arbor_repo_ok(
        &s.repo,
        ["stage", "commit", "sys", "-b", "system", "--timestamp", "1"],
    ));
    let got = checkout(&s.repo, &commit, &s.base);

    let expected = s.base.join("expected");
    union_of(&expected, &["base", "a", "b", "c"]);
    let w = |rel: &str, content: &str| write_file(&expected.join(rel), content.as_bytes(), 0o644);
    // Name order across chunks; equal names in layer order (a below c).
    w(
        "order",
        "05-first@c\n10-devnull@a\n15-root@b\n20-proc@a\n20-proc@c\n25-dev@b\n30-tmp@a\n",
    );
    w("etc/a-devnull", "ok\n");
    // The command is pid 2 of its own PID namespace (its children 3, 4);
    // /proc is that namespace's.
    w("etc/a-proc", "sh 2\nPid:\t3\n/usr/bin/readlink\n");
    w("etc/a-tmp", "scratch\n");
    make_dir(&expected.join("var/lib/b"), 0o755);
    w("var/lib/b/state", "state\n");
    assert_manifest_eq(&manifest(&got), &manifest(&expected), "committed system");
    destroy_clean(&s, "sys");
}

#[test]
fn integration_builds_a_clean_system_bwrap() {
    integration_builds_a_clean_system("bwrap");
}

#[test]
fn integration_builds_a_clean_system_builtin() {
    integration_builds_a_clean_system("builtin");
}

/// What the commits hold at /dev, /tmp, /run and /proc is hidden from the
/// command and committed unchanged: /dev/null stays a regular file with
/// its content although the command wrote to /dev/null.
fn commits_keep_their_dev_and_tmp(tool: &str) {
    let s = store();
    create(
        &s.repo,
        "keep",
        &["base", "chunk/hasdev", "chunk/a"],
        &["--backend", "overlay"],
    )
    .assert_ok();
    let r = sandbox(
        &s.repo,
        "keep",
        tool,
        &[],
        &[
            "sh",
            "-c",
            "echo gone > /dev/null; test -c /dev/null; test ! -e /tmp/keep; echo t > /tmp/new; \
             echo r > /run/new; umask 022; echo made > /made",
        ],
    )
    .assert_ok();
    assert_eq!(r.stdout_str(), "", "{}", r.describe());
    let commit = expect_checksum_line(&arbor_repo_ok(
        &s.repo,
        ["stage", "commit", "keep", "-b", "kept", "--timestamp", "1"],
    ));
    let got = checkout(&s.repo, &commit, &s.base);
    let expected = s.base.join("expected");
    union_of(&expected, &["base", "hasdev", "a"]);
    write_file(&expected.join("made"), b"made\n", 0o644);
    assert_manifest_eq(&manifest(&got), &manifest(&expected), "committed system");
    destroy_clean(&s, "keep");
}

#[test]
fn commits_keep_their_dev_and_tmp_bwrap() {
    commits_keep_their_dev_and_tmp("bwrap");
}

#[test]
fn commits_keep_their_dev_and_tmp_builtin() {
    commits_keep_their_dev_and_tmp("builtin");
}

/// Mount points made for the sandbox leave no trace on any backend: after
/// a sandboxed command the root's top level is what it was, and the
/// commit holds only what the command wrote in the root.
#[test]
fn mount_points_leave_no_trace_on_every_backend() {
    let s = store();
    let base_top = top_level(&template().sources["base"]);
    for backend in ["overlay", "fuse-overlayfs", "unionfs", "copy"] {
        for tool in TOOLS {
            let name = format!("{backend}-{tool}");
            create(&s.repo, &name, &["base"], &["--backend", backend]).assert_ok();
            let root = root_of(&s.repo, &name);
            let src = s.base.join(format!("src-{name}"));
            make_dir(&src, 0o755);
            sandbox(
                &s.repo,
                &name,
                tool,
                &["--bind", &format!("{}:/srv/src", src.display())],
                &["sh", "-c", "echo x > /dev/null; echo t > /tmp/t; echo y > /srv/src/y; umask 022; echo c > /created"],
            )
            .assert_ok();
            assert_eq!(
                fs::read(src.join("y")).unwrap(),
                b"y\n",
                "{name}: the bind is writable"
            );
            let mut want = base_top.clone();
            want.push("created".into());
            want.sort();
            assert_eq!(top_level(&root), want, "{name}: root after the command");
            let commit = expect_checksum_line(&arbor_repo_ok(
                &s.repo,
                ["stage", "commit", &name, "-b", &name, "--timestamp", "1"],
            ));
            let got = checkout(&s.repo, &commit, &s.base);
            let expected = s.base.join(format!("expected-{name}"));
            union_of(&expected, &["base"]);
            write_file(&expected.join("created"), b"c\n", 0o644);
            assert_manifest_eq(&manifest(&got), &manifest(&expected), &name);
            destroy_clean(&s, &name);
        }
    }
}

// ---------------------------------------------------------------------------
// What the command sees
// ---------------------------------------------------------------------------

/// Both tools give the same view: the same mounts (same options) and the
/// same /dev.
#[test]
fn both_tools_give_the_same_view() {
    let s = store();
    create(&s.repo, "view", &["base"], &["--backend", "overlay"]).assert_ok();
    let show = |tool| {
        let r = sandbox(
            &s.repo,
            "view",
            tool,
            &[],
            &[
                "sh",
                "-c",
                "sort /proc/self/mounts; ls -A /dev; ls -A /tmp /run",
            ],
        )
        .assert_ok();
        r.stdout_str()
    };
    let bwrap = show("bwrap");
    let builtin = show("builtin");
    assert_eq!(
        bwrap, builtin,
        "mount tables and /dev differ between the tools"
    );
    for line in [
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
        "proc /proc/sys proc ro,nosuid,nodev,relatime 0 0",
        "tmpfs /dev tmpfs rw,nosuid,nodev,relatime,mode=755 0 0",
        "devpts /dev/pts devpts rw,nosuid,noexec,relatime,mode=620,ptmxmode=666 0 0",
        "tmpfs /dev/shm tmpfs rw,nosuid,nodev,relatime 0 0",
        "tmpfs /tmp tmpfs rw,nosuid,nodev,relatime 0 0",
        "tmpfs /run tmpfs rw,nosuid,nodev,relatime,mode=755 0 0",
    ] {
        assert!(
            builtin.lines().any(|l| l == line),
            "missing {line:?} in\n{builtin}"
        );
    }
    assert!(
        builtin
            .lines()
            .any(|l| l.starts_with("sysfs /sys sysfs ro,nosuid,nodev")),
        "{builtin}"
    );
    let dev: Vec<&str> = builtin
        .lines()
        .skip_while(|l| l.contains(' '))
        .take_while(|l| !l.starts_with('/'))
        .collect();
    assert_eq!(
        dev,
        [
            "core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
            "stdout", "tty", "urandom", "zero"
        ],
        "{builtin}"
    );
    destroy_clean(&s, "view");
}

/// The environment is exactly the clean default, SOURCE_DATE_EPOCH when
/// arbor has it, and --env; PWD is /. `-v` says which tool ran.
fn environment_is_clean(tool: &str) {
    let s = store();
    create(&s.repo, "env", &["base"], &["--backend", "overlay"]).assert_ok();
    let mut c = arbor_command();
    c.arg("--repo").arg(&s.repo).arg("-v");
    c.args(sandbox_args(
        "env",
        tool,
        &["--env", "FOO=bar baz", "--env", "LANG=C"],
        &["env"],
    ));
    c.env("SOURCE_DATE_EPOCH", "1234567890").env("LEAK", "1");
    let r = run(c).assert_ok();
    let mut got: Vec<String> = r.stdout_str().lines().map(String::from).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "FOO=bar baz",
            "HOME=/root",
            "LANG=C",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PWD=/",
            "SOURCE_DATE_EPOCH=1234567890",
        ],
        "{}",
        r.describe()
    );
    let said = if tool == "bwrap" {
        "sandbox: bubblewrap ("
    } else {
        "sandbox: built-in"
    };
    assert!(r.stderr_str().contains(said), "{}", r.describe());
    destroy_clean(&s, "env");
}

#[test]
fn environment_is_clean_bwrap() {
    environment_is_clean("bwrap");
}

#[test]
fn environment_is_clean_builtin() {
    environment_is_clean("builtin");
}

/// Without `--sandbox-tool`, bubblewrap runs when `bwrap` is in arbor's
/// PATH (here a directory holding only a link to it) and the built-in
/// sandbox otherwise (PATH without it); `-v` says which, and the sandbox's
/// pid 1 shows it (bubblewrap's init, or arbor's own). `--sandbox-tool
/// bwrap` without it in PATH is refused, saying so.
#[test]
fn automatic_tool_choice() {
    let s = store();
    create(&s.repo, "auto", &["base"], &["--backend", "overlay"]).assert_ok();
    let with = s.base.join("path-with-bwrap");
    let without = s.base.join("path-without");
    make_dir(&with, 0o755);
    make_dir(&without, 0o755);
    let real = find_program("bwrap");
    symlink(&real, with.join("bwrap")).unwrap();
    let exec = |path: &Path, extra: &[&str]| {
        let mut c = arbor_command();
        c.arg("--repo").arg(&s.repo).arg("-v");
        c.args(["stage", "exec", "auto", "--sandbox"]);
        c.args(extra);
        c.args(["--", "cat", "/proc/1/comm"]);
        c.env("PATH", path);
        run(c)
    };
    let r = exec(&with, &[]).assert_ok();
    assert_eq!(r.stdout_str(), "bwrap\n", "{}", r.describe());
    let note = format!("sandbox: bubblewrap ({})", with.join("bwrap").display());
    assert!(r.stderr_str().contains(&note), "{}", r.describe());
    let r = exec(&without, &[]).assert_ok();
    assert_eq!(r.stdout_str(), "arbor\n", "{}", r.describe());
    assert!(
        r.stderr_str()
            .contains("sandbox: built-in (unshare and mount system calls)"),
        "{}",
        r.describe()
    );
    let r = exec(&without, &["--sandbox-tool", "bwrap"]).assert_clean_failure();
    assert!(
        r.stderr_str()
            .contains("bubblewrap (`bwrap`) is not in PATH"),
        "{}",
        r.describe()
    );
    destroy_clean(&s, "auto");
}

/// `name`'s path in this process's PATH.
fn find_program(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not in PATH"))
}

/// The capabilities integration commands need, nothing more (see the
/// sandbox module's "Privilege").
const KEPT_CAPS: u64 = 0xa004_05fb;

/// A capability mask of `/proc/self/status` (`CapBnd:\t000001ff...`).
fn status_mask(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(line[key.len()..].trim(), 16).unwrap()
}

/// The command has only the capabilities a package's integration needs
/// (chown, any file access, setuid, setcap...) and no_new_privs: it can
/// chown and keep a setgid bit, but cannot mount, remount /proc/sys
/// writable or make device nodes. Both tools give the same bounding,
/// permitted and effective sets.
fn reduced_privilege(tool: &str) {
    let s = store();
    create(&s.repo, "caps", &["base"], &["--backend", "overlay"]).assert_ok();
    let r = sandbox(&s.repo, "caps", tool, &[], &["cat", "/proc/self/status"]).assert_ok();
    let status = r.stdout_str();
    let host = fs::read_to_string("/proc/self/status").unwrap();
    let host_bnd = status_mask(&host, "CapBnd:");
    let want = KEPT_CAPS & host_bnd;
    for key in ["CapBnd:", "CapPrm:", "CapEff:"] {
        assert_eq!(status_mask(&status, key), want, "{key}\n{status}");
    }
    // bubblewrap sets the inheritable and ambient sets to the kept
    // capabilities (what a root process gets at exec anyway; a switch to
    // another uid clears them); the built-in sandbox empties them.
    let inh = if tool == "bwrap" { want } else { 0 };
    assert_eq!(status_mask(&status, "CapInh:"), inh, "{status}");
    assert_eq!(status_mask(&status, "CapAmb:"), inh, "{status}");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let r = sandbox(
        &s.repo,
        "caps",
        tool,
        &[],
        &[
            "sh",
            "-c",
            "umask 022; touch /owned; chown 12:34 /owned; chmod 2755 /owned; \
             stat -c '%u %g %a' /owned; rm /owned; \
             if mount -o remount,rw /proc/sys 2>/dev/null; then echo REMOUNTED; fi; \
             grep -q '^proc /proc/sys proc ro,' /proc/self/mounts && echo ro; \
             if mount -t tmpfs none /tmp 2>/dev/null; then echo MOUNTED; fi; \
             if mknod /tmp/disk b 8 0 2>/dev/null; then echo MKNOD; fi; \
             if echo x > /proc/sys/kernel/core_pattern 2>/dev/null; then echo CORE; fi",
        ],
    )
    .assert_ok();
    assert_eq!(r.stdout_str(), "12 34 2755\nro\n", "{}", r.describe());
    destroy_clean(&s, "caps");
}

#[test]
fn reduced_privilege_bwrap() {
    reduced_privilege("bwrap");
}

#[test]
fn reduced_privilege_builtin() {
    reduced_privilege("builtin");
}

/// `--bind` is writable, `--ro-bind` read-only (a file too); destinations
/// the stage lacks are made and taken away again; binds inside /tmp work.
fn binds(tool: &str) {
    let s = store();
    create(&s.repo, "binds", &["base"], &["--backend", "overlay"]).assert_ok();
    let rw = s.base.join("rw");
    let ro = s.base.join("ro");
    make_dir(&rw, 0o755);
    make_dir(&ro, 0o755);
    write_file(&ro.join("data"), b"read me\n", 0o644);
    let file = s.base.join("single");
    write_file(&file, b"one file\n", 0o644);
    let bind = format!("{}:/build/src", rw.display());
    let robind = format!("{}:/tmp/cache", ro.display());
    let filebind = format!("{}:/etc/single.conf", file.display());
    let r = sandbox(
        &s.repo,
        "binds",
        tool,
        &[
            "--bind",
            &bind,
            "--ro-bind",
            &robind,
            "--ro-bind",
            &filebind,
        ],
        &[
            "sh",
            "-c",
            "echo out > /build/src/written; cat /tmp/cache/data /etc/single.conf; \
             if echo x > /tmp/cache/no 2>/dev/null; then echo WRITABLE; fi; \
             if echo x > /etc/single.conf 2>/dev/null; then echo WRITABLE; fi",
        ],
    )
    .assert_ok();
    assert_eq!(r.stdout_str(), "read me\none file\n", "{}", r.describe());
    assert_eq!(fs::read(rw.join("written")).unwrap(), b"out\n");
    assert!(!ro.join("no").exists());
    let root = s.default_root("binds");
    assert_eq!(top_level(&root), top_level(&template().sources["base"]));
    assert!(!root.join("build").exists() && !root.join("etc").exists());
    // A destination through a dangling symlink is refused, naming it.
    symlink("nowhere", root.join("dangling")).unwrap();
    let bad = format!("{}:/dangling/x", rw.display());
    let r = sandbox(&s.repo, "binds", tool, &["--bind", &bad], &["true"]).assert_clean_failure();
    assert!(r.stderr_str().contains("dangling"), "{}", r.describe());
    destroy_clean(&s, "binds");
}

#[test]
fn binds_bwrap() {
    binds("bwrap");
}

#[test]
fn binds_builtin() {
    binds("builtin");
}

/// Bind destinations are resolved inside the stage, as if chrooted, never
/// on the host: the stage holds `opt -> /oldroot/HOST` (what the host is
/// called in bubblewrap's set-up root), `srv -> /HOST`, `up -> ../../..`
/// (clamps at the root) and `usr/mylib64 -> mylib`; binds through them
/// land in the stage at what the links lead to there, where the command
/// sees them, and are taken away again. The host directory stays empty,
/// and the stage is as it was.
fn bind_destinations_resolve_in_the_stage(tool: &str) {
    let s = store();
    create(&s.repo, "bsym", &["base"], &["--backend", "overlay"]).assert_ok();
    let root = s.default_root("bsym");
    let host = s.base.join("host-target");
    make_dir(&host, 0o755);
    let host_rel = host.strip_prefix("/").unwrap();
    let in_old = Path::new("oldroot").join(host_rel);
    make_dir(&root.join(&in_old).join("sub/x"), 0o755);
    make_dir(&root.join(host_rel).join("sub"), 0o755);
    make_dir(&root.join("usr/mylib"), 0o755);
    symlink(Path::new("/").join(&in_old), root.join("opt")).unwrap();
    symlink(&host, root.join("srv")).unwrap();
    symlink("mylib", root.join("usr/mylib64")).unwrap();
    symlink("../../..", root.join("up")).unwrap();
    let before = manifest(&root);
    let src = s.base.join("src");
    make_dir(&src, 0o755);
    write_file(&src.join("data"), b"bound\n", 0o644);
    let file = s.base.join("file.conf");
    write_file(&file, b"file\n", 0o644);
    let b = |dest: &str| format!("{}:{dest}", src.display());
    let r = sandbox(
        &s.repo,
        "bsym",
        tool,
        &[
            "--ro-bind",
            &b("/opt/sub/x"),
            "--ro-bind",
            &b("/srv/sub/y"),
            "--ro-bind",
            &b("/usr/mylib64/c"),
            "--ro-bind",
            &b("/up/d"),
            "--ro-bind",
            &format!("{}:/opt/sub/f.conf", file.display()),
        ],
        &[
            "sh",
            "-c",
            &format!(
                "cat /opt/sub/x/data /{}/sub/y/data /usr/mylib/c/data /d/data /opt/sub/f.conf",
                host_rel.display()
            ),
        ],
    )
    .assert_ok();
    assert_eq!(
        r.stdout_str(),
        "bound\nbound\nbound\nbound\nfile\n",
        "{}",
        r.describe()
    );
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "the host directory was written to"
    );
    assert_manifest_eq(&manifest(&root), &before, "stage after the command");
    // A symlink to a missing path is refused, naming it.
    symlink("/nowhere", root.join("dangling")).unwrap();
    let r = sandbox(
        &s.repo,
        "bsym",
        tool,
        &["--bind", &b("/dangling/x")],
        &["true"],
    )
    .assert_clean_failure();
    assert!(r.stderr_str().contains("/dangling"), "{}", r.describe());
    destroy_clean(&s, "bsym");
}

#[test]
fn bind_destinations_resolve_in_the_stage_bwrap() {
    bind_destinations_resolve_in_the_stage("bwrap");
}

#[test]
fn bind_destinations_resolve_in_the_stage_builtin() {
    bind_destinations_resolve_in_the_stage("builtin");
}

/// /tmp, /run and /dev that the commit holds as symlinks: the file
/// systems are mounted where the links lead inside the stage (`tmp ->
/// /oldroot/HOST`, `run -> ../../state/run`, `dev -> var/dev`), so what the
/// command writes there reaches neither the stage nor the host. A link
/// that leads to the root itself, or to nothing, is refused, naming it.
fn fixed_mounts_through_symlinks(tool: &str) {
    let s = store();
    create(&s.repo, "fsym", &["base"], &["--backend", "overlay"]).assert_ok();
    let root = s.default_root("fsym");
    let host = s.base.join("host-target");
    make_dir(&host, 0o755);
    let in_old = Path::new("oldroot").join(host.strip_prefix("/").unwrap());
    make_dir(&root.join(&in_old), 0o755);
    write_file(&root.join(&in_old).join("keep"), b"kept\n", 0o644);
    make_dir(&root.join("state/run"), 0o755);
    make_dir(&root.join("var/dev"), 0o755);
    symlink(Path::new("/").join(&in_old), root.join("tmp")).unwrap();
    symlink("../../state/run", root.join("run")).unwrap();
    symlink("var/dev", root.join("dev")).unwrap();
    let before = manifest(&root);
    let r = sandbox(
        &s.repo,
        "fsym",
        tool,
        &[],
        &[
            "sh",
            "-c",
            "test ! -e /tmp/keep; echo t > /tmp/t; echo r > /run/r; echo x > /dev/null; \
             test -c /dev/null; echo s > /dev/shm/s; cat /tmp/t /run/r /dev/shm/s",
        ],
    )
    .assert_ok();
    assert_eq!(r.stdout_str(), "t\nr\ns\n", "{}", r.describe());
    assert_eq!(fs::read_dir(&host).unwrap().count(), 0, "host written to");
    assert_manifest_eq(&manifest(&root), &before, "stage after the command");
    for (link, target, says) in [
        ("run", "/", "/run"),
        ("tmp", "../..", "/tmp"),
        ("dev", "../somewhere", "/dev"),
    ] {
        let saved = fs::read_link(root.join(link)).unwrap();
        fs::remove_file(root.join(link)).unwrap();
        symlink(target, root.join(link)).unwrap();
        let r = sandbox(&s.repo, "fsym", tool, &[], &["sh", "-c", "echo r > /run/r"])
            .assert_clean_failure();
        assert!(r.stderr_str().contains(says), "{}", r.describe());
        fs::remove_file(root.join(link)).unwrap();
        symlink(saved, root.join(link)).unwrap();
    }
    assert_manifest_eq(&manifest(&root), &before, "stage after the refusals");
    let commit = expect_checksum_line(&arbor_repo_ok(
        &s.repo,
        ["stage", "commit", "fsym", "-b", "fsym", "--timestamp", "1"],
    ));
    let got = checkout(&s.repo, &commit, &s.base);
    for (path, what) in [("tmp", "l"), ("run", "l"), ("dev", "l"), ("state/run", "d")] {
        let md = fs::symlink_metadata(got.join(path)).unwrap();
        assert_eq!(md.file_type().is_symlink(), what == "l", "{path}");
    }
    assert!(!got.join("state/run/r").exists() && !got.join(&in_old).join("t").exists());
    destroy_clean(&s, "fsym");
}

#[test]
fn fixed_mounts_through_symlinks_bwrap() {
    fixed_mounts_through_symlinks("bwrap");
}

#[test]
fn fixed_mounts_through_symlinks_builtin() {
    fixed_mounts_through_symlinks("builtin");
}

/// `--network none` (the default): only loopback, and it is up (a connect
/// to 127.0.0.1 is refused rather than unroutable); the host's listener
/// on 127.0.0.1 is not reached. `--network host` reaches it.
fn network(tool: &str) {
    let s = store();
    create(&s.repo, "net", &["base"], &["--backend", "overlay"]).assert_ok();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("echo hello-{tool} > /dev/tcp/127.0.0.1/{port}");
    let none = sandbox(&s.repo, "net", tool, &[], &["bash", "-c", &script]);
    assert_eq!(none.status.code(), Some(1), "{}", none.describe());
    assert!(
        none.stderr_str().contains("Connection refused"),
        "{}",
        none.describe()
    );
    assert!(
        listener.accept().is_err(),
        "the host's listener was reached"
    );
    let devs = sandbox(&s.repo, "net", tool, &[], &["cat", "/proc/net/dev"]).assert_ok();
    let names: Vec<String> = devs
        .stdout_str()
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_string())
        .collect();
    assert_eq!(names, ["lo"], "{}", devs.describe());

    let host = sandbox(
        &s.repo,
        "net",
        tool,
        &["--network", "host"],
        &["bash", "-c", &script],
    );
    host.assert_ok();
    listener.set_nonblocking(false).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, format!("hello-{tool}\n"));
    destroy_clean(&s, "net");
}

#[test]
fn network_bwrap() {
    network("bwrap");
}

#[test]
fn network_builtin() {
    network("builtin");
}

// ---------------------------------------------------------------------------
// Processes: status, output, Ctrl-C, leftovers, kill -9
// ---------------------------------------------------------------------------

/// Exit codes pass through (128+N for a signal); output streams while the
/// command runs (the test answers the first line before the command may
/// print the second); a missing program is an error naming it.
fn status_and_live_output(tool: &str) {
    let s = store();
    create(&s.repo, "st", &["base"], &["--backend", "overlay"]).assert_ok();
    let code = |cmd: &str| {
        sandbox(&s.repo, "st", tool, &[], &["sh", "-c", cmd])
            .status
            .code()
    };
    assert_eq!(code("exit 7"), Some(7));
    assert_eq!(code("kill -TERM $$"), Some(128 + 15));
    let r = sandbox(&s.repo, "st", tool, &[], &["no-such-program"]).assert_clean_failure();
    assert!(
        r.stderr_str().contains("no-such-program"),
        "{}",
        r.describe()
    );

    let gate = s.base.join("gate");
    make_dir(&gate, 0o755);
    let bind = format!("{}:/gate", gate.display());
    let mut child = spawn_arbor(
        &s.repo,
        &sandbox_args(
            "st",
            tool,
            &["--bind", &bind],
            &[
                "sh",
                "-c",
                "echo first; while [ ! -e /gate/go ]; do sleep 0.05; done; echo second",
            ],
        ),
        false,
    );
    assert_eq!(read_line(&mut child), "first\n");
    write_file(&gate.join("go"), b"", 0o644);
    assert_eq!(read_line(&mut child), "second\n");
    assert!(child.wait().unwrap().success());
    destroy_clean(&s, "st");
}

#[test]
fn status_and_live_output_bwrap() {
    status_and_live_output("bwrap");
}

#[test]
fn status_and_live_output_builtin() {
    status_and_live_output("builtin");
}

/// A command that leaves a process behind returns at once; the process is
/// gone (its PID namespace ended) and the stage can be destroyed.
fn leftovers_end_with_the_command(tool: &str, marker: &str) {
    let s = store();
    create(&s.repo, "left", &["base"], &["--backend", "overlay"]).assert_ok();
    let start = Instant::now();
    let script = format!("sleep {marker} & echo started");
    let r = sandbox(&s.repo, "left", tool, &[], &["sh", "-c", &script]).assert_ok();
    assert_eq!(r.stdout_str(), "started\n");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(pids_running(&["sleep", marker]), Vec::<u32>::new());
    destroy_clean(&s, "left");
}

#[test]
fn leftovers_end_with_the_command_bwrap() {
    leftovers_end_with_the_command("bwrap", "10001");
}

#[test]
fn leftovers_end_with_the_command_builtin() {
    leftovers_end_with_the_command("builtin", "10002");
}

/// A descriptor arbor's caller leaves open without close-on-exec (here
/// fd 7, a host file) does not reach the command: it has only 0, 1, 2
/// (and `ls` its own 3, the directory it lists).
fn inherited_fds_stay_out(tool: &str) {
    let s = store();
    create(&s.repo, "fds", &["base"], &["--backend", "overlay"]).assert_ok();
    let secret = s.base.join("secret");
    write_file(&secret, b"host file\n", 0o600);
    let file = fs::File::open(&secret).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut c = arbor_command();
    c.arg("--repo").arg(&s.repo);
    c.args(sandbox_args("fds", tool, &[], &["ls", "/proc/self/fd"]));
    // SAFETY: dup2 only, between fork and exec; the new fd 7 is not
    // close-on-exec, as a careless caller's would be.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run(c).assert_ok();
    assert_eq!(r.stdout_str(), "0\n1\n2\n3\n", "{}", r.describe());
    drop(file);
    destroy_clean(&s, "fds");
}

#[test]
fn inherited_fds_stay_out_bwrap() {
    inherited_fds_stay_out("bwrap");
}

#[test]
fn inherited_fds_stay_out_builtin() {
    inherited_fds_stay_out("builtin");
}

/// Starts `arbor` as the session leader of a new pseudo-terminal (its
/// controlling terminal and stdin), stdout piped. Writing ^C to the
/// returned master is a real Ctrl-C: the terminal signals its foreground
/// process group (with `si_code` `SI_KERNEL`, unlike a `kill`). Dropping
/// the master hangs the terminal up.
fn spawn_arbor_on_pty(repo: &Path, args: &[&str]) -> (Running, fs::File) {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: plain libc pty calls on a descriptor we own and a buffer of
    // the size passed.
    let (master, slave_path) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        let path = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_str()
            .unwrap()
            .to_string();
        (fs::File::from_raw_fd(m), path)
    };
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(slave_path)
        .unwrap();
    let mut c = arbor_command();
    c.arg("--repo").arg(repo).args(args);
    c.stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid and ioctl only, between fork and exec (after stdin
    // is the terminal).
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (Running(c.spawn().unwrap()), master)
}

/// The terminal's Ctrl-C (here a real one, on a pseudo-terminal) reaches
/// the command; the stage stays intact and usable. arbor itself survives
/// it, so with the built-in sandbox the command handles it as it likes:
/// here a shell that, like an interactive one, survives the first Ctrl-C
/// and exits (with its own code, passed through) at the second, after
/// writing a file. bubblewrap dies of the first and takes the command with
/// it (arbor exits 130). No mount is left either way.
fn ctrl_c(tool: &str) {
    use std::io::Write;
    let s = store();
    create(&s.repo, "intr", &["base"], &["--backend", "overlay"]).assert_ok();
    let root = s.default_root("intr");
    // The loop, not the trap, reports each ^C, from one reading of the
    // count, and exits only once it reported the second: bash drops a
    // SIGINT that arrives while its trap for SIGINT runs, and a ^C landing
    // between two readings would exit unreported.
    let script = "n=0; seen=0; trap 'n=$((n+1))' INT; echo ready; \
                  while :; do m=$n; \
                  if [ $m != $seen ]; then seen=$m; echo trapped $m; fi; \
                  if [ $seen = 2 ]; then echo handled > /handled; exit 5; fi; \
                  sleep 0.05; done";
    let (mut child, mut terminal) = spawn_arbor_on_pty(
        &s.repo,
        &sandbox_args("intr", tool, &[], &["bash", "-c", script]),
    );
    assert_eq!(read_line(&mut child), "ready\n");
    terminal.write_all(b"\x03").unwrap();
    if tool == "builtin" {
        assert_eq!(read_line(&mut child), "trapped 1\n");
        terminal.write_all(b"\x03").unwrap();
        assert_eq!(read_line(&mut child), "trapped 2\n");
    }
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    let status = child.wait().unwrap();
    drop(terminal);
    if tool == "builtin" {
        assert_eq!(status.code(), Some(5), "{rest}");
        assert_eq!(rest, "");
        assert_eq!(fs::read(root.join("handled")).unwrap(), b"handled\n");
    } else {
        assert_eq!(status.code(), Some(130), "{status:?} {rest}");
    }
    assert_eq!(list_row(&s.repo, "intr").unwrap().state, "mounted");
    assert_eq!(mounts_below(&root), Vec::<PathBuf>::new());
    let again = sandbox(&s.repo, "intr", tool, &[], &["sh", "-c", "echo usable"]).assert_ok();
    assert_eq!(again.stdout_str(), "usable\n");
    destroy_clean(&s, "intr");
}

#[test]
fn ctrl_c_bwrap() {
    ctrl_c("bwrap");
}

#[test]
fn ctrl_c_builtin() {
    ctrl_c("builtin");
}

/// SIGINT sent to arbor alone (`kill -INT PID`, as a supervisor or a CI
/// timeout would; no terminal): arbor passes it on, the command gets it
/// (its trap writes a file and exits 130), arbor exits 130, the stage is
/// intact with no mount left, and usable.
fn sigint_to_arbor(tool: &str) {
    let s = store();
    create(&s.repo, "sig", &["base"], &["--backend", "overlay"]).assert_ok();
    let root = s.default_root("sig");
    let script = "trap 'echo got INT > /got; exit 130' INT; echo ready; \
                  while :; do sleep 0.05; done";
    let mut child = spawn_arbor(
        &s.repo,
        &sandbox_args("sig", tool, &[], &["sh", "-c", script]),
        true,
    );
    assert_eq!(read_line(&mut child), "ready\n");
    // SAFETY: signalling the child only.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut status = None;
    wait_until("arbor to exit", Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(130), "{status:?}");
    assert_eq!(fs::read(root.join("got")).unwrap(), b"got INT\n");
    assert_eq!(list_row(&s.repo, "sig").unwrap().state, "mounted");
    assert_eq!(mounts_below(&root), Vec::<PathBuf>::new());
    let mut want = top_level(&template().sources["base"]);
    want.push("got".into());
    want.sort();
    assert_eq!(top_level(&root), want, "mount points left");
    let again = sandbox(&s.repo, "sig", tool, &[], &["sh", "-c", "echo usable"]).assert_ok();
    assert_eq!(again.stdout_str(), "usable\n");
    destroy_clean(&s, "sig");
}

#[test]
fn sigint_to_arbor_bwrap() {
    sigint_to_arbor("bwrap");
}

#[test]
fn sigint_to_arbor_builtin() {
    sigint_to_arbor("builtin");
}

/// kill -9 of `stage exec` while the sandboxed command runs: the sandbox
/// dies with it; the sandbox's mounts never were in the host's mount
/// namespace (checked while it runs, against the command's own mount
/// table) and none is there afterwards; the next commit holds no mount
/// point the dead sandbox made; `stage destroy` works.
fn kill_9(tool: &str, marker: &str) {
    let s = store();
    create(&s.repo, "k9", &["base"], &["--backend", "overlay"]).assert_ok();
    let root = s.default_root("k9");
    let script = format!("echo ready; exec sleep {marker}");
    let mut child = spawn_arbor(
        &s.repo,
        &sandbox_args("k9", tool, &[], &["sh", "-c", &script]),
        false,
    );
    assert_eq!(read_line(&mut child), "ready\n");
    wait_until("the sleep to start", Duration::from_secs(10), || {
        !pids_running(&["sleep", marker]).is_empty()
    });
    let pids = pids_running(&["sleep", marker]);
    assert_eq!(pids.len(), 1);
    let inside = fs::read_to_string(format!("/proc/{}/mountinfo", pids[0])).unwrap();
    let inside: Vec<&str> = inside
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap())
        .collect();
    for m in ["/", "/proc", "/dev", "/dev/pts", "/sys", "/tmp", "/run"] {
        assert!(
            inside.contains(&m),
            "{m} not mounted in the sandbox: {inside:?}"
        );
    }
    assert_eq!(
        mounts_below(&root),
        Vec::<PathBuf>::new(),
        "sandbox mounts in the host"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the sandbox to die", Duration::from_secs(10), || {
        pids_running(&["sleep", marker]).is_empty()
    });
    assert_eq!(
        mounts_below(&root),
        Vec::<PathBuf>::new(),
        "mounts left in the host"
    );
    // The mount points the dead sandbox made are still in the root...
    assert!(root.join("proc").is_dir());
    // ...and never reach a commit.
    let commit = expect_checksum_line(&arbor_repo_ok(
        &s.repo,
        ["stage", "commit", "k9", "-b", "k9", "--timestamp", "1"],
    ));
    let got = checkout(&s.repo, &commit, &s.base);
    assert_manifest_eq(
        &manifest(&got),
        &manifest(&template().sources["base"]),
        "commit",
    );
    assert_eq!(top_level(&root), top_level(&template().sources["base"]));
    destroy_clean(&s, "k9");
}

#[test]
fn kill_9_bwrap() {
    kill_9("bwrap", "10005");
}

#[test]
fn kill_9_builtin() {
    kill_9("builtin", "10006");
}

/// `stage commit` refuses while a sandboxed command runs (its mount points
/// are in the root), and works once it has ended.
#[test]
fn commit_waits_for_the_sandbox() {
    let s = store();
    create(&s.repo, "busy", &["base"], &["--backend", "overlay"]).assert_ok();
    for (tool, marker) in [("bwrap", "10007"), ("builtin", "10008")] {
        let script = format!("echo ready; exec sleep {marker}");
        let mut child = spawn_arbor(
            &s.repo,
            &sandbox_args("busy", tool, &[], &["sh", "-c", &script]),
            false,
        );
        assert_eq!(read_line(&mut child), "ready\n");
        let r =
            arbor_repo(&s.repo, ["stage", "commit", "busy", "-b", "busy"]).assert_clean_failure();
        assert!(
            r.stderr_str()
                .contains("a command runs in its build environment"),
            "{}",
            r.describe()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until("the sandbox to die", Duration::from_secs(10), || {
            pids_running(&["sleep", marker]).is_empty()
        });
        let commit = expect_checksum_line(&arbor_repo_ok(
            &s.repo,
            ["stage", "commit", "busy", "-b", "busy", "--timestamp", "1"],
        ));
        let got = checkout(&s.repo, &commit, &s.base.join(tool));
        assert_manifest_eq(
            &manifest(&got),
            &manifest(&template().sources["base"]),
            tool,
        );
    }
    destroy_clean(&s, "busy");
}

/// Sandboxes that end at the same moment, two in one stage (one per tool)
/// and one in another stage: whichever ends last removes the stage's mount
/// points, so none is left in either root, with no record, round after
/// round. Fail points widen the two windows: an arbor that finds it is
/// not the last one out waits 300 ms before it lets go of the stage (two
/// enders could each see the other still there and both leave the mount
/// points), and each holds the stage exclusively for 100 ms while it checks
/// its mount at the start (a second `stage exec` starting then was refused
/// as "in use").
#[test]
fn sandboxes_ending_together() {
    let s = store();
    for name in ["t1", "t2"] {
        create(&s.repo, name, &["base"], &["--backend", "overlay"]).assert_ok();
    }
    let gate = s.base.join("gate");
    make_dir(&gate, 0o755);
    let bind = format!("{}:/gate", gate.display());
    let base_top = top_level(&template().sources["base"]);
    for round in 0..4 {
        let script = format!(
            "echo ready; while [ ! -e /gate/go{round} ]; do sleep 0.01; done; echo x > /dev/null"
        );
        let other = TOOLS[round % 2];
        let mut children: Vec<Running> = [("t1", "bwrap"), ("t1", "builtin"), ("t2", other)]
            .into_iter()
            .map(|(name, tool)| {
                let mut c = arbor_command();
                c.arg("--repo").arg(&s.repo);
                c.args(sandbox_args(
                    name,
                    tool,
                    &["--bind", &bind],
                    &["sh", "-c", &script],
                ));
                c.env(
                    "FAILPOINTS",
                    "sandbox:finish-not-last=sleep(300);stage:use-exclusive=sleep(100)",
                );
                c.stdin(Stdio::null()).stdout(Stdio::piped());
                Running(c.spawn().unwrap())
            })
            .collect();
        for c in &mut children {
            assert_eq!(read_line(c), "ready\n");
        }
        write_file(&gate.join(format!("go{round}")), b"", 0o644);
        for c in &mut children {
            assert!(c.wait().unwrap().success(), "round {round}");
        }
        for name in ["t1", "t2"] {
            assert_eq!(
                top_level(&s.default_root(name)),
                base_top,
                "round {round}: mount points left in {name}"
            );
            assert!(
                !s.stage_dir(name).join("mountpoints").exists(),
                "round {round}: record left in {name}"
            );
        }
    }
    destroy_clean(&s, "t1");
    destroy_clean(&s, "t2");
}

// ---------------------------------------------------------------------------
// Integration commands
// ---------------------------------------------------------------------------

/// `stage integrate` stops at the first failing command, naming it, its
/// chunk (ref and commit) and its status; later commands do not run.
#[test]
fn integrate_stops_at_the_first_failure() {
    let s = store();
    create(
        &s.repo,
        "f",
        &["base", "chunk/fail"],
        &["--backend", "overlay"],
    )
    .assert_ok();
    let commit = arbor_repo_ok(&s.repo, ["rev-parse", "chunk/fail"]).stdout_str();
    let r = arbor_repo(
        &s.repo,
        ["stage", "integrate", "f", "--sandbox-tool", "builtin"],
    )
    .assert_clean_failure();
    let want = format!(
        "integration command \"20-bad\" of chunk/fail (commit {}) failed (exit status: 3): \
         sh -e -c 'echo failing; exit 3'",
        commit.trim()
    );
    assert!(
        r.stderr_str().contains(&want),
        "want {want:?}\n{}",
        r.describe()
    );
    assert_eq!(r.stdout_str(), "failing\n");
    assert_eq!(
        fs::read(s.default_root("f").join("order")).unwrap(),
        b"10-ok\n"
    );
    destroy_clean(&s, "f");

    // The same through `stage create --integrate`: the stage is kept, and
    // says so; stdout stays empty (the command's output went to stderr).
    let r = create(
        &s.repo,
        "g",
        &["base", "chunk/fail"],
        &["--backend", "overlay", "--integrate"],
    )
    .assert_clean_failure();
    assert!(
        r.stderr_str()
            .contains("stage \"g\" was created, but its integration failed")
            && r.stderr_str().contains(&want)
            && r.stderr_str().contains("failing\n"),
        "{}",
        r.describe()
    );
    assert_eq!(r.stdout_str(), "");
    assert_eq!(list_row(&s.repo, "g").unwrap().state, "mounted");
    assert_eq!(
        fs::read(s.default_root("g").join("order")).unwrap(),
        b"10-ok\n"
    );
    destroy_clean(&s, "g");
}

/// `arbor commit --integration` stores `a(sas)` metadata that the real
/// ostree reads, and commands ostree wrote (`--add-metadata` with a
/// GVariant text value) run in `stage integrate`.
#[test]
fn integration_metadata_interoperates_with_ostree() {
    let s = store();
    let shown = ostree_repo_ok(
        &s.repo,
        ["show", "--print-metadata-key=arbor.integration", "chunk/c"],
    );
    assert_eq!(
        shown.stdout_str(),
        "[('20-proc', ['sh', '-e', '-c', 'echo 20-proc@c >> /order']), \
         ('05-first', ['sh', '-e', '-c', 'umask 022; echo 05-first@c > /order'])]\n"
    );
    let dir = s.base.join("from-ostree");
    make_dir(&dir, 0o755);
    write_file(&dir.join("x"), b"x\n", 0o644);
    ostree_repo_ok(
        &s.repo,
        [
            "commit",
            "-b",
            "by-ostree",
            "--add-metadata=arbor.integration=[('01-mark', ['/usr/bin/sh', '-c', 'echo marked > /mark'])]",
            dir.to_str().unwrap(),
        ],
    );
    create(
        &s.repo,
        "o",
        &["base", "by-ostree"],
        &["--backend", "overlay"],
    )
    .assert_ok();
    let r = arbor_repo_ok(&s.repo, ["stage", "integrate", "o"]);
    assert!(
        r.stderr_str().contains("01-mark of by-ostree (commit ")
            && r.stderr_str()
                .contains("/usr/bin/sh -c 'echo marked > /mark'"),
        "{}",
        r.describe()
    );
    assert_eq!(
        fs::read(s.default_root("o").join("mark")).unwrap(),
        b"marked\n"
    );
    destroy_clean(&s, "o");
}

/// Bad command lines are refused before anything runs.
#[test]
fn bad_options_are_refused() {
    let s = store();
    create(&s.repo, "bad", &["base"], &["--backend", "overlay"]).assert_ok();
    for (args, says) in [
        (
            vec!["stage", "exec", "bad", "--network", "host", "--", "true"],
            "need --sandbox",
        ),
        (
            vec![
                "stage",
                "exec",
                "bad",
                "--sandbox",
                "--bind",
                "/tmp",
                "--",
                "true",
            ],
            "SRC:DST",
        ),
        (
            vec![
                "stage",
                "exec",
                "bad",
                "--sandbox",
                "--bind",
                "/tmp:rel",
                "--",
                "true",
            ],
            "absolute",
        ),
        (
            vec![
                "stage",
                "exec",
                "bad",
                "--sandbox",
                "--bind",
                "/tmp:/proc/x",
                "--",
                "true",
            ],
            "/proc",
        ),
        (
            vec![
                "stage",
                "exec",
                "bad",
                "--sandbox",
                "--env",
                "NOVALUE",
                "--",
                "true",
            ],
            "KEY=VALUE",
        ),
        (
            vec!["stage", "create", "bad2", "base", "--network", "host"],
            "need --integrate",
        ),
    ] {
        let r = arbor_repo(&s.repo, &args).assert_clean_failure();
        assert!(
            r.stderr_str().contains(says),
            "{args:?}: want {says:?}\n{}",
            r.describe()
        );
    }
    let r = arbor_repo(
        &s.repo,
        ["commit", "-b", "x", "--integration", "noequals", "/tmp"],
    )
    .assert_clean_failure();
    assert!(r.stderr_str().contains("NAME=CMD"), "{}", r.describe());
    destroy_clean(&s, "bad");
}

// ---------------------------------------------------------------------------
// A real system tree: ldconfig
// ---------------------------------------------------------------------------

/// Libraries (by name prefix) of the ldconfig tree: the host's real files
/// only, not their soname links, so ldconfig has links to make.
const LIBS: [&[&str]; 3] = [
    &["libc.so", "libm.so", "libz.so", "libcrypt.so"],
    &["libpcre2-8.so", "libselinux.so", "libtinfo.so"],
    &["libssl.so", "libcrypto.so", "libzstd.so", "liblzma.so"],
];

/// The host's library directory: where its libc is.
fn multiarch_dir() -> PathBuf {
    let out = Command::new("ldd").arg("/usr/bin/sh").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let libc = text
        .split_whitespace()
        .find(|w| w.starts_with('/') && w.contains("libc.so"))
        .expect("ldd shows libc");
    fs::canonicalize(libc)
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The host's ldconfig (static) and libraries, its /etc/ld.so.conf(.d),
/// split into three chunks, stacked, `ldconfig` run in the sandbox and
/// committed: the same tree as `chroot COPY /sbin/ldconfig` gives on a
/// plain copy of the three chunks (cache, links, everything; the
/// aux-cache, which records inode numbers, by size).
fn ldconfig_like_a_plain_copy(tool: &str) {
    let s = store();
    let lib = multiarch_dir();
    let mut chunks = Vec::new();
    for (i, prefixes) in LIBS.iter().enumerate() {
        let dir = s.base.join(format!("libs{i}"));
        make_dir(&dir, 0o755);
        let libdir = dir.join(lib.strip_prefix("/").unwrap());
        make_dir(&libdir, 0o755);
        if i == 0 {
            copy_top_level_links(&dir);
            copy_host_path(&dir, Path::new("/usr/sbin/ldconfig"));
            make_dir(&dir.join("etc/ld.so.conf.d"), 0o755);
            fs::copy("/etc/ld.so.conf", dir.join("etc/ld.so.conf")).unwrap();
            for e in fs::read_dir("/etc/ld.so.conf.d").unwrap().flatten() {
                fs::copy(e.path(), dir.join("etc/ld.so.conf.d").join(e.file_name())).unwrap();
            }
            make_dir(&dir.join("var/cache/ldconfig"), 0o700);
        }
        for e in fs::read_dir(&lib).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p)) && e.file_type().unwrap().is_file() {
                copy_host_path(&dir, &e.path());
            }
        }
        let branch = format!("libs/{i}");
        commit_dir(&s.repo, &dir, &branch, &[]);
        chunks.push(dir);
    }
    create(
        &s.repo,
        "ld",
        &["libs/0", "libs/1", "libs/2"],
        &["--backend", "overlay"],
    )
    .assert_ok();
    sandbox(&s.repo, "ld", tool, &[], &["ldconfig"]).assert_ok();
    let commit = expect_checksum_line(&arbor_repo_ok(
        &s.repo,
        ["stage", "commit", "ld", "-b", "ld", "--timestamp", "1"],
    ));
    let got = checkout(&s.repo, &commit, &s.base);

    let plain = s.base.join("plain");
    make_dir(&plain, 0o755);
    for c in &chunks {
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", c.display()))
            .arg(&plain)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let st = Command::new("chroot")
        .arg(&plain)
        .arg("/usr/sbin/ldconfig")
        .status()
        .unwrap();
    assert!(st.success());

    let aux = "var/cache/ldconfig/aux-cache";
    let size = |root: &Path| fs::metadata(root.join(aux)).unwrap().len();
    assert_eq!(size(&got), size(&plain), "aux-cache sizes");
    let without_aux = |root: &Path| {
        manifest_entries(root)
            .into_iter()
            .filter(|e| e.path != aux.as_bytes())
            .collect::<Vec<_>>()
    };
    let (g, p) = (without_aux(&got), without_aux(&plain));
    assert!(
        g.iter()
            .any(|e| e.path.ends_with(b"/libz.so.1") && e.kind == 'l'),
        "ldconfig made no soname link"
    );
    assert!(g.iter().any(|e| e.path == b"etc/ld.so.cache"));
    assert_manifest_eq(
        &render_manifest(&g),
        &render_manifest(&p),
        "ldconfig result",
    );
    destroy_clean(&s, "ld");
}

#[test]
fn ldconfig_like_a_plain_copy_bwrap() {
    ldconfig_like_a_plain_copy("bwrap");
}

#[test]
fn ldconfig_like_a_plain_copy_builtin() {
    ldconfig_like_a_plain_copy("builtin");
}

// ---------------------------------------------------------------------------

/// Destroys a stage and checks nothing stays mounted under the store.
#[track_caller]
fn destroy_clean(s: &PrivateStore, name: &str) {
    arbor_repo_ok(&s.repo, ["stage", "destroy", name]);
    let live: Vec<PathBuf> = stage_list(&s.repo)
        .iter()
        .map(|row| root_of(&s.repo, &row.name))
        .collect();
    let left: Vec<PathBuf> = mounts_under(&s.base)
        .into_iter()
        .filter(|m| !live.contains(m))
        .collect();
    assert!(
        left.is_empty(),
        "after destroy of {name}: still mounted: {left:?}"
    );
    assert!(!s.stage_dir(name).exists());
}
