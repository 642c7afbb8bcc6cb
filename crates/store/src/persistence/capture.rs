//! A point-in-time copy of the keyspace without stopping the world.
//!
//! `begin` holds every shard lock only long enough to install a [`Capture`] (and,
//! for an AOF rewrite, to mark the log position), so the cut is one instant for all
//! shards. From then on each shard is copied exactly once, under its own lock,
//! *before* anything else touches it: the keyspace calls [`Capture::on_locked`]
//! whenever a shard is locked while a capture is active (copy-on-first-lock), and
//! the background writer locks the shards not yet copied one at a time. So the copy
//! is the state at the cut, and no command waits longer than one shard's copy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::small_bytes::SmallBytes;
use parking_lot::Mutex;

use crate::keyspace::{Keyspace, Shard, NUM_SHARDS};
use crate::value::Entry;

/// One shard's keys at the cut, per database.
pub type ShardCopy = Vec<Vec<(SmallBytes, Entry)>>;

pub struct Capture {
    pending: Vec<AtomicBool>,
    slots: Vec<Mutex<Option<ShardCopy>>>,
    /// Unix ms of the cut: keys already expired then are left out (by the writer).
    pub cut_ms: u64,
    /// Longest time one shard lock was held for copying (µs).
    pub max_copy_us: AtomicU64,
    /// The code of every function library at the cut (FUNCTION LOAD holds every
    /// shard, so it happens wholly before or after the cut).
    pub functions: Vec<bytes::Bytes>,
}

impl Capture {
    fn new(cut_ms: u64, functions: Vec<bytes::Bytes>) -> Capture {
        Capture {
            functions,
            pending: (0..NUM_SHARDS).map(|_| AtomicBool::new(true)).collect(),
            slots: (0..NUM_SHARDS).map(|_| Mutex::new(None)).collect(),
            cut_ms,
            max_copy_us: AtomicU64::new(0),
        }
    }

    /// Called by the keyspace with shard `idx` locked: copies it if not done yet.
    pub fn on_locked(&self, idx: usize, shard: &Shard) {
        // Only a holder of the shard's lock flips its flag, so this cannot race.
        if !self.pending[idx].load(Ordering::Acquire) {
            return;
        }
        self.pending[idx].store(false, Ordering::Release);
        let t = Instant::now();
        // As little as possible under the lock: clones (reference counts for keys
        // and strings) into exactly sized vectors; expired keys are skipped later,
        // by the writer.
        let copy: ShardCopy = shard
            .dbs
            .iter()
            .map(|d| {
                let mut v = Vec::with_capacity(d.map.len());
                v.extend(d.map.iter().map(|(k, e)| (k.clone(), e.clone())));
                v
            })
            .collect();
        *self.slots[idx].lock() = Some(copy);
        self.max_copy_us
            .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// The copy of shard `idx`. Always takes the shard's lock first: a command may
    /// be copying it right now (the flag is already cleared but the slot not yet
    /// filled), and that copy runs under the lock, so once we hold it the slot is
    /// filled — or, if nobody locked the shard since the cut, our lock copies it.
    pub fn take(&self, ks: &Keyspace, idx: usize) -> ShardCopy {
        drop(ks.lock(vec![idx]));
        let copy = self.slots[idx].lock().take();
        debug_assert!(copy.is_some(), "shard {idx} copy missing after its lock");
        copy.unwrap_or_default()
    }
}

/// Starts a capture. `at_cut` runs while every shard is locked (the AOF rewrite
/// switches to a new incremental file there). Returns the capture and how long the
/// shards were held.
pub fn begin(
    ks: &Keyspace,
    functions: &crate::scripting::functions::Functions,
    at_cut: impl FnOnce(),
) -> (Arc<Capture>, u64) {
    // Eager: the cut is one instant for every shard only if no command is half-way
    // on any of them (and FUNCTION LOAD, which holds every shard, is before or after).
    let all = ks.lock_every_shard();
    let t = Instant::now();
    let libraries = functions
        .libraries()
        .iter()
        .map(|l| l.code.clone())
        .collect();
    let cap = Arc::new(Capture::new(crate::clock::now_ms(), libraries));
    ks.install_capture(Some(cap.clone()));
    at_cut();
    let held = t.elapsed().as_micros() as u64;
    drop(all);
    (cap, held)
}

/// Ends a capture (all shards taken, or abandoned).
pub fn end(ks: &Keyspace) {
    ks.install_capture(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::value::Value;

    #[test]
    fn capture_sees_the_state_at_the_cut() {
        let mut t = TestClient::new();
        for i in 0..200 {
            t.run(&["SET", &format!("k{i}"), "old"]);
        }
        let (cap, _) = begin(&t.store.keyspace, &t.store.functions, || {});
        // Writes after the cut: overwrite, delete, create.
        for i in 0..100 {
            t.run(&["SET", &format!("k{i}"), "new"]);
        }
        t.run(&["DEL", "k150"]);
        t.run(&["SET", "fresh", "x"]);
        assert_eq!(t.run(&["GET", "k1"]), bulk("new"));
        let mut seen = std::collections::HashMap::new();
        for idx in 0..NUM_SHARDS {
            for (k, e) in cap.take(&t.store.keyspace, idx).remove(0) {
                let Value::Str(v) = e.value else { panic!() };
                seen.insert(k, v);
            }
        }
        end(&t.store.keyspace);
        assert_eq!(seen.len(), 200);
        assert!(seen.values().all(|v| &v[..] == b"old"));
        assert!(!seen.contains_key(&b"fresh"[..]));
        assert!(seen.contains_key(&b"k150"[..]));
        // Reads during a capture do not force copies; after it, locking is plain.
        assert_eq!(t.run(&["GET", "k150"]), tidewire_resp::Reply::Null);
    }
}
