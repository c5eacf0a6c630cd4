//! `arbor static-delta generate | list | show | delete`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::Ctx;
use arbor::ostree::delta::{DeltaName, Endianness};
use arbor::publish::deltas::{delete_delta, list_deltas};
use arbor::publish::show::{DeltaInfo, PartState, describe_delta};
use arbor::publish::{DeltaFrom, DeltaOptions, SigningKey, generate_delta};

#[derive(Args, Debug)]
pub struct StaticDeltaArgs {
    #[command(subcommand)]
    command: DeltaCommand,
}

#[derive(Subcommand, Debug)]
enum DeltaCommand {
    /// Generate a static delta from FROM (default: TO's parent) or from
    /// nothing (--empty) to TO; then run `arbor summary -u` to publish it
    Generate(GenerateArgs),
    /// List the repository's static deltas
    List,
    /// Describe a static delta: its commits, parts and fallbacks
    Show {
        /// FROM-TO or TO (as `static-delta list` prints)
        name: String,
    },
    /// Delete a static delta
    Delete {
        /// FROM-TO or TO (as `static-delta list` prints)
        name: String,
    },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Environment:\n  SOURCE_DATE_EPOCH  seconds since the epoch written as the \
superblock's timestamp instead of the current time (reproducible builds); with it, the same \
commits and options (--jobs included) give the same delta, byte for byte"
)]
struct GenerateArgs {
    /// Target commit (ref, checksum or unique prefix)
    #[arg(long, value_name = "REV")]
    to: String,
    /// Source commit [default: TO's parent]
    #[arg(long, value_name = "REV", conflicts_with = "empty")]
    from: Option<String>,
    /// Delta from nothing: the whole tree of TO
    #[arg(long)]
    empty: bool,
    /// Put the parts inside the superblock (one file, no part files)
    #[arg(long)]
    inline: bool,
    /// Never use bsdiff for modified files (rollsum is still tried)
    #[arg(long)]
    disable_bsdiff: bool,
    /// Close a part once it holds about this many megabytes (10⁶ bytes)
    #[arg(long, value_name = "MB", default_value_t = 32)]
    max_chunk_size: u64,
    /// New files larger than this many megabytes are left out of the parts
    /// and fetched as ordinary objects; 0: never
    #[arg(long, value_name = "MB", default_value_t = 4)]
    min_fallback_size: u64,
    /// Try bsdiff only when the old and new file together are at most this
    /// many megabytes
    #[arg(long, value_name = "MB", default_value_t = 128)]
    max_bsdiff_size: u64,
    /// Sign the superblock with this secret key (repeatable). Signed
    /// superblocks are for `static-delta apply-offline`: `ostree pull` does
    /// not read them, so `summary -u` leaves signed deltas out (over HTTP
    /// the signed summary authenticates each listed delta)
    #[arg(long = "sign", value_name = "KEY")]
    sign: Vec<String>,
    /// Signature type of --sign keys
    #[arg(long, value_name = "TYPE", default_value = "ed25519")]
    sign_type: String,
    /// Also read ed25519 secret keys from FILE, one base64 key per line
    #[arg(long, value_name = "FILE")]
    keys_file: Option<std::path::PathBuf>,
    /// Worker threads for bsdiff and compression [default: one per CPU]
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Allow a FROM that is not an ancestor of TO
    #[arg(long)]
    allow_unrelated: bool,
    /// Do nothing when the delta already exists
    #[arg(short = 'n', long)]
    if_not_exists: bool,
}

const MB: u64 = 1_000_000;

pub fn run(ctx: &Ctx, a: StaticDeltaArgs) -> Result<ExitCode> {
    match a.command {
        DeltaCommand::Generate(g) => generate(ctx, g),
        DeltaCommand::List => {
            let repo = ctx.open()?;
            let mut out = String::new();
            for d in list_deltas(&repo)? {
                out.push_str(&d.to_string());
                out.push('\n');
            }
            if out.is_empty() && ctx.verbose {
                eprintln!("(no static deltas)");
            }
            super::stdout_result(std::io::stdout().lock().write_all(out.as_bytes()))?;
            Ok(ExitCode::SUCCESS)
        }
        DeltaCommand::Show { name } => show(ctx, &name),
        DeltaCommand::Delete { name } => {
            let repo = ctx.open()?;
            let d = DeltaName::parse(&name)?;
            if !delete_delta(&repo, &d)? {
                bail!(
                    "no static delta {name} in {} (see `arbor static-delta list`)",
                    repo.path().display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn generate(ctx: &Ctx, a: GenerateArgs) -> Result<ExitCode> {
    if a.jobs == Some(0) {
        bail!("--jobs must be at least 1");
    }
    let mut keys = Vec::new();
    for (i, k) in a.sign.iter().enumerate() {
        keys.push(
            SigningKey::from_sign_arg(k, &a.sign_type)
                .with_context(|| format!("--sign key #{}", i + 1))?,
        );
    }
    if let Some(f) = &a.keys_file {
        keys.extend(SigningKey::ed25519_keys_file(f)?);
    }
    let repo = ctx.open()?;
    if !repo.mode().is_archive() {
        eprintln!(
            "warning: {} is a {} repository: `ostree pull` cannot fetch its fallback objects or \
             anything else over HTTP; publish an archive repository",
            repo.path().display(),
            repo.mode()
        );
    }
    let to = repo
        .resolve_rev(&a.to)
        .with_context(|| format!("--to {}", a.to))?;
    let mut opts = DeltaOptions::new(to);
    opts.from = match (&a.from, a.empty) {
        (_, true) => DeltaFrom::Empty,
        (Some(f), false) => {
            DeltaFrom::Commit(repo.resolve_rev(f).with_context(|| format!("--from {f}"))?)
        }
        (None, false) => DeltaFrom::Parent,
    };
    opts.inline = a.inline;
    opts.bsdiff = !a.disable_bsdiff;
    let mb = |v: u64, flag: &str| {
        v.checked_mul(MB)
            .with_context(|| format!("--{flag} {v}: too large"))
    };
    opts.max_chunk_size = mb(a.max_chunk_size, "max-chunk-size")?;
    opts.min_fallback_size = mb(a.min_fallback_size, "min-fallback-size")?;
    opts.max_bsdiff_size = mb(a.max_bsdiff_size, "max-bsdiff-size")?;
    opts.keys = keys;
    opts.jobs = a.jobs;
    opts.allow_unrelated = a.allow_unrelated;
    opts.if_not_exists = a.if_not_exists;
    let bars = ctx.progress(false);
    let out = generate_delta(&repo, &opts, bars, &ctx.interrupt).map_err(|e| {
        let hint = match &e {
            arbor::publish::DeltaError::Unrelated { .. } => " (pass --allow-unrelated)",
            _ => "",
        };
        anyhow::anyhow!("{e}{hint}")
    })?;
    bars.clear();
    let name = out.name.expect("generate names its delta");
    if out.skipped {
        if ctx.verbose {
            eprintln!("{name}: exists, not regenerated");
        }
    } else if ctx.verbose {
        eprintln!(
            "{name}: {} part{}, {} objects, {} bytes ({} uncompressed); {} fallback{} ({} bytes); \
             rollsum {} file{} ({} bytes matched), bsdiff {}",
            out.parts,
            if out.parts == 1 { "" } else { "s" },
            out.objects,
            out.size,
            out.usize,
            out.fallbacks,
            if out.fallbacks == 1 { "" } else { "s" },
            out.fallback_size,
            out.rollsum,
            if out.rollsum == 1 { "" } else { "s" },
            out.rollsum_bytes,
            out.bsdiff
        );
    }
    println!("{name}");
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let d = DeltaName::parse(name)?;
    let info = describe_delta(&repo, &d)
        .with_context(|| format!("static delta {name} (see `arbor static-delta list`)"))?;
    let mut o = String::new();
    render(&info, &mut o)?;
    super::stdout_result(std::io::stdout().lock().write_all(o.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}

/// The delta as `ostree static-delta show` prints it, with payload
/// statistics for inline parts too.
fn render(info: &DeltaInfo, o: &mut String) -> std::fmt::Result {
    use std::fmt::Write as _;
    let sb = &info.superblock;
    writeln!(o, "Delta: {}", info.name)?;
    writeln!(o, "Signed: {}", if info.signed { "yes" } else { "no" })?;
    match &sb.from {
        Some(f) => writeln!(o, "From: {f}")?,
        None => writeln!(o, "From <scratch>")?,
    }
    writeln!(o, "To: {}", sb.to)?;
    writeln!(
        o,
        "Endianness: {}{}",
        match sb.endianness {
            Endianness::Little => "little",
            Endianness::Big => "big",
        },
        if sb.endianness_guessed {
            " (heuristic)"
        } else {
            ""
        }
    )?;
    writeln!(o, "Timestamp: {}", sb.timestamp)?;
    writeln!(o, "Number of parents: {}", sb.recurse.len() / 64)?;
    writeln!(o, "Number of fallback entries: {}", sb.fallbacks.len())?;
    let (mut fs, mut fu) = (0u64, 0u64);
    for f in &sb.fallbacks {
        writeln!(o, "  {}", f.object.checksum)?;
        fs += f.size;
        fu += f.usize;
    }
    writeln!(o, "Total Fallback Size: {fs}")?;
    writeln!(o, "Total Fallback Uncompressed Size: {fu}")?;
    writeln!(o, "Number of parts: {}", sb.parts.len())?;
    let (mut ts, mut tu) = (0u64, 0u64);
    for (i, (p, state)) in sb.parts.iter().zip(&info.parts).enumerate() {
        writeln!(
            o,
            "PartMeta{i}: nobjects={} size={} usize={}",
            p.objects.len(),
            p.size,
            p.usize
        )?;
        ts += p.size;
        tu += p.usize;
        match state {
            PartState::Read(s) => {
                let n = &s.ops;
                writeln!(
                    o,
                    "PartPayload{i}: nmodes={} nxattrs={} blobsize={} opsize={}",
                    s.modes, s.xattrs, s.blob_size, s.ops_size
                )?;
                writeln!(
                    o,
                    "PartPayloadOps{i}: openspliceclose={} open={} write={} setread={} \
                     unsetread={} close={} bspatch={}",
                    n.open_splice_close,
                    n.open,
                    n.write,
                    n.set_read_source,
                    n.unset_read_source,
                    n.close,
                    n.bspatch
                )?;
            }
            PartState::Unreadable(e) => writeln!(o, "PartPayload{i}: unreadable: {e}")?,
            PartState::Missing => writeln!(o, "PartPayload{i}: part file missing")?,
        }
    }
    writeln!(o, "Total Part Size: {ts}")?;
    writeln!(o, "Total Part Uncompressed Size: {tu}")?;
    writeln!(o, "Total Size: {}", ts + fs)?;
    writeln!(o, "Total Uncompressed Size: {}", tu + fu)?;
    Ok(())
}
