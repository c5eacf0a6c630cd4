//! Remotes, stored in the repository's `config` in ostree's own syntax so
//! that `ostree` sees the same remotes:
//!
//! ```text
//! [remote "origin"]
//! url=https://example.com/repo
//! gpg-verify=false
//! ```
//!
//! A remote's trusted GPG keys live beside the config, where ostree keeps
//! them: `<repo>/<remote>.trustedkeys.gpg`, a binary keyring (see
//! [`crate::pull::gpg`]). Keys may also be named by `gpgkeypath=` (files, or
//! directories whose regular files are keys); when the remote has no keyring
//! file, ostree also reads the global `/usr/share/ostree/trusted.gpg.d/*.gpg`
//! (or `$OSTREE_GPG_HOME`), and so does [`Repo::remote_gpg_keys`].

use std::path::{Path, PathBuf};

use super::error::{IoContext, Result, StoreError};
use super::repo::{Repo, write_file_atomic};
use crate::ostree::names::validate_remote_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub url: String,
    /// `gpg-verify` (ostree's default: true).
    pub gpg_verify: bool,
    /// `gpg-verify-summary` (ostree's default: false).
    pub gpg_verify_summary: bool,
    /// `sign-verify` (ostree's default: false).
    pub sign_verify: bool,
    /// `gpgkeypath`: key files or directories of key files (`;` or `,`
    /// separated, as ostree splits it).
    pub gpgkeypath: Vec<String>,
}

/// How a remote is added (`remote add` options).
#[derive(Clone, Debug)]
pub struct AddRemote {
    /// `false`: write `gpg-verify=false` (ostree's `--no-gpg-verify`).
    pub gpg_verify: bool,
    /// `false`: write `sign-verify=false` too (`--no-sign-verify`).
    pub sign_verify: bool,
    /// Extra `key=value` settings (ostree's `--set`), written last.
    pub settings: Vec<(String, String)>,
}

impl Default for AddRemote {
    fn default() -> Self {
        AddRemote {
            gpg_verify: true,
            sign_verify: true,
            settings: Vec::new(),
        }
    }
}

/// Key data for one remote, with where each piece came from.
#[derive(Clone, Debug, Default)]
pub struct RemoteKeys {
    /// `(origin, bytes)`: keyring files and key files, in ostree's order.
    pub sources: Vec<(String, Vec<u8>)>,
}

/// Default global keyring directory (ostree's `DATADIR/ostree/trusted.gpg.d`).
pub const GLOBAL_KEYRING_DIR: &str = "/usr/share/ostree/trusted.gpg.d";

fn group(name: &str) -> String {
    format!("remote \"{name}\"")
}

impl Repo {
    pub fn remotes(&self) -> Vec<Remote> {
        let cfg = self.config();
        cfg.groups()
            .filter_map(|g| g.strip_prefix("remote \"")?.strip_suffix('"'))
            .filter_map(|name| self.remote(name).ok())
            .collect()
    }

    pub fn remote(&self, name: &str) -> Result<Remote> {
        let cfg = self.config();
        let g = group(name);
        let url = cfg.get(&g, "url").ok_or_else(|| {
            StoreError::Other(format!(
                "no remote named {name:?} in {} (add one with `arbor remote add {name} URL`)",
                self.path().join("config").display()
            ))
        })?;
        let flag = |key: &str, default: bool| -> Result<bool> {
            cfg.get_bool(&g, key)
                .map(|v| v.unwrap_or(default))
                .map_err(|e| StoreError::Config {
                    path: self.path().join("config"),
                    reason: e.to_string(),
                })
        };
        Ok(Remote {
            name: name.to_string(),
            url,
            gpg_verify: flag("gpg-verify", true)?,
            gpg_verify_summary: flag("gpg-verify-summary", false)?,
            sign_verify: flag("sign-verify", false)?,
            gpgkeypath: cfg
                .get(&g, "gpgkeypath")
                .map(|v| {
                    v.split([';', ','])
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// `<repo>/<remote>.trustedkeys.gpg`, the keyring ostree keeps per
    /// remote (its file name is the one ostree uses).
    pub fn remote_keyring_name(name: &str) -> String {
        format!("{name}.trustedkeys.gpg")
    }

    pub fn remote_keyring_path(&self, name: &str) -> PathBuf {
        self.path().join(Self::remote_keyring_name(name))
    }

    /// The remote's keyring file, `None` if it has none.
    pub fn read_remote_keyring(&self, name: &str) -> Result<Option<Vec<u8>>> {
        validate_remote_name(name)?;
        read_optional(&self.remote_keyring_path(name))
    }

    /// Replaces the remote's keyring file (atomically, mode 0644).
    pub fn write_remote_keyring(&self, name: &str, data: &[u8]) -> Result<()> {
        validate_remote_name(name)?;
        write_file_atomic(
            self.dir(),
            self.path(),
            &Self::remote_keyring_name(name),
            data,
            0o644,
        )
    }

    /// Every source of trusted keys for `remote`, as ostree gathers them
    /// (`_ostree_repo_gpg_prepare_verifier`): the remote's keyring file;
    /// each `gpgkeypath` entry (a directory contributes its regular files);
    /// and, only when there is no keyring file, the global keyring
    /// directory's `*.gpg` files (not `trustdb.gpg` / `secring.gpg`).
    pub fn remote_gpg_keys(&self, remote: &Remote) -> Result<RemoteKeys> {
        let mut keys = RemoteKeys::default();
        let own = self.read_remote_keyring(&remote.name)?;
        let have_own = own.is_some();
        if let Some(data) = own {
            keys.sources.push((
                self.remote_keyring_path(&remote.name).display().to_string(),
                data,
            ));
        }
        for p in &remote.gpgkeypath {
            let path = Path::new(p);
            if path.is_dir() {
                for file in sorted_regular_files(path)? {
                    let data = std::fs::read(&file).at(&file)?;
                    keys.sources.push((file.display().to_string(), data));
                }
            } else {
                let data = std::fs::read(path).at(path)?;
                keys.sources.push((p.clone(), data));
            }
        }
        if !have_own {
            let global = std::env::var_os("OSTREE_GPG_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(GLOBAL_KEYRING_DIR));
            if global.is_dir() {
                for file in sorted_regular_files(&global)? {
                    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.ends_with(".gpg") && name != "trustdb.gpg" && name != "secring.gpg" {
                        let data = std::fs::read(&file).at(&file)?;
                        keys.sources.push((file.display().to_string(), data));
                    }
                }
            }
        }
        Ok(keys)
    }

    /// Adds a remote. `opts.sign_verify = false` is ostree's
    /// `--no-sign-verify` (neither GPG nor signapi verification) and
    /// `opts.gpg_verify = false` its `--no-gpg-verify`.
    pub fn add_remote(&mut self, name: &str, url: &str, opts: &AddRemote) -> Result<()> {
        validate_remote_name(name)?;
        if self.config().has_group(&group(name)) {
            return Err(StoreError::Other(format!(
                "remote {name:?} already exists (remove it first with `arbor remote delete {name}`)"
            )));
        }
        let mut cfg = self.config().clone();
        let bad = |e: super::keyfile::KeyFileError| StoreError::Other(e.to_string());
        cfg.set(&group(name), "url", url).map_err(bad)?;
        if !opts.gpg_verify || !opts.sign_verify {
            cfg.set_bool(&group(name), "gpg-verify", false)
                .map_err(bad)?;
        }
        if !opts.sign_verify {
            cfg.set_bool(&group(name), "sign-verify", false)
                .map_err(bad)?;
        }
        for (k, v) in &opts.settings {
            cfg.set(&group(name), k, v).map_err(bad)?;
        }
        self.write_config(cfg)
    }

    /// Removes the remote and, like ostree, its keyring file.
    pub fn delete_remote(&mut self, name: &str) -> Result<()> {
        let mut cfg = self.config().clone();
        if !cfg.remove_group(&group(name)) {
            return Err(StoreError::Other(format!("no remote named {name:?}")));
        }
        self.write_config(cfg)?;
        let keyring = self.remote_keyring_path(name);
        match std::fs::remove_file(&keyring) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&keyring),
            _ => Ok(()),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}

/// Regular files directly in `dir` (symlinks are skipped, as ostree's
/// `d_type == DT_REG` check skips them), sorted by name.
fn sorted_regular_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if entry.file_type().at(dir)?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
