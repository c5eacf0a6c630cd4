#![no_main]
//! `DirMeta::parse` (and the same `(uuua(ayay))` codec as bare-user's
//! `user.ostreemeta`) on arbitrary bytes: no panic, and anything accepted
//! re-serializes to exactly the input.

use arbor::ostree::{DirMeta, FileHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = DirMeta::parse(data) {
        assert_eq!(meta.serialize(), data, "accepted non-normal dirmeta");
    }
    if let Ok(h) = FileHeader::from_ostreemeta(data, "target".into()) {
        assert_eq!(h.to_ostreemeta(), data, "accepted non-normal ostreemeta");
        assert_eq!(FileHeader::parse(&h.serialize()), Ok(h));
    }
});
