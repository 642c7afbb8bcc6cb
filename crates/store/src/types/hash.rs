//! The hash type. Small hashes are one [`Pack`] of alternating fields and values
//! (Redis's listpack encoding: one allocation, linear lookups); past
//! `hash-max-listpack-entries` fields or a field/value longer than
//! `hash-max-listpack-value` bytes they become an insertion-ordered hash map
//! (`hashtable`), and never go back, as in Redis.
//!
//! Field TTLs (Redis 7.4) follow the same thresholds: a small hash keeps its
//! fields, values and expiry times in one [`Pack`] of triples ([`PackEx`],
//! Redis's `listpackex`), a bigger one becomes [`Volatile`] (a map plus the times
//! in order). Neither goes back to the TTL-less encodings.

use std::collections::BTreeSet;

use bytes::Bytes;
use rand::Rng;

use super::pack::{Pack, Span};
use crate::config::{Config, Limit};
use crate::dense::{ChunkVec, DenseMap};
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
    /// A small hash with field TTLs (or that had some). Boxed: two unboxed packs
    /// would make every hash value bigger than 32 bytes.
    PackEx(Box<PackEx>),
    /// Boxed so that small hashes (the common case) stay one pointer-sized enum.
    Map(Box<Map>),
    /// A hash with field TTLs (or that had some): never converted back.
    Volatile(Box<Volatile>),
}

/// The fields of a hash with field TTLs and their expiry times.
#[derive(Debug, Clone, Default)]
pub struct Volatile {
    map: Map,
    /// Each field's expiry (unix ms, 0: none) at the field's position in `map`,
    /// moved with it by `swap_remove`: 8 bytes a field instead of a field→time map
    /// holding every field with a TTL once more.
    ttl: ChunkVec<u64>,
    /// (unix ms, field), soonest first: what is due is found without a scan.
    order: BTreeSet<(u64, SmallBytes)>,
}

impl Volatile {
    fn from_map(map: Map) -> Self {
        let mut ttl = ChunkVec::new();
        for _ in 0..map.len() {
            ttl.push(0);
        }
        Volatile {
            map,
            ttl,
            order: BTreeSet::new(),
        }
    }

    fn field_ttl(&self, field: &[u8]) -> Option<u64> {
        let i = self.map.get_index_of(field)?;
        self.ttl.get(i).copied().filter(|at| *at != 0)
    }

    fn clear_ttl(&mut self, field: &[u8]) -> Option<u64> {
        let i = self.map.get_index_of(field)?;
        let at = std::mem::take(self.ttl.get_mut(i)?);
        if at == 0 {
            return None;
        }
        self.order.remove(&(at, SmallBytes::from(field)));
        Some(at)
    }

    /// Gives an existing field the expiry `at`.
    fn set_ttl(&mut self, field: &[u8], at: u64) {
        let Some(slot) = self
            .map
            .get_index_of(field)
            .and_then(|i| self.ttl.get_mut(i))
        else {
            return;
        };
        let old = std::mem::replace(slot, at);
        if old != 0 {
            self.order.remove(&(old, SmallBytes::from(field)));
        }
        self.order.insert((at, SmallBytes::from(field)));
    }

    fn set(&mut self, field: &[u8], value: &[u8]) -> bool {
        let new = map_set(&mut self.map, field, value);
        if new {
            self.ttl.push(0);
        }
        new
    }

    /// Takes the field out of the map and its time out of `ttl` (not `order`);
    /// the time it had (0: none).
    fn take(&mut self, field: &[u8]) -> Option<u64> {
        let (i, _, _) = self.map.swap_remove_full(field)?;
        Some(self.ttl.swap_remove(i))
    }

    fn remove(&mut self, field: &[u8]) -> bool {
        match self.take(field) {
            Some(0) => true,
            Some(at) => {
                self.order.remove(&(at, SmallBytes::from(field)));
                true
            }
            None => false,
        }
    }
}

/// A small hash with field TTLs: one [`Pack`] of (field, value, expiry) triples,
/// the expiry written by [`ttl_entry`] (empty: no TTL), so a TTL costs at most 7
/// bytes instead of map, time-map and order entries.
#[derive(Debug, Clone, Default)]
pub struct PackEx {
    /// field, value, expiry, field, value, expiry …
    pack: Pack,
    /// The soonest expiry (unix ms), 0 if no field has one: `fields_due` and
    /// `has_field_ttls` without a scan. Kept exact by every change.
    min: u64,
}

/// Where a field's triple is in a [`PackEx`]: edits go value or expiry first,
/// then anything before them, so the spans stay valid.
#[derive(Clone, Copy)]
struct Slot {
    start: usize,
    value: Span,
    ttl: Span,
    at: u64,
}

/// An expiry time as a pack entry: unix ms in little-endian bytes without the
/// trailing zeros (6 bytes for today's times); 0 (no TTL) is the empty entry.
fn ttl_entry(at: u64) -> ([u8; 8], usize) {
    (at.to_le_bytes(), 8 - (at.leading_zeros() / 8) as usize)
}

/// The time an expiry entry holds (0: none).
fn ttl_of(entry: &[u8]) -> u64 {
    entry[..entry.len().min(8)]
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

impl PackEx {
    /// A `Pack` hash's pairs, none with a TTL yet.
    fn from_pairs(p: &Pack) -> Self {
        let mut it = p.iter();
        let entries = std::iter::from_fn(|| {
            let f = it.next()?;
            let v = it.next()?;
            Some([f, v, &[][..]])
        })
        .flatten();
        PackEx {
            pack: Pack::from_entries(entries),
            min: 0,
        }
    }

    fn len(&self) -> usize {
        self.pack.len() / 3
    }

    /// (field, value, expiry entry) in order.
    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> + '_ {
        let mut it = self.pack.iter();
        std::iter::from_fn(move || Some((it.next()?, it.next()?, it.next()?)))
    }

    fn slot(&self, field: &[u8]) -> Option<Slot> {
        let mut spans = self.pack.spans();
        while let Some((fspan, f)) = spans.next() {
            let (value, _) = spans.next()?;
            let (ttl, t) = spans.next()?;
            if f == field {
                return Some(Slot {
                    start: fspan.start,
                    value,
                    ttl,
                    at: ttl_of(t),
                });
            }
        }
        None
    }

    fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.entries()
            .find(|(f, _, _)| *f == field)
            .map(|(_, v, _)| v)
    }

    fn recompute_min(&mut self) {
        self.min = self
            .entries()
            .map(|(_, _, t)| ttl_of(t))
            .filter(|at| *at != 0)
            .min()
            .unwrap_or(0);
    }

    /// Gives the field at `slot` the expiry `at` (0: none) and keeps `min` exact.
    fn set_slot_ttl(&mut self, slot: Slot, at: u64) {
        let (bytes, n) = ttl_entry(at);
        self.pack.replace(slot.ttl, &bytes[..n]);
        if at != 0 && (self.min == 0 || at < self.min) {
            self.min = at;
        } else if slot.at != 0 && slot.at == self.min && at != slot.at {
            // The soonest time was this field's and moved later or went away.
            self.recompute_min();
        }
    }

    /// Removes the field's TTL; the time it had.
    fn persist(&mut self, field: &[u8]) -> Option<u64> {
        let slot = self.slot(field).filter(|s| s.at != 0)?;
        self.set_slot_ttl(slot, 0);
        Some(slot.at)
    }

    fn remove(&mut self, field: &[u8]) -> bool {
        let Some(slot) = self.slot(field) else {
            return false;
        };
        self.pack.remove_span(slot.start, slot.ttl.end, 3);
        if slot.at != 0 && slot.at == self.min {
            self.recompute_min();
        }
        true
    }

    /// The same fields and TTLs as a map: past the compact limits.
    fn to_volatile(&self) -> Volatile {
        let mut v = Volatile::from_map(Map::with_capacity(self.len() + 1));
        for (f, val, t) in self.entries() {
            v.set(f, val);
            let at = ttl_of(t);
            if at != 0 {
                v.set_ttl(f, at);
            }
        }
        v
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
    /// Triples: the expiry entry is skipped.
    PackEx(super::pack::PackIter<'a>),
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
            HashIter::PackEx(it) => {
                let f = it.next()?;
                let v = it.next()?;
                it.next()?;
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
            HashValue::PackEx(px) => px.len(),
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
            HashValue::PackEx(_) => "listpackex",
            HashValue::Map(_) | HashValue::Volatile(_) => "hashtable",
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            HashValue::Pack(p) => p.mem_usage() + 16,
            HashValue::PackEx(px) => px.pack.mem_usage() + std::mem::size_of::<PackEx>() + 16,
            HashValue::Map(m) => map_mem(m),
            HashValue::Volatile(v) => {
                // Each TTL: the field again in the order with its time (and the
                // B-tree's spare room, about a quarter).
                let entry = std::mem::size_of::<(u64, SmallBytes)>();
                map_mem(&v.map)
                    + v.ttl.allocation_size()
                    + v.order
                        .iter()
                        .map(|(_, f)| f.heap_size() + entry + entry / 4)
                        .sum::<usize>()
            }
        }
    }

    pub fn iter(&self) -> HashIter<'_> {
        match self {
            HashValue::Pack(p) => HashIter::Pack(p.iter()),
            HashValue::PackEx(px) => HashIter::PackEx(px.pack.iter()),
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
            HashValue::PackEx(px) => px.get(field),
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

    /// Leaves the compact encodings: `Pack` becomes `Map`, `PackEx` `Volatile`.
    fn convert_to_map(&mut self) {
        match self {
            HashValue::Pack(p) => {
                let mut m = Map::with_capacity(p.len() / 2 + 1);
                let mut it = p.iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    m.insert(SmallBytes::from(f), SmallBytes::from(v));
                }
                *self = HashValue::Map(Box::new(m));
            }
            HashValue::PackEx(px) => {
                *self = HashValue::Volatile(Box::new(px.to_volatile()));
            }
            HashValue::Map(_) | HashValue::Volatile(_) => {}
        }
    }

    /// Sets `field` to `value`; true if the field is new. A TTL the field had is
    /// dropped (HSET makes a field persistent, as in Redis).
    pub fn set(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
        self.persist_field(field);
        self.set_keep_ttl(field, value, limits)
    }

    /// Sets `field` to `value`, keeping its TTL (HINCRBY, HSETEX … KEEPTTL).
    pub fn set_keep_ttl(&mut self, field: &[u8], value: &[u8], limits: HashLimits) -> bool {
        if matches!(self, HashValue::Pack(_) | HashValue::PackEx(_))
            && (field.len() > limits.max_value || value.len() > limits.max_value)
        {
            self.convert_to_map();
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
            HashValue::PackEx(px) => match px.slot(field) {
                Some(slot) => {
                    px.pack.replace(slot.value, value);
                    false
                }
                None => {
                    px.pack.push(field);
                    px.pack.push(value);
                    px.pack.push(&[]);
                    if px.len() > limits.max_entries {
                        self.convert_to_map();
                    }
                    true
                }
            },
            HashValue::Map(m) => map_set(m, field, value),
            HashValue::Volatile(v) => v.set(field, value),
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
            HashValue::PackEx(px) => px.remove(field),
            HashValue::Map(m) => m.swap_remove(field).is_some(),
            HashValue::Volatile(v) => v.remove(field),
        }
    }

    /// The pair at position `idx` (0 ≤ idx < len).
    pub fn get_index(&self, idx: usize) -> Option<(&[u8], &[u8])> {
        match self {
            HashValue::Pack(_) | HashValue::PackEx(_) => self.iter().nth(idx),
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
            HashValue::Pack(_) | HashValue::PackEx(_) => {
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
        let mut by_time: std::collections::BTreeMap<u64, Vec<&[u8]>> = Default::default();
        match self {
            HashValue::Volatile(v) => {
                for (at, f) in &v.order {
                    by_time.entry(*at).or_default().push(f);
                }
            }
            HashValue::PackEx(px) => {
                for (f, _, t) in px.entries() {
                    let at = ttl_of(t);
                    if at != 0 {
                        by_time.entry(at).or_default().push(f);
                    }
                }
            }
            HashValue::Pack(_) | HashValue::Map(_) => {}
        }
        for (at, fields) in by_time {
            let mut cmd = vec![
                Bytes::from_static(b"HPEXPIREAT"),
                key.clone(),
                Bytes::from(at.to_string()),
                Bytes::from_static(b"FIELDS"),
                Bytes::from(fields.len().to_string()),
            ];
            cmd.extend(fields.into_iter().map(Bytes::copy_from_slice));
            out.push(cmd);
        }
        out
    }

    /// Whether any field has a TTL.
    pub fn has_field_ttls(&self) -> bool {
        match self {
            HashValue::Volatile(v) => !v.order.is_empty(),
            HashValue::PackEx(px) => px.min != 0,
            HashValue::Pack(_) | HashValue::Map(_) => false,
        }
    }

    /// The field's expiry time (unix ms), if it has one.
    pub fn field_ttl(&self, field: &[u8]) -> Option<u64> {
        match self {
            HashValue::Volatile(v) => v.field_ttl(field),
            HashValue::PackEx(px) => px.slot(field).map(|s| s.at).filter(|at| *at != 0),
            HashValue::Pack(_) | HashValue::Map(_) => None,
        }
    }

    /// Gives an existing field the expiry time `at` (unix ms); false if there is
    /// no such field. A `Pack` hash within `limits` becomes `PackEx` (one within
    /// them unless the limits were lowered since), any other `Volatile`.
    pub fn set_field_ttl(&mut self, field: &[u8], at: u64, limits: HashLimits) -> bool {
        if !self.contains(field) {
            return false;
        }
        // 0 is the compact form's "no TTL"; a time that long past is due anyway.
        let at = at.max(1);
        if let HashValue::Pack(p) = self {
            if p.len() / 2 <= limits.max_entries && p.iter().all(|e| e.len() <= limits.max_value) {
                *self = HashValue::PackEx(Box::new(PackEx::from_pairs(p)));
            }
        }
        if let HashValue::PackEx(px) = self {
            if let Some(slot) = px.slot(field) {
                px.set_slot_ttl(slot, at);
            }
            return true;
        }
        let mut v = match std::mem::take(self) {
            HashValue::Volatile(v) => v,
            HashValue::PackEx(px) => Box::new(px.to_volatile()),
            HashValue::Map(m) => Box::new(Volatile::from_map(*m)),
            HashValue::Pack(p) => {
                let mut map = Map::with_capacity(p.len() / 2 + 1);
                let mut it = p.iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    map.insert(SmallBytes::from(f), SmallBytes::from(v));
                }
                Box::new(Volatile::from_map(map))
            }
        };
        v.set_ttl(field, at);
        *self = HashValue::Volatile(v);
        true
    }

    /// Removes the field's TTL; whether it had one.
    pub fn persist_field(&mut self, field: &[u8]) -> bool {
        match self {
            HashValue::Volatile(v) => v.clear_ttl(field).is_some(),
            HashValue::PackEx(px) => px.persist(field).is_some(),
            HashValue::Pack(_) | HashValue::Map(_) => false,
        }
    }

    /// Whether a field TTL is due at `now` (unix ms).
    pub fn fields_due(&self, now: u64) -> bool {
        match self {
            HashValue::Volatile(v) => v.order.first().is_some_and(|(at, _)| *at <= now),
            HashValue::PackEx(px) => px.min != 0 && px.min <= now,
            HashValue::Pack(_) | HashValue::Map(_) => false,
        }
    }

    /// Removes the fields whose TTL is due at `now`; their names, soonest first.
    pub fn remove_due_fields(&mut self, now: u64) -> Vec<Bytes> {
        if !self.fields_due(now) {
            return Vec::new();
        }
        if let HashValue::PackEx(px) = self {
            let mut gone = Vec::new();
            let mut kept = Vec::with_capacity(px.pack.len());
            for (f, v, t) in px.entries() {
                let at = ttl_of(t);
                if at != 0 && at <= now {
                    gone.push((at, f));
                } else {
                    kept.extend([f, v, t]);
                }
            }
            gone.sort_unstable();
            let gone = gone
                .into_iter()
                .map(|(_, f)| Bytes::copy_from_slice(f))
                .collect();
            px.pack = Pack::from_entries(kept);
            px.recompute_min();
            return gone;
        }
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
            v.take(&field[..]);
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

    fn pack_of(n: usize) -> HashValue {
        let mut h = HashValue::default();
        for i in 0..n {
            h.set(
                format!("f{i}").as_bytes(),
                format!("v{i}").as_bytes(),
                HashLimits::default(),
            );
        }
        assert_eq!(h.encoding(), "listpack");
        h
    }

    fn min_of(h: &HashValue) -> u64 {
        match h {
            HashValue::PackEx(px) => px.min,
            _ => panic!("not listpackex: {}", h.encoding()),
        }
    }

    #[test]
    fn ttl_entries_are_short_and_round_trip() {
        for at in [1u64, 255, 256, 1_780_000_000_000, u64::MAX] {
            let (b, n) = ttl_entry(at);
            assert_eq!(ttl_of(&b[..n]), at);
        }
        assert_eq!(ttl_entry(0).1, 0, "no TTL is the empty entry");
        assert_eq!(
            ttl_entry(1_780_000_000_000).1,
            6,
            "today's times take 6 bytes"
        );
    }

    #[test]
    fn pack_gets_a_ttl_then_grows_past_the_entries_limit() {
        let lim = limits(4, 10);
        let mut h = HashValue::default();
        for f in ["a", "b", "c"] {
            h.set(f.as_bytes(), b"1", lim);
        }
        assert!(!h.set_field_ttl(b"zz", 500, lim), "no such field");
        assert_eq!(h.encoding(), "listpack", "a refused TTL changes nothing");
        assert!(h.set_field_ttl(b"b", 500, lim));
        assert_eq!(h.encoding(), "listpackex");
        assert!(h.has_field_ttls());
        assert_eq!(h.len(), 3);
        assert_eq!(h.field_ttl(b"b"), Some(500));
        assert_eq!(h.field_ttl(b"a"), None);
        assert!(h.set(b"d", b"4", lim));
        assert_eq!(h.encoding(), "listpackex", "4 fields: within the limit");
        assert!(h.set(b"e", b"5", lim));
        assert_eq!(h.encoding(), "hashtable", "5 fields: past it");
        assert_eq!(h.len(), 5);
        assert_eq!(h.field_ttl(b"b"), Some(500));
        assert_eq!(h.get(b"b"), Some(&b"1"[..]));
        assert!(h.fields_due(500));
        // Never back, even once small and without TTLs.
        assert!(h.persist_field(b"b"));
        for f in ["a", "b", "c", "d"] {
            h.remove(f.as_bytes());
        }
        assert_eq!(h.encoding(), "hashtable");
    }

    #[test]
    fn long_field_or_value_leaves_the_compact_form_with_its_ttls() {
        let lim = limits(128, 10);
        for (f, v) in [
            (&b"long"[..], &[b'x'; 11][..]),
            (&[b'y'; 11][..], &b"1"[..]),
        ] {
            let mut h = HashValue::default();
            h.set(b"a", b"1", lim);
            h.set(b"b", b"2", lim);
            h.set_field_ttl(b"a", 700, lim);
            h.set_field_ttl(b"b", 900, lim);
            assert_eq!(h.encoding(), "listpackex");
            h.set(f, v, lim);
            assert_eq!(h.encoding(), "hashtable");
            assert_eq!(h.get(f), Some(v));
            assert_eq!(h.field_ttl(b"a"), Some(700));
            assert_eq!(h.field_ttl(b"b"), Some(900));
            assert_eq!(h.remove_due_fields(800), vec![Bytes::from_static(b"a")]);
        }
        // HSETEX … KEEPTTL with a long value too.
        let mut h = HashValue::default();
        h.set(b"a", b"1", lim);
        h.set_field_ttl(b"a", 700, lim);
        h.set_keep_ttl(b"a", &[b'z'; 11], lim);
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.field_ttl(b"a"), Some(700));
    }

    #[test]
    fn pack_past_lowered_limits_goes_straight_to_the_map() {
        let mut h = pack_of(5);
        assert!(h.set_field_ttl(b"f1", 100, limits(4, 64)));
        assert_eq!(h.encoding(), "hashtable");
        let mut h = pack_of(5);
        assert!(h.set_field_ttl(b"f1", 100, limits(128, 1)));
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.field_ttl(b"f1"), Some(100));
    }

    #[test]
    fn pack_ex_reads_and_writes_as_the_map_form() {
        let lim = HashLimits::default();
        let mut h = pack_of(5);
        h.set_field_ttl(b"f3", 3000, lim);
        h.set_field_ttl(b"f1", 1000, lim);
        h.set_field_ttl(b"f4", 3000, lim);
        assert_eq!(h.encoding(), "listpackex");
        assert_eq!(min_of(&h), 1000);
        // Reads: order kept, TTL entries never seen as fields or values.
        let all: Vec<_> = h.iter().collect();
        assert_eq!(all.len(), 5);
        assert_eq!(all[1], (&b"f1"[..], &b"v1"[..]));
        assert_eq!(h.get_index(4), Some((&b"f4"[..], &b"v4"[..])));
        assert_eq!(h.get_index(5), None);
        assert_eq!(h.get(b"f3"), Some(&b"v3"[..]));
        assert_eq!(h.get(b"v3"), None);
        let mut rng = rand::thread_rng();
        for _ in 0..20 {
            let (f, v) = h.random(&mut rng).expect("not empty");
            assert_eq!(h.get(f), Some(v));
        }
        let mut scanned = Vec::new();
        assert_eq!(
            h.scan(0, 1, |f, v| scanned.push((f.to_vec(), v.to_vec()))),
            0
        );
        assert_eq!(scanned.len(), 5, "returned whole, as a listpack");
        // The same content in the map form is equal, TTLs aside (as for Volatile).
        let mut map = h.clone();
        map.convert_to_map();
        assert_eq!(map.encoding(), "hashtable");
        assert_eq!(map.field_ttl(b"f1"), Some(1000));
        assert_eq!(h, map);
        assert_eq!(h, pack_of(5));
        assert!(h.mem_usage() < map.mem_usage());
        // HSET drops the TTL (the soonest: the minimum moves on), HINCRBY keeps it.
        assert!(!h.set(b"f1", b"x", lim));
        assert_eq!(h.field_ttl(b"f1"), None);
        assert_eq!(min_of(&h), 3000);
        assert!(!h.set_keep_ttl(b"f3", b"y", lim));
        assert_eq!(
            (h.get(b"f3"), h.field_ttl(b"f3")),
            (Some(&b"y"[..]), Some(3000))
        );
        assert!(h.set_keep_ttl(b"new", b"n", lim));
        assert_eq!((h.len(), h.field_ttl(b"new")), (6, None));
        // A later time for the soonest field, then an earlier one.
        h.set_field_ttl(b"f3", 5000, lim);
        assert_eq!(min_of(&h), 3000, "f4 is still due at 3000");
        h.set_field_ttl(b"f4", 6000, lim);
        assert_eq!(min_of(&h), 5000);
        h.set_field_ttl(b"f0", 10, lim);
        assert_eq!(min_of(&h), 10);
        // Removing or persisting the soonest.
        assert!(h.remove(b"f0"));
        assert!(!h.remove(b"f0"));
        assert_eq!(min_of(&h), 5000);
        assert!(h.persist_field(b"f3"));
        assert!(!h.persist_field(b"f3"));
        assert!(!h.persist_field(b"f2"), "no TTL");
        assert!(!h.persist_field(b"zz"), "no field");
        assert_eq!(min_of(&h), 6000);
        assert!(h.has_field_ttls());
        assert!(h.persist_field(b"f4"));
        assert_eq!(min_of(&h), 0);
        assert!(!h.has_field_ttls());
        assert!(!h.fields_due(u64::MAX));
        assert_eq!(h.encoding(), "listpackex", "stays, as Volatile does");
        assert_eq!(h.rewrite_commands(&Bytes::from_static(b"k")).len(), 1);
    }

    #[test]
    fn pack_ex_due_fields_go_soonest_first() {
        let lim = HashLimits::default();
        let mut h = pack_of(6);
        for (f, at) in [("f5", 300), ("f0", 100), ("f2", 300), ("f3", 900)] {
            h.set_field_ttl(f.as_bytes(), at, lim);
        }
        assert!(!h.fields_due(99));
        assert!(h.remove_due_fields(99).is_empty());
        assert!(h.fields_due(100));
        assert_eq!(
            h.remove_due_fields(300),
            vec![
                Bytes::from_static(b"f0"),
                Bytes::from_static(b"f2"),
                Bytes::from_static(b"f5")
            ]
        );
        assert_eq!(h.encoding(), "listpackex");
        assert_eq!(h.len(), 3);
        assert_eq!(min_of(&h), 900);
        assert!(!h.fields_due(899));
        let left: Vec<_> = h.iter().map(|(f, _)| f.to_vec()).collect();
        assert_eq!(left, vec![b"f1".to_vec(), b"f3".to_vec(), b"f4".to_vec()]);
        assert_eq!(h.remove_due_fields(1000), vec![Bytes::from_static(b"f3")]);
        assert_eq!((h.len(), min_of(&h), h.has_field_ttls()), (2, 0, false));
    }

    #[test]
    fn pack_ex_rewrite_groups_absolute_times() {
        let lim = HashLimits::default();
        let mut h = pack_of(4);
        h.set_field_ttl(b"f0", 2000, lim);
        h.set_field_ttl(b"f2", 1000, lim);
        h.set_field_ttl(b"f3", 2000, lim);
        let s = |v: &[&str]| {
            v.iter()
                .map(|x| Bytes::from(x.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            h.rewrite_commands(&Bytes::from_static(b"k")),
            vec![
                s(&["HSET", "k", "f0", "v0", "f1", "v1", "f2", "v2", "f3", "v3"]),
                s(&["HPEXPIREAT", "k", "1000", "FIELDS", "1", "f2"]),
                s(&["HPEXPIREAT", "k", "2000", "FIELDS", "2", "f0", "f3"]),
            ]
        );
    }

    /// Random edits on a compact hash and on the map form agree on every answer,
    /// the cached minimum included.
    #[test]
    fn pack_ex_agrees_with_the_map_form() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let lim = HashLimits::default();
        for _ in 0..50 {
            let mut px = HashValue::default();
            px.set(b"seed", b"0", lim);
            px.set_field_ttl(b"seed", 1 + rng.gen_range(0..50), lim);
            let mut map = px.clone();
            map.convert_to_map();
            assert_eq!((px.encoding(), map.encoding()), ("listpackex", "hashtable"));
            for step in 0..200u64 {
                let f = format!("f{}", rng.gen_range(0..12));
                let f = f.as_bytes();
                let at = 1 + rng.gen_range(0..100);
                let (a, b) = match rng.gen_range(0..7) {
                    0 => (px.set(f, b"v", lim), map.set(f, b"v", lim)),
                    1 => (
                        px.set_keep_ttl(f, &[b'k'; 3], lim),
                        map.set_keep_ttl(f, &[b'k'; 3], lim),
                    ),
                    2 => (px.remove(f), map.remove(f)),
                    3 | 4 => (px.set_field_ttl(f, at, lim), map.set_field_ttl(f, at, lim)),
                    5 => (px.persist_field(f), map.persist_field(f)),
                    _ => {
                        let now = step / 2;
                        let (x, y) = (px.remove_due_fields(now), map.remove_due_fields(now));
                        assert_eq!(x, y);
                        (x.is_empty(), y.is_empty())
                    }
                };
                assert_eq!(a, b);
                assert_eq!(px.encoding(), "listpackex");
                assert_eq!(px, map);
                assert_eq!(px.has_field_ttls(), map.has_field_ttls());
                for now in [0, step / 2, 50, 100] {
                    assert_eq!(px.fields_due(now), map.fields_due(now), "now {now}");
                }
                for (f, _) in map.iter() {
                    assert_eq!(px.field_ttl(f), map.field_ttl(f));
                }
                let (mut x, mut y) = (
                    px.rewrite_commands(&Bytes::from_static(b"k")),
                    map.rewrite_commands(&Bytes::from_static(b"k")),
                );
                for c in x.iter_mut().chain(y.iter_mut()) {
                    c.sort();
                }
                x.sort();
                y.sort();
                assert_eq!(x, y);
            }
        }
    }

    /// The map form's times follow their fields through swap-removals (across
    /// chunk boundaries of the time column): checked against a plain model.
    #[test]
    fn volatile_times_follow_their_fields() {
        use rand::SeedableRng;
        use std::collections::HashMap;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let lim = limits(4, 64);
        let mut h = HashValue::default();
        let mut model: HashMap<Vec<u8>, (Vec<u8>, u64)> = HashMap::new();
        for step in 0..30_000u64 {
            let f = format!("field{}", rng.gen_range(0..3000)).into_bytes();
            let now = step / 40;
            match rng.gen_range(0..10) {
                0..=3 => {
                    let v = step.to_string().into_bytes();
                    assert_eq!(h.set(&f, &v, lim), !model.contains_key(&f));
                    model.insert(f, (v, 0));
                }
                4..=6 => {
                    let at = now + rng.gen_range(1..400);
                    let had = model.get_mut(&f).map(|e| e.1 = at).is_some();
                    assert_eq!(h.set_field_ttl(&f, at, lim), had);
                }
                7 => assert_eq!(h.remove(&f), model.remove(&f).is_some()),
                8 => {
                    let had = model.get_mut(&f).map(|e| std::mem::take(&mut e.1));
                    assert_eq!(h.persist_field(&f), had.is_some_and(|at| at != 0));
                }
                _ => {
                    let mut due: Vec<(u64, Vec<u8>)> = model
                        .iter()
                        .filter(|(_, (_, at))| *at != 0 && *at <= now)
                        .map(|(f, (_, at))| (*at, f.clone()))
                        .collect();
                    due.sort();
                    for (_, f) in &due {
                        model.remove(f);
                    }
                    let gone: Vec<Vec<u8>> = due.into_iter().map(|(_, f)| f).collect();
                    let got: Vec<Vec<u8>> = h
                        .remove_due_fields(now)
                        .iter()
                        .map(|b| b.to_vec())
                        .collect();
                    assert_eq!(got, gone);
                }
            }
            if step % 1000 == 999 {
                assert_eq!(h.len(), model.len());
                for (f, (v, at)) in &model {
                    assert_eq!(h.get(f), Some(&v[..]));
                    assert_eq!(h.field_ttl(f), (*at != 0).then_some(*at));
                }
                assert_eq!(h.has_field_ttls(), model.values().any(|(_, at)| *at != 0));
            }
        }
        assert_eq!(h.encoding(), "hashtable");
        assert!(h.len() > 1000);
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
