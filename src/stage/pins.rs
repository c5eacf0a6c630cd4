//! What the stages of a store need kept, for prune and gc: every stage's
//! layers (their commits and trees) and the merged tree its commits build
//! on (the `base` file); and which checkout-cache entries they use. Stages
//! still being created count: their record names their layers before
//! anything is checked out.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use super::record::{RECORD, Record, StageBackend};
use super::{BASE_FILE, EXTENSION_DIR, STAGES_DIR, StageError, parse_base, validate_name};
use crate::ostree::Checksum;
use crate::store::Repo;

/// Largest record or base file read (they are a few hundred bytes).
const MAX_FILE: u64 = 1 << 20;

/// Commits and trees the stages use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// Layers of every stage.
    pub commits: Vec<Checksum>,
    /// (dirtree, dirmeta) of each stage's merged layers, once written.
    pub trees: Vec<(Checksum, Checksum)>,
    /// Layers whose checkout-cache entries a stage uses: those of union
    /// stages and of stages whose backend is not decided yet. A copy
    /// stage's root is its own checkout: it uses no cache entry.
    pub cached: Vec<Checksum>,
}

/// Reads the records of every stage of `repo`, without creating or
/// cleaning anything, through directory descriptors. A record that cannot
/// be read is an error: what it pins cannot be known.
pub fn pins(repo: &Repo) -> Result<Pins, StageError> {
    let path = repo.path().join(EXTENSION_DIR).join(STAGES_DIR);
    let mut pins = Pins::default();
    let rel = format!("{EXTENSION_DIR}/{STAGES_DIR}");
    let dir = match crate::fs::open_dir(repo.dir(), rel.as_str()) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pins),
        Err(e) => return Err(StageError::io(&path, "opening", e)),
    };
    let entries =
        crate::fs::list_dir_typed(dir.as_fd()).map_err(|e| StageError::io(&path, "listing", e))?;
    for (name, ty) in entries {
        let Some(name) = name.to_str() else { continue };
        if ty != FileType::Directory || validate_name(name).is_err() {
            continue;
        }
        let stage_path = path.join(name);
        let stage = match crate::fs::open_dir(&dir, name) {
            Ok(d) => d,
            // Destroyed since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StageError::io(&stage_path, "opening", e)),
        };
        add_stage(&stage, &stage_path, &mut pins)?;
    }
    for list in [&mut pins.commits, &mut pins.cached] {
        list.sort();
        list.dedup();
    }
    pins.trees.sort();
    pins.trees.dedup();
    Ok(pins)
}

fn add_stage(stage: &OwnedFd, path: &Path, pins: &mut Pins) -> Result<(), StageError> {
    let record = path.join(RECORD);
    // A stage directory whose record is not written yet names nothing.
    if let Some(text) = read_small(stage, RECORD, &record)? {
        let r = Record::decode(&text, &record)?;
        if r.backend != Some(StageBackend::Copy) {
            pins.cached.extend(&r.layers);
        }
        pins.commits.extend(r.layers);
    }
    let base = path.join(BASE_FILE);
    if let Some(text) = read_small(stage, BASE_FILE, &base)?
        && let Some(b) = parse_base(&String::from_utf8_lossy(&text))
    {
        pins.trees.push(b);
    }
    Ok(())
}

/// The content of `name` in `dir`, `None` when it does not exist.
fn read_small(dir: &OwnedFd, name: &str, path: &Path) -> Result<Option<Vec<u8>>, StageError> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(StageError::io(path, "reading", e.into())),
    };
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_FILE)
        .read_to_end(&mut out)
        .map_err(|e| StageError::io(path, "reading", e))?;
    Ok(Some(out))
}
