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
//!    ordinary `.filez`).
//! 3. **Lay out** the parts ([`super::layout`]), exactly, from sizes alone.
//! 4. **Build** the parts, in parallel: fill each blob from the objects,
//!    serialize the payload, xz-compress it (preset 8 and CRC64 as
//!    libostree, the dictionary sized to the payload), write the part.
//! 5. **Superblock** last: caller-free metadata (`ostree.endianness`, inline
//!    parts, the target's detached metadata), the TO commit, part headers
//!    and fallbacks, optionally wrapped and signed.
//!
//! Nothing half-written is ever visible: the delta is built in a private
//! directory under `tmp/` (superblock last) and moved into `deltas/` whole,
//! exchanged with an older delta of the same name, which stays valid until
//! then; on failure or interruption the private directory is removed. Memory stays bounded: at most
//! [`DeltaOptions::jobs`] objects or parts are in memory at a time, and
//! pair analysis shares a byte budget.
//!
//! The summary and delta indexes are not touched: run `arbor summary -u`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType};
use thiserror::Error;

use crate::ostree::delta::DeltaName;
use crate::ostree::delta::part::{Compression, FileMode, PartPayload, XZ_PRESET};
use crate::ostree::delta::superblock::PART_VERSION;
use crate::ostree::delta::superblock::{
    ENDIANNESS_KEY, Endianness, Fallback, PartHeader, SignedSuperblock, Superblock,
};
use crate::ostree::{Checksum, Commit, FileHeader, Metadata, ObjectName, ObjectType, Value};
use crate::progress::{self, Event, Phase, Progress};
use crate::store::{Repo, StoreError};

use super::commit_sign::load_commitmeta;
use super::deltas::has_delta;
use super::files::{PublishIo, mkdir_p, write_tmp};
use super::layout::{ContentMeta, Layout, PartRecipe, Segment};
use super::plan::{ContentInfo, content_infos, similar_objects, walk};
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
    /// Superblock timestamp, seconds since the epoch [default: now].
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
    #[error("compressing part {part}: {reason}")]
    Compress { part: usize, reason: String },
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

    let jobs = opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("delta-{i}"))
        .build()
        .map_err(|e| PublishIo::new(repo.path(), std::io::Error::other(e.to_string())))?;

    // Built in a private directory of tmp/, moved into place whole.
    let build_rel = format!("tmp/{}", super::files::tmp_name("delta"));
    let result = pool.install(|| {
        let parts = plan_and_layout(repo, from, to, opts, progress, interrupt)?;
        write_delta(
            repo, &name, &build_rel, from, to, opts, parts, progress, interrupt,
        )
    });
    // On success it holds the replaced delta, if any; on failure, whatever
    // was written.
    let _ = crate::fs::remove_tree(repo.dir(), &build_rel);
    result.map(|mut o| {
        o.name = Some(name);
        o
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

/// How a new regular file travels.
enum Method {
    Rollsum(Checksum, rollsum::Matches),
    Bsdiff(Checksum, Vec<u8>),
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

/// Reads a content object's data whole (a symlink's is empty) and checks
/// it against its checksum: a corrupt object in the repository must fail
/// here, naming it, not on every client that applies the delta.
fn read_data(repo: &Repo, c: &Checksum) -> Result<Vec<u8>, StoreError> {
    read_object(repo, c).map(|(_, data)| data)
}

/// [`read_data`], with the object's header.
fn read_object(repo: &Repo, c: &Checksum) -> Result<(FileHeader, Vec<u8>), StoreError> {
    let obj = repo.open_content(c)?;
    let name = ObjectName::new(*c, ObjectType::File);
    let bad = |reason: String| StoreError::BadObject {
        object: name,
        reason,
    };
    let mut data = Vec::with_capacity(obj.size.min(1 << 30) as usize);
    obj.reader
        .take(obj.size)
        .read_to_end(&mut data)
        .map_err(|e| bad(e.to_string()))?;
    if data.len() as u64 != obj.size {
        return Err(bad(format!("{} bytes instead of {}", data.len(), obj.size)));
    }
    let actual = crate::store::objects::hash_content(&obj.header, &data[..])
        .map_err(|e| bad(e.to_string()))?;
    if actual != *c {
        return Err(StoreError::ChecksumMismatch {
            object: name,
            actual,
        });
    }
    Ok((obj.header, data))
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
        wanted.extend(f.content.iter().map(|(c, _)| *c));
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
            // bsdiff's suffix array takes 16 bytes per old byte.
            let cost = ts + fs + if try_bsdiff { 17 * fs + ts } else { 0 };
            let _mem = budget.take(cost);
            let old = read_data(repo, f)?;
            let new = read_data(repo, t)?;
            let m = rollsum::compute(&old, &new);
            if m.worth_it() {
                return Ok(Some((*t, Method::Rollsum(*f, m))));
            }
            if try_bsdiff {
                progress::check(interrupt)?;
                let mut patch = Vec::new();
                bsdiff::diff(&old, &new, &mut patch)
                    .map_err(|source| DeltaError::Bsdiff { object: *t, source })?;
                return Ok(Some((*t, Method::Bsdiff(*f, patch))));
            }
            Ok(None)
        })
        .collect::<Result<_, _>>()?;
    let mut methods: HashMap<Checksum, Method> = methods.into_iter().flatten().collect();

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
        // The patch moves into the layout; the entry stays, so the file is
        // not also sent whole below.
        if let Some(Method::Bsdiff(f, patch)) = methods.get_mut(c) {
            let i = info(c);
            layout.add_bsdiff(*c, &content_meta(i), i.size, *f, std::mem::take(patch));
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

/// A built part: its header and file bytes.
struct BuiltPart {
    header: PartHeader,
    file: Vec<u8>,
}

/// Fills a part's blob from its segments.
fn fill_blob(repo: &Repo, p: &PartRecipe) -> Result<Vec<u8>, DeltaError> {
    let mut blob = Vec::with_capacity(p.blob_len as usize);
    // Rollsum literals come from one object in several pieces: keep the
    // last one read.
    let mut cached: Option<(Checksum, Vec<u8>)> = None;
    for s in &p.segments {
        match s {
            Segment::Meta(name) => {
                let data = repo.load_verified_metadata(name)?;
                blob.extend_from_slice(&data);
            }
            Segment::Content(c) => {
                let (header, data) = read_object(repo, c)?;
                if header.is_symlink() {
                    blob.extend_from_slice(header.symlink_target.as_bytes());
                } else {
                    blob.extend_from_slice(&data);
                }
            }
            Segment::ContentRange { object, start, len } => {
                if cached.as_ref().is_none_or(|(c, _)| c != object) {
                    cached = Some((*object, read_data(repo, object)?));
                }
                let data = &cached.as_ref().expect("just set").1;
                let (s, e) = (*start as usize, (*start + *len) as usize);
                let range = data.get(s..e).ok_or_else(|| StoreError::BadObject {
                    object: ObjectName::new(*object, ObjectType::File),
                    reason: "changed size while the delta was made".into(),
                })?;
                blob.extend_from_slice(range);
            }
            Segment::Bytes(b) => blob.extend_from_slice(b),
        }
    }
    debug_assert_eq!(blob.len() as u64, p.blob_len);
    Ok(blob)
}

/// Smallest xz block of a part compressed on several threads: smaller
/// blocks lose too much of the dictionary.
const MIN_XZ_BLOCK: u64 = 8 << 20;

/// xz as libostree writes parts (preset 8, CRC64), with the dictionary no
/// larger than the payload (or block) needs: the same compression, a
/// fraction of the encoder's memory and setup time for small parts. With
/// `threads` > 1 the payload is cut into that many blocks (at least
/// [`MIN_XZ_BLOCK`] each) compressed in parallel; readers (libostree,
/// arbor) decode multi-block streams like any other.
fn xz_compress(
    part: usize,
    payload: &[u8],
    threads: usize,
    interrupt: &AtomicBool,
) -> Result<Vec<u8>, DeltaError> {
    use liblzma::stream::{Action, Check, Filters, LzmaOptions, MtStreamBuilder, Status, Stream};
    let err = |reason: String| DeltaError::Compress { part, reason };
    let len = payload.len() as u64;
    let block = if threads > 1 {
        len.div_ceil(threads as u64).max(MIN_XZ_BLOCK)
    } else {
        len
    };
    let mut lz = LzmaOptions::new_preset(XZ_PRESET).map_err(|e| err(e.to_string()))?;
    let preset_dict = 32u64 << 20;
    lz.dict_size(
        block
            .clamp(4096, preset_dict)
            .next_power_of_two()
            .min(preset_dict) as u32,
    );
    let mut filters = Filters::new();
    filters.lzma2(&lz);
    let mut stream = if block < len {
        MtStreamBuilder::new()
            .threads(threads.min(64) as u32)
            .block_size(block)
            .filters(filters)
            .check(Check::Crc64)
            .encoder()
    } else {
        Stream::new_stream_encoder(&filters, Check::Crc64)
    }
    .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() / 3 + 1024);
    out.push(Compression::Xz.byte());
    let mut input = payload;
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(1 << 20);
        }
        // preset 8 compresses a few MB/s: feed 1 MiB at a time and check
        // the interrupt flag between them.
        progress::check(interrupt)?;
        let before = stream.total_in();
        let action = if input.is_empty() {
            Action::Finish
        } else {
            Action::Run
        };
        let chunk = &input[..input.len().min(1 << 20)];
        let status = stream
            .process_vec(chunk, &mut out, action)
            .map_err(|e| err(e.to_string()))?;
        input = &input[(stream.total_in() - before) as usize..];
        if status == Status::StreamEnd {
            break;
        }
    }
    Ok(out)
}

fn build_part(
    repo: &Repo,
    i: usize,
    p: &PartRecipe,
    threads: usize,
    interrupt: &AtomicBool,
) -> Result<BuiltPart, DeltaError> {
    let blob = fill_blob(repo, p)?;
    let payload = PartPayload {
        modes: p.modes.clone(),
        xattrs: p.xattrs.clone(),
        blob: &blob,
        ops: &p.ops,
    }
    .serialize();
    drop(blob);
    let file = xz_compress(i, &payload, threads, interrupt)?;
    Ok(BuiltPart {
        header: PartHeader {
            version: PART_VERSION,
            checksum: Checksum::digest(&file),
            size: file.len() as u64,
            usize: p.usize,
            objects: p.objects.clone(),
        },
        file,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_delta(
    repo: &Repo,
    name: &DeltaName,
    build_rel: &str,
    from: Option<Checksum>,
    to: Checksum,
    opts: &DeltaOptions,
    planned: Planned,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<DeltaOutcome, DeltaError> {
    let fsync = repo.fsync_enabled();
    let dir_path = repo.path().join(build_rel);
    rustix::fs::mkdirat(
        repo.dir(),
        build_rel,
        rustix::fs::Mode::from_raw_mode(0o755),
    )
    .map_err(|e| PublishIo::new(&dir_path, e.into()))?;
    // The umask may have taken bits off: served directories are readable.
    let dir =
        crate::fs::open_dir(repo.dir(), build_rel).map_err(|e| PublishIo::new(&dir_path, e))?;
    let _ = rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(0o755));
    let n = planned.parts.len();
    progress.report(Event::Start {
        phase: Phase::GenerateDelta,
        total: Some(n as u64),
    });
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let finish = |i: usize, part: BuiltPart| -> Result<_, DeltaError> {
        let keep = if opts.inline {
            Some(part.file)
        } else {
            let tmp = write_tmp(&dir, &dir_path, &i.to_string(), &part.file, fsync)?;
            rustix::fs::renameat(&dir, tmp.as_str(), &dir, i.to_string().as_str())
                .map_err(|e| PublishIo::new(dir_path.join(i.to_string()), e.into()))?;
            None
        };
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        let b = bytes.fetch_add(part.header.size, Ordering::Relaxed) + part.header.size;
        progress.report(Event::Advance {
            phase: Phase::GenerateDelta,
            done: d,
            total: Some(n as u64),
            bytes: b,
        });
        Ok((i, part.header, keep))
    };
    // Small parts are compressed one per core; big ones one at a time, each
    // split into one xz block per core (liblzma's threaded encoder), so no
    // core idles while the last big parts finish.
    let threads = rayon::current_num_threads().max(1);
    let (big, small): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|i| threads > 1 && planned.parts[*i].blob_len >= 2 * MIN_XZ_BLOCK);
    let mut built: Vec<(usize, PartHeader, Option<Vec<u8>>)> = small
        .par_iter()
        .map(|&i| {
            progress::check(interrupt)?;
            finish(i, build_part(repo, i, &planned.parts[i], 1, interrupt)?)
        })
        .collect::<Result<_, _>>()?;
    for i in big {
        progress::check(interrupt)?;
        let part = build_part(repo, i, &planned.parts[i], threads, interrupt)?;
        built.push(finish(i, part)?);
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
        rustix::fs::fsync(&dir).map_err(|e| PublishIo::new(&dir_path, e.into()))?;
    }
    let tmp = write_tmp(&dir, &dir_path, "superblock", &bytes, fsync)?;
    rustix::fs::renameat(&dir, tmp.as_str(), &dir, "superblock")
        .map_err(|e| PublishIo::new(dir_path.join("superblock"), e.into()))?;
    if fsync {
        rustix::fs::fsync(&dir).map_err(|e| PublishIo::new(&dir_path, e.into()))?;
    }
    install(repo, name, build_rel, fsync)?;
    progress.report(Event::Finish {
        phase: Phase::GenerateDelta,
    });
    Ok(out)
}
