//! `dirmeta` objects: a directory's owner, mode and xattrs, `(uuua(ayay))`.
//!
//! ```text
//! u32be uid | u32be gid | u32be mode (S_IFDIR|perms) | a(ayay) xattrs
//! ```
//! The same shape is bare-user's `user.ostreemeta` xattr, so the codec for
//! `(uuua(ayay))` lives here and [`super::content`] reuses it.

use gvariant::aligned_bytes::AsAligned;
use gvariant::{Marker, Structure, gv};

use super::checksum::Checksum;
use super::error::{FormatError, Result};
use super::gv::{MAX_METADATA_SIZE, aligned, check_normal_form, check_size};
use super::mode;
use super::xattrs::Xattrs;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMeta {
    pub uid: u32,
    pub gid: u32,
    /// Full mode including `S_IFDIR`.
    pub mode: u32,
    pub xattrs: Xattrs,
}

impl DirMeta {
    pub fn parse(data: &[u8]) -> Result<Self> {
        let (uid, gid, m, xattrs) = parse_uuua("dirmeta", data)?;
        if !mode::is_dir(m) || !mode::only_type_and_perms(m) {
            return Err(FormatError::InvalidMode {
                what: "dirmeta (must be a directory)",
                mode: m,
            });
        }
        Ok(DirMeta {
            uid,
            gid,
            mode: m,
            xattrs,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        serialize_uuua(self.uid, self.gid, self.mode, &self.xattrs)
    }

    pub fn checksum(&self) -> Checksum {
        Checksum::digest(&self.serialize())
    }
}

/// Parses `(uuua(ayay))` with its u32s stored big-endian.
pub(crate) fn parse_uuua(what: &'static str, data: &[u8]) -> Result<(u32, u32, u32, Xattrs)> {
    check_size(what, data, MAX_METADATA_SIZE)?;
    let buf = aligned(data);
    let (uid, gid, m, list) = gv!("(uuua(ayay))").cast(buf.as_aligned()).to_tuple();
    let xattrs = Xattrs::from_wire(list.iter().map(|e| e.to_tuple()))?;
    let (uid, gid, m) = (u32::from_be(*uid), u32::from_be(*gid), u32::from_be(*m));
    check_normal_form(what, data, &serialize_uuua(uid, gid, m, &xattrs))?;
    Ok((uid, gid, m, xattrs))
}

pub(crate) fn serialize_uuua(uid: u32, gid: u32, m: u32, xattrs: &Xattrs) -> Vec<u8> {
    xattrs.with_wire(|pairs| {
        gv!("(uuua(ayay))").serialize_to_vec(&(uid.to_be(), gid.to_be(), m.to_be(), pairs))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_dirmeta_checksum() {
        let dm = DirMeta {
            uid: 0,
            gid: 0,
            mode: 0o40755,
            xattrs: Xattrs::new(),
        };
        let bytes = dm.serialize();
        assert_eq!(hex::encode(&bytes), "0000000000000000000041ed");
        assert_eq!(
            dm.checksum().to_hex(),
            "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"
        );
        assert_eq!(DirMeta::parse(&bytes).unwrap(), dm);
    }

    #[test]
    fn rejects_non_directory_and_garbage() {
        let file = serialize_uuua(0, 0, 0o100644, &Xattrs::new());
        assert!(DirMeta::parse(&file).is_err());
        assert!(DirMeta::parse(&[1, 2, 3]).is_err());
        assert!(DirMeta::parse(&[]).is_err());
        let mut padded = DirMeta {
            uid: 0,
            gid: 0,
            mode: 0o40755,
            xattrs: Xattrs::new(),
        }
        .serialize();
        padded.push(0);
        assert!(DirMeta::parse(&padded).is_err());
    }
}
