//! Writing the files a repository publishes (summary, indexes, delta parts)
//! through directory descriptors: created under a temporary name, synced
//! when asked, renamed over the old file.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use thiserror::Error;

use crate::fs::{ensure_dir, open_dir};
use crate::store::Repo;

/// An I/O error on a file of the published repository.
#[derive(Debug, Error)]
#[error("{path}: {source}")]
pub struct PublishIo {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PublishIo {
    pub fn new(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PublishIo {
            path: path.into(),
            source,
        }
    }
}

/// Opens (creating as needed, mode 0775) the directory `rel` of the
/// repository, one component at a time without following symlinks.
pub(crate) fn mkdir_p(repo: &Repo, rel: &str) -> Result<OwnedFd, PublishIo> {
    let mut fd = open_dir(repo.dir(), ".").map_err(|e| PublishIo::new(repo.path(), e))?;
    let mut built = repo.path().to_path_buf();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        built.push(comp);
        ensure_dir(&fd, comp, 0o775).map_err(|e| PublishIo::new(&built, e))?;
        fd = open_dir(&fd, comp).map_err(|e| PublishIo::new(&built, e))?;
    }
    Ok(fd)
}

/// A temporary name in a directory, unique to this process and call.
pub(crate) fn tmp_name(base: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{base}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `data` to a new temporary file (mode 0644) in `dir`; returns its
/// name. The file is synced when `fsync`.
pub(crate) fn write_tmp(
    dir: impl AsFd,
    dir_path: &Path,
    base: &str,
    data: &[u8],
    fsync: bool,
) -> Result<String, PublishIo> {
    let tmp = tmp_name(base);
    let path = dir_path.join(&tmp);
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| PublishIo::new(&path, e.into()))?;
    // The umask may have taken bits off: published files are world-readable.
    let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644));
    let mut f = std::fs::File::from(fd);
    let r = f
        .write_all(data)
        .and_then(|()| if fsync { f.sync_data() } else { Ok(()) });
    if let Err(e) = r {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        return Err(PublishIo::new(path, e));
    }
    Ok(tmp)
}

/// Replaces `rel_dir/name` of the repository with `data`, creating
/// `rel_dir`: written in `stage` (a private working directory of `tmp/`,
/// so a killed process leaves nothing in the served tree) and renamed.
pub(crate) fn write_replace(
    repo: &Repo,
    stage: &crate::store::workdir::WorkDir,
    rel_dir: &str,
    name: &str,
    data: &[u8],
    fsync: bool,
) -> Result<(), PublishIo> {
    let dir = mkdir_p(repo, rel_dir)?;
    let dir_path = repo.path().join(rel_dir);
    let tmp = write_tmp(stage.dir(), stage.path(), name, data, fsync)?;
    rustix::fs::renameat(stage.dir(), tmp.as_str(), &dir, name).map_err(|e| {
        let _ = rustix::fs::unlinkat(stage.dir(), tmp.as_str(), AtFlags::empty());
        PublishIo::new(dir_path.join(name), e.into())
    })?;
    if fsync {
        rustix::fs::fsync(&dir).map_err(|e| PublishIo::new(&dir_path, e.into()))?;
    }
    Ok(())
}
