//! The `summary` file a repository publishes: `(a(s(taya{sv}))a{sv})`.
//!
//! ```text
//! a(s(taya{sv}))  refs sorted by name: (name, (commit size, commit checksum, ref metadata))
//! a{sv}           additional metadata (ostree.static-deltas, ostree.summary.*)
//! ```
//! The commit size is written in native byte order (little-endian on every
//! real producer), unlike ostree's other integers.

use gvariant::{Marker, Structure, gv};

use super::checksum::Checksum;
use super::error::{FormatError, Result};
use super::gv::{MAX_METADATA_SIZE, aligned, check_normal_form, check_size, str_of};
use super::metadata::{Metadata, from_gv};
use super::names::validate_ref_name;

/// Borrowed `a{sv}` entries, as the serializer takes them.
type Entries<'a> = Vec<(&'a str, &'a super::metadata::Value)>;
/// A summary ref's `(taya{sv})`, borrowed for serializing.
type RefInfo<'a> = (u64, &'a [u8], &'a Entries<'a>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRef {
    pub name: String,
    /// Size in bytes of the `.commit` object.
    pub commit_size: u64,
    pub checksum: Checksum,
    pub metadata: Metadata,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub refs: Vec<SummaryRef>,
    pub metadata: Metadata,
}

impl Summary {
    pub fn parse(data: &[u8]) -> Result<Self> {
        check_size("summary", data, MAX_METADATA_SIZE)?;
        let buf = aligned(data);
        let (refs, md) = gv!("(a(s(taya{sv}))a{sv})").cast(&buf).to_tuple();
        let mut out = Summary {
            refs: Vec::new(),
            metadata: from_gv(md)?,
        };
        for r in refs {
            let (name, info) = r.to_tuple();
            let (size, csum, rmd) = info.to_tuple();
            let name = str_of(name);
            validate_ref_name(&name)?;
            out.refs.push(SummaryRef {
                name,
                commit_size: *size,
                checksum: Checksum::from_slice(csum, "summary ref checksum")?,
                metadata: from_gv(rmd)?,
            });
        }
        check_normal_form("summary", data, &out.serialize())?;
        for w in out.refs.windows(2) {
            if w[0].name.as_bytes() >= w[1].name.as_bytes() {
                return Err(FormatError::InvalidMetadata(format!(
                    "summary refs are not sorted or repeat at {:?}",
                    w[1].name
                )));
            }
        }
        Ok(out)
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mds: Vec<Entries<'_>> = self
            .refs
            .iter()
            .map(|r| r.metadata.serialize_entries())
            .collect();
        let refs: Vec<(&str, RefInfo<'_>)> = self
            .refs
            .iter()
            .zip(&mds)
            .map(|(r, md)| {
                (
                    r.name.as_str(),
                    (r.commit_size, &r.checksum.as_bytes()[..], md),
                )
            })
            .collect();
        let refs: Vec<(&str, &RefInfo<'_>)> = refs.iter().map(|(n, i)| (*n, i)).collect();
        let md = self.metadata.serialize_entries();
        gv!("(a(s(taya{sv}))a{sv})").serialize_to_vec(&(&refs, &md))
    }

    /// Binary search by ref name, as clients do.
    pub fn find(&self, name: &str) -> Option<&SummaryRef> {
        self.refs
            .binary_search_by(|r| r.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.refs[i])
    }
}

#[cfg(test)]
mod tests {
    use super::super::metadata::Value;
    use super::*;

    #[test]
    fn round_trip() {
        let mut rmd = Metadata::new();
        rmd.insert("ostree.commit.timestamp", Value::U64(1577836800u64.to_be()));
        let mut md = Metadata::new();
        md.insert("ostree.summary.mode", Value::Str("archive-z2".into()));
        let s = Summary {
            refs: vec![
                SummaryRef {
                    name: "a".into(),
                    commit_size: 142,
                    checksum: Checksum::from_array([1; 32]),
                    metadata: rmd.clone(),
                },
                SummaryRef {
                    name: "b/c".into(),
                    commit_size: 7,
                    checksum: Checksum::from_array([2; 32]),
                    metadata: Metadata::new(),
                },
            ],
            metadata: md,
        };
        let b = s.serialize();
        assert_eq!(Summary::parse(&b).unwrap(), s);
        assert_eq!(s.find("b/c").unwrap().commit_size, 7);
        assert!(s.find("c").is_none());
        assert!(Summary::parse(&b[..b.len() - 1]).is_err());
    }
}
