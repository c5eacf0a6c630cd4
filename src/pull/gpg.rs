//! OpenPGP verification of commits and summaries, as ostree's GPG mode does
//! it. Pure: keyrings and signatures come in as bytes, the current time as a
//! parameter; reading keyring files is done by the caller.
//!
//! # Where the signatures are
//!
//! A commit's detached metadata (`objects/XX/<commit>.commitmeta`, an
//! `a{sv}`) and a repository's `summary.sig` (also an `a{sv}`) carry the key
//! `ostree.gpgsigs` of type `aay`: each element is a binary OpenPGP
//! signature packet over the exact bytes of the `.commit` object or of the
//! `summary` file.
//!
//! # When ostree accepts
//!
//! libostree (`ostree-gpg-verify-result.c`, 2022.7 and current upstream)
//! hands all signatures to GnuPG through GPGME and accepts the data when at
//! least one signature is *valid*: GPGME's summary is `VALID` or `GREEN`, or
//! it is empty with no error. The keys come from an ephemeral GnuPG home that
//! holds only the remote's keys, so owner trust plays no part, but GnuPG's
//! other checks do, and this module follows them:
//!
//! * The issuing key (primary key or subkey, matched by issuer fingerprint
//!   or key ID) must be in the keyring; otherwise "public key not found".
//! * A key that is now **expired** or **revoked** (GnuPG's `EXPKEYSIG` /
//!   `REVKEYSIG`) makes its signatures invalid, even signatures made before
//!   it expired or was revoked: GPGME sets `KEY_EXPIRED` / `KEY_REVOKED` and
//!   ostree does not count them. A subkey of an expired or revoked primary
//!   key is unusable too.
//! * An **expired signature** (`EXPSIG`) is invalid.
//! * A **subkey** must be bound by a valid binding signature and, since
//!   GnuPG requires cross-certification by default, that binding must embed
//!   a valid back-signature (0x19) made by the subkey.
//! * A key newer than the signature, or created in the future, is a "time
//!   conflict" in GnuPG and the signature is not valid.
//! * MD5 signatures are refused (GnuPG's weak-digest default); SHA-1 data
//!   signatures are still accepted by GnuPG 2.2, and so here.
//! * A certificate without any valid self-signed user ID is dropped by
//!   `gpg --import`, so its keys count as missing.
//! * Only binary (0x00) and text (0x01) document signatures count.
//!
//! Where this differs from GnuPG: a malformed element of `ostree.gpgsigs`
//! is reported as one invalid signature instead of failing the whole check,
//! and user-ID validity ignores third-party certifications (only
//! self-signatures are looked at, which is all an ostree keyring holds).
//!
//! # Keyrings
//!
//! `<repo>/<remote>.trustedkeys.gpg`, written by `ostree remote gpg-import`,
//! is a GnuPG "pubring.gpg" keyring: transferable public keys with GnuPG's
//! private trust packets (tag 12) in between. Keys given through
//! `gpgkeypath=` may be ASCII-armored. [`parse_keys`] reads all of these;
//! [`merge_keys`] adds keys to a keyring the way `gpg --import` merges them
//! (new user IDs, subkeys and signatures are added to a known certificate).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, Signature, SignatureType};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Tag};
use thiserror::Error;

use crate::ostree::{Metadata, Value};

/// The detached-metadata / `summary.sig` key holding the signatures.
pub const GPGSIGS_KEY: &str = "ostree.gpgsigs";

/// Largest keyring or key file accepted (64 MiB).
pub const MAX_KEYRING_SIZE: usize = crate::store::remotes::KEY_FILE_LIMIT;

/// Most signatures looked at in one `ostree.gpgsigs` list.
pub const MAX_SIGNATURES: usize = 64;

/// Reading keys failed.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{origin}: {size} bytes of keys, over the limit of {limit}")]
    TooLarge {
        origin: String,
        size: usize,
        limit: usize,
    },
    #[error("{origin}: not an OpenPGP keyring or key file: {reason}")]
    Malformed { origin: String, reason: String },
}

/// Why data was not accepted.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// No `ostree.gpgsigs` (or no detached metadata at all).
    #[error("no GPG signatures found")]
    NoSignatures,
    /// The metadata holding the signatures is not a valid `a{sv}`.
    #[error("the signature metadata is invalid: {0}")]
    BadMetadata(String),
    /// Signatures were there, none of them valid.
    #[error("{}", describe_failures(.0))]
    NoValidSignature(Vec<SignatureFailure>),
}

/// One signature that did not count, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFailure {
    /// Issuer key ID (16 upper-case hex digits), when the signature names one.
    pub key_id: Option<String>,
    pub reason: FailureReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Not an OpenPGP signature packet.
    Malformed(String),
    /// A signature, but not over a document (e.g. a key signature).
    WrongType(String),
    /// The issuing key is not in the keyring.
    KeyMissing,
    /// The cryptographic check failed: the data or signature was altered,
    /// or it was made by another key with a colliding key ID.
    Bad,
    KeyExpired {
        key: String,
        at: u32,
    },
    KeyRevoked {
        key: String,
    },
    SignatureExpired {
        at: u32,
    },
    /// Key newer than the signature, or created in the future.
    TimeConflict(String),
    WeakHash(String),
    /// The key exists but cannot make valid signatures (no valid binding,
    /// no cross-certification, no valid user ID).
    UnusableKey {
        key: String,
        reason: String,
    },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Malformed(r) => write!(f, "not a valid OpenPGP signature ({r})"),
            FailureReason::WrongType(t) => write!(f, "not a document signature (type {t})"),
            FailureReason::KeyMissing => write!(f, "public key not found in the trusted keys"),
            FailureReason::Bad => write!(f, "BAD signature (the data or signature was altered)"),
            FailureReason::KeyExpired { key, at } => {
                write!(f, "key {key} expired at {} (unix time)", at)
            }
            FailureReason::KeyRevoked { key } => write!(f, "key {key} has been revoked"),
            FailureReason::SignatureExpired { at } => {
                write!(f, "signature expired at {at} (unix time)")
            }
            FailureReason::TimeConflict(r) => write!(f, "time conflict: {r}"),
            FailureReason::WeakHash(h) => write!(f, "weak digest algorithm {h} refused"),
            FailureReason::UnusableKey { key, reason } => write!(f, "key {key} unusable: {reason}"),
        }
    }
}

fn describe_failures(failures: &[SignatureFailure]) -> String {
    let parts: Vec<String> = failures
        .iter()
        .map(|f| match &f.key_id {
            Some(id) => format!("signature by key ID {id}: {}", f.reason),
            None => format!("signature without issuer: {}", f.reason),
        })
        .collect();
    format!("no valid GPG signature: {}", parts.join("; "))
}

/// A signature that was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoodSignature {
    /// Key ID of the key that made it (a subkey's own ID for subkeys).
    pub key_id: String,
    /// Fingerprint of the certificate's primary key.
    pub primary_fingerprint: String,
    /// Creation time (unix seconds).
    pub created: u32,
}

/// Trusted public keys.
#[derive(Clone, Default)]
pub struct Keyring {
    certs: Vec<SignedPublicKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.certs
                    .iter()
                    .map(|c| hex::encode_upper(c.fingerprint())),
            )
            .finish()
    }
}

impl Keyring {
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds every key in `data` (binary keyring or ASCII armor); returns how
    /// many. `origin` names the data in errors.
    pub fn add(&mut self, data: &[u8], origin: &str) -> Result<usize, KeyError> {
        let keys = parse_keys(data, origin)?;
        let n = keys.len();
        self.certs.extend(keys);
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Verifies `data` against the `ostree.gpgsigs` of an `a{sv}`
    /// (`metadata`: a `.commitmeta` or `summary.sig`, `None` if absent).
    pub fn verify_with_metadata(
        &self,
        data: &[u8],
        metadata: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Vec<GoodSignature>, VerifyError> {
        let Some(metadata) = metadata else {
            return Err(VerifyError::NoSignatures);
        };
        let md = Metadata::parse(metadata).map_err(|e| VerifyError::BadMetadata(e.to_string()))?;
        // ostree looks the key up with the type `aay`; another type is
        // as good as no signatures.
        match md.get(GPGSIGS_KEY) {
            Some(Value::ByteArrays(sigs)) => self.verify(data, sigs, now),
            _ => Err(VerifyError::NoSignatures),
        }
    }

    /// Verifies `data` against a list of signature packets: succeeds with
    /// the valid ones when there is at least one.
    pub fn verify(
        &self,
        data: &[u8],
        signatures: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Vec<GoodSignature>, VerifyError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let mut good = Vec::new();
        let mut failures = Vec::new();
        let mut seen = 0usize;
        'elements: for element in signatures {
            // The cap bounds the work, so it is checked before parsing.
            if seen >= MAX_SIGNATURES {
                break;
            }
            let parsed: Vec<_> = match DetachedSignature::from_bytes_many(element.as_slice()) {
                Ok(it) => it.collect(),
                Err(e) => vec![Err(e)],
            };
            if parsed.is_empty() {
                seen += 1;
                failures.push(SignatureFailure {
                    key_id: None,
                    reason: FailureReason::Malformed("empty signature".into()),
                });
            }
            for sig in parsed {
                seen += 1;
                if seen > MAX_SIGNATURES {
                    break 'elements;
                }
                match sig {
                    Err(e) => failures.push(SignatureFailure {
                        key_id: None,
                        reason: FailureReason::Malformed(e.to_string()),
                    }),
                    Ok(sig) => match self.check(data, &sig.signature, now) {
                        Ok(g) => good.push(g),
                        Err(f) => failures.push(f),
                    },
                }
            }
        }
        if !good.is_empty() {
            return Ok(good);
        }
        if failures.is_empty() {
            return Err(VerifyError::NoSignatures);
        }
        Err(VerifyError::NoValidSignature(failures))
    }

    /// Checks one signature; the failure of the last candidate key counts.
    fn check(
        &self,
        data: &[u8],
        sig: &Signature,
        now: u32,
    ) -> Result<GoodSignature, SignatureFailure> {
        let issuer_ids: Vec<[u8; 8]> = sig
            .issuer_key_id()
            .iter()
            .filter_map(|k| <[u8; 8]>::try_from(k.as_ref()).ok())
            .collect();
        let issuer_fprs: Vec<Vec<u8>> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| f.as_bytes().to_vec())
            .collect();
        // GnuPG names the signature by its issuer; a v4 key ID is the low
        // 8 bytes of the fingerprint.
        let key_id = issuer_ids.first().map(hex::encode_upper).or_else(|| {
            issuer_fprs
                .first()
                .filter(|f| f.len() >= 8)
                .map(|f| hex::encode_upper(&f[f.len() - 8..]))
        });
        let fail = |reason| SignatureFailure {
            key_id: key_id.clone(),
            reason,
        };
        match sig.typ() {
            Some(SignatureType::Binary) | Some(SignatureType::Text) => {}
            other => return Err(fail(FailureReason::WrongType(format!("{other:?}")))),
        }
        match sig.hash_alg() {
            Some(HashAlgorithm::Md5) => return Err(fail(FailureReason::WeakHash("MD5".into()))),
            Some(_) => {}
            None => {
                return Err(fail(FailureReason::Malformed(
                    "unknown signature version".into(),
                )));
            }
        }
        let Some(created) = sig.created().map(|t| t.as_secs()) else {
            return Err(fail(FailureReason::Malformed("no creation time".into())));
        };
        let matches = |k: &dyn KeyDetails| {
            let fp = k.fingerprint();
            let id = k.legacy_key_id();
            let id: &[u8] = id.as_ref();
            (issuer_ids.is_empty() && issuer_fprs.is_empty())
                || issuer_ids.iter().any(|i| i.as_slice() == id)
                || issuer_fprs.iter().any(|f| f.as_slice() == fp.as_bytes())
        };
        let mut last: Option<FailureReason> = None;
        for cert in &self.certs {
            let primary = &cert.primary_key;
            let mut candidates: Vec<Component<'_>> = Vec::new();
            if matches(primary) {
                candidates.push(Component::Primary(primary));
            }
            for sub in &cert.public_subkeys {
                if matches(&sub.key) {
                    candidates.push(Component::Sub(sub));
                }
            }
            for c in candidates {
                let verified = match c {
                    Component::Primary(k) => sig.verify(k, data),
                    Component::Sub(s) => sig.verify(&s.key, data),
                };
                if verified.is_err() {
                    last = Some(FailureReason::Bad);
                    continue;
                }
                // Cryptographically good: now GnuPG's validity checks.
                match validity(cert, c, sig, created, now) {
                    Ok(()) => {
                        return Ok(GoodSignature {
                            key_id: hex::encode_upper(c.key_id()),
                            primary_fingerprint: hex::encode_upper(cert.fingerprint()),
                            created,
                        });
                    }
                    Err(reason) => last = Some(reason),
                }
            }
        }
        Err(fail(last.unwrap_or(FailureReason::KeyMissing)))
    }
}

/// GnuPG's checks on a cryptographically good signature `sig`, made at
/// `created` by component `c` of `cert`, judged at `now`.
fn validity(
    cert: &SignedPublicKey,
    c: Component<'_>,
    sig: &Signature,
    created: u32,
    now: u32,
) -> Result<(), FailureReason> {
    let key_name = hex::encode_upper(c.key_id());
    if c.created() > created {
        return Err(FailureReason::TimeConflict(format!(
            "key {key_name} is newer than the signature"
        )));
    }
    if c.created() > now {
        return Err(FailureReason::TimeConflict(format!(
            "key {key_name} was created in the future"
        )));
    }
    key_validity(cert, c, now)?;
    if let Some(d) = sig.signature_expiration_time().map(|d| d.as_secs())
        && d > 0
        && u64::from(created) + u64::from(d) <= u64::from(now)
    {
        return Err(FailureReason::SignatureExpired {
            at: created.saturating_add(d),
        });
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Component<'a> {
    Primary(&'a PublicKey),
    Sub(&'a SignedPublicSubKey),
}

impl Component<'_> {
    fn key_id(&self) -> Vec<u8> {
        match self {
            Component::Primary(k) => k.legacy_key_id().as_ref().to_vec(),
            Component::Sub(s) => s.key.legacy_key_id().as_ref().to_vec(),
        }
    }

    fn created(&self) -> u32 {
        match self {
            Component::Primary(k) => k.created_at().as_secs(),
            Component::Sub(s) => s.key.created_at().as_secs(),
        }
    }
}

/// Whether the primary key of `cert` is usable now: a valid self-signed
/// user ID, not revoked, not expired. Returns the expiry rule's reason.
fn primary_validity(cert: &SignedPublicKey, now: u32) -> Result<(), FailureReason> {
    let primary = &cert.primary_key;
    let name = hex::encode_upper(primary.legacy_key_id());
    let usable = |s: &Signature| s.created().is_some_and(|t| t.as_secs() <= now);
    // Newest valid self-signature of each user ID; a user ID whose newest
    // self-signature is a revocation is not valid.
    let mut newest_selfsig: Option<&Signature> = None;
    let mut valid_uid = false;
    for user in &cert.details.users {
        let mut best: Option<&Signature> = None;
        for s in &user.signatures {
            if !usable(s)
                || s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_err()
            {
                continue;
            }
            if best.is_none_or(|b| created(s) >= created(b)) {
                best = Some(s);
            }
        }
        if let Some(b) = best
            && b.typ() != Some(SignatureType::CertRevocation)
        {
            valid_uid = true;
            if newest_selfsig.is_none_or(|n| created(b) >= created(n)) {
                newest_selfsig = Some(b);
            }
        }
    }
    if !valid_uid {
        return Err(FailureReason::UnusableKey {
            key: name,
            reason: "no valid self-signed user ID (gpg would not import it)".into(),
        });
    }
    for s in &cert.details.direct_signatures {
        if s.typ() == Some(SignatureType::Key)
            && usable(s)
            && s.verify_key(primary).is_ok()
            && newest_selfsig.is_none_or(|n| created(s) >= created(n))
        {
            newest_selfsig = Some(s);
        }
    }
    if cert
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        return Err(FailureReason::KeyRevoked { key: name });
    }
    if let Some(s) = newest_selfsig {
        expiry(primary.created_at().as_secs(), s, now, &name)?;
    }
    Ok(())
}

fn created(s: &Signature) -> u32 {
    s.created().map(|t| t.as_secs()).unwrap_or(0)
}

/// `Err(KeyExpired)` when the key expiration time of `selfsig` has passed.
fn expiry(
    key_created: u32,
    selfsig: &Signature,
    now: u32,
    name: &str,
) -> Result<(), FailureReason> {
    if let Some(d) = selfsig.key_expiration_time().map(|d| d.as_secs())
        && d > 0
    {
        let at = u64::from(key_created) + u64::from(d);
        if at <= u64::from(now) {
            return Err(FailureReason::KeyExpired {
                key: name.to_string(),
                at: u32::try_from(at).unwrap_or(u32::MAX),
            });
        }
    }
    Ok(())
}

fn key_validity(cert: &SignedPublicKey, c: Component<'_>, now: u32) -> Result<(), FailureReason> {
    primary_validity(cert, now)?;
    let Component::Sub(sub) = c else {
        return Ok(());
    };
    let primary = &cert.primary_key;
    let name = hex::encode_upper(sub.key.legacy_key_id());
    let mut binding: Option<&Signature> = None;
    for s in &sub.signatures {
        if s.typ() == Some(SignatureType::SubkeyBinding)
            && s.created().is_some_and(|t| t.as_secs() <= now)
            && s.verify_subkey_binding(primary, &sub.key).is_ok()
            && binding.is_none_or(|b| created(s) >= created(b))
        {
            binding = Some(s);
        }
    }
    let Some(binding) = binding else {
        return Err(FailureReason::UnusableKey {
            key: name,
            reason: "no valid subkey binding signature".into(),
        });
    };
    if sub.signatures.iter().any(|s| {
        s.typ() == Some(SignatureType::SubkeyRevocation)
            && s.verify_subkey_binding(primary, &sub.key).is_ok()
    }) {
        return Err(FailureReason::KeyRevoked { key: name });
    }
    expiry(sub.key.created_at().as_secs(), binding, now, &name)?;
    let backsig_ok = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
    if !backsig_ok {
        return Err(FailureReason::UnusableKey {
            key: name,
            reason: "signing subkey is not cross-certified (no valid back-signature)".into(),
        });
    }
    Ok(())
}

/// Reads every public key in `data`: a binary keyring (GnuPG trust packets
/// are skipped) or one or more ASCII-armored key blocks.
pub fn parse_keys(data: &[u8], origin: &str) -> Result<Vec<SignedPublicKey>, KeyError> {
    if data.len() > MAX_KEYRING_SIZE {
        return Err(KeyError::TooLarge {
            origin: origin.to_string(),
            size: data.len(),
            limit: MAX_KEYRING_SIZE,
        });
    }
    let malformed = |reason: String| KeyError::Malformed {
        origin: origin.to_string(),
        reason,
    };
    let mut keys = Vec::new();
    if data.is_empty() {
        // An empty keyring (ostree creates one before importing) holds no
        // keys; that is not an error for a keyring file.
        return Ok(keys);
    }
    if data[0] & 0x80 != 0 {
        let cleaned = strip_trust_packets(data).map_err(malformed)?;
        let it = SignedPublicKey::from_bytes_many(cleaned.as_slice())
            .map_err(|e| malformed(e.to_string()))?;
        for k in it {
            keys.push(k.map_err(|e| malformed(e.to_string()))?);
        }
    } else {
        let text = std::str::from_utf8(data)
            .map_err(|_| malformed("neither binary OpenPGP nor ASCII armor".into()))?;
        const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
        let starts: Vec<usize> = text.match_indices(BEGIN).map(|(i, _)| i).collect();
        let blocks: Vec<&str> = starts
            .iter()
            .enumerate()
            .map(|(n, &s)| &text[s..starts.get(n + 1).copied().unwrap_or(text.len())])
            .collect();
        if blocks.is_empty() {
            return Err(malformed("no \"BEGIN PGP PUBLIC KEY BLOCK\" armor".into()));
        }
        for block in blocks {
            let (it, _) = SignedPublicKey::from_armor_many(block.as_bytes())
                .map_err(|e| malformed(e.to_string()))?;
            for k in it {
                keys.push(k.map_err(|e| malformed(e.to_string()))?);
            }
        }
    }
    Ok(keys)
}

/// Copies the packets of a binary OpenPGP stream, leaving out trust packets
/// (tag 12, GnuPG's keyring-private data).
fn strip_trust_packets(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0usize;
    let byte = |i: usize| data.get(i).copied().ok_or("truncated packet header");
    while pos < data.len() {
        let start = pos;
        let b = byte(pos)?;
        if b & 0x80 == 0 {
            return Err(format!(
                "invalid packet header byte 0x{b:02x} at offset {pos}"
            ));
        }
        let (tag, body_len, header_len) = if b & 0x40 != 0 {
            let tag = b & 0x3f;
            let o1 = byte(pos + 1)? as usize;
            match o1 {
                0..=191 => (tag, o1, 2),
                192..=223 => (tag, ((o1 - 192) << 8) + byte(pos + 2)? as usize + 192, 3),
                255 => {
                    let n = u32::from_be_bytes([
                        byte(pos + 2)?,
                        byte(pos + 3)?,
                        byte(pos + 4)?,
                        byte(pos + 5)?,
                    ]);
                    (tag, n as usize, 6)
                }
                _ => {
                    return Err(format!(
                        "partial body length in a key packet at offset {pos}"
                    ));
                }
            }
        } else {
            let tag = (b >> 2) & 0x0f;
            match b & 3 {
                0 => (tag, byte(pos + 1)? as usize, 2),
                1 => (
                    tag,
                    u16::from_be_bytes([byte(pos + 1)?, byte(pos + 2)?]) as usize,
                    3,
                ),
                2 => (
                    tag,
                    u32::from_be_bytes([
                        byte(pos + 1)?,
                        byte(pos + 2)?,
                        byte(pos + 3)?,
                        byte(pos + 4)?,
                    ]) as usize,
                    5,
                ),
                _ => (tag, data.len() - pos - 1, 1),
            }
        };
        let end = pos
            .checked_add(header_len)
            .and_then(|p| p.checked_add(body_len))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("packet at offset {pos} runs past the end of the data"))?;
        if tag != 12 {
            out.extend_from_slice(&data[start..end]);
        }
        pos = end;
    }
    Ok(out)
}

/// What [`merge_keys`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Certificates not in the keyring before.
    pub new: usize,
    /// Known certificates that gained user IDs, subkeys or signatures.
    pub updated: usize,
    pub unchanged: usize,
}

/// Adds `new` keys to the keyring `existing` (binary, possibly with trust
/// packets) as `gpg --import` does, and returns the new binary keyring.
pub fn merge_keys(
    existing: &[u8],
    new: Vec<SignedPublicKey>,
    origin: &str,
) -> Result<(Vec<u8>, MergeOutcome), KeyError> {
    let mut certs = parse_keys(existing, origin)?;
    let mut outcome = MergeOutcome::default();
    for key in new {
        match certs
            .iter_mut()
            .find(|c| c.fingerprint() == key.fingerprint())
        {
            Some(cert) => {
                if merge_cert(cert, key) {
                    outcome.updated += 1;
                } else {
                    outcome.unchanged += 1;
                }
            }
            None => {
                certs.push(key);
                outcome.new += 1;
            }
        }
    }
    let mut out = Vec::new();
    for c in &certs {
        c.to_writer(&mut out).map_err(|e| KeyError::Malformed {
            origin: origin.to_string(),
            reason: format!("cannot serialize key: {e}"),
        })?;
    }
    Ok((out, outcome))
}

/// Merges `from` into `into` (same primary key); true if anything was added.
fn merge_cert(into: &mut SignedPublicKey, from: SignedPublicKey) -> bool {
    fn add_sigs(into: &mut Vec<Signature>, from: Vec<Signature>) -> bool {
        let mut changed = false;
        for s in from {
            if !into.contains(&s) {
                into.push(s);
                changed = true;
            }
        }
        changed
    }
    let mut changed = false;
    let d = &mut into.details;
    changed |= add_sigs(
        &mut d.revocation_signatures,
        from.details.revocation_signatures,
    );
    changed |= add_sigs(&mut d.direct_signatures, from.details.direct_signatures);
    for u in from.details.users {
        match d.users.iter_mut().find(|x| x.id == u.id) {
            Some(x) => changed |= add_sigs(&mut x.signatures, u.signatures),
            None => {
                d.users.push(u);
                changed = true;
            }
        }
    }
    for a in from.details.user_attributes {
        match d.user_attributes.iter_mut().find(|x| x.attr == a.attr) {
            Some(x) => changed |= add_sigs(&mut x.signatures, a.signatures),
            None => {
                d.user_attributes.push(a);
                changed = true;
            }
        }
    }
    for s in from.public_subkeys {
        match into
            .public_subkeys
            .iter_mut()
            .find(|x| x.key.fingerprint() == s.key.fingerprint())
        {
            Some(x) => changed |= add_sigs(&mut x.signatures, s.signatures),
            None => {
                into.public_subkeys.push(s);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_packets_are_dropped_and_framing_is_checked() {
        // old-format trust packet (tag 12, 1-byte length), then a new-format
        // user ID packet (tag 13) of 2 bytes.
        let data = [0xb0, 0x02, 0xaa, 0xbb, 0xcd, 0x02, b'h', b'i'];
        assert_eq!(
            strip_trust_packets(&data).unwrap(),
            vec![0xcd, 0x02, b'h', b'i']
        );
        // A length running past the end, a missing length byte, a non-packet.
        assert!(strip_trust_packets(&[0xcd, 0x05, b'h']).is_err());
        assert!(strip_trust_packets(&[0xcd]).is_err());
        assert!(strip_trust_packets(&[0x01, 0x02]).is_err());
        // 4-byte lengths cannot overflow the position.
        assert!(strip_trust_packets(&[0xcd, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn key_input_errors() {
        assert!(parse_keys(b"", "empty").unwrap().is_empty());
        assert!(matches!(
            parse_keys(b"hello", "text"),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            parse_keys(&[0xff], "truncated"),
            Err(KeyError::Malformed { .. })
        ));
        // Well-framed packets that are no keys: nothing found (the CLI
        // refuses an import that finds nothing).
        assert!(parse_keys(&[0xff, 0x00], "unknown").unwrap().is_empty());
    }

    #[test]
    fn garbage_signatures_are_reported_not_panicked_on() {
        let keyring = Keyring::new();
        let now = SystemTime::now();
        let r = keyring.verify(b"data", &[vec![0x88, 0x01, 0x04], vec![]], now);
        match r {
            Err(VerifyError::NoValidSignature(f)) => assert_eq!(f.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            keyring.verify_with_metadata(b"data", Some(b"\x00\x01"), now),
            Err(VerifyError::BadMetadata(_))
        ));
    }
}
