//! `arbor gc`: keep the store under a size cap, evicting least recently
//! used artifacts; and the same run automatically after pull and commit.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use super::progress::format_bytes;
use super::prune::outcome_json;
use std::sync::atomic::AtomicBool;

use arbor::store::Repo;
use arbor::store::gc::{GcOptions, GcOutcome, auto, gc, parse_size};

#[derive(Args, Debug)]
pub struct GcArgs {
    /// The cap: 500M, 20G, 1.5T (powers of 1024; KB, MB, GB, TB for powers
    /// of 1000) [default: max-size in the [arbor] group of the repository
    /// config]
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Refs starting with REFPREFIX may be evicted (repeatable; e.g.
    /// artifacts/). No other ref ever is [default: evict-prefixes in the
    /// [arbor] group of the repository config]
    #[arg(long = "evict", value_name = "REFPREFIX")]
    evict: Vec<String>,
    /// Show what would be removed; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as JSON on standard output
    #[arg(long)]
    json: bool,
    /// Objects its prune deletes per hold of the repository's exclusive
    /// lock (writers wait at most that long)
    #[arg(long, value_name = "N", hide = true)]
    batch_size: Option<usize>,
}

pub fn run(ctx: &Ctx, a: GcArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let configured = GcOptions::from_config(&repo)?;
    let mut opts = match (&a.max_size, configured) {
        (Some(s), configured) => {
            let max = parse_size(s).with_context(|| format!("--max-size {s:?}: not a size"))?;
            let mut o = configured.unwrap_or_else(|| GcOptions::new(max));
            o.max_size = max;
            o
        }
        (None, Some(o)) => o,
        (None, None) => bail!(
            "no size cap: pass --max-size, or set one with max-size=SIZE in the [arbor] group of {}",
            repo.path().join("config").display()
        ),
    };
    if !a.evict.is_empty() {
        opts.evict_prefixes = a.evict;
    }
    opts.dry_run = a.dry_run;
    if let Some(n) = a.batch_size {
        opts.batch_size = n;
    }
    let bars = ctx.progress(a.json);
    let outcome = gc(&repo, &opts, bars, &ctx.interrupt);
    bars.clear();
    let outcome = outcome?;
    if a.json {
        println!("{}", json(&outcome));
    } else {
        print_outcome(&outcome);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(o: &GcOutcome) {
    let verb = if o.dry_run { "would evict" } else { "evicted" };
    for e in &o.cache_evicted {
        println!(
            "{verb} cached checkout {} ({})",
            e.commit,
            format_bytes(e.bytes)
        );
    }
    for (name, c) in &o.refs_evicted {
        println!("{verb} ref {name} ({c})");
    }
    let objects: usize = o.prunes.iter().map(|p| p.deleted.len()).sum();
    if objects > 0 {
        println!("deleted {objects} objects");
    }
    println!(
        "size {} -> {}{} (cap {}){}",
        format_bytes(o.size_before),
        if o.dry_run { "about " } else { "" },
        format_bytes(o.size_after),
        format_bytes(o.max_size),
        if o.still_over {
            "; still over the cap: nothing else may be evicted (see --evict)"
        } else {
            ""
        }
    );
}

fn json(o: &GcOutcome) -> serde_json::Value {
    serde_json::json!({
        "dry_run": o.dry_run,
        "max_size": o.max_size,
        "target": o.target,
        "size_before": o.size_before,
        "size_after": o.size_after,
        "cache_evicted": o.cache_evicted.iter().map(|e| serde_json::json!({
            "commit": e.commit.to_string(),
            "bytes": e.bytes,
        })).collect::<Vec<_>>(),
        "refs_evicted": o.refs_evicted.iter().map(|(n, c)| serde_json::json!({
            "ref": n,
            "commit": c.to_string(),
        })).collect::<Vec<_>>(),
        "objects_deleted": o.prunes.iter().map(|p| p.deleted.len()).sum::<usize>(),
        "bytes_freed": o.size_before.saturating_sub(o.size_after),
        "prunes": o.prunes.iter().map(outcome_json).collect::<Vec<_>>(),
        "still_over": o.still_over,
    })
}

/// After a pull or commit: the configured cap, if any. A failure here does
/// not fail the write that triggered it; it is reported. Ctrl-C stops it
/// (the write is done, and the command goes on to report it).
pub(crate) fn after_write(repo: &Repo, added: u64, quiet: bool, interrupt: &AtomicBool) {
    match auto(repo, added, interrupt) {
        Ok(Some(o)) if !quiet => eprintln!(
            "gc: store over its cap of {}: evicted {} refs and {} cached checkouts, {} -> {}",
            format_bytes(o.max_size),
            o.refs_evicted.len(),
            o.cache_evicted.len(),
            format_bytes(o.size_before),
            format_bytes(o.size_after)
        ),
        Ok(_) => {}
        Err(e) if e.is_interrupted() => eprintln!(
            "gc: interrupted (the write is done); run `arbor gc` to bring the store under its cap"
        ),
        Err(e) => eprintln!(
            "warning: keeping the store under its size cap failed: {e} (run `arbor gc` to retry)"
        ),
    }
}
