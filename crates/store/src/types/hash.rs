//! The hash type. Small hashes are one [`Pack`] of alternating fields and values
//! (Redis's listpack encoding: one allocation, linear lookups); past
//! `hash-max-listpack-entries` fields or a field/value longer than
//! `hash-max-listpack-value` bytes they become an insertion-ordered hash map
//! (`hashtable`), and never go back, as in Redis.

use bytes::Bytes;
use rand::Rng;

use super::pack::Pack;
use crate::config::{Config, Limit};
use crate::dense::DenseMap;
use crate::small_bytes::SmallBytes;

type Map = DenseMap<SmallBytes, SmallBytes>;

/// The thresholds that decide between the compact and the map encoding.
#[derive(Debug, Clone, Copy)]
pub struct HashLimits {
    pub max_entries: usize,
    pub max_value: usize,
}

impl HashLimits {
    pub fn from_config(config: &Config) -> Self {
        HashLimits {
            max_entries: config.encoding.get_usize(Limit::HashMaxListpackEntries),
            max_value: config.encoding.get_usize(Limit::HashMaxListpackValue),
        }
    }
}

impl Default for HashLimits {
    fn default() -> Self {
        HashLimits {
            max_entries: 128,
            max_value: 64,
        }
    }
}

#[derive(Debug, Clone)]
pub enum HashValue {
    /// field, value, field, value …
    Pack(Pack),
    /// Boxed so that small hashes (the common case) stay one pointer-sized enum.
    Map(Box<Map>),
}

impl Default for HashValue {
    fn default() -> Self {
        HashValue::Pack(Pack::new())
    }
}

impl PartialEq for HashValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(f, v)| other.get(f) == Some(v))
    }
}

pub enum HashIter<'a> {
    Pack(super::pack::PackIter<'a>),
    Map(crate::dense::ChunkIter<'a, (SmallBytes, SmallBytes)>),
}

impl<'a> Iterator for HashIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            HashIter::Pack(it) => {
                let f = it.next()?;
                let v = it.next()?;
                Some((f, v))
            }
            HashIter::Map(it) => it.next().map(|(f, v)| (&f[..], &v[..])),
        }
    }
}

impl HashValue {
    pub fn len(&self) -> usize {
        match self {
            HashValue::Pack(p) => p.len() / 2,
            HashValue::Map(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            HashValue::Pack(_) => "listpack",
            HashValue::Map(_) => "hashtable",
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            HashValue::Pack(p) => p.mem_usage() + 16,
            HashValue::Map(m) => {
                m.iter()
                    .map(|(f, v)| f.heap_size() + v.heap_size())
                    .sum::<usize>()
                    + m.allocation_size()
            }
        }
    }

    pub fn iter(&self) -> HashIter<'_> {
        match self {
            HashValue::Pack(p) => HashIter::Pack(p.iter()),
            HashValue::Map(m) => HashIter::Map(m.entries()),
        }
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            HashValue::Pack(p) => {
                let mut it = p.iter();
                while let Some(f) = it.next() {
                    let v = it.next()?;
                    if f == field {
                        return Some(v);
                    }
                }
                None
            }
            HashValue::Map(m) => m.get(field).map(|v| &v[..]),
        }
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// An empty hash already in the `hashtable` encoding: RESTORE of a hash with
    /// more fields than `hash-max-listpack-entries` starts there, as Redis's
    /// loader does.
    pub fn new_hashtable(capacity: usize) -> Self {
        HashValue::Map(Box::new(Map::with_capacity(capacity)))
    }

    fn convert_to_map(&mut self) {
        if let HashValue::Pack(p) = self {
            let mut m = Map::with_capacity(p.len() / 2 + 1);
            let mut it = p.iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                m.insert(SmallBytes::from(f), SmallBytes::from(v));
            }
            *self = HashValue::Map(Box::new(m));
        }
    }

    /// Sets `field` to `value`; true if the field is new.
    pub fn set(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
        if let HashValue::Pack(_) = self {
            if field.len() > limits.max_value || value.len() > limits.max_value {
                self.convert_to_map();
            }
        }
        match self {
            HashValue::Pack(p) => {
                let mut spans = p.spans();
                let mut found = None;
                while let Some((_, f)) = spans.next() {
                    let Some((vspan, _)) = spans.next() else {
                        break;
                    };
                    if f == field {
                        found = Some(vspan);
                        break;
                    }
                }
                drop(spans);
                match found {
                    Some(span) => {
                        p.replace(span, value);
                        false
                    }
                    None => {
                        p.push(field);
                        p.push(value);
                        if p.len() / 2 > limits.max_entries {
                            self.convert_to_map();
                        }
                        true
                    }
                }
            }
            HashValue::Map(m) => {
                if let Some(v) = m.get_mut(field) {
                    *v = SmallBytes::from(value);
                    false
                } else {
                    m.insert(SmallBytes::from(field), SmallBytes::from(value));
                    true
                }
            }
        }
    }

    /// Removes `field`; true if it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            HashValue::Pack(p) => {
                let mut spans = p.spans();
                let mut found = None;
                while let Some((fspan, f)) = spans.next() {
                    let Some((vspan, _)) = spans.next() else {
                        break;
                    };
                    if f == field {
                        found = Some((fspan.start, vspan.end));
                        break;
                    }
                }
                drop(spans);
                match found {
                    Some((start, end)) => {
                        p.remove_span(start, end, 2);
                        true
                    }
                    None => false,
                }
            }
            HashValue::Map(m) => m.swap_remove(field).is_some(),
        }
    }

    /// The pair at position `idx` (0 ≤ idx < len).
    pub fn get_index(&self, idx: usize) -> Option<(&[u8], &[u8])> {
        match self {
            HashValue::Pack(_) => self.iter().nth(idx),
            HashValue::Map(m) => m.get_index(idx).map(|(f, v)| (&f[..], &v[..])),
        }
    }

    /// A uniformly random pair; `None` if empty.
    pub fn random(&self, rng: &mut impl Rng) -> Option<(&[u8], &[u8])> {
        if self.is_empty() {
            return None;
        }
        self.get_index(rng.gen_range(0..self.len()))
    }

    /// One step of HSCAN. The compact encoding is returned whole (cursor 0), as
    /// Redis does; the map is walked from its last index down, so swap-removals
    /// never hide an element present for the whole scan.
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &[u8])) -> u64 {
        match self {
            HashValue::Pack(_) => {
                for (k, v) in self.iter() {
                    f(k, v);
                }
                0
            }
            HashValue::Map(m) => {
                let (idx, next) = scan_positions(m.len(), cursor, count);
                for i in idx {
                    let (k, v) = m.get_index(i).expect("in range");
                    f(k, v);
                }
                next
            }
        }
    }

    /// Commands that recreate this value under `key` (AOF rewrite): HSET in batches
    /// of at most 64 fields.
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut cur: Vec<Bytes> = Vec::new();
        for (f, v) in self.iter() {
            if cur.is_empty() {
                cur.push(Bytes::from_static(b"HSET"));
                cur.push(key.clone());
            }
            cur.push(Bytes::copy_from_slice(f));
            cur.push(Bytes::copy_from_slice(v));
            if cur.len() == 2 + 2 * 64 {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// Positions visited by one scan step over an indexable collection of `len`
/// elements: the cursor is the number of positions still to visit (0 = start),
/// walked downwards. Returns the positions and the next cursor (0 = done).
pub fn scan_positions(len: usize, cursor: u64, count: usize) -> (Vec<usize>, u64) {
    let mut pos = if cursor == 0 {
        len
    } else {
        (cursor as usize).min(len)
    };
    let mut out = Vec::with_capacity(count.min(pos));
    while pos > 0 && out.len() < count {
        pos -= 1;
        out.push(pos);
    }
    (out, pos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(e: usize, v: usize) -> HashLimits {
        HashLimits {
            max_entries: e,
            max_value: v,
        }
    }

    #[test]
    fn compact_then_map() {
        let mut h = HashValue::default();
        assert!(h.set(b"a", b"1", limits(2, 10)));
        assert!(!h.set(b"a", b"11", limits(2, 10)));
        assert!(h.set(b"b", b"2", limits(2, 10)));
        assert_eq!(h.encoding(), "listpack");
        assert_eq!(h.get(b"a"), Some(&b"11"[..]));
        assert!(h.set(b"c", b"3", limits(2, 10)));
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.len(), 3);
        assert_eq!(h.get(b"a"), Some(&b"11"[..]));
        assert!(h.remove(b"a"));
        assert!(!h.remove(b"a"));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn small_hash_is_small() {
        // Stored unboxed in `Value` (40 bytes): the compact case must fit in 32.
        assert!(std::mem::size_of::<HashValue>() <= 32);
        assert!(std::mem::size_of::<super::super::set::SetValue>() <= 32);
    }

    #[test]
    fn long_value_converts() {
        let mut h = HashValue::default();
        h.set(b"a", &[b'x'; 11], limits(128, 10));
        assert_eq!(h.encoding(), "hashtable");
    }

    #[test]
    fn pack_remove_and_equality() {
        let mut a = HashValue::default();
        for i in 0..5 {
            a.set(format!("f{i}").as_bytes(), b"v", HashLimits::default());
        }
        assert!(a.remove(b"f2"));
        assert_eq!(a.len(), 4);
        assert_eq!(a.get(b"f3"), Some(&b"v"[..]));
        let mut b = a.clone();
        b.convert_to_map();
        assert_eq!(a, b);
    }

    #[test]
    fn scan_visits_everything_once_without_changes() {
        let mut h = HashValue::default();
        for i in 0..100 {
            h.set(format!("f{i}").as_bytes(), b"v", limits(8, 64));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut rounds = 0;
        loop {
            cursor = h.scan(cursor, 7, |f, _| {
                assert!(seen.insert(f.to_vec()));
            });
            rounds += 1;
            if cursor == 0 || rounds > 100 {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn rewrite_batches() {
        let mut h = HashValue::default();
        for i in 0..130 {
            h.set(format!("f{i}").as_bytes(), b"v", HashLimits::default());
        }
        let cmds = h.rewrite_commands(&Bytes::from_static(b"k"));
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].len(), 130);
        assert_eq!(cmds[2].len(), 2 + 4);
    }
}
