//! Refs: `refs/heads/REF`, `refs/remotes/REMOTE/REF`,
//! `refs/mirrors/COLLECTION/REF`, each a file holding `CHECKSUM\n`; and the
//! revision syntax (`REF`, `REMOTE:REF`, checksum, unique prefix, `REV^`).

use std::fmt;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType};

use super::error::{IoContext, Result, StoreError};
use super::repo::{Repo, open_dir, write_file_atomic};
use crate::fs::{ensure_dir, list_dir_typed};
use crate::ostree::checksum::is_checksum_hex;
use crate::ostree::names::{parse_refspec, validate_ref_name, validate_remote_name};
use crate::ostree::{Checksum, ObjectType};

/// A ref, by where it lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefName {
    /// `refs/heads/NAME`
    Head(String),
    /// `refs/remotes/REMOTE/NAME`, written `REMOTE:NAME`.
    Remote(String, String),
}

impl RefName {
    /// Parses `[REMOTE:]REF`, validating both parts.
    pub fn parse(spec: &str) -> Result<RefName> {
        Ok(match parse_refspec(spec)? {
            (Some(remote), r) => RefName::Remote(remote.into(), r.into()),
            (None, r) => RefName::Head(r.into()),
        })
    }

    /// The ref's directory (relative to the repository) and its name in it.
    fn location(&self) -> (String, &str) {
        let (base, name) = match self {
            RefName::Head(n) => ("refs/heads".to_string(), n.as_str()),
            RefName::Remote(r, n) => (format!("refs/remotes/{r}"), n.as_str()),
        };
        match name.rsplit_once('/') {
            Some((dirs, leaf)) => (format!("{base}/{dirs}"), leaf),
            None => (base, name),
        }
    }

    /// Path relative to the repository root.
    pub fn relative_path(&self) -> String {
        let (dir, leaf) = self.location();
        format!("{dir}/{leaf}")
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefName::Head(n) => f.write_str(n),
            RefName::Remote(r, n) => write!(f, "{r}:{n}"),
        }
    }
}

/// Longest ref file accepted (a checksum, a newline, some slack).
const MAX_REF_FILE: usize = 256;

impl Repo {
    /// The commit a ref points to, `None` when the ref does not exist.
    pub fn read_ref(&self, name: &RefName) -> Result<Option<Checksum>> {
        let rel = name.relative_path();
        let path = self.path().join(&rel);
        // Names are validated (no `..`, no empty components); ref aliases
        // are symlinks inside refs/heads, so the final component may link.
        let data = match std::fs::File::open(&path) {
            Ok(f) => {
                use std::io::Read;
                let mut buf = Vec::new();
                f.take(MAX_REF_FILE as u64 + 1)
                    .read_to_end(&mut buf)
                    .at(&path)?;
                buf
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).at(&path),
        };
        let text = std::str::from_utf8(&data).unwrap_or("").trim_end();
        if data.len() > MAX_REF_FILE || !is_checksum_hex(text) {
            return Err(StoreError::BadRef {
                name: name.to_string(),
                path,
            });
        }
        Ok(Some(Checksum::from_hex(text)?))
    }

    /// Sets or (with `None`) deletes a ref. Not synced: transactions batch
    /// durability; use [`Transaction::set_ref`](super::Transaction::set_ref).
    pub(crate) fn write_ref(&self, name: &RefName, target: Option<Checksum>) -> Result<()> {
        let (dir, leaf) = name.location();
        let mut fd = open_dir(self.dir(), ".")?;
        let mut built = std::path::PathBuf::from(self.path());
        for comp in dir.split('/') {
            built.push(comp);
            if target.is_some() {
                ensure_dir(&fd, comp, 0o775).at(&built)?;
            }
            fd = match open_dir(&fd, comp) {
                Ok(f) => f,
                Err(_) if target.is_none() => return Ok(()),
                Err(e) => return Err(e),
            };
        }
        match target {
            Some(c) => {
                write_file_atomic(fd.as_fd(), &built, leaf, format!("{c}\n").as_bytes(), 0o644)
            }
            None => match rustix::fs::unlinkat(&fd, leaf, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e).at(built.join(leaf)),
            },
        }
    }

    /// Every ref: local heads, then remote refs, sorted by name.
    pub fn list_refs(&self) -> Result<Vec<(RefName, Checksum)>> {
        let mut out = Vec::new();
        for name in self.ref_names_under("refs/heads")? {
            let r = RefName::Head(name);
            if let Some(c) = self.read_ref(&r)? {
                out.push((r, c));
            }
        }
        let remotes_path = self.path().join("refs/remotes");
        if let Ok(remotes) = open_dir(self.dir(), "refs/remotes") {
            for (remote, ty) in list_dir_typed(remotes.as_fd()).at(&remotes_path)? {
                let Some(remote) = remote.to_str() else {
                    continue;
                };
                if ty != FileType::Directory || validate_remote_name(remote).is_err() {
                    continue;
                }
                for name in self.ref_names_under(&format!("refs/remotes/{remote}"))? {
                    let r = RefName::Remote(remote.to_string(), name);
                    if let Some(c) = self.read_ref(&r)? {
                        out.push((r, c));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Ref names (with `/` for subdirectories) below a refs directory.
    fn ref_names_under(&self, base: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(prefix) = stack.pop() {
            let rel = if prefix.is_empty() {
                base.to_string()
            } else {
                format!("{base}/{prefix}")
            };
            let Ok(dir) = open_dir(self.dir(), &rel) else {
                continue;
            };
            for (name, ty) in list_dir_typed(dir.as_fd()).at(self.path().join(&rel))? {
                let Some(name) = name.to_str() else { continue };
                let full = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                };
                if validate_ref_name(&full).is_err() {
                    continue;
                }
                match ty {
                    FileType::Directory => {
                        if stack.len() < 64 {
                            stack.push(full)
                        }
                    }
                    _ => out.push(full),
                }
            }
        }
        Ok(out)
    }

    /// Resolves a revision: `REF`, `REMOTE:REF`, a checksum, a unique
    /// prefix of a commit checksum, each optionally followed by `^`s
    /// (parents).
    pub fn resolve_rev(&self, rev: &str) -> Result<Checksum> {
        let base = rev.trim_end_matches('^');
        let ups = rev.len() - base.len();
        let mut c = self.resolve_base_rev(base)?;
        for i in 0..ups {
            let commit = self.load_commit(&c)?;
            c = commit.parent.ok_or_else(|| StoreError::BadRev {
                rev: rev.to_string(),
                reason: format!(
                    "commit {c} has no parent (asked for {} generation{} back)",
                    i + 1,
                    if i == 0 { "" } else { "s" }
                ),
            })?;
        }
        Ok(c)
    }

    fn resolve_base_rev(&self, rev: &str) -> Result<Checksum> {
        if is_checksum_hex(rev) {
            return Ok(Checksum::from_hex(rev)?);
        }
        if let Ok(name) = RefName::parse(rev) {
            if let Some(c) = self.read_ref(&name)? {
                return Ok(c);
            }
            // A bare REF may also name a remote ref `REMOTE/REF`, or a ref
            // that exists under exactly one remote.
            if let RefName::Head(n) = &name {
                if let Some((remote, r)) = n.split_once('/')
                    && let Some(c) = self.read_ref(&RefName::Remote(remote.into(), r.into()))?
                {
                    return Ok(c);
                }
                let found: Vec<_> = self
                    .list_refs()?
                    .into_iter()
                    .filter(|(rn, _)| matches!(rn, RefName::Remote(_, r) if r == n))
                    .collect();
                if found.len() == 1 {
                    return Ok(found[0].1);
                }
            }
        }
        if rev.len() >= 4
            && rev.len() < 64
            && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let matches = self.commits_with_prefix(rev)?;
            return match matches.len() {
                1 => Ok(matches[0]),
                0 => Err(StoreError::UnknownRev(rev.into())),
                n => Err(StoreError::BadRev {
                    rev: rev.into(),
                    reason: format!("ambiguous prefix: {n} commits match; give more digits"),
                }),
            };
        }
        RefName::parse(rev)?;
        Err(StoreError::RefNotFound(rev.to_string()))
    }

    fn commits_with_prefix(&self, prefix: &str) -> Result<Vec<Checksum>> {
        let dir = &prefix[..2];
        let rest = &prefix[2..];
        let Ok(fd) = open_dir(self.objects_dir(), dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, _) in list_dir_typed(fd.as_fd()).at(self.path().join("objects").join(dir))? {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(rest) {
                continue;
            }
            if let Some((obj, _)) = crate::ostree::ObjectName::from_loose(dir, name)
                && obj.objtype == ObjectType::Commit
            {
                out.push(obj.checksum);
            }
        }
        Ok(out)
    }
}
