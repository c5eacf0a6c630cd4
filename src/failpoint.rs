//! Crash points for the crash tests: named steps where a test makes the
//! process kill itself (`SIGKILL`, no clean-up), to check what each step
//! leaves behind. Compiled in only with the `failpoints` cargo feature
//! (the `fail` crate; the binary then reads `FAILPOINTS=NAME=return`);
//! in a normal build [`crash`] is empty and nothing reads the environment.
//! The `fail` crate's other actions work too: `NAME=3*off->return` kills
//! at the fourth pass through a step that repeats (a batch, a ref), and
//! `NAME=sleep(80)` slows a step down (the lock-fairness tests).

/// Kills the process at `name` when the tests armed that point.
#[inline]
pub(crate) fn crash(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// A named step where a test may make the process wait
/// (`FAILPOINTS=NAME=sleep(MS)`), to widen a race window on purpose.
#[inline]
pub(crate) fn delay(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
