use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::Ctx;
use arbor::pull::gpg::{self, MAX_KEYRING_SIZE};
use arbor::pull::{OpenedSource, PullOptions, PullSource};
use arbor::store::remotes::{AddRemote, SignVerifySpec};
use arbor::store::{RefName, Repo};

#[derive(Args, Debug)]
pub struct RemoteArgs {
    #[command(subcommand)]
    command: RemoteCommand,
}

#[derive(Subcommand, Debug)]
enum RemoteCommand {
    /// Add a remote (written to the repository config as ostree does)
    Add {
        /// Remote name
        name: String,
        /// Base URL of the repository: http(s)://… or file://…
        url: String,
        /// Do not require signatures (GPG or ed25519) on commits
        #[arg(long)]
        no_sign_verify: bool,
        /// Do not require GPG signatures on commits (gpg-verify=false)
        #[arg(long)]
        no_gpg_verify: bool,
        /// Require ed25519 signatures by KEY (base64) or by one of the keys
        /// in FILE (one base64 key per line), as ostree's option:
        /// ed25519=inline:KEY or ed25519=file:FILE (repeatable). GPG
        /// verification stays on unless --no-gpg-verify is given too.
        #[arg(
            long = "sign-verify",
            value_name = "ed25519=inline:KEY|ed25519=file:FILE"
        )]
        sign_verify: Vec<String>,
        /// Trust the GPG keys in FILE (armored or binary) for this remote
        #[arg(long, value_name = "FILE")]
        gpg_import: Option<PathBuf>,
        /// Also write KEY=VALUE in the remote's config section (repeatable),
        /// e.g. gpg-verify-summary=true or gpgkeypath=/etc/keys.gpg. For
        /// https: tls-ca-path=PEM (the only trusted roots),
        /// tls-client-cert-path=PEM with tls-client-key-path=PEM, and
        /// tls-permissive=true (accept any certificate)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Add trusted GPG keys for a remote, to the keyring ostree also reads
    /// (REPO/NAME.trustedkeys.gpg)
    GpgImport {
        /// Remote name
        name: String,
        /// Key files, ASCII-armored or binary (keyrings too)
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Read keys from standard input
        #[arg(long)]
        stdin: bool,
    },
    /// List remotes and their URLs
    List {
        /// Print the result as JSON (see docs/json.md)
        #[arg(long)]
        json: bool,
    },
    /// Remove a remote (its refs under refs/remotes are kept)
    Delete {
        /// Remote name
        name: String,
    },
    /// List the refs a remote offers (from its summary, else its refs/ for
    /// local repositories)
    Refs {
        /// Remote name
        name: String,
        /// Where system-wide ed25519 keys are looked for (see `pull
        /// --sign-key-basedir`)
        #[arg(long, value_name = "DIR")]
        sign_key_basedir: Vec<PathBuf>,
        /// Print the result as JSON (see docs/json.md)
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Ctx, a: RemoteArgs) -> Result<ExitCode> {
    match a.command {
        RemoteCommand::Add {
            name,
            url,
            no_sign_verify,
            no_gpg_verify,
            sign_verify,
            gpg_import,
            settings,
        } => {
            let sign_specs = sign_verify
                .iter()
                .map(|s| SignVerifySpec::parse(s).context("--sign-verify"))
                .collect::<Result<Vec<_>>>()?;
            let settings = settings
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    _ => bail!("--set {kv:?}: expected KEY=VALUE"),
                })
                .collect::<Result<Vec<_>>>()?;
            // Read the keys first, so a bad key file adds nothing.
            let keys = match &gpg_import {
                Some(f) => Some(read_keys(std::slice::from_ref(f), false)?),
                None => None,
            };
            let mut repo = ctx.open_for_write()?;
            repo.add_remote(
                &name,
                &url,
                &AddRemote {
                    gpg_verify: !no_gpg_verify,
                    sign_verify: !no_sign_verify,
                    settings,
                    sign_specs,
                },
            )?;
            if let Some(keys) = keys {
                import_keys(&repo, &name, keys)?;
            }
        }
        RemoteCommand::GpgImport { name, files, stdin } => {
            if files.is_empty() && !stdin {
                bail!("name key files to import, or pass --stdin");
            }
            let repo = ctx.open()?;
            repo.remote(&name)?;
            let keys = read_keys(&files, stdin)?;
            import_keys(&repo, &name, keys)?;
        }
        RemoteCommand::List { json } => {
            let repo = ctx.open()?;
            if json {
                let list: Vec<_> = repo
                    .remotes()
                    .iter()
                    .map(|r| serde_json::json!({ "name": r.name, "url": r.url }))
                    .collect();
                super::json::print(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            for r in repo.remotes() {
                println!("{}\t{}", r.name, r.url);
            }
        }
        RemoteCommand::Delete { name } => {
            let mut repo = ctx.open()?;
            repo.delete_remote(&name)?;
        }
        RemoteCommand::Refs {
            name,
            sign_key_basedir,
            json,
        } => {
            let repo = ctx.open()?;
            let opts = PullOptions {
                jobs: 2,
                sign_key_basedirs: (!sign_key_basedir.is_empty()).then_some(sign_key_basedir),
                ..PullOptions::default()
            };
            let source = OpenedSource::open(&repo, &PullSource::Remote(name.clone()), &opts)?;
            let refs = source.list_refs()?;
            if json {
                let list: Vec<_> = refs
                    .iter()
                    .map(|(r, c)| {
                        super::json::ref_entry(&RefName::Remote(name.clone(), r.clone()), c)
                    })
                    .collect();
                super::json::print(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            for (r, c) in refs {
                println!("{name}:{r}\t{c}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every public key in `files` (and standard input with `stdin`).
fn read_keys(files: &[PathBuf], stdin: bool) -> Result<Vec<pgp::composed::SignedPublicKey>> {
    let mut keys = Vec::new();
    let mut add = |data: &[u8], origin: &str| -> Result<()> {
        let found = gpg::parse_keys(data, origin)?;
        if found.is_empty() {
            bail!("{origin}: no OpenPGP public keys found");
        }
        keys.extend(found);
        Ok(())
    };
    for f in files {
        let data = read_bounded(f)?;
        add(&data, &f.display().to_string())?;
    }
    if stdin {
        let mut data = Vec::new();
        std::io::stdin()
            .take(MAX_KEYRING_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .context("reading keys from standard input")?;
        add(&data, "standard input")?;
    }
    Ok(keys)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEYRING_SIZE as u64 + 1).read_to_end(&mut data))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(data)
}

/// Merges `keys` into the remote's keyring, as `ostree remote gpg-import`
/// does, and reports like it.
fn import_keys(repo: &Repo, name: &str, keys: Vec<pgp::composed::SignedPublicKey>) -> Result<()> {
    let path = repo.remote_keyring_path(name);
    let existing = repo.read_remote_keyring(name)?.unwrap_or_default();
    let (data, outcome) = gpg::merge_keys(&existing, keys, &path.display().to_string())?;
    repo.write_remote_keyring(name, &data)?;
    let n = outcome.new + outcome.updated;
    println!(
        "Imported {n} GPG key{} to remote \"{name}\"",
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}
