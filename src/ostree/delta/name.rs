//! Delta names and where a delta's files live.
//!
//! A delta is named by hex checksums, `FROM-TO` or `TO` for a from-scratch
//! delta (the keys of `ostree.static-deltas`). On disk and on the wire its
//! files use "modified base64" (standard base64 of the 32 bytes, `=`
//! dropped, `/` → `_`), split after two characters:
//!
//! ```text
//! deltas/<mb64(FROM)[..2]>/<mb64(FROM)[2..]>-<mb64(TO)>/{superblock,0,1,…}
//! deltas/<mb64(TO)[..2]>/<mb64(TO)[2..]>/{superblock,0,1,…}
//! delta-indexes/<mb64(TO)[..2]>/<mb64(TO)[2..]>.index
//! ```
//!
//! The superblock's metadata names inline parts and the target commit's
//! detached metadata by the same relative paths (`deltas/…/0`,
//! `deltas/…/commitmeta`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::super::checksum::{Checksum, truncate_for_error};
use super::error::{DeltaError, Result};

/// Length of a checksum in modified base64.
pub const MB64_LEN: usize = 43;

/// Modified base64 of a checksum (43 characters).
pub fn mb64(c: &Checksum) -> String {
    STANDARD_NO_PAD.encode(c.as_bytes()).replace('/', "_")
}

/// Inverse of [`mb64`]; `None` unless `s` is exactly one encoded checksum.
pub fn from_mb64(s: &str) -> Option<Checksum> {
    if s.len() != MB64_LEN || s.contains('/') {
        return None;
    }
    let bytes = STANDARD_NO_PAD.decode(s.replace('_', "/")).ok()?;
    let c = Checksum::from_slice(&bytes, "delta path").ok()?;
    // Only the canonical spelling (the last character carries 2 unused bits).
    (mb64(&c) == s).then_some(c)
}

/// A static delta: from a commit (or from nothing) to a commit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeltaName {
    pub from: Option<Checksum>,
    pub to: Checksum,
}

impl DeltaName {
    pub fn new(from: Option<Checksum>, to: Checksum) -> Self {
        DeltaName { from, to }
    }

    pub fn scratch(to: Checksum) -> Self {
        DeltaName { from: None, to }
    }

    /// Parses the hex name `FROM-TO` or `TO`.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |reason| DeltaError::InvalidName {
            name: truncate_for_error(name),
            reason,
        };
        let (from, to) = match name.split_once('-') {
            Some((f, t)) => (
                Some(Checksum::from_hex(f).map_err(|_| bad("FROM is not a checksum"))?),
                t,
            ),
            None => (None, name),
        };
        let to = Checksum::from_hex(to).map_err(|_| bad("TO is not a checksum"))?;
        Ok(DeltaName { from, to })
    }

    /// The delta's directory, relative to the repository (`deltas/…`, no
    /// trailing slash).
    pub fn dir(&self) -> String {
        let to = mb64(&self.to);
        match &self.from {
            Some(from) => {
                let from = mb64(from);
                format!("deltas/{}/{}-{to}", &from[..2], &from[2..])
            }
            None => format!("deltas/{}/{}", &to[..2], &to[2..]),
        }
    }

    /// Parses a delta directory as [`dir`](Self::dir) writes it, from its
    /// two components under `deltas/` (`XX` and the rest).
    pub fn from_dir_components(first: &str, rest: &str) -> Option<Self> {
        let joined = format!("{first}{rest}");
        match joined.split_once('-') {
            Some((f, t)) => Some(DeltaName {
                from: Some(from_mb64(f)?),
                to: from_mb64(t)?,
            }),
            None => Some(DeltaName::scratch(from_mb64(&joined)?)),
        }
        .filter(|_| first.len() == 2)
    }

    pub fn superblock_path(&self) -> String {
        format!("{}/superblock", self.dir())
    }

    /// Path of part `i`; also the superblock metadata key of an inline part.
    pub fn part_path(&self, i: usize) -> String {
        format!("{}/{i}", self.dir())
    }

    /// Superblock metadata key of the target commit's detached metadata.
    pub fn commitmeta_key(&self) -> String {
        format!("{}/commitmeta", self.dir())
    }

    /// Where the delta index for commit `to` lives.
    pub fn index_path(to: &Checksum) -> String {
        let to = mb64(to);
        format!("delta-indexes/{}/{}.index", &to[..2], &to[2..])
    }
}

impl fmt::Display for DeltaName {
    /// The hex name, as in summaries and indexes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{from}-{}", self.to),
            None => write!(f, "{}", self.to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(hex_prefix: &str) -> Checksum {
        // The two checksums of the format reference's examples.
        match hex_prefix {
            "660494c5" => Checksum::from_array(
                *b"\x66\x04\x94\xc5\xe2\x4b\xda\x97\x98\x95\xbc\x1c\x01\x29\xee\x94\x3b\x5c\x7f\xd1\x48\x9c\x60\xa1\xa9\xe9\xdf\x27\x85\xaa\x28\xf5",
            ),
            _ => Checksum::from_array(
                *b"\xfe\x77\x8c\x5c\x90\x0e\x4d\x3c\xe5\xb4\xc8\xa3\xea\x83\x3b\xda\x95\x5d\x66\xd7\xcc\xd2\x69\x63\x90\x30\x68\xdd\x2f\xd1\x34\x93",
            ),
        }
    }

    #[test]
    fn reference_paths() {
        let a = c("660494c5");
        let b = c("fe778c5c");
        assert_eq!(mb64(&a), "ZgSUxeJL2peYlbwcASnulDtcf9FInGChqenfJ4WqKPU");
        assert_eq!(mb64(&b), "_neMXJAOTTzltMij6oM72pVdZtfM0mljkDBo3S_RNJM");
        assert_eq!(from_mb64(&mb64(&b)), Some(b));
        let d = DeltaName::new(Some(a), b);
        assert_eq!(
            d.superblock_path(),
            "deltas/Zg/SUxeJL2peYlbwcASnulDtcf9FInGChqenfJ4WqKPU-_neMXJAOTTzltMij6oM72pVdZtfM0mljkDBo3S_RNJM/superblock"
        );
        assert_eq!(
            DeltaName::index_path(&b),
            "delta-indexes/_n/eMXJAOTTzltMij6oM72pVdZtfM0mljkDBo3S_RNJM.index"
        );
        assert_eq!(
            DeltaName::scratch(b).part_path(3),
            "deltas/_n/eMXJAOTTzltMij6oM72pVdZtfM0mljkDBo3S_RNJM/3"
        );
        assert_eq!(DeltaName::parse(&d.to_string()).unwrap(), d);
        assert_eq!(
            DeltaName::parse(&b.to_hex()).unwrap(),
            DeltaName::scratch(b)
        );
        let dir = d.dir();
        let mut comps = dir.split('/').skip(1);
        assert_eq!(
            DeltaName::from_dir_components(comps.next().unwrap(), comps.next().unwrap()),
            Some(d)
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "-",
            "abc",
            &format!("{}-", "a".repeat(64)),
            &"A".repeat(64),
        ] {
            assert!(DeltaName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(from_mb64("short"), None);
        // Non-canonical last character (unused bits set).
        let s = mb64(&Checksum::from_array([0; 32]));
        let mut t = s[..42].to_string();
        t.push('B');
        assert_eq!(from_mb64(&t), None);
    }
}
