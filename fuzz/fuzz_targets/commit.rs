#![no_main]
//! `Commit::parse` on arbitrary bytes: no panic, and anything accepted
//! re-serializes to exactly the input (GVariant normal form).

use arbor::ostree::Commit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(commit) = Commit::parse(data) {
        assert_eq!(commit.serialize(), data, "accepted non-normal commit");
        assert_eq!(Commit::parse(data), Ok(commit));
    }
});
