//! Values in Redis's RDB object format, as DUMP writes and RESTORE reads them: a
//! type byte, then the object. Tidewire writes what Redis 7.2 writes for the
//! same value and encoding (strings integer-encoded or LZF-compressed like
//! `rdbSaveRawString`; lists as a quicklist of listpacks; sets as intset, listpack
//! or plain; hashes and sorted sets as listpack or plain, binary scores), and reads
//! everything Redis 7.x can send, including the ziplist, zipmap and text-score
//! forms of older versions.
//!
//! Reading trusts nothing: every length is checked against the bytes present
//! before anything is allocated for it, and any inconsistency (truncation,
//! trailing bytes, duplicates, a NaN score, an empty collection, a blob whose
//! header disagrees with its content) makes [`decode`] return `None`, so RESTORE
//! refuses the payload and changes nothing. The encodings the restored value gets
//! follow Redis's loader (`rdbLoadObject`) and this server's limits.

#![forbid(unsafe_code)]

mod intset;
pub mod listpack;
mod stream;
mod ziplist;
mod zipmap;

use std::borrow::Cow;
use std::collections::HashSet;

use bytes::Bytes;

use crate::config::{Config, Limit};
use crate::dump_payload::{self, put_len, put_string_encoded, Reader};
use crate::str_value::StrValue;
use crate::types::hash::{HashLimits, HashValue};
use crate::types::list::ListValue;
use crate::types::pack::Pack;
use crate::types::set::{SetLimits, SetValue};
use crate::types::zset::ZSetValue;
use crate::value::Value;
use listpack::Elem;

/// RDB object types (Redis's `RDB_TYPE_*`).
pub mod rdb_type {
    pub const STRING: u8 = 0;
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const ZSET: u8 = 3;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const HASH_ZIPMAP: u8 = 9;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    pub const SET_LISTPACK: u8 = 20;
    pub const STREAM_LISTPACKS_3: u8 = 21;
}
use rdb_type::*;

/// Quicklist node containers (`QUICKLIST_NODE_CONTAINER_*`).
const CONTAINER_PLAIN: u64 = 1;
const CONTAINER_PACKED: u64 = 2;
/// Elements this large get a node of their own, stored raw (Redis's
/// `packed_threshold`).
const PLAIN_NODE_THRESHOLD: usize = 1 << 30;
/// Node size limits by `list-max-listpack-size` -1 … -5 (`optimization_level`).
const NODE_BYTES: [usize; 5] = [4096, 8192, 16384, 32768, 65536];
/// The size cap of a node limited by count (`SIZE_SAFETY_LIMIT`).
const NODE_SAFETY_BYTES: usize = 8192;
/// What Redis adds to an element's length when deciding whether it fits a node.
const NODE_ENTRY_OVERHEAD: usize = 8;

/// The encoding limits a restored value is fitted to, read from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub hash: HashLimits,
    pub set: SetLimits,
    pub zset_entries: usize,
    pub zset_value: usize,
    /// `list-max-listpack-size`.
    pub list_fill: i64,
    /// `stream-node-max-entries` / `stream-node-max-bytes`.
    pub stream_nodes: crate::types::stream::NodeLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hash: HashLimits::default(),
            set: SetLimits::default(),
            zset_entries: 128,
            zset_value: 64,
            list_fill: -2,
            stream_nodes: Default::default(),
        }
    }
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits {
            hash: HashLimits::from_config(config),
            set: SetLimits::from_config(config),
            zset_entries: config.encoding.get_usize(Limit::ZsetMaxListpackEntries),
            zset_value: config.encoding.get_usize(Limit::ZsetMaxListpackValue),
            list_fill: config.encoding.get(Limit::ListMaxListpackSize),
            stream_nodes: crate::types::stream::NodeLimits {
                max_entries: config.encoding.get_usize(Limit::StreamNodeMaxEntries),
                max_bytes: config.encoding.get_usize(Limit::StreamNodeMaxBytes),
            },
        }
    }
}

/// Why RESTORE refuses a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// The footer: an RDB version newer than we read, or a checksum mismatch.
    Footer,
    /// The checksum matched but the object does not decode.
    BadData,
}

/// A stream as RDB version 10 readers (Redis 7.0) take it: type 19, without the
/// consumers' active times that version 11 added. For moving streams to an older
/// server; `None` for any other value.
pub fn encode_stream_v10(value: &Value) -> Option<Vec<u8>> {
    let Value::Stream(st) = value else {
        return None;
    };
    let mut buf = Vec::new();
    stream::encode(&mut buf, st, false);
    Some(buf)
}

/// The DUMP payload of `value`: the object, then the version and CRC footer.
/// `compress` is `rdbcompression`.
pub fn dump(value: &Value, limits: &Limits, compress: bool) -> Bytes {
    dump_payload::seal(encode(value, limits.list_fill, compress))
}

/// The value a RESTORE payload holds.
pub fn restore(payload: &[u8], limits: &Limits) -> Result<Value, RestoreError> {
    let body = dump_payload::open(payload).ok_or(RestoreError::Footer)?;
    decode(body, limits).ok_or(RestoreError::BadData)
}

/// Appends RDB strings, honouring `rdbcompression`.
struct Out {
    buf: Vec<u8>,
    compress: bool,
}

impl Out {
    fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }

    fn len(&mut self, n: usize) {
        put_len(&mut self.buf, n as u64);
    }

    fn string(&mut self, s: &[u8]) {
        put_string_encoded(&mut self.buf, s, self.compress);
    }
}

/// The type byte and object of `value`, as Redis's `rdbSaveObjectType` and
/// `rdbSaveObject` write it for the encoding the value has.
pub fn encode(value: &Value, list_fill: i64, compress: bool) -> Vec<u8> {
    let mut o = Out {
        buf: Vec::new(),
        compress,
    };
    match value {
        Value::Str(s) => {
            o.byte(STRING);
            o.string(s.as_slice());
        }
        Value::List(l) => encode_list(&mut o, l, list_fill),
        Value::Set(s) => encode_set(&mut o, s),
        Value::Hash(h) => encode_hash(&mut o, h),
        Value::ZSet(z) => encode_zset(&mut o, z),
        Value::Stream(st) => stream::encode(&mut o.buf, st, true),
        // RedisJSON's module payload is not produced: DUMP and MIGRATE refuse JSON
        // keys before they get here, and anything else sees the document's text.
        Value::Json(j) => {
            o.byte(STRING);
            o.string(j.to_text().as_bytes());
        }
    }
    o.buf
}

/// A quicklist of listpack nodes, split as Redis's quicklist splits them; a list
/// in the listpack encoding is one node.
fn encode_list(o: &mut Out, l: &ListValue, fill: i64) {
    let (max_bytes, max_count) = if l.encoding() == "listpack" {
        (usize::MAX, usize::MAX)
    } else if fill >= 0 {
        (NODE_SAFETY_BYTES, (fill as usize).max(1))
    } else {
        let level = (fill.unsigned_abs() as usize - 1).min(NODE_BYTES.len() - 1);
        (NODE_BYTES[level], usize::MAX)
    };
    enum Node<'a> {
        Packed(Vec<u8>),
        Plain(&'a [u8]),
    }
    let mut nodes = Vec::new();
    let mut node = listpack::Writer::new();
    let mut in_node = 0usize;
    for item in l.iter() {
        if item.len() >= PLAIN_NODE_THRESHOLD {
            if !node.is_empty() {
                nodes.push(Node::Packed(std::mem::take(&mut node).finish()));
                in_node = 0;
            }
            nodes.push(Node::Plain(item));
            continue;
        }
        let grown = node.size() + item.len() + NODE_ENTRY_OVERHEAD;
        if !node.is_empty() && (grown > max_bytes || in_node + 1 > max_count) {
            nodes.push(Node::Packed(std::mem::take(&mut node).finish()));
            in_node = 0;
        }
        node.push(item);
        in_node += 1;
    }
    if !node.is_empty() {
        nodes.push(Node::Packed(node.finish()));
    }
    o.byte(LIST_QUICKLIST_2);
    o.len(nodes.len());
    for n in &nodes {
        match n {
            Node::Packed(lp) => {
                o.len(CONTAINER_PACKED as usize);
                o.string(lp);
            }
            Node::Plain(s) => {
                o.len(CONTAINER_PLAIN as usize);
                o.string(s);
            }
        }
    }
}

/// A listpack of `items`, or `None` past Redis's 1 GB listpack cap (the caller
/// then writes the plain form, which has no such cap).
fn listpack_of<'a>(items: impl Iterator<Item = Cow<'a, [u8]>>) -> Option<Vec<u8>> {
    let mut w = listpack::Writer::new();
    for s in items {
        if w.size() + listpack::Writer::entry_size(&s) > listpack::MAX_SAFE_BYTES {
            return None;
        }
        w.push(&s);
    }
    Some(w.finish())
}

fn encode_set(o: &mut Out, s: &SetValue) {
    match s {
        SetValue::Ints(v) => {
            o.byte(SET_INTSET);
            o.string(&intset::build(v));
            return;
        }
        SetValue::Pack(p) => {
            if let Some(lp) = listpack_of(p.iter().map(Cow::Borrowed)) {
                o.byte(SET_LISTPACK);
                o.string(&lp);
                return;
            }
        }
        SetValue::Map(_) => {}
    }
    o.byte(SET);
    o.len(s.len());
    for m in s.iter() {
        o.string(&m);
    }
}

fn encode_hash(o: &mut Out, h: &HashValue) {
    // A compact hash whose TTLs are all gone (DUMP refuses those with TTLs) is a
    // plain listpack hash to any reader.
    let pairs = match h {
        HashValue::Pack(p) => listpack_of(p.iter().map(Cow::Borrowed)),
        HashValue::PackEx(_) => listpack_of(h.iter().flat_map(|(f, v)| [f, v]).map(Cow::Borrowed)),
        HashValue::Map(_) | HashValue::Volatile(_) => None,
    };
    if let Some(lp) = pairs {
        o.byte(HASH_LISTPACK);
        o.string(&lp);
        return;
    }
    o.byte(HASH);
    o.len(h.len());
    for (f, v) in h.iter() {
        o.string(f);
        o.string(v);
    }
}

/// A score as Redis's `zzlInsertAt` stores it: an integer when the double is one
/// (within ±2^62), else its shortest text.
fn push_score(w: &mut listpack::Writer, score: f64) {
    const SAFE: f64 = (i64::MAX / 2) as f64;
    if (-SAFE..=SAFE).contains(&score) && score == (score as i64) as f64 {
        w.push_int(score as i64);
    } else {
        w.push_str(tidewire_resp::format_double(score).as_bytes());
    }
}

fn encode_zset(o: &mut Out, z: &ZSetValue) {
    if z.encoding() == "listpack" {
        let mut w = listpack::Writer::new();
        let mut fits = true;
        for (m, score) in z.iter() {
            // A member and a score of at most 32 bytes of text and 5 of overhead.
            if w.size() + listpack::Writer::entry_size(m) + 40 > listpack::MAX_SAFE_BYTES {
                fits = false;
                break;
            }
            w.push(m);
            push_score(&mut w, score);
        }
        if fits {
            o.byte(ZSET_LISTPACK);
            o.string(&w.finish());
            return;
        }
    }
    // Greatest first, as Redis walks its skiplist backwards.
    o.byte(ZSET_2);
    o.len(z.len());
    for (m, score) in z.iter_from(0, true) {
        o.string(m);
        o.buf.extend_from_slice(&score.to_le_bytes());
    }
}

/// The value of an RDB object (type byte included), or `None` for anything
/// inconsistent, any type Tidewire does not hold (streams, modules) and any
/// bytes left over.
pub fn decode(body: &[u8], limits: &Limits) -> Option<Value> {
    let mut r = Reader::new(body);
    let value = match r.byte()? {
        STRING => Value::Str(StrValue::from(Bytes::from(r.string()?))),
        LIST => list_value(plain_list(&mut r)?, limits),
        LIST_ZIPLIST => {
            // Redis 7.2 keeps these as a quicklist whatever their size.
            let blob = r.string()?;
            let mut l = ListValue::from_items(elems_to_bytes(&ziplist::parse(&blob)?));
            l.set_quicklist(true);
            Value::List(Box::new(l))
        }
        t @ (LIST_QUICKLIST | LIST_QUICKLIST_2) => {
            let (items, single_node) = quicklist(&mut r, t == LIST_QUICKLIST_2)?;
            let mut l = ListValue::from_items(items);
            l.set_quicklist(!single_node.is_some_and(|size| node_fits(size, l.len(), limits)));
            Value::List(Box::new(l))
        }
        SET => plain_set(&mut r, limits)?,
        SET_INTSET => {
            let members = intset::parse(&r.string()?)?;
            let over = members.len() > limits.set.max_intset;
            let s = SetValue::Ints(members);
            Value::Set(if over { s.into_hashtable() } else { s })
        }
        SET_LISTPACK => {
            let blob = r.string()?;
            listpack_set(&listpack::parse(&blob)?, limits)?
        }
        t @ (ZSET | ZSET_2) => plain_zset(&mut r, t == ZSET_2, limits)?,
        ZSET_ZIPLIST => {
            let blob = r.string()?;
            paired_zset(&ziplist::parse(&blob)?, limits)?
        }
        ZSET_LISTPACK => {
            let blob = r.string()?;
            paired_zset(&listpack::parse(&blob)?, limits)?
        }
        HASH => plain_hash(&mut r, limits)?,
        HASH_ZIPMAP => {
            let blob = r.string()?;
            let pairs = zipmap::parse(&blob)?;
            let longest = pairs.iter().map(|(f, v)| f.len().max(v.len())).max();
            let pairs = pairs
                .into_iter()
                .map(|(f, v)| (Cow::Borrowed(f), Cow::Borrowed(v)));
            // Redis converts a zipmap with long entries too (it sees them all).
            let too_long = longest.unwrap_or(0) > limits.hash.max_value;
            paired_hash(pairs, limits, too_long)?
        }
        HASH_ZIPLIST => {
            let blob = r.string()?;
            elems_hash(&ziplist::parse(&blob)?, limits)?
        }
        HASH_LISTPACK => {
            let blob = r.string()?;
            elems_hash(&listpack::parse(&blob)?, limits)?
        }
        t @ (STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3) => {
            Value::Stream(Box::new(stream::decode(&mut r, t, limits.stream_nodes)?))
        }
        // Modules and unknown types.
        _ => return None,
    };
    (r.is_empty() && !value.is_empty_collection()).then_some(value)
}

fn elems_to_bytes(elems: &[Elem<'_>]) -> Vec<Bytes> {
    elems
        .iter()
        .map(|e| match e.bytes() {
            Cow::Borrowed(s) => Bytes::copy_from_slice(s),
            Cow::Owned(v) => Bytes::from(v),
        })
        .collect()
}

/// A declared element count, refused when the bytes left could not hold that
/// many (each element takes at least one byte).
fn count(r: &mut Reader<'_>) -> Option<usize> {
    let n = usize::try_from(r.len()?).ok()?;
    (n > 0 && n <= r.remaining()).then_some(n)
}

/// Room reserved up front for `n` declared elements: an element takes one payload
/// byte but tens of bytes in memory, so past a few thousand the collection grows
/// as elements really arrive instead.
fn reserve(n: usize) -> usize {
    n.min(4096)
}

fn list_value(items: Vec<Bytes>, limits: &Limits) -> Value {
    let mut l = ListValue::from_items(items);
    l.update_encoding(limits.list_fill);
    Value::List(Box::new(l))
}

fn plain_list(r: &mut Reader<'_>) -> Option<Vec<Bytes>> {
    let n = count(r)?;
    let mut items = Vec::with_capacity(reserve(n));
    for _ in 0..n {
        items.push(Bytes::from(r.string()?));
    }
    Some(items)
}

/// Whether a list restored as one listpack node of `size` bytes holding `len`
/// elements becomes a listpack (Redis's `listTypeTryConvertQuicklist`).
fn node_fits(size: usize, len: usize, limits: &Limits) -> bool {
    let fill = limits.list_fill;
    if fill >= 0 {
        len <= (fill as usize).max(1)
    } else {
        let level = (fill.unsigned_abs() as usize - 1).min(NODE_BYTES.len() - 1);
        size <= NODE_BYTES[level]
    }
}

/// Quicklist nodes: listpacks (`v2`, each with its container kind) or ziplists.
/// Also the listpack size of the only node when there is exactly one packed
/// node, which decides the restored encoding.
fn quicklist(r: &mut Reader<'_>, v2: bool) -> Option<(Vec<Bytes>, Option<usize>)> {
    let nodes = count(r)?;
    let mut items = Vec::new();
    let mut packed_sizes = Vec::new();
    let mut plain = false;
    for _ in 0..nodes {
        let container = if v2 { r.len()? } else { CONTAINER_PACKED };
        let blob = r.string()?;
        if blob.is_empty() {
            return None;
        }
        match container {
            CONTAINER_PLAIN => {
                plain = true;
                items.push(Bytes::from(blob));
            }
            CONTAINER_PACKED => {
                // Redis skips empty nodes; an empty list in the end is refused.
                let (elems, size) = if v2 {
                    (listpack::parse(&blob)?, blob.len())
                } else {
                    // Redis converts the ziplist to a listpack: its size counts.
                    let elems = ziplist::parse(&blob)?;
                    let mut w = listpack::Writer::new();
                    for e in &elems {
                        w.push(&e.bytes());
                    }
                    (elems, w.size())
                };
                if !elems.is_empty() {
                    packed_sizes.push(size);
                }
                items.extend(elems_to_bytes(&elems));
            }
            _ => return None,
        }
    }
    let single = match (plain, &packed_sizes[..]) {
        (false, [size]) => Some(*size),
        _ => None,
    };
    Some((items, single))
}

/// RDB_TYPE_SET: members one by one, in the encoding adding them would give
/// (straight to `hashtable` when there are more than `set-max-intset-entries`).
fn plain_set(r: &mut Reader<'_>, limits: &Limits) -> Option<Value> {
    let n = count(r)?;
    let mut s = if n > limits.set.max_intset {
        SetValue::new_hashtable(reserve(n))
    } else {
        SetValue::default()
    };
    for _ in 0..n {
        if !s.add(&r.string()?, limits.set) {
            return None;
        }
    }
    Some(Value::Set(s))
}

fn listpack_set(elems: &[Elem<'_>], limits: &Limits) -> Option<Value> {
    let mut s = if elems.len() > limits.set.max_listpack_entries {
        SetValue::new_hashtable(elems.len())
    } else {
        SetValue::Pack(Pack::new())
    };
    let mut seen = HashSet::with_capacity(elems.len());
    for e in elems {
        let m = e.bytes();
        match &mut s {
            SetValue::Pack(p) => p.push(&m),
            other => {
                other.add(&m, limits.set);
            }
        }
        if !seen.insert(m) {
            return None;
        }
    }
    Some(Value::Set(s))
}

/// A hash from a listpack or ziplist of alternating fields and values: an odd
/// count is refused.
fn elems_hash(elems: &[Elem<'_>], limits: &Limits) -> Option<Value> {
    if !elems.len().is_multiple_of(2) {
        return None;
    }
    let pairs = elems
        .chunks_exact(2)
        .map(|pair| (pair[0].bytes(), pair[1].bytes()));
    paired_hash(pairs, limits, false)
}

/// RDB_TYPE_HASH: pairs one by one, in the encoding setting them would give
/// (straight to `hashtable` past `hash-max-listpack-entries`).
fn plain_hash(r: &mut Reader<'_>, limits: &Limits) -> Option<Value> {
    let n = count(r)?;
    let mut h = if n > limits.hash.max_entries {
        HashValue::new_hashtable(reserve(n))
    } else {
        HashValue::default()
    };
    for _ in 0..n {
        let f = r.string()?;
        let v = r.string()?;
        if !h.set(&f, &v, limits.hash) {
            return None;
        }
    }
    Some(Value::Hash(h))
}

/// A hash from a listpack, ziplist or zipmap: kept compact unless it has more
/// fields than `hash-max-listpack-entries` (or `convert` says so).
fn paired_hash<'a>(
    pairs: impl Iterator<Item = (Cow<'a, [u8]>, Cow<'a, [u8]>)>,
    limits: &Limits,
    convert: bool,
) -> Option<Value> {
    let pairs: Vec<_> = pairs.collect();
    if pairs.is_empty() {
        return None;
    }
    if convert || pairs.len() > limits.hash.max_entries {
        let mut h = HashValue::new_hashtable(pairs.len());
        for (f, v) in &pairs {
            if !h.set(f, v, limits.hash) {
                return None;
            }
        }
        return Some(Value::Hash(h));
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    let mut p = Pack::new();
    for (f, v) in &pairs {
        if !seen.insert(&f[..]) {
            return None;
        }
        p.push(f);
        p.push(v);
    }
    Some(Value::Hash(HashValue::Pack(p)))
}

fn plain_zset(r: &mut Reader<'_>, binary: bool, limits: &Limits) -> Option<Value> {
    let n = count(r)?;
    let mut z = ZSetValue::new();
    for _ in 0..n {
        let member = r.string()?;
        let score = if binary {
            r.binary_double()?
        } else {
            r.text_double()?
        };
        if score.is_nan() || z.insert(&member, score).is_some() {
            return None;
        }
    }
    z.reset_encoding(limits.zset_entries, limits.zset_value);
    Some(Value::ZSet(Box::new(z)))
}

/// A sorted set from a listpack or ziplist of members and scores: kept compact
/// unless it has more members than `zset-max-listpack-entries`.
fn paired_zset(elems: &[Elem<'_>], limits: &Limits) -> Option<Value> {
    if elems.is_empty() || !elems.len().is_multiple_of(2) {
        return None;
    }
    let mut z = ZSetValue::new();
    for pair in elems.chunks_exact(2) {
        let score = match pair[1] {
            Elem::Int(n) => n as f64,
            Elem::Str(s) => crate::num::parse_f64(s)?,
        };
        if z.insert(pair[0].bytes(), score).is_some() {
            return None;
        }
    }
    z.reset_encoding(limits.zset_entries, usize::MAX);
    Some(Value::ZSet(Box::new(z)))
}

#[cfg(test)]
mod tests;
