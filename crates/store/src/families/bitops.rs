//! Bit-level string commands: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD and
//! BITFIELD_RO. Bits are numbered from the most significant bit of byte 0, and a
//! string is zero-padded on the right as far as a command needs.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::{read_string, Ctx};
use crate::families::strings::{edit_bytes, store_key, str_bytes, string_mut};
use crate::num;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("bitmap");
    vec![
        s(cmd("setbit", 4, WRITE | DENYOOM, keys(1, 1, 1), setbit).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.")),
        s(cmd("getbit", 3, READONLY | FAST, keys(1, 1, 1), getbit).summary("Returns a bit value by offset.")),
        s(cmd("bitcount", -2, READONLY, keys(1, 1, 1), bitcount).summary("Counts the number of set bits (population counting) in a string.")),
        s(cmd("bitpos", -3, READONLY, keys(1, 1, 1), bitpos).summary("Finds the first set (1) or clear (0) bit in a string.")),
        s(cmd("bitop", -4, WRITE | DENYOOM, keys(2, -1, 1), bitop).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Performs bitwise operations on multiple strings, and stores the result.")),
        s(cmd("bitfield", -2, WRITE | DENYOOM, keys(1, 1, 1), bitfield).key_roles(KeyRoles::ReadAndWriteIfChanged).summary("Performs arbitrary bitfield integer operations on strings.")),
        s(cmd("bitfield_ro", -2, READONLY | FAST, keys(1, 1, 1), bitfield_ro).summary("Performs arbitrary read-only bitfield integer operations on strings.")),
    ]
}

const BIT_OFFSET_ERR: &str = "bit offset is not an integer or out of range";

/// A bit offset as Redis reads it: `#n` means n * `bits` when `bits` > 0 (BITFIELD);
/// the byte it falls in must be below `proto-max-bulk-len`.
fn bit_offset(ctx: &Ctx<'_>, arg: &[u8], bits: u64) -> Result<u64, CmdError> {
    let err = || CmdError::err(BIT_OFFSET_ERR);
    let (hash, digits) = match arg.first() {
        Some(b'#') if bits > 0 => (true, &arg[1..]),
        _ => (false, arg),
    };
    let mut n = num::parse_i64(digits).ok_or_else(err)?;
    if hash {
        n = n.checked_mul(bits as i64).ok_or_else(err)?;
    }
    let max = ctx
        .store
        .config
        .proto_max_bulk_len
        .load(std::sync::atomic::Ordering::Relaxed);
    if n < 0 || (n as u64 >> 3) >= max {
        return Err(err());
    }
    Ok(n as u64)
}

/// Makes sure the string at `key` exists and has room for bit `max_bit`; returns
/// whether that created or grew it.
fn grow_for_bit(ctx: &mut Ctx<'_>, key: &[u8], max_bit: u64) -> Result<bool, CmdError> {
    let need = (max_bit >> 3) as usize + 1;
    match string_mut(ctx, key)? {
        Some(e) => {
            let b = str_bytes(e);
            if b.len() >= need {
                return Ok(false);
            }
            edit_bytes(b, |m| m.resize(need, 0));
            Ok(true)
        }
        None => {
            let db = ctx.db();
            store_key(ctx, db, key, Entry::new(Value::Str(vec![0u8; need].into())));
            Ok(true)
        }
    }
}

fn setbit(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let offset = bit_offset(ctx, args.next_bytes()?, 0)?;
    let bit_err = || CmdError::err("bit is not an integer or out of range");
    let on = num::parse_i64(args.next_bytes()?).ok_or_else(bit_err)?;
    if on & !1 != 0 {
        return Err(bit_err());
    }
    let grown = grow_for_bit(ctx, key, offset)?;
    let e = string_mut(ctx, key)?.expect("created above");
    let byte = (offset >> 3) as usize;
    let mask = 1u8 << (7 - (offset & 7));
    let old = str_bytes(e)[byte] & mask != 0;
    if grown || old != (on == 1) {
        edit_bytes(str_bytes(e), |m| {
            if on == 1 {
                m[byte] |= mask;
            } else {
                m[byte] &= !mask;
            }
        });
        ctx.dirty(1);
        ctx.notify(notify::STRING, "setbit", key);
    }
    Ok(Reply::Int(old as i64))
}

fn getbit(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let offset = bit_offset(ctx, args.next_bytes()?, 0)?;
    let Some(s) = read_string(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let byte = (offset >> 3) as usize;
    Ok(Reply::Int(
        s.get(byte).map_or(0, |b| (b >> (7 - (offset & 7))) & 1) as i64,
    ))
}

/// Parses BYTE|BIT.
fn unit_is_bit(arg: &[u8]) -> Result<bool, CmdError> {
    if arg.eq_ignore_ascii_case(b"BIT") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"BYTE") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

/// Normalises a start/end range (negative from the end, clamped) over `total` units;
/// `None` when it is empty.
fn clamp_range(mut start: i64, mut end: i64, total: i64) -> Option<(i64, i64)> {
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    (start <= end).then_some((start, end))
}

fn bit_at(s: &[u8], bit: u64) -> bool {
    s[(bit >> 3) as usize] & (0x80 >> (bit & 7)) != 0
}

fn bitcount(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let range = match args.remaining() {
        0 => None,
        2 | 3 => {
            let start = args.next_i64()?;
            let end = args.next_i64()?;
            let is_bit = match args.peek() {
                Some(u) => unit_is_bit(u)?,
                None => false,
            };
            Some((start, end, is_bit))
        }
        _ => return Err(CmdError::Syntax),
    };
    let Some(s) = read_string(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let Some((start, end, is_bit)) = range else {
        return Ok(Reply::Int(popcount(&s)));
    };
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Int(0));
    }
    let total = s.len() as i64 * if is_bit { 8 } else { 1 };
    let Some((start, end)) = clamp_range(start, end, total) else {
        return Ok(Reply::Int(0));
    };
    if !is_bit {
        return Ok(Reply::Int(popcount(&s[start as usize..=end as usize])));
    }
    let (start, end) = (start as u64, end as u64);
    let (first_byte, last_byte) = (start >> 3, end >> 3);
    let mut n = popcount(&s[first_byte as usize..=last_byte as usize]);
    for bit in first_byte * 8..start {
        n -= bit_at(&s, bit) as i64;
    }
    for bit in end + 1..(last_byte + 1) * 8 {
        n -= bit_at(&s, bit) as i64;
    }
    Ok(Reply::Int(n))
}

fn popcount(s: &[u8]) -> i64 {
    let mut chunks = s.chunks_exact(8);
    let mut n: u64 = 0;
    for c in &mut chunks {
        n += u64::from_ne_bytes(c.try_into().expect("8 bytes")).count_ones() as u64;
    }
    n += chunks
        .remainder()
        .iter()
        .map(|b| b.count_ones() as u64)
        .sum::<u64>();
    n as i64
}

fn bitpos(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let bit = args.next_i64()?;
    if bit != 0 && bit != 1 {
        return Err(CmdError::err("The bit argument must be 1 or 0."));
    }
    let want = bit == 1;
    let (start, end, is_bit) = match args.remaining() {
        0 => (None, None, false),
        1..=3 => {
            let start = args.next_i64()?;
            let rest = args.rest();
            let is_bit = match rest.get(1) {
                Some(u) => unit_is_bit(u)?,
                None => false,
            };
            let end = match rest.first() {
                Some(e) => Some(num::parse_i64(e).ok_or(CmdError::NotInteger)?),
                None => None,
            };
            (Some(start), end, is_bit)
        }
        _ => return Err(CmdError::Syntax),
    };
    let Some(s) = read_string(ctx, key)? else {
        return Ok(Reply::Int(if want { -1 } else { 0 }));
    };
    let unit = if is_bit { 8 } else { 1 };
    let total = s.len() as i64 * unit;
    let end_given = end.is_some();
    let range = match start {
        None => clamp_range(0, total - 1, total),
        Some(start) => clamp_range(start, end.unwrap_or(total - 1), total),
    };
    let Some((start, end)) = range else {
        return Ok(Reply::Int(-1));
    };
    // Bit range, inclusive.
    let (first, last) = if is_bit {
        (start as u64, end as u64)
    } else {
        (start as u64 * 8, end as u64 * 8 + 7)
    };
    if let Some(pos) = find_bit(&s, first, last, want) {
        return Ok(Reply::Int(pos as i64));
    }
    // No match: looking for a 1 finds nothing; looking for a 0 without an explicit
    // end finds the padding bit right after the string.
    Ok(Reply::Int(if want || end_given {
        -1
    } else {
        last as i64 + 1
    }))
}

/// The first bit equal to `want` in the inclusive bit range.
fn find_bit(s: &[u8], first: u64, last: u64, want: bool) -> Option<u64> {
    let skip = if want { 0x00 } else { 0xff };
    let mut bit = first;
    while bit <= last {
        if bit & 7 == 0 && bit + 7 <= last && s[(bit >> 3) as usize] == skip {
            bit += 8;
            continue;
        }
        if bit_at(s, bit) == want {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

fn bitop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    /// Redis 8.2 added DIFF (X and none of the others), DIFF1 (any of the others
    /// but not X), ANDOR (X and any of the others) and ONE (exactly one source).
    #[derive(PartialEq, Clone, Copy)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
        Diff,
        Diff1,
        AndOr,
        One,
    }
    let name = args.next_upper()?;
    let op = match name.as_str() {
        "AND" => Op::And,
        "OR" => Op::Or,
        "XOR" => Op::Xor,
        "NOT" => Op::Not,
        "DIFF" => Op::Diff,
        "DIFF1" => Op::Diff1,
        "ANDOR" => Op::AndOr,
        "ONE" => Op::One,
        _ => return Err(CmdError::Syntax),
    };
    let dest = args.next_bytes()?;
    let sources = args.rest();
    if op == Op::Not && sources.len() != 1 {
        return Err(CmdError::err(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    if matches!(op, Op::Diff | Op::Diff1 | Op::AndOr) && sources.len() < 2 {
        return Err(CmdError::err(format!(
            "BITOP {name} must be called with at least two source keys."
        )));
    }
    let mut values = Vec::with_capacity(sources.len());
    for key in sources {
        values.push(read_string(ctx, key)?.unwrap_or_default());
    }
    let maxlen = values.iter().map(Bytes::len).max().unwrap_or(0);
    let db = ctx.db();
    if maxlen == 0 {
        if ctx.ks.remove(db, dest).is_some() {
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "del", dest);
        }
        return Ok(Reply::Int(0));
    }
    let byte = |v: &Bytes, i: usize| v.get(i).copied().unwrap_or(0);
    let mut out = vec![0u8; maxlen];
    for (i, o) in out.iter_mut().enumerate() {
        let first = byte(&values[0], i);
        let rest = values[1..].iter().map(|v| byte(v, i));
        *o = match op {
            Op::And => rest.fold(first, |a, b| a & b),
            Op::Or => rest.fold(first, |a, b| a | b),
            Op::Xor => rest.fold(first, |a, b| a ^ b),
            Op::Not => !first,
            Op::Diff => first & !rest.fold(0, |a, b| a | b),
            Op::Diff1 => !first & rest.fold(0, |a, b| a | b),
            Op::AndOr => first & rest.fold(0, |a, b| a | b),
            Op::One => {
                // Bits seen once so far, and bits seen more than once.
                let (once, more) = rest.fold((first, 0u8), |(once, more), b| {
                    (once | b, more | (once & b))
                });
                once & !more
            }
        };
    }
    store_key(ctx, db, dest, Entry::new(Value::Str(out.into())));
    ctx.dirty(1);
    ctx.notify(notify::STRING, "set", dest);
    Ok(Reply::Int(maxlen as i64))
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldOp {
    Get,
    Set,
    IncrBy,
}

struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    value: i64,
    overflow: Overflow,
}

fn field_type(arg: &[u8]) -> Result<(bool, u32), CmdError> {
    let err = || {
        CmdError::err("Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.")
    };
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(err()),
    };
    let bits = num::parse_i64(&arg[1..]).ok_or_else(err)?;
    if bits < 1 || (signed && bits > 64) || (!signed && bits > 63) {
        return Err(err());
    }
    Ok((signed, bits as u32))
}

fn get_unsigned(s: &[u8], offset: u64, bits: u32) -> u64 {
    let mut v = 0u64;
    for j in 0..bits as u64 {
        let bit = offset + j;
        let set = s
            .get((bit >> 3) as usize)
            .is_some_and(|b| b & (0x80 >> (bit & 7)) != 0);
        v = (v << 1) | set as u64;
    }
    v
}

fn get_signed(s: &[u8], offset: u64, bits: u32) -> i64 {
    let mut v = get_unsigned(s, offset, bits);
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        v |= u64::MAX << bits;
    }
    v as i64
}

fn set_bits(s: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..bits as u64 {
        let on = (value >> (bits as u64 - 1 - j)) & 1 == 1;
        let bit = offset + j;
        let mask = 0x80u8 >> (bit & 7);
        let b = &mut s[(bit >> 3) as usize];
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: Some(limit or wrapped value) on overflow.
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> Option<u64> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX << bits);
    if value > max || (incr > 0 && incr > maxincr) {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => max,
            Overflow::Fail => 0,
        })
    } else if incr < 0 && incr < minincr {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => 0,
            Overflow::Fail => 0,
        })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => max,
            Overflow::Fail => 0,
        })
    } else if value < min
        || (bits != 64 && incr < minincr)
        || (value < 0 && incr < 0 && incr < minincr)
    {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => min,
            Overflow::Fail => 0,
        })
    } else {
        None
    }
}

fn bitfield(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    bitfield_generic(ctx, args, false)
}

fn bitfield_ro(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    bitfield_generic(ctx, args, true)
}

fn bitfield_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, ro: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut highest_write: Option<u64> = None;
    while let Some(sub) = args.peek() {
        args.next_bytes()?;
        let remaining = args.remaining();
        let upper = sub.to_ascii_uppercase();
        let op = match upper.as_slice() {
            b"GET" if remaining >= 2 => FieldOp::Get,
            b"SET" if remaining >= 3 => FieldOp::Set,
            b"INCRBY" if remaining >= 3 => FieldOp::IncrBy,
            b"OVERFLOW" if remaining >= 1 => {
                overflow = match args.next_upper()?.as_str() {
                    "WRAP" => Overflow::Wrap,
                    "SAT" => Overflow::Sat,
                    "FAIL" => Overflow::Fail,
                    _ => return Err(CmdError::err("Invalid OVERFLOW type specified")),
                };
                continue;
            }
            _ => return Err(CmdError::Syntax),
        };
        let (signed, bits) = field_type(args.next_bytes()?)?;
        let offset = bit_offset(ctx, args.next_bytes()?, bits as u64)?;
        let mut value = 0;
        if op != FieldOp::Get {
            let top = offset + bits as u64 - 1;
            highest_write = Some(highest_write.map_or(top, |h| h.max(top)));
            value = args.next_i64()?;
        }
        ops.push(Field {
            op,
            signed,
            bits,
            offset,
            value,
            overflow,
        });
    }
    let Some(highest) = highest_write else {
        // Only reads: a missing key reads as zeros.
        let s = read_string(ctx, key)?.unwrap_or_default();
        return Ok(Reply::Array(
            ops.iter()
                .map(|f| {
                    Reply::Int(if f.signed {
                        get_signed(&s, f.offset, f.bits)
                    } else {
                        get_unsigned(&s, f.offset, f.bits) as i64
                    })
                })
                .collect(),
        ));
    };
    if ro {
        return Err(CmdError::err(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    let grown = grow_for_bit(ctx, key, highest)?;
    let e = string_mut(ctx, key)?.expect("created above");
    let (replies, changes) = edit_bytes(str_bytes(e), |s| {
        let mut replies = Vec::with_capacity(ops.len());
        let mut changes = 0u64;
        for f in &ops {
            if f.op == FieldOp::Get {
                replies.push(Reply::Int(if f.signed {
                    get_signed(s, f.offset, f.bits)
                } else {
                    get_unsigned(s, f.offset, f.bits) as i64
                }));
                continue;
            }
            let (old, new, ret, failed) = if f.signed {
                let old = get_signed(s, f.offset, f.bits);
                let (new, ret, over) = if f.op == FieldOp::IncrBy {
                    let over = signed_overflow(old, f.value, f.bits, f.overflow);
                    let new = over.unwrap_or(old.wrapping_add(f.value));
                    (new, new, over.is_some())
                } else {
                    let over = signed_overflow(f.value, 0, f.bits, f.overflow);
                    (over.unwrap_or(f.value), old, over.is_some())
                };
                (
                    old as u64,
                    new as u64,
                    ret,
                    over && f.overflow == Overflow::Fail,
                )
            } else {
                let old = get_unsigned(s, f.offset, f.bits);
                let (new, ret, over) = if f.op == FieldOp::IncrBy {
                    let over = unsigned_overflow(old, f.value, f.bits, f.overflow);
                    let new = over.unwrap_or(old.wrapping_add(f.value as u64));
                    (new, new as i64, over.is_some())
                } else {
                    let v = f.value as u64;
                    let over = unsigned_overflow(v, 0, f.bits, f.overflow);
                    (over.unwrap_or(v), old as i64, over.is_some())
                };
                (old, new, ret, over && f.overflow == Overflow::Fail)
            };
            if failed {
                replies.push(Reply::Null);
                continue;
            }
            replies.push(Reply::Int(ret));
            set_bits(s, f.offset, f.bits, new);
            if grown || old != new {
                changes += 1;
            }
        }
        (replies, changes)
    });
    if changes > 0 {
        ctx.dirty(changes);
        ctx.notify(notify::STRING, "setbit", key);
    }
    Ok(Reply::Array(replies))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn setbit_getbit() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["SETBIT", "b", "7", "1"]), int(0));
        assert_eq!(t.run(&["GET", "b"]), bulk("\u{1}"));
        assert_eq!(t.run(&["SETBIT", "b", "7", "0"]), int(1));
        assert_eq!(t.run(&["GETBIT", "b", "7"]), int(0));
        assert_eq!(t.run(&["SETBIT", "b", "1", "1"]), int(0));
        assert_eq!(t.run(&["GETBIT", "b", "1"]), int(1));
        assert_eq!(t.run(&["GETBIT", "b", "1000"]), int(0));
        assert_eq!(t.run(&["GETBIT", "nokey", "0"]), int(0));
        assert_eq!(
            t.run(&["SETBIT", "b", "-1", "1"]),
            err("ERR bit offset is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["SETBIT", "b", "4294967296", "1"]),
            err("ERR bit offset is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["SETBIT", "b", "0", "2"]),
            err("ERR bit is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["SETBIT", "b", "0", "x"]),
            err("ERR bit is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["GETBIT", "b", "x"]),
            err("ERR bit offset is not an integer or out of range")
        );
    }

    #[test]
    fn bitcount_bitpos() {
        let mut t = TestClient::new();
        t.run(&["SET", "s", "foobar"]);
        assert_eq!(t.run(&["BITCOUNT", "s"]), int(26));
        assert_eq!(t.run(&["BITCOUNT", "s", "0", "0"]), int(4));
        assert_eq!(t.run(&["BITCOUNT", "s", "1", "1"]), int(6));
        assert_eq!(t.run(&["BITCOUNT", "s", "1", "1", "BYTE"]), int(6));
        assert_eq!(t.run(&["BITCOUNT", "s", "5", "30", "BIT"]), int(17));
        assert_eq!(t.run(&["BITCOUNT", "s", "-1", "-2"]), int(0));
        assert_eq!(t.run(&["BITCOUNT", "s", "0"]), err("ERR syntax error"));
        assert_eq!(
            t.run(&["BITCOUNT", "s", "0", "1", "FOO"]),
            err("ERR syntax error")
        );
        assert_eq!(t.run(&["BITCOUNT", "nokey", "0", "1"]), int(0));
        t.run(&["SET", "p", "\u{0}\u{ff}\u{f0}"]);
        // "\xff\xf0\x00" via raw bytes
        t.run_bytes(vec![
            "SET".into(),
            "p".into(),
            vec![0xffu8, 0xf0, 0x00].into(),
        ]);
        assert_eq!(t.run(&["BITPOS", "p", "0"]), int(12));
        t.run_bytes(vec![
            "SET".into(),
            "p".into(),
            vec![0x00u8, 0xff, 0xf0].into(),
        ]);
        assert_eq!(t.run(&["BITPOS", "p", "1", "0"]), int(8));
        assert_eq!(t.run(&["BITPOS", "p", "1", "2"]), int(16));
        t.run_bytes(vec![
            "SET".into(),
            "p".into(),
            vec![0x00u8, 0x00, 0x00].into(),
        ]);
        assert_eq!(t.run(&["BITPOS", "p", "1"]), int(-1));
        t.run_bytes(vec![
            "SET".into(),
            "p".into(),
            vec![0xffu8, 0xff, 0xff].into(),
        ]);
        assert_eq!(t.run(&["BITPOS", "p", "0"]), int(24));
        assert_eq!(t.run(&["BITPOS", "p", "0", "0"]), int(24));
        assert_eq!(t.run(&["BITPOS", "p", "0", "0", "-1"]), int(-1));
        assert_eq!(t.run(&["BITPOS", "p", "1", "7", "15", "BIT"]), int(7));
        assert_eq!(t.run(&["BITPOS", "nokey", "1"]), int(-1));
        assert_eq!(t.run(&["BITPOS", "nokey", "0"]), int(0));
        assert_eq!(
            t.run(&["BITPOS", "p", "2"]),
            err("ERR The bit argument must be 1 or 0.")
        );
        assert_eq!(
            t.run(&["BITPOS", "p", "1", "0", "1", "FOO"]),
            err("ERR syntax error")
        );
    }

    #[test]
    fn bitop() {
        let mut t = TestClient::new();
        t.run(&["SET", "a", "abc"]);
        t.run(&["SET", "b", "a"]);
        assert_eq!(t.run(&["BITOP", "AND", "d", "a", "b"]), int(3));
        assert_eq!(t.run(&["GET", "d"]), bulk("a\0\0"));
        assert_eq!(t.run(&["BITOP", "OR", "d", "a", "b"]), int(3));
        assert_eq!(t.run(&["GET", "d"]), bulk("abc"));
        assert_eq!(t.run(&["BITOP", "XOR", "d", "a", "b"]), int(3));
        assert_eq!(t.run(&["GET", "d"]), bulk("\0bc"));
        t.run_bytes(vec!["SET".into(), "n".into(), vec![0x0fu8].into()]);
        assert_eq!(t.run(&["BITOP", "NOT", "d", "n"]), int(1));
        assert_eq!(t.run(&["GETBIT", "d", "0"]), int(1));
        assert_eq!(
            t.run(&["BITOP", "NOT", "d", "a", "b"]),
            err("ERR BITOP NOT must be called with a single source key.")
        );
        assert_eq!(t.run(&["BITOP", "NAND", "d", "a"]), err("ERR syntax error"));
        assert_eq!(t.run(&["BITOP", "OR", "d", "nokey"]), int(0));
        assert_eq!(t.run(&["EXISTS", "d"]), int(0));
    }

    /// Redis 8.2's forms, bit by bit on one byte each: x = 1100_1010,
    /// y = 1010_0110, z = 0110_0011 (the shorter w reads as zeros).
    #[test]
    fn bitop_redis_8_forms() {
        let mut t = TestClient::new();
        for (k, v) in [("x", 0b1100_1010u8), ("y", 0b1010_0110), ("z", 0b0110_0011)] {
            t.run_bytes(vec!["SET".into(), k.into(), vec![v].into()]);
        }
        let byte = |t: &mut TestClient| match t.run(&["GET", "d"]) {
            Reply::Bulk(b) => b[0],
            other => panic!("{other:?}"),
        };
        // DIFF: in x and in none of y, z.
        assert_eq!(t.run(&["BITOP", "DIFF", "d", "x", "y", "z"]), int(1));
        assert_eq!(byte(&mut t), 0b0000_1000);
        // DIFF1: in y or z, not in x.
        assert_eq!(t.run(&["BITOP", "diff1", "d", "x", "y", "z"]), int(1));
        assert_eq!(byte(&mut t), 0b0010_0101);
        // ANDOR: in x and in y or z.
        assert_eq!(t.run(&["BITOP", "ANDOR", "d", "x", "y", "z"]), int(1));
        assert_eq!(byte(&mut t), 0b1100_0010);
        // ONE: in exactly one of x, y, z.
        assert_eq!(t.run(&["BITOP", "ONE", "d", "x", "y", "z"]), int(1));
        assert_eq!(byte(&mut t), 0b0000_1101);
        assert_eq!(t.run(&["BITOP", "ONE", "d", "x"]), int(1));
        assert_eq!(byte(&mut t), 0b1100_1010);
        for op in ["DIFF", "DIFF1", "ANDOR"] {
            assert_eq!(
                t.run(&["BITOP", &op.to_lowercase(), "d", "x"]),
                err(&format!(
                    "ERR BITOP {op} must be called with at least two source keys."
                ))
            );
        }
    }

    #[test]
    fn bitfield() {
        let mut t = TestClient::new();
        assert_eq!(
            t.run(&["BITFIELD", "bf", "SET", "i8", "0", "-100", "GET", "i8", "0"]),
            Reply::Array(vec![int(0), int(-100)])
        );
        assert_eq!(
            t.run(&[
                "BITFIELD", "bf", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2",
                "102", "1"
            ]),
            Reply::Array(vec![int(1), int(1)])
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf2", "SET", "u8", "#1", "255", "GET", "u8", "8"]),
            Reply::Array(vec![int(0), int(255)])
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf3", "OVERFLOW", "FAIL", "INCRBY", "u2", "0", "5"]),
            Reply::Array(vec![Reply::Null])
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf3", "OVERFLOW", "WRAP", "INCRBY", "i8", "0", "130"]),
            Reply::Array(vec![int(-126)])
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf3", "OVERFLOW", "SAT", "INCRBY", "i8", "0", "-300"]),
            Reply::Array(vec![int(-128)])
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf", "GET", "u64", "0"]),
            err("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.")
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf", "OVERFLOW", "FOO"]),
            err("ERR Invalid OVERFLOW type specified")
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf", "GET", "u8"]),
            err("ERR syntax error")
        );
        assert_eq!(
            t.run(&["BITFIELD", "bf", "SET", "u8", "-1", "1"]),
            err("ERR bit offset is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["BITFIELD_RO", "bf", "SET", "u8", "0", "1"]),
            err("ERR BITFIELD_RO only supports the GET subcommand")
        );
        assert_eq!(
            t.run(&["BITFIELD_RO", "bf2", "GET", "u8", "8"]),
            Reply::Array(vec![int(255)])
        );
        assert_eq!(
            t.run(&["BITFIELD", "nokey", "GET", "i8", "0"]),
            Reply::Array(vec![int(0)])
        );
        assert_eq!(t.run(&["EXISTS", "nokey"]), int(0));
    }
}
