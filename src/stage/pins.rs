//! What the stages of a store need kept, for prune and gc: every stage's
//! layers (their commits and trees) and the merged tree its commits build
//! on (the `base` file). Stages still being created count: their record
//! names their layers before anything is checked out.

use std::path::Path;

use super::record::{RECORD, Record};
use super::{BASE_FILE, EXTENSION_DIR, STAGES_DIR, StageError, parse_base, validate_name};
use crate::ostree::Checksum;
use crate::store::Repo;

/// Commits and trees the stages use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// Layers of every stage.
    pub commits: Vec<Checksum>,
    /// (dirtree, dirmeta) of each stage's merged layers, once written.
    pub trees: Vec<(Checksum, Checksum)>,
}

/// Reads the records of every stage of `repo`, without creating or
/// cleaning anything. A record that cannot be read is an error: what it
/// pins cannot be known.
pub fn pins(repo: &Repo) -> Result<Pins, StageError> {
    let dir = repo.path().join(EXTENSION_DIR).join(STAGES_DIR);
    let mut pins = Pins::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pins),
        Err(e) => return Err(StageError::io(&dir, "listing", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StageError::io(&dir, "listing", e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_name(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stage = dir.join(&name);
        add_stage(&stage, &mut pins)?;
    }
    pins.commits.sort();
    pins.commits.dedup();
    pins.trees.sort();
    pins.trees.dedup();
    Ok(pins)
}

fn add_stage(stage: &Path, pins: &mut Pins) -> Result<(), StageError> {
    let record = stage.join(RECORD);
    match std::fs::read(&record) {
        Ok(text) => pins.commits.extend(Record::decode(&text, &record)?.layers),
        // A stage directory whose record is not written yet names nothing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StageError::io(&record, "reading", e)),
    }
    let base = stage.join(BASE_FILE);
    match std::fs::read_to_string(&base) {
        Ok(text) => {
            if let Some(b) = parse_base(&text) {
                pins.trees.push(b);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StageError::io(&base, "reading", e)),
    }
    Ok(())
}
