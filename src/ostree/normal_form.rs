//! GVariant normal-form checking for values whose type is only known at run
//! time (the `v` values of metadata dictionaries).
//!
//! Written by hand because the `gvariant` crate only handles types fixed at
//! compile time, and GLib's checker would pull in the C library. The rules
//! are the GVariant specification's: zero padding, framing offsets of the
//! minimal width that are consistent and in bounds, booleans 0 or 1,
//! strings NUL-terminated UTF-8 without inner NULs, variants holding one
//! complete type whose value is itself in normal form.

use super::error::{FormatError, Result};

/// GLib's limit on type nesting (`G_VARIANT_MAX_RECURSION_DEPTH`).
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Type {
    /// `b y n q i u h x t d s o g`
    Basic(u8),
    Variant,
    Maybe(Box<Type>),
    Array(Box<Type>),
    /// Tuples and dict entries (a dict entry is a 2-tuple on the wire).
    Tuple(Vec<Type>),
}

impl Type {
    fn alignment(&self) -> usize {
        match self {
            Type::Basic(b'b' | b'y' | b's' | b'o' | b'g') => 1,
            Type::Basic(b'n' | b'q') => 2,
            Type::Basic(b'i' | b'u' | b'h') => 4,
            Type::Basic(_) | Type::Variant => 8,
            Type::Maybe(t) | Type::Array(t) => t.alignment(),
            Type::Tuple(m) => m.iter().map(Type::alignment).max().unwrap_or(1),
        }
    }

    fn fixed_size(&self) -> Option<usize> {
        match self {
            Type::Basic(b'b' | b'y') => Some(1),
            Type::Basic(b'n' | b'q') => Some(2),
            Type::Basic(b'i' | b'u' | b'h') => Some(4),
            Type::Basic(b'x' | b't' | b'd') => Some(8),
            Type::Basic(_) | Type::Variant | Type::Maybe(_) | Type::Array(_) => None,
            Type::Tuple(m) => {
                if m.is_empty() {
                    return Some(1);
                }
                let mut off = 0;
                for t in m {
                    off = align(off, t.alignment()) + t.fixed_size()?;
                }
                Some(align(off, self.alignment()))
            }
        }
    }
}

fn bad(why: &str) -> FormatError {
    FormatError::InvalidMetadata(format!("value not in GVariant normal form: {why}"))
}

fn align(off: usize, a: usize) -> usize {
    off.div_ceil(a) * a
}

/// Parses one complete type from the start of `s`; returns it and the rest.
fn parse_type(s: &[u8], depth: usize) -> Result<(Type, &[u8])> {
    if depth > MAX_DEPTH {
        return Err(bad("type nests too deeply"));
    }
    let (&c, rest) = s
        .split_first()
        .ok_or_else(|| bad("incomplete type string"))?;
    Ok(match c {
        b'b' | b'y' | b'n' | b'q' | b'i' | b'u' | b'h' | b'x' | b't' | b'd' | b's' | b'o'
        | b'g' => (Type::Basic(c), rest),
        b'v' => (Type::Variant, rest),
        b'm' => {
            let (t, r) = parse_type(rest, depth + 1)?;
            (Type::Maybe(Box::new(t)), r)
        }
        b'a' => {
            let (t, r) = parse_type(rest, depth + 1)?;
            (Type::Array(Box::new(t)), r)
        }
        b'(' => {
            let mut members = Vec::new();
            let mut r = rest;
            loop {
                match r.first() {
                    Some(b')') => break (Type::Tuple(members), &r[1..]),
                    Some(_) => {
                        let (t, rr) = parse_type(r, depth + 1)?;
                        members.push(t);
                        r = rr;
                    }
                    None => return Err(bad("unterminated tuple type")),
                }
            }
        }
        b'{' => {
            let (k, r) = parse_type(rest, depth + 1)?;
            if !matches!(k, Type::Basic(_)) {
                return Err(bad("dictionary key is not a basic type"));
            }
            let (v, r) = parse_type(r, depth + 1)?;
            match r.split_first() {
                Some((b'}', r)) => (Type::Tuple(vec![k, v]), r),
                _ => return Err(bad("unterminated dict entry type")),
            }
        }
        _ => return Err(bad("unknown type character")),
    })
}

/// Parses a type string that must be exactly one complete type.
fn parse_single_type(s: &[u8], depth: usize) -> Result<Type> {
    match parse_type(s, depth)? {
        (t, []) => Ok(t),
        _ => Err(bad("type string holds more than one type")),
    }
}

/// Checks that `data` is the normal-form serialization of a value of type
/// `typestr`.
pub fn check(typestr: &str, data: &[u8]) -> Result<()> {
    let ty = parse_single_type(typestr.as_bytes(), 0)?;
    check_value(&ty, data, 0)
}

/// Framing-offset width GVariant uses inside a container of `len` bytes.
pub(crate) fn offset_size(len: usize) -> usize {
    match len {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// The width a normal-form encoder picks for `body` bytes plus `n` offsets.
pub(crate) fn minimal_width(body: usize, n: usize) -> usize {
    for w in [1usize, 2, 4, 8] {
        let total = body + n * w;
        if w == 8 || total < (1usize << (8 * w)) {
            return w;
        }
    }
    8
}

fn read_offset(data: &[u8], at: usize, w: usize) -> usize {
    let mut v = 0usize;
    for (i, b) in data[at..at + w].iter().enumerate() {
        v |= (*b as usize) << (8 * i);
    }
    v
}

fn zero(data: &[u8]) -> Result<()> {
    if data.iter().any(|b| *b != 0) {
        return Err(bad("non-zero padding"));
    }
    Ok(())
}

fn check_value(ty: &Type, data: &[u8], depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(bad("value nests too deeply"));
    }
    match ty {
        Type::Basic(c @ (b's' | b'o' | b'g')) => {
            let Some((&0, body)) = data.split_last() else {
                return Err(bad("string without a terminating NUL"));
            };
            if body.contains(&0) {
                return Err(bad("string with an embedded NUL"));
            }
            let s = std::str::from_utf8(body).map_err(|_| bad("string is not UTF-8"))?;
            if *c == b'g' {
                let mut r = s.as_bytes();
                while !r.is_empty() {
                    r = parse_type(r, depth)?.1;
                }
            }
            Ok(())
        }
        Type::Basic(c) => {
            if Some(data.len()) != ty.fixed_size() {
                return Err(bad("fixed-size value of the wrong size"));
            }
            if *c == b'b' && data[0] > 1 {
                return Err(bad("boolean other than 0 or 1"));
            }
            Ok(())
        }
        Type::Variant => {
            let nul = data
                .iter()
                .rposition(|b| *b == 0)
                .ok_or_else(|| bad("variant without a type"))?;
            let child_ty = parse_single_type(&data[nul + 1..], depth + 1)?;
            check_value(&child_ty, &data[..nul], depth + 1)
        }
        Type::Maybe(t) => {
            if data.is_empty() {
                return Ok(());
            }
            match t.fixed_size() {
                Some(n) if data.len() == n => check_value(t, data, depth + 1),
                Some(_) => Err(bad("maybe of the wrong size")),
                None => match data.split_last() {
                    Some((0, body)) => check_value(t, body, depth + 1),
                    _ => Err(bad("maybe without its trailing zero byte")),
                },
            }
        }
        Type::Array(t) => check_array(t, data, depth),
        Type::Tuple(members) => check_tuple(ty, members, data, depth),
    }
}

fn check_array(t: &Type, data: &[u8], depth: usize) -> Result<()> {
    if let Some(size) = t.fixed_size() {
        if !data.len().is_multiple_of(size) {
            return Err(bad("array length is not a multiple of its element size"));
        }
        // Plain numbers need no per-element check.
        if matches!(t, Type::Basic(c) if *c != b'b') {
            return Ok(());
        }
        return data
            .chunks(size)
            .try_for_each(|e| check_value(t, e, depth + 1));
    }
    if data.is_empty() {
        return Ok(());
    }
    let w = offset_size(data.len());
    let body_end = read_offset(data, data.len() - w, w);
    if body_end > data.len() || !(data.len() - body_end).is_multiple_of(w) || body_end == data.len()
    {
        return Err(bad("inconsistent array framing"));
    }
    let n = (data.len() - body_end) / w;
    if minimal_width(body_end, n) != w {
        return Err(bad("array framing offsets are wider than needed"));
    }
    let mut prev = 0;
    for i in 0..n {
        let end = read_offset(data, body_end + i * w, w);
        let start = align(prev, t.alignment());
        if start > end || end > body_end {
            return Err(bad("array element out of bounds"));
        }
        zero(&data[prev..start])?;
        check_value(t, &data[start..end], depth + 1)?;
        prev = end;
    }
    if prev != body_end {
        return Err(bad("array elements do not fill the array"));
    }
    Ok(())
}

fn check_tuple(ty: &Type, members: &[Type], data: &[u8], depth: usize) -> Result<()> {
    if let Some(size) = ty.fixed_size() {
        if data.len() != size {
            return Err(bad("fixed-size tuple of the wrong size"));
        }
        if members.is_empty() {
            return zero(data);
        }
        let mut off = 0;
        for t in members {
            let start = align(off, t.alignment());
            let end = start + t.fixed_size().expect("fixed tuple members are fixed");
            zero(&data[off..start])?;
            check_value(t, &data[start..end], depth + 1)?;
            off = end;
        }
        return zero(&data[off..]);
    }
    let last = members.len() - 1;
    let n_off = members
        .iter()
        .enumerate()
        .filter(|(i, t)| *i != last && t.fixed_size().is_none())
        .count();
    let w = if n_off == 0 {
        0
    } else {
        offset_size(data.len())
    };
    let body_end = data
        .len()
        .checked_sub(n_off * w)
        .ok_or_else(|| bad("tuple too short for its framing"))?;
    if n_off > 0 && minimal_width(body_end, n_off) != w {
        return Err(bad("tuple framing offsets are wider than needed"));
    }
    let mut off = 0;
    let mut k = 0;
    for (i, t) in members.iter().enumerate() {
        let start = align(off, t.alignment());
        let end = match t.fixed_size() {
            Some(n) => start + n,
            None if i == last => body_end,
            None => {
                k += 1;
                read_offset(data, data.len() - k * w, w)
            }
        };
        if start > end || end > body_end {
            return Err(bad("tuple member out of bounds"));
        }
        zero(&data[off..start])?;
        check_value(t, &data[start..end], depth + 1)?;
        off = end;
    }
    if off != body_end {
        return Err(bad("trailing bytes in tuple"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gvariant::{Marker, gv};

    #[test]
    fn accepts_crate_serializations() {
        let v: Vec<(&str, u64, &str, &str, &str)> =
            vec![("bash", 7, "5.2", "1", "x86_64"), ("", 0, "", "", "")];
        check("a(stsss)", &gv!("a(stsss)").serialize_to_vec(&v)).unwrap();
        check("u", &3u32.to_le_bytes()).unwrap();
        check("()", &[0]).unwrap();
        check("as", &gv!("as").serialize_to_vec(&vec!["a", "bc"])).unwrap();
        check("a{sv}", &[]).unwrap();
        check("(yy)", &[1, 2]).unwrap();
        check("mu", &[]).unwrap();
        check("ms", b"hi\0\0").unwrap();
    }

    #[test]
    fn rejects_non_normal() {
        // The fuzz finding: a u32 holding 3 bytes.
        assert!(check("u", &[1, 2, 3]).is_err());
        for ty in ["", "zz", "uu", "(", "a", "{sv}x", "{vs}"] {
            assert!(check(ty, &[]).is_err(), "{ty:?}");
        }
        assert!(check("()", &[]).is_err());
        assert!(check("at", &[0; 7]).is_err());
        assert!(check("b", &[2]).is_err());
        assert!(check("s", b"a\0b\0").is_err());
        assert!(check("s", b"ab").is_err());
        assert!(check("v", &[]).is_err());
        assert!(check("(yu)", &[1, 9, 0, 0, 2, 0, 0, 0]).is_err());
        // Array of strings with an over-wide (2-byte) offset table.
        assert!(check("as", &[b'a', 0, 2, 0]).is_err());
        assert!(check("as", &[b'a', 0, 2]).is_ok());
    }
}
