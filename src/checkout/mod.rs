//! Materialising a commit's tree into a directory (`arbor checkout`).
//!
//! The result is what `ostree checkout` makes of the same commit (owners,
//! modes, xattrs, symlinks, content), made safely and in parallel.
//!
//! # Phases
//! 1. **Plan** ([`plan`]): the tree is walked breadth first from the root
//!    (or [`CheckoutOptions::subpath`]); each distinct dirtree and dirmeta
//!    is loaded once.
//!    Every name is validated again, the depth is bounded by
//!    [`MAX_DEPTH`](crate::store::commit::MAX_DEPTH) and whiteouts are
//!    classified. Nothing is written before the whole tree has been read,
//!    so a hostile or corrupt tree fails with DEST untouched.
//! 2. **Directories and files** ([`tree`]), level by level, parents
//!    first: a level's whiteouts are applied; then its files are queued
//!    on rayon's pool in chunks (see [`link`] for how each is placed)
//!    while the next level's directories are created, in parallel. Each
//!    directory is created `0700` (so it stays writable while it is
//!    filled) and, in normal mode, gets its xattrs at once, as libostree
//!    does. Files only need their own directory, so placing them overlaps
//!    with creating deeper directories.
//! 3. **Directory metadata**: deepest level first, each directory created
//!    by this checkout gets its owner (normal mode), its mode and an mtime
//!    of 0 (not with [`LinkMode::Copy`], as `ostree checkout --force-copy`).
//!    Doing this last is what lets a `0555` directory be filled, and
//!    bottom-up is what lets a user-mode checkout still reach a child of a
//!    `0000` directory.
//!
//! Directory descriptors are not kept between phases (a big tree would run
//! out of descriptors); a directory is reopened by its path below DEST with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.
//!
//! # Never leaving DEST
//! [`safe`] is the one place that creates, replaces or removes anything
//! under DEST. Every operation is relative to a directory descriptor, on a
//! single validated name, and never follows a symlink: directories are
//! opened `O_NOFOLLOW | O_DIRECTORY`, entries are made with `mkdirat`,
//! `linkat`, `symlinkat` and `renameat`, which do not follow a final
//! symlink. A symlink left in DEST by an earlier checkout where this tree
//! has a directory is therefore an error, not a path out of DEST (libostree
//! follows it). Only DEST itself, the path the user typed, is resolved
//! normally.
//!
//! Regular files are written into an `O_TMPFILE` (or a uniquely named temp
//! file) in their target directory; owner, xattrs and then the mode (setuid
//! last, since `chown` clears it) are applied on the descriptor, and only
//! then is the file linked into place. Nothing half-written is ever visible
//! under its final name. Replacing ([`Overwrite::Union`]) links to a temp name
//! (`.arbor-tmp.PID.N`) and renames over the old entry, so readers see the
//! old or the new file.
//!
//! # Link modes
//! See [`LinkMode`]. `Auto` hardlinks store objects when the repository
//! stores files exactly as this checkout must create them (`bare` with a
//! normal checkout; `bare-user` and `bare-user-only` with a user-mode one)
//! and DEST is on the same filesystem; otherwise it tries reflinks
//! (`FICLONE`, probed on the first file and remembered), then copies.
//! Even in hardlink mode some files are always copied, as libostree does:
//! empty files (they would all share one inode and hit `EMLINK`), files
//! without `u+r` in a user-mode checkout, symlinks of `bare-user*`
//! repositories (stored as regular files or needing fresh links), and any
//! file whose link fails with `EMLINK`, `EPERM` or `EXDEV` (unless
//! hardlinks are required).
//!
//! **Hazard:** a hardlinked file *is* the store object. Writing through it
//! (editing in place, `chmod`, `chown`, `setfattr`) silently corrupts the
//! repository object and every other checkout sharing it. Treat hardlinked
//! checkouts as read-only; use [`LinkMode::Copy`] or [`LinkMode::Reflink`]
//! for a tree that will be modified, or stage a writable root over a
//! read-only checkout ([`crate::stage`]).
//!
//! # xattrs that steer union filesystems
//! A commit may carry `trusted.overlay.*` (or `user.overlay.*`,
//! fuse-overlayfs's `user.fuseoverlayfs.*` and `user.containers.*`)
//! xattrs: data to ostree, but orders to overlayfs when the checkout is
//! later one of its lower layers (`opaque` hides the layers below,
//! `redirect` and `metacopy` take content from elsewhere). They are not
//! applied unless [`CheckoutOptions::keep_overlay_xattrs`]; the entries
//! that had them are listed in [`Outcome::overlay_xattrs_dropped`]. A bare
//! object carrying them is copied, not hardlinked (the hardlink would bring
//! them along). The stage cache keeps them, so that mounting refuses such a
//! layer ([`crate::stage::mount::check_layer`]) instead of showing a
//! changed commit.
//!
//! # Errors, interruption and crashes
//! On an error the first failure is returned (naming the path under DEST and
//! the object) and DEST is left partially written, as with `ostree
//! checkout`, without temp files (anonymous ones vanish, named ones are
//! removed). An interrupted checkout ([`checkout`]'s `interrupt` flag)
//! removes a DEST it created, so it can simply be run again. A crash can leave `.arbor-tmp.*` entries: symlinks being given
//! their owner, or temp files where `O_TMPFILE` is unsupported. Nothing
//! outside DEST is created, changed or removed in any case.

mod error;
mod link;
mod plan;
mod safe;
mod tree;
mod union;
mod whiteout;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use error::CheckoutError;

use crate::ostree::Checksum;
use crate::progress::{Event, Phase, Progress};
use crate::store::{Repo, RepoMode};

/// What to do when an entry of the tree already exists in DEST.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// DEST must not exist (or, for a single-file subpath, must not contain
    /// the file); anything in the way is an error.
    #[default]
    Refuse,
    /// Existing files are replaced atomically; existing directories are
    /// merged into. With whiteouts, a directory in the way of a file (or a
    /// non-directory in the way of a directory) is removed first.
    Union,
    /// Existing files are kept; new ones are added; directories merged.
    UnionAdd,
    /// An existing file must be identical to the tree's (same inode, or the
    /// same checksum recomputed from the file); directories merged.
    UnionIdentical,
}

/// How file content gets from the repository into DEST.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LinkMode {
    /// Hardlink when the repository's objects can be shared, else reflink
    /// when the filesystem supports it, else copy.
    #[default]
    Auto,
    /// Hardlink store objects; files that cannot be hardlinked are copied.
    /// See the module docs for the hazard of writing through hardlinks.
    Hardlink,
    /// Share data blocks with the store objects (`FICLONE`), each file
    /// being its own inode; falls back to copying when unsupported.
    Reflink,
    /// Copy every file.
    Copy,
}

/// How a checkout placed its files, as decided once at the start (and
/// downgraded if reflinks turn out unsupported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Hardlink,
    Reflink,
    Copy,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Hardlink => "hardlink",
            Method::Reflink => "reflink",
            Method::Copy => "copy",
        })
    }
}

/// What to check out and how.
#[derive(Clone, Debug)]
pub struct CheckoutOptions {
    /// The commit (the CLI resolves revisions to it).
    pub commit: Checksum,
    /// Only this path of the tree: a directory becomes DEST itself, a file
    /// is placed inside DEST (which is created `0700` if missing, as ostree
    /// does).
    pub subpath: Option<String>,
    pub overwrite: Overwrite,
    pub link: LinkMode,
    /// No chown, no xattrs; copied files lose setuid/setgid and gain `u+r`.
    /// Always on for `bare-user-only` repositories.
    pub user_mode: bool,
    /// Process overlayfs-style whiteouts: a file `.wh.NAME` removes `NAME`
    /// from DEST and is not created; `.wh..wh..opq` empties its directory.
    pub whiteouts: bool,
    /// Fail instead of copying a file that should have been hardlinked
    /// (implies hardlinks whatever `link` says). Empty files, files without
    /// `u+r` in user mode and bare-user* symlinks are still copied, as
    /// libostree does.
    pub require_hardlinks: bool,
    /// Apply xattrs that steer a union filesystem (`trusted.overlay.*`,
    /// `user.overlay.*` and fuse-overlayfs's, see
    /// [`OVERLAY_XATTR_PREFIXES`](crate::ostree::xattrs::OVERLAY_XATTR_PREFIXES))
    /// as the commit has them. Off by default: a checkout used later as a
    /// lower layer would let the commit hide or redirect the content of
    /// other layers. Entries that had them are listed in
    /// [`Outcome::overlay_xattrs_dropped`]; such files are copied rather
    /// than hardlinked, since a store object carries its xattrs.
    pub keep_overlay_xattrs: bool,
    /// Worker threads; `None` for four per CPU: placing files waits on
    /// the disk (cold object inodes and data) as much as on the CPU, and
    /// more requests in flight keep the device busy.
    pub threads: Option<usize>,
}

impl CheckoutOptions {
    pub fn new(commit: Checksum) -> Self {
        CheckoutOptions {
            commit,
            subpath: None,
            overwrite: Overwrite::Refuse,
            link: LinkMode::Auto,
            user_mode: false,
            whiteouts: false,
            require_hardlinks: false,
            keep_overlay_xattrs: false,
            threads: None,
        }
    }

    /// User mode as it applies to `repo` (forced for bare-user-only).
    fn effective_user_mode(&self, repo: &Repo) -> bool {
        self.user_mode || repo.mode() == RepoMode::BareUserOnly
    }
}

/// What a checkout did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Directories created.
    pub dirs: u64,
    /// Existing directories merged into (union modes; DEST itself included).
    pub dirs_merged: u64,
    /// Regular files placed.
    pub files: u64,
    /// Symlinks placed.
    pub symlinks: u64,
    /// Of the files and symlinks placed: how many are hardlinks to store
    /// objects, reflinked copies, and plain copies (or fresh symlinks).
    pub hardlinked: u64,
    pub reflinked: u64,
    pub copied: u64,
    /// Existing files left in place (`--union-add`, `--union-identical`).
    pub kept: u64,
    /// Existing files replaced (`--union`).
    pub replaced: u64,
    /// Whiteouts applied (including opaque-directory markers).
    pub whiteouts: u64,
    /// Bytes written by copying (not by hardlinks or reflinks).
    pub bytes_copied: u64,
    /// The method chosen for the checkout, and why.
    pub method: Method,
    pub method_reason: String,
    /// Entries whose union-filesystem xattrs were not applied (see
    /// [`CheckoutOptions::keep_overlay_xattrs`]), as paths below DEST
    /// starting with `/` (`/` is DEST itself), sorted.
    pub overlay_xattrs_dropped: Vec<String>,
}

/// Checks out `opts.commit` from `repo` into `dest`.
///
/// Progress: [`Phase::Checkout`] in files, once the tree has been read;
/// the method chosen is a [`Event::Note`]. When `interrupt` is set the
/// checkout stops between batches of files with
/// [`CheckoutError::Interrupted`]: a DEST it created is removed again (so
/// the same call can simply be repeated); a DEST it merged into (union
/// modes) keeps the files placed so far, as after any failure.
pub fn checkout(
    repo: &Repo,
    dest: &Path,
    opts: &CheckoutOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<Outcome, CheckoutError> {
    let commit_error = |source| CheckoutError::Commit {
        commit: opts.commit,
        source: Box::new(source),
    };
    // Held throughout: no prune deletes the objects being placed.
    let _lock = repo.lock_for_reading().map_err(commit_error)?;
    let commit = repo.load_commit(&opts.commit).map_err(commit_error)?;
    let outcome = run_checkout(
        repo,
        (commit.root_tree, commit.root_meta),
        dest,
        opts,
        progress,
        interrupt,
    )?;
    crate::store::used::record(repo, &[opts.commit]);
    Ok(outcome)
}

/// Checks out the tree whose root is (dirtree, dirmeta) `root`.
fn run_checkout(
    repo: &Repo,
    root: (Checksum, Checksum),
    dest: &Path,
    opts: &CheckoutOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<Outcome, CheckoutError> {
    let threads = opts.threads.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus * 4).clamp(4, 64)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("checkout-{i}"))
        .build()
        .map_err(|e| CheckoutError::Io {
            path: dest.to_path_buf(),
            op: "starting worker threads",
            source: std::io::Error::other(e),
        })?;
    pool.install(|| {
        let plan = plan::build(repo, root, opts, dest)?;
        crate::progress::check(interrupt)?;
        progress.report(Event::Start {
            phase: Phase::Checkout,
            total: Some(plan.n_files),
        });
        let outcome = tree::run(repo, dest, opts, &plan, progress, interrupt)?;
        progress.report(Event::Finish {
            phase: Phase::Checkout,
        });
        Ok(outcome)
    })
}

/// Checks out the tree (`root_tree`, `root_meta`) — objects in `repo` that
/// no commit needs to name, such as the merged tree of a stage — as if it
/// were the tree of `opts.commit`. Not public: nothing keeps such a tree
/// from a prune but the caller, which must hold the shared lock from
/// writing it (or finding it present) until this returns, as a copy
/// stage's create does.
pub(crate) fn checkout_tree(
    repo: &Repo,
    dest: &Path,
    root_tree: Checksum,
    root_meta: Checksum,
    opts: &CheckoutOptions,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<Outcome, CheckoutError> {
    let _lock = repo
        .lock_for_reading()
        .map_err(|source| CheckoutError::Commit {
            commit: opts.commit,
            source: Box::new(source),
        })?;
    run_checkout(
        repo,
        (root_tree, root_meta),
        dest,
        opts,
        progress,
        interrupt,
    )
}

/// Counters shared by the worker threads.
#[derive(Default)]
struct Stats {
    dirs: AtomicU64,
    dirs_merged: AtomicU64,
    files: AtomicU64,
    symlinks: AtomicU64,
    hardlinked: AtomicU64,
    reflinked: AtomicU64,
    copied: AtomicU64,
    kept: AtomicU64,
    replaced: AtomicU64,
    whiteouts: AtomicU64,
    bytes_copied: AtomicU64,
    placed: AtomicU64,
    overlay_xattrs_dropped: std::sync::Mutex<Vec<String>>,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes that the entry `rel/name` below DEST lost its overlay xattrs.
    fn dropped_overlay_xattrs(&self, rel: &str, name: &str) {
        let mut path = String::with_capacity(rel.len() + name.len() + 2);
        for part in [rel, name] {
            if !part.is_empty() {
                path.push('/');
                path.push_str(part);
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        self.overlay_xattrs_dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path);
    }

    fn outcome(&self, method: Method, method_reason: String) -> Outcome {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Outcome {
            dirs: g(&self.dirs),
            dirs_merged: g(&self.dirs_merged),
            files: g(&self.files),
            symlinks: g(&self.symlinks),
            hardlinked: g(&self.hardlinked),
            reflinked: g(&self.reflinked),
            copied: g(&self.copied),
            kept: g(&self.kept),
            replaced: g(&self.replaced),
            whiteouts: g(&self.whiteouts),
            bytes_copied: g(&self.bytes_copied),
            method,
            method_reason,
            overlay_xattrs_dropped: {
                let mut v = std::mem::take(
                    &mut *self
                        .overlay_xattrs_dropped
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                v.sort();
                v
            },
        }
    }
}
