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
//! with many expired keys is still drained while the tick's budget lasts. Keys
//! that clients wait on are looked at every tick.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::exec::Events;
use crate::keyspace::{shard_index, NUM_DBS, NUM_SHARDS};
use crate::Store;

const SAMPLE: usize = 20;
/// Ticks for one sweep over every shard.
pub const SWEEP_TICKS: usize = 8;
const SHARDS_PER_TICK: usize = NUM_SHARDS / SWEEP_TICKS;
/// CPU budget per tick (Redis: 25% of a 100 ms tick).
const TICK_BUDGET: Duration = Duration::from_millis(25);

/// One tick of the cycle. Returns the number of keys expired. A tick that takes
/// `latency-monitor-threshold` or more is an `expire-cycle` latency event.
pub fn active_expire_cycle(store: &Store) -> u64 {
    let start = std::time::Instant::now();
    let expired = expire_tick(store);
    store.note_latency("expire-cycle", start.elapsed().as_millis() as u64);
    expired
}

fn expire_tick(store: &Store) -> u64 {
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
    expire_waited_keys(store);
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

/// Looks at the keys clients wait on every tick, not once a sweep: a lock whose
/// holder died goes to its waiter (`TW.LOCK.ACQUIRE … WAIT`) when its key expires,
/// and that must not wait for the key's shard to come round.
fn expire_waited_keys(store: &Store) {
    if !store.blocking.has_waiters() {
        return;
    }
    for db in 0..NUM_DBS {
        for (_, key) in store.blocking.waited_keys(db) {
            let mut ks = store.keyspace.lock_shard(shard_index(&key));
            // A lookup expires the key if it is due (and logs and announces it).
            ks.exists(db, &key, crate::clock::now_ms());
            let mut ev = Events::default();
            store.finish_locked(&mut ks, &mut ev);
            drop(ks);
            store.after_unlock(&mut ev);
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;
    use tidewire_resp::Reply;

    use super::*;
    use crate::testkit::TestClient;

    /// A tick visits an eighth of the shards, but a key some client waits on (a
    /// lock's waiter) is expired on the next tick wherever it lives.
    #[test]
    fn waited_keys_expire_on_the_next_tick_whatever_the_sweep_visits() {
        let mut t = TestClient::new();
        let window = |first: usize, key: &[u8]| {
            (shard_index(key) + NUM_SHARDS - first) % NUM_SHARDS < SHARDS_PER_TICK
        };
        // A tick that visits neither key's shard.
        let first = (shard_index(b"locked") + SHARDS_PER_TICK) % NUM_SHARDS;
        let plain = (0..)
            .map(|i| format!("plain{i}"))
            .find(|k| !window(first, k.as_bytes()) && !window(shard_index(b"locked"), k.as_bytes()))
            .unwrap();
        t.run(&["SET", &plain, "1", "PX", "1"]);
        t.run(&["SET", "locked", "1", "PX", "1"]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let keys = [(0, Bytes::from_static(b"locked"))];

        // Unwaited, both keys wait for their shards' turn (DBSIZE counts expired
        // keys not reaped yet, as Redis's does).
        t.store.expire_cursor.store(first, Ordering::Relaxed);
        active_expire_cycle(&t.store);
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(2));

        // Waited on, the key goes on the next tick.
        let waiter = t.store.blocking.register(999, &keys, None);
        t.store.expire_cursor.store(first, Ordering::Relaxed);
        active_expire_cycle(&t.store);
        t.store.blocking.unregister(&waiter, &keys);
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(1));

        t.store
            .expire_cursor
            .store(shard_index(plain.as_bytes()), Ordering::Relaxed);
        active_expire_cycle(&t.store);
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(0));
    }
}
