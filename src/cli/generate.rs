//! `arbor completions SHELL` and `arbor man [DIR]`: generated from the
//! command line's own definition, so they never disagree with `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the completion script for `shell` to standard output, e.g.
/// `arbor completions bash > /usr/share/bash-completion/completions/arbor`.
pub fn completions(a: CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "arbor", &mut out);
    super::stdout_result(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        &out,
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (arbor.1, arbor-pull.1,
    /// arbor-remote-add.1, …) into DIR, which must exist, instead of the
    /// main page to standard output
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn man(a: ManArgs) -> Result<ExitCode> {
    let cmd = Cli::command();
    match a.dir {
        Some(dir) => clap_mangen::generate_to(cmd, &dir)
            .with_context(|| format!("writing manual pages into {}", dir.display()))?,
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("rendering the manual page")?;
            super::stdout_result(std::io::Write::write_all(
                &mut std::io::stdout().lock(),
                &out,
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
