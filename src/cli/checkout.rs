use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;
use arbor::checkout::{CheckoutOptions, LinkMode, Overwrite, checkout};

#[derive(Args, Debug)]
pub struct CheckoutArgs {
    /// Revision to check out: REF, REMOTE:REF, a checksum or a unique prefix
    /// of one, optionally followed by ^ (parent)
    rev: String,
    /// Directory to create (a union mode merges into an existing one)
    dest: PathBuf,
    /// Check out only this path of the commit: a directory becomes DEST, a
    /// file is placed inside DEST
    #[arg(long, value_name = "PATH")]
    subpath: Option<String>,
    /// Merge into DEST: existing files are replaced atomically, directories
    /// merged
    #[arg(long, group = "overwrite")]
    union: bool,
    /// Merge into DEST, keeping files that already exist
    #[arg(long, group = "overwrite")]
    union_add: bool,
    /// Merge into DEST; a file that already exists must be identical (same
    /// inode, or same content, owner, mode and xattrs)
    #[arg(long, group = "overwrite")]
    union_identical: bool,
    /// How files get into DEST
    ///
    /// auto: hardlink store objects when the repository stores files as
    /// this checkout must create them (bare repository and a normal
    /// checkout, bare-user[-only] and -U) and DEST is on its filesystem;
    /// else reflink when the filesystem can; else copy.
    /// hardlink: hardlink, copying what cannot be.
    /// reflink: share data blocks, each file its own inode.
    /// copy: copy everything.
    ///
    /// WARNING: a hardlinked file IS the repository object. Writing through
    /// it (editing in place, chmod, chown, setfattr) corrupts the repository
    /// and every other checkout of that file. Keep hardlinked checkouts
    /// read-only; use --link=copy or --link=reflink for a tree you will
    /// modify, or stage a writable root over a read-only checkout with
    /// `arbor stage`.
    #[arg(long, value_enum, default_value_t = LinkMode::Auto, verbatim_doc_comment)]
    link: LinkMode,
    /// User mode: do not set owners or xattrs; copied files lose
    /// setuid/setgid (always on for bare-user-only repositories)
    #[arg(short = 'U', long)]
    user_mode: bool,
    /// Process overlayfs-style whiteouts: `.wh.NAME` removes NAME from DEST,
    /// `.wh..wh..opq` empties its directory; neither is created
    #[arg(long)]
    whiteouts: bool,
    /// Fail instead of copying a file that should be hardlinked (empty
    /// files and fresh symlinks excepted)
    #[arg(short = 'H', long, conflicts_with = "link")]
    require_hardlinks: bool,
    /// Apply the xattrs that steer union filesystems (trusted.overlay.*,
    /// user.overlay.*, user.fuseoverlayfs.*, user.containers.*) as the
    /// commit has them. Without it they are left out (with a warning
    /// naming the paths): a checkout later used as an overlayfs lower layer
    /// would otherwise let the commit hide or redirect other layers
    #[arg(long)]
    keep_overlay_xattrs: bool,
    /// Print what was done as JSON (see docs/json.md)
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: CheckoutArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    // From resolving to the end, so a prune cannot take the commit away
    // in between (the checkout itself holds it too).
    let _lock = repo.lock_for_reading()?;
    let commit = repo
        .resolve_rev(&a.rev)
        .with_context(|| format!("resolving {}", a.rev))?;
    let opts = CheckoutOptions {
        commit,
        subpath: a.subpath,
        overwrite: if a.union {
            Overwrite::Union
        } else if a.union_add {
            Overwrite::UnionAdd
        } else if a.union_identical {
            Overwrite::UnionIdentical
        } else {
            Overwrite::Refuse
        },
        link: a.link,
        user_mode: a.user_mode,
        whiteouts: a.whiteouts,
        require_hardlinks: a.require_hardlinks,
        keep_overlay_xattrs: a.keep_overlay_xattrs,
        threads: None,
    };
    let _ = ctx.on_interrupt.set(if a.dest.exists() {
        format!("{} keeps the files placed so far", a.dest.display())
    } else {
        format!(
            "{} was removed again: run the command again",
            a.dest.display()
        )
    });
    let bars = ctx.progress(false);
    let o = checkout(&repo, &a.dest, &opts, bars, &ctx.interrupt)?;
    bars.clear();
    warn_overlay_xattrs(&o.overlay_xattrs_dropped);
    if a.json {
        super::json::print(&super::json::checkout(&commit, &a.dest, &o))?;
    }
    if ctx.verbose {
        eprintln!(
            "checked out {commit} into {}: {} files, {} symlinks ({} hardlinked, {} reflinked, {} copied), \
             {} directories created, {} merged, {} kept, {} replaced, {} whiteouts, {} bytes copied",
            a.dest.display(),
            o.files,
            o.symlinks,
            o.hardlinked,
            o.reflinked,
            o.copied,
            o.dirs,
            o.dirs_merged,
            o.kept,
            o.replaced,
            o.whiteouts,
            o.bytes_copied
        );
        eprintln!("link mode: {} ({})", o.method, o.method_reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// Says which entries lost their union-filesystem xattrs (the first few).
fn warn_overlay_xattrs(paths: &[String]) {
    const SHOWN: usize = 10;
    if paths.is_empty() {
        return;
    }
    let mut list = paths[..paths.len().min(SHOWN)].join(", ");
    if paths.len() > SHOWN {
        list.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    eprintln!(
        "warning: overlayfs xattrs (trusted.overlay.*, user.overlay.*…) of {} entr{} were not applied, \
         so the checkout cannot steer a union mount it becomes a layer of: {list} \
         (--keep-overlay-xattrs applies them)",
        paths.len(),
        if paths.len() == 1 { "y" } else { "ies" }
    );
}
