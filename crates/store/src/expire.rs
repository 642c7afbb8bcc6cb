//! The active expiry cycle. Lazy expiry alone would keep keys nobody reads forever;
//! like Redis, each tick samples keys with a TTL in every database, deletes the
//! expired ones, and repeats while more than a quarter of a sample was expired,
//! within a time budget so that the cycle never stalls command execution for long.
//!
//! Redis samples 20 keys per database and tick; the keyspace here is split into
//! shards, and sampling 20 in each of them every tick cost ~2 % of the CPU of a
//! busy server whose keys all have TTLs (and took every shard's lock ten times a
//! second). So each tick visits the next `1 / SWEEP_TICKS` of the shards: every
//! shard is looked at every `SWEEP_TICKS` ticks (0.8 s at 10 Hz), and a shard found
//! with many expired keys is still drained while the tick's budget lasts.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::exec::Events;
use crate::keyspace::{NUM_DBS, NUM_SHARDS};
use crate::Store;

const SAMPLE: usize = 20;
/// Ticks for one sweep over every shard.
pub const SWEEP_TICKS: usize = 8;
const SHARDS_PER_TICK: usize = NUM_SHARDS / SWEEP_TICKS;
/// CPU budget per tick (Redis: 25% of a 100 ms tick).
const TICK_BUDGET: Duration = Duration::from_millis(25);

/// One tick of the cycle. Returns the number of keys expired.
pub fn active_expire_cycle(store: &Store) -> u64 {
    // The same periodic task keeps the tracking table within its limit.
    if store.tracking.any() {
        let max = store
            .config
            .encoding
            .get_usize(crate::config::Limit::TrackingTableMaxKeys);
        let lookup = |id| store.client_by_id(id);
        store.tracking.enforce_limit(max, &lookup);
    }
    // Fills whose lease ended without a value: a waiter takes each over.
    let now = crate::clock::now_ms();
    let ended = store
        .fill_leases
        .take_expired(now, |db, key| store.blocking.is_waited(db, key));
    if !ended.is_empty() {
        let mut ev = Events {
            ready: ended,
            ..Events::default()
        };
        store.after_unlock(&mut ev);
    }
    if !store
        .active_expire
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return 0;
    }
    let start = Instant::now();
    let mut expired_total = 0;
    let mut rng = rand::thread_rng();
    let first = store
        .expire_cursor
        .fetch_add(SHARDS_PER_TICK, std::sync::atomic::Ordering::Relaxed);
    for shard in (first..first + SHARDS_PER_TICK).map(|s| s % NUM_SHARDS) {
        let mut ks = store.keyspace.lock_shard(shard);
        let now = crate::clock::now_ms();
        for db in 0..NUM_DBS {
            loop {
                let part = &mut ks.shard_mut(shard).dbs[db];
                let n = part.expires.len();
                if n == 0 {
                    break;
                }
                let mut due = Vec::new();
                for _ in 0..SAMPLE.min(n) {
                    let i = rng.gen_range(0..n);
                    if let Some((key, _)) = part.expires.get_index(i) {
                        if part.map.get(key).is_some_and(|e| e.is_expired(now)) {
                            due.push(key.clone());
                        }
                    }
                }
                due.sort_unstable();
                due.dedup();
                let found = due.len();
                for key in due {
                    ks.expire_now(db, &key);
                }
                expired_total += found as u64;
                if found * 4 <= SAMPLE.min(n) || start.elapsed() > TICK_BUDGET {
                    break;
                }
            }
            expire_hash_fields(&mut ks, shard, db, now, &mut rng);
        }
        let mut ev = Events::default();
        store.finish_locked(&mut ks, &mut ev);
        drop(ks);
        store.after_unlock(&mut ev);
        if start.elapsed() > TICK_BUDGET {
            break;
        }
    }
    store
        .stats
        .expired_keys_active
        .fetch_add(expired_total, std::sync::atomic::Ordering::Relaxed);
    expired_total
}

/// One sample of the hashes with field TTLs in one database part: due fields go
/// (as a lookup would delete them), and keys that no longer hold such a hash
/// leave the sample set.
fn expire_hash_fields(
    ks: &mut crate::keyspace::Locked,
    shard: usize,
    db: usize,
    now: u64,
    rng: &mut impl Rng,
) {
    let part = &mut ks.shard_mut(shard).dbs[db];
    let n = part.hash_ttl_keys.len();
    if n == 0 {
        return;
    }
    let mut due = Vec::new();
    let mut stale = Vec::new();
    for _ in 0..SAMPLE.min(n) {
        let i = rng.gen_range(0..n);
        let Some((key, _)) = part.hash_ttl_keys.get_index(i) else {
            continue;
        };
        match part.map.get(key).map(|e| &e.value) {
            Some(crate::value::Value::Hash(h)) if h.has_field_ttls() => {
                if h.fields_due(now) {
                    due.push(key.to_bytes());
                }
            }
            _ => stale.push(key.to_bytes()),
        }
    }
    for key in stale {
        part.hash_ttl_keys.swap_remove(&key[..]);
    }
    due.sort_unstable();
    due.dedup();
    for key in due {
        ks.expire_fields(db, &key, now);
    }
}
