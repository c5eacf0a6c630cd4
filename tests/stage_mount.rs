//! The mount layer of staging roots (`arbor::stage::mount`) against the
//! real kernel overlayfs, fuse-overlayfs and unionfs-fuse. Needs root (skips
//! otherwise) and the two FUSE helpers.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use arbor::stage::mount::{
    Backend, Deletion, MountError, MountGuard, UnionChoice, is_marker, is_mount_point,
    list_deletions, mount_union, mounts_under, unmount_path,
};

fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipping: needs root");
    }
    root
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Path → "d", "f:CONTENT", "l:TARGET" or "c:RDEV", relative to `root`.
fn manifest(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                out.insert(rel, "d".into());
                walk(root, &p, out);
            } else if ty.is_symlink() {
                out.insert(rel, format!("l:{}", fs::read_link(&p).unwrap().display()));
            } else if ty.is_char_device() {
                out.insert(rel, format!("c:{}", e.metadata().unwrap().rdev()));
            } else {
                out.insert(rel, format!("f:{}", fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Everything that must not change in a lower layer: contents plus inode,
/// mode, owner, link count, mtime and ctime of every entry.
fn fingerprint(root: &Path) -> BTreeMap<String, String> {
    let mut m = manifest(root);
    for (rel, v) in m.iter_mut() {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        v.push_str(&format!(
            "|{} {:o} {}:{} {} {}.{} {}.{}",
            md.ino(),
            md.mode(),
            md.uid(),
            md.gid(),
            md.nlink(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec()
        ));
    }
    m
}

fn entries(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Layout {
    _tmp: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    target: PathBuf,
}

fn layout(nlowers: usize, lower_name: impl Fn(usize) -> String) -> Layout {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let lowers: Vec<PathBuf> = (0..nlowers).map(|i| base.join(lower_name(i))).collect();
    for l in &lowers {
        fs::create_dir_all(l).unwrap();
    }
    let (upper, work, target) = (base.join("upper"), base.join("work"), base.join("merged"));
    for d in [&upper, &work, &target] {
        fs::create_dir(d).unwrap();
    }
    Layout {
        _tmp: tmp,
        lowers,
        upper,
        work,
        target,
    }
}

impl Layout {
    /// `mount_union` of these layers on `target`.
    fn mount(&self, choice: UnionChoice) -> Result<MountGuard, MountError> {
        mount_union(&self.lowers, &self.upper, &self.work, &self.target, choice)
    }
}

/// `mount -t overlay` by hand (no checks of arbor's) of `lowers` (top-most
/// first) on `target`.
fn mount_overlay_by_hand(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) {
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(target)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A `sleep 30` whose working directory is `dir`, keeping a mount busy.
fn sleep_in(dir: &Path) -> Child {
    Command::new("sleep")
        .arg("30")
        .current_dir(dir)
        .spawn()
        .unwrap()
}

/// Three layers, top-most first, with overlapping paths.
fn three_layers() -> Layout {
    let l = layout(3, |i| format!("lower{i}"));
    let [top, mid, bottom] = [&l.lowers[0], &l.lowers[1], &l.lowers[2]];
    write(&bottom.join("a.txt"), "a2");
    write(&bottom.join("dir/x"), "x2");
    write(&bottom.join("dir/y"), "y2");
    write(&bottom.join("only2"), "o2");
    write(&mid.join("a.txt"), "a1");
    write(&mid.join("dir/x"), "x1");
    write(&mid.join("sub/deep/f"), "f1");
    std::os::unix::fs::symlink("a.txt", mid.join("link")).unwrap();
    write(&top.join("a.txt"), "a0");
    write(&top.join("dir/z"), "z0");
    write(&top.join("top"), "t0");
    l
}

fn merged_expected() -> BTreeMap<String, String> {
    entries(&[
        ("a.txt", "f:a0"),
        ("dir", "d"),
        ("dir/x", "f:x1"),
        ("dir/y", "f:y2"),
        ("dir/z", "f:z0"),
        ("link", "l:a.txt"),
        ("only2", "f:o2"),
        ("sub", "d"),
        ("sub/deep", "d"),
        ("sub/deep/f", "f:f1"),
        ("top", "f:t0"),
    ])
}

fn merge_write_delete(backend: Backend) {
    if !is_root() {
        return;
    }
    let l = three_layers();
    let before: Vec<_> = l.lowers.iter().map(|p| fingerprint(p)).collect();
    let mut guard = l.mount(UnionChoice::Only(backend)).unwrap();
    assert_eq!(guard.backend(), backend);
    assert!(is_mount_point(&l.target).unwrap());
    assert_eq!(manifest(&l.target), merged_expected(), "{backend}");

    write(&l.target.join("new/file"), "new");
    let mut y = fs::read_to_string(l.target.join("dir/y")).unwrap();
    y.push_str("+mod");
    fs::write(l.target.join("dir/y"), &y).unwrap();
    fs::remove_file(l.target.join("only2")).unwrap();
    // Replace a directory that only lower layers have.
    fs::remove_dir_all(l.target.join("sub")).unwrap();
    write(&l.target.join("sub/newf"), "n");

    let mut expected = merged_expected();
    expected.remove("only2");
    expected.insert("dir/y".into(), "f:y2+mod".into());
    expected.insert("new".into(), "d".into());
    expected.insert("new/file".into(), "f:new".into());
    expected.remove("sub/deep");
    expected.remove("sub/deep/f");
    expected.insert("sub/newf".into(), "f:n".into());
    assert_eq!(manifest(&l.target), expected, "{backend}");

    guard.unmount().unwrap();
    assert!(!is_mount_point(&l.target).unwrap());
    drop(guard);

    let after: Vec<_> = l.lowers.iter().map(|p| fingerprint(p)).collect();
    assert_eq!(before, after, "{backend}: a lower layer changed");

    let upper: BTreeMap<_, _> = manifest(&l.upper)
        .into_iter()
        .filter(|(k, v)| !is_marker(backend, Path::new(k)) && v != "c:0")
        .collect();
    assert_eq!(upper["dir/y"], "f:y2+mod", "{backend}");
    assert_eq!(upper["new/file"], "f:new", "{backend}");
    assert!(!upper.contains_key("only2"), "{backend}");
    let deletions = list_deletions(backend, &l.upper).unwrap();
    eprintln!("{backend}: deletions {deletions:?}");
    assert!(
        deletions.contains(&Deletion::Whiteout("only2".into())),
        "{backend}: {deletions:?}"
    );

    // What the commit layer will do: the lower layers' union, minus the
    // deletions, plus the upper dir's content, is exactly what the mount
    // showed.
    let mut rebuilt = merged_expected();
    for d in &deletions {
        let (root, keep_root) = match d {
            Deletion::Whiteout(p) => (p, false),
            Deletion::Opaque(p) => (p, true),
        };
        rebuilt.retain(|k, _| {
            let k = Path::new(k);
            !(k.starts_with(root) && (k != root || !keep_root))
        });
    }
    rebuilt.extend(upper);
    assert_eq!(rebuilt, expected, "{backend}: {deletions:?}");
}

#[test]
fn overlay_merge_write_delete() {
    merge_write_delete(Backend::Overlay);
}

#[test]
fn fuse_overlayfs_merge_write_delete() {
    merge_write_delete(Backend::FuseOverlayfs);
}

#[test]
fn unionfs_merge_write_delete() {
    merge_write_delete(Backend::Unionfs);
}

#[test]
fn overlay_wh_names_are_content() {
    if !is_root() {
        return;
    }
    let l = three_layers();
    let guard = l.mount(UnionChoice::Only(Backend::Overlay)).unwrap();
    write(&l.target.join(".wh.a.txt"), "content");
    drop(guard);
    assert!(
        list_deletions(Backend::Overlay, &l.upper)
            .unwrap()
            .is_empty()
    );
    assert!(!is_marker(Backend::Overlay, Path::new(".wh.a.txt")));
    assert_eq!(manifest(&l.upper), entries(&[(".wh.a.txt", "f:content")]));
}

#[test]
fn drop_unmounts() {
    if !is_root() {
        return;
    }
    for backend in Backend::ALL {
        let l = three_layers();
        let guard = l.mount(UnionChoice::Only(backend)).unwrap();
        assert!(is_mount_point(&l.target).unwrap());
        drop(guard);
        assert!(!is_mount_point(&l.target).unwrap(), "{backend}");
        assert!(mounts_under(l.target.parent().unwrap()).unwrap().is_empty());
    }
}

#[test]
fn sixty_long_layers_with_kernel_overlay() {
    if !is_root() {
        return;
    }
    let l = layout(60, |i| {
        format!(
            "layer-{i:03}-with-a-deliberately-long-name-so-that-sixty-of-them-exceed-one-page-of-mount-options"
        )
    });
    let total: usize = l.lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(total > 4096, "{total}");
    for (i, p) in l.lowers.iter().enumerate() {
        write(&p.join(format!("f{i:03}")), &i.to_string());
        write(&p.join("common"), &i.to_string());
    }
    let guard = l.mount(UnionChoice::Only(Backend::Overlay)).unwrap();
    let m = manifest(&l.target);
    assert_eq!(m.len(), 61);
    assert_eq!(m["common"], "f:0", "top-most layer wins");
    assert_eq!(m["f059"], "f:59");
    drop(guard);
    assert!(!is_mount_point(&l.target).unwrap());
}

#[test]
fn auto_picks_overlay_as_root() {
    if !is_root() {
        return;
    }
    let l = three_layers();
    let guard = l.mount(UnionChoice::Auto).unwrap();
    assert_eq!(guard.backend(), Backend::Overlay);
    assert!(guard.skipped().is_empty());
    assert_eq!(manifest(&l.target), merged_expected());
}

#[test]
fn overlay_xattrs_in_layers_cannot_steer() {
    if !is_root() {
        return;
    }
    let l = layout(2, |i| format!("lower{i}"));
    write(&l.lowers[0].join("d/from-top"), "t");
    write(&l.lowers[1].join("d/hidden"), "h");
    xattr::set(l.lowers[0].join("d"), "trusted.overlay.opaque", b"y").unwrap();

    // The risk is real: a plain overlay mount honours the xattr and hides
    // `d/hidden` of the layer below.
    mount_overlay_by_hand(&l.lowers, &l.upper, &l.work, &l.target);
    assert!(!l.target.join("d/hidden").exists());
    unmount_path(&l.target).unwrap();
    fs::remove_dir_all(&l.work).unwrap();
    fs::create_dir(&l.work).unwrap();

    // mount_union refuses such a layer with both overlay backends...
    for backend in [Backend::Overlay, Backend::FuseOverlayfs] {
        let err = l.mount(UnionChoice::Only(backend)).unwrap_err();
        match &err {
            MountError::SteeringXattr {
                path, name, layer, ..
            } => {
                assert_eq!(path, &l.lowers[0].join("d"));
                assert_eq!(layer, &l.lowers[0]);
                assert_eq!(name, "trusted.overlay.opaque");
            }
            e => panic!("{backend}: unexpected {e}"),
        }
        assert!(err.to_string().contains("trusted.overlay.opaque"), "{err}");
        assert!(!is_mount_point(&l.target).unwrap());
    }

    // ...and `auto` falls through to unionfs-fuse, which ignores xattrs,
    // saying why the others were skipped.
    let guard = l.mount(UnionChoice::Auto).unwrap();
    assert_eq!(guard.backend(), Backend::Unionfs);
    let skipped: Vec<_> = guard.skipped().iter().map(|s| s.backend).collect();
    assert_eq!(skipped, [Backend::Overlay, Backend::FuseOverlayfs]);
    assert!(
        guard
            .skipped()
            .iter()
            .all(|s| matches!(s.reason, MountError::SteeringXattr { .. }))
    );
    assert_eq!(
        manifest(&l.target),
        entries(&[("d", "d"), ("d/from-top", "f:t"), ("d/hidden", "f:h")])
    );
}

#[test]
fn busy_unmount_is_reported_then_succeeds() {
    if !is_root() {
        return;
    }
    let l = three_layers();
    let mut guard = l.mount(UnionChoice::Only(Backend::Overlay)).unwrap();
    let mut child = sleep_in(&l.target.join("sub"));
    let err = guard.unmount().unwrap_err();
    match &err {
        MountError::Busy { target, holders } => {
            assert_eq!(target, &l.target);
            assert!(holders.contains(&child.id()), "{holders:?}");
        }
        e => panic!("unexpected {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("target is busy"), "{msg}");
    assert!(msg.contains(&l.target.display().to_string()), "{msg}");
    assert!(msg.contains(&child.id().to_string()), "{msg}");
    assert!(is_mount_point(&l.target).unwrap());

    child.kill().unwrap();
    child.wait().unwrap();
    guard.unmount().unwrap();
    assert!(!is_mount_point(&l.target).unwrap());
}

#[test]
fn dropping_a_busy_guard_detaches() {
    if !is_root() {
        return;
    }
    let l = three_layers();
    let guard = l.mount(UnionChoice::Only(Backend::Overlay)).unwrap();
    let mut child = sleep_in(&l.target);
    drop(guard);
    // Gone from the mount table although the child still sits in it.
    assert!(!is_mount_point(&l.target).unwrap());
    assert!(mounts_under(l.upper.parent().unwrap()).unwrap().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn mounts_under_finds_leftovers() {
    if !is_root() {
        return;
    }
    let l = three_layers();
    // A mount point whose name needs mountinfo's octal escapes.
    let target = l.target.join("left over\\x");
    fs::create_dir(&target).unwrap();
    mount_overlay_by_hand(&l.lowers[..2], &l.upper, &l.work, &target);

    let base = l.upper.parent().unwrap();
    let found = mounts_under(base).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].mount_point, target);
    assert_eq!(found[0].fs_type, "overlay");
    assert!(is_mount_point(&target).unwrap());
    assert!(!is_mount_point(&l.target).unwrap());

    for m in &found {
        unmount_path(&m.mount_point).unwrap();
    }
    assert!(mounts_under(base).unwrap().is_empty());
    assert!(!is_mount_point(&target).unwrap());
    // Only now is removing the tree safe; the lower layers are intact.
    assert_eq!(fs::read_to_string(l.lowers[2].join("only2")).unwrap(), "o2");
    fs::remove_dir_all(&l.target).unwrap();
}

#[test]
fn auto_reports_when_nothing_works() {
    if !is_root() {
        return;
    }
    let l = layout(1, |_| "low:er".into());
    write(&l.lowers[0].join("f"), "f");
    // Kernel overlay takes ':' in a layer path (one fsconfig per layer).
    let outer = l.mount(UnionChoice::Auto).unwrap();
    assert_eq!(outer.backend(), Backend::Overlay);
    assert_eq!(manifest(&l.target), entries(&[("f", "f:f")]));

    // Now an upper dir on that overlay (nesting) and the ':' that neither
    // FUSE helper's option syntax can carry: nothing is usable.
    let inner: Vec<PathBuf> = ["u", "w", "m"].iter().map(|d| l.target.join(d)).collect();
    for d in &inner {
        fs::create_dir(d).unwrap();
    }
    let err = mount_union(
        &l.lowers,
        &inner[0],
        &inner[1],
        &inner[2],
        UnionChoice::Auto,
    )
    .unwrap_err();
    let MountError::NoUnionFilesystem { target, skipped } = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(target, &inner[2]);
    assert!(matches!(
        skipped[0].reason,
        MountError::Nesting {
            backend: Backend::Overlay,
            ..
        }
    ));
    for s in &skipped[1..] {
        assert!(
            matches!(s.reason, MountError::UnsupportedPath { ch: ':', .. }),
            "{}",
            s.reason
        );
    }
    let msg = err.to_string();
    assert!(msg.contains("no union filesystem available"), "{msg}");
    assert!(msg.contains("fall back to copying"), "{msg}");
    assert!(msg.contains("nesting not supported"), "{msg}");
    assert!(!is_mount_point(&inner[2]).unwrap());
    drop(outer);
    assert!(!is_mount_point(&l.target).unwrap());
}
