//! The sandbox without bubblewrap: namespaces and mounts by system calls.
//!
//! # Processes
//! ```text
//! caller ── fork ──▶ A  unshare(PID); ignores SIGINT/SIGQUIT; waits for B
//!                    └─ fork ──▶ B  pid 1 of the new PID namespace:
//!                                   unshare(NS, IPC, UTS[, NET]); mounts;
//!                                   pivot_root into the stage; lo up
//!                                   └─ fork ──▶ C  pid 2: execve(CMD)
//! ```
//! A and B set `PR_SET_PDEATHSIG` to SIGKILL, so a dead caller takes the
//! sandbox with it: A dies, B (the namespace's init) dies, and the kernel
//! kills everything else in the namespace. B exits as soon as C does, which
//! ends whatever C left running. A is needed because a process cannot
//! enter a PID namespace it creates; it stays outside, ignores the
//! terminal's SIGINT and SIGQUIT (which reach C directly: the terminal
//! signals the whole foreground process group), and is what the caller
//! waits for. B, as a namespace init, ignores them anyway.
//!
//! # Between fork and exec
//! The caller may have other threads (which might hold the allocator's
//! lock), so the children only make system calls on data prepared before
//! the first fork: every path, argument and environment string is a
//! `CString` built here, every bind source is an `open_tree` descriptor
//! (read-only ones already made read-only with `mount_setattr`), the
//! candidate paths of the command are listed in advance (as `execvp`
//! would try them), and errors travel to the caller as three integers on
//! a pipe (a step number and an errno), turned into messages by the
//! caller. Nothing in the children allocates, panics or returns.
//!
//! # Mounts (in B, after `pivot_root`)
//! The whole tree is made private first, so nothing propagates back to
//! the host. The stage's root is bind-mounted onto itself (`pivot_root`
//! wants a mount point) and made the root with `pivot_root(".", ".")`
//! followed by a lazy unmount of the old root, which needs no directory
//! in the stage for the old root. From then on every path resolves inside
//! the stage, and host files are reachable only through the descriptors
//! prepared before: the device nodes, `/sys` and the bind sources are
//! attached with `move_mount`. Mount points under `/tmp`, `/run`, `/dev`
//! or another bind are made there (in tmpfs or in the bind's source);
//! those in the stage were made by the caller ([`super::mountpoints`]).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::{CapabilitySet, UnshareFlags};

use super::{Network, Placement, SandboxError, SandboxOptions, StdoutTo, mountpoints::Kind};

/// A message from the children: tag, step, value.
const MSG_LEN: usize = 12;
const TAG_SETUP: u32 = 1;
const TAG_EXEC: u32 = 2;
const TAG_STATUS: u32 = 3;

/// Steps before the plan's own (numbered from 0).
const STEP_PDEATHSIG: u32 = 1_000;
const STEP_UNSHARE_PID: u32 = 1_001;
const STEP_FORK_INIT: u32 = 1_002;
const STEP_UNSHARE: u32 = 1_003;
const STEP_PRIVATE: u32 = 1_004;
const STEP_BIND_ROOT: u32 = 1_005;
const STEP_CHDIR_ROOT: u32 = 1_006;
const STEP_PIVOT: u32 = 1_007;
const STEP_DETACH_OLD: u32 = 1_008;
const STEP_LOOPBACK: u32 = 1_009;
const STEP_FORK_COMMAND: u32 = 1_010;
const STEP_STDOUT: u32 = 1_011;
const STEP_CLOEXEC: u32 = 1_012;
const STEP_CAPABILITIES: u32 = 1_013;

fn fixed_step(step: u32, root: &Path) -> String {
    match step {
        STEP_PDEATHSIG => "setting the parent-death signal".into(),
        STEP_UNSHARE_PID => "creating a PID namespace".into(),
        STEP_FORK_INIT => "starting the sandbox's init".into(),
        STEP_UNSHARE => "creating mount, IPC, UTS and network namespaces".into(),
        STEP_PRIVATE => "making the mount tree private".into(),
        STEP_BIND_ROOT => format!("bind-mounting {} onto itself", root.display()),
        STEP_CHDIR_ROOT => format!("entering {}", root.display()),
        STEP_PIVOT => format!("pivot_root into {}", root.display()),
        STEP_DETACH_OLD => "detaching the old root".into(),
        STEP_LOOPBACK => "bringing the loopback interface up".into(),
        STEP_FORK_COMMAND => "starting the command".into(),
        STEP_STDOUT => "sending standard output to standard error".into(),
        STEP_CLOEXEC => "closing the caller's other descriptors on exec".into(),
        STEP_CAPABILITIES => "lowering the command's capabilities".into(),
        _ => format!("step {step}"),
    }
}

/// One set-up action in B, after `pivot_root`.
enum Step {
    /// `mkdir`, an existing entry accepted.
    Mkdir(CString),
    /// Creates an empty file (an existing one accepted).
    Touch(CString),
    Mount {
        source: &'static CStr,
        target: CString,
        fstype: &'static CStr,
        flags: MountFlags,
        data: &'static CStr,
    },
    /// Binds a path onto itself and remounts that with these flags
    /// (skipped when missing: /proc/bus is not everywhere).
    OverItself(CString, MountFlags),
    /// Attaches `fds[index]` at the path.
    Attach(usize, CString),
    Symlink(&'static CStr, CString),
}

/// Everything the children need, made before forking.
struct Plan {
    root: CString,
    steps: Vec<Step>,
    descriptions: Vec<String>,
    /// `open_tree` clones to attach; kept open until the children are gone.
    fds: Vec<OwnedFd>,
    unshare: UnshareFlags,
    /// The command's capabilities.
    caps: CapabilitySet,
    loopback: bool,
    stdout_to_stderr: bool,
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl Plan {
    fn push(&mut self, step: Step, description: String) {
        self.steps.push(step);
        self.descriptions.push(description);
    }
}

fn cstring(bytes: &[u8]) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::NulInArgument {
        arg: OsStr::from_bytes(bytes).to_os_string(),
    })
}

fn cpath(p: &Path) -> Result<CString, SandboxError> {
    cstring(p.as_os_str().as_bytes())
}

/// A detached copy of the mount tree at `path` (with its submounts),
/// nosuid (and nodev unless it is a device node), as bubblewrap binds.
fn clone_tree(path: &Path, read_only: bool, device: bool) -> Result<OwnedFd, SandboxError> {
    let err = |e: Errno| SandboxError::BindSource {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let fd = rustix::mount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(err)?;
    let mut attrs = MOUNT_ATTR_NOSUID;
    if read_only {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    if !device {
        attrs |= MOUNT_ATTR_NODEV;
    }
    set_attrs(&fd, attrs).map_err(err)?;
    Ok(fd)
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Sets mount attributes on a detached tree, submounts included. rustix
/// does not wrap mount_setattr(2).
fn set_attrs(fd: &OwnedFd, attrs: u64) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor, a NUL-terminated empty path and a
    // `struct mount_attr` of the size passed, all live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno()))
    }
}

fn build_plan(
    root: &Path,
    opts: &SandboxOptions,
    placement: &Placement,
    argv: &[OsString],
) -> Result<Plan, SandboxError> {
    let mut unshare = UnshareFlags::NEWNS | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if opts.network == Network::None {
        unshare |= UnshareFlags::NEWNET;
    }
    let env: Vec<CString> = opts
        .full_env()
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv)
        })
        .collect::<Result<_, _>>()?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let program = argv[0].as_bytes();
    let candidates = if program.contains(&b'/') {
        vec![cstring(program)?]
    } else {
        // As execvp: each PATH entry in turn (an empty one is the cwd, /).
        let path = opts.path_var();
        path.as_bytes()
            .split(|b| *b == b':')
            .map(|dir| {
                let mut p = if dir.is_empty() {
                    b".".to_vec()
                } else {
                    dir.to_vec()
                };
                p.push(b'/');
                p.extend_from_slice(program);
                cstring(&p)
            })
            .collect::<Result<_, _>>()?
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let mut plan = Plan {
        root: cpath(root)?,
        steps: Vec::new(),
        descriptions: Vec::new(),
        fds: Vec::new(),
        unshare,
        caps: super::kept_capabilities()?
            .into_iter()
            .fold(CapabilitySet::empty(), |all, (c, _)| all | c),
        loopback: opts.network == Network::None,
        stdout_to_stderr: opts.stdout == StdoutTo::Stderr,
        candidates,
        _argv: args,
        argv_ptrs,
        _envp: env,
        envp_ptrs,
    };

    // Every destination as resolved in the stage ([`Placement`]); after
    // `pivot_root` any path resolves in the stage anyway, never on the
    // host.
    let proc = placement.fixed_at("proc");
    let dev = placement.fixed_at("dev");
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    push_points(&mut plan, placement, 0)?;
    plan.push(
        Step::Mount {
            source: c"proc",
            target: cpath(&proc)?,
            fstype: c"proc",
            flags: nosuid_nodev | MountFlags::NOEXEC,
            data: c"",
        },
        format!("mounting proc on {}", proc.display()),
    );
    // As bubblewrap: /proc/sys and sysrq-trigger keep the host /proc's
    // flags (it binds them from there), irq and bus get noexec.
    let ro = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    for (p, flags) in [
        ("sys", ro),
        ("sysrq-trigger", ro),
        ("irq", ro | MountFlags::NOEXEC),
        ("bus", ro | MountFlags::NOEXEC),
    ] {
        let p = proc.join(p);
        plan.push(
            Step::OverItself(cpath(&p)?, flags),
            format!("making {} read-only", p.display()),
        );
    }
    push_points(&mut plan, placement, 1)?;
    plan.push(
        Step::Mount {
            source: c"tmpfs",
            target: cpath(&dev)?,
            fstype: c"tmpfs",
            flags: nosuid_nodev,
            data: c"mode=0755",
        },
        format!("mounting a tmpfs on {}", dev.display()),
    );
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(node);
        let fd = clone_tree(&host, false, true)?;
        plan.fds.push(fd);
        let here = dev.join(node);
        let target = cpath(&here)?;
        plan.push(
            Step::Touch(target.clone()),
            format!("creating {}", here.display()),
        );
        plan.push(
            Step::Attach(plan.fds.len() - 1, target),
            format!(
                "binding the host's {} onto {}",
                host.display(),
                here.display()
            ),
        );
    }
    let pts = dev.join("pts");
    plan.push(
        Step::Mkdir(cpath(&pts)?),
        format!("creating {}", pts.display()),
    );
    plan.push(
        Step::Mount {
            source: c"devpts",
            target: cpath(&pts)?,
            fstype: c"devpts",
            flags: MountFlags::NOSUID | MountFlags::NOEXEC,
            data: c"newinstance,ptmxmode=0666,mode=620",
        },
        format!("mounting a devpts instance on {}", pts.display()),
    );
    let ptmx = dev.join("ptmx");
    plan.push(
        Step::Symlink(c"pts/ptmx", cpath(&ptmx)?),
        format!("creating {}", ptmx.display()),
    );
    let shm = dev.join("shm");
    plan.push(
        Step::Mkdir(cpath(&shm)?),
        format!("creating {}", shm.display()),
    );
    plan.push(
        Step::Mount {
            source: c"tmpfs",
            target: cpath(&shm)?,
            fstype: c"tmpfs",
            flags: nosuid_nodev,
            data: c"mode=1777",
        },
        format!("mounting a tmpfs on {}", shm.display()),
    );
    for (target, link) in [
        (c"/proc/self/fd", "fd"),
        (c"/proc/self/fd/0", "stdin"),
        (c"/proc/self/fd/1", "stdout"),
        (c"/proc/self/fd/2", "stderr"),
        (c"/proc/kcore", "core"),
    ] {
        let link = dev.join(link);
        plan.push(
            Step::Symlink(target, cpath(&link)?),
            format!("creating {}", link.display()),
        );
    }
    let sys = clone_tree(Path::new("/sys"), true, false)?;
    plan.fds.push(sys);
    let sys_at = placement.fixed_at("sys");
    push_points(&mut plan, placement, 2)?;
    plan.push(
        Step::Attach(plan.fds.len() - 1, cpath(&sys_at)?),
        format!(
            "binding the host's /sys read-only onto {}",
            sys_at.display()
        ),
    );
    for (i, name, mode) in [(3, "tmp", c"mode=1777"), (4, "run", c"mode=0755")] {
        let target = placement.fixed_at(name);
        push_points(&mut plan, placement, i)?;
        plan.push(
            Step::Mount {
                source: c"tmpfs",
                target: cpath(&target)?,
                fstype: c"tmpfs",
                flags: nosuid_nodev,
                data: mode,
            },
            format!("mounting a tmpfs on {}", target.display()),
        );
    }
    for (i, (b, placed)) in placement.binds.iter().enumerate() {
        push_points(&mut plan, placement, placement.fixed.len() + i)?;
        let fd = clone_tree(&b.source, b.read_only, false)?;
        plan.fds.push(fd);
        let dest = Path::new("/").join(&placed.at);
        plan.push(
            Step::Attach(plan.fds.len() - 1, cpath(&dest)?),
            format!(
                "binding {} onto {}{}",
                b.source.display(),
                dest.display(),
                if b.read_only { " read-only" } else { "" }
            ),
        );
    }
    Ok(plan)
}

/// Mount `index` of the placement lies inside an earlier mount (a tmpfs,
/// /dev or a bind): its mount point is made there, in the sandbox, just
/// before it is mounted. Those in the stage were made by the caller.
fn push_points(plan: &mut Plan, placement: &Placement, index: usize) -> Result<(), SandboxError> {
    let all = &placement.all;
    let placed = &all[index];
    let Some(cover) = placed.inside else {
        return Ok(());
    };
    let mut p = Path::new("/").join(&all[cover].at);
    let below: Vec<_> = placed
        .at
        .strip_prefix(&all[cover].at)
        .unwrap_or(&placed.at)
        .components()
        .collect();
    for (j, c) in below.iter().enumerate() {
        p.push(c);
        let step = if j + 1 == below.len() && placed.kind == Kind::File {
            Step::Touch(cpath(&p)?)
        } else {
            Step::Mkdir(cpath(&p)?)
        };
        plan.push(step, format!("creating {}", p.display()));
    }
    Ok(())
}

/// Runs `argv` in the stage's sandbox; see the module doc.
pub(super) fn run(
    root: &Path,
    opts: &SandboxOptions,
    placement: &Placement,
    argv: &[OsString],
) -> Result<ExitStatus, SandboxError> {
    let plan = build_plan(root, opts, placement, argv)?;
    let spawn_err = |source: std::io::Error| SandboxError::Spawn {
        program: "the sandbox".into(),
        source,
    };
    let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| spawn_err(e.into()))?;
    let caller = rustix::process::getpid();
    // SAFETY: the child only runs `sandbox_parent`, which makes system
    // calls on the prepared plan and never returns (see the module doc).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(spawn_err(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        sandbox_parent(&plan, caller, report_w.as_fd());
    }
    drop(report_w);
    let running = super::signals::Running::new(pid as u32);
    let mut report = Vec::new();
    let read = std::fs::File::from(report_r)
        .take(64 * MSG_LEN as u64)
        .read_to_end(&mut report);
    let a = Pid::from_raw(pid).expect("fork returned a positive pid");
    let a_status = loop {
        match rustix::process::waitpid(Some(a), WaitOptions::empty()) {
            Ok(Some((_, st))) => break st,
            Ok(None) | Err(Errno::INTR) => continue,
            Err(e) => return Err(spawn_err(e.into())),
        }
    };
    drop(running);
    drop(plan.fds);
    read.map_err(spawn_err)?;
    for msg in report.chunks_exact(MSG_LEN) {
        let word =
            |i: usize| u32::from_ne_bytes(msg[i * 4..i * 4 + 4].try_into().unwrap_or_default());
        let (tag, step, value) = (word(0), word(1), word(2) as i32);
        match tag {
            TAG_SETUP => {
                return Err(SandboxError::Setup {
                    step: plan_description(&plan.descriptions, step, root),
                    source: std::io::Error::from_raw_os_error(value),
                });
            }
            TAG_EXEC => {
                return Err(SandboxError::Exec {
                    program: argv[0].clone(),
                    source: std::io::Error::from_raw_os_error(value),
                });
            }
            TAG_STATUS => return Ok(ExitStatus::from_raw(value)),
            _ => {}
        }
    }
    // The sandbox died without a word (killed from outside): A's status
    // says how (A exits with 128+N when B died of signal N).
    Ok(ExitStatus::from_raw(a_status.as_raw()))
}

fn plan_description(descriptions: &[String], step: u32, root: &Path) -> String {
    descriptions
        .get(step as usize)
        .cloned()
        .unwrap_or_else(|| fixed_step(step, root))
}

// ---------------------------------------------------------------------------
// The children. Only system calls from here on; see the module doc.
// ---------------------------------------------------------------------------

fn send(report: BorrowedFd<'_>, tag: u32, step: u32, value: i32) {
    let mut msg = [0u8; MSG_LEN];
    msg[..4].copy_from_slice(&tag.to_ne_bytes());
    msg[4..8].copy_from_slice(&step.to_ne_bytes());
    msg[8..].copy_from_slice(&value.to_ne_bytes());
    // One write of less than PIPE_BUF bytes is atomic.
    let _ = rustix::io::write(report, &msg);
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and ends the process at once,
    // running no destructor or atexit handler of the caller's copy.
    unsafe { libc::_exit(code) }
}

fn fail(report: BorrowedFd<'_>, step: u32, e: Errno) -> ! {
    send(report, TAG_SETUP, step, e.raw_os_error());
    exit(125)
}

/// Waits for `pid`, retrying on EINTR.
fn wait_for(pid: Pid) -> Option<rustix::process::WaitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, st))) => return Some(st),
            Err(Errno::INTR) | Ok(None) => continue,
            Err(_) => return None,
        }
    }
}

/// A: outside the new PID namespace; forks its init and waits.
fn sandbox_parent(plan: &Plan, caller: Pid, report: BorrowedFd<'_>) -> ! {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        fail(report, STEP_PDEATHSIG, e);
    }
    if rustix::process::getppid() != Some(caller) {
        // The caller died before the death signal was armed.
        exit(125);
    }
    // SAFETY: setting dispositions to SIG_IGN is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    // SAFETY: this process has a single thread and its own descriptor
    // table; PID only affects the children forked next.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) } {
        fail(report, STEP_UNSHARE_PID, e);
    }
    // SAFETY: as for the first fork; B runs `sandbox_init` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(report, STEP_FORK_INIT, Errno::from_raw_os_error(errno()));
    }
    if pid == 0 {
        sandbox_init(plan, report);
    }
    // SAFETY: closes this process's copy only (B keeps its own); the
    // caller then sees the pipe's end when B is gone.
    unsafe { libc::close(report.as_raw_fd()) };
    let Some(b) = Pid::from_raw(pid) else {
        exit(125)
    };
    match wait_for(b) {
        Some(st) => match (st.exit_status(), st.terminating_signal()) {
            (Some(code), _) => exit(code),
            (_, Some(sig)) => exit(128 + sig),
            _ => exit(125),
        },
        None => exit(125),
    }
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// B: pid 1 of the sandbox.
fn sandbox_init(plan: &Plan, report: BorrowedFd<'_>) -> ! {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        fail(report, STEP_PDEATHSIG, e);
    }
    // SAFETY: single-threaded, own descriptor table.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(plan.unshare) } {
        fail(report, STEP_UNSHARE, e);
    }
    if let Err(e) = rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    ) {
        fail(report, STEP_PRIVATE, e);
    }
    let root = plan.root.as_c_str();
    if let Err(e) = rustix::mount::mount_bind_recursive(root, root).and_then(|()| {
        rustix::mount::mount_remount(
            root,
            MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV,
            c"",
        )
    }) {
        fail(report, STEP_BIND_ROOT, e);
    }
    if let Err(e) = rustix::process::chdir(root) {
        fail(report, STEP_CHDIR_ROOT, e);
    }
    if let Err(e) = rustix::process::pivot_root(c".", c".") {
        fail(report, STEP_PIVOT, e);
    }
    if let Err(e) = rustix::mount::unmount(c".", UnmountFlags::DETACH) {
        fail(report, STEP_DETACH_OLD, e);
    }
    if let Err(e) = rustix::process::chdir(c"/") {
        fail(report, STEP_CHDIR_ROOT, e);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        if let Err(e) = run_step(plan, step) {
            fail(report, i as u32, e);
        }
    }
    if plan.loopback
        && let Err(e) = loopback_up()
    {
        fail(report, STEP_LOOPBACK, e);
    }
    // SAFETY: as for the first fork; C runs `sandbox_command` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(report, STEP_FORK_COMMAND, Errno::from_raw_os_error(errno()));
    }
    if pid == 0 {
        sandbox_command(plan, report);
    }
    let Some(c) = Pid::from_raw(pid) else {
        exit(125)
    };
    // Reap everything (orphans are reparented here) until the command
    // ends; then leave, which ends the namespace and all left in it.
    loop {
        match rustix::process::waitpid(None, WaitOptions::empty()) {
            Ok(Some((p, st))) if p == c => {
                send(report, TAG_STATUS, 0, st.as_raw());
                exit(0);
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => exit(125),
        }
    }
}

fn run_step(plan: &Plan, step: &Step) -> Result<(), Errno> {
    use rustix::fs::{CWD, openat, symlink};
    match step {
        Step::Mkdir(p) => match rustix::fs::mkdir(p.as_c_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e),
        },
        Step::Touch(p) => openat(
            CWD,
            p.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => rustix::mount::mount(*source, target.as_c_str(), *fstype, *flags, Some(*data)),
        Step::OverItself(p, flags) => {
            let p = p.as_c_str();
            match rustix::mount::mount_bind(p, p) {
                Ok(()) => {}
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(e),
            }
            rustix::mount::mount_remount(p, *flags, c"")
        }
        Step::Attach(index, target) => {
            let Some(fd) = plan.fds.get(*index) else {
                return Err(Errno::BADF);
            };
            rustix::mount::move_mount(
                fd,
                c"",
                CWD,
                target.as_c_str(),
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
        }
        Step::Symlink(target, link) => symlink(*target, link.as_c_str()),
    }
}

/// `ip link set lo up`, with the old ioctl: no netlink message to build.
fn loopback_up() -> Result<(), Errno> {
    // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` whose name
    // is set to "lo" (NUL-terminated), live for the calls.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(Errno::from_raw_os_error(errno()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = errno();
        libc::close(s);
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw_os_error(e))
        }
    }
}

/// C: becomes the command.
fn sandbox_command(plan: &Plan, report: BorrowedFd<'_>) -> ! {
    // SAFETY: signal dispositions and the mask, then dup2 and execve on
    // prepared, NUL-terminated arrays: all async-signal-safe.
    unsafe {
        // The terminal's signals act on the command (A ignores them, and
        // so may the caller: see `ignore_terminal_signals`); SIGPIPE as
        // std::process::Command does (the Rust runtime ignores it).
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if plan.stdout_to_stderr && libc::dup2(2, 1) < 0 {
            fail(report, STEP_STDOUT, Errno::from_raw_os_error(errno()));
        }
        if let Err(e) = super::drop_privileges(plan.caps) {
            fail(report, STEP_CAPABILITIES, e);
        }
        // Whatever the caller left open stays out of the command; the
        // report pipe stays open until the exec succeeds.
        if let Err(e) = super::cloexec_from_3() {
            fail(report, STEP_CLOEXEC, e);
        }
        // As execvp: the first candidate that is not missing wins; a
        // permission error is remembered over "not found".
        let mut err = libc::ENOENT;
        for c in &plan.candidates {
            libc::execve(c.as_ptr(), plan.argv_ptrs.as_ptr(), plan.envp_ptrs.as_ptr());
            match errno() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => err = libc::EACCES,
                e => {
                    err = e;
                    break;
                }
            }
        }
        send(report, TAG_EXEC, 0, err);
        exit(127)
    }
}
