//! One interface over the signature checks a remote can ask for, GPG
//! ([`super::gpg`]) and ed25519 ([`super::ed25519`]), so that the engine
//! (commits) and [`super::fetch_summary`] (summaries) run whatever is
//! configured through the same code and report failures the same way.

use std::sync::Arc;

use thiserror::Error;

use super::{GpgVerify, SignVerify, ed25519, gpg};

/// A set of trusted keys of one signature kind: checks data against the
/// signatures of that kind in an `a{sv}`.
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// The signature kind, for messages ("GPG", "ed25519").
    fn name(&self) -> &'static str;
    /// Checks `data` (a `.commit` object or `summary`) against the
    /// signatures in `metadata` (its `.commitmeta` or `summary.sig`; `None`
    /// when there is none).
    fn verify(&self, data: &[u8], metadata: Option<&[u8]>) -> Result<(), SignatureError>;
}

/// A remote's checks of one signature kind, with its keys, for one pull.
#[derive(Clone, Debug)]
pub struct RemoteVerify {
    /// The remote's name (for messages).
    pub remote: String,
    pub keys: Arc<dyn Verifier>,
    /// Commits need a valid signature (`gpg-verify`, `sign-verify`).
    pub commits: bool,
    /// The summary is required and `summary.sig` must sign it.
    pub summary: bool,
    /// The remote setting behind `summary`, for messages.
    pub summary_setting: &'static str,
}

/// The configured checks, GPG first: ostree runs the GPG check before the
/// signapi one, and both must pass.
pub(crate) fn verifiers<'a>(
    gpg: Option<&'a GpgVerify>,
    sign: Option<&'a SignVerify>,
) -> impl Iterator<Item = &'a RemoteVerify> {
    let gpg = gpg.map(|g| &g.0);
    gpg.into_iter().chain(sign.map(|s| &s.0))
}

/// Why a signature check refused data.
#[derive(Debug, Error)]
pub enum SignatureError {
    #[error(transparent)]
    Gpg(#[from] gpg::VerifyError),
    #[error(transparent)]
    Ed25519(#[from] ed25519::VerifyError),
}

impl Verifier for gpg::Keyring {
    fn name(&self) -> &'static str {
        "GPG"
    }

    fn verify(&self, data: &[u8], metadata: Option<&[u8]>) -> Result<(), SignatureError> {
        // Key and signature expiry are judged now, as GnuPG does.
        self.verify_with_metadata(data, metadata, std::time::SystemTime::now())?;
        Ok(())
    }
}

impl Verifier for ed25519::TrustedKeys {
    fn name(&self) -> &'static str {
        "ed25519"
    }

    fn verify(&self, data: &[u8], metadata: Option<&[u8]>) -> Result<(), SignatureError> {
        self.verify_with_metadata(data, metadata)?;
        Ok(())
    }
}
