//! AFL++ entry point: runs the target named by `TIDEWIRE_FUZZ_TARGET` on each input
//! AFL generates, with the same invariants and allocation budget as the seeded
//! driver ([`driver::replay`]); a broken one panics, which AFL records as a crash.
//! Hangs are AFL's own timeout (`-t`).

#![forbid(unsafe_code)]

use tidewire_fuzz::{driver, targets};

fn main() {
    let name = std::env::var("TIDEWIRE_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = targets::by_name(&name) else {
        let names: Vec<&str> = targets::ALL.iter().map(|t| t.name).collect();
        panic!("set TIDEWIRE_FUZZ_TARGET to one of {names:?}");
    };
    afl::fuzz!(|data: &[u8]| {
        if let Err(broken) = driver::replay(target, data) {
            panic!("{broken}");
        }
    });
}
