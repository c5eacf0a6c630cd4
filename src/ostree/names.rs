//! Validation of names that come from trees, refs and remotes.
//!
//! Tree entry names become path components on disk, so they are checked
//! before anything else looks at them: a name that is empty, `.`, `..`, or
//! contains `/` or NUL is rejected (libostree accepts `""`; we do not).

use super::checksum::{is_checksum_hex, truncate_for_error};
use super::error::{FormatError, Result};

/// Longest file name accepted in a tree (Linux `NAME_MAX`).
pub const MAX_FILE_NAME: usize = 255;

/// Checks one dirtree entry name.
pub fn validate_file_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty name"
    } else if name == "." || name == ".." {
        "'.' and '..' are not allowed"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains NUL"
    } else if name.len() > MAX_FILE_NAME {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(FormatError::InvalidFileName {
        name: truncate_for_error(name),
        reason,
    })
}

fn is_fragment_char(c: char, first: bool) -> bool {
    c.is_alphanumeric() || c == '_' || (!first && matches!(c, '-' | '.'))
}

/// One ref or remote fragment: `[\w\d][-._\w\d]*` (Unicode letters allowed).
fn fragment_error(frag: &str) -> Option<&'static str> {
    let mut chars = frag.chars();
    match chars.next() {
        None => Some("empty component"),
        Some(c) if !is_fragment_char(c, true) => {
            Some("each component must start with a letter, digit or '_'")
        }
        _ if !chars.all(|c| is_fragment_char(c, false)) => {
            Some("only letters, digits, '-', '.' and '_' are allowed in a component")
        }
        _ => None,
    }
}

/// Longest ref name we accept; refs become paths under `refs/`.
pub const MAX_REF_NAME: usize = 1024;

/// Checks a ref name such as `exampleos/x86_64/stable`.
pub fn validate_ref_name(name: &str) -> Result<()> {
    let err = |reason| FormatError::InvalidRefName {
        name: truncate_for_error(name),
        reason,
    };
    if name.len() > MAX_REF_NAME {
        return Err(err("longer than 1024 bytes"));
    }
    if is_checksum_hex(name) {
        return Err(err("a ref may not look like a checksum"));
    }
    for frag in name.split('/') {
        if let Some(reason) = fragment_error(frag) {
            return Err(err(reason));
        }
    }
    Ok(())
}

/// Checks a remote name (a single fragment).
pub fn validate_remote_name(name: &str) -> Result<()> {
    if let Some(reason) = fragment_error(name) {
        return Err(FormatError::InvalidRemoteName {
            name: truncate_for_error(name),
            reason,
        });
    }
    Ok(())
}

/// Splits a refspec `[REMOTE:]REF`, validating both parts.
pub fn parse_refspec(spec: &str) -> Result<(Option<&str>, &str)> {
    match spec.split_once(':') {
        Some((remote, r)) => {
            validate_remote_name(remote)?;
            validate_ref_name(r)?;
            Ok((Some(remote), r))
        }
        None => {
            validate_ref_name(spec)?;
            Ok((None, spec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for ok in ["a", "héllo", ".hidden", "a b", "...", "日本"] {
            validate_file_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b", &"x".repeat(256)] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ref_names() {
        for ok in ["main", "héllo", "_x", "x.", "a..b", "a/b/c", "x86_64-1.0"] {
            validate_ref_name(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "x/",
            "/x",
            "a//b",
            "a/.b",
            "a b",
            "a:b",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        ] {
            assert!(validate_ref_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refspecs() {
        assert_eq!(
            parse_refspec("origin:a/b").unwrap(),
            (Some("origin"), "a/b")
        );
        assert_eq!(parse_refspec("main").unwrap(), (None, "main"));
        assert!(parse_refspec("bad remote:main").is_err());
        assert!(parse_refspec("origin:").is_err());
    }
}
