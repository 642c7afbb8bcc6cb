//! The set type, with Redis 7.2's three encodings: `intset` (a sorted `Vec<i64>`
//! while every member is a canonical integer, up to `set-max-intset-entries`),
//! `listpack` (one [`Pack`], up to `set-max-listpack-entries` members of at most
//! `set-max-listpack-value` bytes) and `hashtable` (an insertion-ordered hash set,
//! which lets random picks and scans work by index). A set never converts back to a
//! smaller encoding, as in Redis.

use std::borrow::Cow;

use bytes::Bytes;
use rand::Rng;

use super::hash::scan_positions;
use super::pack::Pack;
use crate::config::{Config, Limit};
use crate::dense::DenseSet;
use crate::num;
use crate::small_bytes::SmallBytes;

type Members = DenseSet<SmallBytes>;

#[derive(Debug, Clone, Copy)]
pub struct SetLimits {
    pub max_intset: usize,
    pub max_listpack_entries: usize,
    pub max_listpack_value: usize,
}

impl SetLimits {
    pub fn from_config(config: &Config) -> Self {
        SetLimits {
            max_intset: config.encoding.get_usize(Limit::SetMaxIntsetEntries),
            max_listpack_entries: config.encoding.get_usize(Limit::SetMaxListpackEntries),
            max_listpack_value: config.encoding.get_usize(Limit::SetMaxListpackValue),
        }
    }
}

impl Default for SetLimits {
    fn default() -> Self {
        SetLimits {
            max_intset: 512,
            max_listpack_entries: 128,
            max_listpack_value: 64,
        }
    }
}

#[derive(Debug, Clone)]
pub enum SetValue {
    Ints(Vec<i64>),
    Pack(Pack),
    /// Boxed so that small sets stay small.
    Map(Box<Members>),
}

impl Default for SetValue {
    fn default() -> Self {
        SetValue::Ints(Vec::new())
    }
}

impl PartialEq for SetValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|m| other.contains(&m))
    }
}

pub enum SetIter<'a> {
    Ints(std::slice::Iter<'a, i64>),
    Pack(super::pack::PackIter<'a>),
    Map(crate::dense::ChunkIter<'a, (SmallBytes, ())>),
}

impl<'a> Iterator for SetIter<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SetIter::Ints(it) => it.next().map(|n| Cow::Owned(int_bytes(*n))),
            SetIter::Pack(it) => it.next().map(Cow::Borrowed),
            SetIter::Map(it) => it.next().map(|(b, _)| Cow::Borrowed(&b[..])),
        }
    }
}

fn int_bytes(n: i64) -> Vec<u8> {
    itoa::Buffer::new().format(n).as_bytes().to_vec()
}

/// Owned `Bytes` for a member, copying only when it is borrowed.
pub fn member_bytes(m: Cow<'_, [u8]>) -> Bytes {
    match m {
        Cow::Borrowed(b) => Bytes::copy_from_slice(b),
        Cow::Owned(v) => Bytes::from(v),
    }
}

impl SetValue {
    pub fn len(&self) -> usize {
        match self {
            SetValue::Ints(v) => v.len(),
            SetValue::Pack(p) => p.len(),
            SetValue::Map(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            SetValue::Ints(_) => "intset",
            SetValue::Pack(_) => "listpack",
            SetValue::Map(_) => "hashtable",
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            SetValue::Ints(v) => v.capacity() * 8 + 16,
            SetValue::Pack(p) => p.mem_usage() + 16,
            SetValue::Map(m) => {
                m.keys().map(|b| b.heap_size()).sum::<usize>() + m.allocation_size()
            }
        }
    }

    pub fn iter(&self) -> SetIter<'_> {
        match self {
            SetValue::Ints(v) => SetIter::Ints(v.iter()),
            SetValue::Pack(p) => SetIter::Pack(p.iter()),
            SetValue::Map(m) => SetIter::Map(m.entries()),
        }
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        match self {
            SetValue::Ints(v) => num::parse_i64(m).is_some_and(|n| v.binary_search(&n).is_ok()),
            SetValue::Pack(p) => p.iter().any(|x| x == m),
            SetValue::Map(s) => s.contains_key(m),
        }
    }

    /// An empty set already in the `hashtable` encoding: RESTORE of a set too big
    /// for the compact encodings starts there, as Redis's loader does.
    pub fn new_hashtable(capacity: usize) -> Self {
        SetValue::Map(Box::new(Members::with_capacity(capacity)))
    }

    /// The same members in the `hashtable` encoding (RESTORE of an intset or
    /// listpack with more members than this server's limits allow).
    pub fn into_hashtable(mut self) -> Self {
        if !matches!(self, SetValue::Map(_)) {
            self.convert_to_map(0);
        }
        self
    }

    fn convert_to_map(&mut self, extra: usize) {
        let mut s = Members::with_capacity(self.len() + extra);
        for m in self.iter() {
            s.insert(SmallBytes::from(&m[..]), ());
        }
        *self = SetValue::Map(Box::new(s));
    }

    fn convert_to_pack(&mut self) {
        let mut p = Pack::new();
        for m in self.iter() {
            p.push(&m);
        }
        *self = SetValue::Pack(p);
    }

    /// Adds a member; true if it was not there.
    pub fn add(&mut self, m: &[u8], limits: SetLimits) -> bool {
        match self {
            SetValue::Ints(v) => {
                if let Some(n) = num::parse_i64(m) {
                    match v.binary_search(&n) {
                        Ok(_) => return false,
                        Err(pos) => v.insert(pos, n),
                    }
                    if v.len() > limits.max_intset {
                        self.convert_to_map(0);
                    }
                    return true;
                }
                let widest = match (v.first(), v.last()) {
                    (Some(a), Some(b)) => int_bytes(*a).len().max(int_bytes(*b).len()),
                    _ => 0,
                };
                if v.len() < limits.max_listpack_entries
                    && m.len() <= limits.max_listpack_value
                    && widest <= limits.max_listpack_value
                {
                    self.convert_to_pack();
                } else {
                    self.convert_to_map(1);
                }
                self.add(m, limits)
            }
            SetValue::Pack(p) => {
                if p.iter().any(|x| x == m) {
                    return false;
                }
                if p.len() < limits.max_listpack_entries && m.len() <= limits.max_listpack_value {
                    p.push(m);
                    return true;
                }
                self.convert_to_map(1);
                self.add(m, limits)
            }
            SetValue::Map(s) => {
                if s.contains_key(m) {
                    false
                } else {
                    s.insert(SmallBytes::from(m), ());
                    true
                }
            }
        }
    }

    /// Removes a member; true if it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            SetValue::Ints(v) => match num::parse_i64(m).map(|n| v.binary_search(&n)) {
                Some(Ok(pos)) => {
                    v.remove(pos);
                    true
                }
                _ => false,
            },
            SetValue::Pack(p) => {
                let found = p.spans().find(|(_, x)| *x == m).map(|(s, _)| s);
                match found {
                    Some(span) => {
                        p.remove_span(span.start, span.end, 1);
                        true
                    }
                    None => false,
                }
            }
            SetValue::Map(s) => s.swap_remove(m).is_some(),
        }
    }

    pub fn get_index(&self, idx: usize) -> Option<Cow<'_, [u8]>> {
        match self {
            SetValue::Ints(v) => v.get(idx).map(|n| Cow::Owned(int_bytes(*n))),
            SetValue::Pack(p) => p.get(idx).map(Cow::Borrowed),
            SetValue::Map(s) => s.get_index(idx).map(|(b, _)| Cow::Borrowed(&b[..])),
        }
    }

    pub fn random(&self, rng: &mut impl Rng) -> Option<Cow<'_, [u8]>> {
        if self.is_empty() {
            return None;
        }
        self.get_index(rng.gen_range(0..self.len()))
    }

    /// Removes and returns a random member.
    pub fn pop_random(&mut self, rng: &mut impl Rng) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let idx = rng.gen_range(0..self.len());
        match self {
            SetValue::Ints(v) => Some(Bytes::from(int_bytes(v.remove(idx)))),
            SetValue::Pack(p) => {
                let (span, m) = p.spans().nth(idx)?;
                let out = Bytes::copy_from_slice(m);
                p.remove_span(span.start, span.end, 1);
                Some(out)
            }
            SetValue::Map(s) => s.swap_remove_index(idx).map(|(m, _)| m.to_bytes()),
        }
    }

    /// One SSCAN step: compact encodings are returned whole (cursor 0), the hash set
    /// is walked by index downwards (see [`scan_positions`]).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8])) -> u64 {
        match self {
            SetValue::Map(s) => {
                let (idx, next) = scan_positions(s.len(), cursor, count);
                for i in idx {
                    if let Some((m, _)) = s.get_index(i) {
                        f(m);
                    }
                }
                next
            }
            _ => {
                for m in self.iter() {
                    f(&m);
                }
                0
            }
        }
    }

    /// Builds a set from members, choosing the encoding as adding them one by one
    /// would.
    pub fn from_members<'m>(
        members: impl IntoIterator<Item = &'m [u8]>,
        limits: SetLimits,
    ) -> Self {
        let mut s = SetValue::default();
        for m in members {
            s.add(m, limits);
        }
        s
    }

    /// Commands that recreate this value under `key` (AOF rewrite): SADD in batches
    /// of at most 64 members.
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut cur: Vec<Bytes> = Vec::new();
        for m in self.iter() {
            if cur.is_empty() {
                cur.push(Bytes::from_static(b"SADD"));
                cur.push(key.clone());
            }
            cur.push(member_bytes(m));
            if cur.len() == 2 + 64 {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(i: usize, e: usize, v: usize) -> SetLimits {
        SetLimits {
            max_intset: i,
            max_listpack_entries: e,
            max_listpack_value: v,
        }
    }

    #[test]
    fn intset_to_listpack_to_hashtable() {
        let l = lim(4, 6, 10);
        let mut s = SetValue::default();
        for m in ["3", "1", "2"] {
            assert!(s.add(m.as_bytes(), l));
        }
        assert!(!s.add(b"2", l));
        assert_eq!(s.encoding(), "intset");
        assert_eq!(
            s.iter().map(member_bytes).collect::<Vec<_>>(),
            vec!["1", "2", "3"]
        );
        assert!(s.contains(b"3"));
        assert!(!s.contains(b"03"));
        assert!(s.add(b"a", l));
        assert_eq!(s.encoding(), "listpack");
        assert!(s.contains(b"1") && s.contains(b"a"));
        s.add(b"b", l);
        s.add(b"c", l);
        assert_eq!(s.encoding(), "listpack");
        s.add(b"d", l);
        assert_eq!(s.encoding(), "hashtable");
        assert_eq!(s.len(), 7);
        assert!(s.remove(b"a"));
        assert!(!s.remove(b"a"));
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn intset_overflow_goes_to_hashtable() {
        let l = lim(2, 128, 64);
        let mut s = SetValue::default();
        for m in ["1", "2", "3"] {
            s.add(m.as_bytes(), l);
        }
        assert_eq!(s.encoding(), "hashtable");
        let mut s = SetValue::default();
        s.add(b"1", l);
        s.add(&[b'x'; 65], l);
        assert_eq!(s.encoding(), "hashtable");
    }

    #[test]
    fn pop_and_random() {
        let mut rng = rand::thread_rng();
        for base in [SetLimits::default(), lim(0, 0, 0)] {
            let mut s = SetValue::from_members(["1", "x", "3"].iter().map(|m| m.as_bytes()), base);
            assert!(s.random(&mut rng).is_some());
            let mut popped = Vec::new();
            while let Some(m) = s.pop_random(&mut rng) {
                popped.push(m);
            }
            popped.sort();
            assert_eq!(popped, vec!["1", "3", "x"]);
        }
    }

    #[test]
    fn rewrite_batches() {
        let s = SetValue::from_members(
            (0..100)
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(|m| m.as_bytes()),
            SetLimits::default(),
        );
        let cmds = s.rewrite_commands(&Bytes::from_static(b"k"));
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].len(), 66);
        assert_eq!(cmds[1].len(), 2 + 36);
    }
}
