//! Directory-descriptor helpers: create, list and remove trees, temporary
//! files and no-replace renames.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

/// Opens the directory `name` in `dir`, not following a final symlink.
pub(crate) fn open_dir(dir: impl AsFd, name: impl rustix::path::Arg) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `mkdirat` that accepts an existing directory.
pub(crate) fn ensure_dir(dir: impl AsFd, name: &str, mode: u32) -> std::io::Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` inside `dir` recursively, never following symlinks (a
/// symlink is removed, not its target). Missing entries are not an error.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = open_dir(dir, name)?;
    clear_dir(sub.as_fd())?;
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything inside an open directory.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> std::io::Result<()> {
    for name in list_dir(dir)? {
        let Ok(name) = name.into_string() else {
            continue;
        };
        remove_tree(dir, &name)?;
    }
    Ok(())
}

/// Names in an open directory (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Vec<std::ffi::OsString>> {
    Ok(list_dir_typed(dir)?.into_iter().map(|(n, _)| n).collect())
}

/// Names and `d_type`s in an open directory (without `.` and `..`).
pub(crate) fn list_dir_typed(
    dir: BorrowedFd<'_>,
) -> std::io::Result<Vec<(std::ffi::OsString, FileType)>> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((
            std::ffi::OsString::from_vec(name.to_vec()),
            entry.file_type(),
        ));
    }
    Ok(out)
}

/// `linkat(AT_EMPTY_PATH)` was refused once (it needs CAP_DAC_READ_SEARCH):
/// go through /proc from then on. Process-wide on purpose: it depends on
/// the process's capabilities, not on a filesystem.
static NO_EMPTY_PATH: AtomicBool = AtomicBool::new(false);

/// Gives an `O_TMPFILE` a name: `linkat` with `AT_EMPTY_PATH` when
/// privileged, else through its `/proc/self/fd` link.
pub(crate) fn link_tmpfile(file: impl AsFd, dir: impl AsFd, name: &str) -> rustix::io::Result<()> {
    if !NO_EMPTY_PATH.load(Ordering::Relaxed) {
        match rustix::fs::linkat(&file, "", &dir, name, AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::PERM) => {
                NO_EMPTY_PATH.store(true, Ordering::Relaxed);
            }
            r => return r,
        }
    }
    let proc = format!("/proc/self/fd/{}", file.as_fd().as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc.as_str(),
        &dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
}

/// Whether `O_TMPFILE` works on one filesystem: learnt from the first
/// attempt and kept by whoever writes into it (a store transaction for its
/// staging directory, a checkout for DEST), so that a filesystem without it
/// (NFS, most FUSE filesystems) costs one failed `open` per operation, and
/// does not make other filesystems of the same process use named files.
#[derive(Debug, Default)]
pub(crate) struct Tmpfiles {
    refused: AtomicBool,
}

impl Tmpfiles {
    /// State that answers `None` from the start, as on a filesystem
    /// without `O_TMPFILE`.
    #[cfg(test)]
    pub(crate) fn named() -> Tmpfiles {
        Tmpfiles {
            refused: AtomicBool::new(true),
        }
    }

    /// An anonymous file in `dir` (`O_TMPFILE`, plus `flags`), or `None`
    /// when the filesystem cannot make one and the caller must use a named
    /// file.
    pub(crate) fn open(
        &self,
        dir: impl AsFd,
        flags: rustix::fs::OFlags,
        mode: u32,
    ) -> rustix::io::Result<Option<OwnedFd>> {
        if self.refused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match rustix::fs::openat(
            &dir,
            ".",
            flags | rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => Ok(Some(fd)),
            // EISDIR: a kernel without O_TMPFILE; EOPNOTSUPP/EINVAL: a
            // filesystem without it.
            Err(rustix::io::Errno::OPNOTSUPP)
            | Err(rustix::io::Errno::ISDIR)
            | Err(rustix::io::Errno::INVAL) => {
                self.refused.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Renames without replacing: `renameat2(RENAME_NOREPLACE)`, or where the
/// filesystem lacks it (NFS, FUSE), `linkat` then `unlinkat` of the old
/// name, which is as atomic for a regular file (the link fails if the new
/// name exists). Directories fall back to a plain rename, which refuses a
/// non-empty target.
pub(crate) fn rename_noreplace(
    old_dir: impl AsFd,
    old: &str,
    new_dir: impl AsFd,
    new: &str,
) -> rustix::io::Result<()> {
    match rustix::fs::renameat_with(
        &old_dir,
        old,
        &new_dir,
        new,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {}
        r => return r,
    }
    let st = rustix::fs::statat(&old_dir, old, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
        return rustix::fs::renameat(&old_dir, old, &new_dir, new);
    }
    rustix::fs::linkat(&old_dir, old, &new_dir, new, AtFlags::empty())?;
    rustix::fs::unlinkat(&old_dir, old, AtFlags::empty())
}
