//! The sandbox through bubblewrap.
//!
//! ```text
//! bwrap --die-with-parent --unshare-pid --unshare-ipc --unshare-uts [--unshare-net]
//!       --cap-drop ALL --cap-add CAP_CHOWN ...
//!       --bind ROOT / --proc /proc --ro-bind /proc/sys /proc/sys
//!       --ro-bind-try /proc/sysrq-trigger /proc/sysrq-trigger
//!       --dev /dev --perms 1777 --tmpfs /dev/shm
//!       --ro-bind /sys /sys --perms 1777 --tmpfs /tmp --tmpfs /run
//!       [--bind|--ro-bind SRC DST]... --chdir / --json-status-fd N -- CMD...
//! ```
//! where every destination is the one resolved in the stage (`/proc`
//! unless the commit holds `proc` as a symlink, and so on; see the module
//! above).
//! with the environment cleared to the options' (bubblewrap passes its
//! own on and adds `PWD`). `--die-with-parent` puts `PR_SET_PDEATHSIG` on
//! each of bubblewrap's processes, so the sandbox ends with the caller;
//! with `--unshare-pid` its pid 1 ends the namespace, and everything the
//! command left, once the command exits.
//!
//! bubblewrap exits with the command's status (128+N for a signal); a set-
//! up failure also exits with 1, after printing why. The JSON status
//! stream tells them apart: bubblewrap writes `"exit-code"` there only
//! when the command was started.
//!
//! # Ctrl-C
//! The terminal's SIGINT reaches bubblewrap's outer process as well as the
//! command. That process does not catch it and dies, and
//! `--die-with-parent` then kills the sandbox: the command gets SIGINT but
//! is killed right after, so a command that handles it has no time to
//! clean up (the built-in sandbox keeps its outer process alive and lets
//! the command finish). The caller sees bubblewrap killed by SIGINT
//! (exit status 130). bubblewrap cannot be kept alive instead: it passes
//! an ignored SIGINT on to the command, and a shell cannot trap a signal
//! ignored when it started. A SIGINT sent to the caller alone is passed
//! to the command itself, which handles it as it likes (see
//! `super::signals`).

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use rustix::thread::CapabilitySet;

use super::{Network, Placement, SandboxError, SandboxOptions, StdoutTo};

pub(super) fn run(
    bwrap: &Path,
    root: &Path,
    opts: &SandboxOptions,
    placement: &Placement,
    argv: &[OsString],
) -> Result<ExitStatus, SandboxError> {
    let mut cmd = Command::new(bwrap);
    cmd.env_clear();
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.args([
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
    ]);
    if opts.network == Network::None {
        cmd.arg("--unshare-net");
    }
    cmd.args(["--cap-drop", "ALL"]);
    let kept = super::kept_capabilities()?;
    let keep = kept
        .iter()
        .fold(CapabilitySet::empty(), |all, (c, _)| all | *c);
    for (_, name) in kept {
        cmd.args(["--cap-add", name]);
    }
    cmd.arg("--bind").arg(root).arg("/");
    // Every destination as resolved in the stage ([`Placement`]): no
    // symlink on the way for bubblewrap to follow in its own set-up root,
    // where the host is reachable.
    let proc = placement.fixed_at("proc");
    let dev = placement.fixed_at("dev");
    // bubblewrap run as root leaves /proc/sys writable (its check runs
    // without capabilities); cover it as the built-in sandbox does.
    cmd.arg("--proc").arg(&proc);
    cmd.args(["--ro-bind", "/proc/sys"]).arg(proc.join("sys"));
    cmd.args(["--ro-bind-try", "/proc/sysrq-trigger"])
        .arg(proc.join("sysrq-trigger"));
    cmd.arg("--dev").arg(&dev);
    cmd.args(["--perms", "1777", "--tmpfs"])
        .arg(dev.join("shm"));
    cmd.args(["--ro-bind", "/sys"])
        .arg(placement.fixed_at("sys"));
    cmd.args(["--perms", "1777", "--tmpfs"])
        .arg(placement.fixed_at("tmp"));
    cmd.arg("--tmpfs").arg(placement.fixed_at("run"));
    for (b, placed) in &placement.binds {
        cmd.arg(if b.read_only { "--ro-bind" } else { "--bind" })
            .arg(&b.source)
            .arg(Path::new("/").join(&placed.at));
    }
    let (status_r, status_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| {
            SandboxError::Spawn {
                program: bwrap.to_path_buf(),
                source: e.into(),
            }
        })?;
    let status_fd = status_w.as_raw_fd();
    cmd.args(["--chdir", "/", "--json-status-fd"])
        .arg(status_fd.to_string())
        .arg("--")
        .args(argv);
    if opts.stdout == StdoutTo::Stderr {
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| SandboxError::Spawn {
                program: bwrap.to_path_buf(),
                source,
            })?;
        cmd.stdout(Stdio::from(err));
    }
    // SAFETY: only close_range, fcntl, capget, capset, prctl and signal on
    // plain numbers, no allocation, between fork and exec: no other descriptor of the caller
    // may reach bubblewrap (which passes them on to the command), but
    // bubblewrap must inherit the status pipe (it closes it in the
    // command), and the command gets the terminal's signals at their
    // default action (bubblewrap passes dispositions on; the caller may
    // ignore them, see `ignore_terminal_signals`).
    unsafe {
        cmd.pre_exec(move || {
            super::cloexec_from_3()?;
            super::bounding_set_for_bwrap(keep)?;
            let fd = rustix::fd::BorrowedFd::borrow_raw(status_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        program: bwrap.to_path_buf(),
        source,
    })?;
    drop(status_w);
    let _running = super::signals::Running::new(child.id());
    // Read to the end while bubblewrap runs (it writes a line at the
    // start and one at the end; the pipe never fills).
    let mut report = Vec::new();
    let read = std::fs::File::from(status_r)
        .take(64 * 1024)
        .read_to_end(&mut report);
    let status = child.wait().map_err(|source| SandboxError::Spawn {
        program: bwrap.to_path_buf(),
        source,
    })?;
    // Killed by a signal (the terminal's Ctrl-C reaches bubblewrap too):
    // the command's fate is that signal, wherever it was.
    if status.code().is_some() && read.is_ok() && !has_exit_code(&report) {
        return Err(SandboxError::BwrapSetup { status });
    }
    Ok(status)
}

/// Whether bubblewrap's JSON status lines include `"exit-code"` (written
/// only once the command was started).
fn has_exit_code(report: &[u8]) -> bool {
    report.windows(11).any(|w| w == b"\"exit-code\"")
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_code_line() {
        assert!(super::has_exit_code(
            b"{ \"child-pid\": 12 }\n{ \"exit-code\": 0 }\n"
        ));
        assert!(!super::has_exit_code(b"{ \"child-pid\": 12 }\n"));
    }
}
