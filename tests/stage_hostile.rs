//! Stages over hostile or awkward commits: layers that try to steer the
//! union filesystem, bogus stage names, and whiteouts that would reach
//! outside their directory. Needs root (skips otherwise).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn is_root() -> bool {
    let root = euid() == 0;
    if !root {
        eprintln!("skipping: needs root");
    }
    root
}

/// Destroys every stage of a store when dropped, so a failing test leaves
/// no mount behind in /tmp.
struct Store {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    work: PathBuf,
}

impl Drop for Store {
    fn drop(&mut self) {
        let list = arbor_repo(&self.repo, ["stage", "list"]);
        for line in list.stdout_str().lines().skip(1) {
            if let Some(name) = line.split_whitespace().next() {
                arbor_repo(&self.repo, ["stage", "destroy", name]);
            }
        }
    }
}

fn store() -> Store {
    let tmp = tempdir();
    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Bare);
    let work = tmp.path().join("w");
    fs::create_dir(&work).unwrap();
    Store {
        repo,
        work,
        _tmp: tmp,
    }
}

/// Commits a tree built by `build` (in a fresh directory) to `branch` with
/// the real ostree.
fn commit(s: &Store, branch: &str, build: impl FnOnce(&Path)) -> String {
    let dir = s.work.join(branch.replace('/', "_"));
    make_dir(&dir, 0o755);
    build(&dir);
    ostree_commit(&s.repo, &dir, branch, &CommitOpts::new("", "", 1))
}

fn stage_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A commit whose directory carries `trusted.overlay.opaque=y` would, as a
/// lower overlay layer, hide the layers below. `auto` must not let it: the
/// kernel overlay and fuse-overlayfs are skipped with the reason named,
/// unionfs-fuse too (it could not show the xattr), and the copy shows the
/// lower layer's files.
#[test]
fn overlay_xattrs_in_a_commit_never_steer_the_union() {
    if !is_root() {
        return;
    }
    let s = store();
    commit(&s, "base", |d| {
        make_dir(&d.join("etc"), 0o755);
        write_file(&d.join("etc/passwd"), b"root:x:0:0\n", 0o644);
    });
    commit(&s, "evil", |d| {
        make_dir(&d.join("etc"), 0o755);
        set_xattr(&d.join("etc"), "trusted.overlay.opaque", b"y");
        write_file(&d.join("etc/evil"), b"x\n", 0o644);
    });
    let run = arbor_repo_ok(&s.repo, ["stage", "create", "st", "base", "evil"]);
    let err = run.stderr_str();
    assert!(err.contains("backend copy"), "{}", run.describe());
    assert!(err.contains("skipped unionfs"), "{}", run.describe());
    assert!(
        err.contains("skipped overlay") && err.contains("trusted.overlay.opaque"),
        "{}",
        run.describe()
    );
    assert!(err.contains("skipped fuse-overlayfs"), "{}", run.describe());
    let root = PathBuf::from(run.stdout_str().trim());
    assert_eq!(stage_files(&root), ["etc", "etc/evil", "etc/passwd"]);

    // Asking for overlay explicitly fails, naming the layer's xattr.
    let run = arbor_repo(
        &s.repo,
        [
            "stage",
            "create",
            "st2",
            "base",
            "evil",
            "--backend",
            "overlay",
        ],
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr_str().contains("trusted.overlay.opaque"),
        "{}",
        run.describe()
    );
    assert!(
        !s.repo.join("extensions/arbor/stages/st2").exists(),
        "a failed create leaves nothing"
    );
    arbor_repo_ok(&s.repo, ["stage", "destroy", "st"]);
}

/// A commit carrying unionfs-fuse's own metadata directory would hide
/// files of the layers below it on that backend: unionfs is refused for
/// it, and with nothing else allowed `auto` ends on the copy.
#[test]
fn a_commit_with_unionfs_metadata_is_refused_by_unionfs() {
    if !is_root() {
        return;
    }
    let s = store();
    commit(&s, "base", |d| write_file(&d.join("f"), b"base\n", 0o644));
    commit(&s, "evil", |d| {
        make_dir(&d.join(".unionfs-fuse"), 0o755);
        write_file(&d.join(".unionfs-fuse/f_HIDDEN~"), b"", 0o644);
    });
    let run = arbor_repo(
        &s.repo,
        [
            "stage",
            "create",
            "u",
            "base",
            "evil",
            "--backend",
            "unionfs",
        ],
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr_str().contains(".unionfs-fuse"),
        "{}",
        run.describe()
    );
    // The overlay shows the directory as plain content and hides nothing.
    let run = arbor_repo_ok(&s.repo, ["stage", "create", "o", "base", "evil"]);
    assert!(
        run.stderr_str().contains("backend overlay"),
        "{}",
        run.describe()
    );
    let root = PathBuf::from(run.stdout_str().trim());
    assert_eq!(
        stage_files(&root),
        [".unionfs-fuse", ".unionfs-fuse/f_HIDDEN~", "f"]
    );
    arbor_repo_ok(&s.repo, ["stage", "destroy", "o"]);
}

/// Stage names become directory names: anything that could leave the
/// stages directory, or hide as a dot file, is refused before any file is
/// made.
#[test]
fn hostile_stage_names_are_refused() {
    let s = store();
    commit(&s, "base", |d| write_file(&d.join("f"), b"x\n", 0o644));
    for bad in ["../x", "a/b", ".hidden", "-rf", "", "x\ny", "é"] {
        let run = arbor_repo(&s.repo, ["stage", "create", "--", bad, "base"]);
        assert!(!run.success(), "{bad:?} accepted: {}", run.describe());
        assert!(
            run.stderr_str().contains("invalid stage name"),
            "{}",
            run.describe()
        );
    }
    let stages = s.repo.join("extensions/arbor/stages");
    let left: Vec<_> = fs::read_dir(&stages)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(!s.repo.join("extensions/arbor/x").exists());
}

/// Whiteout names that would remove `.` or `..` are refused on every
/// backend, and the refused create leaves nothing behind.
#[test]
fn dot_whiteouts_are_refused() {
    if !is_root() {
        return;
    }
    let s = store();
    commit(&s, "base", |d| {
        make_dir(&d.join("d"), 0o755);
        write_file(&d.join("d/f"), b"x\n", 0o644);
    });
    commit(&s, "top", |d| {
        make_dir(&d.join("d"), 0o755);
        write_file(&d.join("d/.wh.."), b"", 0o644);
        write_file(&d.join("d/.wh..."), b"", 0o644);
    });
    for backend in ["overlay", "fuse-overlayfs", "unionfs", "copy"] {
        let name = format!("s-{backend}");
        let run = arbor_repo(
            &s.repo,
            [
                "stage",
                "create",
                &name,
                "base",
                "top",
                "--backend",
                backend,
            ],
        );
        // Refused before anything is mounted or copied, naming the entry.
        let run = run.assert_clean_failure();
        assert!(
            run.stderr_str().contains(".wh.."),
            "{backend}: {}",
            run.describe()
        );
        assert!(!s.repo.join("extensions/arbor/stages").join(&name).exists());
    }
}

/// The copy backend's index lets a commit skip files that still are the
/// objects they were copied from; a file rewritten in place with content of
/// the same size, right after the stage was made, must still be read.
#[test]
fn copy_commit_sees_same_size_rewrites() {
    if !is_root() {
        return;
    }
    let s = store();
    commit(&s, "base", |d| {
        write_file(&d.join("same"), b"aaaa\n", 0o644);
        write_file(&d.join("kept"), b"kept\n", 0o644);
        write_file(&d.join("mode"), b"mode\n", 0o644);
    });
    arbor_repo_ok(
        &s.repo,
        ["stage", "create", "c", "base", "--backend", "copy"],
    );
    arbor_repo_ok(
        &s.repo,
        [
            "stage",
            "exec",
            "c",
            "--",
            "sh",
            "-c",
            "printf 'bbbb\\n' > same; chmod 600 mode",
        ],
    );
    arbor_repo_ok(&s.repo, ["stage", "commit", "c", "--branch", "out"]);
    let cat = |p: &str| ostree_repo_ok(&s.repo, ["cat", "out", p]).stdout_str();
    assert_eq!(cat("/same"), "bbbb\n");
    assert_eq!(cat("/kept"), "kept\n");
    let ls = ostree_repo_ok(&s.repo, ["ls", "out", "/mode"]).stdout_str();
    assert!(ls.starts_with("-00600"), "{ls}");
    ostree_repo_ok(&s.repo, ["fsck"]);
    arbor_repo_ok(&s.repo, ["stage", "destroy", "c"]);
}
