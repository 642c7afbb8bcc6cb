//! Reply <-> Lua value conversion, as Redis 7.2's `redisProtocolToLuaType` and
//! `luaReplyToRedisReply`.

use bytes::Bytes;
use mlua::{BString, Either, Function, Lua, LuaString, Table, Value};
use tidewire_resp::{format_double, Protocol, Reply};

/// Nesting bound for both directions: deeper levels become the error Redis emits
/// when it runs out of Lua stack.
pub(crate) const MAX_DEPTH: usize = 200;
pub(crate) const STACK_LIMIT_ERR: &str = "ERR reached lua stack limit";

/// Splits an error line into Redis's `{err=...}` text: "CODE msg" kept, a line
/// without a space gets the generic `ERR` code, trailing CR/LF trimmed.
pub(crate) fn error_table_text(line: &str) -> String {
    let (code, msg) = match line.split_once(' ') {
        Some((code, msg)) => (code, msg),
        None => ("ERR", line),
    };
    format!("{code} {}", msg.trim_matches(|c| c == '\r' || c == '\n'))
}

/// Builds Redis's error table `{err=...}` for an error line without '-'.
pub(crate) fn error_table(lua: &Lua, line: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("err", error_table_text(line))?;
    Ok(t)
}

/// Whether `v` is an error table that a command reply produced (marked
/// `ignore_error_stats_update`, as Redis marks it): its error is already counted.
pub(crate) fn stats_counted(v: &Value) -> bool {
    match v {
        Value::Table(t) => matches!(
            t.raw_get::<Value>("ignore_error_stats_update"),
            Ok(Value::Boolean(true))
        ),
        _ => false,
    }
}

/// A command's reply as a Lua value. `resp` is the script's protocol: it decides
/// whether a null is `false` (RESP2) or `nil` (RESP3) and how RESP3-only shapes
/// arrive (RESP2 sees them as their RESP2 wire forms, as a RESP2 client would).
pub(crate) fn reply_to_lua(lua: &Lua, reply: &Reply, resp: Protocol) -> mlua::Result<Value> {
    reply_to_lua_depth(lua, reply, resp, 0)
}

/// Bytes for Lua, borrowed: UTF-8 text is pushed straight onto Lua's stack; other
/// bytes (rare) go through mlua's string reference.
pub(crate) type Text<'a> = Either<&'a str, BString>;

/// `bytes` as a Lua string (see [`Text`]).
pub(crate) fn text(bytes: &[u8]) -> Text<'_> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Either::Left(s),
        Err(_) => Either::Right(BString::from(bytes)),
    }
}

/// An element of a flat array reply (see `reply_for_lua`).
fn element(item: &Reply, resp: Protocol) -> Either<Text<'_>, Value> {
    match item {
        Reply::Bulk(b) => Either::Left(text(b)),
        Reply::Int(n) => Either::Right(Value::Number(*n as f64)),
        _ if resp == Protocol::Resp3 => Either::Right(Value::Nil),
        _ => Either::Right(Value::Boolean(false)),
    }
}

/// A command's reply for redis.call / redis.pcall: [`reply_to_lua`]'s value, with
/// the common shapes (strings, integers, nulls, flat arrays of those) made with
/// the fewest Lua API calls. Strings become Lua strings here, while the host runs
/// with mlua's memory guard lifted (see `env::with_run`): mlua pushes the result
/// only after the guard is back, and a string it makes then goes through a
/// protected call of its own (~1.7k instructions each on the move-active
/// benchmark, against a few hundred for making it now and pushing the reference).
pub(crate) fn reply_for_lua(lua: &Lua, reply: &Reply, resp: Protocol) -> mlua::Result<Value> {
    let null = || {
        if resp == Protocol::Resp3 {
            Value::Nil
        } else {
            Value::Boolean(false)
        }
    };
    let flat = |item: &Reply| matches!(item, Reply::Bulk(_) | Reply::Int(_) | Reply::Null);
    let element = |item| element(item, resp);
    Ok(match reply {
        Reply::Bulk(b) => Value::String(lua.create_string(b)?),
        Reply::Int(n) => Value::Number(*n as f64),
        Reply::Null | Reply::NullArray => null(),
        Reply::Bulks(list) => Value::Table(lua.create_sequence_from(list.iter().map(|b| text(b)))?),
        Reply::Array(items) if items.iter().all(flat) => {
            Value::Table(lua.create_sequence_from(items.iter().map(element))?)
        }
        // RESP2 sees a map as its flat array of keys and values.
        Reply::Map(pairs)
            if resp == Protocol::Resp2 && pairs.iter().all(|(k, v)| flat(k) && flat(v)) =>
        {
            let values = pairs.iter().flat_map(|(k, v)| [element(k), element(v)]);
            Value::Table(lua.create_sequence_from(values)?)
        }
        other => reply_to_lua(lua, other, resp)?,
    })
}

fn single(lua: &Lua, key: &str, v: impl mlua::IntoLua) -> mlua::Result<Value> {
    Ok(Value::Table(lua.create_table_from([(key, v)])?))
}

fn reply_to_lua_depth(
    lua: &Lua,
    reply: &Reply,
    resp: Protocol,
    depth: usize,
) -> mlua::Result<Value> {
    let resp3 = resp == Protocol::Resp3;
    if depth > MAX_DEPTH {
        return Err(mlua::Error::RuntimeError(STACK_LIMIT_ERR.into()));
    }
    // Arrays are made in one go (`create_sequence_from`): a `raw_set` per element
    // costs more than the element.
    let array = |items: &mut dyn Iterator<Item = &Reply>| -> mlua::Result<Value> {
        let values = items
            .map(|item| reply_to_lua_depth(lua, item, resp, depth + 1))
            .collect::<mlua::Result<Vec<Value>>>()?;
        Ok(Value::Table(lua.create_sequence_from(values)?))
    };
    Ok(match reply {
        Reply::Status(s) => single(lua, "ok", *s)?,
        Reply::SimpleString(s) => single(lua, "ok", s.as_str())?,
        Reply::Error(line) => {
            let t = error_table(lua, line)?;
            t.raw_set("ignore_error_stats_update", true)?;
            Value::Table(t)
        }
        Reply::Int(n) => Value::Number(*n as f64),
        Reply::Bulk(b) => Value::String(lua.create_string(b)?),
        Reply::Null | Reply::NullArray => {
            if resp3 {
                Value::Nil
            } else {
                Value::Boolean(false)
            }
        }
        Reply::Array(items) | Reply::Push(items) => array(&mut items.iter())?,
        Reply::Bulks(list) => {
            let values = list
                .iter()
                .map(|b| lua.create_string(b))
                .collect::<mlua::Result<Vec<_>>>()?;
            Value::Table(lua.create_sequence_from(values)?)
        }
        Reply::Set(items) if !resp3 => array(&mut items.iter())?,
        Reply::Set(items) => {
            let set = lua.create_table()?;
            for item in items {
                set.raw_set(reply_to_lua_depth(lua, item, resp, depth + 1)?, true)?;
            }
            single(lua, "set", set)?
        }
        Reply::Map(pairs) if !resp3 => array(&mut pairs.iter().flat_map(|(k, v)| [k, v]))?,
        Reply::Map(pairs) => {
            let map = lua.create_table()?;
            for (k, v) in pairs {
                let k = reply_to_lua_depth(lua, k, resp, depth + 1)?;
                let v = reply_to_lua_depth(lua, v, resp, depth + 1)?;
                if !k.is_nil() {
                    map.raw_set(k, v)?;
                }
            }
            single(lua, "map", map)?
        }
        Reply::Double(d) if !resp3 => Value::String(lua.create_string(format_double(*d))?),
        Reply::Double(d) => single(lua, "double", *d)?,
        Reply::Bool(b) if !resp3 => Value::Number(*b as i64 as f64),
        Reply::Bool(b) => Value::Boolean(*b),
        Reply::BigNumber(n) if !resp3 => Value::String(lua.create_string(n)?),
        Reply::BigNumber(n) => single(lua, "big_number", n.as_str())?,
        Reply::Verbatim(_, body) if !resp3 => Value::String(lua.create_string(body)?),
        Reply::Verbatim(format, body) => {
            let inner = lua.create_table()?;
            inner.raw_set("string", lua.create_string(body)?)?;
            inner.raw_set("format", *format)?;
            single(lua, "verbatim_string", inner)?
        }
    })
}

/// Error information of an `{err=...}` table: (message, source, line).
pub(crate) fn error_info(t: &Table) -> (Option<String>, Option<String>, Option<String>) {
    let s = |k: &str| -> Option<String> {
        match t.raw_get::<Value>(k).ok()? {
            Value::String(s) => Some(s.to_string_lossy()),
            Value::Number(n) => Some(lua_number_string(n)),
            Value::Integer(n) => Some(n.to_string()),
            _ => None,
        }
    };
    (s("err"), s("source"), s("line"))
}

/// Lua 5.1's `tostring` of a number (`%.14g`).
pub(crate) fn lua_number_string(n: f64) -> String {
    fmt_g(n, 14)
}

/// C's `%.<prec>g`.
pub(crate) fn fmt_g(n: f64, prec: usize) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if n.is_infinite() {
        return if n < 0.0 { "-inf" } else { "inf" }.into();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, n);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let mant = trim_zeros(mant);
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, n)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn sanitize_line(s: &[u8]) -> String {
    String::from_utf8_lossy(s).replace(['\r', '\n'], " ")
}

/// The script's return value as a reply. `shape` is what the environment's
/// `shape` answered for it when it is a table (the runner asks it); `script_resp`
/// is the protocol the script selected with redis.setresp (booleans depend on it).
pub(crate) fn lua_to_reply(
    v: &Value,
    shape: u8,
    script_resp: Protocol,
    fields: &ReplyFields,
) -> Reply {
    match v {
        Value::Table(t) => table_to_reply(t, shape, script_resp, fields, 0),
        v => lua_to_reply_depth(v, script_resp, fields, 0),
    }
}

fn lua_to_reply_depth(
    v: &Value,
    script_resp: Protocol,
    fields: &ReplyFields,
    depth: usize,
) -> Reply {
    if depth > MAX_DEPTH {
        return Reply::Error(STACK_LIMIT_ERR.into());
    }
    match v {
        Value::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Boolean(b) => match script_resp {
            Protocol::Resp2 if *b => Reply::Int(1),
            Protocol::Resp2 => Reply::Null,
            Protocol::Resp3 => Reply::Bool(*b),
        },
        Value::Integer(n) => Reply::Int(*n),
        Value::Number(n) => Reply::Int(*n as i64),
        Value::Table(t) => {
            let shape = fields.shape.call::<u8>(t).unwrap_or(0);
            table_to_reply(t, shape, script_resp, fields, depth)
        }
        _ => Reply::Null,
    }
}

/// The fields that give a returned table a meaning of its own, in the order
/// Redis checks them; the environment's `shape` answers 1 + the index of the
/// first one a table has with the right type, or 0.
pub(crate) const ERR: u8 = 1;
const OK: u8 = 2;
const DOUBLE: u8 = 3;
const BIG_NUMBER: u8 = 4;
const VERBATIM: u8 = 5;
const MAP: u8 = 6;
const SET: u8 = 7;
const SPECIAL: [&str; 7] = [
    "err",
    "ok",
    "double",
    "big_number",
    "verbatim_string",
    "map",
    "set",
];

/// What converting returned tables needs from the state, made once per state: the
/// special field names as Lua strings (a lookup by a Rust `&str` would intern the
/// name again each time), and the environment's `shape`, which finds which of
/// them a table carries in one call (seven lookups through the binding cost more
/// than the rest of a short script's reply).
pub(crate) struct ReplyFields {
    names: Vec<LuaString>,
    shape: Function,
}

impl ReplyFields {
    pub(crate) fn new(lua: &Lua, shape: Function) -> mlua::Result<ReplyFields> {
        let names = SPECIAL
            .iter()
            .map(|f| lua.create_string(f))
            .collect::<mlua::Result<_>>()?;
        Ok(ReplyFields { names, shape })
    }

    /// The table's special field `shape` (1-based, as `shape` answers); nil for
    /// none (0) or for the error field, which `error_info` reads.
    fn get_if(&self, t: &Table, shape: u8) -> Value {
        match shape {
            OK..=SET => t
                .raw_get::<Value>(&self.names[usize::from(shape - 1)])
                .unwrap_or(Value::Nil),
            _ => Value::Nil,
        }
    }
}

/// A Lua value that is not a string (see [`Element`]).
struct NotString(Value);

impl mlua::FromLua for NotString {
    fn from_lua(v: Value, _: &Lua) -> mlua::Result<Self> {
        match v {
            Value::String(_) => Err(mlua::Error::UserDataTypeMismatch),
            v => Ok(NotString(v)),
        }
    }
}

/// An element of a returned array as mlua reads it off Lua's stack: a string is
/// copied out as bytes, which costs mlua one reference (for the type check) where
/// a `Value` and its `as_bytes` cost two; anything else keeps its type, so numbers
/// stay integers. (A `BString` alone would accept numbers as Lua's `tostring`.)
type Element = Either<NotString, BString>;

/// A table as a reply (`lua_to_reply_depth` has checked the depth); `shape` as
/// the environment's `shape` answered for it.
fn table_to_reply(
    t: &Table,
    shape: u8,
    script_resp: Protocol,
    fields: &ReplyFields,
    depth: usize,
) -> Reply {
    let nested = |v: &Value| lua_to_reply_depth(v, script_resp, fields, depth + 1);
    match (shape, fields.get_if(t, shape)) {
        (ERR, _) => {
            let (msg, _, _) = error_info(t);
            return Reply::Error(sanitize_line(msg.unwrap_or_default().as_bytes()));
        }
        (OK, Value::String(s)) => return Reply::SimpleString(sanitize_line(&s.as_bytes())),
        (DOUBLE, Value::Number(d)) => return Reply::Double(d),
        (DOUBLE, Value::Integer(d)) => return Reply::Double(d as f64),
        (BIG_NUMBER, Value::String(s)) => return Reply::BigNumber(sanitize_line(&s.as_bytes())),
        (VERBATIM, Value::Table(v)) => {
            if let (Ok(Value::String(f)), Ok(Value::String(s))) =
                (v.raw_get::<Value>("format"), v.raw_get::<Value>("string"))
            {
                let format: &'static str = match &f.as_bytes()[..] {
                    b"mkd" => "mkd",
                    _ => "txt",
                };
                return Reply::Verbatim(format, Bytes::copy_from_slice(&s.as_bytes()));
            }
        }
        (MAP, Value::Table(m)) => {
            let mut pairs = Vec::new();
            for (k, v) in m.pairs::<Value, Value>().flatten() {
                pairs.push((nested(&k), nested(&v)));
            }
            return Reply::Map(pairs);
        }
        (SET, Value::Table(s)) => {
            let mut items = Vec::new();
            for (k, _) in s.pairs::<Value, Value>().flatten() {
                items.push(nested(&k));
            }
            return Reply::Set(items);
        }
        _ => {}
    }
    // The array part up to the first nil, as Redis reads it (t[1], t[2], ...).
    let mut items = Vec::new();
    let _ = t.for_each_value(|v: Element| {
        items.push(match v {
            Either::Right(s) => Reply::Bulk(Bytes::from(Vec::<u8>::from(s))),
            Either::Left(NotString(v)) => nested(&v),
        });
        Ok(())
    });
    Reply::Array(items)
}
