//! `arbor static-delta generate`: a static delta from FROM (or from
//! nothing) to TO that `ostree pull` applies, made by libostree's rules
//! (§16 of the format reference) on every core.
//!
//! 1. **Plan** ([`super::plan`]): the objects new in TO; new regular files
//!    paired with an old version (same basename, size within ±30 %).
//! 2. **Analyse pairs**, in parallel: rollsum when at least half of the new
//!    file's chunks are found in the old one ([`super::rollsum`]), else a
//!    bsdiff patch when allowed and both files together stay within
//!    `max_bsdiff_size`, else the file is sent whole. New files sent whole
//!    and larger than `min_fallback_size` become fallbacks (fetched as
//!    ordinary `.filez`). Each file travels one way only.
//! 3. **Lay out** the parts ([`super::layout`]), exactly, from sizes alone.
//! 4. **Build** the parts, in parallel ([`super::build`]): each payload is
//!    streamed from the objects and patches through xz (preset 8 and CRC64
//!    as libostree, with a narrower match search and the dictionary sized
//!    to the payload) into its file.
//! 5. **Superblock** last: caller-free metadata (`ostree.endianness`, inline
//!    parts, the target's detached metadata), the TO commit, part headers
//!    and fallbacks, optionally wrapped and signed.
//!
//! Nothing half-written is ever visible: the delta is built in a private
//! working directory under `tmp/` ([`crate::store::workdir`], superblock
//! last) and moved into `deltas/` whole, exchanged with an older delta of
//! the same name, which stays valid until then. On failure or interruption
//! the working directory is removed; if the process is killed, the next
//! generation, summary update or write transaction removes it (its
//! liveness lock is free).
//!
//! # Memory
//!
//! Bounded whatever the size of the trees or files, by:
//! * **pair analysis**: at most [`PAIR_BUDGET`] bytes of file pairs and
//!   bsdiff working space at once over all workers (old and new file, 17
//!   bytes per old byte for bsdiff's suffix array, the patch), a pair
//!   larger than the budget running alone, as libostree (which maps both
//!   files) needs it too. Patches go to a scratch file in the working
//!   directory as soon as they are made;
//! * **part building**: per worker, one xz encoder (its dictionary no
//!   larger than the part, at most 32 MiB; preset 8 needs about ten times
//!   the dictionary) and fixed-size buffers: objects and patches are
//!   streamed, never held whole. A big part compressed on every core uses
//!   liblzma's threaded encoder, which holds about two blocks per thread,
//!   blocks of at most [`super::build::MAX_XZ_BLOCK`] whatever the part. Inline parts are held in memory up to
//!   the superblock size limit in total;
//! * the **plan**: a few dozen bytes per object of the two trees, and the
//!   matched chunk list of each rollsum'd file.
//!
//! The summary and delta indexes are not touched: run `arbor summary -u`.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType};
use thiserror::Error;

use crate::ostree::delta::DeltaName;
use crate::ostree::delta::part::FileMode;
use crate::ostree::delta::superblock::{
    ENDIANNESS_KEY, Endianness, Fallback, PartHeader, SignedSuperblock, Superblock,
};
use crate::ostree::{Checksum, Commit, Metadata, ObjectName, ObjectType, Value};
use crate::progress::{self, Event, Phase, Progress};
use crate::store::workdir::{WorkDir, clean_dead};
use crate::store::{Repo, StoreError};

use super::build::{
    BuiltPart, MIN_XZ_BLOCK, MIN_XZ_BLOCK_FEW_PARTS, PartOut, Scratch, build_part, stream_content,
};
use super::commit_sign::load_commitmeta;
use super::deltas::has_delta;
use super::files::{PublishIo, mkdir_p, write_tmp};
use super::layout::{ContentMeta, Layout, PartRecipe};
use super::plan::{ContentInfo, content_infos, pairable, similar_objects, walk};
use super::rollsum;
use super::sign::{SignError, SigningKey};

/// libostree's defaults, in bytes (its options count in units of 10⁶).
pub const DEFAULT_MAX_CHUNK_SIZE: u64 = 32_000_000;
pub const DEFAULT_MIN_FALLBACK_SIZE: u64 = 4_000_000;
pub const DEFAULT_MAX_BSDIFF_SIZE: u64 = 128_000_000;

/// Longest parent chain searched when checking that FROM is an ancestor.
const MAX_ANCESTRY: usize = 100_000;

/// Where a delta starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltaFrom {
    /// TO's parent (ostree's default).
    #[default]
    Parent,
    /// Nothing: a from-scratch delta holding the whole tree.
    Empty,
    Commit(Checksum),
}

#[derive(Debug)]
pub struct DeltaOptions {
    pub to: Checksum,
    pub from: DeltaFrom,
    /// Parts inside the superblock, no part files.
    pub inline: bool,
    /// Try bsdiff for paired files (rollsum is always tried).
    pub bsdiff: bool,
    /// A part is closed once it holds about this many bytes.
    pub max_chunk_size: u64,
    /// New files sent whole and larger than this are fetched as `.filez`
    /// instead; 0: never.
    pub min_fallback_size: u64,
    /// bsdiff is tried only when old + new size stay within this.
    pub max_bsdiff_size: u64,
    /// Sign the superblock (the signed wrapper of `static-delta
    /// apply-offline`; `ostree pull` does not read signed superblocks).
    pub keys: Vec<SigningKey>,
    /// Worker threads [default: one per CPU].
    pub jobs: Option<usize>,
    /// Accept a FROM that is not an ancestor of TO.
    pub allow_unrelated: bool,
    /// Superblock timestamp, seconds since the epoch [default:
    /// `$SOURCE_DATE_EPOCH` when set, else now].
    pub timestamp: Option<u64>,
    /// Skip when the delta already exists (`--if-not-exists`).
    pub if_not_exists: bool,
}

impl DeltaOptions {
    pub fn new(to: Checksum) -> Self {
        DeltaOptions {
            to,
            from: DeltaFrom::Parent,
            inline: false,
            bsdiff: true,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            min_fallback_size: DEFAULT_MIN_FALLBACK_SIZE,
            max_bsdiff_size: DEFAULT_MAX_BSDIFF_SIZE,
            keys: Vec::new(),
            jobs: None,
            allow_unrelated: false,
            timestamp: None,
            if_not_exists: false,
        }
    }
}

/// What a delta holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaOutcome {
    pub name: Option<DeltaName>,
    /// It existed and `if_not_exists` was set: nothing was done.
    pub skipped: bool,
    pub parts: usize,
    /// Objects in parts.
    pub objects: u64,
    /// Bytes of the part files (compressed) and of their objects.
    pub size: u64,
    pub usize: u64,
    pub fallbacks: usize,
    pub fallback_size: u64,
    pub rollsum: usize,
    pub rollsum_bytes: u64,
    pub bsdiff: usize,
    pub superblock_size: u64,
}

#[derive(Debug, Error)]
pub enum DeltaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] PublishIo),
    #[error("signing the superblock: {0}")]
    Sign(#[from] SignError),
    #[error(
        "commit {0} has no parent to make a delta from: use --empty for a delta from scratch, \
         or --from REV"
    )]
    NoParent(Checksum),
    #[error("FROM and TO are the same commit {0}")]
    SameCommit(Checksum),
    #[error(
        "commit {commit} is partial (its tree is incomplete in this repository): pull it whole \
         before making a delta {role} it"
    )]
    Partial {
        commit: Checksum,
        role: &'static str,
    },
    #[error(
        "{from} is not an ancestor of {to} (or their history is not in this repository): a \
         delta between unrelated commits is usually a mistake; allow it explicitly to go on"
    )]
    Unrelated { from: Checksum, to: Checksum },
    #[error("{0}: the superblock would exceed the metadata size limit (too many inline parts)")]
    SuperblockTooLarge(DeltaName),
    #[error("bsdiff of {object}: {source}")]
    Bsdiff {
        object: Checksum,
        #[source]
        source: std::io::Error,
    },
    #[error("reading object {object}: {source}")]
    ReadObject {
        object: ObjectName,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "object {object} is corrupt: {found} bytes where its header (or the delta's plan) says \
         {expected}"
    )]
    ObjectSize {
        object: ObjectName,
        expected: u64,
        found: u64,
    },
    #[error("compressing part {part}: {source}")]
    Compress {
        part: usize,
        #[source]
        source: liblzma::stream::Error,
    },
    #[error("framing part {part}: {source}")]
    Frame {
        part: usize,
        #[source]
        source: crate::ostree::delta::error::DeltaError,
    },
    #[error("starting the worker threads: {0}")]
    ThreadPool(#[source] rayon::ThreadPoolBuildError),
    #[error("interrupted")]
    Interrupted,
}

impl From<progress::Interrupted> for DeltaError {
    fn from(_: progress::Interrupted) -> Self {
        DeltaError::Interrupted
    }
}

/// Generates the delta `opts` describes into the repository.
///
/// Progress: [`Phase::GenerateDelta`] in parts (bytes: compressed part
/// bytes written), with notes on the plan. An interrupt stops within an
/// object or part and leaves no trace of the delta.
pub fn generate_delta(
    repo: &Repo,
    opts: &DeltaOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<DeltaOutcome, DeltaError> {
    let to = opts.to;
    let from = match opts.from {
        DeltaFrom::Empty => None,
        DeltaFrom::Commit(c) => Some(c),
        DeltaFrom::Parent => Some(
            repo.load_commit(&to)?
                .parent
                .ok_or(DeltaError::NoParent(to))?,
        ),
    };
    let name = DeltaName::new(from, to);
    if opts.if_not_exists && has_delta(repo, &name)? {
        return Ok(DeltaOutcome {
            name: Some(name),
            skipped: true,
            ..Default::default()
        });
    }
    check_commits(repo, from, to, opts.allow_unrelated)?;
    // What killed generations left behind.
    clean_dead(repo)?;

    let jobs = opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("delta-{i}"))
        .build()
        .map_err(DeltaError::ThreadPool)?;

    // Built in a private directory of tmp/, moved into place whole. On
    // success it then holds the replaced delta, if any; on failure,
    // whatever was written: removed with it either way.
    let work = WorkDir::create(repo, "delta", 0o755)?;
    let scratch = Scratch::new(work.dir(), work.path())?;
    let out = pool.install(|| {
        let parts = plan_and_layout(repo, &scratch, from, to, opts, progress, interrupt)?;
        write_delta(
            repo, &name, &work, &scratch, from, to, opts, parts, progress, interrupt,
        )
    })?;
    drop(scratch);
    drop(work);
    Ok(DeltaOutcome {
        name: Some(name),
        ..out
    })
}

fn check_commits(
    repo: &Repo,
    from: Option<Checksum>,
    to: Checksum,
    allow_unrelated: bool,
) -> Result<(), DeltaError> {
    if repo.is_commit_partial(&to)? {
        return Err(DeltaError::Partial {
            commit: to,
            role: "to",
        });
    }
    let Some(from) = from else { return Ok(()) };
    if from == to {
        return Err(DeltaError::SameCommit(to));
    }
    if repo.is_commit_partial(&from)? {
        return Err(DeltaError::Partial {
            commit: from,
            role: "from",
        });
    }
    repo.load_commit(&from)?;
    if allow_unrelated {
        return Ok(());
    }
    let mut c = to;
    for _ in 0..MAX_ANCESTRY {
        let parent = match repo.load_commit(&c) {
            Ok(commit) => commit.parent,
            Err(StoreError::MissingObject(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match parent {
            Some(p) if p == from => return Ok(()),
            Some(p) => c = p,
            None => break,
        }
    }
    Err(DeltaError::Unrelated { from, to })
}

/// How a new regular file travels (besides whole).
enum Method {
    Rollsum(Checksum, rollsum::Matches),
    /// Patched from the old file, the patch in the scratch file.
    Bsdiff(Checksum, super::layout::PatchRef),
}

/// A byte budget shared by workers holding file pairs in memory.
struct Budget {
    left: Mutex<u64>,
    freed: Condvar,
    total: u64,
}

impl Budget {
    fn new(total: u64) -> Self {
        Budget {
            left: Mutex::new(total),
            freed: Condvar::new(),
            total,
        }
    }

    /// Waits for `n` bytes (a request larger than the whole budget waits
    /// for all of it, so it runs alone).
    fn take(&self, n: u64) -> BudgetGuard<'_> {
        let n = n.min(self.total);
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        while *left < n {
            left = self.freed.wait(left).unwrap_or_else(|e| e.into_inner());
        }
        *left -= n;
        BudgetGuard { budget: self, n }
    }
}

struct BudgetGuard<'a> {
    budget: &'a Budget,
    n: u64,
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        let mut left = self.budget.left.lock().unwrap_or_else(|e| e.into_inner());
        *left += self.n;
        self.budget.freed.notify_all();
    }
}

/// Bytes of memory that pair analysis may hold at once.
const PAIR_BUDGET: u64 = 2 << 30;

/// Reads a regular file's data whole (for pair analysis, within the
/// budget), checked against its checksum.
fn read_data(repo: &Repo, c: &Checksum, size: u64) -> Result<Vec<u8>, DeltaError> {
    let mut data = Vec::with_capacity(size.min(1 << 30) as usize);
    stream_content(repo, c, size, |_, chunk| {
        data.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(data)
}

fn content_meta(i: &ContentInfo) -> ContentMeta {
    ContentMeta {
        mode: FileMode {
            uid: i.header.uid,
            gid: i.header.gid,
            mode: i.header.mode,
        },
        xattrs: i.header.xattrs.clone(),
    }
}

/// What the layout needs besides the parts.
struct Planned {
    parts: Vec<PartRecipe>,
    fallbacks: Vec<Fallback>,
    rollsum: usize,
    rollsum_bytes: u64,
    bsdiff: usize,
}

fn plan_and_layout(
    repo: &Repo,
    scratch: &Scratch,
    from: Option<Checksum>,
    to: Checksum,
    opts: &DeltaOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<Planned, DeltaError> {
    let to_tree = walk(repo, &to, interrupt)?;
    let from_tree = match from {
        Some(f) => Some(walk(repo, &f, interrupt)?),
        None => None,
    };
    let from_all: HashSet<ObjectName> = from_tree.as_ref().map(|t| t.all()).unwrap_or_default();
    let to_commit = ObjectName::new(to, ObjectType::Commit);
    let new_meta: Vec<ObjectName> = to_tree
        .metadata
        .iter()
        .filter(|o| **o != to_commit && !from_all.contains(o))
        .copied()
        .collect();
    let new_content: Vec<Checksum> = to_tree
        .content
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !from_all.contains(&ObjectName::new(*c, ObjectType::File)))
        .collect();
    let mut wanted: Vec<Checksum> = new_content.clone();
    if let Some(f) = &from_tree {
        // Old files are read only to pair them: those sharing a name with
        // a new file (before knowing which new files are regular).
        let new: HashSet<Checksum> = new_content.iter().copied().collect();
        wanted.extend(pairable(f, &to_tree, &new));
    }
    wanted.sort();
    wanted.dedup();
    let infos = content_infos(repo, &wanted, interrupt)?;
    let info = |c: &Checksum| infos.get(c).expect("header read for every planned object");
    let new_regular: HashSet<Checksum> = new_content
        .iter()
        .filter(|c| info(c).header.is_regular())
        .copied()
        .collect();

    // Pairs and how each travels.
    let pairs = match &from_tree {
        Some(f) => similar_objects(f, &to_tree, &new_regular, &infos),
        None => Vec::new(),
    };
    let pairs: Vec<(Checksum, Checksum)> = pairs
        .into_iter()
        // The client must be able to read the old file whatever its own
        // privileges (a bare-user store under a bare parent).
        .filter(|(_, f)| info(f).header.mode & 0o004 != 0)
        .collect();
    progress.report(Event::Note(&format!(
        "new objects: {} metadata, {} regular files, {} symlinks; {} modified file pairs",
        new_meta.len(),
        new_regular.len(),
        new_content.len() - new_regular.len(),
        pairs.len()
    )));
    let budget = Budget::new(PAIR_BUDGET.max(1));
    let methods: Vec<Option<(Checksum, Method)>> = pairs
        .par_iter()
        .map(|(t, f)| -> Result<_, DeltaError> {
            progress::check(interrupt)?;
            let (ts, fs) = (info(t).size, info(f).size);
            let try_bsdiff = opts.bsdiff && ts + fs <= opts.max_bsdiff_size;
            // bsdiff's suffix array takes 16 bytes per old byte (and its
            // working copy one more); the raw patch is about the new
            // file's size.
            let cost = ts + fs + if try_bsdiff { 17 * fs + 2 * ts } else { 0 };
            let _mem = budget.take(cost);
            let old = read_data(repo, f, fs)?;
            let new = read_data(repo, t, ts)?;
            let m = rollsum::compute(&old, &new);
            if m.worth_it() {
                return Ok(Some((*t, Method::Rollsum(*f, m))));
            }
            if try_bsdiff {
                progress::check(interrupt)?;
                let mut patch = Vec::new();
                bsdiff::diff(&old, &new, &mut patch)
                    .map_err(|source| DeltaError::Bsdiff { object: *t, source })?;
                drop((old, new));
                let at = scratch.put(&patch)?;
                return Ok(Some((*t, Method::Bsdiff(*f, at))));
            }
            Ok(None)
        })
        .collect::<Result<_, _>>()?;
    let methods: HashMap<Checksum, Method> = methods.into_iter().flatten().collect();

    let mut layout = Layout::new(opts.max_chunk_size);
    for m in &new_meta {
        let size = meta_size(repo, m)?;
        layout.add_meta(*m, size);
    }
    let mut out = Planned {
        parts: Vec::new(),
        fallbacks: Vec::new(),
        rollsum: 0,
        rollsum_bytes: 0,
        bsdiff: 0,
    };
    // Rollsum'd, then bsdiff'd, in walk order.
    for c in &new_content {
        if let Some(Method::Rollsum(f, m)) = methods.get(c) {
            let i = info(c);
            layout.add_rollsum(*c, &content_meta(i), i.size, *f, m);
            out.rollsum += 1;
            out.rollsum_bytes += m.match_size;
        }
    }
    for c in &new_content {
        // The entry stays, so the file is not also sent whole below.
        if let Some(Method::Bsdiff(f, patch)) = methods.get(c) {
            let i = info(c);
            layout.add_bsdiff(*c, &content_meta(i), i.size, *f, *patch);
            out.bsdiff += 1;
        }
    }
    // Plain regular files (new, or paired but neither rollsum'd nor
    // bsdiff'd), with fallbacks for the large ones.
    for c in &new_content {
        let i = info(c);
        if !i.header.is_regular() || methods.contains_key(c) {
            continue;
        }
        let stream = i.header.checksum_prefix().len() as u64 + i.size;
        if opts.min_fallback_size > 0 && stream > opts.min_fallback_size {
            let name = ObjectName::new(*c, ObjectType::File);
            out.fallbacks.push(Fallback {
                object: name,
                size: storage_size(repo, &name)?,
                usize: i.size,
            });
            continue;
        }
        layout.add_plain(*c, &content_meta(i), i.size, i.size);
    }
    for c in &new_content {
        let i = info(c);
        if i.header.is_symlink() {
            let len = i.header.symlink_target.len() as u64;
            layout.add_plain(*c, &content_meta(i), 0, len);
        }
    }
    out.parts = layout.finish();
    Ok(out)
}

/// Bytes of a loose object file.
fn storage_size(repo: &Repo, name: &ObjectName) -> Result<u64, StoreError> {
    let path = repo.object_fs_path(name);
    match rustix::fs::statat(
        repo.objects_dir(),
        name.loose_path(repo.mode().is_archive()).as_str(),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Ok(0),
        Ok(st) => Ok(st.st_size as u64),
        Err(rustix::io::Errno::NOENT) => Err(StoreError::MissingObject(*name)),
        Err(e) => Err(StoreError::Io {
            path,
            source: e.into(),
        }),
    }
}

fn meta_size(repo: &Repo, name: &ObjectName) -> Result<u64, StoreError> {
    let size = storage_size(repo, name)?;
    if size > crate::ostree::MAX_METADATA_SIZE as u64 {
        return Err(StoreError::BadObject {
            object: *name,
            reason: "larger than the metadata size limit".into(),
        });
    }
    Ok(size)
}

/// Moves the finished delta from `build_rel` to its place: exchanged with
/// an older delta of the same name (which then sits at `build_rel`, for the
/// caller to remove), so readers see the old delta or the new one, whole.
/// Where the filesystem cannot exchange, the old delta is removed first.
fn install(repo: &Repo, name: &DeltaName, build_rel: &str, fsync: bool) -> Result<(), DeltaError> {
    let final_rel = name.dir();
    let (parent_rel, leaf) = final_rel
        .rsplit_once('/')
        .expect("delta dirs have components");
    let parent = mkdir_p(repo, parent_rel)?;
    let path = repo.path().join(&final_rel);
    let exists = match rustix::fs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => true,
        Err(rustix::io::Errno::NOENT) => false,
        Err(e) => return Err(PublishIo::new(&path, e.into()).into()),
    };
    if exists {
        match rustix::fs::renameat_with(
            repo.dir(),
            build_rel,
            &parent,
            leaf,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                crate::fs::remove_tree(parent.as_fd(), leaf)
                    .map_err(|e| PublishIo::new(&path, e))?;
                rustix::fs::renameat(repo.dir(), build_rel, &parent, leaf)
                    .map_err(|e| PublishIo::new(&path, e.into()))?;
            }
            Err(e) => return Err(PublishIo::new(&path, e.into()).into()),
        }
    } else {
        rustix::fs::renameat(repo.dir(), build_rel, &parent, leaf)
            .map_err(|e| PublishIo::new(&path, e.into()))?;
    }
    if fsync {
        rustix::fs::fsync(&parent)
            .map_err(|e| PublishIo::new(repo.path().join(parent_rel), e.into()))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_delta(
    repo: &Repo,
    name: &DeltaName,
    work: &WorkDir,
    scratch: &Scratch,
    from: Option<Checksum>,
    to: Checksum,
    opts: &DeltaOptions,
    planned: Planned,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<DeltaOutcome, DeltaError> {
    let fsync = repo.fsync_enabled();
    let dir = work.dir();
    let dir_path = work.path();
    let n = planned.parts.len();
    progress.report(Event::Start {
        phase: Phase::GenerateDelta,
        total: Some(n as u64),
    });
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let inline_total = AtomicU64::new(0);
    let part_out = if opts.inline {
        PartOut::Memory {
            name,
            inline_total: &inline_total,
        }
    } else {
        PartOut::File {
            dir,
            dir_path,
            fsync,
        }
    };
    let build = |i: usize, threads: (usize, u64)| -> Result<_, DeltaError> {
        progress::check(interrupt)?;
        let part: BuiltPart = build_part(
            repo,
            scratch,
            i,
            &planned.parts[i],
            threads,
            &part_out,
            interrupt,
        )?;
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        let b = bytes.fetch_add(part.header.size, Ordering::Relaxed) + part.header.size;
        progress.report(Event::Advance {
            phase: Phase::GenerateDelta,
            done: d,
            total: Some(n as u64),
            bytes: b,
        });
        Ok((i, part.header, part.inline))
    };
    // Small parts are compressed one per core; big ones one at a time, each
    // split into one xz block per core (liblzma's threaded encoder), so no
    // core idles while the last big parts finish.
    // With fewer parts than cores (an update's one part), parts down to
    // half a megabyte are split too.
    let threads = rayon::current_num_threads().max(1);
    let min_block = if n < threads {
        MIN_XZ_BLOCK_FEW_PARTS
    } else {
        MIN_XZ_BLOCK
    };
    let (big, small): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|i| threads > 1 && planned.parts[*i].blob_len >= 2 * min_block);
    let mut built: Vec<(usize, PartHeader, Option<Vec<u8>>)> = small
        .par_iter()
        .map(|&i| build(i, (1, MIN_XZ_BLOCK)))
        .collect::<Result<_, _>>()?;
    for i in big {
        built.push(build(i, (threads, min_block))?);
    }
    progress::check(interrupt)?;
    built.sort_by_key(|(i, _, _)| *i);

    let commit_bytes = repo.load_verified_metadata(&ObjectName::new(to, ObjectType::Commit))?;
    let commit = Commit::parse(&commit_bytes).map_err(|source| StoreError::CorruptObject {
        object: ObjectName::new(to, ObjectType::Commit),
        source,
    })?;
    let mut metadata = Metadata::new();
    metadata.insert(
        ENDIANNESS_KEY,
        Superblock::endianness_value(Endianness::NATIVE),
    );
    let mut out = DeltaOutcome {
        parts: n,
        fallbacks: planned.fallbacks.len(),
        fallback_size: planned.fallbacks.iter().map(|f| f.size).sum(),
        rollsum: planned.rollsum,
        rollsum_bytes: planned.rollsum_bytes,
        bsdiff: planned.bsdiff,
        ..Default::default()
    };
    let mut headers = Vec::with_capacity(n);
    for (i, h, file) in built {
        if let Some(file) = file {
            metadata.insert(name.part_path(i), Superblock::inline_part_value(&file));
        }
        out.objects += h.objects.len() as u64;
        out.size += h.size;
        out.usize += h.usize;
        headers.push(h);
    }
    let detached = load_commitmeta(repo, &to)?;
    if !detached.is_empty() {
        metadata.insert(
            name.commitmeta_key(),
            Value::Other {
                typestr: "a{sv}".into(),
                data: detached.serialize(),
            },
        );
    }
    let sb = Superblock {
        metadata,
        timestamp: match opts.timestamp {
            Some(t) => t,
            None => crate::store::commit::default_timestamp()?,
        },
        from,
        to,
        commit,
        recurse: Vec::new(),
        parts: headers,
        fallbacks: planned.fallbacks,
        endianness: Endianness::NATIVE,
        endianness_guessed: false,
    };
    let mut bytes = sb.serialize();
    if !opts.keys.is_empty() {
        let mut sigs = Metadata::new();
        for k in &opts.keys {
            k.append_signature(&bytes, &mut sigs, &format!("delta {name}"))?;
        }
        bytes = SignedSuperblock {
            superblock: &bytes,
            signatures: sigs,
        }
        .serialize();
    }
    if bytes.len() > crate::ostree::delta::superblock::MAX_SUPERBLOCK_SIZE {
        return Err(DeltaError::SuperblockTooLarge(*name));
    }
    out.superblock_size = bytes.len() as u64;
    if fsync {
        rustix::fs::fsync(dir).map_err(|e| PublishIo::new(dir_path, e.into()))?;
    }
    crate::failpoint::crash("static-delta:parts-written");
    let tmp = write_tmp(dir, dir_path, "superblock", &bytes, fsync)?;
    rustix::fs::renameat(dir, tmp.as_str(), dir, "superblock")
        .map_err(|e| PublishIo::new(dir_path.join("superblock"), e.into()))?;
    if fsync {
        rustix::fs::fsync(dir).map_err(|e| PublishIo::new(dir_path, e.into()))?;
    }
    install(repo, name, &work.rel(), fsync)?;
    progress.report(Event::Finish {
        phase: Phase::GenerateDelta,
    });
    Ok(out)
}
