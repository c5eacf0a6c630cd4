//! `arbor checkout` must produce exactly what `ostree checkout` produces:
//! for every repository mode (bare, bare-user, bare-user-only, archive),
//! every link mode (auto, hardlink, reflink, copy), with and without `-U`,
//! with `--subpath`, and when stacking commits with `--union`,
//! `--union-add`, `--union-identical` and `--whiteouts`. Repositories are
//! made by the real `ostree`; results are compared as manifests (type,
//! mode, owner, size, sha256, symlink target, xattrs of every path).
//!
//! Link behaviour is checked on inodes: a hardlinked file has the store
//! object's inode, copies and reflinks do not, empty files never do.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbor::ostree::{Checksum, Commit, DirTree, Metadata, ObjectType, TreeDir, TreeFile};
use common::*;

const TIMESTAMP: u64 = 1_700_000_000;

/// The edge tree (small variant) plus files a user-mode checkout must copy
/// because the owner cannot read them.
fn source_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = scratch_dir("checkout-src").join("src");
        build_edge_tree_with(&dir, 300, (1 << 20) + 4321);
        write_file(&dir.join("noread_0000"), b"nobody reads me\n", 0o000);
        write_file(&dir.join("writeonly_0200"), b"write only\n", 0o200);
        // Root is last in build_edge_tree_with; re-assert its mode after
        // adding files.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        dir
    })
}

/// A repository made by ostree holding one commit of the source tree.
struct Setup {
    repo: PathBuf,
    commit: String,
    /// Tree path → content checksum, from `ostree ls -R -C`.
    checksums: BTreeMap<String, String>,
}

fn setup(mode: Mode) -> &'static Setup {
    static CELLS: [OnceLock<Setup>; 4] = [const { OnceLock::new() }; 4];
    CELLS[mode.index()].get_or_init(|| {
        let repo = scratch_dir(&format!("checkout-{}", mode.name())).join("repo");
        ostree_init(&repo, mode);
        let commit = ostree_commit(
            &repo,
            source_tree(),
            "main",
            &CommitOpts::new("checkout test", "", TIMESTAMP),
        );
        let checksums = tree_checksums(&repo, &commit);
        Setup {
            repo,
            commit,
            checksums,
        }
    })
}

/// Path → content checksum of every file and symlink of a commit.
fn tree_checksums(repo: &Path, rev: &str) -> BTreeMap<String, String> {
    let out = ostree_repo_ok(repo, ["ls", "-R", "-C", rev]).stdout_str();
    let mut map = BTreeMap::new();
    for line in out.lines() {
        if line.starts_with('d') {
            continue;
        }
        let csum = line.split_whitespace().nth(4).expect("ls -C line");
        let start = line.find(csum).unwrap() + csum.len() + 1;
        let mut path = &line[start..];
        if line.starts_with('l') {
            path = path.split(" -> ").next().unwrap();
        }
        map.insert(path.to_string(), csum.to_string());
    }
    map
}

/// The manifest of `ostree checkout [-U] [--force-copy] COMMIT` for a
/// repository mode, computed once. Copies and hardlinks differ where the
/// store object carries more than the file (bare-user's user.ostreemeta).
fn reference(mode: Mode, user: bool, copy: bool) -> &'static str {
    static CELLS: [OnceLock<String>; 16] = [const { OnceLock::new() }; 16];
    CELLS[mode.index() * 4 + user as usize * 2 + copy as usize].get_or_init(|| {
        let s = setup(mode);
        let tmp = shared_tempdir();
        let dest = tmp.path().join("ostree");
        let mut args = vec!["checkout".to_string()];
        if user {
            args.push("-U".into());
        }
        if copy {
            args.push("--force-copy".into());
        }
        args.push(s.commit.clone());
        args.push(dest.to_string_lossy().into_owned());
        ostree_repo_ok(&s.repo, &args);
        manifest(&dest)
    })
}

/// Whether store objects can be shared with such a checkout.
fn shares_objects(mode: Mode, user: bool) -> bool {
    matches!(
        (mode, user),
        (Mode::Bare, false) | (Mode::BareUser, true) | (Mode::BareUserOnly, _)
    )
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

/// Runs `arbor -v checkout ARGS COMMIT DEST` and returns the reported
/// link mode line.
fn arbor_checkout(s: &Setup, extra: &[&str], rev: &str, dest: &Path) -> String {
    let mut args: Vec<String> = vec!["-v".into(), "checkout".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(rev.to_string());
    args.push(dest.to_string_lossy().into_owned());
    let r = arbor_repo_ok(&s.repo, &args);
    let err = r.stderr_str();
    err.lines()
        .find(|l| l.starts_with("link mode: "))
        .unwrap_or_else(|| panic!("no link mode reported\n{}", r.describe()))
        .to_string()
}

fn matrix(mode: Mode, link: &str, user: bool) {
    let s = setup(mode);
    let tmp = shared_tempdir();
    let dest = tmp.path().join("arbor");
    let mut extra = vec!["--link", link];
    if user {
        extra.push("-U");
    }
    let reported = arbor_checkout(s, &extra, &s.commit, &dest);
    let expect_links = shares_objects(mode, user) && matches!(link, "auto" | "hardlink");
    assert_manifest_eq(
        &manifest(&dest),
        reference(mode, user, !expect_links),
        &format!("arbor checkout --link={link} -U={user} of a {mode:?} repo vs ostree checkout"),
    );

    // How the content got there.
    let expected_mode = if expect_links { "hardlink" } else { "copy" };
    assert!(
        reported.starts_with(&format!("link mode: {expected_mode} ")),
        "expected {expected_mode}, arbor reported: {reported}"
    );
    // This filesystem (ext4) cannot reflink: the first attempt finds out
    // and the checkout copies instead.
    if link == "reflink" && mode != Mode::Archive {
        assert!(
            reported.contains("cannot reflink (FICLONE"),
            "the reflink fallback should say why: {reported}"
        );
    }
    let obj = |path: &str| object_path(&s.repo, &s.checksums[path], mode.content_ext());
    let big = dest.join("big.bin");
    assert_eq!(
        ino(&big) == ino(&obj("/big.bin")),
        expect_links,
        "{}: hardlinked to its object?",
        big.display()
    );
    // Empty files are always copies; so are files the owner cannot read
    // in a user-mode checkout.
    assert_ne!(ino(&dest.join("empty.txt")), ino(&obj("/empty.txt")));
    assert_eq!(fs::metadata(dest.join("empty.txt")).unwrap().nlink(), 1);
    if user || mode == Mode::BareUserOnly {
        assert_ne!(ino(&dest.join("noread_0000")), ino(&obj("/noread_0000")));
    }
    // Symlinks are only shared with bare repositories (bare-user ones are
    // regular files in the store, bare-user-only ones made fresh).
    let link = dest.join("links/rel");
    assert_eq!(
        ino(&link) == ino(&obj("/links/rel")),
        expect_links && mode == Mode::Bare,
        "{}: hardlinked to its object?",
        link.display()
    );
}

macro_rules! matrix_tests {
    ($($name:ident: $mode:expr, $link:expr, $user:expr;)*) => {
        $(
            #[test]
            fn $name() {
                matrix($mode, $link, $user);
            }
        )*
    };
}

matrix_tests! {
    bare_auto: Mode::Bare, "auto", false;
    bare_hardlink: Mode::Bare, "hardlink", false;
    bare_reflink: Mode::Bare, "reflink", false;
    bare_copy: Mode::Bare, "copy", false;
    bare_auto_user: Mode::Bare, "auto", true;
    bare_hardlink_user: Mode::Bare, "hardlink", true;
    bare_reflink_user: Mode::Bare, "reflink", true;
    bare_copy_user: Mode::Bare, "copy", true;
    bare_user_auto: Mode::BareUser, "auto", false;
    bare_user_hardlink: Mode::BareUser, "hardlink", false;
    bare_user_reflink: Mode::BareUser, "reflink", false;
    bare_user_copy: Mode::BareUser, "copy", false;
    bare_user_auto_user: Mode::BareUser, "auto", true;
    bare_user_hardlink_user: Mode::BareUser, "hardlink", true;
    bare_user_reflink_user: Mode::BareUser, "reflink", true;
    bare_user_copy_user: Mode::BareUser, "copy", true;
    bare_user_only_auto: Mode::BareUserOnly, "auto", false;
    bare_user_only_hardlink: Mode::BareUserOnly, "hardlink", false;
    bare_user_only_reflink: Mode::BareUserOnly, "reflink", false;
    bare_user_only_copy: Mode::BareUserOnly, "copy", false;
    bare_user_only_auto_user: Mode::BareUserOnly, "auto", true;
    bare_user_only_hardlink_user: Mode::BareUserOnly, "hardlink", true;
    bare_user_only_reflink_user: Mode::BareUserOnly, "reflink", true;
    bare_user_only_copy_user: Mode::BareUserOnly, "copy", true;
    archive_auto: Mode::Archive, "auto", false;
    archive_hardlink: Mode::Archive, "hardlink", false;
    archive_reflink: Mode::Archive, "reflink", false;
    archive_copy: Mode::Archive, "copy", false;
    archive_auto_user: Mode::Archive, "auto", true;
    archive_hardlink_user: Mode::Archive, "hardlink", true;
    archive_reflink_user: Mode::Archive, "reflink", true;
    archive_copy_user: Mode::Archive, "copy", true;
}

/// Every regular file of a hardlinked checkout of a bare repository is
/// its store object (same inode), except the empty ones; `--link=copy`
/// shares none.
#[test]
fn hardlinks_share_object_inodes() {
    let s = setup(Mode::Bare);
    let tmp = shared_tempdir();
    let (linked, copied) = (tmp.path().join("linked"), tmp.path().join("copied"));
    arbor_checkout(s, &["--link", "hardlink"], &s.commit, &linked);
    arbor_checkout(s, &["--link", "copy"], &s.commit, &copied);
    let mut checked = 0;
    for (path, csum) in &s.checksums {
        let rel = path.trim_start_matches('/');
        let object = object_path(&s.repo, csum, "file");
        let md = fs::symlink_metadata(linked.join(rel)).unwrap();
        let empty = md.is_file() && md.len() == 0;
        assert_eq!(md.ino() == ino(&object), !empty, "{path}");
        assert_ne!(ino(&copied.join(rel)), ino(&object), "{path}");
        checked += 1;
    }
    assert!(checked > 300, "only {checked} files checked");
}

/// With `--require-hardlinks`, a checkout that cannot share objects fails
/// up front instead of copying; one that can succeeds.
#[test]
fn require_hardlinks() {
    let tmp = shared_tempdir();
    for (mode, user, ok) in [
        (Mode::Bare, false, true),
        (Mode::Bare, true, false),
        (Mode::BareUser, false, false),
        (Mode::BareUser, true, true),
        (Mode::Archive, true, false),
    ] {
        let s = setup(mode);
        let dest = tmp.path().join(format!("{}-{user}", mode.name()));
        let mut args = vec!["checkout", "-H"];
        if user {
            args.push("-U");
        }
        let dest_s = dest.to_string_lossy().into_owned();
        args.extend([s.commit.as_str(), dest_s.as_str()]);
        let r = arbor_repo(&s.repo, &args);
        if ok {
            r.assert_ok();
            assert_manifest_eq(
                &manifest(&dest),
                reference(mode, user, false),
                "checkout -H",
            );
        } else {
            let r = r.assert_clean_failure();
            assert!(
                r.stderr_str().contains("cannot hardlink") && !dest.exists(),
                "{mode:?} -U={user}\n{}",
                r.describe()
            );
        }
    }
}

/// Subpaths: a directory becomes DEST, a file or symlink is placed inside
/// DEST, exactly as with ostree (which creates that DEST `0700`).
#[test]
fn subpaths() {
    let tmp = shared_tempdir();
    for (mode, user) in [(Mode::Bare, false), (Mode::Archive, true)] {
        let s = setup(mode);
        for sub in [
            "/sort",
            "sticky_dir",
            "/deep/l01/l02",
            "/file_0644.txt",
            "/links/rel",
            "/setuid_04755",
        ] {
            let tag = format!("{}-{user}-{}", mode.name(), sub.replace('/', "_"));
            let (o, a) = (
                tmp.path().join(format!("o{tag}")),
                tmp.path().join(format!("a{tag}")),
            );
            let mut args = vec!["checkout".to_string(), format!("--subpath={sub}")];
            if user {
                args.push("-U".into());
            }
            args.push(s.commit.clone());
            ostree_repo_ok(
                &s.repo,
                args.iter()
                    .cloned()
                    .chain([o.to_string_lossy().into_owned()]),
            );
            let mut ours = vec!["checkout".to_string(), "--subpath".into(), sub.into()];
            if user {
                ours.push("-U".into());
            }
            ours.push(s.commit.clone());
            ours.push(a.to_string_lossy().into_owned());
            arbor_repo_ok(&s.repo, &ours);
            assert_manifest_eq(
                &manifest(&a),
                &manifest(&o),
                &format!("--subpath {sub} ({mode:?}, -U={user})"),
            );
        }
        // A file goes into an existing DEST too, but never over a file.
        let dest = tmp.path().join(format!("existing-{}", mode.name()));
        make_dir(&dest, 0o755);
        let args = |sub: &str| {
            let mut a = vec![
                "checkout".to_string(),
                "--subpath".into(),
                sub.into(),
                "-U".into(),
            ];
            a.push(s.commit.clone());
            a.push(dest.to_string_lossy().into_owned());
            a
        };
        arbor_repo_ok(&s.repo, args("/file_0644.txt"));
        arbor_repo_ok(&s.repo, args("/exec_0755"));
        let r = arbor_repo(&s.repo, args("/file_0644.txt")).assert_clean_failure();
        assert!(
            r.stderr_str().contains("already exists"),
            "{}",
            r.describe()
        );
        let r = arbor_repo(&s.repo, args("/no/such/file")).assert_clean_failure();
        assert!(r.stderr_str().contains("--subpath"), "{}", r.describe());
    }
}

/// DEST must not exist without a union mode; nothing is written into it.
#[test]
fn existing_dest_is_refused() {
    let s = setup(Mode::Bare);
    let tmp = shared_tempdir();
    let dest = tmp.path().join("dest");
    make_dir(&dest, 0o755);
    write_file(&dest.join("mine"), b"mine\n", 0o644);
    let before = manifest(&dest);
    let r = arbor_repo(
        &s.repo,
        ["checkout", s.commit.as_str(), dest.to_str().unwrap()],
    )
    .assert_clean_failure();
    assert!(
        r.stderr_str().contains("already exists"),
        "{}",
        r.describe()
    );
    assert_eq!(manifest(&dest), before);
}

// ---------------------------------------------------------------------------
// Stacking commits

/// Two layers sharing some paths: `changed.txt` differs, `link` points
/// elsewhere, a file becomes a directory, the rest is shared or new.
fn layer_trees(base: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let a = base.join("layer-a");
    make_dir(&a, 0o755);
    write_file(&a.join("common.txt"), b"same in both\n", 0o644);
    write_file(&a.join("changed.txt"), b"version 1\n", 0o644);
    write_file(&a.join("only_a.txt"), b"only in a\n", 0o600);
    write_file(&a.join("empty"), b"", 0o644);
    make_dir(&a.join("dir"), 0o750);
    write_file(&a.join("dir/x"), b"x\n", 0o644);
    write_file(&a.join("dir/a_only"), b"a\n", 0o644);
    symlink("common.txt", a.join("link")).unwrap();

    let b = base.join("layer-b");
    make_dir(&b, 0o755);
    write_file(&b.join("common.txt"), b"same in both\n", 0o644);
    write_file(&b.join("changed.txt"), b"version 2, longer\n", 0o755);
    write_file(&b.join("only_b.txt"), b"only in b\n", 0o644);
    write_file(&b.join("empty"), b"", 0o644);
    make_dir(&b.join("dir"), 0o755);
    write_file(&b.join("dir/x"), b"x\n", 0o644);
    write_file(&b.join("dir/b_only"), b"b\n", 0o644);
    symlink("changed.txt", b.join("link")).unwrap();
    make_dir(&b.join("newdir"), 0o700);
    write_file(&b.join("newdir/y"), b"y\n", 0o644);

    // Identical to a where they overlap.
    let c = base.join("layer-c");
    make_dir(&c, 0o755);
    write_file(&c.join("common.txt"), b"same in both\n", 0o644);
    write_file(&c.join("empty"), b"", 0o644);
    make_dir(&c.join("dir"), 0o755);
    write_file(&c.join("dir/x"), b"x\n", 0o644);
    write_file(&c.join("only_c.txt"), b"c\n", 0o644);
    symlink("common.txt", c.join("link")).unwrap();
    (a, b, c)
}

struct Layers {
    repo: PathBuf,
    a: String,
    b: String,
    c: String,
}

fn layers(mode: Mode) -> Layers {
    let base = scratch_dir(&format!("checkout-layers-{}", mode.name()));
    let (ta, tb, tc) = layer_trees(&base);
    let repo = base.join("repo");
    ostree_init(&repo, mode);
    let opts = CommitOpts::new("layer", "", TIMESTAMP);
    Layers {
        a: ostree_commit(&repo, &ta, "a", &opts),
        b: ostree_commit(&repo, &tb, "b", &opts),
        c: ostree_commit(&repo, &tc, "c", &opts),
        repo,
    }
}

/// Checks out `revs` one over the other with each tool (the first
/// without, the rest with `flags`), returning (ostree, arbor) results:
/// `Ok(manifest)` or `Err(stderr)`.
fn stack(
    repo: &Path,
    revs: &[&str],
    flags: &[&str],
    ostree_extra: &[&str],
    arbor_extra: &[&str],
    dir: &Path,
) -> (Result<String, String>, Result<String, String>) {
    let one = |tool: &str, extra: &[&str]| {
        let dest = dir.join(tool);
        for (i, rev) in revs.iter().enumerate() {
            let mut args: Vec<String> = vec!["checkout".into()];
            args.extend(extra.iter().map(|s| s.to_string()));
            if i > 0 {
                args.extend(flags.iter().map(|s| s.to_string()));
            }
            args.push(rev.to_string());
            args.push(dest.to_string_lossy().into_owned());
            let r = if tool == "ostree" {
                ostree_repo(repo, &args)
            } else {
                arbor_repo(repo, &args)
            };
            if !r.success() {
                let r = if tool == "arbor" {
                    r.assert_clean_failure()
                } else {
                    r
                };
                return Err(r.stderr_str());
            }
        }
        Ok(manifest(&dest))
    };
    (one("ostree", ostree_extra), one("arbor", arbor_extra))
}

#[test]
fn union_modes_match_ostree() {
    for (mode, user) in [
        (Mode::Bare, false),
        (Mode::Archive, false),
        (Mode::BareUser, true),
    ] {
        let l = layers(mode);
        let u: &[&str] = if user { &["-U"] } else { &[] };
        for (flags, must_succeed) in [
            (&["--union"][..], true),
            (&["--union-add"][..], true),
            (&[][..], false),
        ] {
            let tmp = shared_tempdir();
            let (o, a) = stack(&l.repo, &[&l.a, &l.b], flags, u, u, tmp.path());
            match (&o, &a) {
                (Ok(o), Ok(a)) => {
                    assert!(must_succeed);
                    assert_manifest_eq(a, o, &format!("{mode:?} a then b with {flags:?}"));
                }
                (Err(_), Err(e)) => {
                    assert!(!must_succeed);
                    assert!(e.contains("already exists"), "{e}");
                }
                _ => panic!("{mode:?} {flags:?}: ostree {o:?} but arbor {a:?}"),
            }
        }
        // Stacking the same commit twice with --union-add changes nothing.
        let tmp = shared_tempdir();
        let (o, a) = stack(&l.repo, &[&l.b, &l.b], &["--union-add"], u, u, tmp.path());
        assert_manifest_eq(&a.unwrap(), &o.unwrap(), "b then b --union-add");
    }
}

/// ostree only does `--union-identical` with `-H`; arbor compares content
/// and also works for copies.
#[test]
fn union_identical() {
    let l = layers(Mode::Bare);
    // Identical overlap: a then c.
    let tmp = shared_tempdir();
    let (o, a) = stack(
        &l.repo,
        &[&l.a, &l.c],
        &["--union-identical"],
        &["-H"],
        &["-H"],
        tmp.path(),
    );
    assert_manifest_eq(&a.unwrap(), &o.unwrap(), "a then c --union-identical -H");
    // Differing overlap: a then b fails in both, naming the file.
    let tmp = shared_tempdir();
    let (o, a) = stack(
        &l.repo,
        &[&l.a, &l.b],
        &["--union-identical"],
        &["-H"],
        &["-H"],
        tmp.path(),
    );
    assert!(o.is_err(), "ostree accepted a differing file: {o:?}");
    let e = a.unwrap_err();
    assert!(e.contains("changed.txt") && e.contains("differs"), "{e}");

    // Copies are compared by content: a (copied) then c (copied) works,
    // and so does a copy checkout over a hardlinked one.
    for (first, second) in [("copy", "copy"), ("hardlink", "copy"), ("copy", "hardlink")] {
        let tmp = shared_tempdir();
        let dest = tmp.path().join("d");
        let d = dest.to_str().unwrap();
        arbor_repo_ok(&l.repo, ["checkout", "--link", first, &l.a, d]);
        arbor_repo_ok(
            &l.repo,
            ["checkout", "--link", second, "--union-identical", &l.c, d],
        );
        let (o, _) = stack(
            &l.repo,
            &[&l.a, &l.c],
            &["--union-identical"],
            &["-H"],
            &[],
            tmp.path(),
        );
        assert_manifest_eq(
            &manifest(&dest),
            &o.unwrap(),
            &format!("{first} then {second}"),
        );
        // Changing one byte of a copied file makes it differ.
        if first == "copy" {
            write_file(&dest.join("common.txt"), b"same in bot\n", 0o644);
            let r = arbor_repo(&l.repo, ["checkout", "--union-identical", &l.c, d])
                .assert_clean_failure();
            assert!(r.stderr_str().contains("common.txt"), "{}", r.describe());
        }
    }
    // In user mode, a user-mode copy is identical to the tree.
    let tmp = shared_tempdir();
    let dest = tmp.path().join("u");
    let d = dest.to_str().unwrap();
    arbor_repo_ok(&l.repo, ["checkout", "-U", "--link", "copy", &l.a, d]);
    arbor_repo_ok(
        &l.repo,
        [
            "checkout",
            "-U",
            "--link",
            "copy",
            "--union-identical",
            &l.c,
            d,
        ],
    );
}

/// Three layers with whiteouts, checked out with `--union --whiteouts`:
/// `.wh.NAME` removes files and directories of lower layers,
/// `.wh..wh..opq` hides a directory's lower contents, a symlink named
/// `.wh.*` is an ordinary symlink, and a later layer can bring back what
/// an earlier one removed.
#[test]
fn whiteouts_three_layers() {
    let base = scratch_dir("checkout-whiteouts");
    let l1 = base.join("l1");
    make_dir(&l1, 0o755);
    write_file(&l1.join("keep"), b"keep\n", 0o644);
    write_file(&l1.join("victim"), b"victim\n", 0o644);
    make_dir(&l1.join("vdir/deeper"), 0o755);
    write_file(&l1.join("vdir/deeper/f"), b"f\n", 0o644);
    make_dir(&l1.join("opq/sub"), 0o755);
    write_file(&l1.join("opq/old1"), b"old1\n", 0o644);
    write_file(&l1.join("opq/sub/old2"), b"old2\n", 0o644);
    make_dir(&l1.join("plain"), 0o755);
    write_file(&l1.join("plain/p"), b"p\n", 0o644);

    let l2 = base.join("l2");
    make_dir(&l2, 0o755);
    write_file(&l2.join(".wh.victim"), b"", 0o644);
    write_file(&l2.join(".wh.vdir"), b"", 0o644);
    write_file(&l2.join(".wh.absent"), b"", 0o644);
    make_dir(&l2.join("opq"), 0o711);
    write_file(&l2.join("opq/.wh..wh..opq"), b"", 0o644);
    write_file(&l2.join("opq/new1"), b"new1\n", 0o644);
    write_file(&l2.join("added"), b"added\n", 0o644);
    symlink("keep", l2.join(".wh.keep")).unwrap();
    make_dir(&l2.join("plain"), 0o755);
    write_file(&l2.join("plain/.wh.p"), b"", 0o644);

    let l3 = base.join("l3");
    make_dir(&l3, 0o755);
    write_file(&l3.join(".wh.added"), b"", 0o644);
    write_file(&l3.join("victim"), b"victim is back\n", 0o600);
    make_dir(&l3.join("opq"), 0o755);
    write_file(&l3.join("opq/.wh.new1"), b"", 0o644);
    write_file(&l3.join("opq/new2"), b"new2\n", 0o644);
    make_dir(&l3.join("vdir"), 0o755);
    write_file(&l3.join("vdir/fresh"), b"fresh\n", 0o644);

    for mode in [Mode::Bare, Mode::Archive] {
        let repo = base.join(format!("repo-{}", mode.name()));
        ostree_init(&repo, mode);
        let opts = CommitOpts::new("layer", "", TIMESTAMP);
        let c: Vec<String> = [&l1, &l2, &l3]
            .iter()
            .enumerate()
            .map(|(i, t)| ostree_commit(&repo, t, &format!("l{i}"), &opts))
            .collect();
        let revs: Vec<&str> = c.iter().map(String::as_str).collect();
        let tmp = shared_tempdir();
        let w = ["--whiteouts"];
        let (o, a) = stack(&repo, &revs, &["--union"], &w, &w, tmp.path());
        let (o, a) = (o.unwrap(), a.unwrap());
        assert_manifest_eq(&a, &o, &format!("three layers with whiteouts ({mode:?})"));
        for (path, present) in [
            ("victim", true),
            ("vdir/deeper", false),
            ("vdir/fresh", true),
            ("opq/old1", false),
            ("opq/sub", false),
            ("opq/new1", false),
            ("opq/new2", true),
            ("added", false),
            ("plain/p", false),
            (".wh.keep", true),
            ("keep", true),
        ] {
            let p = tmp.path().join("arbor").join(path);
            assert_eq!(p.symlink_metadata().is_ok(), present, "{path}");
        }
        // Without --whiteouts the markers are ordinary files.
        let tmp = shared_tempdir();
        let (o, a) = stack(&repo, &revs, &["--union"], &[], &[], tmp.path());
        assert_manifest_eq(&a.unwrap(), &o.unwrap(), "three layers, whiteouts off");
    }
}

/// One directory of 20,000 files, checked out as ostree checks it out,
/// then checked out again over itself with `--union` (every file replaced
/// by a link to the same object: no temp name may stay behind) and with
/// `--union-identical`.
///
/// Creating 20,000 source files and committing them is slow, so the
/// dirtree is written directly (with arbor's serializer, into a repository
/// made by ostree): 20,000 names over 100 content objects committed by
/// ostree. Hardlinks only: deleting 20,000 copies afterwards costs half a
/// minute on a filesystem mounted with `discard`; copies are covered by
/// the matrix tests.
#[test]
fn twenty_thousand_files_in_one_directory() {
    const N: usize = 20_000;
    const DISTINCT: usize = 100;
    let base = scratch_dir("checkout-20k");
    let src = base.join("src");
    make_dir(&src, 0o755);
    for i in 0..DISTINCT {
        write_file(
            &src.join(format!("c{i:03}")),
            format!("content {i}\n").as_bytes(),
            0o644,
        );
    }
    let repo = base.join("repo");
    ostree_init(&repo, Mode::Bare);
    let seed = ostree_commit(&repo, &src, "seed", &CommitOpts::new("seed", "", TIMESTAMP));
    let (_, root_meta) = dir_checksums(&repo, &seed, "/");
    let root_meta = Checksum::from_hex(&root_meta).unwrap();
    let contents: Vec<Checksum> = (0..DISTINCT)
        .map(|i| Checksum::from_hex(&file_checksum(&repo, &seed, &format!("/c{i:03}"))).unwrap())
        .collect();
    let big = DirTree {
        files: (0..N)
            .map(|i| TreeFile {
                name: format!("file{i:05}"),
                checksum: contents[i % DISTINCT],
            })
            .collect(),
        dirs: vec![],
    };
    let big_csum = write_object(&repo, ObjectType::DirTree, &big.serialize());
    let root = DirTree {
        files: vec![],
        dirs: vec![TreeDir {
            name: "big".into(),
            tree: big_csum,
            meta: root_meta,
        }],
    };
    let root_csum = write_object(&repo, ObjectType::DirTree, &root.serialize());
    let commit = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: "20k".into(),
        body: String::new(),
        timestamp: TIMESTAMP,
        root_tree: root_csum,
        root_meta,
    };
    let commit = write_object(&repo, ObjectType::Commit, &commit.serialize()).to_hex();
    ostree_repo_ok(&repo, ["fsck"]);

    let tmp = shared_tempdir();
    let o = tmp.path().join("ostree");
    ostree_repo_ok(&repo, ["checkout", commit.as_str(), o.to_str().unwrap()]);
    let expected = manifest(&o);
    let dest = tmp.path().join("arbor");
    let d = dest.to_str().unwrap();
    for (flags, summary) in [
        (
            &[][..],
            format!("{N} files, 0 symlinks ({N} hardlinked, 0 reflinked, 0 copied)"),
        ),
        (&["--union"][..], format!("{N} replaced")),
        (&["--union-identical"][..], format!("{N} kept")),
    ] {
        let mut args = vec!["-v", "checkout"];
        args.extend(flags);
        args.extend([commit.as_str(), d]);
        let r = arbor_repo_ok(&repo, &args);
        assert!(r.stderr_str().contains(&summary), "{}", r.describe());
        assert_eq!(
            fs::read_dir(dest.join("big")).unwrap().count(),
            N,
            "{flags:?}"
        );
        assert_manifest_eq(&manifest(&dest), &expected, &format!("20k files {flags:?}"));
    }
}

/// Writes a metadata object into a repository; returns its checksum.
fn write_object(repo: &Path, objtype: ObjectType, data: &[u8]) -> Checksum {
    Checksum::from_hex(&write_metadata_object(repo, objtype.name(), data)).unwrap()
}
