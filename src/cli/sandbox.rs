//! The build-environment options shared by `stage exec --sandbox`, `stage
//! integrate` and `stage create --integrate`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use arbor::progress::Event;
use arbor::stage::sandbox::{Bind, Network, SandboxOptions, SandboxTool};

#[derive(Args, Debug, Default)]
pub struct SandboxArgs {
    /// Network of the build environment: `none` (a namespace of its own
    /// with only loopback) or `host` [default: none]
    #[arg(long, value_enum, value_name = "none|host")]
    network: Option<Network>,
    /// Mount the host's SRC (file or directory) at DST, writable
    /// (repeatable; DST is created if missing and never committed)
    #[arg(long = "bind", value_name = "SRC:DST")]
    bind: Vec<String>,
    /// Mount the host's SRC at DST, read-only (repeatable)
    #[arg(long = "ro-bind", value_name = "SRC:DST")]
    ro_bind: Vec<String>,
    /// Set a variable in the command's environment (repeatable). The
    /// environment is otherwise only PATH, HOME=/root, LANG=C.UTF-8, PWD=/
    /// and SOURCE_DATE_EPOCH when arbor has it
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Which implementation sets the build environment up; `-v` says which
    /// ran [default: auto]
    #[arg(long, value_enum, value_name = "TOOL")]
    sandbox_tool: Option<SandboxTool>,
}

impl SandboxArgs {
    /// Whether any option was given (they mean nothing without a sandbox).
    pub fn given(&self) -> bool {
        self.network.is_some()
            || !self.bind.is_empty()
            || !self.ro_bind.is_empty()
            || !self.env.is_empty()
            || self.sandbox_tool.is_some()
    }

    pub fn options(&self) -> Result<SandboxOptions> {
        let mut opts = SandboxOptions::default();
        opts.network = self.network.unwrap_or_default();
        opts.tool = self.sandbox_tool.unwrap_or_default();
        for (specs, read_only, flag) in [
            (&self.bind, false, "--bind"),
            (&self.ro_bind, true, "--ro-bind"),
        ] {
            for spec in specs {
                let Some((src, dst)) = spec.split_once(':') else {
                    bail!("{flag} {spec:?}: expected SRC:DST");
                };
                if src.is_empty() || dst.is_empty() {
                    bail!("{flag} {spec:?}: expected SRC:DST, both non-empty");
                }
                opts.binds.push(Bind {
                    source: PathBuf::from(src),
                    dest: PathBuf::from(dst),
                    read_only,
                });
            }
        }
        if let Some(sde) = std::env::var_os("SOURCE_DATE_EPOCH") {
            opts.set_env("SOURCE_DATE_EPOCH", sde);
        }
        for kv in &self.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--env {kv:?}: expected KEY=VALUE");
            };
            if k.is_empty() {
                bail!("--env {kv:?}: the name is empty");
            }
            opts.set_env(k, v);
        }
        Ok(opts)
    }
}

/// Prints the library's notes on stderr when `show` is set.
pub fn notes(show: bool) -> impl Fn(Event<'_>) + Sync {
    move |e| {
        if let Event::Note(n) = e
            && show
        {
            eprintln!("{n}");
        }
    }
}

/// The exit code for a command's status (128+N for signal N).
pub fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };
    code.clamp(0, 255) as u8
}
