//! The keyspace: 16 databases spread over shards by key hash, so commands on
//! different keys run on different cores without meeting on one lock.
//!
//! A key lives in shard `shard_index(key)` in every database, so MOVE and SWAPDB
//! never cross shards. A command locks the shards of its keys in ascending order
//! (the one global order, so no deadlock), runs, and releases them; a multi-key
//! command, MULTI/EXEC or a script holds all its shards for its whole run, which is
//! what makes it atomic. Locks are `parking_lot` mutexes: never held across `.await`.
//!
//! A keyspace-wide gate makes "every shard" cheap: a lock of several shards takes it
//! shared, a lock of all shards exclusively and then locks shards only as they are
//! touched (a script touching five keys locks five shards, not 256), and a lock of
//! one shard skips it. A holder never locks anything else in the keyspace while it
//! holds a `Locked`; see [`Keyspace::lock_all`] for why that makes this deadlock-free.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{ArcMutexGuard, ArcRwLockReadGuard, ArcRwLockWriteGuard};
use parking_lot::{Mutex, RawMutex, RawRwLock, RwLock};

use crate::dense::{DenseMap, DenseSet};
use crate::persistence::capture::Capture;
use crate::small_bytes::SmallBytes;
use crate::value::Entry;

pub const NUM_DBS: usize = 16;
pub const NUM_SHARDS: usize = 256;
const SHARD_BITS: u32 = NUM_SHARDS.trailing_zeros();

/// Keys inline when short, entries in fixed chunks: see `dense` and `small_bytes`.
pub type Map = DenseMap<SmallBytes, Entry>;
pub type KeySet = DenseSet<SmallBytes>;

/// Fixed seeds: shard placement must not change between runs of the same binary
/// only for reproducibility of tests; it is never persisted.
static SHARD_HASHER: ahash::RandomState =
    ahash::RandomState::with_seeds(0x7469_6465, 0x7769_7265, 0x5348_4152, 0x4421_0001);

/// The shard a key lives in (the same in every database).
pub fn shard_index(key: &[u8]) -> usize {
    (SHARD_HASHER.hash_one(key) >> (64 - SHARD_BITS)) as usize
}

/// Whether `entry` is a hash with field TTLs (registered in `hash_ttl_keys`).
fn has_field_ttls(entry: &Entry) -> bool {
    matches!(&entry.value, crate::value::Value::Hash(h) if h.has_field_ttls())
}

/// One database's part of one shard.
#[derive(Default)]
pub struct DbShard {
    pub map: Map,
    /// Keys with a TTL, for the active expiry cycle's sampling.
    pub expires: KeySet,
    /// Hashes that have (or had) field TTLs, for the active expiry of fields. A key
    /// deleted or changed since stays until the cycle samples it.
    pub hash_ttl_keys: KeySet,
    /// No key here is due before this (unix ms; 0: look now): lowered by every
    /// TTL set, raised by the active expiry cycle when it looks. Lets each tick
    /// skip the parts with nothing due and reach the others on time.
    pub next_due: u64,
}

impl DbShard {
    pub fn insert(&mut self, key: Bytes, entry: Entry) -> Option<Entry> {
        self.upsert(&key, entry)
    }

    /// Inserts or replaces by a borrowed key: an existing key is updated in place, so
    /// overwriting (the common SET) allocates no new key.
    pub fn upsert(&mut self, key: &[u8], mut entry: Entry) -> Option<Entry> {
        if let Some((_, k, slot)) = self.map.get_full_mut(key) {
            if crate::evict::lfu_mode() {
                entry.access = slot.access;
            }
            let had_ttl = slot.expire_at != 0;
            let has_ttl = entry.expire_at != 0;
            let new_ttl_key = (has_ttl && !had_ttl).then(|| k.clone());
            let volatile = has_field_ttls(&entry).then(|| k.clone());
            let old = std::mem::replace(slot, entry);
            if let Some(k) = volatile {
                self.hash_ttl_keys.insert(k, ());
            }
            if has_ttl {
                self.next_due = self.next_due.min(slot.expire_at);
            }
            if let Some(k) = new_ttl_key {
                self.expires.insert(k, ());
            } else if had_ttl && !has_ttl {
                self.expires.swap_remove(key);
            }
            return Some(old);
        }
        let owned = SmallBytes::from(key);
        if entry.expire_at != 0 {
            self.next_due = self.next_due.min(entry.expire_at);
            self.expires.insert(owned.clone(), ());
        }
        if has_field_ttls(&entry) {
            self.hash_ttl_keys.insert(owned.clone(), ());
        }
        self.map.insert(owned, entry)
    }

    /// Registers `key` (a hash just given a field TTL) for the active expiry of
    /// fields; a hash stored whole with its TTLs (RENAME, COPY, MOVE, RESTORE) is
    /// registered by [`DbShard::upsert`].
    pub fn track_field_ttls(&mut self, key: &[u8]) {
        self.hash_ttl_keys.insert(SmallBytes::from(key), ());
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let old = self.map.swap_remove(key)?;
        if old.expire_at != 0 {
            self.expires.swap_remove(key);
        }
        Some(old)
    }

    /// Sets or clears (`0`) the expiry of an existing key; false if it is absent.
    pub fn set_expire(&mut self, key: &[u8], at: u64) -> bool {
        let Some((_, k, e)) = self.map.get_full_mut(key) else {
            return false;
        };
        let had = e.expire_at != 0;
        e.expire_at = at;
        if at != 0 {
            self.next_due = self.next_due.min(at);
        }
        if at != 0 && !had {
            let k = k.clone();
            self.expires.insert(k, ());
        } else if at == 0 && had {
            self.expires.swap_remove(key);
        }
        true
    }

    pub fn clear(&mut self) {
        self.map = Map::default();
        self.expires = KeySet::default();
        self.hash_ttl_keys = KeySet::default();
    }
}

pub struct Shard {
    pub dbs: Vec<DbShard>,
    pub hits: u64,
    pub misses: u64,
    pub expired_keys: u64,
}

impl Shard {
    fn new() -> Self {
        Shard {
            dbs: (0..NUM_DBS).map(|_| DbShard::default()).collect(),
            hits: 0,
            misses: 0,
            expired_keys: 0,
        }
    }
}

pub struct Keyspace {
    /// The shards, reached directly by a lock of one shard (the hot path).
    shards: Box<[Arc<Mutex<Shard>>]>,
    /// Taken shared by a lock of several shards and exclusively by a lock of all of
    /// them; it guards the same shard table, which a lazy all-shards lock reaches
    /// through its guard (see [`Keyspace::lock_all`] for why this cannot deadlock).
    gate: Arc<RwLock<Table>>,
    /// A snapshot in progress: shards are copied on their first lock after the cut.
    capture: Arc<CaptureSlot>,
}

/// What a lazy all-shards lock needs to lock a shard later: owned, so that
/// [`Locked`] needs no lifetime.
struct Table {
    shards: Box<[Arc<Mutex<Shard>>]>,
    capture: Arc<CaptureSlot>,
}

#[derive(Default)]
struct CaptureSlot {
    capture: RwLock<Option<Arc<Capture>>>,
    capturing: AtomicBool,
}

impl CaptureSlot {
    /// Copy-on-first-lock for a snapshot in progress (see `persistence::capture`).
    fn after_lock(&self, guards: &[(usize, Guard)]) {
        if !self.capturing.load(Ordering::Acquire) {
            return;
        }
        if let Some(cap) = self.capture.read().clone() {
            for (i, g) in guards {
                cap.on_locked(*i, g);
            }
        }
    }
}

impl Default for Keyspace {
    fn default() -> Self {
        let shards: Box<[Arc<Mutex<Shard>>]> = (0..NUM_SHARDS)
            .map(|_| Arc::new(Mutex::new(Shard::new())))
            .collect();
        let capture = Arc::new(CaptureSlot::default());
        Keyspace {
            gate: Arc::new(RwLock::new(Table {
                shards: shards.clone(),
                capture: capture.clone(),
            })),
            shards,
            capture,
        }
    }
}

type Guard = ArcMutexGuard<RawMutex, Shard>;
/// Most commands hold one or two shards: keep those guards out of the heap.
type Guards = smallvec::SmallVec<[(usize, Guard); 2]>;

/// A lazy all-shards lock that has locked this many shards locks the rest at once:
/// finding a shard among the held ones stays a short scan, and a script that
/// touches many shards costs what an eager lock did.
const LAZY_MAX: usize = 32;

/// What a [`Locked`] holds besides its shard guards.
enum Gate {
    /// No gate: no shard, or one (a holder of one shard waits for nothing else while
    /// holding it, so it can be in no deadlock cycle).
    Free,
    /// Several shards, locked in ascending order under the shared gate.
    /// (Never read: dropping it releases the gate.)
    Shared {
        _held: ArcRwLockReadGuard<RawRwLock, Table>,
    },
    /// Every shard: the exclusive gate, shards locked on first access.
    All {
        table: ArcRwLockWriteGuard<RawRwLock, Table>,
        /// Whether a snapshot in progress copies shards as they are locked (writes).
        capture: bool,
        /// Every shard is locked and `guards[i]` is shard `i`.
        complete: bool,
    },
}

impl Keyspace {
    /// Locks the given shards (any order, duplicates allowed) in ascending order.
    pub fn lock(&self, shards: Vec<usize>) -> Locked {
        self.lock_inner(shards, true)
    }

    /// Like [`Keyspace::lock`] for commands that change nothing but lazily expire
    /// keys: a snapshot in progress need not copy these shards first (a key that
    /// expired after the cut may be missing from the copy, which loads the same).
    pub fn lock_readonly(&self, shards: Vec<usize>) -> Locked {
        self.lock_inner(shards, false)
    }

    /// Locks the one shard of a single-key command (the common case), without the
    /// sorting and collecting of [`Keyspace::lock`], and without the gate.
    /// `capture` as in `lock_inner`.
    pub fn lock_one(&self, shard: usize, capture: bool) -> Locked {
        let mut guards = Guards::new();
        guards.push((shard, self.shards[shard].lock_arc()));
        self.locked(guards, Gate::Free, capture)
    }

    /// Wraps freshly taken guards, letting a snapshot in progress copy their shards
    /// first when `capture` (writes).
    fn locked(&self, guards: Guards, gate: Gate, capture: bool) -> Locked {
        if capture {
            self.capture.after_lock(&guards);
        }
        Locked {
            guards,
            gate,
            expired: Vec::new(),
            expired_fields: Vec::new(),
            no_touch: false,
        }
    }

    fn lock_inner(&self, mut shards: Vec<usize>, capture: bool) -> Locked {
        shards.sort_unstable();
        shards.dedup();
        if shards.len() == NUM_SHARDS {
            return self.lock_all_inner(capture);
        }
        // The shared gate first, and only then shards: a lock of all shards holds
        // the gate exclusively, so it never meets a holder of several shards.
        let gate = if shards.len() > 1 {
            Gate::Shared {
                _held: self.gate.read_arc(),
            }
        } else {
            Gate::Free
        };
        let guards: Guards = shards
            .into_iter()
            .map(|i| (i, self.shards[i].lock_arc()))
            .collect();
        self.locked(guards, gate, capture)
    }

    pub fn lock_keys<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Locked {
        self.lock(keys.into_iter().map(shard_index).collect())
    }

    /// Every shard, for a command that may touch any key (scripts, MULTI with one,
    /// FLUSHALL …), locked lazily: the gate is taken exclusively now, each shard on
    /// its first access, and all are kept until the `Locked` drops (two-phase
    /// locking, so the command is as atomic as with every shard locked up front).
    ///
    /// No deadlock: with the gate held exclusively no holder of several shards
    /// exists, and another all-shards lock waits at the gate, so the only shard
    /// holders this one can wait for hold one shard and wait for nothing while
    /// holding it. A holder must not lock anything else in the keyspace.
    pub fn lock_all(&self) -> Locked {
        self.lock_all_inner(true)
    }

    /// Every shard, for reads (INFO, DBSIZE, KEYS, SCAN): see [`Keyspace::lock_readonly`].
    pub fn lock_all_readonly(&self) -> Locked {
        self.lock_all_inner(false)
    }

    /// Every shard locked now, for the few callers that need the whole keyspace
    /// frozen at one instant before they act (installing a snapshot capture, cutting
    /// the log): no command may be half-way on any shard at that point.
    pub fn lock_every_shard(&self) -> Locked {
        let mut l = self.lock_all_inner(true);
        l.lock_rest();
        l
    }

    fn lock_all_inner(&self, capture: bool) -> Locked {
        Locked {
            guards: Guards::new(),
            gate: Gate::All {
                table: self.gate.write_arc(),
                capture,
                complete: false,
            },
            expired: Vec::new(),
            expired_fields: Vec::new(),
            no_touch: false,
        }
    }

    /// Locks nothing: for commands that do not touch keys.
    pub fn lock_none(&self) -> Locked {
        Locked {
            guards: Guards::new(),
            gate: Gate::Free,
            expired: Vec::new(),
            expired_fields: Vec::new(),
            no_touch: false,
        }
    }

    /// Installs (with every shard locked, [`Keyspace::lock_every_shard`]) or removes
    /// the snapshot capture.
    pub fn install_capture(&self, cap: Option<Arc<Capture>>) {
        self.capture
            .capturing
            .store(cap.is_some(), Ordering::Release);
        *self.capture.capture.write() = cap;
    }

    /// Locks one shard by index for the active expiry cycle, which only deletes
    /// expired keys: like [`Keyspace::lock_readonly`], it does not make a snapshot in
    /// progress copy the shard first. Background work that changes live keys must
    /// use [`Keyspace::lock`] (eviction does).
    pub fn lock_shard(&self, idx: usize) -> Locked {
        self.lock_one(idx, false)
    }
}

/// The shards one command holds while it runs, and the keys found expired on the way
/// (the dispatcher turns those into notifications and log records afterwards).
pub struct Locked {
    guards: Guards,
    gate: Gate,
    pub expired: Vec<(usize, Bytes)>,
    /// Hash fields found expired on the way: (db, key, fields, whether the hash
    /// went with them).
    pub expired_fields: Vec<(usize, Bytes, Vec<Bytes>, bool)>,
    /// Reads do not refresh access data (the client asked CLIENT NO-TOUCH).
    pub no_touch: bool,
}

impl Locked {
    pub fn holds_all(&self) -> bool {
        matches!(self.gate, Gate::All { .. })
    }

    /// Locks shard `idx`, not held yet, for a lazy all-shards lock; returns its
    /// position in `guards`. Out of line: the lookups that find a held shard are
    /// the hot path.
    #[inline(never)]
    fn lock_lazily(&mut self, idx: usize) -> usize {
        let Gate::All { table, capture, .. } = &mut self.gate else {
            panic!("command touched a key whose shard it did not declare");
        };
        if self.guards.len() >= LAZY_MAX {
            self.lock_rest();
            return idx;
        }
        if !self.guards.spilled() && self.guards.len() == self.guards.inline_size() {
            self.guards.reserve(8);
        }
        self.guards.push((idx, table.shards[idx].lock_arc()));
        let pos = self.guards.len() - 1;
        if *capture {
            table.capture.after_lock(&self.guards[pos..]);
        }
        pos
    }

    /// In a lazy all-shards lock, locks every shard not held yet (ascending) and
    /// orders the guards by shard, so that `guards[i]` is shard `i`.
    #[inline(never)]
    fn lock_rest(&mut self) {
        let Gate::All {
            table,
            capture,
            complete,
        } = &mut self.gate
        else {
            return;
        };
        if *complete {
            return;
        }
        let mut held = [false; NUM_SHARDS];
        for (i, _) in &self.guards {
            held[*i] = true;
        }
        let first_new = self.guards.len();
        self.guards.reserve(NUM_SHARDS - first_new);
        for (i, shard) in table.shards.iter().enumerate() {
            if !held[i] {
                self.guards.push((i, shard.lock_arc()));
            }
        }
        if *capture {
            table.capture.after_lock(&self.guards[first_new..]);
        }
        self.guards.sort_unstable_by_key(|(i, _)| *i);
        *complete = true;
    }

    #[inline]
    pub fn shard_mut(&mut self, idx: usize) -> &mut Shard {
        if let Gate::All { complete: true, .. } = self.gate {
            return &mut self.guards[idx].1;
        }
        let pos = match self.guards.iter().position(|(i, _)| *i == idx) {
            Some(pos) => pos,
            None => self.lock_lazily(idx),
        };
        &mut self.guards[pos].1
    }

    pub fn db(&mut self, db: usize, key: &[u8]) -> &mut DbShard {
        let shard = self.shard_of(key);
        &mut self.shard_mut(shard).dbs[db]
    }

    /// Every held part of database `db`; every part in shard order for an
    /// all-shards lock (which locks the shards it had not touched yet).
    pub fn db_parts(&mut self, db: usize) -> impl Iterator<Item = &mut DbShard> {
        self.lock_rest();
        self.guards.iter_mut().map(move |(_, g)| &mut g.dbs[db])
    }

    /// Every held shard; every shard for an all-shards lock (see `db_parts`).
    pub fn shards_mut(&mut self) -> impl Iterator<Item = &mut Shard> {
        self.lock_rest();
        self.guards.iter_mut().map(|(_, g)| &mut **g)
    }

    /// Looks a key up, deleting it first if its TTL has passed, so that an expired
    /// key is never visible to any command.
    pub fn get_mut(&mut self, db: usize, key: &[u8], now: u64) -> Option<&mut Entry> {
        let shard = self.shard_of(key);
        let idx = self.live_index(shard, db, key, now)?;
        self.shard_mut(shard).dbs[db]
            .map
            .get_index_mut(idx)
            .map(|(_, e)| e)
    }

    /// The shard of `key`, without hashing it when the command holds one shard
    /// (every single-key command): that is the key's shard.
    fn shard_of(&self, key: &[u8]) -> usize {
        if matches!(self.gate, Gate::Free) && self.guards.len() == 1 {
            debug_assert_eq!(
                self.guards[0].0,
                shard_index(key),
                "command touched a key whose shard it did not declare"
            );
            return self.guards[0].0;
        }
        shard_index(key)
    }

    /// Where `key` lives in `shard`'s part of `db`, unless it is missing or has
    /// expired (then it is expired now). One hash lookup: callers reach the entry
    /// again by its position.
    fn live_index(&mut self, shard: usize, db: usize, key: &[u8], now: u64) -> Option<usize> {
        let part = &self.shard_mut(shard).dbs[db];
        let idx = part.map.get_index_of(key)?;
        // (One look at the entry: its own expiry, and whether a hash field of it
        // is due — expired hash fields are never seen, they go before anyone looks.)
        let (expired, fields_due) = part.map.get_index(idx).map_or((false, false), |(_, e)| {
            (
                e.is_expired(now),
                matches!(&e.value, crate::value::Value::Hash(h) if h.fields_due(now)),
            )
        });
        if expired {
            self.expire_now(db, key);
            return None;
        }
        // Removing due fields leaves the entry where it is unless the hash empties
        // (and goes).
        if fields_due && self.expire_fields(db, key, now) {
            return None;
        }
        Some(idx)
    }

    /// Deletes the hash fields of `key` whose TTL is due (and the hash if it has
    /// none left), recording them for notifications and the log; whether the key
    /// is gone.
    pub fn expire_fields(&mut self, db: usize, key: &[u8], now: u64) -> bool {
        let part = self.db(db, key);
        let Some(e) = part.map.get_mut(key) else {
            return false;
        };
        let crate::value::Value::Hash(h) = &mut e.value else {
            return false;
        };
        let fields = h.remove_due_fields(now);
        if fields.is_empty() {
            return false;
        }
        let emptied = h.is_empty();
        if emptied {
            part.remove(key);
        }
        self.expired_fields
            .push((db, Bytes::copy_from_slice(key), fields, emptied));
        emptied
    }

    pub fn get(&mut self, db: usize, key: &[u8], now: u64) -> Option<&Entry> {
        self.get_mut(db, key, now).map(|e| &*e)
    }

    /// A shared read of a key without lazy expiry, so that several values can be
    /// borrowed at once (SINTER, SORT … BY/GET). Call `get`/`lookup_read` on each key
    /// first: that is what deletes an expired key.
    pub fn peek(&self, db: usize, key: &[u8]) -> Option<&Entry> {
        let idx = shard_index(key);
        let guard = match self.gate {
            Gate::All { complete: true, .. } => &self.guards[idx].1,
            _ => {
                &self
                    .guards
                    .iter()
                    .find(|(i, _)| *i == idx)
                    .expect("peek of a key whose shard is not held (declared, or touched first)")
                    .1
            }
        };
        guard.dbs[db].map.get(key)
    }

    /// A read lookup: also counts keyspace hits/misses and refreshes the access clock.
    pub fn lookup_read(&mut self, db: usize, key: &[u8], now: u64) -> Option<&mut Entry> {
        let shard = self.shard_of(key);
        let idx = self.live_index(shard, db, key, now);
        let no_touch = self.no_touch;
        let s = self.shard_mut(shard);
        let Some(idx) = idx else {
            s.misses += 1;
            return None;
        };
        s.hits += 1;
        let (_, e) = s.dbs[db].map.get_index_mut(idx)?;
        if !no_touch {
            crate::evict::touch(&mut e.access);
        }
        Some(e)
    }

    pub fn exists(&mut self, db: usize, key: &[u8], now: u64) -> bool {
        self.get_mut(db, key, now).is_some()
    }

    /// Inserts or replaces a key. `key` must be owned (not a slice of a read buffer).
    pub fn insert(&mut self, db: usize, key: Bytes, entry: Entry) -> Option<Entry> {
        let idx = shard_index(&key);
        self.shard_mut(idx).dbs[db].insert(key, entry)
    }

    /// Like [`Locked::insert`] with a borrowed key (copied only if new).
    pub fn upsert(&mut self, db: usize, key: &[u8], entry: Entry) -> Option<Entry> {
        self.db(db, key).upsert(key, entry)
    }

    pub fn remove(&mut self, db: usize, key: &[u8]) -> Option<Entry> {
        self.db(db, key).remove(key)
    }

    pub fn set_expire(&mut self, db: usize, key: &[u8], at: u64) -> bool {
        self.db(db, key).set_expire(key, at)
    }

    /// Removes an expired key and records it for notification and propagation.
    pub fn expire_now(&mut self, db: usize, key: &[u8]) {
        let idx = shard_index(key);
        let shard = self.shard_mut(idx);
        if let Some((k, _)) = shard.dbs[db]
            .map
            .get_key_value(key)
            .map(|(k, v)| (k.to_bytes(), v.expire_at))
        {
            shard.dbs[db].remove(key);
            shard.expired_keys += 1;
            self.expired.push((db, k));
        }
    }

    /// Number of keys in `db` over the held shards (expired-but-unreaped included,
    /// as Redis's DBSIZE does).
    pub fn len(&mut self, db: usize) -> usize {
        self.db_parts(db).map(|d| d.map.len()).sum()
    }

    pub fn is_empty(&mut self, db: usize) -> bool {
        self.len(db) == 0
    }

    /// Swaps two databases in every shard (SWAPDB; all shards must be held).
    pub fn swap_dbs(&mut self, a: usize, b: usize) {
        assert!(self.holds_all(), "SWAPDB needs every shard");
        self.lock_rest();
        for (_, g) in self.guards.iter_mut() {
            g.dbs.swap(a, b);
        }
    }

    /// One SCAN step over database `db` (all shards must be held): visits about
    /// `count` positions starting at `cursor` (0 starts a scan) and returns the cursor
    /// to continue from (0 when done). Live keys are passed to `visit`; expired keys
    /// met on the way are deleted instead. See [`cursor`] for why every key present
    /// for the whole scan is returned.
    pub fn scan(
        &mut self,
        db: usize,
        start: u64,
        count: usize,
        now: u64,
        mut visit: impl FnMut(&[u8], &Entry),
    ) -> u64 {
        assert!(self.holds_all(), "SCAN needs every shard");
        let (mut shard, mut remaining) = if start == 0 {
            (0, u64::MAX)
        } else {
            cursor::split(start)
        };
        let mut visited = 0;
        let mut expired = Vec::new();
        while shard < NUM_SHARDS {
            // Only the shards this step visits are locked.
            let part = &self.shard_mut(shard).dbs[db];
            let len = part.map.len() as u64;
            if visited >= count {
                // Resume this shard from its current end next time.
                if len > 0 {
                    return cursor::join(shard, remaining.min(len));
                }
            } else {
                let mut pos = remaining.min(len);
                while pos > 0 && visited < count {
                    pos -= 1;
                    visited += 1;
                    let (k, e) = part.map.get_index(pos as usize).expect("in range");
                    if e.is_expired(now) {
                        expired.push(k.clone());
                    } else {
                        visit(k, e);
                    }
                }
                // Removing visited keys only moves other visited keys (the last ones).
                for k in expired.drain(..) {
                    self.expire_now(db, &k);
                }
                if pos > 0 {
                    return cursor::join(shard, pos);
                }
            }
            shard += 1;
            remaining = u64::MAX;
        }
        0
    }
}

/// SCAN cursors: the high bits name the shard, the low 40 bits how many positions of
/// that shard are still to visit. Each shard is walked from its last index down,
/// which together with swap-removal guarantees that every key present for the whole
/// scan is returned (a removal only moves the last, already visited, key).
pub mod cursor {
    pub const POS_BITS: u32 = 40;
    const POS_MASK: u64 = (1 << POS_BITS) - 1;

    pub fn split(cursor: u64) -> (usize, u64) {
        ((cursor >> POS_BITS) as usize, cursor & POS_MASK)
    }

    pub fn join(shard: usize, remaining: u64) -> u64 {
        ((shard as u64) << POS_BITS) | (remaining & POS_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn entry(v: &str, exp: u64) -> Entry {
        Entry::with_expiry(Value::Str(v.as_bytes().into()), exp)
    }

    #[test]
    fn lazy_expiry_hides_and_records() {
        let ks = Keyspace::default();
        let mut l = ks.lock_all();
        l.insert(0, Bytes::from_static(b"a"), entry("1", 100));
        l.insert(0, Bytes::from_static(b"b"), entry("2", 0));
        assert!(l.get(0, b"a", 50).is_some());
        assert!(l.get(0, b"a", 100).is_none());
        assert_eq!(l.expired, vec![(0, Bytes::from_static(b"a"))]);
        assert!(l.get(0, b"b", 1_000_000).is_some());
        assert_eq!(l.len(0), 1);
    }

    #[test]
    fn expires_index_follows_entries() {
        let ks = Keyspace::default();
        let mut l = ks.lock_all();
        l.insert(3, Bytes::from_static(b"k"), entry("v", 0));
        assert!(l.set_expire(3, b"k", 500));
        assert_eq!(l.db(3, b"k").expires.len(), 1);
        assert!(l.set_expire(3, b"k", 0));
        assert_eq!(l.db(3, b"k").expires.len(), 0);
        l.insert(3, Bytes::from_static(b"k"), entry("v", 7));
        assert_eq!(l.db(3, b"k").expires.len(), 1);
        l.remove(3, b"k");
        assert_eq!(l.db(3, b"k").expires.len(), 0);
    }

    /// Two distinct shards, `lo < hi`.
    fn two_shards() -> (usize, usize) {
        (3, NUM_SHARDS - 5)
    }

    /// Holders of two shards (locked in either key order) against lazy all-shards
    /// holders that touch the same shards in the reverse order, and holders of one
    /// shard. Without the gate the lazy holder (holding `hi`, waiting for `lo`) and
    /// a two-shard holder (holding `lo`, waiting for `hi`) deadlock within a few
    /// rounds; the watchdog turns a hang into a failure. Every holder also checks
    /// that a transfer between the two shards is seen whole (atomicity).
    #[test]
    fn lazy_all_and_multi_shard_locks_do_not_deadlock() {
        use std::sync::mpsc;
        use std::time::Duration;
        const TOTAL: u64 = 1_000_000;
        const ROUNDS: usize = 2_000;
        let (lo, hi) = two_shards();
        let ks = Arc::new(Keyspace::default());
        ks.lock_all().shard_mut(lo).hits = TOTAL;
        let (done, finished) = mpsc::channel();
        let spawn = |f: Box<dyn Fn(&Keyspace) + Send>| {
            let (ks, done) = (ks.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    f(&ks);
                }
                let _ = done.send(());
            });
        };
        // Lazy all-shards: `hi` first, then `lo`, moving one unit from lo to hi.
        for _ in 0..2 {
            spawn(Box::new(move |ks| {
                let mut l = ks.lock_all();
                l.shard_mut(hi).hits += 1;
                std::thread::yield_now();
                let from = &mut l.shard_mut(lo).hits;
                *from = from.saturating_sub(1);
            }));
        }
        // Two shards, declared in both orders (locked ascending either way).
        for order in [vec![lo, hi], vec![hi, lo]] {
            spawn(Box::new(move |ks| {
                let mut l = ks.lock(order.clone());
                let a = l.shard_mut(lo).hits;
                std::thread::yield_now();
                let b = l.shard_mut(hi).hits;
                assert_eq!(a + b, TOTAL, "a transfer was seen half done");
            }));
        }
        // One shard: bypasses the gate.
        for idx in [lo, hi] {
            spawn(Box::new(move |ks| {
                let mut l = ks.lock_one(idx, true);
                l.shard_mut(idx).misses += 1;
            }));
        }
        drop(done);
        for _ in 0..6 {
            finished
                .recv_timeout(Duration::from_secs(30))
                .expect("deadlock: a locker did not finish in time");
        }
        let mut l = ks.lock_every_shard();
        assert_eq!(l.shard_mut(lo).hits + l.shard_mut(hi).hits, TOTAL);
        assert_eq!(l.shard_mut(lo).misses, ROUNDS as u64);
    }

    /// A lazy all-shards lock locks only what it touches, and every shard once
    /// anything iterates the whole keyspace.
    #[test]
    fn lazy_all_locks_on_first_access() {
        let (lo, hi) = two_shards();
        let ks = Keyspace::default();
        let mut l = ks.lock_all();
        l.shard_mut(hi).hits = 7;
        // Untouched shards stay free for single-shard lockers.
        assert!(ks.shards[lo].try_lock().is_some());
        assert!(ks.shards[hi].try_lock().is_none());
        assert_eq!(l.guards.len(), 1);
        assert_eq!(l.db_parts(0).count(), NUM_SHARDS);
        assert!(ks.shards[lo].try_lock().is_none());
        assert_eq!(l.shard_mut(hi).hits, 7);
        // Past `LAZY_MAX` shards the rest are locked at once.
        drop(l);
        let mut l = ks.lock_all();
        for i in 0..=LAZY_MAX {
            l.shard_mut(i).misses += 1;
        }
        assert!(matches!(l.gate, Gate::All { complete: true, .. }));
        assert_eq!(l.shard_mut(hi).hits, 7);
        // A multi-shard lock waits for the gate; a single-shard one does not.
        assert!(ks.gate.try_read().is_none());
        drop(l);
        assert!(ks.gate.try_read().is_some());
    }

    /// Shards a lazy all-shards lock reaches during a snapshot are copied before
    /// it changes them, as eagerly locked ones were.
    #[test]
    fn lazily_locked_shards_feed_the_capture() {
        use crate::persistence::capture;
        let ks = Keyspace::default();
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        {
            let mut l = ks.lock_all();
            for k in &keys {
                l.insert(0, Bytes::from(k.clone()), entry("old", 0));
            }
        }
        let (cap, _) = capture::begin(
            &ks,
            &crate::scripting::functions::Functions::default(),
            || {},
        );
        {
            let mut l = ks.lock_all();
            for k in &keys[..32] {
                l.insert(0, Bytes::from(k.clone()), entry("new", 0));
            }
        }
        let mut seen = 0;
        for idx in 0..NUM_SHARDS {
            for (k, e) in cap.take(&ks, idx).remove(0) {
                let crate::value::Value::Str(v) = e.value else {
                    panic!("not a string")
                };
                assert_eq!(&v[..], b"old", "{k:?} copied after the change");
                seen += 1;
            }
        }
        capture::end(&ks);
        assert_eq!(seen, keys.len());
    }

    #[test]
    fn partial_lock_reaches_its_keys() {
        let ks = Keyspace::default();
        let mut l = ks.lock_keys([&b"x"[..], &b"y"[..]]);
        l.insert(0, Bytes::from_static(b"x"), entry("1", 0));
        l.insert(0, Bytes::from_static(b"y"), entry("2", 0));
        assert!(l.get(0, b"y", 0).is_some());
    }
}
