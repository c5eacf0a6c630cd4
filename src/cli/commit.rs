use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use arbor::ostree::commit::{COLLECTION_BINDING, REF_BINDING};
use arbor::ostree::{Metadata, Value};
use arbor::store::commit::{CommitInfo, TreeOptions, write_commit, write_directory};
use arbor::store::{RefName, Repo, Transaction};

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
    /// Commit time in seconds since the epoch [default: $SOURCE_DATE_EPOCH, else now]
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
}

pub fn run(ctx: &Ctx, a: CommitArgs) -> Result<ExitCode> {
    let (branch, branch_name) = local_branch(&a.branch)?;
    let repo = ctx.open_for_write()?;
    let parent = match a.parent.as_deref() {
        Some("none") => None,
        Some(rev) => Some(
            repo.resolve_rev(rev)
                .with_context(|| format!("--parent {rev}"))?,
        ),
        None => repo.read_ref(&branch)?,
    };
    let mut metadata = Metadata::new();
    for kv in &a.add_metadata_string {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--add-metadata-string {kv:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--add-metadata-string {kv:?}: the key is empty");
        }
        metadata.insert(k, Value::Str(v.to_string()));
    }
    if !a.no_bindings {
        bind_to_branch(&repo, &mut metadata, &branch_name);
    }
    let timestamp = a.timestamp.map_or_else(default_timestamp, Ok)?;

    let txn = Transaction::begin(&repo)?;
    let opts = TreeOptions::for_mode(repo.mode(), a.owner_uid, a.owner_gid);
    let (tree, meta) = write_directory(&txn, &a.dir, opts)
        .with_context(|| format!("committing {}", a.dir.display()))?;
    let info = CommitInfo {
        metadata,
        parent,
        subject: a.subject,
        body: a.body,
        timestamp,
    };
    let checksum = write_commit(&txn, tree, meta, info)?;
    txn.set_ref(branch, Some(checksum));
    let stats = txn.commit()?;
    if ctx.verbose {
        eprintln!(
            "{} new objects, {} bytes of new content",
            stats.objects_written, stats.content_bytes_written
        );
    }
    println!("{checksum}");
    Ok(ExitCode::SUCCESS)
}

/// `--branch` as a local branch (commits never go to remote refs).
pub(crate) fn local_branch(branch: &str) -> Result<(RefName, String)> {
    let name = RefName::parse(branch).with_context(|| format!("--branch {branch:?}"))?;
    match &name {
        RefName::Head(b) => {
            let b = b.clone();
            Ok((name, b))
        }
        _ => bail!("--branch {branch:?}: commit to a local branch, not a remote ref"),
    }
}

/// Binds a commit to its branch (and the repository's collection), as
/// `ostree commit` does, so a pull can refuse it under another name.
pub(crate) fn bind_to_branch(repo: &Repo, metadata: &mut Metadata, branch: &str) {
    metadata.insert(REF_BINDING, Value::StrArray(vec![branch.to_string()]));
    if let Some(cid) = repo.collection_id() {
        metadata.insert(COLLECTION_BINDING, Value::Str(cid));
    }
}

pub(crate) fn default_timestamp() -> Result<u64> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}
