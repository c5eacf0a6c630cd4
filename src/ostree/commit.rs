//! `commit` objects, `(a{sv}aya(say)sstayay)`.
//!
//! ```text
//! a{sv}   metadata (producer order)
//! ay      parent checksum, 32 bytes or empty
//! a(say)  related objects (always empty in practice)
//! s       subject
//! s       body
//! t       timestamp, seconds since the epoch, big-endian
//! ay      root dirtree checksum
//! ay      root dirmeta checksum
//! ```

use gvariant::{Marker, Structure, gv};

use super::checksum::Checksum;
use super::error::Result;
use super::gv::{MAX_METADATA_SIZE, aligned, check_normal_form, check_size, str_of};
use super::metadata::{Metadata, from_gv};

/// Key of the refs a commit may be pulled through.
pub const REF_BINDING: &str = "ostree.ref-binding";
/// Key of the collection ID a commit must come from.
pub const COLLECTION_BINDING: &str = "ostree.collection-binding";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub metadata: Metadata,
    pub parent: Option<Checksum>,
    pub related: Vec<(String, Checksum)>,
    pub subject: String,
    pub body: String,
    pub timestamp: u64,
    pub root_tree: Checksum,
    pub root_meta: Checksum,
}

impl Commit {
    pub fn parse(data: &[u8]) -> Result<Self> {
        check_size("commit", data, MAX_METADATA_SIZE)?;
        let buf = aligned(data);
        let (md, parent, related, subject, body, ts, tree, meta) =
            gv!("(a{sv}aya(say)sstayay)").cast(&buf).to_tuple();
        let parent = if parent.is_empty() {
            None
        } else {
            Some(Checksum::from_slice(parent, "commit parent")?)
        };
        let mut rel = Vec::new();
        for r in related {
            let (name, csum) = r.to_tuple();
            rel.push((
                str_of(name),
                Checksum::from_slice(csum, "commit related object")?,
            ));
        }
        let commit = Commit {
            metadata: from_gv(md)?,
            parent,
            related: rel,
            subject: str_of(subject),
            body: str_of(body),
            timestamp: u64::from_be(*ts),
            root_tree: Checksum::from_slice(tree, "commit root dirtree")?,
            root_meta: Checksum::from_slice(meta, "commit root dirmeta")?,
        };
        check_normal_form("commit", data, &commit.serialize())?;
        Ok(commit)
    }

    pub fn serialize(&self) -> Vec<u8> {
        let md = self.metadata.serialize_entries();
        let parent: &[u8] = match &self.parent {
            Some(p) => p.as_bytes(),
            None => &[],
        };
        let related: Vec<(&str, &[u8])> = self
            .related
            .iter()
            .map(|(n, c)| (n.as_str(), &c.as_bytes()[..]))
            .collect();
        gv!("(a{sv}aya(say)sstayay)").serialize_to_vec(&(
            &md,
            parent,
            &related,
            self.subject.as_str(),
            self.body.as_str(),
            self.timestamp.to_be(),
            &self.root_tree.as_bytes()[..],
            &self.root_meta.as_bytes()[..],
        ))
    }

    pub fn checksum(&self) -> Checksum {
        Checksum::digest(&self.serialize())
    }

    /// libostree's "content checksum": SHA-256 of root tree ‖ root meta.
    pub fn content_checksum(&self) -> Checksum {
        let mut both = [0u8; 64];
        both[..32].copy_from_slice(self.root_tree.as_bytes());
        both[32..].copy_from_slice(self.root_meta.as_bytes());
        Checksum::digest(&both)
    }
}

#[cfg(test)]
mod tests {
    use super::super::metadata::Value;
    use super::*;

    /// The annotated 142-byte commit of the format reference.
    #[test]
    fn reference_commit_layout() {
        let mut md = Metadata::new();
        md.insert("version", Value::Str("1.0".into()));
        md.insert(REF_BINDING, Value::StrArray(vec!["main".into()]));
        let c = Commit {
            metadata: md,
            parent: None,
            related: vec![],
            subject: "first".into(),
            body: "b".into(),
            timestamp: 1577836800,
            root_tree: Checksum::from_array([0x11; 32]),
            root_meta: Checksum::from_array([0x22; 32]),
        };
        let b = c.serialize();
        assert_eq!(b.len(), 142);
        assert_eq!(&b[0x34..0x3c], b"first\0b\0");
        assert_eq!(&b[0x40..0x48], &[0, 0, 0, 0, 0x5e, 0x0b, 0xe1, 0]);
        assert_eq!(&b[0x88..], &[0x68, 0x3c, 0x3a, 0x34, 0x34, 0x34]);
        assert_eq!(Commit::parse(&b).unwrap(), c);
    }

    #[test]
    fn parent_round_trip_and_garbage() {
        let c = Commit {
            metadata: Metadata::new(),
            parent: Some(Checksum::from_array([3; 32])),
            related: vec![],
            subject: String::new(),
            body: String::new(),
            timestamp: 0,
            root_tree: Checksum::from_array([1; 32]),
            root_meta: Checksum::from_array([2; 32]),
        };
        let b = c.serialize();
        assert_eq!(Commit::parse(&b).unwrap(), c);
        assert!(Commit::parse(&b[..b.len() - 1]).is_err());
        assert!(Commit::parse(&[]).is_err());
    }
}
