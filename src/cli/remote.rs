use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Ctx;
use super::pull::open_source;

#[derive(Args, Debug)]
pub struct RemoteArgs {
    #[command(subcommand)]
    command: RemoteCommand,
}

#[derive(Subcommand, Debug)]
enum RemoteCommand {
    /// Add a remote (written to the repository config as ostree does)
    Add {
        /// Remote name
        name: String,
        /// Base URL of the repository: http(s)://… or file://…
        url: String,
        /// Do not require signatures (GPG or ed25519) on commits
        #[arg(long)]
        no_sign_verify: bool,
    },
    /// List remotes and their URLs
    List,
    /// Remove a remote (its refs under refs/remotes are kept)
    Delete {
        /// Remote name
        name: String,
    },
    /// List the refs a remote offers (from its summary, else its refs/ for
    /// local repositories)
    Refs {
        /// Remote name
        name: String,
    },
}

pub fn run(ctx: &Ctx, a: RemoteArgs) -> Result<ExitCode> {
    match a.command {
        RemoteCommand::Add {
            name,
            url,
            no_sign_verify,
        } => {
            let mut repo = ctx.open_for_write()?;
            repo.add_remote(&name, &url, !no_sign_verify)?;
        }
        RemoteCommand::List => {
            let repo = ctx.open()?;
            for r in repo.remotes() {
                println!("{}\t{}", r.name, r.url);
            }
        }
        RemoteCommand::Delete { name } => {
            let mut repo = ctx.open()?;
            repo.delete_remote(&name)?;
        }
        RemoteCommand::Refs { name } => {
            let repo = ctx.open()?;
            let remote = repo.remote(&name)?;
            let source = open_source(&remote.url, std::time::Duration::from_secs(30), 2)?;
            for (r, c) in crate::pull::list_source_refs(source.as_ref(), 5)? {
                println!("{name}:{r}\t{c}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
