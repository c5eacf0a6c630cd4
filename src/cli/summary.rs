//! `arbor summary -u | --view`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use super::sign::SigningArgs;
use arbor::ostree::delta::DeltaList;
use arbor::ostree::{Metadata, Summary, Value, variant_text};
use arbor::publish::{SummaryOptions, update_summary};

#[derive(Args, Debug)]
#[command(
    after_help = "Environment:\n  SOURCE_DATE_EPOCH  seconds since the epoch written as \
ostree.summary.last-modified instead of the current time (reproducible builds); nothing \
else in the summary depends on the clock"
)]
pub struct SummaryArgs {
    /// Regenerate the summary (and summary.sig when signing), the delta
    /// indexes, and set core.indexed-deltas=true
    #[arg(short = 'u', long, conflicts_with = "view")]
    update: bool,
    /// Print the repository's summary
    #[arg(long)]
    view: bool,
    /// Add KEY=VALUE to the summary metadata (repeatable); VALUE is GVariant
    /// text, e.g. -m title="'My repo'" or -m n='uint32 7'
    #[arg(short = 'm', long = "add-metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    #[command(flatten)]
    signing: SigningArgs,
}

pub fn run(ctx: &Ctx, a: SummaryArgs) -> Result<ExitCode> {
    if a.view {
        return view(ctx);
    }
    if !a.update {
        bail!("nothing to do: pass -u to regenerate the summary or --view to print it");
    }
    let mut metadata = Metadata::new();
    for kv in &a.metadata {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("-m {kv:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("-m {kv:?}: the key is empty");
        }
        let value = variant_text::parse(v).with_context(|| {
            format!("-m {kv:?}: VALUE is GVariant text: quote strings, e.g. {k}=\"'{v}'\"")
        })?;
        metadata.insert(k, value);
    }
    let keys = a.signing.keys()?;
    let mut repo = ctx.open()?;
    if !repo.mode().is_archive() {
        eprintln!(
            "warning: {} is a {} repository: `ostree pull` cannot fetch its objects over HTTP \
             (publish an archive repository, e.g. made with `arbor pull --mirror`)",
            repo.path().display(),
            repo.mode()
        );
    }
    let opts = SummaryOptions {
        metadata,
        keys,
        timestamp: None,
    };
    let bars = ctx.progress(true);
    let out = update_summary(&mut repo, &opts, bars, &ctx.interrupt)
        .with_context(|| format!("updating the summary of {}", repo.path().display()))?;
    for d in &out.signed_deltas {
        eprintln!(
            "warning: static delta {d} is signed (for `static-delta apply-offline`): left out of \
             the summary and the delta indexes, since `ostree pull` cannot read a signed \
             superblock; regenerate it without --sign to publish it"
        );
    }
    if ctx.verbose {
        eprintln!(
            "summary: {} refs, {} deltas, {} bytes, {} signature{}",
            out.summary.refs.len(),
            out.deltas,
            out.size,
            out.signatures,
            if out.signatures == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn view(ctx: &Ctx) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let path = repo.path().join("summary");
    let data = std::fs::read(&path)
        .with_context(|| format!("{} (create it with `arbor summary -u`)", path.display()))?;
    let s = Summary::parse(&data).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = String::new();
    render(&s, &mut out)?;
    super::stdout_result(std::io::stdout().lock().write_all(out.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}

/// The summary as `ostree summary --view` prints it.
pub fn render(s: &Summary, out: &mut String) -> Result<()> {
    use std::fmt::Write as _;
    for r in &s.refs {
        writeln!(out, "* {}", r.name)?;
        writeln!(out, "    Latest Commit ({} bytes):", r.commit_size)?;
        writeln!(out, "      {}", r.checksum)?;
        if let Some(Value::Str(v)) = r.metadata.get("ostree.commit.version") {
            writeln!(out, "    Version (ostree.commit.version): {v}")?;
        }
        if let Some(t) = r
            .metadata
            .get("ostree.commit.timestamp")
            .and_then(Value::as_u64_be)
        {
            writeln!(
                out,
                "    Timestamp (ostree.commit.timestamp): {}",
                iso8601(t)
            )?;
        }
        writeln!(out)?;
    }
    for (k, v) in &s.metadata.0 {
        match (k.as_str(), v) {
            ("ostree.summary.mode", Value::Str(m)) => writeln!(out, "Repository Mode ({k}): {m}")?,
            ("ostree.summary.last-modified", _) => writeln!(
                out,
                "Last-Modified ({k}): {}",
                v.as_u64_be().map(iso8601).unwrap_or_default()
            )?,
            ("ostree.summary.expires", _) => writeln!(
                out,
                "Expires ({k}): {}",
                v.as_u64_be().map(iso8601).unwrap_or_default()
            )?,
            ("ostree.summary.tombstone-commits", Value::Bool(b)) => writeln!(
                out,
                "Has Tombstone Commits ({k}): {}",
                if *b { "Yes" } else { "No" }
            )?,
            ("ostree.static-deltas", _) => {
                let mut md = Metadata::new();
                md.insert(k.clone(), v.clone());
                let list = DeltaList::from_metadata(&md)?;
                writeln!(out, "Static Deltas ({k}):")?;
                for (name, digest) in &list.0 {
                    writeln!(out, "  {name}: {digest}")?;
                }
            }
            ("ostree.summary.collection-id", Value::Str(c)) => {
                writeln!(out, "Collection ID ({k}): {c}")?
            }
            _ => writeln!(out, "{k}: {}", render_value(v))?,
        }
    }
    Ok(())
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Bool(b) => b.to_string(),
        Value::U64(n) => format!("uint64 {n}"),
        Value::StrArray(a) => format!(
            "[{}]",
            a.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Bytes(b) => format!("[{}]", hex::encode(b)),
        Value::ByteArrays(a) => format!("{} byte arrays", a.len()),
        Value::NamedStrArrays(a) => format!(
            "[{}]",
            a.iter()
                .map(|(n, l)| format!("('{n}', {l:?})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Other { typestr, data } => format!("<{typestr}> 0x{}", hex::encode(data)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS+00`, as ostree prints summary times.
pub fn iso8601(t: u64) -> String {
    let (y, m, d, h, mi, sec) = super::inspect::utc_fields(t);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}+00")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00+00");
        assert_eq!(super::iso8601(1_796_618_501), "2026-12-07T04:41:41+00");
        assert_eq!(super::iso8601(951_782_400), "2000-02-29T00:00:00+00");
    }
}
