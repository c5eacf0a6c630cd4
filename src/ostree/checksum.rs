//! SHA-256 object checksums.
//!
//! OSTree names every object by a SHA-256 digest, written as 64 lowercase hex
//! characters and embedded in GVariants as an `ay` of exactly 32 bytes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::error::{FormatError, Result};

/// A 32-byte SHA-256 object checksum.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum([u8; 32]);

impl Checksum {
    pub const LEN: usize = 32;

    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Checksum(bytes)
    }

    /// Checksum from an embedded `ay`; `what` names the field for errors.
    pub fn from_slice(bytes: &[u8], what: &'static str) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| FormatError::InvalidChecksumLength {
                what,
                len: bytes.len(),
            })?;
        Ok(Checksum(arr))
    }

    /// Parses 64 lowercase hex characters (ostree rejects uppercase).
    pub fn from_hex(s: &str) -> Result<Self> {
        if !is_checksum_hex(s) {
            return Err(FormatError::InvalidChecksumHex(truncate_for_error(s)));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| FormatError::InvalidChecksumHex(truncate_for_error(s)))?;
        Ok(Checksum(out))
    }

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Self {
        Checksum(Sha256::digest(data).into())
    }

    pub fn from_hasher(h: Sha256) -> Self {
        Checksum(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// True when `s` is exactly 64 lowercase hex characters.
pub fn is_checksum_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Keeps error messages bounded when the input is hostile.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

impl FromStr for Checksum {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self> {
        Checksum::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hex = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";
        let c = Checksum::from_hex(hex).unwrap();
        assert_eq!(c.to_hex(), hex);
        assert_eq!(c, Checksum::digest(&[0]));
    }

    #[test]
    fn rejects_bad_hex() {
        for bad in [
            "",
            "6E340B9CFFB37A989CA544E6BB780A2C78901D3FB33738768511A30617AFA01D",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01dd",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa0zz",
        ] {
            assert!(Checksum::from_hex(bad).is_err(), "{bad}");
        }
        assert!(Checksum::from_slice(&[0; 31], "x").is_err());
    }
}
