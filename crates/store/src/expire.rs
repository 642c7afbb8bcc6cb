//! The active expiry cycle. Lazy expiry alone would keep keys nobody reads forever;
//! like Redis, each tick (10 Hz) deletes expired keys nobody asked for, within a
//! time budget so that the cycle never stalls command execution for long.
//!
//! The keyspace is split into shards, each with a part per database. A part
//! remembers when its next key could be due at the earliest (`next_due`: every TTL
//! set lowers it), so a tick looks only at the parts with something due, and a key
//! goes within a tick of its TTL. A part with few keys with a TTL is looked at
//! whole, which tells exactly when its next key is due; a large one is sampled as
//! Redis samples a database (20 keys, again while more than a quarter of a sample
//! was expired) and looked at again a sweep later (0.8 s), or sooner if a nearer
//! TTL is set. Hashes with field TTLs are sampled in a round over the shards, an
//! eighth of them per tick. Keys that clients wait on are looked at every tick.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::exec::Events;
use crate::keyspace::{shard_index, NUM_DBS, NUM_SHARDS};
use crate::Store;

const SAMPLE: usize = 20;
/// A part with at most this many keys with a TTL is looked at whole.
const WHOLE: usize = 64;
/// Ticks for one round of the hash-field sampling over every shard, and how long a
/// sampled part waits for its next look (in ticks of 100 ms).
pub const SWEEP_TICKS: usize = 8;
const SWEEP_MS: u64 = SWEEP_TICKS as u64 * 100;
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
    // From where the round of field sampling is, so that a tick cut short by its
    // budget does not always leave the same shards for the next.
    for (turn, shard) in (first..first + NUM_SHARDS)
        .map(|s| s % NUM_SHARDS)
        .enumerate()
    {
        let fields_turn = turn < SHARDS_PER_TICK;
        let mut ks = store.keyspace.lock_shard(shard);
        let now = crate::clock::now_ms();
        let mut looked = false;
        for db in 0..NUM_DBS {
            let part = &mut ks.shard_mut(shard).dbs[db];
            if part.next_due <= now {
                if part.expires.is_empty() {
                    part.next_due = u64::MAX;
                } else {
                    expired_total += expire_part(&mut ks, shard, db, now, &mut rng, start);
                    looked = true;
                }
            }
            if fields_turn && !ks.shard_mut(shard).dbs[db].hash_ttl_keys.is_empty() {
                expire_hash_fields(&mut ks, shard, db, now, &mut rng);
                looked = true;
            }
        }
        if looked {
            let mut ev = Events::default();
            store.finish_locked(&mut ks, &mut ev);
            drop(ks);
            store.after_unlock(&mut ev);
        }
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

/// Deletes the due keys of one database part and sets when to look at it next.
/// Returns how many went.
fn expire_part(
    ks: &mut crate::keyspace::Locked,
    shard: usize,
    db: usize,
    now: u64,
    rng: &mut impl Rng,
    start: Instant,
) -> u64 {
    let mut expired = 0;
    loop {
        let part = &mut ks.shard_mut(shard).dbs[db];
        let n = part.expires.len();
        let mut due = Vec::new();
        if n <= WHOLE {
            // Few (from the start, or once sampling got it there): each is looked
            // at, and the next one due is known exactly.
            let mut next = u64::MAX;
            for (key, _) in part.expires.iter() {
                match part.map.get(key) {
                    Some(e) if e.is_expired(now) => due.push(key.clone()),
                    Some(e) => next = next.min(e.expire_at),
                    None => {}
                }
            }
            part.next_due = next;
            expired += due.len() as u64;
            for key in due {
                ks.expire_now(db, &key);
            }
            return expired;
        }
        // Many: sampled, as Redis samples a database, again while more than a
        // quarter of a sample was due; looked at again a sweep later, or on the
        // next tick when the budget cut such a run short.
        part.next_due = now + SWEEP_MS;
        for _ in 0..SAMPLE {
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
        expired += found as u64;
        if found * 4 <= SAMPLE {
            return expired;
        }
        if start.elapsed() > TICK_BUDGET {
            ks.shard_mut(shard).dbs[db].next_due = now;
            return expired;
        }
    }
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
    use tidewire_resp::Reply;

    use super::*;
    use crate::testkit::TestClient;

    /// A key with a TTL goes on the first tick after it, whatever shard it is in;
    /// the part then knows when its next key is due, and is not looked at before.
    #[test]
    fn keys_go_on_the_first_tick_after_their_ttl() {
        let mut t = TestClient::new();
        for i in 0..200 {
            t.run(&["SET", &format!("k{i}"), "1", "PX", "1"]);
        }
        t.run(&["SET", "later", "1", "PX", "60000"]);
        let at = match t.run(&["PEXPIRETIME", "later"]) {
            Reply::Int(at) => at as u64,
            other => panic!("{other:?}"),
        };
        // (TTLs are set from the commands' clock, which may run a few ms ahead
        // of the wall clock the cycle reads.)
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(active_expire_cycle(&t.store), 200);
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(1));
        let shard = shard_index(b"later");
        let next_due = t.store.keyspace.lock_shard(shard).shard_mut(shard).dbs[0].next_due;
        assert_eq!(next_due, at);
        // A nearer TTL set meanwhile brings the look forward.
        t.run(&["PEXPIRE", "later", "1"]);
        // (TTLs are set from the commands' clock, which may run a few ms ahead
        // of the wall clock the cycle reads.)
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(active_expire_cycle(&t.store), 1);
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(0));
        // Also in another database, and for a TTL given to an existing key.
        t.run(&["SELECT", "3"]);
        t.run(&["SET", "x", "1"]);
        t.run(&["PEXPIRE", "x", "1"]);
        // (TTLs are set from the commands' clock, which may run a few ms ahead
        // of the wall clock the cycle reads.)
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(active_expire_cycle(&t.store), 1);
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(0));
    }

    /// Parts with many keys with a TTL are sampled, again while samples keep
    /// finding expired keys, until none is left.
    #[test]
    fn large_parts_are_sampled_until_their_expired_keys_are_gone() {
        let mut t = TestClient::new();
        let n = WHOLE * NUM_SHARDS * 2;
        for i in 0..n {
            t.run(&["SET", &format!("k{i}"), "1", "PX", "1"]);
        }
        // (TTLs are set from the commands' clock, which may run a few ms ahead
        // of the wall clock the cycle reads.)
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut gone = 0;
        for _ in 0..100 {
            gone += active_expire_cycle(&t.store);
            if gone == n as u64 {
                break;
            }
        }
        assert_eq!(t.run(&["DBSIZE"]), Reply::Int(0));
        assert_eq!(gone, n as u64);
    }
}
