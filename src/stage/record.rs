//! The record of a stage: `extensions/arbor/stages/NAME/stage.conf`, a
//! key file (the format of the repository's own `config`).
//!
//! ```text
//! [stage]
//! state=creating|ready
//! backend=overlay|fuse-overlayfs|unionfs|copy   (ready only)
//! layers=C1;C2;…          commits, bottom first
//! masks=2;7;…             layers with a whiteout layer below them
//! workdir=/abs/dir        where root/, upper/, work/ and masks/ live
//! ```
//!
//! The record is written (atomically) before anything else of the stage
//! exists, with `state=creating`, so every leftover of a dead `stage
//! create` is findable and removable; `state=ready` is written last.

use std::path::{Path, PathBuf};

use super::StageError;
use crate::ostree::Checksum;
use crate::stage::mount::Backend;
use crate::store::keyfile::KeyFile;

pub const RECORD: &str = "stage.conf";
const GROUP: &str = "stage";

/// The writable root's backend: a union filesystem or a plain copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageBackend {
    Union(Backend),
    Copy,
}

impl StageBackend {
    pub fn name(self) -> &'static str {
        match self {
            StageBackend::Union(b) => b.name(),
            StageBackend::Copy => "copy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        if s == "copy" {
            return Some(StageBackend::Copy);
        }
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .map(StageBackend::Union)
    }
}

impl std::fmt::Display for StageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ready: bool,
    pub backend: Option<StageBackend>,
    pub layers: Vec<Checksum>,
    pub masks: Vec<usize>,
    pub workdir: PathBuf,
}

impl Record {
    pub fn root(&self) -> PathBuf {
        self.workdir.join("root")
    }
    pub fn upper(&self) -> PathBuf {
        self.workdir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.workdir.join("work")
    }
    pub fn mask(&self, layer: usize) -> PathBuf {
        self.workdir.join("masks").join(layer.to_string())
    }

    pub fn encode(&self) -> Result<String, StageError> {
        let mut kf = KeyFile::new();
        let bad = StageError::RecordEncode;
        kf.set(
            GROUP,
            "state",
            if self.ready { "ready" } else { "creating" },
        )
        .map_err(bad)?;
        if let Some(b) = self.backend {
            kf.set(GROUP, "backend", b.name()).map_err(bad)?;
        }
        kf.set_list(GROUP, "layers", self.layers.iter().map(|c| c.to_string()))
            .map_err(bad)?;
        kf.set_list(GROUP, "masks", self.masks.iter().map(|m| m.to_string()))
            .map_err(bad)?;
        let workdir = self
            .workdir
            .to_str()
            .ok_or_else(|| StageError::Unsupported {
                path: self.workdir.clone(),
                reason: "a stage directory must be valid UTF-8".into(),
            })?;
        kf.set(GROUP, "workdir", workdir).map_err(bad)?;
        Ok(kf.to_string())
    }

    pub fn decode(text: &[u8], path: &Path) -> Result<Record, StageError> {
        let bad = |reason: String| StageError::BadRecord {
            path: path.to_path_buf(),
            reason,
        };
        let kf = KeyFile::parse_bytes(text).map_err(|e| bad(e.to_string()))?;
        let ready = match kf.get(GROUP, "state").as_deref() {
            Some("ready") => true,
            Some("creating") => false,
            other => return Err(bad(format!("unknown state {other:?}"))),
        };
        let backend = match kf.get(GROUP, "backend") {
            Some(b) => {
                Some(StageBackend::parse(&b).ok_or_else(|| bad(format!("unknown backend {b:?}")))?)
            }
            None => None,
        };
        let layers = kf
            .get_list(GROUP, "layers")
            .unwrap_or_default()
            .iter()
            .map(|c| {
                c.parse::<Checksum>()
                    .map_err(|e| bad(format!("layer {c:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let masks = kf
            .get_list(GROUP, "masks")
            .unwrap_or_default()
            .iter()
            .map(|m| {
                m.parse::<usize>()
                    .map_err(|e| bad(format!("mask {m:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let workdir = PathBuf::from(
            kf.get(GROUP, "workdir")
                .ok_or_else(|| bad("no workdir".into()))?,
        );
        if !workdir.is_absolute() || (ready && backend.is_none()) {
            return Err(bad("incomplete record".into()));
        }
        Ok(Record {
            ready,
            backend,
            layers,
            masks,
            workdir,
        })
    }

    /// The record in the stage directory `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Record>, StageError> {
        let path = dir.join(RECORD);
        match std::fs::read(&path) {
            Ok(text) => Ok(Some(Record::decode(&text, &path)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StageError::io(&path, "reading", e)),
        }
    }
}
