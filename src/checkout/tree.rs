//! Phases 2 and 3: directories and files, then directory metadata (see
//! the module docs of [`super`] for the order and why).

use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use rustix::fs::{FileType, Mode, Timespec, Timestamps, UTIME_OMIT};

use super::error::CheckoutError;
use super::link::{self, Placer, dir_mode};
use super::plan::{Plan, display_path};
use super::safe::{self, Root};
use super::{CheckoutOptions, LinkMode, Outcome, Overwrite, Stats};
use crate::fs as sys;
use crate::progress::{Event, Phase, Progress};
use crate::store::Repo;

/// Files placed per parallel task: enough to amortise reopening the
/// directory, few enough to spread a big directory over every thread.
const CHUNK: usize = 128;
/// Subdirectories created per parallel task.
const DIR_CHUNK: usize = 16;

struct Run<'a> {
    repo: &'a Repo,
    dest: &'a Path,
    opts: &'a CheckoutOptions,
    plan: &'a Plan,
    root: Root,
    user_mode: bool,
    stats: &'a Stats,
    /// Per plan directory: it existed before (union modes), so its
    /// metadata is left alone.
    existed: Vec<AtomicBool>,
}

pub(super) fn run(
    repo: &Repo,
    dest: &Path,
    opts: &CheckoutOptions,
    plan: &Plan,
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<Outcome, CheckoutError> {
    let user_mode = opts.effective_user_mode(repo);
    // Decided before DEST is created, so a refusal leaves nothing behind.
    let decision = link::decide(repo, opts, user_mode, dest)?;
    let (root, existed) = Root::open(dest).map_err(|source| CheckoutError::Io {
        path: dest.to_path_buf(),
        op: "creating the destination directory",
        source,
    })?;
    let root_dir = &plan.dirs[0];
    // A single-file subpath goes into DEST whether or not it exists.
    if existed && opts.overwrite == Overwrite::Refuse && root_dir.meta.is_some() {
        return Err(CheckoutError::Exists {
            path: dest.to_path_buf(),
        });
    }
    let stats = Stats::default();
    let run = Run {
        repo,
        dest,
        opts,
        plan,
        user_mode,
        stats: &stats,
        existed: (0..plan.dirs.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
        root,
    };
    run.init_root(existed)?;
    let placer = Placer::new(repo, dest, opts, user_mode, decision.method, &stats);

    // Level by level: whiteouts, then the level's files are queued (they
    // only need their own directories) while the next level's
    // directories are created, so both kinds of work overlap.
    let failure: Mutex<Option<CheckoutError>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    let fail = |e: CheckoutError| {
        failed.store(true, Ordering::Relaxed);
        failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    rayon::scope(|scope| {
        for level in &plan.levels {
            if failed.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = level
                .clone()
                .into_par_iter()
                .try_for_each(|i| run.apply_whiteouts(i))
            {
                return fail(e);
            }
            for i in level.clone() {
                let n = plan.dirs[i].tree.files.len();
                for lo in (0..n).step_by(CHUNK) {
                    let (placer, run, fail, failed) = (&placer, &run, &fail, &failed);
                    scope.spawn(move |_| {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        if interrupt.load(Ordering::Relaxed) {
                            return fail(CheckoutError::Interrupted);
                        }
                        match run.place_files(placer, i, lo..(lo + CHUNK).min(n)) {
                            Ok(done) => progress.report(Event::Advance {
                                phase: Phase::Checkout,
                                done,
                                total: Some(run.plan.n_files),
                                bytes: 0,
                            }),
                            Err(e) => fail(e),
                        }
                    });
                }
            }
            let mut batches = Vec::new();
            for i in level.clone() {
                let kids = plan.dirs[i].tree.dirs.len();
                batches.extend(
                    (0..kids)
                        .step_by(DIR_CHUNK)
                        .map(|lo| (i, lo..(lo + DIR_CHUNK).min(kids))),
                );
            }
            if let Err(e) = batches
                .into_par_iter()
                .try_for_each(|(i, kids)| run.make_children(i, kids))
            {
                return fail(e);
            }
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if matches!(e, CheckoutError::Interrupted) && !existed {
            // Interrupted on purpose: a DEST this checkout created is
            // removed, so running it again starts afresh (a half-made
            // tree could not be finished by a re-run: its directories
            // get their metadata only at the end). A DEST merged into
            // keeps what was placed.
            run.remove_new_dest()?;
        }
        return Err(e);
    }

    for level in plan.levels.iter().rev() {
        level
            .clone()
            .into_par_iter()
            .try_for_each(|i| run.finish_dir(i))?;
    }

    let (method, reason) = placer.final_method(decision.reason);
    Ok(stats.outcome(method, reason))
}

impl Run<'_> {
    fn io(
        &self,
        rel: &str,
        name: &str,
        op: &'static str,
    ) -> impl Fn(std::io::Error) -> CheckoutError {
        let path = display_path(self.dest, rel, name);
        move |source| CheckoutError::Io {
            path: path.clone(),
            op,
            source,
        }
    }

    fn open_dir(&self, rel: &str) -> Result<OwnedFd, CheckoutError> {
        self.root
            .open_dir(rel)
            .map_err(self.io(rel, "", "opening the directory"))
    }

    /// Removes DEST, which this checkout created, and everything in it.
    fn remove_new_dest(&self) -> Result<(), CheckoutError> {
        let io = |op| {
            let path = self.dest.to_path_buf();
            move |source| CheckoutError::Io { path, op, source }
        };
        safe::clear(self.root.fd()).map_err(io("removing the interrupted checkout"))?;
        rustix::fs::unlinkat(rustix::fs::CWD, self.dest, rustix::fs::AtFlags::REMOVEDIR)
            .map_err(|e| io("removing the interrupted checkout")(e.into()))
    }

    /// DEST itself: counted, emptied if opaque, given its xattrs if new.
    fn init_root(&self, existed: bool) -> Result<(), CheckoutError> {
        let d = &self.plan.dirs[0];
        let mut new = !existed;
        if existed && d.opaque {
            // ostree removes and recreates DEST; emptying it and treating
            // it as new gives the same tree without touching its parent.
            safe::clear(self.root.fd()).map_err(self.io("", "", "emptying (opaque whiteout)"))?;
            Stats::add(&self.stats.whiteouts, 1);
            new = true;
        }
        self.existed[0].store(!new, Ordering::Relaxed);
        Stats::add(
            if existed {
                &self.stats.dirs_merged
            } else {
                &self.stats.dirs
            },
            1,
        );
        if new {
            self.new_dir_xattrs(self.root.fd(), 0)?;
        }
        Ok(())
    }

    /// Removes what the whiteouts of directory `i` name.
    fn apply_whiteouts(&self, i: usize) -> Result<(), CheckoutError> {
        let d = &self.plan.dirs[i];
        if d.whiteouts.is_empty() {
            return Ok(());
        }
        let fd = self.open_dir(&d.rel)?;
        for w in &d.whiteouts {
            safe::remove(fd.as_fd(), w).map_err(self.io(&d.rel, w, "removing (whiteout)"))?;
            Stats::add(&self.stats.whiteouts, 1);
        }
        Ok(())
    }

    /// Creates some subdirectories of directory `i`: `tree.dirs[kids]`.
    fn make_children(&self, i: usize, kids: Range<usize>) -> Result<(), CheckoutError> {
        let d = &self.plan.dirs[i];
        let fd = self.open_dir(&d.rel)?;
        let fd = fd.as_fd();
        for k in kids {
            let name = &d.tree.dirs[k].name;
            let ci = d.children.start + k;
            if self.plan.dirs[ci].opaque {
                safe::remove(fd, name).map_err(self.io(
                    &d.rel,
                    name,
                    "removing (opaque whiteout)",
                ))?;
                Stats::add(&self.stats.whiteouts, 1);
            }
            let created = self.make_dir(fd, &d.rel, name)?;
            self.existed[ci].store(!created, Ordering::Relaxed);
            if created {
                let cfd = safe::open_subdir(fd, name).map_err(self.io(
                    &d.rel,
                    name,
                    "opening the new directory",
                ))?;
                self.new_dir_xattrs(cfd.as_fd(), ci)?;
            }
        }
        Ok(())
    }

    /// Places some files of directory `i`: `tree.files[files]` that are
    /// not whiteout markers. Returns the number placed so far in total.
    fn place_files(
        &self,
        placer: &Placer<'_>,
        i: usize,
        files: Range<usize>,
    ) -> Result<u64, CheckoutError> {
        let d = &self.plan.dirs[i];
        let fd = self.open_dir(&d.rel)?;
        let mut n = 0;
        for j in files {
            if d.skip.binary_search(&j).is_ok() {
                continue;
            }
            let f = &d.tree.files[j];
            placer.place_file(fd.as_fd(), &d.rel, &f.name, &f.checksum)?;
            n += 1;
        }
        Ok(self.stats.placed.fetch_add(n, Ordering::Relaxed) + n)
    }

    /// Creates a subdirectory (`Ok(true)`), or finds one to merge into in
    /// a union mode (`Ok(false)`).
    fn make_dir(&self, fd: BorrowedFd<'_>, rel: &str, name: &str) -> Result<bool, CheckoutError> {
        let path = || display_path(self.dest, rel, name);
        let io = |op| self.io(rel, name, op);
        if safe::mkdir(fd, name).map_err(io("mkdirat"))? {
            Stats::add(&self.stats.dirs, 1);
            return Ok(true);
        }
        if self.opts.overwrite == Overwrite::Refuse {
            return Err(CheckoutError::Exists { path: path() });
        }
        let Some(st) = safe::lstat(fd, name).map_err(io("lstat"))? else {
            // Removed since mkdirat saw it: try once more.
            if safe::mkdir(fd, name).map_err(io("mkdirat"))? {
                Stats::add(&self.stats.dirs, 1);
                return Ok(true);
            }
            return Err(CheckoutError::Exists { path: path() });
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            Stats::add(&self.stats.dirs_merged, 1);
            return Ok(false);
        }
        // A symlink here must never be followed: it may point anywhere.
        if self.opts.overwrite == Overwrite::Union && self.opts.whiteouts {
            safe::remove(fd, name).map_err(io("removing what is in the way"))?;
            if safe::mkdir(fd, name).map_err(io("mkdirat"))? {
                Stats::add(&self.stats.dirs, 1);
                Stats::add(&self.stats.replaced, 1);
                return Ok(true);
            }
            return Err(CheckoutError::Exists { path: path() });
        }
        Err(CheckoutError::NotADirectory {
            path: path(),
            found: safe::type_name(&st),
        })
    }

    /// xattrs of a directory this checkout created (normal mode), set at
    /// once as libostree does, before anything is put inside.
    fn new_dir_xattrs(&self, fd: BorrowedFd<'_>, i: usize) -> Result<(), CheckoutError> {
        let d = &self.plan.dirs[i];
        if let Some(meta) = &d.meta
            && !self.user_mode
            && !meta.xattrs.is_empty()
        {
            let set = |x| sys::set_fd_xattrs(fd, x).map_err(self.io(&d.rel, "", "setting xattrs"));
            if !self.opts.keep_overlay_xattrs && meta.xattrs.has_overlay() {
                set(&meta.xattrs.without_overlay())?;
                self.stats.dropped_overlay_xattrs(&d.rel, "");
            } else {
                set(&meta.xattrs)?;
            }
        }
        Ok(())
    }

    /// Owner, mode and mtime of a directory this checkout created, once
    /// everything inside it is in place.
    fn finish_dir(&self, i: usize) -> Result<(), CheckoutError> {
        let d = &self.plan.dirs[i];
        let Some(meta) = &d.meta else {
            return Ok(());
        };
        if self.existed[i].load(Ordering::Relaxed) {
            return Ok(());
        }
        let fd = self.open_dir(&d.rel)?;
        let io = |op| self.io(&d.rel, "", op);
        if !self.user_mode {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io("setting the owner")(e.into()))?;
        }
        rustix::fs::fchmod(
            &fd,
            Mode::from_raw_mode(dir_mode(meta.mode, self.repo.mode())),
        )
        .map_err(|e| io("setting the mode")(e.into()))?;
        // Constant directory mtimes, as libostree (not for copies, which
        // are meant to be edited, as `ostree checkout --force-copy`).
        if self.opts.link != LinkMode::Copy {
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
            };
            rustix::fs::futimens(&fd, &times).map_err(|e| io("setting the mtime")(e.into()))?;
        }
        Ok(())
    }
}
