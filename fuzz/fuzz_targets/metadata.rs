#![no_main]
//! `Metadata::parse` (`a{sv}`: commit metadata, detached commitmeta) on
//! arbitrary bytes: no panic, and anything accepted re-serializes to
//! exactly the input.

use arbor::ostree::Metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = Metadata::parse(data) {
        assert_eq!(md.serialize(), data, "accepted non-normal metadata");
        for (k, _) in &md.0 {
            assert!(!k.is_empty());
        }
    }
});
