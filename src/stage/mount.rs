//! The mount layer of staging roots: a writable union of read-only layers.
//!
//! A stage is a merged view of several read-only *lower* directories (the
//! hardlinked checkouts of its commits, top-most first) with one writable
//! *upper* directory that receives every change. This module is the one
//! place that mounts and unmounts such views; it knows nothing of stages,
//! refs or the checkout cache.
//!
//! # Backends
//! [`Backend`] lists the union filesystems, in the order
//! [`UnionChoice::Auto`] tries them:
//! 1. **Kernel overlayfs** (root only). Mounted with the new mount API:
//!    `fsopen("overlay")`, one `fsconfig(lowerdir+)` per layer (Linux ≥
//!    6.8), falling back to one `lowerdir=` string (layers joined by `:`,
//!    with `:` and `\` escaped) on older kernels, then `fsmount` and
//!    `move_mount`. Options are not limited to one page as with mount(2),
//!    so 50+ layers with long paths work. The kernel's own error messages
//!    (read back from the fs context) are put into the error.
//! 2. **fuse-overlayfs**: `fuse-overlayfs -o lowerdir=A:B,upperdir=U,workdir=W
//!    TARGET`. Its option string cannot carry `:`, `,` or `\` in a path
//!    unambiguously, so such paths are refused ([`MountError::UnsupportedPath`]).
//! 3. **unionfs-fuse**: `unionfs-fuse -o cow,hide_meta_files U=RW:A=RO:B=RO
//!    TARGET`; paths with `:` or `=` are refused likewise.
//!
//! A copy of the layers is not a union filesystem and is not done here:
//! when `Auto` finds none usable it returns
//! [`MountError::NoUnionFilesystem`] listing why each backend was skipped,
//! and the caller falls back to copying. A successful `Auto` also records
//! the skipped backends ([`MountGuard::skipped`]).
//!
//! # Lower layers are never written through
//! Lower dirs are passed read-only to every backend: overlayfs and
//! fuse-overlayfs copy a file up before any change (data, mode, owner,
//! xattrs); unionfs-fuse's `cow` mode does the same, and its branches are
//! marked `=RO`. Deletions are recorded in the upper dir, never applied to
//! a lower one; [`list_deletions`] reads them back per backend.
//!
//! # Overlay xattrs inside layers must not steer the mount
//! overlayfs interprets `trusted.overlay.*` xattrs it finds in *lower*
//! layers: `opaque` on a directory hides every layer below it, `redirect`
//! points a directory at another path, `metacopy` takes a file's data from
//! elsewhere, and since 6.7 `opaque=x` plus `whiteout` turn regular files
//! into whiteouts. A commit can carry any xattr, so a checked-out commit
//! could hide or redirect content of other layers. We mount with
//! `redirect_dir=nofollow` (lower redirects are not followed),
//! `metacopy=off` (metacopy xattrs are ignored) and `index=off`, but no
//! option makes the kernel ignore `opaque` in a lower layer. So before
//! mounting, every **directory** of every lower layer is checked (one
//! `llistxattr` per directory, no per-file work) and a layer carrying any
//! `trusted.overlay.*` xattr on a directory is refused with
//! [`MountError::SteeringXattr`] naming the layer, the path and the xattr.
//! Files need no check: with the options above the only file xattr still
//! honoured (`whiteout`) needs an `opaque=x` parent, which is refused.
//! fuse-overlayfs honours more (`user.overlay.*`, `user.fuseoverlayfs.*`,
//! `user.containers.override_stat` on any entry), so for it every entry is
//! checked. unionfs-fuse uses no xattrs. The check is here, not left to the
//! caller, so no caller can forget it; the checkout cache may strip such
//! xattrs when it checks a commit out (losing them from the stage's view)
//! or let `Auto` fall through to unionfs-fuse, which shows them as data.
//!
//! Whiteouts *are* meant to steer: a 0:0 character device in a lower layer
//! (overlay), or a `.wh.NAME` file (fuse-overlayfs) deletes `NAME` of the
//! layers below. Producing them from ostree's `.wh.` entries is the checkout
//! cache's job; see [`deletions`] for the formats.
//!
//! # Unmounting and leftovers
//! [`MountGuard`] unmounts on drop. [`MountGuard::unmount`] does it
//! explicitly and reports errors: `EBUSY` is retried for about half a
//! second, then reported as [`MountError::Busy`] with the processes whose
//! cwd, root or open files are under the mount point (from `/proc/*/`). A
//! guard dropped while the mount is still busy detaches it lazily
//! (`MNT_DETACH`) so nothing is left in the mount table; holders keep their
//! view until they exit. A process killed while holding a mount leaves it
//! mounted: [`mounts_under`] finds such mounts (parsing
//! `/proc/self/mountinfo`) and [`unmount_path`] removes them. Never delete
//! a directory tree before [`mounts_under`] is empty for it: removing files
//! through a live union would delete them from the upper dir (or worse,
//! through a bind mount, from wherever it points).

pub mod deletions;
pub mod mountinfo;

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags};
use thiserror::Error;

pub use deletions::{Deletion, is_marker, list_deletions};
pub use mountinfo::{MountEntry, is_mount_point, mounts_under};

/// A union filesystem that can merge the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Kernel overlayfs (root only).
    Overlay,
    /// `fuse-overlayfs`.
    FuseOverlayfs,
    /// `unionfs-fuse` in copy-on-write mode.
    Unionfs,
}

impl Backend {
    /// Every backend, in the order [`UnionChoice::Auto`] tries them.
    pub const ALL: [Backend; 3] = [Backend::Overlay, Backend::FuseOverlayfs, Backend::Unionfs];

    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Overlay => "overlay",
            Backend::FuseOverlayfs => "fuse-overlayfs",
            Backend::Unionfs => "unionfs",
        }
    }

    /// The helper program a FUSE backend runs.
    fn binary(self) -> Option<&'static str> {
        match self {
            Backend::Overlay => None,
            Backend::FuseOverlayfs => Some("fuse-overlayfs"),
            Backend::Unionfs => Some("unionfs-fuse"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which backend [`mount_union`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnionChoice {
    /// Try every backend in [`Backend::ALL`] order.
    #[default]
    Auto,
    /// This one or an error.
    Only(Backend),
}

/// A backend `Auto` did not use, and why.
#[derive(Debug)]
pub struct Skipped {
    pub backend: Backend,
    pub reason: MountError,
}

fn list_skipped(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(|s| format!("\n  {}: {}", s.backend, s.reason))
        .collect()
}

fn list_pids(pids: &[u32]) -> String {
    if pids.is_empty() {
        "no holding process found (a lazily unmounted child mount or a kernel reference?)".into()
    } else {
        let v: Vec<String> = pids.iter().map(u32::to_string).collect();
        format!("held by pid {}", v.join(", "))
    }
}

/// Errors of mounting and unmounting; each names the backend and the path.
#[derive(Debug, Error)]
pub enum MountError {
    #[error("{backend}: needs root (effective uid 0)")]
    NotRoot { backend: Backend },
    #[error("{backend}: /dev/fuse is missing or unusable: {source}")]
    NoFuseDevice { backend: Backend, source: io::Error },
    #[error("{backend}: `{binary}` not found in PATH")]
    BinaryMissing {
        backend: Backend,
        binary: &'static str,
    },
    #[error("{backend}: overlay filesystem not available in this kernel (fsopen: {source})")]
    NotInKernel { backend: Backend, source: io::Error },
    #[error("{backend}: nesting not supported: {path} is on {fs_type}")]
    Nesting {
        backend: Backend,
        path: PathBuf,
        fs_type: &'static str,
    },
    #[error("{backend}: path {path} contains {ch:?}, which this backend's options cannot express")]
    UnsupportedPath {
        backend: Backend,
        path: PathBuf,
        ch: char,
    },
    #[error(
        "{backend}: lower layer {layer} has xattr {name} on {path}, which would steer the union \
         (strip overlay xattrs from checked-out layers, or use the unionfs backend)"
    )]
    SteeringXattr {
        backend: Backend,
        layer: PathBuf,
        path: PathBuf,
        name: String,
    },
    #[error(
        "{backend}: lower layer {layer} has {path}, which {backend} would read as its own \
         bookkeeping ({what}), letting the layer hide content of the layers below"
    )]
    SteeringEntry {
        backend: Backend,
        layer: PathBuf,
        path: PathBuf,
        what: &'static str,
    },
    #[error("no lower layers given for {target}")]
    NoLayers { target: PathBuf },
    #[error("{backend}: {path} is not a directory")]
    NotADirectory { backend: Backend, path: PathBuf },
    #[error("{backend}: reading {path}: {source}")]
    Io {
        backend: Backend,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{backend}: mounting on {target} failed at {step}: {source}{}", kernel_log(.log))]
    Syscall {
        backend: Backend,
        target: PathBuf,
        step: String,
        source: io::Error,
        /// Messages the kernel left in the fs context.
        log: Vec<String>,
    },
    #[error("{backend}: `{binary}` failed to mount {target} ({status}): {stderr}")]
    Helper {
        backend: Backend,
        target: PathBuf,
        binary: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{backend}: `{binary}` exited successfully but nothing is mounted on {target}")]
    HelperNoMount {
        backend: Backend,
        target: PathBuf,
        binary: &'static str,
    },
    #[error("no union filesystem available for {target}; fall back to copying. Skipped:{}", list_skipped(.skipped))]
    NoUnionFilesystem {
        target: PathBuf,
        skipped: Vec<Skipped>,
    },
    #[error("target is busy: cannot unmount {target}; {}", list_pids(.holders))]
    Busy { target: PathBuf, holders: Vec<u32> },
    #[error("unmounting {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
}

fn kernel_log(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", log.join("; "))
    }
}

/// A mounted union; unmounted when dropped.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    backend: Backend,
    skipped: Vec<Skipped>,
    mounted: bool,
}

impl MountGuard {
    /// The mount point (as given to [`mount_union`]).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The backend that mounted it.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Backends `Auto` tried first and why they were not used.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Leaves the union mounted after the guard is gone (a stage's mount
    /// outlives the command that made it).
    pub fn keep(mut self) {
        self.mounted = false;
    }

    /// Unmounts now. On [`MountError::Busy`] the guard stays mounted and
    /// the call can be repeated; once it succeeds, drop does nothing.
    pub fn unmount(&mut self) -> Result<(), MountError> {
        if self.mounted {
            unmount_path(&self.target)?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        // As `unmount_path`, minus the search for holders nobody will read.
        for _ in 0..=BUSY_RETRIES {
            match rustix::mount::unmount(&self.target, UnmountFlags::empty()) {
                Err(rustix::io::Errno::BUSY) | Err(rustix::io::Errno::INTR) => {
                    std::thread::sleep(BUSY_WAIT)
                }
                _ => return,
            }
        }
        // Still busy: detach it so no mount is left behind.
        let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
    }
}

const BUSY_RETRIES: u32 = 20;
const BUSY_WAIT: Duration = Duration::from_millis(25);

/// Unmounts whatever is mounted on `target` (the top-most mount there),
/// retrying `EBUSY` briefly. For leftovers found by [`mounts_under`].
pub fn unmount_path(target: &Path) -> Result<(), MountError> {
    let mut tries = 0;
    loop {
        match rustix::mount::unmount(target, UnmountFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::BUSY) if tries < BUSY_RETRIES => {
                tries += 1;
                std::thread::sleep(BUSY_WAIT);
            }
            Err(rustix::io::Errno::BUSY) => {
                return Err(MountError::Busy {
                    target: target.to_path_buf(),
                    holders: holders_of(target),
                });
            }
            Err(e) => {
                return Err(MountError::Unmount {
                    target: target.to_path_buf(),
                    source: e.into(),
                });
            }
        }
    }
}

/// Processes whose cwd, root or an open file is at or below `target`,
/// from the `/proc/PID/{cwd,root,fd/*}` links (best effort: processes we
/// may not inspect are skipped).
pub fn holders_of(target: &Path) -> Vec<u32> {
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let under = |link: &Path| std::fs::read_link(link).is_ok_and(|p| p.starts_with(&target));
    let mut pids = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let holds = under(&dir.join("cwd"))
            || under(&dir.join("root"))
            || std::fs::read_dir(dir.join("fd"))
                .map(|fds| fds.flatten().any(|fd| under(&fd.path())))
                .unwrap_or(false);
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Mounts the union of `lowers` (top-most first, read-only) and `upper`
/// (writable; `work` is the scratch dir overlay needs on the same
/// filesystem as `upper`) on `target`. All four must be existing
/// directories. See the module doc for what each backend does and refuses.
pub fn mount_union(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    choice: UnionChoice,
) -> Result<MountGuard, MountError> {
    let layers: Vec<Layer> = lowers
        .iter()
        .map(|p| Layer {
            path: p.clone(),
            checked: false,
        })
        .collect();
    mount_layers(&layers, upper, work, target, choice)
}

/// A lower layer for [`mount_layers`].
#[derive(Clone, Debug)]
pub struct Layer {
    pub path: PathBuf,
    /// Skip the steering check for this layer: it holds only whiteouts
    /// arbor generated for the backend (it is *meant* to steer), or it is
    /// an immutable layer [`check_layer`] already passed.
    pub checked: bool,
}

/// [`mount_union`] with layers some of which arbor made itself.
pub fn mount_layers(
    layers: &[Layer],
    upper: &Path,
    work: &Path,
    target: &Path,
    choice: UnionChoice,
) -> Result<MountGuard, MountError> {
    let lowers: Vec<PathBuf> = layers.iter().map(|l| l.path.clone()).collect();
    let check: Vec<bool> = layers.iter().map(|l| !l.checked).collect();
    let lowers = &lowers[..];
    if lowers.is_empty() {
        return Err(MountError::NoLayers {
            target: target.to_path_buf(),
        });
    }
    match choice {
        UnionChoice::Only(b) => {
            mount_with(b, lowers, &check, upper, work, target)?;
            Ok(MountGuard {
                target: target.to_path_buf(),
                backend: b,
                skipped: Vec::new(),
                mounted: true,
            })
        }
        UnionChoice::Auto => {
            let mut skipped = Vec::new();
            for b in Backend::ALL {
                match mount_with(b, lowers, &check, upper, work, target) {
                    Ok(()) => {
                        return Ok(MountGuard {
                            target: target.to_path_buf(),
                            backend: b,
                            skipped,
                            mounted: true,
                        });
                    }
                    Err(reason) => skipped.push(Skipped { backend: b, reason }),
                }
            }
            Err(MountError::NoUnionFilesystem {
                target: target.to_path_buf(),
                skipped,
            })
        }
    }
}

fn mount_with(
    backend: Backend,
    lowers: &[PathBuf],
    check: &[bool],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), MountError> {
    preflight(backend, lowers, check, upper, work, target)?;
    match backend {
        Backend::Overlay => mount_overlay(lowers, upper, work, target),
        Backend::FuseOverlayfs => {
            let lowers: Vec<&[u8]> = lowers.iter().map(|p| p.as_os_str().as_bytes()).collect();
            let mut opt = b"lowerdir=".to_vec();
            opt.extend_from_slice(&lowers.join(&b':'));
            opt.extend_from_slice(b",upperdir=");
            opt.extend_from_slice(upper.as_os_str().as_bytes());
            opt.extend_from_slice(b",workdir=");
            opt.extend_from_slice(work.as_os_str().as_bytes());
            run_helper(
                backend,
                &[
                    OsStr::new("-o"),
                    OsStr::from_bytes(&opt),
                    target.as_os_str(),
                ],
                target,
            )
        }
        Backend::Unionfs => {
            let mut branches = upper.as_os_str().as_bytes().to_vec();
            branches.extend_from_slice(b"=RW");
            for l in lowers {
                branches.push(b':');
                branches.extend_from_slice(l.as_os_str().as_bytes());
                branches.extend_from_slice(b"=RO");
            }
            run_helper(
                backend,
                &[
                    OsStr::new("-o"),
                    OsStr::new("cow,hide_meta_files"),
                    OsStr::from_bytes(&branches),
                    target.as_os_str(),
                ],
                target,
            )
        }
    }
}

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Everything that can be checked before trying to mount.
fn preflight(
    backend: Backend,
    lowers: &[PathBuf],
    check: &[bool],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), MountError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Io {
            backend,
            path,
            source,
        }
    };
    for dir in lowers
        .iter()
        .map(PathBuf::as_path)
        .chain([upper, work, target])
    {
        let md = std::fs::metadata(dir).map_err(io_err(dir))?;
        if !md.is_dir() {
            return Err(MountError::NotADirectory {
                backend,
                path: dir.to_path_buf(),
            });
        }
    }
    let forbidden: &[char] = match backend {
        Backend::Overlay => &[],
        Backend::FuseOverlayfs => &[':', ',', '\\'],
        Backend::Unionfs => &[':', '='],
    };
    let upper_work: &[&Path] = match backend {
        Backend::Unionfs => &[upper],
        _ => &[upper, work],
    };
    for dir in lowers
        .iter()
        .map(PathBuf::as_path)
        .chain(upper_work.iter().copied())
    {
        let bytes = dir.as_os_str().as_bytes();
        if let Some(&ch) = forbidden.iter().find(|c| bytes.contains(&(**c as u8))) {
            return Err(MountError::UnsupportedPath {
                backend,
                path: dir.to_path_buf(),
                ch,
            });
        }
    }
    match backend.binary() {
        None => {
            if !rustix::process::geteuid().is_root() {
                return Err(MountError::NotRoot { backend });
            }
            // overlayfs cannot use an upper dir on overlayfs or FUSE.
            let sfs = rustix::fs::statfs(upper).map_err(|e| io_err(upper)(e.into()))?;
            #[allow(clippy::unnecessary_cast)]
            let magic = sfs.f_type as i64;
            let fs_type = match magic {
                OVERLAYFS_SUPER_MAGIC => Some("overlayfs"),
                FUSE_SUPER_MAGIC => Some("a FUSE filesystem"),
                _ => None,
            };
            if let Some(fs_type) = fs_type {
                return Err(MountError::Nesting {
                    backend,
                    path: upper.to_path_buf(),
                    fs_type,
                });
            }
        }
        Some(binary) => {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
                .map_err(|source| MountError::NoFuseDevice { backend, source })?;
            if find_in_path(binary).is_none() {
                return Err(MountError::BinaryMissing { backend, binary });
            }
        }
    }
    for (layer, _) in lowers.iter().zip(check).filter(|(_, c)| **c) {
        check_layer(backend, layer)?;
    }
    Ok(())
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Is `name` an xattr that `backend` interprets when found in a lower layer?
fn steers(backend: Backend, name: &[u8]) -> bool {
    match backend {
        Backend::Overlay => name.starts_with(b"trusted.overlay."),
        Backend::FuseOverlayfs => {
            name.starts_with(b"trusted.overlay.")
                || name.starts_with(b"user.overlay.")
                || name.starts_with(b"user.fuseoverlayfs.")
                || name.starts_with(b"user.containers.")
        }
        Backend::Unionfs => false,
    }
}

/// Refuses a lower layer carrying xattrs or entries `backend` would act on;
/// see the module doc. Overlay: directories only; fuse-overlayfs: every
/// entry. [`mount_layers`] runs it on each layer; callers may remember its
/// result for layers that never change.
pub fn check_layer(backend: Backend, layer: &Path) -> Result<(), MountError> {
    if backend == Backend::Unionfs {
        // unionfs-fuse reads `.unionfs-fuse/P_HIDDEN~` in every branch.
        let meta = layer.join(deletions::UNIONFS_META_DIR);
        if meta.symlink_metadata().is_ok() {
            return Err(MountError::SteeringEntry {
                backend,
                layer: layer.to_path_buf(),
                path: meta,
                what: "its metadata directory of hidden-file markers",
            });
        }
        return Ok(());
    }
    let all_entries = backend == Backend::FuseOverlayfs;
    let mut stack = vec![layer.to_path_buf()];
    while let Some(dir) = stack.pop() {
        check_xattrs(backend, layer, &dir)?;
        let rd = std::fs::read_dir(&dir).map_err(|source| MountError::Io {
            backend,
            path: dir.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| MountError::Io {
                backend,
                path: dir.clone(),
                source,
            })?;
            let ty = entry.file_type().map_err(|source| MountError::Io {
                backend,
                path: entry.path(),
                source,
            })?;
            if all_entries && entry.file_name().as_bytes().starts_with(b".wh.") {
                // fuse-overlayfs takes `.wh.NAME` entries of lower layers
                // for whiteouts, whatever their type.
                return Err(MountError::SteeringEntry {
                    backend,
                    layer: layer.to_path_buf(),
                    path: entry.path(),
                    what: "a whiteout",
                });
            }
            if ty.is_dir() {
                stack.push(entry.path());
            } else if all_entries && !ty.is_char_device() {
                check_xattrs(backend, layer, &entry.path())?;
            }
        }
    }
    Ok(())
}

fn check_xattrs(backend: Backend, layer: &Path, path: &Path) -> Result<(), MountError> {
    let names = match crate::fs::read_sized(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(names) => names,
        // No xattrs on this filesystem: nothing can steer.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
            return Ok(());
        }
        Err(source) => {
            return Err(MountError::Io {
                backend,
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if let Some(name) = crate::fs::split_names(&names).find(|n| steers(backend, n)) {
        return Err(MountError::SteeringXattr {
            backend,
            layer: layer.to_path_buf(),
            path: path.to_path_buf(),
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(())
}

/// Reads the messages the kernel queued on an fs context fd.
fn drain_log(fs: &rustix::fd::OwnedFd) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while out.len() < 16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out
}

/// Escapes a path for a `lowerdir=` list: `:` separates layers and `\`
/// escapes.
fn escape_lower(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if b == b':' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), MountError> {
    use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount};
    let backend = Backend::Overlay;
    let fail = |step: &str, e: rustix::io::Errno, log: Vec<String>| MountError::Syscall {
        backend,
        target: target.to_path_buf(),
        step: step.to_string(),
        source: e.into(),
        log,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
        rustix::io::Errno::NODEV => MountError::NotInKernel {
            backend,
            source: e.into(),
        },
        e => fail("fsopen", e, Vec::new()),
    })?;
    let set = |key: &str, value: &OsStr| {
        fsconfig_set_string(&fs, key, value)
            .map_err(|e| fail(&format!("fsconfig {key}"), e, drain_log(&fs)))
    };
    set("source", OsStr::new("arbor-stage"))?;
    match fsconfig_set_string(&fs, "lowerdir+", lowers[0].as_os_str()) {
        Ok(()) => {
            for l in &lowers[1..] {
                set("lowerdir+", l.as_os_str())?;
            }
        }
        // Before 6.8 there is no `lowerdir+`: one string, `:`-separated.
        Err(rustix::io::Errno::INVAL) => {
            drain_log(&fs);
            let joined: Vec<Vec<u8>> = lowers.iter().map(|l| escape_lower(l)).collect();
            set("lowerdir", OsStr::from_bytes(&joined.join(&b':')))?;
        }
        Err(e) => return Err(fail("fsconfig lowerdir+", e, drain_log(&fs))),
    }
    set("upperdir", upper.as_os_str())?;
    set("workdir", work.as_os_str())?;
    set("redirect_dir", OsStr::new("nofollow"))?;
    set("metacopy", OsStr::new("off"))?;
    set("index", OsStr::new("off"))?;
    fsconfig_create(&fs).map_err(|e| fail("fsconfig create", e, drain_log(&fs)))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| fail("fsmount", e, drain_log(&fs)))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", e, Vec::new()))?;
    Ok(())
}

fn run_helper(backend: Backend, args: &[&OsStr], target: &Path) -> Result<(), MountError> {
    let binary = backend.binary().unwrap_or_default();
    // The helper daemonises once the mount is up; its stdio then points to
    // /dev/null, so waiting for stderr's end returns with the parent.
    let out = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => MountError::BinaryMissing { backend, binary },
            _ => MountError::Helper {
                backend,
                target: target.to_path_buf(),
                binary,
                status: "not started".into(),
                stderr: source.to_string(),
            },
        })?;
    if !out.status.success() {
        return Err(MountError::Helper {
            backend,
            target: target.to_path_buf(),
            binary,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    match is_mount_point(target) {
        Ok(true) => Ok(()),
        Ok(false) => Err(MountError::HelperNoMount {
            backend,
            target: target.to_path_buf(),
            binary,
        }),
        Err(source) => Err(MountError::Io {
            backend,
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escapes_separators() {
        assert_eq!(escape_lower(Path::new("/a:b\\c,d")), b"/a\\:b\\\\c,d");
    }

    #[test]
    fn steering_names() {
        assert!(steers(Backend::Overlay, b"trusted.overlay.opaque"));
        assert!(!steers(Backend::Overlay, b"user.overlay.opaque"));
        assert!(steers(
            Backend::FuseOverlayfs,
            b"user.fuseoverlayfs.override_stat"
        ));
        assert!(!steers(Backend::Unionfs, b"trusted.overlay.opaque"));
        assert!(!steers(Backend::Overlay, b"security.selinux"));
    }
}
