//! Shared helpers for the arbor integration tests.
//!
//! Everything here is deliberately independent of the arbor library: the tests
//! drive the `arbor` binary and the real `ostree` CLI (2022.7, /usr/bin/ostree)
//! as black boxes and compare their results.
//!
//! The tests assume they run as root on a filesystem with `user.*` xattr
//! support (ext4 /tmp): they lchown files to arbitrary ids and set
//! `trusted.*` / `security.*` xattrs.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub const OSTREE: &str = "/usr/bin/ostree";

/// Path of the arbor binary built by cargo for this test run.
pub fn arbor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_arbor")
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// The result of running a command: exit status plus raw outputs.
pub struct Run {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as UTF-8 (panics with context if it is not).
    pub fn stdout_str(&self) -> String {
        match String::from_utf8(self.stdout.clone()) {
            Ok(s) => s,
            Err(_) => panic!("stdout of `{}` is not UTF-8", self.cmdline),
        }
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout followed by stderr, lossily decoded; handy for "output mentions X".
    pub fn combined(&self) -> String {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }

    pub fn describe(&self) -> String {
        const MAX: usize = 6000;
        let cut = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            if s.len() > MAX {
                let mut end = MAX;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}… [{} bytes total]", &s[..end], b.len())
            } else {
                s.into_owned()
            }
        };
        format!(
            "command: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }

    /// Panics (showing both outputs) unless the command succeeded.
    #[track_caller]
    pub fn assert_ok(self) -> Self {
        if !self.success() {
            panic!("command failed unexpectedly\n{}", self.describe());
        }
        self
    }

    /// Panics unless the command failed "cleanly": non-zero exit status, no
    /// Rust panic (exit code 101 / "panicked at"), not killed by a signal, and
    /// a non-empty error message on stderr.
    #[track_caller]
    pub fn assert_clean_failure(self) -> Self {
        if self.success() {
            panic!(
                "command succeeded but should have failed\n{}",
                self.describe()
            );
        }
        let stderr = self.stderr_str();
        if self.status.code().is_none() {
            panic!("command was killed by a signal\n{}", self.describe());
        }
        if self.status.code() == Some(101) || stderr.contains("panicked at") {
            panic!(
                "command panicked instead of reporting an error\n{}",
                self.describe()
            );
        }
        if stderr.trim().is_empty() {
            panic!(
                "command failed without an error message on stderr\n{}",
                self.describe()
            );
        }
        self
    }
}

fn render_cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s = format!("{}={} {}", k.to_string_lossy(), v.to_string_lossy(), s);
        }
    }
    s
}

/// Runs a prepared command to completion and captures its outputs.
pub fn run(mut cmd: Command) -> Run {
    cmd.stdin(Stdio::null());
    let cmdline = render_cmdline(&cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot spawn `{cmdline}`: {e}"));
    Run {
        cmdline,
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// A `Command` for the arbor binary with `ARBOR_REPO` cleared.
pub fn arbor_command() -> Command {
    let mut c = Command::new(arbor_bin());
    c.env_remove("ARBOR_REPO");
    c.env("RUST_BACKTRACE", "1");
    c
}

/// Runs `cmd ARGS...`.
fn run_with<I, S>(mut cmd: Command, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    cmd.args(args);
    run(cmd)
}

/// Runs `arbor ARGS...`.
pub fn arbor<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with(arbor_command(), args)
}

/// Runs `arbor ARGS...` and panics (with both outputs) if it fails.
#[track_caller]
pub fn arbor_ok<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    arbor(args).assert_ok()
}

/// Runs `arbor --repo REPO ARGS...`.
pub fn arbor_repo<I, S>(repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = arbor_command();
    c.arg("--repo").arg(repo);
    run_with(c, args)
}

#[track_caller]
pub fn arbor_repo_ok<I, S>(repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    arbor_repo(repo, args).assert_ok()
}

/// Runs `ostree ARGS...`.
pub fn ostree<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with(Command::new(OSTREE), args)
}

#[track_caller]
pub fn ostree_ok<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ostree(args).assert_ok()
}

/// Runs `ostree --repo=REPO ARGS...`.
pub fn ostree_repo<I, S>(repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(OSTREE);
    let mut r = OsString::from("--repo=");
    r.push(repo.as_os_str());
    c.arg(r);
    run_with(c, args)
}

#[track_caller]
pub fn ostree_repo_ok<I, S>(repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ostree_repo(repo, args).assert_ok()
}

// ---------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------

/// A fresh temporary directory (under $TMPDIR, normally /tmp).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("arbor-it-")
        .tempdir()
        .expect("create temp dir")
}

/// A fresh temporary directory named after this process
/// (`arbor-it-KIND-PID-XXXX`), for state that may outlive the test that
/// made it (a server kept in a static is never dropped): directories of
/// the same kind left by finished processes are removed first.
pub fn pid_tempdir(kind: &str) -> tempfile::TempDir {
    let tmp = std::env::temp_dir();
    let prefix = format!("arbor-it-{kind}-");
    if let Ok(entries) = fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = fname.strip_prefix(&prefix)
                && let Some((pid, _)) = rest.split_once('-')
                && !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir()
        .expect("create temp dir")
}

/// Repository modes shared by ostree and arbor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bare,
    BareUser,
    BareUserOnly,
    Archive,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Bare,
        Mode::BareUser,
        Mode::BareUserOnly,
        Mode::Archive,
    ];

    /// Position in [`Mode::ALL`] (for per-mode shared state).
    pub fn index(self) -> usize {
        match self {
            Mode::Bare => 0,
            Mode::BareUser => 1,
            Mode::BareUserOnly => 2,
            Mode::Archive => 3,
        }
    }

    /// Name accepted by `init --mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::BareUser => "bare-user",
            Mode::BareUserOnly => "bare-user-only",
            Mode::Archive => "archive",
        }
    }

    /// What `ostree init` writes as `core.mode` in the config.
    pub fn config_name(self) -> &'static str {
        match self {
            Mode::Archive => "archive-z2",
            m => m.name(),
        }
    }

    /// Extension of content objects in this mode.
    pub fn content_ext(self) -> &'static str {
        match self {
            Mode::Archive => "filez",
            _ => "file",
        }
    }
}

pub fn ostree_init(repo: &Path, mode: Mode) {
    ostree_repo_ok(repo, ["init", &format!("--mode={}", mode.name())]);
}

pub fn arbor_init(repo: &Path, mode: Mode) {
    arbor_repo_ok(repo, ["init", "--mode", mode.name()]);
}

/// Options shared by `ostree commit` and `arbor commit`, rendered into each
/// tool's syntax so that both get exactly the same request.
#[derive(Clone, Debug, Default)]
pub struct CommitOpts {
    pub subject: String,
    pub body: String,
    pub timestamp: u64,
    /// `Some("none")` or `Some(checksum)`; `None` = default (current ref).
    pub parent: Option<String>,
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    pub metadata: Vec<(String, String)>,
}

impl CommitOpts {
    pub fn new(subject: &str, body: &str, timestamp: u64) -> Self {
        CommitOpts {
            subject: subject.to_string(),
            body: body.to_string(),
            timestamp,
            ..Default::default()
        }
    }

    pub fn parent(mut self, p: &str) -> Self {
        self.parent = Some(p.to_string());
        self
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner_uid = Some(uid);
        self.owner_gid = Some(gid);
        self
    }

    pub fn meta(mut self, k: &str, v: &str) -> Self {
        self.metadata.push((k.to_string(), v.to_string()));
        self
    }

    /// Arguments for `ostree --repo=R ...`.
    pub fn ostree_args(&self, dir: &Path, branch: &str) -> Vec<OsString> {
        let mut tree = OsString::from("--tree=dir=");
        tree.push(dir.as_os_str());
        let mut a: Vec<OsString> = vec![
            "commit".into(),
            "--fsync=false".into(),
            format!("--branch={branch}").into(),
            tree,
            format!("--subject={}", self.subject).into(),
            format!("--body={}", self.body).into(),
            format!("--timestamp=@{}", self.timestamp).into(),
        ];
        if let Some(p) = &self.parent {
            a.push(format!("--parent={p}").into());
        }
        if let Some(u) = self.owner_uid {
            a.push(format!("--owner-uid={u}").into());
        }
        if let Some(g) = self.owner_gid {
            a.push(format!("--owner-gid={g}").into());
        }
        for (k, v) in &self.metadata {
            a.push(format!("--add-metadata-string={k}={v}").into());
        }
        a
    }

    /// Arguments for `arbor --repo R ...` (spec syntax).
    pub fn arbor_args(&self, dir: &Path, branch: &str) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "commit".into(),
            dir.as_os_str().to_owned(),
            "--branch".into(),
            branch.into(),
            "--subject".into(),
            self.subject.clone().into(),
            "--body".into(),
            self.body.clone().into(),
            "--timestamp".into(),
            self.timestamp.to_string().into(),
        ];
        if let Some(p) = &self.parent {
            a.push("--parent".into());
            a.push(p.into());
        }
        if let Some(u) = self.owner_uid {
            a.push("--owner-uid".into());
            a.push(u.to_string().into());
        }
        if let Some(g) = self.owner_gid {
            a.push("--owner-gid".into());
            a.push(g.to_string().into());
        }
        for (k, v) in &self.metadata {
            a.push("--add-metadata-string".into());
            a.push(format!("{k}={v}").into());
        }
        a
    }
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Asserts that stdout is exactly one 64-hex checksum plus newline; returns it.
#[track_caller]
pub fn expect_checksum_line(run: &Run) -> String {
    let out = run.stdout_str();
    let csum = out.strip_suffix('\n').unwrap_or("");
    assert!(
        is_hex64(csum),
        "expected stdout to be a 64-hex checksum followed by a newline\n{}",
        run.describe()
    );
    csum.to_string()
}

/// `ostree commit` with the given options; returns the commit checksum.
#[track_caller]
pub fn ostree_commit(repo: &Path, dir: &Path, branch: &str, opts: &CommitOpts) -> String {
    let r = ostree_repo_ok(repo, opts.ostree_args(dir, branch));
    let out = r.stdout_str();
    let c = out.trim();
    assert!(
        is_hex64(c),
        "unexpected ostree commit output\n{}",
        r.describe()
    );
    c.to_string()
}

/// `arbor commit` with the given options; returns the commit checksum
/// (after checking the output format).
#[track_caller]
pub fn arbor_commit(repo: &Path, dir: &Path, branch: &str, opts: &CommitOpts) -> String {
    let r = arbor_repo_ok(repo, opts.arbor_args(dir, branch));
    expect_checksum_line(&r)
}

/// `ostree rev-parse REV`.
#[track_caller]
pub fn ostree_rev_parse(repo: &Path, rev: &str) -> String {
    let r = ostree_repo_ok(repo, ["rev-parse", rev]);
    r.stdout_str().trim().to_string()
}

/// (dirtree, dirmeta) checksums of a directory in a commit, via `ostree ls -C -d`.
#[track_caller]
pub fn dir_checksums(repo: &Path, rev: &str, path: &str) -> (String, String) {
    let r = ostree_repo_ok(repo, ["ls", "-C", "-d", rev, path]);
    let out = r.stdout_str();
    let f: Vec<&str> = out.split_whitespace().collect();
    assert!(
        f.len() >= 7 && f[0].starts_with('d') && is_hex64(f[4]) && is_hex64(f[5]),
        "unexpected `ostree ls -C -d` output\n{}",
        r.describe()
    );
    (f[4].to_string(), f[5].to_string())
}

/// Content checksum of a regular file or symlink in a commit, via `ostree ls -C`.
#[track_caller]
pub fn file_checksum(repo: &Path, rev: &str, path: &str) -> String {
    let r = ostree_repo_ok(repo, ["ls", "-C", rev, path]);
    let out = r.stdout_str();
    let f: Vec<&str> = out.split_whitespace().collect();
    assert!(
        f.len() >= 6 && !f[0].starts_with('d') && is_hex64(f[4]),
        "unexpected `ostree ls -C` output\n{}",
        r.describe()
    );
    f[4].to_string()
}

/// Loose object path `objects/XX/YYYY….EXT`.
pub fn object_path(repo: &Path, csum: &str, ext: &str) -> PathBuf {
    repo.join("objects")
        .join(&csum[..2])
        .join(format!("{}.{ext}", &csum[2..]))
}

/// Writes `data` as the loose metadata object (commit, dirtree, dirmeta:
/// named by the SHA-256 of its bytes) of type `ext` in `repo`, whatever the
/// bytes are; returns its checksum.
pub fn write_metadata_object(repo: &Path, ext: &str, data: &[u8]) -> String {
    let csum = sha256_hex(data);
    let path = object_path(repo, &csum, ext);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    csum
}

/// All loose objects as `XX/rest.ext` strings.
pub fn list_objects(repo: &Path) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let objects = repo.join("objects");
    for d in fs::read_dir(&objects).expect("read objects/") {
        let d = d.unwrap();
        let dname = d.file_name().to_string_lossy().into_owned();
        if d.file_type().unwrap().is_dir() {
            for f in fs::read_dir(d.path()).unwrap() {
                let f = f.unwrap();
                set.insert(format!("{dname}/{}", f.file_name().to_string_lossy()));
            }
        } else {
            set.insert(dname);
        }
    }
    set
}

/// XORs one byte of a file in place (no truncation, permissions ignored: root).
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for corruption: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// `cp -a SRC DST`.
pub fn copy_tree(src: &Path, dst: &Path) {
    let mut c = Command::new("cp");
    c.arg("-a").arg(src).arg(dst);
    run(c).assert_ok();
}

pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    hex(&d)
}

pub fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions.
    unsafe { libc::getegid() }
}

/// A fresh directory for state shared by the tests of one test binary, under
/// cargo's per-target temporary directory (same filesystem as /tmp here).
/// Directories left behind by earlier, finished test processes are removed.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(base).unwrap();
    let prefix = format!("arbor-it-{name}-");
    for e in fs::read_dir(base).unwrap().flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        // Only `PREFIX<pid>`: a longer name (`read-bare-user-<pid>` for
        // prefix `read-bare-`) belongs to another test.
        if let Some(pid) = fname.strip_prefix(&prefix)
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The edge tree, built once per test binary and shared read-only.
pub struct SharedTree {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    pub manifest: String,
}

impl SharedTree {
    /// The tree `build` makes at `path`, with its manifest.
    pub fn build(path: PathBuf, build: impl FnOnce(&Path)) -> SharedTree {
        build(&path);
        let entries = manifest_entries(&path);
        let manifest = render_manifest(&entries);
        SharedTree {
            path,
            entries,
            manifest,
        }
    }
}

pub fn shared_edge_tree() -> &'static SharedTree {
    static TREE: OnceLock<SharedTree> = OnceLock::new();
    TREE.get_or_init(|| SharedTree::build(scratch_dir("edge-tree").join("src"), build_edge_tree))
}

/// A temporary directory next to the shared state (same filesystem as the
/// shared repositories, so hardlinking checkouts work).
pub fn shared_tempdir() -> tempfile::TempDir {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| scratch_dir("tmp"));
    tempfile::Builder::new()
        .prefix("t-")
        .tempdir_in(base)
        .expect("create temp dir")
}

// ---------------------------------------------------------------------------
// Building source trees
// ---------------------------------------------------------------------------

fn ensure_root() {
    assert_eq!(
        euid(),
        0,
        "the arbor integration tests must run as root (they chown files and set trusted.* xattrs)"
    );
}

/// Writes a file and sets its permission bits explicitly (umask-independent).
pub fn write_file(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Creates a directory (and parents) and sets its mode explicitly.
pub fn make_dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// lchown then chmod (chown clears setuid/setgid, so the order matters).
fn own(path: &Path, uid: u32, gid: u32, mode: Option<u32>) {
    lchown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    if let Some(m) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(m)).unwrap();
    }
}

/// Sets an xattr without following symlinks.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    xattr::set(path, name, value)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Size of `big.bin` in the edge tree (8 MiB plus a ragged tail).
pub const BIG_FILE_LEN: usize = 8 * 1024 * 1024 + 4321;
/// Number of files in `many/`.
pub const MANY_FILES: usize = 2000;
/// Depth of the `deep/` chain.
pub const DEEP_LEVELS: usize = 30;

/// Relative path of the leaf file at the bottom of `deep/`.
pub fn deep_leaf_path() -> String {
    let mut p = String::from("deep");
    for i in 1..=DEEP_LEVELS {
        p.push_str(&format!("/l{i:02}"));
    }
    p.push_str("/leaf.txt");
    p
}

/// The ~1000-byte target of `links/long`.
pub fn long_link_target() -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 1000 {
        s.push_str(&format!("segment{i:03}/"));
        i += 1;
    }
    s.push_str("end");
    s
}

/// Builds the edge-case source tree in `dir` (created if needed).
///
/// Contents (paths relative to `dir`):
/// * root: mode 0755, uid/gid 0, xattrs `user.rootattr`
/// * `file_0644.txt` (0644), `file_0600` (0600), `exec_0755` (0755),
///   `file_0640` (0640, owner 0:1000), `readonly_0444` (0444),
///   `setuid_04755` (04755), `setgid_02755` (02755)
/// * `owned_1000` (1000:1000), `owned_1234_5678` (1234:5678, with xattrs)
/// * `xattrs.txt`: user.zeta, user.alpha, user.mid, user.a.b, user.bin
///   (binary value), security.arbortest, trusted.arbortest (set unsorted)
/// * `empty.txt`, `empty_xattr` (empty file, empty-valued xattr)
/// * `sticky_dir/` 01777, `private_dir/` 0700 owned 1234:5678,
///   `setgid_dir/` 02775 owned 0:1000, `xattr_dir/` with xattrs,
///   `empty_dir/`
/// * `links/`: rel, abs, dangling, to_dir, climb, long (~1000 chars),
///   owned_1000 (lchown 1000:1000), sym_xattr (trusted.* xattr on the link),
///   loop (points to itself)
/// * `hardlinks/one` and `hardlinks/two` (same inode)
/// * `unicode/`: `héllo`, `日本/ファイル.txt`, `name with spaces.txt`, `-dash`
/// * `sort/`: files `B _ a é Z z A a.b a-b a_b ab` and dirs `Bdir _dir adir édir`
/// * `big.bin`: BIG_FILE_LEN pseudo-random bytes
/// * `many/f0000`…`f1999`: small files (500 of them duplicate others' content)
/// * `deep/l01/…/l30/leaf.txt`
pub fn build_edge_tree(dir: &Path) {
    build_edge_tree_with(dir, MANY_FILES, BIG_FILE_LEN);
}

/// [`build_edge_tree`] with `many` files in `many/` (0 = no `many/` dir) and
/// a `big.bin` of `big_len` bytes: creating files and hashing/compressing
/// megabytes in debug builds are the expensive parts, so tests that only need
/// the odd cases use smaller numbers.
pub fn build_edge_tree_with(dir: &Path, many: usize, big_len: usize) {
    ensure_root();
    make_dir(dir, 0o755);
    let p = |rel: &str| dir.join(rel);

    // Regular files with assorted modes and owners.
    write_file(&p("file_0644.txt"), b"hello\n", 0o644);
    write_file(&p("file_0600"), b"private content\n", 0o600);
    write_file(&p("exec_0755"), b"#!/bin/sh\necho arbor\n", 0o755);
    write_file(&p("file_0640"), b"group readable\n", 0o640);
    own(&p("file_0640"), 0, 1000, Some(0o640));
    write_file(&p("readonly_0444"), b"read only\n", 0o444);
    write_file(&p("setuid_04755"), b"#!/bin/sh\necho setuid\n", 0o755);
    own(&p("setuid_04755"), 0, 0, Some(0o4755));
    write_file(&p("setgid_02755"), b"#!/bin/sh\necho setgid\n", 0o755);
    own(&p("setgid_02755"), 0, 0, Some(0o2755));
    write_file(&p("owned_1000"), b"owned by 1000\n", 0o644);
    own(&p("owned_1000"), 1000, 1000, Some(0o644));
    write_file(&p("owned_1234_5678"), b"owned by 1234:5678\n", 0o664);
    own(&p("owned_1234_5678"), 1234, 5678, Some(0o664));
    set_xattr(&p("owned_1234_5678"), "user.owner-note", b"odd ids");

    // Xattrs, deliberately set in non-sorted order, names of different lengths.
    write_file(&p("xattrs.txt"), b"file with xattrs\n", 0o644);
    set_xattr(&p("xattrs.txt"), "user.zeta", b"last");
    set_xattr(&p("xattrs.txt"), "user.alpha", b"first");
    set_xattr(&p("xattrs.txt"), "user.mid", b"middle value");
    set_xattr(&p("xattrs.txt"), "user.a.b", b"dotted");
    set_xattr(
        &p("xattrs.txt"),
        "user.bin",
        &[0, 1, 2, 0xff, 0xfe, 0, b'x'],
    );
    set_xattr(&p("xattrs.txt"), "security.arbortest", b"security value");
    set_xattr(&p("xattrs.txt"), "trusted.arbortest", b"trusted value");

    // Empty files.
    write_file(&p("empty.txt"), b"", 0o644);
    write_file(&p("empty_xattr"), b"", 0o644);
    set_xattr(&p("empty_xattr"), "user.empty", b"");
    set_xattr(&p("empty_xattr"), "user.nonempty", b"v");

    // Directories with special modes / owners / xattrs.
    make_dir(&p("sticky_dir"), 0o755);
    write_file(&p("sticky_dir/inside.txt"), b"in sticky dir\n", 0o644);
    own(&p("sticky_dir"), 0, 0, Some(0o1777));
    make_dir(&p("private_dir"), 0o755);
    write_file(&p("private_dir/secret"), b"secret\n", 0o600);
    own(&p("private_dir/secret"), 1234, 5678, Some(0o600));
    own(&p("private_dir"), 1234, 5678, Some(0o700));
    make_dir(&p("setgid_dir"), 0o755);
    write_file(&p("setgid_dir/member.txt"), b"group member\n", 0o664);
    own(&p("setgid_dir/member.txt"), 0, 1000, Some(0o664));
    own(&p("setgid_dir"), 0, 1000, Some(0o2775));
    make_dir(&p("xattr_dir"), 0o755);
    write_file(&p("xattr_dir/plain.txt"), b"plain\n", 0o644);
    set_xattr(&p("xattr_dir"), "user.dir_z", b"zz");
    set_xattr(&p("xattr_dir"), "user.dir_a", b"aa");
    set_xattr(&p("xattr_dir"), "trusted.dir", b"td");
    make_dir(&p("empty_dir"), 0o755);

    // Symlinks.
    make_dir(&p("links"), 0o755);
    symlink("../file_0644.txt", p("links/rel")).unwrap();
    symlink("/etc/hostname", p("links/abs")).unwrap();
    symlink("does/not/exist", p("links/dangling")).unwrap();
    symlink("../sticky_dir", p("links/to_dir")).unwrap();
    symlink("../../../../../../../up/and/away", p("links/climb")).unwrap();
    symlink(long_link_target(), p("links/long")).unwrap();
    symlink("../owned_1000", p("links/owned_1000")).unwrap();
    own(&p("links/owned_1000"), 1000, 1000, None);
    symlink("rel", p("links/sym_xattr")).unwrap();
    // user.* xattrs are not allowed on symlinks; trusted.* is (as root).
    set_xattr(&p("links/sym_xattr"), "trusted.symattr", b"on a link");
    symlink("loop", p("links/loop")).unwrap();

    // Hardlinks.
    make_dir(&p("hardlinks"), 0o755);
    write_file(&p("hardlinks/one"), b"shared inode\n", 0o644);
    fs::hard_link(p("hardlinks/one"), p("hardlinks/two")).unwrap();

    // Unicode and awkward names.
    make_dir(&p("unicode"), 0o755);
    write_file(&p("unicode/héllo"), "bonjour héllo\n".as_bytes(), 0o644);
    make_dir(&p("unicode/日本"), 0o755);
    write_file(
        &p("unicode/日本/ファイル.txt"),
        "日本語の内容\n".as_bytes(),
        0o644,
    );
    write_file(&p("unicode/name with spaces.txt"), b"spaces\n", 0o644);
    write_file(&p("unicode/-dash"), b"leading dash\n", 0o644);

    // Sort order: byte order is B < Z < _ < a < z < é (and A < B).
    make_dir(&p("sort"), 0o755);
    for name in ["B", "_", "a", "é", "Z", "z", "A", "a.b", "a-b", "a_b", "ab"] {
        write_file(
            &p(&format!("sort/{name}")),
            format!("{name}\n").as_bytes(),
            0o644,
        );
    }
    for name in ["Bdir", "_dir", "adir", "édir"] {
        make_dir(&p(&format!("sort/{name}")), 0o755);
        write_file(
            &p(&format!("sort/{name}/x")),
            format!("in {name}\n").as_bytes(),
            0o644,
        );
    }

    // A large pseudo-random file.
    write_file(
        &p("big.bin"),
        &pseudo_random_bytes(big_len, 0x5eed_a4b0_2024_0001),
        0o644,
    );

    // Many small files (f1500.. duplicate the content of f0000..).
    if many > 0 {
        make_dir(&p("many"), 0o755);
    }
    for i in 0..many {
        write_file(
            &p(&format!("many/f{i:04}")),
            format!("small file {}\n", i % 1500).as_bytes(),
            0o644,
        );
    }

    // A deep chain of directories.
    let leaf = deep_leaf_path();
    let leaf_dir = Path::new(&leaf).parent().unwrap().to_path_buf();
    make_dir(&dir.join(&leaf_dir), 0o755);
    write_file(&dir.join(&leaf), b"at the bottom\n", 0o644);

    // Root last.
    set_xattr(dir, "user.rootattr", b"root of the edge tree");
    own(dir, 0, 0, Some(0o755));
}

/// A small tree for tests about commit metadata (fast to commit repeatedly).
pub fn build_small_tree(dir: &Path) {
    ensure_root();
    make_dir(dir, 0o755);
    write_file(&dir.join("README"), b"small tree\n", 0o644);
    write_file(&dir.join("tool"), b"#!/bin/sh\n", 0o755);
    own(&dir.join("tool"), 0, 0, Some(0o4755));
    write_file(&dir.join("user_file"), b"belongs to 1000\n", 0o640);
    own(&dir.join("user_file"), 1000, 1000, Some(0o640));
    set_xattr(&dir.join("user_file"), "user.b", b"2");
    set_xattr(&dir.join("user_file"), "user.a", b"1");
    write_file(&dir.join("empty"), b"", 0o600);
    make_dir(&dir.join("sub"), 0o750);
    write_file(&dir.join("sub/inner.txt"), b"inner\n", 0o644);
    symlink("../README", dir.join("sub/link")).unwrap();
    own(&dir.join("sub"), 1234, 5678, Some(0o750));
    set_xattr(&dir.join("sub"), "user.dirx", b"x");
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

/// One filesystem entry, as recorded by [`manifest_entries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative path bytes ("." for the root).
    pub path: Vec<u8>,
    /// 'd', 'f' (regular), 'l' (symlink) or '?' (anything else).
    pub kind: char,
    /// Full st_mode (type + permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    /// Regular files only.
    pub sha256: Option<String>,
    /// Symlinks only.
    pub target: Option<Vec<u8>>,
    /// All xattrs, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{:?} {} {:07o} {}:{}",
            OsStr::from_bytes(&self.path),
            self.kind,
            self.mode,
            self.uid,
            self.gid
        );
        if let Some(size) = self.size {
            s.push_str(&format!(" size={size}"));
        }
        if let Some(h) = &self.sha256 {
            s.push_str(&format!(" sha256={h}"));
        }
        if let Some(t) = &self.target {
            s.push_str(&format!(" -> {:?}", OsStr::from_bytes(t)));
        }
        if !self.xattrs.is_empty() {
            s.push_str(" xattrs=[");
            for (i, (n, v)) in self.xattrs.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&format!("{:?}={}", OsStr::from_bytes(n), hex(v)));
            }
            s.push(']');
        }
        s
    }
}

fn entry_for(path: &Path, rel: Vec<u8>) -> Entry {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else {
        '?'
    };
    let (size, sha256) = if kind == 'f' {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        (Some(md.len()), Some(sha256_hex(&data)))
    } else {
        (None, None)
    };
    let target = if kind == 'l' {
        Some(fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec())
    } else {
        None
    };
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if kind != '?' {
        // A filesystem without xattr support (unionfs-fuse as Debian
        // builds it) has none to show.
        let names = match xattr::list(path) {
            Ok(names) => names.collect(),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
            Err(e) => panic!("listxattr {}: {e}", path.display()),
        };
        for name in names {
            let value = xattr::get(path, &name)
                .unwrap_or_else(|e| panic!("getxattr {:?} {}: {e}", name, path.display()))
                .unwrap_or_default();
            xattrs.push((name.as_bytes().to_vec(), value));
        }
    }
    xattrs.sort();
    Entry {
        path: rel,
        kind,
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size,
        sha256,
        target,
        xattrs,
    }
}

fn walk(dir: &Path, rel: &[u8], out: &mut Vec<Entry>) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display())) {
        let e = e.unwrap();
        let name = e.file_name();
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(name.as_bytes());
        let path = e.path();
        let entry = entry_for(&path, r.clone());
        let is_dir = entry.kind == 'd';
        out.push(entry);
        if is_dir {
            walk(&path, &r, out);
        }
    }
}

/// Every entry below `dir` (including `dir` itself as "."), sorted by path
/// bytes. Never follows symlinks.
pub fn manifest_entries(dir: &Path) -> Vec<Entry> {
    let mut out = vec![entry_for(dir, b".".to_vec())];
    walk(dir, b"", &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

pub fn render_manifest(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str(&e.render());
        s.push('\n');
    }
    s
}

/// One line per path (sorted): path, type, full mode (octal), uid:gid, size and
/// sha256 of regular files, symlink target, and all xattrs sorted by name with
/// hex values. Timestamps, link counts and directory sizes are excluded.
pub fn manifest(dir: &Path) -> String {
    render_manifest(&manifest_entries(dir))
}

/// Regular files of a tree as absolute commit paths ("/a/b").
pub fn regular_file_paths(dir: &Path) -> Vec<String> {
    manifest_entries(dir)
        .into_iter()
        .filter(|e| e.kind == 'f')
        .map(|e| format!("/{}", String::from_utf8(e.path).expect("UTF-8 path")))
        .collect()
}

/// What `ostree checkout -U` of a bare-user-only commit of `src` produces
/// (ostree 2022.7, verified): the commit canonicalises uid/gid to 0, drops all
/// xattrs, and masks regular files and directories with 0755 (so setuid,
/// setgid, sticky and group/world write bits go away; symlinks keep 0777);
/// the user-mode checkout then creates everything as the current user and
/// keeps the masked modes (regular files are hardlinks to the objects).
pub fn expected_bare_user_only_checkout(src: &[Entry]) -> Vec<Entry> {
    without_empty_xattrs(src)
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.uid = euid();
            e.gid = egid();
            e.xattrs.clear();
            match e.kind {
                'f' | 'd' => e.mode &= libc::S_IFMT | 0o755,
                _ => {}
            }
            e
        })
        .collect()
}

/// ostree 2022.7 silently ignores xattrs whose value is empty when it reads a
/// tree (verified: `setfattr -n user.empty f` is not in `ostree ls -X`, and
/// the checksum is that of the file without it). This is what a checkout of
/// such a tree reproduces.
pub fn without_empty_xattrs(src: &[Entry]) -> Vec<Entry> {
    src.iter()
        .map(|e| {
            let mut e = e.clone();
            e.xattrs.retain(|(_, v)| !v.is_empty());
            e
        })
        .collect()
}

/// Asserts two manifests are equal, printing only the differing lines.
#[track_caller]
pub fn assert_manifest_eq(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let a: BTreeSet<&str> = actual.lines().collect();
    let e: BTreeSet<&str> = expected.lines().collect();
    let mut msg = format!("{what}: manifests differ\n");
    let missing: Vec<&&str> = e.difference(&a).collect();
    let extra: Vec<&&str> = a.difference(&e).collect();
    for l in missing.iter().take(40) {
        msg.push_str(&format!("  expected: {l}\n"));
    }
    for l in extra.iter().take(40) {
        msg.push_str(&format!("  actual:   {l}\n"));
    }
    msg.push_str(&format!(
        "  ({} expected lines missing, {} unexpected lines)\n",
        missing.len(),
        extra.len()
    ));
    panic!("{msg}");
}

/// Asserts two byte strings are equal, showing a readable diff of lines.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let a = String::from_utf8_lossy(actual);
    let e = String::from_utf8_lossy(expected);
    let al: Vec<&str> = a.lines().collect();
    let el: Vec<&str> = e.lines().collect();
    let first = al
        .iter()
        .zip(el.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(al.len().min(el.len()));
    let mut msg = format!(
        "{what}: outputs differ ({} vs {} bytes, {} vs {} lines); first difference at line {}\n",
        actual.len(),
        expected.len(),
        al.len(),
        el.len(),
        first + 1
    );
    for i in first.saturating_sub(2)..(first + 5).min(al.len().max(el.len())) {
        msg.push_str(&format!(
            "  line {}:\n    expected: {:?}\n    actual:   {:?}\n",
            i + 1,
            el.get(i).copied().unwrap_or("<none>"),
            al.get(i).copied().unwrap_or("<none>")
        ));
    }
    panic!("{msg}");
}

// ---------------------------------------------------------------------------
// The checked-in fixture
// ---------------------------------------------------------------------------

/// Path of the shipped archive-mode fixture repository.
pub fn fixture_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archive-repo")
}

/// Copies the fixture into `dst` and recreates the empty directories an ostree
/// repository has but git does not track.
pub fn copy_fixture(dst: &Path) {
    copy_tree(&fixture_repo(), dst);
    for d in [
        "tmp",
        "extensions",
        "state",
        "refs/heads",
        "refs/remotes",
        "refs/mirrors",
        "objects",
    ] {
        fs::create_dir_all(dst.join(d)).unwrap();
    }
}

/// Expands `per_mode!(f)` (or `per_mode!(f, args…)`) into a module `f`
/// with one test per repository mode, each calling `f(Mode::…, args…)`.
#[macro_export]
macro_rules! per_mode {
    ($name:ident $(, $arg:expr)*) => {
        mod $name {
            use super::*;
            #[test]
            fn bare() {
                super::$name(Mode::Bare $(, $arg)*)
            }
            #[test]
            fn bare_user() {
                super::$name(Mode::BareUser $(, $arg)*)
            }
            #[test]
            fn bare_user_only() {
                super::$name(Mode::BareUserOnly $(, $arg)*)
            }
            #[test]
            fn archive() {
                super::$name(Mode::Archive $(, $arg)*)
            }
        }
    };
}

/// Takes an OFD lock on `f`, as libostree locks a repository's `.lock`.
pub fn ofd_lock(f: &fs::File, exclusive: bool) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain fcntl on an open descriptor with an initialised flock.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        assert_eq!(
            libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl),
            0,
            "taking the test lock: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Holds `repo`'s lock (as another arbor or ostree process would) until
/// the returned file is dropped.
pub fn lock_repo(repo: &Path, exclusive: bool) -> fs::File {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(repo.join(".lock"))
        .unwrap();
    ofd_lock(&f, exclusive);
    f
}
