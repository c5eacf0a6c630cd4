use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{Ctx, progress};
use arbor::store::fsck::fsck;

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Print only problems, not the summary
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(ctx: &Ctx, a: FsckArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let pb = progress::bar(0, "verifying objects");
    let report = fsck(&repo, &|done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    for p in &report.problems {
        println!("error: {p}");
    }
    if !a.quiet {
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
