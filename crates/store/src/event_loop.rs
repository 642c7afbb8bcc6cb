//! Redis 7.2's event-loop metrics: INFO stats' `eventloop_*` and
//! `instantaneous_eventloop_*`, INFO debug's `eventloop_duration_*` and
//! `eventloop_cmd_per_cycle_max`.
//!
//! Redis's event loop is one thread that waits for events and handles them; a cycle
//! is one wake-up, from the wait's end to the next wait. Here the waits are the
//! runtime's worker threads parking, so a cycle is one worker thread's time from
//! unpark to park (the server hooks [`unparked`] and [`parking`] into its runtime),
//! summed over the workers. The counters are process-wide, as the runtime is.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cron samples kept for the instantaneous figures (Redis: 16, at 10 Hz).
const SAMPLES: usize = 16;

#[derive(Default)]
pub struct EventLoop {
    cycles: AtomicU64,
    duration_sum_us: AtomicU64,
    duration_max_us: AtomicU64,
    cmd_per_cycle_max: AtomicU64,
    cron_sum_us: AtomicU64,
    aof_sum_us: AtomicU64,
    /// (when, cycles, duration sum) at each of the last cron ticks, oldest first.
    samples: Mutex<Vec<(Instant, u64, u64)>>,
}

/// The process's event loop.
pub static EVENT_LOOP: EventLoop = EventLoop::new();

thread_local! {
    /// When this worker woke, and its command count then.
    static CYCLE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
    /// Commands this thread ran (for the most commands in one cycle).
    static COMMANDS: Cell<u64> = const { Cell::new(0) };
}

/// A worker thread woke up: a cycle starts.
pub fn unparked() {
    CYCLE.set(Some((Instant::now(), COMMANDS.get())));
}

/// A worker thread is about to wait: its cycle ends.
pub fn parking() {
    if let Some((start, commands)) = CYCLE.take() {
        EVENT_LOOP.cycle(start.elapsed(), COMMANDS.get() - commands);
    }
}

/// One command ran on this thread.
pub fn count_command() {
    COMMANDS.set(COMMANDS.get() + 1);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl EventLoop {
    pub const fn new() -> Self {
        EventLoop {
            cycles: AtomicU64::new(0),
            duration_sum_us: AtomicU64::new(0),
            duration_max_us: AtomicU64::new(0),
            cmd_per_cycle_max: AtomicU64::new(0),
            cron_sum_us: AtomicU64::new(0),
            aof_sum_us: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
        }
    }

    pub fn cycle(&self, took: Duration, commands: u64) {
        let us = micros(took);
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(us, Ordering::Relaxed);
        self.duration_max_us.fetch_max(us, Ordering::Relaxed);
        self.cmd_per_cycle_max
            .fetch_max(commands, Ordering::Relaxed);
    }

    /// Time the cron's work took (INFO debug's `eventloop_duration_cron_sum`).
    pub fn add_cron(&self, took: Duration) {
        self.cron_sum_us.fetch_add(micros(took), Ordering::Relaxed);
    }

    /// Time the runtime spent writing the append-only log
    /// (`eventloop_duration_aof_sum`).
    pub fn add_aof(&self, took: Duration) {
        self.aof_sum_us.fetch_add(micros(took), Ordering::Relaxed);
    }

    /// Called by the cron on each tick: a sample for the instantaneous figures.
    pub fn sample(&self, now: Instant) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == SAMPLES {
            s.remove(0);
        }
        s.push((
            now,
            self.cycles.load(Ordering::Relaxed),
            self.duration_sum_us.load(Ordering::Relaxed),
        ));
    }

    /// Cycles per second and microseconds per cycle over the samples kept.
    pub fn instantaneous(&self) -> (u64, u64) {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(first), Some(last)) = (s.first(), s.last()) else {
            return (0, 0);
        };
        let secs = last.0.duration_since(first.0).as_secs_f64();
        let cycles = last.1 - first.1;
        let per_sec = if secs > 0.0 {
            (cycles as f64 / secs).round() as u64
        } else {
            0
        };
        let per_cycle = (last.2 - first.2).checked_div(cycles).unwrap_or(0);
        (per_sec, per_cycle)
    }

    /// INFO stats' lines; `cmd_sum_us`: the commands' time (their statistics).
    pub fn stats_lines(&self, cmd_sum_us: u64) -> String {
        let (per_sec, per_cycle) = self.instantaneous();
        format!(
            "eventloop_cycles:{}\r\neventloop_duration_sum:{}\r\neventloop_duration_cmd_sum:{cmd_sum_us}\r\ninstantaneous_eventloop_cycles_per_sec:{per_sec}\r\ninstantaneous_eventloop_duration_usec:{per_cycle}\r\n",
            self.cycles.load(Ordering::Relaxed),
            self.duration_sum_us.load(Ordering::Relaxed),
        )
    }

    /// INFO debug's lines.
    pub fn debug_lines(&self) -> String {
        format!(
            "eventloop_duration_aof_sum:{}\r\neventloop_duration_cron_sum:{}\r\neventloop_duration_max:{}\r\neventloop_cmd_per_cycle_max:{}\r\n",
            self.aof_sum_us.load(Ordering::Relaxed),
            self.cron_sum_us.load(Ordering::Relaxed),
            self.duration_max_us.load(Ordering::Relaxed),
            self.cmd_per_cycle_max.load(Ordering::Relaxed),
        )
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for a in [
            &self.cycles,
            &self.duration_sum_us,
            &self.duration_max_us,
            &self.cmd_per_cycle_max,
            &self.cron_sum_us,
            &self.aof_sum_us,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_add_up_and_the_instantaneous_figures_come_from_the_samples() {
        let el = EventLoop::new();
        assert_eq!(el.instantaneous(), (0, 0));
        let t0 = Instant::now();
        el.sample(t0);
        el.cycle(Duration::from_micros(300), 2);
        el.cycle(Duration::from_micros(100), 7);
        el.add_cron(Duration::from_micros(50));
        el.sample(t0 + Duration::from_millis(500));
        // Two cycles in half a second, 200 µs each on average.
        assert_eq!(el.instantaneous(), (4, 200));
        let stats = el.stats_lines(42);
        assert!(stats.starts_with("eventloop_cycles:2\r\neventloop_duration_sum:400\r\neventloop_duration_cmd_sum:42\r\n"), "{stats}");
        let debug = el.debug_lines();
        assert_eq!(
            debug,
            "eventloop_duration_aof_sum:0\r\neventloop_duration_cron_sum:50\r\neventloop_duration_max:300\r\neventloop_cmd_per_cycle_max:7\r\n"
        );
        for i in 0..40 {
            el.sample(t0 + Duration::from_millis(600 + i));
        }
        assert_eq!(el.samples.lock().unwrap().len(), SAMPLES);
        el.reset();
        assert_eq!(el.instantaneous(), (0, 0));
        assert!(el.stats_lines(0).starts_with("eventloop_cycles:0\r\n"));
    }

    #[test]
    fn a_thread_s_cycle_counts_its_commands() {
        // (On the process's event loop: other tests may add cycles, never remove.)
        let before = EVENT_LOOP.cycles.load(Ordering::Relaxed);
        unparked();
        count_command();
        count_command();
        parking();
        assert!(EVENT_LOOP.cycles.load(Ordering::Relaxed) > before);
        assert!(EVENT_LOOP.cmd_per_cycle_max.load(Ordering::Relaxed) >= 2);
        // A park without an unpark (the thread's first) is no cycle.
        parking();
    }
}
