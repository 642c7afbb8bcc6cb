//! `cmsgpack` (lua-cmsgpack as bundled by Redis): `pack(...)`, `unpack(s)`,
//! `unpack_one(s [, offset])`, `unpack_limit(s, limit [, offset])`.

use super::env::{check_bytes, check_num, raw_fn, LibErr};
use mlua::{BString, Either, IntoLua, Lua, MultiValue, Table, Value};

/// Tables nested deeper than this are packed as nil (lua-cmsgpack's MAX_NESTING).
const MAX_NESTING: usize = 16;
/// Decoding recursion bound (the C version is bounded by its C stack).
const MAX_DECODE_DEPTH: usize = 200;

fn is_int64_equivalent(n: f64) -> bool {
    n.is_finite()
        && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n)
        && (n as i64) as f64 == n
}

fn encode_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        if n <= 127 {
            out.push(n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xcc, n as u8]);
        } else if n <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_len(
    out: &mut Vec<u8>,
    len: usize,
    fix: u8,
    fixmax: usize,
    b8: Option<u8>,
    b16: u8,
    b32: u8,
) {
    if len < fixmax {
        out.push(fix | len as u8);
    } else if let (Some(b8), true) = (b8, len <= 0xff) {
        out.extend_from_slice(&[b8, len as u8]);
    } else if len <= 0xffff {
        out.push(b16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn encode(out: &mut Vec<u8>, v: &Value, level: usize) -> mlua::Result<()> {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(n) => encode_int(out, *n),
        Value::Number(n) => {
            if is_int64_equivalent(*n) {
                encode_int(out, *n as i64);
            } else if (*n as f32) as f64 == *n {
                out.push(0xca);
                out.extend_from_slice(&(*n as f32).to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::String(s) => {
            let b = s.as_bytes();
            encode_len(out, b.len(), 0xa0, 32, Some(0xd9), 0xda, 0xdb);
            out.extend_from_slice(&b);
        }
        Value::Table(t) if level < MAX_NESTING => {
            // An array when every key is a positive integer and they are 1..count.
            let mut count = 0usize;
            let mut max = 0f64;
            let mut is_array = true;
            for pair in t.pairs::<Value, Value>() {
                let (k, _) = pair?;
                let n = match k {
                    Value::Number(n) => n,
                    Value::Integer(n) => n as f64,
                    _ => {
                        is_array = false;
                        break;
                    }
                };
                if n <= 0.0 || n != (n as i32) as f64 {
                    is_array = false;
                    break;
                }
                max = max.max(n);
                count += 1;
            }
            if is_array && max as usize == count {
                encode_len(out, count, 0x90, 16, None, 0xdc, 0xdd);
                for i in 1..=count {
                    encode(out, &t.raw_get::<Value>(i)?, level + 1)?;
                }
            } else {
                // Count first, then stream: holding every pair at once would
                // exhaust mlua's reference slots on big maps.
                let mut n = 0usize;
                for pair in t.pairs::<Value, Value>() {
                    pair?;
                    n += 1;
                }
                encode_len(out, n, 0x80, 16, None, 0xde, 0xdf);
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    encode(out, &k, level + 1)?;
                    encode(out, &v, level + 1)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

fn pack(lua: &Lua, a: MultiValue) -> Result<MultiValue, LibErr> {
    if a.is_empty() {
        return Err(LibErr::Msg(
            "bad argument #0 to 'pack' (MessagePack pack needs input.)".into(),
        ));
    }
    let mut out = Vec::new();
    for v in a.iter() {
        encode(&mut out, v, 0).map_err(LibErr::Lua)?;
    }
    Ok(MultiValue::from_vec(vec![Value::String(
        lua.create_string(&out).map_err(LibErr::Lua)?,
    )]))
}

enum DecErr {
    Eof,
    BadFmt,
    Lua(mlua::Error),
}

struct Cur<'a> {
    s: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecErr> {
        if self.s.len() - self.p < n {
            return Err(DecErr::Eof);
        }
        let r = &self.s[self.p..self.p + n];
        self.p += n;
        Ok(r)
    }
    fn be(&mut self, n: usize) -> Result<u64, DecErr> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }
}

/// A decoded value as it goes onto Lua's stack: UTF-8 strings, numbers, booleans
/// and nil are pushed as they are, with no reference slot of the binding's own
/// (which cost more than the rest of decoding); only tables and other bytes take
/// one. Tables are made whole, from their decoded elements.
type Item<'a> = Either<Option<Either<bool, f64>>, Either<&'a str, Either<Table, BString>>>;

fn num<'a>(n: f64) -> Item<'a> {
    Either::Left(Some(Either::Right(n)))
}

fn boolean<'a>(b: bool) -> Item<'a> {
    Either::Left(Some(Either::Left(b)))
}

fn bytes(b: &[u8]) -> Item<'_> {
    match std::str::from_utf8(b) {
        Ok(s) => Either::Right(Either::Left(s)),
        Err(_) => Either::Right(Either::Right(Either::Right(BString::from(b)))),
    }
}

fn table<'a>(t: Table) -> Item<'a> {
    Either::Right(Either::Right(Either::Left(t)))
}

/// A key Lua cannot index by (nil, NaN): msgpack allows it, Redis's decoder skips it.
fn bad_key(k: &Item) -> bool {
    matches!(k, Either::Left(None))
        || matches!(k, Either::Left(Some(Either::Right(n))) if n.is_nan())
}

fn decode<'a>(lua: &Lua, c: &mut Cur<'a>, depth: usize) -> Result<Item<'a>, DecErr> {
    if depth > MAX_DECODE_DEPTH {
        return Err(DecErr::BadFmt);
    }
    let tag = c.take(1)?[0];
    let string = |c: &mut Cur<'a>, n: usize| -> Result<Item<'a>, DecErr> { Ok(bytes(c.take(n)?)) };
    let array = |lua: &Lua, c: &mut Cur<'a>, n: usize| -> Result<Item<'a>, DecErr> {
        let items = (0..n)
            .map(|_| decode(lua, c, depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(table(lua.create_sequence_from(items).map_err(DecErr::Lua)?))
    };
    let map = |lua: &Lua, c: &mut Cur<'a>, n: usize| -> Result<Item<'a>, DecErr> {
        let mut pairs = Vec::new();
        for _ in 0..n {
            let k = decode(lua, c, depth + 1)?;
            let v = decode(lua, c, depth + 1)?;
            if !bad_key(&k) {
                pairs.push((k, v));
            }
        }
        Ok(table(lua.create_table_from(pairs).map_err(DecErr::Lua)?))
    };
    Ok(match tag {
        0x00..=0x7f => num(tag as f64),
        0xe0..=0xff => num(tag as i8 as f64),
        0xc0 => Either::Left(None),
        0xc2 => boolean(false),
        0xc3 => boolean(true),
        0xcc => num(c.be(1)? as f64),
        0xcd => num(c.be(2)? as f64),
        0xce => num(c.be(4)? as f64),
        0xcf => num(c.be(8)? as f64),
        0xd0 => num(c.be(1)? as u8 as i8 as f64),
        0xd1 => num(c.be(2)? as u16 as i16 as f64),
        0xd2 => num(c.be(4)? as u32 as i32 as f64),
        0xd3 => num(c.be(8)? as i64 as f64),
        0xca => num(f32::from_bits(c.be(4)? as u32) as f64),
        0xcb => num(f64::from_bits(c.be(8)?)),
        0xa0..=0xbf => string(c, (tag & 0x1f) as usize)?,
        0xd9 | 0xc4 => {
            let n = c.be(1)? as usize;
            string(c, n)?
        }
        0xda | 0xc5 => {
            let n = c.be(2)? as usize;
            string(c, n)?
        }
        0xdb | 0xc6 => {
            let n = c.be(4)? as usize;
            string(c, n)?
        }
        0x90..=0x9f => array(lua, c, (tag & 0x0f) as usize)?,
        0xdc => {
            let n = c.be(2)? as usize;
            array(lua, c, n)?
        }
        0xdd => {
            let n = c.be(4)? as usize;
            array(lua, c, n)?
        }
        0x80..=0x8f => map(lua, c, (tag & 0x0f) as usize)?,
        0xde => {
            let n = c.be(2)? as usize;
            map(lua, c, n)?
        }
        0xdf => {
            let n = c.be(4)? as usize;
            map(lua, c, n)?
        }
        _ => return Err(DecErr::BadFmt),
    })
}

fn unpack_full(lua: &Lua, s: &[u8], limit: i64, offset: i64) -> Result<MultiValue, LibErr> {
    let decode_all = limit == 0 && offset == 0;
    if offset < 0 || limit < 0 {
        return Err(LibErr::Msg(format!(
            "Invalid request to unpack with offset of {offset} and limit of {}.",
            s.len()
        )));
    }
    if offset as u64 > s.len() as u64 {
        return Err(LibErr::Msg(format!(
            "Start offset {offset} greater than input length {}.",
            s.len()
        )));
    }
    let limit = if decode_all { i64::MAX } else { limit };
    let mut c = Cur {
        s,
        p: offset as usize,
    };
    let mut out = Vec::new();
    let mut cnt = 0;
    while c.p < s.len() && cnt < limit {
        match decode(lua, &mut c, 0) {
            Ok(v) => out.push(v.into_lua(lua).map_err(LibErr::Lua)?),
            Err(DecErr::Eof) => return Err(LibErr::Msg("Missing bytes in input.".into())),
            Err(DecErr::BadFmt) => return Err(LibErr::Msg("Bad data format in input.".into())),
            Err(DecErr::Lua(e)) => return Err(LibErr::Lua(e)),
        }
        cnt += 1;
    }
    if !decode_all {
        let next = if c.p == s.len() { -1.0 } else { c.p as f64 };
        out.insert(0, Value::Number(next));
    }
    Ok(MultiValue::from_vec(out))
}

pub(crate) fn build(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("pack", raw_fn(lua, pack)?)?;
    t.set(
        "unpack",
        raw_fn(lua, |lua, a| {
            unpack_full(lua, &check_bytes(&a, 1, "unpack")?, 0, 0)
        })?,
    )?;
    t.set(
        "unpack_one",
        raw_fn(lua, |lua, a| {
            let s = check_bytes(&a, 1, "unpack_one")?;
            let off = match a.get(1) {
                None | Some(Value::Nil) => 0,
                Some(_) => check_num(&a, 2, "unpack_one")? as i64,
            };
            unpack_full(lua, &s, 1, off)
        })?,
    )?;
    t.set(
        "unpack_limit",
        raw_fn(lua, |lua, a| {
            let s = check_bytes(&a, 1, "unpack_limit")?;
            let limit = check_num(&a, 2, "unpack_limit")? as i64;
            let off = match a.get(2) {
                None | Some(Value::Nil) => 0,
                Some(_) => check_num(&a, 3, "unpack_limit")? as i64,
            };
            unpack_full(lua, &s, limit, off)
        })?,
    )?;
    Ok(t)
}
