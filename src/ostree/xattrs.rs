//! Extended attribute lists, `a(ayay)` in every OSTree object that has them.
//!
//! On the wire each name carries a trailing NUL (`"user.a\0"`) and values
//! are raw bytes. In memory [`Xattr::name`] has no NUL, ready for
//! `setxattr`. Lists built from a filesystem are sorted by name; lists parsed
//! from objects keep their order, because the stored order is what was hashed.

use super::checksum::truncate_for_error;
use super::error::{FormatError, Result};

/// Linux limits (`XATTR_NAME_MAX`, `XATTR_SIZE_MAX`); nothing larger can be
/// applied to a file, so larger values are rejected as hostile.
pub const MAX_XATTR_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// Prefixes of the xattrs that steer a union filesystem when the entry
/// carrying them lies in one of its lower layers: kernel overlayfs reads
/// `trusted.overlay.*` (and `user.overlay.*` when mounted with
/// `userxattr`): `opaque`, `redirect`, `metacopy`, `whiteout`…;
/// fuse-overlayfs also reads `user.fuseoverlayfs.*` and
/// `user.containers.*` (`override_stat` changes the owner and mode it
/// shows). A commit can carry any of them.
pub const OVERLAY_XATTR_PREFIXES: [&[u8]; 4] = [
    b"trusted.overlay.",
    b"user.overlay.",
    b"user.fuseoverlayfs.",
    b"user.containers.",
];

/// Whether `name` steers a union filesystem (see
/// [`OVERLAY_XATTR_PREFIXES`]).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xattr {
    /// Name without the trailing NUL.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xattrs(Vec<Xattr>);

impl Xattrs {
    pub fn new() -> Self {
        Xattrs(Vec::new())
    }

    /// Builds a list in canonical (sorted by name) order.
    pub fn from_unsorted(mut list: Vec<Xattr>) -> Result<Self> {
        for x in &list {
            validate_name(&x.name)?;
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Xattrs(list))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Xattr> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value.as_slice())
    }

    /// Whether any attribute steers a union filesystem
    /// ([`is_overlay_xattr`]).
    pub fn has_overlay(&self) -> bool {
        self.0.iter().any(|x| is_overlay_xattr(&x.name))
    }

    /// The list without the attributes that steer a union filesystem.
    pub fn without_overlay(&self) -> Xattrs {
        Xattrs(
            self.0
                .iter()
                .filter(|x| !is_overlay_xattr(&x.name))
                .cloned()
                .collect(),
        )
    }

    /// Keeps only the attributes for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&Xattr) -> bool) {
        self.0.retain(keep)
    }

    /// Parses wire pairs (names with their NUL), keeping order.
    pub(crate) fn from_wire<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Result<Self> {
        let mut out = Vec::new();
        for (name, value) in pairs {
            let Some(name) = name.strip_suffix(b"\0") else {
                return Err(FormatError::InvalidXattrName {
                    name: truncate_for_error(&String::from_utf8_lossy(name)),
                    reason: "missing trailing NUL",
                });
            };
            validate_name(name)?;
            if value.len() > MAX_XATTR_VALUE {
                return Err(FormatError::TooLarge {
                    what: "extended attribute value",
                    size: value.len() as u64,
                    max: MAX_XATTR_VALUE as u64,
                });
            }
            out.push(Xattr {
                name: name.to_vec(),
                value: value.to_vec(),
            });
        }
        Ok(Xattrs(out))
    }

    /// Names with their trailing NUL, paired with values, for serializing.
    pub(crate) fn wire_names(&self) -> Vec<Vec<u8>> {
        self.0
            .iter()
            .map(|x| {
                let mut n = Vec::with_capacity(x.name.len() + 1);
                n.extend_from_slice(&x.name);
                n.push(0);
                n
            })
            .collect()
    }

    /// Runs `f` with the `a(ayay)` pairs borrowed for serialization.
    pub(crate) fn with_wire<R>(&self, f: impl FnOnce(&Vec<(&[u8], &[u8])>) -> R) -> R {
        let names = self.wire_names();
        let pairs: Vec<(&[u8], &[u8])> = names
            .iter()
            .zip(&self.0)
            .map(|(n, x)| (n.as_slice(), x.value.as_slice()))
            .collect();
        f(&pairs)
    }
}

impl<'a> IntoIterator for &'a Xattrs {
    type Item = &'a Xattr;
    type IntoIter = std::slice::Iter<'a, Xattr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

fn validate_name(name: &[u8]) -> Result<()> {
    let reason = if name.is_empty() {
        "empty name"
    } else if name.contains(&0) {
        "contains NUL"
    } else if name.len() > MAX_XATTR_NAME {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(FormatError::InvalidXattrName {
        name: truncate_for_error(&String::from_utf8_lossy(name)),
        reason,
    })
}
