//! What a broken invariant leaves behind: the input, printed readably and saved to a
//! file, so the finding can be replayed and turned into a corpus entry.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Where findings are saved: `$TIDEWIRE_FUZZ_FINDINGS`, else a folder in the system's
/// temporary directory.
pub fn findings_dir() -> PathBuf {
    std::env::var_os("TIDEWIRE_FUZZ_FINDINGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tidewire-fuzz-findings"))
}

/// Saves `input` and returns the report: target, reason, escaped input, file.
pub fn report(target: &str, input: &[u8], why: &str) -> String {
    let dir = findings_dir().join(target);
    let file = dir.join(format!("{:016x}", fnv1a(input)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .map_or_else(
            |e| format!("(could not save it: {e})"),
            |()| format!("saved to {}", file.display()),
        );
    let shown = if input.len() > 2048 {
        format!("{} … ({} bytes)", escape(&input[..2048]), input.len())
    } else {
        escape(input)
    };
    format!("fuzz target {target}: {why}\ninput: b\"{shown}\"\n{saved}")
}

/// The bytes as a Rust byte-string body.
pub fn escape(input: &[u8]) -> String {
    input.escape_ascii().to_string()
}

/// FNV-1a: a stable, dependency-free hash for file names and for deriving
/// per-input choices (split points) deterministically from the input itself.
pub fn fnv1a(input: &[u8]) -> u64 {
    input.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
