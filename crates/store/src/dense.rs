//! `DenseMap`: an insertion-ordered hash map with removal by swap, like
//! `IndexMap`, built for memory rather than speed of growth.
//!
//! Why not `IndexMap`: when its entries `Vec` fills up it reserves up to the index
//! table's capacity, so the entries (the big part: key + value) are as oversized as
//! the hash table (up to 2.3× at its lowest load), and the table stores a
//! `usize` plus the full hash per slot. Here the entries live in a [`ChunkVec`]
//! (fixed chunks: no slack beyond the last chunk, no reallocation) and the table
//! holds only a `u32` position per slot (hashes are recomputed from the keys when
//! the table grows).
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

/// Bytes per full chunk of a [`ChunkVec`]: big enough that the chunk pointers are
/// noise, small enough that the unused tail of the last chunk is too.
const CHUNK_BYTES: usize = 16 * 1024;

/// A `Vec` in fixed-size chunks (only the first one grows gradually, so small
/// collections stay small). Why: a big `Vec` grows by reallocation, which leaves
/// its slack *and* the freed old buffer (dirty pages the allocator keeps resident)
/// behind; a keyspace shard or a million-member set then holds far more RSS than
/// data. Here growth allocates one more chunk and nothing is ever copied or freed
/// while growing.
#[derive(Clone)]
pub struct ChunkVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkVec<T> {
    fn default() -> Self {
        ChunkVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for ChunkVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

pub type ChunkIter<'a, T> = std::iter::Flatten<std::slice::Iter<'a, Vec<T>>>;

impl<T> ChunkVec<T> {
    /// log2 of the elements per chunk: the largest power of two that fits in
    /// `CHUNK_BYTES` (at least 16).
    const SHIFT: u32 = {
        let size = if std::mem::size_of::<T>() == 0 {
            1
        } else {
            std::mem::size_of::<T>()
        };
        let n = CHUNK_BYTES / size;
        let n = if n < 16 { 16 } else { n };
        usize::BITS - 1 - n.leading_zeros()
    };
    const CHUNK: usize = 1 << Self::SHIFT;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held (element storage and the chunk table).
    pub fn allocation_size(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.capacity() * std::mem::size_of::<T>())
            .sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks
            .get(i >> Self::SHIFT)?
            .get(i & (Self::CHUNK - 1))
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks
            .get_mut(i >> Self::SHIFT)?
            .get_mut(i & (Self::CHUNK - 1))
    }

    pub fn push(&mut self, x: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < Self::CHUNK => {
                if last.len() == last.capacity() {
                    // The first chunk grows by a quarter, exactly, up to a chunk.
                    let want = (last.len() / 4).max(4).min(Self::CHUNK - last.len());
                    last.reserve_exact(want);
                }
                last.push(x);
            }
            _ => {
                let mut c = if self.chunks.is_empty() {
                    Vec::with_capacity(4.min(Self::CHUNK))
                } else {
                    Vec::with_capacity(Self::CHUNK)
                };
                c.push(x);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    /// Removes element `i`, moving the last element into its place.
    pub fn swap_remove(&mut self, i: usize) -> T {
        assert!(
            i < self.len,
            "swap_remove index {i} out of range {}",
            self.len
        );
        let last_chunk = self.chunks.last_mut().expect("non-empty");
        let mut x = last_chunk.pop().expect("chunks are never empty");
        if last_chunk.is_empty() {
            self.chunks.pop();
            if self.chunks.is_empty() {
                self.chunks = Vec::new();
            }
        }
        self.len -= 1;
        if i != self.len {
            std::mem::swap(&mut x, &mut self[i]);
        }
        x
    }

    pub fn iter(&self) -> ChunkIter<'_, T> {
        self.chunks.iter().flatten()
    }

    /// Keeps the elements for which `keep` is true, in order.
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        let mut out = ChunkVec::new();
        for c in std::mem::take(&mut self.chunks) {
            for mut x in c {
                if keep(&mut x) {
                    out.push(x);
                }
            }
        }
        *self = out;
    }
}

impl<T> std::ops::Index<usize> for ChunkVec<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> Self::SHIFT][i & (Self::CHUNK - 1)]
    }
}

impl<T> std::ops::IndexMut<usize> for ChunkVec<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> Self::SHIFT][i & (Self::CHUNK - 1)]
    }
}

#[derive(Clone)]
pub struct DenseMap<K, V> {
    entries: ChunkVec<(K, V)>,
    /// Positions into `entries`, hashed by the entry's key.
    table: HashTable<u32>,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        DenseMap {
            entries: ChunkVec::new(),
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
            entries: ChunkVec::new(),
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
        self.entries.allocation_size() + self.table.allocation_size()
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
        } else if self.table.capacity() > 64 && self.entries.len() < self.table.capacity() / 4 {
            // Mostly deleted (SPOP, HDEL, expiry): the table shrinks too (the
            // entries give back each chunk as it empties).
            let entries = &self.entries;
            self.table.shrink_to(entries.len(), |&q| {
                hash_bytes(entries[q as usize].0.as_ref())
            });
        }
        out
    }

    /// The entries in position order (a nameable iterator type, unlike `iter`).
    pub fn entries(&self) -> ChunkIter<'_, (K, V)> {
        self.entries.iter()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + Clone {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + Clone {
        self.entries.iter().map(|(_, v)| v)
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
            let key = if n.is_multiple_of(3) {
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
    fn chunk_vec_matches_vec() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // 1 KiB elements: 16 per chunk, so chunk boundaries are crossed often.
        let mut c: ChunkVec<[u64; 128]> = ChunkVec::new();
        let mut v: Vec<[u64; 128]> = Vec::new();
        assert_eq!(ChunkVec::<[u64; 128]>::CHUNK, 16);
        for step in 0..5000u64 {
            if rng.gen_range(0..3) == 0 && !v.is_empty() {
                let i = rng.gen_range(0..v.len());
                assert_eq!(c.swap_remove(i), v.swap_remove(i));
            } else {
                c.push([step; 128]);
                v.push([step; 128]);
            }
            assert_eq!(c.len(), v.len());
            if step % 97 == 0 {
                assert!(c.iter().eq(v.iter()));
                assert_eq!(c.get(v.len()), None);
            }
        }
        while !v.is_empty() {
            assert_eq!(c.swap_remove(0), v.swap_remove(0));
        }
        assert_eq!(c.allocation_size(), 0);
    }

    #[test]
    fn shrinks_after_mass_removal() {
        let mut m: DenseSet<SmallBytes> = DenseMap::new();
        for i in 0..10_000 {
            m.insert(format!("{i}").as_str().into(), ());
        }
        let full = m.allocation_size();
        for i in 0..9_900 {
            assert!(m.swap_remove(format!("{i}").as_bytes()).is_some());
        }
        assert!(m.allocation_size() < full / 10);
        for i in 9_900..10_000 {
            assert!(m.contains_key(format!("{i}").as_bytes()));
        }
    }

    #[test]
    fn growth_is_modest() {
        let mut m: DenseSet<SmallBytes> = DenseMap::new();
        for i in 0..10_000 {
            m.insert(format!("{i}").as_str().into(), ());
            let cap_bytes = m.entries.allocation_size();
            assert!(cap_bytes <= (m.len() * 5 / 4 + 4) * 24 + CHUNK_BYTES + 1024);
        }
    }
}
