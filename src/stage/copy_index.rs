//! The copy backend's file index: which file of a copied root still is the
//! store object it was copied from, so `stage commit` need not re-hash it.
//!
//! A union stage's commit reads only its writable layer. A copy has no such
//! layer: every file is its own inode (reflinked or copied), so without help
//! a commit would read and hash the whole root. Right after the copy is
//! made, each regular file's (device, inode, size, ctime) is recorded with
//! the checksum of the object it came from (`copy-index` in the stage
//! directory). At commit time a file whose four values still match is
//! taken as that object without being opened; anything that changes a
//! file's content, owner, mode or xattrs also changes its ctime.
//!
//! Coarse timestamps: the kernel may stamp ctimes with a clock that ticks
//! every few milliseconds, so a change made in the same tick as the copy
//! could keep the ctime the index saw. The index is therefore taken only
//! after a pause longer than a tick: any later change gets a later ctime.
//!
//! Only a root that is an exact image of its objects may use an index: one
//! checked out as root in normal mode from a store whose objects carry the
//! metadata itself (not bare-user-only, which canonicalises modes).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType};

use super::StageError;
use crate::ostree::Checksum;
use crate::store::Repo;
use crate::store::commit::KnownFile;
use crate::store::repo::open_dir;

pub const INDEX_FILE: &str = "copy-index";
/// One record: dev, ino, size, ctime seconds (8 bytes each), ctime
/// nanoseconds (4), checksum (32).
const RECORD: usize = 8 * 4 + 4 + 32;
/// Longer than any kernel's coarse clock tick (at most 10 ms at HZ=100).
const TICK: std::time::Duration = std::time::Duration::from_millis(25);

/// Records every regular file of `root`, a checkout of the tree
/// `root_tree`, as it is now.
pub fn build(repo: &Repo, root: &Path, root_tree: Checksum) -> Result<Vec<u8>, StageError> {
    std::thread::sleep(TICK);
    let fd = open_dir(rustix::fs::CWD, root)?;
    let mut out = Vec::new();
    walk(repo, fd.as_fd(), root_tree, 0, &mut out)?;
    Ok(out)
}

fn walk(
    repo: &Repo,
    dir: BorrowedFd<'_>,
    tree: Checksum,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), StageError> {
    if depth > crate::store::commit::MAX_DEPTH {
        return Ok(());
    }
    let t = repo.load_dirtree(&tree)?;
    let records: Vec<Vec<u8>> = t
        .files
        .par_iter()
        .filter_map(|f| {
            let st = rustix::fs::statat(dir, f.name.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
            (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| {
                let mut r = Vec::with_capacity(RECORD);
                r.extend_from_slice(&st.st_dev.to_le_bytes());
                r.extend_from_slice(&st.st_ino.to_le_bytes());
                r.extend_from_slice(&(st.st_size as u64).to_le_bytes());
                r.extend_from_slice(&(st.st_ctime as i64).to_le_bytes());
                r.extend_from_slice(&(st.st_ctime_nsec as u32).to_le_bytes());
                r.extend_from_slice(f.checksum.as_bytes());
                r
            })
        })
        .collect();
    for r in records {
        out.extend_from_slice(&r);
    }
    for d in &t.dirs {
        let sub: OwnedFd = match open_dir(dir, d.name.as_str()) {
            Ok(fd) => fd,
            // Not there: nothing to record below it.
            Err(_) => continue,
        };
        walk(repo, sub.as_fd(), d.tree, depth + 1, out)?;
    }
    Ok(())
}

/// Parses an index; a damaged one is ignored (it only saves work).
pub fn parse(data: &[u8]) -> HashMap<(u64, u64), KnownFile> {
    let mut map = HashMap::new();
    if !data.len().is_multiple_of(RECORD) {
        return map;
    }
    for r in data.chunks_exact(RECORD) {
        let u = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap_or_default());
        let Ok(checksum) = Checksum::from_slice(&r[36..68], "copy index") else {
            continue;
        };
        map.insert(
            (u(0), u(8)),
            KnownFile {
                size: u(16),
                ctime: u(24) as i64,
                ctime_nsec: u32::from_le_bytes(r[32..36].try_into().unwrap_or_default()),
                checksum,
            },
        );
    }
    map
}
