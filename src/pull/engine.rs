//! The pull algorithm, independent of where objects come from.
//!
//! `jobs` worker threads share one queue of tasks. Metadata (commits,
//! dirtrees, dirmetas) is taken before content so the tree is discovered
//! early and the content queue fills; once that queue holds
//! [`CONTENT_HIGH_WATER`] objects, workers drain it before scanning more
//! dirtrees, which keeps memory bounded whatever the size of the commit.
//! Each worker fetches one object at a time and streams it through
//! decompression and hashing into the transaction, so at most `jobs`
//! requests are in flight and `jobs` objects are open.
//!
//! Every object is verified against its checksum before it becomes visible
//! (the transaction refuses a mismatch). A commit's
//! `state/CHECKSUM.commitpartial` marker is created before its object is
//! written and removed only after the whole tree is published. When the
//! options ask for GPG or ed25519 verification (or both, which must then
//! both pass), a new commit's signatures are checked between fetching it
//! (with its `.commitmeta`) and writing anything, so a bad signature costs
//! no tree or content downloads.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::source::{FetchError, ObjectSource, io_error_is_transient};
use super::{Depth, PullError, PullOptions, RemoteVerify};
use crate::ostree::{
    Checksum, Commit, DirMeta, DirTree, FormatError, MAX_METADATA_SIZE, ObjectName, ObjectType,
};
use crate::progress::{Event, Phase, Progress};
use crate::store::{Repo, StoreError, Transaction};

/// Content objects queued before workers stop scanning dirtrees.
const CONTENT_HIGH_WATER: usize = 8192;

#[derive(Debug)]
enum Task {
    /// `optional`: a parent reached through `--depth`; absent is fine.
    Commit {
        checksum: Checksum,
        depth: Depth,
        optional: bool,
    },
    DirTree {
        checksum: Checksum,
        path: String,
    },
    DirMeta(Checksum),
    Content(Checksum),
}

/// A metadata object fetched and checked but not yet written.
struct Fetched<T> {
    data: Vec<u8>,
    value: T,
    from_cache: bool,
}

#[derive(Default)]
struct Queue {
    meta: VecDeque<Task>,
    content: VecDeque<Checksum>,
    active: usize,
    failed: Option<PullError>,
}

/// What the pull has done so far.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub metadata_fetched: AtomicU64,
    pub content_fetched: AtomicU64,
    pub from_cache: AtomicU64,
    pub already_present: AtomicU64,
    pub queued: AtomicU64,
    /// Corrupt copies in `--localcache-repo`s, skipped for the source's.
    pub cache_rejected: AtomicU64,
}

pub(super) struct Engine<'a, 'r> {
    pub repo: &'r Repo,
    pub txn: &'a Transaction<'r>,
    pub source: &'a dyn ObjectSource,
    pub caches: &'a [Repo],
    pub opts: &'a PullOptions,
    /// The signature checks to run (from the remote's configuration).
    pub verifiers: &'a [RemoteVerify],
    pub counters: Counters,
    progress: &'a dyn Progress,
    interrupt: &'a AtomicBool,
    /// Dirtrees reachable from `--base`: their whole subtree is present.
    pub base_trees: HashSet<Checksum>,
    queue: Mutex<Queue>,
    wake: Condvar,
    requested: Mutex<HashSet<ObjectName>>,
    content_in_flight: Mutex<HashSet<ObjectName>>,
    /// Commits fetched or completed by this pull (markers to clear).
    pub commits: Mutex<Vec<Checksum>>,
    /// Set once `interrupt` is seen (by a worker, or by [`Self::watch`]),
    /// shared with the readers of objects in flight.
    stop: Arc<AtomicBool>,
    /// Set when the workers are done, to end [`Self::watch`].
    finished: AtomicBool,
}

impl<'a, 'r> Engine<'a, 'r> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: &'r Repo,
        txn: &'a Transaction<'r>,
        source: &'a dyn ObjectSource,
        caches: &'a [Repo],
        opts: &'a PullOptions,
        verifiers: &'a [RemoteVerify],
        base_trees: HashSet<Checksum>,
        progress: &'a dyn Progress,
        interrupt: &'a AtomicBool,
    ) -> Self {
        Engine {
            repo,
            txn,
            source,
            caches,
            opts,
            verifiers,
            counters: Counters::default(),
            progress,
            interrupt,
            base_trees,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            requested: Mutex::new(HashSet::new()),
            content_in_flight: Mutex::new(HashSet::new()),
            commits: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
            finished: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an object unless it was queued before.
    fn push(&self, task: Task) {
        let name = match &task {
            Task::Commit { checksum, .. } => ObjectName::new(*checksum, ObjectType::Commit),
            Task::DirTree { checksum, .. } => ObjectName::new(*checksum, ObjectType::DirTree),
            Task::DirMeta(c) => ObjectName::new(*c, ObjectType::DirMeta),
            Task::Content(c) => ObjectName::new(*c, ObjectType::File),
        };
        // Metadata names are remembered for the whole pull (one per
        // directory at most; a subtree shared by several directories is
        // scanned once). Content names only while queued or being fetched,
        // so memory does not grow with the number of files: a file met
        // again later is found present by its presence check.
        let set = if name.objtype == ObjectType::File {
            &self.content_in_flight
        } else {
            &self.requested
        };
        if !set.lock().unwrap_or_else(|p| p.into_inner()).insert(name) {
            return;
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        match task {
            Task::Content(c) => q.content.push_back(c),
            t => q.meta.push_back(t),
        }
        drop(q);
        self.wake.notify_one();
    }

    pub fn add_commit(&self, checksum: Checksum, depth: Depth) {
        self.push(Task::Commit {
            checksum,
            depth,
            optional: false,
        });
    }

    /// Runs the workers until every task is done or one fails.
    pub fn run(&self, jobs: usize) -> Result<(), PullError> {
        std::thread::scope(|s| {
            let watcher = s.spawn(|| self.watch());
            let workers: Vec<_> = (0..jobs.max(1))
                .map(|_| s.spawn(|| self.worker()))
                .collect();
            for w in workers {
                let _ = w.join();
            }
            self.finished.store(true, Ordering::Relaxed);
            watcher.thread().unpark();
        });
        match self.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn next_task(&self) -> Option<Task> {
        let mut q = self.lock();
        loop {
            if self.interrupt.load(Ordering::Relaxed) {
                self.stop.store(true, Ordering::Relaxed);
                q.failed.get_or_insert(PullError::Interrupted);
                self.wake.notify_all();
                return None;
            }
            if q.failed.is_some() || self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let task = if q.content.len() < CONTENT_HIGH_WATER && !q.meta.is_empty() {
                q.meta.pop_front()
            } else if let Some(c) = q.content.pop_front() {
                Some(Task::Content(c))
            } else {
                q.meta.pop_front()
            };
            if let Some(t) = task {
                q.active += 1;
                return Some(t);
            }
            if q.active == 0 {
                self.wake.notify_all();
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Watches the interrupt flag while the workers run, so that workers
    /// waiting for work and readers of objects in flight stop promptly.
    fn watch(&self) {
        while !self.finished.load(Ordering::Relaxed) {
            if self.interrupt.load(Ordering::Relaxed) {
                self.stop.store(true, Ordering::Relaxed);
                self.lock().failed.get_or_insert(PullError::Interrupted);
                self.wake.notify_all();
                return;
            }
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
    }

    /// Objects dealt with so far (fetched, taken from a cache or found
    /// present) and queued.
    pub fn done_and_queued(&self) -> (u64, u64) {
        let c = &self.counters;
        let done = c.metadata_fetched.load(Ordering::Relaxed)
            + c.content_fetched.load(Ordering::Relaxed)
            + c.from_cache.load(Ordering::Relaxed)
            + c.already_present.load(Ordering::Relaxed);
        (done, c.queued.load(Ordering::Relaxed))
    }

    fn tick(&self) {
        let (done, queued) = self.done_and_queued();
        self.progress.report(Event::Advance {
            phase: Phase::Fetch,
            done,
            total: Some(queued),
            bytes: self.source.bytes_transferred(),
        });
    }

    fn worker(&self) {
        while let Some(task) = self.next_task() {
            let r = self.process(task);
            let mut q = self.lock();
            q.active -= 1;
            if let Err(e) = r
                && q.failed.is_none()
            {
                q.failed = Some(e);
            }
            // Pushes wake one sleeper each; everyone needs waking only to
            // stop (all done, or a failure).
            let finished =
                q.failed.is_some() || (q.active == 0 && q.meta.is_empty() && q.content.is_empty());
            drop(q);
            if finished {
                self.wake.notify_all();
            }
            self.tick();
        }
    }

    fn retrying<T>(&self, f: impl FnMut() -> Result<T, PullError>) -> Result<T, PullError> {
        super::retrying(self.opts.network_retries, f)
    }

    fn process(&self, task: Task) -> Result<(), PullError> {
        match task {
            Task::Commit {
                checksum,
                depth,
                optional,
            } => self.commit(checksum, depth, optional),
            Task::DirTree { checksum, path } => self.dirtree(checksum, &path),
            Task::DirMeta(c) => {
                let name = ObjectName::new(c, ObjectType::DirMeta);
                if !self.txn.has_object(&name)? {
                    self.fetch_metadata(&name, false, DirMeta::parse)?;
                } else {
                    self.counters
                        .already_present
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Task::Content(c) => {
                let r = self.content(c);
                self.content_in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&ObjectName::new(c, ObjectType::File));
                r
            }
        }
    }

    fn commit(&self, checksum: Checksum, depth: Depth, optional: bool) -> Result<(), PullError> {
        let name = ObjectName::new(checksum, ObjectType::Commit);
        let present = self.txn.has_object(&name)?;
        let partial = present && self.repo.is_commit_partial(&checksum)?;
        let commit = if present {
            self.counters
                .already_present
                .fetch_add(1, Ordering::Relaxed);
            self.refresh_present_commit(checksum)?;
            self.load_staged_or_stored_commit(&name)?
        } else {
            let commitmeta = self.fetch_commitmeta(checksum)?;
            let Some(fetched) = self.fetch_verified(&name, optional, Commit::parse)? else {
                // An optional parent the source does not have.
                return Ok(());
            };
            // Signatures are checked before anything of this commit is
            // written or its tree requested.
            self.verify_signatures(checksum, &fetched.data, commitmeta.as_deref())?;
            // The marker goes first: a commit object is never visible
            // without it until its tree is complete.
            self.repo.mark_commit_partial(&checksum)?;
            if let Some(meta) = &commitmeta {
                self.write_commitmeta(checksum, meta)?;
            }
            self.write_fetched(&name, fetched)?
        };
        self.commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(checksum);
        if !self.opts.commit_metadata_only && (!present || partial) {
            self.push(Task::DirMeta(commit.root_meta));
            self.push(Task::DirTree {
                checksum: commit.root_tree,
                path: "/".into(),
            });
        }
        if let Some(depth) = depth.parent()
            && let Some(parent) = commit.parent
        {
            self.push(Task::Commit {
                checksum: parent,
                depth,
                optional: true,
            });
        }
        Ok(())
    }

    fn verifying(&self) -> bool {
        self.verifiers.iter().any(|v| v.commits)
    }

    /// Checks the signatures of a commit's bytes against its detached
    /// metadata, with every verifier the remote turns on for commits.
    fn verify_signatures(
        &self,
        commit: Checksum,
        data: &[u8],
        commitmeta: Option<&[u8]>,
    ) -> Result<(), PullError> {
        for v in self.verifiers.iter().filter(|v| v.commits) {
            v.keys
                .verify(data, commitmeta)
                .map_err(|source| PullError::CommitSignature {
                    commit,
                    remote: v.remote.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// A commit already in the store: its detached metadata is fetched
    /// again, as libostree does, so signatures added on the server since
    /// reach the store; with verification on, the signatures (new, else
    /// stored) are checked before anything of the commit is used, and new
    /// metadata is written only once it verified.
    fn refresh_present_commit(&self, checksum: Checksum) -> Result<(), PullError> {
        let fetched = self.fetch_commitmeta(checksum)?;
        let meta_name = ObjectName::new(checksum, ObjectType::CommitMeta);
        let stored = match self.repo.load_metadata(&meta_name) {
            Ok(m) => Some(m),
            // Staged by this pull (a static delta carried it).
            Err(StoreError::MissingObject(_)) => self.txn.load_staged(&meta_name).ok(),
            Err(e) => return Err(e.into()),
        };
        if self.verifying() {
            let name = ObjectName::new(checksum, ObjectType::Commit);
            let data = match self.repo.load_metadata(&name) {
                Ok(d) => d,
                Err(StoreError::MissingObject(_)) => self.txn.load_staged(&name)?,
                Err(e) => return Err(e.into()),
            };
            let meta = fetched.as_deref().or(stored.as_deref());
            self.verify_signatures(checksum, &data, meta)?;
        }
        // Written only when it changed (usually it did not).
        if let Some(m) = fetched.filter(|m| Some(m) != stored.as_ref()) {
            self.write_commitmeta(checksum, &m)?;
        }
        Ok(())
    }

    /// The source's detached metadata for `commit`, if it has any.
    fn fetch_commitmeta(&self, commit: Checksum) -> Result<Option<Vec<u8>>, PullError> {
        let name = ObjectName::new(commit, ObjectType::CommitMeta);
        let data = self.retrying(|| {
            self.source
                .fetch_metadata(&name, MAX_METADATA_SIZE as u64)
                .map_err(PullError::Fetch)
        })?;
        if let Some(d) = &data {
            // Checked here, before the commit is marked partial or
            // anything is written: a refused commitmeta leaves no trace.
            crate::ostree::Metadata::parse(d).map_err(|source| PullError::Corrupt {
                object: name,
                location: self.source.location(&name),
                source,
            })?;
            self.counters
                .metadata_fetched
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(data)
    }

    fn write_commitmeta(&self, commit: Checksum, data: &[u8]) -> Result<(), PullError> {
        let name = ObjectName::new(commit, ObjectType::CommitMeta);
        self.txn
            .write_commitmeta(commit, data)
            .map_err(|e| self.located(&name, e))
    }

    /// Fetches, verifies, validates and writes a metadata object. Returns
    /// `None` only when `optional` and the source does not have it.
    fn fetch_metadata<T>(
        &self,
        name: &ObjectName,
        optional: bool,
        parse: fn(&[u8]) -> Result<T, FormatError>,
    ) -> Result<Option<T>, PullError> {
        match self.fetch_verified(name, optional, parse)? {
            Some(f) => self.write_fetched(name, f).map(Some),
            None => Ok(None),
        }
    }

    /// Fetches a metadata object (from a `--localcache-repo` or the
    /// source) and checks its checksum and structure, without writing it.
    fn fetch_verified<T>(
        &self,
        name: &ObjectName,
        optional: bool,
        parse: fn(&[u8]) -> Result<T, FormatError>,
    ) -> Result<Option<Fetched<T>>, PullError> {
        // A cache copy is used only if it hashes right; a bad one is
        // skipped in favour of the source.
        let cached = self.first_in_caches(|cache| {
            let data = cache.load_metadata(name).ok()?;
            if Checksum::digest(&data) != name.checksum {
                self.counters.cache_rejected.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Some(data)
        });
        let (data, from_cache) = match cached {
            Some(d) => (d, true),
            None => {
                let fetched = self.retrying(|| {
                    self.source
                        .fetch_metadata(name, MAX_METADATA_SIZE as u64)
                        .map_err(PullError::Fetch)
                })?;
                match fetched {
                    Some(d) => (d, false),
                    None if optional => return Ok(None),
                    None => {
                        return Err(PullError::Fetch(FetchError::NotFound {
                            location: self.source.location(name),
                        }));
                    }
                }
            }
        };
        let actual = Checksum::digest(&data);
        if actual != name.checksum {
            return Err(PullError::ChecksumMismatch {
                object: *name,
                location: self.source.location(name),
                actual,
            });
        }
        let value = parse(&data).map_err(|source| PullError::Corrupt {
            object: *name,
            location: self.source.location(name),
            source,
        })?;
        Ok(Some(Fetched {
            data,
            value,
            from_cache,
        }))
    }

    /// Writes what [`Self::fetch_verified`] returned.
    fn write_fetched<T>(&self, name: &ObjectName, f: Fetched<T>) -> Result<T, PullError> {
        self.txn
            .write_metadata(name.objtype, &f.data, Some(name.checksum))
            .map_err(|e| self.located(name, e))?;
        let counter = if f.from_cache {
            &self.counters.from_cache
        } else {
            &self.counters.metadata_fetched
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(f.value)
    }

    fn first_in_caches<T>(&self, f: impl Fn(&Repo) -> Option<T>) -> Option<T> {
        self.caches.iter().find_map(f)
    }

    fn dirtree(&self, checksum: Checksum, path: &str) -> Result<(), PullError> {
        if self.base_trees.contains(&checksum) {
            return Ok(());
        }
        let name = ObjectName::new(checksum, ObjectType::DirTree);
        let tree = if self.txn.has_object(&name)? {
            self.counters
                .already_present
                .fetch_add(1, Ordering::Relaxed);
            self.load_staged_or_stored_dirtree(&name)?
        } else {
            self.fetch_metadata(&name, false, DirTree::parse)?
                .expect("not optional")
        };
        for f in &tree.files {
            if self.wanted(&join(path, &f.name), false) {
                self.push(Task::Content(f.checksum));
            }
        }
        for d in &tree.dirs {
            let p = join(path, &d.name);
            if self.wanted(&p, true) {
                self.push(Task::DirMeta(d.meta));
                self.push(Task::DirTree {
                    checksum: d.tree,
                    path: p,
                });
            }
        }
        Ok(())
    }

    /// A commit already written: from the repository, or from this
    /// transaction's staging (a static delta wrote it).
    fn load_staged_or_stored_commit(&self, name: &ObjectName) -> Result<Commit, PullError> {
        match self.repo.load_commit(&name.checksum) {
            Ok(c) => Ok(c),
            Err(StoreError::MissingObject(_)) => {
                let data = self.txn.load_staged(name)?;
                Commit::parse(&data).map_err(|source| PullError::Corrupt {
                    object: *name,
                    location: "staging".into(),
                    source,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A dirtree already written: from the repository, or from this
    /// transaction's staging when another commit of the same pull wrote it.
    fn load_staged_or_stored_dirtree(&self, name: &ObjectName) -> Result<DirTree, PullError> {
        match self.repo.load_dirtree(&name.checksum) {
            Ok(t) => Ok(t),
            Err(StoreError::MissingObject(_)) => {
                let data = self.txn.load_staged(name)?;
                DirTree::parse(&data).map_err(|source| PullError::Corrupt {
                    object: *name,
                    location: "staging".into(),
                    source,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a path passes the `--subpath` filters. Directories are also
    /// wanted when a filter lies below them.
    fn wanted(&self, path: &str, is_dir: bool) -> bool {
        if self.opts.subpaths.is_empty() {
            return true;
        }
        self.opts
            .subpaths
            .iter()
            .map(|s| s.as_str())
            .any(|s| s == "/" || path == s || under(path, s) || (is_dir && under(s, path)))
    }

    fn content(&self, checksum: Checksum) -> Result<(), PullError> {
        let name = ObjectName::new(checksum, ObjectType::File);
        if self.txn.has_object(&name)? {
            self.counters
                .already_present
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        for cache in self.caches {
            if !cache.has_object(&name).unwrap_or(false) {
                continue;
            }
            // Hardlinked when the cache stores objects as we do on the same
            // filesystem (verified first), else copied below.
            match self.txn.import_content(cache, checksum) {
                Ok(Some(_)) => {
                    self.counters.from_cache.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(None) => {}
                Err(StoreError::ChecksumMismatch { .. })
                | Err(StoreError::SourceRead(_))
                | Err(StoreError::CorruptObject { .. })
                | Err(StoreError::BadObject { .. })
                | Err(StoreError::MissingObject(_)) => {
                    self.counters.cache_rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if let Ok(obj) = cache.open_content(&checksum) {
                // Verified like anything else: the write checks the
                // checksum. A corrupt cache copy is skipped, not fatal: the
                // source may have a good one.
                match self.txn.write_content_object(obj, Some(checksum)) {
                    Ok(_) => {
                        self.counters.from_cache.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(StoreError::ChecksumMismatch { .. })
                    | Err(StoreError::SourceRead(_))
                    | Err(StoreError::CorruptObject { .. })
                    | Err(StoreError::BadObject { .. }) => {
                        self.counters.cache_rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // A local source storing objects as we do, on the same filesystem:
        // a verified hardlink, as `ostree pull-local` makes. A missing
        // object is left to the fetch below, which names it.
        if let Some(src) = self.source.local_repo() {
            match self.txn.import_content(src, checksum) {
                Ok(Some(_)) => {
                    self.counters
                        .content_fetched
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(None) | Err(StoreError::MissingObject(_)) => {}
                Err(e) => return Err(self.located(&name, e)),
            }
        }
        self.retrying(|| {
            let mut stream = self
                .source
                .fetch_content(&checksum)
                .map_err(PullError::Fetch)?;
            // A big object stops between reads once interrupted.
            stream.reader = Box::new(Interruptible {
                inner: stream.reader,
                flag: self.stop.clone(),
            });
            let r = self.txn.write_content_object(stream, Some(checksum));
            crate::progress::check(self.interrupt)?;
            r.map_err(|e| self.located(&name, e))
        })?;
        self.counters
            .content_fetched
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Attaches the source location to a store error about `name`.
    fn located(&self, name: &ObjectName, e: StoreError) -> PullError {
        let location = self.source.location(name);
        match e {
            StoreError::ChecksumMismatch { object, actual } => PullError::ChecksumMismatch {
                object,
                location,
                actual,
            },
            StoreError::CorruptObject { object, source } => PullError::Corrupt {
                object,
                location,
                source,
            },
            StoreError::SourceRead(ref source) if io_error_is_transient(source) => {
                PullError::Fetch(FetchError::Transient {
                    location,
                    message: source.to_string(),
                })
            }
            // The object's data was bad (a corrupt compressed stream, a
            // wrong length): the source's fault, so name the object and
            // where it came from.
            StoreError::SourceRead(source) => PullError::Fetch(FetchError::Fatal {
                location,
                message: format!("object {name}: {source}"),
            }),
            other => PullError::Store(other),
        }
    }
}

/// A reader that fails once the pull is stopping. (Not
/// `ErrorKind::Interrupted`: `read_exact` and `io::copy` retry those.)
struct Interruptible {
    inner: Box<dyn std::io::Read + Send>,
    flag: Arc<AtomicBool>,
}

impl std::io::Read for Interruptible {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.flag.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("interrupted"));
        }
        self.inner.read(buf)
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `path` lies strictly below `dir`.
fn under(path: &str, dir: &str) -> bool {
    path.len() > dir.len()
        && path.starts_with(dir)
        && (dir.ends_with('/') || path.as_bytes()[dir.len()] == b'/')
}
