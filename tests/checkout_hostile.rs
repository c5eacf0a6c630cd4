//! `arbor checkout` of hostile trees never writes outside DEST and fails
//! with a clear error.
//!
//! Hostile dirtrees are crafted with arbor's serializers (correct
//! checksums, so only their content is wrong) and written into a bare
//! repository made by ostree, next to content objects ostree committed:
//! entry names `..`, `.`, empty, containing `/`, duplicates, a symlink and
//! a file of the same name, a name that is both a file and a directory,
//! nesting deeper than 256. Whiteouts that would remove `.` or `..`, and a
//! symlink left in DEST by one commit where the next commit has a
//! directory (which `ostree checkout --union` follows, writing outside
//! DEST) are made with ostree itself.
//!
//! Every case runs next to a sentinel directory that must stay untouched;
//! a tree that fails validation must leave DEST uncreated.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbor::ostree::{Checksum, Commit, DirTree, Metadata, ObjectType, TreeDir, TreeFile};
use common::*;

const TIMESTAMP: u64 = 1_700_000_000;

/// A bare repository with a few content objects committed by ostree.
struct Fixture {
    repo: PathBuf,
    /// Regular file "pwned\n".
    payload: Checksum,
    /// Symlink to "../sentinel".
    escape: Checksum,
    /// Root dirmeta (0755 root:root).
    meta: Checksum,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = scratch_dir("checkout-hostile");
        let src = base.join("src");
        make_dir(&src, 0o755);
        write_file(&src.join("payload"), b"pwned\n", 0o644);
        symlink("../sentinel", src.join("escape")).unwrap();
        let repo = base.join("repo");
        ostree_init(&repo, Mode::Bare);
        let c = ostree_commit(&repo, &src, "seed", &CommitOpts::new("seed", "", TIMESTAMP));
        let hex = |s: String| Checksum::from_hex(&s).unwrap();
        Fixture {
            payload: hex(file_checksum(&repo, &c, "/payload")),
            escape: hex(file_checksum(&repo, &c, "/escape")),
            meta: hex(dir_checksums(&repo, &c, "/").1),
            repo,
        }
    })
}

/// Writes a metadata object (bytes as given); returns its checksum.
fn write_object(repo: &Path, objtype: ObjectType, data: &[u8]) -> Checksum {
    Checksum::from_hex(&write_metadata_object(repo, objtype.name(), data)).unwrap()
}

fn write_tree(t: &DirTree) -> Checksum {
    write_object(&fixture().repo, ObjectType::DirTree, &t.serialize())
}

/// A commit whose root is `root`; returns its checksum.
fn write_commit(root: Checksum) -> String {
    let f = fixture();
    let c = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: "hostile".into(),
        body: String::new(),
        timestamp: TIMESTAMP,
        root_tree: root,
        root_meta: f.meta,
    };
    write_object(&f.repo, ObjectType::Commit, &c.serialize()).to_hex()
}

fn file(name: &str, checksum: Checksum) -> TreeFile {
    TreeFile {
        name: name.into(),
        checksum,
    }
}

fn dir(name: &str, tree: Checksum) -> TreeDir {
    TreeDir {
        name: name.into(),
        tree,
        meta: fixture().meta,
    }
}

/// A place to check out into: `base/dest` (not created), beside
/// `base/sentinel` (a directory with a file) that must not change.
struct Arena {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dest: PathBuf,
    before: String,
    sentinel: String,
}

impl Arena {
    fn new() -> Arena {
        let tmp = shared_tempdir();
        let base = tmp.path().join("arena");
        make_dir(&base.join("sentinel"), 0o755);
        write_file(&base.join("sentinel/keep"), b"keep me\n", 0o644);
        let before = manifest(&base);
        Arena {
            sentinel: manifest(&base.join("sentinel")),
            dest: base.join("dest"),
            base,
            before,
            _tmp: tmp,
        }
    }

    fn sentinel_untouched(&self) {
        let now = manifest(&self.base.join("sentinel"));
        assert_manifest_eq(&now, &self.sentinel, "the sentinel beside DEST");
        // Nothing appeared next to DEST either (nor above it).
        let mut names: Vec<String> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names.retain(|n| n != "dest");
        assert_eq!(names, ["sentinel"], "entries beside DEST");
        for up in self.base.ancestors().take(4) {
            assert!(
                !up.join("pwned").exists(),
                "{} was written",
                up.join("pwned").display()
            );
        }
    }

    /// The whole base, DEST included, is as before (DEST never created).
    fn untouched(&self) {
        assert!(!self.dest.exists(), "DEST was created");
        assert_manifest_eq(
            &manifest(&self.base),
            &self.before,
            "everything beside DEST",
        );
    }

    fn checkout(&self, args: &[&str], rev: &str) -> Run {
        let mut a: Vec<&str> = vec!["checkout"];
        a.extend(args);
        a.push(rev);
        a.push(self.dest.to_str().unwrap());
        arbor_repo(&fixture().repo, &a)
    }
}

/// The checkout of `tree` fails before writing anything, with an error
/// that names `bad_tree` and says `why`.
#[track_caller]
fn refused(tree: Checksum, bad_tree: Checksum, why: &str) {
    let commit = write_commit(tree);
    for link in ["hardlink", "copy"] {
        for extra in [&[][..], &["-U"][..], &["--union"][..], &["--whiteouts"][..]] {
            let arena = Arena::new();
            let mut args = vec!["--link", link];
            args.extend(extra);
            let r = arena.checkout(&args, &commit).assert_clean_failure();
            let err = r.stderr_str();
            assert!(
                err.contains(&bad_tree.to_hex()) && err.contains(why),
                "the error should name dirtree {bad_tree} and say {why:?}\n{}",
                r.describe()
            );
            arena.untouched();
        }
    }
}

#[test]
fn dot_and_dotdot_names() {
    let f = fixture();
    for name in ["..", "."] {
        let t = write_tree(&DirTree {
            files: vec![file(name, f.payload)],
            dirs: vec![],
        });
        refused(t, t, "'.' and '..' are not allowed");
        let t = write_tree(&DirTree {
            files: vec![],
            dirs: vec![dir(
                name,
                write_tree(&DirTree {
                    files: vec![file("pwned", f.payload)],
                    dirs: vec![],
                }),
            )],
        });
        refused(t, t, "'.' and '..' are not allowed");
    }
}

#[test]
fn empty_names_and_slashes() {
    let f = fixture();
    for (name, why) in [
        ("", "empty name"),
        ("a/b", "contains '/'"),
        ("../sentinel/pwned", "contains '/'"),
        ("/pwned", "contains '/'"),
    ] {
        let t = write_tree(&DirTree {
            files: vec![file(name, f.payload)],
            dirs: vec![],
        });
        refused(t, t, why);
        let t = write_tree(&DirTree {
            files: vec![],
            dirs: vec![dir(name, write_tree(&DirTree::default()))],
        });
        refused(t, t, why);
    }
}

/// A bad name deep in the tree: found before DEST is created.
#[test]
fn bad_name_deep_in_the_tree() {
    let f = fixture();
    let bad = write_tree(&DirTree {
        files: vec![file("..", f.payload)],
        dirs: vec![],
    });
    let mid = write_tree(&DirTree {
        files: vec![file("fine", f.payload)],
        dirs: vec![dir("bad", bad)],
    });
    let root = write_tree(&DirTree {
        files: vec![file("first", f.payload)],
        dirs: vec![dir("a", mid), dir("b", write_tree(&DirTree::default()))],
    });
    refused(root, bad, "'.' and '..' are not allowed");
}

#[test]
fn duplicates_and_clashes() {
    let f = fixture();
    // The same name twice.
    let t = write_tree(&DirTree {
        files: vec![file("dup", f.payload), file("dup", f.payload)],
        dirs: vec![],
    });
    refused(t, t, "duplicate at \"dup\"");
    // A symlink and a file of the same name.
    let t = write_tree(&DirTree {
        files: vec![file("same", f.escape), file("same", f.payload)],
        dirs: vec![],
    });
    refused(t, t, "duplicate at \"same\"");
    // A name that is both a file and a directory.
    let t = write_tree(&DirTree {
        files: vec![file("x", f.escape)],
        dirs: vec![dir(
            "x",
            write_tree(&DirTree {
                files: vec![file("pwned", f.payload)],
                dirs: vec![],
            }),
        )],
    });
    refused(t, t, "duplicate at \"x\"");
    // Unsorted entries (libostree's binary search would miss some).
    let t = write_tree(&DirTree {
        files: vec![file("b", f.payload), file("a", f.payload)],
        dirs: vec![],
    });
    refused(t, t, "not sorted");
}

/// 256 nested directories are fine, 257 are refused.
#[test]
fn depth_is_bounded() {
    let f = fixture();
    let chain = |levels: usize| {
        let mut t = write_tree(&DirTree {
            files: vec![file("leaf", f.payload)],
            dirs: vec![],
        });
        for _ in 0..levels {
            t = write_tree(&DirTree {
                files: vec![],
                dirs: vec![dir("d", t)],
            });
        }
        t
    };
    let arena = Arena::new();
    let ok = write_commit(chain(256));
    arena.checkout(&[], &ok).assert_ok();
    let leaf = (0..256)
        .fold(arena.dest.clone(), |p, _| p.join("d"))
        .join("leaf");
    assert_eq!(fs::read(leaf).unwrap(), b"pwned\n");

    let arena = Arena::new();
    let deep = write_commit(chain(257));
    let r = arena.checkout(&[], &deep).assert_clean_failure();
    assert!(
        r.stderr_str().contains("deeper than 256"),
        "{}",
        r.describe()
    );
    arena.untouched();
}

/// Whiteouts naming `.`, `..` or nothing are refused before anything is
/// written (ostree would `rm -rf ..`).
#[test]
fn whiteouts_cannot_escape() {
    let base = scratch_dir("checkout-hostile-wh");
    for (i, name) in [".wh...", ".wh..", ".wh."].iter().enumerate() {
        for nested in [false, true] {
            let src = base.join(format!("src{i}{nested}"));
            let d = if nested { src.join("sub") } else { src.clone() };
            make_dir(&d, 0o755);
            write_file(&d.join(name), b"", 0o644);
            write_file(&d.join("other"), b"x\n", 0o644);
            let repo = &fixture().repo;
            let c = ostree_commit(repo, &src, "wh", &CommitOpts::new("wh", "", TIMESTAMP));
            let arena = Arena::new();
            let r = arena.checkout(&["--whiteouts"], &c).assert_clean_failure();
            assert!(
                r.stderr_str().contains("invalid whiteout") && r.stderr_str().contains(name),
                "{}",
                r.describe()
            );
            arena.untouched();
            // Without --whiteouts they are plain files.
            let arena = Arena::new();
            arena.checkout(&[], &c).assert_ok();
            let d = if nested {
                arena.dest.join("sub")
            } else {
                arena.dest.clone()
            };
            assert!(d.join(name).is_file());
            arena.sentinel_untouched();
        }
    }
}

/// Commit 1 has symlinks `evil -> ../sentinel` and `evil2 -> ../../..`;
/// commit 2 has directories `evil/` and `evil2/` with a file. Stacking 2 on
/// 1 in one DEST must not follow the symlinks (ostree does, writing into
/// the sentinel): it is an error, except with `--union --whiteouts`, which
/// replaces the symlinks by directories. A symlink in the way of a file is
/// replaced itself, never written through.
#[test]
fn symlink_then_directory() {
    let base = scratch_dir("checkout-hostile-evil");
    let one = base.join("one");
    make_dir(&one, 0o755);
    symlink("../sentinel", one.join("evil")).unwrap();
    symlink("../../..", one.join("evil2")).unwrap();
    symlink("../sentinel/keep", one.join("overwrite_me")).unwrap();
    let two = base.join("two");
    make_dir(&two.join("evil"), 0o755);
    make_dir(&two.join("evil2"), 0o755);
    write_file(&two.join("evil/pwned"), b"pwned\n", 0o644);
    write_file(&two.join("evil2/pwned"), b"pwned\n", 0o644);
    write_file(&two.join("overwrite_me"), b"pwned\n", 0o644);
    let repo = &fixture().repo;
    let opts = CommitOpts::new("evil", "", TIMESTAMP);
    let c1 = ostree_commit(repo, &one, "one", &opts);
    let c2 = ostree_commit(repo, &two, "two", &opts);

    for flags in [
        &["--union"][..],
        &["--union-add"],
        &["--union-identical"],
        &["--union", "-U"],
        &["--union", "--link", "copy"],
    ] {
        let arena = Arena::new();
        arena.checkout(&[], &c1).assert_ok();
        let r = arena.checkout(flags, &c2).assert_clean_failure();
        let err = r.stderr_str();
        let refused_link = err.contains("/dest/evil")
            && err.contains("symlink")
            && err.contains("refusing to follow");
        // --union-identical has a second conflict (the file differs from
        // the symlink at overwrite_me); files and directories are placed
        // in parallel, so either may be the one reported.
        let differs = flags == ["--union-identical"]
            && err.contains("/dest/overwrite_me: exists and differs from object");
        assert!(refused_link || differs, "{flags:?}\n{}", r.describe());
        for name in ["evil", "evil2"] {
            assert!(
                fs::symlink_metadata(arena.dest.join(name))
                    .unwrap()
                    .is_symlink(),
                "{flags:?}: {name} is no longer the symlink"
            );
        }
        // Whether overwrite_me was reached before the failure depends on
        // scheduling; either way it is the link or a file replacing it,
        // and sentinel_untouched shows nothing was written through it.
        let ow = fs::symlink_metadata(arena.dest.join("overwrite_me")).unwrap();
        assert!(ow.is_symlink() || ow.is_file(), "{flags:?}");
        arena.sentinel_untouched();
    }

    let arena = Arena::new();
    arena.checkout(&[], &c1).assert_ok();
    arena.checkout(&["--union", "--whiteouts"], &c2).assert_ok();
    for d in ["evil", "evil2"] {
        let md = fs::symlink_metadata(arena.dest.join(d)).unwrap();
        assert!(md.is_dir(), "{d} should now be a directory");
        assert_eq!(
            fs::read(arena.dest.join(d).join("pwned")).unwrap(),
            b"pwned\n"
        );
    }
    let md = fs::symlink_metadata(arena.dest.join("overwrite_me")).unwrap();
    assert!(md.is_file());
    arena.sentinel_untouched();

    // Only the file over the symlink: --union replaces the link itself.
    let three = base.join("three");
    make_dir(&three, 0o755);
    write_file(&three.join("overwrite_me"), b"pwned\n", 0o644);
    let c3 = ostree_commit(repo, &three, "three", &opts);
    for link in ["hardlink", "copy"] {
        let arena = Arena::new();
        arena.checkout(&[], &c1).assert_ok();
        arena
            .checkout(&["--union", "--link", link], &c3)
            .assert_ok();
        assert!(
            fs::symlink_metadata(arena.dest.join("overwrite_me"))
                .unwrap()
                .is_file()
        );
        arena.sentinel_untouched();
        // --union-add keeps the symlink, and does not write through it.
        let arena = Arena::new();
        arena.checkout(&[], &c1).assert_ok();
        arena
            .checkout(&["--union-add", "--link", link], &c3)
            .assert_ok();
        assert!(
            fs::symlink_metadata(arena.dest.join("overwrite_me"))
                .unwrap()
                .is_symlink()
        );
        arena.sentinel_untouched();
    }
}

/// A symlink in the tree that points outside is created as a symlink and
/// never followed, whatever comes after it in the same checkout.
#[test]
fn escaping_symlinks_are_just_symlinks() {
    let f = fixture();
    let t = write_tree(&DirTree {
        files: vec![file("escape", f.escape), file("payload", f.payload)],
        dirs: vec![],
    });
    let c = write_commit(t);
    for args in [&[][..], &["-U"], &["--link", "copy"]] {
        let arena = Arena::new();
        arena.checkout(args, &c).assert_ok();
        assert_eq!(
            fs::read_link(arena.dest.join("escape")).unwrap(),
            Path::new("../sentinel")
        );
        arena.sentinel_untouched();
    }
}

/// An `archive` object whose header declares 3 bytes while its deflate
/// stream (which the checksum covers) holds 6: the size is not part of the
/// checksum, so a reader stopping at the header's size would write a
/// prefix of the file. The checkout refuses the object, names it and
/// leaves no partial file; `fsck` reports it. A declared size of 0 and one
/// beyond the data are refused too.
#[test]
fn archive_object_size_must_match_its_data() {
    use arbor::ostree::content::parse_archive_header;
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    write_file(&src.join("data"), b"abcdef", 0o644);
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::Archive);
    let c = ostree_commit(&repo, &src, "main", &CommitOpts::new("s", "", TIMESTAMP));
    let object = file_checksum(&repo, &c, "/data");
    let path = object_path(&repo, &object, "filez");
    let good = fs::read(&path).unwrap();
    let a = parse_archive_header(&good).unwrap();
    assert_eq!(a.size, 6);
    for declared in [3, 0, 9] {
        let mut bad = a.header.archive_prefix(declared);
        bad.extend_from_slice(&good[a.data_offset..]);
        fs::write(&path, &bad).unwrap();
        for args in [&[][..], &["-U"][..], &["--link", "copy"][..]] {
            let dest = tmp.path().join(format!("dest-{declared}-{}", args.len()));
            let mut a = vec!["checkout"];
            a.extend(args);
            a.extend([c.as_str(), dest.to_str().unwrap()]);
            let r = arbor_repo(&repo, &a).assert_clean_failure();
            let err = r.stderr_str();
            assert!(
                err.contains(&object) && err.contains("/data"),
                "declared {declared}: {}",
                r.describe()
            );
            let what = if declared < 6 {
                format!("more data than the {declared} bytes")
            } else {
                "ends after 6 of its 9 bytes".to_string()
            };
            assert!(err.contains(&what), "declared {declared}: {}", r.describe());
            assert!(!dest.join("data").exists(), "a partial file was published");
            let names: Vec<_> = fs::read_dir(&dest).unwrap().collect();
            assert!(names.is_empty(), "{names:?}");
        }
        let r = arbor_repo(&repo, ["fsck"]);
        assert!(!r.success(), "fsck accepted it: {}", r.describe());
        assert!(r.stdout_str().contains(&object), "{}", r.describe());
    }
    fs::write(&path, &good).unwrap();
    let dest = tmp.path().join("dest-good");
    arbor_repo_ok(&repo, ["checkout", &c, dest.to_str().unwrap()]);
    assert_eq!(fs::read(dest.join("data")).unwrap(), b"abcdef");
}

/// xattrs that steer a union filesystem (`trusted.overlay.*`,
/// `user.overlay.*`…) are data to ostree, but a checkout later used as an
/// overlayfs lower layer would obey them: by default they are not applied
/// (the entries are named in a warning, and files carrying them are
/// copied, not hardlinked, since a bare object carries its xattrs);
/// `--keep-overlay-xattrs` applies them; `--union-identical` over such a
/// checkout accepts it.
#[test]
fn overlay_xattrs_are_not_applied_by_default() {
    let tmp = shared_tempdir();
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    make_dir(&src.join("layer"), 0o755);
    set_xattr(&src.join("layer"), "trusted.overlay.opaque", b"y");
    write_file(&src.join("layer/f"), b"steered\n", 0o644);
    set_xattr(&src.join("layer/f"), "user.overlay.redirect", b"/elsewhere");
    set_xattr(&src.join("layer/f"), "user.keep", b"1");
    write_file(&src.join("plain"), b"plain\n", 0o644);
    set_xattr(&src.join("plain"), "user.keep", b"2");
    symlink("plain", src.join("lnk")).unwrap();
    // `xattr::set` does not follow symlinks: this is the link's own.
    xattr::set(src.join("lnk"), "trusted.overlay.origin", b"o").unwrap();
    let repo = tmp.path().join("repo");
    ostree_init(&repo, Mode::Bare);
    let c = ostree_commit(&repo, &src, "main", &CommitOpts::new("s", "", TIMESTAMP));
    let xattr_names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = xattr::list(p)
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("security."))
            .collect();
        v.sort();
        v
    };
    let f_object = object_path(&repo, &file_checksum(&repo, &c, "/layer/f"), "file");
    let plain_object = object_path(&repo, &file_checksum(&repo, &c, "/plain"), "file");
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();

    for link in ["auto", "copy"] {
        let dest = tmp.path().join(format!("dest-{link}"));
        let r = arbor_repo_ok(
            &repo,
            ["checkout", "--link", link, &c, dest.to_str().unwrap()],
        );
        let err = r.stderr_str();
        assert!(
            err.contains("warning:")
                && err.contains("3 entries")
                && err.contains("/layer, /layer/f, /lnk")
                && err.contains("--keep-overlay-xattrs"),
            "{}",
            r.describe()
        );
        assert_eq!(xattr_names(&dest.join("layer")), Vec::<String>::new());
        assert_eq!(xattr_names(&dest.join("layer/f")), ["user.keep"]);
        assert_eq!(xattr_names(&dest.join("lnk")), Vec::<String>::new());
        assert_eq!(xattr_names(&dest.join("plain")), ["user.keep"]);
        assert_eq!(fs::read(dest.join("layer/f")).unwrap(), b"steered\n");
        // The file with overlay xattrs is its own inode; the others are
        // still hardlinked where the checkout hardlinks.
        assert_ne!(ino(&dest.join("layer/f")), ino(&f_object));
        assert_eq!(
            ino(&dest.join("plain")) == ino(&plain_object),
            link == "auto"
        );
        // A union-identical checkout of the same commit accepts it.
        arbor_repo_ok(
            &repo,
            [
                "checkout",
                "--union-identical",
                "--link",
                link,
                &c,
                dest.to_str().unwrap(),
            ],
        );
    }
    let dest = tmp.path().join("dest-keep");
    let r = arbor_repo_ok(
        &repo,
        [
            "checkout",
            "--keep-overlay-xattrs",
            &c,
            dest.to_str().unwrap(),
        ],
    );
    assert!(!r.stderr_str().contains("warning"), "{}", r.describe());
    assert_eq!(xattr_names(&dest.join("layer")), ["trusted.overlay.opaque"]);
    assert_eq!(
        xattr_names(&dest.join("layer/f")),
        ["user.keep", "user.overlay.redirect"]
    );
    assert_eq!(xattr_names(&dest.join("lnk")), ["trusted.overlay.origin"]);
    assert_eq!(ino(&dest.join("layer/f")), ino(&f_object));
}
