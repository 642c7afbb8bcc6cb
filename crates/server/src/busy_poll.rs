//! Busy polling: after a request the event loop keeps polling its sockets, without
//! blocking, for up to `busy-poll-us` microseconds before it goes to sleep in
//! `epoll_wait`.
//!
//! Why: when requests follow each other closely (one client after another, each
//! waiting for its reply) the loop otherwise falls asleep between most of them, and
//! each sleep costs twice. The client's send has to wake the server's thread (the
//! scheduler and, on a VM, the hypervisor), and the server pays for being scheduled
//! back in before it can read. Measured on the 2-core VM (docs/benchmarks.md):
//! unpinned SET from 50 clients went from 79.6k to 89.1k requests/s against Redis's
//! 79.4k, with the server using ~90% of a core instead of ~60%. This is the
//! user-space counterpart of Linux's socket busy polling (`net.core.busy_poll`,
//! which loopback cannot use) and of a VM's halt polling.
//!
//! The cost is CPU while clients are active, never when idle: the poller sleeps on a
//! [`Notify`] until a connection finishes a turn. The window adapts as Linux's
//! `haltpoll` does: it shrinks while the gaps between requests are longer than the
//! limit (spinning would only have burnt CPU before sleeping anyway) and grows back
//! when they are shorter. Each spin round also calls `sched_yield`, so a process
//! with work on the same core (the application itself, on a small machine) runs
//! first. `CONFIG SET busy-poll-us 0` turns it off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewire_store::Store;
use tokio::sync::{watch, Notify};

/// Connections report their turns here; the poller spins while they keep coming.
#[derive(Default)]
pub struct BusyPoll {
    /// Bumped at the end of every connection turn.
    turns: AtomicU64,
    /// True while the poller sleeps: only then does a turn have to wake it.
    parked: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// Called by a connection at the end of each turn (before its reply goes out).
    #[inline]
    pub fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Whether the poller is asleep.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    /// The poller task. Runs on the single-threaded runtime: each `yield_now` lets
    /// every ready task run, then has tokio poll the sockets with a zero timeout
    /// instead of sleeping.
    pub async fn run(self: Arc<Self>, store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
        let mut window = Window::default();
        let mut last_turn: Option<Instant> = None;
        loop {
            self.parked.store(true, Ordering::Release);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            let woke = Instant::now();
            let limit = Duration::from_micros(store.config.busy_poll_us.load(Ordering::Relaxed));
            window.set_limit(limit);
            if let Some(last) = last_turn {
                window.after_gap(woke.saturating_duration_since(last));
            }
            let mut seen = self.turns.load(Ordering::Relaxed);
            let mut last = woke;
            while !window.current.is_zero() {
                tokio::task::yield_now().await;
                std::thread::yield_now();
                store.stats.busy_polls.fetch_add(1, Ordering::Relaxed);
                let turns = self.turns.load(Ordering::Relaxed);
                let now = Instant::now();
                if turns != seen {
                    seen = turns;
                    last = now;
                } else if now.duration_since(last) > window.current {
                    break;
                }
            }
            last_turn = Some(last);
        }
    }
}

/// How long to keep polling after the last turn: between zero and the configured
/// limit, following the gaps actually seen between turns.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    limit: Duration,
    current: Duration,
}

impl Window {
    /// A changed limit (CONFIG SET) applies from the next wake-up; the window starts
    /// at the full limit.
    fn set_limit(&mut self, limit: Duration) {
        if limit != self.limit {
            self.limit = limit;
            self.current = limit;
        }
    }

    /// Adapts to a gap between two turns that the poller slept through: a gap the
    /// limit would have covered grows the window (polling that long saves the
    /// sleep), a longer one halves it, down to zero.
    fn after_gap(&mut self, gap: Duration) {
        if self.limit.is_zero() {
            self.current = Duration::ZERO;
            return;
        }
        let floor = (self.limit / 8)
            .max(Duration::from_micros(1))
            .min(self.limit);
        if gap <= self.limit {
            self.current = (self.current * 2).clamp(floor, self.limit);
        } else {
            self.current /= 2;
            if self.current < floor {
                self.current = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until the poller is parked or not, as asked.
    async fn until_parked(poller: &BusyPoll, parked: bool) {
        for _ in 0..2000 {
            if poller.is_parked() == parked {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("poller never became parked={parked}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn poller_spins_after_a_turn_then_sleeps_until_the_next() {
        let store = Store::new();
        store.config.set("busy-poll-us", "1000").unwrap();
        let (stop, stopped) = watch::channel(false);
        let poller = Arc::new(BusyPoll::default());
        let task = tokio::spawn(poller.clone().run(store.clone(), stopped));
        let polls = || store.stats.busy_polls.load(Ordering::Relaxed);
        until_parked(&poller, true).await;
        assert_eq!(polls(), 0, "no polling before any turn");

        poller.turn();
        assert!(!poller.is_parked(), "a turn wakes the poller");
        until_parked(&poller, true).await;
        let after_first = polls();
        assert!(after_first > 0, "it polled before sleeping again");
        // Asleep means asleep: no polls while nothing happens.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(polls(), after_first);

        // Turned off: a turn wakes it, but it goes back to sleep without polling.
        store.config.set("busy-poll-us", "0").unwrap();
        poller.turn();
        until_parked(&poller, true).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(polls(), after_first);

        stop.send(true).unwrap();
        task.await.unwrap();
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn window_shrinks_to_zero_on_long_gaps_and_grows_back_on_short_ones() {
        let mut w = Window::default();
        w.set_limit(us(80));
        assert_eq!(w.current, us(80));
        w.after_gap(us(1000));
        assert_eq!(w.current, us(40));
        w.after_gap(us(1000));
        assert_eq!(w.current, us(20));
        w.after_gap(us(1000));
        assert_eq!(w.current, us(10));
        w.after_gap(us(1000));
        assert_eq!(w.current, Duration::ZERO, "below limit/8 polling stops");
        w.after_gap(us(60));
        assert_eq!(w.current, us(10), "a gap the limit covers starts it again");
        w.after_gap(us(60));
        w.after_gap(us(60));
        w.after_gap(us(60));
        assert_eq!(w.current, us(80), "never past the limit");
    }

    #[test]
    fn window_follows_a_new_limit_and_zero_disables() {
        let mut w = Window::default();
        w.set_limit(us(50));
        w.after_gap(us(10));
        assert_eq!(w.current, us(50));
        w.set_limit(Duration::ZERO);
        assert_eq!(w.current, Duration::ZERO);
        w.after_gap(Duration::ZERO);
        assert_eq!(w.current, Duration::ZERO);
        w.set_limit(us(20));
        assert_eq!(w.current, us(20));
    }
}
