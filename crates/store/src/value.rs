//! The value stored under a key. Each data type lives in its own module under
//! `types/`; this enum only ties them together and answers the questions every
//! type must answer (its TYPE name, its OBJECT ENCODING, a rough memory size).

use bytes::Bytes;

use crate::str_value::StrValue;
use crate::types::{
    hash::HashValue, json::JsonValue, list::ListValue, set::SetValue, stream::StreamValue,
    zset::ZSetValue,
};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(StrValue),
    List(Box<ListValue>),
    /// Unboxed: `Value` is 40 bytes for `Bytes` anyway and a small hash or set fits
    /// in that, which saves one allocation per key.
    Hash(HashValue),
    Set(SetValue),
    ZSet(Box<ZSetValue>),
    Stream(Box<StreamValue>),
    /// A RedisJSON document (`ReJSON-RL`).
    Json(Box<JsonValue>),
}

impl Value {
    /// The name `TYPE` replies with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
            Value::Json(_) => "ReJSON-RL",
        }
    }

    /// The encoding `OBJECT ENCODING` reports, following Redis's thresholds.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(b) => {
                if b.len() <= 20 && crate::num::parse_i64(b).is_some() {
                    "int"
                } else if b.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::List(v) => v.encoding(),
            Value::Hash(v) => v.encoding(),
            Value::Set(v) => v.encoding(),
            Value::ZSet(v) => v.encoding(),
            Value::Stream(_) => "stream",
            // Redis reports module values as "raw".
            Value::Json(_) => "raw",
        }
    }

    /// Approximate heap bytes held, for MEMORY USAGE and eviction accounting.
    /// A collection with no elements left (Redis never keeps those: the key goes).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(v) => v.is_empty(),
            Value::Hash(v) => v.is_empty(),
            Value::Set(v) => v.is_empty(),
            Value::ZSet(v) => v.is_empty(),
            // An empty stream is still a stream (its ids and groups matter).
            Value::Stream(_) => false,
            // An empty document (`{}`) is still a document.
            Value::Json(_) => false,
        }
    }

    pub fn mem_usage(&self) -> usize {
        match self {
            Value::Str(b) => b.len(),
            Value::List(v) => v.mem_usage(),
            Value::Hash(v) => v.mem_usage(),
            Value::Set(v) => v.mem_usage(),
            Value::ZSet(v) => v.mem_usage(),
            Value::Stream(v) => v.mem_usage(),
            Value::Json(v) => v.mem_usage(),
        }
    }

    /// Commands that recreate this value under `key`, for AOF rewrite. The TTL is
    /// not included (the caller adds PEXPIREAT).
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        match self {
            Value::Str(b) => vec![vec![Bytes::from_static(b"SET"), key.clone(), b.to_bytes()]],
            Value::List(v) => v.rewrite_commands(key),
            Value::Hash(v) => v.rewrite_commands(key),
            Value::Set(v) => v.rewrite_commands(key),
            Value::ZSet(v) => v.rewrite_commands(key),
            Value::Stream(v) => v.rewrite_commands(key),
            Value::Json(v) => v.rewrite_commands(key),
        }
    }
}

/// A keyspace entry: the value, its absolute expiry, and access data for eviction.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Absolute expiry in unix milliseconds; 0 means no expiry.
    pub expire_at: u64,
    /// Access data for eviction and OBJECT IDLETIME/FREQ: the seconds LRU clock, or
    /// under an LFU policy minutes (16 bits) + log counter (8 bits); see `evict`.
    pub access: u32,
}

impl Entry {
    pub fn new(value: Value) -> Self {
        Entry {
            value,
            expire_at: 0,
            access: crate::evict::initial_access(),
        }
    }

    pub fn with_expiry(value: Value, expire_at: u64) -> Self {
        Entry {
            expire_at,
            ..Entry::new(value)
        }
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expire_at != 0 && self.expire_at <= now
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_and_entry_stay_small() {
        assert_eq!(std::mem::size_of::<super::Value>(), 40);
        assert_eq!(std::mem::size_of::<super::Entry>(), 56);
    }
}
