//! The driver: runs a [`Target`] over its corpus, mutations of it and structured
//! inputs, each under the time and allocation bounds, and reports what it saw.

#![forbid(unsafe_code)]

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{alloc_meter, corpus, finding, mutate, watchdog};

/// One fuzz target: the real code behind one kind of input, and how to feed it.
pub struct Target {
    /// Also the corpus folder name and the test name.
    pub name: &'static str,
    /// Runs the code under test on one input; `Err` names the broken invariant.
    pub check: fn(&[u8]) -> Result<(), String>,
    /// A structured, near-valid input (what blind mutation would rarely reach).
    pub generate: fn(&mut SmallRng) -> Vec<u8>,
    /// Tokens of the format, inserted by the mutator.
    pub dictionary: &'static [&'static [u8]],
    /// Longest input tried.
    pub max_len: usize,
    /// Allocation bound for an input of `n` bytes: `alloc_per_byte * n + alloc_base`.
    pub alloc_per_byte: usize,
    pub alloc_base: usize,
}

impl Target {
    /// Most bytes one input of `len` bytes may have live at once.
    pub fn alloc_budget(&self, len: usize) -> usize {
        self.alloc_per_byte * len + self.alloc_base
    }
}

/// How long and how hard to run, from the environment (see docs/fuzzing.md).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `TIDEWIRE_FUZZ_CASES`: inputs per target (default 5000).
    pub cases: u64,
    /// `TIDEWIRE_FUZZ_SEED`: the random seed (default fixed, so runs repeat).
    pub seed: u64,
    /// `TIDEWIRE_FUZZ_SLOW_MS`: an input that finishes later than this fails.
    pub slow_after: Duration,
    /// `TIDEWIRE_FUZZ_HANG_MS`: the watchdog stops the process after this.
    pub hang_after: Duration,
    /// `TIDEWIRE_FUZZ_PROGRESS`: print a progress line every this many inputs (0: never).
    pub progress_every: u64,
}

/// The seed used when `TIDEWIRE_FUZZ_SEED` is unset.
pub const DEFAULT_SEED: u64 = 0x7469_6465_7769_7265;

impl Settings {
    pub fn from_env() -> Settings {
        fn num(name: &str, default: u64) -> u64 {
            match std::env::var(name) {
                Ok(v) => {
                    let v = v.trim().replace('_', "");
                    let parsed = match v.strip_prefix("0x") {
                        Some(hex) => u64::from_str_radix(hex, 16),
                        None => v.parse(),
                    };
                    parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
                }
                Err(_) => default,
            }
        }
        Settings {
            cases: num("TIDEWIRE_FUZZ_CASES", 5000),
            seed: num("TIDEWIRE_FUZZ_SEED", DEFAULT_SEED),
            slow_after: Duration::from_millis(num("TIDEWIRE_FUZZ_SLOW_MS", 2000)),
            hang_after: Duration::from_millis(num("TIDEWIRE_FUZZ_HANG_MS", 10_000)),
            progress_every: num("TIDEWIRE_FUZZ_PROGRESS", 0),
        }
    }
}

/// What a run saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub inputs: u64,
    pub corpus_seeds: usize,
    pub wall: Duration,
    /// Highest peak of live bytes over all inputs, and that input's length.
    pub peak_alloc: usize,
    pub peak_alloc_input_len: usize,
    /// Highest peak relative to the input's budget, in percent.
    pub peak_budget_percent: usize,
    pub slowest: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs ({} corpus seeds), seed {:#x}, {:.1?}, no finding; \
             peak allocation {} bytes (input of {} bytes), at most {}% of budget; \
             slowest input {:.1?}",
            self.target,
            self.inputs,
            self.corpus_seeds,
            self.seed,
            self.wall,
            self.peak_alloc,
            self.peak_alloc_input_len,
            self.peak_budget_percent,
            self.slowest,
        )
    }
}

/// Runs `target` for `settings.cases` inputs; `Err` is the report of the first
/// finding (panic, broken invariant, slow input, over-budget allocation). Hangs and
/// runaway allocations end the process from the watchdog instead.
pub fn run(target: &Target, settings: &Settings) -> Result<Report, String> {
    let seeds = corpus::load(target.name)?;
    let _only_me = alloc_meter::exclusive();
    let mut rng = SmallRng::seed_from_u64(settings.seed ^ finding::fnv1a(target.name.as_bytes()));
    let started = Instant::now();
    let mut report = Report {
        target: target.name,
        seed: settings.seed,
        inputs: 0,
        corpus_seeds: seeds.len(),
        wall: Duration::ZERO,
        peak_alloc: 0,
        peak_alloc_input_len: 0,
        peak_budget_percent: 0,
        slowest: Duration::ZERO,
    };
    let mut input = Vec::with_capacity(target.max_len + 64);
    for case in 0..settings.cases {
        next_input(target, &seeds, case, &mut rng, &mut input);
        let budget = target.alloc_budget(input.len());
        watchdog::begin(target.name, &input, settings.hang_after, budget);
        alloc_meter::start();
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.check)(&input)));
        let elapsed = t0.elapsed();
        let peak = alloc_meter::stop();
        watchdog::end();
        let why = match outcome {
            Err(panic) => Some(format!("panic: {}", panic_text(&panic))),
            Ok(Err(broken)) => Some(broken),
            Ok(Ok(())) if elapsed > settings.slow_after => Some(format!(
                "slow: took {elapsed:?}, bound {:?}",
                settings.slow_after
            )),
            Ok(Ok(())) if peak > budget => Some(format!(
                "allocation: peak {peak} live bytes, budget {budget} for {} input bytes",
                input.len()
            )),
            Ok(Ok(())) => None,
        };
        if let Some(why) = why {
            return Err(finding::report(target.name, &input, &why));
        }
        report.inputs += 1;
        if peak > report.peak_alloc {
            report.peak_alloc = peak;
            report.peak_alloc_input_len = input.len();
        }
        report.peak_budget_percent = report.peak_budget_percent.max(peak * 100 / budget);
        report.slowest = report.slowest.max(elapsed);
        if settings.progress_every > 0 && (case + 1) % settings.progress_every == 0 {
            report.wall = started.elapsed();
            eprintln!("progress: {report}");
        }
    }
    report.wall = started.elapsed();
    Ok(report)
}

/// Chooses input number `case`: every corpus seed verbatim first, then a mix of
/// mutated seeds, structured inputs, mutated structured inputs and random bytes.
fn next_input(
    target: &Target,
    seeds: &[Vec<u8>],
    case: u64,
    rng: &mut SmallRng,
    input: &mut Vec<u8>,
) {
    input.clear();
    if let Some(seed) = usize::try_from(case).ok().and_then(|i| seeds.get(i)) {
        input.extend_from_slice(seed);
        return;
    }
    let pick = |rng: &mut SmallRng| &seeds[rng.gen_range(0..seeds.len())];
    match rng.gen_range(0..20) {
        0..=8 => {
            input.extend_from_slice(pick(rng));
            let other = pick(rng).clone();
            mutate::mutate(rng, input, &other, target.dictionary, target.max_len);
        }
        9..=13 => {
            input.extend_from_slice(&(target.generate)(rng));
            input.truncate(target.max_len);
        }
        14..=18 => {
            input.extend_from_slice(&(target.generate)(rng));
            let other = pick(rng).clone();
            mutate::mutate(rng, input, &other, target.dictionary, target.max_len);
        }
        _ => {
            let n = rng.gen_range(0..64);
            input.extend((0..n).map(|_| rng.gen::<u8>()));
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic)".into())
}

/// Replays one saved input through `target` with the same bounds, for a finding.
pub fn replay(target: &Target, input: &[u8]) -> Result<(), String> {
    let _only_me = alloc_meter::exclusive();
    alloc_meter::start();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.check)(input)));
    let peak = alloc_meter::stop();
    match outcome {
        Err(panic) => Err(format!("panic: {}", panic_text(&panic))),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) if peak > target.alloc_budget(input.len()) => Err(format!(
            "allocation: peak {peak}, budget {}",
            target.alloc_budget(input.len())
        )),
        Ok(Ok(())) => Ok(()),
    }
}
