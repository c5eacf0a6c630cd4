//! A repository with history for the prune and gc tests, made by the real
//! `ostree`: several branches, a remote ref, a collection ref, deleted
//! branches whose commits remain, orphaned objects, detached metadata, a
//! partial marker, static deltas (one to a commit that goes under
//! `--refs-only`) and a summary cache of a removed remote.
//!
//! ```text
//! main:          m1 ← m2 ← m3 ← m4 ← m5        (one day apart)
//! dev:                 m2 ← d1 ← d2 ← d3       (after main)
//! origin:stable  → m2
//! (org.example.Os, mir) → x1                   (refs/mirrors only)
//! deleted "gone": g1 ← g2                      (g1 partial, g2 has .commitmeta)
//! orphans:        the tree of o1 (o1's commit object removed)
//! deltas:         m4-m5, scratch d2, g1-g2
//! ```
//! No root lies within a finite depth of another root's history, so
//! libostree's results do not depend on its ref hash order (ostree#2338)
//! for the depths the tests use (0 and 1).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;

pub const TS: u64 = 1_700_000_000;
pub const DAY: u64 = 86_400;

/// The commits of [`build_history`].
#[derive(Clone, Debug)]
pub struct History {
    pub m: Vec<String>,
    pub d: Vec<String>,
    pub g: Vec<String>,
    pub x1: String,
    pub o1: String,
    /// Objects only o1's tree had (orphans from the start).
    pub orphans: BTreeSet<String>,
}

fn medium_tree(dir: &Path, dirs: usize, files: usize, seed: u64) {
    make_dir(dir, 0o755);
    for d in 0..dirs {
        make_dir(&dir.join(format!("d{d:02}")), 0o755);
    }
    for i in 0..files {
        let len = 100 + (i * 37 % 3000);
        write_file(
            &dir.join(format!("d{:02}/f{i:04}", i % dirs)),
            &pseudo_random_bytes(len, seed * 1_000_003 + i as u64),
            0o644,
        );
    }
    std::os::unix::fs::symlink("d00/f0000", dir.join("link")).unwrap();
}

/// Changes directory `d(round % dirs)` and adds `new_ROUND/`.
fn evolve(dir: &Path, round: u64, dirs: u64) {
    let target = dir.join(format!("d{:02}", round % dirs));
    for e in fs::read_dir(&target).unwrap().flatten() {
        let mut data = fs::read(e.path()).unwrap();
        data.extend_from_slice(format!("round {round}\n").as_bytes());
        fs::write(e.path(), data).unwrap();
    }
    let nd = dir.join(format!("new_{round}"));
    make_dir(&nd, 0o755);
    for i in 0..3 {
        write_file(
            &nd.join(format!("n{i}")),
            &pseudo_random_bytes(500 + i * 10, 77 + round * 10 + i as u64),
            0o644,
        );
    }
}

fn commit(
    repo: &Path,
    work: &Path,
    branch: &str,
    subject: &str,
    ts: u64,
    extra: &[String],
) -> String {
    let mut args = CommitOpts::new(subject, "", ts).ostree_args(work, branch);
    args.extend(extra.iter().map(Into::into));
    let r = ostree_repo_ok(repo, args);
    r.stdout_str().trim().to_string()
}

fn objects_of(repo: &Path, commit: &str) -> BTreeSet<String> {
    let out = ostree_repo_ok(repo, ["ls", "-R", "-C", commit]).stdout_str();
    let mut s = BTreeSet::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with('d') {
            s.insert(format!("{}.dirtree", f[4]));
            s.insert(format!("{}.dirmeta", f[5]));
        } else {
            s.insert(format!("{}.file", f[4]));
        }
    }
    s
}

/// Builds the history in a new repository `repo` of `mode`; `work` is a
/// scratch directory.
pub fn build_history(repo: &Path, work: &Path, mode: Mode) -> History {
    ostree_init(repo, mode);
    let tree = work.join("tree");
    medium_tree(&tree, 6, 60, 1);
    let mut m = Vec::new();
    for i in 1..=5u64 {
        if i > 1 {
            evolve(&tree, i, 6);
        }
        let extra = if i == 1 {
            vec!["--add-detached-metadata-string=note=first".to_string()]
        } else {
            vec![]
        };
        m.push(commit(
            repo,
            &tree,
            "main",
            &format!("m{i}"),
            TS + i * DAY,
            &extra,
        ));
    }
    let dev = work.join("dev");
    medium_tree(&dev, 6, 60, 1);
    evolve(&dev, 2, 6);
    let mut d = Vec::new();
    for j in 1..=3u64 {
        evolve(&dev, 100 + j, 6);
        let parent = if j == 1 {
            vec![format!("--parent={}", m[1])]
        } else {
            vec![]
        };
        d.push(commit(
            repo,
            &dev,
            "dev",
            &format!("d{j}"),
            TS + (5 + j) * DAY,
            &parent,
        ));
    }
    fs::create_dir_all(repo.join("refs/remotes/origin")).unwrap();
    fs::write(
        repo.join("refs/remotes/origin/stable"),
        format!("{}\n", m[1]),
    )
    .unwrap();

    let mir = work.join("mir");
    medium_tree(&mir, 3, 20, 5);
    let x1 = commit(repo, &mir, "mir", "x1", TS + DAY / 2, &[]);
    fs::create_dir_all(repo.join("refs/mirrors/org.example.Os")).unwrap();
    fs::rename(
        repo.join("refs/heads/mir"),
        repo.join("refs/mirrors/org.example.Os/mir"),
    )
    .unwrap();

    let gone = work.join("gone");
    medium_tree(&gone, 3, 20, 9);
    let g1 = commit(repo, &gone, "gone", "g1", TS + 2 * DAY, &[]);
    evolve(&gone, 7, 3);
    let g2 = commit(
        repo,
        &gone,
        "gone",
        "g2",
        TS + 3 * DAY,
        &["--add-detached-metadata-string=note=gone".to_string()],
    );
    fs::write(repo.join(format!("state/{g1}.commitpartial")), b"").unwrap();

    let orphan = work.join("orphan");
    medium_tree(&orphan, 2, 6, 42);
    let o1 = commit(repo, &orphan, "tmp", "o1", TS, &[]);
    let mut orphans = objects_of(repo, &o1);
    for c in m.iter().chain(&d).chain([&x1, &g1, &g2]) {
        for o in objects_of(repo, c) {
            orphans.remove(&o);
        }
    }
    assert!(!orphans.is_empty());
    fs::remove_file(repo.join("refs/heads/tmp")).unwrap();
    fs::remove_file(object_path(repo, &o1, "commit")).unwrap();

    ostree_repo_ok(repo, ["static-delta", "generate", "main"]);
    ostree_repo_ok(
        repo,
        [
            "static-delta",
            "generate",
            "--empty",
            &format!("--to={}", d[1]),
        ],
    );
    ostree_repo_ok(
        repo,
        [
            "static-delta",
            "generate",
            &format!("--from={g1}"),
            &format!("--to={g2}"),
        ],
    );
    fs::remove_file(repo.join("refs/heads/gone")).unwrap();

    fs::create_dir_all(repo.join("tmp/cache/summaries")).unwrap();
    fs::write(repo.join("tmp/cache/summaries/ghost"), b"x").unwrap();
    fs::write(repo.join("tmp/cache/summaries/ghost.sig"), b"x").unwrap();
    History {
        m,
        d,
        g: vec![g1, g2],
        x1,
        o1,
        orphans,
    }
}

/// Every file under `objects/` as `XX/REST.EXT` (commitmeta and
/// tombstones included).
pub fn all_object_files(repo: &Path) -> BTreeSet<String> {
    list_objects(repo)
}

/// Static deltas on disk, as paths below `deltas/`.
pub fn delta_dirs(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(top) = fs::read_dir(repo.join("deltas")) else {
        return out;
    };
    for a in top.flatten() {
        for b in fs::read_dir(a.path()).unwrap().flatten() {
            out.insert(format!(
                "{}/{}",
                a.file_name().to_string_lossy(),
                b.file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// Names in a directory of the repository (empty when it is missing).
pub fn dir_names(repo: &Path, rel: &str) -> BTreeSet<String> {
    fs::read_dir(repo.join(rel))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Commits (checksums) present in the repository.
pub fn commits_present(repo: &Path) -> BTreeSet<String> {
    all_object_files(repo)
        .into_iter()
        .filter_map(|o| {
            let (dir, rest) = o.split_once('/')?;
            Some(format!("{dir}{}", rest.strip_suffix(".commit")?))
        })
        .collect()
}

/// A copy of a repository (hardlinks and xattrs kept).
pub fn copy_repo(src: &Path, dst: &Path) -> PathBuf {
    copy_tree(src, dst);
    dst.to_path_buf()
}
