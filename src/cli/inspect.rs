//! Read-only commands: refs, rev-parse, log, ls, cat, show.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Ctx, json, stdout_result};
use arbor::ostree::{
    Checksum, Commit, DirMeta, DirTree, Metadata, ObjectName, ObjectType, Value, Xattrs,
};
use arbor::store::{Repo, StoreError, TreeNode};

/// `arbor refs` without --create/--delete: list them.
pub fn refs(ctx: &Ctx, as_json: bool) -> Result<ExitCode> {
    let repo = ctx.open()?;
    if as_json {
        let refs = repo.list_refs()?;
        let list: Vec<_> = refs.iter().map(|(n, c)| json::ref_entry(n, c)).collect();
        json::print(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    stdout_result((|| {
        for (name, _) in repo.list_refs().map_err(std::io::Error::other)? {
            writeln!(out, "{name}")?;
        }
        out.flush()
    })())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RevParseArgs {
    /// REF, REMOTE:REF, a checksum or unique prefix of one, each optionally
    /// followed by ^ (parent), e.g. main^^
    rev: String,
}

pub fn rev_parse(ctx: &Ctx, a: RevParseArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    println!("{}", repo.resolve_rev(&a.rev)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Revision to start from
    rev: String,
    /// Print the result as JSON (see docs/json.md)
    #[arg(long)]
    json: bool,
}

pub fn log(ctx: &Ctx, a: LogArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let mut c = Some(repo.resolve_rev(&a.rev)?);
    let mut out = String::new();
    let mut commits = Vec::new();
    while let Some(csum) = c {
        let commit = match repo.load_commit(&csum) {
            Ok(commit) => commit,
            Err(StoreError::MissingObject(_)) => {
                out.push_str("<< History beyond this commit not fetched >>\n");
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if a.json {
            commits.push(serde_json::Value::Object(json::commit(&csum, &commit)));
        } else {
            format_commit(&mut out, &csum, &commit);
        }
        c = commit.parent;
    }
    if a.json {
        // `c` is the first commit not present, if the walk stopped early.
        json::print(&serde_json::json!({
            "commits": commits,
            "missing_parent": c.map(|p| p.to_hex()),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    stdout_result(std::io::stdout().lock().write_all(out.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}

/// One commit in `ostree log`'s layout.
fn format_commit(out: &mut String, csum: &Checksum, c: &Commit) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "commit {csum}");
    if let Some(p) = c.parent {
        let _ = writeln!(out, "Parent:  {p}");
    }
    let _ = writeln!(out, "ContentChecksum:  {}", c.content_checksum());
    let _ = writeln!(out, "Date:  {}", format_utc(c.timestamp));
    if let Some(Value::Str(v)) = c.metadata.get("version") {
        let _ = writeln!(out, "Version: {v}");
    }
    out.push('\n');
    if c.subject.is_empty() {
        out.push_str("    (no subject)\n");
    } else {
        indent(out, &c.subject);
    }
    if !c.body.is_empty() {
        out.push('\n');
        indent(out, &c.body);
    }
    out.push('\n');
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
}

/// `YYYY-MM-DD HH:MM:SS +0000` from seconds since the epoch.
fn format_utc(secs: u64) -> String {
    let (y, m, d, h, mi, s) = utc_fields(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000")
}

/// Year, month, day, hour, minute, second (UTC) of seconds since the epoch.
pub fn utc_fields(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Revision whose tree is listed
    rev: String,
    /// Path inside the tree [default: /]
    path: Option<String>,
    /// List subdirectories recursively
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Show checksums (dirtree and dirmeta for directories)
    #[arg(short = 'C', long)]
    checksum: bool,
    /// Show extended attributes
    #[arg(short = 'X', long)]
    xattrs: bool,
}

struct LsOpts {
    checksum: bool,
    xattrs: bool,
    recursive: bool,
}

pub fn ls(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let commit = repo.load_commit(&repo.resolve_rev(&a.rev)?)?;
    let path = a.path.unwrap_or_else(|| "/".into());
    let node = repo.lookup_path(&commit, &path)?;
    let display = normalize_path(&path);
    let opts = LsOpts {
        checksum: a.checksum,
        xattrs: a.xattrs,
        recursive: a.recursive,
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let r = (|| -> Result<()> {
        match node {
            TreeNode::File { checksum } => ls_file(&repo, &mut out, &display, &checksum, &opts)?,
            TreeNode::Dir { tree, meta } => {
                ls_dir_line(&repo, &mut out, &display, &tree, &meta, &opts)?;
                ls_children(&repo, &mut out, &display, &tree, &opts, 0)?;
            }
        }
        out.flush()?;
        Ok(())
    })();
    match r {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {}
        r => r?,
    }
    Ok(ExitCode::SUCCESS)
}

fn normalize_path(p: &str) -> String {
    let comps: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", comps.join("/"))
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

fn ls_children(
    repo: &Repo,
    out: &mut impl Write,
    path: &str,
    tree: &Checksum,
    opts: &LsOpts,
    depth: usize,
) -> Result<()> {
    if depth > arbor::store::commit::MAX_DEPTH {
        bail!(
            "{path}: tree nests deeper than {} levels",
            arbor::store::commit::MAX_DEPTH
        );
    }
    let t: DirTree = repo.load_dirtree(tree)?;
    for f in &t.files {
        ls_file(repo, out, &child_path(path, &f.name), &f.checksum, opts)?;
    }
    for d in &t.dirs {
        let p = child_path(path, &d.name);
        ls_dir_line(repo, out, &p, &d.tree, &d.meta, opts)?;
        if opts.recursive {
            ls_children(repo, out, &p, &d.tree, opts, depth + 1)?;
        }
    }
    Ok(())
}

fn ls_dir_line(
    repo: &Repo,
    out: &mut impl Write,
    path: &str,
    tree: &Checksum,
    meta: &Checksum,
    opts: &LsOpts,
) -> Result<()> {
    let m: DirMeta = repo.load_dirmeta(meta)?;
    let mut line = format!("d0{:04o} {} {} {:>6} ", m.mode & 0o7777, m.uid, m.gid, 0);
    if opts.checksum {
        line.push_str(&format!("{tree} {meta} "));
    }
    if opts.xattrs {
        line.push_str(&format_xattrs(&m.xattrs));
        line.push(' ');
    }
    line.push_str(path);
    writeln!(out, "{line}")?;
    Ok(())
}

fn ls_file(
    repo: &Repo,
    out: &mut impl Write,
    path: &str,
    csum: &Checksum,
    opts: &LsOpts,
) -> Result<()> {
    let obj = repo.open_content(csum)?;
    let h = &obj.header;
    let (t, size) = if h.is_symlink() {
        ('l', 0)
    } else {
        ('-', obj.size)
    };
    let mut line = format!("{t}0{:04o} {} {} {size:>6} ", h.mode & 0o7777, h.uid, h.gid);
    if opts.checksum {
        line.push_str(&format!("{csum} "));
    }
    if opts.xattrs {
        line.push_str(&format_xattrs(&h.xattrs));
        line.push(' ');
    }
    line.push_str(path);
    if h.is_symlink() {
        line.push_str(" -> ");
        line.push_str(&h.symlink_target);
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// `{name=hexvalue, …}`; names are shown as text, values in hex.
fn format_xattrs(x: &Xattrs) -> String {
    let items: Vec<String> = x
        .iter()
        .map(|a| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&a.name),
                hex::encode(&a.value)
            )
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// Revision containing the file
    rev: String,
    /// Path of a file in the tree (symlinks inside the tree are followed)
    path: String,
}

pub fn cat(ctx: &Ctx, a: CatArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let commit = repo.load_commit(&repo.resolve_rev(&a.rev)?)?;
    let TreeNode::File { checksum } = repo.lookup_path_follow(&commit, &a.path)? else {
        bail!("{}: is a directory", a.path);
    };
    let mut obj = repo.open_content(&checksum)?;
    let mut out = std::io::stdout().lock();
    stdout_result(
        std::io::copy(&mut obj.reader, &mut out)
            .map(drop)
            .and_then(|_| out.flush()),
    )
    .with_context(|| format!("reading object {checksum}.file"))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A revision (shows its commit) or CHECKSUM.TYPE (any object)
    object: String,
    /// Print the result as JSON (see docs/json.md)
    #[arg(long)]
    json: bool,
}

pub fn show(ctx: &Ctx, a: ShowArgs) -> Result<ExitCode> {
    use std::fmt::Write as _;
    let repo = ctx.open()?;
    let name = match ObjectName::parse(&a.object) {
        Ok(n) => n,
        Err(_) => ObjectName::new(repo.resolve_rev(&a.object)?, ObjectType::Commit),
    };
    if a.json {
        json::print(&show_json(&repo, &name)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    match name.objtype {
        ObjectType::Commit => {
            let c = repo.load_commit(&name.checksum)?;
            format_commit(&mut s, &name.checksum, &c);
            let _ = writeln!(s, "RootTree:  {}", c.root_tree);
            let _ = writeln!(s, "RootMeta:  {}", c.root_meta);
            format_metadata(&mut s, "Metadata", &c.metadata);
            let detached = ObjectName::new(name.checksum, ObjectType::CommitMeta);
            if repo.has_object(&detached)? {
                let md = Metadata::parse(&repo.load_metadata(&detached)?)?;
                format_metadata(&mut s, "Detached metadata", &md);
            }
            if repo.is_commit_partial(&name.checksum)? {
                s.push_str("Partial: yes (the tree may be incomplete)\n");
            }
        }
        ObjectType::DirTree => {
            let t = repo.load_dirtree(&name.checksum)?;
            let _ = writeln!(s, "dirtree {}", name.checksum);
            for f in &t.files {
                let _ = writeln!(s, "  file {} {}", f.checksum, f.name);
            }
            for d in &t.dirs {
                let _ = writeln!(s, "  dir  {} {} {}/", d.tree, d.meta, d.name);
            }
        }
        ObjectType::DirMeta => {
            let m = repo.load_dirmeta(&name.checksum)?;
            let _ = writeln!(s, "dirmeta {}", name.checksum);
            let _ = writeln!(
                s,
                "  uid {} gid {} mode {:o} xattrs {}",
                m.uid,
                m.gid,
                m.mode,
                format_xattrs(&m.xattrs)
            );
        }
        ObjectType::File => {
            let o = repo.open_content(&name.checksum)?;
            let h = &o.header;
            let _ = writeln!(s, "file {}", name.checksum);
            let _ = writeln!(
                s,
                "  uid {} gid {} mode {:o} size {} xattrs {}",
                h.uid,
                h.gid,
                h.mode,
                o.size,
                format_xattrs(&h.xattrs)
            );
            if h.is_symlink() {
                let _ = writeln!(s, "  symlink -> {}", h.symlink_target);
            }
        }
        ObjectType::CommitMeta => {
            let md = Metadata::parse(&repo.load_metadata(&name)?)?;
            let _ = writeln!(s, "commitmeta {}", name.checksum);
            format_metadata(&mut s, "Detached metadata", &md);
        }
        other => bail!("showing {other} objects is not supported"),
    }
    stdout_result(std::io::stdout().lock().write_all(s.as_bytes()))?;
    Ok(ExitCode::SUCCESS)
}

/// `show --json`: one object with a `type` field (see docs/json.md).
fn show_json(repo: &Repo, name: &ObjectName) -> Result<serde_json::Value> {
    use serde_json::json;
    let c = &name.checksum;
    Ok(match name.objtype {
        ObjectType::Commit => {
            let commit = repo.load_commit(c)?;
            let detached = ObjectName::new(*c, ObjectType::CommitMeta);
            let detached = if repo.has_object(&detached)? {
                Some(json::metadata(&Metadata::parse(
                    &repo.load_metadata(&detached)?,
                )?))
            } else {
                None
            };
            let mut m = serde_json::Map::new();
            m.insert("type".into(), json!("commit"));
            m.extend(json::commit(c, &commit));
            m.insert("detached_metadata".into(), json!(detached));
            m.insert("partial".into(), json!(repo.is_commit_partial(c)?));
            serde_json::Value::Object(m)
        }
        ObjectType::DirTree => json::dirtree(c, &repo.load_dirtree(c)?),
        ObjectType::DirMeta => json::dirmeta(c, &repo.load_dirmeta(c)?),
        ObjectType::File => {
            let o = repo.open_content(c)?;
            let h = &o.header;
            json!({
                "type": "file",
                "checksum": c.to_hex(),
                "uid": h.uid,
                "gid": h.gid,
                "mode": h.mode,
                "size": o.size,
                "symlink_target": h.is_symlink().then(|| h.symlink_target.clone()),
                "xattrs": json::xattrs(&h.xattrs),
            })
        }
        ObjectType::CommitMeta => json!({
            "type": "commitmeta",
            "checksum": c.to_hex(),
            "metadata": json::metadata(&Metadata::parse(&repo.load_metadata(name)?)?),
        }),
        other => bail!("showing {other} objects is not supported"),
    })
}

fn format_metadata(s: &mut String, title: &str, md: &Metadata) {
    use std::fmt::Write as _;
    if md.is_empty() {
        return;
    }
    let _ = writeln!(s, "{title}:");
    for (k, v) in &md.0 {
        let shown = match v {
            Value::Str(x) => format!("{x:?}"),
            Value::StrArray(x) => format!("{x:?}"),
            Value::Bool(b) => b.to_string(),
            // ostree's own integers are big-endian.
            Value::U64(_) if k.starts_with("ostree.") => {
                v.as_u64_be().unwrap_or_default().to_string()
            }
            Value::U64(x) => x.to_string(),
            Value::Bytes(b) => format!("0x{}", hex::encode(b)),
            Value::ByteArrays(a) => format!("[{} byte arrays]", a.len()),
            Value::NamedStrArrays(a) => {
                let items: Vec<String> = a.iter().map(|(n, l)| format!("{n:?}: {l:?}")).collect();
                format!("{{{}}}", items.join(", "))
            }
            Value::Other { typestr, data } => format!("<{} bytes of type {typestr}>", data.len()),
        };
        let _ = writeln!(s, "  {k}: {shown}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00 +0000");
        assert_eq!(super::format_utc(1577836800), "2020-01-01 00:00:00 +0000");
        assert_eq!(super::format_utc(1709251199), "2024-02-29 23:59:59 +0000");
    }
}
