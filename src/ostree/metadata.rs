//! `a{sv}` dictionaries: commit metadata and detached `commitmeta` objects.
//!
//! Entries keep the producer's order (the dictionary is not sorted, and the
//! order is part of the hashed bytes). Values of the types OSTree uses are
//! decoded; any other value is kept as its raw serialized bytes and type
//! string, so a dictionary always re-serializes to what was read.

use std::io::Write;

use gvariant::{Marker, SerializeTo, Structure, VariantWrap, gv};

use super::error::{FormatError, Result};
use super::gv::{MAX_METADATA_SIZE, aligned, check_normal_form, check_size, str_of};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `s`
    Str(String),
    /// `as`
    StrArray(Vec<String>),
    /// `b`
    Bool(bool),
    /// `t`, as read from the bytes in little-endian; ostree's own keys
    /// (e.g. timestamps) hold big-endian values: see [`Value::as_u64_be`].
    U64(u64),
    /// `ay`
    Bytes(Vec<u8>),
    /// `aay`
    ByteArrays(Vec<Vec<u8>>),
    /// `a(sas)`: named string lists, e.g. arbor's integration commands
    /// (name, argv).
    NamedStrArrays(Vec<(String, Vec<String>)>),
    /// Any other type: its type string and serialized bytes.
    Other { typestr: String, data: Vec<u8> },
}

impl Value {
    pub fn typestr(&self) -> &str {
        match self {
            Value::Str(_) => "s",
            Value::StrArray(_) => "as",
            Value::Bool(_) => "b",
            Value::U64(_) => "t",
            Value::Bytes(_) => "ay",
            Value::ByteArrays(_) => "aay",
            Value::NamedStrArrays(_) => "a(sas)",
            Value::Other { typestr, .. } => typestr,
        }
    }

    /// A `t` written big-endian, as ostree writes its own integers.
    pub fn as_u64_be(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(u64::from_be(*v)),
            _ => None,
        }
    }
}

impl SerializeTo<gvariant::Variant> for &Value {
    fn serialize(self, f: &mut impl Write) -> std::io::Result<usize> {
        match self {
            Value::Str(s) => VariantWrap(gv!("s"), s.as_str()).serialize(f),
            Value::StrArray(v) => VariantWrap(gv!("as"), v).serialize(f),
            Value::Bool(b) => VariantWrap(gv!("b"), b).serialize(f),
            Value::U64(v) => VariantWrap(gv!("t"), *v).serialize(f),
            Value::Bytes(v) => VariantWrap(gv!("ay"), v).serialize(f),
            Value::ByteArrays(v) => VariantWrap(gv!("aay"), v).serialize(f),
            Value::NamedStrArrays(v) => {
                let items: Vec<(&str, &Vec<String>)> =
                    v.iter().map(|(n, l)| (n.as_str(), l)).collect();
                VariantWrap(gv!("a(sas)"), &items).serialize(f)
            }
            Value::Other { typestr, data } => {
                f.write_all(data)?;
                f.write_all(b"\0")?;
                f.write_all(typestr.as_bytes())?;
                Ok(data.len() + 1 + typestr.len())
            }
        }
    }
}

/// An ordered `a{sv}` dictionary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<(String, Value)>);

impl Metadata {
    pub fn new() -> Self {
        Metadata(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Appends, or replaces the value in place when the key exists.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parse(data: &[u8]) -> Result<Self> {
        check_size("metadata dictionary", data, MAX_METADATA_SIZE)?;
        let buf = aligned(data);
        let md = from_gv(gv!("a{sv}").cast(&buf))?;
        check_normal_form("metadata dictionary", data, &md.serialize())?;
        Ok(md)
    }

    pub fn serialize(&self) -> Vec<u8> {
        let entries: Vec<(&str, &Value)> = self.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gv!("a{sv}").serialize_to_vec(&entries)
    }

    pub(crate) fn serialize_entries(&self) -> Vec<(&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }
}

/// Decodes the entries of an `a{sv}` read by the gvariant crate (without the
/// normal-form check, which callers do on the enclosing object).
pub(crate) fn from_gv<'a, E>(dict: &'a gvariant::NonFixedWidthArray<E>) -> Result<Metadata>
where
    E: gvariant::Cast
        + Structure<'a, RefTuple = (&'a gvariant::Str, &'a gvariant::Variant)>
        + ?Sized,
{
    let mut out = Vec::new();
    for entry in dict {
        let (key, variant) = entry.to_tuple();
        let key = str_of(key);
        if key.is_empty() {
            return Err(FormatError::InvalidMetadata("empty key".into()));
        }
        out.push((key, decode_value(variant)?));
    }
    Ok(Metadata(out))
}

fn decode_value(v: &gvariant::Variant) -> Result<Value> {
    let (ty, data) = v.split();
    Ok(match ty {
        b"s" => Value::Str(str_of(v.get(gv!("s")).unwrap_or_default_str())),
        b"as" => Value::StrArray(
            v.get(gv!("as"))
                .map(|a| a.iter().map(str_of).collect())
                .unwrap_or_default(),
        ),
        b"b" => Value::Bool(v.get(gv!("b")).is_some_and(|b| b.to_bool())),
        b"t" => Value::U64(v.get(gv!("t")).copied().unwrap_or_default()),
        b"ay" => Value::Bytes(v.get(gv!("ay")).map(|a| a.to_vec()).unwrap_or_default()),
        b"aay" => Value::ByteArrays(
            v.get(gv!("aay"))
                .map(|a| a.iter().map(|x| x.to_vec()).collect())
                .unwrap_or_default(),
        ),
        b"a(sas)" => Value::NamedStrArrays(
            v.get(gv!("a(sas)"))
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            let (name, list) = e.to_tuple();
                            (str_of(name), list.iter().map(str_of).collect())
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => {
            // Kept as raw bytes, so check them here: re-serializing cannot.
            let typestr = std::str::from_utf8(ty)
                .map_err(|_| FormatError::InvalidMetadata("variant type is not ASCII".into()))?;
            super::normal_form::check(typestr, data)?;
            Value::Other {
                typestr: typestr.to_string(),
                data: data.to_vec(),
            }
        }
    })
}

trait OrDefaultStr<'a> {
    fn unwrap_or_default_str(self) -> &'a gvariant::Str;
}

impl<'a> OrDefaultStr<'a> for Option<&'a gvariant::Str> {
    fn unwrap_or_default_str(self) -> &'a gvariant::Str {
        use gvariant::Cast;
        self.unwrap_or_else(|| gvariant::Str::default_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_reference_bytes() {
        let mut md = Metadata::new();
        md.insert("version", Value::Str("1.0".into()));
        md.insert("ostree.ref-binding", Value::StrArray(vec!["main".into()]));
        let b = md.serialize();
        // Entry 1 is 15 bytes, then padding to 8, entry 2 ends at 50.
        assert_eq!(&b[..15], b"version\x001.0\0\0s\x08");
        assert_eq!(&b[b.len() - 2..], &[15, 50]);
        assert_eq!(Metadata::parse(&b).unwrap(), md);
    }

    #[test]
    fn unknown_types_round_trip() {
        let mut md = Metadata::new();
        md.insert(
            "x",
            Value::Other {
                typestr: "u".into(),
                data: vec![1, 0, 0, 0],
            },
        );
        md.insert("y", Value::ByteArrays(vec![vec![1, 2], vec![]]));
        md.insert("z", Value::Bool(true));
        md.insert("t", Value::U64(7));
        let b = md.serialize();
        assert_eq!(Metadata::parse(&b).unwrap(), md);
    }

    #[test]
    fn named_str_arrays_round_trip() {
        let mut md = Metadata::new();
        let cmds = vec![
            (
                "00-ldconfig".to_string(),
                vec!["sh".into(), "-c".into(), "ldconfig".into()],
            ),
            ("10-empty".to_string(), vec![]),
        ];
        md.insert("arbor.integration", Value::NamedStrArrays(cmds));
        md.insert("after", Value::Str("x".into()));
        let b = md.serialize();
        assert_eq!(Metadata::parse(&b).unwrap(), md);
        assert_eq!(md.get("arbor.integration").unwrap().typestr(), "a(sas)");
        // An empty array is the type's normal form too.
        let mut empty = Metadata::new();
        empty.insert("arbor.integration", Value::NamedStrArrays(vec![]));
        assert_eq!(Metadata::parse(&empty.serialize()).unwrap(), empty);
    }

    #[test]
    fn named_str_arrays_not_in_normal_form_are_refused() {
        let mut md = Metadata::new();
        md.insert(
            "k",
            Value::NamedStrArrays(vec![("name".into(), vec!["a".into(), "bc".into()])]),
        );
        let good = md.serialize();
        // Every single-byte change either fails to parse or, if it parses,
        // must re-serialize to exactly its input (never silently repaired).
        for i in 0..good.len() {
            for delta in [1u8, 0x80] {
                let mut bad = good.clone();
                bad[i] = bad[i].wrapping_add(delta);
                if let Ok(m) = Metadata::parse(&bad) {
                    assert_eq!(m.serialize(), bad, "byte {i} changed by {delta}");
                }
            }
        }
        // A string without its terminating NUL inside the structure.
        let pos = good.windows(3).position(|w| w == b"bc\0").unwrap();
        let mut bad = good.clone();
        bad[pos + 2] = b'd';
        assert!(Metadata::parse(&bad).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Metadata::parse(&[0xff; 7]).is_err());
        assert!(Metadata::parse(b"\0\0s\x02").is_err());
    }
}
