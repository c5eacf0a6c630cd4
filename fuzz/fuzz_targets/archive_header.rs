#![no_main]
//! `content::parse_archive_header` (the `.filez` frame and header) on
//! arbitrary bytes: no panic, and when it succeeds the framed header
//! re-serializes to exactly the bytes it consumed; the rest is deflate data.

use arbor::ostree::content::{archive_header_len, parse_archive_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = archive_header_len(data);
    if let Ok(a) = parse_archive_header(data) {
        assert_eq!(len, Ok(a.data_offset));
        assert_eq!(
            a.header.archive_prefix(a.size),
            &data[..a.data_offset],
            "accepted non-normal archive header"
        );
        if a.header.is_symlink() {
            assert_eq!(a.size, 0);
        }
    }
});
