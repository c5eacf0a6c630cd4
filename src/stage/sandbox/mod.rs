//! The build environment of a stage: a command run with the stage's root
//! as `/`, in its own mount, PID, IPC and UTS namespaces (and network
//! namespace unless the host's network is asked for).
//!
//! # What the command sees
//! * `/`: the stage's root, writable; what the command writes there is
//!   what `stage commit` commits.
//! * `/proc`: a proc mount of the sandbox's own PID namespace (the
//!   sandbox's init is pid 1, the command pid 2), with `/proc/sys`,
//!   `/proc/sysrq-trigger`, `/proc/irq` and `/proc/bus` read-only.
//! * `/dev`: a tmpfs holding `null`, `zero`, `full`, `random`, `urandom`
//!   and `tty` (bind mounts of the host's nodes), a private `devpts`
//!   instance at `/dev/pts` with `/dev/ptmx` pointing into it, a tmpfs at
//!   `/dev/shm`, and the `fd`, `stdin`, `stdout`, `stderr` and `core`
//!   symlinks.
//! * `/sys`: the host's, read-only; `/tmp` (mode 1777) and `/run`: empty
//!   tmpfs.
//! * [`Bind`]s: host files or directories, writable or read-only.
//! * Network: a namespace with only `lo`, up ([`Network::None`], the
//!   default), or the host's ([`Network::Host`]).
//! * Environment: only what [`SandboxOptions::env`] holds (by default
//!   `PATH`, `HOME=/root`, `LANG=C.UTF-8`), plus `PWD`; the working
//!   directory is `/`.
//! * Descriptors: the caller's stdin, stdout and stderr only; anything
//!   else the caller left open is closed at the command's `exec`.
//! * Root (uid 0), with the capabilities of [Privilege](#privilege) only.
//!
//! # Privilege
//! The command runs as root with only what installing and integrating
//! packages needs: `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `FSETID` (owners,
//! modes and setuid/setgid bits of the system's files), `SETUID`,
//! `SETGID` (`su`, `runuser`, `useradd`'s helpers, daemons' users),
//! `SETFCAP` (`setcap` in a postinst), `SETPCAP`, `KILL`,
//! `NET_BIND_SERVICE`, `SYS_CHROOT` and `AUDIT_WRITE` — Docker's and
//! Podman's default for build steps, less `MKNOD` (every writable mount
//! is `nodev`, and OSTree commits hold no device nodes) and `NET_RAW`.
//! `DAC_READ_SEARCH` is left out on purpose: `DAC_OVERRIDE` already reads
//! every file, and what it adds, `open_by_handle_at`, opens host files by
//! handle past any mount namespace. Without `SYS_ADMIN`, `SYS_MODULE`,
//! `SYS_RAWIO`, `SYS_PTRACE`, `SYS_TIME`, `SYS_BOOT`, `NET_ADMIN`... the
//! command cannot mount (nor remount `/proc/sys` writable), load modules,
//! reach raw devices, trace the sandbox's init or reboot the host. Nor can
//! it set `security.*` attributes other than capabilities (`setfiles`,
//! SELinux labelling, would need `SYS_ADMIN`).
//!
//! no_new_privs is set (bubblewrap always sets it): no `exec` raises a
//! capability, neither of a setuid-root program nor through file
//! capabilities. It costs integration nothing, since its commands already
//! run as root with everything they may have; only a command that first
//! switches to another user and then counts on a setuid program to come
//! back (`sudo` from a package's own user) fails, which no integration
//! script should do. Both tools give the command the same bounding,
//! permitted and effective sets: the list above. The built-in sandbox
//! empties the inheritable and ambient sets; bubblewrap, run as root,
//! sets them to the list (`--cap-drop ALL --cap-add ...`), which gives
//! nothing more under no_new_privs. bubblewrap leaves the bounding set of
//! a root caller as it is, so arbor lowers it before running bubblewrap
//! (having made its own capabilities inheritable, so that bubblewrap
//! still gets what its set-up needs).
//!
//! # Trust
//! The sandbox is a correct build root with reduced privilege, not a hard
//! security boundary: the command is root, shares the host's kernel, user
//! IDs and (with [`Network::Host`]) network, sees the host's `/sys`, and
//! writes whatever the stage and the writable binds hold. It keeps honest
//! and buggy commands — including integration commands carried by commits
//! pulled from elsewhere — from changing the host or the commit by
//! accident, and takes away the obvious ways out (mounts, `/proc/sys`,
//! `sysrq-trigger`, device nodes, module loading); it does not contain a
//! command written to attack the kernel. Run only commits you would
//! install.
//!
//! # Destinations are resolved in the stage
//! Every mount destination, the fixed ones and the binds', is what the
//! command would reach by that path: it is resolved inside the stage's
//! root as if chrooted ([`mountpoints::resolve`]): symlinks are followed,
//! absolute ones from the root, and `..` stops at the root, through
//! directory descriptors, never by a host path. The mount then goes where
//! the path leads, by a path with no symlink left on the way, so neither
//! bubblewrap (which would follow a symlink in its own set-up root, where
//! the host is `/oldroot`) nor the built-in sandbox can be led outside
//! the stage. A commit's `tmp -> var/tmp` gets its tmpfs on `var/tmp`, and
//! a bind on `/usr/lib64/x` with `usr/lib64 -> lib` goes to `usr/lib/x`.
//! Refused, with the path named: a destination that resolves to the root
//! itself (`tmp -> /`: the command's writes there would land in the
//! stage), a symlink to a missing path (as `mkdir -p` refuses it), a
//! symlink loop, a path through a file, one leading into `/proc` or
//! `/sys`, or through a symlink inside another mount (a bind's source,
//! `/dev/fd`), and a bind that another destination would cover.
//!
//! What is resolved is the stage as it is when the sandbox starts; a
//! command of another sandbox of the same stage that replaces a directory
//! by a symlink while this one starts could still redirect a mount (the
//! built-in sandbox only within the stage, since it mounts after
//! `pivot_root`; bubblewrap resolves in its own set-up root). Commands
//! are not a security boundary here (see Trust).
//!
//! # Nothing of it reaches the commit
//! Every mount above exists only in the sandbox's private mount namespace
//! (the whole tree is made private before anything is mounted), so what
//! the command writes into `/proc`, `/dev`, `/sys`, `/tmp` or `/run` lands
//! in those mounts, never in the stage, and whatever the commits hold at
//! those paths (or where their symlinks lead) is hidden from the command
//! but left untouched. A mount needs an existing directory (or file) to
//! cover; where the stage has none, one is created in the root (where
//! the destination resolves) before the command starts, listed
//! first in the stage's `mountpoints` file, and removed again once no
//! sandbox uses the stage ([`mountpoints`]): `stage commit` refuses to
//! run while a sandbox is up and removes what a killed one left, so a
//! commit never holds them.
//!
//! # Tools
//! [`SandboxTool::Bwrap`] runs bubblewrap (`bwrap`), the sandbox flatpak
//! and osbuild use ([`bwrap`]); [`SandboxTool::Builtin`] does the same
//! set-up with system calls ([`builtin`]); [`SandboxTool::Auto`] takes
//! bubblewrap when it is in `PATH`. Both give the command the same view.
//!
//! # Processes and signals
//! The command's stdin, stdout and stderr are the caller's (unless
//! [`StdoutTo::Stderr`]), so output streams live and a terminal's Ctrl-C
//! reaches it (the terminal signals the whole foreground process group);
//! it starts with SIGINT and SIGQUIT at their default action. The sandbox
//! ends when the command exits: its PID namespace ends, and the kernel
//! kills whatever the command left running, so nothing keeps the stage
//! busy. If the caller dies (even by SIGKILL), the sandbox is killed with
//! it (`PR_SET_PDEATHSIG`), so a caller that Ctrl-C kills takes the
//! command with it before it has finished handling the signal. A caller
//! that runs an interactive command (a shell, where Ctrl-C is routine)
//! should therefore survive SIGINT and SIGQUIT itself while it waits:
//! [`ignore_terminal_signals`] (the `arbor` binary does, for `stage
//! exec`), which also passes the same signals on to the command when
//! they are sent to the caller alone (`kill -INT PID`, no terminal), so
//! that they are not lost ([`signals`]).

mod builtin;
mod bwrap;
pub(crate) mod mountpoints;
mod signals;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitStatus;

use rustix::thread::CapabilitySet;
use thiserror::Error;

use super::{StageError, StageLock, Stages};
use crate::progress::{Event, Progress};

/// `PATH` in the sandbox unless the caller sets another.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which implementation sets the sandbox up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SandboxTool {
    /// bubblewrap when `bwrap` is in `PATH`, else the built-in one
    #[default]
    Auto,
    /// bubblewrap (`bwrap`) or an error
    Bwrap,
    /// arbor's own namespaces and mounts
    Builtin,
}

/// The sandbox's network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Network {
    /// A network namespace of its own with only loopback, up
    #[default]
    None,
    /// The host's network
    Host,
}

/// Where the command's standard output goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StdoutTo {
    /// The caller's standard output.
    #[default]
    Inherit,
    /// The caller's standard error (keeps the caller's stdout for its own
    /// results).
    Stderr,
}

/// A host path mounted into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Host path (a directory or a file).
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub dest: PathBuf,
    pub read_only: bool,
}

/// How a command runs in the sandbox.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SandboxOptions {
    pub tool: SandboxTool,
    pub network: Network,
    /// Mounted after `/proc`, `/dev`, `/sys`, `/tmp` and `/run`, shallower
    /// destinations first, so a bind may go inside `/tmp` or inside
    /// another bind.
    pub binds: Vec<Bind>,
    /// The command's whole environment (`PWD` is added).
    pub env: Vec<(OsString, OsString)>,
    pub stdout: StdoutTo,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            tool: SandboxTool::Auto,
            network: Network::None,
            binds: Vec::new(),
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/root".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            stdout: StdoutTo::Inherit,
        }
    }
}

impl SandboxOptions {
    /// Sets `key` (replacing its value if present, else appending).
    pub fn set_env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        let (key, value) = (key.into(), value.into());
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
    }

    /// The environment the command gets: [`Self::env`] plus `PWD=/`.
    fn full_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = self
            .env
            .iter()
            .filter(|(k, _)| k != "PWD")
            .cloned()
            .collect();
        env.push(("PWD".into(), "/".into()));
        env
    }

    /// The `PATH` the command is looked up in.
    fn path_var(&self) -> OsString {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| DEFAULT_PATH.into())
    }
}

/// The implementation that ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tool {
    /// bubblewrap, at this path.
    Bwrap(PathBuf),
    /// arbor's own.
    Builtin,
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tool::Bwrap(p) => write!(f, "bubblewrap ({})", p.display()),
            Tool::Builtin => f.write_str("built-in (unshare and mount system calls)"),
        }
    }
}

/// Errors of setting a sandbox up or starting a command in it.
#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("the build environment needs root (effective uid 0)")]
    NotRoot,
    #[error(
        "bubblewrap (`bwrap`) is not in PATH; install it (Debian package bubblewrap) or use the built-in sandbox"
    )]
    BwrapMissing,
    #[error("bind destination {dest}: {reason}")]
    BadDestination { dest: PathBuf, reason: &'static str },
    #[error("bind source {path}: {source}")]
    BindSource {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {name:?}: {reason}")]
    BadEnv {
        name: OsString,
        reason: &'static str,
    },
    #[error("the command is empty")]
    NoCommand,
    #[error("argument {arg:?} contains a NUL byte")]
    NulInArgument { arg: OsString },
    #[error("cannot mount on {dest} in the stage: {reason}")]
    Resolve { dest: PathBuf, reason: String },
    #[error("mount point {path} in the stage: {reason}")]
    MountPoint { path: PathBuf, reason: &'static str },
    #[error("{op} mount point {path} in the stage: {source}")]
    MountPointIo {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting up the sandbox: {step}: {source}")]
    Setup {
        step: String,
        source: std::io::Error,
    },
    #[error("cannot run {program:?} in the stage: {source}")]
    Exec {
        program: OsString,
        source: std::io::Error,
    },
    #[error("starting {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("bubblewrap failed before the command started ({status}); its message is above")]
    BwrapSetup { status: ExitStatus },
}

/// The sandbox's mounts as asked for, checked: the fixed file systems,
/// then the binds, shallowest first. Where they go is only known once
/// they are resolved in the stage ([`mountpoints::resolve`]).
struct Layout {
    /// Binds sorted by depth, with their destinations as relative paths.
    binds: Vec<(Bind, PathBuf, mountpoints::Kind)>,
}

/// The fixed mounts, relative to the root, in the order they are made.
const FIXED: [&str; 5] = ["proc", "dev", "sys", "tmp", "run"];

impl Layout {
    fn new(opts: &SandboxOptions) -> Result<Layout, SandboxError> {
        let mut binds = Vec::new();
        for b in &opts.binds {
            let rel = relative_dest(&b.dest)?;
            let bad = |reason| SandboxError::BadDestination {
                dest: b.dest.clone(),
                reason,
            };
            let first = rel.components().next().map(|c| c.as_os_str());
            if first == Some(OsStr::new("proc")) || first == Some(OsStr::new("sys")) {
                return Err(bad("cannot bind inside /proc or /sys"));
            }
            if rel == Path::new("dev") {
                return Err(bad("cannot replace /dev (bind into it instead)"));
            }
            let md = std::fs::metadata(&b.source).map_err(|source| SandboxError::BindSource {
                path: b.source.clone(),
                source,
            })?;
            let kind = if md.is_dir() {
                mountpoints::Kind::Dir
            } else {
                mountpoints::Kind::File
            };
            let source =
                std::path::absolute(&b.source).map_err(|source| SandboxError::BindSource {
                    path: b.source.clone(),
                    source,
                })?;
            binds.push((
                Bind {
                    source,
                    dest: Path::new("/").join(&rel),
                    read_only: b.read_only,
                },
                rel,
                kind,
            ));
        }
        binds.sort_by_key(|(_, rel, _)| rel.components().count());
        Ok(Layout { binds })
    }

    /// Every mount, in the order they are made.
    fn requests(&self) -> Vec<mountpoints::Request> {
        use mountpoints::{Kind, Request, Target};
        let fixed = FIXED.iter().map(|f| Request {
            asked: PathBuf::from(f),
            kind: Kind::Dir,
            target: match *f {
                "proc" | "sys" => Target::Closed,
                "dev" => Target::Dev,
                _ => Target::Tmpfs,
            },
        });
        fixed
            .chain(self.binds.iter().map(|(b, rel, kind)| Request {
                asked: rel.clone(),
                kind: *kind,
                target: Target::Bind(b.source.clone()),
            }))
            .collect()
    }
}

/// Where the mounts go, resolved in the stage: the fixed ones (in
/// [`FIXED`]'s order), then the binds, in the order they are made.
struct Placement {
    fixed: Vec<mountpoints::Placed>,
    binds: Vec<(Bind, mountpoints::Placed)>,
    /// Every mount, fixed ones first (what `Placed::inside` indexes).
    all: Vec<mountpoints::Placed>,
}

impl Placement {
    fn new(layout: &Layout, placed: Vec<mountpoints::Placed>) -> Placement {
        let fixed = placed[..FIXED.len()].to_vec();
        let binds = layout
            .binds
            .iter()
            .map(|(b, _, _)| b.clone())
            .zip(placed[FIXED.len()..].iter().cloned())
            .collect();
        Placement {
            fixed,
            binds,
            all: placed,
        }
    }

    /// Where fixed mount `name` goes, as an absolute path in the sandbox.
    fn fixed_at(&self, name: &str) -> PathBuf {
        let i = FIXED.iter().position(|f| *f == name).unwrap_or(0);
        Path::new("/").join(&self.fixed[i].at)
    }
}

/// `dest` as a path relative to the root: absolute, only normal
/// components, not the root itself, no newline (the mount point record is
/// one path a line).
fn relative_dest(dest: &Path) -> Result<PathBuf, SandboxError> {
    let bad = |reason| SandboxError::BadDestination {
        dest: dest.to_path_buf(),
        reason,
    };
    if !dest.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if dest.as_os_str().as_bytes().contains(&b'\n') {
        return Err(bad("must not contain a newline"));
    }
    let mut rel = PathBuf::new();
    for c in dest.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => rel.push(n),
            _ => return Err(bad("must not contain `.` or `..`")),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad("cannot replace the root"));
    }
    Ok(rel)
}

fn check_env(env: &[(OsString, OsString)]) -> Result<(), SandboxError> {
    for (k, v) in env {
        let reason = if k.is_empty() {
            Some("the name is empty")
        } else if k.as_bytes().contains(&b'=') {
            Some("the name contains '='")
        } else if k.as_bytes().contains(&0) || v.as_bytes().contains(&0) {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(SandboxError::BadEnv {
                name: k.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Makes this process survive SIGINT and SIGQUIT from now on, so that a
/// terminal's Ctrl-C or Ctrl-\\ acts on the sandboxed command only (which
/// gets them at their default action whatever this process does); the
/// same signals sent to this process alone by another (`kill`) are passed
/// on to the running command ([`signals`]). For programs whose remaining
/// work is waiting for the command.
pub fn ignore_terminal_signals() {
    signals::install();
}

/// The capabilities the command keeps: what installing and integrating
/// packages needs (see the module doc, "Privilege"), with bubblewrap's
/// names for them.
const KEPT_CAPABILITIES: [(CapabilitySet, &str); 12] = [
    (CapabilitySet::CHOWN, "CAP_CHOWN"),
    (CapabilitySet::DAC_OVERRIDE, "CAP_DAC_OVERRIDE"),
    (CapabilitySet::FOWNER, "CAP_FOWNER"),
    (CapabilitySet::FSETID, "CAP_FSETID"),
    (CapabilitySet::KILL, "CAP_KILL"),
    (CapabilitySet::SETGID, "CAP_SETGID"),
    (CapabilitySet::SETUID, "CAP_SETUID"),
    (CapabilitySet::SETPCAP, "CAP_SETPCAP"),
    (CapabilitySet::NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"),
    (CapabilitySet::SYS_CHROOT, "CAP_SYS_CHROOT"),
    (CapabilitySet::AUDIT_WRITE, "CAP_AUDIT_WRITE"),
    (CapabilitySet::SETFCAP, "CAP_SETFCAP"),
];

/// [`KEPT_CAPABILITIES`] that this process has (a capability it lacks
/// cannot be given, and bubblewrap, asked to, would fail to lower the
/// others and carry on with all of them).
fn kept_capabilities() -> Result<Vec<(CapabilitySet, &'static str)>, SandboxError> {
    let have = rustix::thread::capabilities(None)
        .map_err(|e| SandboxError::Setup {
            step: "reading this process's capabilities".into(),
            source: e.into(),
        })?
        .permitted;
    Ok(KEPT_CAPABILITIES
        .into_iter()
        .filter(|(c, _)| have.contains(*c))
        .collect())
}

/// Lowers this process's capabilities to `keep`, for good: the bounding
/// set (so no `exec` of a root or file-capability program regains any),
/// the ambient and inheritable sets emptied, and no_new_privs. Only
/// system calls, for the built-in sandbox's command between fork and
/// exec (bubblewrap does the same with `--cap-drop ALL --cap-add`, and
/// always sets no_new_privs, but leaves the bounding set of a process
/// that runs it as root).
fn drop_privileges(keep: CapabilitySet) -> Result<(), rustix::io::Errno> {
    use rustix::io::Errno;
    lower_bounding_set(keep)?;
    match rustix::thread::clear_ambient_capability_set() {
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(e),
    }
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    rustix::thread::set_no_new_privs(true)
}

/// Removes every capability but `keep` from the bounding set. Only
/// system calls.
fn lower_bounding_set(keep: CapabilitySet) -> Result<(), rustix::io::Errno> {
    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if !keep.contains(cap) {
            match rustix::thread::remove_capability_from_bounding_set(cap) {
                // EINVAL: no such capability in this kernel.
                Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// For bubblewrap, between fork and exec: lowers the bounding set to
/// `keep`, as the built-in sandbox does for its command, while bubblewrap
/// itself still gets every capability it needs for the set-up: they are
/// made inheritable first, and a root program's permitted set at `exec`
/// is its inheritable set plus the bounding set. bubblewrap then gives
/// its command `keep` only (`--cap-drop ALL --cap-add`), and the command
/// inherits the lowered bounding set. Only system calls.
fn bounding_set_for_bwrap(keep: CapabilitySet) -> Result<(), rustix::io::Errno> {
    let now = rustix::thread::capabilities(None)?;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: now.effective,
            permitted: now.permitted,
            inheritable: now.permitted,
        },
    )?;
    lower_bounding_set(keep)
}

/// Marks every descriptor from 3 up close-on-exec, so the command gets
/// only its standard streams: a caller may leave descriptors open without
/// close-on-exec, and they would reach the command (bubblewrap passes
/// them on too). Only system calls, for use between fork and exec.
/// `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11) when it exists, else
/// `fcntl` on each descriptor below the open-file limit.
fn cloexec_from_3() -> Result<(), rustix::io::Errno> {
    // SAFETY: close_range with the CLOEXEC flag only sets a flag on open
    // descriptors; getrlimit and fcntl read and write plain values.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return Ok(());
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(rustix::io::Errno::from_raw_os_error(
                *libc::__errno_location(),
            ));
        }
        let max = lim.rlim_cur.min(1 << 20) as libc::c_int;
        for fd in 3..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A stage held ready for sandboxed commands: the stage is in use (a
/// `destroy` is refused) and its missing mount points exist until this
/// is dropped.
pub struct Sandbox<'s, 'r> {
    stages: &'s Stages<'r>,
    name: String,
    root: PathBuf,
    opts: SandboxOptions,
    placement: Placement,
    tool: Tool,
    /// Dropped before the stage lock: the last sandbox out removes the
    /// mount points while the stage is still held.
    _mounts: mountpoints::Registration,
    _lock: StageLock,
}

impl<'r> Stages<'r> {
    /// Prepares stage `name` for [`Sandbox::run`]: remounts it if needed,
    /// checks the options, picks the tool (said in an [`Event::Note`]) and
    /// makes the mount points the stage lacks.
    pub fn sandbox<'s>(
        &'s self,
        name: &str,
        opts: &SandboxOptions,
        progress: &dyn Progress,
    ) -> Result<Sandbox<'s, 'r>, StageError> {
        if !rustix::process::geteuid().is_root() {
            return Err(SandboxError::NotRoot.into());
        }
        check_env(&opts.env)?;
        let layout = Layout::new(opts)?;
        let tool = match opts.tool {
            SandboxTool::Builtin => Tool::Builtin,
            SandboxTool::Bwrap => {
                Tool::Bwrap(find_in_path("bwrap").ok_or(SandboxError::BwrapMissing)?)
            }
            SandboxTool::Auto => find_in_path("bwrap").map_or(Tool::Builtin, Tool::Bwrap),
        };
        let (record, lock) = self.use_stage(name)?;
        let root = record.root();
        let (mounts, placed) = mountpoints::Registration::begin(
            &self.dir,
            &self.stage_dir(name),
            name,
            &root,
            &layout.requests(),
        )?;
        let placement = Placement::new(&layout, placed);
        progress.report(Event::Note(&format!("sandbox: {tool}")));
        Ok(Sandbox {
            stages: self,
            name: name.to_string(),
            root,
            opts: opts.clone(),
            placement,
            tool,
            _mounts: mounts,
            _lock: lock,
        })
    }
}

impl Sandbox<'_, '_> {
    /// The implementation in use.
    pub fn tool(&self) -> &Tool {
        &self.tool
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store the stage belongs to.
    pub fn repo(&self) -> &crate::store::Repo {
        self.stages.repo
    }

    /// Runs `argv` (looked up in the sandbox's `PATH` when it has no `/`)
    /// and returns its exit status once it and everything it started have
    /// ended. With bubblewrap, a command killed by signal N is reported as
    /// exited with 128+N (bubblewrap's own convention).
    pub fn run(&self, argv: &[OsString]) -> Result<ExitStatus, SandboxError> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(SandboxError::NoCommand);
        }
        if let Some(arg) = argv.iter().find(|a| a.as_bytes().contains(&0)) {
            return Err(SandboxError::NulInArgument { arg: arg.clone() });
        }
        match &self.tool {
            Tool::Bwrap(path) => bwrap::run(path, &self.root, &self.opts, &self.placement, argv),
            Tool::Builtin => builtin::run(&self.root, &self.opts, &self.placement, argv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(relative_dest(Path::new("/a/b/")).unwrap(), Path::new("a/b"));
        assert_eq!(
            relative_dest(Path::new("//a//b")).unwrap(),
            Path::new("a/b")
        );
        for bad in ["a/b", "/", "/a/../b", "/a/./b\n"] {
            assert!(relative_dest(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binds_sorted_and_covered() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = SandboxOptions::default();
        for dest in ["/src/sub", "/tmp/cache", "/src", "/opt/x"] {
            opts.binds.push(Bind {
                source: dir.path().into(),
                dest: dest.into(),
                read_only: false,
            });
        }
        let l = Layout::new(&opts).unwrap();
        let order: Vec<&Path> = l.binds.iter().map(|(_, r, _)| r.as_path()).collect();
        assert_eq!(
            order,
            ["src", "src/sub", "tmp/cache", "opt/x"].map(Path::new)
        );
        let asked: Vec<PathBuf> = l.requests().into_iter().map(|r| r.asked).collect();
        assert_eq!(
            asked,
            [
                "proc",
                "dev",
                "sys",
                "tmp",
                "run",
                "src",
                "src/sub",
                "tmp/cache",
                "opt/x"
            ]
            .map(PathBuf::from)
        );
        for dest in ["/proc/x", "/sys", "/dev"] {
            let mut o = SandboxOptions::default();
            o.binds.push(Bind {
                source: dir.path().into(),
                dest: dest.into(),
                read_only: true,
            });
            assert!(Layout::new(&o).is_err(), "{dest}");
        }
    }

    #[test]
    fn environment() {
        let mut o = SandboxOptions::default();
        o.set_env("LANG", "C");
        o.set_env("PWD", "/elsewhere");
        o.set_env("X", "1");
        let env = o.full_env();
        let shown: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert_eq!(
            shown,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/root".into(),
                "LANG=C".into(),
                "X=1".into(),
                "PWD=/".into()
            ]
        );
        assert!(check_env(&[("A=B".into(), "1".into())]).is_err());
        assert!(check_env(&[("".into(), "1".into())]).is_err());
    }
}
