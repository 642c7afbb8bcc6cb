//! Time sources. Expiry uses wall-clock unix milliseconds because TTLs are persisted
//! and exchanged as absolute unix times (EXPIREAT, PXAT, the append-only log).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

static LRU_CLOCK: AtomicU32 = AtomicU32::new(0);

/// A seconds clock refreshed by the server's cron so that touching a key costs one
/// relaxed load rather than a system call.
pub fn lru_clock() -> u32 {
    let c = LRU_CLOCK.load(Ordering::Relaxed);
    if c == 0 {
        refresh_lru_clock()
    } else {
        c
    }
}

pub fn refresh_lru_clock() -> u32 {
    let c = (now_ms() / 1000) as u32;
    LRU_CLOCK.store(c, Ordering::Relaxed);
    c
}
