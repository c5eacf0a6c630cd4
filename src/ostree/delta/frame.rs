//! GVariant tuple framing for the two large delta containers, the
//! superblock and the part payload.
//!
//! The `gvariant` crate reads a whole tuple into typed references, which
//! is what the small members need, but the delta code also needs the raw
//! bytes of some members (the target commit is hashed as stored; a part's
//! data blob may be gigabytes in a file and must never be read whole). So
//! the outer tuple is split here by its framing offsets, with the same
//! normal-form rules as [`super::super::normal_form`]: members at their
//! alignment with zero padding, offsets of the minimal width, consistent
//! and in bounds. Each member is then parsed (and checked) on its own;
//! GVariant serialization is position independent, so a member's bytes are
//! the same wherever the member sits.

use std::ops::Range;

use super::super::error::{FormatError, Result};
use super::super::normal_form::{minimal_width, offset_size};

/// One tuple member's layout: alignment and fixed size (`None` = variable).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    pub align: usize,
    pub fixed: Option<usize>,
}

impl Member {
    pub const fn var(align: usize) -> Member {
        Member { align, fixed: None }
    }

    pub const fn fixed(align: usize, size: usize) -> Member {
        Member {
            align,
            fixed: Some(size),
        }
    }
}

fn align_up(off: usize, a: usize) -> Option<usize> {
    off.checked_add(a - 1).map(|v| v / a * a)
}

/// Number of framing offsets a tuple of `members` carries: one per
/// variable-size member but the last.
fn n_offsets(members: &[Member]) -> usize {
    let last = members.len().saturating_sub(1);
    members
        .iter()
        .enumerate()
        .filter(|(i, m)| *i != last && m.fixed.is_none())
        .count()
}

/// How many trailing bytes of a `len`-byte tuple hold its framing offsets.
pub(crate) fn tail_len(members: &[Member], len: usize) -> usize {
    n_offsets(members).saturating_mul(offset_size(len))
}

/// Member ranges, and padding ranges between members.
pub(crate) type Split = (Vec<Range<usize>>, Vec<Range<usize>>);

/// Where each member lies in a tuple of `len` bytes, from its last
/// [`tail_len`] bytes (`tail`). Also returns the padding ranges between
/// members, which the caller must check are zero (they are at most 7 bytes
/// each). Only for tuples with at least one variable-size member.
pub(crate) fn split_from_tail(
    what: &'static str,
    members: &[Member],
    len: usize,
    tail: &[u8],
) -> Result<Split> {
    let bad = || FormatError::NotNormalForm { what };
    let n_off = n_offsets(members);
    let w = if n_off == 0 { 0 } else { offset_size(len) };
    if tail.len() != n_off * w {
        return Err(FormatError::Truncated { what });
    }
    let body_end = len.checked_sub(n_off * w).ok_or_else(bad)?;
    if n_off > 0 && minimal_width(body_end, n_off) != w {
        return Err(bad());
    }
    let read = |k: usize| -> usize {
        // Offsets are stored in reverse order at the very end.
        let at = tail.len() - k * w;
        let mut v = 0u64;
        for (i, b) in tail[at..at + w].iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        usize::try_from(v).unwrap_or(usize::MAX)
    };
    let last = members.len() - 1;
    let mut ranges = Vec::with_capacity(members.len());
    let mut padding = Vec::new();
    let mut off = 0usize;
    let mut k = 0;
    for (i, m) in members.iter().enumerate() {
        let start = align_up(off, m.align).ok_or_else(bad)?;
        let end = match m.fixed {
            Some(n) => start.checked_add(n).ok_or_else(bad)?,
            None if i == last => body_end,
            None => {
                k += 1;
                read(k)
            }
        };
        if start > end || end > body_end {
            return Err(bad());
        }
        if start > off {
            padding.push(off..start);
        }
        ranges.push(start..end);
        off = end;
    }
    if off != body_end {
        return Err(bad());
    }
    Ok((ranges, padding))
}

/// [`split_from_tail`] on a tuple held in memory, padding checked.
pub(crate) fn split(
    what: &'static str,
    members: &[Member],
    data: &[u8],
) -> Result<Vec<Range<usize>>> {
    let t = tail_len(members, data.len());
    if t > data.len() {
        return Err(FormatError::Truncated { what });
    }
    let (ranges, padding) = split_from_tail(what, members, data.len(), &data[data.len() - t..])?;
    for p in padding {
        if data[p].iter().any(|b| *b != 0) {
            return Err(FormatError::NotNormalForm { what });
        }
    }
    Ok(ranges)
}

/// The framing offsets to append after a tuple body whose variable-size
/// members (but the last) end at `ends`, in member order.
pub(crate) fn offsets_trailer(body_len: usize, ends: &[usize]) -> Vec<u8> {
    if ends.is_empty() {
        return Vec::new();
    }
    let w = minimal_width(body_len, ends.len());
    let mut out = Vec::with_capacity(ends.len() * w);
    for e in ends.iter().rev() {
        out.extend_from_slice(&(*e as u64).to_le_bytes()[..w]);
    }
    out
}

/// Serializes a tuple from its members' serialized bytes. Only for tuples
/// with at least one variable-size member (no trailing padding).
pub(crate) fn join(members: &[(Member, &[u8])]) -> Vec<u8> {
    let total: usize = members.iter().map(|(_, b)| b.len() + 8).sum();
    let mut out = Vec::with_capacity(total + 64);
    let mut ends = Vec::new();
    let last = members.len().saturating_sub(1);
    for (i, (m, bytes)) in members.iter().enumerate() {
        let start = out.len().div_ceil(m.align) * m.align;
        out.resize(start, 0);
        out.extend_from_slice(bytes);
        if m.fixed.is_none() && i != last {
            ends.push(out.len());
        }
    }
    let trailer = offsets_trailer(out.len(), &ends);
    out.extend_from_slice(&trailer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gvariant::{Marker, gv};

    const M: [Member; 4] = [
        Member::var(4),
        Member::var(1),
        Member::fixed(8, 8),
        Member::var(1),
    ];

    #[test]
    fn join_matches_the_crate_and_splits_back() {
        let a: Vec<u32> = vec![1, 2, 3];
        let s = "hello";
        let t = 7u64;
        let last: &[u8] = b"xyz";
        let expected = gv!("(austay)").serialize_to_vec(&(&a, s, t, last));
        let a_bytes = gv!("au").serialize_to_vec(&a);
        let s_bytes = gv!("s").serialize_to_vec(s);
        let joined = join(&[
            (M[0], &a_bytes),
            (M[1], &s_bytes),
            (M[2], &t.to_ne_bytes()),
            (M[3], last),
        ]);
        assert_eq!(joined, expected);
        let r = split("test tuple", &M, &joined).unwrap();
        assert_eq!(&joined[r[0].clone()], &a_bytes[..]);
        assert_eq!(&joined[r[1].clone()], &s_bytes[..]);
        assert_eq!(&joined[r[3].clone()], last);
        // Non-zero padding and bad offsets are refused.
        let mut bad = joined.clone();
        bad[r[1].end] = 1;
        assert!(split("t", &M, &bad).is_err());
        let mut bad = joined.clone();
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert!(split("t", &M, &bad).is_err());
        assert!(split("t", &M, &[]).is_err());
    }
}
