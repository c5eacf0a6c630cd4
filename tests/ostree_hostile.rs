//! Hostile-input tests for the pure OSTree format parsers (`arbor::ostree`).
//!
//! * arbitrary bytes never panic any parser, and whatever a parser accepts
//!   re-serializes to exactly the input (normal form);
//! * valid objects built from arbitrary values survive truncation, bit and
//!   byte flips, insertions, deletions and appended bytes without a panic;
//! * arbitrary valid values round-trip through serialize/parse;
//! * hand-crafted invalid objects are rejected with the right error;
//! * large inputs parse quickly, and hostile length fields do not allocate.
//!
//! A per-thread counting global allocator measures the peak heap use of a
//! single parse, so "does not allocate 4 GiB" is an assertion, not a hope.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use arbor::ostree::content::{self, FRAME_PREFIX, MAX_HEADER_SIZE, MAX_SYMLINK_TARGET};
use arbor::ostree::mode::{S_IFDIR, S_IFLNK, S_IFREG};
use arbor::ostree::names::{self, MAX_FILE_NAME};
use arbor::ostree::xattrs::MAX_XATTR_VALUE;
use arbor::ostree::{
    ArchiveHeader, Checksum, Commit, DirMeta, DirTree, FileHeader, FormatError, MAX_METADATA_SIZE,
    Metadata, ObjectName, ObjectType, TreeDir, TreeFile, Value, Xattr, Xattrs,
};
use gvariant::{Marker, gv};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;

// ---------------------------------------------------------------------------
// Peak-allocation tracking (per thread, so parallel tests do not interfere).

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(size);
        live.set(now);
        let _ = PEAK.try_with(|p| {
            if now > p.get() {
                p.set(now);
            }
        });
    });
}

fn note_dealloc(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_dealloc(layout.size());
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak number of heap bytes it
/// had live at once on this thread (above what was live before).
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, peak.saturating_sub(base))
}

// ---------------------------------------------------------------------------
// The parsers under test, each as "bytes -> re-serialized bytes".

type Reser = fn(&[u8]) -> Result<Vec<u8>, FormatError>;

fn commit_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    Commit::parse(d).map(|v| v.serialize())
}
fn dirtree_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    DirTree::parse(d).map(|v| v.serialize())
}
fn dirmeta_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    DirMeta::parse(d).map(|v| v.serialize())
}
fn metadata_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    Metadata::parse(d).map(|v| v.serialize())
}
fn header_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    FileHeader::parse(d).map(|v| v.serialize())
}
/// bare-user `user.ostreemeta`; a symlink gets the target "t".
fn ostreemeta_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    let h = FileHeader::from_ostreemeta(d, "t".into())?;
    if h.is_symlink() {
        assert_eq!(h.symlink_target, "t");
    } else {
        assert_eq!(h.symlink_target, "");
    }
    // The checksum stream of the header must be computable.
    let _ = h.serialize();
    Ok(h.to_ostreemeta())
}
/// A `.filez` prefix: the framed header is re-serialized and whatever
/// follows it (the deflate stream) is carried over unchanged.
fn archive_reser(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    let a = content::parse_archive_header(d)?;
    check_archive_header(d, &a);
    let mut out = a.header.archive_prefix(a.size);
    out.extend_from_slice(&d[a.data_offset..]);
    Ok(out)
}

fn check_archive_header(d: &[u8], a: &ArchiveHeader) {
    assert_eq!(content::archive_header_len(d), Ok(a.data_offset));
    assert!(a.data_offset <= d.len());
    assert!(a.header.is_regular() || a.header.is_symlink());
    if a.header.is_symlink() {
        assert_eq!(a.size, 0);
    }
}

const PARSERS: &[(&str, Reser)] = &[
    ("commit", commit_reser),
    ("dirtree", dirtree_reser),
    ("dirmeta", dirmeta_reser),
    ("metadata", metadata_reser),
    ("file header", header_reser),
    ("user.ostreemeta", ostreemeta_reser),
    ("archive header", archive_reser),
];

/// Heap budget of one parse: a few copies of the input plus per-element
/// bookkeeping (a `Vec<String>` costs 24 bytes per element and an element
/// can be as small as one framing byte).
fn alloc_budget(len: usize) -> usize {
    64 * len + 256 * 1024
}

/// `f(data)` must not panic, must stay within the heap budget, and when it
/// accepts `data` the re-serialization must be exactly `data`.
fn check_parser(name: &str, f: Reser, data: &[u8]) -> Result<(), FormatError> {
    let (r, peak) = peak_alloc(|| f(data));
    assert!(
        peak <= alloc_budget(data.len()),
        "{name}: parsing {} bytes peaked at {peak} heap bytes",
        data.len()
    );
    match r {
        Ok(out) => {
            assert!(
                out == data,
                "{name}: accepted bytes that do not re-serialize to themselves:\n in  {}\n out {}",
                hex::encode(data),
                hex::encode(&out)
            );
            Ok(())
        }
        Err(e) => {
            // Error messages stay bounded whatever the input.
            assert!(e.to_string().len() < 2048, "{name}: huge error message");
            Err(e)
        }
    }
}

fn check_all_parsers(data: &[u8]) {
    for (name, f) in PARSERS {
        let _ = check_parser(name, *f, data);
    }
    // archive_header_len: only the 8-byte frame prefix matters.
    match content::archive_header_len(data) {
        Ok(n) => {
            assert!((FRAME_PREFIX..=FRAME_PREFIX + MAX_HEADER_SIZE).contains(&n));
            assert_eq!(
                n - FRAME_PREFIX,
                u32::from_be_bytes(data[..4].try_into().unwrap()) as usize
            );
            assert_eq!(&data[4..8], &[0; 4]);
        }
        Err(e) => assert!(data.len() < FRAME_PREFIX || !matches!(e, FormatError::Truncated { .. })),
    }
}

fn check_all_string_parsers(s: &str) {
    // Checksum::from_hex: Ok exactly for 64 lowercase hex digits.
    let hex_ok = s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match Checksum::from_hex(s) {
        Ok(c) => {
            assert!(hex_ok, "{s:?}");
            assert_eq!(c.to_hex(), s);
        }
        Err(e) => {
            assert!(!hex_ok, "{s:?}");
            assert!(matches!(e, FormatError::InvalidChecksumHex(_)));
        }
    }
    // ObjectName::parse: Ok exactly for "HEX.TYPE".
    match ObjectName::parse(s) {
        Ok(n) => assert_eq!(n.to_string(), s),
        Err(_) => {
            if let Some((h, t)) = s.split_once('.') {
                assert!(Checksum::from_hex(h).is_err() || ObjectType::from_name(t).is_err());
            }
        }
    }
    // ObjectName::from_loose: whatever it accepts maps back to the same
    // directory and file name.
    for split in [2, 1, 3] {
        if let (Some(dir), Some(file)) = (s.get(..split), s.get(split..))
            && let Some((n, compressed)) = ObjectName::from_loose(dir, file)
        {
            assert_eq!(n.loose_dir(), dir);
            assert_eq!(n.loose_file_name(compressed), file);
        }
    }
    // validate_file_name: exact oracle.
    let name_ok = !s.is_empty()
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.contains('\0')
        && s.len() <= MAX_FILE_NAME;
    match names::validate_file_name(s) {
        Ok(()) => assert!(name_ok, "{s:?}"),
        Err(e) => {
            assert!(!name_ok, "{s:?}");
            assert!(matches!(e, FormatError::InvalidFileName { .. }));
        }
    }
    // validate_ref_name: structural properties of anything accepted, and an
    // exact oracle for ASCII input.
    let r = names::validate_ref_name(s);
    if r.is_ok() {
        assert_ref_shape(s);
    } else {
        assert!(matches!(r, Err(FormatError::InvalidRefName { .. })));
    }
    if s.is_ascii() {
        assert_eq!(r.is_ok(), ascii_ref_oracle(s), "{s:?}");
    }
    // parse_refspec: the parts put back together give the input.
    match names::parse_refspec(s) {
        Ok((Some(remote), r)) => {
            assert_eq!(format!("{remote}:{r}"), s);
            assert!(!remote.is_empty() && !remote.contains('/') && !remote.contains(':'));
            assert_ref_shape(r);
        }
        Ok((None, r)) => {
            assert_eq!(r, s);
            assert_ref_shape(r);
        }
        Err(e) => assert!(matches!(
            e,
            FormatError::InvalidRefName { .. } | FormatError::InvalidRemoteName { .. }
        )),
    }
}

fn assert_ref_shape(r: &str) {
    assert!(!r.is_empty() && r.len() <= names::MAX_REF_NAME, "{r:?}");
    assert!(!r.starts_with('/') && !r.ends_with('/') && !r.contains("//"));
    assert!(!r.contains(':') && !r.contains(char::is_whitespace) && !r.contains('\0'));
    assert!(!arbor::ostree::checksum::is_checksum_hex(r));
    for frag in r.split('/') {
        assert!(!frag.starts_with(['.', '-']), "{r:?}");
    }
}

/// `[A-Za-z0-9_][-._A-Za-z0-9]*` components separated by single `/`.
fn ascii_ref_oracle(s: &str) -> bool {
    let frag_ok = |f: &str| {
        let b = f.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    };
    s.len() <= names::MAX_REF_NAME
        && !arbor::ostree::checksum::is_checksum_hex(s)
        && s.split('/').all(frag_ok)
}

// ---------------------------------------------------------------------------
// Strategies for valid values.

fn checksum() -> impl Strategy<Value = Checksum> {
    any::<[u8; 32]>().prop_map(Checksum::from_array)
}

/// A valid tree entry name: mostly short, sometimes exotic or maximal.
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Z0-9._-]{1,12}",
        3 => "[^/\\x00]{1,8}",
        1 => (250usize..=MAX_FILE_NAME).prop_map(|n| "n".repeat(n)),
    ]
    .prop_filter("'.' and '..' are invalid", |s| s != "." && s != "..")
}

/// Any string GVariant `s` can hold (no NUL).
fn gv_string() -> impl Strategy<Value = String> {
    "[^\\x00]{0,16}"
}

#[derive(Debug, Clone)]
enum Entry {
    File(Checksum),
    Dir(Checksum, Checksum),
}

fn dirtree_with(max: usize) -> impl Strategy<Value = DirTree> {
    let entry = prop_oneof![
        checksum().prop_map(Entry::File),
        (checksum(), checksum()).prop_map(|(t, m)| Entry::Dir(t, m)),
    ];
    // A BTreeMap<String, _> iterates in byte order, which is strcmp order.
    prop::collection::btree_map(file_name(), entry, 0..max).prop_map(|m| {
        let mut t = DirTree::default();
        for (name, e) in m {
            match e {
                Entry::File(checksum) => t.files.push(TreeFile { name, checksum }),
                Entry::Dir(tree, meta) => t.dirs.push(TreeDir { name, tree, meta }),
            }
        }
        t
    })
}

fn dirtree() -> impl Strategy<Value = DirTree> {
    dirtree_with(10)
}

fn value() -> impl Strategy<Value = Value> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        gv_string().prop_map(Value::Str),
        prop::collection::vec(gv_string(), 0..5).prop_map(Value::StrArray),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::U64),
        bytes().prop_map(Value::Bytes),
        prop::collection::vec(bytes(), 0..5).prop_map(Value::ByteArrays),
        any::<u32>().prop_map(|v| Value::Other {
            typestr: "u".into(),
            data: v.to_le_bytes().to_vec(),
        }),
        any::<u8>().prop_map(|v| Value::Other {
            typestr: "y".into(),
            data: vec![v],
        }),
    ]
}

fn metadata_with(max: usize) -> impl Strategy<Value = Metadata> {
    prop::collection::vec(("[^\\x00]{1,20}", value()), 0..max).prop_map(Metadata)
}

fn metadata() -> impl Strategy<Value = Metadata> {
    metadata_with(8)
}

fn xattrs() -> impl Strategy<Value = Xattrs> {
    let name = prop::collection::vec(1u8..=255, 1..20);
    let value = prop::collection::vec(any::<u8>(), 0..48);
    prop::collection::vec((name, value), 0..4).prop_map(|v| {
        Xattrs::from_unsorted(
            v.into_iter()
                .map(|(name, value)| Xattr { name, value })
                .collect(),
        )
        .expect("names are valid")
    })
}

fn file_header() -> impl Strategy<Value = FileHeader> {
    let ids = || (any::<u32>(), any::<u32>(), 0u32..=0o7777, xattrs());
    prop_oneof![
        ids().prop_map(|(uid, gid, perms, xattrs)| FileHeader {
            uid,
            gid,
            mode: S_IFREG | perms,
            symlink_target: String::new(),
            xattrs,
        }),
        (ids(), "[^\\x00]{1,40}").prop_map(|((uid, gid, perms, xattrs), target)| FileHeader {
            uid,
            gid,
            mode: S_IFLNK | perms,
            symlink_target: target,
            xattrs,
        }),
    ]
}

fn archive_header() -> impl Strategy<Value = (FileHeader, u64)> {
    (file_header(), any::<u64>())
        .prop_map(|(h, size)| if h.is_symlink() { (h, 0) } else { (h, size) })
}

fn dirmeta() -> impl Strategy<Value = DirMeta> {
    (any::<u32>(), any::<u32>(), 0u32..=0o7777, xattrs()).prop_map(|(uid, gid, perms, xattrs)| {
        DirMeta {
            uid,
            gid,
            mode: S_IFDIR | perms,
            xattrs,
        }
    })
}

fn commit() -> impl Strategy<Value = Commit> {
    (
        metadata_with(5),
        prop::option::of(checksum()),
        prop::collection::vec((gv_string(), checksum()), 0..3),
        gv_string(),
        gv_string(),
        any::<u64>(),
        checksum(),
        checksum(),
    )
        .prop_map(
            |(metadata, parent, related, subject, body, timestamp, root_tree, root_meta)| Commit {
                metadata,
                parent,
                related,
                subject,
                body,
                timestamp,
                root_tree,
                root_meta,
            },
        )
}

/// A valid object of any kind, serialized, with the parser that reads it.
fn valid_object() -> impl Strategy<Value = (&'static str, Reser, Vec<u8>)> {
    prop_oneof![
        commit().prop_map(|c| ("commit", commit_reser as Reser, c.serialize())),
        dirtree().prop_map(|t| ("dirtree", dirtree_reser as Reser, t.serialize())),
        dirmeta().prop_map(|m| ("dirmeta", dirmeta_reser as Reser, m.serialize())),
        metadata().prop_map(|m| ("metadata", metadata_reser as Reser, m.serialize())),
        file_header().prop_map(|h| ("file header", header_reser as Reser, h.serialize())),
        file_header().prop_map(|h| (
            "user.ostreemeta",
            ostreemeta_reser as Reser,
            h.to_ostreemeta()
        )),
        (archive_header(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|((h, s), tail)| {
            let mut b = h.archive_prefix(s);
            b.extend_from_slice(&tail);
            ("archive header", archive_reser as Reser, b)
        }),
    ]
}

/// Bytes that look a bit like objects: random, but sometimes with a
/// plausible `.filez` frame or a valid object's tail pasted on.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..4096);
    prop_oneof![
        4 => raw.clone(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..256),
        2 => (raw, -4i64..4).prop_map(|(mut body, delta)| {
            let len = (body.len() as i64 + delta).max(0) as u32;
            let mut v = len.to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 4]);
            v.append(&mut body);
            v
        }),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// 1. Arbitrary input never panics; anything accepted is in normal form.

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in hostile_bytes()) {
        check_all_parsers(&data);
    }

    #[test]
    fn arbitrary_strings_never_panic(
        s in prop_oneof![
            any::<String>(),
            "[a-z0-9_.:/-]{0,24}",
            "[0-9a-f]{60,66}(\\.[a-z-]{0,18})?",
            "[0-9a-f]{60,66}(\\.(file|filez|dirtree|dirtreez|commit|commitmeta|tombstone-commit|payload-link|file-xattrs-link)z?)?",
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        check_all_string_parsers(&s);
    }

    #[test]
    fn ostreemeta_with_arbitrary_targets(
        meta in prop_oneof![hostile_bytes(), file_header().prop_map(|h| h.to_ostreemeta())],
        target in "[^\\x00]{0,64}",
    ) {
        if let Ok(h) = FileHeader::from_ostreemeta(&meta, target.clone()) {
            prop_assert_eq!(h.to_ostreemeta(), meta);
            if h.is_symlink() {
                prop_assert_eq!(&h.symlink_target, &target);
            }
            // The header it yields can be serialized and parsed back.
            prop_assert_eq!(FileHeader::parse(&h.serialize()), Ok(h));
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Mutations of valid objects.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_objects_never_panic(
        (name, f, orig) in valid_object(),
        bit_seed in any::<u8>(),
        replacements in prop::collection::vec((any::<Index>(), any::<u8>()), 0..8),
        insertions in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        deletions in prop::collection::vec(any::<Index>(), 0..4),
        tail in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        prop_assert!(check_parser(name, f, &orig).is_ok(), "{} does not parse", name);
        let archive = name == "archive header";
        let header_len = if archive { content::archive_header_len(&orig).unwrap() } else { orig.len() };

        // Truncation at every position.
        for i in 0..orig.len() {
            let r = check_parser(name, f, &orig[..i]);
            if archive {
                if i < header_len {
                    prop_assert!(matches!(r, Err(FormatError::Truncated { .. })), "{:?}", r);
                } else {
                    prop_assert!(r.is_ok());
                }
            } else if name == "commit" {
                // Six consistent framing offsets plus two 32-byte `ay`
                // cannot appear by chance in a prefix.
                prop_assert!(r.is_err(), "truncated commit accepted at {}", i);
            }
            // For the other kinds a prefix can, rarely, be another valid
            // object (see `truncation_can_yield_another_valid_object`);
            // check_parser has then verified it is in normal form, which
            // makes it a different object from `orig`.
        }

        // One bit flipped at every position.
        for i in 0..orig.len() {
            let mut m = orig.clone();
            m[i] ^= 1 << ((bit_seed as usize + i) % 8);
            let r = check_parser(name, f, &m);
            if archive && i >= header_len {
                prop_assert!(r.is_ok(), "deflate bytes are not the header's business");
            }
        }

        // Arbitrary bytes replaced, inserted, deleted.
        if !orig.is_empty() {
            let mut m = orig.clone();
            for (ix, b) in &replacements {
                let i = ix.index(m.len());
                m[i] = *b;
            }
            let _ = check_parser(name, f, &m);

            let mut m = orig.clone();
            for (ix, b) in &insertions {
                m.insert(ix.index(m.len() + 1), *b);
            }
            let _ = check_parser(name, f, &m);

            let mut m = orig.clone();
            for ix in &deletions {
                if m.is_empty() {
                    break;
                }
                m.remove(ix.index(m.len()));
            }
            let _ = check_parser(name, f, &m);
        }

        // Bytes appended.
        let mut m = orig.clone();
        m.extend_from_slice(&tail);
        let r = check_parser(name, f, &m);
        if archive {
            // Trailing bytes are deflate data: same header, same offset.
            let a = content::parse_archive_header(&m).unwrap();
            prop_assert_eq!(a, content::parse_archive_header(&orig).unwrap());
        } else if name == "commit" {
            // For the other kinds a tail can in principle complete another
            // array element (e.g. `61 00 02 03` appended to a dirmeta
            // without xattrs is the xattr ("a", "")), so only normal form
            // is checked for them.
            prop_assert!(r.is_err(), "{} accepted with {} bytes appended", name, tail.len());
        }

        // Every single-byte value at one random position.
        let pos = replacements.first().map_or(0, |(ix, _)| ix.index(orig.len().max(1)));
        if pos < orig.len() {
            for b in 0..=255u8 {
                let mut m = orig.clone();
                m[pos] = b;
                let _ = check_parser(name, f, &m);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Round trips of valid values.

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn dirtree_round_trip(t in dirtree()) {
        t.validate().unwrap();
        let b = t.serialize();
        prop_assert_eq!(DirTree::parse(&b), Ok(t.clone()));
        prop_assert_eq!(t.checksum(), Checksum::digest(&b));
        for f in &t.files {
            prop_assert_eq!(t.file(&f.name), Some(f));
            prop_assert!(t.dir(&f.name).is_none());
        }
        for d in &t.dirs {
            prop_assert_eq!(t.dir(&d.name), Some(d));
        }
    }

    #[test]
    fn dirtree_sort_canonicalizes(t in dirtree(), seed in any::<u64>()) {
        let mut shuffled = t.clone();
        let n = shuffled.files.len();
        if n > 1 {
            shuffled.files.rotate_left(seed as usize % n);
        }
        shuffled.dirs.reverse();
        shuffled.sort();
        prop_assert_eq!(shuffled, t);
    }

    #[test]
    fn dirmeta_round_trip(m in dirmeta()) {
        prop_assert_eq!(DirMeta::parse(&m.serialize()), Ok(m));
    }

    #[test]
    fn metadata_round_trip(m in metadata()) {
        let b = m.serialize();
        prop_assert_eq!(Metadata::parse(&b), Ok(m.clone()));
        for (k, _) in &m.0 {
            // `get` returns the first entry with a key.
            let first = m.0.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v);
            prop_assert_eq!(m.get(k), first);
        }
    }

    #[test]
    fn commit_round_trip(c in commit()) {
        let b = c.serialize();
        prop_assert_eq!(Commit::parse(&b), Ok(c.clone()));
        prop_assert_eq!(c.checksum(), Checksum::digest(&b));
    }

    #[test]
    fn file_header_round_trip(h in file_header()) {
        h.validate().unwrap();
        let b = h.serialize();
        prop_assert_eq!(FileHeader::parse(&b), Ok(h.clone()));
        let prefix = h.checksum_prefix();
        prop_assert_eq!(&prefix[..4], &(b.len() as u32).to_be_bytes()[..]);
        prop_assert_eq!(&prefix[4..8], &[0u8; 4][..]);
        prop_assert_eq!(&prefix[8..], &b[..]);
        let target = h.symlink_target.clone();
        prop_assert_eq!(FileHeader::from_ostreemeta(&h.to_ostreemeta(), target), Ok(h));
    }

    #[test]
    fn archive_header_round_trip((h, size) in archive_header(), data in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut b = h.archive_prefix(size);
        let header_len = b.len();
        b.extend_from_slice(&data);
        prop_assert_eq!(content::archive_header_len(&b[..FRAME_PREFIX]), Ok(header_len));
        let a = content::parse_archive_header(&b).unwrap();
        prop_assert_eq!(a, ArchiveHeader { header: h, size, data_offset: header_len });
    }

    #[test]
    fn names_round_trip(c in checksum(), ty in prop::sample::select(ObjectType::ALL.to_vec()), archive in any::<bool>()) {
        prop_assert_eq!(Checksum::from_hex(&c.to_hex()), Ok(c));
        let n = ObjectName::new(c, ty);
        prop_assert_eq!(ObjectName::parse(&n.to_string()), Ok(n));
        let file = n.loose_file_name(archive);
        let z = archive && !ty.is_meta();
        prop_assert_eq!(ObjectName::from_loose(&n.loose_dir(), &file), Some((n, z)));
        prop_assert_eq!(n.loose_path(archive), format!("{}/{}", n.loose_dir(), file));
    }

    #[test]
    fn refspec_round_trip(
        remote in "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}",
        r in prop::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}", 1..5).prop_map(|v| v.join("/")),
    ) {
        prop_assert_eq!(names::parse_refspec(&r), Ok((None, r.as_str())));
        let spec = format!("{remote}:{r}");
        prop_assert_eq!(names::parse_refspec(&spec), Ok((Some(remote.as_str()), r.as_str())));
    }
}

// ---------------------------------------------------------------------------
// 4. Hand-crafted invalid objects.

fn c(b: u8) -> Checksum {
    Checksum::from_array([b; 32])
}

fn files(names: &[&str]) -> DirTree {
    DirTree {
        files: names
            .iter()
            .map(|n| TreeFile {
                name: n.to_string(),
                checksum: c(0xaa),
            })
            .collect(),
        dirs: vec![],
    }
}

fn dirs(names: &[&str]) -> DirTree {
    DirTree {
        files: vec![],
        dirs: names
            .iter()
            .map(|n| TreeDir {
                name: n.to_string(),
                tree: c(0xbb),
                meta: c(0xcc),
            })
            .collect(),
    }
}

/// Serializes with `\x7f` standing for the NUL that `serialize()` refuses
/// (it panics on a string with a NUL), then puts the NUL in. The
/// placeholder must occur exactly once.
fn with_nul(bytes: Vec<u8>) -> Vec<u8> {
    assert_eq!(bytes.iter().filter(|&&b| b == 0x7f).count(), 1);
    bytes
        .into_iter()
        .map(|b| if b == 0x7f { 0 } else { b })
        .collect()
}

fn reg(mode: u32) -> FileHeader {
    FileHeader {
        uid: 0,
        gid: 0,
        mode,
        symlink_target: String::new(),
        xattrs: Xattrs::new(),
    }
}

fn link(target: &str) -> FileHeader {
    FileHeader {
        mode: S_IFLNK | 0o777,
        symlink_target: target.into(),
        ..reg(0)
    }
}

macro_rules! assert_err {
    ($e:expr, $p:pat) => {{
        let r = $e;
        assert!(matches!(r, Err($p)), "{} = {:?}", stringify!($e), r);
    }};
}

#[test]
fn dirtree_rejects_invalid_names() {
    let long = "x".repeat(MAX_FILE_NAME + 1);
    for bad in ["", ".", "..", "a/b", "/", "a/", "/a", long.as_str()] {
        for t in [
            files(&[bad]),
            dirs(&[bad]),
            files(&["0", bad]),
            dirs(&[bad, "~"]),
        ] {
            assert_err!(
                DirTree::parse(&t.serialize()),
                FormatError::InvalidFileName { .. }
            );
            assert!(t.validate().is_err());
        }
    }
    // 255 bytes is fine, in files and dirs; so are multibyte names.
    let max = "y".repeat(MAX_FILE_NAME);
    let multibyte = "é".repeat(MAX_FILE_NAME / 2); // 254 bytes
    for ok in [max.as_str(), multibyte.as_str(), ".hidden", "...", " "] {
        for t in [files(&[ok]), dirs(&[ok])] {
            assert_eq!(DirTree::parse(&t.serialize()), Ok(t));
        }
    }
    // 256 bytes of two-byte characters.
    let long_mb = "é".repeat(128);
    assert_err!(
        DirTree::parse(&files(&[&long_mb]).serialize()),
        FormatError::InvalidFileName { .. }
    );
}

#[test]
fn embedded_nul_in_s_is_not_normal_form() {
    // dirtree entry names (file and dir).
    for t in [files(&["a\x7fb"]), dirs(&["a\x7fb"]), files(&["\x7f"])] {
        assert_err!(
            DirTree::parse(&with_nul(t.serialize())),
            FormatError::NotNormalForm { .. }
        );
    }
    // commit subject and body, metadata key and string value.
    let base = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: String::new(),
        body: String::new(),
        timestamp: 0,
        root_tree: c(0xaa),
        root_meta: c(0xbb),
    };
    let subj = Commit {
        subject: "x\x7fy".into(),
        ..base.clone()
    };
    let body = Commit {
        body: "\x7fy".into(),
        ..base.clone()
    };
    for b in [subj, body] {
        assert_err!(
            Commit::parse(&with_nul(b.serialize())),
            FormatError::NotNormalForm { .. }
        );
    }
    let key = Metadata(vec![("k\x7f".into(), Value::Bool(true))]);
    let val = Metadata(vec![("k".into(), Value::Str("v\x7fv".into()))]);
    let arr = Metadata(vec![(
        "k".into(),
        Value::StrArray(vec!["a".into(), "\x7f".into()]),
    )]);
    for m in [key, val, arr] {
        let bytes = with_nul(m.serialize());
        let r = Metadata::parse(&bytes);
        assert!(
            matches!(
                r,
                Err(FormatError::NotNormalForm { .. } | FormatError::InvalidMetadata(_))
            ),
            "{r:?}"
        );
    }
    // symlink target.
    assert_err!(
        FileHeader::parse(&with_nul(link("a\x7fb").serialize())),
        FormatError::NotNormalForm { .. } | FormatError::InvalidSymlinkTarget { .. }
    );
}

#[test]
fn invalid_utf8_in_s_is_not_normal_form() {
    // Same placeholder trick, with 0xff (never valid in UTF-8) or a lone
    // continuation byte instead of NUL.
    for bad in [0xffu8, 0x80, 0xc3] {
        let put = |bytes: Vec<u8>| -> Vec<u8> {
            assert_eq!(bytes.iter().filter(|&&b| b == 0x7f).count(), 1);
            bytes
                .into_iter()
                .map(|b| if b == 0x7f { bad } else { b })
                .collect()
        };
        for t in [files(&["a\x7f"]), dirs(&["\x7fb"])] {
            assert_err!(
                DirTree::parse(&put(t.serialize())),
                FormatError::NotNormalForm { .. }
            );
        }
        let commit = Commit {
            metadata: Metadata::new(),
            parent: None,
            related: vec![],
            subject: "s\x7f".into(),
            body: String::new(),
            timestamp: 0,
            root_tree: c(0xaa),
            root_meta: c(0xbb),
        };
        assert_err!(
            Commit::parse(&put(commit.serialize())),
            FormatError::NotNormalForm { .. }
        );
        let m = Metadata(vec![("k\x7f".into(), Value::Str("v".into()))]);
        assert!(Metadata::parse(&put(m.serialize())).is_err());
        assert_err!(
            FileHeader::parse(&put(link("t\x7f").serialize())),
            // Validation runs before the normal-form check, and the
            // lenient reader decodes a bad `s` as "": the error says
            // "empty target".
            FormatError::NotNormalForm { .. } | FormatError::InvalidSymlinkTarget { .. }
        );
    }
}

#[test]
fn dirtree_rejects_unsorted_and_duplicates() {
    for (f, d) in [
        (&["b", "a"][..], &[][..]),
        (&["a", "a"], &[]),
        (&["a", "b", "c", "b"], &[]),
        (&["Z", "a", "_"], &[]), // '_' (0x5f) < 'a' (0x61)
        (&["é", "z"], &[]),      // bytes, not code points or locale
        (&[], &["b", "a"]),
        (&[], &["x", "x"]),
        (&["x"], &["x"]), // both a file and a directory
        (&["a", "m", "z"], &["b", "m"]),
    ] {
        let mut t = files(f);
        t.dirs = dirs(d).dirs;
        assert_err!(
            DirTree::parse(&t.serialize()),
            FormatError::UnsortedOrDuplicate { .. }
        );
    }
    // strcmp order: 'B' < '_' < 'a' < 'é'.
    let ok = files(&["B", "_", "a", "é"]);
    assert_eq!(DirTree::parse(&ok.serialize()), Ok(ok));
}

#[test]
fn dirtree_rejects_wrong_checksum_lengths() {
    let full = [0xaau8; 32];
    for len in [0usize, 1, 31, 33, 64] {
        let short = vec![0x5a; len];
        let f: Vec<(&str, &[u8])> = vec![("a", &short)];
        let none: Vec<(&str, &[u8], &[u8])> = vec![];
        let bytes = gv!("(a(say)a(sayay))").serialize_to_vec(&(&f, &none));
        assert_eq!(
            DirTree::parse(&bytes),
            Err(FormatError::InvalidChecksumLength {
                what: "dirtree file entry",
                len
            })
        );
        let no_files: Vec<(&str, &[u8])> = vec![];
        let d1: Vec<(&str, &[u8], &[u8])> = vec![("d", &short, &full)];
        let d2: Vec<(&str, &[u8], &[u8])> = vec![("d", &full, &short)];
        for (d, what) in [
            (d1, "dirtree subdirectory tree"),
            (d2, "dirtree subdirectory meta"),
        ] {
            let bytes = gv!("(a(say)a(sayay))").serialize_to_vec(&(&no_files, &d));
            assert_eq!(
                DirTree::parse(&bytes),
                Err(FormatError::InvalidChecksumLength { what, len })
            );
        }
    }
    // The 32-byte control parses.
    let f: Vec<(&str, &[u8])> = vec![("a", &full)];
    let none: Vec<(&str, &[u8], &[u8])> = vec![];
    let bytes = gv!("(a(say)a(sayay))").serialize_to_vec(&(&f, &none));
    assert!(DirTree::parse(&bytes).is_ok());
}

#[test]
fn content_headers_reject_bad_modes() {
    let bad_modes = [
        0o020644,             // character device
        0o060644,             // block device
        0o010644,             // fifo
        0o140755,             // socket
        0o040755,             // directory
        0o000644,             // no type
        0o170644,             // S_IFMT all set
        0o100644 | 0o200000,  // bit above S_IFMT
        0o120777 | 0o1000000, // symlink with a stray bit
        0x8000_0000 | 0o100644,
        0xffff_ffff,
    ];
    for m in bad_modes {
        let h = FileHeader {
            symlink_target: if m & 0o170000 == S_IFLNK {
                "t".into()
            } else {
                String::new()
            },
            ..reg(m)
        };
        assert!(h.validate().is_err());
        assert_err!(
            FileHeader::parse(&h.serialize()),
            FormatError::InvalidMode { .. }
        );
        assert_err!(
            content::parse_archive_header(&h.archive_prefix(0)),
            FormatError::InvalidMode { .. }
        );
        assert_err!(
            FileHeader::from_ostreemeta(&h.to_ostreemeta(), "t".into()),
            FormatError::InvalidMode { .. }
        );
    }
    // Every permission bit, setuid/setgid/sticky included, is fine.
    for m in [0o100000, 0o107777, 0o104755, 0o120000, 0o127777] {
        let h = if m & 0o170000 == S_IFLNK {
            FileHeader {
                mode: m,
                ..link("t")
            }
        } else {
            reg(m)
        };
        assert_eq!(FileHeader::parse(&h.serialize()), Ok(h));
    }
}

#[test]
fn content_headers_reject_bad_symlink_targets() {
    assert_err!(
        FileHeader::parse(&link("").serialize()),
        FormatError::InvalidSymlinkTarget { .. }
    );
    let with_target = FileHeader {
        symlink_target: "x".into(),
        ..reg(0o100644)
    };
    assert_err!(
        FileHeader::parse(&with_target.serialize()),
        FormatError::InvalidSymlinkTarget { .. }
    );
    assert_err!(
        content::parse_archive_header(&with_target.archive_prefix(1)),
        FormatError::InvalidSymlinkTarget { .. }
    );
    assert_err!(
        content::parse_archive_header(&link("").archive_prefix(0)),
        FormatError::InvalidSymlinkTarget { .. }
    );
    let max = "t".repeat(MAX_SYMLINK_TARGET);
    assert!(FileHeader::parse(&link(&max).serialize()).is_ok());
    let long = "t".repeat(MAX_SYMLINK_TARGET + 1);
    assert_err!(
        FileHeader::parse(&link(&long).serialize()),
        FormatError::InvalidSymlinkTarget { .. }
    );
    // bare-user: the target comes from the file.
    let meta = link("ignored").to_ostreemeta();
    assert_err!(
        FileHeader::from_ostreemeta(&meta, String::new()),
        FormatError::InvalidSymlinkTarget { .. }
    );
    assert_err!(
        FileHeader::from_ostreemeta(&meta, long),
        FormatError::InvalidSymlinkTarget { .. }
    );
    // A regular file's target argument is ignored.
    let h = FileHeader::from_ostreemeta(&reg(0o100644).to_ostreemeta(), "junk".into()).unwrap();
    assert_eq!(h, reg(0o100644));
    // A symlink in an archive must not claim data.
    assert_err!(
        content::parse_archive_header(&link("t").archive_prefix(1)),
        FormatError::InvalidMode { .. }
    );
}

#[test]
fn content_headers_reject_nonzero_rdev() {
    for rdev in [1u32, 0x0100, 0x8000_0000, u32::MAX] {
        let empty: Vec<(&[u8], &[u8])> = vec![];
        let h = gv!("(uuuusa(ayay))").serialize_to_vec(&(
            0u32,
            0u32,
            0o100644u32.to_be(),
            rdev.to_be(),
            "",
            &empty,
        ));
        assert_eq!(FileHeader::parse(&h), Err(FormatError::NonZeroRdev(rdev)));
        let z = gv!("(tuuuusa(ayay))").serialize_to_vec(&(
            0u64,
            0u32,
            0u32,
            0o100644u32.to_be(),
            rdev.to_be(),
            "",
            &empty,
        ));
        let mut filez = (z.len() as u32).to_be_bytes().to_vec();
        filez.extend_from_slice(&[0; 4]);
        filez.extend_from_slice(&z);
        assert_eq!(
            content::parse_archive_header(&filez),
            Err(FormatError::NonZeroRdev(rdev))
        );
    }
}

/// `(uuuusa(ayay))` regular file with raw wire xattr pairs.
fn header_with_wire_xattrs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = pairs.to_vec();
    gv!("(uuuusa(ayay))").serialize_to_vec(&(0u32, 0u32, 0o100644u32.to_be(), 0u32, "", &pairs))
}

fn dirmeta_with_wire_xattrs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = pairs.to_vec();
    gv!("(uuua(ayay))").serialize_to_vec(&(0u32, 0u32, 0o40755u32.to_be(), &pairs))
}

#[test]
fn xattr_names_are_validated() {
    let long = vec![b'n'; 256];
    let mut long_nul = long.clone();
    long_nul.push(0);
    let bad: [&[u8]; 7] = [
        b"user.a",     // no trailing NUL
        b"",           // nothing at all
        b"\0",         // empty name
        b"us\0er\0",   // embedded NUL
        b"user.a\0\0", // two NULs
        &long,         // too long, no NUL
        &long_nul,     // too long
    ];
    for name in bad {
        let pairs: [(&[u8], &[u8]); 1] = [(name, b"v")];
        assert_err!(
            FileHeader::parse(&header_with_wire_xattrs(&pairs)),
            FormatError::InvalidXattrName { .. }
        );
        assert_err!(
            DirMeta::parse(&dirmeta_with_wire_xattrs(&pairs)),
            FormatError::InvalidXattrName { .. }
        );
        // The same after a valid attribute.
        let pairs: [(&[u8], &[u8]); 2] = [(b"a\0", b""), (name, b"v")];
        assert_err!(
            FileHeader::parse(&header_with_wire_xattrs(&pairs)),
            FormatError::InvalidXattrName { .. }
        );
    }
    // Constructing them is refused too.
    for name in [&b""[..], b"a\0b", &long] {
        assert_err!(
            Xattrs::from_unsorted(vec![Xattr {
                name: name.to_vec(),
                value: vec![]
            }]),
            FormatError::InvalidXattrName { .. }
        );
    }
    // A 255-byte name and a 64 KiB value are the limits.
    let mut max_name = vec![b'n'; 255];
    max_name.push(0);
    let big = vec![7u8; MAX_XATTR_VALUE];
    let pairs: [(&[u8], &[u8]); 1] = [(&max_name, &big)];
    let h = FileHeader::parse(&header_with_wire_xattrs(&pairs)).unwrap();
    assert_eq!(h.xattrs.get(&max_name[..255]), Some(&big[..]));
    let too_big = vec![7u8; MAX_XATTR_VALUE + 1];
    let pairs: [(&[u8], &[u8]); 1] = [(b"user.big\0", &too_big)];
    assert_err!(
        FileHeader::parse(&header_with_wire_xattrs(&pairs)),
        FormatError::TooLarge { .. }
    );
}

#[test]
fn xattr_order_is_kept_as_stored() {
    // Stored order is what was hashed, so an unsorted list is kept verbatim
    // (libostree 2022.7 accepts it too).
    let pairs: [(&[u8], &[u8]); 2] = [(b"user.b\0", b"2"), (b"user.a\0", b"1")];
    let bytes = header_with_wire_xattrs(&pairs);
    let h = FileHeader::parse(&bytes).unwrap();
    assert_eq!(h.serialize(), bytes);
    let names: Vec<&[u8]> = h.xattrs.iter().map(|x| &x.name[..]).collect();
    assert_eq!(names, [&b"user.b"[..], b"user.a"]);
}

#[test]
fn archive_header_hostile_lengths() {
    // Declared length 0xffffffff: error, and no big allocation.
    let mut filez = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    filez.extend_from_slice(&[0; 64]);
    let (r, peak) = peak_alloc(|| content::parse_archive_header(&filez));
    assert_err!(r, FormatError::TooLarge { .. });
    assert!(peak < 4096, "peak {peak}");
    let (r, peak) = peak_alloc(|| content::archive_header_len(&filez));
    assert_err!(r, FormatError::TooLarge { .. });
    assert_eq!(peak, 0);
    // Just over the limit, and exactly at it with too little data.
    let over = ((MAX_HEADER_SIZE + 1) as u32).to_be_bytes();
    assert_err!(
        content::archive_header_len(&[over[0], over[1], over[2], over[3], 0, 0, 0, 0]),
        FormatError::TooLarge { .. }
    );
    let at = (MAX_HEADER_SIZE as u32).to_be_bytes();
    let frame = [at[0], at[1], at[2], at[3], 0, 0, 0, 0];
    assert_eq!(
        content::archive_header_len(&frame),
        Ok(FRAME_PREFIX + MAX_HEADER_SIZE)
    );
    let (r, peak) = peak_alloc(|| content::parse_archive_header(&frame));
    assert_err!(r, FormatError::Truncated { .. });
    assert!(peak < 4096, "peak {peak}");
    // Fewer than 8 bytes.
    for n in 0..FRAME_PREFIX {
        assert_err!(
            content::archive_header_len(&[0; 8][..n]),
            FormatError::Truncated { .. }
        );
        assert_err!(
            content::parse_archive_header(&[0; 8][..n]),
            FormatError::Truncated { .. }
        );
    }
    // Non-zero padding.
    let mut good = reg(0o100644).archive_prefix(3);
    good[7] = 1;
    assert_err!(
        content::archive_header_len(&good),
        FormatError::NotNormalForm { .. }
    );
    // A declared length that is shorter or longer than the header.
    let good = reg(0o100644).archive_prefix(3);
    for delta in [-2i32, -1, 1, 2] {
        let mut b = good.clone();
        let len = (good.len() - FRAME_PREFIX) as i32 + delta;
        b[..4].copy_from_slice(&(len as u32).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        assert!(content::parse_archive_header(&b).is_err(), "delta {delta}");
    }
    // FileHeader::parse has its own bound.
    let huge = vec![0u8; MAX_HEADER_SIZE + 1];
    assert_err!(FileHeader::parse(&huge), FormatError::TooLarge { .. });
}

#[test]
fn metadata_rejects_empty_key() {
    let m = Metadata(vec![("".into(), Value::Str("x".into()))]);
    assert_err!(
        Metadata::parse(&m.serialize()),
        FormatError::InvalidMetadata(_)
    );
    let m = Metadata(vec![
        ("a".into(), Value::Bool(false)),
        ("".into(), Value::U64(1)),
    ]);
    assert_err!(
        Metadata::parse(&m.serialize()),
        FormatError::InvalidMetadata(_)
    );
    let commit = Commit {
        metadata: m,
        parent: None,
        related: vec![],
        subject: "s".into(),
        body: String::new(),
        timestamp: 1,
        root_tree: c(1),
        root_meta: c(2),
    };
    assert_err!(
        Commit::parse(&commit.serialize()),
        FormatError::InvalidMetadata(_)
    );
}

#[test]
fn metadata_rejects_non_normal_known_values() {
    // `b` must be 0 or 1, `t` 8 bytes, `s` NUL-terminated UTF-8.
    for (data, ty) in [
        (&[2u8][..], "b"),
        (&[], "b"),
        (&[1, 2, 3, 4, 5, 6, 7], "t"),
        (&[1, 2, 3, 4, 5, 6, 7, 8, 9], "t"),
        (b"abc", "s"),
        (b"\xff\0", "s"),
        (b"a\0b\0", "s"),
    ] {
        let m = Metadata(vec![(
            "k".into(),
            Value::Other {
                typestr: ty.into(),
                data: data.to_vec(),
            },
        )]);
        assert!(Metadata::parse(&m.serialize()).is_err(), "{ty} {data:?}");
    }
}

#[test]
fn commit_rejects_wrong_checksum_lengths() {
    let md: Vec<(&str, &Value)> = vec![];
    let rel: Vec<(&str, &[u8])> = vec![];
    let full = [0x11u8; 32];
    let short = [0x22u8; 31];
    let long = [0x33u8; 33];
    let build = |parent: &[u8], tree: &[u8], meta: &[u8], rel: &Vec<(&str, &[u8])>| {
        gv!("(a{sv}aya(say)sstayay)")
            .serialize_to_vec(&(&md, parent, rel, "subject", "", 0u64, tree, meta))
    };
    assert!(Commit::parse(&build(&[], &full, &full, &rel)).is_ok());
    assert!(Commit::parse(&build(&full, &full, &full, &rel)).is_ok());
    for (bad, len) in [(&short[..], 31), (&long[..], 33), (&full[..1], 1)] {
        assert_eq!(
            Commit::parse(&build(bad, &full, &full, &rel)),
            Err(FormatError::InvalidChecksumLength {
                what: "commit parent",
                len
            })
        );
        assert_eq!(
            Commit::parse(&build(&[], bad, &full, &rel)),
            Err(FormatError::InvalidChecksumLength {
                what: "commit root dirtree",
                len
            })
        );
        assert_eq!(
            Commit::parse(&build(&[], &full, bad, &rel)),
            Err(FormatError::InvalidChecksumLength {
                what: "commit root dirmeta",
                len
            })
        );
        let r: Vec<(&str, &[u8])> = vec![("x", bad)];
        assert_eq!(
            Commit::parse(&build(&[], &full, &full, &r)),
            Err(FormatError::InvalidChecksumLength {
                what: "commit related object",
                len
            })
        );
    }
    // An empty root checksum is not "none".
    assert_err!(
        Commit::parse(&build(&[], &[], &full, &rel)),
        FormatError::InvalidChecksumLength { len: 0, .. }
    );
}

#[test]
fn dirmeta_rejects_bad_modes() {
    for m in [
        0o100644,
        0o120777,
        0o000755,
        0o060755,
        0o040755 | 0o200000,
        0x8000_0000 | 0o40755,
    ] {
        let d = DirMeta {
            uid: 0,
            gid: 0,
            mode: m,
            xattrs: Xattrs::new(),
        };
        assert_err!(
            DirMeta::parse(&d.serialize()),
            FormatError::InvalidMode { .. }
        );
    }
    for m in [0o040000, 0o047777, 0o041777] {
        let d = DirMeta {
            uid: 1,
            gid: 2,
            mode: m,
            xattrs: Xattrs::new(),
        };
        assert_eq!(DirMeta::parse(&d.serialize()), Ok(d));
    }
}

#[test]
fn non_normal_encodings_are_rejected() {
    // Non-zero padding in a commit: subject "fir\0" and body "b\0" end at 6,
    // then two padding bytes before the 8-aligned timestamp.
    let commit = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: "fir".into(),
        body: "b".into(),
        timestamp: 1577836800,
        root_tree: c(0x11),
        root_meta: c(0x22),
    };
    let good = commit.serialize();
    assert_eq!(&good[..8], b"fir\0b\0\0\0");
    for i in [6, 7] {
        let mut b = good.clone();
        b[i] = 1;
        assert_err!(Commit::parse(&b), FormatError::NotNormalForm { .. });
    }
    // Non-zero padding in an a{sv} (between entries).
    let m = Metadata(vec![
        ("a".into(), Value::Bool(true)),
        ("b".into(), Value::Bool(false)),
    ]);
    let good = m.serialize();
    // entry 1 = "a\0" pad(6) [01] 00 "b" framing(1) = 12 bytes, entry 2 at 16
    assert_eq!(&good[..3], b"a\0\0");
    let mut b = good.clone();
    b[13] = 0xee;
    assert_err!(Metadata::parse(&b), FormatError::NotNormalForm { .. });
    // Framing offsets two bytes wide where one byte suffices: the dirtree
    // of the format reference (one file "n.txt") re-encoded by hand.
    let t = files(&["n.txt"]);
    let narrow = t.serialize();
    assert_eq!(&narrow[38..], &[0x06, 0x27, 0x28]);
    let mut wide = narrow[..38].to_vec();
    wide.extend_from_slice(&[0x06, 0x00]); // (say) framing, 2 bytes
    wide.extend_from_slice(&[40, 0x00]); // a(say) framing
    wide.extend_from_slice(&[42, 0x00]); // tuple framing
    // (The lenient reader then sees different entries, so which check
    // fires first varies; it must be an error.)
    assert!(DirTree::parse(&wide).is_err());
    // Trailing garbage and missing bytes.
    for t in [files(&["a"]), dirs(&["d"]), DirTree::default()] {
        let mut b = t.serialize();
        b.push(0);
        assert!(DirTree::parse(&b).is_err());
    }
    assert!(DirTree::parse(&[]).is_err());
    assert!(DirMeta::parse(&[0; 11]).is_err());
    assert!(DirMeta::parse(&[0; 13]).is_err());
    assert!(Commit::parse(&[0; 80]).is_err());
    assert!(FileHeader::parse(&[]).is_err());
}

#[test]
fn oversized_metadata_objects_are_refused_up_front() {
    let huge = vec![0u8; MAX_METADATA_SIZE + 1];
    let (r, peak) = peak_alloc(|| DirTree::parse(&huge));
    assert_err!(r, FormatError::TooLarge { .. });
    assert!(peak < 4096);
    assert_err!(Commit::parse(&huge), FormatError::TooLarge { .. });
    assert_err!(DirMeta::parse(&huge), FormatError::TooLarge { .. });
    assert_err!(Metadata::parse(&huge), FormatError::TooLarge { .. });
}

#[test]
fn truncation_can_yield_another_valid_object() {
    // Why the mutation test cannot demand "every prefix is an Err" for all
    // kinds: GVariant framing offsets are plain bytes, so a prefix whose last
    // byte happens to equal an earlier end offset is itself in normal form.
    // Only the checksum protects against such a truncation.
    let t = DirTree {
        files: vec![
            TreeFile {
                name: "!".into(),
                checksum: c(0xaa),
            },
            TreeFile {
                name: "#$".into(), // '#' = 35 = end of entry 1, '$' = 36
                checksum: c(0xbb),
            },
        ],
        dirs: vec![],
    };
    let b = t.serialize();
    assert_eq!(DirTree::parse(&b).unwrap(), t);
    let prefix = DirTree::parse(&b[..37]).unwrap();
    assert_eq!(prefix.files, t.files[..1]);
    // dirmeta: xattr list [("a", ""), ("\x03…", "")] cut after the first
    // entry plus one byte.
    let pairs: [(&[u8], &[u8]); 2] = [(b"a\0", b""), (b"\x03b\0", b"")];
    let b = dirmeta_with_wire_xattrs(&pairs);
    let full = DirMeta::parse(&b).unwrap();
    assert_eq!(full.xattrs.len(), 2);
    let prefix = DirMeta::parse(&b[..16]).unwrap();
    assert_eq!(prefix.xattrs.len(), 1);
    // Appending can do the same: `61 00 02 03` after a dirmeta without
    // xattrs is the list [("a", "")].
    let mut b = DirMeta {
        uid: 0,
        gid: 0,
        mode: 0o40755,
        xattrs: Xattrs::new(),
    }
    .serialize();
    b.extend_from_slice(&[0x61, 0x00, 0x02, 0x03]);
    let appended = DirMeta::parse(&b).unwrap();
    assert_eq!(appended.xattrs.get(b"a"), Some(&b""[..]));
    // And any a{sv} truncated to nothing is the empty dictionary.
    assert_eq!(Metadata::parse(&[]), Ok(Metadata::new()));
}

// ---------------------------------------------------------------------------
// 5. Large inputs.

fn timed<R>(what: &str, limit: Duration, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took < limit, "{what} took {took:?}");
    r
}

#[test]
fn large_dirtree() {
    let n = 100_000;
    let mut t = DirTree::default();
    for i in 0..n {
        if i % 4 == 0 {
            t.dirs.push(TreeDir {
                name: format!("entry-{i:07}"),
                tree: c(i as u8),
                meta: c(!(i as u8)),
            });
        } else {
            t.files.push(TreeFile {
                name: format!("entry-{i:07}"),
                checksum: c(i as u8),
            });
        }
    }
    let b = t.serialize();
    assert!(b.len() > 4_000_000);
    let limit = Duration::from_secs(10);
    let parsed = timed("parse 100k-entry dirtree", limit, || DirTree::parse(&b));
    assert_eq!(parsed.as_ref().map(|p| p.files.len() + p.dirs.len()), Ok(n));
    let parsed = parsed.unwrap();
    assert!(parsed.file("entry-0099999").is_some());
    assert!(parsed.dir("entry-0099996").is_some());
    drop(parsed);

    // The same with the last two files swapped, and with a bad last name:
    // rejected, in about the same time.
    let mut unsorted = t.clone();
    let k = unsorted.files.len();
    unsorted.files.swap(k - 1, k - 2);
    let ub = unsorted.serialize();
    timed("reject unsorted 100k-entry dirtree", limit, || {
        assert_err!(DirTree::parse(&ub), FormatError::UnsortedOrDuplicate { .. })
    });
    let mut bad = t.clone();
    bad.files.last_mut().unwrap().name = "a/b".into();
    let bb = bad.serialize();
    timed("reject 100k-entry dirtree with a bad name", limit, || {
        assert_err!(DirTree::parse(&bb), FormatError::InvalidFileName { .. })
    });
    // One flipped byte in the middle (non-normal somewhere).
    let mut flipped = b.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    timed(
        "reject 100k-entry dirtree with a flipped byte",
        limit,
        || {
            let _ = check_parser("dirtree", dirtree_reser, &flipped);
        },
    );
}

#[test]
fn large_metadata() {
    let n = 10_000;
    let mut m = Metadata::new();
    for i in 0..n {
        let v = match i % 6 {
            0 => Value::Str(format!("value {i}")),
            1 => Value::StrArray(vec![format!("a{i}"), "b".into()]),
            2 => Value::Bool(i % 2 == 0),
            3 => Value::U64(i as u64),
            4 => Value::Bytes(vec![i as u8; i % 40]),
            _ => Value::ByteArrays(vec![vec![1, 2, 3], vec![i as u8; 32]]),
        };
        m.0.push((format!("key.{i}"), v));
    }
    let b = m.serialize();
    let limit = Duration::from_secs(10);
    let parsed = timed("parse 10k-entry metadata", limit, || Metadata::parse(&b));
    assert_eq!(parsed, Ok(m.clone()));
    let commit = Commit {
        metadata: m,
        parent: Some(c(9)),
        related: vec![],
        subject: "big".into(),
        body: "x".repeat(100_000),
        timestamp: 1,
        root_tree: c(1),
        root_meta: c(2),
    };
    let cb = commit.serialize();
    let parsed = timed("parse commit with 10k metadata entries", limit, || {
        Commit::parse(&cb)
    });
    assert_eq!(parsed, Ok(commit));
}

#[test]
fn many_tiny_elements_stay_bounded() {
    // An `aay` of 200,000 empty arrays is 800 KB of framing offsets; parsed
    // it is one Vec header per element. Check time and memory stay sane.
    let arrays = vec![Vec::new(); 200_000];
    let m = Metadata(vec![("ostree.sizes".into(), Value::ByteArrays(arrays))]);
    let b = m.serialize();
    let ((r, peak), _) = timed(
        "parse aay of 200k empty arrays",
        Duration::from_secs(10),
        || (peak_alloc(|| Metadata::parse(&b)), ()),
    );
    assert_eq!(r, Ok(m));
    eprintln!(
        "aay of 200k empty arrays: {} input bytes, peak heap {peak}",
        b.len()
    );
    assert!(peak <= alloc_budget(b.len()));
    // The same count of empty strings in an `as`.
    let m = Metadata(vec![(
        "k".into(),
        Value::StrArray(vec![String::new(); 200_000]),
    )]);
    let b = m.serialize();
    let (r, peak) = peak_alloc(|| Metadata::parse(&b));
    assert_eq!(r, Ok(m));
    eprintln!(
        "as of 200k empty strings: {} input bytes, peak heap {peak}",
        b.len()
    );
    assert!(peak <= alloc_budget(b.len()));
}

// ---------------------------------------------------------------------------
// Parser bugs found by this file, kept as ignored tests until fixed
// (run with `cargo test --test ostree_hostile -- --ignored`).

/// `Metadata::parse` keeps values of undecoded types as raw bytes and never
/// checks them, so non-normal variants (which libostree rejects with
/// `g_variant_is_normal_form`) are accepted.
#[test]
fn metadata_rejects_non_normal_other_values() {
    for (ty, data) in [
        ("u", &[1u8, 2, 3][..]),        // u32 of 3 bytes
        ("u", &[1, 2, 3, 4, 5]),        // u32 of 5 bytes
        ("", &[]),                      // empty type string
        ("zz", &[1]),                   // not a type
        ("uu", &[0; 8]),                // two types
        ("()", &[]),                    // unit is 1 byte 00
        ("(", &[]),                     // incomplete type
        ("v", &[0xff]),                 // variant without a type
        ("at", &[5, 0, 0, 0, 0, 0, 7]), // array of u64, 7 bytes (found by the fuzzer)
    ] {
        let m = Metadata(vec![(
            "k".into(),
            Value::Other {
                typestr: ty.into(),
                data: data.to_vec(),
            },
        )]);
        let b = m.serialize();
        assert!(
            Metadata::parse(&b).is_err(),
            "accepted {{'k': <{ty:?} {data:?}>}} = {}",
            hex::encode(&b)
        );
        // The same dictionary as commit metadata.
        let commit = Commit {
            metadata: m,
            parent: None,
            related: vec![],
            subject: String::new(),
            body: String::new(),
            timestamp: 0,
            root_tree: c(1),
            root_meta: c(2),
        };
        assert!(Commit::parse(&commit.serialize()).is_err());
    }
}

/// `FileHeader::from_ostreemeta` accepts a symlink target containing NUL,
/// and the header's `serialize()` (hence `checksum()`) then panics.
#[test]
fn ostreemeta_rejects_nul_in_target() {
    let meta = link("x").to_ostreemeta();
    let r = FileHeader::from_ostreemeta(&meta, "a\0b".into());
    assert!(r.is_err(), "accepted: {r:?}");
}
