//! Filesystem helpers shared by the whole crate: directory-descriptor
//! operations ([`dir`]: create, list, remove trees, temporary files and
//! no-replace renames) and the few system calls rustix does not wrap
//! ([`sys`]: OFD locks, xattrs by descriptor). Everything here works
//! relative to a directory descriptor and never follows a symlink it was
//! not asked to; callers pass single validated names, never joined paths.

mod dir;
mod sys;

pub(crate) use dir::*;
pub use sys::*;
