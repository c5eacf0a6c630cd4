//! Integration commands carried by commits, as morph's system-integration
//! was: each chunk says what must run once the system is assembled
//! (`ldconfig`, `depmod`, `update-ca-certificates`, `fc-cache`...), and the
//! stage runs them in its build environment ([`super::sandbox`]).
//!
//! # In the commit
//! The commit metadata key [`INTEGRATION_KEY`] (`arbor.integration`)
//! holds an array of `(name, argv)`, GVariant type `a(sas)`. `arbor commit
//! --integration NAME=CMD` stores `["sh", "-e", "-c", CMD]`
//! ([`IntegrationCommand::shell`]); other producers may store any argv,
//! which runs without a shell. Names are the order: they are meant to be
//! prefixed like morph's (`00-ldconfig`, `50-fonts`).
//!
//! # Order
//! [`plan`] collects the commands of every layer (a commit stacked twice
//! counts once) and sorts them by name, bytewise; equal names keep layer
//! order (bottom first), then their order in the commit. `stage integrate`
//! runs them one after the other in one sandbox set-up and stops at the
//! first failure, naming the command, the commit and the refs that point
//! to it.

use std::ffi::OsString;
use std::fmt;
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;

use thiserror::Error;

use super::sandbox::{SandboxError, SandboxOptions, Tool};
use super::{StageError, Stages};
use crate::ostree::{Checksum, Metadata, Value};
use crate::progress::{Event, Progress};
use crate::store::{Repo, StoreError};

/// The commit metadata key.
pub const INTEGRATION_KEY: &str = "arbor.integration";
/// Most commands one commit may carry.
pub const MAX_COMMANDS: usize = 1024;
/// Most arguments one command may have.
pub const MAX_ARGS: usize = 4096;
/// Longest command name, in bytes.
pub const MAX_NAME: usize = 255;

/// One command: a name (its place in the order) and what to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrationCommand {
    pub name: String,
    pub argv: Vec<String>,
}

/// An `arbor.integration` value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadIntegration {
    #[error("has type {found}, expected a(sas)")]
    WrongType { found: String },
    #[error("command name {name:?} is {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("command {name:?} has no program to run")]
    EmptyCommand { name: String },
    #[error("command {name:?} has more than {MAX_ARGS} arguments")]
    TooManyArgs { name: String },
    #[error("more than {MAX_COMMANDS} commands")]
    TooManyCommands,
    #[error("command name {name:?} appears twice")]
    Duplicate { name: String },
}

impl IntegrationCommand {
    /// A command running `argv` as is.
    pub fn new(name: impl Into<String>, argv: Vec<String>) -> Result<Self, BadIntegration> {
        let c = IntegrationCommand {
            name: name.into(),
            argv,
        };
        c.check()?;
        Ok(c)
    }

    /// A command running `script` with `sh -e -c` (stops at the first
    /// failing simple command, as morph's integration scripts did).
    pub fn shell(name: impl Into<String>, script: &str) -> Result<Self, BadIntegration> {
        Self::new(
            name,
            vec!["sh".into(), "-e".into(), "-c".into(), script.into()],
        )
    }

    fn check(&self) -> Result<(), BadIntegration> {
        let bad = |reason| BadIntegration::BadName {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(bad("empty"));
        }
        if self.name.len() > MAX_NAME {
            return Err(bad("too long"));
        }
        if self.name.chars().any(char::is_control) {
            return Err(bad("holding control characters"));
        }
        if self.argv.first().is_none_or(String::is_empty) {
            return Err(BadIntegration::EmptyCommand {
                name: self.name.clone(),
            });
        }
        if self.argv.len() > MAX_ARGS {
            return Err(BadIntegration::TooManyArgs {
                name: self.name.clone(),
            });
        }
        Ok(())
    }

    /// The command line, shell-quoted where needed, for messages.
    pub fn display_argv(&self) -> String {
        let quote = |a: &String| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        };
        self.argv.iter().map(quote).collect::<Vec<_>>().join(" ")
    }
}

/// The metadata value for `commands` (checked: valid names and argvs, no
/// name twice).
pub fn to_value(commands: &[IntegrationCommand]) -> Result<Value, BadIntegration> {
    if commands.len() > MAX_COMMANDS {
        return Err(BadIntegration::TooManyCommands);
    }
    let mut seen = std::collections::HashSet::new();
    for c in commands {
        c.check()?;
        if !seen.insert(&c.name) {
            return Err(BadIntegration::Duplicate {
                name: c.name.clone(),
            });
        }
    }
    Ok(Value::NamedStrArrays(
        commands
            .iter()
            .map(|c| (c.name.clone(), c.argv.clone()))
            .collect(),
    ))
}

/// The commands a commit's metadata carries (none without the key).
pub fn from_metadata(metadata: &Metadata) -> Result<Vec<IntegrationCommand>, BadIntegration> {
    let list = match metadata.get(INTEGRATION_KEY) {
        None => return Ok(Vec::new()),
        Some(Value::NamedStrArrays(list)) => list,
        Some(other) => {
            return Err(BadIntegration::WrongType {
                found: other.typestr().to_string(),
            });
        }
    };
    let commands: Vec<IntegrationCommand> = list
        .iter()
        .map(|(name, argv)| IntegrationCommand {
            name: name.clone(),
            argv: argv.clone(),
        })
        .collect();
    to_value(&commands)?;
    Ok(commands)
}

/// One command of a stage, with the layer it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrationStep {
    pub command: IntegrationCommand,
    /// Index in the stage's layers (0: bottom).
    pub layer: usize,
    pub commit: Checksum,
}

/// A commit and the refs that point to it, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub commit: Checksum,
    pub refs: Vec<String>,
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.refs.is_empty() {
            write!(f, "commit {}", self.commit)
        } else {
            write!(f, "{} (commit {})", self.refs.join(", "), self.commit)
        }
    }
}

fn chunk(repo: &Repo, commit: Checksum) -> Chunk {
    let refs = repo
        .list_refs()
        .map(|all| {
            all.into_iter()
                .filter(|(_, c)| *c == commit)
                .map(|(r, _)| r.to_string())
                .collect()
        })
        .unwrap_or_default();
    Chunk { commit, refs }
}

/// Errors of `stage integrate`.
#[derive(Debug, Error)]
pub enum IntegrateError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("reading commit {commit}: {source}")]
    Load {
        commit: Checksum,
        source: StoreError,
    },
    #[error("commit {commit}: {INTEGRATION_KEY} {source}")]
    BadMetadata {
        commit: Checksum,
        source: BadIntegration,
    },
    #[error("integration command {name:?} of {chunk} failed ({status}): {command}")]
    Failed {
        name: String,
        chunk: Box<Chunk>,
        command: String,
        status: ExitStatus,
    },
    #[error("integration command {name:?} of {chunk} could not run: {source}")]
    Run {
        name: String,
        chunk: Box<Chunk>,
        source: SandboxError,
    },
    #[error("interrupted after {done} of {total} integration commands")]
    Interrupted { done: usize, total: usize },
}

/// Every layer's commands, in run order (see the module doc).
pub fn plan(repo: &Repo, layers: &[Checksum]) -> Result<Vec<IntegrationStep>, IntegrateError> {
    let mut steps = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (layer, commit) in layers.iter().enumerate() {
        if !seen.insert(*commit) {
            continue;
        }
        let c = repo
            .load_commit(commit)
            .map_err(|source| IntegrateError::Load {
                commit: *commit,
                source,
            })?;
        let commands =
            from_metadata(&c.metadata).map_err(|source| IntegrateError::BadMetadata {
                commit: *commit,
                source,
            })?;
        steps.extend(commands.into_iter().map(|command| IntegrationStep {
            command,
            layer,
            commit: *commit,
        }));
    }
    steps.sort_by(|a, b| a.command.name.as_bytes().cmp(b.command.name.as_bytes()));
    Ok(steps)
}

/// What `stage integrate` did.
#[derive(Clone, Debug)]
pub struct IntegrateOutcome {
    /// The commands run, in order (all succeeded).
    pub ran: Vec<IntegrationStep>,
    pub tool: Tool,
}

impl Stages<'_> {
    /// Runs the integration commands of stage `name`'s layers in its build
    /// environment, in order, stopping at the first failure. Each command
    /// is announced by an [`Event::Note`] before it runs (`integration
    /// N/TOTAL: NAME of CHUNK: COMMAND`); `interrupt` is
    /// checked between commands (a running one gets the terminal's SIGINT
    /// itself).
    pub fn integrate(
        &self,
        name: &str,
        opts: &SandboxOptions,
        progress: &dyn Progress,
        interrupt: &AtomicBool,
    ) -> Result<IntegrateOutcome, IntegrateError> {
        let layers = self.record(name)?.layers;
        let steps = plan(self.repo, &layers)?;
        let sandbox = self.sandbox(name, opts, progress)?;
        let total = steps.len();
        for (done, step) in steps.iter().enumerate() {
            if crate::progress::check(interrupt).is_err() {
                return Err(IntegrateError::Interrupted { done, total });
            }
            let c = &step.command;
            progress.report(Event::Note(&format!(
                "integration {}/{total}: {} of {}: {}",
                done + 1,
                c.name,
                chunk(self.repo, step.commit),
                c.display_argv()
            )));
            let argv: Vec<OsString> = c.argv.iter().map(OsString::from).collect();
            let status = sandbox.run(&argv).map_err(|source| IntegrateError::Run {
                name: c.name.clone(),
                chunk: Box::new(chunk(self.repo, step.commit)),
                source,
            })?;
            if !status.success() {
                return Err(IntegrateError::Failed {
                    name: c.name.clone(),
                    chunk: Box::new(chunk(self.repo, step.commit)),
                    command: c.display_argv(),
                    status,
                });
            }
        }
        Ok(IntegrateOutcome {
            ran: steps,
            tool: sandbox.tool().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_metadata() {
        let cmds = vec![
            IntegrationCommand::shell("00-ldconfig", "ldconfig").unwrap(),
            IntegrationCommand::new("10-raw", vec!["/bin/true".into(), "a b".into()]).unwrap(),
        ];
        let mut md = Metadata::new();
        md.insert(INTEGRATION_KEY, to_value(&cmds).unwrap());
        let parsed = Metadata::parse(&md.serialize()).unwrap();
        assert_eq!(from_metadata(&parsed).unwrap(), cmds);
        assert_eq!(cmds[1].display_argv(), "/bin/true 'a b'");
        assert_eq!(
            IntegrationCommand::shell("x", "echo 'hi'")
                .unwrap()
                .display_argv(),
            r"sh -e -c 'echo '\''hi'\'''"
        );
        assert_eq!(from_metadata(&Metadata::new()).unwrap(), vec![]);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut md = Metadata::new();
        md.insert(INTEGRATION_KEY, Value::Str("ldconfig".into()));
        assert_eq!(
            from_metadata(&md),
            Err(BadIntegration::WrongType { found: "s".into() })
        );
        for list in [
            vec![("".to_string(), vec!["x".to_string()])],
            vec![("a\nb".to_string(), vec!["x".to_string()])],
            vec![("a".to_string(), vec![])],
            vec![("a".to_string(), vec!["".to_string()])],
            vec![
                ("a".to_string(), vec!["x".to_string()]),
                ("a".to_string(), vec!["y".to_string()]),
            ],
        ] {
            md.insert(INTEGRATION_KEY, Value::NamedStrArrays(list.clone()));
            assert!(from_metadata(&md).is_err(), "{list:?}");
        }
    }
}
