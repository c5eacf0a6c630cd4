use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use arbor::store::fsck::{FsckOptions, fsck};

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Print only problems, not the summary
    #[arg(short, long)]
    quiet: bool,
    /// Print the report (problems included) as JSON instead (see
    /// docs/json.md); the exit code is the same
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: FsckArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let bars = ctx.progress(false);
    let report = fsck(&repo, &FsckOptions::default(), bars, &ctx.interrupt)?;
    bars.clear();
    if a.json {
        super::json::print(&super::json::fsck(&report))?;
    } else {
        for p in &report.problems {
            println!("error: {p}");
        }
    }
    if !a.quiet && !a.json {
        eprintln!(
            "{} objects verified, {} commits with complete trees, {} partial commits not verified, {} problems",
            report.objects_checked,
            report.commits_checked,
            report.partial_commits,
            report.problems.len()
        );
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
