//! What to do about an error, in terms of this command line's commands and
//! flags. The library's errors say what went wrong; only the command line
//! knows which of its commands or flags would help, so the hints live here
//! and are looked up by error variant anywhere in an error's chain.

use std::error::Error;

use arbor::checkout::CheckoutError;
use arbor::pull::{FetchErrorKind, PullError, SignatureError, ed25519, gpg};
use arbor::stage::{StageError, State};
use arbor::store::StoreError;

/// The hint for the first error in `e`'s chain that has one.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(of_any)
}

fn of_any(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<StoreError>() {
        of_store(e)
    } else if let Some(e) = e.downcast_ref::<Box<StoreError>>() {
        of_store(e)
    } else if let Some(e) = e.downcast_ref::<CheckoutError>() {
        of_checkout(e)
    } else if let Some(e) = e.downcast_ref::<StageError>() {
        of_stage(e)
    } else if let Some(e) = e.downcast_ref::<PullError>() {
        of_pull(e)
    } else {
        None
    }
}

fn of_store(e: &StoreError) -> Option<String> {
    Some(match e {
        StoreError::NotARepo(path) => {
            format!("create one with `arbor --repo {} init`", path.display())
        }
        StoreError::RefNotFound(_) | StoreError::UnknownRev(_) => {
            "list refs with `arbor refs`".into()
        }
        StoreError::NoSuchRemote { name, .. } => {
            format!("add one with `arbor remote add {name} URL`")
        }
        StoreError::RemoteExists(name) => {
            format!("remove it first with `arbor remote delete {name}`")
        }
        StoreError::SignSpecWithoutVerify => {
            "cannot specify both --sign-verify and --no-sign-verify".into()
        }
        _ => return None,
    })
}

fn of_checkout(e: &CheckoutError) -> Option<String> {
    Some(match e {
        CheckoutError::Exists { .. } => {
            "--union, --union-add or --union-identical merge into an existing tree".into()
        }
        CheckoutError::NotIdentical { .. } => {
            "--union-identical only accepts identical files".into()
        }
        CheckoutError::NotADirectory { .. } | CheckoutError::DirectoryInTheWay { .. } => {
            "--union --whiteouts replaces it".into()
        }
        CheckoutError::Subpath { .. } => {
            "--subpath names a path inside the commit; list them with `arbor ls REV`".into()
        }
        CheckoutError::HardlinkRequired { .. } => {
            "without --require-hardlinks such files are copied".into()
        }
        _ => return None,
    })
}

fn of_stage(e: &StageError) -> Option<String> {
    Some(match e {
        StageError::NoSuchStage { .. } => "list stages with `arbor stage list`".into(),
        StageError::Exists { name, .. } => {
            format!("destroy it first with `arbor stage destroy {name}`")
        }
        StageError::NotUsable {
            name,
            state: State::Incomplete,
            ..
        } => format!("remove it with `arbor stage destroy {name}`"),
        StageError::WorkdirNotEmpty { .. } => "give --workdir an empty or new directory".into(),
        // Transparent wrappers: their source is not in the chain.
        StageError::Store(e) => return of_store(e),
        StageError::Checkout(e) => return of_checkout(e),
        _ => return None,
    })
}

fn of_pull(e: &PullError) -> Option<String> {
    Some(match e {
        PullError::NoSummary { .. } => {
            "name the refs to pull (the server can publish a summary with `ostree summary -u`)"
                .into()
        }
        PullError::BasePartial(_) => "pull that commit completely first, or drop --base".into(),
        PullError::Delta(d) if !d.keeps_objects() => {
            "corrupt static delta at the source (--disable-static-deltas fetches objects instead)"
                .into()
        }
        PullError::DeltaRequired { .. } => {
            "drop --require-static-deltas to fetch objects instead".into()
        }
        PullError::SummaryMissing { kind, setting, .. } => format!(
            "sign the summary on the server: `ostree summary -u` with the {kind} signing key; \
             or set {setting}=false in the remote config to skip the check"
        ),
        PullError::CommitSignature { remote, source, .. }
        | PullError::SummarySignature { remote, source } => return of_signature(remote, source),
        PullError::Fetch(f) if f.kind == FetchErrorKind::Network => {
            "the network kept failing: --network-retries N allows more attempts, \
             --timeout SECS waits longer for a server that stalls"
                .into()
        }
        PullError::ChecksumMismatch { attempts, .. } if *attempts > 1 => {
            "the same object arrived corrupt every time: the server's copy is probably damaged \
             (`ostree fsck` on the server's repository would say)"
                .into()
        }
        _ => return None,
    })
}

/// What to do about a failed signature check, as ostree's messages
/// suggest.
pub fn of_signature(remote: &str, e: &SignatureError) -> Option<String> {
    match e {
        SignatureError::Gpg(gpg::VerifyError::NoValidSignature(failures))
            if failures
                .iter()
                .any(|f| f.reason == gpg::FailureReason::KeyMissing) =>
        {
            Some(format!(
                "import the signing key with `arbor remote gpg-import {remote} KEYFILE`, or see gpgkeypath= in the remote config"
            ))
        }
        SignatureError::Gpg(gpg::VerifyError::NoSignatures) => Some(format!(
            "remote {remote:?} requires signed data; set gpg-verify=false in its config, or re-add it with --no-sign-verify, to disable"
        )),
        SignatureError::Ed25519(
            ed25519::VerifyError::NoMetadata
            | ed25519::VerifyError::NoSignatures
            | ed25519::VerifyError::WrongType(_),
        ) => Some(format!(
            "remote {remote:?} requires ed25519-signed data; set sign-verify=false / sign-verify-summary=false in its config to disable"
        )),
        SignatureError::Ed25519(
            ed25519::VerifyError::NoValidSignature { .. }
            | ed25519::VerifyError::NoTrustedKeys
            | ed25519::VerifyError::AllKeysRevoked { .. },
        ) => Some(format!(
            "trusted keys: verification-ed25519-key / verification-ed25519-file in the config of remote {remote:?}; only when neither is set, /etc/ostree/trusted.ed25519[.d] and /usr/share/ostree/trusted.ed25519[.d] minus revoked.ed25519[.d]"
        )),
        _ => None,
    }
}
