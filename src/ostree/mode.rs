//! File mode bits as stored in OSTree objects (full `st_mode`, type included).

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
/// Permission bits including setuid, setgid and sticky.
pub const PERMS: u32 = 0o7777;

pub fn is_dir(mode: u32) -> bool {
    mode & S_IFMT == S_IFDIR
}

pub fn is_reg(mode: u32) -> bool {
    mode & S_IFMT == S_IFREG
}

pub fn is_symlink(mode: u32) -> bool {
    mode & S_IFMT == S_IFLNK
}

/// True when nothing but the file type and permission bits is set.
pub fn only_type_and_perms(mode: u32) -> bool {
    mode & !(S_IFMT | PERMS) == 0
}
