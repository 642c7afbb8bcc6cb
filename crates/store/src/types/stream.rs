//! The stream type (Redis's `t_stream.c` data model): entries with strictly
//! increasing ids, kept compact the way Redis keeps them. Entries live in nodes
//! of at most `stream-node-max-entries` entries / `stream-node-max-bytes` bytes,
//! indexed by the node's first id in a B-tree. Inside a node, ids are deltas from
//! that first id and the field names of the node's first entry are stored once:
//! later entries with the same field names store only their values. Deleting an
//! entry sets a flag in place (a tombstone); a node whose entries are all deleted
//! goes. So XADD and a range read cost O(log nodes) plus the node scanned.
//!
//! Consumer groups, their pending-entries lists and consumers follow Redis's
//! model: the group PEL owns the delivery data, each consumer lists the ids it
//! holds.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::rdb_value::listpack;

/// A stream entry id, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The next id, `None` past the last possible one.
    pub fn next(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The previous id, `None` before 0-0.
    pub fn prev(self) -> Option<StreamId> {
        if self.seq > 0 {
            Some(StreamId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(StreamId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    pub fn to_bytes(self) -> Bytes {
        Bytes::from(self.to_string())
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Node limits, from `stream-node-max-entries` and `stream-node-max-bytes`
/// (0 = no limit on that axis, as in Redis).
#[derive(Debug, Clone, Copy)]
pub struct NodeLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_entries: 100,
            max_bytes: 4096,
        }
    }
}

const FLAG_DELETED: u8 = 1;
const FLAG_SAME_FIELDS: u8 = 2;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`. Node bytes are only ever written by this module, so
/// a malformed varint cannot occur; it reads as 0 rather than panicking.
fn get_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&b) = buf.get(*pos) {
        *pos += 1;
        if shift < 64 {
            v |= ((b & 0x7f) as u64) << shift;
        }
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

fn get_slice<'a>(buf: &'a [u8], pos: &mut usize) -> &'a [u8] {
    let len = get_varint(buf, pos) as usize;
    let start = (*pos).min(buf.len());
    let end = start.saturating_add(len).min(buf.len());
    *pos = end;
    &buf[start..end]
}

/// One node: its encoded entries. The master id (the node's key in the tree) is
/// the id of its first entry; `buf` starts with the master field names.
#[derive(Debug, Clone)]
struct Node {
    buf: Vec<u8>,
    /// Entries not deleted.
    live: u32,
    /// Entries in `buf`, deleted ones included.
    total: u32,
    /// The id of the node's last entry (deleted or not): where appends continue.
    last: StreamId,
    /// The size Redis's listpack for this node would have: nodes split where
    /// Redis's split (`stream-node-max-bytes` counts listpack bytes), so that
    /// approximate trimming (`MAXLEN ~`), which drops whole nodes, keeps what
    /// Redis keeps.
    lp_bytes: usize,
}

/// A listpack's header and terminator.
const LP_OVERHEAD: usize = 7;

impl Node {
    fn new(fields: &[Bytes]) -> Node {
        let mut buf = Vec::with_capacity(64);
        put_varint(&mut buf, (fields.len() / 2) as u64);
        let mut lp_bytes = LP_OVERHEAD
            + listpack::int_size(1)
            + listpack::int_size(0)
            + listpack::int_size((fields.len() / 2) as i64)
            + listpack::int_size(0);
        for f in fields.iter().step_by(2) {
            put_varint(&mut buf, f.len() as u64);
            buf.extend_from_slice(f);
            lp_bytes += listpack::elem_size(f);
        }
        Node {
            buf,
            live: 0,
            total: 0,
            last: StreamId::MIN,
            lp_bytes,
        }
    }

    /// Offset where entries start, and the master field names.
    fn master_fields(&self) -> (usize, Vec<&[u8]>) {
        let mut pos = 0;
        let n = get_varint(&self.buf, &mut pos);
        let mut names = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            names.push(get_slice(&self.buf, &mut pos));
        }
        (pos, names)
    }

    /// Whether `fields` has the master's field names, in order (checked in place).
    fn has_master_fields(&self, fields: &[Bytes]) -> bool {
        let mut pos = 0;
        let n = get_varint(&self.buf, &mut pos);
        if n as usize * 2 != fields.len() {
            return false;
        }
        fields
            .iter()
            .step_by(2)
            .all(|f| get_slice(&self.buf, &mut pos) == &f[..])
    }

    fn append(&mut self, master: StreamId, id: StreamId, fields: &[Bytes]) {
        let same = self.has_master_fields(fields);
        let pairs = (fields.len() / 2) as i64;
        self.lp_bytes += listpack::int_size(if same { 2 } else { 0 })
            + listpack::int_size(id.ms.wrapping_sub(master.ms) as i64)
            + listpack::int_size(id.seq.wrapping_sub(master.seq) as i64);
        if same {
            self.lp_bytes += fields
                .iter()
                .skip(1)
                .step_by(2)
                .map(|v| listpack::elem_size(v))
                .sum::<usize>()
                + listpack::int_size(pairs + 3);
        } else {
            self.lp_bytes += listpack::int_size(pairs)
                + fields.iter().map(|f| listpack::elem_size(f)).sum::<usize>()
                + listpack::int_size(2 * pairs + 4);
        }
        let buf = &mut self.buf;
        buf.push(if same { FLAG_SAME_FIELDS } else { 0 });
        put_varint(buf, id.ms - master.ms);
        put_varint(buf, id.seq);
        if same {
            for v in fields.iter().skip(1).step_by(2) {
                put_varint(buf, v.len() as u64);
                buf.extend_from_slice(v);
            }
        } else {
            put_varint(buf, (fields.len() / 2) as u64);
            for f in fields {
                put_varint(buf, f.len() as u64);
                buf.extend_from_slice(f);
            }
        }
        self.live += 1;
        self.total += 1;
        self.last = id;
    }

    /// Calls `f` with each field and value (alternating) of the entry whose flag
    /// byte is at `flag_at`.
    fn fields_each(&self, flag_at: usize, names: &[&[u8]], mut f: impl FnMut(&[u8])) {
        let mut pos = flag_at;
        let flags = self.buf.get(pos).copied().unwrap_or(0);
        pos += 1;
        get_varint(&self.buf, &mut pos);
        get_varint(&self.buf, &mut pos);
        if flags & FLAG_SAME_FIELDS != 0 {
            for name in names {
                f(name);
                f(get_slice(&self.buf, &mut pos));
            }
        } else {
            let n = get_varint(&self.buf, &mut pos);
            for _ in 0..n.saturating_mul(2) {
                f(get_slice(&self.buf, &mut pos));
            }
        }
    }

    /// The fields and values of the entry whose flag byte is at `flag_at`.
    fn fields_at(&self, flag_at: usize, names: &[&[u8]]) -> Vec<Bytes> {
        let mut fields = Vec::new();
        self.fields_each(flag_at, names, |f| fields.push(Bytes::copy_from_slice(f)));
        fields
    }

    /// The node's entries in order, decoded one at a time (a read that stops
    /// early does not walk the rest).
    fn cursor(&self, master: StreamId) -> NodeCursor<'_> {
        let mut pos = 0;
        let n = get_varint(&self.buf, &mut pos);
        for _ in 0..n {
            get_slice(&self.buf, &mut pos);
        }
        NodeCursor {
            buf: &self.buf,
            pos,
            names: n,
            master,
        }
    }

    /// Ids and flag offsets only (no field copies): for deletion and trimming.
    fn ids(&self, master: StreamId) -> Vec<(usize, bool, StreamId)> {
        let mut out = Vec::with_capacity(self.total as usize);
        out.extend(self.cursor(master));
        out
    }

    fn mark_deleted(&mut self, flag_at: usize) {
        if let Some(f) = self.buf.get_mut(flag_at) {
            if *f & FLAG_DELETED == 0 {
                *f |= FLAG_DELETED;
                self.live -= 1;
            }
        }
    }
}

/// Walks a node's entries: (flag offset, deleted, id) each.
struct NodeCursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Number of master field names (what a same-fields entry has values for).
    names: u64,
    master: StreamId,
}

impl Iterator for NodeCursor<'_> {
    type Item = (usize, bool, StreamId);

    fn next(&mut self) -> Option<Self::Item> {
        let flag_at = self.pos;
        let flags = *self.buf.get(self.pos)?;
        self.pos += 1;
        let ms = self
            .master
            .ms
            .wrapping_add(get_varint(self.buf, &mut self.pos));
        let seq = get_varint(self.buf, &mut self.pos);
        let skip = if flags & FLAG_SAME_FIELDS != 0 {
            self.names
        } else {
            get_varint(self.buf, &mut self.pos).saturating_mul(2)
        };
        for _ in 0..skip {
            get_slice(self.buf, &mut self.pos);
        }
        Some((flag_at, flags & FLAG_DELETED != 0, StreamId::new(ms, seq)))
    }
}

/// One pending entry: delivered to `consumer`, not yet acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    pub consumer: Bytes,
    /// Unix ms of the last delivery.
    pub delivery_time: i64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    /// Last time the consumer tried an interaction (read or claim), unix ms.
    pub seen_time: i64,
    /// Last successful interaction (got entries), unix ms; -1 = never.
    pub active_time: i64,
    pub pel: BTreeSet<StreamId>,
}

impl Consumer {
    pub fn new(now: i64) -> Self {
        Consumer {
            seen_time: now,
            active_time: -1,
            pel: BTreeSet::new(),
        }
    }
}

/// `entries_read` of a group whose read count is unknown.
pub const ENTRIES_READ_INVALID: i64 = -1;

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub last_id: StreamId,
    pub entries_read: i64,
    pub pel: BTreeMap<StreamId, Nack>,
    pub consumers: BTreeMap<Bytes, Consumer>,
}

impl Group {
    pub fn new(last_id: StreamId, entries_read: i64) -> Self {
        Group {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// Removes a pending entry from the group and its consumer.
    pub fn ack(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(nack) => {
                if let Some(c) = self.consumers.get_mut(&nack.consumer) {
                    c.pel.remove(&id);
                }
                true
            }
            None => false,
        }
    }

    /// Gives a pending entry to `consumer` (which must exist), creating the
    /// pending entry if absent; returns it for the caller to adjust.
    pub fn assign(&mut self, id: StreamId, consumer: &Bytes, now: i64) -> &mut Nack {
        let previous = self.pel.get(&id).map(|n| n.consumer.clone());
        if let Some(prev) = previous.as_ref().filter(|p| *p != consumer) {
            if let Some(c) = self.consumers.get_mut(prev) {
                c.pel.remove(&id);
            }
        }
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.pel.insert(id);
        }
        let nack = self.pel.entry(id).or_insert_with(|| Nack {
            consumer: consumer.clone(),
            delivery_time: now,
            delivery_count: 0,
        });
        nack.consumer = consumer.clone();
        nack
    }
}

/// An entry as read: id and alternating fields and values.
pub type StreamEntry = (StreamId, Vec<Bytes>);

#[derive(Debug, Clone, Default)]
pub struct StreamValue {
    nodes: BTreeMap<StreamId, Node>,
    length: u64,
    pub last_id: StreamId,
    /// First live entry id (0-0 when empty), as Redis records it.
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    /// Empty (no allocation) for most streams.
    groups: BTreeMap<Bytes, Group>,
}

/// Equal content is equal, whatever the node layout.
impl PartialEq for StreamValue {
    fn eq(&self, other: &Self) -> bool {
        self.length == other.length
            && self.last_id == other.last_id
            && self.max_deleted_id == other.max_deleted_id
            && self.entries_added == other.entries_added
            && self.groups() == other.groups()
            && self.range(StreamId::MIN, StreamId::MAX, 0)
                == other.range(StreamId::MIN, StreamId::MAX, 0)
    }
}

/// How XADD/XTRIM trim: keep at most `maxlen` entries, or drop ids below `minid`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

/// What deleting an entry does to consumer-group references to it (Redis 8.2's
/// KEEPREF / DELREF / ACKED, for XDELEX, XACKDEL, XADD and XTRIM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefPolicy {
    /// Delete the entry; pending-entry references to it stay (XDEL's behaviour).
    #[default]
    KeepRef,
    /// Delete the entry and drop it from every group's PEL.
    DelRef,
    /// Delete the entry only once no group still needs it.
    Acked,
}

impl RefPolicy {
    /// The option word, as the command takes it.
    pub fn word(self) -> &'static str {
        match self {
            RefPolicy::KeepRef => "KEEPREF",
            RefPolicy::DelRef => "DELREF",
            RefPolicy::Acked => "ACKED",
        }
    }

    /// Parses KEEPREF / DELREF / ACKED, any case.
    pub fn parse(word: &[u8]) -> Option<RefPolicy> {
        [RefPolicy::KeepRef, RefPolicy::DelRef, RefPolicy::Acked]
            .into_iter()
            .find(|p| word.eq_ignore_ascii_case(p.word().as_bytes()))
    }
}

impl StreamValue {
    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Number of nodes (XINFO's `radix-tree-keys`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Appends an entry with `id`, which the caller checked is above `last_id`.
    pub fn append(&mut self, id: StreamId, fields: &[Bytes], limits: NodeLimits) {
        // Redis's rule (`streamAppendItem`): a new node once the listpack plus the
        // new fields' raw bytes would reach the byte limit (0: Redis's 1 GB cap),
        // or once it holds the maximum number of entries, deleted ones included.
        const LISTPACK_MAX: usize = 1 << 30;
        let max_bytes = match limits.max_bytes {
            0 => LISTPACK_MAX,
            n => n.min(LISTPACK_MAX),
        };
        let raw: usize = fields.iter().map(|f| f.len()).sum();
        let fits = self.nodes.last_key_value().is_some_and(|(_, n)| {
            n.lp_bytes + raw < max_bytes
                && (limits.max_entries == 0 || (n.total as usize) < limits.max_entries)
        });
        if !fits {
            if let Some((_, n)) = self.nodes.iter_mut().next_back() {
                n.buf.shrink_to_fit();
            }
            self.nodes.insert(id, Node::new(fields));
        }
        if let Some((master, node)) = self.nodes.iter_mut().next_back() {
            node.append(*master, id, fields);
        }
        if self.length == 0 {
            self.first_id = id;
        }
        self.length += 1;
        self.entries_added += 1;
        self.last_id = id;
    }

    /// The node whose entries may include `id` (the last one starting at or before it).
    fn node_key_at_or_before(&self, id: StreamId) -> Option<StreamId> {
        self.nodes.range(..=id).next_back().map(|(k, _)| *k)
    }

    /// Calls `visit` with each live entry with `start <= id <= end` (its id, its
    /// node, the entry's offset and the node's master field names), ascending or
    /// descending, at most `count` (0 = all).
    fn walk(
        &self,
        start: StreamId,
        end: StreamId,
        count: usize,
        rev: bool,
        mut visit: impl FnMut(StreamId, &Node, usize, &[&[u8]]),
    ) {
        if start > end {
            return;
        }
        let first = self.node_key_at_or_before(start).unwrap_or(start);
        let mut seen = 0;
        let mut take = |id: StreamId, node: &Node, at: usize, names: &[&[u8]]| {
            visit(id, node, at, names);
            seen += 1;
            count != 0 && seen >= count
        };
        if !rev {
            for (master, node) in self.nodes.range(first..=end) {
                if node.last < start || node.live == 0 {
                    continue;
                }
                let names = node.master_fields().1;
                for (at, deleted, id) in node.cursor(*master) {
                    if id > end {
                        return;
                    }
                    if !deleted && id >= start && take(id, node, at, &names) {
                        return;
                    }
                }
            }
        } else {
            for (master, node) in self.nodes.range(first..=end).rev() {
                if node.last < start || node.live == 0 {
                    continue;
                }
                let names = node.master_fields().1;
                for (at, deleted, id) in node.ids(*master).into_iter().rev() {
                    if id < start {
                        return;
                    }
                    if !deleted && id <= end && take(id, node, at, &names) {
                        return;
                    }
                }
            }
        }
    }

    /// Live entries with `start <= id <= end`, ascending; `count` 0 = all.
    pub fn range(&self, start: StreamId, end: StreamId, count: usize) -> Vec<StreamEntry> {
        let mut out = Vec::new();
        self.walk(start, end, count, false, |id, node, at, names| {
            out.push((id, node.fields_at(at, names)))
        });
        out
    }

    /// Live entries with `start <= id <= end`, descending; `count` 0 = all.
    pub fn rev_range(&self, start: StreamId, end: StreamId, count: usize) -> Vec<StreamEntry> {
        let mut out = Vec::new();
        self.walk(start, end, count, true, |id, node, at, names| {
            out.push((id, node.fields_at(at, names)))
        });
        out
    }

    /// Like [`StreamValue::range`] / [`StreamValue::rev_range`], each entry's fields
    /// and values already in reply form (no copy per field).
    pub fn range_wire(
        &self,
        start: StreamId,
        end: StreamId,
        count: usize,
        rev: bool,
    ) -> Vec<(StreamId, tidewire_resp::BulkArray)> {
        let mut out = Vec::new();
        self.walk(start, end, count, rev, |id, node, at, names| {
            let mut fields = tidewire_resp::BulkArray::with_capacity(names.len() * 2, 64);
            node.fields_each(at, names, |f| fields.push(f));
            out.push((id, fields))
        });
        out
    }

    /// The live entries node by node, each node keyed by its first live id (what
    /// DUMP writes as Redis's node listpacks).
    pub fn node_entries(&self) -> Vec<(StreamId, Vec<StreamEntry>)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for (master, node) in &self.nodes {
            if node.live == 0 {
                continue;
            }
            let names = node.master_fields().1;
            let entries: Vec<StreamEntry> = node
                .ids(*master)
                .into_iter()
                .filter(|(_, deleted, _)| !deleted)
                .map(|(at, _, id)| (id, node.fields_at(at, &names)))
                .collect();
            if let Some(first) = entries.first().map(|e| e.0) {
                out.push((first, entries));
            }
        }
        out
    }

    /// The entry with exactly this id, if live.
    pub fn get(&self, id: StreamId) -> Option<StreamEntry> {
        self.range(id, id, 1).into_iter().next()
    }

    pub fn contains(&self, id: StreamId) -> bool {
        let Some(key) = self.node_key_at_or_before(id) else {
            return false;
        };
        let Some(node) = self.nodes.get(&key) else {
            return false;
        };
        node.last >= id && node.cursor(key).any(|(_, d, i)| i == id && !d)
    }

    /// The last live id (0-0 when empty).
    pub fn last_live_id(&self) -> StreamId {
        for (master, node) in self.nodes.iter().rev() {
            if node.live == 0 {
                continue;
            }
            if let Some((_, _, id)) = node.ids(*master).into_iter().rev().find(|e| !e.1) {
                return id;
            }
        }
        StreamId::MIN
    }

    fn refresh_first_id(&mut self) {
        self.first_id = if self.length == 0 {
            StreamId::MIN
        } else {
            self.range(StreamId::MIN, StreamId::MAX, 1)
                .first()
                .map_or(StreamId::MIN, |e| e.0)
        };
    }

    /// Deletes one entry (XDEL); true if it was there.
    pub fn delete(&mut self, id: StreamId) -> bool {
        let Some(key) = self.node_key_at_or_before(id) else {
            return false;
        };
        let is_last = self.nodes.last_key_value().is_some_and(|(k, _)| *k == key);
        let Some(node) = self.nodes.get_mut(&key) else {
            return false;
        };
        let Some(at) = node
            .ids(key)
            .into_iter()
            .find(|(_, d, i)| *i == id && !d)
            .map(|(at, _, _)| at)
        else {
            return false;
        };
        node.mark_deleted(at);
        // An emptied node goes, unless it is the one appends continue in.
        if node.live == 0 && !is_last {
            self.nodes.remove(&key);
        }
        self.length -= 1;
        if id > self.max_deleted_id {
            self.max_deleted_id = id;
        }
        if id == self.first_id {
            self.refresh_first_id();
        }
        true
    }

    /// Whether some consumer group still needs entry `id` (Redis's
    /// `streamEntryIsReferenced`): a group has not been delivered it yet (its
    /// last-delivered id is below `id`), or it is pending in a group's PEL.
    pub fn is_referenced(&self, id: StreamId) -> bool {
        self.groups
            .values()
            .any(|g| g.last_id < id || g.pel.contains_key(&id))
    }

    /// Drops `id` from every group's PEL (and its consumer's); true if any held it.
    pub fn drop_refs(&mut self, id: StreamId) -> bool {
        let mut any = false;
        for g in self.groups.values_mut() {
            any |= g.ack(id);
        }
        any
    }

    /// Trims as XADD/XTRIM do, handling group references per `policy`. KEEPREF
    /// (or a stream without groups, where the policies agree) is [`Self::trim`].
    /// Otherwise entries go one by one, oldest first: DELREF drops each one's
    /// references, ACKED skips the entries a group still needs and goes on past
    /// them. `approx` still only touches nodes that could go as a whole, so the
    /// entries removed are always the oldest eligible ones: the exact trim to the
    /// resulting length with the same policy removes the same entries.
    pub fn trim_with(&mut self, how: Trim, approx: bool, limit: u64, policy: RefPolicy) -> u64 {
        if policy == RefPolicy::KeepRef || self.groups.is_empty() {
            return self.trim(how, approx, limit);
        }
        let mut deleted = 0u64;
        let mut next = self.nodes.keys().next().copied();
        while let Some(key) = next {
            next = self
                .nodes
                .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| *k);
            if let Trim::MaxLen(max) = how {
                if self.length <= max {
                    break;
                }
            }
            let Some(node) = self.nodes.get(&key) else {
                break;
            };
            let live = node.live as u64;
            if limit != 0 && deleted + live > limit {
                break;
            }
            let whole = match how {
                Trim::MaxLen(max) => self.length - live >= max,
                Trim::MinId(min) => node.last < min,
            };
            if approx && !whole {
                break;
            }
            let mut reached = false;
            for (at, was_deleted, id) in node.ids(key) {
                if was_deleted {
                    continue;
                }
                reached = match how {
                    Trim::MaxLen(max) => self.length <= max,
                    Trim::MinId(min) => id >= min,
                };
                if reached {
                    break;
                }
                match policy {
                    RefPolicy::Acked if self.is_referenced(id) => continue,
                    RefPolicy::DelRef => {
                        self.drop_refs(id);
                    }
                    _ => {}
                }
                if let Some(node) = self.nodes.get_mut(&key) {
                    node.mark_deleted(at);
                }
                self.length -= 1;
                deleted += 1;
            }
            // An emptied node goes, as whole-node trimming removes it.
            if self.nodes.get(&key).is_some_and(|n| n.live == 0) {
                self.nodes.remove(&key);
            }
            if reached {
                break;
            }
        }
        // (An emptied stream's first id is MIN: `refresh_first_id` says so.)
        if deleted > 0 || self.length == 0 {
            self.refresh_first_id();
        }
        deleted
    }

    /// Trims as XADD/XTRIM do. `approx` removes whole nodes only; `limit` (0 =
    /// none) bounds the entries removed. Returns how many were removed.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        while let Some((&key, node)) = self.nodes.first_key_value() {
            if let Trim::MaxLen(max) = how {
                if self.length <= max {
                    break;
                }
            }
            let live = node.live as u64;
            if limit != 0 && deleted + live > limit {
                break;
            }
            let whole = match how {
                Trim::MaxLen(max) => self.length - live >= max,
                Trim::MinId(min) => node.last < min,
            };
            if whole {
                self.nodes.remove(&key);
                self.length -= live;
                deleted += live;
                continue;
            }
            if approx {
                break;
            }
            let Some(node) = self.nodes.get_mut(&key) else {
                break;
            };
            for (at, was_deleted, id) in node.ids(key) {
                let stop = match how {
                    Trim::MaxLen(max) => self.length <= max,
                    Trim::MinId(min) => id >= min,
                };
                if stop {
                    break;
                }
                if !was_deleted {
                    node.mark_deleted(at);
                    self.length -= 1;
                    deleted += 1;
                }
            }
            break;
        }
        // (An emptied stream's first id is MIN: `refresh_first_id` says so.)
        if deleted > 0 || self.length == 0 {
            self.refresh_first_id();
        }
        deleted
    }

    /// Whether some deleted entry could lie in `start..=end` (Redis's
    /// `streamRangeHasTombstones`): then counting entries by arithmetic is off.
    pub fn range_has_tombstones(&self, start: StreamId, end: StreamId) -> bool {
        if self.length == 0 || self.max_deleted_id.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted_id {
            return false;
        }
        start <= self.max_deleted_id && self.max_deleted_id <= end
    }

    /// How many entries were added up to and including `id`, when that can be
    /// known (Redis's `streamEstimateDistanceFromFirstEverEntry`).
    pub fn entries_read_at(&self, id: StreamId) -> i64 {
        if self.entries_added == 0 {
            return 0;
        }
        if self.length == 0 && id <= self.last_id {
            return self.entries_added as i64;
        }
        if id == self.last_id {
            return self.entries_added as i64;
        }
        if id > self.last_id {
            return ENTRIES_READ_INVALID;
        }
        if self.max_deleted_id.is_zero() || self.max_deleted_id < self.first_id {
            if id < self.first_id {
                return (self.entries_added - self.length) as i64;
            }
            if id == self.first_id {
                return (self.entries_added - self.length + 1) as i64;
            }
        }
        ENTRIES_READ_INVALID
    }

    /// A group's lag (entries not yet delivered), `None` when it cannot be known.
    pub fn group_lag(&self, g: &Group) -> Option<i64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if g.entries_read != ENTRIES_READ_INVALID
            && !self.range_has_tombstones(g.last_id, StreamId::MAX)
        {
            return Some(self.entries_added as i64 - g.entries_read);
        }
        let read = self.entries_read_at(g.last_id);
        (read != ENTRIES_READ_INVALID).then(|| self.entries_added as i64 - read)
    }

    /// Advances a group's last-delivered id to `id` (an entry it is delivering),
    /// keeping `entries_read` as Redis does.
    pub fn advance_group(&self, g: &mut Group, id: StreamId) {
        if id <= g.last_id {
            return;
        }
        if g.entries_read != ENTRIES_READ_INVALID && !self.range_has_tombstones(id, StreamId::MAX) {
            g.entries_read += 1;
        } else if self.entries_added != 0 {
            g.entries_read = self.entries_read_at(id);
        }
        g.last_id = id;
    }

    /// The groups, `None` when there are none.
    pub fn groups(&self) -> Option<&BTreeMap<Bytes, Group>> {
        (!self.groups.is_empty()).then_some(&self.groups)
    }

    pub fn group(&self, name: &[u8]) -> Option<&Group> {
        self.groups.get(name)
    }

    pub fn group_mut(&mut self, name: &[u8]) -> Option<&mut Group> {
        self.groups.get_mut(name)
    }

    /// Adds a group; false if the name is taken.
    pub fn create_group(&mut self, name: Bytes, group: Group) -> bool {
        if self.groups.contains_key(&name) {
            return false;
        }
        self.groups.insert(name, group);
        true
    }

    pub fn destroy_group(&mut self, name: &[u8]) -> bool {
        self.groups.remove(name).is_some()
    }

    /// Lends one group out while the rest of the stream is read: for operations
    /// that read entries while changing the group.
    pub fn with_group<R>(
        &mut self,
        name: &[u8],
        f: impl FnOnce(&StreamValue, &mut Group) -> R,
    ) -> Option<R> {
        let (key, mut group) = self.groups.remove_entry(name)?;
        let r = f(self, &mut group);
        self.groups.insert(key, group);
        Some(r)
    }

    /// Approximate heap bytes.
    pub fn mem_usage(&self) -> usize {
        let nodes: usize = self.nodes.values().map(|n| n.buf.capacity() + 64).sum();
        let groups: usize = self
            .groups
            .iter()
            .map(|(name, g)| {
                name.len()
                    + 64
                    + g.pel.len() * 64
                    + g.consumers.keys().map(|c| c.len() + 64).sum::<usize>()
            })
            .sum();
        nodes + groups + 64
    }

    /// Commands that recreate this stream exactly (AOF rewrite, snapshots): the
    /// entries, then the id counters, then each group with its consumers and
    /// pending entries. A stream with no entries ever is created by XGROUP
    /// CREATE … MKSTREAM or XADD+XDEL, as Redis's rewrite does.
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let mut out = Vec::new();
        let entries = self.range(StreamId::MIN, StreamId::MAX, 0);
        if entries.is_empty() {
            // An entry trimmed at once leaves an empty stream; XSETID below then
            // sets the real counters (XADD cannot take 0-0).
            out.push(vec![
                b("XADD"),
                key.clone(),
                b("MAXLEN"),
                b("0"),
                self.last_id.max(StreamId::new(0, 1)).to_bytes(),
                b("x"),
                b("y"),
            ]);
        }
        for (id, fields) in entries {
            let mut cmd = Vec::with_capacity(3 + fields.len());
            cmd.push(b("XADD"));
            cmd.push(key.clone());
            cmd.push(id.to_bytes());
            cmd.extend(fields);
            out.push(cmd);
        }
        out.push(vec![
            b("XSETID"),
            key.clone(),
            self.last_id.to_bytes(),
            b("ENTRIESADDED"),
            Bytes::from(self.entries_added.to_string()),
            b("MAXDELETEDID"),
            self.max_deleted_id.to_bytes(),
        ]);
        for (name, g) in self.groups().into_iter().flatten() {
            out.push(vec![
                b("XGROUP"),
                b("CREATE"),
                key.clone(),
                name.clone(),
                g.last_id.to_bytes(),
                b("ENTRIESREAD"),
                Bytes::from(g.entries_read.to_string()),
            ]);
            for cname in g.consumers.keys() {
                out.push(vec![
                    b("XGROUP"),
                    b("CREATECONSUMER"),
                    key.clone(),
                    name.clone(),
                    cname.clone(),
                ]);
            }
            for (id, nack) in &g.pel {
                out.push(vec![
                    b("XCLAIM"),
                    key.clone(),
                    name.clone(),
                    nack.consumer.clone(),
                    b("0"),
                    id.to_bytes(),
                    b("TIME"),
                    Bytes::from(nack.delivery_time.to_string()),
                    b("RETRYCOUNT"),
                    Bytes::from(nack.delivery_count.to_string()),
                    b("JUSTID"),
                    b("FORCE"),
                ]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(items: &[&str]) -> Vec<Bytes> {
        items
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn small() -> NodeLimits {
        NodeLimits {
            max_entries: 3,
            max_bytes: 0,
        }
    }

    #[test]
    fn append_range_delete_trim() {
        let mut s = StreamValue::default();
        for i in 1..=10u64 {
            let fields = if i % 3 == 0 {
                f(&["x", &i.to_string()])
            } else {
                f(&["a", "1", "b", &i.to_string()])
            };
            s.append(StreamId::new(i, 0), &fields, small());
        }
        assert_eq!(s.len(), 10);
        assert_eq!(s.node_count(), 4);
        let all = s.range(StreamId::MIN, StreamId::MAX, 0);
        assert_eq!(all.len(), 10);
        assert_eq!(all[2], (StreamId::new(3, 0), f(&["x", "3"])));
        assert_eq!(all[3], (StreamId::new(4, 0), f(&["a", "1", "b", "4"])));
        let rev = s.rev_range(StreamId::new(2, 0), StreamId::new(5, 0), 0);
        assert_eq!(
            rev.iter().map(|e| e.0.ms).collect::<Vec<_>>(),
            vec![5, 4, 3, 2]
        );
        assert_eq!(
            s.range(StreamId::new(4, 1), StreamId::MAX, 2)
                .iter()
                .map(|e| e.0.ms)
                .collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert!(s.delete(StreamId::new(1, 0)));
        assert!(!s.delete(StreamId::new(1, 0)));
        assert_eq!(s.first_id, StreamId::new(2, 0));
        assert_eq!(s.max_deleted_id, StreamId::new(1, 0));
        assert!(!s.contains(StreamId::new(1, 0)));
        assert!(s.contains(StreamId::new(2, 0)));
        assert_eq!(s.len(), 9);
        // Approximate trimming drops whole nodes only.
        assert_eq!(s.trim(Trim::MaxLen(5), true, 0), 2);
        assert_eq!(s.len(), 7);
        assert_eq!(s.trim(Trim::MaxLen(5), false, 0), 2);
        assert_eq!(s.first_id, StreamId::new(6, 0));
        assert_eq!(s.trim(Trim::MinId(StreamId::new(9, 0)), false, 0), 3);
        assert_eq!(s.range(StreamId::MIN, StreamId::MAX, 0).len(), 2);
        assert_eq!(s.entries_added, 10);
        assert_eq!(s.trim(Trim::MaxLen(0), false, 0), 2);
        assert!(s.is_empty());
        assert_eq!(s.first_id, StreamId::MIN);
        assert_eq!(s.last_id, StreamId::new(10, 0));
    }

    /// Nodes split where Redis's listpacks split (checked against redis-server
    /// with the same ids): BullMQ's event mix fills a first node with 92 entries,
    /// so `MAXLEN ~ 5` drops 92, as Redis does.
    #[test]
    fn nodes_split_as_redis_listpacks_do() {
        let mut s = StreamValue::default();
        for i in 1..=25u64 {
            let base = 1_700_000_000_000 + i * 4;
            let n = i.to_string();
            let events: [&[&str]; 4] = [
                &["event", "added", "jobId", &n, "name", "test"],
                &["event", "waiting", "jobId", &n],
                &["event", "active", "jobId", &n, "prev", "waiting"],
                &[
                    "event",
                    "completed",
                    "jobId",
                    &n,
                    "returnvalue",
                    "null",
                    "prev",
                    "active",
                ],
            ];
            for (k, e) in events.iter().enumerate() {
                s.append(
                    StreamId::new(base + k as u64, 0),
                    &f(e),
                    NodeLimits::default(),
                );
            }
        }
        assert_eq!(s.node_count(), 2);
        assert_eq!(s.trim(Trim::MaxLen(5), true, 0), 92);
    }

    /// A policy trim removes the oldest entries its policy allows, so the exact
    /// trim to the resulting length (what the log records) removes the same ones.
    #[test]
    fn policy_trims_replay_exactly() {
        let build = || {
            let mut s = StreamValue::default();
            for i in 1..=9u64 {
                s.append(StreamId::new(i, 0), &f(&["a", "1"]), small());
            }
            let mut g = Group::new(StreamId::new(9, 0), 9);
            g.consumers
                .insert(Bytes::from_static(b"c"), Consumer::new(0));
            for i in [2u64, 5, 6] {
                g.assign(StreamId::new(i, 0), &Bytes::from_static(b"c"), 0);
            }
            s.create_group(Bytes::from_static(b"g"), g);
            s
        };
        let live = |s: &StreamValue| -> Vec<u64> {
            s.range(StreamId::MIN, StreamId::MAX, 0)
                .iter()
                .map(|e| e.0.ms)
                .collect()
        };
        for (how, approx) in [
            (Trim::MaxLen(3), true),
            (Trim::MaxLen(3), false),
            (Trim::MinId(StreamId::new(8, 0)), true),
            (Trim::MinId(StreamId::new(8, 0)), false),
        ] {
            for policy in [RefPolicy::Acked, RefPolicy::DelRef] {
                let mut s = build();
                let n = s.trim_with(how, approx, 0, policy);
                let mut replay = build();
                replay.trim_with(Trim::MaxLen(s.len()), false, 0, policy);
                assert_eq!(live(&s), live(&replay), "{how:?} {approx} {policy:?}");
                assert_eq!(s.groups(), replay.groups());
                assert_eq!(s.len(), 9 - n);
            }
        }
        // ACKED keeps what the group still has pending or was never delivered.
        let mut s = build();
        if let Some(g) = s.group_mut(b"g") {
            g.last_id = StreamId::new(7, 0);
        }
        assert_eq!(s.trim_with(Trim::MaxLen(0), false, 0, RefPolicy::Acked), 4);
        assert_eq!(live(&s), vec![2, 5, 6, 8, 9]);
        assert_eq!(s.first_id, StreamId::new(2, 0));
        // DELREF drops the references of what it removes.
        let mut s = build();
        assert_eq!(
            s.trim_with(
                Trim::MinId(StreamId::new(6, 0)),
                false,
                0,
                RefPolicy::DelRef
            ),
            5
        );
        let pel: Vec<u64> = s
            .group(b"g")
            .map_or(vec![], |g| g.pel.keys().map(|k| k.ms).collect());
        assert_eq!(pel, vec![6]);
    }

    #[test]
    fn ids_step() {
        assert_eq!(StreamId::new(1, u64::MAX).next(), Some(StreamId::new(2, 0)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::new(2, 0).prev(), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(StreamId::MIN.prev(), None);
    }

    #[test]
    fn compact() {
        let mut s = StreamValue::default();
        for i in 0..1000u64 {
            s.append(
                StreamId::new(1_700_000_000_000 + i, 0),
                &f(&["user", "42", "event", "click", "n", "7"]),
                NodeLimits::default(),
            );
        }
        // Field names are stored once per node: about 16 bytes per entry.
        assert!(s.mem_usage() < 1000 * 24, "{}", s.mem_usage());
    }
}
