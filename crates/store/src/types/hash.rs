//! The hash type. Small hashes are one [`Pack`] of alternating fields and values
//! (Redis's listpack encoding: one allocation, linear lookups); past
//! `hash-max-listpack-entries` fields or a field/value longer than
//! `hash-max-listpack-value` bytes they become an insertion-ordered hash map
//! (`hashtable`), and never go back, as in Redis.

use std::collections::{BTreeSet, HashMap};

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
    /// A hash with field TTLs (or that had some): never converted back.
    Volatile(Box<Volatile>),
}

/// The fields of a hash with field TTLs and their expiry times.
#[derive(Debug, Clone, Default)]
pub struct Volatile {
    map: Map,
    /// field → unix ms at which it expires.
    ttl: HashMap<SmallBytes, u64>,
    /// (unix ms, field), soonest first: what is due is found without a scan.
    order: BTreeSet<(u64, SmallBytes)>,
}

impl Volatile {
    fn clear_ttl(&mut self, field: &[u8]) -> Option<u64> {
        let at = self.ttl.remove(field)?;
        self.order.remove(&(at, SmallBytes::from(field)));
        Some(at)
    }
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
            HashValue::Volatile(v) => v.map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            HashValue::Pack(_) => "listpack",
            HashValue::Map(_) | HashValue::Volatile(_) => "hashtable",
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            HashValue::Pack(p) => p.mem_usage() + 16,
            HashValue::Map(m) => map_mem(m),
            HashValue::Volatile(v) => {
                // Each TTL: the field again in the map and in the order, the time.
                map_mem(&v.map)
                    + v.ttl
                        .keys()
                        .map(|f| 2 * (f.heap_size() + std::mem::size_of::<SmallBytes>()) + 24)
                        .sum::<usize>()
            }
        }
    }

    pub fn iter(&self) -> HashIter<'_> {
        match self {
            HashValue::Pack(p) => HashIter::Pack(p.iter()),
            HashValue::Map(m) => HashIter::Map(m.entries()),
            HashValue::Volatile(v) => HashIter::Map(v.map.entries()),
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
            HashValue::Volatile(v) => v.map.get(field).map(|v| &v[..]),
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

    /// Sets `field` to `value`; true if the field is new. A TTL the field had is
    /// dropped (HSET makes a field persistent, as in Redis).
    pub fn set(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
        if let HashValue::Volatile(v) = self {
            v.clear_ttl(field);
        }
        self.set_keep_ttl(field, value, limits)
    }

    /// Sets `field` to `value`, keeping its TTL (HINCRBY, HSETEX … KEEPTTL).
    pub fn set_keep_ttl(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
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
            HashValue::Map(m) => map_set(m, field, value),
            HashValue::Volatile(v) => map_set(&mut v.map, field, value),
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
            HashValue::Volatile(v) => {
                v.clear_ttl(field);
                v.map.swap_remove(field).is_some()
            }
        }
    }

    /// The pair at position `idx` (0 ≤ idx < len).
    pub fn get_index(&self, idx: usize) -> Option<(&[u8], &[u8])> {
        match self {
            HashValue::Pack(_) => self.iter().nth(idx),
            HashValue::Map(m) => m.get_index(idx).map(|(f, v)| (&f[..], &v[..])),
            HashValue::Volatile(v) => v.map.get_index(idx).map(|(f, v)| (&f[..], &v[..])),
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
            HashValue::Map(m) => map_scan(m, cursor, count, f),
            HashValue::Volatile(v) => map_scan(&v.map, cursor, count, f),
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
        // Field TTLs as absolute times, so a replay never extends them.
        if let HashValue::Volatile(v) = self {
            let mut by_time: std::collections::BTreeMap<u64, Vec<&SmallBytes>> = Default::default();
            for (at, f) in &v.order {
                by_time.entry(*at).or_default().push(f);
            }
            for (at, fields) in by_time {
                let mut cmd = vec![
                    Bytes::from_static(b"HPEXPIREAT"),
                    key.clone(),
                    Bytes::from(at.to_string()),
                    Bytes::from_static(b"FIELDS"),
                    Bytes::from(fields.len().to_string()),
                ];
                cmd.extend(fields.into_iter().map(|f| Bytes::copy_from_slice(f)));
                out.push(cmd);
            }
        }
        out
    }

    /// Whether any field has a TTL.
    pub fn has_field_ttls(&self) -> bool {
        matches!(self, HashValue::Volatile(v) if !v.ttl.is_empty())
    }

    /// The field's expiry time (unix ms), if it has one.
    pub fn field_ttl(&self, field: &[u8]) -> Option<u64> {
        match self {
            HashValue::Volatile(v) => v.ttl.get(field).copied(),
            _ => None,
        }
    }

    /// Gives an existing field the expiry time `at` (unix ms); false if there is
    /// no such field.
    pub fn set_field_ttl(&mut self, field: &[u8], at: u64) -> bool {
        if !self.contains(field) {
            return false;
        }
        let mut v = match std::mem::take(self) {
            HashValue::Volatile(v) => v,
            HashValue::Map(m) => Box::new(Volatile {
                map: *m,
                ..Volatile::default()
            }),
            HashValue::Pack(p) => {
                let mut map = Map::with_capacity(p.len() / 2 + 1);
                let mut it = p.iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    map.insert(SmallBytes::from(f), SmallBytes::from(v));
                }
                Box::new(Volatile {
                    map,
                    ..Volatile::default()
                })
            }
        };
        v.clear_ttl(field);
        v.ttl.insert(SmallBytes::from(field), at);
        v.order.insert((at, SmallBytes::from(field)));
        *self = HashValue::Volatile(v);
        true
    }

    /// Removes the field's TTL; whether it had one.
    pub fn persist_field(&mut self, field: &[u8]) -> bool {
        match self {
            HashValue::Volatile(v) => v.clear_ttl(field).is_some(),
            _ => false,
        }
    }

    /// Whether a field TTL is due at `now` (unix ms).
    pub fn fields_due(&self, now: u64) -> bool {
        match self {
            HashValue::Volatile(v) => v.order.first().is_some_and(|(at, _)| *at <= now),
            _ => false,
        }
    }

    /// Removes the fields whose TTL is due at `now`; their names.
    pub fn remove_due_fields(&mut self, now: u64) -> Vec<Bytes> {
        let HashValue::Volatile(v) = self else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        while let Some((at, _)) = v.order.first() {
            if *at > now {
                break;
            }
            let Some((_, field)) = v.order.pop_first() else {
                break;
            };
            v.ttl.remove(&field[..]);
            v.map.swap_remove(&field[..]);
            gone.push(Bytes::copy_from_slice(&field));
        }
        gone
    }
}

fn map_mem(m: &Map) -> usize {
    m.iter()
        .map(|(f, v)| f.heap_size() + v.heap_size())
        .sum::<usize>()
        + m.allocation_size()
}

fn map_set(m: &mut Map, field: &[u8], value: &[u8]) -> bool {
    if let Some(v) = m.get_mut(field) {
        *v = SmallBytes::from(value);
        false
    } else {
        m.insert(SmallBytes::from(field), SmallBytes::from(value));
        true
    }
}

fn map_scan(m: &Map, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &[u8])) -> u64 {
    let (idx, next) = scan_positions(m.len(), cursor, count);
    for i in idx {
        if let Some((k, v)) = m.get_index(i) {
            f(k, v);
        }
    }
    next
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
