//! The one place that creates, replaces and removes entries under DEST.
//!
//! Every function here works on a directory descriptor and one entry name
//! that the plan has validated (no `/`, not `.` or `..`, not empty), and
//! none follows a symlink:
//! * directories are opened with `O_NOFOLLOW | O_DIRECTORY`, and reopened
//!   by their path below DEST with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)` (or, where the kernel lacks `openat2`, one
//!   `O_NOFOLLOW` component at a time);
//! * entries are made with `mkdirat`, `linkat`, `symlinkat` and
//!   `renameat`, which never follow a symlink in the final component;
//! * removal is `unlinkat` or a recursive removal that opens each
//!   directory `O_NOFOLLOW` (a symlink is removed, never its target).
//!
//! New regular files are anonymous (`O_TMPFILE`) until they are complete
//! and have their metadata; then they are linked under their name. Where
//! `O_TMPFILE` is not supported a uniquely named temp file is used and
//! renamed. A file replacing another (a union mode) is linked under a temp
//! name and renamed over the old one, so the name never goes missing.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::fs::{self, Tmpfiles, rename_noreplace};
use crate::ostree::Xattrs;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// DEST, open.
pub(super) struct Root {
    fd: OwnedFd,
    /// `openat2` is unavailable (old kernel, or refused by a seccomp filter).
    no_openat2: AtomicBool,
}

impl Root {
    /// Opens DEST, first creating it `0700` (its final mode is applied
    /// last) unless it exists. DEST is the path the user gave, so it is
    /// resolved normally, symlinks included. Returns whether it existed.
    pub fn open(dest: &Path) -> io::Result<(Root, bool)> {
        let existed = match rustix::fs::mkdir(dest, Mode::from_raw_mode(0o700)) {
            Ok(()) => false,
            Err(Errno::EXIST) => true,
            Err(e) => return Err(e.into()),
        };
        let fd = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok((
            Root {
                fd,
                no_openat2: AtomicBool::new(false),
            },
            existed,
        ))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `rel` below DEST (`""` is DEST), refusing
    /// any symlink on the way and any path that would leave DEST.
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return Ok(rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?);
        }
        if !self.no_openat2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                DIR_FLAGS,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => return Ok(fd),
                // No openat2 here: walk instead, and remember.
                Err(Errno::NOSYS) | Err(Errno::PERM) | Err(Errno::TOOBIG) => {
                    self.no_openat2.store(true, Ordering::Relaxed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut cur = open_subdir(self.fd(), ".")?;
        for comp in rel.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid path component {comp:?}"),
                ));
            }
            cur = open_subdir(cur.as_fd(), comp)?;
        }
        Ok(cur)
    }
}

/// Opens an existing subdirectory without following a symlink.
pub(super) fn open_subdir(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// `mkdirat(0700)`; `Ok(false)` when something (of any type) exists.
pub(super) fn mkdir(dir: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `lstat` of an entry; `None` when there is none.
pub(super) fn lstat(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes an entry, recursively if it is a directory; nothing if absent.
pub(super) fn remove(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    fs::remove_tree(dir, name)
}

/// Removes everything inside an open directory.
pub(super) fn clear(dir: BorrowedFd<'_>) -> io::Result<()> {
    fs::clear_dir(dir)
}

/// Names a file type in messages.
pub(super) fn type_name(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => "directory",
        FileType::RegularFile => "regular file",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

/// What to do when the name is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnExisting {
    /// Fail with `EEXIST`.
    Fail,
    /// Leave the existing entry; report [`Placed::Kept`].
    Keep,
    /// Atomically replace a non-directory. A directory in the way is
    /// removed first when `remove_dirs`, else the result is `EISDIR`.
    Replace { remove_dirs: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placed {
    Created,
    Replaced,
    Kept,
}

/// A unique name for staging an entry in the directory it goes to. It
/// cannot collide with another of ours; a collision with a tree entry or a
/// leftover is detected by `EEXIST` and another name is tried.
fn tmp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".arbor-tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `create` on fresh temp names until one is free.
fn create_tmp(create: &impl Fn(&str) -> io::Result<()>) -> io::Result<String> {
    for _ in 0..64 {
        let name = tmp_name();
        match create(&name) {
            Ok(()) => return Ok(name),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST.into())
}

/// Creates an entry under `name` with `create`, handling a taken name as
/// `on` says.
fn place(
    dir: BorrowedFd<'_>,
    name: &str,
    on: OnExisting,
    create: impl Fn(&str) -> io::Result<()>,
) -> io::Result<Placed> {
    match create(name) {
        Ok(()) => Ok(Placed::Created),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match on {
            OnExisting::Fail => Err(e),
            OnExisting::Keep => Ok(Placed::Kept),
            OnExisting::Replace { remove_dirs } => {
                let tmp = create_tmp(&create)?;
                rename_over(dir, &tmp, name, remove_dirs)?;
                Ok(Placed::Replaced)
            }
        },
        Err(e) => Err(e),
    }
}

/// Renames the staged `tmp` over `name`; the staged entry is removed if
/// that fails.
fn rename_over(dir: BorrowedFd<'_>, tmp: &str, name: &str, remove_dirs: bool) -> io::Result<()> {
    let mut r = rustix::fs::renameat(dir, tmp, dir, name);
    if remove_dirs
        && matches!(
            r,
            Err(Errno::ISDIR) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST)
        )
    {
        match remove(dir, name) {
            Ok(()) => r = rustix::fs::renameat(dir, tmp, dir, name),
            Err(e) => {
                let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
                return Err(e);
            }
        }
    }
    match r {
        Ok(()) => {
            // rename(2) does nothing when both names are links to one
            // inode (a hardlink over the same store object): drop the
            // temp name then.
            if let (Ok(Some(a)), Ok(Some(b))) = (lstat(dir, tmp), lstat(dir, name))
                && (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            {
                let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            }
            Ok(())
        }
        Err(e) => {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            Err(e.into())
        }
    }
}

/// Moves the staged entry `tmp` to `name` (never replacing anything unless
/// `on` says so); the staged entry is gone afterwards in every case.
fn publish_named(dir: BorrowedFd<'_>, tmp: &str, name: &str, on: OnExisting) -> io::Result<Placed> {
    match rename_noreplace(dir, tmp, dir, name) {
        Ok(()) => return Ok(Placed::Created),
        Err(Errno::EXIST) => {}
        Err(e) => {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            return Err(e.into());
        }
    }
    match on {
        OnExisting::Replace { remove_dirs } => {
            rename_over(dir, tmp, name, remove_dirs)?;
            Ok(Placed::Replaced)
        }
        OnExisting::Fail | OnExisting::Keep => {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            if on == OnExisting::Keep {
                Ok(Placed::Kept)
            } else {
                Err(Errno::EXIST.into())
            }
        }
    }
}

/// Hardlinks the store object `src` (relative to `src_dir`) as `name`.
pub(super) fn publish_hardlink(
    src_dir: BorrowedFd<'_>,
    src: &str,
    dir: BorrowedFd<'_>,
    name: &str,
    on: OnExisting,
) -> io::Result<Placed> {
    place(dir, name, on, |n| {
        Ok(rustix::fs::linkat(src_dir, src, dir, n, AtFlags::empty())?)
    })
}

/// Owner and xattrs for an entry, `None` in a user-mode checkout.
pub(super) struct Ownership<'a> {
    pub uid: u32,
    pub gid: u32,
    pub xattrs: &'a Xattrs,
}

/// Creates a symlink `name -> target`. With ownership it is made under a
/// temp name, chowned and given its xattrs there, then renamed into place.
pub(super) fn publish_symlink(
    dir: BorrowedFd<'_>,
    name: &str,
    target: &str,
    own: Option<Ownership<'_>>,
    on: OnExisting,
) -> io::Result<Placed> {
    let create = |n: &str| Ok(rustix::fs::symlinkat(target, dir, n)?);
    let Some(own) = own else {
        return place(dir, name, on, create);
    };
    let tmp = create_tmp(&create)?;
    let meta = (|| -> io::Result<()> {
        rustix::fs::chownat(
            dir,
            tmp.as_str(),
            Some(rustix::fs::Uid::from_raw(own.uid)),
            Some(rustix::fs::Gid::from_raw(own.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        if !own.xattrs.is_empty() {
            // No fd can be opened on a symlink: name it through the open
            // directory, /proc/self/fd/N/TMP, and use the l* calls.
            fs::set_link_xattrs(&fs::proc_path(dir, &tmp), own.xattrs)?;
        }
        Ok(())
    })();
    if let Err(e) = meta {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    publish_named(dir, &tmp, name, on)
}

/// A regular file being written in its target directory, invisible (or
/// under a temp name) until [`NewFile::publish`].
pub(super) struct NewFile<'d> {
    fd: OwnedFd,
    dir: BorrowedFd<'d>,
    /// The temp name when `O_TMPFILE` is not available.
    tmp: Option<String>,
}

impl<'d> NewFile<'d> {
    pub fn create(dir: BorrowedFd<'d>, tmpfiles: &Tmpfiles) -> io::Result<NewFile<'d>> {
        if let Some(fd) = tmpfiles.open(dir, OFlags::WRONLY, 0o600)? {
            return Ok(NewFile { fd, dir, tmp: None });
        }
        let fd = std::cell::OnceCell::new();
        let tmp = create_tmp(&|n: &str| {
            let f = rustix::fs::openat(
                dir,
                n,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let _ = fd.set(f);
            Ok(())
        })?;
        let fd = fd
            .into_inner()
            .ok_or_else(|| io::Error::other("temp file vanished"))?;
        Ok(NewFile {
            fd,
            dir,
            tmp: Some(tmp),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives the finished file its name.
    pub fn publish(mut self, name: &str, on: OnExisting) -> io::Result<Placed> {
        let dir = self.dir;
        if let Some(tmp) = self.tmp.take() {
            return publish_named(dir, &tmp, name, on);
        }
        let fd = self.fd.as_fd();
        // The store names its O_TMPFILE objects the same way.
        place(dir, name, on, |n| Ok(fs::link_tmpfile(fd, dir, n)?))
    }
}

impl Drop for NewFile<'_> {
    fn drop(&mut self) {
        // Not published (an error on the way): remove the temp name.
        if let Some(tmp) = self.tmp.take() {
            let _ = rustix::fs::unlinkat(self.dir, tmp.as_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> (tempfile::TempDir, OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(t.path(), DIR_FLAGS, Mode::empty()).unwrap();
        (t, fd)
    }

    #[test]
    fn open_dir_refuses_symlinks_and_escapes() {
        let (t, _) = tmpdir();
        std::fs::create_dir_all(t.path().join("d/a/b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("d/link")).unwrap();
        let (root, existed) = Root::open(&t.path().join("d")).unwrap();
        assert!(existed);
        root.open_dir("a/b").unwrap();
        root.open_dir("").unwrap();
        assert!(root.open_dir("link").is_err());
        assert!(root.open_dir("link/b").is_err());
        assert!(root.open_dir("../d").is_err());
        // The fallback walk is as strict.
        root.no_openat2.store(true, Ordering::Relaxed);
        root.open_dir("a/b").unwrap();
        assert!(root.open_dir("link").is_err());
        assert!(root.open_dir("../d").is_err());
        assert!(root.open_dir("a//b").is_err());
    }

    #[test]
    fn place_policies() {
        let (t, dir) = tmpdir();
        let d = dir.as_fd();
        let tf = Tmpfiles::default();
        let nf = NewFile::create(d, &tf).unwrap();
        rustix::io::write(nf.fd(), b"one").unwrap();
        assert_eq!(nf.publish("f", OnExisting::Fail).unwrap(), Placed::Created);

        let nf = NewFile::create(d, &tf).unwrap();
        rustix::io::write(nf.fd(), b"two").unwrap();
        let e = nf.publish("f", OnExisting::Fail).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let nf = NewFile::create(d, &tf).unwrap();
        assert_eq!(nf.publish("f", OnExisting::Keep).unwrap(), Placed::Kept);
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"one");

        let nf = NewFile::create(d, &tf).unwrap();
        rustix::io::write(nf.fd(), b"three").unwrap();
        let r = nf.publish("f", OnExisting::Replace { remove_dirs: false });
        assert_eq!(r.unwrap(), Placed::Replaced);
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"three");

        // A directory in the way: EISDIR unless directories may go.
        std::fs::create_dir_all(t.path().join("sub/x")).unwrap();
        let nf = NewFile::create(d, &tf).unwrap();
        let e = nf
            .publish("sub", OnExisting::Replace { remove_dirs: false })
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        let nf = NewFile::create(d, &tf).unwrap();
        let r = nf.publish("sub", OnExisting::Replace { remove_dirs: true });
        assert_eq!(r.unwrap(), Placed::Replaced);
        assert!(t.path().join("sub").is_file());

        // Symlinks, with and without ownership; never a temp name left.
        let x = Xattrs::new();
        publish_symlink(d, "l", "/target", None, OnExisting::Fail).unwrap();
        let own = Ownership {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            xattrs: &x,
        };
        let r = publish_symlink(d, "l", "other", Some(own), OnExisting::Fail);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert_eq!(
            std::fs::read_link(t.path().join("l")).unwrap(),
            Path::new("/target")
        );
        let mut names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["f", "l", "sub"]);
    }

    #[test]
    fn named_temp_files_are_cleaned_up() {
        let (t, dir) = tmpdir();
        let d = dir.as_fd();
        let tf = Tmpfiles::named();
        let nf = NewFile::create(d, &tf).unwrap();
        assert!(nf.tmp.is_some());
        drop(nf);
        let nf = NewFile::create(d, &tf).unwrap();
        nf.publish("g", OnExisting::Fail).unwrap();
        // Other writers, on other filesystems, are not affected.
        let other = NewFile::create(d, &Tmpfiles::default()).unwrap();
        assert!(other.tmp.is_none());
        drop(other);
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["g"]);
    }
}
