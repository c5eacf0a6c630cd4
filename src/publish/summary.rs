//! `arbor summary -u`: the repository's `summary`, its `summary.sig` and
//! the delta indexes, as `ostree summary -u` writes them (§15 of the format
//! reference).
//!
//! * Refs: the local branches (`refs/heads`, aliases resolved), sorted by
//!   name; each entry carries the commit object's size (native byte order),
//!   its checksum, `ostree.commit.timestamp` (big-endian) and, when the
//!   commit has one, `ostree.commit.version`. Remote refs never appear.
//! * Metadata: the caller's `-m` pairs first, then ostree's keys over them:
//!   `ostree.static-deltas` (each delta's superblock digest; unless
//!   `core.no-deltas-in-summary`), `ostree.summary.last-modified`,
//!   `ostree.summary.mode` (`core.mode` verbatim), `…tombstone-commits`,
//!   `…indexed-deltas` (true) and `…collection-id` when the repository has
//!   one.
//!   Signed deltas are left out of both, see [`super::deltas::delta_list`]
//!   (ostree lists them, and its own HTTP clients then fail on them).
//! * Delta indexes are regenerated and `core.indexed-deltas=true` is set.
//! * Publishing: `summary` and `summary.sig` are written and synced in a
//!   private directory under `tmp/`, then renamed into place one after the
//!   other (the signature's times copied onto the summary, as ostree
//!   2024.6+ does); without signing keys an old `summary.sig` is removed, so
//!   no stale signature is ever left beside a new summary. Two files cannot
//!   be swapped in one step: for the moment between the renames a reader
//!   can pair the new summary with the old signature, as with ostree, and a
//!   client retrying gets a matching pair.
//!
//! Not done (yet): the `ostree-metadata` commit and
//! `ostree.summary.collection-map` of repositories with collection IDs.

use std::sync::atomic::AtomicBool;

use rustix::fs::{AtFlags, Mode};
use thiserror::Error;

use crate::ostree::delta::DeltaList;
use crate::ostree::delta::index::{INDEXED_DELTAS_KEY, STATIC_DELTAS_KEY};
use crate::ostree::glib_order::dict_order;
use crate::ostree::{Metadata, Summary, SummaryRef, Value};
use crate::progress::{self, Event, Progress};
use crate::store::workdir::{WorkDir, clean_dead};
use crate::store::{LockMode, RefName, Repo, StoreError};

use super::deltas::{ReindexOutcome, delta_list, reindex};
use super::files::{PublishIo, write_tmp};
use super::sign::{SignError, SigningKey};

pub const LAST_MODIFIED_KEY: &str = "ostree.summary.last-modified";
pub const MODE_KEY: &str = "ostree.summary.mode";
pub const TOMBSTONE_KEY: &str = "ostree.summary.tombstone-commits";
pub const COLLECTION_ID_KEY: &str = "ostree.summary.collection-id";
pub const COMMIT_TIMESTAMP_KEY: &str = "ostree.commit.timestamp";
pub const COMMIT_VERSION_REF_KEY: &str = "ostree.commit.version";
/// The commit metadata key whose value summaries copy.
pub const COMMIT_VERSION_KEY: &str = "version";

/// What to write into the summary and how to sign it.
#[derive(Debug, Default)]
pub struct SummaryOptions {
    /// Additional metadata (`-m KEY=VALUE`), in order; ostree's own keys
    /// are written over same-named ones.
    pub metadata: Metadata,
    /// Keys that sign `summary`, in order (GnuPG keys first, as ostree).
    pub keys: Vec<SigningKey>,
    /// `ostree.summary.last-modified`, seconds since the epoch [default:
    /// `$SOURCE_DATE_EPOCH` when set, else now].
    pub timestamp: Option<u64>,
}

/// What [`update_summary`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryOutcome {
    pub summary: Summary,
    /// Bytes of the new `summary`.
    pub size: u64,
    /// Deltas listed.
    pub deltas: usize,
    /// Signed deltas, left out of the summary and the indexes (see
    /// [`super::deltas::delta_list`]).
    pub signed_deltas: Vec<crate::ostree::delta::DeltaName>,
    /// Signatures in `summary.sig` (0: none, and an old one was removed).
    pub signatures: usize,
    pub indexes: ReindexOutcome,
}

#[derive(Debug, Error)]
pub enum SummaryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] PublishIo),
    #[error("signing the summary: {0}")]
    Sign(#[from] SignError),
    #[error("ref {name}: {source}")]
    Ref {
        name: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("interrupted")]
    Interrupted,
}

impl From<progress::Interrupted> for SummaryError {
    fn from(_: progress::Interrupted) -> Self {
        SummaryError::Interrupted
    }
}

/// The summary the repository's refs, deltas and config call for, with
/// `opts.metadata` (no signing, nothing written).
pub fn build_summary(
    repo: &Repo,
    opts: &SummaryOptions,
    deltas: &DeltaList,
) -> Result<Summary, SummaryError> {
    let mut refs = Vec::new();
    for (name, checksum) in repo.list_refs()? {
        let RefName::Head(n) = &name else {
            continue;
        };
        let wrap = |e| SummaryError::Ref {
            name: n.clone(),
            source: Box::new(e),
        };
        let bytes = repo
            .load_metadata(&crate::ostree::ObjectName::new(
                checksum,
                crate::ostree::ObjectType::Commit,
            ))
            .map_err(wrap)?;
        let commit = crate::ostree::Commit::parse(&bytes).map_err(|e| wrap(e.into()))?;
        let mut md = Metadata::new();
        // GLib refuses dates past year 9999; ostree then omits the key.
        if commit.timestamp <= 253_402_300_799 {
            md.insert(COMMIT_TIMESTAMP_KEY, Value::U64(commit.timestamp.to_be()));
        }
        if let Some(Value::Str(v)) = commit.metadata.get(COMMIT_VERSION_KEY) {
            md.insert(COMMIT_VERSION_REF_KEY, Value::Str(v.clone()));
        }
        refs.push(SummaryRef {
            name: n.clone(),
            commit_size: bytes.len() as u64,
            checksum,
            metadata: glib_dict(md),
        });
    }
    refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));

    let config = repo.config();
    let mut md = opts.metadata.clone();
    let no_deltas = matches!(
        config.get_bool("core", "no-deltas-in-summary"),
        Ok(Some(true))
    );
    if !no_deltas && !deltas.0.is_empty() {
        let ordered = dict_order(
            deltas
                .0
                .iter()
                .map(|(n, d)| (n.to_string(), (*n, *d)))
                .collect(),
        );
        let list = DeltaList(ordered.into_iter().map(|(_, e)| e).collect());
        md.insert(STATIC_DELTAS_KEY, list.to_value());
    }
    let now = match opts.timestamp {
        Some(t) => t,
        // A malformed $SOURCE_DATE_EPOCH is an error, not the epoch.
        None => crate::store::commit::default_timestamp()?,
    };
    md.insert(LAST_MODIFIED_KEY, Value::U64(now.to_be()));
    md.insert(
        MODE_KEY,
        Value::Str(config.get("core", "mode").unwrap_or_else(|| "bare".into())),
    );
    md.insert(
        TOMBSTONE_KEY,
        Value::Bool(matches!(
            config.get_bool("core", "tombstone-commits"),
            Ok(Some(true))
        )),
    );
    md.insert(INDEXED_DELTAS_KEY, Value::Bool(true));
    if let Some(cid) = repo.collection_id() {
        md.insert(COLLECTION_ID_KEY, Value::Str(cid));
    }
    Ok(Summary {
        refs,
        metadata: glib_dict(md),
    })
}

/// `md` in the order ostree's `GVariantDict` would write it.
fn glib_dict(md: Metadata) -> Metadata {
    Metadata(dict_order(md.0))
}

/// Regenerates `summary` (and `summary.sig` when `opts.keys` sign it) and
/// the delta indexes, and sets `core.indexed-deltas=true`.
///
/// Takes the repository's shared lock, so a prune cannot delete what the
/// summary names while it is written. Progress: notes only (it is quick).
pub fn update_summary(
    repo: &mut Repo,
    opts: &SummaryOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<SummaryOutcome, SummaryError> {
    let _lock = repo.lock(LockMode::Shared)?;
    let fsync = repo.fsync_enabled();
    if !matches!(
        repo.config().get_bool("core", "indexed-deltas"),
        Ok(Some(true))
    ) {
        let mut config = repo.config().clone();
        config
            .set_bool("core", "indexed-deltas", true)
            .expect("valid group and key");
        repo.write_config(config)?;
    }
    let (deltas, signed_deltas) = delta_list(repo)?;
    progress::check(interrupt)?;
    let summary = build_summary(repo, opts, &deltas)?;
    let bytes = summary.serialize();
    let mut sigs = Metadata::new();
    for key in &opts.keys {
        progress::check(interrupt)?;
        key.append_signature(&bytes, &mut sigs, "the summary")?;
    }
    // Everything is written in a private directory of tmp/ and renamed
    // into place; what a killed update left there is removed first.
    clean_dead(repo)?;
    let work = WorkDir::create(repo, "summary", 0o700)?;
    let indexes = reindex(repo, &work, &deltas, fsync)?;
    progress.report(Event::Note(&format!(
        "delta indexes: {} written, {} unchanged, {} removed",
        indexes.written, indexes.unchanged, indexes.removed
    )));
    let signatures = sigs
        .0
        .iter()
        .map(|(_, v)| match v {
            Value::ByteArrays(a) => a.len(),
            _ => 0,
        })
        .sum();
    publish(
        repo,
        &work,
        &bytes,
        (!sigs.is_empty()).then(|| sigs.serialize()),
        fsync,
    )?;
    Ok(SummaryOutcome {
        size: bytes.len() as u64,
        deltas: deltas.0.len(),
        signed_deltas,
        signatures,
        summary,
        indexes,
    })
}

/// Writes both files in a private directory of `tmp/`, then renames
/// `summary` and `summary.sig` into place (or removes a stale
/// `summary.sig`).
fn publish(
    repo: &Repo,
    work: &WorkDir,
    summary: &[u8],
    sig: Option<Vec<u8>>,
    fsync: bool,
) -> Result<(), SummaryError> {
    let tmp_path = work.path();
    let dir = work.dir();
    let s = write_tmp(dir, tmp_path, "summary", summary, fsync)?;
    let g = match &sig {
        Some(sig) => Some(write_tmp(dir, tmp_path, "summary.sig", sig, fsync)?),
        None => None,
    };
    if let Some(g) = &g {
        // Same times on both files, so mirrors comparing mtimes see
        // one update.
        let sigfd = rustix::fs::openat(
            dir,
            g.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PublishIo::new(tmp_path.join(g), e.into()))?;
        let st = rustix::fs::fstat(&sigfd).map_err(|e| PublishIo::new(tmp_path, e.into()))?;
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        let _ = rustix::fs::utimensat(dir, s.as_str(), &times, AtFlags::empty());
    }
    crate::failpoint::crash("summary:written");
    let root = repo.dir();
    rustix::fs::renameat(dir, s.as_str(), root, "summary")
        .map_err(|e| PublishIo::new(repo.path().join("summary"), e.into()))?;
    match &g {
        Some(g) => {
            if let Err(e) = rustix::fs::renameat(dir, g.as_str(), root, "summary.sig") {
                // Never leave the old signature beside the new summary.
                let _ = rustix::fs::unlinkat(root, "summary.sig", AtFlags::empty());
                return Err(PublishIo::new(repo.path().join("summary.sig"), e.into()).into());
            }
        }
        None => match rustix::fs::unlinkat(root, "summary.sig", AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(PublishIo::new(repo.path().join("summary.sig"), e.into()).into());
            }
        },
    }
    if fsync {
        rustix::fs::fsync(root).map_err(|e| PublishIo::new(repo.path(), e.into()))?;
    }
    Ok(())
}
