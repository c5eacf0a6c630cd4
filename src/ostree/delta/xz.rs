//! The size an xz part declares for its payload.
//!
//! A delta part header gives the part file's size and the sizes of the
//! objects it creates, not the size of its decompressed payload (mode and
//! xattr tables, blob, opcodes: it can be smaller than the objects, for
//! bsdiff'd or rollsum'd files, or larger, for symlinks, which count 0).
//! The xz container does declare it: the stream's index, at its end, lists
//! every block's uncompressed size. So before decompressing, the index is
//! read from the part's last bytes; the output is then held to exactly that
//! size (decompression stops the moment it would exceed it), and liblzma
//! itself checks the blocks against the index and its CRC32.
//!
//! Also checked here: the part is exactly one xz stream, without stream
//! padding or a second stream (libostree's decoder reads one stream), so
//! header, blocks, index and footer add up to the file's size.

use super::error::{DeltaError, Result};

pub const HEADER_LEN: usize = 12;
pub const FOOTER_LEN: usize = 12;
const MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
/// Largest index accepted (backward size is at most 16 GiB in the format;
/// ours are a few bytes per block).
pub const MAX_INDEX_LEN: u64 = 16 << 20;

fn bad(why: &'static str) -> DeltaError {
    DeltaError::Xz(why)
}

/// Checks the stream header (its first 12 bytes) and returns its flags.
pub fn parse_header(h: &[u8]) -> Result<[u8; 2]> {
    if h.len() < HEADER_LEN || h[..6] != MAGIC {
        return Err(bad("not an xz stream (bad magic)"));
    }
    // Reserved flag bits must be zero; the check type is 0..=15.
    if h[6] != 0 || h[7] & 0xf0 != 0 {
        return Err(bad("unsupported stream flags"));
    }
    Ok([h[6], h[7]])
}

/// From the stream footer (its last 12 bytes), the index size in bytes.
pub fn parse_footer(f: &[u8], header_flags: [u8; 2]) -> Result<u64> {
    if f.len() != FOOTER_LEN || f[10..12] != FOOTER_MAGIC {
        return Err(bad(
            "missing stream footer (trailing data, padding or a second stream?)",
        ));
    }
    if f[8..10] != header_flags {
        return Err(bad("stream footer flags differ from the header's"));
    }
    let backward = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    let len = (u64::from(backward) + 1) * 4;
    if len > MAX_INDEX_LEN {
        return Err(bad("index too large"));
    }
    Ok(len)
}

/// Reads an xz variable-length integer (at most 9 bytes, minimal).
fn vli(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let b = *buf.get(*pos).ok_or(bad("index truncated"))?;
        *pos += 1;
        if i > 0 && b == 0 {
            return Err(bad("index integer not in minimal form"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("index integer longer than 9 bytes"))
}

/// What a stream's index declares.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IndexTotals {
    /// Sum of the blocks' uncompressed sizes: the decompressed size.
    pub uncompressed: u64,
    /// Bytes the blocks take in the stream (each padded to 4).
    pub blocks: u64,
}

/// Parses the index (`index_len` bytes before the footer). The CRC32 is
/// left to liblzma, which verifies the index while decoding.
pub fn parse_index(index: &[u8]) -> Result<IndexTotals> {
    if index.first() != Some(&0) {
        return Err(bad("index indicator missing"));
    }
    let mut pos = 1;
    let count = vli(index, &mut pos)?;
    let mut totals = IndexTotals {
        uncompressed: 0,
        blocks: 0,
    };
    for _ in 0..count {
        let unpadded = vli(index, &mut pos)?;
        let uncompressed = vli(index, &mut pos)?;
        if unpadded == 0 {
            return Err(bad("index lists an empty block"));
        }
        let padded = unpadded
            .checked_add(3)
            .map(|v| v & !3)
            .ok_or(bad("block size overflows"))?;
        totals.blocks = totals
            .blocks
            .checked_add(padded)
            .ok_or(bad("block sizes overflow"))?;
        totals.uncompressed = totals
            .uncompressed
            .checked_add(uncompressed)
            .ok_or(bad("uncompressed sizes overflow"))?;
    }
    // Zero padding to a multiple of 4, then the CRC32.
    let padded_end = pos.div_ceil(4) * 4;
    if padded_end + 4 != index.len() || index[pos..padded_end].iter().any(|b| *b != 0) {
        return Err(bad("index has trailing bytes or bad padding"));
    }
    Ok(totals)
}

/// Checks that a stream of `stream_len` bytes is exactly header, blocks,
/// index (`index_len`) and footer.
pub fn check_stream_len(stream_len: u64, index_len: u64, totals: &IndexTotals) -> Result<()> {
    let expected = (HEADER_LEN as u64 + FOOTER_LEN as u64)
        .checked_add(index_len)
        .and_then(|v| v.checked_add(totals.blocks));
    if expected != Some(stream_len) {
        return Err(bad(
            "blocks, index and footer do not add up to the stream's size",
        ));
    }
    Ok(())
}

/// Everything above on a stream held in memory: its declared
/// uncompressed size.
pub fn declared_size(stream: &[u8]) -> Result<u64> {
    if stream.len() < HEADER_LEN + FOOTER_LEN {
        return Err(bad("stream too short"));
    }
    let flags = parse_header(&stream[..HEADER_LEN])?;
    let index_len = parse_footer(&stream[stream.len() - FOOTER_LEN..], flags)?;
    let index_start = (stream.len() - FOOTER_LEN)
        .checked_sub(index_len as usize)
        .filter(|s| *s >= HEADER_LEN)
        .ok_or(bad("index larger than the stream"))?;
    let totals = parse_index(&stream[index_start..stream.len() - FOOTER_LEN])?;
    check_stream_len(stream.len() as u64, index_len, &totals)?;
    Ok(totals.uncompressed)
}

#[cfg(test)]
mod tests {
    use super::super::part::{Compression, encode_part_file};
    use super::*;

    #[test]
    fn reads_liblzma_streams() {
        for len in [0usize, 1, 1000, 300_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let part = encode_part_file(&payload, Compression::Xz);
            assert_eq!(declared_size(&part[1..]).unwrap(), len as u64);
            // Trailing padding or garbage is refused.
            let mut padded = part[1..].to_vec();
            padded.extend_from_slice(&[0; 4]);
            assert!(declared_size(&padded).is_err());
            assert!(declared_size(&part[1..part.len() - 1]).is_err());
        }
        assert!(declared_size(b"not xz at all, not at all").is_err());
    }
}
