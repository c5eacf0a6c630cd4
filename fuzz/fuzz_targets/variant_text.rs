#![no_main]
//! GVariant text (`arbor summary -u -m KEY=VALUE`) on arbitrary strings: no
//! panic, and every accepted value serializes to normal-form bytes.

use arbor::ostree::{Metadata, variant_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = variant_text::parse(text) {
        let mut md = Metadata::new();
        md.insert("k", v);
        let bytes = md.serialize();
        assert_eq!(Metadata::parse(&bytes).expect("normal form"), md);
    }
});
