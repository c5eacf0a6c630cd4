//! `--json`: the command line's machine-readable output, built from the
//! library's Outcome and object types. The schema is documented (and
//! promised stable) in docs/json.md; every type here is one of its shapes.
//!
//! The views are the command line's, not the library's types serialised
//! as they are: the schema is a promise to scripts, and it must not change
//! when a library struct gains, renames or retypes a field (`elapsed` is a
//! `Duration`, refs are `(RefName, Checksum)` pairs, metadata values are
//! GVariants with no single JSON form). Keeping the mapping here also keeps
//! serde out of the library.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use arbor::checkout::Outcome as CheckoutOutcome;
use arbor::ostree::{Checksum, Commit, DirMeta, DirTree, Metadata, ObjectName, Value, Xattrs};
use arbor::pull::PullOutcome;
use arbor::stage::StageInfo;
use arbor::store::RefName;
use arbor::store::fsck::FsckReport;

/// Writes `value` to standard output, pretty-printed, with a final newline.
pub fn print(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    super::stdout_result(
        serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .and_then(|()| out.flush()),
    )
}

/// A ref: `{"ref": "origin:main", "remote": "origin", "name": "main",
/// "commit": HEX}` (`remote` is null for a local branch).
pub fn ref_entry(name: &RefName, commit: &Checksum) -> Json {
    let (remote, branch) = match name {
        RefName::Head(n) => (None, n.as_str()),
        RefName::Remote(r, n) => (Some(r.as_str()), n.as_str()),
    };
    json!({
        "ref": name.to_string(),
        "remote": remote,
        "name": branch,
        "commit": commit.to_hex(),
    })
}

/// `[{"name": "user.x", "value": HEX}]`, in stored order.
pub fn xattrs(x: &Xattrs) -> Json {
    Json::Array(
        x.iter()
            .map(|a| {
                json!({
                    "name": String::from_utf8_lossy(&a.name),
                    "value": hex::encode(&a.value),
                })
            })
            .collect(),
    )
}

/// Metadata as an object: `s` → string, `as` → array of strings, `b` →
/// boolean, `t` → number (ostree's own `ostree.*` keys are big-endian and
/// decoded so), `ay` → `{"bytes": HEX}`, `aay` → `{"byte_arrays": [HEX]}`,
/// `a(sas)` → `[[NAME, [STRING, …]], …]`, anything else → `{"type": TYPESTRING, "bytes": HEX}` (its serialised
/// GVariant).
pub fn metadata(md: &Metadata) -> Json {
    let mut out = Map::new();
    for (k, v) in &md.0 {
        let value = match v {
            Value::Str(s) => json!(s),
            Value::StrArray(a) => json!(a),
            Value::Bool(b) => json!(b),
            Value::U64(_) if k.starts_with("ostree.") => json!(v.as_u64_be().unwrap_or_default()),
            Value::U64(n) => json!(n),
            Value::Bytes(b) => json!({ "bytes": hex::encode(b) }),
            Value::ByteArrays(a) => {
                json!({ "byte_arrays": a.iter().map(hex::encode).collect::<Vec<_>>() })
            }
            // Tuples as arrays: `[["name", ["arg", …]], …]`.
            Value::NamedStrArrays(a) => json!(a),
            Value::Other { typestr, data } => {
                json!({ "type": typestr, "bytes": hex::encode(data) })
            }
        };
        out.insert(k.clone(), value);
    }
    Json::Object(out)
}

/// A commit object, as `log` lists and `show` describes it.
pub fn commit(checksum: &Checksum, c: &Commit) -> Map<String, Json> {
    let version = match c.metadata.get("version") {
        Some(Value::Str(v)) => Some(v.clone()),
        _ => None,
    };
    let Json::Object(m) = json!({
        "checksum": checksum.to_hex(),
        "parent": c.parent.map(|p| p.to_hex()),
        "timestamp": c.timestamp,
        "subject": c.subject,
        "body": c.body,
        "version": version,
        "content_checksum": c.content_checksum().to_hex(),
        "root_tree": c.root_tree.to_hex(),
        "root_meta": c.root_meta.to_hex(),
        "related": c.related.iter().map(|(name, csum)| json!({
            "name": name,
            "commit": csum.to_hex(),
        })).collect::<Vec<_>>(),
        "metadata": metadata(&c.metadata),
    }) else {
        unreachable!("json! of an object literal")
    };
    m
}

pub fn dirtree(checksum: &Checksum, t: &DirTree) -> Json {
    json!({
        "type": "dirtree",
        "checksum": checksum.to_hex(),
        "files": t.files.iter().map(|f| json!({
            "name": f.name,
            "checksum": f.checksum.to_hex(),
        })).collect::<Vec<_>>(),
        "dirs": t.dirs.iter().map(|d| json!({
            "name": d.name,
            "tree": d.tree.to_hex(),
            "meta": d.meta.to_hex(),
        })).collect::<Vec<_>>(),
    })
}

pub fn dirmeta(checksum: &Checksum, m: &DirMeta) -> Json {
    json!({
        "type": "dirmeta",
        "checksum": checksum.to_hex(),
        "uid": m.uid,
        "gid": m.gid,
        "mode": m.mode,
        "xattrs": xattrs(&m.xattrs),
    })
}

pub fn pull(o: &PullOutcome) -> Json {
    json!({
        "refs": o.refs.iter().map(|(n, c)| ref_entry(n, c)).collect::<Vec<_>>(),
        "metadata_fetched": o.metadata_fetched,
        "content_fetched": o.content_fetched,
        "from_cache": o.from_cache,
        "already_present": o.already_present,
        "cache_rejected": o.cache_rejected,
        "deltas": o.deltas.iter().map(|d| json!({
            "from": d.delta.from.map(|c| c.to_hex()),
            "to": d.delta.to.to_hex(),
            "parts_applied": d.parts.parts_applied,
            "parts_skipped": d.parts.parts_skipped + d.parts_left_to_objects,
            "objects_written": d.parts.objects_written,
            "objects_present": d.parts.objects_present,
            "part_bytes": d.parts.part_bytes,
            "fallback_objects": d.fallbacks,
        })).collect::<Vec<_>>(),
        "bytes_transferred": o.bytes_transferred,
        "elapsed_seconds": o.elapsed.as_secs_f64(),
    })
}

pub fn checkout(commit: &Checksum, dest: &std::path::Path, o: &CheckoutOutcome) -> Json {
    json!({
        "commit": commit.to_hex(),
        "dest": dest.to_string_lossy(),
        "method": o.method.to_string(),
        "method_reason": o.method_reason,
        "dirs": o.dirs,
        "dirs_merged": o.dirs_merged,
        "files": o.files,
        "symlinks": o.symlinks,
        "hardlinked": o.hardlinked,
        "reflinked": o.reflinked,
        "copied": o.copied,
        "kept": o.kept,
        "replaced": o.replaced,
        "whiteouts": o.whiteouts,
        "bytes_copied": o.bytes_copied,
        "overlay_xattrs_dropped": o.overlay_xattrs_dropped,
    })
}

pub fn fsck(r: &FsckReport) -> Json {
    json!({
        "objects_checked": r.objects_checked,
        "commits_checked": r.commits_checked,
        "partial_commits": r.partial_commits,
        "problems": r.problems.iter().map(|p| json!({
            "object": p.object.map(|o: ObjectName| o.to_string()),
            "message": p.message,
        })).collect::<Vec<_>>(),
    })
}

pub fn stage(s: &StageInfo) -> Json {
    let record = s.record.as_ref();
    json!({
        "name": s.name,
        "state": s.state.name(),
        "backend": record.and_then(|r| r.backend).map(|b| b.name()),
        "layers": record.map(|r| r.layers.iter().map(|c| c.to_hex()).collect::<Vec<_>>()),
        "root": record.map(|r| r.root().to_string_lossy().into_owned()),
        "upper_bytes": s.upper_bytes,
    })
}
