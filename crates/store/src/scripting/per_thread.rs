//! Lua states per thread: every thread that runs scripts keeps its own state for
//! each pool (a store's EVAL scripts, a store's functions).
//!
//! Why not one state behind a mutex: a state that may move between threads has to
//! be built by the binding in its thread-safe mode, where every value handed
//! between Rust and Lua (each argument of `redis.call`, each reply) takes and
//! releases a lock and an atomic reference count — a third of a BullMQ-like
//! script's time. A state that never leaves its thread needs none of that.
//!
//! What a state holds is derived from what the pool's owner keeps: scripts are
//! compiled from their bodies when a thread first runs them; functions are loaded
//! from the libraries' code. A change that invalidates them (SCRIPT FLUSH, any
//! change of the libraries) moves the owner to a new *generation*; each thread's
//! state is rebuilt when it is next used under another generation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use mlua::Function;
use parking_lot::Mutex;

use super::LuaEnv;

/// A generation no owner ever has: a state marked with it is rebuilt on next use.
const STALE: u64 = u64::MAX;

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// Lua heap bytes of a pool's states, counted for the current generation only:
/// the states of an older one are rebuilt (and shrink) on their thread's next run.
#[derive(Default)]
struct Tally {
    generation: u64,
    bytes: usize,
}

/// The shared side of one pool of per-thread states.
pub struct StatePool {
    id: u64,
    functions_mode: bool,
    tally: Arc<Mutex<Tally>>,
}

/// One thread's state of one pool.
pub struct ThreadState {
    pool: u64,
    tally: Weak<Mutex<Tally>>,
    /// The owner's generation this state was built for.
    pub generation: u64,
    pub env: LuaEnv,
    /// Functions pools: the registered callbacks by lowercase function name.
    pub callbacks: HashMap<String, Function>,
    /// Nothing has run in `env` since it was built.
    fresh: bool,
    /// Bytes last added to the tally, and the tally generation they belong to.
    reported: (u64, usize),
}

thread_local! {
    /// Boxed: every run takes its state out of the list and puts it back, which
    /// moves a pointer rather than the state (measured: ~1 % of a short script's run).
    #[allow(clippy::vec_box)]
    static STATES: RefCell<Vec<Box<ThreadState>>> = const { RefCell::new(Vec::new()) };
}

impl ThreadState {
    /// Brings the pool's tally up to this state's current heap size.
    fn report(&mut self) {
        let Some(tally) = self.tally.upgrade() else {
            return;
        };
        let now = self.env.memory_used();
        let mut t = tally.lock();
        if self.generation != t.generation {
            return;
        }
        let before = if self.reported.0 == t.generation {
            self.reported.1
        } else {
            0
        };
        t.bytes = (t.bytes + now).saturating_sub(before);
        self.reported = (t.generation, now);
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if let Some(tally) = self.tally.upgrade() {
            let mut t = tally.lock();
            if self.reported.0 == t.generation {
                t.bytes = t.bytes.saturating_sub(self.reported.1);
            }
        }
    }
}

impl StatePool {
    pub fn new(functions_mode: bool) -> StatePool {
        StatePool {
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            functions_mode,
            tally: Arc::default(),
        }
    }

    /// Runs `f` on this thread's state, after rebuilding it from scratch with
    /// `prepare` when it was built for another generation than `generation`
    /// (`prepare` may set the generation it actually built).
    pub fn with_current<T>(
        &self,
        generation: u64,
        prepare: impl FnOnce(&mut ThreadState) -> Result<(), String>,
        f: impl FnOnce(&mut ThreadState) -> T,
    ) -> Result<T, String> {
        let mut st = self.take();
        if st.generation != generation {
            if !st.fresh {
                st.env.flush();
                st.callbacks.clear();
            }
            st.generation = generation;
            st.fresh = false;
            if let Err(e) = prepare(&mut st) {
                st.generation = STALE;
                self.put_back(st);
                return Err(e);
            }
        }
        st.fresh = false;
        let out = f(&mut st);
        self.put_back(st);
        Ok(out)
    }

    /// Runs `f` on this thread's state whatever it holds (loading a library to
    /// check it); the state is rebuilt before its next regular use.
    pub fn with_scratch<T>(&self, f: impl FnOnce(&mut LuaEnv) -> T) -> T {
        let mut st = self.take();
        st.fresh = false;
        let out = f(&mut st.env);
        st.generation = STALE;
        self.put_back(st);
        out
    }

    /// Starts a new generation of the tally (after SCRIPT FLUSH and the like):
    /// states built for older generations no longer count.
    pub fn new_generation(&self, generation: u64) {
        *self.tally.lock() = Tally {
            generation,
            bytes: 0,
        };
    }

    /// Lua heap bytes of the current generation's states (`used_memory_lua`).
    pub fn memory(&self) -> usize {
        self.tally.lock().bytes
    }

    /// This thread's state, out of the thread's list while it is in use (so a
    /// command a script runs may use another pool's state on the same thread).
    fn take(&self) -> Box<ThreadState> {
        let found = STATES.with(|s| {
            let mut states = s.borrow_mut();
            let i = states.iter().position(|t| t.pool == self.id)?;
            Some(states.swap_remove(i))
        });
        found.unwrap_or_else(|| {
            // States of pools whose store is gone are dropped here.
            STATES.with(|s| s.borrow_mut().retain(|t| t.tally.strong_count() > 0));
            Box::new(ThreadState {
                pool: self.id,
                tally: Arc::downgrade(&self.tally),
                generation: STALE,
                env: if self.functions_mode {
                    LuaEnv::for_functions()
                } else {
                    LuaEnv::new()
                },
                callbacks: HashMap::new(),
                fresh: true,
                reported: (STALE, 0),
            })
        })
    }

    fn put_back(&self, mut st: Box<ThreadState>) {
        st.report();
        STATES.with(|s| s.borrow_mut().push(st));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_per_thread_and_rebuilt_per_generation() {
        let pool = Arc::new(StatePool::new(false));
        pool.new_generation(1);
        let compiled = |pool: &StatePool, gen| {
            pool.with_current(gen, |_| Ok(()), |st| st.env.contains("a"))
                .unwrap()
        };
        pool.with_current(1, |_| Ok(()), |st| st.env.compile("a", b"return 1"))
            .unwrap()
            .unwrap();
        assert!(compiled(&pool, 1));
        assert!(pool.memory() > 0);
        // Another thread has a state of its own.
        let other = pool.clone();
        assert!(!std::thread::spawn(move || compiled(&other, 1))
            .join()
            .unwrap());
        // A new generation rebuilds this thread's state.
        pool.new_generation(2);
        assert_eq!(pool.memory(), 0);
        assert!(!compiled(&pool, 2));
        assert!(pool.memory() > 0);
        // A failed prepare leaves the state to be rebuilt again.
        let e = pool.with_current(3, |_| Err("no".to_string()), |_| ());
        assert_eq!(e.unwrap_err(), "no");
        let mut prepared = false;
        pool.with_current(
            3,
            |_| {
                prepared = true;
                Ok(())
            },
            |_| (),
        )
        .unwrap();
        assert!(prepared);
    }
}
