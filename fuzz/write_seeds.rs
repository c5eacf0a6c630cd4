//! Writes a small seed corpus of valid objects to `corpus/<target>/`, so
//! the fuzzers start from well-formed GVariants instead of discovering the
//! framing rules from scratch:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example write_seeds
//!     cargo +nightly fuzz run commit

use std::fs;
use std::path::Path;

use arbor::ostree::{
    Checksum, Commit, DirMeta, DirTree, FileHeader, Metadata, TreeDir, TreeFile, Value, Xattr,
    Xattrs,
};

fn c(b: u8) -> Checksum {
    Checksum::from_array([b; 32])
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let xattrs = Xattrs::from_unsorted(vec![
        Xattr {
            name: b"user.b".to_vec(),
            value: b"2".to_vec(),
        },
        Xattr {
            name: b"security.selinux".to_vec(),
            value: b"system_u:object_r:usr_t:s0\0".to_vec(),
        },
    ])
    .expect("valid names");

    let mut md = Metadata::new();
    md.insert("version", Value::Str("1.0".into()));
    md.insert("ostree.ref-binding", Value::StrArray(vec!["main".into()]));
    md.insert("ostree.bootable", Value::Bool(true));
    md.insert("ostree.sizes", Value::ByteArrays(vec![vec![1; 35], vec![]]));
    md.insert("ostree.composefs.digest.v0", Value::Bytes(vec![7; 32]));
    md.insert("t", Value::U64(5));
    md.insert(
        "arbor.integration",
        Value::NamedStrArrays(vec![
            (
                "00-ldconfig".into(),
                vec!["sh".into(), "-e".into(), "-c".into(), "ldconfig".into()],
            ),
            ("10-x".into(), vec![]),
        ]),
    );
    write("metadata", "empty", &Metadata::new().serialize());
    write("metadata", "reference", &md.serialize());

    let commit = Commit {
        metadata: md,
        parent: Some(c(3)),
        related: vec![],
        subject: "first".into(),
        body: "b".into(),
        timestamp: 1577836800,
        root_tree: c(0x11),
        root_meta: c(0x22),
    };
    write("commit", "reference", &commit.serialize());
    let bare = Commit {
        metadata: Metadata::new(),
        parent: None,
        subject: String::new(),
        body: String::new(),
        ..commit
    };
    write("commit", "minimal", &bare.serialize());

    let tree = DirTree {
        files: vec![
            TreeFile {
                name: "a".into(),
                checksum: c(1),
            },
            TreeFile {
                name: "n.txt".into(),
                checksum: c(2),
            },
        ],
        dirs: vec![TreeDir {
            name: "usr".into(),
            tree: c(3),
            meta: c(4),
        }],
    };
    write("dirtree", "empty", &DirTree::default().serialize());
    write("dirtree", "small", &tree.serialize());

    let meta = DirMeta {
        uid: 0,
        gid: 0,
        mode: 0o40755,
        xattrs: xattrs.clone(),
    };
    write("dirmeta", "xattrs", &meta.serialize());
    write(
        "dirmeta",
        "root",
        &DirMeta {
            xattrs: Xattrs::new(),
            ..meta
        }
        .serialize(),
    );

    let file = FileHeader {
        uid: 1000,
        gid: 1000,
        mode: 0o100644,
        symlink_target: String::new(),
        xattrs,
    };
    let link = FileHeader {
        uid: 0,
        gid: 0,
        mode: 0o120777,
        symlink_target: "hello.txt".into(),
        xattrs: Xattrs::new(),
    };
    write("content_header", "file", &file.serialize());
    write("content_header", "symlink", &link.serialize());
    write("dirmeta", "ostreemeta", &file.to_ostreemeta());
    let mut filez = file.archive_prefix(6);
    filez.extend_from_slice(&[0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xe7, 0x02, 0x00]);
    write("archive_header", "file", &filez);
    write("archive_header", "symlink", &link.archive_prefix(0));

    // Static deltas: the real ones of tests/fixtures/deltas, and a small
    // payload exercising every opcode.
    let deltas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/deltas");
    for d in ["from-to", "swapped", "scratch", "inline", "nobsdiff"] {
        let dir = deltas.join(d);
        write("delta_superblock", d, &fs::read(dir.join("superblock")).expect("fixture"));
        if let Ok(p) = fs::read(dir.join("0")) {
            write("delta_part", &format!("{d}-xz"), &p[1..]);
        }
    }
    use arbor::ostree::delta::{FileMode, Op, PartPayload, opcodes::encode_ops};
    let ops = encode_ops(&[
        Op::SpliceMeta { len: 4, offset: 0 },
        Op::SpliceContent { mode: 0, xattr: 0, len: 2, offset: 4 },
        Op::SetReadSource { offset: 0 },
        Op::Open { mode: 0, xattr: 0, size: 3 },
        Op::Write { len: 1, offset: 0 },
        Op::UnsetReadSource,
        Op::Write { len: 2, offset: 6 },
        Op::Close,
        Op::SetReadSource { offset: 0 },
        Op::Open { mode: 0, xattr: 0, size: 2 },
        Op::Bspatch { offset: 8, len: 24 },
        Op::Close,
    ]);
    let blob = vec![7u8; 40];
    let payload = PartPayload {
        modes: vec![FileMode { uid: 0, gid: 0, mode: 0o100644 }],
        xattrs: vec![Xattrs::new()],
        blob: &blob,
        ops: &ops,
    };
    write("delta_part", "every-op", &payload.serialize());
}
