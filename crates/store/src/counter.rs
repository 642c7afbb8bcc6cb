//! Statistics counters bumped on every command (calls, microseconds, bytes, dirty)
//! by every worker thread at once. One shared `AtomicU64` per counter makes the
//! cores fight over its cache line on each command; a [`SpreadCounter`] gives each
//! thread its own cache-line-sized slot and only readers (INFO, /metrics) pay for
//! adding the slots up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per counter: more than the worker threads we expect on one machine; two
/// threads that share a slot still count correctly (the slot is atomic).
pub const SLOTS: usize = 8;

/// One cache line, so neighbouring slots are never written by two cores.
#[derive(Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// This thread's slot index, handed out round-robin on first use.
pub fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

/// A counter written from many threads and read rarely.
#[derive(Default)]
pub struct SpreadCounter {
    slots: [Slot; SLOTS],
}

impl SpreadCounter {
    pub fn add(&self, n: u64) {
        self.add_at(thread_slot(), n);
    }

    /// `add` with the slot already looked up, for callers bumping several counters.
    pub fn add_at(&self, slot: usize, n: u64) {
        self.slots[slot % SLOTS].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }

    pub fn reset(&self) {
        for s in &self.slots {
            s.0.store(0, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for SpreadCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_threads_and_resets() {
        let c = std::sync::Arc::new(SpreadCounter::default());
        let handles: Vec<_> = (0..SLOTS + 3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(2);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.get(), 2 * 1000 * (SLOTS as u64 + 3));
        c.reset();
        assert_eq!(c.get(), 0);
    }

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<SpreadCounter>(), 64 * SLOTS);
    }
}
