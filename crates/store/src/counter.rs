//! Statistics counters bumped on every command (calls, microseconds, bytes, dirty)
//! by every worker thread at once. One shared `AtomicU64` per counter makes the
//! cores fight over its cache line on each command; a [`SpreadCounter`] gives each
//! thread its own cache-line-sized slot and only readers (INFO, /metrics) pay for
//! adding the slots up.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per counter: more than the worker threads we expect on one machine.
pub const SLOTS: usize = 8;

/// The slot shared by threads beyond the first `SLOTS - 1`: they add to it
/// atomically. Every other slot has one owner thread at a time, which adds with a
/// plain load and store: a locked read-modify-write costs ~20 cycles, and a
/// command bumps several counters.
const SHARED: usize = SLOTS - 1;

/// Owned slots not taken by a live thread (bit i = slot i).
static FREE: AtomicU64 = AtomicU64::new((1 << SHARED) - 1);

/// One cache line, so neighbouring slots are never written by two cores.
#[derive(Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// A thread's claim on an owned slot, given back when the thread ends (a
/// short-lived blocking-pool thread must not keep a slot from the workers).
struct Claim(usize);

impl Claim {
    fn take() -> Claim {
        let mut free = FREE.load(Ordering::Relaxed);
        loop {
            if free == 0 {
                return Claim(SHARED);
            }
            let i = free.trailing_zeros() as usize;
            // Acquire: the previous owner's last plain stores are seen before
            // this thread adds to them.
            match FREE.compare_exchange_weak(
                free,
                free & !(1 << i),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Claim(i),
                Err(now) => free = now,
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0 != SHARED {
            FREE.fetch_or(1 << self.0, Ordering::Release);
        }
    }
}

/// The calling thread's slot: its index in every counter, and how to add there.
#[derive(Clone, Copy, Debug)]
pub struct ThreadSlot(usize);

impl ThreadSlot {
    pub fn index(self) -> usize {
        self.0
    }

    /// Adds `n` to `cell`, this thread's cell of some counter.
    #[inline]
    pub fn add(self, cell: &AtomicU64, n: u64) {
        if self.0 == SHARED {
            cell.fetch_add(n, Ordering::Relaxed);
        } else {
            // Only this thread writes the cell while it holds the slot; readers
            // see either value.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }
}

/// This thread's slot, claimed on first use (the shared one while the thread is
/// being torn down).
pub fn thread_slot() -> ThreadSlot {
    thread_local! {
        static CLAIM: Claim = Claim::take();
    }
    ThreadSlot(CLAIM.try_with(|c| c.0).unwrap_or(SHARED))
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
    pub fn add_at(&self, slot: ThreadSlot, n: u64) {
        slot.add(&self.slots[slot.index()].0, n);
    }

    pub fn get(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }

    /// Zeroes the counter (CONFIG RESETSTAT). An add racing with it on another
    /// thread may survive it, as in Redis, where the reset is not atomic with
    /// the commands either.
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

    /// More threads alive at once than owned slots: the extra ones share a slot
    /// and still count every add; slots given back by ended threads are reused.
    #[test]
    fn exact_with_threads_beyond_the_owned_slots() {
        let c = std::sync::Arc::new(SpreadCounter::default());
        let n = 3 * SLOTS;
        for _ in 0..2 {
            let gate = std::sync::Arc::new(std::sync::Barrier::new(n));
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let (c, gate) = (c.clone(), gate.clone());
                    std::thread::spawn(move || {
                        gate.wait();
                        for _ in 0..10_000 {
                            c.add(1);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        }
        assert_eq!(c.get(), 2 * 10_000 * n as u64);
    }

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<SpreadCounter>(), 64 * SLOTS);
    }
}
