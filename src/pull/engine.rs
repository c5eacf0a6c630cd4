//! The pull algorithm, independent of where objects come from.
//!
//! A few worker threads (at most [`MAX_WORKERS`]) share one queue of
//! tasks. Metadata (commits, dirtrees, dirmetas) is taken before content so
//! the tree is discovered early and the content queue fills; once that
//! queue holds [`CONTENT_HIGH_WATER`] objects, workers drain it before
//! scanning more dirtrees, which keeps memory bounded whatever the size of
//! the commit.
//!
//! Requests in flight are not tied to workers. An object the store lacks
//! is first announced to the source ([`ObjectSource::prefetch`]) and its
//! task parked; a source with latency (HTTP) fetches many such objects at
//! once and says when each has arrived, and the task comes back to the
//! workers as ready, to be inflated, hashed and written without waiting
//! for the network. At most [`MAX_PARKED_CONTENT`] content objects are
//! announced ahead, so the source's queue stays bounded too. A source that
//! does not fetch ahead (a local repository) is simply read by the
//! workers. The source retries network failures itself (and resumes cut
//! off bodies); the engine fetches again what arrived corrupt: an object
//! whose bytes do not hash to its name, or do not even inflate, may have
//! been damaged on the way, so it is fetched anew up to
//! `network_retries` times before the pull fails naming it.
//!
//! Every object is verified against its checksum before it becomes visible
//! (the transaction refuses a mismatch). A commit's
//! `state/CHECKSUM.commitpartial` marker is created before its object is
//! written and removed only after the whole tree is published. When the
//! options ask for GPG or ed25519 verification (or both, which must then
//! both pass), a new commit's signatures are checked between fetching it
//! (with its `.commitmeta`) and writing anything, so a bad signature costs
//! no tree or content downloads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::source::{FetchError, FetchErrorKind, ObjectSource, PrefetchReady};
use super::{Depth, PullError, PullOptions, RemoteVerify};
use crate::ostree::{
    Checksum, Commit, DirMeta, DirTree, FormatError, MAX_METADATA_SIZE, ObjectName, ObjectType,
};
use crate::progress::{Event, Phase, Progress};
use crate::store::{Repo, StoreError, Transaction};

/// Content objects queued before workers stop scanning dirtrees.
const CONTENT_HIGH_WATER: usize = 8192;
/// Content objects announced to the source and not back yet, at most.
const MAX_PARKED_CONTENT: usize = 2048;
/// Worker threads (inflating, hashing, writing; reading, for local
/// sources), at most: the disk and two to four cores are the limit, not
/// the network.
pub const MAX_WORKERS: usize = 16;

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

impl Task {
    fn name(&self) -> ObjectName {
        match self {
            Task::Commit { checksum, .. } => ObjectName::new(*checksum, ObjectType::Commit),
            Task::DirTree { checksum, .. } => ObjectName::new(*checksum, ObjectType::DirTree),
            Task::DirMeta(c) => ObjectName::new(*c, ObjectType::DirMeta),
            Task::Content(c) => ObjectName::new(*c, ObjectType::File),
        }
    }
}

#[derive(Default)]
struct Queue {
    meta: VecDeque<Task>,
    content: VecDeque<Checksum>,
    /// Tasks whose object the source has ready (or failed to get).
    ready: VecDeque<Task>,
    /// Tasks waiting for their prefetched object.
    parked: HashMap<ObjectName, Task>,
    parked_content: usize,
    active: usize,
    /// Workers waiting for something to do.
    waiting: usize,
    failed: Option<PullError>,
}

impl Queue {
    fn idle(&self) -> bool {
        self.active == 0
            && self.meta.is_empty()
            && self.content.is_empty()
            && self.ready.is_empty()
            && self.parked.is_empty()
    }
}

/// The queue, shared with the source's threads (which hand parked tasks
/// back as ready).
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PrefetchReady for Shared {
    fn ready(&self, name: ObjectName) {
        let mut q = self.lock();
        if let Some(t) = q.parked.remove(&name) {
            if name.objtype == ObjectType::File {
                q.parked_content -= 1;
            }
            q.ready.push_back(t);
            drop(q);
            self.wake.notify_one();
        }
    }

    fn starved(&self) -> bool {
        let q = self.lock();
        q.waiting > 0 && q.ready.is_empty()
    }
}

/// Told of prefetches the engine waits for itself (a commit's detached
/// metadata): nothing to do.
struct NoReady;

impl PrefetchReady for NoReady {
    fn ready(&self, _: ObjectName) {}
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
    /// Objects fetched again because they arrived corrupt.
    pub refetched: AtomicU64,
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
    /// Commits a static delta wrote in this pull with the detached
    /// metadata its superblock carried (signatures checked): their
    /// metadata is not fetched again, as libostree does not (it was a
    /// round trip at the end of a delta pull of a signed repository).
    pub delta_commits: HashSet<Checksum>,
    /// The source's detached metadata of commits a static delta wrote
    /// without it, fetched while the parts were applied (libostree fetches
    /// it after the parts: a round trip at the end of every delta pull).
    pub fetched_commitmeta: Mutex<std::collections::HashMap<Checksum, Option<Vec<u8>>>>,
    shared: Arc<Shared>,
    /// `shared` as the source sees it.
    ready: Arc<dyn PrefetchReady>,
    /// Whether the source fetches ahead (known after the first try).
    prefetching: AtomicBool,
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
        let shared = Arc::new(Shared::default());
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
            delta_commits: HashSet::new(),
            fetched_commitmeta: Mutex::default(),
            ready: shared.clone(),
            shared,
            prefetching: AtomicBool::new(true),
            requested: Mutex::new(HashSet::new()),
            content_in_flight: Mutex::new(HashSet::new()),
            commits: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
            finished: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.shared.lock()
    }

    /// Queues an object unless it was queued before.
    fn push(&self, task: Task) {
        let name = task.name();
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
        self.shared.wake.notify_one();
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
            let workers: Vec<_> = (0..jobs.clamp(1, MAX_WORKERS))
                .map(|_| s.spawn(|| self.worker()))
                .collect();
            for w in workers {
                let _ = w.join();
            }
            self.finished.store(true, Ordering::Relaxed);
            watcher.thread().unpark();
        });
        // Whatever is still being fetched ahead (after a failure) is not
        // wanted any more.
        self.source.cancel_prefetches();
        match self.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The next task, and whether its object is ready at the source.
    fn next_task(&self) -> Option<(Task, bool)> {
        let mut q = self.lock();
        loop {
            if self.interrupt.load(Ordering::Relaxed) {
                self.stop.store(true, Ordering::Relaxed);
                q.failed.get_or_insert(PullError::Interrupted);
                self.shared.wake.notify_all();
                return None;
            }
            if q.failed.is_some() || self.stop.load(Ordering::Relaxed) {
                return None;
            }
            // Ready objects first: they hold memory and requests.
            if let Some(t) = q.ready.pop_front() {
                q.active += 1;
                return Some((t, true));
            }
            let content_room = q.parked_content < MAX_PARKED_CONTENT;
            let task = if q.content.len() < CONTENT_HIGH_WATER && !q.meta.is_empty() {
                q.meta.pop_front()
            } else if content_room && !q.content.is_empty() {
                q.content.pop_front().map(Task::Content)
            } else if q.content.is_empty() {
                q.meta.pop_front()
            } else {
                // Content waits for room among the announced objects.
                None
            };
            if let Some(t) = task {
                q.active += 1;
                return Some((t, false));
            }
            if q.idle() {
                self.shared.wake.notify_all();
                return None;
            }
            q.waiting += 1;
            q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            q.waiting -= 1;
        }
    }

    /// Watches the interrupt flag while the workers run, so that workers
    /// waiting for work and readers of objects in flight stop promptly.
    fn watch(&self) {
        while !self.finished.load(Ordering::Relaxed) {
            if self.interrupt.load(Ordering::Relaxed) {
                self.stop.store(true, Ordering::Relaxed);
                self.lock().failed.get_or_insert(PullError::Interrupted);
                self.shared.wake.notify_all();
                // Readers waiting for the network wake up failing.
                self.source.cancel_prefetches();
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
        self.work();
        // Stopped by the interrupt: the requests announced ahead go now,
        // not when the watcher next looks (up to 50 ms later, longer on a
        // loaded machine, while the source keeps requesting them).
        if self.interrupt.load(Ordering::Relaxed) {
            self.source.cancel_prefetches();
        }
    }

    fn work(&self) {
        while let Some((task, ready)) = self.next_task() {
            let r = self.process(task, ready);
            let mut q = self.lock();
            q.active -= 1;
            if let Err(e) = r
                && q.failed.is_none()
            {
                q.failed = Some(e);
            }
            // Pushes wake one sleeper each; everyone needs waking only to
            // stop (all done, or a failure).
            let finished = q.failed.is_some() || q.idle();
            drop(q);
            if finished {
                self.shared.wake.notify_all();
            }
            self.tick();
        }
    }

    /// Announces `task`'s object to the source and parks the task until
    /// the source has it. False when the source does not fetch ahead: the
    /// caller then fetches it now.
    fn park(&self, task: Task) -> Result<(), Task> {
        if !self.prefetching.load(Ordering::Relaxed) {
            return Err(task);
        }
        let name = task.name();
        {
            let mut q = self.lock();
            q.parked.insert(name, task);
            if name.objtype == ObjectType::File {
                q.parked_content += 1;
            }
        }
        if self
            .source
            .prefetch(&name, MAX_METADATA_SIZE as u64, &self.ready)
        {
            return Ok(());
        }
        self.prefetching.store(false, Ordering::Relaxed);
        let mut q = self.lock();
        if name.objtype == ObjectType::File {
            q.parked_content -= 1;
        }
        Err(q.parked.remove(&name).expect("parked above"))
    }

    /// Whether a `--localcache-repo` has the object (it is then taken from
    /// there, not announced to the source).
    fn in_caches(&self, name: &ObjectName) -> bool {
        self.caches
            .iter()
            .any(|c| c.has_object(name).unwrap_or(false))
    }

    /// Runs a task. `ready`: its object was announced and the source has
    /// it; otherwise what is present is skipped and what must be fetched
    /// is announced (parked) when the source fetches ahead.
    fn process(&self, task: Task, ready: bool) -> Result<(), PullError> {
        match task {
            Task::Commit {
                checksum,
                depth,
                optional,
            } => self.commit(checksum, depth, optional),
            Task::DirTree { checksum, path } => {
                if self.base_trees.contains(&checksum) {
                    return Ok(());
                }
                let name = ObjectName::new(checksum, ObjectType::DirTree);
                let tree = if !ready && self.txn.has_object(&name)? {
                    self.counters
                        .already_present
                        .fetch_add(1, Ordering::Relaxed);
                    self.load_staged_or_stored_dirtree(&name)?
                } else {
                    if !ready && !self.in_caches(&name) {
                        match self.park(Task::DirTree { checksum, path }) {
                            Ok(()) => return Ok(()),
                            Err(Task::DirTree { path: p, .. }) => {
                                return self.scan_fetched_dirtree(&name, &p);
                            }
                            Err(_) => unreachable!("parked a dirtree"),
                        }
                    }
                    return self.scan_fetched_dirtree(&name, &path);
                };
                self.scan(&tree, &path);
                Ok(())
            }
            Task::DirMeta(c) => {
                let name = ObjectName::new(c, ObjectType::DirMeta);
                if !ready && self.txn.has_object(&name)? {
                    self.counters
                        .already_present
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                if !ready && !self.in_caches(&name) && self.park(Task::DirMeta(c)).is_ok() {
                    return Ok(());
                }
                self.fetch_metadata(&name, false, DirMeta::parse)?;
                Ok(())
            }
            Task::Content(c) => {
                let r = self.content(c, ready);
                if !matches!(r, Ok(Parked::Yes)) {
                    self.content_in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&ObjectName::new(c, ObjectType::File));
                }
                r.map(|_| ())
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
            if !self.delta_commits.contains(&checksum) {
                self.refresh_present_commit(checksum)?;
            }
            self.load_staged_or_stored_commit(&name)?
        } else {
            // Both requests in flight at once: one round trip, not two.
            let meta_name = ObjectName::new(checksum, ObjectType::CommitMeta);
            let no_ready: Arc<dyn PrefetchReady> = Arc::new(NoReady);
            self.source
                .prefetch(&meta_name, MAX_METADATA_SIZE as u64, &no_ready);
            let Some(fetched) = self.fetch_verified(&name, optional, Commit::parse)? else {
                // An optional parent the source does not have.
                return Ok(());
            };
            let commitmeta = self.fetch_commitmeta(checksum)?;
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
        let early = self
            .fetched_commitmeta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&checksum);
        let fetched = match early {
            Some(data) => self.check_commitmeta(checksum, data)?,
            None => self.fetch_commitmeta(checksum)?,
        };
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
        let data = self
            .source
            .fetch_metadata(&name, MAX_METADATA_SIZE as u64)
            .map_err(PullError::Fetch)?;
        self.check_commitmeta(commit, data)
    }

    /// Validates the source's detached metadata for `commit` (fetched).
    fn check_commitmeta(
        &self,
        commit: Checksum,
        data: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, PullError> {
        let name = ObjectName::new(commit, ObjectType::CommitMeta);
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
                // Fetched again while the bytes do not hash to the name:
                // the path may have damaged them.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let data = match self
                        .source
                        .fetch_metadata(name, MAX_METADATA_SIZE as u64)
                        .map_err(PullError::Fetch)?
                    {
                        Some(d) => d,
                        None if optional => return Ok(None),
                        None => {
                            return Err(PullError::Fetch(FetchError::not_found(
                                self.source.location(name),
                            )));
                        }
                    };
                    let actual = Checksum::digest(&data);
                    if actual == name.checksum {
                        break (data, false);
                    }
                    if attempts > self.opts.network_retries {
                        return Err(PullError::ChecksumMismatch {
                            object: *name,
                            location: self.source.location(name),
                            actual,
                            attempts,
                        });
                    }
                    self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
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

    /// Fetches (from a cache or the source), writes and scans a dirtree.
    fn scan_fetched_dirtree(&self, name: &ObjectName, path: &str) -> Result<(), PullError> {
        let tree = self
            .fetch_metadata(name, false, DirTree::parse)?
            .expect("not optional");
        self.scan(&tree, path);
        Ok(())
    }

    /// Queues what a dirtree at `path` names (as the filters allow).
    fn scan(&self, tree: &DirTree, path: &str) {
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

    fn content(&self, checksum: Checksum, ready: bool) -> Result<Parked, PullError> {
        let name = ObjectName::new(checksum, ObjectType::File);
        if ready {
            self.fetch_content(checksum)?;
            return Ok(Parked::No);
        }
        if self.txn.has_object(&name)? {
            self.counters
                .already_present
                .fetch_add(1, Ordering::Relaxed);
            return Ok(Parked::No);
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
                    return Ok(Parked::No);
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
                        return Ok(Parked::No);
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
                    return Ok(Parked::No);
                }
                Ok(None) | Err(StoreError::MissingObject(_)) => {}
                Err(e) => return Err(self.located(&name, e)),
            }
        }
        if self.park(Task::Content(checksum)).is_ok() {
            return Ok(Parked::Yes);
        }
        self.fetch_content(checksum)?;
        Ok(Parked::No)
    }

    /// Fetches a content object from the source and writes it, fetching
    /// it again while it arrives corrupt (up to `network_retries` times).
    fn fetch_content(&self, checksum: Checksum) -> Result<(), PullError> {
        let name = ObjectName::new(checksum, ObjectType::File);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let r = self
                .source
                .fetch_content(&checksum)
                .map_err(PullError::Fetch)
                .and_then(|mut stream| {
                    // A big object stops between reads once interrupted.
                    stream.reader = Box::new(Interruptible {
                        inner: stream.reader,
                        flag: self.stop.clone(),
                        location: self.source.location(&name),
                    });
                    let r = self.txn.write_content_object(stream, Some(checksum));
                    crate::progress::check(self.interrupt)?;
                    r.map_err(|e| self.located(&name, e))
                });
            match r {
                Ok(_) => break,
                Err(e) if e.is_corruption() && attempts <= self.opts.network_retries => {
                    self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                }
                Err(PullError::ChecksumMismatch {
                    object,
                    location,
                    actual,
                    ..
                }) => {
                    return Err(PullError::ChecksumMismatch {
                        object,
                        location,
                        actual,
                        attempts,
                    });
                }
                Err(e) => return Err(e),
            }
        }
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
                attempts: 1,
            },
            StoreError::CorruptObject { object, source } => PullError::Corrupt {
                object,
                location,
                source,
            },
            StoreError::SourceRead(source) => match FetchError::from_io(source) {
                // The source's own failure (the network, after its
                // retries; a cancellation).
                Ok(fe) => PullError::Fetch(fe),
                // The object's data was bad (a corrupt compressed stream,
                // a wrong length): damaged on the way, or on the server.
                Err(source) => PullError::Fetch(
                    FetchError::new(
                        FetchErrorKind::Corrupt,
                        location,
                        format!("object {name}: invalid data"),
                    )
                    .with_source(source),
                ),
            },
            other => PullError::Store(other),
        }
    }
}

/// Whether a content task was parked (its object announced to the source).
enum Parked {
    Yes,
    No,
}

/// A reader that fails once the pull is stopping. (Not
/// `ErrorKind::Interrupted`: `read_exact` and `io::copy` retry those.)
pub(crate) struct Interruptible {
    pub(crate) inner: Box<dyn std::io::Read + Send>,
    pub(crate) flag: Arc<AtomicBool>,
    pub(crate) location: String,
}

impl std::io::Read for Interruptible {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.flag.load(Ordering::Relaxed) {
            return Err(FetchError::new(
                FetchErrorKind::Cancelled,
                self.location.clone(),
                "interrupted",
            )
            .into_io());
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
