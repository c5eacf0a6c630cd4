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
//!
//! Ed25519 (ostree's *signapi*, `sign-verify`) keys are named in the remote
//! config (`verification-ed25519-key=BASE64`, `verification-ed25519-file=
//! PATH`); without either, ostree falls back to system-wide key files,
//! listed by [`system_sign_key_files`] and read with [`read_sign_key_file`].
//! Parsing and the loading rules are in [`crate::pull`].

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
    /// `sign-verify` (ostree's default: off).
    pub sign_verify: SignVerifyConfig,
    /// `sign-verify-summary` (ostree's default: off).
    pub sign_verify_summary: SignVerifyConfig,
    /// `verification-ed25519-key`: one base64 public key.
    pub verification_ed25519_key: Option<String>,
    /// `verification-ed25519-file`: a file of base64 public keys, one a line.
    pub verification_ed25519_file: Option<String>,
    /// `gpgkeypath`: key files or directories of key files (`;` or `,`
    /// separated, as ostree splits it).
    pub gpgkeypath: Vec<String>,
    /// The `tls-*` options, for `https://` URLs.
    pub tls: RemoteTls,
}

/// A remote's TLS settings, under libostree's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteTls {
    /// `tls-ca-path`: a PEM file of the only trusted roots, replacing the
    /// system's.
    pub ca_path: Option<PathBuf>,
    /// `tls-client-cert-path` and `tls-client-key-path`: a PEM client
    /// certificate and its key (both, or neither).
    pub client_cert_path: Option<PathBuf>,
    pub client_key_path: Option<PathBuf>,
    /// `tls-permissive`: accept any server certificate.
    pub permissive: bool,
}

/// A `sign-verify` or `sign-verify-summary` value, read as ostree's
/// `verifiers_from_config` (`ostree-repo-pull-verify.c`) reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SignVerifyConfig {
    /// Absent, empty, `false` or `0`.
    #[default]
    Off,
    /// `true` or `1` (GKeyFile's truthy values, exactly): every signature
    /// type the tool supports, each with keys from the remote config if
    /// any, else from the system-wide key files.
    All,
    /// Anything else is a `;`-separated list of signature types (GKeyFile
    /// list syntax); each listed type must have keys in the remote config.
    /// ostree's own `remote add --sign-verify` writes `a,b` for several
    /// types, which its list reader does not split: such a value is one
    /// unknown type name for ostree, and so it is here.
    Types(Vec<String>),
}

impl SignVerifyConfig {
    pub fn is_on(&self) -> bool {
        !matches!(self, SignVerifyConfig::Off)
    }

    fn read(cfg: &super::keyfile::KeyFile, group: &str, key: &str) -> SignVerifyConfig {
        let Some(raw) = cfg.get(group, key) else {
            return SignVerifyConfig::Off;
        };
        match raw.trim_end_matches([' ', '\t', '\n', '\r', '\x0c']) {
            "" | "false" | "0" => SignVerifyConfig::Off,
            "true" | "1" => SignVerifyConfig::All,
            _ => SignVerifyConfig::Types(cfg.get_list(group, key).unwrap_or_default()),
        }
    }
}

/// A `remote add --sign-verify=TYPE=inline:KEY` or `TYPE=file:PATH`
/// option, parsed as ostree's `add_verify_opt` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignVerifySpec {
    pub sign_type: String,
    /// `verification-TYPE-key` (inline) or `verification-TYPE-file`.
    pub option: String,
    pub value: String,
}

impl SignVerifySpec {
    pub fn parse(spec: &str) -> Result<SignVerifySpec> {
        let bad = |reason: String| StoreError::BadSignSpec {
            spec: spec.to_string(),
            reason,
        };
        let Some((sign_type, rest)) = spec.split_once('=') else {
            return Err(bad("failed to parse KEYTYPE=[inline|file]:DATA".into()));
        };
        if sign_type != "ed25519" {
            return Err(bad(format!(
                "signature type {sign_type:?} is not supported (arbor verifies ed25519 only)"
            )));
        }
        let Some((keyref, value)) = rest.split_once(':') else {
            return Err(bad(format!(
                "expected {sign_type}=inline:BASE64KEY or {sign_type}=file:PATH"
            )));
        };
        let option = match keyref {
            "inline" => format!("verification-{sign_type}-key"),
            "file" => format!("verification-{sign_type}-file"),
            _ => {
                return Err(bad(format!(
                    "invalid key reference {keyref:?}, expected inline|file"
                )));
            }
        };
        Ok(SignVerifySpec {
            sign_type: sign_type.to_string(),
            option,
            value: value.to_string(),
        })
    }
}

/// The files ostree reads for system-wide `sign_type` keys when a remote
/// names none (`_ed25519_load_pk` in `ostree-sign-ed25519.c`): for each base
/// directory (`/etc/ostree`, then `DATADIR/ostree` = `/usr/share/ostree`),
/// `<base>/trusted.<type>` (or `revoked.<type>`), then every entry of
/// `<base>/trusted.<type>.d/`. ostree takes the `.d` entries in `readdir`
/// order; they are sorted here (the order only changes messages).
/// `basedirs` replaces the two defaults, like ostree's `basedir` option.
pub fn system_sign_key_files(basedirs: &[PathBuf], sign_type: &str, revoked: bool) -> Vec<PathBuf> {
    let name = format!(
        "{}.{sign_type}",
        if revoked { "revoked" } else { "trusted" }
    );
    let mut out = Vec::new();
    for base in basedirs {
        out.push(base.join(&name));
        let dir = base.join(format!("{name}.d"));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            out.extend(names);
        }
    }
    out
}

/// The default base directories for system-wide signapi keys.
pub const SIGN_KEY_BASEDIRS: [&str; 2] = ["/etc/ostree", "/usr/share/ostree"];

/// Reads a key file, which must be a regular file (symlinks followed, as
/// `g_file_test (G_FILE_TEST_IS_REGULAR)` does); `Ok(None)` if it does not
/// exist; at most `limit + 1` bytes are read so the caller can refuse
/// larger files.
pub fn read_sign_key_file(path: &Path, limit: usize) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    if !meta.is_file() {
        return Err(StoreError::BadKeyFile {
            path: path.to_path_buf(),
            reason: "not a regular file",
        });
    }
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut data))
        .at(path)?;
    Ok(Some(data))
}

/// How a remote is added (`remote add` options).
#[derive(Clone, Debug)]
pub struct AddRemote {
    /// `false`: write `gpg-verify=false` (ostree's `--no-gpg-verify`).
    pub gpg_verify: bool,
    /// `false`: write `sign-verify=false` too (`--no-sign-verify`).
    pub sign_verify: bool,
    /// Extra `key=value` settings (ostree's `--set`).
    pub settings: Vec<(String, String)>,
    /// `--sign-verify=TYPE=inline:KEY|file:PATH`, written after
    /// `settings` as ostree does: the key option, and `sign-verify=TYPE`
    /// (each type once).
    pub sign_specs: Vec<SignVerifySpec>,
}

impl Default for AddRemote {
    fn default() -> Self {
        AddRemote {
            gpg_verify: true,
            sign_verify: true,
            settings: Vec::new(),
            sign_specs: Vec::new(),
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
    /// Whether the config has a `[remote "NAME"]` section (valid or not).
    pub fn has_remote(&self, name: &str) -> bool {
        self.config().has_group(&group(name))
    }

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
        let url = cfg.get(&g, "url").ok_or_else(|| StoreError::NoSuchRemote {
            name: name.to_string(),
            config: self.path().join("config"),
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
            sign_verify: SignVerifyConfig::read(cfg, &g, "sign-verify"),
            sign_verify_summary: SignVerifyConfig::read(cfg, &g, "sign-verify-summary"),
            verification_ed25519_key: cfg.get(&g, "verification-ed25519-key"),
            verification_ed25519_file: cfg.get(&g, "verification-ed25519-file"),
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
            tls: RemoteTls {
                ca_path: cfg.get(&g, "tls-ca-path").map(PathBuf::from),
                client_cert_path: cfg.get(&g, "tls-client-cert-path").map(PathBuf::from),
                client_key_path: cfg.get(&g, "tls-client-key-path").map(PathBuf::from),
                permissive: flag("tls-permissive", false)?,
            },
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
        read_sign_key_file(&self.remote_keyring_path(name), KEY_FILE_LIMIT)
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
                    let data = read_key_file(&file)?;
                    keys.sources.push((file.display().to_string(), data));
                }
            } else {
                let data = read_key_file(path)?;
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
                        let data = read_key_file(&file)?;
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
            return Err(StoreError::RemoteExists(name.to_string()));
        }
        let mut cfg = self.config().clone();
        let bad = |source| StoreError::ConfigWrite {
            path: self.path().join("config"),
            source: Box::new(source),
        };
        cfg.set(&group(name), "url", url).map_err(bad)?;
        if !opts.gpg_verify || !opts.sign_verify {
            cfg.set_bool(&group(name), "gpg-verify", false)
                .map_err(bad)?;
        }
        if !opts.sign_verify {
            cfg.set_bool(&group(name), "sign-verify", false)
                .map_err(bad)?;
        }
        if !opts.sign_verify && !opts.sign_specs.is_empty() {
            return Err(StoreError::SignSpecWithoutVerify);
        }
        for (k, v) in &opts.settings {
            cfg.set(&group(name), k, v).map_err(bad)?;
        }
        let mut types: Vec<&str> = Vec::new();
        for spec in &opts.sign_specs {
            cfg.set(&group(name), &spec.option, &spec.value)
                .map_err(bad)?;
            if !types.contains(&spec.sign_type.as_str()) {
                types.push(&spec.sign_type);
            }
        }
        if !types.is_empty() {
            // ostree joins several types with ',' (which its own reader
            // does not split); one type, the only one arbor has, is the
            // same either way.
            cfg.set(&group(name), "sign-verify", &types.join(";"))
                .map_err(bad)?;
        }
        self.write_config(cfg)
    }

    /// Removes the remote and, like ostree, its keyring file.
    pub fn delete_remote(&mut self, name: &str) -> Result<()> {
        // The name becomes part of the keyring's path below.
        validate_remote_name(name)?;
        let mut cfg = self.config().clone();
        if !cfg.remove_group(&group(name)) {
            return Err(StoreError::NoSuchRemote {
                name: name.to_string(),
                config: self.path().join("config"),
            });
        }
        self.write_config(cfg)?;
        let keyring = self.remote_keyring_path(name);
        match std::fs::remove_file(&keyring) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&keyring),
            _ => Ok(()),
        }
    }
}

/// Key files are read up to this size plus one byte, so a huge (or
/// endless, like `/dev/zero`) one is refused by the key parsers' own limit
/// instead of exhausting memory.
pub const KEY_FILE_LIMIT: usize = 64 << 20;

/// A key file that must exist (a `gpgkeypath=` entry or a file found in a
/// key directory), read with [`KEY_FILE_LIMIT`].
fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    read_sign_key_file(path, KEY_FILE_LIMIT)?.ok_or_else(|| StoreError::BadKeyFile {
        path: path.to_path_buf(),
        reason: "key file not found",
    })
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
