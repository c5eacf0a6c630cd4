//! `arbor prune` against `ostree prune`: for each option, two copies of the
//! same repository (see `common/prune.rs`), one pruned by each tool with the
//! same options, must end with the same objects (commit metadata and
//! tombstones included), the same static deltas, refs and summary caches,
//! and both tools must report the same counts. Each test also checks what
//! went against what the option means.

mod common;
#[path = "common/prune.rs"]
mod prune_support;
#[path = "common/pull.rs"]
mod pull_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use prune_support::*;
use pull_support::{assert_arbor_fsck_clean, assert_fsck_clean};

struct Fixture {
    repo: PathBuf,
    h: History,
}

fn fixture(mode: Mode) -> &'static Fixture {
    static ARCHIVE: OnceLock<Fixture> = OnceLock::new();
    static BARE_USER: OnceLock<Fixture> = OnceLock::new();
    let cell = match mode {
        Mode::Archive => &ARCHIVE,
        Mode::BareUser => &BARE_USER,
        _ => unreachable!(),
    };
    cell.get_or_init(|| {
        let dir = scratch_dir(&format!("prune-parity-{}", mode.name()));
        let repo = dir.join("repo");
        let h = build_history(&repo, &dir.join("work"), mode);
        Fixture { repo, h }
    })
}

/// The number after `word` in a line of prune's report.
fn count_after(out: &str, word: &str) -> Option<u64> {
    let rest = &out[out.find(word)? + word.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

struct Pruned {
    ours: PathBuf,
    /// Object files that went.
    deleted: BTreeSet<String>,
    /// Commits that went.
    commits_deleted: BTreeSet<String>,
    arbor_out: String,
}

/// Prunes two copies with the same options and checks they agree.
fn parity(mode: Mode, ostree_args: &[&str], arbor_args: &[&str], tmp: &Path) -> Pruned {
    parity_with(mode, ostree_args, arbor_args, tmp, &|_| {})
}

/// The fixture without its collection ref (see `selective_keeps_collection_refs`).
fn drop_mirror(repo: &Path) {
    std::fs::remove_file(repo.join("refs/mirrors/org.example.Os/mir")).unwrap();
}

/// [`parity`] on copies first changed by `prep`.
fn parity_with(
    mode: Mode,
    ostree_args: &[&str],
    arbor_args: &[&str],
    tmp: &Path,
    prep: &dyn Fn(&Path),
) -> Pruned {
    let f = fixture(mode);
    let theirs = copy_repo(&f.repo, &tmp.join("theirs"));
    let ours = copy_repo(&f.repo, &tmp.join("ours"));
    prep(&theirs);
    prep(&ours);
    let before = all_object_files(&ours);
    let commits_before = commits_present(&ours);

    let mut o = vec!["prune"];
    o.extend_from_slice(ostree_args);
    let ro = ostree_repo_ok(&theirs, o);
    let mut a = vec!["prune"];
    a.extend_from_slice(arbor_args);
    let ra = arbor_repo_ok(&ours, a);
    let (ostree_out, arbor_out) = (ro.stdout_str(), ra.stdout_str());

    let what = format!(
        "ostree prune {ostree_args:?} / arbor prune {arbor_args:?}\n--- ostree:\n{ostree_out}--- arbor:\n{arbor_out}"
    );
    let after = all_object_files(&ours);
    let theirs_after = all_object_files(&theirs);
    assert_eq!(
        after
            .symmetric_difference(&theirs_after)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "objects differ (listed: in one only)\n{what}"
    );
    assert_eq!(
        delta_dirs(&ours),
        delta_dirs(&theirs),
        "deltas differ\n{what}"
    );
    assert_eq!(
        dir_names(&ours, "refs/heads"),
        dir_names(&theirs, "refs/heads")
    );
    if arbor_args.contains(&"--dry-run") {
        // ostree removes them even under --no-prune; a dry run of arbor's
        // deletes nothing.
        assert_eq!(dir_names(&ours, "tmp/cache/summaries").len(), 2);
    } else {
        assert_eq!(
            dir_names(&ours, "tmp/cache/summaries"),
            dir_names(&theirs, "tmp/cache/summaries"),
            "summary caches differ\n{what}"
        );
    }
    for word in ["Total objects:", "Total (commit only) objects:"] {
        assert_eq!(
            count_after(&arbor_out, word),
            count_after(&ostree_out, word),
            "{word}\n{what}"
        );
    }
    for word in ["Deleted ", "Would delete: "] {
        assert_eq!(
            count_after(&arbor_out, word),
            count_after(&ostree_out, word),
            "{word}\n{what}"
        );
    }
    assert_fsck_clean(&ours);
    assert_arbor_fsck_clean(&ours);
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    let commits_deleted = commits_before
        .difference(&commits_present(&ours))
        .cloned()
        .collect();
    Pruned {
        ours,
        deleted,
        commits_deleted,
        arbor_out,
    }
}

fn set<'a>(items: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    items.into_iter().cloned().collect()
}

fn key(object: &str, ext: &str) -> String {
    format!("{}/{}.{ext}", &object[..2], &object[2..])
}

/// No option: only objects no commit reaches (o1's orphaned tree) go; every
/// commit stays; the summary cache of the unconfigured remote goes.
#[test]
fn default_removes_only_orphans() {
    let tmp = tempdir();
    let f = fixture(Mode::Archive);
    let p = parity(Mode::Archive, &[], &[], tmp.path());
    assert!(p.commits_deleted.is_empty());
    let ext = |o: &String| {
        let (c, t) = o.split_once('.').unwrap();
        key(c, if t == "file" { "filez" } else { t })
    };
    assert_eq!(p.deleted, f.h.orphans.iter().map(ext).collect());
    assert!(dir_names(&p.ours, "tmp/cache/summaries").is_empty());
}

/// `--refs-only`: the deleted branch's commits go (with g2's detached
/// metadata, g1's partial marker and the delta to g2); the collection ref
/// (refs/mirrors) and the remote ref protect theirs.
#[test]
fn refs_only() {
    let tmp = tempdir();
    let f = fixture(Mode::Archive);
    let p = parity(
        Mode::Archive,
        &["--refs-only"],
        &["--refs-only"],
        tmp.path(),
    );
    assert_eq!(p.commits_deleted, set(&f.h.g));
    assert!(p.deleted.contains(&key(&f.h.g[1], "commitmeta")));
    assert!(
        !p.ours
            .join(format!("state/{}.commitpartial", f.h.g[0]))
            .exists()
    );
    assert_eq!(delta_dirs(&p.ours).len(), 2);
}

/// `--depth`: with `--refs-only`, 0 keeps the tips (m5, d3, m2 for the
/// remote ref, x1 for the collection ref), 1 one parent more.
#[test]
fn depth() {
    let tmp = tempdir();
    let f = fixture(Mode::Archive);
    let h = &f.h;
    let p = parity(
        Mode::Archive,
        &["--refs-only", "--depth=0"],
        &["--refs-only", "--depth", "0"],
        tmp.path(),
    );
    let kept: BTreeSet<String> = set([&h.m[4], &h.d[2], &h.m[1], &h.x1]);
    let all: BTreeSet<String> = set(h.m.iter().chain(&h.d).chain(&h.g).chain([&h.x1]));
    assert_eq!(p.commits_deleted, all.difference(&kept).cloned().collect());
    // m1's detached metadata went with it; the scratch delta to d2 too.
    assert!(p.deleted.contains(&key(&h.m[0], "commitmeta")));
    assert_eq!(delta_dirs(&p.ours).len(), 1);

    let tmp = tempdir();
    let p = parity(
        Mode::Archive,
        &["--refs-only", "--depth=1"],
        &["--refs-only", "--depth", "1"],
        tmp.path(),
    );
    assert_eq!(p.commits_deleted, set([&h.m[2], &h.d[0], &h.g[0], &h.g[1]]));
}

/// The same selection in a bare-user repository.
#[test]
fn depth_bare_user() {
    let tmp = tempdir();
    let p = parity(
        Mode::BareUser,
        &["--refs-only", "--depth=0"],
        &["--refs-only", "--depth=0"],
        tmp.path(),
    );
    assert_eq!(p.commits_deleted.len(), 7);
}

/// `--keep-younger-than`: per ref, the tip and the commits since the date;
/// refs/mirrors is not a root in this mode, so x1 goes.
#[test]
fn keep_younger_than() {
    let tmp = tempdir();
    let h = &fixture(Mode::Archive).h;
    let date = format!("@{}", TS + 3 * DAY + DAY / 2);
    let p = parity_with(
        Mode::Archive,
        &[&format!("--keep-younger-than={date}")],
        &["--keep-younger-than", &date],
        tmp.path(),
        &drop_mirror,
    );
    // main keeps m5 m4; dev d1..d3 and stops at m2 (older); stable keeps m2.
    assert_eq!(
        p.commits_deleted,
        set([&h.m[0], &h.m[2], &h.x1, &h.g[0], &h.g[1]])
    );
}

/// `--delete-commit`: the commit goes with a tombstone, tombstones are on
/// from then on (so every commit pruned after gets one), and a commit a ref
/// points at is refused by both.
#[test]
fn delete_commit() {
    let tmp = tempdir();
    let h = &fixture(Mode::Archive).h;
    let p = parity(
        Mode::Archive,
        &[&format!("--delete-commit={}", h.m[2])],
        &["--delete-commit", &h.m[2]],
        tmp.path(),
    );
    assert_eq!(p.commits_deleted, set([&h.m[2]]));
    assert!(
        p.ours
            .join("objects")
            .join(key(&h.m[2], "tombstone-commit"))
            .exists()
    );
    let config = std::fs::read_to_string(p.ours.join("config")).unwrap();
    assert!(config.contains("tombstone-commits=true"), "{config}");
    // m3's tree objects that only it had are gone as well.
    assert!(
        p.deleted.iter().any(|o| o.ends_with(".dirtree")),
        "{:?}",
        p.deleted
    );

    // Refused for a ref's commit, by both.
    let f = fixture(Mode::Archive);
    let ours = copy_repo(&f.repo, &tmp.path().join("ours2"));
    let before = all_object_files(&ours);
    let r = arbor_repo(&ours, ["prune", "--delete-commit", &h.m[4]]);
    assert!(
        !r.success() && r.stderr_str().contains("referenced by ref main"),
        "{}",
        r.describe()
    );
    assert!(!ostree_repo(&ours, ["prune", &format!("--delete-commit={}", h.m[4])]).success());
    assert_eq!(all_object_files(&ours), before);

    // With tombstones on, a later --refs-only prune leaves one per commit.
    let tmp = tempdir();
    let p = parity(
        Mode::Archive,
        &[&format!("--delete-commit={}", h.g[0]), "--refs-only"],
        &["--delete-commit", &h.g[0], "--refs-only"],
        tmp.path(),
    );
    for g in &h.g {
        assert!(
            p.ours
                .join("objects")
                .join(key(g, "tombstone-commit"))
                .exists()
        );
    }
}

/// `--only-branch`: only dev is pruned (to its tip with --depth=0), every
/// other ref keeps its whole history.
#[test]
fn only_branch() {
    let tmp = tempdir();
    let h = &fixture(Mode::Archive).h;
    let p = parity_with(
        Mode::Archive,
        &["--only-branch=dev", "--depth=0"],
        &["--only-branch", "dev", "--depth", "0"],
        tmp.path(),
        &drop_mirror,
    );
    assert_eq!(
        p.commits_deleted,
        set([&h.d[0], &h.d[1], &h.x1, &h.g[0], &h.g[1]])
    );
    let r = arbor_repo(&p.ours, ["prune", "--only-branch", "nosuch"]);
    assert!(
        !r.success() && r.stderr_str().contains("nosuch"),
        "{}",
        r.describe()
    );
}

/// `--retain-branch-depth`: main keeps one parent whatever `--depth` says.
#[test]
fn retain_branch_depth() {
    let tmp = tempdir();
    let h = &fixture(Mode::Archive).h;
    let p = parity_with(
        Mode::Archive,
        &[
            "--retain-branch-depth=main=1",
            "--retain-branch-depth=origin:stable=0",
            "--depth=0",
        ],
        &[
            "--retain-branch-depth",
            "main=1",
            "--retain-branch-depth",
            "origin:stable=0x",
            "--depth",
            "0",
        ],
        tmp.path(),
        &drop_mirror,
    );
    assert_eq!(
        p.commits_deleted,
        set([&h.m[0], &h.m[2], &h.d[0], &h.d[1], &h.x1, &h.g[0], &h.g[1]])
    );
}

/// `--commit-only`: commits go, their trees stay for a later plain prune.
#[test]
fn commit_only() {
    let tmp = tempdir();
    let h = &fixture(Mode::Archive).h;
    let p = parity(
        Mode::Archive,
        &["--commit-only", "--refs-only", "--depth=0"],
        &["--commit-only", "--refs-only", "--depth", "0"],
        tmp.path(),
    );
    assert_eq!(p.commits_deleted.len(), 7);
    assert!(
        p.deleted
            .iter()
            .all(|o| o.ends_with(".commit") || o.ends_with(".commitmeta")),
        "{:?}",
        p.deleted
    );
    assert!(p.arbor_out.contains("Total (commit only) objects:"));
    let _ = h;
}

/// `--static-deltas-only --delete-commit`: the deltas to that commit go,
/// the commit stays; without --delete-commit both refuse.
#[test]
fn static_deltas_only() {
    let tmp = tempdir();
    let h = &fixture(Mode::Archive).h;
    let p = parity(
        Mode::Archive,
        &[
            "--static-deltas-only",
            &format!("--delete-commit={}", h.m[4]),
        ],
        &["--static-deltas-only", "--delete-commit", "main"],
        tmp.path(),
    );
    assert_eq!(delta_dirs(&p.ours).len(), 2);
    assert!(p.commits_deleted.is_empty());
    let r = arbor_repo(&p.ours, ["prune", "--static-deltas-only"]);
    assert!(
        !r.success()
            && r.stderr_str()
                .contains("--static-deltas-only needs --delete-commit"),
        "{}",
        r.describe()
    );
}

/// `--dry-run` (ostree's `--no-prune`): the same count as ostree reports,
/// and nothing deleted; `--json` lists exactly what a real run deletes.
#[test]
fn dry_run() {
    let tmp = tempdir();
    let f = fixture(Mode::Archive);
    let p = parity(
        Mode::Archive,
        &["--no-prune", "--refs-only", "--depth=0"],
        &["--dry-run", "--refs-only", "--depth", "0"],
        tmp.path(),
    );
    assert!(p.deleted.is_empty());
    let json = arbor_repo_ok(
        &p.ours,
        ["prune", "--dry-run", "--refs-only", "--depth=0", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let would: BTreeSet<String> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(all_object_files(&p.ours), all_object_files(&f.repo));

    let real = arbor_repo_ok(&p.ours, ["prune", "--refs-only", "--depth=0", "--json"]);
    let v2: serde_json::Value = serde_json::from_slice(&real.stdout).unwrap();
    let did: BTreeSet<String> = v2["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(would, did);
    assert_eq!(v["bytes_freed"], v2["bytes_freed"]);
    assert!(v2["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(v2["deltas_deleted"].as_array().unwrap().len(), 2);
}

/// Where arbor differs on purpose: in the selective modes libostree does
/// not treat collection refs (refs/mirrors) as roots and deletes their
/// commits, leaving the ref dangling (its own fsck then fails); arbor keeps
/// their history.
#[test]
fn selective_keeps_collection_refs() {
    let tmp = tempdir();
    let f = fixture(Mode::Archive);
    let theirs = copy_repo(&f.repo, &tmp.path().join("theirs"));
    let ours = copy_repo(&f.repo, &tmp.path().join("ours"));
    ostree_repo_ok(&theirs, ["prune", "--only-branch=dev"]);
    arbor_repo_ok(&ours, ["prune", "--only-branch", "dev"]);
    assert!(!commits_present(&theirs).contains(&f.h.x1));
    assert!(!ostree_repo(&theirs, ["fsck"]).success());
    assert!(commits_present(&ours).contains(&f.h.x1));
    assert_fsck_clean(&ours);
    assert_arbor_fsck_clean(&ours);
    // Everything else is as ostree left it.
    let extra: BTreeSet<String> = all_object_files(&ours)
        .difference(&all_object_files(&theirs))
        .cloned()
        .collect();
    let out = ostree_repo_ok(&ours, ["ls", "-R", "-C", &f.h.x1]).stdout_str();
    assert!(extra.contains(&key(&f.h.x1, "commit")));
    assert!(extra.len() <= 1 + out.lines().count() * 2, "{extra:?}");
}

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// A fresh reflink-capable XFS on a loop device below `dir` (libostree
/// makes payload links only where reflinks work), or why not.
fn mount_xfs(dir: &Path) -> Result<Mounted, String> {
    let img = dir.join("xfs.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(512 << 20))
        .map_err(|e| e.to_string())?;
    let mut mkfs = std::process::Command::new("mkfs.xfs");
    mkfs.args(["-q", "-m", "reflink=1"]).arg(&img);
    let r = run(mkfs);
    if !r.success() {
        return Err(format!("mkfs.xfs failed or is missing\n{}", r.describe()));
    }
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut mount = std::process::Command::new("mount");
    mount.args(["-o", "loop"]).arg(&img).arg(&mnt);
    let r = run(mount);
    if !r.success() {
        return Err(format!("cannot loop-mount\n{}", r.describe()));
    }
    Ok(Mounted(mnt))
}

/// Payload links (bare repositories with `core.payload-link-threshold`, on
/// a filesystem with reflinks): a link stays while its file is reachable
/// and big enough, and goes with it, as in libostree. Skipped (saying so)
/// without XFS.
#[test]
fn payload_links() {
    let dir = tempdir();
    let mounted = match mount_xfs(dir.path()) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: no reflink-capable filesystem: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir_in(&mounted.0).unwrap();
    let base = tmp.path().join("base");
    ostree_init(&base, Mode::Bare);
    ostree_repo_ok(
        &base,
        ["config", "set", "core.payload-link-threshold", "10000"],
    );
    let tree = tmp.path().join("tree");
    make_dir(&tree, 0o755);
    write_file(&tree.join("shared"), &pseudo_random_bytes(40_000, 3), 0o644);
    write_file(&tree.join("small"), b"small\n", 0o644);
    write_file(&tree.join("only-a"), &pseudo_random_bytes(40_000, 5), 0o644);
    ostree_commit(&base, &tree, "a", &CommitOpts::new("a", "", TS));
    std::fs::remove_file(tree.join("only-a")).unwrap();
    write_file(&tree.join("only-b"), &pseudo_random_bytes(40_000, 7), 0o644);
    ostree_commit(&base, &tree, "b", &CommitOpts::new("b", "", TS + 1));
    let links = |r: &Path| -> BTreeSet<String> {
        all_object_files(r)
            .into_iter()
            .filter(|o| o.ends_with(".payload-link"))
            .collect()
    };
    assert_eq!(links(&base).len(), 3, "ostree made no payload links");
    ostree_repo_ok(&base, ["refs", "--delete", "a"]);
    let theirs = copy_repo(&base, &tmp.path().join("theirs"));
    let ours = copy_repo(&base, &tmp.path().join("ours"));
    ostree_repo_ok(&theirs, ["prune", "--refs-only"]);
    arbor_repo_ok(&ours, ["prune", "--refs-only"]);
    assert_eq!(all_object_files(&ours), all_object_files(&theirs));
    assert_eq!(links(&ours).len(), 2);
    assert_fsck_clean(&ours);
    drop(tmp);
    drop(mounted);
}
