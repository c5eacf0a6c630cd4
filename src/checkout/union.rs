//! [`Overwrite::UnionIdentical`](super::Overwrite::UnionIdentical): whether
//! an entry already in DEST is the tree's.
//!
//! Identical means the same inode as the store object (a hardlink from an
//! earlier checkout of the same repository), or the same OSTree checksum
//! recomputed from the entry: its type, owner, mode and xattrs (from
//! `lstat` and the xattr calls) and its content or symlink target. A
//! user-mode checkout does not apply owners or xattrs and adjusts modes
//! (see [`file_mode`]), so there the stored owner and xattrs are taken as
//! given and the mode is compared with what the checkout would write.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::link::{Placer, file_mode};
use crate::fs as sys;
use crate::ostree::mode::PERMS;
use crate::ostree::{Checksum, FileHeader, ObjectName, ObjectType};
use crate::store::StoreError;

pub(super) enum CompareError {
    /// An operation on the entry in DEST failed.
    Dest(&'static str, std::io::Error),
    /// Reading the object failed.
    Store(StoreError),
}

pub(super) fn identical(
    p: &Placer<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    csum: &Checksum,
    st: &Stat,
) -> Result<bool, CompareError> {
    let dest = |op| move |e: rustix::io::Errno| CompareError::Dest(op, e.into());
    let ftype = FileType::from_raw_mode(st.st_mode);
    if !matches!(ftype, FileType::RegularFile | FileType::Symlink) {
        return Ok(false);
    }
    if !p.repo.mode().is_archive() {
        let src = p
            .repo
            .object_path(&ObjectName::new(*csum, ObjectType::File));
        if let Ok(o) = rustix::fs::statat(
            p.repo.objects_dir(),
            src.as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) && (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino)
        {
            return Ok(true);
        }
    }
    let obj = p.repo.open_content(csum).map_err(CompareError::Store)?;
    let want = &obj.header;
    if want.is_symlink() != (ftype == FileType::Symlink) {
        return Ok(false);
    }
    let mut have = FileHeader {
        uid: want.uid,
        gid: want.gid,
        mode: st.st_mode,
        symlink_target: String::new(),
        xattrs: want.xattrs.clone(),
    };

    if ftype == FileType::Symlink {
        let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(dest("readlink"))?;
        let Ok(target) = target.into_string() else {
            return Ok(false);
        };
        have.symlink_target = target;
        if !p.user_mode {
            have.uid = st.st_uid;
            have.gid = st.st_gid;
            have.xattrs = sys::link_xattrs(&sys::proc_path(dir, name))
                .map_err(|e| CompareError::Dest("reading xattrs", e))?;
            have.xattrs = p.comparable_xattrs(have.xattrs, &want.xattrs);
        }
        return Ok(have.checksum(b"") == *csum);
    }

    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(dest("open"))?;
    // Judge the file that was opened, not the earlier lstat.
    let fst = rustix::fs::fstat(&fd).map_err(dest("fstat"))?;
    if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
        || fst.st_size as u64 != obj.size
    {
        return Ok(false);
    }
    if p.user_mode {
        let perms = fst.st_mode & PERMS;
        if perms == file_mode(want.mode, true) || perms == want.mode & PERMS {
            have.mode = want.mode;
        } else {
            have.mode = fst.st_mode;
        }
    } else {
        have.uid = fst.st_uid;
        have.gid = fst.st_gid;
        have.mode = fst.st_mode;
        have.xattrs =
            sys::fd_xattrs(fd.as_fd()).map_err(|e| CompareError::Dest("reading xattrs", e))?;
        have.xattrs = p.comparable_xattrs(have.xattrs, &want.xattrs);
    }
    let actual = crate::store::objects::hash_content(&have, std::fs::File::from(fd))
        .map_err(|e| CompareError::Dest("read", e))?;
    Ok(actual == *csum)
}
