//! Signing commits: `arbor sign`, `arbor gpg-sign`, `arbor commit --sign`.
//!
//! A signature covers the exact bytes of the `.commit` object and is
//! appended to the commit's detached metadata (`CHECKSUM.commitmeta`, an
//! `a{sv}`) under its engine's key, `ostree.sign.ed25519` or
//! `ostree.gpgsigs` (`aay`), keeping what was there: the file `ostree sign`
//! and `ostree gpg-sign` write, which `ostree pull` and arbor's pull verify.

use thiserror::Error;

use crate::ostree::{Checksum, Metadata, ObjectName, ObjectType};
use crate::store::{Repo, StoreError, Transaction};

use super::sign::{SignError, SigningKey};

/// What [`sign_commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignOutcome {
    pub commit: Checksum,
    /// Signatures added.
    pub added: usize,
    /// The new detached metadata.
    pub commitmeta: Metadata,
}

#[derive(Debug, Error)]
pub enum CommitSignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing commit {commit}: {source}")]
    Sign {
        commit: Checksum,
        #[source]
        source: SignError,
    },
}

/// The commit's detached metadata, empty when it has none.
pub fn load_commitmeta(repo: &Repo, commit: &Checksum) -> Result<Metadata, StoreError> {
    let name = ObjectName::new(*commit, ObjectType::CommitMeta);
    match repo.load_metadata(&name) {
        Ok(data) => Metadata::parse(&data).map_err(|source| StoreError::CorruptObject {
            object: name,
            source,
        }),
        Err(StoreError::MissingObject(_)) => Ok(Metadata::new()),
        Err(e) => Err(e),
    }
}

/// Signs `commit` with every key, in order, and writes its detached
/// metadata once all signatures are made (a key that fails writes nothing).
pub fn sign_commit(
    repo: &Repo,
    commit: &Checksum,
    keys: &[SigningKey],
) -> Result<SignOutcome, CommitSignError> {
    let bytes = repo.load_verified_metadata(&ObjectName::new(*commit, ObjectType::Commit))?;
    let mut md = load_commitmeta(repo, commit)?;
    for key in keys {
        key.append_signature(&bytes, &mut md, &format!("commit {commit}"))
            .map_err(|source| CommitSignError::Sign {
                commit: *commit,
                source,
            })?;
    }
    let txn = Transaction::begin(repo)?;
    txn.write_commitmeta(*commit, &md.serialize())?;
    txn.commit()?;
    Ok(SignOutcome {
        commit: *commit,
        added: keys.len(),
        commitmeta: md,
    })
}
