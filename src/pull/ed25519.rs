//! Ed25519 verification of commits and summaries, as ostree's *signapi*
//! (`sign-verify`) does it. Pure: keys and signatures come in as bytes or
//! strings; finding and reading key files is done by the caller
//! ([`super::SignVerify::for_remote`]).
//!
//! # Where the signatures are
//!
//! A commit's detached metadata (`objects/XX/<commit>.commitmeta`, an
//! `a{sv}`) and a repository's `summary.sig` (also an `a{sv}`) carry the key
//! `ostree.sign.ed25519` of type `aay`. Each element is a 64-byte Ed25519
//! signature (RFC 8032, pure Ed25519, no pre-hash) over the exact bytes of
//! the `.commit` object or of the `summary` file. Public keys are 32 raw
//! bytes, written in base64.
//!
//! ```text
//! .commitmeta = a{sv} { "ostree.sign.ed25519": <aay [sig0 (64 bytes), sig1, …]>, … }
//! ```
//!
//! # When ostree accepts (`ostree-sign-ed25519.c`, `data_verify`)
//!
//! Checked against libostree 2022.7 and upstream main (2026.4), whose logic
//! is the same:
//!
//! * No `ostree.sign.ed25519` entry of type `aay` (another type counts as
//!   absent, `g_variant_lookup_value` with the type): no signatures.
//! * Signatures are taken in order; for each, a length other than 64 bytes
//!   is a hard error ("Invalid signature: Ill-formed input"), even if a
//!   later signature would verify. Then every trusted key that is not also
//!   revoked is tried; the first (signature, key) pair that verifies
//!   accepts the data.
//! * Keys are tried most recently added first (ostree prepends to a list);
//!   that only changes which keys an error message names.
//! * No trusted key left after removing revoked ones, or an empty `aay`:
//!   refused ("ed25519: no signatures found").
//! * The signature check is libsodium's `crypto_sign_verify_detached`
//!   (OpenSSL's `EVP_DigestVerify` in builds without libsodium). This
//!   module uses ed25519-dalek's `verify_strict`, which like libsodium
//!   refuses non-canonical `S`, small-order `R` and weak (small-order)
//!   public keys. A public key that is not a valid point simply verifies
//!   nothing, as with libsodium.
//!
//! # Key text
//!
//! An inline key (`verification-ed25519-key=`) and each line of a key file
//! are decoded with GLib's lenient `g_base64_decode`, reproduced by
//! [`glib_base64_decode`]: characters outside the base64 alphabet (spaces,
//! `\r`, …) are skipped, `=` counts as a zero digit and suppresses output
//! bytes, and leftover digits at the end are dropped. The result must be
//! exactly 32 bytes. In a key file (`ostree-blob-reader-base64.c`, upstream
//! since 2025.2) lines end at `\n`; an invalid key is skipped, an **empty
//! line** ends the file with an error ("Invalid base64 blob format"), and a
//! file without any valid key is an error. (2022.7 decoded an empty line as
//! an invalid key and went on; arbor follows current upstream.)
//!
//! # Limits
//!
//! At most [`MAX_SIGNATURES`] signatures are looked at (ostree has no
//! limit; a commitmeta can hold millions, each checked against every key),
//! and key files larger than [`MAX_KEY_FILE_SIZE`] are refused.

use std::collections::HashSet;
use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use thiserror::Error;

use crate::ostree::{Metadata, Value};

/// The detached-metadata / `summary.sig` key holding the signatures.
pub const METADATA_KEY: &str = "ostree.sign.ed25519";

/// Bytes in a public key.
pub const PUBLIC_KEY_SIZE: usize = 32;

/// Bytes in a signature.
pub const SIGNATURE_SIZE: usize = 64;

/// Most signatures looked at in one `ostree.sign.ed25519` list; later ones
/// are ignored.
pub const MAX_SIGNATURES: usize = 64;

/// Largest key file accepted (16 MiB, about 350 000 keys).
pub const MAX_KEY_FILE_SIZE: usize = 16 << 20;

/// An Ed25519 public key (32 raw bytes). Shown as lower-case hex, as ostree
/// names keys in its messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_SIZE]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PublicKey {
    /// Decodes a base64 key as ostree does (see the module doc).
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let raw = glib_base64_decode(text.as_bytes());
        let bytes: [u8; PUBLIC_KEY_SIZE] = raw
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength { found: raw.len() })?;
        Ok(PublicKey(bytes))
    }
}

/// A key that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    /// ostree: "Invalid ed25519 public key: Ill-formed input: expected 32
    /// bytes, got N bytes".
    #[error("not an ed25519 public key: base64 of {found} bytes, expected {PUBLIC_KEY_SIZE} bytes")]
    WrongLength { found: usize },
}

/// Reading a key file failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyFileError {
    #[error(
        "{origin}: {size} bytes, over the limit of {MAX_KEY_FILE_SIZE} for an ed25519 key file"
    )]
    TooLarge { origin: String, size: usize },
    /// ostree: "Invalid base64 blob format".
    #[error(
        "{origin}: line {line} is empty (ostree stops reading a key file at an empty line; remove it)"
    )]
    EmptyLine { origin: String, line: usize },
    /// ostree: "no valid keys in file".
    #[error("{origin}: no valid ed25519 public key (one base64 key per line){}", first_error.as_ref().map(|(l, e)| format!("; line {l}: {e}")).unwrap_or_default())]
    NoValidKeys {
        origin: String,
        first_error: Option<(usize, KeyError)>,
    },
}

/// What [`parse_key_file`] read. ostree adds each key as it reads it, so
/// the keys before a fatal error are still loaded: `keys` holds them even
/// when `error` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyFile {
    pub keys: Vec<PublicKey>,
    /// Lines that were not keys (1-based line number), skipped.
    pub invalid: Vec<(usize, KeyError)>,
    /// Set when ostree's loader fails for this file.
    pub error: Option<KeyFileError>,
}

impl KeyFile {
    /// `Ok` with the keys when the file loaded, as ostree's
    /// `_load_pk_from_file` would succeed.
    pub fn into_result(self) -> Result<Vec<PublicKey>, KeyFileError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.keys),
        }
    }
}

/// Reads a key file: one base64 public key per line (see the module doc).
/// `origin` names the file in errors.
pub fn parse_key_file(data: &[u8], origin: &str) -> KeyFile {
    let mut out = KeyFile::default();
    if data.len() > MAX_KEY_FILE_SIZE {
        out.error = Some(KeyFileError::TooLarge {
            origin: origin.to_string(),
            size: data.len(),
        });
        return out;
    }
    // GDataInputStream lines: split at '\n'; the text after the last '\n'
    // is a line only if it is not empty (end of file).
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            out.error = Some(KeyFileError::EmptyLine {
                origin: origin.to_string(),
                line: n,
            });
            return out;
        }
        let raw = glib_base64_decode(line);
        match <[u8; PUBLIC_KEY_SIZE]>::try_from(raw.as_slice()) {
            Ok(k) => out.keys.push(PublicKey(k)),
            Err(_) => out
                .invalid
                .push((n, KeyError::WrongLength { found: raw.len() })),
        }
    }
    if out.keys.is_empty() {
        out.error = Some(KeyFileError::NoValidKeys {
            origin: origin.to_string(),
            first_error: out.invalid.first().cloned(),
        });
    }
    out
}

/// GLib's `g_base64_decode`: skips bytes outside the alphabet, treats `=`
/// as a zero digit that suppresses the output bytes it would end, drops
/// an incomplete final group.
pub fn glib_base64_decode(text: &[u8]) -> Vec<u8> {
    fn rank(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => 0,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut v, mut i) = (0u32, 0usize);
    let mut last = [0u8; 2];
    for &c in text {
        let Some(r) = rank(c) else { continue };
        last = [c, last[0]];
        v = (v << 6) | r;
        i += 1;
        if i == 4 {
            out.push((v >> 16) as u8);
            if last[1] != b'=' {
                out.push((v >> 8) as u8);
            }
            if last[0] != b'=' {
                out.push(v as u8);
            }
            v = 0;
            i = 0;
        }
    }
    out
}

/// Trusted and revoked keys for one remote. Adding a key is O(1), so
/// loading a key file of n keys is linear (a file may hold ~350 000).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    /// In the order added, without duplicates; tried newest first.
    trusted: Vec<PublicKey>,
    /// The keys in `trusted`, to refuse duplicates without a scan.
    trusted_set: HashSet<PublicKey>,
    revoked: HashSet<PublicKey>,
}

impl TrustedKeys {
    pub fn new() -> Self {
        TrustedKeys::default()
    }

    /// Adds a trusted key (no effect if already there).
    pub fn add(&mut self, key: PublicKey) {
        if self.trusted_set.insert(key) {
            self.trusted.push(key);
        }
    }

    /// Adds a revoked key: it is never used, even if also trusted.
    pub fn revoke(&mut self, key: PublicKey) {
        self.revoked.insert(key);
    }

    pub fn is_empty(&self) -> bool {
        self.trusted.is_empty()
    }

    /// Verifies `data` against the `ostree.sign.ed25519` of an `a{sv}`
    /// (`metadata`: a `.commitmeta` or `summary.sig`; `None` if absent).
    /// Returns the key that verified.
    pub fn verify_with_metadata(
        &self,
        data: &[u8],
        metadata: Option<&[u8]>,
    ) -> Result<PublicKey, VerifyError> {
        let Some(metadata) = metadata else {
            return Err(VerifyError::NoMetadata);
        };
        let md = Metadata::parse(metadata).map_err(|e| VerifyError::BadMetadata(e.to_string()))?;
        match md.get(METADATA_KEY) {
            Some(Value::ByteArrays(sigs)) => self.verify(data, sigs),
            Some(other) => Err(VerifyError::WrongType(other.typestr().to_string())),
            None => Err(VerifyError::NoSignatures),
        }
    }

    /// Verifies `data` against a list of signatures, in ostree's order
    /// (see the module doc). Returns the key that verified.
    pub fn verify(&self, data: &[u8], signatures: &[Vec<u8>]) -> Result<PublicKey, VerifyError> {
        if signatures.is_empty() {
            return Err(VerifyError::NoSignatures);
        }
        // Most recently added first, as ostree (which prepends) tries them.
        let usable: Vec<(PublicKey, Option<VerifyingKey>)> = self
            .trusted
            .iter()
            .rev()
            .filter(|k| !self.revoked.contains(k))
            .map(|k| (*k, VerifyingKey::from_bytes(&k.0).ok()))
            .collect();
        if self.trusted.is_empty() {
            return Err(VerifyError::NoTrustedKeys);
        }
        for (index, sig) in signatures.iter().take(MAX_SIGNATURES).enumerate() {
            let Ok(bytes) = <[u8; SIGNATURE_SIZE]>::try_from(sig.as_slice()) else {
                return Err(VerifyError::BadLength {
                    index,
                    len: sig.len(),
                });
            };
            let sig = Signature::from_bytes(&bytes);
            for (key, vk) in &usable {
                if vk.is_some_and(|vk| vk.verify_strict(data, &sig).is_ok()) {
                    return Ok(*key);
                }
            }
        }
        if usable.is_empty() {
            return Err(VerifyError::AllKeysRevoked {
                revoked: self.trusted.len(),
            });
        }
        // At least one signature was tried (there is one, and a bad length
        // returned above), so every usable key failed.
        Err(VerifyError::NoValidSignature {
            signatures: signatures.len().min(MAX_SIGNATURES),
            keys: usable.into_iter().map(|(k, _)| k).collect(),
        })
    }
}

/// Why data was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// No detached metadata at all (ostree: "Can't verify commit without
    /// detached metadata").
    #[error("no detached metadata, so no ed25519 signatures")]
    NoMetadata,
    #[error("the signature metadata is invalid: {0}")]
    BadMetadata(String),
    /// No `ostree.sign.ed25519`, or an empty list (ostree: "No signatures
    /// found").
    #[error("no ed25519 signatures found")]
    NoSignatures,
    /// `ostree.sign.ed25519` is not an `aay` (ostree treats it as absent).
    #[error("no ed25519 signatures found ({METADATA_KEY} has type {0}, not aay)")]
    WrongType(String),
    /// ostree: "Invalid signature: Ill-formed input: expected 64 bytes".
    #[error(
        "ed25519 signature #{index} is {len} bytes, expected {SIGNATURE_SIZE} (invalid signature)"
    )]
    BadLength { index: usize, len: usize },
    /// No trusted key configured or found.
    #[error("no trusted ed25519 public keys")]
    NoTrustedKeys,
    /// Every trusted key is also revoked.
    #[error("all {revoked} trusted ed25519 keys are revoked")]
    AllKeysRevoked { revoked: usize },
    /// Signatures were there, none made by a usable key over this data.
    #[error("{}", describe_failure(*.signatures, .keys))]
    NoValidSignature {
        signatures: usize,
        keys: Vec<PublicKey>,
    },
}

fn describe_failure(signatures: usize, keys: &[PublicKey]) -> String {
    let s = if signatures == 1 { "" } else { "s" };
    // ostree caps its list at 3 keys.
    if keys.len() > 3 {
        format!(
            "no valid ed25519 signature: {signatures} signature{s} could not be verified with any of {} trusted keys",
            keys.len()
        )
    } else {
        let list: Vec<String> = keys.iter().map(|k| format!("key '{k}'")).collect();
        format!(
            "no valid ed25519 signature: {signatures} signature{s} could not be verified with {}",
            list.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> (SigningKey, PublicKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let pk = PublicKey(sk.verifying_key().to_bytes());
        (sk, pk)
    }

    fn b64(data: &[u8]) -> String {
        // Standard base64 with padding, for the tests.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn glib_base64_is_lenient_like_glib() {
        assert_eq!(glib_base64_decode(b"aGVsbG8="), b"hello");
        assert_eq!(glib_base64_decode(b" aGVs\r\nbG8=\r"), b"hello");
        // An incomplete last group is dropped.
        assert_eq!(glib_base64_decode(b"aGVsbG8"), b"hel");
        assert_eq!(glib_base64_decode(b"aGVsbA=="), b"hell");
        assert_eq!(glib_base64_decode(b""), b"");
        let (_, pk) = key(7);
        assert_eq!(PublicKey::from_base64(&b64(&pk.0)).unwrap(), pk);
        assert_eq!(
            PublicKey::from_base64("aGVsbG8="),
            Err(KeyError::WrongLength { found: 5 })
        );
    }

    #[test]
    fn key_files_follow_the_blob_reader() {
        let (_, a) = key(1);
        let (_, b) = key(2);
        let text = format!("{}\r\nnot a key\n{}\n", b64(&a.0), b64(&b.0));
        let f = parse_key_file(text.as_bytes(), "f");
        assert_eq!(f.keys, vec![a, b]);
        assert_eq!(f.invalid.len(), 1);
        assert_eq!(f.invalid[0].0, 2);
        assert!(f.error.is_none());
        // No trailing newline is fine too.
        let f = parse_key_file(b64(&a.0).as_bytes(), "f");
        assert_eq!(f.into_result().unwrap(), vec![a]);
        // An empty line ends the file with an error; earlier keys stay read.
        let text = format!("{}\n\n{}\n", b64(&a.0), b64(&b.0));
        let f = parse_key_file(text.as_bytes(), "f");
        assert_eq!(f.keys, vec![a]);
        assert!(matches!(
            f.error,
            Some(KeyFileError::EmptyLine { line: 2, .. })
        ));
        assert!(matches!(
            parse_key_file(b"", "f").error,
            Some(KeyFileError::NoValidKeys { .. })
        ));
        assert!(matches!(
            parse_key_file(b"junk\n", "f").error,
            Some(KeyFileError::NoValidKeys {
                first_error: Some((1, _)),
                ..
            })
        ));
    }

    #[test]
    fn verification_rules() {
        let (ska, a) = key(1);
        let (skb, b) = key(2);
        let data = b"commit bytes";
        let sig_a = ska.sign(data).to_bytes().to_vec();
        let sig_b = skb.sign(data).to_bytes().to_vec();
        let mut keys = TrustedKeys::new();
        assert_eq!(
            keys.verify(data, std::slice::from_ref(&sig_a)),
            Err(VerifyError::NoTrustedKeys)
        );
        keys.add(a);
        assert_eq!(keys.verify(data, std::slice::from_ref(&sig_a)), Ok(a));
        // Any signature by any key.
        assert_eq!(keys.verify(data, &[sig_b.clone(), sig_a.clone()]), Ok(a));
        match keys.verify(data, std::slice::from_ref(&sig_b)) {
            Err(VerifyError::NoValidSignature {
                signatures: 1,
                keys,
            }) => assert_eq!(keys, vec![a]),
            other => panic!("{other:?}"),
        }
        // Other data, flipped signature.
        assert!(keys.verify(b"other", std::slice::from_ref(&sig_a)).is_err());
        let mut bad = sig_a.clone();
        bad[10] ^= 1;
        assert!(keys.verify(data, &[bad]).is_err());
        // A wrong-length signature is fatal when reached, not before.
        assert_eq!(
            keys.verify(data, &[vec![0; 63], sig_a.clone()]),
            Err(VerifyError::BadLength { index: 0, len: 63 })
        );
        assert_eq!(keys.verify(data, &[sig_a.clone(), vec![0; 63]]), Ok(a));
        assert_eq!(keys.verify(data, &[]), Err(VerifyError::NoSignatures));
        // Revoked keys are skipped.
        keys.add(b);
        keys.revoke(a);
        assert!(keys.verify(data, std::slice::from_ref(&sig_a)).is_err());
        assert_eq!(keys.verify(data, std::slice::from_ref(&sig_b)), Ok(b));
        keys.revoke(b);
        assert_eq!(
            keys.verify(data, &[sig_b]),
            Err(VerifyError::AllKeysRevoked { revoked: 2 })
        );
        // A key that is not a curve point verifies nothing.
        let mut odd = TrustedKeys::new();
        odd.add(PublicKey([0xff; 32]));
        assert!(matches!(
            odd.verify(data, &[sig_a]),
            Err(VerifyError::NoValidSignature { .. })
        ));
    }

    #[test]
    fn keys_are_tried_newest_first_without_duplicates() {
        let (_, a) = key(1);
        let (_, b) = key(2);
        let (skc, _) = key(3);
        let mut keys = TrustedKeys::new();
        keys.add(a);
        keys.add(b);
        keys.add(a);
        let sig = skc.sign(b"x").to_bytes().to_vec();
        match keys.verify(b"x", &[sig.clone(), sig]) {
            Err(VerifyError::NoValidSignature {
                signatures: 2,
                keys,
            }) => assert_eq!(keys, vec![b, a]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_lookup() {
        let (ska, a) = key(1);
        let data = b"summary";
        let mut keys = TrustedKeys::new();
        keys.add(a);
        let mut md = Metadata::new();
        md.insert(
            METADATA_KEY,
            Value::ByteArrays(vec![ska.sign(data).to_bytes().to_vec()]),
        );
        assert_eq!(
            keys.verify_with_metadata(data, Some(&md.serialize())),
            Ok(a)
        );
        assert_eq!(
            keys.verify_with_metadata(data, None),
            Err(VerifyError::NoMetadata)
        );
        let mut other = Metadata::new();
        other.insert("ostree.gpgsigs", Value::ByteArrays(vec![vec![1]]));
        assert_eq!(
            keys.verify_with_metadata(data, Some(&other.serialize())),
            Err(VerifyError::NoSignatures)
        );
        other.insert(METADATA_KEY, Value::Bytes(vec![0; 64]));
        assert!(matches!(
            keys.verify_with_metadata(data, Some(&other.serialize())),
            Err(VerifyError::WrongType(t)) if t == "ay"
        ));
        assert!(matches!(
            keys.verify_with_metadata(data, Some(b"\x00\x01")),
            Err(VerifyError::BadMetadata(_))
        ));
    }
}
