//! `/proc/self/mountinfo`: a pure parser over its bytes, and the two
//! queries staging needs (is this a mount point, what is mounted below).
//!
//! # Format (proc(5))
//! One mount per line, fields separated by single spaces:
//! ```text
//! 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)   (4)      (5)       (6)       (7)   (8) (9)    (10)        (11)
//! ```
//! (1) mount id, (2) parent id, (3) major:minor, (4) root within the
//! filesystem, (5) mount point, (6) per-mount options, (7) zero or more
//! optional fields, (8) a lone `-`, (9) filesystem type, (10) source,
//! (11) super-block options. In (4), (5), (9) and (10) the kernel escapes
//! space, tab, newline and backslash as three-digit octal (`\040`, `\011`,
//! `\012`, `\134`); [`unescape`] undoes exactly that.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Field (1).
    pub id: u64,
    /// Field (2).
    pub parent_id: u64,
    /// Field (5), unescaped.
    pub mount_point: PathBuf,
    /// Field (9), unescaped, e.g. `overlay` or `fuse.fuse-overlayfs`.
    pub fs_type: String,
    /// Field (10), unescaped.
    pub source: String,
}

/// Undoes the kernel's octal escapes (`\NNN`, three octal digits). A
/// backslash not followed by three octal digits is kept as is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(field[i + 1] - b'0') * 64
                + u32::from(field[i + 2] - b'0') * 8
                + u32::from(field[i + 3] - b'0');
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Parses one line; `None` when it does not have the documented shape.
pub fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < 10 {
        return None;
    }
    let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    if sep + 2 >= fields.len() {
        return None;
    }
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u64>().ok();
    Some(MountEntry {
        id: num(fields[0])?,
        parent_id: num(fields[1])?,
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fs_type: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
    })
}

/// Parses a whole mountinfo file; malformed lines are skipped.
pub fn parse(bytes: &[u8]) -> Vec<MountEntry> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read("/proc/self/mountinfo")?))
}

/// The path as mountinfo would spell it: absolute and with symlinks
/// resolved when it exists (lexically absolute otherwise).
fn normalise(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(_) => std::path::absolute(path),
    }
}

/// Whether something is mounted exactly on `path` in this process's mount
/// namespace.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let path = normalise(path)?;
    Ok(read()?.iter().any(|m| m.mount_point == path))
}

/// Every mount at or below `path`, deepest first (the order in which they
/// can be unmounted). Finds mounts left behind by a process that died
/// while holding a stage.
pub fn mounts_under(path: &Path) -> std::io::Result<Vec<MountEntry>> {
    let path = normalise(path)?;
    let mut found: Vec<MountEntry> = read()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&path))
        .collect();
    // Later mounts stack on earlier ones: unmount deepest path first, and
    // for the same path the most recent (highest id) first.
    found.sort_by(|a, b| {
        b.mount_point
            .components()
            .count()
            .cmp(&a.mount_point.components().count())
            .then(b.id.cmp(&a.id))
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc5_example_and_escapes() {
        let line = b"36 35 98:0 /mnt1 /mnt/a\\040b\\134c rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue";
        let e = parse_line(line).unwrap();
        assert_eq!(e.id, 36);
        assert_eq!(e.parent_id, 35);
        assert_eq!(e.mount_point, PathBuf::from("/mnt/a b\\c"));
        assert_eq!(e.fs_type, "ext3");
        assert_eq!(e.source, "/dev/root");
    }

    #[test]
    fn no_optional_fields_and_garbage() {
        let e = parse_line(b"1 0 0:1 / / rw - overlay overlay rw").unwrap();
        assert_eq!(e.mount_point, PathBuf::from("/"));
        assert!(parse_line(b"1 0 0:1 / / rw overlay overlay rw x").is_none());
        assert!(parse_line(b"").is_none());
        assert_eq!(unescape(b"a\\04"), b"a\\04");
        assert_eq!(unescape(b"\\012\\011"), b"\n\t");
        assert_eq!(unescape(b"\\777"), b"\\777");
    }
}
