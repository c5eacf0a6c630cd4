#![no_main]
//! Static-delta superblocks, signed wrappers and delta indexes on
//! arbitrary bytes: no panic, and anything accepted re-serializes to
//! exactly the input.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    arbor::ostree::delta::fuzz::superblock(data);
});
