//! Directory-descriptor helpers shared by the store.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode};

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
    let sub = match super::repo::open_dir(dir, name) {
        Ok(fd) => fd,
        Err(super::error::StoreError::Io { source, .. }) => return Err(source),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
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
/// go through /proc from then on.
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
