//! bsdiff patches as static deltas carry them (§8.4): mendsley's format
//! without header or compression. A patch is a run of control triples
//! `(x, y, z)` of 8-byte sign-magnitude little-endian integers, each
//! followed by `x` diff bytes (added to the old file's bytes at the old
//! position) and `y` extra bytes (copied). Then the old position moves by
//! `x + z`, the new one by `x + y`; patching stops once the new file has
//! its declared size.
//!
//! Written by hand rather than with the `bsdiff` crate: its `patch` needs
//! the whole old file as a slice and builds the whole new file in a `Vec`
//! (a delta's bsdiff'd files reach 100 MB, over our memory budget), runs
//! until the patch ends instead of until the declared size, and reads the
//! `x` and `y` lengths as unsigned. This module only plans the copy: it
//! checks each triple and says which old range and how many patch bytes
//! make the next stretch of output, so the caller can stream every byte
//! (see `pull::delta`). Unlike mendsley's bspatch, which skips old bytes
//! outside the file, a diff reading outside the old file is an error: no
//! bsdiff output does that, and libostree's 2026 fixes reject it too.

use super::error::{BspatchError, DeltaError, Result};

/// Bytes of one control triple.
pub const CONTROL_LEN: usize = 24;

/// One control triple.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// Diff bytes: new = old + patch byte.
    pub diff: u64,
    /// Extra bytes copied from the patch.
    pub extra: u64,
    /// Move of the old position after the diff bytes.
    pub seek: i64,
}

fn offtin(b: &[u8]) -> i64 {
    let raw = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let magnitude = (raw & !(1 << 63)) as i64;
    if raw & (1 << 63) != 0 {
        -magnitude
    } else {
        magnitude
    }
}

fn offtout(v: i64, out: &mut Vec<u8>) {
    let raw = if v < 0 {
        v.unsigned_abs() | (1 << 63)
    } else {
        v as u64
    };
    out.extend_from_slice(&raw.to_le_bytes());
}

impl Control {
    pub fn parse(b: &[u8; CONTROL_LEN]) -> Result<Control> {
        let (x, y, z) = (offtin(&b[0..8]), offtin(&b[8..16]), offtin(&b[16..24]));
        if x < 0 || y < 0 {
            return Err(DeltaError::Bspatch(BspatchError::NegativeLength(x, y)));
        }
        Ok(Control {
            diff: x as u64,
            extra: y as u64,
            seek: z,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        offtout(self.diff as i64, out);
        offtout(self.extra as i64, out);
        offtout(self.seek, out);
    }
}

/// The output a control triple makes: `diff` bytes of the old file from
/// `old_start`, each plus the next patch byte, then `extra` patch bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stretch {
    pub old_start: u64,
    pub diff: u64,
    pub extra: u64,
}

/// Tracks positions while a patch is applied.
#[derive(Clone, Debug)]
pub struct Patcher {
    old_size: u64,
    new_size: u64,
    old_pos: i64,
    new_pos: u64,
}

impl Patcher {
    pub fn new(old_size: u64, new_size: u64) -> Self {
        Patcher {
            old_size,
            new_size,
            old_pos: 0,
            new_pos: 0,
        }
    }

    /// True once the new file has all its bytes (trailing patch bytes are
    /// ignored, as in mendsley's bspatch).
    pub fn is_done(&self) -> bool {
        self.new_pos == self.new_size
    }

    /// Checks the next triple and returns the stretch it makes.
    pub fn next(&mut self, c: Control) -> Result<Stretch> {
        let err = |e| DeltaError::Bspatch(e);
        let past = |length| {
            err(BspatchError::PastNewEnd {
                new_pos: self.new_pos,
                length,
                new_size: self.new_size,
            })
        };
        let written = c.diff.checked_add(c.extra).ok_or_else(|| past(u64::MAX))?;
        match self.new_pos.checked_add(written) {
            Some(end) if end <= self.new_size => {}
            _ => return Err(past(written)),
        }
        let diff = i64::try_from(c.diff).map_err(|_| err(BspatchError::SeekOverflow))?;
        let old_end = self
            .old_pos
            .checked_add(diff)
            .ok_or(err(BspatchError::SeekOverflow))?;
        if c.diff > 0 && (self.old_pos < 0 || old_end as u64 > self.old_size) {
            return Err(err(BspatchError::OldOutOfBounds {
                start: self.old_pos,
                end: old_end,
                old_size: self.old_size,
            }));
        }
        let stretch = Stretch {
            // Only meaningful when something is read from the old file.
            old_start: if c.diff > 0 { self.old_pos as u64 } else { 0 },
            diff: c.diff,
            extra: c.extra,
        };
        self.new_pos += written;
        self.old_pos = old_end
            .checked_add(c.seek)
            .ok_or(err(BspatchError::SeekOverflow))?;
        Ok(stretch)
    }
}

/// Applies a patch held in memory (tests and fuzzing; the pull streams).
pub fn apply_in_memory(old: &[u8], patch: &[u8], new_size: u64) -> Result<Vec<u8>> {
    let mut p = Patcher::new(old.len() as u64, new_size);
    let mut out = Vec::new();
    let mut rest = patch;
    let short = || DeltaError::Bspatch(BspatchError::Truncated);
    while !p.is_done() {
        let (ctrl, r) = rest.split_first_chunk::<CONTROL_LEN>().ok_or_else(short)?;
        let s = p.next(Control::parse(ctrl)?)?;
        let (diff, r) = r.split_at_checked(s.diff as usize).ok_or_else(short)?;
        let old_part = &old[s.old_start as usize..(s.old_start + s.diff) as usize];
        out.extend(diff.iter().zip(old_part).map(|(d, o)| d.wrapping_add(*o)));
        let (extra, r) = r.split_at_checked(s.extra as usize).ok_or_else(short)?;
        out.extend_from_slice(extra);
        rest = r;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch_of(triples: &[(Control, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (c, d, e) in triples {
            c.encode(&mut out);
            out.extend_from_slice(d);
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn applies_and_bounds() {
        let old = b"hello world";
        // "hello" diffed (+0 except 'h'→'j'), then extra " there", skip
        // " world".
        let patch = patch_of(&[(
            Control {
                diff: 5,
                extra: 6,
                seek: 0,
            },
            &[2, 0, 0, 0, 0],
            b" there",
        )]);
        assert_eq!(apply_in_memory(old, &patch, 11).unwrap(), b"jello there");
        // Declared size smaller than what the triple writes.
        assert!(apply_in_memory(old, &patch, 10).is_err());
        // Patch too short for the declared size.
        assert!(apply_in_memory(old, &patch, 12).is_err());
        // Diff reading past the old file.
        let bad = patch_of(&[(
            Control {
                diff: 5,
                extra: 0,
                seek: 0,
            },
            &[0; 5],
            b"",
        )]);
        assert!(apply_in_memory(b"abc", &bad, 5).is_err());
        // A seek to before the start, then a diff: refused.
        let bad = patch_of(&[
            (
                Control {
                    diff: 1,
                    extra: 0,
                    seek: -5,
                },
                &[0],
                b"",
            ),
            (
                Control {
                    diff: 1,
                    extra: 0,
                    seek: 0,
                },
                &[0],
                b"",
            ),
        ]);
        assert!(apply_in_memory(old, &bad, 2).is_err());
        // A seek far past the end, then no diff bytes: nothing is read
        // there, so it is fine (a fuzz finding: the stretch pointed there).
        let far = patch_of(&[
            (
                Control {
                    diff: 0,
                    extra: 1,
                    seek: 1 << 35,
                },
                b"",
                b"x",
            ),
            (
                Control {
                    diff: 0,
                    extra: 1,
                    seek: 0,
                },
                b"",
                b"y",
            ),
        ]);
        assert_eq!(apply_in_memory(old, &far, 2).unwrap(), b"xy");
        // Negative lengths.
        let mut neg = Vec::new();
        offtout(-1, &mut neg);
        neg.extend_from_slice(&[0; 16]);
        assert!(Control::parse(&neg.try_into().unwrap()).is_err());
        let mut b = Vec::new();
        Control {
            diff: 1,
            extra: 2,
            seek: -3,
        }
        .encode(&mut b);
        assert_eq!(
            Control::parse(&b.try_into().unwrap()).unwrap(),
            Control {
                diff: 1,
                extra: 2,
                seek: -3
            }
        );
    }
}
