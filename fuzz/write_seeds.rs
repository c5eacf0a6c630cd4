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
}
