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
#[path = "common/delta.rs"]
mod delta_support;
#[path = "common/pull.rs"]
mod pull_support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use arbor::store::Repo;
use common::*;
use delta_support::*;
use pull_support::*;

pub struct Source {
    pub repo: PathBuf,
    pub c1: String,
    pub c2: String,
    pub deltas: PathBuf,
}

/// The delta source, with deltas written beside it (not into it).
fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(|| {
        let d = delta_source();
        let (repo, c1, c2) = (&d.repo, &d.c1, &d.c2);
        let deltas = d.base.join("offline-deltas");
        let ft = ["--from", c1, "--to", c2, "--min-fallback-size=0"];
        generate_to_dir(repo, &deltas, "from-to", &ft);
        generate_to_dir(
            repo,
            &deltas,
            "nobsdiff",
            &[&ft[..], &["--disable-bsdiff"]].concat(),
        );
        generate_to_dir(
            repo,
            &deltas,
            "swapped",
            &[&ft[..], &["--swap-endianness"]].concat(),
        );
        let sc = ["--empty", "--to", c2, "--min-fallback-size=0"];
        generate_to_dir(repo, &deltas, "scratch", &sc);
        generate_to_dir(repo, &deltas, "inline", &[&sc[..], &["--inline"]].concat());
        // 1 MB parts: the 1 MiB big.bin gets a part of its own, so there
        // are several, applied by two workers.
        generate_to_dir(
            repo,
            &deltas,
            "chunked",
            &[&sc[..], &["--max-chunk-size=1"]].concat(),
        );
        Source {
            repo: repo.clone(),
            c1: c1.clone(),
            c2: c2.clone(),
            deltas,
        }
    })
}

fn apply(store: &Path, delta: &str) -> arbor::pull::delta::OfflineOutcome {
    let repo = Repo::open(store).unwrap();
    arbor::pull::delta::apply_offline(
        &repo,
        &source().deltas.join(delta),
        &arbor::pull::delta::OfflineOptions::default(),
        &arbor::progress::NoProgress,
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
