//! `arbor stage` end to end, Baserock style: 50 "chunk" commits are stacked
//! into one writable root, an integration script runs in it, and the result
//! is committed as a system branch. The expected tree is what the real
//! `ostree checkout --union --whiteouts` of the same chunks gives, with the
//! same script run on it. Every backend (kernel overlay, fuse-overlayfs,
//! unionfs-fuse, copy) must give exactly the same result, and the store's
//! objects and the shared checkout cache must never be written through.
//!
//! Needs root (as every integration test here), /dev/fuse, fuse-overlayfs
//! and unionfs-fuse.

mod common;
#[path = "common/stage.rs"]
mod stage_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use stage_support::*;

const CHUNKS: usize = 50;

// ---------------------------------------------------------------------------
// The chunks
// ---------------------------------------------------------------------------

/// Directories every chunk has; identical metadata everywhere (0755
/// root:root, no xattrs) because `ostree checkout --union` keeps the first
/// layer's directory metadata while the stage keeps the top-most one's.
const SHARED_DIRS: [&str; 6] = [
    "etc",
    "usr",
    "usr/bin",
    "usr/lib",
    "usr/share",
    "usr/share/doc",
];

/// Chunk `n` (1-based) in `dir`:
/// * every chunk: `usr/bin/toolNN` (0755), `usr/lib/chunkNN/{libNN.so,data.txt}`,
///   `etc/chunkNN.conf`, `usr/share/doc/chunkNN.txt` (not chunk 30)
/// * overlaps: `etc/shared.conf` in every 5th chunk (chunk 45's copy has an
///   xattr, chunk 50's has none and wins), `usr/bin/common` in every 7th
///   with a different mode each time, `usr/lib/thing` a file in 25 and a
///   symlink in 35
/// * 3: setuid `usr/bin/suid-helper` (04755); 4: setgid `usr/bin/sgid-helper`
///   (02755) and symlink `usr/bin/tool04-link`; 6: symlink `usr/lib/libfoo.so`
/// * 8: user.* xattrs on `usr/lib/chunk08/lib08.so`
/// * 10: `usr/lib/chunk10/owned.dat` owned 1000:1001 (0640); 12: directory
///   `var/lib/chunk12` 0750 owned 1234:5678 with a 0600 file of the same owner
/// * whiteouts: 20 deletes `usr/bin/tool05` (40 brings it back with other
///   content), 21 deletes the directory `usr/lib/chunk11`, 22 deletes a path
///   nothing has
/// * 30: `usr/share/doc/.wh..wh..opq` (hides chunks 1-29's docs) plus README
fn build_chunk(dir: &Path, n: usize, xattrs: bool) {
    let nn = format!("{n:02}");
    let p = |rel: &str| dir.join(rel);
    make_dir(dir, 0o755);
    for d in SHARED_DIRS {
        make_dir(&p(d), 0o755);
    }
    write_file(
        &p(&format!("usr/bin/tool{nn}")),
        format!("#!/bin/sh\necho tool {nn}\n").as_bytes(),
        0o755,
    );
    make_dir(&p(&format!("usr/lib/chunk{nn}")), 0o755);
    write_file(
        &p(&format!("usr/lib/chunk{nn}/lib{nn}.so")),
        &pseudo_random_bytes(1000 + n * 37, n as u64),
        0o644,
    );
    write_file(
        &p(&format!("usr/lib/chunk{nn}/data.txt")),
        format!("data of chunk {nn}\n").as_bytes(),
        0o644,
    );
    write_file(
        &p(&format!("etc/chunk{nn}.conf")),
        format!("setting={nn}\n").as_bytes(),
        0o644,
    );
    if n == 30 {
        write_file(&p("usr/share/doc/.wh..wh..opq"), b"", 0o644);
        write_file(&p("usr/share/doc/README"), b"docs start over here\n", 0o644);
    } else {
        write_file(
            &p(&format!("usr/share/doc/chunk{nn}.txt")),
            format!("doc of chunk {nn}\n").as_bytes(),
            0o644,
        );
    }
    if n.is_multiple_of(5) {
        write_file(
            &p("etc/shared.conf"),
            format!("shared from chunk {nn}\n").as_bytes(),
            0o644,
        );
        if n == 45 && xattrs {
            set_xattr(&p("etc/shared.conf"), "user.from", b"45");
        }
    }
    if n.is_multiple_of(7) {
        let mode = [0o755, 0o644, 0o700][(n / 7) % 3];
        write_file(
            &p("usr/bin/common"),
            format!("common as of chunk {nn}\n").as_bytes(),
            mode,
        );
    }
    match n {
        3 => {
            write_file(&p("usr/bin/suid-helper"), b"#!/bin/sh\nid\n", 0o755);
            chown_mode(&p("usr/bin/suid-helper"), 0, 0, 0o4755);
        }
        4 => {
            write_file(&p("usr/bin/sgid-helper"), b"#!/bin/sh\nid -g\n", 0o755);
            chown_mode(&p("usr/bin/sgid-helper"), 0, 0, 0o2755);
            symlink("tool04", p("usr/bin/tool04-link")).unwrap();
        }
        6 => symlink("chunk06/lib06.so", p("usr/lib/libfoo.so")).unwrap(),
        8 if xattrs => {
            set_xattr(&p("usr/lib/chunk08/lib08.so"), "user.note", b"chunk 8");
            set_xattr(&p("usr/lib/chunk08/lib08.so"), "user.abi", &[1, 0, 2]);
        }
        10 => {
            write_file(&p("usr/lib/chunk10/owned.dat"), b"not root's\n", 0o640);
            chown_mode(&p("usr/lib/chunk10/owned.dat"), 1000, 1001, 0o640);
        }
        12 => {
            make_dir(&p("var/lib/chunk12"), 0o755);
            make_dir(&p("var"), 0o755);
            make_dir(&p("var/lib"), 0o755);
            write_file(&p("var/lib/chunk12/state"), b"state\n", 0o600);
            chown_mode(&p("var/lib/chunk12/state"), 1234, 5678, 0o600);
            chown_mode(&p("var/lib/chunk12"), 1234, 5678, 0o750);
        }
        20 => write_file(&p("usr/bin/.wh.tool05"), b"", 0o644),
        21 => write_file(&p("usr/lib/.wh.chunk11"), b"", 0o644),
        22 => write_file(&p("etc/.wh.never-existed"), b"", 0o644),
        25 => write_file(&p("usr/lib/thing"), b"a file for now\n", 0o644),
        35 => symlink("chunk35/lib35.so", p("usr/lib/thing")).unwrap(),
        40 => write_file(&p("usr/bin/tool05"), b"#!/bin/sh\necho reborn\n", 0o755),
        _ => {}
    }
    chown_mode(dir, 0, 0, 0o755);
}

/// The integration step, run with the root as working directory (relative
/// paths only). Every new entry gets an explicit mode so umask plays no part.
const INTEGRATION: &str = r#"set -eu
printf 'integrated\n' > etc/integration.conf
chmod 0644 etc/integration.conf
mkdir -p opt/app/data
chmod 0755 opt opt/app
chmod 0750 opt/app/data
printf 'payload\n' > opt/app/data/payload.bin
chmod 0600 opt/app/data/payload.bin
printf 'appended line\n' >> etc/chunk03.conf
printf 'more\n' >> usr/lib/chunk08/lib08.so
printf 'more\n' >> usr/lib/chunk10/owned.dat
chmod 0700 usr/bin/tool09
chown 4321:4322 usr/lib/chunk18/data.txt
rm usr/bin/tool12
rm etc/shared.conf
rm -rf usr/lib/chunk15
rm -rf usr/lib/chunk16
mkdir usr/lib/chunk16
chmod 0755 usr/lib/chunk16
printf 'recreated\n' > usr/lib/chunk16/fresh.txt
chmod 0644 usr/lib/chunk16/fresh.txt
ln -s ../lib/chunk02/lib02.so usr/bin/lib02-link
printf 'added later\n' > usr/lib/chunk17/added.txt
chmod 0644 usr/lib/chunk17/added.txt
"#;

/// A further change, committed on top of the integrated tree.
const SECOND_CHANGE: &str =
    "printf 'two\\n' > etc/second.conf && chmod 0644 etc/second.conf && rm usr/bin/tool01";

/// Built once per test binary: the chunk sources, a template store with
/// the 50 chunk commits, and the expected manifests.
struct Chunks {
    /// An arbor (bare) store holding `chunk/01`…`chunk/50`; copied per test.
    template: PathBuf,
    /// Commit checksums, chunk 1 first.
    commits: Vec<String>,
    /// The union of the chunks (whiteouts applied), before integration.
    base: String,
    /// The same after the integration script.
    expect: String,
    /// And after [`SECOND_CHANGE`].
    expect2: String,
}

fn chunk_ref(n: usize) -> String {
    format!("chunk/{n:02}")
}

fn chunks() -> &'static Chunks {
    chunks_with(true)
}

/// The chunks a backend can be tested with: unionfs-fuse as built here has
/// no xattr support, and arbor refuses it layers with xattrs (see
/// `unionfs_refuses_layers_with_xattrs`), so its runs use chunks without.
fn chunks_for(backend: &str) -> &'static Chunks {
    chunks_with(backend != "unionfs")
}

fn chunks_with(xattrs: bool) -> &'static Chunks {
    static WITH: OnceLock<Chunks> = OnceLock::new();
    static WITHOUT: OnceLock<Chunks> = OnceLock::new();
    let cell = if xattrs { &WITH } else { &WITHOUT };
    cell.get_or_init(|| {
        let scratch = scratch_dir(if xattrs {
            "stage-build"
        } else {
            "stage-build-plain"
        });
        let template = scratch.join("template");
        arbor_init(&template, Mode::Bare);
        let mut commits = Vec::new();
        for n in 1..=CHUNKS {
            let src = scratch.join(format!("src/chunk{n:02}"));
            build_chunk(&src, n, xattrs);
            let opts = CommitOpts::new(&format!("chunk {n}"), "", 1_700_000_000 + n as u64);
            commits.push(ostree_commit(&template, &src, &chunk_ref(n), &opts));
        }
        // --force-copy: the integration script must not write through
        // hardlinks into the template's objects.
        let expect_dir = scratch.join("expect");
        for n in 1..=CHUNKS {
            let mut args: Vec<std::ffi::OsString> = vec![
                "checkout".into(),
                "--union".into(),
                "--whiteouts".into(),
                "--force-copy".into(),
                chunk_ref(n).into(),
            ];
            args.push(expect_dir.clone().into_os_string());
            ostree_repo_ok(&template, args);
        }
        let base = manifest(&expect_dir);
        // Sanity of the expectation itself (ostree's whiteout handling).
        for (path, present) in [
            ("usr/bin/tool05", true),
            ("usr/bin/.wh.tool05", false),
            ("usr/lib/chunk11", false),
            ("usr/share/doc/chunk29.txt", false),
            ("usr/share/doc/chunk31.txt", true),
            ("usr/share/doc/README", true),
            ("usr/share/doc/.wh..wh..opq", false),
        ] {
            assert_eq!(
                expect_dir.join(path).symlink_metadata().is_ok(),
                present,
                "expected tree: {path}"
            );
        }
        let mut c = Command::new("sh");
        c.args(["-c", INTEGRATION]).current_dir(&expect_dir);
        run(c).assert_ok();
        let expect = manifest(&expect_dir);
        let mut c = Command::new("sh");
        c.args(["-c", SECOND_CHANGE]).current_dir(&expect_dir);
        run(c).assert_ok();
        let expect2 = manifest(&expect_dir);
        Chunks {
            template,
            commits,
            base,
            expect,
            expect2,
        }
    })
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A private store (see [`PrivateStore`]) holding `chunks`.
struct Fixture {
    store: PrivateStore,
    /// The chunks the store holds.
    chunks: &'static Chunks,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(chunks())
    }

    /// A store with the chunks `backend` is tested with.
    fn for_backend(backend: &str) -> Fixture {
        Fixture::with(chunks_for(backend))
    }

    fn with(c: &'static Chunks) -> Fixture {
        Fixture {
            store: PrivateStore::copy_of(&c.template),
            chunks: c,
        }
    }
}

impl std::ops::Deref for Fixture {
    type Target = PrivateStore;
    fn deref(&self) -> &PrivateStore {
        &self.store
    }
}

#[track_caller]
/// `state` `mounted` means "usable": a copy has no mount and lists as
/// `ready`.
fn assert_listed(repo: &Path, name: &str, backend: &str, layers: usize, state: &str) {
    let state = if backend == "copy" && state == "mounted" {
        "ready"
    } else {
        state
    };
    let row = list_row(repo, name).unwrap_or_else(|| {
        panic!(
            "stage {name} not in `stage list`\n{}",
            arbor_repo(repo, ["stage", "list"]).describe()
        )
    });
    assert_eq!(
        (
            row.backend.as_str(),
            row.layers.as_str(),
            row.state.as_str()
        ),
        (backend, layers.to_string().as_str(), state),
        "`stage list` row for {name}: {row:?}"
    );
}

/// `stage create NAME REVS... [--backend B] [--workdir W]`; returns the run.
fn stage_create(
    repo: &Path,
    name: &str,
    revs: &[String],
    backend: Option<&str>,
    workdir: Option<&Path>,
) -> Run {
    let mut c = arbor_command();
    c.arg("--repo").arg(repo).args(["stage", "create", name]);
    c.args(revs);
    if let Some(b) = backend {
        c.args(["--backend", b]);
    }
    if let Some(w) = workdir {
        c.arg("--workdir").arg(w);
    }
    run(c)
}

/// Checks `stage create` printed exactly `root` as one line.
#[track_caller]
fn assert_prints_root(r: &Run, root: &Path) {
    assert_eq!(
        r.stdout,
        format!("{}\n", root.display()).into_bytes(),
        "`stage create` must print the root path as one line\n{}",
        r.describe()
    );
}

/// Whether `text` names `backend` (for "overlay": not merely as part of
/// "fuse-overlayfs").
fn names_backend(text: &str, backend: &str) -> bool {
    if backend != "overlay" {
        return text.contains(backend);
    }
    text.match_indices("overlay")
        .any(|(i, _)| !text[..i].ends_with("fuse-"))
}

fn all_refs() -> Vec<String> {
    (1..=CHUNKS).map(chunk_ref).collect()
}

/// `ostree checkout REV OUT` (hardlinked; only read afterwards).
#[track_caller]
fn ostree_checkout(repo: &Path, rev: &str, out: &Path) {
    let args: Vec<std::ffi::OsString> = vec!["checkout".into(), rev.into(), out.into()];
    ostree_repo_ok(repo, args);
}

/// Names of the checkout cache's entries that are commit checksums.
fn cache_entries(f: &Fixture) -> BTreeSet<String> {
    let Ok(rd) = fs::read_dir(f.cache_dir()) else {
        return BTreeSet::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_hex64(n))
        .collect()
}

/// The cache entries of the chunks whose files the integration script
/// changed (through the stage) still hold the original content and mode.
#[track_caller]
fn assert_cache_untouched(f: &Fixture) {
    let c = f.chunks;
    for (n, rel, content, mode, owner) in [
        (
            3,
            "etc/chunk03.conf",
            b"setting=03\n".to_vec(),
            0o100644,
            (0, 0),
        ),
        (
            9,
            "usr/bin/tool09",
            b"#!/bin/sh\necho tool 09\n".to_vec(),
            0o100755,
            (0, 0),
        ),
        (
            18,
            "usr/lib/chunk18/data.txt",
            b"data of chunk 18\n".to_vec(),
            0o100644,
            (0, 0),
        ),
        (
            10,
            "usr/lib/chunk10/owned.dat",
            b"not root's\n".to_vec(),
            0o100640,
            (1000, 1001),
        ),
        (
            12,
            "usr/bin/tool12",
            b"#!/bin/sh\necho tool 12\n".to_vec(),
            0o100755,
            (0, 0),
        ),
        (
            15,
            "usr/lib/chunk15/data.txt",
            b"data of chunk 15\n".to_vec(),
            0o100644,
            (0, 0),
        ),
    ] {
        let p = f.cache_dir().join(&c.commits[n - 1]).join(rel);
        let md = fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("cache entry of chunk {n}: {}: {e}", p.display()));
        assert_eq!(
            fs::read(&p).unwrap(),
            content,
            "{}: content changed",
            p.display()
        );
        assert_eq!(md.mode(), mode, "{}: mode changed", p.display());
        assert_eq!(
            (md.uid(), md.gid()),
            owner,
            "{}: owner changed",
            p.display()
        );
    }
    let p = f
        .cache_dir()
        .join(&c.commits[7])
        .join("usr/lib/chunk08/lib08.so");
    assert_eq!(
        fs::read(&p).unwrap(),
        pseudo_random_bytes(1000 + 8 * 37, 8),
        "{}: content changed",
        p.display()
    );
}

#[track_caller]
fn destroy_and_check_clean(f: &Fixture, name: &str, extra_base: Option<&Path>) {
    let r = arbor_repo(&f.repo, ["stage", "destroy", name]).assert_ok();
    // Only the roots of stages still listed may remain mounted.
    let live: Vec<PathBuf> = stage_list(&f.repo)
        .iter()
        .filter(|row| row.name != name)
        .map(|row| {
            let p = arbor_repo_ok(&f.repo, ["stage", "path", &row.name]);
            PathBuf::from(p.stdout_str().trim_end_matches('\n'))
        })
        .collect();
    let left: Vec<PathBuf> = mounts_under(&f.base)
        .into_iter()
        .filter(|m| !live.contains(m))
        .collect();
    assert!(
        left.is_empty(),
        "after destroy of {name}: still mounted: {left:?}\n{}",
        r.describe()
    );
    if let Some(b) = extra_base {
        assert_nothing_mounted(b, "after destroy (workdir)");
    }
    assert!(
        !f.stage_dir(name).exists(),
        "stage dir {} still exists after destroy\n{}",
        f.stage_dir(name).display(),
        r.describe()
    );
    assert_eq!(
        list_row(&f.repo, name),
        None,
        "destroyed stage still listed"
    );
    arbor_repo(&f.repo, ["stage", "path", name]).assert_clean_failure();
    arbor_repo(&f.repo, ["stage", "destroy", name]).assert_clean_failure();
}

/// Collects failed checks so that one run reports every difference (of a
/// backend, say), not just the first; `finish` panics with all of them.
#[derive(Default)]
struct Soft(Vec<String>);

impl Soft {
    fn check(&mut self, f: impl FnOnce()) {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".into());
            self.0.push(msg);
        }
    }

    #[track_caller]
    fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} check(s) failed:\n\n{}",
                self.0.len(),
                self.0.join("\n\n")
            );
        }
    }
}

/// Compares a merged view with an expected manifest.
#[track_caller]
fn assert_view_eq(root: &Path, expected: &str, what: &str) {
    assert_manifest_eq(&manifest(root), expected, what);
}

// ---------------------------------------------------------------------------
// The full cycle, per backend
// ---------------------------------------------------------------------------

/// Create (50 layers) → check merged view → exec (exit code, cwd,
/// integration) → commit twice → fsck → destroy, on one backend.
/// Differences in views and trees are collected and reported together.
fn full_cycle(backend: &str) {
    let c = chunks_for(backend);
    let f = Fixture::for_backend(backend);
    let mut soft = Soft::default();
    let before = object_snapshot(&f.repo);
    let name = format!("sys-{backend}");
    let root = f.default_root(&name);

    let r = stage_create(&f.repo, &name, &all_refs(), Some(backend), None).assert_ok();
    assert_prints_root(&r, &root);
    soft.check(|| {
        assert!(
            names_backend(&r.stderr_str(), backend),
            "stderr of `stage create` should name the backend {backend}\n{}",
            r.describe()
        )
    });
    let p = arbor_repo_ok(&f.repo, ["stage", "path", &name]);
    assert_eq!(
        p.stdout_str(),
        format!("{}\n", root.display()),
        "{}",
        p.describe()
    );
    soft.check(|| assert_listed(&f.repo, &name, backend, CHUNKS, "mounted"));
    if backend != "copy" {
        assert!(
            mounts_under(&f.base).contains(&root),
            "{backend}: {} is not a mount point",
            root.display()
        );
    }

    // The merged view is the union of the chunks, later chunks winning.
    soft.check(|| {
        assert_view_eq(
            &root,
            &c.base,
            &format!("{backend}: merged view of 50 chunks"),
        )
    });

    // One cache entry per chunk commit; none for a copy, which is checked
    // out from the merged tree.
    let expected_cache: BTreeSet<String> = if backend == "copy" {
        BTreeSet::new()
    } else {
        c.commits.iter().cloned().collect()
    };
    assert_eq!(
        cache_entries(&f),
        expected_cache,
        "{backend}: checkout cache entries"
    );

    // exec: exit code passthrough and working directory.
    let r = exec_sh(&f.repo, &name, "exit 7");
    assert_eq!(
        r.status.code(),
        Some(7),
        "exit code not passed through\n{}",
        r.describe()
    );
    let r = exec_sh(&f.repo, &name, "pwd -P").assert_ok();
    assert!(
        r.stdout_str().lines().any(|l| Path::new(l) == root),
        "exec's working directory must be the root {}\n{}",
        root.display(),
        r.describe()
    );

    // Integration.
    let r = exec_sh(&f.repo, &name, INTEGRATION);
    assert!(
        r.success(),
        "{backend}: integration script failed\n{}",
        r.describe()
    );
    soft.check(|| {
        assert_view_eq(
            &root,
            &c.expect,
            &format!("{backend}: merged view after integration"),
        )
    });
    // (A copy has no cache entries; its writes reaching the store's
    // objects is checked at the end.)
    if backend != "copy" {
        soft.check(|| assert_cache_untouched(&f));
    }

    // Commit.
    let branch = format!("system/{name}");
    let r = arbor_repo_ok(
        &f.repo,
        [
            "stage",
            "commit",
            &name,
            "--branch",
            &branch,
            "--subject",
            "integrated system",
            "--body",
            "built from 50 chunks",
        ],
    );
    let first = expect_checksum_line(&r);
    assert_eq!(ostree_rev_parse(&f.repo, &branch), first);
    ostree_repo_ok(&f.repo, ["fsck"]);
    let out = f.base.join("out1");
    ostree_checkout(&f.repo, &branch, &out);
    soft.check(|| {
        assert_manifest_eq(
            &manifest(&out),
            &c.expect,
            &format!("{backend}: committed tree"),
        )
    });
    let log = ostree_repo_ok(&f.repo, ["log", &branch]);
    assert!(
        log.stdout_str().contains("integrated system")
            && log.stdout_str().contains("built from 50 chunks"),
        "subject or body missing\n{}",
        log.describe()
    );
    let r = ostree_repo(&f.repo, ["rev-parse", &format!("{branch}^")]);
    assert!(
        !r.success(),
        "first commit on a new branch must have no parent\n{}",
        r.describe()
    );

    // A second commit has the first as parent.
    exec_sh(&f.repo, &name, SECOND_CHANGE).assert_ok();
    let r = arbor_repo_ok(&f.repo, ["stage", "commit", &name, "--branch", &branch]);
    let second = expect_checksum_line(&r);
    assert_ne!(first, second);
    assert_eq!(ostree_rev_parse(&f.repo, &branch), second);
    assert_eq!(
        ostree_rev_parse(&f.repo, &format!("{branch}^")),
        first,
        "parent of the second commit"
    );
    let out2 = f.base.join("out2");
    ostree_checkout(&f.repo, &branch, &out2);
    soft.check(|| {
        assert_manifest_eq(
            &manifest(&out2),
            &c.expect2,
            &format!("{backend}: second commit"),
        )
    });
    ostree_repo_ok(&f.repo, ["fsck"]);

    destroy_and_check_clean(&f, &name, None);
    // The cache survives the stage and was never written through.
    assert_eq!(
        cache_entries(&f),
        expected_cache,
        "{backend}: cache after destroy"
    );
    if backend != "copy" {
        soft.check(|| assert_cache_untouched(&f));
    }
    soft.check(|| assert_objects_unchanged(&before, &f.repo));
    ostree_repo_ok(&f.repo, ["fsck"]);
    soft.finish();
}

/// Kernel overlayfs: 50 layers merge like `ostree checkout --union
/// --whiteouts`, integration changes commit exactly, store and cache untouched.
#[test]
fn overlay_full_cycle() {
    full_cycle("overlay");
}

/// fuse-overlayfs: same result as every other backend, no marker files
/// (`.wh.*`, opaque markers) in the commit.
#[test]
fn fuse_overlayfs_full_cycle() {
    full_cycle("fuse-overlayfs");
}

/// unionfs-fuse: same result as every other backend, no `.unionfs-fuse`
/// metadata or `_HIDDEN~` markers in the commit.
#[test]
fn unionfs_full_cycle() {
    full_cycle("unionfs");
}

/// unionfs-fuse as built here can neither show nor keep xattrs, so a
/// stack with xattrs would not give the same view and commit as the other
/// backends: it is refused, naming the file and the xattr, and nothing is
/// left behind.
#[test]
fn unionfs_refuses_layers_with_xattrs() {
    let f = Fixture::new();
    let revs: Vec<String> = (1..=8).map(chunk_ref).collect();
    let r = stage_create(&f.repo, "ux", &revs, Some("unionfs"), None);
    assert!(!r.success(), "{}", r.describe());
    let err = r.stderr_str();
    assert!(
        err.contains("lib08.so") && err.contains("user.") && err.contains("xattr"),
        "{}",
        r.describe()
    );
    assert!(
        !f.stage_dir("ux").exists(),
        "a refused create leaves nothing"
    );
    assert_nothing_mounted(&f.base, "after a refused unionfs create");
}

/// Copy backend: same result as the union filesystems.
#[test]
fn copy_full_cycle() {
    full_cycle("copy");
}

// ---------------------------------------------------------------------------
// Other properties
// ---------------------------------------------------------------------------

/// `--backend auto` as root picks kernel overlay, says so on stderr and in
/// `stage list`, and the view is the right one.
#[test]
fn auto_picks_overlay_as_root() {
    let c = chunks();
    let f = Fixture::new();
    let root = f.default_root("auto");
    let r = stage_create(&f.repo, "auto", &all_refs(), Some("auto"), None).assert_ok();
    assert_prints_root(&r, &root);
    assert!(
        names_backend(&r.stderr_str(), "overlay"),
        "stderr should say that overlay was used\n{}",
        r.describe()
    );
    assert_listed(&f.repo, "auto", "overlay", CHUNKS, "mounted");
    assert!(
        mounts_under(&f.base).contains(&root),
        "{} not mounted",
        root.display()
    );
    assert_manifest_eq(&manifest(&root), &c.base, "auto: merged view");
    destroy_and_check_clean(&f, "auto", None);
}

/// `--workdir DIR`: upper, work and root live under DIR (root = DIR/root),
/// the stage works and commits like any other, and destroy empties DIR.
#[test]
fn workdir_holds_the_writable_parts() {
    let c = chunks();
    let f = Fixture::new();
    let before = object_snapshot(&f.repo);
    let wd = f.base.join("elsewhere");
    fs::create_dir(&wd).unwrap();
    let root = wd.join("root");
    let r = stage_create(&f.repo, "wd", &all_refs(), Some("overlay"), Some(&wd)).assert_ok();
    assert_prints_root(&r, &root);
    let p = arbor_repo_ok(&f.repo, ["stage", "path", "wd"]);
    assert_eq!(
        p.stdout_str(),
        format!("{}\n", root.display()),
        "{}",
        p.describe()
    );
    assert_listed(&f.repo, "wd", "overlay", CHUNKS, "mounted");
    assert!(
        mounts_under(&wd).contains(&root),
        "{} not mounted",
        root.display()
    );
    assert!(
        f.stage_dir("wd").is_dir(),
        "the record stays in the store's stage dir"
    );
    assert!(
        !f.default_root("wd").exists(),
        "no root in the store's stage dir with --workdir"
    );

    let r = exec_sh(&f.repo, "wd", "pwd -P").assert_ok();
    assert!(
        r.stdout_str().lines().any(|l| Path::new(l) == root),
        "{}",
        r.describe()
    );
    exec_sh(&f.repo, "wd", INTEGRATION).assert_ok();
    assert_manifest_eq(
        &manifest(&root),
        &c.expect,
        "workdir: merged view after integration",
    );
    let upper = wd.join("upper");
    assert!(
        upper.join("etc/integration.conf").is_file(),
        "writes must land in DIR/upper"
    );

    let r = arbor_repo_ok(&f.repo, ["stage", "commit", "wd", "--branch", "system/wd"]);
    expect_checksum_line(&r);
    let out = f.base.join("out");
    ostree_checkout(&f.repo, "system/wd", &out);
    assert_manifest_eq(&manifest(&out), &c.expect, "workdir: committed tree");

    destroy_and_check_clean(&f, "wd", Some(&wd));
    let left: Vec<_> = fs::read_dir(&wd)
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.file_name())).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "destroy left {left:?} in the workdir");
    assert_objects_unchanged(&before, &f.repo);
}

/// Two stages on the same commits (one named by refs, one by checksums)
/// share the checkout cache (no new entries) but not their writes; the
/// cache entries keep their original content and modes.
#[test]
fn stages_share_the_cache_but_not_writes() {
    let c = chunks();
    let f = Fixture::new();
    let before = object_snapshot(&f.repo);
    stage_create(&f.repo, "one", &all_refs(), Some("overlay"), None).assert_ok();
    let expected_cache: BTreeSet<String> = c.commits.iter().cloned().collect();
    assert_eq!(
        cache_entries(&f),
        expected_cache,
        "cache after the first stage"
    );
    let sidecars_before: BTreeSet<String> = fs::read_dir(f.cache_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();

    let r = stage_create(&f.repo, "two", &c.commits, Some("overlay"), None).assert_ok();
    assert_prints_root(&r, &f.default_root("two"));
    assert_eq!(
        cache_entries(&f),
        expected_cache,
        "a second stage must not add cache entries"
    );
    let sidecars_after: BTreeSet<String> = fs::read_dir(f.cache_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(
        sidecars_after, sidecars_before,
        "checkout cache changed by the second stage"
    );
    assert_listed(&f.repo, "one", "overlay", CHUNKS, "mounted");
    assert_listed(&f.repo, "two", "overlay", CHUNKS, "mounted");

    exec_sh(&f.repo, "one", INTEGRATION).assert_ok();
    assert_manifest_eq(
        &manifest(&f.default_root("one")),
        &c.expect,
        "stage one after integration",
    );
    assert_manifest_eq(
        &manifest(&f.default_root("two")),
        &c.base,
        "stage two sees stage one's writes",
    );

    exec_sh(
        &f.repo,
        "two",
        "printf 'two only\\n' > etc/two.conf && rm usr/bin/tool02",
    )
    .assert_ok();
    assert_manifest_eq(
        &manifest(&f.default_root("one")),
        &c.expect,
        "stage one sees stage two's writes",
    );
    let two = manifest(&f.default_root("two"));
    assert!(
        two.contains("\"etc/two.conf\" f") && !two.contains("\"usr/bin/tool02\""),
        "{two}"
    );
    assert_cache_untouched(&f);

    destroy_and_check_clean(&f, "one", None);
    // The remaining stage still works after the other one is gone.
    let r = exec_sh(&f.repo, "two", "cat etc/chunk03.conf").assert_ok();
    assert_eq!(r.stdout_str(), "setting=03\n", "{}", r.describe());
    destroy_and_check_clean(&f, "two", None);
    assert_eq!(cache_entries(&f), expected_cache);
    assert_cache_untouched(&f);
    assert_objects_unchanged(&before, &f.repo);
}

/// Creating a stage under a name that exists fails cleanly and leaves the
/// existing stage alone.
#[test]
fn create_refuses_an_existing_name() {
    let f = Fixture::new();
    let revs: Vec<String> = (1..=3).map(chunk_ref).collect();
    stage_create(&f.repo, "dup", &revs, Some("overlay"), None).assert_ok();
    exec_sh(&f.repo, "dup", "printf 'mine\\n' > mine").assert_ok();
    let r = stage_create(&f.repo, "dup", &all_refs(), Some("overlay"), None).assert_clean_failure();
    assert!(
        r.stderr_str().contains("dup"),
        "the message should name the stage\n{}",
        r.describe()
    );
    assert_listed(&f.repo, "dup", "overlay", 3, "mounted");
    assert_eq!(
        fs::read(f.default_root("dup").join("mine")).unwrap(),
        b"mine\n"
    );
    assert!(f.default_root("dup").join("usr/bin/tool03").exists());
    assert!(!f.default_root("dup").join("usr/bin/tool04").exists());
    destroy_and_check_clean(&f, "dup", None);
}

/// A stage whose mount went away (unmounted behind arbor's back) is listed
/// as `unmounted`; `stage exec` mounts it again first, with the earlier
/// writes still there.
fn exec_remounts(backend: &str) {
    let f = Fixture::for_backend(backend);
    let name = format!("re-{backend}");
    let revs: Vec<String> = (1..=5).map(chunk_ref).collect();
    stage_create(&f.repo, &name, &revs, Some(backend), None).assert_ok();
    let root = f.default_root(&name);
    exec_sh(
        &f.repo,
        &name,
        "printf 'kept\\n' > kept && rm usr/bin/tool01",
    )
    .assert_ok();
    let view = manifest(&root);
    let mut c = Command::new("umount");
    c.arg(&root);
    run(c).assert_ok();
    assert!(!mounts_under(&f.base).contains(&root));
    assert_listed(&f.repo, &name, backend, 5, "unmounted");

    let r = exec_sh(
        &f.repo,
        &name,
        "cat kept; test ! -e usr/bin/tool01 && pwd -P",
    )
    .assert_ok();
    assert_eq!(
        r.stdout_str(),
        format!("kept\n{}\n", root.display()),
        "{}",
        r.describe()
    );
    assert!(
        mounts_under(&f.base).contains(&root),
        "exec did not remount {}",
        root.display()
    );
    assert_listed(&f.repo, &name, backend, 5, "mounted");
    assert_manifest_eq(
        &manifest(&root),
        &view,
        &format!("{backend}: view after remount"),
    );
    destroy_and_check_clean(&f, &name, None);
}

/// `stage exec` remounts an unmounted kernel-overlay stage.
#[test]
fn overlay_exec_remounts() {
    exec_remounts("overlay");
}

/// `stage exec` remounts an unmounted fuse-overlayfs stage.
#[test]
fn fuse_overlayfs_exec_remounts() {
    exec_remounts("fuse-overlayfs");
}

/// `stage exec --chroot` runs the command with the stage's root as `/`
/// (a shell and its libraries are copied in first): `pwd` is `/`, the
/// chunks' files are at their absolute paths, writes land in the stage,
/// and the exit code is passed through.
#[test]
fn exec_chroot_runs_inside_the_root() {
    let f = Fixture::new();
    let revs: Vec<String> = (1..=3).map(chunk_ref).collect();
    stage_create(&f.repo, "jail", &revs, Some("overlay"), None).assert_ok();
    let root = f.default_root("jail");
    exec_sh(
        &f.repo,
        "jail",
        "set -e; mkdir -p bin; cp -L /bin/sh bin/sh; \
         for l in $(ldd /bin/sh | grep -o '/[^ ]*'); do cp -L --parents \"$l\" .; done",
    )
    .assert_ok();
    let r = arbor_repo(
        &f.repo,
        [
            "stage",
            "exec",
            "jail",
            "--chroot",
            "--",
            "/bin/sh",
            "-c",
            "pwd; test -f /etc/chunk03.conf && echo found; echo inside > /written; exit 5",
        ],
    );
    assert_eq!(r.status.code(), Some(5), "exit code\n{}", r.describe());
    assert!(
        r.stdout_str()
            .lines()
            .collect::<Vec<_>>()
            .ends_with(&["/", "found"]),
        "the command must run chrooted in the root\n{}",
        r.describe()
    );
    assert_eq!(fs::read(root.join("written")).unwrap(), b"inside\n");
    destroy_and_check_clean(&f, "jail", None);
}

/// `stage create` naming a revision the store does not have fails cleanly
/// (naming it) and leaves nothing behind: no stage listed, no stage dir,
/// nothing mounted; the name is free for a correct create afterwards.
#[test]
fn create_with_unknown_rev_leaves_nothing() {
    let f = Fixture::new();
    let revs = vec![chunk_ref(1), "chunk/nope".to_string(), chunk_ref(2)];
    for backend in ["overlay", "fuse-overlayfs"] {
        let r = stage_create(&f.repo, "bad", &revs, Some(backend), None).assert_clean_failure();
        assert!(
            r.stderr_str().contains("chunk/nope"),
            "the error should name the unknown revision\n{}",
            r.describe()
        );
        assert_eq!(list_row(&f.repo, "bad"), None, "failed create left a stage");
        assert!(!f.stage_dir("bad").exists(), "failed create left its dir");
        assert_nothing_mounted(&f.base, "after a failed create");
    }
    let revs: Vec<String> = (1..=2).map(chunk_ref).collect();
    stage_create(&f.repo, "bad", &revs, Some("overlay"), None).assert_ok();
    assert_listed(&f.repo, "bad", "overlay", 2, "mounted");
    destroy_and_check_clean(&f, "bad", None);
}

/// Deletions are the only change in these directories: the upper layer
/// holds nothing else under `usr/bin`, `usr/lib` or `etc` (no copy-up of
/// the parent), yet the commit must drop exactly what the view dropped.
const DELETIONS_ONLY: &str =
    "set -eu; rm usr/bin/tool01; rm -rf usr/lib/chunk03; rm etc/shared.conf";

/// A stage whose only changes are deletions (a file, a whole directory, a
/// file several layers have) commits them on every backend.
fn deletions_only(backend: &str) {
    let f = Fixture::for_backend(backend);
    let revs: Vec<String> = (1..=5).map(chunk_ref).collect();
    let expect_dir = f.base.join("expect");
    for rev in &revs {
        let args: Vec<std::ffi::OsString> = vec![
            "checkout".into(),
            "--union".into(),
            "--whiteouts".into(),
            "--force-copy".into(),
            rev.into(),
            expect_dir.clone().into(),
        ];
        ostree_repo_ok(&f.repo, args);
    }
    let mut c = Command::new("sh");
    c.args(["-c", DELETIONS_ONLY]).current_dir(&expect_dir);
    run(c).assert_ok();
    let expect = manifest(&expect_dir);

    let name = format!("del-{backend}");
    stage_create(&f.repo, &name, &revs, Some(backend), None).assert_ok();
    exec_sh(&f.repo, &name, DELETIONS_ONLY).assert_ok();
    let root = f.default_root(&name);
    for gone in ["usr/bin/tool01", "usr/lib/chunk03", "etc/shared.conf"] {
        assert!(
            root.join(gone).symlink_metadata().is_err(),
            "{backend}: {gone} still in the view"
        );
    }
    let branch = format!("system/{name}");
    let r = arbor_repo_ok(&f.repo, ["stage", "commit", &name, "--branch", &branch]);
    expect_checksum_line(&r);
    let out = f.base.join("out");
    ostree_checkout(&f.repo, &branch, &out);
    assert_manifest_eq(
        &manifest(&out),
        &expect,
        &format!("{backend}: commit of deletions only"),
    );
    destroy_and_check_clean(&f, &name, None);
}

/// Deletions-only commit, kernel overlay.
#[test]
fn overlay_deletions_only() {
    deletions_only("overlay");
}

/// Deletions-only commit, fuse-overlayfs.
#[test]
fn fuse_overlayfs_deletions_only() {
    deletions_only("fuse-overlayfs");
}

/// Deletions-only commit, unionfs-fuse (whose markers live only under
/// `.unionfs-fuse/`, with no matching directory in the upper tree).
#[test]
fn unionfs_deletions_only() {
    deletions_only("unionfs");
}

/// Deletions-only commit, copy backend.
#[test]
fn copy_deletions_only() {
    deletions_only("copy");
}

/// `ostree checkout --union --whiteouts --force-copy` of `revs` in order
/// into `dir`, then `script` run there: the expected tree of a stage.
fn expected_tree(repo: &Path, revs: &[String], dir: &Path, script: &str) -> String {
    for rev in revs {
        let args: Vec<std::ffi::OsString> = vec![
            "checkout".into(),
            "--union".into(),
            "--whiteouts".into(),
            "--force-copy".into(),
            rev.into(),
            dir.into(),
        ];
        ostree_repo_ok(repo, args);
    }
    let mut c = Command::new("sh");
    c.args(["-c", script]).current_dir(dir);
    run(c).assert_ok();
    manifest(dir)
}

/// The same commit twice in one stack (05 10 05: chunk 5 re-applied over
/// chunk 10, so `etc/shared.conf` is chunk 5's again) gives the union
/// `ostree checkout --union` gives, on every backend.
fn repeated_commit(backend: &str) {
    let f = Fixture::for_backend(backend);
    let revs = vec![chunk_ref(5), chunk_ref(10), chunk_ref(5)];
    let expect = expected_tree(&f.repo, &revs, &f.base.join("expect"), "true");
    let name = format!("rep-{backend}");
    let r = stage_create(&f.repo, &name, &revs, Some(backend), None);
    assert!(
        r.success(),
        "{backend}: a stack naming one commit twice\n{}",
        r.describe()
    );
    let root = f.default_root(&name);
    assert_eq!(
        fs::read(root.join("etc/shared.conf")).unwrap(),
        b"shared from chunk 05\n"
    );
    assert_view_eq(&root, &expect, &format!("{backend}: view of 05 10 05"));
    let mut soft = Soft::default();
    soft.check(|| assert_listed(&f.repo, &name, backend, 3, "mounted"));
    destroy_and_check_clean(&f, &name, None);
    soft.finish();
}

/// Same commit twice in the stack, kernel overlay.
#[test]
fn overlay_repeated_commit() {
    repeated_commit("overlay");
}

/// Same commit twice in the stack, fuse-overlayfs.
#[test]
fn fuse_overlayfs_repeated_commit() {
    repeated_commit("fuse-overlayfs");
}

/// Same commit twice in the stack, unionfs-fuse.
#[test]
fn unionfs_repeated_commit() {
    repeated_commit("unionfs");
}

/// Same commit twice in the stack, copy.
#[test]
fn copy_repeated_commit() {
    repeated_commit("copy");
}

/// Renames and hardlinks of lower entries (which union filesystems handle
/// by copy-up, or refuse with EXDEV so that `mv` copies).
const RENAMES: &str = "set -eu
mv usr/bin/tool02 usr/bin/tool02-renamed
mv usr/lib/chunk03 usr/lib/chunk03-moved
mv usr/lib/chunk08/lib08.so usr/lib/lib08-moved.so
ln usr/bin/tool04 usr/bin/tool04-hardlink
mv etc/chunk01.conf etc/chunk02.conf
";

/// Renaming lower files and directories (one with xattrs, one replacing
/// another lower file) and hardlinking a lower file commit exactly like
/// the same operations on a plain directory, on every backend.
fn renames(backend: &str) {
    let f = Fixture::for_backend(backend);
    let revs: Vec<String> = (1..=8).map(chunk_ref).collect();
    let expect = expected_tree(&f.repo, &revs, &f.base.join("expect"), RENAMES);
    let name = format!("mv-{backend}");
    stage_create(&f.repo, &name, &revs, Some(backend), None).assert_ok();
    let r = exec_sh(&f.repo, &name, RENAMES);
    assert!(r.success(), "{backend}: renames failed\n{}", r.describe());
    let mut soft = Soft::default();
    let root = f.default_root(&name);
    soft.check(|| assert_view_eq(&root, &expect, &format!("{backend}: view after renames")));
    let branch = format!("system/{name}");
    let r = arbor_repo_ok(&f.repo, ["stage", "commit", &name, "--branch", &branch]);
    expect_checksum_line(&r);
    let out = f.base.join("out");
    ostree_checkout(&f.repo, &branch, &out);
    soft.check(|| {
        assert_manifest_eq(
            &manifest(&out),
            &expect,
            &format!("{backend}: commit after renames"),
        )
    });
    destroy_and_check_clean(&f, &name, None);
    soft.finish();
}

/// Renames and hardlinks, kernel overlay.
#[test]
fn overlay_renames() {
    renames("overlay");
}

/// Renames and hardlinks, fuse-overlayfs.
#[test]
fn fuse_overlayfs_renames() {
    renames("fuse-overlayfs");
}

/// Renames and hardlinks, unionfs-fuse.
#[test]
fn unionfs_renames() {
    renames("unionfs");
}

/// Renames and hardlinks, copy.
#[test]
fn copy_renames() {
    renames("copy");
}

/// `stage exec` passes arguments through untouched (spaces, empty
/// strings, shell metacharacters) and the command's stdout through.
#[test]
fn exec_passes_arguments_through() {
    let f = Fixture::new();
    stage_create(&f.repo, "args", &[chunk_ref(1)], Some("overlay"), None).assert_ok();
    let r = arbor_repo_ok(
        &f.repo,
        [
            "stage", "exec", "args", "--", "printf", "[%s]", "a b", "", "$HOME", "--repo", "-x",
        ],
    );
    assert_eq!(
        r.stdout_str(),
        "[a b][][$HOME][--repo][-x]",
        "{}",
        r.describe()
    );
    destroy_and_check_clean(&f, "args", None);
}

/// Committing a stage onto a branch that already exists (made by `ostree
/// commit`, not by a stage) makes that branch's commit the parent.
#[test]
fn commit_onto_an_existing_branch() {
    let c = chunks();
    let f = Fixture::new();
    let revs: Vec<String> = (1..=5).map(chunk_ref).collect();
    stage_create(&f.repo, "onto", &revs, Some("overlay"), None).assert_ok();
    exec_sh(&f.repo, "onto", "printf 'x\\n' > etc/onto.conf").assert_ok();
    let r = arbor_repo_ok(
        &f.repo,
        ["stage", "commit", "onto", "--branch", &chunk_ref(50)],
    );
    let new = expect_checksum_line(&r);
    assert_eq!(ostree_rev_parse(&f.repo, &chunk_ref(50)), new);
    assert_eq!(
        ostree_rev_parse(&f.repo, &format!("{}^", chunk_ref(50))),
        c.commits[49],
        "the branch's previous commit must be the parent"
    );
    ostree_repo_ok(&f.repo, ["fsck"]);
    destroy_and_check_clean(&f, "onto", None);
}

/// Layers carrying `trusted.overlay.opaque` on a directory (data to ostree,
/// an instruction to overlayfs): `--backend auto` does not let the xattr
/// hide the layer below; it says on stderr which backend it used and why
/// the others were skipped; the commit keeps the xattr as data.
#[test]
fn auto_explains_skipped_backends() {
    let tmp = tempdir();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let repo = base.join("repo");
    arbor_init(&repo, Mode::Bare);
    for (n, file) in [(1, "hidden"), (2, "top")] {
        let src = base.join(format!("src{n}"));
        make_dir(&src.join("d"), 0o755);
        write_file(&src.join("d").join(file), file.as_bytes(), 0o644);
        set_xattr(&src.join("d"), "trusted.overlay.opaque", b"y");
        let opts = CommitOpts::new(&format!("layer {n}"), "", 1_700_000_000 + n);
        ostree_commit(&repo, &src, &format!("l{n}"), &opts);
    }
    let revs = vec!["l1".to_string(), "l2".to_string()];
    let expect = expected_tree(&repo, &revs, &base.join("expect"), "true");
    assert!(expect.contains("\"d/hidden\" f"), "{expect}");

    let r = stage_create(&repo, "steer", &revs, Some("auto"), None);
    // Detach whatever is left mounted if an assertion fails below.
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            detach_mounts_under(&self.0);
        }
    }
    let _detach = Detach(base.clone());
    let r = r.assert_ok();
    let root = PathBuf::from(r.stdout_str().trim_end_matches('\n'));
    let row = list_row(&repo, "steer").expect("listed");
    let stderr = r.stderr_str();
    assert!(
        names_backend(&stderr, &row.backend),
        "stderr should name the backend used ({})\n{}",
        row.backend,
        r.describe()
    );
    // Overlay and fuse-overlayfs would obey the xattr, unionfs-fuse cannot
    // show it: only the copy gives the true view.
    assert_eq!(row.backend, "copy", "{}", r.describe());
    for skipped in [
        "skipped overlay",
        "skipped fuse-overlayfs",
        "skipped unionfs",
        "trusted.overlay.opaque",
    ] {
        assert!(
            stderr.contains(skipped),
            "stderr should say why each union was skipped ({skipped})\n{}",
            r.describe()
        );
    }
    let names: BTreeSet<String> = fs::read_dir(root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["hidden".to_string(), "top".to_string()]),
        "view of d/"
    );
    let c = arbor_repo_ok(&repo, ["stage", "commit", "steer", "--branch", "out"]);
    expect_checksum_line(&c);
    let out = base.join("out");
    ostree_checkout(&repo, "out", &out);
    assert_manifest_eq(&manifest(&out), &expect, "commit keeps the xattr as data");
    arbor_repo_ok(&repo, ["stage", "destroy", "steer"]);
    assert!(mounts_under(&base).is_empty());
}

/// Three `stage create`s of the same 50 uncached commits started at once
/// (different names and backends) all succeed, each sees the full union,
/// and the cache ends with exactly one entry per commit.
#[test]
fn concurrent_creates_share_the_cache() {
    let c = chunks();
    let f = Fixture::new();
    let names = [
        ("c1", "overlay"),
        ("c2", "fuse-overlayfs"),
        ("c3", "overlay"),
    ];
    let children: Vec<_> = names
        .iter()
        .map(|(name, backend)| {
            let mut cmd = arbor_command();
            cmd.arg("--repo")
                .arg(&f.repo)
                .args(["stage", "create", name]);
            cmd.args(all_refs()).args(["--backend", backend]);
            let cmdline = format!("stage create {name} --backend {backend}");
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            (cmdline, cmd.spawn().unwrap())
        })
        .collect();
    for (cmdline, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "concurrent `{cmdline}` failed ({:?})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let expected_cache: BTreeSet<String> = c.commits.iter().cloned().collect();
    assert_eq!(
        cache_entries(&f),
        expected_cache,
        "cache after concurrent creates"
    );
    for (name, backend) in names {
        assert_listed(&f.repo, name, backend, CHUNKS, "mounted");
        assert_view_eq(
            &f.default_root(name),
            &c.base,
            &format!("{name} ({backend})"),
        );
    }
    for (name, _) in names {
        destroy_and_check_clean(&f, name, None);
    }
    assert_nothing_mounted(&f.base, "after destroying all");
}

/// `stage gc` removes exactly the cache entries no stage uses: entries of a
/// live stage stay (and the stage keeps working), the others go, and a
/// later create rebuilds what it needs.
#[test]
fn gc_removes_only_unused_cache_entries() {
    let f = Fixture::new();
    let c = f.chunks;
    let a: Vec<String> = (1..=3).map(chunk_ref).collect();
    let b: Vec<String> = (3..=5).map(chunk_ref).collect();
    stage_create(&f.repo, "a", &a, Some("overlay"), None).assert_ok();
    stage_create(&f.repo, "b", &b, Some("overlay"), None).assert_ok();
    arbor_repo_ok(&f.repo, ["stage", "destroy", "b"]);
    let r = arbor_repo_ok(&f.repo, ["stage", "gc"]);
    assert!(r.stderr_str().contains("removed 2"), "{}", r.describe());
    let want: BTreeSet<String> = c.commits[..3].iter().cloned().collect();
    assert_eq!(cache_entries(&f), want);
    let r = exec_sh(&f.repo, "a", "cat etc/chunk03.conf");
    assert!(r.success(), "{}", r.describe());
    assert_eq!(r.stdout_str(), "setting=03\n");
    arbor_repo_ok(&f.repo, ["stage", "destroy", "a"]);
    arbor_repo_ok(&f.repo, ["stage", "gc"]);
    assert_eq!(cache_entries(&f), BTreeSet::new());
    let leftovers: Vec<String> = fs::read_dir(f.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    stage_create(&f.repo, "c", &b, Some("overlay"), None).assert_ok();
    assert_eq!(cache_entries(&f).len(), 3);
    destroy_and_check_clean(&f, "c", None);
}
