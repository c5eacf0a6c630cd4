//! Mount points the sandbox needs but the stage lacks: made before the
//! command runs, removed once no sandbox uses the stage, never committed.
//!
//! A sandbox mounts `/proc`, `/dev`, `/sys`, `/tmp`, `/run` and each bind
//! destination over an existing entry of the stage's root (in its private
//! mount namespace; see [the module above](super)), found by [`resolve`]
//! inside the root, as the command would find it. A tree made of chunks
//! often has no `/proc` at all, so the directory (or empty file, for a
//! file bind) is created in the root, where it lands in the writable
//! layer like any change, and must be taken out again before a commit.
//!
//! # The record
//! `stages/NAME/mountpoints` lists, one a line (`d PATH` or `f PATH`,
//! relative to the root), every entry a sandbox created. An entry is
//! listed *before* it is created, so a sandbox killed at any point leaves
//! nothing unlisted. Removal takes only what is still what was made: an
//! empty directory, an empty regular file; anything else has been written
//! to since (by a plain `stage exec`) and now belongs to the stage.
//!
//! # Locks
//! `stages/NAME/sandbox.lock` carries two OFD byte-range locks:
//! * byte 0, *run*: shared by every sandbox from before it creates its
//!   mount points until it has ended (the built-in sandbox's processes
//!   inherit the descriptor, so the lock outlives a killed `arbor` until
//!   they are gone too). Exclusive, without waiting, for a removal: the
//!   sandbox that ends last removes the entries, and `stage commit`
//!   ([`quiesce`]) takes it for its whole run, so it refuses while a
//!   sandbox is up and removes what a killed one left before it reads the
//!   root.
//! * byte 1, *edit*: exclusive, briefly, around reading the record and
//!   creating entries, so sandboxes starting together do not lose each
//!   other's lines, and around a sandbox's end: it tries the run lock
//!   exclusively and lets go of its own run lock before the next sandbox
//!   that ends looks, so of several ending together the last one always
//!   finds itself alone and removes the entries. Taken on a second
//!   descriptor, closed to release it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::SandboxError;
use crate::stage::StageError;

const LOCK_FILE: &str = "sandbox.lock";
const RECORD_FILE: &str = "mountpoints";
const RUN: u32 = 0;
const EDIT: u32 = 1;

/// What a mount point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// A running sandbox's hold on the stage's mount points.
pub(crate) struct Registration {
    lock: Option<OwnedFd>,
    stage_dir: OwnedFd,
    stage_dir_path: PathBuf,
    root: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + use<> {
    let path = path.to_path_buf();
    move |source| SandboxError::Io { op, path, source }
}

fn open_lock(stage_dir: &OwnedFd, stage_dir_path: &Path) -> Result<OwnedFd, SandboxError> {
    rustix::fs::openat(
        stage_dir,
        LOCK_FILE,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_err("opening", &stage_dir_path.join(LOCK_FILE))(e.into()))
}

fn lock(
    fd: &OwnedFd,
    byte: u32,
    exclusive: bool,
    wait: bool,
    path: &Path,
) -> Result<bool, SandboxError> {
    crate::fs::ofd_lock_range(fd.as_fd(), byte, 1, exclusive, wait)
        .map_err(io_err("locking", &path.join(LOCK_FILE)))
}

impl Registration {
    /// Takes the run lock (shared), resolves every requested mount
    /// destination inside `root` ([`resolve`]) and makes sure each one
    /// that lies in the stage exists there, listing what it creates.
    /// Returns the mounts, placed, in the order they are to be made.
    pub(crate) fn begin(
        stages_dir: &OwnedFd,
        stage_dir_path: &Path,
        name: &str,
        root: &Path,
        requests: &[Request],
    ) -> Result<(Registration, Vec<Placed>), SandboxError> {
        let stage_dir =
            crate::fs::open_dir(stages_dir, name).map_err(io_err("opening", stage_dir_path))?;
        let run = open_lock(&stage_dir, stage_dir_path)?;
        lock(&run, RUN, false, true, stage_dir_path)?;
        let reg = Registration {
            lock: Some(run),
            stage_dir,
            stage_dir_path: stage_dir_path.to_path_buf(),
            root: root.to_path_buf(),
        };
        let edit = open_lock(&reg.stage_dir, stage_dir_path)?;
        lock(&edit, EDIT, true, true, stage_dir_path)?;
        let root_fd =
            crate::fs::open_dir(rustix::fs::CWD, root).map_err(io_err("opening", root))?;
        let mut placed: Vec<Placed> = Vec::new();
        let mut missing = Vec::new();
        for req in requests {
            let (p, create) = resolve(&root_fd, root, req, &placed)?;
            for entry in create {
                if !missing.contains(&entry) {
                    missing.push(entry);
                }
            }
            placed.push(p);
        }
        check_order(&placed)?;
        if !missing.is_empty() {
            let mut recorded = reg.read_record()?;
            recorded.extend(missing.iter().cloned());
            reg.write_record(&recorded)?;
            for (rel, kind) in &missing {
                create(&root_fd, root, rel, *kind)?;
            }
        }
        drop(edit);
        Ok((reg, placed))
    }

    /// Ends the hold (also on drop); the last sandbox out removes the
    /// listed entries (best effort: a failure leaves them listed for the
    /// next one, or for `stage commit`, which reports it).
    pub(crate) fn finish(&mut self) {
        let Some(run) = self.lock.take() else {
            return;
        };
        // Sandboxes that end together take turns (the edit lock), and each
        // lets go of the run lock before the next one looks: otherwise two
        // could each see the other still there, and both leave the entries.
        let edit = open_lock(&self.stage_dir, &self.stage_dir_path)
            .and_then(|edit| lock(&edit, EDIT, true, true, &self.stage_dir_path).map(|_| edit));
        if lock(&run, RUN, true, false, &self.stage_dir_path).unwrap_or(false) {
            let _ = self.remove_all();
        } else {
            // Another sandbox holds the stage: the last one out removes them.
            crate::failpoint::delay("sandbox:finish-not-last");
        }
        drop(run);
        drop(edit);
    }

    fn read_record(&self) -> Result<Vec<(PathBuf, Kind)>, SandboxError> {
        let path = self.stage_dir_path.join(RECORD_FILE);
        let fd = match rustix::fs::openat(
            &self.stage_dir,
            RECORD_FILE,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(io_err("opening", &path)(e.into())),
        };
        let mut data = Vec::new();
        use std::io::Read;
        std::fs::File::from(fd)
            .take(MAX_RECORD)
            .read_to_end(&mut data)
            .map_err(io_err("reading", &path))?;
        Ok(parse_record(&data))
    }

    fn write_record(&self, entries: &[(PathBuf, Kind)]) -> Result<(), SandboxError> {
        let path = self.stage_dir_path.join(RECORD_FILE);
        let data = format_record(entries);
        if data.len() as u64 > MAX_RECORD {
            return Err(SandboxError::MountPoint {
                path,
                reason: "too many mount points recorded",
            });
        }
        crate::store::repo::write_file_atomic(
            self.stage_dir.as_fd(),
            &self.stage_dir_path,
            RECORD_FILE,
            &data,
            0o644,
        )
        .map_err(|e| SandboxError::Io {
            op: "writing",
            path,
            source: std::io::Error::other(e),
        })
    }

    /// Removes every listed entry that is still as it was made, deepest
    /// first, then the record. Callers hold the run lock exclusively.
    fn remove_all(&self) -> Result<(), SandboxError> {
        let mut entries = self.read_record()?;
        if entries.is_empty() {
            return Ok(());
        }
        let root_fd = crate::fs::open_dir(rustix::fs::CWD, &self.root)
            .map_err(io_err("opening", &self.root))?;
        entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, kind) in &entries {
            remove(&root_fd, &self.root, rel, *kind)?;
        }
        match rustix::fs::unlinkat(&self.stage_dir, RECORD_FILE, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("removing", &self.stage_dir_path.join(RECORD_FILE))(
                e.into(),
            )),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A `begin` that failed half-way, or a sandbox that is done.
        self.finish();
    }
}

/// For `stage commit`: holds the run lock exclusively (refusing while a
/// sandbox runs in the stage) and removes what dead sandboxes left.
/// Returns the lock, to be held until the commit is written.
pub(crate) fn quiesce(
    stages_dir: &OwnedFd,
    stage_dir_path: &Path,
    name: &str,
    root: &Path,
) -> Result<OwnedFd, StageError> {
    let stage_dir = crate::fs::open_dir(stages_dir, name)
        .map_err(|e| StageError::io(stage_dir_path, "opening", e))?;
    let run = open_lock(&stage_dir, stage_dir_path)?;
    if !lock(&run, RUN, true, false, stage_dir_path)? {
        return Err(StageError::InUse {
            name: name.into(),
            what: "a command runs in its build environment",
        });
    }
    let reg = Registration {
        lock: None,
        stage_dir,
        stage_dir_path: stage_dir_path.to_path_buf(),
        root: root.to_path_buf(),
    };
    reg.remove_all()?;
    Ok(run)
}

/// Records are a few lines; this bounds what a corrupt one makes us read.
const MAX_RECORD: u64 = 1 << 20;

fn format_record(entries: &[(PathBuf, Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, k) in entries {
        out.extend_from_slice(match k {
            Kind::Dir => b"d ",
            Kind::File => b"f ",
        });
        out.extend_from_slice(p.as_os_str().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Lines that are not `d PATH`/`f PATH` with a relative, `..`-free PATH
/// are ignored: nothing outside the root is ever removed.
fn parse_record(data: &[u8]) -> Vec<(PathBuf, Kind)> {
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        let (kind, rest) = match line {
            [b'd', b' ', rest @ ..] => (Kind::Dir, rest),
            [b'f', b' ', rest @ ..] => (Kind::File, rest),
            _ => continue,
        };
        let p = Path::new(OsStr::from_bytes(rest));
        let normal = p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if normal && !rest.is_empty() {
            out.push((p.to_path_buf(), kind));
        }
    }
    out
}

fn mp_io(
    op: &'static str,
    root: &Path,
    rel: &Path,
) -> impl FnOnce(rustix::io::Errno) -> SandboxError {
    let path = root.join(rel);
    move |e| SandboxError::MountPointIo {
        op,
        path,
        source: e.into(),
    }
}

fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// What a sandbox mount is, for what may be mounted inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// proc or sysfs: nothing goes inside.
    Closed,
    /// The sandbox's /dev (a tmpfs with symlinks of its own).
    Dev,
    /// A fresh tmpfs.
    Tmpfs,
    /// A host file or directory.
    Bind(PathBuf),
}

/// A mount destination as asked for.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Relative to the root, only normal components.
    pub asked: PathBuf,
    pub kind: Kind,
    pub target: Target,
}

/// A mount destination resolved inside the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    /// As asked for, relative to the root.
    pub asked: PathBuf,
    /// Where it is mounted: relative to the root, no `..`, and (when it
    /// was resolved) no symlink on the way.
    pub at: PathBuf,
    /// The earlier mount that `at` lies in, whose mount point is then
    /// made inside the sandbox, in that mount; `None`: in the stage.
    pub inside: Option<usize>,
    pub kind: Kind,
    pub target: Target,
}

/// Symlinks followed in one resolution at most (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// /dev entries that are symlinks in the sandbox.
const DEV_LINKS: [&str; 6] = ["fd", "stdin", "stdout", "stderr", "core", "ptmx"];

/// Resolves `req.asked` inside the root as the sandboxed command would,
/// that is as if the root were `/`: symlinks are followed, absolute ones
/// from the root, and `..` stops at the root; nothing is ever looked up
/// outside it. Walks through directory descriptors (`O_PATH`,
/// `O_NOFOLLOW`), reading each symlink itself. The walk stops where it
/// reaches an earlier mount in `placed` (the rest lies in that mount,
/// not in the stage). Returns where the mount goes and the entries to
/// create in the stage for it: the first missing component and all below
/// it, made as `mkdir -p` would (a symlink to a missing path is refused,
/// as `mkdir -p` does).
pub(crate) fn resolve(
    root_fd: &OwnedFd,
    root: &Path,
    req: &Request,
    placed: &[Placed],
) -> Result<(Placed, Vec<(PathBuf, Kind)>), SandboxError> {
    let shown = Path::new("/").join(&req.asked);
    let refuse = |reason: String| SandboxError::Resolve {
        dest: shown.clone(),
        reason,
    };
    // Components still to walk, each with the symlink it came from.
    let mut pending: std::collections::VecDeque<(std::ffi::OsString, Option<PathBuf>)> = req
        .asked
        .components()
        .map(|c| (c.as_os_str().to_os_string(), None))
        .collect();
    let mut at = PathBuf::new();
    // fds[i]: the directory at `at`'s first i+1 components.
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some((name, via)) = pending.pop_front() {
        let here = at.join(&name);
        match name.as_bytes() {
            b"." => continue,
            b".." => {
                at.pop();
                fds.pop();
                continue;
            }
            _ => {}
        }
        // An earlier mount (whose mount point may not exist yet): the
        // rest lies in it, not in the stage.
        if let Some(i) = placed.iter().rposition(|p| p.at == here) {
            return inside_mount(req, &shown, here, i, placed, pending).map(|p| (p, Vec::new()));
        }
        let dir = fds.last().map_or(root_fd.as_fd(), |d| d.as_fd());
        let st = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => {
                if let Some(link) = via {
                    return Err(refuse(format!(
                        "{} is a symlink to a missing path; create what it points to",
                        Path::new("/").join(link).display()
                    )));
                }
                // The rest comes from the destination itself: plain names,
                // to be made, unless they reach an earlier mount whose
                // mount point is still to be made too (`/a/b` bound, then
                // `/a/b/c`, with no `a` in the stage).
                let mut out = Vec::new();
                let mut p = here;
                let rest: Vec<_> = pending.iter().map(|(n, _)| n.clone()).collect();
                for (j, n) in std::iter::once(&name).chain(rest.iter()).enumerate() {
                    if j > 0 {
                        p.push(n);
                        if let Some(i) = placed.iter().rposition(|m| m.at == p) {
                            let after = pending.split_off(j);
                            return inside_mount(req, &shown, p, i, placed, after)
                                .map(|m| (m, out));
                        }
                    }
                    let k = if j == rest.len() { req.kind } else { Kind::Dir };
                    out.push((p.clone(), k));
                }
                let placed = Placed {
                    asked: req.asked.clone(),
                    at: p,
                    inside: None,
                    kind: req.kind,
                    target: req.target.clone(),
                };
                return Ok((placed, out));
            }
            Err(e) => return Err(mp_io("inspecting", root, &here)(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                fds.push(open_path(dir, &name).map_err(mp_io("opening", root, &here))?);
                at = here;
            }
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(refuse("too many levels of symbolic links".into()));
                }
                let target = rustix::fs::readlinkat(dir, &name, Vec::new())
                    .map_err(mp_io("reading", root, &here))?;
                let target = PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes()));
                if target.as_os_str().is_empty() {
                    // Linux makes none, but a file system might hold one;
                    // the kernel finds nothing through it.
                    return Err(refuse(format!(
                        "{} is an empty symlink",
                        Path::new("/").join(&here).display()
                    )));
                }
                if target.is_absolute() {
                    at = PathBuf::new();
                    fds.clear();
                }
                for c in target.components().rev() {
                    let n = match c {
                        std::path::Component::RootDir => continue,
                        std::path::Component::CurDir => ".".into(),
                        std::path::Component::ParentDir => "..".into(),
                        std::path::Component::Normal(n) => n.to_os_string(),
                        std::path::Component::Prefix(_) => continue,
                    };
                    pending.push_front((n, Some(here.clone())));
                }
            }
            _ if pending.is_empty() && req.kind == Kind::File => {
                at = here;
                break;
            }
            _ => {
                return Err(refuse(format!(
                    "{} exists and is not a directory",
                    Path::new("/").join(&here).display()
                )));
            }
        }
    }
    if at.as_os_str().is_empty() {
        return Err(refuse("it resolves to the root itself".into()));
    }
    let is_dir = fds.len() == at.components().count();
    if is_dir && req.kind == Kind::File {
        return Err(refuse(format!(
            "{} is a directory, but the bind source is a file",
            Path::new("/").join(&at).display()
        )));
    }
    Ok((
        Placed {
            asked: req.asked.clone(),
            at,
            inside: None,
            kind: req.kind,
            target: req.target.clone(),
        },
        Vec::new(),
    ))
}

/// `req` continues inside earlier mount `i`, at `at` plus `rest`: its
/// mount point is made in the sandbox, in that mount. Only plain names
/// may follow, and none of them a symlink: a fresh tmpfs has none, /dev
/// has a few (refused), and a bind's source is looked at on the host
/// without following any (what is missing there is made in the sandbox).
fn inside_mount(
    req: &Request,
    shown: &Path,
    at: PathBuf,
    i: usize,
    placed: &[Placed],
    rest: std::collections::VecDeque<(std::ffi::OsString, Option<PathBuf>)>,
) -> Result<Placed, SandboxError> {
    let refuse = |reason: String| SandboxError::Resolve {
        dest: shown.to_path_buf(),
        reason,
    };
    let rest: Vec<std::ffi::OsString> = rest.into_iter().map(|(n, _)| n).collect();
    if rest
        .iter()
        .any(|n| n.as_bytes() == b".." || n.as_bytes() == b".")
    {
        return Err(refuse(format!(
            "it leads through /{} with `.` or `..`",
            placed[i].asked.display()
        )));
    }
    let mut full = at;
    full.extend(&rest);
    // The deepest mount it lies in (a bind inside /tmp, say).
    let i = (0..placed.len())
        .filter(|j| full.starts_with(&placed[*j].at))
        .max_by_key(|j| placed[*j].at.components().count())
        .unwrap_or(i);
    let outer = &placed[i];
    let names: Vec<&OsStr> = full
        .strip_prefix(&outer.at)
        .unwrap_or(Path::new(""))
        .components()
        .map(|c| c.as_os_str())
        .collect();
    let outer_shown = Path::new("/").join(&outer.asked);
    match &outer.target {
        Target::Closed => {
            return Err(refuse(format!(
                "it lies in {}, where nothing can be mounted",
                outer_shown.display()
            )));
        }
        Target::Dev => {
            if let Some(first) = names.first()
                && DEV_LINKS.iter().any(|l| first.as_bytes() == l.as_bytes())
            {
                return Err(refuse(format!(
                    "/dev/{} is a symlink in the sandbox",
                    first.to_string_lossy()
                )));
            }
        }
        Target::Tmpfs => {}
        Target::Bind(source) if outer.kind == Kind::Dir => {
            let mut dir = crate::fs::open_dir(rustix::fs::CWD, source).map_err(|source_err| {
                SandboxError::BindSource {
                    path: source.clone(),
                    source: source_err,
                }
            })?;
            let mut p = source.clone();
            for (j, n) in names.iter().enumerate() {
                p.push(n);
                let st = match rustix::fs::statat(&dir, *n, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(rustix::io::Errno::NOENT) => break,
                    Err(e) => {
                        return Err(SandboxError::BindSource {
                            path: p,
                            source: e.into(),
                        });
                    }
                };
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {
                        dir = open_path(dir.as_fd(), n).map_err(|e| SandboxError::BindSource {
                            path: p.clone(),
                            source: e.into(),
                        })?;
                    }
                    FileType::Symlink => {
                        return Err(refuse(format!(
                            "{} is a symlink in the source of the bind on {}; not followed",
                            p.display(),
                            outer_shown.display()
                        )));
                    }
                    _ if j + 1 == names.len() && req.kind == Kind::File => {}
                    _ => {
                        return Err(refuse(format!(
                            "{} exists and is not a directory",
                            p.display()
                        )));
                    }
                }
            }
        }
        Target::Bind(_) if names.is_empty() && req.kind == Kind::File => {}
        Target::Bind(_) => {
            return Err(refuse(format!(
                "it lies in {}, a file bind",
                outer_shown.display()
            )));
        }
    }
    Ok(Placed {
        asked: req.asked.clone(),
        at: full,
        inside: Some(i),
        kind: req.kind,
        target: req.target.clone(),
    })
}

/// Mounts are made in order, so one that would cover an earlier bind
/// (a later destination resolving above it) would hide it: refused.
fn check_order(placed: &[Placed]) -> Result<(), SandboxError> {
    for (j, later) in placed.iter().enumerate() {
        for earlier in &placed[..j] {
            if matches!(earlier.target, Target::Bind(_))
                && earlier.at != later.at
                && earlier.at.starts_with(&later.at)
            {
                return Err(SandboxError::Resolve {
                    dest: Path::new("/").join(&later.asked),
                    reason: format!(
                        "it resolves to /{}, which would hide the bind on {}",
                        later.at.display(),
                        Path::new("/").join(&earlier.asked).display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Opens the directory holding `rel`, walking from the root without
/// following symlinks.
fn open_parent(root_fd: &OwnedFd, rel: &Path) -> rustix::io::Result<Option<OwnedFd>> {
    let mut cur: Option<OwnedFd> = None;
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            let dir = cur.as_ref().map_or(root_fd.as_fd(), |d| d.as_fd());
            cur = Some(open_path(dir, c.as_os_str())?);
        }
    }
    Ok(cur)
}

fn create(root_fd: &OwnedFd, root: &Path, rel: &Path, kind: Kind) -> Result<(), SandboxError> {
    let parent = open_parent(root_fd, rel).map_err(mp_io("opening the parent of", root, rel))?;
    let dir = parent.as_ref().map_or(root_fd.as_fd(), |d| d.as_fd());
    let name = rel.file_name().unwrap_or_default();
    let r = match kind {
        Kind::Dir => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)),
        Kind::File => rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    };
    match r {
        // Made by a sandbox that started at the same time as this one.
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(mp_io("creating", root, rel)(e)),
    }
}

/// Removes `rel` if it is still an empty directory (or empty regular
/// file); anything else is left alone.
fn remove(root_fd: &OwnedFd, root: &Path, rel: &Path, kind: Kind) -> Result<(), SandboxError> {
    let parent = match open_parent(root_fd, rel) {
        Ok(p) => p,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return Ok(());
        }
        Err(e) => return Err(mp_io("opening the parent of", root, rel)(e)),
    };
    let dir = parent.as_ref().map_or(root_fd.as_fd(), |d| d.as_fd());
    let name = rel.file_name().unwrap_or_default();
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(mp_io("inspecting", root, rel)(e)),
    };
    let r = match (kind, FileType::from_raw_mode(st.st_mode)) {
        (Kind::Dir, FileType::Directory) => rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR),
        (Kind::File, FileType::RegularFile) if st.st_size == 0 => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
        }
        _ => return Ok(()),
    };
    match r {
        // Written to since: the stage's now.
        Ok(()) | Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTEMPTY) => Ok(()),
        Err(e) => Err(mp_io("removing", root, rel)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_hostile_lines() {
        let entries = vec![
            (PathBuf::from("proc"), Kind::Dir),
            (PathBuf::from("a b/c"), Kind::File),
        ];
        let data = format_record(&entries);
        assert_eq!(data, b"d proc\nf a b/c\n");
        assert_eq!(parse_record(&data), entries);
        let hostile = b"d /etc\nd ../x\nd a/../../b\nx y\nd \nf ok\n";
        assert_eq!(
            parse_record(hostile),
            vec![(PathBuf::from("ok"), Kind::File)]
        );
    }

    fn req(asked: &str, kind: Kind, target: Target) -> Request {
        Request {
            asked: asked.into(),
            kind,
            target,
        }
    }

    /// Resolution inside the root: symlinks (absolute ones from the root,
    /// `..` clamped there), what to create, and refusals.
    #[test]
    fn resolve_in_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        let ln = |t: &str, p: &str| std::os::unix::fs::symlink(t, root.join(p)).unwrap();
        mk("usr/lib");
        mk("var/tmp");
        std::fs::write(root.join("file"), b"").unwrap();
        ln("lib", "usr/lib64");
        ln("/var/tmp", "tmp");
        ln("../../../..", "up");
        ln("/", "slash");
        ln("nowhere", "dangling");
        ln("loop", "loop");
        ln("proc/x", "inproc");
        let fd = crate::fs::open_dir(rustix::fs::CWD, root).unwrap();
        let r = |asked: &str, kind, placed: &[Placed]| {
            resolve(&fd, root, &req(asked, kind, Target::Tmpfs), placed)
        };
        let at = |asked: &str, kind| {
            let (p, create) = r(asked, kind, &[]).unwrap();
            (p.at.to_str().unwrap().to_string(), create)
        };
        assert_eq!(at("usr/lib64", Kind::Dir), ("usr/lib".into(), vec![]));
        assert_eq!(
            at("usr/lib64/a/b", Kind::File),
            (
                "usr/lib/a/b".into(),
                vec![
                    (PathBuf::from("usr/lib/a"), Kind::Dir),
                    (PathBuf::from("usr/lib/a/b"), Kind::File)
                ]
            )
        );
        assert_eq!(at("up/tmp/x", Kind::Dir).0, "var/tmp/x");
        assert_eq!(at("file", Kind::File), ("file".into(), vec![]));
        for (bad, kind, says) in [
            ("slash", Kind::Dir, "the root itself"),
            ("up", Kind::Dir, "the root itself"),
            (
                "dangling/x",
                Kind::Dir,
                "/dangling is a symlink to a missing path",
            ),
            ("loop/x", Kind::Dir, "too many levels"),
            ("file/x", Kind::Dir, "/file exists and is not a directory"),
            ("usr", Kind::File, "/usr is a directory"),
        ] {
            let e = r(bad, kind, &[]).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains(&format!("/{bad}")),
                "{bad}: {e}"
            );
        }
        // Walks stop at earlier mounts: inside /proc nothing; inside a
        // tmpfs the rest is made in the sandbox.
        mk("proc");
        let proc = r("proc", Kind::Dir, &[]).unwrap().0;
        let proc = Placed {
            target: Target::Closed,
            ..proc
        };
        let e = r("inproc", Kind::Dir, std::slice::from_ref(&proc)).unwrap_err();
        assert!(e.to_string().contains("lies in /proc"), "{e}");
        let t = r("tmp", Kind::Dir, &[]).unwrap().0;
        let (p, create) = r("up/var/tmp/a/b", Kind::Dir, &[proc, t.clone()]).unwrap();
        assert_eq!(
            (p.at, p.inside, create),
            ("var/tmp/a/b".into(), Some(1), vec![])
        );
        // Mount points still to be made: a bind inside a bind whose mount
        // point is missing goes inside it all the same.
        let src = tempfile::tempdir().unwrap();
        let bind = |asked: &str, placed: &[Placed]| {
            let req = req(asked, Kind::Dir, Target::Bind(src.path().into()));
            resolve(&fd, root, &req, placed).unwrap()
        };
        let (outer, create) = bind("new/outer", &[]);
        assert_eq!(create.len(), 2);
        let (inner, create) = bind("new/outer/in/ner", &[t, outer]);
        assert_eq!(
            (inner.at, inner.inside, create),
            (
                "new/outer/in/ner".into(),
                Some(1),
                vec![(PathBuf::from("new"), Kind::Dir)]
            )
        );
    }

    #[test]
    fn create_and_remove_only_what_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        let fd = crate::fs::open_dir(rustix::fs::CWD, root).unwrap();
        let want = vec![
            (PathBuf::from("etc/a"), Kind::Dir),
            (PathBuf::from("etc/a/b"), Kind::File),
        ];
        let (_, create_list) =
            resolve(&fd, root, &req("etc/a/b", Kind::File, Target::Tmpfs), &[]).unwrap();
        assert_eq!(create_list, want);
        for (rel, kind) in &want {
            create(&fd, root, rel, *kind).unwrap();
        }
        assert!(root.join("etc/a/b").is_file());
        std::fs::create_dir(root.join("proc")).unwrap();
        std::fs::write(root.join("proc/x"), b"kept").unwrap();
        for (rel, kind) in [
            ("etc/a/b", Kind::File),
            ("etc/a", Kind::Dir),
            ("proc", Kind::Dir),
            ("gone", Kind::Dir),
        ] {
            remove(&fd, root, Path::new(rel), kind).unwrap();
        }
        assert!(!root.join("etc/a").exists());
        assert_eq!(std::fs::read(root.join("proc/x")).unwrap(), b"kept");
    }
}
