//! Which deltas a repository publishes: the `ostree.static-deltas` entry of
//! its summary metadata, and delta-index files (`delta-indexes/…/TO.index`,
//! an `a{sv}` holding the same entry for the deltas ending at one commit).
//!
//! The entry is an `a{sv}`: hex delta name (`FROM-TO` or `TO`) → `ay`, the
//! SHA-256 of the delta's superblock file.

use super::super::checksum::Checksum;
use super::super::gv::{MAX_METADATA_SIZE, check_size};
use super::super::metadata::{Metadata, Value};
use super::error::{DeltaError, Result};
use super::name::DeltaName;

/// The metadata key, in summaries and indexes.
pub const STATIC_DELTAS_KEY: &str = "ostree.static-deltas";
/// Summary key saying the repository publishes delta indexes.
pub const INDEXED_DELTAS_KEY: &str = "ostree.summary.indexed-deltas";

/// Deltas and their superblock digests, in the producer's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaList(pub Vec<(DeltaName, Checksum)>);

impl DeltaList {
    /// The digest a delta's superblock must have, if listed.
    pub fn digest(&self, name: &DeltaName) -> Option<Checksum> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }

    /// Deltas ending at `to`.
    pub fn ending_at<'s>(&'s self, to: &'s Checksum) -> impl Iterator<Item = &'s DeltaName> + 's {
        self.0.iter().map(|(n, _)| n).filter(move |n| n.to == *to)
    }

    /// Reads the deltas listed in `md` (summary metadata or an index), an
    /// empty list when the key is absent. Malformed entries are an error,
    /// as in libostree (a corrupt list cannot be trusted in part).
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let Some(v) = md.get(STATIC_DELTAS_KEY) else {
            return Ok(DeltaList::default());
        };
        let Value::Other { typestr, data } = v else {
            return Err(type_error(STATIC_DELTAS_KEY, v.typestr(), "a{sv}"));
        };
        if typestr != "a{sv}" {
            return Err(type_error(STATIC_DELTAS_KEY, typestr, "a{sv}"));
        }
        let inner = Metadata::parse(data)?;
        let mut out = Vec::with_capacity(inner.0.len());
        for (name, digest) in &inner.0 {
            let delta = DeltaName::parse(name)?;
            let Value::Bytes(d) = digest else {
                return Err(type_error(name, digest.typestr(), "ay"));
            };
            out.push((delta, Checksum::from_slice(d, "static delta digest")?));
        }
        Ok(DeltaList(out))
    }

    /// The `a{sv}` value of [`STATIC_DELTAS_KEY`].
    pub fn to_value(&self) -> Value {
        let mut inner = Metadata::new();
        for (name, digest) in &self.0 {
            inner.insert(name.to_string(), Value::Bytes(digest.as_bytes().to_vec()));
        }
        Value::Other {
            typestr: "a{sv}".into(),
            data: inner.serialize(),
        }
    }
}

fn type_error(key: &str, found: &str, expected: &'static str) -> DeltaError {
    DeltaError::MetadataType {
        key: key.chars().take(200).collect(),
        found: found.chars().take(64).collect(),
        expected,
    }
}

/// A delta-index file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaIndex {
    pub deltas: DeltaList,
    /// Every entry of the file, [`STATIC_DELTAS_KEY`] included, in order.
    pub metadata: Metadata,
}

impl DeltaIndex {
    pub fn parse(data: &[u8]) -> Result<Self> {
        check_size("delta index", data, MAX_METADATA_SIZE)?;
        let metadata = Metadata::parse(data)?;
        Ok(DeltaIndex {
            deltas: DeltaList::from_metadata(&metadata)?,
            metadata,
        })
    }

    /// An index holding just `deltas` (what `ostree static-delta reindex`
    /// writes; it sorts the FROM names so the file is reproducible).
    pub fn new(deltas: DeltaList) -> Self {
        let mut metadata = Metadata::new();
        metadata.insert(STATIC_DELTAS_KEY, deltas.to_value());
        DeltaIndex { deltas, metadata }
    }

    pub fn serialize(&self) -> Vec<u8> {
        self.metadata.serialize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = Checksum::from_array([1; 32]);
        let b = Checksum::from_array([2; 32]);
        let list = DeltaList(vec![
            (DeltaName::new(Some(a), b), Checksum::from_array([9; 32])),
            (DeltaName::scratch(b), Checksum::from_array([8; 32])),
        ]);
        let idx = DeltaIndex::new(list.clone());
        let bytes = idx.serialize();
        let back = DeltaIndex::parse(&bytes).unwrap();
        assert_eq!(back.deltas, list);
        assert_eq!(back.serialize(), bytes);
        assert_eq!(
            list.digest(&DeltaName::scratch(b)),
            Some(Checksum::from_array([8; 32]))
        );
        assert_eq!(list.ending_at(&b).count(), 2);
        assert_eq!(list.ending_at(&a).count(), 0);
    }

    #[test]
    fn rejects_bad_entries() {
        let mut md = Metadata::new();
        md.insert(STATIC_DELTAS_KEY, Value::Str("x".into()));
        assert!(DeltaList::from_metadata(&md).is_err());
        let mut inner = Metadata::new();
        inner.insert("nothex", Value::Bytes(vec![0; 32]));
        md.insert(
            STATIC_DELTAS_KEY,
            Value::Other {
                typestr: "a{sv}".into(),
                data: inner.serialize(),
            },
        );
        assert!(DeltaList::from_metadata(&md).is_err());
        let mut inner = Metadata::new();
        inner.insert(
            Checksum::from_array([1; 32]).to_hex(),
            Value::Bytes(vec![0; 31]),
        );
        md.insert(
            STATIC_DELTAS_KEY,
            Value::Other {
                typestr: "a{sv}".into(),
                data: inner.serialize(),
            },
        );
        assert!(DeltaList::from_metadata(&md).is_err());
        assert_eq!(
            DeltaList::from_metadata(&Metadata::new()).unwrap(),
            DeltaList::default()
        );
    }
}
