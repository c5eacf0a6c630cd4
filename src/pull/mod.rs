//! Pulling commits from other repositories into the local store.
//!
//! [`pull`] resolves what to fetch (refs from the source's summary or its
//! `refs/heads/`), then runs the [`engine`] over an [`ObjectSource`]: an
//! HTTP(S) server ([`http`]) or a local repository in any mode ([`local`]).
//! Everything is fetched inside one store transaction; the refs move only
//! when every object is in place. If the pull fails part-way, the objects
//! already verified are kept, so running it again fetches only the rest; a
//! pull killed outright leaves a staging directory whose finished objects
//! the next start adopts (see [`crate::store::transaction`]).
//!
//! Signatures ([`gpg`]): for a remote with `gpg-verify=true`, every commit
//! the pull reaches (requested or walked by [`PullOptions::depth`], fetched now or
//! already present) must carry a valid signature by one of the remote's
//! trusted keys in its detached metadata. A new commit is checked after its
//! `.commitmeta` and `.commit` are fetched and before anything is written
//! or any of its tree is requested; a failure fails the pull, so no ref
//! moves. With `gpg-verify-summary=true` the `summary` is required, and
//! checked against `summary.sig` before any ref is resolved from it.
//!
//! Ed25519 signatures ([`ed25519`], ostree's *signapi*): a remote with
//! `sign-verify` set needs an `ostree.sign.ed25519` signature by one of its
//! keys on every commit, checked at the same point as GPG; with
//! `sign-verify-summary`, `summary.sig` must carry one over the summary.
//! When both GPG and signapi verification are on, both must pass, as in
//! ostree (`_verify_unwritten_commit` in `ostree-repo-pull-verify.c` runs
//! one check after the other). Note that `gpg-verify` defaults to true, so
//! a remote meant for ed25519 alone needs `gpg-verify=false` too (ostree's
//! own tests add such remotes with `--set=gpg-verify=false`).
//!
//! Both kinds are checked through one interface ([`verify::Verifier`]), so
//! commits and summaries, and their errors, are handled alike whatever the
//! kind.

mod concurrency;
pub mod delta;
pub mod ed25519;
pub mod engine;
mod fetcher;
pub mod gpg;
pub mod http;
pub mod local;
mod options;
pub mod source;
mod tls;
pub mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use options::{
    DEFAULT_JOBS, Depth, PullOptions, PullSource, PullTarget, StaticDeltas, SubPath, Verification,
};
pub use source::{FetchError, FetchErrorKind, NetworkStats, ObjectSource, PrefetchReady};
pub use verify::{RemoteVerify, SignatureError, Verifier};

use crate::ostree::{Checksum, Commit, DirTree, FormatError, ObjectName, ObjectType, Summary};
use crate::progress::{Event, Phase, Progress};
use crate::store::{RefName, Remote, RemoteTls, Repo, StoreError, Transaction};

#[derive(Debug, Error)]
pub enum PullError {
    #[error(transparent)]
    Fetch(FetchError),
    /// Bytes that do not hash to the object's name, on every one of
    /// `attempts` fetches.
    #[error("object {object} from {location} is corrupt: checksum expected={expected} actual={actual}{}", if *.attempts > 1 { format!(" (fetched {} times)", .attempts) } else { String::new() }, expected = .object.checksum)]
    ChecksumMismatch {
        object: ObjectName,
        location: String,
        actual: Checksum,
        attempts: u32,
    },
    #[error("object {object} from {location} is invalid: {source}")]
    Corrupt {
        object: ObjectName,
        location: String,
        #[source]
        source: FormatError,
    },
    /// A commit's signatures, of whichever kind, did not verify.
    #[error("commit {commit} from remote {remote:?}: {source}")]
    CommitSignature {
        commit: Checksum,
        remote: String,
        #[source]
        source: SignatureError,
    },
    /// `summary.sig` did not verify the summary.
    #[error("summary of remote {remote:?}: {source}")]
    SummarySignature {
        remote: String,
        #[source]
        source: SignatureError,
    },
    /// A signed summary is required (`setting`, for signatures of kind
    /// `kind`) but the source lacks `file` (`summary` or `summary.sig`).
    /// ostree: "GPG verification enabled, but no summary found" /
    /// "Signatures verification enabled, but no summary.sig found".
    #[error(
        "remote {remote:?} has {setting} set, so its summary must be signed with {kind}, but {source_desc} has no {file}"
    )]
    SummaryMissing {
        remote: String,
        kind: &'static str,
        setting: &'static str,
        source_desc: String,
        file: &'static str,
    },
    #[error("{0}")]
    Keys(#[from] gpg::KeyError),
    #[error("ref {name:?} not found at {source_desc}")]
    RefNotFound { name: String, source_desc: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A pull source that is neither a remote, a URL nor a repository.
    #[error("{spec:?}: {reason}")]
    BadSource { spec: String, reason: String },
    /// A ref or commit to pull that does not parse.
    #[error("{spec:?}: {reason}")]
    BadTarget { spec: String, reason: String },
    #[error("depth {0}: use -1 (all history) or a count of parents")]
    BadDepth(i64),
    #[error("subpath {path:?}: {reason}")]
    BadSubpath { path: String, reason: String },
    /// `base` names a commit whose tree is not complete here.
    #[error("base commit {0} is partial in this repository, so its objects are not known present")]
    BasePartial(Checksum),
    /// The source has no summary and cannot list its refs.
    #[error("{source_desc} has no summary file, so its refs cannot be listed")]
    NoSummary { source_desc: String },
    #[error("{source_desc} has no refs to pull")]
    NoRefs { source_desc: String },
    #[error("the summary of {source_desc} is invalid: {source}")]
    BadSummary {
        source_desc: String,
        #[source]
        source: FormatError,
    },
    /// A remote's signapi settings cannot be used.
    #[error("remote {remote:?}: {reason}")]
    SignConfig { remote: String, reason: String },
    /// A local source or cache repository could not be opened.
    #[error("opening repository {path}: {source}", path = .path.display())]
    OpenSource {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    /// A static delta could not be used or applied (it names the delta and
    /// the part at fault).
    #[error("{0}")]
    Delta(#[from] delta::DeltaPullError),
    /// `StaticDeltas::Required`, and the source has no delta to `to`.
    #[error("static deltas required, but {source_desc} has none to {to}{}", .from.map(|f| format!(" (the ref is at {f} here)")).unwrap_or_default())]
    DeltaRequired {
        from: Option<Checksum>,
        to: Checksum,
        source_desc: String,
    },
    /// A summary's or delta index's list of deltas is malformed.
    #[error("the static deltas listed in the {listed_in} are invalid: {source}")]
    BadDeltaList {
        listed_in: String,
        #[source]
        source: crate::ostree::delta::DeltaError,
    },
    /// The interrupt flag was set. Objects already verified are kept (a
    /// re-run fetches only the rest); no ref moved.
    #[error("interrupted")]
    Interrupted,
}

impl From<crate::progress::Interrupted> for PullError {
    fn from(_: crate::progress::Interrupted) -> Self {
        PullError::Interrupted
    }
}

impl From<FormatError> for PullError {
    fn from(e: FormatError) -> Self {
        PullError::Store(StoreError::Format(e))
    }
}

impl PullError {
    /// Whether the bytes fetched may have been damaged on the way (they
    /// do not hash to the name, do not inflate, or have no valid header):
    /// worth fetching again.
    pub fn is_corruption(&self) -> bool {
        match self {
            PullError::ChecksumMismatch { .. } => true,
            PullError::Fetch(e) => e.is_corrupt(),
            _ => false,
        }
    }
}

/// Where the pulled refs are written.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RefDestination {
    /// `refs/remotes/REMOTE/REF` (a configured remote).
    Remote(String),
    /// `refs/heads/REF` (URL and path sources, and `mirror`).
    Heads,
}

/// A remote's GPG settings (`gpg-verify`, `gpg-verify-summary`) and
/// trusted keys (a [`gpg::Keyring`]), for one pull. A type of its own (not
/// just a [`RemoteVerify`]) so each kind has its own loader, `for_remote`.
#[derive(Clone, Debug)]
pub struct GpgVerify(pub RemoteVerify);

/// A remote's signapi settings (`sign-verify`, `sign-verify-summary`) and
/// ed25519 keys (an [`ed25519::TrustedKeys`]), for one pull.
#[derive(Clone, Debug)]
pub struct SignVerify(pub RemoteVerify);

impl GpgVerify {
    /// The checks `remote` asks for, with its trusted keys loaded (see
    /// [`Repo::remote_gpg_keys`]); `None` when it asks for none.
    pub fn for_remote(repo: &Repo, remote: &Remote) -> Result<Option<GpgVerify>, PullError> {
        if !remote.gpg_verify && !remote.gpg_verify_summary {
            return Ok(None);
        }
        let mut keyring = gpg::Keyring::new();
        for (origin, data) in repo.remote_gpg_keys(remote)?.sources {
            keyring.add(&data, &origin)?;
        }
        Ok(Some(GpgVerify(RemoteVerify {
            remote: remote.name.clone(),
            keys: Arc::new(keyring),
            commits: remote.gpg_verify,
            summary: remote.gpg_verify_summary,
            summary_setting: "gpg-verify-summary",
        })))
    }
}

impl SignVerify {
    /// The signapi checks `remote` asks for, with its keys loaded as ostree
    /// loads them (`_signapi_load_public_keys` in
    /// `ostree-repo-pull-verify.c`, `ostree_sign_ed25519_load_pk`); `None`
    /// when it asks for none. `basedirs`: where system-wide keys are
    /// looked for (see [`PullOptions::sign_key_basedirs`]).
    ///
    /// * `sign-verify` / `sign-verify-summary` = `true`: keys from the
    ///   remote config if it names any, else system-wide ones; none at
    ///   all only fails once a signature is to be checked.
    /// * = a list of types: only `ed25519` is supported, and the remote
    ///   config must name keys ("No keys found for required signapi type").
    /// * `verification-ed25519-file`: must load (a regular file with at
    ///   least one valid key and no empty line); then
    ///   `verification-ed25519-key` is added, and must be valid.
    /// * Only without both: every system-wide `trusted.ed25519` file (one
    ///   that fails to load is skipped, but the keys read before its error
    ///   count, as in ostree), and the `revoked.ed25519` files, whose keys
    ///   are never used. ostree reads revoked keys only in this case (there
    ///   is no per-remote revocation option).
    pub fn for_remote(
        remote: &Remote,
        basedirs: &[PathBuf],
    ) -> Result<Option<SignVerify>, PullError> {
        use crate::store::remotes::{SignVerifyConfig, read_sign_key_file, system_sign_key_files};
        let configs = [&remote.sign_verify, &remote.sign_verify_summary];
        if !configs.iter().any(|c| c.is_on()) {
            return Ok(None);
        }
        let name = &remote.name;
        let mut required = false;
        for c in configs {
            if let SignVerifyConfig::Types(types) = c {
                required = true;
                for t in types {
                    match t.as_str() {
                        "ed25519" => {}
                        "spki" | "dummy" => {
                            return Err(PullError::SignConfig {
                                remote: name.clone(),
                                reason: format!(
                                    "signature type {t:?} in sign-verify is not supported (arbor verifies ed25519 only)"
                                ),
                            });
                        }
                        _ => {
                            return Err(PullError::SignConfig {
                                remote: name.clone(),
                                reason: format!(
                                    "unknown signature type {t:?} in sign-verify (ostree: \"Requested signature type is not implemented\"); use sign-verify=ed25519 or sign-verify=true"
                                ),
                            });
                        }
                    }
                }
            }
        }
        let file = remote.verification_ed25519_file.as_deref();
        let inline = remote.verification_ed25519_key.as_deref();
        let mut keys = ed25519::TrustedKeys::new();
        if file.is_none() && inline.is_none() {
            if required {
                return Err(PullError::SignConfig {
                    remote: name.clone(),
                    reason: "no keys found for required signapi type ed25519; set verification-ed25519-key=BASE64 or verification-ed25519-file=PATH in its config".into(),
                });
            }
            let mut loaded = false;
            for path in system_sign_key_files(basedirs, "ed25519", false) {
                // Unreadable or invalid files are skipped, as ostree does.
                if let Ok(Some(data)) = read_sign_key_file(&path, ed25519::MAX_KEY_FILE_SIZE) {
                    let file = ed25519::parse_key_file(&data, &path.display().to_string());
                    loaded |= file.error.is_none();
                    for k in file.keys {
                        keys.add(k);
                    }
                }
            }
            if !loaded {
                // ostree: "no keys loaded" unless one file loaded cleanly
                // (keys read before another file's error do not count
                // then).
                keys = ed25519::TrustedKeys::new();
            }
            for path in system_sign_key_files(basedirs, "ed25519", true) {
                if let Ok(Some(data)) = read_sign_key_file(&path, ed25519::MAX_KEY_FILE_SIZE) {
                    for k in ed25519::parse_key_file(&data, &path.display().to_string()).keys {
                        keys.revoke(k);
                    }
                }
            }
        }
        if let Some(file) = file {
            let path = std::path::Path::new(file);
            let failed = |reason: String| PullError::SignConfig {
                remote: name.clone(),
                reason: format!(
                    "failed loading ed25519 keys from verification-ed25519-file {file:?}: {reason}"
                ),
            };
            let data = read_sign_key_file(path, ed25519::MAX_KEY_FILE_SIZE)
                .map_err(|e| failed(e.to_string()))?
                .ok_or_else(|| failed("no such file".into()))?;
            for k in ed25519::parse_key_file(&data, file)
                .into_result()
                .map_err(|e| failed(e.to_string()))?
            {
                keys.add(k);
            }
        }
        if let Some(inline) = inline {
            let k = ed25519::PublicKey::from_base64(inline).map_err(|e| PullError::SignConfig {
                remote: name.clone(),
                reason: format!("failed loading the ed25519 key in verification-ed25519-key: {e}"),
            })?;
            keys.add(k);
        }
        Ok(Some(SignVerify(RemoteVerify {
            remote: name.clone(),
            keys: Arc::new(keys),
            commits: remote.sign_verify.is_on(),
            summary: remote.sign_verify_summary.is_on(),
            summary_setting: "sign-verify-summary",
        })))
    }
}

/// What was pulled.
#[derive(Debug, Default)]
pub struct PullOutcome {
    /// Refs written (or already up to date) and their commits.
    pub refs: Vec<(RefName, Checksum)>,
    pub metadata_fetched: u64,
    pub content_fetched: u64,
    pub from_cache: u64,
    pub already_present: u64,
    /// Corrupt objects in `localcache` repositories, fetched from the
    /// source instead.
    pub cache_rejected: u64,
    /// Static deltas applied (each counts its parts and objects; the
    /// object counts above are those of the object walk).
    pub deltas: Vec<delta::DeltaUse>,
    pub bytes_transferred: u64,
    /// About what the new objects occupy in the store (content bytes
    /// plus a block per object), for the size cap's estimate.
    pub bytes_written: u64,
    /// Objects fetched again because they arrived corrupt.
    pub refetched: u64,
    /// What the network source did during this pull (zero for local
    /// sources); `peak_in_flight` is the source's peak so far.
    pub network: NetworkStats,
    pub elapsed: Duration,
}

/// A commit to pull and the ref to point at it, if any.
#[derive(Clone, Debug)]
struct Target {
    ref_name: Option<String>,
    commit: Checksum,
}

/// A source opened for a pull, with the checks it calls for.
pub struct OpenedSource {
    pub source: Box<dyn ObjectSource>,
    destination: RefDestination,
    /// The signature checks the source's configuration asks for (none for
    /// URLs and paths, or with [`Verification::Disabled`]).
    pub verifiers: Vec<RemoteVerify>,
}

impl OpenedSource {
    /// Opens `source`: for a remote, its URL with its TLS settings, and its
    /// trusted keys unless `opts.verification` disables checks; local
    /// repositories are opened read-only.
    pub fn open(repo: &Repo, source: &PullSource, opts: &PullOptions) -> Result<Self, PullError> {
        let net = Network {
            timeout: opts.timeout,
            retries: opts.network_retries,
            max_in_flight: opts.jobs.max(1),
        };
        match source {
            PullSource::Remote(name) => {
                let remote = repo.remote(name)?;
                let verifiers = match opts.verification {
                    Verification::Disabled => Vec::new(),
                    Verification::AsConfigured => {
                        let basedirs = opts.sign_key_basedirs.clone().unwrap_or_else(|| {
                            crate::store::remotes::SIGN_KEY_BASEDIRS
                                .iter()
                                .map(PathBuf::from)
                                .collect()
                        });
                        let gpg = GpgVerify::for_remote(repo, &remote)?;
                        let sign = SignVerify::for_remote(&remote, &basedirs)?;
                        verify::verifiers(gpg.as_ref(), sign.as_ref())
                            .cloned()
                            .collect()
                    }
                };
                Ok(OpenedSource {
                    source: open_location(&remote.url, &net, &remote.tls)?,
                    destination: RefDestination::Remote(remote.name),
                    verifiers,
                })
            }
            PullSource::Url(url) => Ok(OpenedSource {
                source: open_location(url, &net, &RemoteTls::default())?,
                destination: RefDestination::Heads,
                verifiers: Vec::new(),
            }),
            PullSource::Path(path) => Ok(OpenedSource {
                source: Box::new(local::LocalSource::open(path).map_err(|source| {
                    PullError::OpenSource {
                        path: path.clone(),
                        source,
                    }
                })?),
                destination: RefDestination::Heads,
                verifiers: Vec::new(),
            }),
        }
    }

    /// The refs the source offers (from its summary, verified as
    /// configured; else by listing, for local repositories).
    pub fn list_refs(&self) -> Result<Vec<(String, Checksum)>, PullError> {
        list_source_refs(self.source.as_ref(), &self.verifiers)
    }
}

/// How a network source behaves (from [`PullOptions`]).
struct Network {
    timeout: Duration,
    retries: u32,
    max_in_flight: usize,
}

/// An `http(s)://` or `file://` URL, or a path, as an object source.
fn open_location(
    spec: &str,
    net: &Network,
    tls: &RemoteTls,
) -> Result<Box<dyn ObjectSource>, PullError> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(Box::new(
            http::HttpSource::new(spec, net.timeout, net.retries, net.max_in_flight, tls)
                .map_err(PullError::Fetch)?,
        ));
    }
    let path = std::path::Path::new(spec.strip_prefix("file://").unwrap_or(spec));
    Ok(Box::new(local::LocalSource::open(path).map_err(
        |source| PullError::OpenSource {
            path: path.to_path_buf(),
            source,
        },
    )?))
}

/// Pulls `opts.targets` (or every ref) from `source` into `repo`.
///
/// Everything is fetched inside one transaction and verified before it
/// becomes visible; refs move only when every object is in place. A
/// configured remote's signature checks run unless `opts.verification`
/// turns them off.
///
/// Progress: [`Phase::Fetch`] in objects (the total grows as trees are
/// discovered) and bytes received. When `interrupt` is set the pull stops
/// within about a second with [`PullError::Interrupted`]: objects already
/// verified are kept, so running it again fetches only the rest.
pub fn pull(
    repo: &Repo,
    source: &PullSource,
    opts: &PullOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<PullOutcome, PullError> {
    let opened = OpenedSource::open(repo, source, opts)?;
    pull_from(repo, &opened, opts, progress, interrupt)
}

/// [`pull`] from a source already opened.
pub fn pull_from(
    repo: &Repo,
    source: &OpenedSource,
    opts: &PullOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<PullOutcome, PullError> {
    let start = Instant::now();
    let verifiers = &source.verifiers[..];
    let source_ref = source.source.as_ref();
    let stats_before = source_ref.network_stats();
    let caches = opts
        .localcache
        .iter()
        .map(|p| {
            Repo::open_read_only(p).map_err(|source| PullError::OpenSource {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (targets, summary) = resolve_targets(source_ref, opts, verifiers)?;
    crate::progress::check(interrupt)?;
    // Begun before the base is read: its lock keeps a prune from deleting
    // what the base's trees are then trusted to hold.
    let txn = Transaction::begin(repo)?;
    let mut base_trees = match opts.base {
        Some(b) => reachable_trees(repo, &b)?,
        None => HashSet::new(),
    };

    let ref_name = |r: &str| match &source.destination {
        RefDestination::Remote(remote) if !opts.mirror => RefName::Remote(remote.clone(), r.into()),
        _ => RefName::Head(r.into()),
    };
    let mut outcome = PullOutcome::default();
    if use_deltas(opts, source_ref) {
        let dp = delta::pull::DeltaPull {
            repo,
            txn: &txn,
            source: source_ref,
            opts,
            verifiers,
            summary: summary.as_ref().map(|(s, _)| s),
            caches: &caches,
            progress,
            interrupt,
        };
        for t in &targets {
            let local = match &t.ref_name {
                Some(r) => repo.read_ref(&ref_name(r))?,
                None => None,
            };
            match dp.pull_commit(t.commit, local) {
                Ok(Some(used)) => outcome.deltas.push(used),
                Ok(None) => {}
                Err(e) => {
                    let e = match e {
                        PullError::Delta(d) if d.is_interrupted() => PullError::Interrupted,
                        e => e,
                    };
                    abandon(repo, txn, &e, t.commit, progress);
                    return Err(e);
                }
            }
        }
    }
    for used in &outcome.deltas {
        if let Some(from) = used.delta.from {
            unchanged_trees(repo, &txn, &from, &used.delta.to, &mut base_trees)?;
        }
    }
    progress.report(Event::Start {
        phase: Phase::Fetch,
        total: None,
    });
    let mut engine = engine::Engine::new(
        repo, &txn, source_ref, &caches, opts, verifiers, base_trees, progress, interrupt,
    );
    engine.delta_commits = outcome
        .deltas
        .iter()
        .filter(|d| d.carried_commitmeta)
        .map(|d| d.delta.to)
        .collect();
    engine.fetched_commitmeta = std::sync::Mutex::new(
        outcome
            .deltas
            .iter_mut()
            .filter_map(|d| Some((d.delta.to, d.fetched_commitmeta.take()?)))
            .collect(),
    );
    for t in &targets {
        engine.add_commit(t.commit, opts.depth);
    }
    let counts = |engine: &engine::Engine<'_, '_>, outcome: &mut PullOutcome| {
        let c = &engine.counters;
        outcome.metadata_fetched = c.metadata_fetched.load(Ordering::Relaxed);
        outcome.content_fetched = c.content_fetched.load(Ordering::Relaxed);
        outcome.from_cache = c.from_cache.load(Ordering::Relaxed);
        outcome.already_present = c.already_present.load(Ordering::Relaxed);
        outcome.cache_rejected = c.cache_rejected.load(Ordering::Relaxed);
        outcome.refetched = c.refetched.load(Ordering::Relaxed);
    };
    if let Err(e) = engine.run(opts.jobs) {
        drop(engine);
        // Keep what was verified so a retry fetches only the rest; the
        // refs do not move and the commits stay marked partial. Failing
        // to keep them must not hide why the pull failed.
        if let Err(keep) = txn.publish_objects_only() {
            let note = format!("the objects fetched before the failure were not kept: {keep}");
            progress.report(Event::Note(&note));
        }
        return Err(e);
    }
    counts(&engine, &mut outcome);
    let commits = std::mem::take(&mut *engine.commits.lock().unwrap_or_else(|p| p.into_inner()));
    drop(engine);

    for t in &targets {
        if let Some(r) = &t.ref_name {
            let name = ref_name(r);
            txn.set_ref(name.clone(), Some(t.commit));
            outcome.refs.push((name, t.commit));
        }
    }
    let stats = txn.commit()?;
    crate::store::used::record(repo, &targets.iter().map(|t| t.commit).collect::<Vec<_>>());
    if opts.subpaths.is_empty() && !opts.commit_metadata_only {
        for c in commits {
            repo.clear_commit_partial(&c)?;
        }
    }
    if opts.mirror
        && opts.targets.is_empty()
        && let Some((_, bytes)) = summary
    {
        crate::store::repo::write_summary(repo, &bytes)?;
    }
    progress.report(Event::Finish {
        phase: Phase::Fetch,
    });
    outcome.bytes_transferred = source_ref.bytes_transferred();
    outcome.bytes_written = stats.content_bytes_written + stats.objects_written * 4096;
    let net = source_ref.network_stats();
    outcome.network = NetworkStats {
        requests: net.requests - stats_before.requests,
        retries: net.retries - stats_before.retries,
        resumed: net.resumed - stats_before.resumed,
        peak_in_flight: net.peak_in_flight,
    };
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// Whether the pull looks for static deltas: unless disabled, for whole
/// trees; from local repositories only when required (objects are
/// imported from them directly, as ostree does).
fn use_deltas(opts: &PullOptions, source: &dyn ObjectSource) -> bool {
    match opts.static_deltas {
        StaticDeltas::Disabled => false,
        StaticDeltas::Required => true,
        StaticDeltas::Auto => {
            source.local_repo().is_none() && !opts.commit_metadata_only && opts.subpaths.is_empty()
        }
    }
}

/// After a delta failed: what it verified is kept when the failure was the
/// network's, the machine's or an interrupt (a re-run does less); when the
/// delta proved corrupt or hostile nothing of it becomes visible, and the
/// partial marker of a commit that was never published goes too.
fn abandon(
    repo: &Repo,
    txn: Transaction<'_>,
    e: &PullError,
    commit: Checksum,
    progress: &dyn Progress,
) {
    let keep = match e {
        PullError::Delta(d) => d.keeps_objects(),
        PullError::Fetch(_) | PullError::Interrupted | PullError::Store(_) => true,
        _ => false,
    };
    if keep {
        if let Err(k) = txn.publish_objects_only() {
            let note = format!("the objects fetched before the failure were not kept: {k}");
            progress.report(Event::Note(&note));
        }
    } else {
        drop(txn);
    }
    if !repo
        .has_object(&ObjectName::new(commit, crate::ostree::ObjectType::Commit))
        .unwrap_or(true)
    {
        let _ = repo.clear_commit_partial(&commit);
    }
}

/// Fetches and parses the source's summary, if it has one. With
/// `gpg-verify-summary` or `sign-verify-summary` ([`RemoteVerify::summary`]),
/// the summary and `summary.sig` are both required and the signatures are
/// checked first (both kinds when both are on).
///
/// ostree with `sign-verify-summary` only requires `summary.sig`, and skips
/// the check when the server has no `summary`; arbor refuses that case
/// too, as it does for GPG.
pub fn fetch_summary(
    source: &dyn ObjectSource,
    verifiers: &[RemoteVerify],
) -> Result<Option<(Summary, Vec<u8>)>, PullError> {
    let required: Vec<&RemoteVerify> = verifiers.iter().filter(|v| v.summary).collect();
    let sig = if required.is_empty() {
        None
    } else {
        source.fetch_summary_sig().map_err(PullError::Fetch)?
    };
    let fetched = source.fetch_summary().map_err(PullError::Fetch)?;
    for v in required {
        let missing = |file| PullError::SummaryMissing {
            remote: v.remote.clone(),
            kind: v.keys.name(),
            setting: v.summary_setting,
            source_desc: source.describe(),
            file,
        };
        let Some(bytes) = &fetched else {
            return Err(missing("summary"));
        };
        let Some(sig) = &sig else {
            return Err(missing("summary.sig"));
        };
        v.keys
            .verify(bytes, Some(sig))
            .map_err(|source| PullError::SummarySignature {
                remote: v.remote.clone(),
                source,
            })?;
    }
    let Some(bytes) = fetched else {
        return Ok(None);
    };
    let summary = Summary::parse(&bytes).map_err(|e| PullError::BadSummary {
        source_desc: source.describe(),
        source: e,
    })?;
    Ok(Some((summary, bytes)))
}

/// Refs a source offers: from its summary, else by listing (local only).
pub fn list_source_refs(
    source: &dyn ObjectSource,
    verifiers: &[RemoteVerify],
) -> Result<Vec<(String, Checksum)>, PullError> {
    if let Some((summary, _)) = fetch_summary(source, verifiers)? {
        return Ok(summary
            .refs
            .into_iter()
            .map(|r| (r.name, r.checksum))
            .collect());
    }
    match source.list_refs().map_err(PullError::Fetch)? {
        Some(refs) => Ok(refs),
        None => Err(PullError::NoSummary {
            source_desc: source.describe(),
        }),
    }
}

/// The targets, and the source's summary when it was fetched.
type Resolved = (Vec<Target>, Option<(Summary, Vec<u8>)>);

fn resolve_targets(
    source: &dyn ObjectSource,
    opts: &PullOptions,
    verifiers: &[RemoteVerify],
) -> Result<Resolved, PullError> {
    // A signed summary is always fetched and checked, as ostree 2022.7
    // does whenever the remote has no indexed deltas.
    let needs_summary = opts.targets.is_empty()
        || verifiers.iter().any(|v| v.summary)
        || opts.targets.iter().any(|t| matches!(t, PullTarget::Ref(_)));
    let summary = if needs_summary {
        fetch_summary(source, verifiers)?
    } else {
        None
    };
    if opts.targets.is_empty() {
        let refs = match &summary {
            Some((s, _)) => s
                .refs
                .iter()
                .map(|r| (r.name.clone(), r.checksum))
                .collect(),
            None => list_source_refs(source, &[])?,
        };
        if refs.is_empty() {
            return Err(PullError::NoRefs {
                source_desc: source.describe(),
            });
        }
        let targets = refs
            .into_iter()
            .map(|(name, commit)| Target {
                ref_name: Some(name),
                commit,
            })
            .collect();
        return Ok((targets, summary));
    }
    let mut targets = Vec::new();
    for t in &opts.targets {
        match t {
            PullTarget::Commit(c) => targets.push(Target {
                ref_name: None,
                commit: *c,
            }),
            PullTarget::RefAt { name, commit } => targets.push(Target {
                ref_name: Some(name.clone()),
                commit: *commit,
            }),
            PullTarget::Ref(name) => {
                let from_summary = summary
                    .as_ref()
                    .and_then(|(s, _)| s.find(name))
                    .map(|r| r.checksum);
                let commit = match from_summary {
                    Some(c) => c,
                    None => source
                        .fetch_ref(name)
                        .map_err(PullError::Fetch)?
                        .ok_or_else(|| PullError::RefNotFound {
                            name: name.clone(),
                            source_desc: source.describe(),
                        })?,
                };
                targets.push(Target {
                    ref_name: Some(name.clone()),
                    commit,
                });
            }
        }
    }
    Ok((targets, summary))
}

/// Adds to `into` the dirtrees of `to` found at the same path in `from`,
/// when `from` is a complete local commit: their subtrees are complete, so
/// the walk that checks a commit a delta from `from` just wrote need only
/// descend where the two differ (a debootstrap update: the 60 changed
/// directories of 650, instead of a `stat` of each of its 5,300 files).
/// Only the changed directories' dirtrees are read, of both commits.
fn unchanged_trees(
    repo: &Repo,
    txn: &Transaction<'_>,
    from: &Checksum,
    to: &Checksum,
    into: &mut HashSet<Checksum>,
) -> Result<(), PullError> {
    if repo.is_commit_partial(from)? {
        return Ok(());
    }
    let load = |c: &Checksum, t: ObjectType| -> Result<Vec<u8>, PullError> {
        let name = ObjectName::new(*c, t);
        match repo.load_metadata(&name) {
            Err(StoreError::MissingObject(_)) => Ok(txn.load_staged(&name)?),
            r => Ok(r?),
        }
    };
    let parse_commit = |c: &Checksum| -> Result<Commit, PullError> {
        Commit::parse(&load(c, ObjectType::Commit)?).map_err(|source| PullError::Corrupt {
            object: ObjectName::new(*c, ObjectType::Commit),
            location: "store".into(),
            source,
        })
    };
    let parse_tree = |c: &Checksum| -> Result<DirTree, PullError> {
        DirTree::parse(&load(c, ObjectType::DirTree)?).map_err(|source| PullError::Corrupt {
            object: ObjectName::new(*c, ObjectType::DirTree),
            location: "store".into(),
            source,
        })
    };
    let mut stack = vec![(parse_commit(from)?.root_tree, parse_commit(to)?.root_tree)];
    while let Some((old, new)) = stack.pop() {
        if old == new {
            into.insert(new);
            continue;
        }
        let (old, new) = (parse_tree(&old)?, parse_tree(&new)?);
        // Both sorted by name as ostree writes them; were they not, pairs
        // would be missed (walked by the engine), never wrongly trusted:
        // only a tree equal to one of `from`'s is.
        let mut olds = old.dirs.iter().peekable();
        for d in &new.dirs {
            while olds.next_if(|o| o.name < d.name).is_some() {}
            if let Some(o) = olds.next_if(|o| o.name == d.name) {
                stack.push((o.tree, d.tree));
            }
        }
    }
    Ok(())
}

/// Every dirtree reachable from a complete local commit.
fn reachable_trees(repo: &Repo, base: &Checksum) -> Result<HashSet<Checksum>, PullError> {
    if repo.is_commit_partial(base)? {
        return Err(PullError::BasePartial(*base));
    }
    let commit = repo.load_commit(base)?;
    let mut seen = HashSet::new();
    let mut stack = vec![commit.root_tree];
    while let Some(t) = stack.pop() {
        if seen.insert(t) {
            stack.extend(repo.load_dirtree(&t)?.dirs.iter().map(|d| d.tree));
        }
    }
    Ok(seen)
}
