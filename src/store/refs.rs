//! Refs: `refs/heads/REF`, `refs/remotes/REMOTE/REF`,
//! `refs/mirrors/COLLECTION/REF`, each a file holding `CHECKSUM\n`; and the
//! revision syntax (`REF`, `REMOTE:REF`, checksum, unique prefix, `REV^`).

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

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

/// A ref of any kind: a local or remote ref, or a collection ref of
/// another collection (`refs/mirrors/COLLECTION/NAME`, which [`RefName`]
/// does not address). Prune and gc see all of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnyRef {
    Ref(RefName),
    /// Printed as ostree prints collection refs: `(COLLECTION, NAME)`.
    Collection {
        collection: String,
        name: String,
    },
}

impl fmt::Display for AnyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyRef::Ref(r) => r.fmt(f),
            AnyRef::Collection { collection, name } => write!(f, "({collection}, {name})"),
        }
    }
}

/// How a listing treats what is in a refs directory but is not a ref.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RefListing {
    /// As libostree: entries whose names are no valid ref component (files
    /// other tools drop there, ostree#1285) and entries that are neither
    /// files, symlinks nor directories are ignored.
    Lenient,
    /// For prune and gc, which must know every ref: such entries are
    /// errors ([`StoreError::UnlistableRef`]). Hidden entries (`.` first)
    /// are still ignored: no ref can be named so, and they are what an
    /// interrupted atomic write of a ref leaves (ostree's and arbor's).
    Strict,
}

/// Longest ref file accepted (a checksum, a newline, some slack).
const MAX_REF_FILE: usize = 256;
/// Deepest refs directory listed (libostree sets no bound; a ref name is
/// at most [`crate::ostree::names::MAX_REF_NAME`] bytes, so at most 512
/// components deep).
const MAX_REF_DEPTH: usize = 512;

/// Reads the ref file `leaf` of `dir` (following a symlink: ref aliases
/// are symlinks); `None` when it does not exist. `name` is the ref's name
/// for errors.
pub(crate) fn read_ref_at(
    dir: impl AsFd,
    leaf: &str,
    path: &std::path::Path,
    name: &dyn fmt::Display,
) -> Result<Option<Checksum>> {
    use std::io::Read;
    let fd = match rustix::fs::openat(
        dir,
        leaf,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    let bad = || StoreError::BadRef {
        name: name.to_string(),
        path: path.to_path_buf(),
    };
    if FileType::from_raw_mode(rustix::fs::fstat(&fd).at(path)?.st_mode) != FileType::RegularFile {
        return Err(bad());
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_REF_FILE as u64 + 1)
        .read_to_end(&mut data)
        .at(path)?;
    let text = std::str::from_utf8(&data).unwrap_or("").trim_end();
    if data.len() > MAX_REF_FILE || !is_checksum_hex(text) {
        return Err(bad());
    }
    Ok(Some(Checksum::from_hex(text)?))
}

/// Every ref below the refs directory `top` (at `top_path`), as names with
/// `/` between components, walked through directory descriptors; `label`
/// turns a name into what errors call the ref.
fn walk_refs(
    top: OwnedFd,
    top_path: &std::path::Path,
    mode: RefListing,
    label: &dyn Fn(&str) -> String,
) -> Result<Vec<(String, Checksum)>> {
    let strict = mode == RefListing::Strict;
    let unlistable =
        |path: std::path::PathBuf, reason: String| StoreError::UnlistableRef { path, reason };
    let mut out = Vec::new();
    // Directories still to list: their parent (kept open while any of its
    // subdirectories waits, so at most one descriptor per level is open),
    // their name in it and their ref-name prefix.
    let top = Rc::new(top);
    let mut stack: Vec<(Rc<OwnedFd>, Option<String>, String)> = vec![(top, None, String::new())];
    while let Some((parent, name, prefix)) = stack.pop() {
        let here = if prefix.is_empty() {
            top_path.to_path_buf()
        } else {
            top_path.join(&prefix)
        };
        let dir = match name {
            None => parent,
            Some(n) => match crate::fs::open_dir(&*parent, n.as_str()) {
                Ok(fd) => Rc::new(fd),
                // Removed since it was listed (a ref deleted meanwhile).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&here),
            },
        };
        let depth = if prefix.is_empty() {
            0
        } else {
            prefix.split('/').count()
        };
        for (entry, ty) in list_dir_typed(dir.as_fd()).at(&here)? {
            let Some(entry) = entry.to_str() else {
                if strict {
                    return Err(unlistable(
                        here.join(&entry),
                        "the name is not UTF-8, so no ref".into(),
                    ));
                }
                continue;
            };
            if entry.starts_with('.') {
                continue;
            }
            let path = here.join(entry);
            let full = if prefix.is_empty() {
                entry.to_string()
            } else {
                format!("{prefix}/{entry}")
            };
            if let Err(e) = validate_ref_name(&full) {
                if strict {
                    return Err(unlistable(path, e.to_string()));
                }
                continue;
            }
            match ty {
                FileType::Directory => {
                    if depth + 1 >= MAX_REF_DEPTH {
                        return Err(unlistable(
                            path,
                            format!("refs directories nest deeper than {MAX_REF_DEPTH} levels"),
                        ));
                    }
                    stack.push((dir.clone(), Some(entry.to_string()), full));
                }
                FileType::RegularFile | FileType::Symlink => {
                    if let Some(c) = read_ref_at(&*dir, entry, &path, &label(&full))? {
                        out.push((full, c));
                    }
                }
                _ if strict => {
                    return Err(unlistable(
                        path,
                        "neither a file, a symlink nor a directory".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

impl Repo {
    /// The commit a ref points to, `None` when the ref does not exist.
    pub fn read_ref(&self, name: &RefName) -> Result<Option<Checksum>> {
        let (dir, leaf) = name.location();
        // Names are validated (no `..`, no empty components); ref aliases
        // are symlinks inside refs/heads, so the last component may link.
        let fd = match crate::fs::open_dir(self.dir(), dir.as_str()) {
            Ok(fd) => fd,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).at(self.path().join(&dir)),
        };
        read_ref_at(&fd, leaf, &self.path().join(&dir).join(leaf), name)
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

    /// Every ref: local heads, then remote refs, sorted by name; entries
    /// that are not refs are ignored as libostree ignores them.
    pub fn list_refs(&self) -> Result<Vec<(RefName, Checksum)>> {
        self.list_refs_with(RefListing::Lenient)
    }

    /// Every local and remote ref, sorted by name; `mode` says what to do
    /// with entries that are not refs.
    pub fn list_refs_with(&self, mode: RefListing) -> Result<Vec<(RefName, Checksum)>> {
        let mut out = Vec::new();
        if let Some(heads) = self.open_refs_dir("refs/heads")? {
            for (n, c) in walk_refs(heads, &self.path().join("refs/heads"), mode, &|n| {
                n.to_string()
            })? {
                out.push((RefName::Head(n), c));
            }
        }
        if let Some(remotes) = self.open_refs_dir("refs/remotes")? {
            let remotes_path = self.path().join("refs/remotes");
            for (remote, ty) in list_dir_typed(remotes.as_fd()).at(&remotes_path)? {
                let (Some(remote), FileType::Directory) = (remote.to_str(), ty) else {
                    if mode == RefListing::Strict && !remote.as_encoded_bytes().starts_with(b".") {
                        return Err(StoreError::UnlistableRef {
                            path: remotes_path.join(&remote),
                            reason: "not a remote's refs directory".into(),
                        });
                    }
                    continue;
                };
                if remote.starts_with('.') {
                    continue;
                }
                if let Err(e) = validate_remote_name(remote) {
                    if mode == RefListing::Strict {
                        return Err(StoreError::UnlistableRef {
                            path: remotes_path.join(remote),
                            reason: e.to_string(),
                        });
                    }
                    continue;
                }
                let Some(dir) = self.open_refs_dir(&format!("refs/remotes/{remote}"))? else {
                    continue;
                };
                for (n, c) in walk_refs(dir, &remotes_path.join(remote), mode, &|n| {
                    format!("{remote}:{n}")
                })? {
                    out.push((RefName::Remote(remote.to_string(), n), c));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every ref of every kind, collection refs of `refs/mirrors/` too, for
    /// prune and gc: an entry that cannot be read as a ref is an error
    /// ([`RefListing::Strict`]), never skipped.
    pub fn list_all_refs(&self) -> Result<Vec<(AnyRef, Checksum)>> {
        let mode = RefListing::Strict;
        let mut out: Vec<(AnyRef, Checksum)> = self
            .list_refs_with(mode)?
            .into_iter()
            .map(|(r, c)| (AnyRef::Ref(r), c))
            .collect();
        let Some(mirrors) = self.open_refs_dir("refs/mirrors")? else {
            return Ok(out);
        };
        let base = self.path().join("refs/mirrors");
        for (cid, ty) in list_dir_typed(mirrors.as_fd()).at(&base)? {
            if cid.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let (Some(cid), FileType::Directory) = (cid.to_str(), ty) else {
                return Err(StoreError::UnlistableRef {
                    path: base.join(&cid),
                    reason: "not a collection's refs directory".into(),
                });
            };
            let Some(dir) = self.open_refs_dir(&format!("refs/mirrors/{cid}"))? else {
                continue;
            };
            for (name, c) in walk_refs(dir, &base.join(cid), mode, &|n| format!("({cid}, {n})"))? {
                out.push((
                    AnyRef::Collection {
                        collection: cid.to_string(),
                        name,
                    },
                    c,
                ));
            }
        }
        Ok(out)
    }

    /// A refs directory, `None` when it does not exist.
    fn open_refs_dir(&self, rel: &str) -> Result<Option<OwnedFd>> {
        match crate::fs::open_dir(self.dir(), rel) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(self.path().join(rel)),
        }
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
