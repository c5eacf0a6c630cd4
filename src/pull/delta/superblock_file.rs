//! A superblock kept in a scratch file and read by range.
//!
//! A superblock may be as large as libostree allows (128 MiB, its metadata
//! limit), almost all of it inline parts when the delta was generated with
//! `--inline`. Holding it whole (and the copies parsing made) took 203 MB
//! for one; so it is received into a scratch file, hashed on the way, and
//! read by range: the framing, the members other than the metadata, and of
//! the metadata only the entries a pull uses (`ostree.endianness`, the
//! commit's detached metadata). Inline parts stay in the file and are
//! applied from it like fetched parts. Other metadata entries are checked
//! as far as their framing goes and otherwise ignored, as libostree
//! ignores them.
//!
//! Delta indexes (as large as libostree allows too) are read the same
//! way, keeping only the deltas a pull could use ([`SuperblockFile::index_deltas`]).
//!
//! Still read into memory: the part headers, fallbacks and commit (what
//! every part's application needs), the detached metadata, and a signed
//! superblock's inner bytes while its ed25519 signatures are checked (the
//! signature covers them whole).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::ostree::delta::superblock::{ENDIANNESS_KEY, MAX_SUPERBLOCK_SIZE};
use crate::ostree::delta::{DeltaError, SignedSuperblock, Superblock, superblock};
use crate::ostree::{Checksum, FormatError, Metadata, Value};

const IO_BUF: usize = 128 * 1024;
type SplitRanges = (Vec<Range<usize>>, Vec<Range<usize>>);
/// Keys longer than this are none of the keys a pull looks for (the
/// longest, `deltas/XX/…-…/commitmeta`, is 109 bytes); they are skipped
/// unread.
const MAX_USED_KEY: u64 = 256;
/// Type strings are read from the end of a value this far back at most;
/// the types a pull uses are 1 to 5 characters.
const TYPE_TAIL: u64 = 64;

/// Why a superblock file could not be received or read.
#[derive(Debug)]
pub(crate) enum SuperblockFileError {
    /// The bytes are not a valid superblock.
    Format(DeltaError),
    /// Reading the source or the scratch file failed.
    Io(std::io::Error),
    TooLarge,
    Interrupted,
}

impl From<DeltaError> for SuperblockFileError {
    fn from(e: DeltaError) -> Self {
        SuperblockFileError::Format(e)
    }
}

impl From<FormatError> for SuperblockFileError {
    fn from(e: FormatError) -> Self {
        SuperblockFileError::Format(e.into())
    }
}

impl From<std::io::Error> for SuperblockFileError {
    fn from(e: std::io::Error) -> Self {
        SuperblockFileError::Io(e)
    }
}

type Result<T> = std::result::Result<T, SuperblockFileError>;

/// A superblock file (signed or not) in a scratch file.
pub(crate) struct SuperblockFile {
    pub file: File,
    pub len: u64,
    /// SHA-256 of the whole file (what summaries and indexes list).
    pub digest: Checksum,
}

impl SuperblockFile {
    /// Copies `src` into `file`, hashing it: at most
    /// [`MAX_SUPERBLOCK_SIZE`] bytes.
    pub fn receive(
        mut file: File,
        mut src: impl Read,
        interrupt: &AtomicBool,
    ) -> Result<SuperblockFile> {
        let max = MAX_SUPERBLOCK_SIZE as u64;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; IO_BUF];
        let mut len: u64 = 0;
        loop {
            if interrupt.load(Ordering::Relaxed) {
                return Err(SuperblockFileError::Interrupted);
            }
            let want = (max + 1 - len).min(IO_BUF as u64) as usize;
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SuperblockFileError::Io(e)),
            };
            len += n as u64;
            if len > max {
                return Err(SuperblockFileError::TooLarge);
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
        }
        Ok(SuperblockFile {
            file,
            len,
            digest: Checksum::from_hasher(hasher),
        })
    }

    /// A superblock file already on disk (`apply-offline`): read in place
    /// (from its start, whatever its position),
    /// hashed, at most [`MAX_SUPERBLOCK_SIZE`] bytes.
    pub fn receive_in_place(file: File, interrupt: &AtomicBool) -> Result<SuperblockFile> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; IO_BUF];
        let mut len: u64 = 0;
        loop {
            if interrupt.load(Ordering::Relaxed) {
                return Err(SuperblockFileError::Interrupted);
            }
            let n = match file.read_at(&mut buf, len) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SuperblockFileError::Io(e)),
            };
            len += n as u64;
            if len > MAX_SUPERBLOCK_SIZE as u64 {
                return Err(SuperblockFileError::TooLarge);
            }
            hasher.update(&buf[..n]);
        }
        Ok(SuperblockFile {
            file,
            len,
            digest: Checksum::from_hasher(hasher),
        })
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(FormatError::Truncated {
                what: "static delta superblock",
            }
            .into());
        }
        Ok(self.file.read_exact_at(buf, off)?)
    }

    fn read_range(&self, r: &Range<u64>) -> Result<Vec<u8>> {
        let mut v = vec![0u8; (r.end - r.start) as usize];
        self.read_at(r.start, &mut v)?;
        Ok(v)
    }

    fn check_zero(&self, r: &Range<u64>, what: &'static str) -> Result<()> {
        if self.read_range(r)?.iter().any(|b| *b != 0) {
            return Err(FormatError::NotNormalForm { what }.into());
        }
        Ok(())
    }

    /// Member ranges (absolute) of a tuple at `at`, from its tail.
    fn split(
        &self,
        at: &Range<u64>,
        tail_len: fn(usize) -> usize,
        split: fn(usize, &[u8]) -> crate::ostree::delta::error::Result<SplitRanges>,
        what: &'static str,
    ) -> Result<Vec<Range<u64>>> {
        let len =
            usize::try_from(at.end - at.start).map_err(|_| FormatError::Truncated { what })?;
        let t = tail_len(len) as u64;
        if t > at.end - at.start {
            return Err(FormatError::Truncated { what }.into());
        }
        let tail = self.read_range(&(at.end - t..at.end))?;
        let (members, padding) = split(len, &tail)?;
        let abs = |r: &Range<usize>| at.start + r.start as u64..at.start + r.end as u64;
        for p in &padding {
            self.check_zero(&abs(p), what)?;
        }
        Ok(members.iter().map(abs).collect())
    }

    /// Reads the superblock: its inline parts are left in the file.
    pub fn load(&self) -> Result<Loaded> {
        let mut magic = [0u8; 8];
        let signed = if self.len >= 8 {
            self.read_at(0, &mut magic)?;
            superblock::is_signed(&magic)
        } else {
            false
        };
        let (inner, signatures) = if signed {
            let m = self.split(
                &(0..self.len),
                SignedSuperblock::tail_len,
                SignedSuperblock::split_from_tail,
                "signed static delta superblock",
            )?;
            let sigs = Metadata::parse(&self.read_range(&m[2])?)?;
            (m[1].clone(), Some(sigs))
        } else {
            (0..self.len, None)
        };
        let m = self.split(
            &inner,
            Superblock::tail_len,
            Superblock::split_from_tail,
            "static delta superblock",
        )?;
        let rest: Vec<Vec<u8>> = m[1..]
            .iter()
            .map(|r| self.read_range(r))
            .collect::<Result<_>>()?;
        let rest: [&[u8]; 7] = std::array::from_fn(|i| rest[i].as_slice());
        // The keys a pull looks for need the delta's name, from TO and FROM.
        let from = match rest[1] {
            [] => None,
            f => Some(Checksum::from_slice(f, "superblock FROM")?),
        };
        let to = Checksum::from_slice(rest[2], "superblock TO")?;
        let name = crate::ostree::delta::DeltaName::new(from, to);
        let (metadata, inline) = self.scan_metadata(&m[0], &name)?;
        let sb = Superblock::from_members(metadata, &rest)?;
        Ok(Loaded {
            sb,
            inline,
            inner,
            signatures,
        })
    }

    /// Walks the `a{sv}` at `r`, checking its framing: `f` gets each
    /// entry's key (`None` when longer than [`MAX_USED_KEY`], left unread)
    /// and the range of its variant (see [`Self::variant`]).
    fn scan_dict(
        &self,
        r: &Range<u64>,
        what: &'static str,
        mut f: impl FnMut(Option<&str>, Range<u64>) -> Result<()>,
    ) -> Result<()> {
        let bad = || SuperblockFileError::from(FormatError::NotNormalForm { what });
        let len = r.end - r.start;
        let w = offset_size(len);
        if w == 0 {
            return Ok(());
        }
        let read_off = |at: u64, w: usize| -> Result<u64> {
            let mut b = [0u8; 8];
            self.read_at(at, &mut b[..w])?;
            Ok(u64::from_le_bytes(b))
        };
        let body_end = read_off(r.end - w as u64, w)?;
        let table = len.checked_sub(body_end).ok_or_else(bad)?;
        if table == 0 || !table.is_multiple_of(w as u64) {
            return Err(bad());
        }
        let n = table / w as u64;
        let mut prev_end = 0u64;
        for i in 0..n {
            let end = read_off(r.start + body_end + i * w as u64, w)?;
            let start = prev_end.div_ceil(8) * 8;
            if start > end || end > body_end {
                return Err(bad());
            }
            self.check_zero(&(r.start + prev_end..r.start + start), what)?;
            prev_end = end;
            // One `{sv}`: key, padding to 8, variant, the key's end.
            let elen = end - start;
            let ew = offset_size(elen) as u64;
            let e0 = r.start + start;
            if ew == 0 || elen < ew {
                return Err(bad());
            }
            let key_end = read_off(e0 + elen - ew, ew as usize)?;
            let v_start = key_end.div_ceil(8) * 8;
            let v_end = elen - ew;
            if key_end == 0 || v_start > v_end {
                return Err(bad());
            }
            self.check_zero(&(e0 + key_end..e0 + v_start), what)?;
            let v = e0 + v_start..e0 + v_end;
            if key_end > MAX_USED_KEY {
                f(None, v)?;
                continue;
            }
            let key = self.read_range(&(e0..e0 + key_end))?;
            let key = match key.split_last() {
                Some((0, k)) if !k.contains(&0) => std::str::from_utf8(k).map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            f(Some(key), v)?;
        }
        if prev_end != body_end {
            return Err(bad());
        }
        Ok(())
    }

    /// A variant's value range and type string.
    fn variant(&self, v: &Range<u64>, what: &'static str) -> Result<(Range<u64>, String)> {
        let bad = || SuperblockFileError::from(FormatError::NotNormalForm { what });
        let tail_start = v.end - (v.end - v.start).min(TYPE_TAIL);
        let tail = self.read_range(&(tail_start..v.end))?;
        let nul = tail.iter().rposition(|b| *b == 0).ok_or_else(bad)?;
        let typestr = std::str::from_utf8(&tail[nul + 1..]).map_err(|_| bad())?;
        Ok((v.start..tail_start + nul as u64, typestr.to_string()))
    }

    /// The entries of the `a{sv}` at `r` that a pull uses; the ranges of
    /// the inline parts it lists.
    fn scan_metadata(
        &self,
        r: &Range<u64>,
        name: &crate::ostree::delta::DeltaName,
    ) -> Result<(Metadata, BTreeMap<usize, Range<u64>>)> {
        const WHAT: &str = "superblock metadata";
        let bad = || SuperblockFileError::from(FormatError::NotNormalForm { what: WHAT });
        let mut md = Metadata::new();
        let mut inline = BTreeMap::new();
        let prefix = name.dir();
        let commitmeta_key = name.commitmeta_key();
        self.scan_dict(r, WHAT, |key, v| {
            let Some(key) = key else { return Ok(()) };
            let inline_index = key
                .strip_prefix(prefix.as_str())
                .and_then(|k| k.strip_prefix('/'))
                // Exactly the decimal `part_path` writes ("+1", "01" are
                // other keys).
                .filter(|k| {
                    k.bytes().all(|b| b.is_ascii_digit()) && (!k.starts_with('0') || *k == "0")
                })
                .and_then(|k| k.parse::<usize>().ok());
            if key != ENDIANNESS_KEY && key != commitmeta_key && inline_index.is_none() {
                return Ok(());
            }
            let (value, typestr) = self.variant(&v, WHAT)?;
            match inline_index {
                // The `(yay)` is exactly the part file: compression byte,
                // then the payload (no framing: `ay` is last).
                Some(i) if typestr == "(yay)" && value.end > value.start => {
                    if inline.insert(i, value).is_some() {
                        return Err(bad());
                    }
                }
                // libostree ignores an entry of another type.
                Some(_) => {}
                None => {
                    let data = self.read_range(&value)?;
                    // Both keys hold types kept raw (`y`, `a{sv}`).
                    crate::ostree::normal_form::check(&typestr, &data)?;
                    if md.get(key).is_some() {
                        return Err(bad());
                    }
                    md.insert(key, Value::Other { typestr, data });
                }
            }
            Ok(())
        })?;
        Ok((md, inline))
    }

    /// The deltas a delta index (this file) lists that `keep` accepts, the
    /// first digest of each: read entry by entry, so an index of any size
    /// costs memory only for the deltas kept.
    pub fn index_deltas(
        &self,
        mut keep: impl FnMut(&crate::ostree::delta::DeltaName) -> Result<bool>,
    ) -> Result<Vec<(crate::ostree::delta::DeltaName, Checksum)>> {
        use crate::ostree::delta::index::STATIC_DELTAS_KEY;
        const WHAT: &str = "delta index";
        let mut deltas = None;
        self.scan_dict(&(0..self.len), WHAT, |key, v| {
            if key == Some(STATIC_DELTAS_KEY) {
                let (value, typestr) = self.variant(&v, WHAT)?;
                if typestr != "a{sv}" || deltas.is_some() {
                    return Err(FormatError::NotNormalForm { what: WHAT }.into());
                }
                deltas = Some(value);
            }
            Ok(())
        })?;
        let mut out: Vec<(crate::ostree::delta::DeltaName, Checksum)> = Vec::new();
        let Some(r) = deltas else { return Ok(out) };
        self.scan_dict(&r, WHAT, |key, v| {
            // As DeltaList::from_metadata: a malformed entry spoils the list.
            let name = crate::ostree::delta::DeltaName::parse(key.unwrap_or("(too long)"))?;
            let (value, typestr) = self.variant(&v, WHAT)?;
            if typestr != "ay" {
                return Err(FormatError::NotNormalForm { what: WHAT }.into());
            }
            let digest = Checksum::from_slice(&self.read_range(&value)?, "static delta digest")
                .map_err(DeltaError::from)?;
            if !out.iter().any(|(n, _)| *n == name) && keep(&name)? {
                out.push((name, digest));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The inner superblock's bytes (for checking its signatures).
    pub fn read_inner(&self, loaded: &Loaded) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; (loaded.inner.end - loaded.inner.start) as usize];
        self.file.read_exact_at(&mut v, loaded.inner.start)?;
        Ok(v)
    }
}

/// GVariant's framing-offset width for a container of `len` bytes.
fn offset_size(len: u64) -> usize {
    match len {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// A superblock read from its file.
pub(crate) struct Loaded {
    /// Its metadata holds only `ostree.endianness` and the detached
    /// metadata, when present.
    pub sb: Superblock,
    /// Inline parts: their part files' ranges in the superblock file.
    pub inline: BTreeMap<usize, Range<u64>>,
    /// Where the (inner) superblock lies in the file.
    pub inner: Range<u64>,
    /// A signed superblock's signatures.
    pub signatures: Option<Metadata>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::delta::superblock::Endianness;
    use crate::ostree::delta::superblock::tests::sample;

    fn load_bytes(bytes: &[u8]) -> Result<(SuperblockFile, Loaded)> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        let sbf = SuperblockFile::receive_in_place(f, &AtomicBool::new(false))?;
        let l = sbf.load()?;
        Ok((sbf, l))
    }

    /// A delta index read entry by entry: the deltas kept.
    #[test]
    fn reads_indexes() {
        use crate::ostree::delta::DeltaName;
        use crate::ostree::delta::index::{DeltaIndex, DeltaList};
        let c = |b: u8| Checksum::from_array([b; 32]);
        let list = vec![
            (DeltaName::new(Some(c(1)), c(2)), c(10)),
            (DeltaName::scratch(c(2)), c(11)),
            (DeltaName::new(Some(c(3)), c(2)), c(12)),
        ];
        let bytes = DeltaIndex::new(DeltaList(list.clone())).serialize();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let sbf = SuperblockFile::receive_in_place(file, &AtomicBool::new(false)).unwrap();
        let all = sbf.index_deltas(|_| Ok(true)).unwrap();
        assert_eq!(all, list);
        let some = sbf.index_deltas(|n| Ok(n.from != Some(c(3)))).unwrap();
        assert_eq!(some, list[..2].to_vec());
        for cut in 1..bytes.len() {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&bytes[..bytes.len() - cut]).unwrap();
            let sbf = SuperblockFile::receive_in_place(file, &AtomicBool::new(false)).unwrap();
            let _ = sbf.index_deltas(|_| Ok(true));
        }
    }

    /// Read by range, a superblock gives what parsing it whole gives, its
    /// inline parts where they lie; signed too; truncations never panic.
    #[test]
    fn loads_like_parse() {
        for e in [Endianness::Little, Endianness::Big] {
            let sb = sample(e, true);
            let bytes = sb.serialize();
            let signed = {
                let mut md = Metadata::new();
                md.insert("ostree.sign.ed25519", Value::ByteArrays(vec![vec![1; 64]]));
                SignedSuperblock {
                    superblock: &bytes,
                    signatures: md,
                }
                .serialize()
            };
            for (file, is_signed) in [(&bytes, false), (&signed, true)] {
                let (sbf, l) = load_bytes(file).unwrap();
                assert_eq!(sbf.digest, Checksum::digest(file));
                assert_eq!(l.signatures.is_some(), is_signed);
                assert_eq!(sbf.read_inner(&l).unwrap(), bytes);
                assert_eq!(l.sb.parts, sb.parts);
                assert_eq!(l.sb.fallbacks, sb.fallbacks);
                assert_eq!(l.sb.commit, sb.commit);
                assert_eq!(l.sb.endianness, e);
                assert!(!l.sb.endianness_guessed);
                assert_eq!(l.sb.commitmeta(), sb.commitmeta());
                assert_eq!(l.inline.len(), 1);
                let r = &l.inline[&0];
                assert_eq!(
                    &file[r.start as usize..r.end as usize],
                    sb.inline_part(0).unwrap()
                );
                for cut in 1..file.len() {
                    let _ = load_bytes(&file[..file.len() - cut]);
                }
            }
        }
        // Keys that only look like a part's are not inline parts.
        let mut sb = sample(Endianness::Little, false);
        let dir = sb.name().dir();
        for k in ["+0", "00", "0x", ""] {
            sb.metadata.insert(
                format!("{dir}/{k}"),
                Superblock::inline_part_value(b"\0abc"),
            );
        }
        let (_, l) = load_bytes(&sb.serialize()).unwrap();
        assert!(l.inline.is_empty());
        // Without inline parts or metadata at all.
        let mut sb = sample(Endianness::Little, false);
        sb.metadata = Metadata::new();
        let (_, l) = load_bytes(&sb.serialize()).unwrap();
        assert!(l.inline.is_empty() && l.sb.commitmeta().is_none());
        assert!(l.sb.endianness_guessed);
    }
}
