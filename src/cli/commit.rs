use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use arbor::ostree::Value;
use arbor::publish::commit_signed;
use arbor::stage::integrate::{INTEGRATION_KEY, IntegrationCommand, to_value};
use arbor::store::commit::{CommitOptions, Parent};
use arbor::store::{RefName, Repo};

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Directory whose tree is committed (symlinks inside it are stored as
    /// symlinks, never followed)
    dir: PathBuf,
    /// Branch (ref) to commit to; it is moved to the new commit
    #[arg(short, long, value_name = "REF")]
    branch: String,
    /// One-line subject
    #[arg(short, long, default_value = "")]
    subject: String,
    /// Longer description
    #[arg(short = 'm', long, default_value = "")]
    body: String,
    /// Parent commit, or `none` for a commit without history
    /// [default: the branch's current commit]
    #[arg(long, value_name = "REV|none")]
    parent: Option<String>,
    /// Commit time in seconds since the epoch [default: $SOURCE_DATE_EPOCH, else now].
    /// The time is part of the commit, so of its checksum
    #[arg(long, value_name = "UNIX_SECONDS")]
    timestamp: Option<u64>,
    /// Record this uid as the owner of every file and directory
    #[arg(long, value_name = "N")]
    owner_uid: Option<u32>,
    /// Record this gid as the group of every file and directory
    #[arg(long, value_name = "N")]
    owner_gid: Option<u32>,
    /// Add a string to the commit metadata (repeatable; kept in order)
    #[arg(long, value_name = "KEY=VALUE")]
    add_metadata_string: Vec<String>,
    /// Do not bind the commit to the branch (no ostree.ref-binding)
    #[arg(long)]
    no_bindings: bool,
    /// Carry an integration command (repeatable): `arbor stage integrate`
    /// runs it as `sh -e -c CMD` in the build environment of every stage
    /// holding this commit, the commands of all layers ordered by NAME
    /// (e.g. 00-ldconfig). Stored in the `arbor.integration` metadata
    #[arg(long, value_name = "NAME=CMD")]
    integration: Vec<String>,
    /// Sign the new commit (ed25519 --sign, GPG --gpg-sign / --gpg-key-file)
    #[command(flatten)]
    signing: super::sign::SigningArgs,
}

pub fn run(ctx: &Ctx, a: CommitArgs) -> Result<ExitCode> {
    let branch = local_branch(&a.branch)?;
    // Keys are loaded before any work, so a key that does not parse fails
    // early; one that fails to sign leaves the branch unmoved anyway.
    let keys = a.signing.keys()?;
    let repo = ctx.open_for_write()?;
    let mut opts = CommitOptions::new(branch);
    opts.parent = parent(&repo, a.parent.as_deref())?;
    for kv in &a.add_metadata_string {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--add-metadata-string {kv:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--add-metadata-string {kv:?}: the key is empty");
        }
        opts.metadata.insert(k, Value::Str(v.to_string()));
    }
    if !a.integration.is_empty() {
        let mut commands = Vec::new();
        for spec in &a.integration {
            let Some((name, script)) = spec.split_once('=') else {
                bail!("--integration {spec:?}: expected NAME=CMD");
            };
            commands.push(
                IntegrationCommand::shell(name, script)
                    .with_context(|| format!("--integration {spec:?}"))?,
            );
        }
        opts.metadata.insert(
            INTEGRATION_KEY,
            to_value(&commands).context("--integration")?,
        );
    }
    opts.bind_to_branch = !a.no_bindings;
    opts.subject = a.subject;
    opts.body = a.body;
    opts.timestamp = a.timestamp;
    opts.owner_uid = a.owner_uid;
    opts.owner_gid = a.owner_gid;
    let bars = ctx.progress(false);
    let outcome =
        commit_signed(&repo, &a.dir, &opts, &keys, bars, &ctx.interrupt).with_context(|| {
            format!(
                "committing {} (the branch {} was not moved)",
                a.dir.display(),
                a.branch
            )
        })?;
    bars.clear();
    super::gc::after_write(
        &repo,
        outcome.content_bytes_written + outcome.objects_written * 4096,
        false,
        &ctx.interrupt,
    );
    if ctx.verbose {
        eprintln!(
            "{} files read, {} new objects, {} bytes of new content",
            outcome.files, outcome.objects_written, outcome.content_bytes_written
        );
    }
    println!("{}", outcome.commit);
    Ok(ExitCode::SUCCESS)
}

/// `--parent REV|none`.
pub(crate) fn parent(repo: &Repo, rev: Option<&str>) -> Result<Parent> {
    Ok(match rev {
        None => Parent::BranchHead,
        Some("none") => Parent::None,
        Some(rev) => Parent::Commit(
            repo.resolve_rev(rev)
                .with_context(|| format!("--parent {rev}"))?,
        ),
    })
}

/// `--branch` as a local branch (commits never go to remote refs).
pub(crate) fn local_branch(branch: &str) -> Result<RefName> {
    let name = RefName::parse(branch).with_context(|| format!("--branch {branch:?}"))?;
    match &name {
        RefName::Head(_) => Ok(name),
        _ => bail!("--branch {branch:?}: commit to a local branch, not a remote ref"),
    }
}
