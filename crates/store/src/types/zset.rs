//! The sorted-set type: an order-statistic treap over (score, member), so rank,
//! range and count queries are O(log n) + output, plus a hash index from member to
//! node. The treap lives in a dense arena (`Vec` of nodes, no per-node allocation,
//! no unsafe) and each member is stored once, in its node: the index holds only
//! the node's `u32` position. The encoding Redis would report (`listpack` while
//! within `zset-max-listpack-entries`/`-value`, then `skiplist`) is a flag that the
//! zset commands update.

use std::cmp::Ordering;

use bytes::Bytes;
use hashbrown::HashTable;

use crate::dense::{hash_bytes, ChunkVec};
use crate::small_bytes::SmallBytes;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    score: f64,
    member: SmallBytes,
    left: u32,
    right: u32,
    prio: u32,
    size: u32,
}

/// Total order of the set: by score, then member bytes.
pub fn cmp_entry(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> Ordering {
    s1.partial_cmp(&s2)
        .unwrap_or(Ordering::Equal)
        .then_with(|| m1.cmp(m2))
}

#[derive(Debug, Clone)]
pub struct ZSetValue {
    /// member → position in `nodes`, hashed by the node's member.
    dict: HashTable<u32>,
    /// Dense (chunked, see `ChunkVec`): removal moves the last node into the hole
    /// (repointing its parent and its `dict` slot), so ZSCAN can walk positions
    /// downwards with SCAN's guarantee, as for the other collections.
    nodes: ChunkVec<Node>,
    root: u32,
    rng: u64,
    skiplist: bool,
    /// Bytes held by members, for encoding decisions.
    max_member_len: usize,
}

impl Default for ZSetValue {
    fn default() -> Self {
        ZSetValue {
            dict: HashTable::new(),
            nodes: ChunkVec::new(),
            root: NIL,
            rng: 0x9E37_79B9_7F4A_7C15,
            skiplist: false,
            max_member_len: 0,
        }
    }
}

impl PartialEq for ZSetValue {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.nodes.iter().all(|n| {
                other
                    .score(&n.member)
                    .is_some_and(|s| s == n.score || (s.is_nan() && n.score.is_nan()))
            })
    }
}

impl ZSetValue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn encoding(&self) -> &'static str {
        if self.skiplist {
            "skiplist"
        } else {
            "listpack"
        }
    }

    /// Converts the reported encoding to skiplist once past the limits (Redis never
    /// converts back on its own).
    pub fn update_encoding(&mut self, max_entries: usize, max_value: usize) {
        if !self.skiplist && (self.len() > max_entries || self.max_member_len > max_value) {
            self.skiplist = true;
        }
    }

    /// The encoding a freshly built set of this content would get (ZRANGESTORE,
    /// ZUNIONSTORE … pick it from the result).
    pub fn reset_encoding(&mut self, max_entries: usize, max_value: usize) {
        self.skiplist = false;
        self.update_encoding(max_entries, max_value);
    }

    pub fn mem_usage(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.member.heap_size())
            .sum::<usize>()
            + self.nodes.allocation_size()
            + self.dict.allocation_size()
    }

    fn find(&self, member: &[u8]) -> Option<u32> {
        let nodes = &self.nodes;
        self.dict
            .find(hash_bytes(member), |&i| {
                &nodes[i as usize].member[..] == member
            })
            .copied()
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.find(member).map(|i| self.nodes[i as usize].score)
    }

    /// One ZSCAN step: visits up to `count` members (in no particular order) and
    /// returns the next cursor, 0 when done. The walk goes from the last position
    /// down; removal moves the last node into the hole, which was either visited
    /// already or is still ahead, so every member present for the whole scan is
    /// visited at least once.
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], f64)) -> u64 {
        let len = self.nodes.len() as u64;
        let mut pos = if cursor == 0 { len } else { cursor.min(len) };
        let mut n = 0;
        while pos > 0 && n < count {
            pos -= 1;
            let node = &self.nodes[pos as usize];
            f(&node.member, node.score);
            n += 1;
        }
        pos
    }

    /// Members with their scores in score order.
    pub fn iter(&self) -> ZIter<'_> {
        self.iter_from(0, false)
    }

    /// Iterates from rank `start` (0-based in the given direction) on.
    pub fn iter_from(&self, start: usize, rev: bool) -> ZIter<'_> {
        let mut it = ZIter {
            z: self,
            // The walk's path: one allocation for any treap of realistic depth.
            stack: Vec::with_capacity(48),
            rev,
            remaining: self.len().saturating_sub(start),
        };
        if start < self.len() {
            let fwd_rank = if rev { self.len() - 1 - start } else { start };
            it.seek(fwd_rank);
        }
        it
    }

    fn rand(&mut self) -> u32 {
        // xorshift64*: priorities only need to be well spread.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn size(&self, n: u32) -> u32 {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].size
        }
    }

    fn fix(&mut self, n: u32) {
        let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
        self.nodes[n as usize].size = 1 + self.size(l) + self.size(r);
    }

    /// Splits `t` into (before, after): the nodes ordered before node `key` (by
    /// score, then member) and the others. The key is a node of the arena, so no
    /// member is copied for the comparison.
    fn split(&mut self, t: u32, key: u32) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.before(t, key) {
            let r = self.nodes[t as usize].right;
            let (a, b) = self.split(r, key);
            self.nodes[t as usize].right = a;
            self.fix(t);
            (t, b)
        } else {
            let l = self.nodes[t as usize].left;
            let (a, b) = self.split(l, key);
            self.nodes[t as usize].left = b;
            self.fix(t);
            (a, t)
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.nodes[a as usize].right;
            let m = self.merge(r, b);
            self.nodes[a as usize].right = m;
            self.fix(a);
            a
        } else {
            let l = self.nodes[b as usize].left;
            let m = self.merge(a, l);
            self.nodes[b as usize].left = m;
            self.fix(b);
            b
        }
    }

    /// Test aid: checks that every node's priority is at least its children's and
    /// its size is right; returns the subtree's size.
    #[cfg(test)]
    fn check_heap(&self, t: u32) -> u32 {
        if t == NIL {
            return 0;
        }
        let n = &self.nodes[t as usize];
        for c in [n.left, n.right] {
            assert!(
                c == NIL || self.nodes[c as usize].prio <= n.prio,
                "heap order"
            );
        }
        let size = 1 + self.check_heap(n.left) + self.check_heap(n.right);
        assert_eq!(size, n.size, "subtree size");
        size
    }

    /// Whether node `a` orders before node `b` (members are unique: never equal
    /// for two nodes).
    fn before(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        cmp_entry(a.score, &a.member, b.score, &b.member) == Ordering::Less
    }

    /// Points the link that held a subtree (the root when `parent` is NIL, else
    /// `parent`'s left or right child) at `to`.
    fn set_link(&mut self, parent: u32, left: bool, to: u32) {
        if parent == NIL {
            self.root = to;
        } else if left {
            self.nodes[parent as usize].left = to;
        } else {
            self.nodes[parent as usize].right = to;
        }
    }

    /// Links node `idx` (not in the tree) into the tree by its score and member:
    /// down the search path while the nodes outrank it (each gains one
    /// descendant), then it takes the place of the subtree there, split around it.
    /// One pass down, where a split of the whole tree and two merges took three.
    fn attach(&mut self, idx: u32) {
        let prio = self.nodes[idx as usize].prio;
        let (mut parent, mut left) = (NIL, false);
        let mut t = self.root;
        while t != NIL && self.nodes[t as usize].prio > prio {
            self.nodes[t as usize].size += 1;
            parent = t;
            left = self.before(idx, t);
            let n = &self.nodes[t as usize];
            t = if left { n.left } else { n.right };
        }
        let (a, b) = self.split(t, idx);
        let n = &mut self.nodes[idx as usize];
        n.left = a;
        n.right = b;
        self.fix(idx);
        self.set_link(parent, left, idx);
    }

    /// Unlinks node `idx` from the tree (the node stays in the arena): down the
    /// search path to it (each node on the way loses one descendant), then its two
    /// subtrees merged in its place.
    fn detach(&mut self, idx: u32) {
        let (mut parent, mut left) = (NIL, false);
        let mut t = self.root;
        while t != idx && t != NIL {
            self.nodes[t as usize].size -= 1;
            parent = t;
            left = self.before(idx, t);
            let n = &self.nodes[t as usize];
            t = if left { n.left } else { n.right };
        }
        debug_assert_eq!(t, idx, "node {idx} not found in its tree");
        let (l, r) = (
            self.nodes[idx as usize].left,
            self.nodes[idx as usize].right,
        );
        let merged = self.merge(l, r);
        self.set_link(parent, left, merged);
    }

    /// Sets `member`'s score; returns the old score if it was present.
    pub fn insert(&mut self, member: impl AsRef<[u8]>, score: f64) -> Option<f64> {
        let member = member.as_ref();
        if let Some(idx) = self.find(member) {
            let prev = self.nodes[idx as usize].score;
            if prev != score || prev.is_sign_negative() != score.is_sign_negative() {
                self.detach(idx);
                self.nodes[idx as usize].score = score;
                self.attach(idx);
            }
            return Some(prev);
        }
        let idx = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&i| i != NIL)
            .expect("a sorted set holds fewer than u32::MAX members");
        self.max_member_len = self.max_member_len.max(member.len());
        let prio = self.rand();
        self.nodes.push(Node {
            score,
            member: SmallBytes::from(member),
            left: NIL,
            right: NIL,
            prio,
            size: 1,
        });
        let nodes = &self.nodes;
        self.dict.insert_unique(hash_bytes(member), idx, |&i| {
            hash_bytes(&nodes[i as usize].member)
        });
        self.attach(idx);
        None
    }

    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let nodes = &self.nodes;
        let entry = self
            .dict
            .find_entry(hash_bytes(member), |&i| {
                &nodes[i as usize].member[..] == member
            })
            .ok()?;
        let idx = *entry.get();
        entry.remove();
        self.detach(idx);
        let last = (self.nodes.len() - 1) as u32;
        if idx != last {
            self.relink_last(last, idx);
        }
        let removed = self.nodes.swap_remove(idx as usize);
        if self.nodes.is_empty() {
            *self = ZSetValue {
                rng: self.rng,
                skiplist: self.skiplist,
                max_member_len: self.max_member_len,
                ..ZSetValue::default()
            };
        } else if self.dict.capacity() > 64 && self.nodes.len() < self.dict.capacity() / 4 {
            // After large removals (ZREMRANGE…, ZPOP) the index shrinks too (the
            // arena gives back each chunk as it empties).
            let nodes = &self.nodes;
            self.dict
                .shrink_to(nodes.len(), |&i| hash_bytes(&nodes[i as usize].member));
        }
        Some(removed.score)
    }

    /// Points the tree link and the `dict` slot of node `last` at `to`, where
    /// `Vec::swap_remove` is about to move it.
    fn relink_last(&mut self, last: u32, to: u32) {
        let (score, hash) = {
            let n = &self.nodes[last as usize];
            (n.score, hash_bytes(&n.member))
        };
        if let Some(slot) = self.dict.find_mut(hash, |&i| i == last) {
            *slot = to;
        }
        if self.root == last {
            self.root = to;
            return;
        }
        let mut n = self.root;
        while n != NIL {
            let node = &self.nodes[n as usize];
            let ord = cmp_entry(
                score,
                &self.nodes[last as usize].member,
                node.score,
                &node.member,
            );
            let child = if ord == Ordering::Less {
                node.left
            } else {
                node.right
            };
            if child == last {
                let node = &mut self.nodes[n as usize];
                if ord == Ordering::Less {
                    node.left = to;
                } else {
                    node.right = to;
                }
                return;
            }
            n = child;
        }
        debug_assert!(false, "node {last} not found in its tree");
    }

    /// Number of elements for which `pred` holds; `pred` must be true on a prefix of
    /// the order (e.g. "score < x").
    pub fn count_prefix(&self, pred: impl Fn(f64, &[u8]) -> bool) -> usize {
        let mut n = self.root;
        let mut count = 0usize;
        while n != NIL {
            let node = &self.nodes[n as usize];
            if pred(node.score, &node.member) {
                count += self.size(node.left) as usize + 1;
                n = node.right;
            } else {
                n = node.left;
            }
        }
        count
    }

    /// 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(self.count_prefix(|s, m| cmp_entry(s, m, score, member) == Ordering::Less))
    }

    /// The element at ascending rank `r`.
    pub fn at(&self, r: usize) -> Option<(&[u8], f64)> {
        let mut n = self.root;
        let mut r = r as u32;
        while n != NIL {
            let node = &self.nodes[n as usize];
            let ls = self.size(node.left);
            match r.cmp(&ls) {
                Ordering::Less => n = node.left,
                Ordering::Equal => return Some((&node.member, node.score)),
                Ordering::Greater => {
                    r -= ls + 1;
                    n = node.right;
                }
            }
        }
        None
    }

    /// Removes and returns the first (`max` false) or last elements, up to `count`.
    pub fn pop(&mut self, count: usize, max: bool) -> Vec<(Bytes, f64)> {
        let mut out = Vec::with_capacity(count.min(self.len()));
        for _ in 0..count {
            let r = if max {
                match self.len().checked_sub(1) {
                    Some(r) => r,
                    None => break,
                }
            } else {
                0
            };
            let Some((m, s)) = self.at(r).map(|(m, s)| (Bytes::copy_from_slice(m), s)) else {
                break;
            };
            self.remove(&m);
            out.push((m, s));
        }
        out
    }

    /// Removes the elements at ascending ranks `[start, end]`; returns them.
    pub fn remove_range(&mut self, start: usize, end: usize) -> Vec<Bytes> {
        let victims: Vec<Bytes> = self
            .iter_from(start, false)
            .take(end + 1 - start)
            .map(|(m, _)| Bytes::copy_from_slice(m))
            .collect();
        for m in &victims {
            self.remove(m);
        }
        victims
    }

    /// Commands that recreate this value under `key` (AOF rewrite): ZADD batches of
    /// at most 64 pairs.
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        let pairs: Vec<(&[u8], f64)> = self.iter().collect();
        pairs
            .chunks(64)
            .map(|chunk| {
                let mut c = Vec::with_capacity(chunk.len() * 2 + 2);
                c.push(Bytes::from_static(b"ZADD"));
                c.push(key.clone());
                for (m, s) in chunk {
                    c.push(Bytes::from(tidewire_resp::format_double(*s)));
                    c.push(Bytes::copy_from_slice(m));
                }
                c
            })
            .collect()
    }
}

/// In-order walk with an explicit stack, forward or reverse.
pub struct ZIter<'a> {
    z: &'a ZSetValue,
    stack: Vec<u32>,
    rev: bool,
    remaining: usize,
}

impl ZIter<'_> {
    /// Positions the walk at ascending rank `r`: the stack holds the path nodes that
    /// are still to be visited in the walk's direction.
    fn seek(&mut self, mut r: usize) {
        let z = self.z;
        let mut n = z.root;
        while n != NIL {
            let node = &z.nodes[n as usize];
            let ls = z.size(node.left) as usize;
            match r.cmp(&ls) {
                Ordering::Less => {
                    if !self.rev {
                        self.stack.push(n);
                    }
                    n = node.left;
                }
                Ordering::Equal => {
                    self.stack.push(n);
                    return;
                }
                Ordering::Greater => {
                    if self.rev {
                        self.stack.push(n);
                    }
                    r -= ls + 1;
                    n = node.right;
                }
            }
        }
    }
}

impl<'a> Iterator for ZIter<'a> {
    type Item = (&'a [u8], f64);

    fn next(&mut self) -> Option<Self::Item> {
        let z = self.z;
        let n = self.stack.pop()?;
        let node = &z.nodes[n as usize];
        // Push the next subtree's leftmost (or rightmost) path.
        let mut c = if self.rev { node.left } else { node.right };
        while c != NIL {
            self.stack.push(c);
            let cn = &z.nodes[c as usize];
            c = if self.rev { cn.right } else { cn.left };
        }
        self.remaining = self.remaining.saturating_sub(1);
        Some((&node.member, node.score))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn order_rank_iter() {
        let mut z = ZSetValue::new();
        for i in 0..1000u32 {
            // Scrambled insertion order, duplicate scores broken by member.
            let k = (i * 7919) % 1000;
            z.insert(b(&format!("m{k:04}")), (k / 10) as f64);
        }
        assert_eq!(z.len(), 1000);
        let all: Vec<String> = z
            .iter()
            .map(|(m, _)| String::from_utf8_lossy(m).into_owned())
            .collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(z.rank(b"m0500"), Some(500));
        assert_eq!(z.at(999).unwrap().0, &b("m0999"));
        let rev: Vec<_> = z
            .iter_from(2, true)
            .take(2)
            .map(|(m, _)| m.to_vec())
            .collect();
        assert_eq!(rev, vec![b("m0997"), b("m0996")]);
        let fwd: Vec<_> = z.iter_from(998, false).map(|(m, _)| m.to_vec()).collect();
        assert_eq!(fwd, vec![b("m0998"), b("m0999")]);
        assert_eq!(z.count_prefix(|s, _| s < 50.0), 500);
        z.insert(b("m0000"), 1000.0);
        assert_eq!(z.rank(b("m0000").as_ref()), Some(999));
        for i in 0..1000 {
            z.remove(format!("m{i:04}").as_bytes());
        }
        assert!(z.is_empty());
        assert_eq!(z.iter().count(), 0);
    }

    #[test]
    fn scan_survives_removals() {
        let mut z = ZSetValue::new();
        for i in 0..100 {
            z.insert(b(&format!("m{i}")), i as f64);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = z.scan(0, 10, |m, _| {
            seen.insert(m.to_vec());
        });
        let mut rounds = 0;
        while cursor != 0 {
            // Remove some members (even ones) between steps.
            for i in (rounds * 10..rounds * 10 + 10).filter(|i| i % 2 == 0) {
                z.remove(format!("m{i}").as_bytes());
            }
            cursor = z.scan(cursor, 10, |m, _| {
                seen.insert(m.to_vec());
            });
            rounds += 1;
            assert!(rounds < 100);
        }
        for (m, _) in z.iter() {
            assert!(seen.contains(m), "{m:?} missed");
        }
    }

    #[test]
    fn pop_and_rewrite() {
        let mut z = ZSetValue::new();
        z.insert(b("a"), 1.5);
        z.insert(b("b"), f64::INFINITY);
        z.insert(b("c"), -2.0);
        assert_eq!(z.pop(1, true), vec![(b("b"), f64::INFINITY)]);
        assert_eq!(
            z.rewrite_commands(&b("k")),
            vec![vec![b("ZADD"), b("k"), b("-2"), b("c"), b("1.5"), b("a")]]
        );
    }

    /// Random inserts, score changes and removals against a sorted model: order,
    /// ranks, subtree sizes, the member index and the dense arena must all agree.
    #[test]
    fn differential_against_btree() {
        use rand::{Rng, SeedableRng};
        use std::collections::{BTreeSet, HashMap};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut z = ZSetValue::new();
        let mut scores: HashMap<Vec<u8>, i64> = HashMap::new();
        for step in 0..6000 {
            let n: u32 = rng.gen_range(0..300);
            let m = if n.is_multiple_of(4) {
                format!("a-member-long-enough-for-the-heap-{n}").into_bytes()
            } else {
                format!("m{n}").into_bytes()
            };
            if rng.gen_range(0..3) == 0 {
                assert_eq!(
                    z.remove(&m),
                    scores.remove(&m).map(|s| s as f64),
                    "step {step}"
                );
            } else {
                let s: i64 = rng.gen_range(-20..20);
                assert_eq!(
                    z.insert(&m[..], s as f64),
                    scores.insert(m.clone(), s).map(|s| s as f64)
                );
            }
            if step % 500 == 0 || step > 5900 {
                let model: BTreeSet<(i64, Vec<u8>)> =
                    scores.iter().map(|(m, s)| (*s, m.clone())).collect();
                let got: Vec<(i64, Vec<u8>)> =
                    z.iter().map(|(m, s)| (s as i64, m.to_vec())).collect();
                assert_eq!(got, model.iter().cloned().collect::<Vec<_>>());
                assert_eq!(z.size(z.root) as usize, z.len());
                assert_eq!(z.check_heap(z.root), z.len() as u32, "step {step}");
                for (r, (_, m)) in model.iter().enumerate() {
                    assert_eq!(z.rank(m), Some(r));
                    assert_eq!(z.at(r).map(|(x, _)| x.to_vec()), Some(m.clone()));
                }
                let mut scanned = Vec::new();
                let mut cursor = 0;
                loop {
                    cursor = z.scan(cursor, 7, |m, _| scanned.push(m.to_vec()));
                    if cursor == 0 {
                        break;
                    }
                }
                scanned.sort();
                let mut members: Vec<Vec<u8>> = scores.keys().cloned().collect();
                members.sort();
                assert_eq!(scanned, members);
            }
        }
    }

    #[test]
    fn node_is_compact() {
        assert_eq!(std::mem::size_of::<Node>(), 48);
    }
}
