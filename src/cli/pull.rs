use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::Ctx;
use super::progress::format_bytes;
use arbor::pull::http::HttpSource;
use arbor::pull::local::LocalSource;
use arbor::pull::{
    Counters, DEFAULT_JOBS, GpgVerify, ObjectSource, PullOptions, RefDestination, SignVerify, pull,
};
use arbor::store::RemoteTls;
use arbor::store::remotes::sign_key_basedirs;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// A configured remote, an http(s):// or file:// URL, or the path of a
    /// local repository (any mode)
    source: String,
    /// Refs or commits to pull (REF, a checksum, or REF@CHECKSUM)
    /// [default: every ref the source lists]
    refs: Vec<String>,
    /// Objects reachable from this local commit are known present and not
    /// fetched
    #[arg(long, value_name = "REV")]
    base: Option<String>,
    /// Take objects from this local repository (verified) before the network
    /// (repeatable)
    #[arg(long = "localcache-repo", value_name = "PATH")]
    localcache: Vec<PathBuf>,
    /// Also pull N ancestors of each commit (-1: the whole history)
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    depth: i64,
    /// Pull only this path of the tree (repeatable); the commit stays
    /// marked partial
    #[arg(long, value_name = "PATH")]
    subpath: Vec<String>,
    /// Write refs/heads/REF instead of refs/remotes/REMOTE/REF, and copy the
    /// summary when pulling every ref
    #[arg(long)]
    mirror: bool,
    /// Fetch only the commit objects (and their detached metadata)
    #[arg(long)]
    commit_metadata_only: bool,
    /// Requests in flight at once
    #[arg(long, default_value_t = DEFAULT_JOBS, value_name = "N")]
    jobs: usize,
    /// Retries of a request after a transient failure (connection reset,
    /// 5xx, truncated body, stall)
    #[arg(long, default_value_t = 5, value_name = "N")]
    network_retries: u32,
    /// Give up on a transfer that receives nothing for this long
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

/// Opens a URL or path as an object source.
pub fn open_source(
    spec: &str,
    timeout: Duration,
    jobs: usize,
    tls: &RemoteTls,
) -> Result<Box<dyn ObjectSource>> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(Box::new(HttpSource::new(spec, timeout, jobs, tls)?));
    }
    let path = spec.strip_prefix("file://").unwrap_or(spec);
    let source = LocalSource::open(Path::new(path))
        .with_context(|| format!("opening source repository {path}"))?;
    Ok(Box::new(source))
}

pub fn run(ctx: &Ctx, a: PullArgs) -> Result<ExitCode> {
    let repo = ctx.open_for_write()?;
    let timeout = Duration::from_secs(a.timeout.max(1));
    // A configured remote wins over a same-named directory: a bare name must
    // never turn signature checks off (ostree's `pull` takes only remotes).
    let is_location = a.source.contains("://") || a.source.contains('/');
    let remote = if is_location {
        None
    } else {
        match repo.remote(&a.source) {
            Ok(r) => Some(r),
            // Only a name with no remote section at all may be a path: a
            // remote whose settings are broken is an error, never a
            // directory pulled without its checks.
            Err(_) if !repo.has_remote(&a.source) && Path::new(&a.source).exists() => None,
            Err(e) => bail!(
                "{:?} is not a configured remote, a URL or a repository path ({e})",
                a.source
            ),
        }
    };
    let (source, destination, gpg, sign) = match remote {
        Some(remote) => {
            let gpg = GpgVerify::for_remote(&repo, &remote).with_context(|| {
                format!("loading the trusted GPG keys of remote {:?}", remote.name)
            })?;
            let sign = SignVerify::for_remote(&remote, &sign_key_basedirs())
                .with_context(|| format!("loading the ed25519 keys of remote {:?}", remote.name))?;
            (
                open_source(&remote.url, timeout, a.jobs, &remote.tls)?,
                RefDestination::Remote(remote.name),
                gpg,
                sign,
            )
        }
        // Like ostree, URLs and paths are pulled without signature checks.
        None => (
            open_source(&a.source, timeout, a.jobs, &RemoteTls::default())?,
            RefDestination::Heads,
            None,
            None,
        ),
    };
    let base = match &a.base {
        Some(rev) => Some(
            repo.resolve_rev(rev)
                .with_context(|| format!("--base {rev}"))?,
        ),
        None => None,
    };
    let subpaths = a
        .subpath
        .iter()
        .map(|p| {
            let comps =
                arbor::store::tree::split_path(p).with_context(|| format!("--subpath {p}"))?;
            Ok(format!("/{}", comps.join("/")))
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = PullOptions {
        refs: a.refs,
        destination,
        base,
        localcache: a.localcache,
        depth: a.depth,
        subpaths,
        mirror: a.mirror,
        commit_metadata_only: a.commit_metadata_only,
        jobs: a.jobs.max(1),
        network_retries: a.network_retries,
        gpg,
        sign,
    };
    let counters = Counters::default();
    let pb = if !a.quiet && std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{spinner} pulling [{bar:30}] {pos}/{len} objects {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    } else {
        ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let tick = || {
        let done = counters.metadata_fetched.load(Ordering::Relaxed)
            + counters.content_fetched.load(Ordering::Relaxed)
            + counters.from_cache.load(Ordering::Relaxed)
            + counters.already_present.load(Ordering::Relaxed);
        pb.set_length(counters.queued.load(Ordering::Relaxed));
        pb.set_position(done);
        let bytes = source.bytes_transferred();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        pb.set_message(format!(
            "{} ({}/s)",
            format_bytes(bytes),
            format_bytes((bytes as f64 / secs) as u64)
        ));
    };
    let result = pull(&repo, source.as_ref(), &opts, &counters, &tick);
    pb.finish_and_clear();
    let rejected = counters.cache_rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        eprintln!(
            "warning: {rejected} corrupt objects in --localcache-repo were ignored and fetched from the source instead (run `arbor --repo CACHE fsck`)"
        );
    }
    let outcome = result.with_context(|| format!("pulling from {}", source.describe()))?;
    if !a.quiet {
        for (name, c) in &outcome.refs {
            eprintln!("{name} -> {c}");
        }
        println!(
            "{} metadata, {} content objects fetched{}{}; {} transferred in {:.1} s",
            outcome.metadata_fetched,
            outcome.content_fetched,
            if outcome.from_cache > 0 {
                format!(", {} from local caches", outcome.from_cache)
            } else {
                String::new()
            },
            if outcome.already_present > 0 {
                format!(", {} already present", outcome.already_present)
            } else {
                String::new()
            },
            format_bytes(outcome.bytes_transferred),
            outcome.elapsed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
