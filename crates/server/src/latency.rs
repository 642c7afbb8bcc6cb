//! Command latency per command family, recorded on every command the store runs.
//!
//! This sits on the hot path of every command, so it is lock-free: one atomic bucket
//! counter, sum and count per family and thread slot (prometheus-client's histogram takes a write
//! lock per observation, which cost measurable throughput on pipelined loads). The
//! buckets are rendered as an OpenMetrics histogram at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tidewire_store::command::{registry, Command};
use tidewire_store::counter::{thread_slot, SLOTS};

/// Bucket upper bounds in microseconds: 5 µs × 4ⁿ, up to ~1.3 s.
const BOUNDS_US: [u64; 10] = [
    5, 20, 80, 320, 1_280, 5_120, 20_480, 81_920, 327_680, 1_310_720,
];

/// One thread's share of a family's histogram, on cache lines of its own (see
/// `tidewire_store::counter`): every worker records every command.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

struct FamilyHistogram {
    family: &'static str,
    slots: [Slot; SLOTS],
}

impl FamilyHistogram {
    fn total(&self, pick: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .map(|s| pick(s).load(Ordering::Relaxed))
            .sum()
    }
}

struct Histograms {
    families: Vec<FamilyHistogram>,
}

fn histograms() -> &'static Histograms {
    static H: OnceLock<Histograms> = OnceLock::new();
    H.get_or_init(|| {
        let mut families: Vec<&'static str> = registry().all().map(|c| c.spec.group).collect();
        families.sort_unstable();
        families.dedup();
        // Each command learns its family's place, so recording a call is an index.
        for c in registry().all() {
            if let Some(i) = families.iter().position(|f| *f == c.spec.group) {
                c.stats.latency_family.store(i as u32, Ordering::Relaxed);
            }
        }
        let families = families
            .into_iter()
            .map(|family| FamilyHistogram {
                family,
                slots: Default::default(),
            })
            .collect();
        Histograms { families }
    })
}

/// Records one command's run time. Registered as the store's latency observer.
pub fn observe(cmd: &Command, usec: u64) {
    let h = histograms();
    let family = cmd.stats.latency_family.load(Ordering::Relaxed) as usize;
    let Some(family) = h.families.get(family) else {
        return;
    };
    let me = thread_slot();
    let slot = &family.slots[me.index()];
    let bucket = BOUNDS_US
        .iter()
        .position(|b| usec <= *b)
        .unwrap_or(BOUNDS_US.len());
    me.add(&slot.buckets[bucket], 1);
    me.add(&slot.sum_us, usec);
    me.add(&slot.count, 1);
}

pub fn render(out: &mut String) {
    let name = "tidewire_command_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Command execution time by command family."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for h in &histograms().families {
        let count = h.total(|s| &s.count);
        if count == 0 {
            continue;
        }
        let f = h.family;
        let sum = h.total(|s| &s.sum_us) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{family=\"{f}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{family=\"{f}\"}} {count}");
        let mut cumulative = 0;
        for (i, bound) in BOUNDS_US.iter().enumerate() {
            cumulative += h.total(|s| &s.buckets[i]);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\",family=\"{f}\"}} {cumulative}"
            );
        }
        cumulative += h.total(|s| &s.buckets[BOUNDS_US.len()]);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\",family=\"{f}\"}} {cumulative}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_count() {
        let get = registry().get(b"get").unwrap();
        for us in [1, 10, 100, 2_000_000] {
            observe(get, us);
        }
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("# TYPE tidewire_command_duration_seconds histogram"));
        let line = |le: &str| {
            out.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "tidewire_command_duration_seconds_bucket{{le=\"{le}\",family=\"string\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        };
        // Other tests in this process may add observations: compare relations only.
        assert!(line("0.000005") >= 1);
        assert!(line("0.00002") > line("0.000005"));
        assert!(line("+Inf") > line("1.31072"));
    }
}
