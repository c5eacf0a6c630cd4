//! The static deltas a repository holds: listing (`deltas/XX/REST/` with a
//! `superblock`), superblock digests, deletion, and the delta indexes
//! (`delta-indexes/XX/REST.index`) regenerated with the summary.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType};

use crate::fs::{list_dir_typed, open_dir};
use crate::ostree::delta::name::{MB64_LEN, from_mb64};
use crate::ostree::delta::superblock::{MAX_SUPERBLOCK_SIZE, is_signed};
use crate::ostree::delta::{DeltaIndex, DeltaList, DeltaName};
use crate::ostree::glib_order::dict_order;
use crate::ostree::{Checksum, MAX_METADATA_SIZE};
use crate::store::Repo;

use super::files::{PublishIo, write_replace};

/// Every delta of the repository (a directory with a `superblock`), sorted.
/// Directories that do not name a delta are skipped, as libostree does.
pub fn list_deltas(repo: &Repo) -> Result<Vec<DeltaName>, PublishIo> {
    let root = repo.path().join("deltas");
    let deltas = match open_dir(repo.dir(), "deltas") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PublishIo::new(root, e)),
    };
    let mut out = Vec::new();
    for (first, ty) in list_dir_typed(deltas.as_fd()).map_err(|e| PublishIo::new(&root, e))? {
        let Some(first) = first.to_str() else {
            continue;
        };
        if ty != FileType::Directory || first.len() != 2 {
            continue;
        }
        let sub = open_dir(&deltas, first).map_err(|e| PublishIo::new(root.join(first), e))?;
        for (rest, ty) in list_dir_typed(sub.as_fd()).map_err(|e| PublishIo::new(&root, e))? {
            let Some(rest) = rest.to_str() else { continue };
            if ty != FileType::Directory {
                continue;
            }
            let Some(name) = DeltaName::from_dir_components(first, rest) else {
                continue;
            };
            match rustix::fs::statat(
                &sub,
                format!("{rest}/superblock").as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    out.push(name)
                }
                Ok(_) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(PublishIo::new(root.join(first).join(rest), e.into())),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the repository has this delta (its superblock exists).
pub fn has_delta(repo: &Repo, name: &DeltaName) -> Result<bool, PublishIo> {
    match rustix::fs::statat(
        repo.dir(),
        name.superblock_path().as_str(),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(false),
        Err(e) => Err(PublishIo::new(
            repo.path().join(name.superblock_path()),
            e.into(),
        )),
    }
}

/// The superblock file's bytes (signed wrapper included, as stored),
/// bounded by the metadata limit.
pub fn read_superblock(repo: &Repo, name: &DeltaName) -> Result<Vec<u8>, PublishIo> {
    let rel = name.superblock_path();
    let path = repo.path().join(&rel);
    let fd = rustix::fs::openat(
        repo.dir(),
        rel.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| PublishIo::new(&path, e.into()))?;
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_SUPERBLOCK_SIZE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| PublishIo::new(&path, e))?;
    if data.len() > MAX_SUPERBLOCK_SIZE {
        return Err(PublishIo::new(
            &path,
            std::io::Error::other(format!(
                "larger than the {MAX_SUPERBLOCK_SIZE}-byte superblock limit"
            )),
        ));
    }
    Ok(data)
}

/// SHA-256 of the superblock file: the digest summaries and indexes list.
pub fn superblock_digest(repo: &Repo, name: &DeltaName) -> Result<Checksum, PublishIo> {
    Ok(Checksum::digest(&read_superblock(repo, name)?))
}

/// The deltas a summary and the delta indexes list, with their digests,
/// in name order; and the signed ones, left out.
///
/// A signed superblock (the `OSTSGNDT` wrapper `--sign` writes, as
/// `ostree static-delta generate --sign` does) is for `static-delta
/// apply-offline`: libostree's HTTP pull checks the listed digest over the
/// file it fetched and then reads the file as a plain superblock, so a
/// listed signed delta makes every `ostree pull` that picks it fail.
/// Online, the signed summary already authenticates each listed digest.
pub fn delta_list(repo: &Repo) -> Result<(DeltaList, Vec<DeltaName>), PublishIo> {
    let mut out = Vec::new();
    let mut signed = Vec::new();
    for name in list_deltas(repo)? {
        let bytes = read_superblock(repo, &name)?;
        if is_signed(&bytes) {
            signed.push(name);
        } else {
            out.push((name, Checksum::digest(&bytes)));
        }
    }
    Ok((DeltaList(out), signed))
}

/// Removes a delta's directory; `false` when there was none. The
/// directory leaves the served tree in one rename (into a private working
/// directory of `tmp/`, removed there), so a reader sees the delta whole or
/// not at all.
pub fn delete_delta(repo: &Repo, name: &DeltaName) -> Result<bool, PublishIo> {
    let dir = name.dir();
    let path = repo.path().join(&dir);
    let (parent, leaf) = dir.rsplit_once('/').expect("delta dirs have components");
    let pfd = match open_dir(repo.dir(), parent) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(PublishIo::new(path, e)),
    };
    match rustix::fs::statat(&pfd, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(PublishIo::new(path, e.into())),
        Ok(_) => {}
    }
    let work = crate::store::workdir::WorkDir::create(repo, "delete", 0o700)
        .map_err(|e| PublishIo::new(repo.path().join("tmp"), std::io::Error::other(e)))?;
    rustix::fs::renameat(&pfd, leaf, work.dir(), "delta")
        .map_err(|e| PublishIo::new(&path, e.into()))?;
    drop(work);
    // Drop the two-character directory once empty, as a tidy repository
    // has none; another delta being written there keeps it.
    let _ = rustix::fs::unlinkat(repo.dir(), parent, AtFlags::REMOVEDIR);
    Ok(true)
}

/// What [`reindex`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReindexOutcome {
    /// Index files written (new or changed).
    pub written: usize,
    /// Index files already holding the right bytes.
    pub unchanged: usize,
    /// Index files of commits without deltas, removed.
    pub removed: usize,
}

/// Writes `delta-indexes/…/TO.index` for every TO of `deltas` (FROM names
/// sorted, so the bytes are reproducible), leaves files already right
/// untouched, and removes indexes of commits without deltas, as
/// `ostree_repo_static_delta_reindex` does.
pub fn reindex(
    repo: &Repo,
    stage: &crate::store::workdir::WorkDir,
    deltas: &DeltaList,
    fsync: bool,
) -> Result<ReindexOutcome, PublishIo> {
    let mut by_to: BTreeMap<Checksum, Vec<(DeltaName, Checksum)>> = BTreeMap::new();
    for (name, digest) in &deltas.0 {
        by_to.entry(name.to).or_default().push((*name, *digest));
    }
    let mut out = ReindexOutcome::default();
    for (to, mut list) in by_to.iter().map(|(t, l)| (*t, l.clone())) {
        // libostree sorts FROM hex names with g_strcmp0: scratch (NULL) first.
        list.sort_by_key(|(n, _)| n.from.map(|f| f.to_hex()));
        // Inserted in that order into a GVariantDict: GLib's hash order.
        let list = dict_order(list.into_iter().map(|e| (e.0.to_string(), e)).collect())
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let bytes = DeltaIndex::new(DeltaList(list)).serialize();
        let rel = DeltaName::index_path(&to);
        let (dir, file) = rel.rsplit_once('/').expect("index paths have a directory");
        if read_small(repo, &rel)?.as_deref() == Some(&bytes[..]) {
            out.unchanged += 1;
            continue;
        }
        write_replace(repo, stage, dir, file, &bytes, fsync)?;
        out.written += 1;
    }
    // Indexes of TOs that no longer have a delta.
    let root = repo.path().join("delta-indexes");
    let idx = match open_dir(repo.dir(), "delta-indexes") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(PublishIo::new(root, e)),
    };
    for (first, ty) in list_dir_typed(idx.as_fd()).map_err(|e| PublishIo::new(&root, e))? {
        let Some(first) = first.to_str() else {
            continue;
        };
        if ty != FileType::Directory || first.len() != 2 {
            continue;
        }
        let sub = open_dir(&idx, first).map_err(|e| PublishIo::new(root.join(first), e))?;
        for (file, _) in list_dir_typed(sub.as_fd()).map_err(|e| PublishIo::new(&root, e))? {
            let Some(file) = file.to_str() else { continue };
            let Some(rest) = file.strip_suffix(".index") else {
                continue;
            };
            if rest.len() + 2 != MB64_LEN {
                continue;
            }
            let Some(to) = from_mb64(&format!("{first}{rest}")) else {
                continue;
            };
            if by_to.contains_key(&to) {
                continue;
            }
            match rustix::fs::unlinkat(&sub, file, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => out.removed += 1,
                Err(e) => return Err(PublishIo::new(root.join(first).join(file), e.into())),
            }
        }
    }
    Ok(out)
}

/// A small file of the repository (an index), `None` when absent.
fn read_small(repo: &Repo, rel: &str) -> Result<Option<Vec<u8>>, PublishIo> {
    let path = repo.path().join(rel);
    match rustix::fs::openat(
        repo.dir(),
        rel,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => {
            let mut data = Vec::new();
            std::fs::File::from(fd)
                .take(MAX_METADATA_SIZE as u64)
                .read_to_end(&mut data)
                .map_err(|e| PublishIo::new(&path, e))?;
            Ok(Some(data))
        }
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(PublishIo::new(&path, e.into())),
    }
}
