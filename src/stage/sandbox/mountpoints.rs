//! Mount points the sandbox needs but the stage lacks: made before the
//! command runs, removed once no sandbox uses the stage, never committed.
//!
//! A sandbox mounts `/proc`, `/dev`, `/sys`, `/tmp`, `/run` and each bind
//! destination over an existing entry of the stage's root (in its private
//! mount namespace; see [the module above](super)). A tree made of chunks
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
//!   other's lines. Taken on a second descriptor, closed to release it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

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
    /// Takes the run lock (shared) and makes sure every `needed` mount
    /// point exists in `root`, listing what it creates.
    pub(crate) fn begin(
        stages_dir: &OwnedFd,
        stage_dir_path: &Path,
        name: &str,
        root: &Path,
        needed: &[(PathBuf, Kind)],
    ) -> Result<Registration, SandboxError> {
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
        let mut missing = Vec::new();
        for (rel, kind) in needed {
            for entry in missing_entries(&root_fd, root, rel, *kind)? {
                if !missing.contains(&entry) {
                    missing.push(entry);
                }
            }
        }
        if !missing.is_empty() {
            let mut recorded = reg.read_record()?;
            recorded.extend(missing.iter().cloned());
            reg.write_record(&recorded)?;
            for (rel, kind) in &missing {
                create(&root_fd, root, rel, *kind)?;
            }
        }
        drop(edit);
        Ok(reg)
    }

    /// Ends the hold (also on drop); the last sandbox out removes the
    /// listed entries (best effort: a failure leaves them listed for the
    /// next one, or for `stage commit`, which reports it).
    pub(crate) fn finish(&mut self) {
        if let Some(run) = self.lock.take()
            && lock(&run, RUN, true, false, &self.stage_dir_path).unwrap_or(false)
        {
            let _ = self.remove_all();
        }
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

/// The entries to create for `rel` to exist as `kind` (none when it
/// does): the first missing component and everything below it.
fn missing_entries(
    root_fd: &OwnedFd,
    root: &Path,
    rel: &Path,
    kind: Kind,
) -> Result<Vec<(PathBuf, Kind)>, SandboxError> {
    let comps: Vec<&OsStr> = rel.components().map(|c| c.as_os_str()).collect();
    let mut cur: Option<OwnedFd> = None;
    let mut here = PathBuf::new();
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        here.push(name);
        let dir = cur.as_ref().map_or(root_fd.as_fd(), |d| d.as_fd());
        let st = match rustix::fs::statat(dir, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => {
                let mut out = Vec::new();
                let mut p: PathBuf = comps[..i].iter().collect();
                for (j, c) in comps.iter().enumerate().skip(i) {
                    p.push(c);
                    let k = if j + 1 == comps.len() {
                        kind
                    } else {
                        Kind::Dir
                    };
                    out.push((p.clone(), k));
                }
                return Ok(out);
            }
            Err(e) => return Err(mp_io("inspecting", root, &here)(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory if last => {
                return if kind == Kind::File {
                    Err(SandboxError::MountPoint {
                        path: root.join(&here),
                        reason: "is a directory, but the bind source is a file",
                    })
                } else {
                    Ok(Vec::new())
                };
            }
            FileType::Directory => {
                cur = Some(open_path(dir, name).map_err(mp_io("opening", root, &here))?);
            }
            FileType::Symlink => {
                // The sandbox resolves it inside the root; it must lead to
                // something, which is then the mount point.
                let found = rustix::fs::openat2(
                    root_fd,
                    rel,
                    OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                );
                return match found {
                    Ok(fd) => {
                        let st = rustix::fs::fstat(&fd).map_err(mp_io("inspecting", root, rel))?;
                        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                        if is_dir == (kind == Kind::Dir) {
                            Ok(Vec::new())
                        } else {
                            Err(SandboxError::MountPoint {
                                path: root.join(rel),
                                reason: "is reached through a symlink and is not of the bind \
                                         source's type",
                            })
                        }
                    }
                    Err(rustix::io::Errno::NOENT) => Err(SandboxError::MountPoint {
                        path: root.join(&here),
                        reason: "is a symlink to a missing path; create what it points to",
                    }),
                    Err(e) => Err(mp_io("resolving", root, rel)(e)),
                };
            }
            _ if last && kind == Kind::File => return Ok(Vec::new()),
            _ => {
                return Err(SandboxError::MountPoint {
                    path: root.join(&here),
                    reason: "exists and is not a directory",
                });
            }
        }
    }
    Ok(Vec::new())
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

    #[test]
    fn create_and_remove_only_what_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("etc", root.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        let fd = crate::fs::open_dir(rustix::fs::CWD, root).unwrap();
        let m = |rel: &str, kind| missing_entries(&fd, root, Path::new(rel), kind);
        assert_eq!(m("etc", Kind::Dir).unwrap(), vec![]);
        assert_eq!(m("link", Kind::Dir).unwrap(), vec![]);
        assert!(m("etc", Kind::File).is_err());
        assert!(m("dangling/x", Kind::Dir).is_err());
        let want = vec![
            (PathBuf::from("etc/a"), Kind::Dir),
            (PathBuf::from("etc/a/b"), Kind::File),
        ];
        assert_eq!(m("etc/a/b", Kind::File).unwrap(), want);
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
