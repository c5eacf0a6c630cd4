//! `arbor prune`: `ostree prune`'s options over the library's prune.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use super::progress::format_bytes;
use arbor::store::prune::{PruneError, PruneOptions, PruneOutcome, parse_date, prune};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Keep only what refs reach (local, remote and collection refs), not
    /// everything any commit reaches
    #[arg(long)]
    refs_only: bool,
    /// Keep N parents below each ref (-1: the whole history; 0: the tip only)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    depth: i64,
    /// Per ref, keep the commits made since DATE and stop at the first older
    /// one; tips are always kept. DATE: 2021-06-01, "2021-06-01 12:00 UTC",
    /// @EPOCH, "1 week ago", "3 days ago", yesterday
    #[arg(long, value_name = "DATE")]
    keep_younger_than: Option<String>,
    /// Delete this commit (refused while a ref points at it), then prune;
    /// turns core.tombstone-commits on, as ostree does
    #[arg(long, value_name = "REV")]
    delete_commit: Option<String>,
    /// Prune only this ref; every other ref keeps its whole history
    /// (repeatable)
    #[arg(long = "only-branch", value_name = "REF")]
    only_branch: Vec<String>,
    /// Keep N parents below REF, whatever --depth and --keep-younger-than
    /// say (repeatable; REF as `arbor refs` prints it)
    #[arg(long = "retain-branch-depth", value_name = "REF=N")]
    retain_branch_depth: Vec<String>,
    /// Walk and delete commit objects only; their trees stay until a plain
    /// prune
    #[arg(long)]
    commit_only: bool,
    /// With --delete-commit: delete only the static deltas leading to that
    /// commit, not the commit
    #[arg(long)]
    static_deltas_only: bool,
    /// Show what would be deleted; delete nothing
    #[arg(long, visible_alias = "no-prune")]
    dry_run: bool,
    /// Print the outcome as JSON on standard output
    #[arg(long)]
    json: bool,
    /// Objects deleted per hold of the repository's exclusive lock (writers
    /// wait at most that long)
    #[arg(long, default_value_t = 4096, value_name = "N", hide = true)]
    batch_size: usize,
}

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let mut opts = PruneOptions {
        refs_only: a.refs_only,
        depth: a.depth,
        only_branches: a.only_branch,
        commit_only: a.commit_only,
        static_deltas_only: a.static_deltas_only,
        dry_run: a.dry_run,
        batch_size: a.batch_size,
        ..Default::default()
    };
    if let Some(d) = &a.keep_younger_than {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs() as i64;
        opts.keep_younger_than = Some(parse_date(d, now).with_context(|| {
            format!(
                "--keep-younger-than {d:?}: not a date (try 2021-06-01, @EPOCH or \"1 week ago\")"
            )
        })?);
    }
    for spec in &a.retain_branch_depth {
        let Some((r, n)) = spec.split_once('=') else {
            bail!("--retain-branch-depth {spec:?}: expected REF=N");
        };
        // ostree reads N with `strtoll`: `2x` is 2.
        let n = arbor::ostree::number::strtoll(n)
            .with_context(|| format!("--retain-branch-depth {spec:?}: {n:?} is not a depth"))?;
        opts.retain_branch_depth.push((r.to_string(), n));
    }
    if let Some(rev) = &a.delete_commit {
        opts.delete_commit = Some(
            repo.resolve_rev(rev)
                .with_context(|| format!("--delete-commit {rev}"))?,
        );
    }
    let bars = ctx.progress(a.json);
    let outcome = prune(&repo, &opts, bars, &ctx.interrupt).map_err(|e| match e {
        PruneError::StaticDeltasOnlyNeedsCommit => {
            anyhow::anyhow!("--static-deltas-only needs --delete-commit")
        }
        PruneError::DryRunDeletesNothing => {
            anyhow::anyhow!("--dry-run and --delete-commit cannot be combined")
        }
        PruneError::MissingObject { .. } => {
            anyhow::Error::new(e).context("run `arbor fsck` to see what else is damaged")
        }
        e => e.into(),
    });
    bars.clear();
    let outcome = outcome?;
    if a.json {
        println!("{}", outcome_json(&outcome));
    } else {
        print_outcome(&outcome, ctx.verbose, opts.commit_only);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `ostree prune` prints, then what arbor also removed.
fn print_outcome(o: &PruneOutcome, verbose: bool, commit_only: bool) {
    if verbose {
        for name in &o.deleted {
            println!(
                "{}{name}",
                if o.dry_run {
                    "would delete "
                } else {
                    "deleted "
                }
            );
        }
    }
    if let Some(c) = &o.commit_deleted {
        println!("Commit {c} deleted");
    }
    println!(
        "Total {}objects: {}",
        if commit_only { "(commit only) " } else { "" },
        o.objects_total
    );
    let n = o.deleted.len();
    if n == 0 {
        println!("No unreachable objects");
    } else if o.dry_run {
        println!(
            "Would delete: {n} objects ({}), freeing {}",
            by_type(o),
            format_bytes(o.bytes_freed)
        );
    } else {
        println!(
            "Deleted {n} objects ({}), {} freed",
            by_type(o),
            format_bytes(o.bytes_freed)
        );
    }
    let verb = if o.dry_run { "Would delete" } else { "Deleted" };
    for (what, list) in [
        ("static deltas", &o.deltas_deleted),
        (
            "summary caches of removed remotes",
            &o.summary_caches_removed,
        ),
    ] {
        if !list.is_empty() {
            println!("{verb} {} {what}: {}", list.len(), list.join(" "));
        }
    }
    if !o.markers_removed.is_empty() {
        println!("{verb} {} commitpartial markers", o.markers_removed.len());
    }
    if !o.commitmeta_removed.is_empty() {
        println!(
            "{verb} detached metadata of {} absent commits",
            o.commitmeta_removed.len()
        );
    }
    if o.spared > 0 {
        println!(
            "Kept {} objects that concurrent writers started using meanwhile",
            o.spared
        );
    }
}

fn by_type(o: &PruneOutcome) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &o.deleted {
        *counts.entry(name.objtype.name()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn outcome_json(o: &PruneOutcome) -> serde_json::Value {
    let strings = |v: &[arbor::ostree::Checksum]| -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    };
    serde_json::json!({
        "dry_run": o.dry_run,
        "objects_total": o.objects_total,
        "commit_deleted": o.commit_deleted.map(|c| c.to_string()),
        "deleted": o.deleted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "bytes_freed": o.bytes_freed,
        "disk_bytes_freed": o.disk_bytes_freed,
        "deltas_deleted": o.deltas_deleted,
        "markers_removed": strings(&o.markers_removed),
        "commitmeta_removed": strings(&o.commitmeta_removed),
        "summary_caches_removed": o.summary_caches_removed,
        "tombstones_written": o.tombstones_written,
        "spared": o.spared,
        "lock_holds": o.lock_holds,
        "longest_lock_hold_ms": o.longest_lock_hold.as_secs_f64() * 1000.0,
    })
}
