//! Creating and deleting refs by hand (`arbor refs --create/--delete`),
//! as writers of the lock protocol: the ref is set in a transaction, so
//! the commit it names cannot be pruned between being checked and being
//! named.

use super::error::{Result, StoreError};
use super::{RefName, Repo, Transaction};
use crate::ostree::{Checksum, ObjectName, ObjectType};

/// Points the new ref `name` at the commit `rev` names. An existing ref
/// is not replaced (as `ostree refs --create`).
pub fn create_ref(repo: &Repo, name: &RefName, rev: &str) -> Result<Checksum> {
    let txn = Transaction::begin(repo)?;
    if repo.read_ref(name)?.is_some() {
        return Err(StoreError::RefExists(name.to_string()));
    }
    let commit = repo.resolve_rev(rev)?;
    let obj = ObjectName::new(commit, ObjectType::Commit);
    if !repo.has_object(&obj)? {
        return Err(StoreError::MissingObject(obj));
    }
    txn.set_ref(name.clone(), Some(commit));
    txn.commit()?;
    crate::store::used::record(repo, &[commit]);
    Ok(commit)
}

/// Deletes refs; every one must exist (nothing is deleted otherwise).
/// Returns the commits they pointed to.
pub fn delete_refs(repo: &Repo, names: &[RefName]) -> Result<Vec<Checksum>> {
    let txn = Transaction::begin(repo)?;
    let mut old = Vec::new();
    for name in names {
        old.push(
            repo.read_ref(name)?
                .ok_or_else(|| StoreError::RefNotFound(name.to_string()))?,
        );
    }
    for name in names {
        txn.set_ref(name.clone(), None);
    }
    txn.commit()?;
    Ok(old)
}
