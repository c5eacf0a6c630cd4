//! Content (`file`) objects: headers, the canonical checksum stream and the
//! `archive` (`.filez`) framing.
//!
//! ```text
//! H = (uuuusa(ayay))   uid, gid, mode, rdev=0, symlink target, xattrs (u32s big-endian)
//! checksum = SHA-256( u32be(len H) ‖ 00 00 00 00 ‖ H ‖ file bytes )
//!
//! .filez = u32be(len Z) ‖ 00 00 00 00 ‖ Z ‖ raw DEFLATE(file bytes)
//! Z = (tuuuusa(ayay))  size (u64be) then the fields of H
//! ```
//! Symlinks have no data: their checksum stream ends after `H`, and their
//! `.filez` ends after `Z` (no deflate stream at all).

use gvariant::aligned_bytes::AsAligned;
use gvariant::{Marker, Structure, gv};
use sha2::{Digest, Sha256};

use super::checksum::{Checksum, truncate_for_error};
use super::dirmeta::{parse_uuua, serialize_uuua};
use super::error::{FormatError, Result};
use super::gv::{aligned, check_normal_form, str_of};
use super::mode;
use super::xattrs::Xattrs;

/// Largest content header accepted (xattrs are bounded by the kernel to
/// 64 KiB per value, so real headers are far smaller).
pub const MAX_HEADER_SIZE: usize = 1024 * 1024;
/// Linux `PATH_MAX`: no longer symlink target can be created.
pub const MAX_SYMLINK_TARGET: usize = 4095;

/// Metadata of a content object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub uid: u32,
    pub gid: u32,
    /// Full mode: `S_IFREG` or `S_IFLNK` plus permission bits.
    pub mode: u32,
    /// Empty for regular files.
    pub symlink_target: String,
    pub xattrs: Xattrs,
}

impl FileHeader {
    pub fn is_symlink(&self) -> bool {
        mode::is_symlink(self.mode)
    }

    pub fn is_regular(&self) -> bool {
        mode::is_reg(self.mode)
    }

    /// The rules libostree applies to untrusted headers, plus bounds.
    pub fn validate(&self) -> Result<()> {
        let m = self.mode;
        if !(mode::is_reg(m) || mode::is_symlink(m)) || !mode::only_type_and_perms(m) {
            return Err(FormatError::InvalidMode {
                what: "content object (must be a regular file or symlink)",
                mode: m,
            });
        }
        let target = &self.symlink_target;
        let bad_target = |reason| FormatError::InvalidSymlinkTarget {
            target: truncate_for_error(target),
            reason,
        };
        if mode::is_symlink(m) {
            if target.is_empty() {
                return Err(bad_target("empty target"));
            }
            if target.len() > MAX_SYMLINK_TARGET {
                return Err(bad_target("longer than PATH_MAX"));
            }
            if target.contains('\0') {
                return Err(bad_target("contains NUL"));
            }
        } else if !target.is_empty() {
            return Err(bad_target("a regular file has a symlink target"));
        }
        Ok(())
    }

    /// `H`, the `(uuuusa(ayay))` header that is hashed.
    pub fn serialize(&self) -> Vec<u8> {
        self.xattrs.with_wire(|pairs| {
            gv!("(uuuusa(ayay))").serialize_to_vec(&(
                self.uid.to_be(),
                self.gid.to_be(),
                self.mode.to_be(),
                0u32,
                self.symlink_target.as_str(),
                pairs,
            ))
        })
    }

    /// The start of the checksum stream: `u32be(len H) ‖ 0000 ‖ H`.
    pub fn checksum_prefix(&self) -> Vec<u8> {
        framed(self.serialize())
    }

    /// A SHA-256 state that has already consumed the header; feed it the
    /// file's bytes (nothing for a symlink) and finish with
    /// [`Checksum::from_hasher`].
    pub fn hasher(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(self.checksum_prefix());
        h
    }

    /// Checksum of an object with this header and `data` as its bytes.
    pub fn checksum(&self, data: &[u8]) -> Checksum {
        let mut h = self.hasher();
        h.update(data);
        Checksum::from_hasher(h)
    }

    /// The `.filez` prefix: `u32be(len Z) ‖ 0000 ‖ Z` for a file of `size`
    /// uncompressed bytes.
    pub fn archive_prefix(&self, size: u64) -> Vec<u8> {
        let z = self.xattrs.with_wire(|pairs| {
            gv!("(tuuuusa(ayay))").serialize_to_vec(&(
                size.to_be(),
                self.uid.to_be(),
                self.gid.to_be(),
                self.mode.to_be(),
                0u32,
                self.symlink_target.as_str(),
                pairs,
            ))
        });
        framed(z)
    }

    /// bare-user's `user.ostreemeta`: `(uuua(ayay))` with the full mode.
    pub fn to_ostreemeta(&self) -> Vec<u8> {
        serialize_uuua(self.uid, self.gid, self.mode, &self.xattrs)
    }

    /// Header of a bare-user object from its `user.ostreemeta` xattr and,
    /// for symlinks, the target read from the object file.
    pub fn from_ostreemeta(meta: &[u8], symlink_target: String) -> Result<Self> {
        let (uid, gid, m, xattrs) = parse_uuua("user.ostreemeta", meta)?;
        let h = FileHeader {
            uid,
            gid,
            mode: m,
            symlink_target: if mode::is_symlink(m) {
                symlink_target
            } else {
                String::new()
            },
            xattrs,
        };
        h.validate()?;
        Ok(h)
    }

    /// Parses a bare `H` (`(uuuusa(ayay))`), as stored in the checksum stream.
    pub fn parse(data: &[u8]) -> Result<Self> {
        check_header_size(data.len())?;
        let buf = aligned(data);
        let (uid, gid, m, rdev, target, list) =
            gv!("(uuuusa(ayay))").cast(buf.as_aligned()).to_tuple();
        let h = header_from_parts(
            *uid,
            *gid,
            *m,
            *rdev,
            target,
            list.iter().map(|e| e.to_tuple()),
        )?;
        check_normal_form("content header", data, &h.serialize())?;
        Ok(h)
    }
}

/// The parsed start of a `.filez` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveHeader {
    pub header: FileHeader,
    /// Uncompressed size of the file's data (0 for symlinks).
    pub size: u64,
    /// Offset of the deflate stream within the `.filez` bytes.
    pub data_offset: usize,
}

/// How many leading bytes of a `.filez` are needed to know the header
/// length; [`archive_header_len`] then says how many more.
pub const FRAME_PREFIX: usize = 8;

/// Total length of the framed header (`8 + len Z`) from the first 8 bytes.
pub fn archive_header_len(prefix: &[u8]) -> Result<usize> {
    let Some(first) = prefix.get(..FRAME_PREFIX) else {
        return Err(FormatError::Truncated {
            what: "archive content object header",
        });
    };
    let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]) as usize;
    check_header_size(len)?;
    if first[4..8] != [0, 0, 0, 0] {
        return Err(FormatError::NotNormalForm {
            what: "archive content object header padding",
        });
    }
    Ok(FRAME_PREFIX + len)
}

/// Parses the header of a `.filez` object from its leading bytes (which may
/// include the start of the deflate stream).
pub fn parse_archive_header(data: &[u8]) -> Result<ArchiveHeader> {
    let total = archive_header_len(data)?;
    let Some(z) = data.get(FRAME_PREFIX..total) else {
        return Err(FormatError::Truncated {
            what: "archive content object header",
        });
    };
    let buf = aligned(z);
    let (size, uid, gid, m, rdev, target, list) =
        gv!("(tuuuusa(ayay))").cast(buf.as_aligned()).to_tuple();
    let header = header_from_parts(
        *uid,
        *gid,
        *m,
        *rdev,
        target,
        list.iter().map(|e| e.to_tuple()),
    )?;
    let size = u64::from_be(*size);
    check_normal_form(
        "archive content header",
        &data[..total],
        &header.archive_prefix(size),
    )?;
    if header.is_symlink() && size != 0 {
        return Err(FormatError::InvalidMode {
            what: "symlink with a data size",
            mode: header.mode,
        });
    }
    Ok(ArchiveHeader {
        header,
        size,
        data_offset: total,
    })
}

fn header_from_parts<'a>(
    uid: u32,
    gid: u32,
    m: u32,
    rdev: u32,
    target: &gvariant::Str,
    xattrs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<FileHeader> {
    let rdev = u32::from_be(rdev);
    if rdev != 0 {
        return Err(FormatError::NonZeroRdev(rdev));
    }
    let h = FileHeader {
        uid: u32::from_be(uid),
        gid: u32::from_be(gid),
        mode: u32::from_be(m),
        symlink_target: str_of(target),
        xattrs: Xattrs::from_wire(xattrs)?,
    };
    h.validate()?;
    Ok(h)
}

fn check_header_size(len: usize) -> Result<()> {
    if len > MAX_HEADER_SIZE {
        return Err(FormatError::TooLarge {
            what: "content object header",
            size: len as u64,
            max: MAX_HEADER_SIZE as u64,
        });
    }
    Ok(())
}

fn framed(inner: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len() + FRAME_PREFIX);
    out.extend_from_slice(&(inner.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&inner);
    out
}

#[cfg(test)]
mod tests {
    use super::super::xattrs::Xattr;
    use super::*;

    fn reg(m: u32) -> FileHeader {
        FileHeader {
            uid: 0,
            gid: 0,
            mode: m,
            symlink_target: String::new(),
            xattrs: Xattrs::new(),
        }
    }

    #[test]
    fn reference_checksums() {
        let h = reg(0o100640);
        assert_eq!(
            hex::encode(h.checksum_prefix()),
            "00000012000000000000000000000000000081a0000000000011"
        );
        assert!(h.checksum(b"hello\n").to_hex().starts_with("de02c3a60ac5"));

        let l = FileHeader {
            mode: 0o120777,
            symlink_target: "hello.txt".into(),
            ..reg(0)
        };
        assert!(l.checksum(b"").to_hex().starts_with("f66efa496a72"));

        let x = FileHeader {
            xattrs: Xattrs::from_unsorted(vec![
                Xattr {
                    name: b"user.b".to_vec(),
                    value: b"2".to_vec(),
                },
                Xattr {
                    name: b"user.a".to_vec(),
                    value: b"1".to_vec(),
                },
            ])
            .unwrap(),
            ..reg(0o100644)
        };
        let _ = x.checksum(b"xa\n");
        assert_eq!(FileHeader::parse(&x.serialize()).unwrap(), x);
    }

    #[test]
    fn archive_header_reference() {
        let h = reg(0o100640);
        let mut filez = h.archive_prefix(6);
        assert_eq!(
            hex::encode(&filez),
            "0000001a00000000000000000000000600000000000000000000".to_string() + "81a0000000000019"
        );
        filez.extend_from_slice(&[0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xe7, 0x02, 0x00]);
        let a = parse_archive_header(&filez).unwrap();
        assert_eq!(a.header, h);
        assert_eq!(a.size, 6);
        assert_eq!(a.data_offset, 34);
    }

    #[test]
    fn rejects_bad_headers() {
        for m in [0o040755, 0o020644, 0o010644, 0o140755, 0o1100644] {
            assert!(FileHeader::parse(&reg(m).serialize()).is_err(), "{m:o}");
        }
        let regular_with_target = FileHeader {
            symlink_target: "x".into(),
            ..reg(0o100644)
        };
        assert!(FileHeader::parse(&regular_with_target.serialize()).is_err());
        let empty_link = reg(0o120777);
        assert!(FileHeader::parse(&empty_link.serialize()).is_err());
        assert!(parse_archive_header(&[0, 0, 0, 9]).is_err());
        assert!(parse_archive_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        let mut rdev = reg(0o100644).serialize();
        rdev[15] = 1;
        assert!(FileHeader::parse(&rdev).is_err());
    }
}
