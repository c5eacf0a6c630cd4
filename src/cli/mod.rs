//! The `arbor` command line: argument parsing and output only; the work is
//! done by the library modules.

mod checkout;
mod commit;
mod fsck;
mod gc;
mod generate;
mod hint;
mod init;
mod inspect;
mod json;
mod progress;
mod prune;
mod pull;
mod refs;
mod remote;
mod sandbox;
mod sign;
mod stage;
mod static_delta;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use arbor::store::Repo;

#[derive(Parser, Debug)]
#[command(
    name = "arbor",
    version,
    about = "Pull, store, check out and stage OSTree commits",
    long_about = "arbor keeps OSTree commits in a local content-addressed repository that the real \
                  `ostree` can read: it pulls them from local and HTTP repositories (verified, in \
                  parallel, resumable), checks trees out by hardlink, reflink or copy, commits \
                  directories, and inspects and verifies the store."
)]
pub struct Cli {
    /// Repository to use [default: $ARBOR_REPO, else /var/lib/arbor/repo as root, else
    /// $XDG_DATA_HOME/arbor/repo]
    #[arg(long, global = true, value_name = "PATH")]
    repo: Option<PathBuf>,

    /// Say more about what is being done (on stderr)
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository
    Init(init::InitArgs),
    /// Commit a directory tree to a branch and print the commit checksum
    Commit(commit::CommitArgs),
    /// List refs (local heads, and remote refs as REMOTE:REF); create or delete them
    Refs(refs::RefsArgs),
    /// Print the commit checksum a revision names
    RevParse(inspect::RevParseArgs),
    /// Show a commit and its ancestors, newest first
    Log(inspect::LogArgs),
    /// List a commit's tree, in the same format as `ostree ls`
    Ls(inspect::LsArgs),
    /// Write a file of a commit to standard output
    Cat(inspect::CatArgs),
    /// Describe an object: a revision (its commit) or CHECKSUM.TYPE
    Show(inspect::ShowArgs),
    /// Verify every object and every commit's tree
    Fsck(fsck::FsckArgs),
    /// Check out a commit's tree into a directory (hardlinked, reflinked or copied)
    Checkout(checkout::CheckoutArgs),
    /// Manage remotes (kept in the repository config, visible to ostree)
    Remote(remote::RemoteArgs),
    /// Fetch commits and their trees from a remote, URL or local repository
    Pull(pull::PullArgs),
    /// Writable roots over stacked commits (overlayfs, FUSE unions or a copy), committed back
    Stage(stage::StageArgs),
    /// Write the summary (and summary.sig) that clients read, or print it
    Summary(summary::SummaryArgs),
    /// Generate, list, show and delete static deltas
    StaticDelta(static_delta::StaticDeltaArgs),
    /// Sign a commit with ed25519 keys (ostree.sign.ed25519)
    Sign(sign::SignArgs),
    /// GPG-sign a commit (ostree.gpgsigs), through gpg or an exported key file
    GpgSign(sign::GpgSignArgs),
    /// Delete unreachable objects and old history (ostree prune's options)
    Prune(prune::PruneArgs),
    /// Keep the store under a size cap, evicting least recently used artifacts
    Gc(gc::GcArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(generate::CompletionsArgs),
    /// Print the manual page, or write one per command into DIR
    Man(generate::ManArgs),
}

/// Global options every command sees.
pub(crate) struct Ctx {
    repo_path: PathBuf,
    explicit_repo: bool,
    pub verbose: bool,
    /// Set by SIGINT/SIGTERM; passed to long operations.
    pub interrupt: Arc<AtomicBool>,
    bars: OnceLock<progress::Bars>,
    /// What an interrupted command leaves and how to go on, when not the
    /// usual "what was completed is kept: run the command again".
    pub on_interrupt: OnceLock<String>,
}

impl Ctx {
    /// The progress reporter of this command (bars on a terminal, notes
    /// with `-v`); `quiet` hides the bars.
    pub fn progress(&self, quiet: bool) -> &progress::Bars {
        self.bars
            .get_or_init(|| progress::Bars::new(self.verbose, quiet))
    }

    /// Opens the repository for reading.
    pub fn open(&self) -> Result<Repo> {
        Ok(Repo::open(&self.repo_path)?)
    }

    /// Opens the repository for writing; the default repository is created
    /// on first use, an explicitly named one must exist.
    pub fn open_for_write(&self) -> Result<Repo> {
        if self.explicit_repo {
            return self.open();
        }
        Repo::open_or_init(&self.repo_path).with_context(|| {
            format!(
                "opening or creating the default repository {}",
                self.repo_path.display()
            )
        })
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let ctx = Ctx {
        explicit_repo: cli.repo.is_some(),
        repo_path: cli.repo.clone().unwrap_or_else(default_repo_path),
        verbose: cli.verbose,
        interrupt: progress::interrupt_flag(),
        bars: OnceLock::new(),
        on_interrupt: OnceLock::new(),
    };
    let result = run(&ctx, cli.command);
    if let Some(bars) = ctx.bars.get() {
        bars.clear();
    }
    match result {
        Ok(code) => code,
        Err(_) if ctx.interrupt.load(Ordering::Relaxed) => {
            let done = ctx.bars.get().map(|b| b.summary()).unwrap_or_default();
            eprintln!(
                "interrupted{}; {}",
                if done.is_empty() {
                    String::new()
                } else {
                    format!(" ({done})")
                },
                ctx.on_interrupt.get().map_or(
                    "what was completed is kept: run the command again to finish",
                    String::as_str
                )
            );
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(ctx: &Ctx, command: Command) -> Result<ExitCode> {
    match command {
        Command::Init(a) => init::run(ctx, a),
        Command::Commit(a) => commit::run(ctx, a),
        Command::Refs(a) => refs::run(ctx, a),
        Command::RevParse(a) => inspect::rev_parse(ctx, a),
        Command::Log(a) => inspect::log(ctx, a),
        Command::Ls(a) => inspect::ls(ctx, a),
        Command::Cat(a) => inspect::cat(ctx, a),
        Command::Show(a) => inspect::show(ctx, a),
        Command::Fsck(a) => fsck::run(ctx, a),
        Command::Checkout(a) => checkout::run(ctx, a),
        Command::Remote(a) => remote::run(ctx, a),
        Command::Pull(a) => pull::run(ctx, a),
        Command::Stage(a) => stage::run(ctx, a),
        Command::Summary(a) => summary::run(ctx, a),
        Command::StaticDelta(a) => static_delta::run(ctx, a),
        Command::Sign(a) => sign::sign(ctx, a),
        Command::GpgSign(a) => sign::gpg_sign(ctx, a),
        Command::Prune(a) => prune::run(ctx, a),
        Command::Gc(a) => gc::run(ctx, a),
        Command::Completions(a) => generate::completions(a),
        Command::Man(a) => generate::man(a),
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message already includes, then what to do about it (see [`hint`]).
fn render_error(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    if let Some(h) = hint::hint(e) {
        out.push_str(&format!(" ({h})"));
    }
    out
}

/// Maps a broken pipe on stdout (e.g. `arbor cat … | head`) to success.
pub(crate) fn stdout_result(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.context("writing to standard output")?),
    }
}

/// The repository path used when none is given: `$ARBOR_REPO`, else
/// `/var/lib/arbor/repo` for root, else `$XDG_DATA_HOME/arbor/repo`.
pub fn default_repo_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ARBOR_REPO").filter(|p| !p.is_empty()) {
        return p.into();
    }
    if rustix::process::geteuid().is_root() {
        return "/var/lib/arbor/repo".into();
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("arbor/repo")
}

#[cfg(test)]
mod tests {
    /// Clap's own consistency checks (unique short flags, valid defaults)
    /// over every subcommand; otherwise they fire only when the faulty
    /// subcommand is run.
    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
