#![no_main]
//! Static-delta part files received, opened (xz with its declared size)
//! and executed into a store transaction that is then dropped: no panic
//! whatever the bytes or the size the header declares.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn repo() -> &'static arbor::store::Repo {
    static R: OnceLock<(tempfile::TempDir, arbor::store::Repo)> = OnceLock::new();
    &R.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = arbor::store::Repo::init(&dir.path().join("r"), arbor::store::RepoMode::Archive)
            .expect("a store");
        (dir, repo)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    arbor::pull::delta::fuzz_execute_part(repo(), data);
});
