//! Remotes, stored in the repository's `config` in ostree's own syntax so
//! that `ostree` sees the same remotes:
//!
//! ```text
//! [remote "origin"]
//! url=https://example.com/repo
//! gpg-verify=false
//! ```

use super::error::{Result, StoreError};
use super::repo::Repo;
use crate::ostree::names::validate_remote_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub url: String,
    /// `gpg-verify` (ostree's default: true).
    pub gpg_verify: bool,
    /// `sign-verify` (ostree's default: false).
    pub sign_verify: bool,
}

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
            sign_verify: flag("sign-verify", false)?,
        })
    }

    /// Adds a remote; `verify = false` is ostree's `--no-sign-verify`
    /// (neither GPG nor signapi verification).
    pub fn add_remote(&mut self, name: &str, url: &str, verify: bool) -> Result<()> {
        validate_remote_name(name)?;
        if self.config().has_group(&group(name)) {
            return Err(StoreError::Other(format!(
                "remote {name:?} already exists (remove it first with `arbor remote delete {name}`)"
            )));
        }
        let mut cfg = self.config().clone();
        let bad = |e: super::keyfile::KeyFileError| StoreError::Other(e.to_string());
        cfg.set(&group(name), "url", url).map_err(bad)?;
        if !verify {
            cfg.set_bool(&group(name), "gpg-verify", false)
                .map_err(bad)?;
            cfg.set_bool(&group(name), "sign-verify", false)
                .map_err(bad)?;
        }
        self.write_config(cfg)
    }

    pub fn delete_remote(&mut self, name: &str) -> Result<()> {
        let mut cfg = self.config().clone();
        if !cfg.remove_group(&group(name)) {
            return Err(StoreError::Other(format!("no remote named {name:?}")));
        }
        self.write_config(cfg)
    }
}
