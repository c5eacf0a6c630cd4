//! Signing commits: `arbor sign`, `arbor gpg-sign`, `arbor commit --sign`.
//!
//! A signature covers the exact bytes of the `.commit` object and is
//! appended to the commit's detached metadata (`CHECKSUM.commitmeta`, an
//! `a{sv}`) under its engine's key, `ostree.sign.ed25519` or
//! `ostree.gpgsigs` (`aay`), keeping what was there: the file `ostree sign`
//! and `ostree gpg-sign` write, which `ostree pull` and arbor's pull verify.

use thiserror::Error;

use crate::ostree::{Checksum, Metadata, ObjectName, ObjectType};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::progress::Progress;
use crate::store::commit::{CommitOptions, CommitOutcome, commit_then};
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
    append_signatures(commit, &bytes, &mut md, keys)?;
    let txn = Transaction::begin(repo)?;
    txn.write_commitmeta(*commit, &md.serialize())?;
    txn.commit()?;
    Ok(SignOutcome {
        commit: *commit,
        added: keys.len(),
        commitmeta: md,
    })
}

fn append_signatures(
    commit: &Checksum,
    bytes: &[u8],
    md: &mut Metadata,
    keys: &[SigningKey],
) -> Result<(), CommitSignError> {
    for key in keys {
        key.append_signature(bytes, md, &format!("commit {commit}"))
            .map_err(|source| CommitSignError::Sign {
                commit: *commit,
                source,
            })?;
    }
    Ok(())
}

/// Commits `dir` as [`crate::store::commit::commit`] does, signed with
/// every key before the branch moves: the detached metadata is written in
/// the commit's transaction, and if a key fails the branch stays where it
/// was (the objects are kept, the commit unreferenced).
pub fn commit_signed(
    repo: &Repo,
    dir: &Path,
    opts: &CommitOptions,
    keys: &[SigningKey],
    progress: &dyn Progress,
    interrupt: &AtomicBool,
) -> Result<CommitOutcome, CommitSignError> {
    commit_then(
        repo,
        dir,
        opts,
        progress,
        interrupt,
        |txn, commit, bytes| {
            if keys.is_empty() {
                return Ok(());
            }
            crate::failpoint::crash("commit:before-sign");
            // The same tree, metadata and time make the same commit, which may
            // be here and signed already: its signatures are kept, and a key
            // that signed it already (ed25519 signatures are deterministic)
            // has nothing to add.
            let mut md = load_commitmeta(repo, commit)?;
            for key in keys {
                match key.append_signature(bytes, &mut md, &format!("commit {commit}")) {
                    Ok(()) | Err(SignError::AlreadySigned { .. }) => {}
                    Err(source) => {
                        return Err(CommitSignError::Sign {
                            commit: *commit,
                            source,
                        });
                    }
                }
            }
            txn.write_commitmeta(*commit, &md.serialize())?;
            Ok(())
        },
    )
}
