//! Whiteout layers: how a commit's `.wh.` entries reach a union filesystem.
//!
//! A checkout-cache entry holds a commit's content without its whiteout
//! markers, so the same entry serves every stage and every backend. A
//! commit `L` that hides names of the layers below gets, in each stage,
//! a small *mask* layer placed directly below it, holding one whiteout in
//! the backend's own form per hidden name:
//! * kernel overlay and fuse-overlayfs: a character device 0:0;
//! * unionfs-fuse: `.unionfs-fuse/DIR/NAME_HIDDEN~`.
//!
//! A mask hides only what is below it, so `L`'s own entries stay visible:
//! exactly "remove from the layers below, then add `L`". An opaque
//! directory (`.wh..wh..opq`) becomes one whiteout per name the layers
//! below have in that directory; the stage's layers are known, so this is
//! exact, and it works for the root directory too (overlayfs ignores the
//! opaque xattr on a layer's root).
//!
//! Masks are made by arbor, from validated names, under the stage's own
//! directory; the mount layer exempts them from its steering checks (see
//! [`crate::stage::mount`]).

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use super::StageError;
use super::merge::{LayerWhiteouts, MergedDir, Merger, Node};
use crate::fs::ensure_dir;
use crate::ostree::Checksum;
use crate::stage::mount::Backend;

const UNIONFS_META: &str = ".unionfs-fuse";
const UNIONFS_HIDDEN_SUFFIX: &str = "_HIDDEN~";

/// Builds in `dest` (an empty directory) the mask for a layer whose
/// whiteouts are `w` and below which lie `below` (commits, bottom first).
pub fn build(
    merger: &Merger<'_>,
    backend: Backend,
    below: &[Checksum],
    w: &LayerWhiteouts,
    dest: &Path,
) -> Result<(), StageError> {
    // (directory, name) pairs, deduplicated and sorted.
    let mut hidden: BTreeSet<(String, String)> = w.hidden.iter().cloned().collect();
    if !w.opaque.is_empty() {
        let root = merger.root(below)?;
        for dir in &w.opaque {
            if let Some(d) = lookup_dir(merger, &root, dir)? {
                for name in merger.children(&d)?.into_keys() {
                    hidden.insert((dir.clone(), name));
                }
            }
        }
    }
    let top = crate::store::repo::open_dir(rustix::fs::CWD, dest)?;
    for (dir, name) in &hidden {
        let io = |e: std::io::Error| {
            StageError::io(&dest.join(dir).join(name), "creating a whiteout", e)
        };
        match backend {
            Backend::Overlay | Backend::FuseOverlayfs => {
                let d = open_path(&top, dir.split('/').filter(|c| !c.is_empty())).map_err(io)?;
                match rustix::fs::mknodat(
                    &d,
                    name.as_str(),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                ) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io(e.into())),
                }
            }
            Backend::Unionfs => {
                let d = open_path(
                    &top,
                    std::iter::once(UNIONFS_META).chain(dir.split('/').filter(|c| !c.is_empty())),
                )
                .map_err(io)?;
                let marker = format!("{name}{UNIONFS_HIDDEN_SUFFIX}");
                rustix::fs::openat(
                    &d,
                    marker.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(|e| io(e.into()))?;
            }
        }
    }
    Ok(())
}

/// Opens (creating) the directory `components` below `top`.
fn open_path<'a>(
    top: &OwnedFd,
    components: impl Iterator<Item = &'a str>,
) -> std::io::Result<OwnedFd> {
    let mut cur = rustix::fs::openat(
        top,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in components {
        ensure_dir(cur.as_fd(), c, 0o755)?;
        cur = rustix::fs::openat(
            &cur,
            c,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(cur)
}

/// The merged directory at `path` (`/`-joined) below `root`, if the
/// layers have a directory there.
fn lookup_dir(
    merger: &Merger<'_>,
    root: &MergedDir,
    path: &str,
) -> Result<Option<MergedDir>, StageError> {
    let mut cur = root.clone();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        match merger.children(&cur)?.remove(c) {
            Some(Node::Dir(d)) => cur = d,
            _ => return Ok(None),
        }
    }
    Ok(Some(cur))
}
