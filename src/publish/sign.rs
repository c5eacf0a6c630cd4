//! Signing keys of the publishing side: what signs commits
//! (`.commitmeta`), summaries (`summary.sig`) and delta superblocks.
//!
//! Three kinds, each producing signatures that arbor's and ostree's
//! verifiers accept ([`crate::pull::ed25519`], [`crate::pull::gpg`]):
//!
//! * **ed25519** (`ostree.sign.ed25519`): the secret key as `ostree sign`
//!   takes it, base64 of libsodium's 64-byte form (seed ‖ public key);
//!   signatures are pure Ed25519 over the exact bytes signed.
//! * **GnuPG** (`ostree.gpgsigs`): a key held in a GnuPG home directory.
//!   GnuPG keeps secret keys in its agent's own format, so signing goes
//!   through the `gpg` program (as libostree goes through gpgme): a binary
//!   detached signature of the data on standard input.
//! * **OpenPGP key file** (`ostree.gpgsigs`): an exported secret key
//!   (`gpg --export-secret-keys`, armored or binary, without passphrase),
//!   signed with the `pgp` crate; no GnuPG needed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ed25519_dalek::Signer as _;
use thiserror::Error;

use crate::ostree::{Metadata, Value};
use crate::pull::ed25519::{METADATA_KEY as ED25519_KEY, glib_base64_decode};
use crate::pull::gpg::GPGSIGS_KEY;

/// Bytes of an ed25519 secret key in libsodium's form (seed ‖ public key).
pub const ED25519_SECRET_KEY_SIZE: usize = 64;

/// Largest key file read (secret keys are a few kilobytes).
pub const MAX_KEY_FILE_SIZE: u64 = 16 << 20;

/// Largest signature accepted from `gpg` (an RSA-16384 signature is ~2 KiB).
const MAX_GPG_SIGNATURE: u64 = 64 << 10;

/// Why a key could not be used.
#[derive(Debug, Error)]
pub enum SignError {
    #[error(
        "not an ed25519 secret key: base64 of {found} bytes, expected {ED25519_SECRET_KEY_SIZE} \
         (libsodium's seed and public key, as `ostree sign` takes it)"
    )]
    Ed25519Length { found: usize },
    #[error("ed25519 secret key: its public half does not belong to its seed")]
    Ed25519Mismatch,
    #[error("{path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_KEY_FILE_SIZE} bytes, not a key file")]
    KeyFileTooLarge { path: PathBuf },
    #[error("{path}: no ed25519 secret key in it (one base64 key per line)")]
    NoKeys { path: PathBuf },
    #[error("{path}, line {line}: {source}")]
    KeyFileLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: Box<SignError>,
    },
    #[error("unknown signature type {0:?} (arbor signs with ed25519)")]
    UnknownSignType(String),
    #[error("running gpg: {0}")]
    GpgSpawn(#[source] std::io::Error),
    #[error("gpg could not sign with key {key_id}: {stderr}")]
    GpgFailed { key_id: String, stderr: String },
    #[error("gpg's signature with key {key_id} does not parse: {reason}")]
    GpgOutput { key_id: String, reason: String },
    #[error("{path}: not an OpenPGP secret key: {reason}")]
    PgpKey { path: PathBuf, reason: String },
    #[error("{path}: no usable signing key (primary or subkey with the sign flag)")]
    PgpNoSigningKey { path: PathBuf },
    #[error("signing with the OpenPGP key of {path}: {reason}")]
    PgpSign { path: PathBuf, reason: String },
    #[error("{what} is already signed by {key}")]
    AlreadySigned { what: String, key: String },
}

/// A key that signs.
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    /// A key of a GnuPG home directory, used through `gpg`.
    Gpg {
        key_id: String,
        homedir: Option<PathBuf>,
    },
    /// An exported OpenPGP secret key, used through the `pgp` crate.
    PgpKeyFile {
        path: PathBuf,
        key: Box<pgp::composed::SignedSecretKey>,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "SigningKey({})", self.describe())
    }
}

impl SigningKey {
    /// An ed25519 secret key from its base64 text, checked (the public
    /// half must match the seed, or signatures would not verify).
    pub fn ed25519_from_base64(text: &str) -> Result<SigningKey, SignError> {
        let raw = glib_base64_decode(text.trim().as_bytes());
        let bytes: [u8; ED25519_SECRET_KEY_SIZE] = raw
            .as_slice()
            .try_into()
            .map_err(|_| SignError::Ed25519Length { found: raw.len() })?;
        let key = ed25519_dalek::SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| SignError::Ed25519Mismatch)?;
        Ok(SigningKey::Ed25519(key))
    }

    /// A key named by `--sign KEY --sign-type TYPE`.
    pub fn from_sign_arg(key: &str, sign_type: &str) -> Result<SigningKey, SignError> {
        match sign_type {
            "ed25519" => SigningKey::ed25519_from_base64(key),
            other => Err(SignError::UnknownSignType(other.to_string())),
        }
    }

    /// Every ed25519 secret key of a keys file (`ostree sign --keys-file`):
    /// one base64 key per line; blank lines and `#` comments skipped.
    pub fn ed25519_keys_file(path: &Path) -> Result<Vec<SigningKey>, SignError> {
        let data = read_key_file(path)?;
        let text = String::from_utf8_lossy(&data);
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(SigningKey::ed25519_from_base64(line).map_err(|e| {
                SignError::KeyFileLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source: Box::new(e),
                }
            })?);
        }
        if keys.is_empty() {
            return Err(SignError::NoKeys {
                path: path.to_path_buf(),
            });
        }
        Ok(keys)
    }

    /// A GnuPG key (`--gpg-sign KEYID [--gpg-homedir DIR]`).
    pub fn gpg(key_id: &str, homedir: Option<&Path>) -> SigningKey {
        SigningKey::Gpg {
            key_id: key_id.to_string(),
            homedir: homedir.map(Path::to_path_buf),
        }
    }

    /// An exported OpenPGP secret key (`--gpg-key-file F`), armored or
    /// binary, not protected by a passphrase.
    pub fn pgp_key_file(path: &Path) -> Result<SigningKey, SignError> {
        use pgp::composed::{Deserializable, SignedSecretKey};
        let data = read_key_file(path)?;
        let bad = |reason: String| SignError::PgpKey {
            path: path.to_path_buf(),
            reason,
        };
        let key = if data.starts_with(b"-----BEGIN") {
            SignedSecretKey::from_armor_single(std::io::Cursor::new(&data))
                .map(|(k, _)| k)
                .map_err(|e| bad(e.to_string()))?
        } else {
            SignedSecretKey::from_bytes(std::io::Cursor::new(&data))
                .map_err(|e| bad(e.to_string()))?
        };
        key.verify_bindings().map_err(|e| bad(e.to_string()))?;
        Ok(SigningKey::PgpKeyFile {
            path: path.to_path_buf(),
            key: Box::new(key),
        })
    }

    /// The metadata key its signatures go under (`ostree.sign.ed25519`,
    /// `ostree.gpgsigs`).
    pub fn metadata_key(&self) -> &'static str {
        match self {
            SigningKey::Ed25519(_) => ED25519_KEY,
            SigningKey::Gpg { .. } | SigningKey::PgpKeyFile { .. } => GPGSIGS_KEY,
        }
    }

    /// The key for messages: the ed25519 public key in base64, the GnuPG
    /// key ID, or the key file.
    pub fn describe(&self) -> String {
        match self {
            SigningKey::Ed25519(k) => format!(
                "ed25519 key {}",
                base64_encode(k.verifying_key().as_bytes())
            ),
            SigningKey::Gpg { key_id, .. } => format!("GPG key {key_id}"),
            SigningKey::PgpKeyFile { path, key } => {
                use pgp::types::KeyDetails;
                format!("OpenPGP key {} ({})", key.fingerprint(), path.display())
            }
        }
    }

    /// A detached signature over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            SigningKey::Ed25519(k) => Ok(k.sign(data).to_bytes().to_vec()),
            SigningKey::Gpg { key_id, homedir } => gpg_sign(key_id, homedir.as_deref(), data),
            SigningKey::PgpKeyFile { path, key } => pgp_sign(path, key, data),
        }
    }

    /// Signs `data` and appends the signature to the `aay` under this key's
    /// metadata key in `md` (created at the end when absent), as
    /// libostree's `ostree_sign_detached_metadata_append` does. `what`
    /// names the data for the error when this ed25519 key already signed it
    /// (GnuPG signatures carry timestamps, so every one is new).
    pub fn append_signature(
        &self,
        data: &[u8],
        md: &mut Metadata,
        what: &str,
    ) -> Result<(), SignError> {
        let sig = self.sign(data)?;
        let key = self.metadata_key();
        let mut sigs = match md.get(key) {
            Some(Value::ByteArrays(v)) => v.clone(),
            _ => Vec::new(),
        };
        if sigs.contains(&sig) {
            return Err(SignError::AlreadySigned {
                what: what.to_string(),
                key: self.describe(),
            });
        }
        sigs.push(sig);
        md.insert(key, Value::ByteArrays(sigs));
        Ok(())
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, SignError> {
    let f = std::fs::File::open(path).map_err(|source| SignError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    let mut data = Vec::new();
    f.take(MAX_KEY_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|source| SignError::ReadKey {
            path: path.to_path_buf(),
            source,
        })?;
    if data.len() as u64 > MAX_KEY_FILE_SIZE {
        return Err(SignError::KeyFileTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(data)
}

/// Standard base64 with padding, as ostree prints public keys.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `gpg --detach-sign` of `data` with `key_id`: a binary signature.
///
/// Options a `gpg.conf` may set that would change what comes out are
/// turned off on the command line, which wins over the file: `armor`
/// (ASCII output instead of the packet ostree stores) and `textmode` (a
/// class 0x01 signature over line-ending-normalised text, not over the
/// exact bytes). The hash algorithm (`digest-algo`) is left to the user,
/// as gpgme leaves it for ostree.
fn gpg_sign(key_id: &str, homedir: Option<&Path>, data: &[u8]) -> Result<Vec<u8>, SignError> {
    let mut cmd = Command::new("gpg");
    cmd.args([
        "--batch",
        "--no-tty",
        "--yes",
        "--no-armor",
        "--no-textmode",
    ]);
    if let Some(h) = homedir {
        cmd.arg("--homedir").arg(h);
    }
    cmd.args(["--local-user", key_id, "--detach-sign", "--output", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(SignError::GpgSpawn)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Feed the data from another thread so a full stdout pipe cannot
    // deadlock us.
    let output = std::thread::scope(|s| {
        let feeder = s.spawn(move || {
            let _ = stdin.write_all(data);
        });
        let mut out = Vec::new();
        let mut err = Vec::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let errs = s.spawn(move || {
            let mut e = Vec::new();
            let _ = stderr.take(64 << 10).read_to_end(&mut e);
            e
        });
        let r = stdout.take(MAX_GPG_SIGNATURE + 1).read_to_end(&mut out);
        let _ = feeder.join();
        err.extend(errs.join().unwrap_or_default());
        let status = child.wait();
        (r, out, err, status)
    });
    let (r, out, err, status) = output;
    let stderr = String::from_utf8_lossy(&err).trim().to_string();
    let status = status.map_err(SignError::GpgSpawn)?;
    r.map_err(SignError::GpgSpawn)?;
    if !status.success() || out.is_empty() {
        return Err(SignError::GpgFailed {
            key_id: key_id.to_string(),
            stderr: if stderr.is_empty() {
                format!("gpg exited with {status}")
            } else {
                stderr
            },
        });
    }
    if out.len() as u64 > MAX_GPG_SIGNATURE {
        return Err(SignError::GpgOutput {
            key_id: key_id.to_string(),
            reason: "larger than any signature".into(),
        });
    }
    // What gpg wrote must be one signature packet, or verifiers would
    // count it as a bad signature later.
    {
        use pgp::composed::{Deserializable, DetachedSignature};
        DetachedSignature::from_bytes(std::io::Cursor::new(&out)).map_err(|e| {
            SignError::GpgOutput {
                key_id: key_id.to_string(),
                reason: e.to_string(),
            }
        })?;
    }
    Ok(out)
}

/// A binary detached signature with the key file's signing key: its
/// signing-capable subkey when it has one (as gpg picks), else the primary
/// key.
fn pgp_sign(
    path: &Path,
    key: &pgp::composed::SignedSecretKey,
    data: &[u8],
) -> Result<Vec<u8>, SignError> {
    use pgp::composed::DetachedSignature;
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::ser::Serialize;
    use pgp::types::Password;

    let err = |e: pgp::errors::Error| SignError::PgpSign {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // A subkey whose binding gives it the sign flag, as gpg picks.
    let sub = key
        .secret_subkeys
        .iter()
        .find(|s| s.signatures.iter().any(|sig| sig.key_flags().sign()));
    let mut rng = rand::thread_rng();
    let sig = match sub {
        Some(s) => DetachedSignature::sign_binary_data(
            &mut rng,
            &s.key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            data,
        ),
        None => {
            // The primary key signs unless its self-signatures give it
            // flags without the sign flag.
            let flags: Vec<_> = key
                .details
                .users
                .iter()
                .flat_map(|u| u.signatures.iter())
                .map(|s| s.key_flags())
                .collect();
            let primary_signs =
                flags.iter().any(|f| f.sign()) || flags.iter().all(|f| !f.certify());
            if !primary_signs {
                return Err(SignError::PgpNoSigningKey {
                    path: path.to_path_buf(),
                });
            }
            DetachedSignature::sign_binary_data(
                &mut rng,
                &key.primary_key,
                &Password::empty(),
                HashAlgorithm::Sha256,
                data,
            )
        }
    }
    .map_err(err)?;
    sig.to_bytes().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::ed25519::{PublicKey, TrustedKeys};

    fn key_b64(seed: u8) -> (String, String) {
        let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        (
            base64_encode(&k.to_keypair_bytes()),
            base64_encode(k.verifying_key().as_bytes()),
        )
    }

    #[test]
    fn ed25519_signatures_verify() {
        let (sk, pk) = key_b64(7);
        let key = SigningKey::ed25519_from_base64(&sk).unwrap();
        let mut md = Metadata::new();
        key.append_signature(b"data", &mut md, "x").unwrap();
        let mut trusted = TrustedKeys::new();
        trusted.add(PublicKey::from_base64(&pk).unwrap());
        trusted
            .verify_with_metadata(b"data", Some(&md.serialize()))
            .unwrap();
        assert!(
            trusted
                .verify_with_metadata(b"other", Some(&md.serialize()))
                .is_err()
        );
        // Ed25519 is deterministic: a second signature by the same key is
        // refused as a repeat.
        assert!(matches!(
            key.append_signature(b"data", &mut md, "x"),
            Err(SignError::AlreadySigned { .. })
        ));
        let (sk2, _) = key_b64(8);
        SigningKey::ed25519_from_base64(&sk2)
            .unwrap()
            .append_signature(b"data", &mut md, "x")
            .unwrap();
        assert!(matches!(md.get(ED25519_KEY), Some(Value::ByteArrays(v)) if v.len() == 2));
    }

    #[test]
    fn bad_ed25519_keys() {
        assert!(matches!(
            SigningKey::ed25519_from_base64("aGVsbG8="),
            Err(SignError::Ed25519Length { found: 5 })
        ));
        let mut raw = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).to_keypair_bytes();
        raw[40] ^= 1;
        assert!(matches!(
            SigningKey::ed25519_from_base64(&base64_encode(&raw)),
            Err(SignError::Ed25519Mismatch)
        ));
        assert!(SigningKey::from_sign_arg("x", "dummy").is_err());
    }
}
