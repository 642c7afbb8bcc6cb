//! The watchdog: a thread that stops the process when the input being run hangs or
//! its allocation runs away, after printing and saving that input.
//!
//! Why a thread: a parser stuck in a loop never returns to the driver, so the
//! driver's own elapsed-time and peak-allocation checks (which catch slow or greedy
//! inputs that do finish) never run. The watchdog polls the current input's start
//! time and live bytes ([`crate::alloc_meter::live_now`]) instead.

#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::alloc_meter;
use crate::finding;

/// What the watchdog knows about the input in flight.
struct Current {
    target: &'static str,
    input: Vec<u8>,
    hang_after: Duration,
    max_live: usize,
}

struct Shared {
    epoch: Instant,
    /// Nanoseconds after `epoch` at which the current input started; 0 when idle.
    started_ns: AtomicU64,
    current: Mutex<Option<Current>>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<&'static Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let s: &'static Shared = Box::leak(Box::new(Shared {
            epoch: Instant::now(),
            started_ns: AtomicU64::new(0),
            current: Mutex::new(None),
        }));
        std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(move || watch(s))
            .expect("spawn the fuzz watchdog");
        s
    })
}

/// Announces the input about to run: it must finish within `hang_after` and keep
/// its live allocation at or under `max_live` bytes.
pub fn begin(target: &'static str, input: &[u8], hang_after: Duration, max_live: usize) {
    let s = shared();
    {
        let mut cur = s.current.lock().unwrap_or_else(|p| p.into_inner());
        match cur.as_mut() {
            Some(c) => {
                c.target = target;
                c.input.clear();
                c.input.extend_from_slice(input);
                c.hang_after = hang_after;
                c.max_live = max_live;
            }
            None => {
                *cur = Some(Current {
                    target,
                    input: input.to_vec(),
                    hang_after,
                    max_live,
                })
            }
        }
    }
    let now = s.epoch.elapsed().as_nanos() as u64;
    s.started_ns.store(now.max(1), Ordering::Release);
}

/// The input announced by [`begin`] has finished.
pub fn end() {
    shared().started_ns.store(0, Ordering::Release);
}

fn watch(s: &'static Shared) {
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let started = s.started_ns.load(Ordering::Acquire);
        if started == 0 {
            continue;
        }
        let running =
            Duration::from_nanos((s.epoch.elapsed().as_nanos() as u64).saturating_sub(started));
        let live = alloc_meter::live_now().unwrap_or(0);
        let cur = s.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = cur.as_ref() else { continue };
        // The input may have ended (and another begun) since the load above.
        if s.started_ns.load(Ordering::Acquire) != started {
            continue;
        }
        let why = if running > c.hang_after {
            format!("hang: still running after {running:?}")
        } else if live > c.max_live {
            format!(
                "runaway allocation: {live} bytes live, budget {} for {} input bytes",
                c.max_live,
                c.input.len()
            )
        } else {
            continue;
        };
        let report = finding::report(c.target, &c.input, &why);
        let mut err = std::io::stderr().lock();
        // Written to the handle, not with eprintln!: the test harness captures the
        // macros' output, and the process is about to exit without printing it.
        let _ = writeln!(err, "\n{report}");
        let _ = err.flush();
        std::process::exit(70);
    }
}
