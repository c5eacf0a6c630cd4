//! Small system-call wrappers beyond what rustix offers.
//! All of the crate's `unsafe` is here, but for the stage sandbox's
//! fork-to-exec code (`stage::sandbox`), which must make raw system calls
//! between fork and exec, and its signal handler (`stage::sandbox::signals`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::XattrFlags;

use crate::ostree::{Xattr, Xattrs};

/// Takes an open-file-description lock on the whole file (`F_OFD_SETLK[W]`),
/// the kind libostree takes on `.lock`, so arbor and ostree exclude each
/// other. Unlike classic POSIX locks they belong to the open file, not the
/// process, so closing some other descriptor of the file keeps them.
/// Returns `Ok(false)` when `wait` is false and the lock is held elsewhere.
pub fn ofd_lock(fd: BorrowedFd<'_>, exclusive: bool, wait: bool) -> io::Result<bool> {
    ofd_lock_range(fd, 0, 0, exclusive, wait)
}

/// [`ofd_lock`] on `len` bytes from `start` (`len` 0: to the end of the
/// file), so one file can carry several independent locks. Taking a lock
/// on a range this descriptor already locks converts it (shared to
/// exclusive and back); a conversion refused with `wait` false leaves the
/// old lock in place.
pub fn ofd_lock_range(
    fd: BorrowedFd<'_>,
    start: u32,
    len: u32,
    exclusive: bool,
    wait: bool,
) -> io::Result<bool> {
    // SAFETY: `flock` is plain data; zeroed is a valid value, and we set
    // every field the kernel reads for a range lock.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start.into();
    fl.l_len = len.into();
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: `fd` is a valid open descriptor for the call's duration and
        // `fl` a valid, initialised `struct flock` the kernel may read.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Whether another open file description holds a lock on the whole file
/// that an exclusive lock would conflict with (`F_OFD_GETLK`).
pub fn ofd_locked_elsewhere(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: as in `ofd_lock`: plain data, every field the kernel reads set.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: `fd` is open for the call; `fl` is a valid `struct flock`.
    let r = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_OFD_GETLK,
            &mut fl as *mut libc::flock,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Every xattr of an open file, sorted by name.
pub fn fd_xattrs(fd: impl AsFd) -> io::Result<Xattrs> {
    let fd = fd.as_fd();
    collect_xattrs(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// Every xattr of a path, not following a final symlink, sorted by name.
/// Only used for symlinks, whose xattrs cannot be read through a file
/// descriptor; callers pass `/proc/self/fd/DIRFD/NAME` so no untrusted path
/// is walked.
pub fn link_xattrs(path: &Path) -> io::Result<Xattrs> {
    collect_xattrs(
        |buf| rustix::fs::llistxattr(path, buf),
        |name, buf| rustix::fs::lgetxattr(path, name, buf),
    )
}

fn collect_xattrs(
    list: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut get: impl FnMut(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Xattrs> {
    let names = read_sized(list)?;
    let mut out = Vec::new();
    for name in split_names(&names) {
        match read_sized(|buf| get(name, buf)) {
            // libostree skips empty values when it reads xattrs, so they
            // are not part of any checksum; do the same.
            Ok(value) if value.is_empty() => {}
            Ok(value) => out.push(Xattr {
                name: name.to_vec(),
                value,
            }),
            // Removed between list and get: not there any more.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Xattrs::from_unsorted(out).map_err(io::Error::other)
}

pub fn set_fd_xattrs(fd: impl AsFd, xattrs: &Xattrs) -> io::Result<()> {
    for x in xattrs {
        rustix::fs::fsetxattr(fd.as_fd(), x.name.as_slice(), &x.value, XattrFlags::empty())?;
    }
    Ok(())
}

pub fn set_link_xattrs(path: &Path, xattrs: &Xattrs) -> io::Result<()> {
    for x in xattrs {
        rustix::fs::lsetxattr(path, x.name.as_slice(), &x.value, XattrFlags::empty())?;
    }
    Ok(())
}

/// One xattr value of an open file, `None` when absent.
pub fn fd_xattr(fd: impl AsFd, name: &str) -> io::Result<Option<Vec<u8>>> {
    let fd = fd.as_fd();
    match read_sized(|buf| rustix::fs::fgetxattr(fd, name, buf)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `/proc/self/fd/N/NAME`: a path to `name` inside an open directory.
pub fn proc_path(dir: BorrowedFd<'_>, name: &str) -> std::path::PathBuf {
    format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), name).into()
}

/// Calls a "fill this buffer" syscall, growing the buffer on ERANGE.
pub(crate) fn read_sized(
    mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The names in a NUL-separated `listxattr` result.
pub(crate) fn split_names(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|b| *b == 0).filter(|n| !n.is_empty())
}

/// glibc's malloc only: blocks up to `mmap_max` bytes come from the heap
/// instead of a fresh mapping each, freed memory at the top of the heap is
/// kept up to `trim` bytes, and all threads share one arena (so a block one
/// thread frees is the one another reuses). Process-wide; nothing on other
/// C libraries.
pub(crate) fn malloc_keep(mmap_max: i32, trim: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; the values are in
    // the ranges glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_max);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap_max, trim);
}
