//! `arbor static-delta show`: what a delta of the repository holds, read
//! back from its files (the superblock, signed or not, and each part's
//! payload statistics, as `ostree static-delta show` prints them). The
//! command line only renders [`DeltaInfo`].

use std::io::Read;

use thiserror::Error;

use crate::ostree::ObjectName;
use crate::ostree::delta::superblock::{SignedSuperblock, is_signed};
use crate::ostree::delta::{Compression, DeltaName, Op, PartPayload, Superblock};
use crate::store::Repo;

use super::deltas::read_superblock;
use super::files::PublishIo;

/// Largest decompressed payload a part may declare to be described.
const MAX_SHOWN_PAYLOAD: u64 = 1 << 32;

/// Opcodes of a part, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub open_splice_close: usize,
    pub open: usize,
    pub write: usize,
    pub set_read_source: usize,
    pub unset_read_source: usize,
    pub close: usize,
    pub bspatch: usize,
}

/// A part's payload, summed up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayloadStats {
    pub modes: usize,
    pub xattrs: usize,
    pub blob_size: usize,
    pub ops_size: usize,
    pub ops: OpCounts,
}

/// What could be read of a part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartState {
    Read(PayloadStats),
    /// Neither inline nor a file of the delta's directory.
    Missing,
    /// Why it cannot be described (size, compression, payload, opcodes).
    Unreadable(String),
}

/// A delta as stored.
#[derive(Clone, Debug)]
pub struct DeltaInfo {
    pub name: DeltaName,
    /// A signed superblock (the `OSTSGNDT` wrapper).
    pub signed: bool,
    pub superblock: Superblock,
    /// One per part header, in order.
    pub parts: Vec<PartState>,
}

#[derive(Debug, Error)]
pub enum ShowError {
    #[error(transparent)]
    Io(#[from] PublishIo),
    #[error("parsing the superblock of {name}: {source}")]
    Superblock {
        name: DeltaName,
        #[source]
        source: Box<crate::ostree::delta::DeltaError>,
    },
}

/// Reads delta `name` of the repository: its superblock and its parts.
pub fn describe_delta(repo: &Repo, name: &DeltaName) -> Result<DeltaInfo, ShowError> {
    let raw = read_superblock(repo, name)?;
    let bad = |source| ShowError::Superblock {
        name: *name,
        source: Box::new(source),
    };
    let signed = is_signed(&raw);
    let superblock = if signed {
        Superblock::parse(SignedSuperblock::parse(&raw).map_err(bad)?.superblock)
    } else {
        Superblock::parse(&raw)
    }
    .map_err(bad)?;
    let parts = superblock
        .parts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let file = match superblock.inline_part(i) {
                Some(b) => Ok(Some(b.to_vec())),
                None => read_part(repo, name, i, h.size),
            };
            match file {
                Ok(Some(f)) => match payload_stats(&f, h.size, &h.objects) {
                    Ok(s) => PartState::Read(s),
                    Err(e) => PartState::Unreadable(e),
                },
                Ok(None) => PartState::Missing,
                Err(e) => PartState::Unreadable(e.to_string()),
            }
        })
        .collect();
    Ok(DeltaInfo {
        name: *name,
        signed,
        superblock,
        parts,
    })
}

/// Part file `i` of the delta, at most `size` + 1 bytes; `None` if absent.
fn read_part(
    repo: &Repo,
    name: &DeltaName,
    i: usize,
    size: u64,
) -> Result<Option<Vec<u8>>, PublishIo> {
    let rel = name.part_path(i);
    let path = repo.path().join(&rel);
    let fd = match rustix::fs::openat(
        repo.dir(),
        rel.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(PublishIo::new(path, e.into())),
    };
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| PublishIo::new(&path, e))?;
    Ok(Some(data))
}

/// Payload statistics of a part file of `size` bytes (as its header says)
/// creating `objects`, its decompression bounded by what its xz index
/// declares.
pub fn payload_stats(
    file: &[u8],
    size: u64,
    objects: &[ObjectName],
) -> Result<PayloadStats, String> {
    if file.len() as u64 != size {
        return Err(format!("{} bytes, the header says {size}", file.len()));
    }
    let (&c, rest) = file.split_first().ok_or("empty part")?;
    let payload = match Compression::from_byte(c).map_err(|e| e.to_string())? {
        Compression::None => rest.to_vec(),
        Compression::Xz => {
            let declared =
                crate::ostree::delta::xz::declared_size(rest).map_err(|e| e.to_string())?;
            if declared > MAX_SHOWN_PAYLOAD {
                return Err(format!("declares {declared} bytes decompressed"));
            }
            let mut out = Vec::with_capacity(declared as usize);
            liblzma::read::XzDecoder::new(rest)
                .take(declared + 1)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            if out.len() as u64 != declared {
                return Err(format!(
                    "decompresses to {} bytes, its index says {declared}",
                    out.len()
                ));
            }
            out
        }
    };
    let p = PartPayload::parse(&payload).map_err(|e| e.to_string())?;
    let mut n = OpCounts::default();
    let (mut at, mut obj) = (0usize, 0usize);
    while at < p.ops.len() {
        // What `S` carries depends on the object it creates.
        let next_is_meta = objects.get(obj).is_some_and(|o| o.objtype.is_meta());
        let (op, len) =
            Op::decode(&p.ops[at..], next_is_meta).map_err(|e| format!("opcode at {at}: {e}"))?;
        at += len;
        match op {
            Op::SpliceMeta { .. } | Op::SpliceContent { .. } => {
                obj += 1;
                n.open_splice_close += 1;
            }
            Op::Open { .. } => n.open += 1,
            Op::Write { .. } => n.write += 1,
            Op::SetReadSource { .. } => n.set_read_source += 1,
            Op::UnsetReadSource => n.unset_read_source += 1,
            Op::Close => {
                obj += 1;
                n.close += 1;
            }
            Op::Bspatch { .. } => n.bspatch += 1,
        }
    }
    Ok(PayloadStats {
        modes: p.modes.len(),
        xattrs: p.xattrs.len(),
        blob_size: p.blob.len(),
        ops_size: p.ops.len(),
        ops: n,
    })
}
