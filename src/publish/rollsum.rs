//! Rolling-checksum matching of a new file against its old version, as
//! libostree's static-delta compiler does it (`ostree-rollsum.c`,
//! `bupsplit.c`), so arbor picks rollsum for exactly the files ostree does.
//!
//! Both files are cut into chunks where bup's rolling sum (64-byte window)
//! has its low 13 bits all ones; chunks are at most 32 KiB, and once no
//! split point is found the rest is cut every 32 KiB. A new chunk matches
//! an old chunk of the same length whose "CRC" is equal and whose bytes are
//! equal. The file pair is delta'd by rollsum when at least half of the new
//! chunks (by count) match.
//!
//! libostree computes each chunk's CRC-32 over the first `len` bytes of the
//! *file*, not over the chunk (ostree#2066, still open): chunks then only
//! match when both files share a prefix as long as the chunk. That is
//! reproduced here on purpose: it decides between rollsum and bsdiff, and
//! arbor's deltas are meant to be made of the same choices as ostree's.

use std::collections::HashMap;

/// bup's window.
const WINDOW: usize = 64;
/// Split when the low `BLOB_BITS` bits of s2 are all ones.
const BLOB_BITS: u32 = 13;
const BLOB_SIZE: u32 = 1 << BLOB_BITS;
/// Largest chunk (`ROLLSUM_BLOB_MAX`).
pub const MAX_CHUNK: usize = 8192 * 4;
const CHAR_OFFSET: u32 = 31;

/// The offset just past the first split point in `buf`, or 0 when there is
/// none (bup's `bupsplit_find_ofs`).
fn find_split(buf: &[u8]) -> usize {
    let mut s1: u32 = (WINDOW as u32).wrapping_mul(CHAR_OFFSET);
    let mut s2: u32 = (WINDOW as u32)
        .wrapping_mul(WINDOW as u32 - 1)
        .wrapping_mul(CHAR_OFFSET);
    let mut window = [0u8; WINDOW];
    let mut wofs = 0usize;
    for (count, &ch) in buf.iter().enumerate() {
        let drop = window[wofs];
        s1 = s1.wrapping_add(u32::from(ch)).wrapping_sub(u32::from(drop));
        s2 = s2
            .wrapping_add(s1)
            .wrapping_sub((WINDOW as u32).wrapping_mul(u32::from(drop).wrapping_add(CHAR_OFFSET)));
        window[wofs] = ch;
        wofs = (wofs + 1) % WINDOW;
        if s2 & (BLOB_SIZE - 1) == BLOB_SIZE - 1 {
            return count + 1;
        }
    }
    0
}

/// A chunk: start and length.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Chunk {
    start: usize,
    len: usize,
}

/// Cuts `buf` into chunks as libostree does.
fn chunks(buf: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut ended = false;
    while start < buf.len() {
        let remaining = buf.len() - start;
        let len = if ended {
            remaining.min(MAX_CHUNK)
        } else {
            // bup looks at no more than i32::MAX bytes at a time.
            match find_split(&buf[start..start + remaining.min(i32::MAX as usize)]) {
                0 => {
                    ended = true;
                    remaining.min(MAX_CHUNK)
                }
                n => n.min(MAX_CHUNK),
            }
        };
        out.push(Chunk { start, len });
        start += len;
    }
    out
}

/// A run of the new file found in the old one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Where it is in the new file.
    pub to_start: u64,
    /// Where it is in the old file.
    pub from_start: u64,
    pub len: u64,
}

/// The outcome of matching a new file against an old one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matches {
    /// Matched runs, by position in the new file.
    pub matches: Vec<Match>,
    /// Chunks of the new file.
    pub total: usize,
    /// Bytes matched.
    pub match_size: u64,
}

impl Matches {
    /// libostree's rule: rollsum when at least half of the new chunks
    /// matched (integer percentage, as it computes it).
    pub fn worth_it(&self) -> bool {
        self.total > 0 && !self.matches.is_empty() && self.matches.len() * 100 / self.total >= 50
    }
}

/// CRC-32 (zlib's) of `data`.
fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// Matches `to` against `from`.
pub fn compute(from: &[u8], to: &[u8]) -> Matches {
    // The "CRC" of a chunk of length len is the CRC of the file's first len
    // bytes (see the module docs); memoized per length.
    let mut from_index: HashMap<(u32, usize), Vec<Chunk>> = HashMap::new();
    let mut from_crcs: HashMap<usize, u32> = HashMap::new();
    for c in chunks(from) {
        let crc = *from_crcs
            .entry(c.len)
            .or_insert_with(|| crc32(&from[..c.len]));
        from_index.entry((crc, c.len)).or_default().push(c);
    }
    let to_chunks = chunks(to);
    let mut to_crcs: HashMap<usize, u32> = HashMap::new();
    let mut out = Matches {
        total: to_chunks.len(),
        ..Default::default()
    };
    for c in &to_chunks {
        let crc = *to_crcs.entry(c.len).or_insert_with(|| crc32(&to[..c.len]));
        let Some(candidates) = from_index.get(&(crc, c.len)) else {
            continue;
        };
        let bytes = &to[c.start..c.start + c.len];
        if let Some(f) = candidates
            .iter()
            .find(|f| &from[f.start..f.start + f.len] == bytes)
        {
            out.matches.push(Match {
                to_start: c.start as u64,
                from_start: f.start as u64,
                len: c.len as u64,
            });
            out.match_size += c.len as u64;
        }
    }
    // Chunks are visited in file order, so the matches are sorted.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunking_covers_the_file() {
        let data = noise(300_000, 1);
        let cs = chunks(&data);
        assert!(cs.len() > 10);
        let mut at = 0;
        for c in &cs {
            assert_eq!(c.start, at);
            assert!(c.len <= MAX_CHUNK && c.len > 0);
            at += c.len;
        }
        assert_eq!(at, data.len());
    }

    #[test]
    fn reproduces_ostree_2066() {
        // The format reference's experiment: 200 kB, 10 bytes changed.
        let old = noise(200_000, 2);
        let mut late = old.clone();
        late[20_000..20_010].copy_from_slice(b"0123456789");
        let m = compute(&old, &late);
        assert!(m.worth_it(), "{m:?}");
        let mut early = old.clone();
        early[1000..1010].copy_from_slice(b"0123456789");
        let m = compute(&old, &early);
        assert!(!m.worth_it(), "{m:?}");
        // Identical files match entirely.
        let m = compute(&old, &old);
        assert_eq!(m.match_size, old.len() as u64);
    }
}
