//! What a pull is asked to do: typed, validated option values.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::PullError;
use crate::ostree::Checksum;
use crate::ostree::checksum::is_checksum_hex;
use crate::ostree::names::{validate_file_name, validate_ref_name};
use crate::store::Repo;

/// Where a pull reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullSource {
    /// A remote configured in the repository: its URL and TLS settings,
    /// and the signature checks its configuration asks for. Refs land in
    /// `refs/remotes/NAME/` (in `refs/heads/` with `mirror`).
    Remote(String),
    /// An `http(s)://` or `file://` URL. Nothing is verified beyond object
    /// checksums, as in ostree; refs land in `refs/heads/`.
    Url(String),
    /// A local repository in any mode; like a URL otherwise.
    Path(PathBuf),
}

impl PullSource {
    /// Reads a source as `arbor pull` takes it: a URL (`scheme://…`), a
    /// path (anything with a `/`), or a configured remote's name. A bare
    /// name is a path only when no remote of that name is configured at all
    /// and the directory exists: a remote whose settings are broken is an
    /// error, never silently pulled as a same-named directory without its
    /// signature checks.
    pub fn parse(repo: &Repo, spec: &str) -> Result<PullSource, PullError> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Ok(PullSource::Url(spec.to_string()));
        }
        if let Some(path) = spec.strip_prefix("file://") {
            return Ok(PullSource::Path(PathBuf::from(path)));
        }
        if spec.contains("://") {
            return Err(PullError::BadSource {
                spec: spec.to_string(),
                reason: "unsupported URL scheme (http, https and file are supported)".into(),
            });
        }
        if spec.contains('/') {
            return Ok(PullSource::Path(PathBuf::from(spec)));
        }
        if repo.has_remote(spec) {
            return Ok(PullSource::Remote(spec.to_string()));
        }
        if Path::new(spec).is_dir() {
            return Ok(PullSource::Path(PathBuf::from(spec)));
        }
        Err(PullError::BadSource {
            spec: spec.to_string(),
            reason: "not a configured remote, a URL or a repository path".into(),
        })
    }
}

/// What to pull: a ref (resolved at the source), a commit, or both (the ref
/// is set to that commit, which must be what the source has or had).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullTarget {
    Ref(String),
    Commit(Checksum),
    RefAt { name: String, commit: Checksum },
}

impl FromStr for PullTarget {
    type Err = PullError;

    /// `REF`, a 64-hex commit checksum, or `REF@CHECKSUM`.
    fn from_str(s: &str) -> Result<Self, PullError> {
        let bad = |reason: String| PullError::BadTarget {
            spec: s.to_string(),
            reason,
        };
        if is_checksum_hex(s) {
            return Ok(PullTarget::Commit(
                Checksum::from_hex(s).map_err(|e| bad(e.to_string()))?,
            ));
        }
        if let Some((name, commit)) = s.split_once('@') {
            validate_ref_name(name).map_err(|e| bad(e.to_string()))?;
            if !is_checksum_hex(commit) {
                return Err(bad(format!(
                    "{commit:?} after '@' is not a full commit checksum (64 hex digits)"
                )));
            }
            return Ok(PullTarget::RefAt {
                name: name.to_string(),
                commit: Checksum::from_hex(commit).map_err(|e| bad(e.to_string()))?,
            });
        }
        validate_ref_name(s).map_err(|e| bad(e.to_string()))?;
        Ok(PullTarget::Ref(s.to_string()))
    }
}

/// How much history to pull with each commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// The commit and this many ancestors (0: just the commit).
    Parents(u32),
    /// The whole history (`ostree pull --depth=-1`).
    All,
}

impl Default for Depth {
    /// Just the commit.
    fn default() -> Self {
        Depth::Parents(0)
    }
}

impl Depth {
    /// ostree's number: `-1` for all, else the count of parents.
    pub fn from_ostree(n: i64) -> Result<Depth, PullError> {
        match n {
            -1 => Ok(Depth::All),
            n if (0..=u32::MAX as i64).contains(&n) => Ok(Depth::Parents(n as u32)),
            n => Err(PullError::BadDepth(n)),
        }
    }

    /// Parents still to pull below a commit reached at this depth: `None`
    /// for none, else the depth its parent gets.
    pub(crate) fn parent(self) -> Option<Depth> {
        match self {
            Depth::All => Some(Depth::All),
            Depth::Parents(0) => None,
            Depth::Parents(n) => Some(Depth::Parents(n - 1)),
        }
    }
}

/// A path inside a commit's tree, validated and normalised (`/usr/bin`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubPath(String);

impl SubPath {
    /// Accepts `usr/bin`, `/usr//bin/`, `/`; refuses `..` and names ostree
    /// would not store.
    pub fn new(path: &str) -> Result<SubPath, PullError> {
        let mut out = String::new();
        for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if c == ".." {
                return Err(PullError::BadSubpath {
                    path: path.to_string(),
                    reason: "'..' is not allowed".into(),
                });
            }
            validate_file_name(c).map_err(|e| PullError::BadSubpath {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            out.push('/');
            out.push_str(c);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(SubPath(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SubPath {
    type Err = PullError;
    fn from_str(s: &str) -> Result<Self, PullError> {
        SubPath::new(s)
    }
}

impl std::fmt::Display for SubPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which signature checks a pull runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verification {
    /// What the source asks for: for a configured remote, its
    /// `gpg-verify`, `gpg-verify-summary`, `sign-verify` and
    /// `sign-verify-summary` settings (GPG on by default, as in ostree);
    /// for URLs and paths, none (as in ostree).
    #[default]
    AsConfigured,
    /// No signature checks at all, whatever the remote's configuration.
    /// Object checksums are still verified.
    Disabled,
}

/// Whether a pull uses the source's static deltas (ostree's
/// `--disable-static-deltas` and `--require-static-deltas`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StaticDeltas {
    /// Use a delta when the source publishes one for the wanted commit
    /// (from a commit present here, else from scratch) and it transfers
    /// less than fetching the missing objects one by one. Local sources
    /// are imported object by object instead, as ostree does.
    #[default]
    Auto,
    /// Never: fetch objects.
    Disabled,
    /// Always, also from local sources: fail when the source has no
    /// delta for a wanted commit.
    Required,
}

/// The most requests in flight by default. The number actually in flight
/// adapts to what the path delivers (see `concurrency.rs` in this module);
/// 128 is what a far server (50 ms) needs to keep a pull of small objects
/// busy, and nginx's default cap of HTTP/2 streams per connection.
pub const DEFAULT_JOBS: usize = 128;

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// What to pull; empty means every ref the source lists.
    pub targets: Vec<PullTarget>,
    /// Objects reachable from this local (complete) commit are known
    /// present and not fetched.
    pub base: Option<Checksum>,
    /// Local repositories to take objects from (verified) before the
    /// source; opened read-only.
    pub localcache: Vec<PathBuf>,
    pub depth: Depth,
    /// Only these paths of the trees; empty = everything. The commits stay
    /// marked partial.
    pub subpaths: Vec<SubPath>,
    /// Refs go to `refs/heads/` even from a remote, and pulling every ref
    /// also copies the source's summary.
    pub mirror: bool,
    /// Only the commit objects and their detached metadata.
    pub commit_metadata_only: bool,
    /// The most requests in flight at once (at least 1); on HTTP/1.1 also
    /// the most connections. Fewer are used while more would not fetch
    /// faster. Worker threads are fewer still (see [`engine::MAX_WORKERS`](super::engine::MAX_WORKERS)).
    pub jobs: usize,
    /// Retries of a request after a transient failure (a reset, 5xx, a
    /// stall; a body cut off after receiving 1 MiB or more resumes without
    /// using one), and re-fetches of an object that arrived corrupt.
    pub network_retries: u32,
    /// A transfer that receives nothing for this long fails (transiently).
    pub timeout: Duration,
    pub verification: Verification,
    pub static_deltas: StaticDeltas,
    /// Where system-wide signapi keys are looked for (`trusted.ed25519`,
    /// `trusted.ed25519.d/`, `revoked.ed25519…`) when a remote with
    /// `sign-verify=true` names no keys of its own; `None`:
    /// [`SIGN_KEY_BASEDIRS`](crate::store::remotes::SIGN_KEY_BASEDIRS).
    pub sign_key_basedirs: Option<Vec<PathBuf>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            targets: Vec::new(),
            base: None,
            localcache: Vec::new(),
            depth: Depth::Parents(0),
            subpaths: Vec::new(),
            mirror: false,
            commit_metadata_only: false,
            jobs: DEFAULT_JOBS,
            network_retries: 5,
            timeout: Duration::from_secs(30),
            verification: Verification::AsConfigured,
            static_deltas: StaticDeltas::Auto,
            sign_key_basedirs: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_are_normalised_and_checked() {
        assert_eq!(SubPath::new("usr//bin/").unwrap().as_str(), "/usr/bin");
        assert_eq!(SubPath::new("/").unwrap().as_str(), "/");
        assert_eq!(SubPath::new("./a/./b").unwrap().as_str(), "/a/b");
        assert!(SubPath::new("/a/../b").is_err());
    }

    #[test]
    fn targets_parse() {
        let c = "a".repeat(64);
        assert_eq!(
            c.parse::<PullTarget>().unwrap(),
            PullTarget::Commit(Checksum::from_hex(&c).unwrap())
        );
        assert_eq!(
            "os/x86_64".parse::<PullTarget>().unwrap(),
            PullTarget::Ref("os/x86_64".into())
        );
        assert!(matches!(
            format!("main@{c}").parse::<PullTarget>().unwrap(),
            PullTarget::RefAt { .. }
        ));
        assert!("main@abc".parse::<PullTarget>().is_err());
        assert!("../x".parse::<PullTarget>().is_err());
    }

    #[test]
    fn depth_follows_ostree() {
        assert_eq!(Depth::from_ostree(-1).unwrap(), Depth::All);
        assert_eq!(Depth::from_ostree(2).unwrap(), Depth::Parents(2));
        assert!(Depth::from_ostree(-2).is_err());
        assert_eq!(Depth::Parents(2).parent(), Some(Depth::Parents(1)));
        assert_eq!(Depth::Parents(0).parent(), None);
        assert_eq!(Depth::All.parent(), Some(Depth::All));
    }
}
