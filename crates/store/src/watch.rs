//! WATCH bookkeeping: which clients watch which keys, and raising their dirty flag
//! when a key changes. The common case (nobody watching) costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// (db, key) → (client id, that client's dirty flag).
type Watchers = HashMap<(usize, Bytes), Vec<(u64, Arc<AtomicBool>)>>;

#[derive(Default)]
pub struct Watches {
    count: AtomicUsize,
    keys: Mutex<Watchers>,
}

impl Watches {
    pub fn watch(&self, db: usize, key: Bytes, client_id: u64, flag: &Arc<AtomicBool>) {
        let mut keys = self.keys.lock();
        let list = keys.entry((db, key)).or_default();
        if !list.iter().any(|(id, _)| *id == client_id) {
            list.push((client_id, flag.clone()));
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn unwatch(&self, db: usize, key: &Bytes, client_id: u64) {
        let mut keys = self.keys.lock();
        if let Some(list) = keys.get_mut(&(db, key.clone())) {
            let before = list.len();
            list.retain(|(id, _)| *id != client_id);
            self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                keys.remove(&(db, key.clone()));
            }
        }
    }

    pub fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// A key changed: every client watching it will fail its EXEC.
    pub fn touch(&self, db: usize, key: &[u8]) {
        if !self.any() {
            return;
        }
        let keys = self.keys.lock();
        if let Some(list) = keys.get(&(db, Bytes::copy_from_slice(key))) {
            for (_, flag) in list {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Every watched key of database `db` (FLUSHDB touches those that exist).
    pub fn keys_in_db(&self, db: usize) -> Vec<Bytes> {
        if !self.any() {
            return Vec::new();
        }
        self.keys
            .lock()
            .keys()
            .filter(|(d, _)| *d == db)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// A whole database changed (FLUSHDB, SWAPDB); `None` means every database.
    pub fn touch_db(&self, db: Option<usize>) {
        if !self.any() {
            return;
        }
        for ((d, _), list) in self.keys.lock().iter() {
            if db.is_none_or(|db| db == *d) {
                for (_, flag) in list {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}
