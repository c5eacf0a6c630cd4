#![no_main]
//! Static-delta part payloads, opcode streams, bsdiff patches and xz
//! framing on arbitrary bytes: no panic, accepted payloads re-serialize
//! exactly, and every checked step stays inside the payload.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    arbor::ostree::delta::fuzz::part(data);
});
