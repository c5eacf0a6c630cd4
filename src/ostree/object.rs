//! Object types, object names and the loose object path layout.
//!
//! A loose object lives at `objects/<hex[0:2]>/<hex[2:]>.<ext>`; content
//! objects in `archive` repos use the extension `filez`.

use std::fmt;

use super::checksum::Checksum;
use super::error::{FormatError, Result};

/// The kinds of object an OSTree repository stores (numeric values are the
/// ones used in static deltas and `ostree.sizes`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    File = 1,
    DirTree = 2,
    DirMeta = 3,
    Commit = 4,
    TombstoneCommit = 5,
    CommitMeta = 6,
    PayloadLink = 7,
    FileXattrs = 8,
    FileXattrsLink = 9,
}

impl ObjectType {
    pub const ALL: [ObjectType; 9] = [
        ObjectType::File,
        ObjectType::DirTree,
        ObjectType::DirMeta,
        ObjectType::Commit,
        ObjectType::TombstoneCommit,
        ObjectType::CommitMeta,
        ObjectType::PayloadLink,
        ObjectType::FileXattrs,
        ObjectType::FileXattrsLink,
    ];

    /// The name used as file extension and in `CHECKSUM.TYPE` strings.
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::File => "file",
            ObjectType::DirTree => "dirtree",
            ObjectType::DirMeta => "dirmeta",
            ObjectType::Commit => "commit",
            ObjectType::TombstoneCommit => "tombstone-commit",
            ObjectType::CommitMeta => "commitmeta",
            ObjectType::PayloadLink => "payload-link",
            ObjectType::FileXattrs => "file-xattrs",
            ObjectType::FileXattrsLink => "file-xattrs-link",
        }
    }

    pub fn from_name(s: &str) -> Result<Self> {
        ObjectType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| FormatError::UnknownObjectType(s.chars().take(64).collect()))
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        ObjectType::ALL.into_iter().find(|t| *t as u8 == v)
    }

    /// libostree's "metadata" types (dirtree, dirmeta, commit, tombstone,
    /// commitmeta): hashed as stored, never compressed.
    pub fn is_meta(self) -> bool {
        matches!(
            self,
            ObjectType::DirTree
                | ObjectType::DirMeta
                | ObjectType::Commit
                | ObjectType::TombstoneCommit
                | ObjectType::CommitMeta
        )
    }

    /// File extension of a loose object of this type; `archive` repos add a
    /// `z` to non-metadata types (in practice only `.filez`).
    pub fn loose_extension(self, archive: bool) -> String {
        if archive && !self.is_meta() {
            format!("{}z", self.name())
        } else {
            self.name().to_string()
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An object's full identity: checksum and type (`CHECKSUM.TYPE`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    pub checksum: Checksum,
    pub objtype: ObjectType,
}

impl ObjectName {
    pub fn new(checksum: Checksum, objtype: ObjectType) -> Self {
        ObjectName { checksum, objtype }
    }

    /// Parses `CHECKSUM.TYPE`.
    pub fn parse(s: &str) -> Result<Self> {
        let (hex, ty) = s
            .split_once('.')
            .ok_or_else(|| FormatError::InvalidObjectName(s.chars().take(200).collect()))?;
        Ok(ObjectName {
            checksum: Checksum::from_hex(hex)?,
            objtype: ObjectType::from_name(ty)?,
        })
    }

    /// The object's directory under `objects/` (first two hex digits).
    pub fn loose_dir(&self) -> String {
        self.checksum.to_hex()[..2].to_string()
    }

    /// File name inside [`loose_dir`](Self::loose_dir).
    pub fn loose_file_name(&self, archive: bool) -> String {
        format!(
            "{}.{}",
            &self.checksum.to_hex()[2..],
            self.objtype.loose_extension(archive)
        )
    }

    /// Path relative to `objects/` (also the path under a remote's
    /// `objects/` URL).
    pub fn loose_path(&self, archive: bool) -> String {
        format!("{}/{}", self.loose_dir(), self.loose_file_name(archive))
    }

    /// Inverse of [`loose_path`](Self::loose_path) for one directory entry:
    /// `dir` is the two-hex-digit directory, `file` the entry name. Returns
    /// `None` for names that are not objects (temporary files and the like).
    pub fn from_loose(dir: &str, file: &str) -> Option<(Self, bool)> {
        if dir.len() != 2 {
            return None;
        }
        let (rest, ext) = file.split_once('.')?;
        let hex = format!("{dir}{rest}");
        let checksum = Checksum::from_hex(&hex).ok()?;
        let (ext, compressed) = match ext.strip_suffix('z') {
            Some(base) if ObjectType::from_name(base).is_ok_and(|t| !t.is_meta()) => (base, true),
            _ => (ext, false),
        };
        let objtype = ObjectType::from_name(ext).ok()?;
        Some((ObjectName { checksum, objtype }, compressed))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.checksum, self.objtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_paths() {
        let c =
            Checksum::from_hex("de02c3a60ac5e77b5a76f31783d5d5ed76edb9041fa7cd62178cd361c4c95260")
                .unwrap();
        let file = ObjectName::new(c, ObjectType::File);
        assert_eq!(
            file.loose_path(true),
            "de/02c3a60ac5e77b5a76f31783d5d5ed76edb9041fa7cd62178cd361c4c95260.filez"
        );
        assert_eq!(
            file.loose_path(false),
            format!("de/{}.file", &c.to_hex()[2..])
        );
        let dt = ObjectName::new(c, ObjectType::DirTree);
        assert_eq!(
            dt.loose_path(true),
            format!("de/{}.dirtree", &c.to_hex()[2..])
        );
        assert_eq!(
            ObjectName::from_loose("de", &file.loose_file_name(true)),
            Some((file, true))
        );
        assert_eq!(
            ObjectName::from_loose("de", &dt.loose_file_name(false)),
            Some((dt, false))
        );
        assert_eq!(ObjectName::from_loose("de", "tmp-123"), None);
        assert_eq!(
            ObjectName::parse(&format!("{c}.tombstone-commit"))
                .unwrap()
                .objtype,
            ObjectType::TombstoneCommit
        );
        assert!(ObjectName::parse("abc.file").is_err());
        assert!(ObjectName::parse(&format!("{c}.bogus")).is_err());
    }
}
