//! The committed seed corpus: `crates/fuzz/corpus/<target>/`, one input per file.
//!
//! Every file runs verbatim first (so known bad inputs are regression tests), then
//! serves as a starting point for mutation.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The corpus folder of `target`.
pub fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every seed of `target`, sorted by file name. A missing or empty folder is an
/// error, not an empty corpus: a target must never silently run without its seeds.
pub fn load(target: &str) -> Result<Vec<Vec<u8>>, String> {
    let dir = dir(target);
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("corpus {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let seeds = paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("corpus {}: {e}", p.display())))
        .collect::<Result<Vec<_>, _>>()?;
    if seeds.is_empty() {
        return Err(format!("corpus {} has no seeds", dir.display()));
    }
    Ok(seeds)
}
