//! Reflinked checkouts on a filesystem that can share blocks: XFS with
//! `reflink=1` on a loop device. The files share extents with the store
//! objects (filefrag reports them "shared") yet are inodes of their own,
//! so writing to one leaves the object intact.
//!
//! Needs `mkfs.xfs` (xfsprogs) and loop mounts (root); when either is
//! missing the test says so on stderr and passes. The fallback on a
//! filesystem without reflinks (ext4) is checked by the matrix tests in
//! `checkout_interop.rs`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Unmounts on drop, whatever happened in the test.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Mounts a fresh reflink-capable XFS image under `dir`, or says why not.
fn mount_xfs(dir: &Path) -> Result<Mounted, String> {
    let img = dir.join("xfs.img");
    // XFS wants at least 300 MB; the file is sparse.
    fs::File::create(&img)
        .and_then(|f| f.set_len(512 << 20))
        .map_err(|e| format!("creating {}: {e}", img.display()))?;
    let mut mkfs = Command::new("mkfs.xfs");
    mkfs.args(["-q", "-m", "reflink=1"]).arg(&img);
    let r = run(mkfs);
    if !r.success() {
        return Err(format!("mkfs.xfs failed or is missing\n{}", r.describe()));
    }
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut mount = Command::new("mount");
    mount.args(["-o", "loop"]).arg(&img).arg(&mnt);
    let r = run(mount);
    if !r.success() {
        return Err(format!("cannot loop-mount\n{}", r.describe()));
    }
    Ok(Mounted(mnt))
}

/// A mounted XFS (and the directory holding its image), or `None` after
/// saying on stderr why the test is skipped.
fn xfs_or_skip() -> Option<(tempfile::TempDir, Mounted)> {
    let tmp = tempdir();
    match mount_xfs(tmp.path()) {
        // The mount is dropped (unmounted) before the directory.
        Ok(m) => Some((tmp, m)),
        Err(why) => {
            eprintln!("SKIPPED: no reflink-capable filesystem: {why}");
            None
        }
    }
}

#[test]
fn reflinks_on_xfs() {
    let Some((_tmp, m)) = xfs_or_skip() else {
        return;
    };
    let root = &m.0;
    let src = root.join("src");
    make_dir(&src.join("sub"), 0o755);
    let big = pseudo_random_bytes(3 << 20, 7);
    write_file(&src.join("big.bin"), &big, 0o644);
    write_file(&src.join("sub/small"), b"small\n", 0o600);
    write_file(&src.join("empty"), b"", 0o644);
    symlink("big.bin", src.join("link")).unwrap();
    let repo = root.join("repo");
    ostree_init(&repo, Mode::Bare);
    let commit = ostree_commit(&repo, &src, "main", &CommitOpts::new("reflink", "", 1));
    let object = object_path(&repo, &file_checksum(&repo, &commit, "/big.bin"), "file");

    for (args, mode) in [
        (&["--link", "reflink"][..], "reflink"),
        (&["-U"][..], "reflink"),
        (&["--link", "auto"][..], "hardlink"),
    ] {
        let user = args.contains(&"-U");
        let reference = root.join(format!("ostree-{user}"));
        if !reference.exists() {
            let mut a = vec!["checkout", "--force-copy"];
            if user {
                a.push("-U");
            }
            a.extend([commit.as_str(), reference.to_str().unwrap()]);
            ostree_repo_ok(&repo, &a);
        }
        let dest = root.join(format!("arbor-{mode}-{user}"));
        let mut a = vec!["-v", "checkout"];
        a.extend(args);
        a.extend([commit.as_str(), dest.to_str().unwrap()]);
        let r = arbor_repo_ok(&repo, &a);
        let err = r.stderr_str();
        assert!(
            err.contains(&format!("link mode: {mode} ")),
            "{args:?}\n{}",
            r.describe()
        );
        assert_manifest_eq(
            &manifest(&dest),
            &manifest(&reference),
            &format!("{args:?}"),
        );
        let out = dest.join("big.bin");
        if mode == "hardlink" {
            assert_eq!(
                fs::metadata(&out).unwrap().ino(),
                fs::metadata(&object).unwrap().ino()
            );
            continue;
        }
        // Two regular files with data; the empty one is just created.
        assert!(
            err.contains("2 reflinked") && err.contains(" 0 bytes copied"),
            "{}",
            r.describe()
        );
        assert_ne!(
            fs::metadata(&out).unwrap().ino(),
            fs::metadata(&object).unwrap().ino()
        );
        let mut ff = Command::new("filefrag");
        ff.arg("-v").arg(&out);
        let ff = run(ff).assert_ok().stdout_str();
        assert!(
            ff.contains("shared"),
            "extents of {} are not shared:\n{ff}",
            out.display()
        );
        // Copy on write: the object keeps its content.
        fs::write(&out, b"overwritten").unwrap();
        assert_eq!(fs::read(&object).unwrap(), big);
    }
    ostree_repo_ok(&repo, ["fsck"]);
}

/// Pulling from a local repository of another uncompressed mode on the same
/// reflink-capable filesystem (a local source, or a `--localcache-repo`)
/// clones the object data instead of copying it: the store's object shares
/// its extents with the source's yet is its own inode with its own
/// metadata, and the store passes `ostree fsck`.
#[test]
fn local_pulls_reflink_across_modes_on_xfs() {
    let Some((_tmp, m)) = xfs_or_skip() else {
        return;
    };
    let root = &m.0;
    let src = root.join("src");
    make_dir(&src, 0o755);
    let big = pseudo_random_bytes(2 << 20, 11);
    write_file(&src.join("big.bin"), &big, 0o644);
    write_file(&src.join("small"), b"small\n", 0o600);
    let source = root.join("source");
    ostree_init(&source, Mode::BareUser);
    let commit = ostree_commit(&source, &src, "main", &CommitOpts::new("reflink", "", 1));
    let csum = file_checksum(&source, &commit, "/big.bin");
    let theirs = object_path(&source, &csum, "file");

    for via_cache in [false, true] {
        let store = root.join(format!("store-{via_cache}"));
        arbor_init(&store, Mode::Bare);
        let mut args: Vec<String> = vec!["pull".into()];
        if via_cache {
            // An archive copy as the source: content objects are taken
            // from the cache, which is consulted first.
            let archive = root.join("archive");
            if !archive.exists() {
                ostree_init(&archive, Mode::Archive);
                ostree_repo_ok(&archive, ["pull-local", source.to_str().unwrap(), &commit]);
            }
            args.extend([
                archive.display().to_string(),
                commit.clone(),
                "--localcache-repo".into(),
                source.display().to_string(),
            ]);
        } else {
            args.extend([source.display().to_string(), commit.clone()]);
        }
        arbor_repo_ok(&store, &args);
        let ours = object_path(&store, &csum, "file");
        let (a, b) = (fs::metadata(&theirs).unwrap(), fs::metadata(&ours).unwrap());
        assert_ne!(a.ino(), b.ino(), "a clone, not a hardlink");
        let mut ff = Command::new("filefrag");
        ff.arg("-v").arg(&ours);
        let ff = run(ff).assert_ok().stdout_str();
        assert!(
            ff.contains("shared"),
            "cache={via_cache}: not reflinked:\n{ff}"
        );
        assert_eq!(fs::read(&ours).unwrap(), big);
        ostree_repo_ok(&store, ["fsck"]);
    }
}
