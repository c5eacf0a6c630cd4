//! Worker pools for recursive tree walks.
//!
//! Commit, stage create and stage commit recurse once per directory level
//! (up to [`MAX_DEPTH`](crate::store::commit::MAX_DEPTH)) inside rayon
//! jobs, and rayon nests stolen jobs on the same stack: the default 2 MiB
//! thread stacks are not enough for a deep tree. The library does not rely
//! on its caller having configured rayon's global pool; these walks run in
//! a pool of their own with room for the deepest tree accepted.

/// Stack size of walk workers.
const STACK_SIZE: usize = 16 << 20;

/// Runs `f` in a pool (one thread per CPU) whose threads have deep stacks.
/// If no pool can be made (threads exhausted), `f` runs in the current one.
pub(crate) fn deep<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .stack_size(STACK_SIZE)
        .thread_name(|i| format!("walk-{i}"))
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
