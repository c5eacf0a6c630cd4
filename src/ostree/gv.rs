//! Small helpers around the `gvariant` crate.
//!
//! The crate reads leniently (non-normal data yields default values, as GLib
//! does), so every parser here re-serializes what it read and compares the
//! bytes with the input: data that does not round-trip exactly is not in
//! normal form and is rejected, which is also how libostree treats it.

use gvariant::aligned_bytes::{A8, AlignedSlice, copy_to_align};

use super::error::{FormatError, Result};

/// libostree's default `max-metadata-size`: the largest metadata object read.
pub const MAX_METADATA_SIZE: usize = 128 * 1024 * 1024;

/// Copies `data` into an 8-aligned buffer when it is not already aligned.
pub(crate) fn aligned(data: &[u8]) -> std::borrow::Cow<'_, AlignedSlice<A8>> {
    copy_to_align(data)
}

pub(crate) fn check_size(what: &'static str, data: &[u8], max: usize) -> Result<()> {
    if data.len() > max {
        return Err(FormatError::TooLarge {
            what,
            size: data.len() as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// Fails unless `reserialized` equals `input` byte for byte.
pub(crate) fn check_normal_form(
    what: &'static str,
    input: &[u8],
    reserialized: &[u8],
) -> Result<()> {
    if input != reserialized {
        return Err(FormatError::NotNormalForm { what });
    }
    Ok(())
}

/// Reads a `s` that must be valid UTF-8 and NUL-terminated; the crate maps
/// invalid strings to "", which the normal-form check then catches.
pub(crate) fn str_of(s: &gvariant::Str) -> String {
    s.to_str().to_string()
}
