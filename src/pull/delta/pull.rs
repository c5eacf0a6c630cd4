//! Using a source's static deltas in a pull (§9.2).
//!
//! Discovery, per wanted commit TO not already complete here:
//! * the summary's `ostree.static-deltas`; when that offers no delta from a
//!   commit present here and the summary says `ostree.summary.indexed-deltas`
//!   (every summary ostree ≥ 2020.8 writes), `delta-indexes/…/TO.index`;
//! * without a summary, the index, and failing that the superblocks
//!   themselves, probed: from the ref's current commit, then from scratch.
//!   libostree (`initiate_request`) probes one superblock only (from the
//!   ref's commit when it is here and complete, else from scratch) and
//!   reads `delta-indexes/` only when the remote's `config` says
//!   `core.indexed-deltas=true`; arbor's extra requests are small 404s, and
//!   a scratch delta's parts whose objects are mostly here are left to the
//!   object walk anyway (below).
//!
//! A delta file missing on the server (404: the superblock, or a part)
//! makes the pull fetch objects instead, keeping what the delta verified
//! (libostree does so for a missing superblock, and fails on a missing
//! part); any other failure, above all a corrupt or hostile delta, fails
//! the pull, as in libostree.
//!
//! Choice: a delta from a complete commit present here (the ref's current
//! commit first, else the newest), else a from-scratch delta. Then, part by
//! part, whichever transfers fewer bytes: a part whose objects are nearly
//! all present already (a `--localcache-repo`, an older commit) is left
//! out and its few missing objects are fetched one by one by the object
//! walk that completes every pull. Each decision is reported as a
//! [`Event::Note`] (what `arbor pull -v` prints).
//!
//! Trust: the superblock must hash to the digest the summary or index
//! lists (a listed digest is mandatory when the remote verifies its
//! summary); a signed superblock's signatures are checked with the
//! remote's ed25519 keys when it verifies with them; the commit it carries
//! must hash to TO, and its signatures (against the detached metadata the
//! superblock carries) are checked before anything is written or any part
//! fetched. `delta-indexes/` are not signed: when the remote verifies its
//! summary, a delta only an index lists is used only if its superblock's
//! signature or the commit's signatures could be checked (libostree trusts
//! the index's digest alone); else the pull fetches objects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{DeltaFailure, DeltaPullError, PartError};
use super::payload::{PartFile, receive_part};
use super::superblock_file::SuperblockFile;
use super::{InlineParts, PartsOutcome, apply_parts, check_superblock, write_commit};
use crate::ostree::delta::index::INDEXED_DELTAS_KEY;
use crate::ostree::delta::superblock::MAX_SUPERBLOCK_SIZE;
use crate::ostree::delta::{DeltaList, DeltaName, PartHeader, Superblock};
use crate::ostree::{Checksum, ObjectName, ObjectType, Summary, Value};
use crate::progress::{Event, Phase, Progress};
use crate::pull::source::{FetchError, ObjectSource};
use crate::pull::{PullError, PullOptions, RemoteVerify, StaticDeltas};
use crate::store::{Repo, Transaction};

/// Request overhead counted per object when comparing a part with
/// fetching its missing objects one by one (request and response headers).
pub const OBJECT_REQUEST_OVERHEAD: u64 = 600;

/// A delta a pull used.
#[derive(Debug, Clone)]
pub struct DeltaUse {
    pub delta: DeltaName,
    pub parts: PartsOutcome,
    /// Parts left out because fetching their missing objects was cheaper.
    pub parts_left_to_objects: usize,
    /// Fallback objects (fetched alongside the parts).
    pub fallbacks: usize,
    /// Whether the superblock carried the commit's detached metadata
    /// (written with the commit, after its signatures were checked).
    pub carried_commitmeta: bool,
    /// Else the source's detached metadata of the commit, fetched while
    /// the parts were applied (`None` if that failed: fetched again).
    pub(crate) fetched_commitmeta: Option<Option<Vec<u8>>>,
}

/// Where a delta's expected superblock digest came from.
#[derive(Clone, Copy)]
enum Listed {
    Summary(Checksum),
    Index(Checksum),
    /// Found by probing: nothing to check it against.
    Probed,
}

pub(crate) struct DeltaPull<'a, 'r> {
    pub repo: &'r Repo,
    pub txn: &'a Transaction<'r>,
    pub source: &'a dyn ObjectSource,
    pub opts: &'a PullOptions,
    pub verifiers: &'a [RemoteVerify],
    pub summary: Option<&'a Summary>,
    /// `--localcache-repo`s: their objects cost no transfer.
    pub caches: &'a [Repo],
    pub progress: &'a dyn Progress,
    pub interrupt: &'a AtomicBool,
}

impl DeltaPull<'_, '_> {
    fn note(&self, text: String) {
        self.progress.report(Event::Note(&text));
    }

    /// A complete (not partial) commit present here.
    fn complete_here(&self, c: &Checksum) -> Result<bool, PullError> {
        Ok(self
            .repo
            .has_object(&ObjectName::new(*c, ObjectType::Commit))?
            && !self.repo.is_commit_partial(c)?)
    }

    /// Brings commit `to` in through a static delta when the source has a
    /// usable one. `local`: the commit the pulled ref points at here.
    /// `Ok(None)`: no delta was used; the object walk fetches everything.
    pub fn pull_commit(
        &self,
        to: Checksum,
        local: Option<Checksum>,
    ) -> Result<Option<DeltaUse>, PullError> {
        let required = self.opts.static_deltas == StaticDeltas::Required;
        if self.complete_here(&to)? {
            return Ok(None);
        }
        let found = match self.find(to, local) {
            Err(PullError::Delta(d)) if !required && d.is_missing_file() => {
                self.note(format!("{d}; fetching objects instead"));
                return Ok(None);
            }
            r => r?,
        };
        let Some((name, listed, sbf)) = found else {
            if required {
                return Err(PullError::DeltaRequired {
                    from: local,
                    to,
                    source_desc: self.source.describe(),
                });
            }
            self.note(format!(
                "no static delta to {to} at {}: fetching objects",
                self.source.describe()
            ));
            return Ok(None);
        };
        match self.apply(name, listed, sbf) {
            // A file of the delta missing on the server (a delta published
            // incompletely, or removed meanwhile): the objects are fetched
            // instead, keeping what the delta verified. libostree does so
            // for a missing superblock only, and fails the pull on a
            // missing part. Never after the delta proved corrupt or
            // hostile (checksums, format), nor with --require-static-deltas.
            Err(PullError::Delta(d)) if !required && d.is_missing_file() => {
                self.note(format!("{d}; fetching objects instead"));
                Ok(None)
            }
            r => r,
        }
    }

    /// The deltas the summary lists (empty without one).
    fn summary_deltas(&self) -> Result<DeltaList, PullError> {
        match self.summary {
            Some(s) => DeltaList::from_metadata(&s.metadata).map_err(|e| PullError::BadDeltaList {
                listed_in: format!("summary of {}", self.source.describe()),
                source: e,
            }),
            None => Ok(DeltaList::default()),
        }
    }

    /// The deltas to `to` that `delta-indexes/` lists and could be used
    /// here (from scratch, or from a complete commit here). The index may
    /// be as large as a superblock (libostree's 128 MiB metadata limit):
    /// it is received into a scratch file and read entry by entry, only
    /// those deltas kept.
    fn index_deltas(&self, to: Checksum) -> Result<Option<DeltaList>, PullError> {
        use super::superblock_file::SuperblockFileError as E;
        crate::progress::check(self.interrupt)?;
        let rel = DeltaName::index_path(&to);
        let location = self.source.file_location(&rel);
        let Some(stream) = self.source.open_file(&rel).map_err(PullError::Fetch)? else {
            return Ok(None);
        };
        let bad = |e: E| match e {
            E::Format(source) => PullError::BadDeltaList {
                listed_in: location.clone(),
                source,
            },
            E::Io(e) => PullError::Fetch(FetchError::from_io(e).unwrap_or_else(|e| {
                FetchError::fatal(&location, "reading the delta index failed").with_source(e)
            })),
            E::TooLarge => PullError::BadDeltaList {
                listed_in: location.clone(),
                source: crate::ostree::FormatError::TooLarge {
                    what: "delta index",
                    size: MAX_SUPERBLOCK_SIZE as u64 + 1,
                    max: MAX_SUPERBLOCK_SIZE as u64,
                }
                .into(),
            },
            E::Interrupted => PullError::Interrupted,
        };
        let file = self.txn.scratch_file()?;
        let index = SuperblockFile::receive(file, stream, self.interrupt).map_err(bad)?;
        let mut store_error = None;
        let deltas = index
            .index_deltas(|n| {
                if n.to != to {
                    return Ok(false);
                }
                let Some(from) = n.from else { return Ok(true) };
                match self.complete_here(&from) {
                    Ok(c) => Ok(c),
                    Err(e) => {
                        store_error.get_or_insert(e);
                        Ok(false)
                    }
                }
            })
            .map_err(bad)?;
        if let Some(e) = store_error {
            return Err(e);
        }
        Ok(Some(DeltaList(deltas)))
    }

    /// The best listed delta to `to`: from a complete commit here (the
    /// ref's first, else the newest), else from scratch.
    fn choose(
        &self,
        list: &DeltaList,
        to: Checksum,
        local: Option<Checksum>,
    ) -> Result<Option<DeltaName>, PullError> {
        let mut best: Option<(u64, DeltaName)> = None;
        let mut scratch = None;
        for name in list.ending_at(&to) {
            match name.from {
                None => scratch = Some(*name),
                Some(f) if self.complete_here(&f)? => {
                    let ts = if Some(f) == local {
                        u64::MAX
                    } else {
                        self.repo.load_commit(&f)?.timestamp
                    };
                    if best.is_none_or(|(t, _)| ts > t) {
                        best = Some((ts, *name));
                    }
                }
                Some(_) => {}
            }
        }
        Ok(best.map(|(_, n)| n).or(scratch))
    }

    /// Finds a delta to `to` and fetches its superblock.
    fn find(
        &self,
        to: Checksum,
        local: Option<Checksum>,
    ) -> Result<Option<(DeltaName, Listed, SuperblockFile)>, PullError> {
        let from_summary = self.summary_deltas()?;
        let mut chosen = self
            .choose(&from_summary, to, local)?
            .map(|n| (n, Listed::Summary(from_summary.digest(&n).expect("listed"))));
        let indexed = match self.summary {
            Some(s) => matches!(s.metadata.get(INDEXED_DELTAS_KEY), Some(Value::Bool(true))),
            None => true,
        };
        // The index may list more deltas than the summary (ostree lets a
        // summary leave them out); it is worth a request unless the summary
        // already offers one from a commit here.
        if indexed && chosen.is_none_or(|(n, _)| n.from.is_none()) {
            match self.index_deltas(to)? {
                Some(list) => {
                    if let Some(n) = self.choose(&list, to, local)?
                        && (chosen.is_none() || n.from.is_some())
                    {
                        chosen = Some((n, Listed::Index(list.digest(&n).expect("listed"))));
                    }
                }
                None if self.summary.is_none() => {
                    // libostree's legacy probe, for servers without a
                    // summary or indexes: from the ref's commit, then from
                    // scratch.
                    let mut probes = Vec::new();
                    if let Some(l) = local
                        && l != to
                        && self.complete_here(&l)?
                    {
                        probes.push(DeltaName::new(Some(l), to));
                    }
                    probes.push(DeltaName::scratch(to));
                    for p in probes {
                        if let Some(sbf) = self.fetch_superblock(p)? {
                            return Ok(Some((p, Listed::Probed, sbf)));
                        }
                    }
                }
                None => {}
            }
        }
        let Some((name, listed)) = chosen else {
            return Ok(None);
        };
        match self.fetch_superblock(name)? {
            Some(sbf) => Ok(Some((name, listed, sbf))),
            None => Err(DeltaPullError::new(
                name,
                DeltaFailure::SuperblockFetch(FetchError::not_found(
                    self.source.file_location(&name.superblock_path()),
                )),
            )
            .into()),
        }
    }

    /// The superblock, received into a scratch file (it may be as large
    /// as libostree allows, 128 MiB of inline parts: never held whole).
    fn fetch_superblock(&self, name: DeltaName) -> Result<Option<SuperblockFile>, PullError> {
        crate::progress::check(self.interrupt)?;
        let fail = |kind| -> PullError { DeltaPullError::new(name, kind).into() };
        let rel = name.superblock_path();
        let Some(stream) = self
            .source
            .open_file(&rel)
            .map_err(|e| fail(DeltaFailure::SuperblockFetch(e)))?
        else {
            return Ok(None);
        };
        let file = self
            .txn
            .scratch_file()
            .map_err(|e| fail(DeltaFailure::Store(e)))?;
        match SuperblockFile::receive(file, stream, self.interrupt) {
            Ok(f) => Ok(Some(f)),
            Err(super::superblock_file::SuperblockFileError::Io(e)) => {
                let location = self.source.file_location(&rel);
                let e = FetchError::from_io(e).unwrap_or_else(|e| {
                    FetchError::fatal(&location, "reading the superblock failed").with_source(e)
                });
                Err(fail(DeltaFailure::SuperblockFetch(e)))
            }
            Err(e) => Err(fail(DeltaFailure::from(e))),
        }
    }

    /// Checks the superblock and applies the delta. `Ok(None)`: the delta
    /// cannot be trusted enough to use; the object walk fetches everything.
    fn apply(
        &self,
        name: DeltaName,
        listed: Listed,
        sbf: SuperblockFile,
    ) -> Result<Option<DeltaUse>, PullError> {
        let fail = |kind| -> PullError { DeltaPullError::new(name, kind).into() };
        let actual = sbf.digest;
        let expected = match listed {
            Listed::Summary(d) => Some((d, "summary")),
            Listed::Index(d) => Some((d, "delta index")),
            Listed::Probed => None,
        };
        match expected {
            Some((expected, listed_in)) if expected != actual => {
                return Err(fail(DeltaFailure::SuperblockChecksum {
                    listed_in,
                    expected,
                    actual,
                }));
            }
            None if self.verifiers.iter().any(|v| v.summary) => {
                return Err(fail(DeltaFailure::Unsupported(
                    "the remote verifies its summary, but no summary or delta index lists this delta's checksum",
                )));
            }
            _ => {}
        }
        let loaded = sbf.load().map_err(|e| fail(DeltaFailure::from(e)))?;
        let mut signature_checked = false;
        if let Some(signatures) = &loaded.signatures {
            let sigs = signatures.serialize();
            let ed25519: Vec<_> = self
                .verifiers
                .iter()
                .filter(|v| v.keys.name() == "ed25519")
                .collect();
            if !ed25519.is_empty() {
                // The signatures cover the inner superblock whole.
                let inner = sbf
                    .read_inner(&loaded)
                    .map_err(|e| fail(DeltaFailure::SuperblockRead(e)))?;
                for v in ed25519 {
                    v.keys
                        .verify(&inner, Some(&sigs))
                        .map_err(|e| fail(DeltaFailure::SuperblockSignature(e)))?;
                    signature_checked = true;
                }
            }
        }
        let sb = &loaded.sb;
        check_superblock(name, sb)?;
        // A delta index is not signed: with a signed summary, a superblock
        // found through it alone is trusted only once something signed
        // vouches for what it carries beyond the commit (which hashes to
        // TO): its own signature, or the commit's signatures checked
        // against the detached metadata it carries (`verify_commit`). Else
        // anyone able to rewrite `delta-indexes/` could have forged
        // detached metadata stored, or objects outside the commit written.
        // libostree trusts the index's digest as if the summary listed it.
        if matches!(listed, Listed::Index(_))
            && self.verifiers.iter().any(|v| v.summary)
            && !signature_checked
            && !self.verifiers.iter().any(|v| v.commits)
        {
            let why = "only the unsigned delta index lists it, and neither its superblock nor the commit can be verified, while the remote verifies its summary";
            if self.opts.static_deltas == StaticDeltas::Required {
                return Err(fail(DeltaFailure::Unsupported(why)));
            }
            self.note(format!(
                "static delta {name} not used: {why}; fetching objects"
            ));
            return Ok(None);
        }
        self.verify_commit(sb)?;
        crate::progress::check(self.interrupt)?;

        // Part by part: the delta, or the missing objects one by one.
        let mut skip = vec![false; sb.parts.len()];
        let mut left_to_objects = 0;
        let mut needed_usize: u64 = 0;
        // Parts to download, in order.
        let mut to_fetch = Vec::new();
        for (i, h) in sb.parts.iter().enumerate() {
            if super::have_all(self.txn, h)? {
                continue;
            }
            let missing = self.missing(h)?;
            let n = h.objects.len() as u64;
            // Inline parts cost nothing more; a part whose objects are all
            // missing is the cheapest way to get them.
            if loaded.inline.contains_key(&i) || missing == n {
                needed_usize = needed_usize.saturating_add(h.usize);
                if !loaded.inline.contains_key(&i) {
                    to_fetch.push(i);
                }
                continue;
            }
            // Fetched one by one, the missing objects cost their own
            // sizes: the part's object bytes (`usize`) in proportion, not
            // its file size in proportion. A part of bsdiff patches
            // against objects here is far smaller than the objects it
            // makes, so its share would call loose objects cheap when
            // they are not. (`usize` is uncompressed, `.filez` deflated:
            // an upper bound, so a part is left out only when surely
            // dearer.)
            let loose = h.usize.saturating_mul(missing) / n.max(1)
                + missing.saturating_mul(OBJECT_REQUEST_OVERHEAD);
            if loose < h.size {
                skip[i] = true;
                left_to_objects += 1;
                self.note(format!(
                    "static delta {name} part {i}: {missing} of its {n} objects are in neither the store nor a local cache; fetching them one by one (at most about {loose} bytes: their share of the part's {} bytes of objects) rather than the {}-byte part",
                    h.usize, h.size
                ));
            } else {
                self.note(format!(
                    "static delta {name} part {i}: {missing} of its {n} objects are in neither the store nor a local cache; fetching the {}-byte part rather than them one by one (up to about {loose} bytes: their share of the part's {} bytes of objects, which its patches may make from objects here)",
                    h.size, h.usize
                ));
                needed_usize = needed_usize.saturating_add(h.usize);
                to_fetch.push(i);
            }
        }
        for f in &sb.fallbacks {
            if !self.txn.has_object(&f.object)? {
                needed_usize = needed_usize.saturating_add(f.usize);
            }
        }
        // Part files wait in scratch files while applied: one per worker
        // at once, so the largest two (their sizes are the superblock's,
        // any u64: refused here rather than filling the disk).
        let mut sizes: Vec<u64> = to_fetch.iter().map(|&i| sb.parts[i].size).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let scratch = sizes
            .iter()
            .take(self.opts.jobs.clamp(1, 2))
            .fold(0u64, |a, s| a.saturating_add(*s));
        self.check_space(name, needed_usize.saturating_add(scratch))?;
        let to_apply = skip.iter().filter(|s| !**s).count();
        self.note(format!(
            "using static delta {name} ({}): {to_apply} of {} parts to apply{}",
            match name.from {
                Some(f) => format!("from {f}, present here"),
                None => "from scratch".into(),
            },
            sb.parts.len(),
            if sb.fallbacks.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} fallback objects fetched separately",
                    sb.fallbacks.len()
                )
            }
        ));

        write_commit(self.txn, sb).map_err(|e| fail(DeltaFailure::Store(e)))?;
        self.progress.report(Event::Start {
            phase: Phase::ApplyDelta,
            total: Some(to_apply as u64),
        });
        let fetch = |i: usize, h: &PartHeader| self.fetch_part(name, i, h);
        let on_part = |o: &PartsOutcome| {
            self.progress.report(Event::Advance {
                phase: Phase::ApplyDelta,
                done: (o.parts_applied + o.parts_skipped) as u64,
                total: Some(to_apply as u64),
                bytes: self.source.bytes_transferred(),
            })
        };
        // Every part's request goes out now (as many at once as the source
        // allows): small parts arrive whole while earlier ones are applied,
        // big ones have their first bytes waiting when a worker opens them.
        for &i in &to_fetch {
            self.source.prefetch_file(&name.part_path(i));
        }
        let fallbacks = sb
            .fallbacks
            .iter()
            .map(|f| f.object.checksum)
            .filter(|c| {
                !self
                    .txn
                    .has_object(&ObjectName::new(*c, ObjectType::File))
                    .unwrap_or(false)
            })
            .collect::<Vec<_>>();
        let stop = Arc::new(AtomicBool::new(false));
        let carried_commitmeta = sb.commitmeta().is_some();
        let commitmeta = Mutex::new(None);
        let inline = InlineParts {
            file: &sbf.file,
            ranges: &loaded.inline,
        };
        let parts = std::thread::scope(|s| {
            let fetching = s.spawn(|| {
                // Checked (signatures included) and written by the walk
                // that follows, as when it fetches it itself.
                if !carried_commitmeta {
                    let n = ObjectName::new(name.to, ObjectType::CommitMeta);
                    let m = self
                        .source
                        .fetch_metadata(&n, crate::ostree::MAX_METADATA_SIZE as u64);
                    *commitmeta.lock().unwrap_or_else(|p| p.into_inner()) = m.ok();
                }
                self.fetch_fallbacks(&fallbacks, &stop)
            });
            let parts = apply_parts(
                self.txn,
                sb,
                &inline,
                &fetch,
                &skip,
                self.opts.jobs,
                self.interrupt,
                &on_part,
            );
            if parts.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            while !fetching.is_finished() {
                if self.interrupt.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            parts
        });
        // What was fetched ahead and not used (after a failure) is dropped.
        self.source.cancel_prefetches();
        // Finished either way: a progress display must not be left open.
        self.progress.report(Event::Finish {
            phase: Phase::ApplyDelta,
        });
        let parts = parts?;
        Ok(Some(DeltaUse {
            delta: name,
            parts,
            parts_left_to_objects: left_to_objects,
            fallbacks: sb.fallbacks.len(),
            carried_commitmeta,
            fetched_commitmeta: commitmeta.into_inner().unwrap_or_else(|p| p.into_inner()),
        }))
    }

    /// Fetches the delta's fallback objects (sent whole, outside the
    /// parts) while the parts are applied. Left to the object walk that
    /// follows every delta, they were the pull's serial tail: on a
    /// debootstrap tree, one 11 MB `.filez` inflating to 50 MB was a
    /// seventh of the scratch delta's time, with one core idle. Best
    /// effort: an object that fails here is fetched again by that walk,
    /// which retries it and names it if it fails for good; nothing
    /// unverified is stored (the write checks the checksum).
    fn fetch_fallbacks(&self, objects: &[Checksum], stop: &Arc<AtomicBool>) {
        for c in objects {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut obj) = self.source.fetch_content(c) else {
                continue;
            };
            obj.reader = Box::new(crate::pull::engine::Interruptible {
                inner: obj.reader,
                flag: stop.clone(),
                location: self.source.location(&ObjectName::new(*c, ObjectType::File)),
            });
            // Errors included: see above.
            let _ = self.txn.write_content_object(obj, Some(*c));
        }
    }

    /// Objects of a part that would have to be transferred: in neither
    /// the store nor a local cache.
    fn missing(&self, h: &PartHeader) -> Result<u64, PullError> {
        let mut n = 0;
        for o in &h.objects {
            if !self.txn.has_object(o)?
                && !self.caches.iter().any(|c| c.has_object(o).unwrap_or(false))
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// libostree's free-space check: the objects a delta creates must fit.
    fn check_space(&self, name: DeltaName, needed: u64) -> Result<(), PullError> {
        let Ok(st) = rustix::fs::fstatvfs(self.repo.dir()) else {
            return Ok(());
        };
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        if needed > available {
            return Err(DeltaPullError::new(
                name,
                DeltaFailure::NoSpace {
                    needed,
                    available,
                    path: self.repo.path().to_path_buf(),
                },
            )
            .into());
        }
        Ok(())
    }

    /// The target commit's signatures, checked before anything is written:
    /// against the detached metadata the superblock carries, else the
    /// source's `.commitmeta` (signatures added after the delta was made).
    fn verify_commit(&self, sb: &Superblock) -> Result<(), PullError> {
        let verifying: Vec<&RemoteVerify> = self.verifiers.iter().filter(|v| v.commits).collect();
        if verifying.is_empty()
            || self
                .txn
                .has_object(&ObjectName::new(sb.to, ObjectType::Commit))?
        {
            return Ok(());
        }
        let data = sb.commit.serialize();
        let fetched;
        let meta = match sb.commitmeta() {
            Some(m) => Some(m),
            None => {
                let n = ObjectName::new(sb.to, ObjectType::CommitMeta);
                fetched = self
                    .source
                    .fetch_metadata(&n, crate::ostree::MAX_METADATA_SIZE as u64)
                    .map_err(PullError::Fetch)?;
                fetched.as_deref()
            }
        };
        for v in verifying {
            v.keys
                .verify(&data, meta)
                .map_err(|source| PullError::CommitSignature {
                    commit: sb.to,
                    remote: v.remote.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Fetches part `i` into a scratch file, checked against its header.
    /// The source retries network failures itself (and resumes a part cut
    /// off mid-way); a part whose bytes do not match its header's size or
    /// SHA-256 may have been damaged on the way, so it is fetched again,
    /// up to `network_retries` times.
    fn fetch_part(&self, name: DeltaName, i: usize, h: &PartHeader) -> Result<PartFile, PartError> {
        let rel = name.part_path(i);
        let location = self.source.file_location(&rel);
        let mut attempt = 0;
        loop {
            let r = match self.source.open_file(&rel) {
                Ok(Some(stream)) => receive_part(self.txn, stream, h, &location, self.interrupt),
                Ok(None) => Err(PartError::Fetch(FetchError::not_found(location.clone()))),
                Err(e) => Err(PartError::Fetch(e)),
            };
            match r {
                Err(PartError::Size { .. } | PartError::Checksum { .. })
                    if attempt < self.opts.network_retries =>
                {
                    attempt += 1;
                }
                Err(PartError::Fetch(e))
                    if e.is_corrupt() && attempt < self.opts.network_retries =>
                {
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}
