//! Overlayfs-style whiteouts
//! ([`CheckoutOptions::whiteouts`](super::CheckoutOptions::whiteouts)), as
//! libostree reads them when layering commits into one directory:
//!
//! * a regular file `.wh.NAME` removes `NAME` (recursively) from the
//!   destination directory and is not itself created;
//! * `.wh..wh..opq` makes its directory opaque: whatever the destination
//!   had there is removed before the directory is filled;
//! * a *symlink* named `.wh.NAME` is an ordinary symlink.
//!
//! `NAME` is validated like any entry name: `.wh.` alone, `.wh..` and
//! `.wh...` (which would remove `.` or `..`) are errors, so a whiteout can
//! never reach outside its directory.

use std::path::Path;

use super::error::CheckoutError;
use super::plan::{PlanDir, display_path};
use crate::ostree::names::validate_file_name;
use crate::ostree::{ObjectName, ObjectType};
use crate::store::Repo;

const PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a file name means when whiteouts are processed.
#[derive(Debug, PartialEq, Eq)]
enum Kind<'a> {
    Opaque,
    Remove(&'a str),
    Plain,
}

fn kind(name: &str) -> Kind<'_> {
    if name == OPAQUE {
        Kind::Opaque
    } else if let Some(target) = name.strip_prefix(PREFIX) {
        Kind::Remove(target)
    } else {
        Kind::Plain
    }
}

/// Finds the whiteouts among a directory's files and records them in the
/// plan: the names to remove, the markers not to place, opacity.
pub(super) fn classify(repo: &Repo, dest: &Path, d: &mut PlanDir) -> Result<(), CheckoutError> {
    let tree = d.tree.clone();
    for (i, f) in tree.files.iter().enumerate() {
        let target = match kind(&f.name) {
            Kind::Plain => continue,
            Kind::Opaque => {
                d.opaque = true;
                d.skip.push(i);
                continue;
            }
            Kind::Remove(target) => target,
        };
        let obj = repo
            .open_content(&f.checksum)
            .map_err(|source| CheckoutError::Object {
                path: display_path(dest, &d.rel, &f.name),
                object: ObjectName::new(f.checksum, ObjectType::File),
                source: Box::new(source),
            })?;
        if obj.header.is_symlink() {
            continue;
        }
        validate_file_name(target).map_err(|e| CheckoutError::InvalidWhiteout {
            path: display_path(dest, &d.rel, ""),
            name: f.name.clone(),
            dirtree: d.tree_csum,
            reason: format!("it would remove {target:?}: {e}"),
        })?;
        d.whiteouts.push(target.to_string());
        d.skip.push(i);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind(".wh..wh..opq"), Kind::Opaque);
        assert_eq!(kind(".wh.victim"), Kind::Remove("victim"));
        assert_eq!(kind(".wh."), Kind::Remove(""));
        assert_eq!(kind(".wh.."), Kind::Remove("."));
        assert_eq!(kind(".wh..."), Kind::Remove(".."));
        assert_eq!(kind(".whx"), Kind::Plain);
        assert_eq!(kind("a.wh.b"), Kind::Plain);
        for bad in ["", ".", ".."] {
            assert!(validate_file_name(bad).is_err());
        }
    }
}
