//! `dirtree` objects: a directory listing, `(a(say)a(sayay))`.
//!
//! ```text
//! a(say)    files:   (name, content checksum)
//! a(sayay)  subdirs: (name, dirtree checksum, dirmeta checksum)
//! ```
//! Both arrays are sorted by name in byte order (`strcmp`). We are stricter
//! than libostree: unsorted or duplicate entries, and a name that is both a
//! file and a directory, are rejected, since they make a checkout ambiguous.

use std::cmp::Ordering;

use gvariant::aligned_bytes::AsAligned;
use gvariant::{Marker, Structure, gv};

use super::checksum::Checksum;
use super::error::{FormatError, Result};
use super::gv::{MAX_METADATA_SIZE, aligned, check_normal_form, check_size, str_of};
use super::names::validate_file_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile {
    pub name: String,
    pub checksum: Checksum,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDir {
    pub name: String,
    pub tree: Checksum,
    pub meta: Checksum,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirTree {
    pub files: Vec<TreeFile>,
    pub dirs: Vec<TreeDir>,
}

/// Checksum of the empty dirtree (the single byte `00`).
pub const EMPTY_DIRTREE: Checksum = Checksum::from_array([
    0x6e, 0x34, 0x0b, 0x9c, 0xff, 0xb3, 0x7a, 0x98, 0x9c, 0xa5, 0x44, 0xe6, 0xbb, 0x78, 0x0a, 0x2c,
    0x78, 0x90, 0x1d, 0x3f, 0xb3, 0x37, 0x38, 0x76, 0x85, 0x11, 0xa3, 0x06, 0x17, 0xaf, 0xa0, 0x1d,
]);

impl DirTree {
    pub fn parse(data: &[u8]) -> Result<Self> {
        check_size("dirtree", data, MAX_METADATA_SIZE)?;
        let buf = aligned(data);
        let (files, dirs) = gv!("(a(say)a(sayay))").cast(buf.as_aligned()).to_tuple();
        let mut tree = DirTree::default();
        for f in files {
            let (name, csum) = f.to_tuple();
            tree.files.push(TreeFile {
                name: str_of(name),
                checksum: Checksum::from_slice(csum, "dirtree file entry")?,
            });
        }
        for d in dirs {
            let (name, t, m) = d.to_tuple();
            tree.dirs.push(TreeDir {
                name: str_of(name),
                tree: Checksum::from_slice(t, "dirtree subdirectory tree")?,
                meta: Checksum::from_slice(m, "dirtree subdirectory meta")?,
            });
        }
        check_normal_form("dirtree", data, &tree.serialize())?;
        tree.validate()?;
        Ok(tree)
    }

    /// Names valid, both arrays strictly sorted, no name in both.
    pub fn validate(&self) -> Result<()> {
        for name in self
            .files
            .iter()
            .map(|f| &f.name)
            .chain(self.dirs.iter().map(|d| &d.name))
        {
            validate_file_name(name)?;
        }
        check_sorted(self.files.iter().map(|f| f.name.as_str()))?;
        check_sorted(self.dirs.iter().map(|d| d.name.as_str()))?;
        // Both lists are sorted: a merge finds a name present in both.
        let (mut i, mut j) = (0, 0);
        while i < self.files.len() && j < self.dirs.len() {
            match self.files[i]
                .name
                .as_bytes()
                .cmp(self.dirs[j].name.as_bytes())
            {
                Ordering::Less => i += 1,
                Ordering::Greater => j += 1,
                Ordering::Equal => {
                    return Err(FormatError::UnsortedOrDuplicate {
                        name: self.files[i].name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sorts both arrays into canonical order (for trees being built).
    pub fn sort(&mut self) {
        self.files
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        self.dirs
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    }

    pub fn serialize(&self) -> Vec<u8> {
        let files: Vec<(&str, &[u8])> = self
            .files
            .iter()
            .map(|f| (f.name.as_str(), &f.checksum.as_bytes()[..]))
            .collect();
        let dirs: Vec<(&str, &[u8], &[u8])> = self
            .dirs
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    &d.tree.as_bytes()[..],
                    &d.meta.as_bytes()[..],
                )
            })
            .collect();
        gv!("(a(say)a(sayay))").serialize_to_vec(&(&files, &dirs))
    }

    pub fn checksum(&self) -> Checksum {
        Checksum::digest(&self.serialize())
    }

    /// Binary search, as libostree does.
    pub fn file(&self, name: &str) -> Option<&TreeFile> {
        self.files
            .binary_search_by(|f| f.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.files[i])
    }

    pub fn dir(&self, name: &str) -> Option<&TreeDir> {
        self.dirs
            .binary_search_by(|d| d.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.dirs[i])
    }
}

fn check_sorted<'a>(names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut prev: Option<&str> = None;
    for name in names {
        if let Some(p) = prev
            && p.as_bytes() >= name.as_bytes()
        {
            return Err(FormatError::UnsortedOrDuplicate {
                name: name.to_string(),
            });
        }
        prev = Some(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(b: u8) -> Checksum {
        Checksum::from_array([b; 32])
    }

    #[test]
    fn empty_tree() {
        let t = DirTree::default();
        assert_eq!(t.serialize(), vec![0]);
        assert_eq!(t.checksum(), EMPTY_DIRTREE);
        assert_eq!(DirTree::parse(&[0]).unwrap(), t);
    }

    #[test]
    fn worked_example_layout() {
        let t = DirTree {
            files: vec![TreeFile {
                name: "n.txt".into(),
                checksum: c(0xaa),
            }],
            dirs: vec![],
        };
        let b = t.serialize();
        assert_eq!(&b[..6], b"n.txt\0");
        assert_eq!(&b[38..], &[0x06, 0x27, 0x28]);
        assert_eq!(DirTree::parse(&b).unwrap(), t);
    }

    #[test]
    fn rejects_bad_entries() {
        let mk = |names: &[&str]| DirTree {
            files: names
                .iter()
                .map(|n| TreeFile {
                    name: n.to_string(),
                    checksum: c(1),
                })
                .collect(),
            dirs: vec![],
        };
        for bad in [
            &["b", "a"][..],
            &["a", "a"],
            &[".."],
            &["."],
            &[""],
            &["a/b"],
        ] {
            let bytes = mk(bad).serialize();
            assert!(DirTree::parse(&bytes).is_err(), "{bad:?}");
        }
        let both = DirTree {
            files: vec![TreeFile {
                name: "x".into(),
                checksum: c(1),
            }],
            dirs: vec![TreeDir {
                name: "x".into(),
                tree: c(2),
                meta: c(3),
            }],
        };
        assert!(DirTree::parse(&both.serialize()).is_err());
        let ok = mk(&["B", "_", "a", "é"]);
        assert_eq!(DirTree::parse(&ok.serialize()).unwrap(), ok);
        assert!(ok.file("a").is_some() && ok.file("c").is_none());
    }
}
