//! Applying static deltas (§8.5) into the store.
//!
//! A delta is trusted only as far as it is checked: the superblock's
//! commit must hash to the commit asked for, and every part is checked
//! against its header (size, SHA-256) before anything of it is applied;
//! each object it produces is verified against its name by the store's
//! transaction before it becomes visible ([`apply`]); a compressed part is
//! held to the exact size its xz stream declares ([`payload`]). Parts are
//! applied by up to two workers at once (the machine's cores), each
//! fetching its next part while the other applies: with `jobs` = 2 a part
//! is always downloading while another is applied.
//!
//! Memory stays bounded whatever the delta's size: the superblock (up to
//! 128 MiB of inline parts), parts and large payloads live in scratch
//! files in the transaction's staging directory and are read by range
//! ([`superblock_file`], [`payload`]); objects are streamed into the store; the one
//! large allocation, an xz decoder's dictionary (32 MiB for what libostree
//! writes, touched only as far as the output goes), is shared out by a
//! [`MemoryBudget`] so that two big parts are not inflated at once.
//!
//! Interrupted or failed, a delta leaves the store consistent: objects are
//! only ever published complete and verified (the caller decides whether
//! the transaction's verified objects are kept, see `pull`), the commit
//! stays marked partial until its whole tree is present, and a re-run
//! skips every part whose objects are all present.

pub mod apply;
pub mod error;
pub(crate) mod payload;
pub(crate) mod pull;
pub(crate) mod superblock_file;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

pub use apply::PartStats;
pub use error::{DeltaFailure, DeltaPullError, PartError};
use payload::{PartData, PartFile};
pub use pull::DeltaUse;

use crate::ostree::delta::{DeltaName, PartHeader, SignedSuperblock, Superblock, superblock};
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::progress::{Event, Phase, Progress};
use crate::store::{Repo, StoreError, Transaction};

/// Bytes of xz dictionaries (and in-memory payloads) in use at once.
/// One part is always allowed, however large its dictionary.
pub const DECOMPRESSION_BUDGET: u64 = 40 << 20;

/// Tunes the C library's allocator (glibc's) for a process whose work is
/// a pull; the library never calls it, `arbor pull` does. Parts are
/// decoded one at a time, each with a 32 MiB xz dictionary that glibc
/// would map afresh for every part and fault in page by page again; kept
/// in the heap, the next part reuses it. On a debootstrap scratch delta:
/// 10,700 page faults instead of 42,000, 5 % of the pull's time, the same
/// peak RSS (one dictionary was resident at a time anyway). Process-wide:
/// for a program that does nothing else meanwhile.
pub fn reuse_xz_dictionaries() {
    crate::fs::malloc_keep(64 << 20, 128 << 20);
}

/// Shares [`DECOMPRESSION_BUDGET`] among the workers.
pub struct MemoryBudget {
    used: Mutex<u64>,
    freed: Condvar,
    limit: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        }
    }

    /// Waits until `n` bytes fit (or nothing else is in use).
    pub fn acquire(&self, n: u64) -> BudgetGuard<'_> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + n > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
        BudgetGuard { budget: self, n }
    }
}

pub struct BudgetGuard<'b> {
    budget: &'b MemoryBudget,
    n: u64,
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.n;
        drop(used);
        self.budget.freed.notify_all();
    }
}

/// What applying a delta's parts did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PartsOutcome {
    pub parts_applied: usize,
    /// Parts whose objects were all present already (not fetched).
    pub parts_skipped: usize,
    pub objects_written: u64,
    pub objects_present: u64,
    /// Bytes of part files fetched or read.
    pub part_bytes: u64,
}

/// Where a worker gets a part file that is not inline.
pub(crate) type FetchPart<'f> =
    dyn Fn(usize, &PartHeader) -> Result<PartFile, PartError> + Sync + 'f;

/// A superblock's inline parts: ranges of its file.
pub(crate) struct InlineParts<'f> {
    pub file: &'f File,
    pub ranges: &'f std::collections::BTreeMap<usize, std::ops::Range<u64>>,
}

impl InlineParts<'_> {
    /// Inline part `i`, read from the superblock's file where it lies.
    fn get(&self, i: usize) -> Result<Option<PartFile>, PartError> {
        let Some(r) = self.ranges.get(&i) else {
            return Ok(None);
        };
        Ok(Some(PartFile {
            file: self.file.try_clone().map_err(PartError::Io)?,
            start: r.start,
            len: r.end - r.start,
        }))
    }
}

/// Whether every object a part creates is present already.
fn have_all(txn: &Transaction<'_>, h: &PartHeader) -> Result<bool, StoreError> {
    for o in &h.objects {
        if !txn.has_object(o)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies every part of `sb` into `txn` with up to `jobs` workers.
/// `fetch` gets part files that are not inline (checked by the caller or
/// by [`payload::receive_part`]).
/// Parts with `skip[i]` set are left out; `on_part` sees the running
/// totals after each part.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_parts(
    txn: &Transaction<'_>,
    sb: &Superblock,
    inline: &InlineParts<'_>,
    fetch: &FetchPart<'_>,
    skip: &[bool],
    jobs: usize,
    interrupt: &AtomicBool,
    on_part: &(dyn Fn(&PartsOutcome) + Sync),
) -> Result<PartsOutcome, DeltaPullError> {
    let name = sb.name();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let budget = MemoryBudget::new(DECOMPRESSION_BUDGET);
    let outcome = Mutex::new(PartsOutcome::default());
    let first_error: Mutex<Option<DeltaPullError>> = Mutex::new(None);
    let workers = jobs.clamp(1, 2).min(sb.parts.len().max(1));
    let worker = || {
        loop {
            if failed.load(Ordering::Relaxed) {
                return;
            }
            if interrupt.load(Ordering::Relaxed) {
                let e = DeltaPullError::new(name, DeltaFailure::Interrupted);
                record(&first_error, &failed, e);
                return;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(h) = sb.parts.get(i) else { return };
            if skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            match apply_one(txn, inline, i, h, fetch, &budget, interrupt) {
                Ok(None) => {
                    let mut o = lock(&outcome);
                    o.parts_skipped += 1;
                    on_part(&o);
                }
                Ok(Some((stats, bytes))) => {
                    let mut o = lock(&outcome);
                    o.parts_applied += 1;
                    o.objects_written += stats.written;
                    o.objects_present += stats.present;
                    o.part_bytes += bytes;
                    on_part(&o);
                }
                Err(PartError::Interrupted) => {
                    let e = DeltaPullError::new(name, DeltaFailure::Interrupted);
                    record(&first_error, &failed, e);
                    return;
                }
                Err(e) => {
                    record(&first_error, &failed, DeltaPullError::part(name, i, e));
                    return;
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(worker);
        }
        worker();
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(outcome.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(slot: &Mutex<Option<DeltaPullError>>, failed: &AtomicBool, e: DeltaPullError) {
    let mut s = lock(slot);
    if s.is_none() {
        *s = Some(e);
    }
    failed.store(true, Ordering::Relaxed);
}

/// One part: skipped when all its objects are present (`None`), else
/// fetched (unless inline), opened and executed.
fn apply_one(
    txn: &Transaction<'_>,
    inline: &InlineParts<'_>,
    i: usize,
    h: &PartHeader,
    fetch: &FetchPart<'_>,
    budget: &MemoryBudget,
    interrupt: &AtomicBool,
) -> Result<Option<(PartStats, u64)>, PartError> {
    if have_all(txn, h)? {
        return Ok(None);
    }
    // Inline parts are not checksummed by libostree (the superblock that
    // carries them is); their objects are verified all the same.
    let (file, bytes) = match inline.get(i)? {
        Some(f) => (f, 0),
        None => (fetch(i, h)?, h.size),
    };
    let data: PartData = payload::open_payload(txn, file, h, budget, interrupt)?;
    let stats = apply::execute_part(txn, &h.objects, &data, interrupt)?;
    Ok(Some((stats, bytes)))
}

/// Reads a superblock file, unwrapping a signed one. Returns the inner
/// superblock's bytes and, if it was signed, the wrapper.
pub fn split_signed(
    data: &[u8],
) -> Result<(&[u8], Option<SignedSuperblock<'_>>), crate::ostree::delta::DeltaError> {
    if superblock::is_signed(data) {
        let s = SignedSuperblock::parse(data)?;
        Ok((s.superblock, Some(s)))
    } else {
        Ok((data, None))
    }
}

/// Checks a parsed superblock is the delta `name` and carries its commit.
pub fn check_superblock(name: DeltaName, sb: &Superblock) -> Result<(), DeltaPullError> {
    let fail = |kind| Err(DeltaPullError::new(name, kind));
    if sb.name() != name {
        return fail(DeltaFailure::WrongDelta { found: sb.name() });
    }
    let actual = sb.commit.checksum();
    if actual != name.to {
        return fail(DeltaFailure::WrongCommit { actual });
    }
    // libostree refuses these too ("Found metadata object as fallback").
    if sb
        .fallbacks
        .iter()
        .any(|f| f.object.objtype != ObjectType::File)
    {
        return fail(DeltaFailure::Unsupported(
            "a fallback object is not a content object",
        ));
    }
    Ok(())
}

/// How [`apply_offline`] works.
#[derive(Clone, Debug)]
pub struct OfflineOptions {
    /// Parts applied at once (at most 2 are used: the machine's cores).
    pub jobs: usize,
}

impl Default for OfflineOptions {
    fn default() -> Self {
        OfflineOptions { jobs: 2 }
    }
}

/// What [`apply_offline`] did.
#[derive(Debug, Clone)]
pub struct OfflineOutcome {
    pub delta: DeltaName,
    pub parts: PartsOutcome,
    /// The commit's whole tree is present (it is no longer partial).
    pub complete: bool,
}

/// Applies a delta from a directory holding its `superblock` and parts,
/// as `ostree static-delta apply-offline` does: the delta's FROM commit
/// must be in the store; deltas with fallback objects need a pull.
/// No ref is written.
///
/// Progress: [`Phase::ApplyDelta`] in parts. When `interrupt` is set it
/// stops between operations; the objects verified so far are kept.
pub fn apply_offline(
    repo: &Repo,
    dir: &Path,
    opts: &OfflineOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<OfflineOutcome, DeltaPullError> {
    let sb_path = dir.join("superblock");
    // The name is only known once parsed; errors before that use a
    // placeholder naming nothing.
    let unknown = DeltaName::scratch(Checksum::from_array([0; 32]));
    let read_err = |delta, path: &Path, source| {
        DeltaPullError::new(
            delta,
            DeltaFailure::Read {
                path: path.to_path_buf(),
                source,
            },
        )
    };
    let file = File::open(&sb_path).map_err(|e| read_err(unknown, &sb_path, e))?;
    let no = AtomicBool::new(false);
    let sbf = superblock_file::SuperblockFile::receive_in_place(file, &no)
        .and_then(|f| f.load().map(|l| (f, l)));
    let (sbf, loaded) = sbf.map_err(|e| match e {
        superblock_file::SuperblockFileError::Io(e) => read_err(unknown, &sb_path, e),
        e => DeltaPullError::new(unknown, DeltaFailure::from(e)),
    })?;
    let sb = loaded.sb;
    let name = sb.name();
    check_superblock(name, &sb)?;
    if !sb.fallbacks.is_empty() {
        return Err(DeltaPullError::new(
            name,
            DeltaFailure::Unsupported("it has fallback objects, which only a pull can fetch"),
        ));
    }
    let store_err = |e| DeltaPullError::new(name, DeltaFailure::Store(e));
    if let Some(from) = name.from
        && !repo
            .has_object(&ObjectName::new(from, ObjectType::Commit))
            .map_err(store_err)?
    {
        return Err(DeltaPullError::new(
            name,
            DeltaFailure::Unsupported("its FROM commit is not in the store"),
        ));
    }
    let txn = Transaction::begin(repo).map_err(store_err)?;
    write_commit(&txn, &sb).map_err(store_err)?;
    let fetch = |i: usize, h: &PartHeader| -> Result<PartFile, PartError> {
        let path = dir.join(i.to_string());
        let file = File::open(&path).map_err(PartError::Io)?;
        payload::receive_part(&txn, file, h, &path.display().to_string(), interrupt)
    };
    let skip = vec![false; sb.parts.len()];
    let total = Some(sb.parts.len() as u64);
    progress.report(Event::Start {
        phase: Phase::ApplyDelta,
        total,
    });
    let on_part = |o: &PartsOutcome| {
        progress.report(Event::Advance {
            phase: Phase::ApplyDelta,
            done: (o.parts_applied + o.parts_skipped) as u64,
            total,
            bytes: o.part_bytes,
        })
    };
    let inline = InlineParts {
        file: &sbf.file,
        ranges: &loaded.inline,
    };
    let applied = apply_parts(
        &txn, &sb, &inline, &fetch, &skip, opts.jobs, interrupt, &on_part,
    );
    progress.report(Event::Finish {
        phase: Phase::ApplyDelta,
    });
    let parts = match applied {
        Ok(p) => p,
        Err(e) => {
            // Verified objects are kept, so a re-run does less.
            let _ = txn.publish_objects_only();
            return Err(e);
        }
    };
    let complete = tree_complete(&txn, &sb.commit).map_err(store_err)?;
    txn.commit().map_err(store_err)?;
    if complete {
        repo.clear_commit_partial(&name.to).map_err(store_err)?;
    }
    Ok(OfflineOutcome {
        delta: name,
        parts,
        complete,
    })
}

/// Writes the target commit and its detached metadata (from the
/// superblock) unless present, marking it partial first.
pub(crate) fn write_commit(txn: &Transaction<'_>, sb: &Superblock) -> Result<bool, StoreError> {
    let name = ObjectName::new(sb.to, ObjectType::Commit);
    if txn.has_object(&name)? {
        return Ok(false);
    }
    txn.repo().mark_commit_partial(&sb.to)?;
    if let Some(meta) = sb.commitmeta() {
        txn.write_commitmeta(sb.to, meta)?;
    }
    txn.write_metadata(ObjectType::Commit, &sb.commit.serialize(), Some(sb.to))?;
    Ok(true)
}

/// Whether every object of `commit`'s tree is present (in the store or
/// staged by `txn`).
pub(crate) fn tree_complete(
    txn: &Transaction<'_>,
    commit: &crate::ostree::Commit,
) -> Result<bool, StoreError> {
    let mut stack = vec![(commit.root_tree, commit.root_meta)];
    let mut seen = std::collections::HashSet::new();
    while let Some((tree, meta)) = stack.pop() {
        if !seen.insert(tree) {
            continue;
        }
        let tname = ObjectName::new(tree, ObjectType::DirTree);
        if !txn.has_object(&ObjectName::new(meta, ObjectType::DirMeta))?
            || !txn.has_object(&tname)?
        {
            return Ok(false);
        }
        let data = match txn.repo().load_metadata(&tname) {
            Ok(d) => d,
            Err(StoreError::MissingObject(_)) => txn.load_staged(&tname)?,
            Err(e) => return Err(e),
        };
        let dt =
            crate::ostree::DirTree::parse(&data).map_err(|source| StoreError::CorruptObject {
                object: tname,
                source,
            })?;
        for f in &dt.files {
            if !txn.has_object(&ObjectName::new(f.checksum, ObjectType::File))? {
                return Ok(false);
            }
        }
        stack.extend(dt.dirs.iter().map(|d| (d.tree, d.meta)));
    }
    Ok(true)
}

/// Fuzzing entry point (`fuzz/fuzz_targets/delta_execute.rs`): `data` as
/// a part file, received, opened and executed into a transaction of
/// `repo` that is then dropped (nothing becomes visible). The header
/// agrees with the file (size, SHA-256) and lists a fixed set of objects,
/// unless `data` starts with `S` and 8 bytes: then those are the size the
/// header declares (any u64) for the rest. Panics are the findings.
#[doc(hidden)]
pub fn fuzz_execute_part(repo: &Repo, data: &[u8]) {
    use crate::ostree::delta::fuzz::OBJECT_TYPES;
    let (size, file) = match data {
        [b'S', rest @ ..] if rest.len() >= 8 => {
            let (s, f) = rest.split_at(8);
            (u64::from_le_bytes(s.try_into().expect("8 bytes")), f)
        }
        _ => (data.len() as u64, data),
    };
    let objects: Vec<ObjectName> = OBJECT_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| ObjectName::new(Checksum::from_array([i as u8; 32]), *t))
        .collect();
    let header = PartHeader {
        version: 0,
        checksum: Checksum::digest(file),
        size,
        usize: 1 << 20,
        objects,
    };
    let Ok(txn) = Transaction::begin(repo) else {
        return;
    };
    let no = AtomicBool::new(false);
    let budget = MemoryBudget::new(DECOMPRESSION_BUDGET);
    let Ok(part) = payload::receive_part(&txn, file, &header, "fuzz input", &no) else {
        return;
    };
    let Ok(data) = payload::open_payload(&txn, part, &header, &budget, &no) else {
        return;
    };
    let _ = apply::execute_part(&txn, &header.objects, &data, &no);
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::ostree::delta::part::{Compression, PartPayload, encode_part_file};

    /// The fuzz body on a few inputs: a valid part writing nothing that
    /// matches, garbage, hostile declared sizes.
    #[test]
    fn execute_part_fuzz_body() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), crate::store::RepoMode::Archive).unwrap();
        let payload = PartPayload {
            modes: vec![],
            xattrs: vec![],
            blob: b"hello",
            ops: b"",
        }
        .serialize();
        for c in [Compression::None, Compression::Xz] {
            fuzz_execute_part(&repo, &encode_part_file(&payload, c));
        }
        for size in [0u64, 1, 100, u64::MAX - 1, u64::MAX] {
            let mut d = vec![b'S'];
            d.extend_from_slice(&size.to_le_bytes());
            d.extend_from_slice(&encode_part_file(&payload, Compression::Xz));
            fuzz_execute_part(&repo, &d);
        }
        fuzz_execute_part(&repo, b"");
        fuzz_execute_part(&repo, b"x\xfd7zXZ\0garbage");
    }
}
