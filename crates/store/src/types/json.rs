//! The JSON type (RedisJSON's `ReJSON-RL`): one document per key. Objects keep
//! their keys in insertion order and integers stay integers, as RedisJSON does,
//! which is why this is its own tree rather than `serde_json::Value` (whose map
//! order is a crate-wide feature switch). Parsing goes through serde_json and so
//! keeps its nesting limit; writes check [`MAX_DEPTH`] themselves, so every
//! recursive walk here (printing, cloning, dropping) stays shallow.

use std::fmt;

use bytes::Bytes;
use indexmap::IndexMap;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use tidewire_resp::Reply;

/// Deepest nesting a stored document may reach (serde_json's parser limit).
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<JsonValue>),
    Object(IndexMap<String, JsonValue>),
}

/// INDENT / NEWLINE / SPACE of JSON.GET; all empty prints compact JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Format<'a> {
    pub indent: &'a str,
    pub newline: &'a str,
    pub space: &'a str,
}

impl JsonValue {
    /// Parses JSON text; the error is serde_json's message (RedisJSON replies with
    /// the same parser's words).
    pub fn parse(text: &[u8]) -> Result<JsonValue, String> {
        serde_json::from_slice::<JsonValue>(text).map_err(|e| e.to_string())
    }

    /// The name JSON.TYPE replies with.
    pub fn type_name(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "boolean",
            JsonValue::Int(_) => "integer",
            JsonValue::Float(_) => "number",
            JsonValue::Str(_) => "string",
            JsonValue::Array(_) => "array",
            JsonValue::Object(_) => "object",
        }
    }

    /// Nesting depth: 0 for a scalar, 1 for a container of scalars.
    pub fn depth(&self) -> usize {
        match self {
            JsonValue::Array(a) => 1 + a.iter().map(|v| v.depth()).max().unwrap_or(0),
            JsonValue::Object(o) => 1 + o.values().map(|v| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            JsonValue::Int(i) => Some(*i as f64),
            JsonValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Approximate heap bytes, for MEMORY USAGE and eviction.
    pub fn mem_usage(&self) -> usize {
        const NODE: usize = std::mem::size_of::<JsonValue>();
        match self {
            JsonValue::Str(s) => NODE + s.capacity(),
            JsonValue::Array(a) => {
                NODE + a.iter().map(|v| v.mem_usage()).sum::<usize>()
                    + (a.capacity() - a.len()) * NODE
            }
            JsonValue::Object(o) => {
                NODE + o
                    .iter()
                    // Key, value and the map's index slot and hash.
                    .map(|(k, v)| k.capacity() + 32 + v.mem_usage())
                    .sum::<usize>()
            }
            _ => NODE,
        }
    }

    /// Compact JSON text.
    pub fn to_text(&self) -> String {
        self.to_text_with(&Format::default())
    }

    pub fn to_text_with(&self, f: &Format<'_>) -> String {
        let mut out = String::new();
        self.write(&mut out, f, 0);
        out
    }

    fn write(&self, out: &mut String, f: &Format<'_>, level: usize) {
        match self {
            JsonValue::Null => out.push_str("null"),
            JsonValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            JsonValue::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            JsonValue::Float(x) => out.push_str(&format_float(*x)),
            JsonValue::Str(s) => write_str(out, s),
            JsonValue::Array(a) => {
                if a.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, f, level + 1);
                    v.write(out, f, level + 1);
                }
                newline(out, f, level);
                out.push(']');
            }
            JsonValue::Object(o) => {
                if o.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, f, level + 1);
                    write_str(out, k);
                    out.push(':');
                    out.push_str(f.space);
                    v.write(out, f, level + 1);
                }
                newline(out, f, level);
                out.push('}');
            }
        }
    }

    /// JSON.RESP's form: `[` / `{` markers before array elements and object
    /// key-value pairs, integers as integers, other numbers as bulk strings.
    pub fn to_resp(&self) -> Reply {
        match self {
            JsonValue::Null => Reply::Null,
            JsonValue::Bool(b) => Reply::Status(if *b { "true" } else { "false" }),
            JsonValue::Int(i) => Reply::Int(*i),
            JsonValue::Float(x) => Reply::Bulk(Bytes::from(format_float(*x))),
            JsonValue::Str(s) => Reply::Bulk(Bytes::copy_from_slice(s.as_bytes())),
            JsonValue::Array(a) => {
                let mut v = Vec::with_capacity(a.len() + 1);
                v.push(Reply::Status("["));
                v.extend(a.iter().map(|e| e.to_resp()));
                Reply::Array(v)
            }
            JsonValue::Object(o) => {
                let mut v = Vec::with_capacity(o.len() * 2 + 1);
                v.push(Reply::Status("{"));
                for (k, e) in o {
                    v.push(Reply::Bulk(Bytes::copy_from_slice(k.as_bytes())));
                    v.push(e.to_resp());
                }
                Reply::Array(v)
            }
        }
    }

    /// Commands that recreate this document under `key` (AOF rewrite, snapshots).
    pub fn rewrite_commands(&self, key: &Bytes) -> Vec<Vec<Bytes>> {
        vec![vec![
            Bytes::from_static(b"JSON.SET"),
            key.clone(),
            Bytes::from_static(b"$"),
            Bytes::from(self.to_text()),
        ]]
    }

    /// RFC 7386 merge patch of `patch` into `self`.
    pub fn merge(&mut self, patch: JsonValue) {
        match patch {
            JsonValue::Object(p) => {
                if !matches!(self, JsonValue::Object(_)) {
                    *self = JsonValue::Object(IndexMap::new());
                }
                if let JsonValue::Object(o) = self {
                    for (k, v) in p {
                        if matches!(v, JsonValue::Null) {
                            o.shift_remove(&k);
                        } else {
                            o.entry(k).or_insert(JsonValue::Null).merge(v);
                        }
                    }
                }
            }
            other => *self = other,
        }
    }
}

/// Equality as filters and JSON.ARRINDEX see it: 1 and 1.0 are the same number.
pub fn json_eq(a: &JsonValue, b: &JsonValue) -> bool {
    match (a, b) {
        (JsonValue::Int(x), JsonValue::Int(y)) => x == y,
        (JsonValue::Int(_) | JsonValue::Float(_), JsonValue::Int(_) | JsonValue::Float(_)) => {
            a.as_f64() == b.as_f64()
        }
        (JsonValue::Array(x), JsonValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (JsonValue::Object(x), JsonValue::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Shortest text that reads back as the same f64 (serde_json's ryu output:
/// `2.5`, `5.0`, `1e300`).
pub fn format_float(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| "null".to_string(), |n| n.to_string())
}

fn newline(out: &mut String, f: &Format<'_>, level: usize) {
    out.push_str(f.newline);
    for _ in 0..level {
        out.push_str(f.indent);
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = JsonValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<JsonValue, E> {
        Ok(JsonValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<JsonValue, E> {
        Ok(JsonValue::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<JsonValue, E> {
        Ok(i64::try_from(v).map_or(JsonValue::Float(v as f64), JsonValue::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<JsonValue, E> {
        Ok(JsonValue::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<JsonValue, E> {
        Ok(JsonValue::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<JsonValue, E> {
        Ok(JsonValue::Str(v))
    }

    fn visit_unit<E>(self) -> Result<JsonValue, E> {
        Ok(JsonValue::Null)
    }

    fn visit_none<E>(self) -> Result<JsonValue, E> {
        Ok(JsonValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonValue, A::Error> {
        let mut v = Vec::new();
        while let Some(e) = seq.next_element::<JsonValue>()? {
            v.push(e);
        }
        Ok(JsonValue::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonValue, A::Error> {
        let mut o = IndexMap::new();
        while let Some((k, v)) = map.next_entry::<String, JsonValue>()? {
            o.insert(k, v);
        }
        Ok(JsonValue::Object(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_number_kinds() {
        let v = JsonValue::parse(br#"{"z":1,"a":2.5,"m":[true,null,"x\n"],"f":5.0}"#).unwrap();
        assert_eq!(
            v.to_text(),
            r#"{"z":1,"a":2.5,"m":[true,null,"x\n"],"f":5.0}"#
        );
        assert_eq!(v.depth(), 2);
    }

    #[test]
    fn pretty_printing_follows_the_format() {
        let v = JsonValue::parse(br#"{"a":[1,2],"b":{}}"#).unwrap();
        let f = Format {
            indent: "\t",
            newline: "\n",
            space: " ",
        };
        assert_eq!(
            v.to_text_with(&f),
            "{\n\t\"a\": [\n\t\t1,\n\t\t2\n\t],\n\t\"b\": {}\n}"
        );
    }

    #[test]
    fn deep_documents_are_refused_not_crashed_on() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(JsonValue::parse(deep.as_bytes()).is_err());
        assert!(JsonValue::parse(b"{\"a\":").is_err());
        assert!(JsonValue::parse(b"1 2").is_err());
    }

    #[test]
    fn merge_patch() {
        let mut v = JsonValue::parse(br#"{"f1":{"a":1},"f2":{"a":2}}"#).unwrap();
        v.merge(JsonValue::parse(br#"{"f1":null,"f2":{"a":3,"b":4},"f3":[2,4,6]}"#).unwrap());
        assert_eq!(v.to_text(), r#"{"f2":{"a":3,"b":4},"f3":[2,4,6]}"#);
    }
}
