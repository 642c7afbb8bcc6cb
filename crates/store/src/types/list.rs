//! The list type: a `VecDeque` of owned byte strings, O(1) at both ends. The
//! encoding Redis would report (`listpack` while small, `quicklist` once past
//! `list-max-listpack-size`) is tracked as a flag updated by the list commands,
//! with Redis 7.2's hysteresis (back to listpack only when half the limit).

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone, Default)]
pub struct ListValue {
    items: VecDeque<Bytes>,
    /// Sum of the element lengths, kept up to date so encoding checks are O(1).
    bytes: usize,
    quicklist: bool,
}

/// Equal content is equal, whatever encoding each would report.
impl PartialEq for ListValue {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items
    }
}

/// `list-max-listpack-size`: positive = max entries per node, negative = max bytes
/// (-1 = 4k … -5 = 64k).
fn fits_listpack(count: usize, bytes: usize, limit: i64) -> bool {
    if limit >= 0 {
        count <= limit.max(1) as usize
    } else {
        let max = match limit {
            -1 => 4096,
            -2 => 8192,
            -3 => 16384,
            -4 => 32768,
            _ => 65536,
        };
        bytes + 11 * count <= max
    }
}

impl ListValue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_items(items: impl IntoIterator<Item = Bytes>) -> Self {
        let items: VecDeque<Bytes> = items.into_iter().collect();
        ListValue {
            bytes: items.iter().map(|b| b.len()).sum(),
            items,
            quicklist: false,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn encoding(&self) -> &'static str {
        if self.quicklist {
            "quicklist"
        } else {
            "listpack"
        }
    }

    /// Sets the reported encoding outright: RESTORE gives a list the one Redis's
    /// loader picks from the payload's node layout.
    pub fn set_quicklist(&mut self, quicklist: bool) {
        self.quicklist = quicklist;
    }

    /// Re-evaluates the reported encoding against `list-max-listpack-size`.
    pub fn update_encoding(&mut self, limit: i64) {
        if !self.quicklist {
            if !fits_listpack(self.items.len(), self.bytes, limit) {
                self.quicklist = true;
            }
        } else {
            // Redis 7.2 converts back only when well under the limit (half of it).
            let (n, b) = (self.items.len(), self.bytes);
            let back = if limit >= 0 {
                n <= (limit.max(1) as usize) / 2
            } else {
                fits_listpack(n * 2, b * 2, limit)
            };
            if back {
                self.quicklist = false;
            }
        }
    }

    pub fn mem_usage(&self) -> usize {
        self.bytes + 16 * self.items.len()
    }

    /// Elements head to tail.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Bytes> + ExactSizeIterator + '_ {
        self.items.iter()
    }

    pub fn push_front(&mut self, v: Bytes) {
        self.bytes += v.len();
        self.items.push_front(v);
    }

    pub fn push_back(&mut self, v: Bytes) {
        self.bytes += v.len();
        self.items.push_back(v);
    }

    pub fn pop_front(&mut self) -> Option<Bytes> {
        let v = self.items.pop_front()?;
        self.bytes -= v.len();
        Some(v)
    }

    pub fn pop_back(&mut self) -> Option<Bytes> {
        let v = self.items.pop_back()?;
        self.bytes -= v.len();
        Some(v)
    }

    pub fn get(&self, i: usize) -> Option<&Bytes> {
        self.items.get(i)
    }

    /// Replaces the element at `i`; false if out of range.
    pub fn set(&mut self, i: usize, v: Bytes) -> bool {
        match self.items.get_mut(i) {
            Some(slot) => {
                self.bytes = self.bytes - slot.len() + v.len();
                *slot = v;
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, i: usize, v: Bytes) {
        self.bytes += v.len();
        self.items.insert(i, v);
    }

    /// Elements in `[start, end]` (inclusive, already clamped).
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &Bytes> + '_ {
        self.items.range(start..=end)
    }

    /// Keeps only `[start, end]`; an empty range (start > end) clears the list.
    pub fn trim(&mut self, start: usize, end: usize) {
        if start > end || start >= self.items.len() {
            self.items.clear();
            self.bytes = 0;
            return;
        }
        let end = end.min(self.items.len() - 1);
        for v in self.items.drain(end + 1..) {
            self.bytes -= v.len();
        }
        for v in self.items.drain(..start) {
            self.bytes -= v.len();
        }
    }

    /// Removes up to `count` elements equal to `v` (0 = all), from the head when
    /// `from_head`, else from the tail. Returns how many went.
    pub fn remove_matching(&mut self, v: &[u8], count: usize, from_head: bool) -> usize {
        let mut removed = 0;
        let limit = if count == 0 { usize::MAX } else { count };
        if from_head {
            let mut i = 0;
            while i < self.items.len() && removed < limit {
                if self.items[i] == v {
                    self.items.remove(i);
                    self.bytes -= v.len();
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        } else {
            let mut i = self.items.len();
            while i > 0 && removed < limit {
                i -= 1;
                if self.items[i] == v {
                    self.items.remove(i);
                    self.bytes -= v.len();
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Commands that recreate this value under `key` (AOF rewrite): RPUSH batches
    /// of at most 64 elements.
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        let items: Vec<&Bytes> = self.items.iter().collect();
        items
            .chunks(64)
            .map(|chunk| {
                let mut c = Vec::with_capacity(chunk.len() + 2);
                c.push(Bytes::from_static(b"RPUSH"));
                c.push(key.clone());
                c.extend(chunk.iter().map(|b| (*b).clone()));
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn trim_remove_rewrite() {
        let mut l = ListValue::from_items(["a", "b", "a", "c", "a"].map(b));
        assert_eq!(l.remove_matching(b"a", 1, false), 1);
        assert_eq!(
            l.iter().cloned().collect::<Vec<_>>(),
            ["a", "b", "a", "c"].map(b)
        );
        assert_eq!(l.remove_matching(b"a", 0, true), 2);
        l.trim(1, 5);
        assert_eq!(l.iter().cloned().collect::<Vec<_>>(), [b("c")]);
        assert_eq!(l.bytes, 1);
        assert!(l.set(0, b("long")));
        assert_eq!(l.bytes, 4);
        l.trim(1, 0);
        assert_eq!(l.bytes, 0);
        let big = ListValue::from_items((0..130).map(|i| b(&i.to_string())));
        let cmds = big.rewrite_commands(&b("k"));
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].len(), 66);
        assert_eq!(cmds[2].len(), 4);
    }

    #[test]
    fn encoding_hysteresis() {
        let mut l = ListValue::from_items((0..10).map(|i| b(&i.to_string())));
        l.update_encoding(4);
        assert_eq!(l.encoding(), "quicklist");
        l.trim(0, 2);
        l.update_encoding(4);
        assert_eq!(l.encoding(), "quicklist");
        l.trim(0, 1);
        l.update_encoding(4);
        assert_eq!(l.encoding(), "listpack");
    }
}
