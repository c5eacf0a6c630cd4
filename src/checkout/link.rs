//! How each file gets into DEST: the link-mode decision (once per
//! checkout) and hardlink, reflink or copy per file.
//!
//! A hardlink is possible when the object file is exactly what the checkout
//! must create: `bare` objects carry their real owner, mode and xattrs
//! (normal mode); `bare-user*` objects carry the mode a user-mode checkout
//! gives (owner: whoever checks out). Anything else must be a new inode:
//! reflinked where the filesystem can share blocks (`FICLONE`; probed on
//! the first file, remembered), copied otherwise — with `copy_file_range`
//! from the object for large files of uncompressed stores, or through the
//! store's reader (which inflates `archive` objects).

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::CheckoutError;
use super::plan::display_path;
use super::safe::{self, NewFile, OnExisting, Ownership, Placed};
use super::{CheckoutOptions, LinkMode, Method, Overwrite, Stats, union};
use crate::fs::Tmpfiles;
use crate::ostree::mode::{PERMS, S_IFMT};
use crate::ostree::xattrs::is_overlay_xattr;
use crate::ostree::{Checksum, ObjectName, ObjectType, Xattr, Xattrs};
use crate::store::{ContentObject, Repo, RepoMode, StoreError};

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IRUSR: u32 = 0o400;

/// Files at least this large from uncompressed stores are copied in the
/// kernel (`copy_file_range`); smaller ones go through a buffer, which
/// saves reopening the object.
const KERNEL_COPY_MIN: u64 = 256 * 1024;
/// Buffer for user-space copies (and inflating archive objects).
const COPY_BUF: usize = 256 * 1024;

/// The method chosen for a checkout, and why.
pub(super) struct Decision {
    pub method: Method,
    pub reason: String,
}

/// Chooses hardlink, reflink or copy for the whole checkout.
pub(super) fn decide(
    repo: &Repo,
    opts: &CheckoutOptions,
    user_mode: bool,
    dest: &Path,
) -> Result<Decision, CheckoutError> {
    let decision = |method, reason: String| Ok(Decision { method, reason });
    if opts.link == LinkMode::Copy && !opts.require_hardlinks {
        return decision(Method::Copy, "copying was asked for".into());
    }
    let objects = rustix::fs::fstat(repo.objects_dir()).map_err(|e| CheckoutError::Io {
        path: repo.path().join("objects"),
        op: "fstat",
        source: e.into(),
    })?;
    let same_fs = objects.st_dev == dest_device(dest)?;
    let mode = repo.mode();
    let checkout_kind = if user_mode { "user-mode" } else { "normal" };
    let hardlink: Result<String, String> = match (mode, user_mode) {
        (RepoMode::Archive, _) => {
            Err("the repository is in archive mode (objects are compressed)".into())
        }
        (RepoMode::Bare, true) => Err(
            "a bare repository's objects carry their stored owners and setuid bits; \
             a user-mode checkout must not share them"
                .into(),
        ),
        (RepoMode::BareUser, false) => Err(
            "a bare-user repository's objects are owned by the repository's user; \
             only a user-mode checkout can share them"
                .into(),
        ),
        _ if !same_fs => Err("the repository and DEST are on different filesystems".into()),
        _ => Ok(format!(
            "{mode} repository, {checkout_kind} checkout, same filesystem: store objects are shared"
        )),
    };
    let reflink: Result<(), String> = if mode.is_archive() {
        Err("the repository is in archive mode (objects are compressed)".into())
    } else if !same_fs {
        Err("the repository and DEST are on different filesystems".into())
    } else {
        Ok(())
    };
    match (opts.link, hardlink) {
        (_, Err(why)) if opts.require_hardlinks => Err(CheckoutError::HardlinkRequired {
            path: dest.to_path_buf(),
            object: None,
            reason: why,
        }),
        (_, Ok(why)) if opts.require_hardlinks => decision(Method::Hardlink, why),
        (LinkMode::Auto | LinkMode::Hardlink, Ok(why)) => decision(Method::Hardlink, why),
        (LinkMode::Auto, Err(why)) => match reflink {
            Ok(()) => decision(
                Method::Reflink,
                format!("no hardlinks ({why}); reflinking where the filesystem can"),
            ),
            Err(no_reflink) => decision(
                Method::Copy,
                format!("no hardlinks ({why}); no reflinks ({no_reflink})"),
            ),
        },
        (LinkMode::Hardlink, Err(why)) => decision(Method::Copy, format!("no hardlinks: {why}")),
        (LinkMode::Reflink, _) => match reflink {
            Ok(()) => decision(Method::Reflink, "reflinks were asked for".into()),
            Err(why) => decision(Method::Copy, format!("no reflinks: {why}")),
        },
        (LinkMode::Copy, _) => decision(Method::Copy, "copying was asked for".into()),
    }
}

/// The device DEST is (or will be, once created) on: that of DEST, else of
/// its parent.
fn dest_device(dest: &Path) -> Result<u64, CheckoutError> {
    let stat = |p: &Path| {
        rustix::fs::stat(p).map_err(|e| CheckoutError::Io {
            path: p.to_path_buf(),
            op: "stat",
            source: e.into(),
        })
    };
    match rustix::fs::stat(dest) {
        Ok(st) => Ok(st.st_dev),
        Err(Errno::NOENT) => {
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            Ok(stat(parent)?.st_dev)
        }
        Err(e) => Err(CheckoutError::Io {
            path: dest.to_path_buf(),
            op: "stat",
            source: e.into(),
        }),
    }
}

/// Whether `FICLONE` works here, learned from the first attempt.
#[derive(Default)]
struct ReflinkProbe {
    unsupported: AtomicBool,
    why: OnceLock<String>,
}

impl ReflinkProbe {
    /// Clones `src` into `dst`; `Ok(false)` when the filesystem cannot
    /// (then and for the rest of the checkout, the caller copies).
    fn clone_file(&self, dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> std::io::Result<bool> {
        if self.unsupported.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => Ok(true),
            Err(
                e @ (Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS),
            ) => {
                let _ = self.why.set(format!(
                    "the filesystem cannot reflink (FICLONE: {})",
                    std::io::Error::from(e)
                ));
                self.unsupported.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Places files; shared by the worker threads.
pub(super) struct Placer<'a> {
    pub repo: &'a Repo,
    pub dest: &'a Path,
    pub user_mode: bool,
    pub overwrite: Overwrite,
    pub whiteouts: bool,
    pub require_hardlinks: bool,
    pub method: Method,
    pub stats: &'a Stats,
    reflink: ReflinkProbe,
    /// Whether DEST's filesystem makes `O_TMPFILE`s.
    tmpfiles: Tmpfiles,
    pub keep_overlay_xattrs: bool,
    /// The store's `objects/XX` directories, opened on first use (256 at
    /// most) to list bare objects' xattrs.
    object_dirs: Box<[OnceLock<OwnedFd>]>,
}

/// How an entry came to be, for the counters.
#[derive(Clone, Copy)]
enum How {
    Hardlinked,
    Reflinked,
    Copied,
}

/// Result of trying to hardlink: done, or copy it (with the object if it
/// was opened on the way).
enum Linked {
    Done,
    Copy(Option<ContentObject>),
}

impl<'a> Placer<'a> {
    pub fn new(
        repo: &'a Repo,
        dest: &'a Path,
        opts: &CheckoutOptions,
        user_mode: bool,
        method: Method,
        stats: &'a Stats,
    ) -> Self {
        Placer {
            repo,
            dest,
            user_mode,
            overwrite: opts.overwrite,
            whiteouts: opts.whiteouts,
            require_hardlinks: opts.require_hardlinks,
            method,
            stats,
            reflink: ReflinkProbe::default(),
            tmpfiles: Tmpfiles::default(),
            keep_overlay_xattrs: opts.keep_overlay_xattrs,
            object_dirs: (0..256).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The method actually used: a reflink checkout on a filesystem that
    /// turned out unable to reflink became a copy.
    pub fn final_method(&self, reason: String) -> (Method, String) {
        if self.method == Method::Reflink
            && self.stats.reflinked.load(Ordering::Relaxed) == 0
            && let Some(why) = self.reflink.why.get()
        {
            return (
                Method::Copy,
                format!("{reason}; {why}, so files were copied"),
            );
        }
        (self.method, reason)
    }

    fn on_existing(&self) -> OnExisting {
        match self.overwrite {
            Overwrite::Refuse | Overwrite::UnionIdentical => OnExisting::Fail,
            Overwrite::UnionAdd => OnExisting::Keep,
            Overwrite::Union => OnExisting::Replace {
                remove_dirs: self.whiteouts,
            },
        }
    }

    /// Places the content object `csum` as `name` in `dir` (which is
    /// `rel` below DEST).
    pub fn place_file(
        &self,
        dir: BorrowedFd<'_>,
        rel: &str,
        name: &str,
        csum: &Checksum,
    ) -> Result<(), CheckoutError> {
        let at = At {
            dest: self.dest,
            rel,
            name,
            csum,
        };
        if matches!(
            self.overwrite,
            Overwrite::UnionAdd | Overwrite::UnionIdentical
        ) && let Some(st) = safe::lstat(dir, name).map_err(at.io("lstat"))?
        {
            // Decide before doing any work for the new file.
            if self.overwrite == Overwrite::UnionIdentical
                && !union::identical(self, dir, name, csum, &st).map_err(|e| at.wrap(e))?
            {
                return Err(CheckoutError::NotIdentical {
                    path: at.path(),
                    object: *csum,
                });
            }
            Stats::add(&self.stats.kept, 1);
            return Ok(());
        }
        let on = self.on_existing();
        let obj = match self.method {
            Method::Hardlink => match self.hardlink(dir, &at, on)? {
                Linked::Done => return Ok(()),
                Linked::Copy(obj) => obj,
            },
            Method::Reflink | Method::Copy => None,
        };
        let obj = match obj {
            Some(o) => o,
            None => self.open_content(&at)?,
        };
        if obj.header.is_symlink() {
            let xattrs = self.xattrs_to_apply(&obj.header.xattrs, &at);
            let own = (!self.user_mode).then_some(Ownership {
                uid: obj.header.uid,
                gid: obj.header.gid,
                xattrs: &xattrs,
            });
            let r = safe::publish_symlink(dir, name, &obj.header.symlink_target, own, on);
            self.count(r, &at, How::Copied, true)
        } else {
            self.regular(dir, &at, obj, on)
        }
    }

    /// The xattrs an entry gets: without those that steer a union
    /// filesystem unless they are to be kept (the entry is noted then).
    fn xattrs_to_apply<'x>(&self, xattrs: &'x Xattrs, at: &At<'_>) -> Cow<'x, Xattrs> {
        if self.keep_overlay_xattrs || self.user_mode || !xattrs.has_overlay() {
            return Cow::Borrowed(xattrs);
        }
        self.stats.dropped_overlay_xattrs(at.rel, at.name);
        Cow::Owned(xattrs.without_overlay())
    }

    /// The xattrs of an entry found in DEST, made comparable with the
    /// object's `want` when overlay xattrs are not applied: the entry's own
    /// are ignored and the object's taken as given.
    pub(super) fn comparable_xattrs(&self, have: Xattrs, want: &Xattrs) -> Xattrs {
        if self.keep_overlay_xattrs || (!want.has_overlay() && !have.has_overlay()) {
            return have;
        }
        let mut list: Vec<Xattr> = have.without_overlay().iter().cloned().collect();
        list.extend(want.iter().filter(|x| is_overlay_xattr(&x.name)).cloned());
        // The names come from valid lists, so this cannot fail.
        Xattrs::from_unsorted(list).unwrap_or(have)
    }

    /// Whether the bare object `src` carries xattrs that steer a union
    /// filesystem (a hardlink would bring them along). One `llistxattr` per
    /// file, through the object's directory, opened once per checkout.
    fn object_has_overlay_xattrs(
        &self,
        at: &At<'_>,
        src: &str,
        is_symlink: bool,
    ) -> Result<bool, CheckoutError> {
        let (dir, file) = src.split_once('/').unwrap_or(("", src));
        let slot = &self.object_dirs[usize::from(at.csum.as_bytes()[0])];
        let dfd = match slot.get() {
            Some(fd) => fd,
            None => {
                let fd = crate::fs::open_dir(self.repo.objects_dir(), dir)
                    .map_err(at.io("opening the object's directory"))?;
                // Another thread may have opened it meanwhile: either does.
                let _ = slot.set(fd);
                slot.get().expect("set just above")
            }
        };
        // Most objects have no or few xattrs: try a stack buffer first.
        let mut buf = [0u8; 512];
        let names: Cow<'_, [u8]> = if is_symlink {
            // No descriptor can be opened on a symlink: go through /proc.
            let path = crate::fs::proc_path(dfd.as_fd(), file);
            match rustix::fs::llistxattr(&path, &mut buf) {
                Ok(n) => Cow::Borrowed(&buf[..n]),
                Err(rustix::io::Errno::RANGE) => Cow::Owned(
                    crate::fs::read_sized(|b| rustix::fs::llistxattr(&path, b))
                        .map_err(at.io("listing the object's xattrs"))?,
                ),
                Err(e) => return Err(at.io("listing the object's xattrs")(e.into())),
            }
        } else {
            // Cheaper than a walk through /proc.
            let fd = rustix::fs::openat(
                dfd,
                file,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| at.io("opening the object")(e.into()))?;
            match rustix::fs::flistxattr(&fd, &mut buf) {
                Ok(n) => Cow::Borrowed(&buf[..n]),
                Err(rustix::io::Errno::RANGE) => Cow::Owned(
                    crate::fs::read_sized(|b| rustix::fs::flistxattr(&fd, b))
                        .map_err(at.io("listing the object's xattrs"))?,
                ),
                Err(e) => return Err(at.io("listing the object's xattrs")(e.into())),
            }
        };
        Ok(crate::fs::split_names(&names).any(is_overlay_xattr))
    }

    pub(super) fn open_content(&self, at: &At<'_>) -> Result<ContentObject, CheckoutError> {
        self.repo.open_content(at.csum).map_err(|e| at.store(e))
    }

    fn hardlink(
        &self,
        dir: BorrowedFd<'_>,
        at: &At<'_>,
        on: OnExisting,
    ) -> Result<Linked, CheckoutError> {
        let src = self
            .repo
            .object_path(&ObjectName::new(*at.csum, ObjectType::File));
        let mut obj = None;
        let is_symlink;
        if self.repo.mode() == RepoMode::BareUser {
            // Only user.ostreemeta says whether the object is a symlink.
            let o = self.open_content(at)?;
            if o.header.is_symlink() || o.size == 0 || o.header.mode & S_IRUSR == 0 {
                return Ok(Linked::Copy(Some(o)));
            }
            is_symlink = false;
            obj = Some(o);
        } else {
            let st = match rustix::fs::statat(
                self.repo.objects_dir(),
                src.as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(Errno::NOENT) => {
                    return Err(at.store(StoreError::MissingObject(ObjectName::new(
                        *at.csum,
                        ObjectType::File,
                    ))));
                }
                Err(e) => return Err(at.io("reading the object")(e.into())),
            };
            match FileType::from_raw_mode(st.st_mode) {
                // bare-user-only symlinks are made fresh, as ostree does.
                FileType::Symlink if self.repo.mode() != RepoMode::Bare => {
                    return Ok(Linked::Copy(None));
                }
                FileType::Symlink => is_symlink = true,
                FileType::RegularFile => {
                    let unreadable = self.user_mode && st.st_mode & S_IRUSR == 0;
                    // Empty files would all share one inode: EMLINK.
                    if st.st_size == 0 || unreadable {
                        return Ok(Linked::Copy(None));
                    }
                    is_symlink = false;
                }
                _ => {
                    return Err(at.store(StoreError::BadObject {
                        object: ObjectName::new(*at.csum, ObjectType::File),
                        reason: format!("unexpected file mode {:#o} in the store", st.st_mode),
                    }));
                }
            }
        }
        // A bare object carries its xattrs; one that must lose some is
        // copied (normal mode only: user mode applies no xattrs, and
        // bare-user objects keep theirs inside user.ostreemeta).
        if self.repo.mode() == RepoMode::Bare
            && !self.user_mode
            && !self.keep_overlay_xattrs
            && self.object_has_overlay_xattrs(at, &src, is_symlink)?
        {
            return Ok(Linked::Copy(obj));
        }
        let r = safe::publish_hardlink(self.repo.objects_dir(), &src, dir, at.name, on);
        match r {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMLINK | libc::EPERM | libc::EXDEV)
                ) =>
            {
                if self.require_hardlinks {
                    return Err(CheckoutError::HardlinkRequired {
                        path: at.path(),
                        object: Some(*at.csum),
                        reason: e.to_string(),
                    });
                }
                Ok(Linked::Copy(obj))
            }
            r => {
                self.count(r, at, How::Hardlinked, is_symlink)?;
                Ok(Linked::Done)
            }
        }
    }

    /// Writes a regular file: data, then owner and xattrs, then mode, then
    /// its name.
    fn regular(
        &self,
        dir: BorrowedFd<'_>,
        at: &At<'_>,
        mut obj: ContentObject,
        on: OnExisting,
    ) -> Result<(), CheckoutError> {
        let file =
            NewFile::create(dir, &self.tmpfiles).map_err(at.io("creating a temporary file"))?;
        let mut how = How::Copied;
        if obj.size > 0 {
            let uncompressed = !self.repo.mode().is_archive();
            let want_reflink = self.method == Method::Reflink
                && uncompressed
                && !self.reflink.unsupported.load(Ordering::Relaxed);
            let src = if want_reflink || (uncompressed && obj.size >= KERNEL_COPY_MIN) {
                obj.file.clone()
            } else {
                None
            };
            let cloned = match (&src, want_reflink) {
                (Some(src), true) => self
                    .reflink
                    .clone_file(file.fd(), src.as_fd())
                    .map_err(at.io("reflinking"))?,
                _ => false,
            };
            if cloned {
                how = How::Reflinked;
            } else {
                let in_kernel = match &src {
                    Some(src) => kernel_copy(src.as_fd(), file.fd(), obj.size),
                    None => Ok(false),
                };
                in_kernel
                    .and_then(|done| {
                        // Else through the content reader, still at the start.
                        if done {
                            Ok(())
                        } else {
                            buffer_copy(&mut obj.reader, file.fd(), obj.size)
                        }
                    })
                    .map_err(|e| match e {
                        CopyError::Source(e) => at.store(StoreError::BadObject {
                            object: ObjectName::new(*at.csum, ObjectType::File),
                            reason: e.to_string(),
                        }),
                        CopyError::Dest(e) => at.io("writing")(e),
                    })?;
                Stats::add(&self.stats.bytes_copied, obj.size);
            }
        } else {
            // Nothing to copy, but the reader still checks that the object
            // holds no data (an archive header can declare 0 bytes over a
            // stream that has some).
            std::io::copy(&mut obj.reader, &mut std::io::sink()).map_err(|e| {
                at.store(StoreError::BadObject {
                    object: ObjectName::new(*at.csum, ObjectType::File),
                    reason: e.to_string(),
                })
            })?;
        }
        let h = &obj.header;
        if !self.user_mode {
            rustix::fs::fchown(
                file.fd(),
                Some(rustix::fs::Uid::from_raw(h.uid)),
                Some(rustix::fs::Gid::from_raw(h.gid)),
            )
            .map_err(|e| at.io("setting the owner")(e.into()))?;
            if !h.xattrs.is_empty() {
                let xattrs = self.xattrs_to_apply(&h.xattrs, at);
                crate::fs::set_fd_xattrs(file.fd(), &xattrs).map_err(at.io("setting xattrs"))?;
            }
        }
        // Last: chown would have cleared setuid/setgid.
        rustix::fs::fchmod(
            file.fd(),
            Mode::from_raw_mode(file_mode(h.mode, self.user_mode)),
        )
        .map_err(|e| at.io("setting the mode")(e.into()))?;
        let r = file.publish(at.name, on);
        self.count(r, at, how, false)
    }

    /// Counts a placed entry, or turns the failure into an error.
    fn count(
        &self,
        r: std::io::Result<Placed>,
        at: &At<'_>,
        how: How,
        symlink: bool,
    ) -> Result<(), CheckoutError> {
        let s = self.stats;
        match r {
            Ok(Placed::Kept) => Stats::add(&s.kept, 1),
            Ok(placed) => {
                if placed == Placed::Replaced {
                    Stats::add(&s.replaced, 1);
                }
                Stats::add(if symlink { &s.symlinks } else { &s.files }, 1);
                Stats::add(
                    match how {
                        How::Hardlinked => &s.hardlinked,
                        How::Reflinked => &s.reflinked,
                        How::Copied => &s.copied,
                    },
                    1,
                );
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(CheckoutError::Exists { path: at.path() });
            }
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(CheckoutError::DirectoryInTheWay {
                    path: at.path(),
                    object: *at.csum,
                });
            }
            Err(e) => return Err(at.io("placing the file")(e)),
        }
        Ok(())
    }
}

/// The mode a regular file gets: the stored permission bits; in user mode
/// without setuid/setgid and with `u+r` (as libostree).
pub(super) fn file_mode(mode: u32, user_mode: bool) -> u32 {
    let mut m = mode & PERMS;
    if user_mode {
        m &= !(S_ISUID | S_ISGID);
        m |= S_IRUSR;
    }
    m
}

/// Where a file goes, for error messages.
pub(super) struct At<'a> {
    pub dest: &'a Path,
    pub rel: &'a str,
    pub name: &'a str,
    pub csum: &'a Checksum,
}

impl At<'_> {
    pub fn path(&self) -> std::path::PathBuf {
        display_path(self.dest, self.rel, self.name)
    }

    pub fn io(&self, op: &'static str) -> impl Fn(std::io::Error) -> CheckoutError + '_ {
        move |source| CheckoutError::Io {
            path: self.path(),
            op,
            source,
        }
    }

    pub fn store(&self, source: StoreError) -> CheckoutError {
        CheckoutError::Object {
            path: self.path(),
            object: ObjectName::new(*self.csum, ObjectType::File),
            source: Box::new(source),
        }
    }

    /// Errors of helpers that only know about I/O on DEST or the store.
    pub fn wrap(&self, e: union::CompareError) -> CheckoutError {
        match e {
            union::CompareError::Dest(op, source) => self.io(op)(source),
            union::CompareError::Store(source) => self.store(source),
        }
    }
}

enum CopyError {
    Source(std::io::Error),
    Dest(std::io::Error),
}

/// Copies exactly `size` bytes in the kernel; `Ok(false)`, with nothing
/// copied, where `copy_file_range` cannot be used.
fn kernel_copy(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> Result<bool, CopyError> {
    let mut done = 0u64;
    // An explicit source offset leaves the object's file position (shared
    // with its content reader, the fallback) at the start.
    let mut offset = 0u64;
    while done < size {
        let want = (size - done).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut offset), dst, None, want) {
            Ok(0) => {
                return Err(CopyError::Source(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("object ends after {done} of its {size} bytes"),
                )));
            }
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if done == 0 => {
                return Ok(false);
            }
            Err(e) => return Err(CopyError::Dest(e.into())),
        }
    }
    Ok(true)
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Copies exactly `size` bytes from a reader through a per-thread buffer.
fn buffer_copy(src: &mut dyn Read, dst: BorrowedFd<'_>, size: u64) -> Result<(), CopyError> {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let len = (size.min(COPY_BUF as u64) as usize).max(1);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let mut done = 0u64;
        while done < size {
            let want = (size - done).min(buf.len() as u64) as usize;
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(CopyError::Source(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("object ends after {done} of its {size} bytes"),
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Source(e)),
            };
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                match rustix::io::write(dst, chunk) {
                    Ok(w) => chunk = &chunk[w..],
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(CopyError::Dest(e.into())),
                }
            }
            done += n as u64;
        }
        Ok(())
    })
}

/// Permission bits of a directory as created: the stored mode, masked for
/// bare-user-only repositories (as libostree: no setuid, sticky or world
/// write on directories there).
pub(super) fn dir_mode(mode: u32, repo_mode: RepoMode) -> u32 {
    let m = mode & !S_IFMT;
    if repo_mode == RepoMode::BareUserOnly {
        m & 0o775
    } else {
        m & PERMS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(file_mode(0o104755, false), 0o4755);
        assert_eq!(file_mode(0o104755, true), 0o755);
        assert_eq!(file_mode(0o102711, true), 0o711 | 0o400);
        assert_eq!(file_mode(0o100000, true), 0o400);
        assert_eq!(file_mode(0o100000, false), 0);
        assert_eq!(dir_mode(0o41777, RepoMode::Bare), 0o1777);
        assert_eq!(dir_mode(0o41777, RepoMode::BareUserOnly), 0o775);
        assert_eq!(dir_mode(0o42755, RepoMode::BareUser), 0o2755);
    }
}
