//! `arbor stage`: writable roots over stacked commits.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::Ctx;
use super::sandbox::{SandboxArgs, exit_code, notes};
use arbor::progress::{Event, Progress};
use arbor::stage::{BackendChoice, CreateOptions, StageBackend, Stages};
use arbor::store::commit::CommitOptions;

#[derive(Args, Debug)]
pub struct StageArgs {
    #[command(subcommand)]
    command: StageCommand,
}

#[derive(Subcommand, Debug)]
enum StageCommand {
    /// Stack commits into a writable root and print its path
    #[command(
        long_about = "Stack commits into a writable root and print its path.\n\n\
        Later REVs lie on top of earlier ones; overlayfs-style whiteouts in a commit \
        (`.wh.NAME`, `.wh..wh..opq`) hide what the commits below have. Each commit is checked \
        out once into a read-only cache in the repository (hardlinks to its objects) and shared \
        by every stage; a union filesystem puts a writable layer over those checkouts, so the \
        store is never written through. The mount outlives this command: remove it with \
        `arbor stage destroy`."
    )]
    Create {
        /// Name of the stage (letters, digits, '.', '_', '-')
        name: String,
        /// Commits to stack, bottom first: REF, REMOTE:REF or checksum
        #[arg(required = true)]
        revs: Vec<String>,
        /// How the root is made writable; `auto` says on stderr which one
        /// it used and why the others were skipped
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Put the stage's root/, upper/ and work/ in DIR (empty or
        /// missing) instead of inside the repository; the writable layer
        /// must be on a filesystem overlayfs accepts as upper
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// Run the layers' integration commands right after mounting, as
        /// `arbor stage integrate` does (their output goes to stderr, so
        /// stdout stays the root's path); a failure keeps the stage
        #[arg(long)]
        integrate: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Print the path of a stage's root
    Path {
        /// Name of the stage
        name: String,
    },
    /// List stages: name, backend, number of layers, state, size of the
    /// writable layer
    #[command(
        long_about = "List stages: name, backend, number of layers, state and disk usage of the \
        writable layer (of the whole root for copies).\n\n\
        States: mounted (usable); ready (a copy, usable); unmounted (e.g. after a reboot; \
        remounted by exec and commit); broken (mounted but dead, e.g. its FUSE daemon was \
        killed: exec and commit remount it, destroy removes it); busy (another arbor process is \
        creating, remounting or destroying it); incomplete (its `stage create` died: remove it \
        with `arbor stage destroy`)."
    )]
    List {
        /// Print the result as JSON (see docs/json.md)
        #[arg(long)]
        json: bool,
    },
    /// Unmount a stage and delete it (its writable layer is lost)
    Destroy {
        /// Name of the stage
        name: String,
    },
    /// Remove the cached checkouts of commits no stage uses (they are
    /// rebuilt when a stage needs them again)
    Gc,
    /// Run a command in a stage's root; its exit code is passed through
    #[command(
        long_about = "Run a command in a stage's root; its exit code is passed through.\n\n\
        Without --sandbox the command runs on the host with the root as its working directory. \
        With --sandbox (or --chroot) it runs in the stage's build environment (needs root): the \
        root as `/`, in private mount, PID, IPC, UTS and (unless --network host) network \
        namespaces, with a fresh /proc, a minimal /dev (null, zero, full, random, urandom, tty, \
        pts, ptmx, shm), /sys read-only, /tmp and /run as tmpfs, and a clean environment. None of \
        these mounts, nor what is written into them, reaches `stage commit`; what the commits \
        hold at those paths is hidden, not changed. Output streams live, Ctrl-C reaches the \
        command, and whatever it leaves running is ended with it. bubblewrap (`bwrap`) sets it up \
        when installed, else arbor does the same itself."
    )]
    Exec {
        /// Name of the stage
        name: String,
        /// Run in the stage's build environment (see above)
        #[arg(long, visible_alias = "chroot")]
        sandbox: bool,
        #[command(flatten)]
        sandbox_args: SandboxArgs,
        /// The command and its arguments (after `--`)
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Run the integration commands of a stage's layers in its build
    /// environment
    #[command(
        long_about = "Run the integration commands of a stage's layers in its build environment \
        (see `stage exec --sandbox`).\n\n\
        Commits carry them in their `arbor.integration` metadata (`arbor commit --integration \
        NAME=CMD`). The commands of all layers run ordered by NAME (bytewise; equal names in \
        layer order, bottom first), one after the other, each announced on stderr; the first \
        failure stops the run and names the command and the commit (and the refs pointing to \
        it)."
    )]
    Integrate {
        /// Name of the stage
        name: String,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Commit a stage's root to a branch and print the commit checksum
    #[command(
        long_about = "Commit a stage's root to a branch and print the commit checksum.\n\n\
        Only what changed in the writable layer is read and hashed; everything else is taken \
        from the stacked commits' trees as they are. Deletions made in the stage are deletions \
        in the commit (no whiteout files)."
    )]
    Commit {
        /// Name of the stage
        name: String,
        /// Branch to commit to; its current commit becomes the parent
        #[arg(short, long, value_name = "REF")]
        branch: String,
        /// One-line subject
        #[arg(short, long, default_value = "")]
        subject: String,
        /// Longer description
        #[arg(short = 'm', long, default_value = "")]
        body: String,
        /// Commit time in seconds since the epoch [default: $SOURCE_DATE_EPOCH, else now].
        /// The time is part of the commit, so of its checksum
        #[arg(long, value_name = "UNIX_SECONDS")]
        timestamp: Option<u64>,
    },
}

pub fn run(ctx: &Ctx, a: StageArgs) -> Result<ExitCode> {
    match a.command {
        StageCommand::Create {
            name,
            revs,
            backend,
            workdir,
            integrate,
            sandbox,
        } => {
            if sandbox.given() && !integrate {
                bail!("build-environment options need --integrate");
            }
            let sandbox_opts = sandbox.options()?;
            let repo = ctx.open_for_write()?;
            let mut commits = Vec::new();
            for rev in &revs {
                commits.push(
                    repo.resolve_rev(rev)
                        .with_context(|| format!("resolving {rev}"))?,
                );
            }
            let stages = Stages::open(&repo)?;
            let integrate = integrate.then(|| {
                let mut env = sandbox_opts;
                // stdout stays the root's path alone.
                env.stdout = arbor::stage::sandbox::StdoutTo::Stderr;
                env
            });
            let opts = CreateOptions {
                layers: commits.clone(),
                backend,
                workdir,
                integrate,
            };
            let bars = ctx.progress(false);
            // Integration commands are announced as they run (the notes
            // `Stages::integrate` makes); other notes only with -v.
            let progress = |e: Event<'_>| match e {
                Event::Note(n) if n.starts_with("integration ") => {
                    bars.clear();
                    eprintln!("{n}");
                }
                e => bars.report(e),
            };
            let created = stages.create(&name, &opts, &progress, &ctx.interrupt);
            bars.clear();
            let created = match created {
                Err(e @ arbor::stage::StageError::Integrate { .. }) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "stage {name} is kept: fix the cause and run `arbor stage integrate \
                         {name}`, or `arbor stage destroy {name}`"
                    )));
                }
                r => r.with_context(|| format!("creating stage {name}"))?,
            };
            let plural = |n: usize, word: &str| {
                if n == 1 {
                    format!("1 {word}")
                } else {
                    format!("{n} {word}s")
                }
            };
            eprintln!(
                "stage {name}: {}, backend {}{}",
                plural(commits.len(), "layer"),
                created.backend,
                if created.cached > 0 {
                    format!(
                        " ({} checked out into the cache)",
                        plural(created.cached, "commit")
                    )
                } else {
                    String::new()
                }
            );
            for s in &created.skipped {
                eprintln!("  skipped {s}");
            }
            if let Some(done) = &created.integrated {
                eprintln!("stage {name}: {} integration commands run", done.ran.len());
            }
            println!("{}", created.root.display());
        }
        StageCommand::Path { name } => {
            let repo = ctx.open()?;
            let stages = Stages::open(&repo)?;
            let info = stages.info(&name)?;
            let Some(r) = info.record else {
                bail!("stage {name:?} is incomplete; remove it with `arbor stage destroy {name}`");
            };
            println!("{}", r.root().display());
        }
        StageCommand::List { json } => {
            let repo = ctx.open()?;
            let stages = Stages::open(&repo)?;
            let rows = stages.list()?;
            if json {
                let list: Vec<_> = rows.iter().map(super::json::stage).collect();
                super::json::print(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
            println!(
                "{:width$}  {:14}  {:>6}  {:10}  {:>7}",
                "NAME", "BACKEND", "LAYERS", "STATE", "UPPER"
            );
            for r in rows {
                let (backend, layers) = match &r.record {
                    Some(rec) => (
                        rec.backend.map_or("-", StageBackend::name),
                        rec.layers.len().to_string(),
                    ),
                    None => ("-", "-".into()),
                };
                println!(
                    "{:width$}  {:14}  {:>6}  {:10}  {:>7}",
                    r.name,
                    backend,
                    layers,
                    r.state.name(),
                    super::progress::format_bytes(r.upper_bytes).replace(' ', "")
                );
            }
        }
        StageCommand::Destroy { name } => {
            let repo = ctx.open()?;
            let stages = Stages::open(&repo)?;
            stages
                .destroy(&name)
                .with_context(|| format!("destroying stage {name}"))?;
        }
        StageCommand::Gc => {
            let repo = ctx.open()?;
            let stages = Stages::open(&repo)?;
            let n = stages.gc(&ctx.interrupt)?;
            eprintln!("removed {n} unused checkouts from the cache");
        }
        StageCommand::Exec {
            name,
            sandbox,
            sandbox_args,
            command,
        } => {
            if sandbox_args.given() && !sandbox {
                bail!("build-environment options need --sandbox (or --chroot)");
            }
            let repo = ctx.open()?;
            let stages = Stages::open(&repo)?;
            let what = || format!("running {:?} in stage {name}", command[0]);
            let status = if sandbox {
                let opts = sandbox_args.options()?;
                let env = stages
                    .sandbox(&name, &opts, &notes(ctx.verbose))
                    .with_context(what)?;
                // Ctrl-C is the command's (an interactive shell's routine
                // key): arbor only waits, and a dead arbor would end the
                // sandbox.
                arbor::stage::sandbox::ignore_terminal_signals();
                let argv: Vec<std::ffi::OsString> = command.iter().map(Into::into).collect();
                env.run(&argv).with_context(what)?
            } else {
                let mut cmd = std::process::Command::new(&command[0]);
                cmd.args(&command[1..]);
                stages.exec(&name, cmd).with_context(what)?
            };
            return Ok(ExitCode::from(exit_code(status)));
        }
        StageCommand::Integrate { name, sandbox } => {
            let repo = ctx.open()?;
            let stages = Stages::open(&repo)?;
            let done = stages
                .integrate(&name, &sandbox.options()?, &notes(true), &ctx.interrupt)
                .with_context(|| format!("integrating stage {name}"))?;
            eprintln!("stage {name}: {} integration commands run", done.ran.len());
        }
        StageCommand::Commit {
            name,
            branch,
            subject,
            body,
            timestamp,
        } => {
            let branch = super::commit::local_branch(&branch)?;
            let repo = ctx.open_for_write()?;
            let mut opts = CommitOptions::new(branch);
            opts.subject = subject;
            opts.body = body;
            opts.timestamp = timestamp;
            let stages = Stages::open(&repo)?;
            let bars = ctx.progress(false);
            let outcome = stages
                .commit(&name, &opts, bars, &ctx.interrupt)
                .with_context(|| format!("committing stage {name}"))?;
            bars.clear();
            super::gc::after_write(
                &repo,
                outcome.content_bytes_written + outcome.objects_written * 4096,
                false,
                &ctx.interrupt,
            );
            let checksum = outcome.commit;
            println!("{checksum}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
