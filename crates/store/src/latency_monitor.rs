//! The latency monitor (`LATENCY LATEST | HISTORY | RESET`): with
//! `latency-monitor-threshold` set, each call that takes at least that many
//! milliseconds is a sample of its event (`command`, or `fast-command` for a
//! command flagged fast), one per event and second (the worst of that second),
//! the last 160 kept, as Redis keeps them.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Samples kept per event.
const KEPT: usize = 160;

#[derive(Clone, Copy, Default)]
struct Sample {
    /// Unix seconds (0: an empty place).
    time: u64,
    latency_ms: u64,
}

struct Series {
    samples: [Sample; KEPT],
    /// Where the next sample goes.
    next: usize,
    max_ms: u64,
}

impl Series {
    fn last(&self) -> Sample {
        self.samples[(self.next + KEPT - 1) % KEPT]
    }
}

#[derive(Default)]
pub struct LatencyMonitor {
    events: Mutex<BTreeMap<&'static str, Series>>,
}

impl LatencyMonitor {
    /// A call of `event` that took `latency_ms`.
    pub fn add(&self, event: &'static str, latency_ms: u64) {
        self.add_at(event, latency_ms, crate::clock::now_ms() / 1000);
    }

    fn add_at(&self, event: &'static str, latency_ms: u64, now: u64) {
        let mut events = self.events.lock();
        let series = events.entry(event).or_insert_with(|| Series {
            samples: [Sample::default(); KEPT],
            next: 0,
            max_ms: 0,
        });
        series.max_ms = series.max_ms.max(latency_ms);
        let last = (series.next + KEPT - 1) % KEPT;
        if series.samples[last].time == now {
            let kept = &mut series.samples[last].latency_ms;
            *kept = (*kept).max(latency_ms);
            return;
        }
        series.samples[series.next] = Sample {
            time: now,
            latency_ms,
        };
        series.next = (series.next + 1) % KEPT;
    }

    /// Every event: (name, time of its last sample, that sample's latency, the
    /// highest latency seen).
    pub fn latest(&self) -> Vec<(&'static str, u64, u64, u64)> {
        self.events
            .lock()
            .iter()
            .map(|(event, s)| {
                let last = s.last();
                (*event, last.time, last.latency_ms, s.max_ms)
            })
            .collect()
    }

    /// An event's samples, oldest first: (time, latency).
    pub fn history(&self, event: &[u8]) -> Vec<(u64, u64)> {
        let events = self.events.lock();
        let Some(s) = events
            .iter()
            .find(|(e, _)| e.as_bytes() == event)
            .map(|(_, s)| s)
        else {
            return Vec::new();
        };
        (0..KEPT)
            .map(|j| s.samples[(s.next + j) % KEPT])
            .filter(|sample| sample.time != 0)
            .map(|sample| (sample.time, sample.latency_ms))
            .collect()
    }

    /// Forgets the named events (all of them when `events` is empty); how many
    /// there were.
    pub fn reset(&self, events: &[&[u8]]) -> usize {
        let mut all = self.events.lock();
        if events.is_empty() {
            let n = all.len();
            all.clear();
            return n;
        }
        let before = all.len();
        all.retain(|e, _| !events.contains(&e.as_bytes()));
        before - all.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sample_per_second_the_worst_kept() {
        let m = LatencyMonitor::default();
        assert!(m.latest().is_empty());
        m.add_at("command", 120, 1_000);
        m.add_at("command", 300, 1_000);
        m.add_at("command", 150, 1_001);
        m.add_at("fast-command", 5, 1_002);
        assert_eq!(m.history(b"command"), vec![(1_000, 300), (1_001, 150)]);
        assert_eq!(
            m.latest(),
            vec![("command", 1_001, 150, 300), ("fast-command", 1_002, 5, 5)]
        );
        for t in 0..200 {
            m.add_at("command", t, 2_000 + t);
        }
        let h = m.history(b"command");
        assert_eq!(h.len(), KEPT);
        assert_eq!(h[0], (2_040, 40));
        assert_eq!(h[KEPT - 1], (2_199, 199));
        assert!(m.history(b"nosuch").is_empty());
        assert_eq!(m.reset(&[b"command", b"nosuch"]), 1);
        assert_eq!(m.reset(&[]), 1);
        assert!(m.latest().is_empty());
    }
}
