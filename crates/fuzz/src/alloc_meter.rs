//! Allocation metering: the process's global allocator is the system allocator
//! wrapped to count, for one thread at a time, the bytes live since that thread
//! started measuring, and their peak.
//!
//! Why: a parser that turns a declared length (`$536870912`) or an element count
//! into an allocation is a memory DoS even when it never panics. Counting lets every
//! target assert that one input costs at most a small multiple of its own size, and
//! lets the [`crate::watchdog`] stop an input whose allocation runs away before the
//! machine does.
//!
//! Only the measuring thread is counted, so other test threads allocating at the same
//! time do not blur the figure; [`exclusive`] makes sure only one thread measures.
//! This is the only module of the crate with `unsafe` code: `GlobalAlloc` is an
//! unsafe trait, and each method only forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The system allocator plus the per-input counters.
pub struct MeteredSystem;

#[global_allocator]
static GLOBAL: MeteredSystem = MeteredSystem;

/// Bytes allocated minus bytes freed by the measuring thread since [`start`].
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Highest [`LIVE`] since [`start`].
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Whether some thread is measuring (so the watchdog's reading means something).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Serialises measuring threads (see [`exclusive`]).
static EXCLUSIVE: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread's allocations are counted. `const` and without a
    /// destructor, so reading it from inside the allocator cannot allocate or recurse.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn measuring() -> bool {
    MEASURING.try_with(Cell::get).unwrap_or(false)
}

fn count(delta: isize) {
    let live = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[allow(unsafe_code)]
// SAFETY (all methods): each forwards its arguments unchanged to `System`, whose
// contract is the one `GlobalAlloc` requires; the counting around it touches only
// atomics and a const thread-local, which never allocate.
unsafe impl GlobalAlloc for MeteredSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && measuring() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && measuring() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if measuring() {
            count(-(layout.size() as isize));
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && measuring() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Held by the one thread that measures; other threads wait for it.
pub fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts counting this thread's allocations from zero.
pub fn start() {
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    ACTIVE.store(true, Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
}

/// Stops counting; returns the peak of live bytes since [`start`].
pub fn stop() -> usize {
    MEASURING.with(|m| m.set(false));
    ACTIVE.store(false, Ordering::Relaxed);
    PEAK.load(Ordering::Relaxed).max(0) as usize
}

/// Live bytes of the input being measured, if one is (read by the watchdog).
pub fn live_now() -> Option<usize> {
    ACTIVE
        .load(Ordering::Relaxed)
        .then(|| LIVE.load(Ordering::Relaxed).max(0) as usize)
}
