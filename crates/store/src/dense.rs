//! `DenseMap`: an insertion-ordered hash map with removal by swap, like
//! `IndexMap`, built for memory rather than speed of growth.
//!
//! Why not `IndexMap`: when its entries `Vec` fills up it reserves up to the index
//! table's capacity, so the entries (the big part: key + value) are as oversized as
//! the hash table (up to 2.3× at its lowest load), and the table stores a
//! `usize` plus the full hash per slot. Here the entries grow by 1.25× at a time
//! and the table holds only a `u32` position per slot (hashes are recomputed from
//! the keys when the table grows).
//!
//! Positions are dense (`0..len`) and `swap_remove` moves the last entry into the
//! hole, so a cursor that walks positions downwards (SCAN, HSCAN, SSCAN) sees every
//! entry that stays present during the walk.

use std::fmt;
use std::sync::LazyLock;

use hashbrown::HashTable;

/// One random seed per process: the keys are client-controlled, so the hash must not
/// be predictable (collision flooding), and maps are never persisted by hash order.
static HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

/// The hash of a key, as every `DenseMap` and the zset dictionary compute it.
pub fn hash_bytes(k: &[u8]) -> u64 {
    HASHER.hash_one(k)
}

/// Grows a full `Vec` by about a quarter, exactly: doubling would leave up to half of
/// a large keyspace's entries unused.
pub fn grow_quarter<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(4));
    }
}

#[derive(Clone)]
pub struct DenseMap<K, V> {
    entries: Vec<(K, V)>,
    /// Positions into `entries`, hashed by the entry's key.
    table: HashTable<u32>,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        DenseMap {
            entries: Vec::new(),
            table: HashTable::new(),
        }
    }
}

impl<K: AsRef<[u8]> + fmt::Debug, V: fmt::Debug> fmt::Debug for DenseMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: AsRef<[u8]>, V> DenseMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        DenseMap {
            entries: Vec::with_capacity(n),
            table: HashTable::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held by the map itself (not by what keys and values point to).
    pub fn allocation_size(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(K, V)>() + self.table.allocation_size()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash_bytes(key), |&p| entries[p as usize].0.as_ref() == key)
            .map(|&p| p as usize)
    }

    pub fn get_index_of(&self, key: &[u8]) -> Option<usize> {
        self.find(key)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.find(key).map(|p| &self.entries[p].1)
    }

    pub fn get_key_value(&self, key: &[u8]) -> Option<(&K, &V)> {
        self.find(key).map(|p| {
            let (k, v) = &self.entries[p];
            (k, v)
        })
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let p = self.find(key)?;
        Some(&mut self.entries[p].1)
    }

    pub fn get_full_mut(&mut self, key: &[u8]) -> Option<(usize, &K, &mut V)> {
        let p = self.find(key)?;
        let (k, v) = &mut self.entries[p];
        Some((p, k, v))
    }

    pub fn get_index(&self, idx: usize) -> Option<(&K, &V)> {
        self.entries.get(idx).map(|(k, v)| (k, v))
    }

    pub fn get_index_mut(&mut self, idx: usize) -> Option<(&K, &mut V)> {
        self.entries.get_mut(idx).map(|(k, v)| (&*k, v))
    }

    /// Inserts or replaces; a present key keeps its position and its stored key.
    /// Returns the previous value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = hash_bytes(key.as_ref());
        let entries = &self.entries;
        if let Some(&p) = self
            .table
            .find(hash, |&p| entries[p as usize].0.as_ref() == key.as_ref())
        {
            return Some(std::mem::replace(&mut self.entries[p as usize].1, value));
        }
        let pos =
            u32::try_from(self.entries.len()).expect("DenseMap holds at most u32::MAX entries");
        grow_quarter(&mut self.entries);
        self.entries.push((key, value));
        let entries = &self.entries;
        self.table
            .insert_unique(hash, pos, |&p| hash_bytes(entries[p as usize].0.as_ref()));
        None
    }

    pub fn swap_remove(&mut self, key: &[u8]) -> Option<V> {
        self.swap_remove_full(key).map(|(_, _, v)| v)
    }

    pub fn swap_remove_full(&mut self, key: &[u8]) -> Option<(usize, K, V)> {
        let entries = &self.entries;
        let entry = self
            .table
            .find_entry(hash_bytes(key), |&p| entries[p as usize].0.as_ref() == key)
            .ok()?;
        let p = *entry.get() as usize;
        entry.remove();
        let (k, v) = self.move_last_into(p);
        Some((p, k, v))
    }

    /// Removes the entry at `idx`, moving the last entry into its place.
    pub fn swap_remove_index(&mut self, idx: usize) -> Option<(K, V)> {
        let key = self.entries.get(idx)?.0.as_ref();
        let hash = hash_bytes(key);
        if let Ok(entry) = self.table.find_entry(hash, |&p| p as usize == idx) {
            entry.remove();
        }
        Some(self.move_last_into(idx))
    }

    /// Takes out entry `p` (already gone from the table) and repoints the table slot
    /// of the entry that `Vec::swap_remove` moves into its place.
    fn move_last_into(&mut self, p: usize) -> (K, V) {
        let last = self.entries.len() - 1;
        if p != last {
            let hash = hash_bytes(self.entries[last].0.as_ref());
            if let Some(slot) = self.table.find_mut(hash, |&q| q as usize == last) {
                *slot = p as u32;
            }
        }
        let out = self.entries.swap_remove(p);
        if self.entries.is_empty() {
            // Give the memory back: an emptied shard or collection may stay so.
            *self = Self::default();
        }
        out
    }

    /// The entries in position order (nameable, unlike `iter`).
    pub fn as_slice(&self) -> &[(K, V)] {
        &self.entries
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the entries for which `keep` is true (order of the kept ones is kept).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, v)| keep(k, v));
        if self.entries.len() != before {
            self.rebuild_table();
        }
    }

    fn rebuild_table(&mut self) {
        self.table = HashTable::with_capacity(self.entries.len());
        let entries = &self.entries;
        for (p, (k, _)) in entries.iter().enumerate() {
            self.table
                .insert_unique(hash_bytes(k.as_ref()), p as u32, |&q| {
                    hash_bytes(entries[q as usize].0.as_ref())
                });
        }
    }
}

/// A set is a map to `()`.
pub type DenseSet<K> = DenseMap<K, ()>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::small_bytes::SmallBytes;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    fn check(m: &DenseMap<SmallBytes, u64>, model: &HashMap<Vec<u8>, u64>) {
        assert_eq!(m.len(), model.len());
        assert_eq!(m.table.len(), model.len());
        for (p, (k, v)) in m.iter().enumerate() {
            assert_eq!(model.get(&k[..]), Some(v));
            assert_eq!(m.get_index_of(k), Some(p));
        }
    }

    #[test]
    fn differential_against_hashmap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut m: DenseMap<SmallBytes, u64> = DenseMap::new();
        let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
        for step in 0..20_000u64 {
            // Keys short and long (inline and heap), from a small range so that
            // replacements and removals of present keys are frequent.
            let n: u32 = rng.gen_range(0..500);
            let key = if n % 3 == 0 {
                format!("a-long-key-that-does-not-fit-inline-{n}").into_bytes()
            } else {
                format!("k{n}").into_bytes()
            };
            match rng.gen_range(0..10) {
                0..=4 => {
                    assert_eq!(
                        m.insert(SmallBytes::from(&key[..]), step),
                        model.insert(key, step)
                    );
                }
                5..=6 => assert_eq!(m.swap_remove(&key), model.remove(&key)),
                7 => {
                    if !m.is_empty() {
                        let i = rng.gen_range(0..m.len());
                        let (k, v) = m.swap_remove_index(i).expect("in range");
                        assert_eq!(model.remove(&k[..]), Some(v));
                    }
                }
                8 => {
                    if let Some(v) = m.get_mut(&key) {
                        *v += 1;
                        *model.get_mut(&key).expect("model agrees") += 1;
                    } else {
                        assert!(!model.contains_key(&key));
                    }
                }
                _ => assert_eq!(m.get(&key), model.get(&key)),
            }
            if step % 1000 == 0 {
                check(&m, &model);
            }
        }
        check(&m, &model);
        m.retain(|k, _| k.len() % 2 == 0);
        model.retain(|k, _| k.len() % 2 == 0);
        check(&m, &model);
    }

    #[test]
    fn swap_remove_moves_last_into_hole() {
        let mut m: DenseSet<SmallBytes> = DenseMap::new();
        for k in ["a", "b", "c", "d"] {
            m.insert(k.into(), ());
        }
        assert_eq!(
            m.swap_remove_full(b"b").map(|(p, k, _)| (p, k)),
            Some((1, "b".into()))
        );
        let order: Vec<&[u8]> = m.keys().map(|k| &k[..]).collect();
        assert_eq!(order, vec![&b"a"[..], b"d", b"c"]);
        assert_eq!(m.get_index_of(b"d"), Some(1));
        // Replacing keeps the position.
        m.insert("a".into(), ());
        assert_eq!(m.get_index_of(b"a"), Some(0));
        for k in ["a", "c", "d"] {
            assert!(m.swap_remove(k.as_bytes()).is_some());
        }
        assert!(m.is_empty());
        assert_eq!(m.allocation_size(), 0);
    }

    #[test]
    fn growth_is_modest() {
        let mut m: DenseSet<SmallBytes> = DenseMap::new();
        for i in 0..10_000 {
            m.insert(format!("{i}").as_str().into(), ());
            assert!(m.entries.capacity() <= m.len() * 5 / 4 + 4);
        }
    }
}
