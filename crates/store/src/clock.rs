//! Time sources. Expiry uses wall-clock unix milliseconds because TTLs are persisted
//! and exchanged as absolute unix times (EXPIREAT, PXAT, the append-only log).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// The monotonic instant the wall clock is tied to, and the unix microseconds at
/// that instant (re-read by [`resync`] from the cron, so a wall-clock change is
/// followed within a tick).
static BASE: OnceLock<Instant> = OnceLock::new();
static UNIX_US_AT_BASE: AtomicU64 = AtomicU64::new(0);

fn base() -> Instant {
    *BASE.get_or_init(|| {
        let base = Instant::now();
        UNIX_US_AT_BASE.store(now_us(), Ordering::Relaxed);
        base
    })
}

/// Unix milliseconds at `t`, without reading the wall clock: each command reads
/// the clock once (an `Instant`, also used to time it) instead of once per clock.
/// Clock reads showed up as several percent of a pipelined SET's CPU.
pub fn unix_ms_at(t: Instant) -> u64 {
    let since = t.saturating_duration_since(base()).as_micros() as u64;
    (UNIX_US_AT_BASE.load(Ordering::Relaxed) + since) / 1000
}

/// Re-ties [`unix_ms_at`] to the wall clock.
pub fn resync() {
    let base = base();
    let now = Instant::now();
    let unix = now_us();
    let since = now.saturating_duration_since(base).as_micros() as u64;
    UNIX_US_AT_BASE.store(unix.saturating_sub(since), Ordering::Relaxed);
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

/// Called by the server's cron every tick; also re-ties [`unix_ms_at`].
pub fn refresh_lru_clock() -> u32 {
    resync();
    let c = (now_ms() / 1000) as u32;
    LRU_CLOCK.store(c, Ordering::Relaxed);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_based_time_follows_the_wall_clock() {
        resync();
        let derived = unix_ms_at(Instant::now());
        let wall = now_ms();
        // (A thread preempted between a resync's two clock reads, here or in a
        // test beside this one, skews the tie by that long: allowed for.)
        assert!(
            derived.abs_diff(wall) <= 50,
            "derived {derived} wall {wall}"
        );
        let later = unix_ms_at(Instant::now() + std::time::Duration::from_millis(1500));
        assert!(later >= derived + 1500);
    }
}
