//! SIGINT and SIGQUIT while a sandboxed command runs.
//!
//! A terminal's Ctrl-C or Ctrl-\\ signals the whole foreground process
//! group, the command included: the caller only has to survive it
//! ([`ignore_terminal_signals`](super::ignore_terminal_signals)). The same
//! signals sent to the caller alone by another process (`kill -INT PID`:
//! a supervisor, a CI runner's timeout) would not reach the command at
//! all, and the caller, ignoring them, would wait on: those are passed on
//! to the command. The kernel tells them apart: a terminal's come with
//! `si_code` `SI_KERNEL`, a `kill`'s with `SI_USER` (or `SI_QUEUE`,
//! `SI_TKILL`). A `kill` of the caller's whole process group reaches the
//! command directly and once more through the caller.
//!
//! The handler only writes the signal's number to a pipe; a thread reads
//! it and signals the command, found as the first child of the first
//! child of the sandbox's outer process (bubblewrap's, or the built-in
//! sandbox's A): the sandbox's init, then the command.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// Write end of the pipe to the forwarding thread; -1 before it exists.
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// The running sandbox's outer process; 0 when none runs.
static OUTER: AtomicI32 = AtomicI32::new(0);

static SETUP: Once = Once::new();

/// Installs the handler for SIGINT and SIGQUIT and starts the forwarding
/// thread (once). If any of it fails, the signals are ignored as before.
pub(super) fn install() {
    SETUP.call_once(|| {
        let started = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .ok()
            .and_then(|(r, w)| {
                std::thread::Builder::new()
                    .name("arbor-signals".into())
                    .spawn(move || forward(r))
                    .ok()
                    .map(|_| w)
            });
        // SAFETY: the handler only loads an atomic and calls write(2),
        // both async-signal-safe, and keeps errno; sigaction gets a
        // zeroed, filled-in struct that lives for the call.
        unsafe {
            let Some(w) = started else {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                return;
            };
            // Kept open for the life of the process: the handler may run
            // at any time.
            PIPE.store(w.as_raw_fd(), Ordering::SeqCst);
            std::mem::forget(w);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            for sig in [libc::SIGINT, libc::SIGQUIT] {
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    libc::signal(sig, libc::SIG_IGN);
                }
            }
        }
    });
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO; errno is
    // this thread's and restored before returning; write(2) on a raw
    // descriptor is async-signal-safe.
    unsafe {
        if info.is_null() || (*info).si_code == libc::SI_KERNEL {
            // The terminal's: the command got it too.
            return;
        }
        let fd = PIPE.load(Ordering::SeqCst);
        if fd < 0 {
            return;
        }
        let saved = *libc::__errno_location();
        let byte = sig as u8;
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = saved;
    }
}

/// The forwarding thread.
fn forward(r: OwnedFd) {
    let mut pipe = std::fs::File::from(r);
    let mut byte = [0u8; 1];
    while let Ok(1) = pipe.read(&mut byte) {
        let outer = OUTER.load(Ordering::SeqCst);
        if outer <= 0 {
            continue;
        }
        if let Some(command) = first_child(outer).and_then(first_child) {
            // SAFETY: kill(2) on plain numbers.
            unsafe { libc::kill(command, byte[0].into()) };
        }
    }
}

/// The first child of `pid` (`/proc/PID/task/PID/children`, else a scan
/// of `/proc` for processes whose parent it is, the oldest first).
fn first_child(pid: i32) -> Option<i32> {
    if let Ok(list) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return list.split_whitespace().next()?.parse().ok();
    }
    let mut found: Vec<(u64, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After the command name's closing parenthesis: state, ppid, ...,
        // starttime (field 22).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid)
            && let Some(start) = fields.get(19).and_then(|s| s.parse::<u64>().ok())
        {
            found.push((start, child));
        }
    }
    found.into_iter().min().map(|(_, c)| c)
}

/// Marks `outer` as the running sandbox's outer process until dropped.
pub(super) struct Running;

impl Running {
    pub(super) fn new(outer: u32) -> Running {
        OUTER.store(outer as i32, Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        OUTER.store(0, Ordering::SeqCst);
    }
}
