//! The store under hostile local conditions: default ACLs on its tmp/,
//! and a dead transaction's leftovers found while another process holds
//! the repository lock exclusively.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A POSIX ACL in the kernel's xattr form: version 2, then (tag, perm, id)
/// entries sorted by tag.
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

/// Every object file's mode and whether it carries an ACL.
fn object_files(repo: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(repo.join("objects")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if !md.is_file() {
                continue;
            }
            let acl = xattr::get(&p, "system.posix_acl_access").unwrap().is_some();
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                md.mode() & 0o7777,
                acl,
            ));
        }
    }
    out.sort();
    out
}

/// A default ACL on the repository's tmp/ (inherited by whatever is
/// created there) must not change the objects: not their modes (a
/// restrictive ACL replaces the umask), not their xattrs (an extended one
/// gives new files an access ACL). Both tools' objects must agree and
/// `ostree fsck` must pass.
#[test]
fn default_acl_on_tmp_changes_no_object() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    write_file(&src.join("plain"), b"plain\n", 0o644);
    write_file(&src.join("script"), b"#!/bin/sh\n", 0o755);
    write_file(&src.join("secret"), b"secret\n", 0o600);
    write_file(&src.join("shared"), b"shared\n", 0o664);
    make_dir(&src.join("sub"), 0o750);
    write_file(&src.join("sub/setgid"), b"g\n", 0o2755);
    let opts = CommitOpts::new("acl", "", 1_700_000_000);

    let reference = tmp.path().join("reference");
    ostree_init(&reference, Mode::Bare);
    let commit = ostree_commit(&reference, &src, "main", &opts);
    let want = object_files(&reference);

    let acls = [
        // Restrictive: the group and others get nothing.
        acl_xattr(&[
            (USER_OBJ, 7, NO_ID),
            (GROUP_OBJ, 0, NO_ID),
            (OTHER, 0, NO_ID),
        ]),
        // Extended: a named user, so new files get an access ACL.
        acl_xattr(&[
            (USER_OBJ, 7, NO_ID),
            (USER, 7, 4242),
            (GROUP_OBJ, 5, NO_ID),
            (MASK, 7, NO_ID),
            (OTHER, 5, NO_ID),
        ]),
    ];
    for (i, acl) in acls.iter().enumerate() {
        let repo = tmp.path().join(format!("repo{i}"));
        arbor_init(&repo, Mode::Bare);
        xattr::set(repo.join("tmp"), "system.posix_acl_default", acl).unwrap();
        assert_eq!(arbor_commit(&repo, &src, "main", &opts), commit, "acl {i}");
        assert_eq!(object_files(&repo), want, "acl {i}: arbor commit");
        ostree_repo_ok(&repo, ["fsck"]);

        // The same through a pull.
        let pulled = tmp.path().join(format!("pulled{i}"));
        arbor_init(&pulled, Mode::Bare);
        xattr::set(pulled.join("tmp"), "system.posix_acl_default", acl).unwrap();
        arbor_repo_ok(
            &pulled,
            ["pull".as_ref(), reference.as_os_str(), "main".as_ref()],
        );
        assert_eq!(object_files(&pulled), want, "acl {i}: arbor pull");
        ostree_repo_ok(&pulled, ["fsck"]);
    }
}

/// This boot's id as the store spells it in transaction names.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

/// Leaves what a transaction killed after staging one object would leave:
/// its (unlocked) lock file and its staging directory.
fn fake_dead_transaction(repo: &Path, object_from: &Path) -> String {
    let id = format!("{}-999999-1", boot_id());
    let staging = repo.join("tmp").join(format!("arbor-txn-{id}"));
    let name = std::fs::read_dir(object_from.join("objects"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "file"))
        .unwrap();
    let dir = name.parent().unwrap().file_name().unwrap();
    std::fs::create_dir_all(staging.join(dir)).unwrap();
    std::fs::copy(&name, staging.join(dir).join(name.file_name().unwrap())).unwrap();
    std::fs::write(repo.join("tmp").join(format!("arbor-txn-{id}.lock")), b"").unwrap();
    format!(
        "{}/{}",
        dir.to_string_lossy(),
        name.file_name().unwrap().to_string_lossy()
    )
}

/// A dead transaction's finished objects are adopted by the next write,
/// not by a command that only reads: a read-only command while another
/// process (a prune) holds the lock exclusively runs at once and leaves
/// the leftovers alone; the next commit adopts them.
#[test]
fn stale_cleanup_never_waits_for_the_lock() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    write_file(&src.join("a"), b"a\n", 0o644);
    let donor = tmp.path().join("donor");
    ostree_init(&donor, Mode::Bare);
    ostree_commit(&donor, &src, "main", &CommitOpts::new("s", "", 0));

    let repo = tmp.path().join("repo");
    arbor_init(&repo, Mode::Bare);
    // Long enough that waiting for it would be seen.
    let config = std::fs::read_to_string(repo.join("config")).unwrap();
    std::fs::write(
        repo.join("config"),
        config.replace("[core]\n", "[core]\nlock-timeout-secs=60\n"),
    )
    .unwrap();
    let object = fake_dead_transaction(&repo, &donor);

    let held = lock_repo(&repo, true);
    let start = Instant::now();
    arbor_repo_ok(&repo, ["refs"]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "refs waited {:?} for the lock",
        start.elapsed()
    );
    assert!(!repo.join("objects").join(&object).exists());
    assert_eq!(
        std::fs::read_dir(repo.join("tmp"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("arbor-txn-"))
            .count(),
        2,
        "the leftovers stay for a later write"
    );

    drop(held);
    arbor_repo_ok(&repo, ["refs"]);
    assert!(
        !repo.join("objects").join(&object).exists(),
        "reads write nothing"
    );
    let empty = tmp.path().join("empty");
    make_dir(&empty, 0o755);
    arbor_repo_ok(&repo, ["commit", "--branch", "x", empty.to_str().unwrap()]);
    assert!(repo.join("objects").join(&object).is_file(), "adopted");
    assert!(!std::fs::read_dir(repo.join("tmp")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("arbor-txn-")
    }));
    ostree_repo_ok(&repo, ["fsck"]);
}

/// Unmounts on drop, so a failing test leaves no FUSE mount behind.
struct FuseMount(std::path::PathBuf);

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A store on a filesystem without `O_TMPFILE` or `RENAME_NOREPLACE`
/// (unionfs-fuse refuses both, as NFS and most FUSE filesystems do) works:
/// named temporary files and link-then-unlink renames stand in. Commit,
/// pull and checkout all run there, and ostree finds the store sound.
#[test]
fn store_on_a_filesystem_without_tmpfile() {
    let tmp = tempdir();
    let branch = tmp.path().join("branch");
    let mnt = tmp.path().join("mnt");
    make_dir(&branch, 0o755);
    make_dir(&mnt, 0o755);
    let st = std::process::Command::new("unionfs")
        .arg("-o")
        .arg("cow,allow_other")
        .arg(format!("{}=RW", branch.display()))
        .arg(&mnt)
        .status()
        .expect("unionfs-fuse is installed by scripts/test");
    assert!(st.success());
    let _mount = FuseMount(mnt.clone());

    let src = tmp.path().join("src");
    make_dir(&src, 0o755);
    write_file(&src.join("a"), b"a\n", 0o644);
    write_file(&src.join("run"), b"#!/bin/sh\n", 0o755);
    make_dir(&src.join("d"), 0o755);
    write_file(&src.join("d/b"), &pseudo_random_bytes(300_000, 7), 0o644);
    std::os::unix::fs::symlink("../a", src.join("d/link")).unwrap();
    let opts = CommitOpts::new("fuse", "", 1_700_000_000);
    let reference = tmp.path().join("reference");
    ostree_init(&reference, Mode::Archive);
    let commit = ostree_commit(&reference, &src, "main", &opts);

    for mode in [Mode::BareUserOnly, Mode::Archive] {
        // The same commit as in a store on an ordinary filesystem.
        let plain = tmp.path().join(format!("plain-{}", mode.name()));
        arbor_init(&plain, mode);
        let want = arbor_commit(&plain, &src, "main", &opts);
        let repo = mnt.join(format!("commit-{}", mode.name()));
        arbor_init(&repo, mode);
        assert_eq!(arbor_commit(&repo, &src, "main", &opts), want, "{mode:?}");
        assert_eq!(list_objects(&repo), list_objects(&plain), "{mode:?}");
        ostree_repo_ok(&repo, ["fsck"]);
        // Objects land by the fallback rename: a second commit of the same
        // tree finds them present rather than failing on existing names.
        arbor_commit(&repo, &src, "again", &opts);
        assert_eq!(
            dir_checksums(&repo, "again", "/"),
            dir_checksums(&repo, "main", "/"),
            "{mode:?}"
        );
        assert_eq!(list_objects(&repo).len(), list_objects(&plain).len() + 1);

        let pulled = mnt.join(format!("pull-{}", mode.name()));
        arbor_init(&pulled, mode);
        arbor_repo_ok(
            &pulled,
            ["pull".as_ref(), reference.as_os_str(), "main".as_ref()],
        );
        ostree_repo_ok(&pulled, ["fsck"]);
        assert_eq!(ostree_rev_parse(&pulled, "main"), commit);

        let out = tmp.path().join(format!("out-{}", mode.name()));
        arbor_repo_ok(
            &pulled,
            [
                "checkout".as_ref(),
                "-U".as_ref(),
                "main".as_ref(),
                out.as_os_str(),
            ],
        );
        assert_eq!(
            std::fs::read(out.join("d/b")).unwrap(),
            pseudo_random_bytes(300_000, 7)
        );
        assert_eq!(
            std::fs::read_link(out.join("d/link")).unwrap(),
            Path::new("../a")
        );
        // Nothing left in tmp/ by either transaction.
        let left: Vec<_> = std::fs::read_dir(pulled.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("arbor-txn-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
