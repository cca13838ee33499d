//! Finding external binaries: a missing one skips the test with a note,
//! unless `PHAROS_REQUIRE_PEERS=1`, which makes it a failure.

use std::path::PathBuf;

/// The path of `name` if installed; `None` (after printing why) when the
/// test should be skipped.
pub(crate) fn find(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return Some(p);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{name} is not installed and PHAROS_REQUIRE_PEERS=1");
    }
    eprintln!("note: skipping, {name} is not installed");
    None
}

pub(crate) fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}
