//! `arbor sign`, `arbor gpg-sign`, and the signing options other commands
//! share (`summary -u`, `commit`, `static-delta generate`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use arbor::publish::{SigningKey, sign_commit};

/// Keys that sign, as ostree spells them.
#[derive(Args, Debug, Default, Clone)]
pub struct SigningArgs {
    /// Sign with this secret key (repeatable); for ed25519, the base64 of
    /// libsodium's 64-byte secret key, as `ostree sign` takes it
    #[arg(long = "sign", value_name = "KEY")]
    pub sign: Vec<String>,
    /// Signature type of --sign keys
    #[arg(long, value_name = "TYPE", default_value = "ed25519")]
    pub sign_type: String,
    /// GPG-sign with this key of a GnuPG home directory, through `gpg`
    /// (repeatable)
    #[arg(long = "gpg-sign", value_name = "KEYID")]
    pub gpg_sign: Vec<String>,
    /// GnuPG home directory of --gpg-sign keys [default: gpg's, $GNUPGHOME or ~/.gnupg]
    #[arg(long, value_name = "DIR")]
    pub gpg_homedir: Option<PathBuf>,
    /// GPG-sign with the exported OpenPGP secret key in FILE (armored or
    /// binary, no passphrase), without GnuPG (repeatable)
    #[arg(long = "gpg-key-file", value_name = "FILE")]
    pub gpg_key_file: Vec<PathBuf>,
}

impl SigningArgs {
    pub fn is_empty(&self) -> bool {
        self.sign.is_empty() && self.gpg_sign.is_empty() && self.gpg_key_file.is_empty()
    }

    /// The keys, GPG first then the others in order (ostree's order in
    /// summary.sig). Loaded before any work, so a bad key fails early.
    pub fn keys(&self) -> Result<Vec<SigningKey>> {
        if !self.gpg_sign.is_empty() || self.gpg_homedir.is_some() {
            check_gpg_homedir(self.gpg_homedir.as_ref())?;
        }
        let mut keys = Vec::new();
        for id in &self.gpg_sign {
            keys.push(SigningKey::gpg(id, self.gpg_homedir.as_deref()));
        }
        for f in &self.gpg_key_file {
            keys.push(
                SigningKey::pgp_key_file(f)
                    .with_context(|| format!("--gpg-key-file {}", f.display()))?,
            );
        }
        for (i, k) in self.sign.iter().enumerate() {
            keys.push(
                SigningKey::from_sign_arg(k, &self.sign_type)
                    .with_context(|| format!("--sign key #{}", i + 1))?,
            );
        }
        Ok(keys)
    }
}

fn check_gpg_homedir(dir: Option<&PathBuf>) -> Result<()> {
    if let Some(d) = dir
        && !d.is_dir()
    {
        bail!("--gpg-homedir {}: not a directory", d.display());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Commit to sign (ref, checksum or unique prefix)
    rev: String,
    /// Secret keys (base64), as `ostree sign COMMIT KEY…` takes them
    #[arg(value_name = "KEY")]
    keys: Vec<String>,
    /// Read secret keys from FILE, one base64 key per line
    #[arg(long, value_name = "FILE")]
    keys_file: Option<PathBuf>,
    /// Signature type
    #[arg(short = 's', long, value_name = "TYPE", default_value = "ed25519")]
    sign_type: String,
}

/// `arbor sign REV [KEY…] [--keys-file F]`.
pub fn sign(ctx: &Ctx, a: SignArgs) -> Result<ExitCode> {
    let mut keys = Vec::new();
    for (i, k) in a.keys.iter().enumerate() {
        keys.push(
            SigningKey::from_sign_arg(k, &a.sign_type)
                .with_context(|| format!("key #{}", i + 1))?,
        );
    }
    if let Some(f) = &a.keys_file {
        if a.sign_type != "ed25519" {
            bail!(
                "--keys-file holds ed25519 keys; --sign-type {} is not supported",
                a.sign_type
            );
        }
        keys.extend(SigningKey::ed25519_keys_file(f)?);
    }
    if keys.is_empty() {
        bail!("no key given: pass KEY arguments or --keys-file FILE");
    }
    let repo = ctx.open()?;
    let commit = repo.resolve_rev(&a.rev)?;
    sign_commit(&repo, &commit, &keys)?;
    if ctx.verbose {
        for k in &keys {
            eprintln!("{commit}: signed by {}", k.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct GpgSignArgs {
    /// Commit to sign (ref, checksum or unique prefix)
    rev: String,
    /// GnuPG key IDs (or fingerprints) to sign with, through `gpg`
    #[arg(value_name = "KEYID")]
    key_ids: Vec<String>,
    /// GnuPG home directory holding the keys [default: gpg's]
    #[arg(long, value_name = "DIR")]
    gpg_homedir: Option<PathBuf>,
    /// Sign with the exported OpenPGP secret key in FILE instead of GnuPG
    /// (repeatable)
    #[arg(long = "gpg-key-file", value_name = "FILE")]
    gpg_key_file: Vec<PathBuf>,
}

/// `arbor gpg-sign REV KEYID… [--gpg-homedir DIR] [--gpg-key-file F]`.
pub fn gpg_sign(ctx: &Ctx, a: GpgSignArgs) -> Result<ExitCode> {
    let args = SigningArgs {
        gpg_sign: a.key_ids,
        gpg_homedir: a.gpg_homedir,
        gpg_key_file: a.gpg_key_file,
        ..Default::default()
    };
    if args.is_empty() {
        bail!("no key given: pass KEYID arguments or --gpg-key-file FILE");
    }
    let keys = args.keys()?;
    let repo = ctx.open()?;
    let commit = repo.resolve_rev(&a.rev)?;
    sign_commit(&repo, &commit, &keys)?;
    if ctx.verbose {
        for k in &keys {
            eprintln!("{commit}: signed by {}", k.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}
