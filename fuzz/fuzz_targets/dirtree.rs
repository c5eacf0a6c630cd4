#![no_main]
//! `DirTree::parse` on arbitrary bytes: no panic, anything accepted is
//! valid and re-serializes to exactly the input.

use arbor::ostree::DirTree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = DirTree::parse(data) {
        assert_eq!(tree.serialize(), data, "accepted non-normal dirtree");
        assert_eq!(tree.validate(), Ok(()));
        for f in &tree.files {
            assert!(tree.file(&f.name).is_some());
        }
        for d in &tree.dirs {
            assert!(tree.dir(&d.name).is_some());
        }
    }
});
