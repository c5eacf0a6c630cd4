//! Reading the deletions a backend recorded in an upper (writable) dir.
//!
//! | backend          | deleted entry `P`                         | directory `D` replaced wholesale      |
//! |------------------|-------------------------------------------|---------------------------------------|
//! | kernel overlay   | `P` is a char device 0:0                  | `D` has `trusted.overlay.opaque=y`    |
//! | fuse-overlayfs   | same (as root), or a `.wh.NAME` file      | same xattr, plus `D/.wh..wh..opq`     |
//! | unionfs-fuse     | `.unionfs-fuse/P_HIDDEN~` (file or dir)   | `D_HIDDEN~` marker and a new `D`      |
//!
//! Kernel overlay has no marker files: an upper file named `.wh.x` is
//! content there. fuse-overlayfs also leaves `.wh..opq` (char device 0:0) and `.wh..wh..opq`
//! inside opaque directories; [`is_marker`] names every such bookkeeping
//! entry so the commit layer skips it instead of committing it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Backend;

/// Name of unionfs-fuse's metadata directory at the top of its RW branch.
pub const UNIONFS_META_DIR: &str = ".unionfs-fuse";
const UNIONFS_HIDDEN_SUFFIX: &[u8] = b"_HIDDEN~";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// One deletion recorded in an upper dir; paths are relative to the
/// merged root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Deletion {
    /// The entry at this path in the lower layers is deleted.
    Whiteout(PathBuf),
    /// This directory hides everything the lower layers have in it; what is
    /// in it now comes from the upper dir only.
    Opaque(PathBuf),
}

/// Whether `rel` (relative to the upper dir) is backend bookkeeping rather
/// than content: unionfs-fuse's metadata directory, fuse-overlayfs's
/// opaque markers and `.wh.` whiteout files. Overlay's 0:0 char devices are
/// content-shaped and recognised by [`list_deletions`] instead.
pub fn is_marker(backend: Backend, rel: &Path) -> bool {
    match backend {
        Backend::Unionfs => {
            rel.components().next()
                == Some(std::path::Component::Normal(OsStr::new(UNIONFS_META_DIR)))
        }
        // Kernel overlay has no marker files: `.wh.x` there is content.
        Backend::Overlay => false,
        Backend::FuseOverlayfs => rel
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b".wh.")),
    }
}

/// Every deletion recorded in `upper` by `backend`, sorted by path.
pub fn list_deletions(backend: Backend, upper: &Path) -> std::io::Result<Vec<Deletion>> {
    let mut out = Vec::new();
    match backend {
        Backend::Overlay => walk_overlay(upper, Path::new(""), false, &mut out)?,
        Backend::FuseOverlayfs => walk_overlay(upper, Path::new(""), true, &mut out)?,
        Backend::Unionfs => {
            let meta = upper.join(UNIONFS_META_DIR);
            if meta.exists() {
                walk_unionfs(&meta, Path::new(""), &mut out)?;
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Names the path in an I/O error, which `read_dir` and friends do not.
fn at(path: &Path) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn walk_overlay(
    dir: &Path,
    rel: &Path,
    fuse: bool,
    out: &mut Vec<Deletion>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        let name = entry.file_name();
        let path = entry.path();
        let ty = entry.file_type().map_err(at(&path))?;
        let child = rel.join(&name);
        if ty.is_char_device() && entry.metadata().map_err(at(&path))?.rdev() == 0 {
            if !(fuse && name.as_bytes() == b".wh..opq") {
                out.push(Deletion::Whiteout(child));
            }
        } else if ty.is_dir() {
            let mut buf = [0u8; 8];
            if let Ok(n) = rustix::fs::lgetxattr(&path, OVERLAY_OPAQUE_XATTR, &mut buf)
                && &buf[..n] == b"y"
            {
                out.push(Deletion::Opaque(child.clone()));
            }
            walk_overlay(&path, &child, fuse, out)?;
        } else if !fuse {
            continue;
        } else if let Some(target) = name.as_bytes().strip_prefix(b".wh.") {
            if target == b".wh..opq" {
                out.push(Deletion::Opaque(rel.to_path_buf()));
            } else if target != b".opq" {
                out.push(Deletion::Whiteout(rel.join(OsStr::from_bytes(target))));
            }
        }
    }
    Ok(())
}

fn walk_unionfs(dir: &Path, rel: &Path, out: &mut Vec<Deletion>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        let name = entry.file_name();
        if let Some(target) = name.as_bytes().strip_suffix(UNIONFS_HIDDEN_SUFFIX) {
            out.push(Deletion::Whiteout(rel.join(OsStr::from_bytes(target))));
        } else if entry.file_type().map_err(at(&entry.path()))?.is_dir() {
            walk_unionfs(&entry.path(), &rel.join(&name), out)?;
        }
    }
    Ok(())
}
