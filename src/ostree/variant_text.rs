//! The GVariant text format, for values given on the command line
//! (`arbor summary -u -m KEY=VALUE`, as `ostree summary -m` takes them):
//! `'text'`, `"text"`, `true`, `42` (int32), `uint64 42`, `@t 42`, `1.5`,
//! `['a', 'b']`, `<'boxed'>`.
//!
//! Written by hand: no crate parses GVariant text. The subset is what
//! metadata values use: basic types (with GLib's type keywords), arrays of
//! them, and variants. Numbers are stored as given, in the machine's (little
//! endian) order, like GLib; a container or type outside the subset is an
//! error naming it, never a guess.

use gvariant::{Marker, gv};

use super::error::{FormatError, Result};
use super::metadata::Value;

/// Deepest nesting of arrays and variants accepted.
const MAX_DEPTH: usize = 32;

fn bad(why: impl Into<String>) -> FormatError {
    FormatError::InvalidMetadata(format!("GVariant text: {}", why.into()))
}

/// Parses one value; `text` must hold nothing else.
pub fn parse(text: &str) -> Result<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    let (ty, data) = p.value(None, 0)?;
    p.skip_ws();
    if p.at != p.s.len() {
        return Err(bad(format!("unexpected text at {:?}", &text[p.at..])));
    }
    Ok(to_value(ty, data))
}

/// The [`Value`] for serialized `data` of type `ty`, decoded where the
/// metadata model has a variant for it.
fn to_value(ty: String, data: Vec<u8>) -> Value {
    let aligned = gvariant::aligned_bytes::copy_to_align(&data);
    match ty.as_str() {
        "s" => Value::Str(gv!("s").cast(&aligned).to_str().to_string()),
        "b" => Value::Bool(data == [1]),
        "t" => Value::U64(u64::from_le_bytes(data.try_into().expect("8 bytes"))),
        "as" => Value::StrArray(
            gv!("as")
                .cast(&aligned)
                .iter()
                .map(|s| s.to_str().to_string())
                .collect(),
        ),
        "ay" => Value::Bytes(data),
        _ => Value::Other { typestr: ty, data },
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn word(&mut self) -> &str {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.'))
        {
            self.at += 1;
        }
        std::str::from_utf8(&self.s[start..self.at]).unwrap_or("")
    }

    /// One value, of type `want` when the context fixes it. Returns its
    /// type string and normal-form bytes.
    fn value(&mut self, want: Option<&str>, depth: usize) -> Result<(String, Vec<u8>)> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deeply"));
        }
        self.skip_ws();
        match self.peek() {
            None => Err(bad("missing value")),
            Some(b'\'' | b'"') => {
                let s = self.string()?;
                match want {
                    None | Some("s") => Ok(("s".into(), string_bytes(&s))),
                    Some(t) => Err(bad(format!("a string where {t} was expected"))),
                }
            }
            Some(b'@') => {
                self.at += 1;
                let start = self.at;
                while self.peek().is_some_and(|c| !c.is_ascii_whitespace()) {
                    self.at += 1;
                }
                let ty = std::str::from_utf8(&self.s[start..self.at])
                    .map_err(|_| bad("type is not ASCII"))?
                    .to_string();
                if want.is_some_and(|w| w != ty) {
                    return Err(bad(format!("@{ty} where {} was expected", want.unwrap())));
                }
                self.value(Some(&ty), depth + 1)
            }
            Some(b'<') => {
                self.at += 1;
                let (ty, mut data) = self.value(None, depth + 1)?;
                self.skip_ws();
                if self.peek() != Some(b'>') {
                    return Err(bad("unterminated <variant>"));
                }
                self.at += 1;
                if want.is_some_and(|w| w != "v") {
                    return Err(bad("a variant where another type was expected"));
                }
                data.push(0);
                data.extend_from_slice(ty.as_bytes());
                Ok(("v".into(), data))
            }
            Some(b'[') => self.array(want, depth),
            Some(_) => {
                let w = self.word().to_string();
                if w.is_empty() {
                    return Err(bad(format!(
                        "unsupported syntax at {:?}",
                        String::from_utf8_lossy(&self.s[self.at..])
                    )));
                }
                let keyword_type = match w.as_str() {
                    "byte" => Some("y"),
                    "int16" => Some("n"),
                    "uint16" => Some("q"),
                    "int32" => Some("i"),
                    "uint32" => Some("u"),
                    "int64" => Some("x"),
                    "uint64" => Some("t"),
                    "double" => Some("d"),
                    _ => None,
                };
                if let Some(t) = keyword_type {
                    if want.is_some_and(|x| x != t) {
                        return Err(bad(format!("{w} where {} was expected", want.unwrap())));
                    }
                    self.skip_ws();
                    let n = self.word().to_string();
                    return number(&n, t).map(|d| (t.to_string(), d));
                }
                match w.as_str() {
                    "true" | "false" => match want {
                        None | Some("b") => Ok(("b".into(), vec![u8::from(w == "true")])),
                        Some(t) => Err(bad(format!("a boolean where {t} was expected"))),
                    },
                    _ => {
                        let t = want.unwrap_or(
                            if w.contains('.') || w.contains('e') && !w.starts_with("0x") {
                                "d"
                            } else {
                                "i"
                            },
                        );
                        number(&w, t).map(|d| (t.to_string(), d))
                    }
                }
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        let quote = self.s[self.at];
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(bad("unterminated string"));
            };
            self.at += 1;
            if c == quote {
                break;
            }
            if c == b'\\' {
                let Some(e) = self.peek() else {
                    return Err(bad("unterminated string"));
                };
                self.at += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'\\' | b'\'' | b'"' => e,
                    _ => return Err(bad(format!("unsupported escape \\{}", e as char))),
                });
                continue;
            }
            out.push(c);
        }
        let s = String::from_utf8(out).map_err(|_| bad("string is not UTF-8"))?;
        if s.contains('\0') {
            return Err(bad("string with a NUL"));
        }
        Ok(s)
    }

    fn array(&mut self, want: Option<&str>, depth: usize) -> Result<(String, Vec<u8>)> {
        self.at += 1;
        let elem_want = match want {
            Some(w) => Some(
                w.strip_prefix('a')
                    .ok_or_else(|| bad(format!("an array where {w} was expected")))?
                    .to_string(),
            ),
            None => None,
        };
        let mut elem_ty = elem_want.clone();
        let mut elems: Vec<Vec<u8>> = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.at += 1;
                break;
            }
            if !elems.is_empty() {
                if self.peek() != Some(b',') {
                    return Err(bad("expected ',' or ']' in array"));
                }
                self.at += 1;
            }
            let (t, d) = self.value(elem_ty.as_deref(), depth + 1)?;
            elem_ty = Some(t);
            elems.push(d);
        }
        let elem_ty =
            elem_ty.ok_or_else(|| bad("empty array without a type (write @as [] etc.)"))?;
        let data = serialize_array(&elem_ty, &elems)?;
        Ok((format!("a{elem_ty}"), data))
    }
}

fn string_bytes(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn number(text: &str, ty: &str) -> Result<Vec<u8>> {
    let err = || bad(format!("{text:?} is not a valid {ty} number"));
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if ty == "d" {
        let v: f64 = text.parse().map_err(|_| err())?;
        return Ok(v.to_le_bytes().to_vec());
    }
    let mag: u128 = match digits.strip_prefix("0x") {
        Some(h) => u128::from_str_radix(h, 16).map_err(|_| err())?,
        None => digits.parse().map_err(|_| err())?,
    };
    let mag = i128::try_from(mag).map_err(|_| err())?;
    let v: i128 = if neg { -mag } else { mag };
    macro_rules! fit {
        ($t:ty) => {
            <$t>::try_from(v).map_err(|_| err())?.to_le_bytes().to_vec()
        };
    }
    Ok(match ty {
        "y" => fit!(u8),
        "n" => fit!(i16),
        "q" => fit!(u16),
        "i" => fit!(i32),
        "u" => fit!(u32),
        "x" => fit!(i64),
        "t" => fit!(u64),
        other => return Err(bad(format!("a number where {other} was expected"))),
    })
}

/// Serializes an array of already-serialized elements of type `elem`.
fn serialize_array(elem: &str, elems: &[Vec<u8>]) -> Result<Vec<u8>> {
    let fixed = match elem {
        "y" | "b" => Some(1),
        "n" | "q" => Some(2),
        "i" | "u" => Some(4),
        "x" | "t" | "d" => Some(8),
        _ => None,
    };
    let mut out = Vec::new();
    if fixed.is_some() {
        for e in elems {
            out.extend_from_slice(e);
        }
        return Ok(out);
    }
    let align = match elem {
        "s" | "as" | "ay" => 1,
        "v" => 8,
        _ => return Err(bad(format!("arrays of {elem} are not supported"))),
    };
    let mut ends = Vec::new();
    for e in elems {
        while out.len() % align != 0 {
            out.push(0);
        }
        out.extend_from_slice(e);
        ends.push(out.len());
    }
    if elems.is_empty() {
        return Ok(out);
    }
    let body = out.len();
    let w = [1usize, 2, 4, 8]
        .into_iter()
        .find(|w| *w == 8 || body + ends.len() * w < (1usize << (8 * w)))
        .unwrap_or(8);
    for e in ends {
        out.extend_from_slice(&e.to_le_bytes()[..w]);
    }
    super::normal_form::check(&format!("a{elem}"), &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_values() {
        assert_eq!(parse("'bar'").unwrap(), Value::Str("bar".into()));
        assert_eq!(parse(r#""it's""#).unwrap(), Value::Str("it's".into()));
        assert_eq!(parse("true").unwrap(), Value::Bool(true));
        assert_eq!(parse("uint64 1234").unwrap(), Value::U64(1234));
        assert_eq!(parse("@t 5").unwrap(), Value::U64(5));
        assert_eq!(
            parse("uint32 7").unwrap(),
            Value::Other {
                typestr: "u".into(),
                data: vec![7, 0, 0, 0]
            }
        );
        assert_eq!(
            parse("42").unwrap(),
            Value::Other {
                typestr: "i".into(),
                data: vec![42, 0, 0, 0]
            }
        );
        assert_eq!(
            parse("['a', 'bc']").unwrap(),
            Value::StrArray(vec!["a".into(), "bc".into()])
        );
        assert_eq!(parse("@as []").unwrap(), Value::StrArray(vec![]));
        assert_eq!(
            parse("<'x'>").unwrap(),
            Value::Other {
                typestr: "v".into(),
                data: b"x\0\0s".to_vec()
            }
        );
    }

    #[test]
    fn refuses_what_ostree_refuses() {
        for t in [
            "bar",
            "'x",
            "[]",
            "byte 300",
            "-0xffffffffffffffffffffffffffffffff",
            "uint32 -1",
            "'a' 'b'",
            "{1: 2}",
            "",
        ] {
            assert!(parse(t).is_err(), "{t:?}");
        }
    }
}
