//! What prune removes besides objects: static deltas whose target is gone,
//! stale `commitpartial` markers and detached metadata, summary caches of
//! remotes that no longer exist; and deleting one object the way libostree
//! does (a commit takes its detached metadata and marker with it and may
//! leave a tombstone).

use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType};

use crate::fs::list_dir_typed;
use crate::ostree::delta::name::from_mb64;
use crate::ostree::{Checksum, Metadata, ObjectName, ObjectType, Value};
use crate::store::Repo;
use crate::store::error::{IoContext, Result};

/// Space an object took.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Freed {
    /// Its size (`st_size`), what libostree reports as freed.
    pub bytes: u64,
    /// Blocks released: its allocated size, when this was its last link.
    pub disk_bytes: u64,
}

impl std::ops::AddAssign for Freed {
    fn add_assign(&mut self, o: Freed) {
        self.bytes += o.bytes;
        self.disk_bytes += o.disk_bytes;
    }
}

/// The size of an object and its inode number, `None` when it is not
/// there.
pub(super) fn object_size(repo: &Repo, name: &ObjectName) -> Result<Option<(Freed, u64)>> {
    match rustix::fs::statat(
        repo.objects_dir(),
        repo.object_path(name).as_str(),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some((
            Freed {
                bytes: st.st_size as u64,
                disk_bytes: if st.st_nlink <= 1 {
                    st.st_blocks as u64 * 512
                } else {
                    0
                },
            },
            st.st_ino,
        ))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e).at(repo.object_fs_path(name)),
    }
}

fn unlink_quiet(
    dir: impl AsFd,
    rel: &str,
    path: impl FnOnce() -> std::path::PathBuf,
) -> Result<bool> {
    match rustix::fs::unlinkat(dir, rel, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e).at(path()),
    }
}

/// Deletes one object (measured beforehand); false when it was already
/// gone. A commit goes first, then its detached metadata and partial
/// marker: the reverse of libostree's order, so that a crash in between
/// never leaves a partial commit looking complete (a leftover marker or
/// `.commitmeta` of an absent commit is harmless, and removed by the next
/// prune).
pub(super) fn delete_object(repo: &Repo, name: &ObjectName, tombstone: bool) -> Result<bool> {
    let rel = repo.object_path(name);
    if !unlink_quiet(repo.objects_dir(), &rel, || repo.object_fs_path(name))? {
        return Ok(false);
    }
    if name.objtype == ObjectType::Commit {
        crate::failpoint::crash("prune:commit-deleted");
        delete_commit_leftovers(repo, &name.checksum)?;
        if tombstone {
            write_tombstone(repo, &name.checksum)?;
        }
    }
    Ok(true)
}

/// Removes an absent commit's detached metadata and partial marker.
pub(super) fn delete_commit_leftovers(repo: &Repo, c: &Checksum) -> Result<()> {
    let meta = ObjectName::new(*c, ObjectType::CommitMeta);
    unlink_quiet(repo.objects_dir(), &repo.object_path(&meta), || {
        repo.object_fs_path(&meta)
    })?;
    repo.clear_commit_partial(c)
}

/// A tombstone-commit object: `{'commit': <b'HEX'>}` (the bytestring
/// keeps its NUL), as libostree writes when `core.tombstone-commits` is on.
pub(super) fn tombstone_bytes(c: &Checksum) -> Vec<u8> {
    let mut hex = c.to_hex().into_bytes();
    hex.push(0);
    let mut m = Metadata::new();
    m.insert("commit", Value::Bytes(hex));
    m.serialize()
}

fn write_tombstone(repo: &Repo, c: &Checksum) -> Result<()> {
    let name = ObjectName::new(*c, ObjectType::TombstoneCommit);
    let dir_name = name.loose_dir();
    let dir = crate::fs::open_dir(repo.objects_dir(), dir_name.as_str())
        .at(repo.path().join("objects").join(&dir_name))?;
    crate::store::repo::write_file_atomic(
        dir.as_fd(),
        &repo.path().join("objects").join(&dir_name),
        &name.loose_file_name(false),
        &tombstone_bytes(c),
        0o644,
    )
}

/// Whether `core.tombstone-commits` is on.
pub(super) fn tombstones_enabled(repo: &Repo) -> bool {
    matches!(
        repo.config().get_bool("core", "tombstone-commits"),
        Ok(Some(true))
    )
}

/// Turns `core.tombstone-commits` on in the config file, as
/// `ostree prune --delete-commit` does (permanently). Read afresh: the
/// open repository's copy may be older than the file.
pub(super) fn enable_tombstones(repo: &Repo) -> Result<()> {
    let path = repo.path().join("config");
    let text = std::fs::read_to_string(&path).at(&path)?;
    let mut config = crate::store::keyfile::KeyFile::parse(&text).map_err(|e| {
        crate::store::StoreError::Config {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    if matches!(config.get_bool("core", "tombstone-commits"), Ok(Some(true))) {
        return Ok(());
    }
    config
        .set_bool("core", "tombstone-commits", true)
        .map_err(|e| crate::store::StoreError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    crate::store::repo::write_file_atomic(
        repo.dir(),
        repo.path(),
        "config",
        config.to_string().as_bytes(),
        0o644,
    )
}

/// A static delta on disk: its hex name and directory (relative to the
/// repository).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeltaDir {
    pub from: Option<Checksum>,
    pub to: Checksum,
    pub dir: String,
}

impl DeltaDir {
    /// `FROM-TO` or `TO`, as summaries name deltas.
    pub fn name(&self) -> String {
        match &self.from {
            Some(f) => format!("{f}-{}", self.to),
            None => self.to.to_string(),
        }
    }
}

/// Every static delta under `deltas/` (a directory with a `superblock`),
/// as `ostree_repo_list_static_delta_names` finds them.
pub(super) fn list_deltas(repo: &Repo) -> Result<Vec<DeltaDir>> {
    let base = repo.path().join("deltas");
    let top = match crate::fs::open_dir(repo.dir(), "deltas") {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(base),
    };
    let mut out = Vec::new();
    for (a, ty) in list_dir_typed(top.as_fd()).at(&base)? {
        let Some(a) = a.to_str() else { continue };
        if ty != FileType::Directory {
            continue;
        }
        let sub = crate::fs::open_dir(&top, a).at(base.join(a))?;
        for (b, ty) in list_dir_typed(sub.as_fd()).at(base.join(a))? {
            let Some(b) = b.to_str() else { continue };
            if ty != FileType::Directory {
                continue;
            }
            match rustix::fs::statat(&sub, format!("{b}/superblock").as_str(), AtFlags::empty()) {
                Ok(_) => {}
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e).at(base.join(a).join(b).join("superblock")),
            }
            let joined = format!("{a}{b}");
            let (from, to) = match joined.split_once('-') {
                Some((f, t)) => (Some(f), t),
                None => (None, joined.as_str()),
            };
            let (Some(to), Some(from)) = (
                from_mb64(to),
                match from {
                    Some(f) => from_mb64(f).map(Some),
                    None => Some(None),
                },
            ) else {
                continue;
            };
            out.push(DeltaDir {
                from,
                to,
                dir: format!("deltas/{a}/{b}"),
            });
        }
    }
    out.sort_by(|x, y| x.dir.cmp(&y.dir));
    Ok(out)
}

/// Removes a delta's directory.
pub(super) fn remove_delta(repo: &Repo, delta: &DeltaDir) -> Result<()> {
    let (parent, leaf) = delta.dir.rsplit_once('/').expect("deltas/A/B");
    let dir = match crate::fs::open_dir(repo.dir(), parent) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at(repo.path().join(parent)),
    };
    crate::fs::remove_tree(dir.as_fd(), leaf).at(repo.path().join(&delta.dir))
}

/// `tmp/cache/summaries/NAME[.sig]` of remotes the config no longer has.
pub(super) fn stale_summary_caches(repo: &Repo) -> Result<Vec<String>> {
    let rel = "tmp/cache/summaries";
    let dir = match crate::fs::open_dir(repo.dir(), rel) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(repo.path().join(rel)),
    };
    let mut out = Vec::new();
    for (name, _) in list_dir_typed(dir.as_fd()).at(repo.path().join(rel))? {
        let Some(name) = name.to_str() else { continue };
        let remote = name.strip_suffix(".sig").unwrap_or(name);
        if !repo.has_remote(remote) {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn remove_summary_cache(repo: &Repo, name: &str) -> Result<()> {
    let rel = format!("tmp/cache/summaries/{name}");
    unlink_quiet(repo.dir(), &rel, || repo.path().join(&rel)).map(drop)
}

/// Commits that have a `state/C.commitpartial` marker.
pub(super) fn partial_markers(repo: &Repo) -> Result<Vec<Checksum>> {
    let dir = match crate::fs::open_dir(repo.dir(), "state") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(repo.path().join("state")),
    };
    let mut out = Vec::new();
    for (name, _) in list_dir_typed(dir.as_fd()).at(repo.path().join("state"))? {
        if let Some(c) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".commitpartial"))
            .and_then(|c| c.parse::<Checksum>().ok())
        {
            out.push(c);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a transaction's staging directory in `tmp/` (arbor's or
/// libostree's, live or dead) holds commit `c`: publishing it later would
/// bring the commit back, so its marker must stay.
pub(super) fn commit_staged(repo: &Repo, c: &Checksum) -> Result<bool> {
    let tmp = match crate::fs::open_dir(repo.dir(), "tmp") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).at(repo.path().join("tmp")),
    };
    let rel = ObjectName::new(*c, ObjectType::Commit).loose_path(false);
    for (name, ty) in list_dir_typed(tmp.as_fd()).at(repo.path().join("tmp"))? {
        if ty != FileType::Directory {
            continue;
        }
        let Some(name) = name.to_str() else { continue };
        match rustix::fs::statat(
            &tmp,
            format!("{name}/{rel}").as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {}
            Err(e) => return Err(e).at(repo.path().join("tmp").join(name).join(&rel)),
        }
    }
    Ok(false)
}

/// The file object a payload link points to (`../XX/REST.file`).
pub(super) fn payload_link_target(repo: &Repo, name: &ObjectName) -> Result<Option<Checksum>> {
    let rel = repo.object_path(name);
    let target = match rustix::fs::readlinkat(repo.objects_dir(), rel.as_str(), Vec::new()) {
        Ok(t) => t,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).at(repo.object_fs_path(name)),
    };
    let t = target.to_bytes();
    // "../" + "XX" + "/" + 62 hex digits.
    let Some(rest) = t.strip_prefix(b"../") else {
        return Ok(None);
    };
    if rest.len() < 65 {
        return Ok(None);
    }
    let hex = [&rest[..2], &rest[3..65]].concat();
    Ok(std::str::from_utf8(&hex).ok().and_then(|h| h.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_is_libostrees() {
        // 78 bytes, as ostree writes (verified in the format notes).
        let c: Checksum = "aa".repeat(32).parse().unwrap();
        let t = tombstone_bytes(&c);
        assert_eq!(t.len(), 78);
        assert!(t.starts_with(b"commit\0"));
    }
}
