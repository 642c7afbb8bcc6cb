//! `cjson` (lua-cjson 2.1 as bundled by Redis): `encode`, `decode`, `null` and the
//! configuration functions Redis scripts use.

use std::sync::Arc;

use parking_lot::Mutex;

use super::convert::fmt_g;
use super::env::{check_bytes, raw_fn, LibErr};
use mlua::{BString, Either, IntoLua, LightUserData, Lua, MultiValue, Table, Value};

/// Nesting bound whatever the configuration says: the encoder and decoder recurse
/// on the Rust stack, which must stay within a 2 MiB thread stack.
const HARD_DEPTH: i64 = 200;

#[derive(Clone, Copy)]
struct Cfg {
    encode_max_depth: i64,
    decode_max_depth: i64,
    /// 0: error, 1: allowed ("nan", "inf"), 2: encoded as null.
    encode_invalid_numbers: u8,
    decode_invalid_numbers: bool,
    sparse_convert: bool,
    sparse_ratio: i64,
    sparse_safe: i64,
    precision: usize,
    keep_buffer: bool,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            encode_invalid_numbers: 0,
            decode_invalid_numbers: true,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            precision: 14,
            keep_buffer: true,
        }
    }
}

/// A decoded value as it goes onto Lua's stack: strings are pushed as they are,
/// with no reference slot of the binding's own (which cost more than the rest of
/// decoding); tables are made whole, from their decoded elements.
type Item = Either<Value, Either<String, BString>>;

fn text(s: Vec<u8>) -> Item {
    match String::from_utf8(s) {
        Ok(s) => Either::Right(Either::Left(s)),
        Err(e) => Either::Right(Either::Right(BString::from(e.into_bytes()))),
    }
}

fn table(t: mlua::Result<Table>) -> Result<Item, LibErr> {
    Ok(Either::Left(Value::Table(t.map_err(LibErr::Lua)?)))
}

pub(crate) fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn is_null(v: &Value) -> bool {
    matches!(v, Value::LightUserData(p) if p.0.is_null())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        Value::LightUserData(_) | Value::UserData(_) => "userdata",
        _ => "userdata",
    }
}

fn enc_err(v: &Value, reason: &str) -> LibErr {
    LibErr::Msg(format!("Cannot serialise {}: {reason}", type_name(v)))
}

fn append_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            c if c < 0x20 || c == 0x7f => {
                out.extend_from_slice(format!("\\u{:04x}", c).as_bytes());
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

fn append_number(out: &mut Vec<u8>, cfg: &Cfg, v: &Value, n: f64) -> Result<(), LibErr> {
    if !n.is_finite() {
        match cfg.encode_invalid_numbers {
            0 => return Err(enc_err(v, "must not be NaN or Inf")),
            1 if n.is_nan() => {
                out.extend_from_slice(b"nan");
                return Ok(());
            }
            2 => {
                out.extend_from_slice(b"null");
                return Ok(());
            }
            _ => {}
        }
    }
    out.extend_from_slice(fmt_g(n, cfg.precision).as_bytes());
    Ok(())
}

fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        Value::Integer(n) => Some(*n as f64),
        _ => None,
    }
}

/// lua-cjson's `lua_array_length`: Some(max index) when every key is a positive
/// integer (0 for an empty table), None for an object. Errors on excessive sparsity.
fn array_length(cfg: &Cfg, t: &Table) -> Result<Option<usize>, LibErr> {
    let mut max = 0f64;
    let mut items = 0i64;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(LibErr::Lua)?;
        match num_of(&k) {
            Some(n) if n >= 1.0 && n.floor() == n => {
                max = max.max(n);
                items += 1;
            }
            _ => return Ok(None),
        }
    }
    if cfg.sparse_ratio > 0
        && max > items as f64 * cfg.sparse_ratio as f64
        && max > cfg.sparse_safe as f64
    {
        if !cfg.sparse_convert {
            return Err(LibErr::Msg(
                "Cannot serialise table: excessively sparse array".into(),
            ));
        }
        return Ok(None);
    }
    Ok(Some(max as usize))
}

fn encode(out: &mut Vec<u8>, cfg: &Cfg, v: &Value, depth: i64) -> Result<(), LibErr> {
    match v {
        Value::String(s) => append_string(out, &s.as_bytes()),
        Value::Integer(_) | Value::Number(_) => {
            append_number(out, cfg, v, num_of(v).unwrap_or(0.0))?
        }
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"null"),
        v if is_null(v) => out.extend_from_slice(b"null"),
        Value::Table(t) => {
            let depth = depth + 1;
            if depth > cfg.encode_max_depth.min(HARD_DEPTH) {
                return Err(LibErr::Msg(format!(
                    "Cannot serialise, excessive nesting ({depth})"
                )));
            }
            match array_length(cfg, t)? {
                Some(len) if len > 0 => {
                    out.push(b'[');
                    for i in 1..=len {
                        if i > 1 {
                            out.push(b',');
                        }
                        let item = t.raw_get::<Value>(i).map_err(LibErr::Lua)?;
                        encode(out, cfg, &item, depth)?;
                    }
                    out.push(b']');
                }
                _ => {
                    out.push(b'{');
                    let mut first = true;
                    for pair in t.pairs::<Value, Value>() {
                        let (k, val) = pair.map_err(LibErr::Lua)?;
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        match &k {
                            Value::String(s) => append_string(out, &s.as_bytes()),
                            Value::Integer(_) | Value::Number(_) => {
                                out.push(b'"');
                                append_number(out, cfg, &k, num_of(&k).unwrap_or(0.0))?;
                                out.push(b'"');
                            }
                            other => {
                                return Err(enc_err(other, "table key must be a number or string"))
                            }
                        }
                        out.push(b':');
                        encode(out, cfg, &val, depth)?;
                    }
                    out.push(b'}');
                }
            }
        }
        other => return Err(enc_err(other, "type not supported")),
    }
    Ok(())
}

struct Parser<'a> {
    s: &'a [u8],
    p: usize,
    cfg: Cfg,
    depth: i64,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.p < self.s.len() && matches!(self.s[self.p], b' ' | b'\t' | b'\n' | b'\r') {
            self.p += 1;
        }
    }

    fn found(&self) -> &'static str {
        match self.s.get(self.p) {
            None => "T_END",
            Some(b'{') => "T_OBJ_BEGIN",
            Some(b'}') => "T_OBJ_END",
            Some(b'[') => "T_ARR_BEGIN",
            Some(b']') => "T_ARR_END",
            Some(b'"') => "T_STRING",
            Some(b':') => "T_COLON",
            Some(b',') => "T_COMMA",
            Some(b'-' | b'0'..=b'9') => "T_NUMBER",
            Some(b't' | b'f') => "T_BOOLEAN",
            Some(b'n') => "T_NULL",
            _ => "invalid token",
        }
    }

    fn err(&self, expected: &str) -> LibErr {
        LibErr::Msg(format!(
            "Expected {expected} but found {} at character {}",
            self.found(),
            self.p + 1
        ))
    }

    fn value(&mut self, lua: &Lua) -> Result<Item, LibErr> {
        self.ws();
        let start = self.p;
        match self.s.get(self.p) {
            Some(b'{') | Some(b'[') => {
                self.depth += 1;
                if self.depth > self.cfg.decode_max_depth.min(HARD_DEPTH) {
                    return Err(LibErr::Msg(format!(
                        "Found too many nested data structures ({}) at character {}",
                        self.depth,
                        self.p + 1
                    )));
                }
                let r = if self.s[self.p] == b'{' {
                    self.object(lua)
                } else {
                    self.array(lua)
                };
                self.depth -= 1;
                r
            }
            Some(b'"') => Ok(text(self.string()?)),
            Some(b't') if self.s[self.p..].starts_with(b"true") => {
                self.p += 4;
                Ok(Either::Left(Value::Boolean(true)))
            }
            Some(b'f') if self.s[self.p..].starts_with(b"false") => {
                self.p += 5;
                Ok(Either::Left(Value::Boolean(false)))
            }
            Some(b'n') if self.s[self.p..].starts_with(b"null") => {
                self.p += 4;
                Ok(Either::Left(null()))
            }
            Some(b'-' | b'0'..=b'9' | b'i' | b'I' | b'n' | b'N') => {
                let mut end = self.p;
                while end < self.s.len()
                    && matches!(self.s[end], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9' | b'a'..=b'd' | b'f' | b'i' | b'n' | b't' | b'y' | b'x' | b'A'..=b'F' | b'I' | b'N' | b'X')
                {
                    end += 1;
                }
                let tok = std::str::from_utf8(&self.s[start..end]).unwrap_or("");
                let n = parse_number(tok, self.cfg.decode_invalid_numbers);
                match n {
                    Some(n) => {
                        self.p = end;
                        Ok(Either::Left(Value::Number(n)))
                    }
                    None => Err(LibErr::Msg(format!(
                        "Expected value but found invalid number at character {}",
                        start + 1
                    ))),
                }
            }
            _ => Err(self.err("value")),
        }
    }

    fn object(&mut self, lua: &Lua) -> Result<Item, LibErr> {
        self.p += 1;
        let mut pairs = Vec::new();
        self.ws();
        if self.s.get(self.p) == Some(&b'}') {
            self.p += 1;
            return table(lua.create_table_from(pairs));
        }
        loop {
            self.ws();
            if self.s.get(self.p) != Some(&b'"') {
                return Err(self.err("object key string"));
            }
            let k = text(self.string()?);
            self.ws();
            if self.s.get(self.p) != Some(&b':') {
                return Err(self.err("colon"));
            }
            self.p += 1;
            let v = self.value(lua)?;
            pairs.push((k, v));
            self.ws();
            match self.s.get(self.p) {
                Some(b',') => self.p += 1,
                Some(b'}') => {
                    self.p += 1;
                    return table(lua.create_table_from(pairs));
                }
                _ => return Err(self.err("comma or object end")),
            }
        }
    }

    fn array(&mut self, lua: &Lua) -> Result<Item, LibErr> {
        self.p += 1;
        let mut items = Vec::new();
        self.ws();
        if self.s.get(self.p) == Some(&b']') {
            self.p += 1;
            return table(lua.create_sequence_from(items));
        }
        loop {
            items.push(self.value(lua)?);
            self.ws();
            match self.s.get(self.p) {
                Some(b',') => self.p += 1,
                Some(b']') => {
                    self.p += 1;
                    return table(lua.create_sequence_from(items));
                }
                _ => return Err(self.err("comma or array end")),
            }
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }

    fn string(&mut self) -> Result<Vec<u8>, LibErr> {
        let start = self.p;
        self.p += 1;
        let mut out = Vec::new();
        let bad = |p: usize| {
            LibErr::Msg(format!(
                "Expected value but found invalid unicode escape code at character {}",
                p + 1
            ))
        };
        loop {
            let Some(&c) = self.s.get(self.p) else {
                return Err(LibErr::Msg(format!(
                    "Expected value but found unexpected end of string at character {}",
                    start + 1
                )));
            };
            self.p += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = self.s.get(self.p) else {
                        return Err(bad(start));
                    };
                    self.p += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4(self.p).ok_or_else(|| bad(start))?;
                            self.p += 4;
                            if (0xd800..0xdc00).contains(&cp) {
                                if self.s.get(self.p..self.p + 2) != Some(b"\\u") {
                                    return Err(bad(start));
                                }
                                let lo = self.hex4(self.p + 2).ok_or_else(|| bad(start))?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(bad(start));
                                }
                                self.p += 6;
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                            } else if (0xdc00..0xe000).contains(&cp) {
                                return Err(bad(start));
                            }
                            let ch = char::from_u32(cp).ok_or_else(|| bad(start))?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            return Err(LibErr::Msg(format!(
                                "Expected value but found invalid escape code at character {}",
                                start + 1
                            )))
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }
}

fn parse_number(tok: &str, allow_invalid: bool) -> Option<f64> {
    let lower = tok.to_ascii_lowercase();
    let body = lower.trim_start_matches('-');
    if let Some(h) = body.strip_prefix("0x") {
        let v = i64::from_str_radix(h, 16).ok()? as f64;
        return Some(if lower.starts_with('-') { -v } else { v });
    }
    if matches!(body, "inf" | "infinity" | "nan") {
        if !allow_invalid {
            return None;
        }
        let v = if body == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        return Some(if lower.starts_with('-') { -v } else { v });
    }
    if !body.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    tok.parse::<f64>().ok()
}

fn opt_arg(a: &MultiValue, i: usize) -> Option<&Value> {
    a.get(i - 1).filter(|v| !v.is_nil())
}

fn opt_int(a: &MultiValue, i: usize, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, LibErr> {
    match opt_arg(a, i) {
        None => Ok(None),
        Some(v) => {
            let n = num_of(v)
                .or_else(|| match v {
                    Value::String(s) => s.to_str().ok()?.trim().parse::<f64>().ok(),
                    _ => None,
                })
                .ok_or_else(|| {
                    LibErr::Msg(format!("bad argument #{i} to '{name}' (number expected)"))
                })? as i64;
            if n < lo || n > hi {
                return Err(LibErr::Msg(format!(
                    "bad argument #{i} to '{name}' (expected integer between {lo} and {hi})"
                )));
            }
            Ok(Some(n))
        }
    }
}

fn opt_bool(a: &MultiValue, i: usize) -> Option<bool> {
    opt_arg(a, i).map(|v| match v {
        Value::Boolean(b) => *b,
        Value::String(s) => &s.as_bytes()[..] == b"on" || &s.as_bytes()[..] == b"true",
        Value::Number(n) => *n != 0.0,
        _ => false,
    })
}

pub(crate) fn build(lua: &Lua) -> mlua::Result<Table> {
    let cfg = Arc::new(Mutex::new(Cfg::default()));
    let t = lua.create_table()?;
    let c = cfg.clone();
    t.set(
        "encode",
        raw_fn(lua, move |lua, a| {
            if a.len() != 1 {
                return Err(LibErr::Msg(
                    "bad argument #1 to 'encode' (expected 1 argument)".into(),
                ));
            }
            let cfg = *c.lock();
            let mut out = Vec::new();
            encode(&mut out, &cfg, &a[0], 0)?;
            Ok(MultiValue::from_vec(vec![Value::String(
                lua.create_string(&out).map_err(LibErr::Lua)?,
            )]))
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "decode",
        raw_fn(lua, move |lua, a| {
            if a.len() != 1 {
                return Err(LibErr::Msg(
                    "bad argument #1 to 'decode' (expected 1 argument)".into(),
                ));
            }
            let s = check_bytes(&a, 1, "decode")?;
            let mut p = Parser {
                s: &s,
                p: 0,
                cfg: *c.lock(),
                depth: 0,
            };
            let v = p.value(lua)?;
            p.ws();
            if p.p < s.len() {
                return Err(p.err("the end"));
            }
            Ok(MultiValue::from_vec(vec![v.into_lua(lua)?]))
        })?,
    )?;
    t.set("null", null())?;
    let c = cfg.clone();
    t.set(
        "encode_max_depth",
        raw_fn(lua, move |_, a| {
            let mut g = c.lock();
            if let Some(n) = opt_int(&a, 1, "encode_max_depth", 1, i32::MAX as i64)? {
                g.encode_max_depth = n;
            }
            Ok(MultiValue::from_vec(vec![Value::Number(
                g.encode_max_depth as f64,
            )]))
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "decode_max_depth",
        raw_fn(lua, move |_, a| {
            let mut g = c.lock();
            if let Some(n) = opt_int(&a, 1, "decode_max_depth", 1, i32::MAX as i64)? {
                g.decode_max_depth = n;
            }
            Ok(MultiValue::from_vec(vec![Value::Number(
                g.decode_max_depth as f64,
            )]))
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "encode_number_precision",
        raw_fn(lua, move |_, a| {
            let mut g = c.lock();
            if let Some(n) = opt_int(&a, 1, "encode_number_precision", 1, 14)? {
                g.precision = n as usize;
            }
            Ok(MultiValue::from_vec(vec![Value::Number(
                g.precision as f64,
            )]))
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "encode_keep_buffer",
        raw_fn(lua, move |_, a| {
            let mut g = c.lock();
            if let Some(b) = opt_bool(&a, 1) {
                g.keep_buffer = b;
            }
            Ok(MultiValue::from_vec(vec![Value::Boolean(g.keep_buffer)]))
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "encode_invalid_numbers",
        raw_fn(lua, move |lua, a| {
            let mut g = c.lock();
            if let Some(v) = opt_arg(&a, 1) {
                g.encode_invalid_numbers = match v {
                    Value::String(s) if &s.as_bytes()[..] == b"null" => 2,
                    _ => opt_bool(&a, 1).unwrap_or(false) as u8,
                };
            }
            let v = match g.encode_invalid_numbers {
                2 => Value::String(lua.create_string("null").map_err(LibErr::Lua)?),
                n => Value::Boolean(n == 1),
            };
            Ok(MultiValue::from_vec(vec![v]))
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "decode_invalid_numbers",
        raw_fn(lua, move |_, a| {
            let mut g = c.lock();
            if let Some(b) = opt_bool(&a, 1) {
                g.decode_invalid_numbers = b;
            }
            Ok(MultiValue::from_vec(vec![Value::Boolean(
                g.decode_invalid_numbers,
            )]))
        })?,
    )?;
    let c = cfg;
    t.set(
        "encode_sparse_array",
        raw_fn(lua, move |_, a| {
            let mut g = c.lock();
            if let Some(b) = opt_bool(&a, 1) {
                g.sparse_convert = b;
            }
            if let Some(n) = opt_int(&a, 2, "encode_sparse_array", 0, i32::MAX as i64)? {
                g.sparse_ratio = n;
            }
            if let Some(n) = opt_int(&a, 3, "encode_sparse_array", 0, i32::MAX as i64)? {
                g.sparse_safe = n;
            }
            Ok(MultiValue::from_vec(vec![
                Value::Boolean(g.sparse_convert),
                Value::Number(g.sparse_ratio as f64),
                Value::Number(g.sparse_safe as f64),
            ]))
        })?,
    )?;
    Ok(t)
}
