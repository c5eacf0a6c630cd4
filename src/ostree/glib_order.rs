//! The order in which GLib's `GHashTable` yields string keys, so that
//! dictionaries libostree builds with `GVariantDict` (summary metadata,
//! per-ref metadata, `ostree.static-deltas`, delta indexes) can be written
//! byte for byte as ostree writes them.
//!
//! `g_variant_dict_end` walks the dictionary's hash table bucket by bucket.
//! The table (GLib ≥ 2.59, unchanged since) hashes keys with `g_str_hash`
//! (djb2 over signed chars), maps a hash to bucket `(hash * 11) % mod`
//! (`mod` the prime below the power-of-two size), probes quadratically,
//! starts with 8 buckets and is rehashed in place when it fills to 15/16
//! or empties to 1/4. Only insertions happen here (a repeated key keeps its
//! bucket), so the order depends only on the keys and their insertion
//! order. Written by hand: it is GLib's behaviour, not a data structure any
//! crate offers.

const MIN_SHIFT: u32 = 3;
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];

/// `g_str_hash`.
pub fn str_hash(s: &str) -> u32 {
    let mut h: u32 = 5381;
    for &b in s.as_bytes() {
        h = (h << 5).wrapping_add(h).wrapping_add(b as i8 as i32 as u32);
    }
    h
}

struct Table {
    shift: u32,
    /// Per bucket: the key's index and hash; `None` is unused.
    nodes: Vec<Option<(usize, u32)>>,
    nnodes: usize,
}

impl Table {
    fn new() -> Self {
        Table {
            shift: MIN_SHIFT,
            nodes: vec![None; 1 << MIN_SHIFT],
            nnodes: 0,
        }
    }

    fn size(&self) -> usize {
        1 << self.shift
    }

    fn mask(&self) -> usize {
        self.size() - 1
    }

    fn index(&self, hash: u32) -> usize {
        (hash.wrapping_mul(11) % PRIME_MOD[self.shift as usize]) as usize
    }

    /// Inserts key `k` (its hash `hash`); `same` tells whether two key
    /// indexes name equal strings.
    fn insert(&mut self, k: usize, hash: u32, same: impl Fn(usize) -> bool) {
        let mut i = self.index(hash);
        let mut step = 0;
        while let Some((key, h)) = self.nodes[i] {
            if h == hash && same(key) {
                return;
            }
            step += 1;
            i = (i + step) & self.mask();
        }
        self.nodes[i] = Some((k, hash));
        self.nnodes += 1;
        // No deletions: every used bucket is occupied.
        let occupied = self.nnodes;
        let size = self.size();
        if (size > self.nnodes * 4 && size > 1 << MIN_SHIFT) || size <= occupied + occupied / 16 {
            self.resize();
        }
    }

    /// `g_hash_table_resize`: in place, evicting nodes along the way.
    fn resize(&mut self) {
        let old_size = self.size();
        let mut n = (self.nnodes as f64 * 1.333) as u64;
        let mut shift = 0;
        while n > 0 {
            n >>= 1;
            shift += 1;
        }
        self.shift = shift.max(MIN_SHIFT);
        let size = self.size();
        if size > old_size {
            self.nodes.resize(size, None);
        }
        let mut placed = vec![false; size];
        for i in 0..old_size {
            if self.nodes[i].is_none() || placed[i] {
                continue;
            }
            let mut node = self.nodes[i].take();
            while let Some((k, h)) = node {
                let mut j = self.index(h);
                let mut step = 0;
                while placed[j] {
                    step += 1;
                    j = (j + step) & self.mask();
                }
                placed[j] = true;
                node = self.nodes[j].replace((k, h));
            }
        }
        if size < old_size {
            self.nodes.truncate(size);
        }
    }
}

/// Indexes into `keys` (inserted in this order; repeats keep their first
/// position) in the order a `GHashTable` iterates them.
pub fn hash_order(keys: &[&str]) -> Vec<usize> {
    let mut t = Table::new();
    for (i, k) in keys.iter().enumerate() {
        // 0 and 1 mark unused and deleted buckets: GLib stores them as 2.
        let h = str_hash(k).max(2);
        t.insert(i, h, |j| keys[j] == *k);
    }
    t.nodes.iter().flatten().map(|(k, _)| *k).collect()
}

/// Reorders `entries` (unique keys, in insertion order) as a `GVariantDict`
/// built by inserting them in that order would serialize them.
pub fn dict_order<V>(entries: Vec<(String, V)>) -> Vec<(String, V)> {
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let order = hash_order(&keys);
    let mut slots: Vec<Option<(String, V)>> = entries.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_hash_is_djb2_signed() {
        assert_eq!(str_hash(""), 5381);
        assert_eq!(str_hash("a"), 5381 * 33 + 97);
        assert_eq!(str_hash("\u{e9}"), {
            let h = 5381u32
                .wrapping_mul(33)
                .wrapping_add(0xc3u8 as i8 as i32 as u32);
            h.wrapping_mul(33).wrapping_add(0xa9u8 as i8 as i32 as u32)
        });
    }

    #[test]
    fn every_key_once_through_resizes() {
        let keys: Vec<String> = (0..500).map(|i| format!("key{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut order = hash_order(&refs);
        assert_eq!(order.len(), 500);
        order.sort();
        assert_eq!(order, (0..500).collect::<Vec<_>>());
        // Repeats keep one slot.
        assert_eq!(hash_order(&["a", "b", "a"]).len(), 2);
    }
}
