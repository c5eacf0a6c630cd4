//! gc after every write ([`auto()`]): the cap from the repository config,
//! checked against a remembered measurement (`extensions/arbor/gc-state`:
//! bytes and when) plus what each write reports it added, so that a write
//! costs no walk of the store; the store is measured again (by the gc)
//! only when that estimate is over the cap or an hour old.

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};

use super::{GcError, GcOptions, GcOutcome, gc};
use crate::store::Repo;

/// How old a measurement [`auto()`] trusts (plus what writers added since).
const MEASURE_EVERY: Duration = Duration::from_secs(3600);
/// Added to every write's own estimate: the ref file, and a new
/// `objects/XX` or refs directory it may have made.
const WRITE_OVERHEAD: u64 = 16 << 10;
/// How long [`auto()`] waits for the exclusive lock each time.
const AUTO_LOCK_WAIT: Duration = Duration::from_secs(10);
/// Where [`auto()`] keeps its last measurement, under [`STATE_DIR`].
const STATE_DIR: &str = "extensions/arbor";
const STATE_FILE: &str = "gc-state";
/// Longer than any state file arbor writes ("BYTES SECS\n").
const MAX_STATE: u64 = 64;

/// Applies the config's cap after a write that added about `added`
/// bytes; `None` when no cap is configured or the store is under it.
/// The size is the last measurement plus what writers reported since,
/// measured afresh when that is over the cap or older than an hour, so
/// a write costs no walk of the store. Every lock wait is bounded (10 s)
/// and polled, and the gc stops ([`GcError::is_interrupted`]) once
/// `interrupt` is set: Ctrl-C after the write is done stops it at once.
pub fn auto(repo: &Repo, added: u64, interrupt: &AtomicBool) -> Result<Option<GcOutcome>, GcError> {
    let Some(mut opts) = GcOptions::from_config(repo)? else {
        return Ok(None);
    };
    // The write that called us is done: it must not hang on behind a long
    // pull of another process. The next write tries again.
    opts.lock_timeout = Some(AUTO_LOCK_WAIT);
    let now = now_secs();
    if let Some((bytes, at)) = read_state(repo)
        && now.saturating_sub(at) < MEASURE_EVERY.as_secs()
    {
        let estimate = bytes.saturating_add(added).saturating_add(WRITE_OVERHEAD);
        if estimate <= opts.max_size {
            write_state(repo, estimate, at);
            return Ok(None);
        }
    }
    let out = gc(repo, &opts, &crate::progress::NoProgress, interrupt)?;
    Ok((out.size_before > opts.max_size).then_some(out))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Remembers a measurement for [`auto()`] (best effort).
pub(super) fn save_state(repo: &Repo, bytes: u64) {
    write_state(repo, bytes, now_secs());
}

fn write_state(repo: &Repo, bytes: u64, at: u64) {
    let Ok(dir) = crate::fs::open_dir(repo.dir(), STATE_DIR) else {
        return;
    };
    let _ = crate::store::repo::write_file_atomic(
        dir.as_fd(),
        &repo.path().join(STATE_DIR),
        STATE_FILE,
        format!("{bytes} {at}\n").as_bytes(),
        0o644,
    );
}

/// The remembered measurement; `None` when there is none or it does not
/// read as one (then the gc measures).
fn read_state(repo: &Repo) -> Option<(u64, u64)> {
    let dir = crate::fs::open_dir(repo.dir(), STATE_DIR).ok()?;
    let fd = rustix::fs::openat(
        &dir,
        STATE_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_STATE)
        .read_to_string(&mut text)
        .ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}
