//! The checkout cache's part of gc: which entries exist, when each was
//! last used, which a stage uses, and removing unused ones in
//! least-recently-used order.

use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use super::{StageError, Stages, cache};
use crate::ostree::Checksum;

/// One checkout-cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub commit: Checksum,
    /// When it was built or its commit last used, whichever is later.
    pub last_use: SystemTime,
    /// A stage (ready or being created) has the commit as a layer.
    pub in_use: bool,
}

/// A removed entry and the bytes its removal certainly freed (its own
/// inodes; files hardlinked to store objects stay with the objects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub commit: Checksum,
    pub bytes: u64,
}

impl Stages<'_> {
    /// The cache's entries, least recently used first.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StageError> {
        let cache = cache::Cache::open(self.repo, &self.base, &self.base_path)?;
        let used: std::collections::HashSet<Checksum> =
            super::pins::pins(self.repo)?.cached.into_iter().collect();
        let cache_dir = crate::store::repo::open_dir(&self.base, cache::CACHE_DIR)?;
        let mut out: Vec<CacheEntry> = cache
            .entries()?
            .into_iter()
            .map(|c| {
                let built = crate::store::used::mtime_at(cache_dir.as_fd(), &c.to_string());
                let marked = crate::store::used::last_use(self.repo, &c);
                CacheEntry {
                    commit: c,
                    last_use: built.max(marked).unwrap_or(SystemTime::UNIX_EPOCH),
                    in_use: used.contains(&c),
                }
            })
            .collect();
        out.sort_by_key(|e| (e.last_use, e.commit));
        Ok(out)
    }

    /// Removes the entries of `order` that no stage uses, in that order,
    /// until `enough` says so (it gets the bytes freed so far). Holds the
    /// stage registry lock exclusively, so no stage is created meanwhile
    /// over an entry being removed; `None` when a `stage create` kept it
    /// longer than `timeout` (nothing removed).
    pub fn evict_cache(
        &self,
        order: &[Checksum],
        mut enough: impl FnMut(u64) -> bool,
        timeout: Option<std::time::Duration>,
        interrupt: &AtomicBool,
    ) -> Result<Option<Vec<Evicted>>, StageError> {
        let Some(_registry) = self.registry_lock(true, timeout, interrupt)? else {
            return Ok(None);
        };
        let used: std::collections::HashSet<Checksum> =
            super::pins::pins(self.repo)?.cached.into_iter().collect();
        let cache = cache::Cache::open(self.repo, &self.base, &self.base_path)?;
        let cache_dir = crate::store::repo::open_dir(&self.base, cache::CACHE_DIR)?;
        let mut freed = 0;
        let mut out = Vec::new();
        for c in order {
            if enough(freed) {
                break;
            }
            if used.contains(c) {
                continue;
            }
            let name = c.to_string();
            let usage = crate::store::gc::size::disk_usage(cache_dir.as_fd(), &name)
                .map_err(|e| StageError::io(&cache.entry_path(c), "measuring", e))?;
            if cache.remove_entry(c)? {
                crate::failpoint::crash("gc:cache-entry");
                freed += usage.unique_bytes;
                out.push(Evicted {
                    commit: *c,
                    bytes: usage.unique_bytes,
                });
            }
        }
        Ok(Some(out))
    }
}
