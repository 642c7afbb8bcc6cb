//! The EVAL script cache: script bodies by SHA-1, compiled into the running
//! thread's Lua state (see `per_thread`) when it first runs them.
//!
//! A script holds every shard of the keyspace while it runs (see
//! `families::scripting`), so scripts never run at the same time; a state is never
//! entered twice from one thread because a script cannot call EVAL or SCRIPT (both
//! are `noscript`). SCRIPT EXISTS and EVALSHA's lookup read the bodies and never
//! wait for a running script.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::per_thread::StatePool;
use super::{parse_shebang, sha1_hex, LuaEnv, ScriptFlags};

/// A script as loaded: its text and the flags of its shebang line.
#[derive(Debug)]
pub struct Script {
    pub body: Bytes,
    pub flags: ScriptFlags,
}

/// The script running now, seen from other threads: SCRIPT KILL, and the BUSY
/// reply once it has run past `busy-reply-threshold`. (Only a multi-threaded
/// server has another thread free to see it: with one worker, the script has it.)
#[derive(Default)]
pub struct RunState {
    /// Unix ms when the running script started; 0 when none runs.
    since_ms: AtomicU64,
    /// SCRIPT KILL asked the running script to stop.
    pub kill: AtomicBool,
    /// The running script has written: it can no longer be killed.
    pub wrote: AtomicBool,
    /// Set by a server with a single worker thread: nothing else can serve
    /// SCRIPT KILL while a script runs, so a script past the busy threshold that
    /// has not written is stopped as if killed.
    pub no_killer: AtomicBool,
    /// The running script is a function (FCALL), not an EVAL script: it is
    /// stopped with FUNCTION KILL, not SCRIPT KILL.
    function: AtomicBool,
    /// The running function's name and the command that called it (FUNCTION STATS).
    current: Mutex<Option<(String, Vec<Bytes>)>>,
}

/// The BUSY replies of Redis (`slowevalerr`, `slowscripterr`).
pub const BUSY_EVAL: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
pub const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

impl RunState {
    pub fn begin(&self) {
        self.kill.store(false, Ordering::SeqCst);
        self.wrote.store(false, Ordering::SeqCst);
        self.function.store(false, Ordering::SeqCst);
        self.since_ms
            .store(crate::clock::now_ms().max(1), Ordering::SeqCst);
    }

    /// A function starts: `argv` is the FCALL that called it.
    pub fn begin_function(&self, name: &str, argv: &[Bytes]) {
        *self.current.lock() = Some((name.to_string(), argv.to_vec()));
        self.begin();
        self.function.store(true, Ordering::SeqCst);
    }

    pub fn end(&self) {
        self.since_ms.store(0, Ordering::SeqCst);
        self.kill.store(false, Ordering::SeqCst);
        self.function.store(false, Ordering::SeqCst);
        *self.current.lock() = None;
    }

    /// Whether the script running now is a function.
    pub fn is_function(&self) -> bool {
        self.function.load(Ordering::SeqCst)
    }

    /// The running function's name and calling command, if a function runs.
    pub fn current_function(&self) -> Option<(String, Vec<Bytes>)> {
        self.current.lock().clone()
    }

    /// What other clients are told while this script is past the busy threshold.
    pub fn busy_error(&self) -> &'static str {
        if self.is_function() {
            BUSY_FUNCTION
        } else {
            BUSY_EVAL
        }
    }

    pub fn is_running(&self) -> bool {
        self.since_ms.load(Ordering::Relaxed) != 0
    }

    /// How long the running script has run, in ms (0 when none runs).
    pub fn elapsed_ms(&self) -> u64 {
        let since = self.since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 0;
        }
        crate::clock::now_ms().saturating_sub(since)
    }

    /// Whether a script has been running for more than `threshold_ms`.
    pub fn busy(&self, threshold_ms: u64) -> bool {
        let since = self.since_ms.load(Ordering::Relaxed);
        since != 0 && crate::clock::now_ms().saturating_sub(since) > threshold_ms
    }
}

pub struct ScriptCache {
    pub running: RunState,
    /// By SHA-1 (looked up on every EVALSHA: ahash, not SipHash; the keys are
    /// SHA-1s of what clients send, which no one can choose to collide).
    scripts: RwLock<HashMap<String, Arc<Script>, ahash::RandomState>>,
    states: StatePool,
    /// Bumped by SCRIPT FLUSH: every thread's state is then rebuilt empty.
    generation: AtomicU64,
    /// Bytes of script text held (`used_memory_scripts_eval`).
    body_bytes: AtomicU64,
}

impl Default for ScriptCache {
    fn default() -> Self {
        ScriptCache {
            running: RunState::default(),
            scripts: RwLock::default(),
            states: StatePool::new(false),
            generation: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
        }
    }
}

impl ScriptCache {
    /// Checks the shebang, compiles the body (so a syntax error is reported now, as
    /// Redis does) and keeps it. Returns its SHA-1.
    pub fn load(&self, body: &Bytes) -> Result<(String, Arc<Script>), String> {
        let sha = sha1_hex(body);
        if let Some(s) = self.get(&sha) {
            return Ok((sha, s));
        }
        let flags = parse_shebang(body)?;
        self.with_state(|env| env.compile(&sha, body))??;
        let script = Arc::new(Script {
            body: body.clone(),
            flags,
        });
        let mut scripts = self.scripts.write();
        if scripts.insert(sha.clone(), script.clone()).is_none() {
            self.body_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        Ok((sha, script))
    }

    /// The script with this SHA-1 (any case, as Redis compares them).
    pub fn get(&self, sha: &str) -> Option<Arc<Script>> {
        let scripts = self.scripts.read();
        match scripts.get(sha) {
            Some(s) => Some(s.clone()),
            None if sha.bytes().any(|b| b.is_ascii_uppercase()) => {
                scripts.get(&sha.to_ascii_lowercase()).cloned()
            }
            None => None,
        }
    }

    pub fn contains(&self, sha: &str) -> bool {
        self.get(sha).is_some()
    }

    /// Forgets every script; every thread's Lua state starts afresh when it next
    /// runs a script.
    pub fn flush(&self) {
        let mut scripts = self.scripts.write();
        scripts.clear();
        self.body_bytes.store(0, Ordering::Relaxed);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.states.new_generation(generation);
    }

    pub fn len(&self) -> usize {
        self.scripts.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::Relaxed)
    }

    /// Memory of the threads' Lua states (`used_memory_lua`).
    pub fn lua_memory(&self) -> usize {
        self.states.memory()
    }

    /// Runs `f` on this thread's Lua state.
    fn with_state<T>(&self, f: impl FnOnce(&mut LuaEnv) -> T) -> Result<T, String> {
        let generation = self.generation.load(Ordering::Relaxed);
        self.states
            .with_current(generation, |_| Ok(()), |st| f(&mut st.env))
    }

    /// Runs `f` on this thread's Lua state, with `sha` compiled in it.
    pub fn with_script<T>(
        &self,
        sha: &str,
        script: &Script,
        f: impl FnOnce(&mut LuaEnv) -> T,
    ) -> Result<T, String> {
        self.with_state(|env| {
            if !env.contains(sha) {
                env.compile(sha, &script.body)?;
            }
            Ok(f(env))
        })?
    }
}
