//! Reading a committed fuzz corpus (`fuzz/corpus/<target>/`), for the stable regression tests
//! that run every input through the fuzz target's checks (included with `#[path]`).

use std::path::{Path, PathBuf};

/// Every file of `fuzz/corpus/<target>` (found from `manifest_dir`, a workspace crate's
/// `CARGO_MANIFEST_DIR`), sorted by name, with its bytes.
pub fn corpus(manifest_dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(manifest_dir).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.expect("a directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a readable corpus file");
            (p, bytes)
        })
        .collect()
}
