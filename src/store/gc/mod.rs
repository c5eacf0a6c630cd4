//! Garbage collection to a size cap: the store as a least-recently-used
//! cache of artifacts.
//!
//! Settings come from [`GcOptions`], or from the repository config
//! (`[arbor]` group, which ostree ignores):
//! ```text
//! [arbor]
//! max-size=20G
//! evict-prefixes=artifacts/;cache/;
//! ```
//! and are then applied after every pull and commit ([`auto()`]).
//!
//! # What gc does
//! 1. Measures the store as `du -sx` would ([`size`]).
//! 2. Under the cap: nothing. Over it, it frees down to
//!    [`GcOptions::low_water_percent`] of the cap (80 %), more than the
//!    minimum, so that it does not run again at the next write.
//! 3. Unused checkout-cache entries go first, least recently used first
//!    (an entry a stage uses never goes).
//! 4. Then refs under the evictable prefixes, least recently used first
//!    ([`used`]): never another ref, never one whose commit
//!    is a stage's layer. How much evicting a ref frees is computed
//!    before anything is deleted: refs are walked most recently used
//!    first, and each is charged only with the objects no more recently
//!    used ref (nor any kept ref or stage) reaches, which is exactly what
//!    evicting it, together with the less recently used ones, frees.
//! 5. The chosen refs are deleted under the exclusive lock, each only if
//!    it still points to the same commit, has not been used since it was
//!    chosen, and no stage has taken its commit as a layer meanwhile (so
//!    a ref being pulled, committed to, checked out or staged is never
//!    evicted: those hold the shared lock until they are done, and then
//!    count as a use). Their commits and ancestors are first written to
//!    a [`journal`]. Then a prune removes what those commits alone held,
//!    in the prune's batches: every other commit is a root by itself
//!    (one pulled by checksum, a stage's commit without a ref), every ref
//!    keeps its whole history, and a journaled commit used again since
//!    (pulled or checked out by checksum) is kept. A gc killed before the
//!    prune leaves the journal to the next gc.
//! 6. The store is measured again; if estimates were off (objects shared
//!    with checkouts outside the store, say), more rounds follow.
//!
//! A kill at any step leaves a consistent store: cache entries are
//! removed by rename-then-delete, refs before their objects, and the
//! prune's own order (see [`super::prune`]).

mod auto;
mod journal;
pub mod size;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use rustix::fs::AtFlags;
use thiserror::Error;

use super::prune::reach::{Depth, Reach};
use super::prune::roots::all_refs;
use super::prune::{PruneError, PruneOptions, PruneOutcome};
use super::refs::{AnyRef, RefListing};
use super::{RefName, Repo, StoreError, used};
use crate::ostree::{Checksum, ObjectName, ObjectType};
use crate::progress::{Event, Progress};
use crate::stage::StageError;
use crate::stage::evict::Evicted;
pub use auto::auto;
use size::Usage;

/// Rounds of evict-prune-measure before giving up on reaching the target.
const MAX_ROUNDS: usize = 4;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// The cap, in bytes of disk usage.
    pub max_size: u64,
    /// Refs (named as `arbor refs` prints them) starting with one of these
    /// may be evicted; no other ref ever is.
    pub evict_prefixes: Vec<String>,
    /// Once over the cap, free down to this share of it.
    pub low_water_percent: u8,
    /// Say what would go; delete nothing.
    pub dry_run: bool,
    /// Objects deleted per hold of the exclusive lock.
    pub batch_size: usize,
    /// How long to wait for the exclusive lock each time; `None` for
    /// `core.lock-timeout-secs`.
    pub lock_timeout: Option<Duration>,
}

impl GcOptions {
    pub fn new(max_size: u64) -> Self {
        GcOptions {
            max_size,
            evict_prefixes: Vec::new(),
            low_water_percent: 80,
            dry_run: false,
            batch_size: PruneOptions::default().batch_size,
            lock_timeout: None,
        }
    }

    /// The `[arbor]` settings of the repository config; `None` without a
    /// `max-size`.
    pub fn from_config(repo: &Repo) -> Result<Option<GcOptions>, GcError> {
        let Some(max) = repo.config().get("arbor", "max-size") else {
            return Ok(None);
        };
        let bad = |reason: String| GcError::Config {
            key: "arbor.max-size",
            reason,
        };
        let max_size = parse_size(&max).ok_or_else(|| bad(format!("{max:?} is not a size")))?;
        let mut opts = GcOptions::new(max_size);
        opts.evict_prefixes = repo
            .config()
            .get_list("arbor", "evict-prefixes")
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Some(opts))
    }

    fn target(&self) -> u64 {
        self.max_size / 100 * u64::from(self.low_water_percent.min(100))
            + self.max_size % 100 * u64::from(self.low_water_percent.min(100)) / 100
    }

    fn evictable(&self, name: &str) -> bool {
        self.evict_prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()))
    }
}

/// A size: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024,
/// also written `KiB`…) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    let v = f * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// What gc did (or would do).
#[derive(Clone, Debug, Default)]
pub struct GcOutcome {
    pub dry_run: bool,
    pub max_size: u64,
    /// The size gc frees down to once over the cap.
    pub target: u64,
    /// Measured before; after (estimated in a dry run).
    pub size_before: u64,
    pub size_after: u64,
    /// Checkout-cache entries removed, least recently used first.
    pub cache_evicted: Vec<Evicted>,
    /// Refs deleted, least recently used first.
    pub refs_evicted: Vec<(String, Checksum)>,
    /// The prunes that followed (one per round).
    pub prunes: Vec<PruneOutcome>,
    /// Over the cap still, with nothing left that may be evicted.
    pub still_over: bool,
}

#[derive(Debug, Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prune(#[from] PruneError),
    #[error(transparent)]
    Stages(#[from] StageError),
    #[error("measuring {path}: {source}")]
    Measure {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("interrupted")]
    Interrupted,
}

impl GcError {
    /// Whether the interrupt flag stopped the gc (at any of its steps).
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            GcError::Interrupted
                | GcError::Prune(PruneError::Interrupted)
                | GcError::Prune(PruneError::Store(StoreError::Interrupted))
                | GcError::Store(StoreError::Interrupted)
                | GcError::Stages(StageError::Interrupted)
                | GcError::Stages(StageError::Store(StoreError::Interrupted))
        )
    }
}

impl From<crate::progress::Interrupted> for GcError {
    fn from(_: crate::progress::Interrupted) -> Self {
        GcError::Interrupted
    }
}

/// The store's disk usage, as `du -sx`.
pub fn measure(repo: &Repo) -> Result<u64, GcError> {
    size::disk_usage(repo.dir(), ".")
        .map(|u: Usage| u.bytes)
        .map_err(|source| GcError::Measure {
            path: repo.path().to_path_buf(),
            source,
        })
}

/// Brings `repo` under `opts.max_size` (see the module docs).
pub fn gc(
    repo: &Repo,
    opts: &GcOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<GcOutcome, GcError> {
    let mut out = GcOutcome {
        dry_run: opts.dry_run,
        max_size: opts.max_size,
        target: opts.target(),
        ..Default::default()
    };
    let mut size = measure(repo)?;
    out.size_before = size;
    out.size_after = size;
    if size <= opts.max_size {
        if !opts.dry_run {
            // What an interrupted gc evicted but did not prune.
            if !journal::read(repo).is_empty() {
                out.prunes
                    .push(prune_evicted(repo, opts, progress, interrupt)?);
                size = measure(repo)?;
                out.size_after = size;
            }
            forget_absent_marks(repo)?;
            auto::save_state(repo, size);
        }
        return Ok(out);
    }
    let target = out.target;

    // Unused checkout-cache entries first.
    let stages = crate::stage::Stages::open(repo)?;
    let order: Vec<Checksum> = stages
        .cache_entries()?
        .into_iter()
        .filter(|e| !e.in_use)
        .map(|e| e.commit)
        .collect();
    if opts.dry_run {
        let path = repo
            .path()
            .join(crate::stage::EXTENSION_DIR)
            .join("checkouts");
        let rel = format!("{}/{}", crate::stage::EXTENSION_DIR, "checkouts");
        let dir =
            crate::fs::open_dir(repo.dir(), rel.as_str()).map_err(|source| GcError::Measure {
                path: path.clone(),
                source,
            })?;
        for c in order {
            if size <= target {
                break;
            }
            let name = c.to_string();
            let u = size::disk_usage(std::os::fd::AsFd::as_fd(&dir), &name).map_err(|source| {
                GcError::Measure {
                    path: path.join(&name),
                    source,
                }
            })?;
            size = size.saturating_sub(u.unique_bytes);
            out.cache_evicted.push(Evicted {
                commit: c,
                bytes: u.unique_bytes,
            });
        }
    } else {
        let start = size;
        let timeout = opts
            .lock_timeout
            .or_else(|| super::lock::configured_timeout(repo));
        match stages.evict_cache(
            &order,
            |freed| start.saturating_sub(freed) <= target,
            timeout,
            interrupt,
        )? {
            Some(evicted) => out.cache_evicted = evicted,
            None => progress.report(Event::Note(
                "checkout cache busy (a stage is being created): not evicting from it",
            )),
        }
        size = start.saturating_sub(out.cache_evicted.iter().map(|e| e.bytes).sum::<u64>());
    }
    drop(stages);

    for _ in 0..MAX_ROUNDS {
        crate::progress::check(interrupt)?;
        if size <= target {
            break;
        }
        progress.report(Event::Note("choosing refs to evict"));
        let plan = choose(repo, opts, size.saturating_sub(target), interrupt)?;
        if opts.dry_run {
            size = size.saturating_sub(plan.freed);
            out.refs_evicted = plan
                .victims
                .iter()
                .map(|v| (v.name.to_string(), v.commit))
                .collect();
            out.still_over = size > opts.max_size;
            break;
        }
        let evicted = evict_refs(repo, &plan.victims, opts.lock_timeout, interrupt)?;
        let any = !evicted.is_empty();
        out.refs_evicted.extend(evicted);
        crate::failpoint::crash("gc:refs-deleted");
        if !any && plan.freed == 0 {
            out.still_over = size > opts.max_size;
            break;
        }
        out.prunes
            .push(prune_evicted(repo, opts, progress, interrupt)?);
        size = measure(repo)?;
        if !any {
            out.still_over = size > opts.max_size;
            break;
        }
    }
    out.still_over |= size > opts.max_size;
    out.size_after = size;
    if !opts.dry_run {
        forget_absent_marks(repo)?;
        auto::save_state(repo, size);
    }
    Ok(out)
}

/// A ref chosen for eviction, as it was when chosen.
#[derive(Clone, Debug)]
struct Victim {
    name: RefName,
    commit: Checksum,
    last_use: SystemTime,
}

struct Plan {
    victims: Vec<Victim>,
    /// Bytes the eviction and the prune after it should free.
    freed: u64,
}

/// When a ref was last used: its commit's mark or the ref's own mtime.
fn ref_last_use(repo: &Repo, name: &RefName, commit: &Checksum) -> SystemTime {
    let set = used::mtime_at(repo.dir(), &name.relative_path());
    set.max(used::last_use(repo, commit))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Picks the least recently used evictable refs that free `need` bytes
/// (or all of them), charging each ref with what only it and less
/// recently used refs reach.
fn choose(
    repo: &Repo,
    opts: &GcOptions,
    need: u64,
    interrupt: &AtomicBool,
) -> Result<Plan, GcError> {
    // What each object occupies; shared inodes (a hardlink elsewhere)
    // free nothing when the object goes.
    let objects = repo.list_objects()?;
    let costs: HashMap<ObjectName, u64> = objects
        .par_iter()
        .filter_map(|n| {
            let st = rustix::fs::statat(
                repo.objects_dir(),
                n.loose_path(repo.mode().is_archive()).as_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .ok()?;
            Some((
                *n,
                if st.st_nlink <= 1 {
                    st.st_blocks as u64 * 512
                } else {
                    0
                },
            ))
        })
        .collect();
    let pins = crate::stage::pins::pins(repo)?;
    let pinned: std::collections::HashSet<Checksum> = pins.commits.iter().copied().collect();
    let mut reach = Reach::new(repo, false);
    let mut candidates = Vec::new();
    for (name, commit) in repo.list_refs_with(RefListing::Strict)? {
        if opts.evictable(&name.to_string()) && !pinned.contains(&commit) {
            let last_use = ref_last_use(repo, &name, &commit);
            candidates.push(Victim {
                name,
                commit,
                last_use,
            });
        } else {
            reach.add_commit(commit, Depth::ALL)?;
        }
    }
    // Collection refs are never evicted.
    for (name, commit) in all_refs(repo)? {
        if let AnyRef::Collection { .. } = name {
            reach.add_commit(commit, Depth::ALL)?;
        }
    }
    // Every other commit stays whatever is evicted (gc's prune deletes
    // only what the evicted refs held): those outside the candidates'
    // histories and outside what earlier evictions left to prune.
    let mut evictable: HashSet<Checksum> =
        journal::read(repo).into_iter().map(|(c, _)| c).collect();
    for v in &candidates {
        ancestors(repo, v.commit, &mut evictable)?;
    }
    for n in &objects {
        if n.objtype == ObjectType::Commit && !evictable.contains(&n.checksum) {
            reach.add_commit(n.checksum, Depth::TIP)?;
        }
    }
    for c in &pins.commits {
        reach.add_commit(*c, Depth::TIP)?;
    }
    for (t, m) in &pins.trees {
        reach.add_tree(*t, *m);
    }
    reach.finish(interrupt)?;
    // Most recently used first; each is charged what is new to it.
    candidates.sort_by(|a, b| (b.last_use, &b.name).cmp(&(a.last_use, &a.name)));
    let mut charged = Vec::with_capacity(candidates.len());
    reach.take_log();
    for v in &candidates {
        reach.add_commit(v.commit, Depth::ALL)?;
        reach.finish(interrupt)?;
        let cost: u64 = reach.take_log().iter().filter_map(|n| costs.get(n)).sum();
        charged.push(cost);
    }
    // Objects nothing reaches go in the prune whatever is evicted.
    let orphans: u64 = objects
        .iter()
        .filter(|n| is_candidate(n) && !reach.contains(n))
        .filter_map(|n| costs.get(n))
        .sum();
    let mut freed = orphans;
    let mut victims = Vec::new();
    for (v, cost) in candidates.iter().zip(&charged).rev() {
        if freed >= need {
            break;
        }
        freed += cost;
        victims.push(v.clone());
    }
    Ok(Plan { victims, freed })
}

fn is_candidate(n: &ObjectName) -> bool {
    matches!(
        n.objtype,
        ObjectType::Commit | ObjectType::DirTree | ObjectType::DirMeta | ObjectType::File
    )
}

/// Deletes the chosen refs that are still as they were chosen, under the
/// exclusive lock (so no pull, commit, checkout or stage create is
/// running); returns those deleted. Their commits and ancestors are first
/// written to the [`journal`], which the prune that follows (this gc's, or
/// the next one's if this one is killed) deletes, and only those.
fn evict_refs(
    repo: &Repo,
    victims: &[Victim],
    timeout: Option<Duration>,
    interrupt: &AtomicBool,
) -> Result<Vec<(String, Checksum)>, GcError> {
    if victims.is_empty() {
        return Ok(Vec::new());
    }
    let _lock = super::prune::exclusive(repo, timeout, interrupt)?;
    let pinned: std::collections::HashSet<Checksum> = crate::stage::pins::pins(repo)?
        .commits
        .into_iter()
        .collect();
    let mut chosen = Vec::new();
    for v in victims {
        if repo.read_ref(&v.name)? != Some(v.commit)
            || pinned.contains(&v.commit)
            || ref_last_use(repo, &v.name, &v.commit) != v.last_use
        {
            continue;
        }
        chosen.push(v);
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let mut history = HashSet::new();
    for v in &chosen {
        ancestors(repo, v.commit, &mut history)?;
    }
    // File times (the use marks) come from the kernel's coarse clock,
    // which lags the precise one by up to a tick: a use after this moment
    // must not look older than it.
    let now = SystemTime::now() - Duration::from_millis(20);
    journal::add(repo, history.into_iter().map(|c| (c, now)))?;
    crate::failpoint::crash("gc:journaled");
    let mut out = Vec::new();
    for v in chosen {
        repo.write_ref(&v.name, None)?;
        crate::failpoint::crash("gc:ref-deleted");
        out.push((v.name.to_string(), v.commit));
    }
    sync(repo)?;
    Ok(out)
}

/// Adds `commit` and its ancestors present in the store to `into`.
fn ancestors(repo: &Repo, commit: Checksum, into: &mut HashSet<Checksum>) -> Result<(), GcError> {
    let mut next = Some(commit);
    while let Some(c) = next.take() {
        if into.contains(&c) {
            break;
        }
        match repo.load_commit(&c) {
            Ok(parsed) => {
                into.insert(c);
                next = parsed.parent;
            }
            Err(StoreError::MissingObject(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn sync(repo: &Repo) -> Result<(), GcError> {
    if repo.fsync_enabled() {
        rustix::fs::syncfs(repo.dir()).map_err(|e| StoreError::Io {
            path: repo.path().to_path_buf(),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Prunes what the [`journal`]'s evicted commits alone held, then takes
/// them off the journal.
fn prune_evicted(
    repo: &Repo,
    opts: &GcOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<PruneOutcome, GcError> {
    let evicted = journal::read(repo);
    let prune_opts = PruneOptions {
        batch_size: opts.batch_size,
        lock_timeout: opts.lock_timeout,
        ..Default::default()
    };
    let out = super::prune::prune_evicted(repo, &prune_opts, &evicted, progress, interrupt)?;
    crate::failpoint::crash("gc:pruned");
    if !evicted.is_empty() {
        let _lock = super::prune::exclusive(repo, opts.lock_timeout, interrupt)?;
        journal::remove(repo, evicted.iter().map(|(c, _)| *c))?;
    }
    Ok(out)
}

/// Drops use marks of commits no longer in the store.
fn forget_absent_marks(repo: &Repo) -> Result<(), GcError> {
    for (c, _) in used::all_marks(repo) {
        if !repo.has_object(&ObjectName::new(c, ObjectType::Commit))? {
            used::forget(repo, &c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("10K"), Some(10 << 10));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn target_is_a_share_of_the_cap() {
        let mut o = GcOptions::new(1000);
        assert_eq!(o.target(), 800);
        o.low_water_percent = 100;
        assert_eq!(o.target(), 1000);
        assert_eq!(GcOptions::new(u64::MAX).target(), u64::MAX / 100 * 80 + 12);
    }
}
