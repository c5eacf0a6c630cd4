//! Applying static deltas made by the real `ostree static-delta generate`
//! into arbor stores of each mode (bare, bare-user, archive — into which
//! libostree cannot apply deltas), through the library's offline apply
//! (`arbor::pull::delta::apply_offline`, what `ostree static-delta
//! apply-offline` does). After each: `ostree fsck` passes, the commit is
//! complete and checks out exactly as from the source repository.
//!
//! The two commits make the generator use every kind of part content:
//! bsdiff (`lib/libbar.so.1` → `.so.2`, edited near its start), rollsum
//! (`data/blob.bin`, edited near its end), plain splices, symlinks, files
//! with xattrs, odd owners and modes (the edge tree).

mod common;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use arbor::store::Repo;
use common::*;
use pull_support::*;

pub struct Source {
    pub repo: PathBuf,
    pub c1: String,
    pub c2: String,
    pub deltas: PathBuf,
}

/// Adds the bsdiff and rollsum candidates to a copy of the edge tree.
fn build_c1(dir: &Path) {
    copy_tree(&pull_edge_tree().path, dir);
    make_dir(&dir.join("lib"), 0o755);
    make_dir(&dir.join("data"), 0o755);
    write_file(
        &dir.join("lib/libbar.so.1"),
        &pseudo_random_bytes(30_000, 11),
        0o755,
    );
    write_file(
        &dir.join("data/blob.bin"),
        &pseudo_random_bytes(60_000, 12),
        0o644,
    );
}

fn evolve(dir: &Path) {
    let mut lib = std::fs::read(dir.join("lib/libbar.so.1")).unwrap();
    lib[100..110].copy_from_slice(b"0123456789");
    std::fs::remove_file(dir.join("lib/libbar.so.1")).unwrap();
    write_file(&dir.join("lib/libbar.so.2"), &lib, 0o755);
    let mut blob = std::fs::read(dir.join("data/blob.bin")).unwrap();
    let n = blob.len();
    blob[n - 500..n - 490].copy_from_slice(b"abcdefghij");
    write_file(&dir.join("data/blob.bin"), &blob, 0o644);
    write_file(&dir.join("file_0644.txt"), b"hello again\n", 0o644);
    write_file(&dir.join("brand-new.txt"), b"new in C2\n", 0o600);
    std::os::unix::fs::symlink("brand-new.txt", dir.join("new-link")).unwrap();
    std::fs::remove_file(dir.join("exec_0755")).unwrap();
}

/// `ostree static-delta generate ARGS --filename=DELTAS/NAME/superblock`.
pub fn generate(repo: &Path, deltas: &Path, name: &str, args: &[&str]) -> PathBuf {
    let dir = deltas.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut a: Vec<String> = vec!["static-delta".into(), "generate".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.push(format!("--filename={}", dir.join("superblock").display()));
    ostree_repo_ok(repo, &a);
    dir
}

fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(|| {
        let base = scratch_dir("delta-apply-src");
        let repo = base.join("repo");
        ostree_init(&repo, Mode::Archive);
        let tree = base.join("tree");
        build_c1(&tree);
        let c1 = ostree_commit(&repo, &tree, "main", &CommitOpts::new("c1", "", TS));
        evolve(&tree);
        let c2 = ostree_commit(
            &repo,
            &tree,
            "main",
            &CommitOpts::new("c2", "", TS + 10).parent(&c1),
        );
        let deltas = base.join("deltas");
        let ft = ["--from", &c1, "--to", &c2, "--min-fallback-size=0"];
        generate(&repo, &deltas, "from-to", &ft);
        generate(
            &repo,
            &deltas,
            "nobsdiff",
            &[&ft[..], &["--disable-bsdiff"]].concat(),
        );
        generate(
            &repo,
            &deltas,
            "swapped",
            &[&ft[..], &["--swap-endianness"]].concat(),
        );
        let sc = ["--empty", "--to", &c2, "--min-fallback-size=0"];
        // 1 MB parts: the 1 MiB big.bin gets a part of its own, so there
        // are several, applied by two workers.
        generate(
            &repo,
            &deltas,
            "chunked",
            &[&sc[..], &["--max-chunk-size=1"]].concat(),
        );
        generate(&repo, &deltas, "scratch", &sc);
        generate(&repo, &deltas, "inline", &[&sc[..], &["--inline"]].concat());
        Source {
            repo,
            c1,
            c2,
            deltas,
        }
    })
}

fn apply(store: &Path, delta: &str) -> arbor::pull::delta::OfflineOutcome {
    let repo = Repo::open(store).unwrap();
    arbor::pull::delta::apply_offline(
        &repo,
        &source().deltas.join(delta),
        2,
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("applying {delta}: {e}"))
}

/// A store of `mode` holding C1 (pulled from the source by path).
fn store_with_c1(mode: Mode) -> (tempfile::TempDir, PathBuf) {
    let s = source();
    let (t, store) = new_store(mode);
    pull_ok(
        &store,
        &[&s.repo.display().to_string(), &format!("main@{}", s.c1)],
    );
    (t, store)
}

const MODES: [Mode; 3] = [Mode::Bare, Mode::BareUser, Mode::Archive];

fn from_delta(delta: &str) {
    let s = source();
    for mode in MODES {
        let (_t, store) = store_with_c1(mode);
        let out = apply(&store, delta);
        assert!(out.complete, "{delta} into {mode:?}: {out:?}");
        assert!(out.parts.parts_applied >= 1, "{out:?}");
        assert_pulled(&store, &s.repo, &s.c2, false);
        // Applying again finds everything present.
        let again = apply(&store, delta);
        assert_eq!(again.parts.parts_applied, 0, "{again:?}");
    }
}

#[test]
fn from_delta_with_bsdiff_and_rollsum() {
    from_delta("from-to");
}

#[test]
fn from_delta_without_bsdiff() {
    from_delta("nobsdiff");
}

#[test]
fn from_delta_big_endian() {
    from_delta("swapped");
}

#[test]
fn scratch_deltas() {
    let s = source();
    let sb = std::fs::read(s.deltas.join("chunked/superblock")).unwrap();
    let parts = arbor::ostree::delta::Superblock::parse(&sb)
        .unwrap()
        .parts
        .len();
    assert!(parts >= 2, "{parts} parts");
    for delta in ["scratch", "inline", "chunked"] {
        for mode in MODES {
            let (_t, store) = new_store(mode);
            let out = apply(&store, delta);
            assert!(out.complete, "{delta} into {mode:?}: {out:?}");
            assert_pulled(&store, &s.repo, &s.c2, false);
        }
    }
}
