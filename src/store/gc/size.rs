//! Measuring disk usage as `du -sx` does: allocated blocks of every inode
//! below a directory, each hardlinked inode counted once, not crossing
//! into other filesystems (a stage's union mount inside the store shows
//! the layers again: counting it would count them twice).

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType};

use crate::fs::list_dir_typed;

/// What a tree occupies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes, hardlinked inodes once (`du -sxB1`).
    pub bytes: u64,
    /// Of those, the bytes of inodes with a single link (and directories):
    /// what removing the tree certainly frees.
    pub unique_bytes: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.bytes += o.bytes;
        self.unique_bytes += o.unique_bytes;
    }
}

struct Walk {
    dev: u64,
    /// Inodes with several links already counted.
    seen: Mutex<HashSet<(u64, u64)>>,
}

/// Usage of `name` in `dir` (a directory or a single file).
pub fn disk_usage(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<Usage> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(Usage::default()),
        Err(e) => return Err(e.into()),
    };
    let walk = Walk {
        dev: st.st_dev,
        seen: Mutex::new(HashSet::new()),
    };
    let mut usage = walk.one(&st);
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let fd = crate::fs::open_dir(dir, name)?;
        usage += walk.dir(&fd)?;
    }
    Ok(usage)
}

impl Walk {
    fn one(&self, st: &rustix::fs::Stat) -> Usage {
        let bytes = st.st_blocks as u64 * 512;
        if st.st_nlink > 1 && FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            let first = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((st.st_dev, st.st_ino));
            return Usage {
                bytes: if first { bytes } else { 0 },
                unique_bytes: 0,
            };
        }
        Usage {
            bytes,
            unique_bytes: bytes,
        }
    }

    /// Everything below an open directory; subdirectories in parallel,
    /// each opened only when walked (a wide directory must not hold a
    /// descriptor per subdirectory).
    fn dir(&self, dir: &OwnedFd) -> std::io::Result<Usage> {
        let mut usage = Usage::default();
        let mut subdirs = Vec::new();
        for (name, _) in list_dir_typed(dir.as_fd())? {
            let st = match rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed meanwhile.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if st.st_dev != self.dev {
                continue;
            }
            usage += self.one(&st);
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                subdirs.push(name);
            }
        }
        let below: Vec<Usage> = subdirs
            .par_iter()
            .map(|name| match crate::fs::open_dir(dir, name.as_os_str()) {
                Ok(fd) => self.dir(&fd),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Usage::default()),
                Err(e) => Err(e),
            })
            .collect::<std::io::Result<_>>()?;
        for u in below {
            usage += u;
        }
        Ok(usage)
    }
}
