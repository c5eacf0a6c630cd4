//! Staging roots: writable roots layered over commits, committed back.
//!
//! A stage is a directory tree showing several commits stacked (later ones
//! on top, whiteouts honoured; see [`merge`] for the exact rules) that can
//! be written to without touching the store. It is built from:
//! * the **checkout cache** ([`cache`]): one hardlinked, read-only
//!   checkout per commit in the store, shared by every stage;
//! * **mask layers** ([`masks`]): per stage, the whiteouts of each commit
//!   in the union filesystem's own form;
//! * a union mount ([`crate::stage::mount`]) of those read-only layers
//!   under a writable `upper/`, at `root/`. When no union filesystem
//!   works (or `copy` is asked for), `root/` is instead a reflinked (else
//!   copied) checkout of the merged tree.
//!
//! `stage commit` ([`commit`]) writes the merged tree plus the changes in
//! `upper/` as a new commit. The layers' merged tree is written once, by
//! the first commit, and remembered in the stage's `base` file; a copy
//! stage instead keeps an index of its unchanged files ([`copy_index`]).
//! `stage gc` removes cache entries no stage uses; `stages.lock` (shared
//! by creates, exclusive by gc) keeps it from removing one a create is
//! about to name.
//!
//! Commands run in a stage's build environment ([`sandbox`]: the root as
//! `/` with its own /proc, /dev, /tmp..., none of which reaches a commit);
//! [`integrate`] runs there the integration commands the layers' commits
//! carry.
//!
//! # On disk
//! `extensions/arbor/stages/NAME/stage.conf` is the record ([`record`]);
//! `root/`, `upper/`, `work/` and `masks/` live next to it, or in the
//! [`CreateOptions::workdir`] the stage was created with. `stages/NAME.lock` is the
//! stage's lock (OFD): held exclusive while the stage is created,
//! remounted or destroyed, and shared while a command runs in it or it is
//! committed. Lock files are removed with their stage; whoever locks one
//! checks it is still linked, so a removed lock file is never trusted.
//!
//! # Crashes and leftovers
//! The record is written, with `state=creating`, before anything else
//! exists, and says `ready` only once the root is usable. A record still
//! `creating` whose lock is free belongs to a dead `stage create`: the
//! next `arbor stage` command removes it at start-up (a `stage list` that
//! races with it may show it `incomplete`), as it removes dead cache
//! builds. Complete stages are never removed implicitly. Mounts outlive the process that made
//! them (a FUSE daemon may die and leave a dead mount: `broken`); before
//! any directory is removed every mount under it is unmounted, and a busy
//! mount stops the removal with the holding processes named, leaving the
//! stage intact.

mod cache;
pub mod commit;
mod copy_index;
pub mod evict;
pub mod integrate;
mod masks;
pub mod merge;
pub mod mount;
pub mod pins;
pub mod record;
pub mod sandbox;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rustix::fs::{Mode, OFlags};
use thiserror::Error;

use crate::checkout::{CheckoutError, CheckoutOptions, LinkMode};
use crate::fs::{ensure_dir, remove_tree};
use crate::ostree::Checksum;
use crate::progress::{Phase, Progress};
use crate::store::commit::{CommitOptions, CommitOutcome};
use crate::store::{Repo, StoreError, Transaction};
use mount::{Layer, MountError, is_mount_point, mounts_under, unmount_path};
pub use record::{Record, StageBackend};

/// arbor's directory inside the store's `extensions/`.
pub const EXTENSION_DIR: &str = "extensions/arbor";
const STAGES_DIR: &str = "stages";
/// The stage's base: (dirtree, dirmeta) of its layers' merged tree.
const BASE_FILE: &str = "base";

fn parse_base(s: &str) -> Option<(Checksum, Checksum)> {
    let mut it = s.split_whitespace();
    let t = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    Some((t, m))
}

#[derive(Debug, Error)]
pub enum StageError {
    #[error(
        "invalid stage name {name:?}: use letters, digits, '.', '_' and '-', not starting with '.' or '-'"
    )]
    BadName { name: String },
    #[error("no stage named {name:?}")]
    NoSuchStage { name: String },
    #[error("stage {name:?} already exists (at {root})", root = .root.display())]
    Exists { name: String, root: PathBuf },
    #[error(
        "stage {name:?} is in use by another arbor process ({what}); try again when it has finished"
    )]
    InUse { name: String, what: &'static str },
    /// The stage cannot be used in its state (see [`State`]).
    #[error("stage {name:?} is {}: {reason}", .state.name())]
    NotUsable {
        name: String,
        state: State,
        reason: &'static str,
    },
    #[error("the stage's work directory {path} must be an empty directory (or not exist)", path = .path.display())]
    WorkdirNotEmpty { path: PathBuf },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("stage record {path} is corrupt: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("a stage needs at least one commit")]
    NoLayers,
    #[error("a stage commit records the owners its root shows; it takes no owner override")]
    OwnerOverride,
    /// The interrupt flag was set.
    #[error("interrupted")]
    Interrupted,
    /// The stage was created, but its integration failed (the stage is
    /// kept).
    #[error("stage {name:?} was created, but its integration failed: {source}")]
    Integrate {
        name: String,
        source: Box<integrate::IntegrateError>,
    },
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    /// A checkout cache entry was removed while a stage needed it.
    #[error("checkout cache entry {path} vanished while in use", path = .path.display())]
    CacheEntryVanished { path: PathBuf },
    #[error("encoding the stage record: {0}")]
    RecordEncode(#[source] crate::store::keyfile::KeyFileError),
}

impl From<crate::progress::Interrupted> for StageError {
    fn from(_: crate::progress::Interrupted) -> Self {
        StageError::Interrupted
    }
}

impl StageError {
    fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

/// What a stage looks like now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Mounted and answering.
    Mounted,
    /// A copy: always usable.
    Ready,
    /// Complete but not mounted (e.g. after a reboot); remounted on use.
    Unmounted,
    /// Mounted but not answering (its FUSE daemon died).
    Broken,
    /// Being created, destroyed or remounted by another process.
    Busy,
    /// Left by a `stage create` that died.
    Incomplete,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Mounted => "mounted",
            State::Ready => "ready",
            State::Unmounted => "unmounted",
            State::Broken => "broken",
            State::Busy => "busy",
            State::Incomplete => "incomplete",
        }
    }
}

/// One row of `stage list`.
#[derive(Clone, Debug)]
pub struct StageInfo {
    pub name: String,
    pub record: Option<Record>,
    pub state: State,
    /// Disk usage of the writable layer (the whole root for copies).
    pub upper_bytes: u64,
}

/// How a stage's root is made writable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// Kernel overlayfs, then fuse-overlayfs, then unionfs-fuse, then a
    /// copy: the first that works (why the others were skipped is in the
    /// outcome).
    #[default]
    Auto,
    /// Kernel overlayfs (root only).
    Overlay,
    /// fuse-overlayfs.
    FuseOverlayfs,
    /// unionfs-fuse in copy-on-write mode.
    Unionfs,
    /// A reflinked (else copied) checkout of the merged tree: no union
    /// filesystem, works anywhere.
    Copy,
}

/// What `stage create` makes.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Commits to stack, bottom first (at least one).
    pub layers: Vec<Checksum>,
    pub backend: BackendChoice,
    /// Where `root/`, `upper/` and `work/` go (an empty or missing
    /// directory) instead of inside the repository.
    pub workdir: Option<PathBuf>,
    /// Run the layers' integration commands in this build environment
    /// once the stage is ready ([`Stages::integrate`]).
    pub integrate: Option<sandbox::SandboxOptions>,
}

/// How `stage create` went.
#[derive(Debug)]
pub struct CreateOutcome {
    pub root: PathBuf,
    pub backend: StageBackend,
    /// Backends tried first and why they were not used.
    pub skipped: Vec<String>,
    /// Commits that had to be checked out into the cache.
    pub cached: usize,
    /// What integration ran, when asked for.
    pub integrated: Option<integrate::IntegrateOutcome>,
}

/// The stages of one store.
pub struct Stages<'r> {
    repo: &'r Repo,
    base: OwnedFd,
    base_path: PathBuf,
    dir: OwnedFd,
    dir_path: PathBuf,
}

/// A held stage lock.
struct StageLock {
    fd: OwnedFd,
}

impl StageLock {
    fn downgrade(&self) -> std::io::Result<()> {
        crate::fs::ofd_lock(self.fd.as_fd(), false, false).map(|_| ())
    }
}

pub fn validate_name(name: &str) -> Result<(), StageError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StageError::BadName { name: name.into() })
    }
}

impl<'r> Stages<'r> {
    pub fn open(repo: &'r Repo) -> Result<Self, StageError> {
        // Absolute: the record and the mounts outlive this working directory.
        let repo_path = std::path::absolute(repo.path())
            .map_err(|e| StageError::io(repo.path(), "resolving", e))?;
        let base_path = repo_path.join(EXTENSION_DIR);
        ensure_dir(repo.dir(), "extensions", 0o755)
            .and_then(|()| ensure_dir(repo.dir(), EXTENSION_DIR, 0o755))
            .map_err(|e| StageError::io(&base_path, "creating", e))?;
        let base = crate::store::repo::open_dir(repo.dir(), EXTENSION_DIR)?;
        let dir_path = base_path.join(STAGES_DIR);
        ensure_dir(&base, STAGES_DIR, 0o755)
            .map_err(|e| StageError::io(&dir_path, "creating", e))?;
        let dir = crate::store::repo::open_dir(&base, STAGES_DIR)?;
        let stages = Stages {
            repo,
            base,
            base_path,
            dir,
            dir_path,
        };
        stages.sweep();
        Ok(stages)
    }

    /// Start-up cleaning: removes what dead `stage create`s left (stages
    /// still `creating` whose lock is free) and dead cache builds. Complete
    /// stages are never touched, mounted or not: their writable layer is
    /// the user's work. Best effort; `stage destroy` reports failures.
    fn sweep(&self) {
        let Ok(entries) = crate::fs::list_dir_typed(self.dir.as_fd()) else {
            return;
        };
        for (name, _) in entries {
            let Some(name) = name.to_str().filter(|n| validate_name(n).is_ok()) else {
                continue;
            };
            if !self.stage_dir(name).is_dir()
                || matches!(Record::load(&self.stage_dir(name)), Ok(Some(r)) if r.ready)
            {
                continue;
            }
            if let Ok(Some(lock)) = self.lock(name, true) {
                // Re-read under the lock: the creator may have just finished.
                if !matches!(Record::load(&self.stage_dir(name)), Ok(Some(r)) if r.ready)
                    && self.remove_stage_files(name).is_ok()
                {
                    let _ = rustix::fs::unlinkat(
                        &self.dir,
                        format!("{name}.lock").as_str(),
                        rustix::fs::AtFlags::empty(),
                    );
                }
                drop(lock);
            }
        }
        if let Ok(cache) = cache::Cache::open(self.repo, &self.base, &self.base_path) {
            cache.sweep();
        }
    }

    fn stage_dir(&self, name: &str) -> PathBuf {
        self.dir_path.join(name)
    }

    /// Takes the stage's lock; `None` when another process holds it.
    fn lock(&self, name: &str, exclusive: bool) -> Result<Option<StageLock>, StageError> {
        self.lock_maybe_waiting(name, exclusive, false)
    }

    fn lock_maybe_waiting(
        &self,
        name: &str,
        exclusive: bool,
        wait: bool,
    ) -> Result<Option<StageLock>, StageError> {
        let lock_name = format!("{name}.lock");
        let path = self.dir_path.join(&lock_name);
        loop {
            let fd = rustix::fs::openat(
                &self.dir,
                lock_name.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| StageError::io(&path, "opening", e.into()))?;
            if !crate::fs::ofd_lock(fd.as_fd(), exclusive, wait)
                .map_err(|e| StageError::io(&path, "locking", e))?
            {
                return Ok(None);
            }
            // A destroy may have unlinked the file between our open and lock.
            let st =
                rustix::fs::fstat(&fd).map_err(|e| StageError::io(&path, "reading", e.into()))?;
            if st.st_nlink > 0 {
                return Ok(Some(StageLock { fd }));
            }
        }
    }

    /// `extensions/arbor/stages.lock`: shared by `stage create` until its
    /// record names its layers, exclusive while cache entries are removed
    /// (`stage gc`, gc). Polled, so a wait stops on `interrupt` and, with
    /// a `timeout`, gives up: `None` then.
    fn registry_lock(
        &self,
        exclusive: bool,
        timeout: Option<std::time::Duration>,
        interrupt: &AtomicBool,
    ) -> Result<Option<OwnedFd>, StageError> {
        let path = self.base_path.join("stages.lock");
        let fd = rustix::fs::openat(
            &self.base,
            "stages.lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| StageError::io(&path, "opening", e.into()))?;
        let start = std::time::Instant::now();
        loop {
            if crate::fs::ofd_lock(fd.as_fd(), exclusive, false)
                .map_err(|e| StageError::io(&path, "locking", e))?
            {
                return Ok(Some(fd));
            }
            crate::progress::check(interrupt)?;
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(None);
            }
            std::thread::sleep(crate::store::lock::POLL);
        }
    }

    /// Removes the checkout-cache entries no stage uses; returns how many.
    /// Waits for running `stage create`s to name their layers, stopping on
    /// `interrupt`.
    pub fn gc(&self, interrupt: &AtomicBool) -> Result<usize, StageError> {
        let _registry = self.registry_lock(true, None, interrupt)?;
        let mut used = std::collections::HashSet::new();
        for info in self.list()? {
            match info.record {
                // A copy stage's root is its own checkout.
                Some(r) if r.backend == Some(StageBackend::Copy) => {}
                Some(r) => used.extend(r.layers),
                // A stage whose record is unreadable may use anything:
                // say which one stops the collection.
                None if info.state == State::Busy => {
                    return Err(StageError::InUse {
                        name: info.name,
                        what: "its layers cannot be known while it is being created",
                    });
                }
                None => {}
            }
        }
        let cache = cache::Cache::open(self.repo, &self.base, &self.base_path)?;
        cache.remove_unused(&used)
    }

    /// Every stage, with its state (read only: nothing is cleaned).
    pub fn list(&self) -> Result<Vec<StageInfo>, StageError> {
        let mut names: Vec<String> = crate::fs::list_dir_typed(self.dir.as_fd())
            .map_err(|e| StageError::io(&self.dir_path, "listing", e))?
            .into_iter()
            .filter(|(_, t)| *t == rustix::fs::FileType::Directory)
            .filter_map(|(n, _)| n.into_string().ok())
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            out.push(self.info(&name)?);
        }
        Ok(out)
    }

    /// One stage's row of `stage list`.
    pub fn info(&self, name: &str) -> Result<StageInfo, StageError> {
        validate_name(name)?;
        let dir = self.stage_dir(name);
        if !dir.is_dir() {
            return Err(StageError::NoSuchStage { name: name.into() });
        }
        let record = Record::load(&dir)?;
        let free = self.lock(name, false)?.is_some();
        let state = match &record {
            _ if !free => State::Busy,
            None => State::Incomplete,
            Some(r) if !r.ready => State::Incomplete,
            Some(r) => mount_state(r),
        };
        let upper_bytes = match &record {
            Some(r) if r.backend == Some(StageBackend::Copy) => disk_usage(&r.root()),
            Some(r) => disk_usage(&r.upper()),
            None => 0,
        };
        Ok(StageInfo {
            name: name.into(),
            record,
            state,
            upper_bytes,
        })
    }

    /// The record of a complete stage.
    pub fn record(&self, name: &str) -> Result<Record, StageError> {
        validate_name(name)?;
        let dir = self.stage_dir(name);
        if !dir.is_dir() {
            return Err(StageError::NoSuchStage { name: name.into() });
        }
        // Not through `info`: that also measures the writable layer, a
        // walk of the whole root for a copy stage.
        if let Some(r) = Record::load(&dir)?.filter(|r| r.ready) {
            return Ok(r);
        }
        let info = self.info(name)?;
        match info.record {
            Some(r) if r.ready => Ok(r),
            _ => Err(StageError::NotUsable {
                name: name.into(),
                state: info.state,
                reason: "its creation did not finish",
            }),
        }
    }

    /// Creates stage `name` over `opts.layers` (bottom first).
    ///
    /// Progress: [`Phase::StageCreate`] in layers checked out into the
    /// cache, or (copy backend) in the one checkout of the merged tree;
    /// each checkout reports its own [`Phase::Checkout`]. An
    /// interrupt stops it with [`StageError::Interrupted`] and removes the
    /// half-made stage; cache entries already built are kept.
    pub fn create(
        &self,
        name: &str,
        opts: &CreateOptions,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<CreateOutcome, StageError> {
        validate_name(name)?;
        let layers = &opts.layers[..];
        let workdir = opts.workdir.as_deref();
        if layers.is_empty() {
            return Err(StageError::NoLayers);
        }
        // Shared: `stage gc` (exclusive) must not remove a cache entry
        // between our finding it and our record naming it; released with
        // the store lock below, once the record names the layers (a gc
        // then sees them in use), so that a long create (integration
        // commands) holds up no gc.
        let registry = self.registry_lock(false, None, interrupt)?;
        // The store's shared lock, until the record names the layers: a
        // prune must not delete them between our checking them and the
        // record (which prune reads) pinning them. Building the cache and
        // the root takes it again while it reads objects.
        let store_lock = self.repo.lock_for_reading()?;
        for c in layers {
            let obj = crate::ostree::ObjectName::new(*c, crate::ostree::ObjectType::Commit);
            if !self.repo.has_object(&obj)? {
                return Err(StoreError::MissingObject(obj).into());
            }
        }
        let lock = self.lock(name, true)?.ok_or(StageError::InUse {
            name: name.into(),
            what: "being created, remounted or destroyed",
        })?;
        let dir = self.stage_dir(name);
        if dir.exists() {
            match Record::load(&dir) {
                Ok(Some(r)) if r.ready => {
                    return Err(StageError::Exists {
                        name: name.into(),
                        root: r.root(),
                    });
                }
                // A dead create's leftovers: we hold the lock, so it is dead.
                _ => self.remove_stage_files(name)?,
            }
        }
        let workdir = match workdir {
            Some(w) => {
                let w = std::path::absolute(w).map_err(|e| StageError::io(w, "resolving", e))?;
                match std::fs::read_dir(&w) {
                    Ok(mut rd) => {
                        if rd.next().is_some() {
                            return Err(StageError::WorkdirNotEmpty { path: w });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(&w)
                            .map_err(|e| StageError::io(&w, "creating", e))?;
                    }
                    Err(e) => return Err(StageError::io(&w, "reading", e)),
                }
                w
            }
            None => dir.clone(),
        };
        let mut record = Record {
            ready: false,
            backend: None,
            layers: layers.to_vec(),
            masks: Vec::new(),
            workdir,
        };
        rustix::fs::mkdirat(&self.dir, name, Mode::from_raw_mode(0o700))
            .map_err(|e| StageError::io(&dir, "creating", e.into()))?;
        self.write_record(name, &record)?;
        drop(store_lock);
        drop(registry);
        match crate::workers::deep(|| {
            self.populate(name, &mut record, opts.backend, progress, interrupt)
        }) {
            Ok(mut created) => {
                crate::store::used::record(self.repo, layers);
                drop(lock);
                if let Some(env) = &opts.integrate {
                    let done = self
                        .integrate(name, env, progress, interrupt)
                        .map_err(|e| StageError::Integrate {
                            name: name.into(),
                            source: Box::new(e),
                        })?;
                    created.integrated = Some(done);
                }
                Ok(created)
            }
            Err(e) => {
                // Leave nothing half-made; if even that fails, the record
                // still says `creating` and destroy finishes the job.
                let _ = self.remove_stage_files(name);
                Err(e)
            }
        }
    }

    fn write_record(&self, name: &str, record: &Record) -> Result<(), StageError> {
        let dir = self.stage_dir(name);
        let fd = crate::store::repo::open_dir(&self.dir, name)?;
        crate::store::repo::write_file_atomic(
            fd.as_fd(),
            &dir,
            record::RECORD,
            record.encode()?.as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    fn populate(
        &self,
        name: &str,
        record: &mut Record,
        choice: BackendChoice,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<CreateOutcome, StageError> {
        // A copy is checked out from the merged tree, not from the cache:
        // entries built for it would never be used (`auto` builds them,
        // for the unions it tries first).
        let (entries, cached) = if choice == BackendChoice::Copy {
            (Vec::new(), 0)
        } else {
            let cache = cache::Cache::open(self.repo, &self.base, &self.base_path)?;
            cache.ensure(&record.layers, progress, interrupt)?
        };
        crate::progress::check(interrupt)?;
        for d in [record.root(), record.upper(), record.work()] {
            std::fs::create_dir_all(&d).map_err(|e| StageError::io(&d, "creating", e))?;
        }
        let mut skipped = Vec::new();
        let only = match choice {
            BackendChoice::Overlay => Some(mount::Backend::Overlay),
            BackendChoice::FuseOverlayfs => Some(mount::Backend::FuseOverlayfs),
            BackendChoice::Unionfs => Some(mount::Backend::Unionfs),
            BackendChoice::Auto | BackendChoice::Copy => None,
        };
        let backend = match choice {
            BackendChoice::Copy => StageBackend::Copy,
            _ if let Some(b) = only => {
                self.mount(record, &entries, b)?;
                StageBackend::Union(b)
            }
            // The first union that mounts; else the copy.
            _ => {
                let mut chosen = StageBackend::Copy;
                for b in mount::Backend::ALL {
                    match self.mount(record, &entries, b) {
                        Ok(()) => {
                            chosen = StageBackend::Union(b);
                            break;
                        }
                        Err(e) => skipped.push(format!("{b}: {e}")),
                    }
                }
                chosen
            }
        };
        if backend == StageBackend::Copy {
            self.copy_root(name, record, progress, interrupt)?;
        }
        crate::failpoint::crash("stage-create:mounted");
        record.backend = Some(backend);
        record.ready = true;
        self.write_record(name, record)?;
        Ok(CreateOutcome {
            root: record.root(),
            backend,
            skipped,
            cached,
            integrated: None,
        })
    }

    /// Builds the masks a backend needs (replacing any earlier ones) and
    /// mounts the union; the mount stays after this process exits.
    fn mount(
        &self,
        record: &mut Record,
        entries: &[cache::Entry],
        backend: mount::Backend,
    ) -> Result<(), StageError> {
        remove_path(&record.workdir.join("masks"))?;
        record.masks.clear();
        let merger = merge::Merger::new(self.repo);
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && !e.whiteouts.is_empty() {
                let dest = record.mask(i);
                std::fs::create_dir_all(&dest)
                    .map_err(|err| StageError::io(&dest, "creating", err))?;
                masks::build(&merger, backend, &record.layers[..i], &e.whiteouts, &dest)?;
                record.masks.push(i);
            }
        }
        self.mount_record(record, backend)
    }

    /// The lower layers of a union stage, top-most first. Cache entries
    /// never change, so each is checked for steering xattrs once per
    /// backend (remembered by an empty `C.ok-BACKEND` file); masks are
    /// arbor's own whiteouts.
    fn layers_for(
        &self,
        record: &Record,
        backend: mount::Backend,
    ) -> Result<Vec<Layer>, StageError> {
        let cache = self.base_path.join(cache::CACHE_DIR);
        let mut layers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in record.layers.iter().enumerate().rev() {
            // A commit stacked twice: its top-most copy already shows all it
            // has and hides all it hides, so the lower one changes nothing
            // (and overlayfs refuses a directory twice in one stack).
            if !seen.insert(*c) {
                continue;
            }
            let path = cache.join(c.to_string());
            let ok = cache.join(format!("{c}.ok-{backend}"));
            if !ok.exists() {
                mount::check_layer(backend, &path)?;
                if backend == mount::Backend::Unionfs {
                    refuse_xattrs(&path)?;
                }
                std::fs::write(&ok, b"").map_err(|e| StageError::io(&ok, "writing", e))?;
            }
            layers.push(Layer {
                path,
                checked: true,
            });
            if record.masks.contains(&i) {
                layers.push(Layer {
                    path: record.mask(i),
                    checked: true,
                });
            }
        }
        Ok(layers)
    }

    fn mount_record(&self, record: &Record, backend: mount::Backend) -> Result<(), StageError> {
        // A dead create may have left the work dir dirty; overlay wants it empty.
        let work = record.work();
        if let Ok(fd) = crate::store::repo::open_dir(rustix::fs::CWD, &work) {
            crate::fs::clear_dir(fd.as_fd()).map_err(|e| StageError::io(&work, "clearing", e))?;
        }
        let guard = mount::mount_layers(
            &self.layers_for(record, backend)?,
            &record.upper(),
            &work,
            &record.root(),
            mount::UnionChoice::Only(backend),
        )?;
        guard.keep();
        Ok(())
    }

    /// The copy backend: the merged tree checked out by reflink or copy.
    fn copy_root(
        &self,
        name: &str,
        record: &Record,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<(), StageError> {
        // The merged tree is no commit's: nothing keeps a prune from
        // deleting it (its objects may predate this transaction) until the
        // copy has been made. Hold the shared lock until then.
        let _reading = self.repo.lock_for_reading()?;
        let txn = Transaction::begin(self.repo)?;
        let merger = merge::Merger::new(self.repo);
        let root = merger.root(&record.layers)?;
        let (tree, meta) = merger.write(&txn, &root, 0)?;
        txn.publish_objects_only()?;
        let mut opts =
            CheckoutOptions::new(*record.layers.last().expect("layers checked non-empty"));
        opts.link = LinkMode::Reflink;
        opts.overwrite = crate::checkout::Overwrite::Union;
        opts.user_mode = !rustix::process::geteuid().is_root();
        // A copy is the stage's root, not a union's layer: it shows the
        // commits' xattrs as they are (and commits them back).
        opts.keep_overlay_xattrs = true;
        // One checkout, of the merged tree (a union stage's are its layers').
        let total = Some(1);
        progress.report(crate::progress::Event::Start {
            phase: Phase::StageCreate,
            total,
        });
        crate::checkout::checkout_tree(
            self.repo,
            &record.root(),
            tree,
            meta,
            &opts,
            progress,
            interrupt,
        )?;
        progress.report(crate::progress::Event::Advance {
            phase: Phase::StageCreate,
            done: 1,
            total,
            bytes: 0,
        });
        progress.report(crate::progress::Event::Finish {
            phase: Phase::StageCreate,
        });
        // An exact image of the objects: index it so commits skip hashing
        // what did not change (see `copy_index`).
        if !opts.user_mode && self.repo.mode() != crate::store::RepoMode::BareUserOnly {
            let index = copy_index::build(self.repo, &record.root(), tree)?;
            let dir = crate::store::repo::open_dir(&self.dir, name)?;
            crate::store::repo::write_file_atomic(
                dir.as_fd(),
                &self.stage_dir(name),
                copy_index::INDEX_FILE,
                &index,
                0o644,
            )?;
        }
        Ok(())
    }

    /// Makes sure the stage's root is usable (remounting it when it is not
    /// mounted or its mount is dead) and returns its record. The returned
    /// lock is shared: destroy waits for it, other users do not. Waits
    /// while another process creates, remounts or destroys the stage.
    fn use_stage(&self, name: &str) -> Result<(Record, StageLock), StageError> {
        validate_name(name)?;
        if !self.stage_dir(name).is_dir() {
            return Err(StageError::NoSuchStage { name: name.into() });
        }
        loop {
            if let Some(lock) = self.lock(name, true)? {
                crate::failpoint::delay("stage:use-exclusive");
                let record = self.record(name)?;
                if let Some(StageBackend::Union(b)) = record.backend {
                    match mount_state(&record) {
                        State::Mounted => {}
                        State::Broken => {
                            unmount_path(&record.root())?;
                            self.mount_record(&record, b)?;
                        }
                        _ => self.mount_record(&record, b)?,
                    }
                }
                lock.downgrade()
                    .map_err(|e| StageError::io(&self.stage_dir(name), "locking", e))?;
                return Ok((record, lock));
            }
            // Someone else uses it (shared) or is changing it (exclusive).
            if let Some(lock) = self.lock(name, false)? {
                let record = self.record(name)?;
                if matches!(record.backend, Some(StageBackend::Union(_)))
                    && mount_state(&record) != State::Mounted
                {
                    return Err(StageError::NotUsable {
                        name: name.into(),
                        state: mount_state(&record),
                        reason: "another process holds it; try again when it has finished",
                    });
                }
                return Ok((record, lock));
            }
            // Held exclusively: by a create, remount or destroy, or by
            // another user for its moment above (two `stage exec` started
            // together). Wait for it to end, then look again: the stage
            // may be gone, or need a remount.
            drop(self.lock_maybe_waiting(name, false, true)?);
            if !self.stage_dir(name).is_dir() {
                return Err(StageError::NoSuchStage { name: name.into() });
            }
        }
    }

    /// Runs `cmd` with the stage's root as its working directory (on the
    /// host otherwise) and returns its exit status. For a command rooted
    /// in the stage, see [`Stages::sandbox`].
    pub fn exec(
        &self,
        name: &str,
        mut cmd: std::process::Command,
    ) -> Result<std::process::ExitStatus, StageError> {
        let (record, _lock) = self.use_stage(name)?;
        let root = record.root();
        cmd.current_dir(&root);
        let mut child = cmd
            .spawn()
            .map_err(|e| StageError::io(&root, "running a command in", e))?;
        child
            .wait()
            .map_err(|e| StageError::io(&root, "waiting for a command in", e))
    }

    /// Commits the stage's root to `opts.branch`, by the rules of
    /// [`crate::store::commit::commit`] (parent, timestamp, ref binding);
    /// the owners recorded are those the root shows, so `opts.owner_uid`
    /// and `opts.owner_gid` must be `None`.
    ///
    /// Progress: [`Phase::StageCommit`] in files read (only what changed
    /// in the writable layer is read). An interrupt stops it with
    /// [`StageError::Interrupted`]: the branch does not move, objects
    /// already written are kept.
    pub fn commit(
        &self,
        name: &str,
        opts: &CommitOptions,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<CommitOutcome, StageError> {
        if opts.owner_uid.is_some() || opts.owner_gid.is_some() {
            return Err(StageError::OwnerOverride);
        }
        let info = crate::store::commit::commit_info(self.repo, opts)?;
        let parent = info.parent;
        let (record, _lock) = self.use_stage(name)?;
        // No sandbox may run meanwhile, and none may have left mount points.
        let _quiet =
            sandbox::mountpoints::quiesce(&self.dir, &self.stage_dir(name), name, &record.root())?;
        // Begun first: the base found present below must stay so until the
        // commit naming it is published (a prune waits for the lock).
        let txn = Transaction::begin(self.repo)?;
        let base_file = self.stage_dir(name).join(BASE_FILE);
        let known_base = std::fs::read_to_string(&base_file)
            .ok()
            .and_then(|s| parse_base(&s))
            .filter(|(t, m)| {
                let has = |c: &Checksum, ty| {
                    self.repo
                        .has_object(&crate::ostree::ObjectName::new(*c, ty))
                        .unwrap_or(false)
                };
                has(t, crate::ostree::ObjectType::DirTree)
                    && has(m, crate::ostree::ObjectType::DirMeta)
            });
        let known_files = match record.backend {
            Some(StageBackend::Copy) => {
                std::fs::read(self.stage_dir(name).join(copy_index::INDEX_FILE))
                    .map(|d| copy_index::parse(&d))
                    .unwrap_or_default()
            }
            _ => Default::default(),
        };
        progress.report(crate::progress::Event::Start {
            phase: Phase::StageCommit,
            total: None,
        });
        let written = crate::workers::deep(|| {
            commit::write_stage_tree(&txn, &record, known_base, known_files, progress, interrupt)
        });
        let (tree, meta, base, files) = match written {
            Ok(w) => w,
            Err(e) => {
                // Keep what was written, so a re-run does not write it again.
                let _ = txn.publish_objects_only();
                return Err(e);
            }
        };
        let checksum = crate::store::commit::write_commit(&txn, tree, meta, info)?;
        txn.set_ref(opts.branch.clone(), Some(checksum));
        // The layers' merged tree never changes: remember it so the next
        // commit reads only what changed. Written before the transaction
        // publishes it, while its lock keeps prunes out, so that from the
        // moment the objects are visible a prune sees them pinned (a crash
        // in between leaves a base whose objects are absent: not trusted).
        if let Some((t, m)) = base
            && known_base.is_none()
        {
            let dir = crate::store::repo::open_dir(&self.dir, name)?;
            crate::store::repo::write_file_atomic(
                dir.as_fd(),
                &self.stage_dir(name),
                BASE_FILE,
                format!("{t} {m}\n").as_bytes(),
                0o644,
            )?;
        }
        crate::failpoint::crash("stage-commit:objects");
        let stats = txn.commit()?;
        let mut used = record.layers.clone();
        used.push(checksum);
        crate::store::used::record(self.repo, &used);
        progress.report(crate::progress::Event::Finish {
            phase: Phase::StageCommit,
        });
        Ok(CommitOutcome {
            commit: checksum,
            parent,
            files,
            objects_written: stats.objects_written,
            content_bytes_written: stats.content_bytes_written,
        })
    }

    /// Unmounts and removes a stage, whatever its state.
    pub fn destroy(&self, name: &str) -> Result<(), StageError> {
        validate_name(name)?;
        if !self.stage_dir(name).is_dir() {
            return Err(StageError::NoSuchStage { name: name.into() });
        }
        let lock = self.lock(name, true)?.ok_or(StageError::InUse {
            name: name.into(),
            what: "a command runs in it, or it is being committed, created or destroyed",
        })?;
        self.remove_stage_files(name)?;
        // Nobody can take the lock of an unlinked file for real (see `lock`).
        let _ = rustix::fs::unlinkat(
            &self.dir,
            format!("{name}.lock").as_str(),
            rustix::fs::AtFlags::empty(),
        );
        drop(lock);
        Ok(())
    }

    /// Unmounts everything of the stage, then removes its files: the work
    /// dir's content, then the record, then the stage directory. Stops,
    /// removing nothing, if a mount is busy.
    fn remove_stage_files(&self, name: &str) -> Result<(), StageError> {
        let dir = self.stage_dir(name);
        let record = Record::load(&dir).ok().flatten();
        let workdir = record.as_ref().map(|r| r.workdir.clone());
        let mut tops = vec![dir.clone()];
        if let Some(w) = &workdir
            && *w != dir
        {
            tops.push(w.clone());
        }
        for top in &tops {
            unmount_all_under(top)?;
        }
        crate::failpoint::crash("stage-destroy:unmounted");
        if let Some(w) = &workdir
            && *w != dir
        {
            for sub in ["root", "upper", "work", "masks"] {
                remove_path(&w.join(sub))?;
            }
        }
        let _ = rustix::fs::unlinkat(
            crate::store::repo::open_dir(&self.dir, name)?.as_fd(),
            record::RECORD,
            rustix::fs::AtFlags::empty(),
        );
        unmount_all_under(&dir)?;
        remove_tree(self.dir.as_fd(), name).map_err(|e| StageError::io(&dir, "removing", e))?;
        Ok(())
    }
}

/// unionfs-fuse as Debian builds it has no xattr support: it shows none,
/// and a file it copies up or renames loses them. A layer with xattrs
/// would therefore not give the same view and commit as the other
/// backends, so such layers are refused for it (`auto` moves on).
fn refuse_xattrs(layer: &Path) -> Result<(), StageError> {
    let check = |path: &Path| -> Result<(), StageError> {
        let names = match crate::fs::read_sized(|b| rustix::fs::llistxattr(path, b)) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
            Err(e) => return Err(StageError::io(path, "reading the xattrs of", e)),
        };
        match crate::fs::split_names(&names).next() {
            None => Ok(()),
            Some(name) => Err(StageError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "has xattr {}, and unionfs-fuse (built without xattr support) would \
                     neither show nor keep it; use another backend",
                    String::from_utf8_lossy(name)
                ),
            }),
        }
    };
    check(layer)?;
    let mut stack = vec![layer.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| StageError::io(&dir, "reading", e))?;
        for entry in rd {
            let entry = entry.map_err(|e| StageError::io(&dir, "reading", e))?;
            let path = entry.path();
            check(&path)?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Removes `path` recursively (never following symlinks below it).
fn remove_path(path: &Path) -> Result<(), StageError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Err(StageError::Unsupported {
            path: path.to_path_buf(),
            reason: "refusing to remove a path without a parent directory and a UTF-8 name".into(),
        });
    };
    let parent_fd = match crate::store::repo::open_dir(rustix::fs::CWD, parent) {
        Ok(fd) => fd,
        Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    remove_tree(parent_fd.as_fd(), name).map_err(|e| StageError::io(path, "removing", e))
}

/// Unmounts every mount at or below `top`, deepest first.
fn unmount_all_under(top: &Path) -> Result<(), StageError> {
    loop {
        let mut mounts =
            mounts_under(top).map_err(|e| StageError::io(top, "reading the mount table for", e))?;
        if mounts.is_empty() {
            return Ok(());
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in mounts {
            unmount_path(&m.mount_point)?;
        }
    }
}

fn mount_state(r: &Record) -> State {
    match r.backend {
        Some(StageBackend::Copy) => State::Ready,
        _ => {
            let root = r.root();
            match is_mount_point(&root) {
                Ok(true) => match std::fs::symlink_metadata(&root)
                    .and_then(|_| std::fs::read_dir(&root).map(|_| ()))
                {
                    Ok(()) => State::Mounted,
                    Err(_) => State::Broken,
                },
                _ => State::Unmounted,
            }
        }
    }
}

/// `du`: bytes allocated below `path` (0 when unreadable).
fn disk_usage(path: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if let Ok(md) = e.path().symlink_metadata() {
                use std::os::unix::fs::MetadataExt;
                *total += md.blocks() * 512;
                if md.is_dir() {
                    walk(&e.path(), total);
                }
            }
        }
    }
    let mut total = 0;
    walk(path, &mut total);
    total
}
