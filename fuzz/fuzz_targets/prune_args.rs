#![no_main]
//! The user-facing parsers of prune and gc (`--keep-younger-than` dates,
//! `--max-size` sizes) on arbitrary text: no panic, no overflow.

use arbor::store::gc::parse_size;
use arbor::store::prune::parse_date;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_date(text, 1_700_000_000);
        let _ = parse_size(text);
    }
});
