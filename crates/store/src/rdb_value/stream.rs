//! Streams in Redis's RDB encoding (`RDB_TYPE_STREAM_LISTPACKS`, `_2`, `_3`): the
//! entry nodes as listpacks keyed by their master id, the id counters, then each
//! consumer group with its pending entries and consumers. Tidewire writes version
//! 3 (Redis 7.2) and reads all three.
//!
//! A node listpack holds a master entry (live count, deleted count, the master
//! field names, a 0 terminator) and then per entry: flags, ms and seq deltas from
//! the master id, the field count and fields unless the entry has the master's
//! fields, the values, and the entry's own element count (for walking back).

use bytes::Bytes;

use super::listpack::{self, Elem};
use crate::dump_payload::{put_len, put_string, Reader};
use crate::types::stream::{Consumer, Group, Nack, NodeLimits, StreamEntry, StreamId, StreamValue};

use super::rdb_type::{STREAM_LISTPACKS_2, STREAM_LISTPACKS_3};

const FLAG_DELETED: i64 = 1;
const FLAG_SAME_FIELDS: i64 = 2;

fn id_raw(id: StreamId) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&id.ms.to_be_bytes());
    b[8..].copy_from_slice(&id.seq.to_be_bytes());
    b
}

fn id_from_raw(b: &[u8]) -> Option<StreamId> {
    if b.len() != 16 {
        return None;
    }
    Some(StreamId::new(
        u64::from_be_bytes(b[..8].try_into().ok()?),
        u64::from_be_bytes(b[8..].try_into().ok()?),
    ))
}

/// One node's listpack, from its live entries (the first gives the master id
/// and the master fields).
fn node_listpack(master: StreamId, entries: &[StreamEntry]) -> Vec<u8> {
    let mut w = listpack::Writer::new();
    let names: Vec<&Bytes> = entries
        .first()
        .map(|(_, f)| f.iter().step_by(2).collect())
        .unwrap_or_default();
    w.push_int(entries.len() as i64);
    w.push_int(0);
    w.push_int(names.len() as i64);
    for n in &names {
        w.push(n);
    }
    w.push_int(0);
    for (id, fields) in entries {
        let same = fields.len() == names.len() * 2
            && fields.iter().step_by(2).zip(&names).all(|(a, b)| a == *b);
        w.push_int(if same { FLAG_SAME_FIELDS } else { 0 });
        w.push_int(id.ms.wrapping_sub(master.ms) as i64);
        w.push_int(id.seq.wrapping_sub(master.seq) as i64);
        let pairs = fields.len() / 2;
        if same {
            for v in fields.iter().skip(1).step_by(2) {
                w.push(v);
            }
            w.push_int(pairs as i64 + 3);
        } else {
            w.push_int(pairs as i64);
            for f in fields {
                w.push(f);
            }
            w.push_int(2 * pairs as i64 + 4);
        }
    }
    w.finish()
}

/// Appends the type byte and the stream, as Redis 7.2 writes it (`v3`), or as
/// Redis 7.0 does (type 19: no consumer active times).
pub fn encode(out: &mut Vec<u8>, s: &StreamValue, v3: bool) {
    out.push(if v3 {
        STREAM_LISTPACKS_3
    } else {
        STREAM_LISTPACKS_2
    });
    let nodes = s.node_entries();
    put_len(out, nodes.len() as u64);
    for (master, entries) in &nodes {
        put_string(out, &id_raw(*master));
        put_string(out, &node_listpack(*master, entries));
    }
    put_len(out, s.len());
    for id in [s.last_id, s.first_id, s.max_deleted_id] {
        put_len(out, id.ms);
        put_len(out, id.seq);
    }
    put_len(out, s.entries_added);
    let groups = s.groups();
    put_len(out, groups.map_or(0, |g| g.len()) as u64);
    for (name, g) in groups.into_iter().flatten() {
        put_string(out, name);
        put_len(out, g.last_id.ms);
        put_len(out, g.last_id.seq);
        put_len(out, g.entries_read as u64);
        put_len(out, g.pel.len() as u64);
        for (id, nack) in &g.pel {
            out.extend_from_slice(&id_raw(*id));
            out.extend_from_slice(&nack.delivery_time.to_le_bytes());
            put_len(out, nack.delivery_count);
        }
        put_len(out, g.consumers.len() as u64);
        for (cname, c) in &g.consumers {
            put_string(out, cname);
            out.extend_from_slice(&c.seen_time.to_le_bytes());
            if v3 {
                out.extend_from_slice(&c.active_time.to_le_bytes());
            }
            put_len(out, c.pel.len() as u64);
            for id in &c.pel {
                out.extend_from_slice(&id_raw(*id));
            }
        }
    }
}

fn int(e: Option<&Elem<'_>>) -> Option<i64> {
    match e? {
        Elem::Int(n) => Some(*n),
        Elem::Str(s) => crate::num::parse_i64(s),
    }
}

fn bytes(e: &Elem<'_>) -> Bytes {
    Bytes::from(e.bytes().into_owned())
}

/// The live entries of one node listpack; `None` if it is not a well-formed node.
fn node_entries(master: StreamId, lp: &[u8]) -> Option<Vec<StreamEntry>> {
    let elems = listpack::parse(lp)?;
    let mut it = elems.iter();
    let count = int(it.next())?;
    let deleted = int(it.next())?;
    let nfields = usize::try_from(int(it.next())?).ok()?;
    if nfields > elems.len() {
        return None;
    }
    let mut names = Vec::with_capacity(nfields);
    for _ in 0..nfields {
        names.push(bytes(it.next()?));
    }
    if int(it.next())? != 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut seen = 0i64;
    while let Some(flags) = it.next() {
        let flags = int(Some(flags))?;
        let ms = master.ms.wrapping_add(int(it.next())? as u64);
        let seq = master.seq.wrapping_add(int(it.next())? as u64);
        let mut fields = Vec::new();
        if flags & FLAG_SAME_FIELDS != 0 {
            for n in &names {
                fields.push(n.clone());
                fields.push(bytes(it.next()?));
            }
        } else {
            let n = usize::try_from(int(it.next())?).ok()?;
            if n > elems.len() {
                return None;
            }
            for _ in 0..2 * n {
                fields.push(bytes(it.next()?));
            }
        }
        int(it.next())?; // the entry's element count
        seen += 1;
        if flags & FLAG_DELETED == 0 {
            out.push((StreamId::new(ms, seq), fields));
        }
    }
    let ids_ascend = out.windows(2).all(|w| w[0].0 < w[1].0);
    (out.len() as i64 == count && seen == count + deleted && ids_ascend).then_some(out)
}

fn millis(r: &mut Reader<'_>) -> Option<i64> {
    Some(i64::from_le_bytes(r.raw(8)?.try_into().ok()?))
}

/// Reads a stream of RDB type `rdb_type` (the type byte already read).
pub fn decode(r: &mut Reader<'_>, rdb_type: u8, limits: NodeLimits) -> Option<StreamValue> {
    let mut entries: Vec<StreamEntry> = Vec::new();
    let nodes = r.len()?;
    for _ in 0..nodes {
        let master = id_from_raw(&r.string()?)?;
        let lp = r.string()?;
        let node = node_entries(master, &lp)?;
        if node.is_empty() || entries.last().is_some_and(|last| last.0 >= node[0].0) {
            return None;
        }
        entries.extend(node);
    }
    let length = r.len()?;
    let last_id = StreamId::new(r.len()?, r.len()?);
    let (first_id, max_deleted, entries_added) = if rdb_type >= STREAM_LISTPACKS_2 {
        let first = StreamId::new(r.len()?, r.len()?);
        let max_deleted = StreamId::new(r.len()?, r.len()?);
        (Some(first), max_deleted, r.len()?)
    } else {
        (None, StreamId::MIN, length)
    };
    if length != entries.len() as u64 || entries.last().is_some_and(|e| e.0 > last_id) {
        return None;
    }
    let mut s = StreamValue::default();
    for (id, fields) in &entries {
        s.append(*id, fields, limits);
    }
    s.last_id = last_id;
    s.max_deleted_id = max_deleted;
    s.entries_added = entries_added;
    if let Some(first) = first_id {
        s.first_id = first;
    }
    let groups = r.len()?;
    for _ in 0..groups {
        let name = Bytes::from(r.string()?);
        let gid = StreamId::new(r.len()?, r.len()?);
        let entries_read = if rdb_type >= STREAM_LISTPACKS_2 {
            r.len()? as i64
        } else {
            s.entries_read_at(gid)
        };
        let mut g = Group::new(gid, entries_read);
        // Pending entries not yet claimed by a consumer of the payload.
        let mut unowned = std::collections::BTreeSet::new();
        let pel = r.len()?;
        for _ in 0..pel {
            let id = id_from_raw(r.raw(16)?)?;
            let delivery_time = millis(r)?;
            let delivery_count = r.len()?;
            let nack = Nack {
                consumer: Bytes::new(),
                delivery_time,
                delivery_count,
            };
            if g.pel.insert(id, nack).is_some() {
                return None;
            }
            unowned.insert(id);
        }
        let consumers = r.len()?;
        for _ in 0..consumers {
            let cname = Bytes::from(r.string()?);
            let seen_time = millis(r)?;
            let active_time = if rdb_type >= STREAM_LISTPACKS_3 {
                millis(r)?
            } else {
                seen_time
            };
            let mut c = Consumer {
                seen_time,
                active_time,
                pel: Default::default(),
            };
            let owned = r.len()?;
            for _ in 0..owned {
                let id = id_from_raw(r.raw(16)?)?;
                let nack = g.pel.get_mut(&id)?;
                if !unowned.remove(&id) || !c.pel.insert(id) {
                    return None;
                }
                nack.consumer = cname.clone();
            }
            if g.consumers.insert(cname, c).is_some() {
                return None;
            }
        }
        // Every pending entry belongs to a consumer.
        if !unowned.is_empty() {
            return None;
        }
        if !s.create_group(name, g) {
            return None;
        }
    }
    Some(s)
}
