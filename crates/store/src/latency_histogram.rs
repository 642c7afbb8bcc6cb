//! Per-command latency histograms: Redis 7's latency tracking, read by
//! `INFO latencystats` (percentiles) and `LATENCY HISTOGRAM` (power-of-two
//! buckets).
//!
//! Every command records its run time here, so recording is an index and a plain
//! add in the thread's own slot (see `counter`). Buckets are log-linear in
//! nanoseconds: exact below 16 ns, then 16 per power of two (each ~6 % wide), up
//! to ~18 minutes. A thread's buckets are allocated the first time it runs the
//! command, so commands nobody calls cost no memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::counter::{ThreadSlot, SLOTS};

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above the exact range: up to 2^40 ns.
const POWERS: u64 = 40 - SUB_BITS as u64 + 1;
pub const BUCKETS: usize = (SUB + POWERS * SUB) as usize;

type Buckets = [AtomicU64; BUCKETS];

/// One command's histogram.
#[derive(Default)]
pub struct LatencyHistogram {
    slots: [OnceLock<Box<Buckets>>; SLOTS],
}

/// The bucket of a run time in nanoseconds.
fn bucket_of(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let power = u64::from(63 - ns.leading_zeros()); // >= SUB_BITS
    let sub = (ns >> (power - u64::from(SUB_BITS))) & (SUB - 1);
    let index = SUB + (power - u64::from(SUB_BITS)) * SUB + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The largest run time (ns) that falls in `bucket`: what a percentile reports,
/// as Redis's HdrHistogram reports a bucket's highest equivalent value.
pub fn bucket_upper(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < SUB {
        return b;
    }
    let power = (b - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (b - SUB) % SUB;
    let width = 1u64 << (power - u64::from(SUB_BITS));
    ((SUB + sub) << (power - u64::from(SUB_BITS))) + width - 1
}

impl LatencyHistogram {
    /// Records a run of `ns` nanoseconds in `slot`, the calling thread's.
    #[inline]
    pub fn record_at(&self, slot: ThreadSlot, ns: u64) {
        let buckets = self.slots[slot.index()]
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        slot.add(&buckets[bucket_of(ns)], 1);
    }

    /// The counts of every thread, added up; `None` when nothing was recorded
    /// (since start or the last reset).
    pub fn counts(&self) -> Option<Counts> {
        let mut counts = vec![0u64; BUCKETS];
        let mut total = 0;
        for buckets in self.slots.iter().filter_map(OnceLock::get) {
            for (sum, b) in counts.iter_mut().zip(buckets.iter()) {
                let n = b.load(Ordering::Relaxed);
                *sum += n;
                total += n;
            }
        }
        (total > 0).then_some(Counts { counts, total })
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for buckets in self.slots.iter().filter_map(OnceLock::get) {
            for b in buckets.iter() {
                b.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A histogram's counts at one moment.
pub struct Counts {
    counts: Vec<u64>,
    pub total: u64,
}

impl Counts {
    /// Adds another histogram's counts (a container's subcommands shown as one
    /// command).
    pub fn add(&mut self, other: &Counts) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The run time (ns) at percentile `p` (0–100): the upper end of the bucket
    /// holding the sample of that rank, as HdrHistogram's `value_at_percentile`.
    pub fn at_percentile(&self, p: f64) -> u64 {
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper(bucket);
            }
        }
        bucket_upper(BUCKETS - 1)
    }

    /// Cumulative counts at power-of-two bounds from 1024 ns (1 µs) up, as
    /// `LATENCY HISTOGRAM` gives them: (bound in µs, runs that took less), only
    /// where the count grew.
    pub fn power_of_two_cdf(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut below = 0;
        let mut previous = 0;
        let mut bucket = 0;
        for power in 10..=40u32 {
            let bound = 1u64 << power;
            while bucket < BUCKETS && bucket_upper(bucket) < bound {
                below += self.counts[bucket];
                bucket += 1;
            }
            if below > previous {
                out.push((bound / 1000, below));
                previous = below;
            }
            if below == self.total {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::thread_slot;

    #[test]
    fn buckets_cover_their_values_in_order() {
        let mut last_upper = None;
        for b in 0..BUCKETS {
            let upper = bucket_upper(b);
            assert_eq!(bucket_of(upper), b, "bucket {b}");
            if let Some(prev) = last_upper {
                assert_eq!(bucket_of(prev + 1), b, "first value of bucket {b}");
                assert!(upper > prev);
            }
            last_upper = Some(upper);
        }
        // Each bucket above the exact range is at most 1/16 of its values wide.
        for ns in [17u64, 1_000, 1_003, 65_536, 999_999, 123_456_789] {
            let upper = bucket_upper(bucket_of(ns));
            assert!(
                upper >= ns && (upper - ns) as f64 <= ns as f64 / 16.0,
                "{ns}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_and_power_of_two_bounds() {
        let h = LatencyHistogram::default();
        assert!(h.counts().is_none());
        for _ in 0..98 {
            h.record_at(thread_slot(), 1_500);
        }
        h.record_at(thread_slot(), 40_000);
        h.record_at(thread_slot(), 2_000_000);
        let c = h.counts().expect("recorded");
        assert_eq!(c.total, 100);
        let p50 = c.at_percentile(50.0);
        assert!((1_500..1_600).contains(&p50), "{p50}");
        let p99 = c.at_percentile(99.0);
        assert!((40_000..42_600).contains(&p99), "{p99}");
        let p100 = c.at_percentile(100.0);
        assert!((2_000_000..2_130_000).contains(&p100), "{p100}");
        assert_eq!(c.at_percentile(0.0), p50);
        // 1.5 µs runs are below the 2048 ns bound, 40 µs below 65536 ns, 2 ms
        // below 2^21 ns.
        assert_eq!(c.power_of_two_cdf(), vec![(2, 98), (65, 99), (2_097, 100)]);
        h.reset();
        assert!(h.counts().is_none());
    }
}
