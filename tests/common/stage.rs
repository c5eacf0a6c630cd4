//! Helpers shared by the `tests/stage_*.rs` suites, included with
//! `#[path = "common/stage.rs"] mod stage_support;` next to `mod common;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use crate::common::*;

pub fn chown_mode(path: &Path, uid: u32, gid: u32, mode: u32) {
    lchown(path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Mount points at or below `base`, from /proc/self/mountinfo.
pub fn mounts_under(base: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(base))
        .collect()
}

#[track_caller]
pub fn assert_nothing_mounted(base: &Path, what: &str) {
    let m = mounts_under(base);
    assert!(
        m.is_empty(),
        "{what}: still mounted under {}: {m:?}",
        base.display()
    );
}

/// One row of `stage list`: NAME BACKEND LAYERS STATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub backend: String,
    pub layers: String,
    pub state: String,
}

#[track_caller]
pub fn stage_list(repo: &Path) -> Vec<Row> {
    let r = arbor_repo_ok(repo, ["stage", "list"]);
    let out = r.stdout_str();
    let mut rows = Vec::new();
    for line in out.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(
            f.len() >= 4,
            "malformed `stage list` line {line:?}\n{}",
            r.describe()
        );
        rows.push(Row {
            name: f[0].into(),
            backend: f[1].into(),
            layers: f[2].into(),
            state: f[3].into(),
        });
    }
    rows
}

#[track_caller]
pub fn list_row(repo: &Path, name: &str) -> Option<Row> {
    let rows = stage_list(repo);
    let mut it = rows.iter().filter(|r| r.name == name);
    let row = it.next().cloned();
    assert!(it.next().is_none(), "stage {name} listed twice: {rows:?}");
    row
}

#[track_caller]
pub fn exec_sh(repo: &Path, name: &str, script: &str) -> Run {
    arbor_repo(repo, ["stage", "exec", name, "--", "sh", "-c", script])
}

/// Every file and directory under objects/, by path.
pub fn object_snapshot(repo: &Path) -> BTreeMap<Vec<u8>, Entry> {
    manifest_entries(&repo.join("objects"))
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect()
}

/// Every object present before is still there with the same content, mode,
/// owner, size and xattrs.
#[track_caller]
pub fn assert_objects_unchanged(before: &BTreeMap<Vec<u8>, Entry>, repo: &Path) {
    let after = object_snapshot(repo);
    let mut bad = Vec::new();
    for (p, e) in before {
        match after.get(p) {
            Some(a) if a == e => {}
            Some(a) => bad.push(format!("changed: {}\n     now: {}", e.render(), a.render())),
            None => bad.push(format!("missing: {}", e.render())),
        }
    }
    assert!(
        bad.is_empty(),
        "store objects were modified ({} entries):\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Detaches (`MNT_DETACH`) every mount at or below `base`, deepest first.
pub fn detach_mounts_under(base: &Path) {
    let mut left = mounts_under(base);
    left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for m in left {
        let c = std::ffi::CString::new(m.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A private store (a copy of a template store) in a temporary directory.
/// Dropping it detaches anything a failed test left mounted under it before
/// the directory is removed.
pub struct PrivateStore {
    /// Removed (after the mounts are detached) when the store drops.
    _tmp: tempfile::TempDir,
    /// The temporary directory, canonical (as mount points are listed).
    pub base: PathBuf,
    pub repo: PathBuf,
}

impl PrivateStore {
    pub fn copy_of(template: &Path) -> PrivateStore {
        let tmp = tempdir();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let repo = base.join("repo");
        copy_tree(template, &repo);
        PrivateStore {
            _tmp: tmp,
            base,
            repo,
        }
    }

    pub fn stage_dir(&self, name: &str) -> PathBuf {
        self.repo.join("extensions/arbor/stages").join(name)
    }

    /// The root of stage `name` when none was given at creation.
    pub fn default_root(&self, name: &str) -> PathBuf {
        self.stage_dir(name).join("root")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.repo.join("extensions/arbor/checkouts")
    }
}

impl Drop for PrivateStore {
    fn drop(&mut self) {
        detach_mounts_under(&self.base);
    }
}
