#![no_main]
//! `FileHeader::parse` (the hashed `(uuuusa(ayay))` header) on arbitrary
//! bytes: no panic, anything accepted is valid and re-serializes to
//! exactly the input.

use arbor::ostree::FileHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = FileHeader::parse(data) {
        assert_eq!(h.serialize(), data, "accepted non-normal content header");
        assert_eq!(h.validate(), Ok(()));
        let prefix = h.checksum_prefix();
        assert_eq!(&prefix[8..], data);
    }
});
