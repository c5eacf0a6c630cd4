use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;
use super::progress::format_bytes;
use arbor::pull::{
    DEFAULT_JOBS, Depth, OpenedSource, PullOptions, PullSource, PullTarget, StaticDeltas, SubPath,
    Verification, pull_from,
};

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
    /// Never use the source's static deltas: fetch objects one by one
    #[arg(long, conflicts_with = "require_static_deltas")]
    disable_static_deltas: bool,
    /// Fail unless every wanted commit comes through a static delta (also
    /// from local repositories, which otherwise import objects directly)
    #[arg(long)]
    require_static_deltas: bool,
    /// The most HTTP requests in flight at once (on HTTP/1.1, also the most
    /// connections). Fewer are used while more would not fetch faster; a
    /// few worker threads write what arrives
    #[arg(long, default_value_t = DEFAULT_JOBS, value_name = "N")]
    jobs: usize,
    /// Retries of a request after a transient failure (connection reset,
    /// 5xx, stall; a body cut off mid-way resumes with a Range request),
    /// and re-fetches of an object whose bytes do not match its checksum
    #[arg(long, default_value_t = 5, value_name = "N")]
    network_retries: u32,
    /// Give up on (and retry) a transfer that receives nothing for this long
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
    /// Look for system-wide ed25519 keys (trusted.ed25519, trusted.ed25519.d/,
    /// revoked.ed25519…) in DIR instead of /etc/ostree and /usr/share/ostree,
    /// for remotes with sign-verify=true that name no keys (repeatable;
    /// ostree's basedir)
    #[arg(long, value_name = "DIR")]
    sign_key_basedir: Vec<PathBuf>,
    /// Print the outcome as JSON on standard output instead of the summary
    /// (see docs/json.md)
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: PullArgs) -> Result<ExitCode> {
    arbor::pull::delta::reuse_xz_dictionaries();
    let repo = ctx.open_for_write()?;
    let source = PullSource::parse(&repo, &a.source)?;
    let base = match &a.base {
        Some(rev) => Some(
            repo.resolve_rev(rev)
                .with_context(|| format!("--base {rev}"))?,
        ),
        None => None,
    };
    let opts = PullOptions {
        targets: a
            .refs
            .iter()
            .map(|r| r.parse::<PullTarget>())
            .collect::<Result<_, _>>()?,
        base,
        localcache: a.localcache,
        depth: Depth::from_ostree(a.depth).context("--depth")?,
        subpaths: a
            .subpath
            .iter()
            .map(|p| SubPath::new(p).context("--subpath"))
            .collect::<Result<_>>()?,
        mirror: a.mirror,
        commit_metadata_only: a.commit_metadata_only,
        jobs: a.jobs.max(1),
        network_retries: a.network_retries,
        timeout: Duration::from_secs(a.timeout.max(1)),
        verification: Verification::AsConfigured,
        static_deltas: if a.disable_static_deltas {
            StaticDeltas::Disabled
        } else if a.require_static_deltas {
            StaticDeltas::Required
        } else {
            StaticDeltas::Auto
        },
        sign_key_basedirs: (!a.sign_key_basedir.is_empty()).then_some(a.sign_key_basedir),
    };
    let opened = OpenedSource::open(&repo, &source, &opts).with_context(|| match &source {
        PullSource::Remote(name) => format!("opening remote {name:?}"),
        _ => format!("opening {}", a.source),
    })?;
    let bars = ctx.progress(a.quiet);
    let result = pull_from(&repo, &opened, &opts, bars, &ctx.interrupt);
    bars.clear();
    let outcome = result.with_context(|| format!("pulling from {}", opened.source.describe()))?;
    if outcome.cache_rejected > 0 {
        eprintln!(
            "warning: {} corrupt objects in --localcache-repo were ignored and fetched from the source instead (run `arbor --repo CACHE fsck`)",
            outcome.cache_rejected
        );
    }
    super::gc::after_write(
        &repo,
        outcome.bytes_written,
        a.quiet || a.json,
        &ctx.interrupt,
    );
    if a.json {
        super::json::print(&super::json::pull(&outcome))?;
    } else if !a.quiet {
        for (name, c) in &outcome.refs {
            eprintln!("{name} -> {c}");
        }
        for d in &outcome.deltas {
            eprintln!(
                "static delta {}: {} parts applied ({}), {} objects written{}",
                d.delta,
                d.parts.parts_applied,
                format_bytes(d.parts.part_bytes),
                d.parts.objects_written,
                if d.parts.parts_skipped + d.parts_left_to_objects > 0 {
                    format!(
                        ", {} parts not needed",
                        d.parts.parts_skipped + d.parts_left_to_objects
                    )
                } else {
                    String::new()
                }
            );
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
        let net = &outcome.network;
        if net.requests > 0 {
            let mut flaky = Vec::new();
            if net.retries > 0 {
                flaky.push(format!("{} retried", net.retries));
            }
            if net.resumed > 0 {
                flaky.push(format!("{} resumed with a range", net.resumed));
            }
            if outcome.refetched > 0 {
                flaky.push(format!(
                    "{} objects fetched again (corrupt)",
                    outcome.refetched
                ));
            }
            println!(
                "{} requests, at most {} in flight{}",
                net.requests,
                net.peak_in_flight,
                if flaky.is_empty() {
                    String::new()
                } else {
                    format!("; {}", flaky.join(", "))
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
