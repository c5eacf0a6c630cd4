//! `arbor refs`: list refs, or create and delete them.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use arbor::store::RefName;
use arbor::store::refs_edit::{create_ref, delete_refs};

#[derive(Args, Debug)]
pub struct RefsArgs {
    /// With --delete, the refs to delete; with --create, the revision the
    /// new ref points at
    #[arg(value_name = "REF|REV")]
    args: Vec<String>,
    /// Delete the named refs (exactly those; all must exist). Their commits
    /// stay until a prune (`arbor prune --refs-only`) or gc removes them
    #[arg(long, conflicts_with = "create")]
    delete: bool,
    /// Create ref NEWREF pointing at REV (an existing ref is not replaced)
    #[arg(long, value_name = "NEWREF")]
    create: Option<String>,
    /// Print the list as JSON (see docs/json.md)
    #[arg(long, conflicts_with_all = ["delete", "create"])]
    json: bool,
}

pub fn run(ctx: &Ctx, a: RefsArgs) -> Result<ExitCode> {
    if a.delete {
        if a.args.is_empty() {
            bail!("--delete needs the refs to delete");
        }
        let names = a
            .args
            .iter()
            .map(|r| RefName::parse(r).with_context(|| format!("ref {r:?}")))
            .collect::<Result<Vec<_>>>()?;
        let repo = ctx.open()?;
        delete_refs(&repo, &names)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(new) = &a.create {
        let [rev] = a.args.as_slice() else {
            bail!("--create {new} needs exactly one revision for it to point at");
        };
        let name = RefName::parse(new).with_context(|| format!("--create {new:?}"))?;
        let repo = ctx.open()?;
        create_ref(&repo, &name, rev).with_context(|| format!("creating ref {new}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if !a.args.is_empty() {
        bail!("listing takes no arguments (did you mean --delete or --create?)");
    }
    super::inspect::refs(ctx, a.json)
}
