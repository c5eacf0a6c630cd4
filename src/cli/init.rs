use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::Ctx;
use arbor::store::{Repo, RepoMode};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ModeArg {
    Bare,
    BareUser,
    BareUserOnly,
    Archive,
}

impl From<ModeArg> for RepoMode {
    fn from(m: ModeArg) -> RepoMode {
        match m {
            ModeArg::Bare => RepoMode::Bare,
            ModeArg::BareUser => RepoMode::BareUser,
            ModeArg::BareUserOnly => RepoMode::BareUserOnly,
            ModeArg::Archive => RepoMode::Archive,
        }
    }
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// How content is stored: bare (real owners and xattrs, needs root),
    /// bare-user (metadata in user.* xattrs), bare-user-only (no owners or
    /// xattrs), archive (compressed, for serving over HTTP)
    /// [default: bare as root, else bare-user]
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
}

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let mode = a
        .mode
        .map(RepoMode::from)
        .unwrap_or_else(RepoMode::default_for_user);
    let repo = Repo::init(&ctx.repo_path, mode)?;
    if ctx.verbose {
        eprintln!(
            "created {} repository at {}",
            repo.mode(),
            repo.path().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
