//! What a static delta carries: the objects new in TO, and which new files
//! are delta'd against which old ones, by libostree's rules
//! (`ostree-repo-static-delta-compilation-analysis.c`; §16 of the format
//! reference).
//!
//! * Objects: TO's commit and tree (no parent commits) minus FROM's, minus
//!   the TO commit itself, which travels in the superblock.
//! * Pairing, for new regular files only: candidates are FROM's regular
//!   files; files of size 0 or with a basename ending in `.xz` or `.bz2`
//!   never pair; sizes must be within ±30 %; the first pass wants an
//!   identical basename, the second the same non-empty text before the
//!   first `.`; the first hit in ascending size order wins.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::ostree::{Checksum, FileHeader, ObjectName, ObjectType};
use crate::progress;
use crate::store::{Repo, StoreError};

/// Size similarity threshold of pairing, in percent.
pub const SIMILARITY_PERCENT: u64 = 30;

/// Deepest tree walked (libostree's recursion limit).
const MAX_DEPTH: usize = 256;

/// A commit's tree as the planner needs it.
#[derive(Debug, Default)]
pub struct TreeObjects {
    /// Commit, dirtrees and dirmetas, in walk order.
    pub metadata: Vec<ObjectName>,
    /// Content objects in walk order (first occurrence), with every
    /// basename they appear under.
    pub content: Vec<(Checksum, Vec<String>)>,
}

impl TreeObjects {
    pub fn all(&self) -> HashSet<ObjectName> {
        self.metadata
            .iter()
            .copied()
            .chain(
                self.content
                    .iter()
                    .map(|(c, _)| ObjectName::new(*c, ObjectType::File)),
            )
            .collect()
    }
}

/// Walks `commit`'s tree (directories in name order, files before
/// subdirectories).
pub fn walk(
    repo: &Repo,
    commit: &Checksum,
    interrupt: &AtomicBool,
) -> Result<TreeObjects, StoreError> {
    let c = repo.load_commit(commit)?;
    let mut out = TreeObjects::default();
    let mut seen_meta: HashSet<ObjectName> = HashSet::new();
    let mut content_at: HashMap<Checksum, usize> = HashMap::new();
    out.metadata
        .push(ObjectName::new(*commit, ObjectType::Commit));
    seen_meta.insert(ObjectName::new(*commit, ObjectType::Commit));
    // (dirtree, dirmeta, depth)
    let mut stack = vec![(c.root_tree, c.root_meta, 0usize)];
    while let Some((tree, meta, depth)) = stack.pop() {
        progress::check(interrupt)?;
        if depth > MAX_DEPTH {
            return Err(StoreError::BadObject {
                object: ObjectName::new(tree, ObjectType::DirTree),
                reason: format!("directories nest deeper than {MAX_DEPTH} levels"),
            });
        }
        let m = ObjectName::new(meta, ObjectType::DirMeta);
        if seen_meta.insert(m) {
            out.metadata.push(m);
        }
        let t = ObjectName::new(tree, ObjectType::DirTree);
        if !seen_meta.insert(t) {
            // A repeated subtree holds the same files under the same
            // names: nothing new (and no exponential walk of a hostile
            // tree that repeats a subtree at every level).
            continue;
        }
        out.metadata.push(t);
        let dt = repo.load_dirtree(&tree)?;
        for f in &dt.files {
            match content_at.get(&f.checksum) {
                Some(i) => out.content[*i].1.push(f.name.clone()),
                None => {
                    content_at.insert(f.checksum, out.content.len());
                    out.content.push((f.checksum, vec![f.name.clone()]));
                }
            }
        }
        for d in dt.dirs.iter().rev() {
            stack.push((d.tree, d.meta, depth + 1));
        }
    }
    Ok(out)
}

/// A content object's header and size, read once.
#[derive(Clone, Debug)]
pub struct ContentInfo {
    pub header: FileHeader,
    pub size: u64,
}

/// Headers of `objects`, read in parallel.
pub fn content_infos(
    repo: &Repo,
    objects: &[Checksum],
    interrupt: &AtomicBool,
) -> Result<HashMap<Checksum, ContentInfo>, StoreError> {
    objects
        .par_iter()
        .map(|c| {
            progress::check(interrupt)?;
            let o = repo.open_content(c)?;
            Ok((
                *c,
                ContentInfo {
                    header: o.header,
                    size: o.size,
                },
            ))
        })
        .collect()
}

/// A regular file with its size and names, for pairing.
#[derive(Clone, Debug)]
pub struct SizeNames {
    pub checksum: Checksum,
    pub size: u64,
    pub names: Vec<String>,
}

fn sizenames(
    content: &[(Checksum, Vec<String>)],
    infos: &HashMap<Checksum, ContentInfo>,
    only: Option<&HashSet<Checksum>>,
) -> Vec<SizeNames> {
    let mut out: Vec<SizeNames> = content
        .iter()
        .filter(|(c, _)| only.is_none_or(|o| o.contains(c)))
        .filter_map(|(c, names)| {
            let i = infos.get(c)?;
            i.header.is_regular().then(|| SizeNames {
                checksum: *c,
                size: i.size,
                names: names.clone(),
            })
        })
        .collect();
    // Stable, so equal sizes keep walk order (libostree's order there is
    // its hash table's; any order is valid).
    out.sort_by_key(|s| s.size);
    out
}

fn is_candidate(s: &SizeNames) -> bool {
    if s.size == 0 {
        return false;
    }
    !s.names.iter().any(|n| {
        n.rsplit_once('.')
            .is_some_and(|(_, ext)| ext == "xz" || ext == "bz2")
    })
}

fn names_intersect(a: &[String], b: &[String], fuzzy: bool) -> bool {
    for x in a {
        let xd = x.find('.');
        for y in b {
            let yd = y.find('.');
            match (fuzzy, xd, yd) {
                (true, Some(i), Some(j)) if j > 0 && i == j => {
                    if x[..i] == y[..j] {
                        return true;
                    }
                }
                _ => {
                    if x == y {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// The name key [`names_intersect`] matches fuzzily: the part before the
/// first dot, when there is one after the first byte.
fn fuzzy_key(name: &str) -> Option<&str> {
    name.find('.').filter(|&i| i > 0).map(|i| &name[..i])
}

/// The objects of `from` that [`similar_objects`] could pair with one of
/// `new` (a name in common, exactly or fuzzily): only their headers are
/// needed, not those of the whole old tree.
pub fn pairable<'a>(
    from: &'a TreeObjects,
    to: &TreeObjects,
    new: &HashSet<Checksum>,
) -> impl Iterator<Item = Checksum> + 'a {
    let mut names: HashSet<String> = HashSet::new();
    let mut keys: HashSet<String> = HashSet::new();
    for (c, ns) in &to.content {
        if new.contains(c) {
            for n in ns {
                names.insert(n.clone());
                if let Some(k) = fuzzy_key(n) {
                    keys.insert(k.to_string());
                }
            }
        }
    }
    from.content.iter().filter_map(move |(c, ns)| {
        ns.iter()
            .any(|n| names.contains(n) || fuzzy_key(n).is_some_and(|k| keys.contains(k)))
            .then_some(*c)
    })
}

/// New regular file → old regular file it is delta'd against.
pub fn similar_objects(
    from: &TreeObjects,
    to: &TreeObjects,
    new_regular: &HashSet<Checksum>,
    infos: &HashMap<Checksum, ContentInfo>,
) -> Vec<(Checksum, Checksum)> {
    let from_sizes = sizenames(&from.content, infos, None);
    let to_sizes = sizenames(&to.content, infos, Some(new_regular));
    let mut out = Vec::new();
    let mut lower = 0usize;
    let upper = from_sizes.len();
    for t in &to_sizes {
        if !is_candidate(t) {
            continue;
        }
        // libostree computes the bounds in floating point and truncates.
        let min = (t.size as f64 * (1.0 - SIMILARITY_PERCENT as f64 / 100.0)) as u64;
        let max = (t.size as f64 * (1.0 + SIMILARITY_PERCENT as f64 / 100.0)) as u64;
        let mut found = false;
        for fuzzy in [false, true] {
            if found {
                break;
            }
            let mut j = lower;
            while j < upper {
                let f = &from_sizes[j];
                j += 1;
                if !is_candidate(f) {
                    continue;
                }
                if f.size < min {
                    lower += 1;
                    continue;
                }
                if f.size > max {
                    break;
                }
                if !names_intersect(&f.names, &t.names, fuzzy) {
                    continue;
                }
                out.push((t.checksum, f.checksum));
                found = true;
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairable_keeps_old_files_sharing_a_name() {
        let c = |b: u8| Checksum::from_array([b; 32]);
        let tree = |v: &[(u8, &[&str])]| TreeObjects {
            metadata: Vec::new(),
            content: v
                .iter()
                .map(|(b, ns)| (c(*b), ns.iter().map(|n| n.to_string()).collect()))
                .collect(),
        };
        let from = tree(&[
            (1, &["libfoo.so.1"]),
            (2, &["other"]),
            (3, &["x", "README"]),
            (4, &[".hidden"]),
            (5, &["libbar.so.1"]),
        ]);
        let to = tree(&[
            (11, &["libfoo.so.2"]),
            (12, &["README"]),
            (13, &[".hidden2"]),
            (5, &["libbar.so.1"]),
            (14, &["libbaz.so.3"]),
        ]);
        let new: HashSet<Checksum> = [c(11), c(12), c(13)].into();
        let got: Vec<Checksum> = pairable(&from, &to, &new).collect();
        assert_eq!(got, [c(1), c(3)]);
    }

    #[test]
    fn fuzzy_names() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(names_intersect(
            &s(&["libfoo.so.1"]),
            &s(&["libfoo.so.2"]),
            true
        ));
        assert!(!names_intersect(
            &s(&["libfoo.so.1"]),
            &s(&["libfoo.so.2"]),
            false
        ));
        assert!(!names_intersect(&s(&[".a"]), &s(&[".b"]), true));
        assert!(!names_intersect(&s(&["ab.x"]), &s(&["abc.x"]), true));
        assert!(names_intersect(&s(&["a", "b"]), &s(&["c", "b"]), false));
    }
}
