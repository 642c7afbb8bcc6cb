//! Memory accounting and eviction (`maxmemory`, `maxmemory-policy`), after Redis's
//! `evict.c`.
//!
//! Measure: the binary's allocator counts the bytes it hands out
//! (`server_info::ALLOCATED`, exact, read before every command, as Redis reads its
//! `zmalloc` counter). Without it (the store embedded or tested in-process) the
//! measure is an approximate walk of the dataset ([`entry_size`] per key),
//! refreshed at most every 100 ms.
//!
//! Before every command, [`check`] compares the measure with `maxmemory`; if over,
//! it evicts by the policy until the measure is back under it (or, without the
//! allocator's count, until the estimated sizes of the evicted keys cover the
//! excess), sampling `maxmemory-samples` keys per shard visited (keys with a TTL
//! only for `volatile-*`).
//! If nothing can be evicted (noeviction, or no volatile key) a command flagged
//! DENYOOM is refused with `-OOM …` (so is queuing in MULTI, and an EXEC holding a
//! DENYOOM command); reads and deletes always run. An evicted key is logged as DEL,
//! notified as `evicted` and counted in `evicted_keys`.
//!
//! Access data lives in `Entry::access`: the LRU clock (seconds) under LRU and other
//! policies, or under LFU policies Redis's 24-bit layout — minutes (16 bits) of the
//! last decrement and a logarithmic counter (8 bits) incremented with probability
//! `1/((counter-5)*lfu-log-factor+1)` and decayed by one per `lfu-decay-time`
//! minutes. OBJECT FREQ/IDLETIME read it through [`freq`] and [`idle_secs`].

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use crate::client::MultiState;
use crate::command::{flag, Command};
use crate::config::notify;
use crate::error::CmdError;
use crate::exec::Events;
use crate::keyspace::{Locked, NUM_DBS, NUM_SHARDS};
use crate::value::Entry;
use crate::Store;

/// Fixed per-key overhead added to MEMORY USAGE and the approximate accounting
/// (dict entry, key header, value header), close to what Redis reports.
pub const KEY_OVERHEAD: usize = 48;
pub const LFU_INIT_VAL: u32 = 5;
const EVICT_BUDGET: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    NoEviction,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    pub fn parse(s: &str) -> Policy {
        match s {
            "allkeys-lru" => Policy::AllKeysLru,
            "allkeys-lfu" => Policy::AllKeysLfu,
            "allkeys-random" => Policy::AllKeysRandom,
            "volatile-lru" => Policy::VolatileLru,
            "volatile-lfu" => Policy::VolatileLfu,
            "volatile-random" => Policy::VolatileRandom,
            "volatile-ttl" => Policy::VolatileTtl,
            _ => Policy::NoEviction,
        }
    }

    fn volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    pub fn lfu(self) -> bool {
        matches!(self, Policy::AllKeysLfu | Policy::VolatileLfu)
    }

    pub fn lru(self) -> bool {
        matches!(self, Policy::AllKeysLru | Policy::VolatileLru)
    }
}

/// Mirrors of the policy settings read on the access path (set by [`sync_config`]).
static LFU_MODE: AtomicU8 = AtomicU8::new(0);
static LFU_LOG_FACTOR: AtomicU32 = AtomicU32::new(10);
static LFU_DECAY_TIME: AtomicU32 = AtomicU32::new(1);

/// Reads the eviction settings into the access-path mirrors. Returns the policy.
pub fn sync_config(store: &Store) -> Policy {
    let policy = Policy::parse(&store.config.get("maxmemory-policy").unwrap_or_default());
    LFU_MODE.store(policy.lfu() as u8, Ordering::Relaxed);
    LFU_LOG_FACTOR.store(
        store.config.get_u64("lfu-log-factor") as u32,
        Ordering::Relaxed,
    );
    LFU_DECAY_TIME.store(
        store.config.get_u64("lfu-decay-time") as u32,
        Ordering::Relaxed,
    );
    policy
}

/// The LRU/LFU mode above is process-wide, and unit tests of one process run in
/// parallel: those that switch it (any `maxmemory-policy` change) or read access
/// data take turns through this lock.
#[cfg(test)]
pub fn access_mode_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn lfu_mode() -> bool {
    LFU_MODE.load(Ordering::Relaxed) != 0
}

fn lfu_minutes() -> u32 {
    (crate::clock::lru_clock() / 60) & 0xFFFF
}

/// The access data of a new key.
pub fn initial_access() -> u32 {
    if lfu_mode() {
        (lfu_minutes() << 8) | LFU_INIT_VAL
    } else {
        crate::clock::lru_clock()
    }
}

/// The access data RESTORE's `FREQ` / `IDLETIME` ask for (Redis's
/// `objectSetLRUOrLFU`): a frequency counts under an LFU policy, an idle time
/// (seconds) under any other; `None` keeps a new key's default.
pub fn restored_access(freq: Option<u8>, idle_secs: Option<u64>) -> Option<u32> {
    if lfu_mode() {
        freq.map(|f| (lfu_minutes() << 8) | f as u32)
    } else {
        idle_secs.map(|idle| {
            let idle = u32::try_from(idle).unwrap_or(u32::MAX);
            crate::clock::lru_clock().saturating_sub(idle)
        })
    }
}

/// The LFU counter after decay (Redis's `LFUDecrAndReturn`).
fn lfu_decayed(access: u32) -> u32 {
    let last = (access >> 8) & 0xFFFF;
    let counter = access & 0xFF;
    let now = lfu_minutes();
    let elapsed = if now >= last {
        now - last
    } else {
        65535 - last + now
    };
    let period = LFU_DECAY_TIME.load(Ordering::Relaxed);
    let periods = elapsed.checked_div(period).unwrap_or(0);
    counter.saturating_sub(periods)
}

/// Records an access (reads call it through the keyspace's `lookup_read`).
pub fn touch(access: &mut u32) {
    if !lfu_mode() {
        *access = crate::clock::lru_clock();
        return;
    }
    let mut counter = lfu_decayed(*access);
    if counter < 255 {
        let base = counter.saturating_sub(LFU_INIT_VAL) as f64;
        let p = 1.0 / (base * LFU_LOG_FACTOR.load(Ordering::Relaxed) as f64 + 1.0);
        if rand::thread_rng().gen::<f64>() < p {
            counter += 1;
        }
    }
    *access = (lfu_minutes() << 8) | counter;
}

/// OBJECT FREQ: the decayed LFU counter (meaningful under an LFU policy).
pub fn freq(e: &Entry) -> u32 {
    lfu_decayed(e.access)
}

/// OBJECT IDLETIME: seconds since the last access (meaningful under non-LFU policies).
pub fn idle_secs(e: &Entry) -> u64 {
    crate::clock::lru_clock().saturating_sub(e.access) as u64
}

/// Approximate bytes one key and its value hold.
pub fn entry_size(key: &[u8], e: &Entry) -> usize {
    KEY_OVERHEAD + key.len() + e.value.mem_usage()
}

/// (used, rss): the allocator's figures, or the approximate dataset size.
pub fn memory(store: &Store) -> (u64, u64) {
    match crate::families::server_info::MEMORY_PROBE.get() {
        Some(f) => f(),
        None => {
            let (_, bytes) = dataset(store);
            (bytes, bytes)
        }
    }
}

/// [`memory`] for a command that holds every shard (INFO, MEMORY): measured over
/// its lock, not a second one, which would wait for the first.
pub fn memory_in(ks: &mut Locked) -> (u64, u64) {
    match crate::families::server_info::MEMORY_PROBE.get() {
        Some(f) => f(),
        None => {
            let (_, bytes) = dataset_in(ks);
            (bytes, bytes)
        }
    }
}

/// (keys, approximate dataset bytes) over all databases.
pub fn dataset(store: &Store) -> (u64, u64) {
    dataset_in(&mut store.keyspace.lock_all_readonly())
}

/// [`dataset`] over an all-shards lock the caller holds (see [`memory_in`]).
pub fn dataset_in(ks: &mut Locked) -> (u64, u64) {
    let (mut keys, mut bytes) = (0u64, 0u64);
    for db in 0..NUM_DBS {
        for part in ks.db_parts(db) {
            keys += part.map.len() as u64;
            bytes += part
                .map
                .iter()
                .map(|(k, e)| entry_size(k, e) as u64)
                .sum::<u64>();
        }
    }
    (keys, bytes)
}

/// Used memory for the limit check: the allocator's exact count where the binary
/// installed it, else [`memory`]'s figure cached for 100 ms (a dataset walk is not
/// free).
pub fn used_memory(store: &Store) -> u64 {
    if let Some(allocated) = crate::families::server_info::ALLOCATED.get() {
        return allocated();
    }
    let max_age_us = 100_000;
    let now = crate::clock::now_us();
    let p = &store.persist;
    let at = p.mem_cache_at_us.load(Ordering::Relaxed);
    if at != 0 && now.saturating_sub(at) < max_age_us {
        return p.mem_cache_used.load(Ordering::Relaxed);
    }
    let used = memory(store).0;
    p.mem_cache_used.store(used, Ordering::Relaxed);
    p.mem_cache_at_us.store(now, Ordering::Relaxed);
    used
}

fn invalidate_cache(store: &Store) {
    store.persist.mem_cache_at_us.store(0, Ordering::Relaxed);
}

/// The `-OOM` refusal of a command that would grow memory.
pub fn oom() -> CmdError {
    CmdError::raw("OOM command not allowed when used memory > 'maxmemory'.")
}

/// Whether a command must be refused with `-OOM` when memory cannot be brought under
/// `maxmemory`: one flagged DENYOOM, an EXEC whose transaction queued one, and
/// anything being queued in a transaction (queuing itself takes memory) but the
/// commands that end it.
pub fn refused_when_full(cmd: &Command, multi: Option<&MultiState>) -> bool {
    if cmd.has(flag::DENYOOM) {
        return true;
    }
    let Some(multi) = multi else {
        return false;
    };
    match cmd.spec.name {
        "exec" => multi.queue.iter().any(|(c, _)| c.has(flag::DENYOOM)),
        "discard" | "quit" | "reset" => false,
        _ => true,
    }
}

/// Whether memory is over `maxmemory` now, without evicting: what a script asks
/// (Redis's `pre_command_oom_state`). The dispatcher already evicted before the
/// script's command ran; a script holds every shard, so evicting from inside it
/// would wait for its own locks.
pub fn over_limit(store: &Store) -> bool {
    let max = store.config.maxmemory.load(Ordering::Relaxed);
    if max == 0 {
        return false;
    }
    // Without the allocator's count, the last measure: a fresh one walks the
    // dataset under locks the script holds.
    let used = match crate::families::server_info::ALLOCATED.get() {
        Some(allocated) => allocated(),
        None => store.persist.mem_cache_used.load(Ordering::Relaxed),
    };
    used > max
}

/// Called by the dispatcher before every command (no locks held), as Redis's
/// `processCommand` does: if over `maxmemory`, evicts by the policy, so memory
/// grown by anything (client buffers, a read's reply) is reclaimed before the
/// next command runs. If it cannot get under the limit, a command that
/// [`refused_when_full`] gets `-OOM …`; everything else runs.
pub fn check(store: &Store, refuse_when_full: bool) -> Result<(), CmdError> {
    let max = store.config.maxmemory.load(Ordering::Relaxed);
    if max == 0 {
        return Ok(());
    }
    let used = used_memory(store);
    if used <= max {
        return Ok(());
    }
    let policy = sync_config(store);
    let ok = evict(store, policy, max, used);
    if !ok && refuse_when_full {
        return Err(oom());
    }
    Ok(())
}

/// Evicts keys until memory is back under `max` (`used` is the measure that found
/// it over). With the allocator's exact count that is measured after each key, as
/// Redis does; otherwise the estimated sizes of the evicted keys must cover the
/// excess. False if it could not get there.
pub fn evict(store: &Store, policy: Policy, max: u64, used: u64) -> bool {
    if policy == Policy::NoEviction {
        return false;
    }
    let exact = crate::families::server_info::ALLOCATED.get();
    let to_free = used.saturating_sub(max);
    let samples = store.config.get_u64("maxmemory-samples").clamp(1, 64) as usize;
    let start = Instant::now();
    let mut freed = 0u64;
    let mut rng = rand::thread_rng();
    let done = |freed: u64| match exact {
        Some(allocated) => allocated() <= max,
        None => freed >= to_free,
    };
    while !done(freed) {
        let Some((shard, db, key)) = pick(store, policy, samples, &mut rng) else {
            invalidate_cache(store);
            return false;
        };
        let mut ks = store.keyspace.lock(vec![shard]);
        let mut ev = Events::default();
        if let Some(e) = ks.remove(db, &key) {
            freed += entry_size(&key, &e) as u64;
            store.stats.evicted_keys.fetch_add(1, Ordering::Relaxed);
            let flags = store.config.notify_flags();
            if flags & notify::EVICTED != 0 && flags & (notify::KEYSPACE | notify::KEYEVENT) != 0 {
                ev.notifications
                    .push((notify::EVICTED, "evicted", db, key.clone()));
            }
            ev.touched.push((db, key.clone()));
            if store.logging() {
                ev.propagated
                    .push((db, vec![Bytes::from_static(b"DEL"), key]));
            }
            drop(e);
        }
        store.finish_locked(&mut ks, &mut ev);
        drop(ks);
        store.after_unlock(&mut ev);
        if start.elapsed() > EVICT_BUDGET {
            break;
        }
    }
    invalidate_cache(store);
    done(freed)
}

/// The best candidate among `samples` keys from each of a few random shards.
fn pick(
    store: &Store,
    policy: Policy,
    samples: usize,
    rng: &mut impl Rng,
) -> Option<(usize, usize, Bytes)> {
    let mut best: Option<(u64, usize, usize, Bytes)> = None;
    let mut visited = 0;
    let first = rng.gen_range(0..NUM_SHARDS);
    let now_ms = crate::clock::now_ms();
    for step in 0..NUM_SHARDS {
        // Two non-empty shards give 2 × samples candidates per database.
        if visited >= 2 {
            break;
        }
        let shard = (first + step * 37) % NUM_SHARDS;
        let mut ks = store.keyspace.lock_readonly(vec![shard]);
        let s = ks.shard_mut(shard);
        let mut any = false;
        for db in 0..NUM_DBS {
            let part = &s.dbs[db];
            let n = if policy.volatile() {
                part.expires.len()
            } else {
                part.map.len()
            };
            if n == 0 {
                continue;
            }
            any = true;
            for _ in 0..samples.min(n) {
                let i = rng.gen_range(0..n);
                let (key, entry) = if policy.volatile() {
                    let Some((k, _)) = part.expires.get_index(i) else {
                        continue;
                    };
                    let Some(e) = part.map.get(k) else {
                        continue;
                    };
                    (k, e)
                } else {
                    let Some((k, e)) = part.map.get_index(i) else {
                        continue;
                    };
                    (k, e)
                };
                let score = match policy {
                    Policy::AllKeysLru | Policy::VolatileLru => idle_secs(entry),
                    Policy::AllKeysLfu | Policy::VolatileLfu => 255 - freq(entry).min(255) as u64,
                    Policy::VolatileTtl => u64::MAX - entry.expire_at,
                    _ => rng.gen(),
                };
                // An already expired key is the best victim of all.
                let score = if entry.is_expired(now_ms) {
                    u64::MAX
                } else {
                    score
                };
                if best.as_ref().is_none_or(|b| score > b.0) {
                    best = Some((score, shard, db, key.to_bytes()));
                }
            }
        }
        if any {
            visited += 1;
        }
    }
    best.map(|(_, s, d, k)| (s, d, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays() {
        let _turn = access_mode_turn();
        LFU_MODE.store(1, Ordering::Relaxed);
        let mut a = initial_access();
        assert_eq!(a & 0xFF, LFU_INIT_VAL);
        for _ in 0..1000 {
            touch(&mut a);
        }
        let c = a & 0xFF;
        assert!(c > LFU_INIT_VAL && c < 60, "counter {c}");
        // Ten minutes ago, decay 1 per minute.
        let old = (((lfu_minutes() + 65536 - 10) & 0xFFFF) << 8) | 20;
        assert_eq!(lfu_decayed(old), 10);
        LFU_MODE.store(0, Ordering::Relaxed);
    }

    #[test]
    fn noeviction_refuses_denyoom_but_serves_reads_and_deletes() {
        let _turn = access_mode_turn();
        let mut t = TestClient::new();
        t.run(&["SET", "a", "x"]);
        t.store.config.set("maxmemory", "1").unwrap();
        invalidate_cache(&t.store);
        assert_eq!(
            t.run(&["SET", "b", "y"]),
            err("OOM command not allowed when used memory > 'maxmemory'.")
        );
        assert_eq!(t.run(&["GET", "a"]), bulk("x"));
        assert_eq!(t.run(&["DEL", "a"]), int(1));
        t.store.config.set("maxmemory", "0").unwrap();
    }

    /// Twenty keys under `allkeys-random`, no limit yet.
    fn twenty_keys_evicting_randomly() -> TestClient {
        let mut t = TestClient::new();
        for i in 0..20 {
            t.run(&["SET", &format!("k{i}"), "x"]);
        }
        t.run(&["CONFIG", "SET", "maxmemory-policy", "allkeys-random"]);
        t
    }

    /// Over the limit, a read evicts too (as Redis's processCommand does), so memory
    /// grown outside writes (client buffers, replies) is reclaimed.
    #[test]
    fn a_read_over_the_limit_evicts() {
        let _turn = access_mode_turn();
        let mut t = twenty_keys_evicting_randomly();
        t.store.config.set("maxmemory", "1").unwrap();
        invalidate_cache(&t.store);
        assert_eq!(t.run(&["GET", "nokey"]), Reply::Null);
        assert_eq!(t.run(&["DBSIZE"]), int(0));
        assert_eq!(t.store.stats.evicted_keys.load(Ordering::Relaxed), 20);
        t.store.config.set("maxmemory", "0").unwrap();
    }

    /// Lowering the limit evicts at once, before any other command arrives.
    #[test]
    fn config_set_maxmemory_evicts_at_once() {
        let _turn = access_mode_turn();
        let mut t = twenty_keys_evicting_randomly();
        invalidate_cache(&t.store);
        assert_eq!(t.run(&["CONFIG", "SET", "maxmemory", "1"]), ok());
        assert_eq!(t.store.stats.evicted_keys.load(Ordering::Relaxed), 20);
        t.store.config.set("maxmemory", "0").unwrap();
    }

    /// With nothing to evict, queuing in MULTI is refused (it takes memory), the
    /// transaction is then aborted; DISCARD still works; an EXEC holding a write
    /// queued before the limit was hit is refused and ends the transaction.
    #[test]
    fn transactions_over_the_limit() {
        let _turn = access_mode_turn();
        let oom = "OOM command not allowed when used memory > 'maxmemory'.";
        let mut t = TestClient::new();
        t.run(&["SET", "a", "x"]);
        let over = |t: &TestClient, on: bool| {
            let max = if on { "1" } else { "0" };
            t.store.config.set("maxmemory", max).unwrap();
            invalidate_cache(&t.store);
        };
        over(&t, true);
        assert_eq!(t.run(&["MULTI"]), ok());
        assert_eq!(t.run(&["GET", "a"]), err(oom));
        assert_eq!(
            t.run(&["EXEC"]),
            err("EXECABORT Transaction discarded because of previous errors.")
        );
        assert_eq!(t.run(&["MULTI"]), ok());
        assert_eq!(t.run(&["DISCARD"]), ok());

        over(&t, false);
        assert_eq!(t.run(&["MULTI"]), ok());
        assert_eq!(t.run(&["SET", "b", "y"]), Reply::Status("QUEUED"));
        over(&t, true);
        assert_eq!(
            t.run(&["EXEC"]),
            err(&format!(
                "EXECABORT Transaction discarded because of: {oom}"
            ))
        );
        assert_eq!(t.run(&["EXEC"]), err("ERR EXEC without MULTI"));
        assert_eq!(t.run(&["EXISTS", "b"]), int(0));

        // A read-only transaction still runs when full.
        over(&t, false);
        assert_eq!(t.run(&["MULTI"]), ok());
        assert_eq!(t.run(&["GET", "a"]), Reply::Status("QUEUED"));
        over(&t, true);
        assert_eq!(t.run(&["EXEC"]), Reply::Array(vec![bulk("x")]));
        over(&t, false);
    }
}
