//! Hash commands (Redis's `t_hash.c`): HSET and friends, counters, HRANDFIELD,
//! HSCAN. Values live in [`crate::types::hash::HashValue`].

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::keys::{parse_scan, scan_reply};
use crate::num;
use crate::types::hash::{HashLimits, HashValue};
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let h = |c: CommandSpec| c.group("hash");
    vec![
        h(cmd("hset", -4, WRITE | DENYOOM | FAST, keys(1, 1, 1), hset).summary("Creates or modifies the value of a field in a hash.")),
        h(cmd("hmset", -4, WRITE | DENYOOM | FAST, keys(1, 1, 1), hmset).summary("Sets the values of multiple fields.")),
        h(cmd("hsetnx", 4, WRITE | DENYOOM | FAST, keys(1, 1, 1), hsetnx).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Sets the value of a field in a hash only when the field doesn't exist.")),
        h(cmd("hget", 3, READONLY | FAST, keys(1, 1, 1), hget).summary("Returns the value of a field in a hash.")),
        h(cmd("hmget", -3, READONLY | FAST, keys(1, 1, 1), hmget).summary("Returns the values of all fields in a hash.")),
        h(cmd("hgetall", 2, READONLY, keys(1, 1, 1), hgetall).summary("Returns all fields and values in a hash.")),
        h(cmd("hdel", -3, WRITE | FAST, keys(1, 1, 1), hdel).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.")),
        h(cmd("hexists", 3, READONLY | FAST, keys(1, 1, 1), hexists).key_roles(KeyRoles::Each(&[kf::RO])).summary("Determines whether a field exists in a hash.")),
        h(cmd("hlen", 2, READONLY | FAST, keys(1, 1, 1), hlen).key_roles(KeyRoles::Each(&[kf::RO])).summary("Returns the number of fields in a hash.")),
        h(cmd("hstrlen", 3, READONLY | FAST, keys(1, 1, 1), hstrlen).key_roles(KeyRoles::Each(&[kf::RO])).summary("Returns the length of the value of a field.")),
        h(cmd("hkeys", 2, READONLY, keys(1, 1, 1), hkeys).summary("Returns all fields in a hash.")),
        h(cmd("hvals", 2, READONLY, keys(1, 1, 1), hvals).summary("Returns all values in a hash.")),
        h(cmd("hincrby", 4, WRITE | DENYOOM | FAST, keys(1, 1, 1), hincrby).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.")),
        h(cmd("hincrbyfloat", 4, WRITE | DENYOOM | FAST, keys(1, 1, 1), hincrbyfloat).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.")),
        h(cmd("hrandfield", -2, READONLY, keys(1, 1, 1), hrandfield).summary("Returns one or more random fields from a hash.")),
        h(cmd("hscan", -3, READONLY, keys(1, 1, 1), hscan).summary("Iterates over fields and values of a hash.")),
    ]
}

// ---- storage helpers -------------------------------------------------------------

/// The hash at `key` for reading: `Ok(None)` if absent, WRONGTYPE for another type.
pub(crate) fn read_hash<'c>(
    ctx: &'c mut Ctx<'_>,
    key: &[u8],
) -> Result<Option<&'c HashValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Hash(h),
            ..
        }) => Ok(Some(h)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The hash at `key` as a write command sees it (no hit/miss counting, as Redis's
/// `lookupKeyWrite`).
pub(crate) fn write_view<'c>(
    ctx: &'c mut Ctx<'_>,
    key: &[u8],
) -> Result<Option<&'c HashValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.get(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Hash(h),
            ..
        }) => Ok(Some(h)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// Checks that `key` is absent or a hash (before any change is made).
fn check_hash(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<bool, CmdError> {
    let db = ctx.db();
    match ctx.ks.get(db, key, ctx.now) {
        None => Ok(false),
        Some(Entry {
            value: Value::Hash(_),
            ..
        }) => Ok(true),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The hash at `key`, created empty if absent; WRONGTYPE (and nothing created) for
/// another type. Callers must leave it non-empty.
pub(crate) fn hash_for_write<'c>(
    ctx: &'c mut Ctx<'_>,
    key: &[u8],
) -> Result<&'c mut HashValue, CmdError> {
    let db = ctx.db();
    let now = ctx.now;
    if ctx.ks.get(db, key, now).is_none() {
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(key),
            Entry::new(Value::Hash(HashValue::default())),
        );
    }
    match ctx.ks.get_mut(db, key, now) {
        Some(Entry {
            value: Value::Hash(h),
            ..
        }) => Ok(h),
        _ => Err(CmdError::WrongType),
    }
}

pub(crate) fn limits(ctx: &Ctx<'_>) -> HashLimits {
    HashLimits::from_config(&ctx.store.config)
}

fn b(s: &[u8]) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s))
}

// ---- commands --------------------------------------------------------------------

/// HSET/HMSET: sets field/value pairs, returns how many fields were new.
fn set_pairs(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<i64, CmdError> {
    let key = args.next_bytes()?;
    let pairs = args.rest();
    if !pairs.len().is_multiple_of(2) {
        return Err(CmdError::WrongArity(ctx.cmd.full_name.clone()));
    }
    let lim = limits(ctx);
    let h = hash_for_write(ctx, key)?;
    let mut added = 0;
    for fv in pairs.chunks(2) {
        if h.set(&fv[0], &fv[1], lim) {
            added += 1;
        }
    }
    ctx.dirty(pairs.len() as u64 / 2);
    ctx.notify(notify::HASH, "hset", key);
    Ok(added)
}

fn hset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(set_pairs(ctx, args)?))
}

fn hmset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    set_pairs(ctx, args)?;
    Ok(Reply::ok())
}

fn hsetnx(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let field = args.next_bytes()?;
    let value = args.next_bytes()?;
    if write_view(ctx, key)?.is_some_and(|h| h.contains(field)) {
        return Ok(Reply::Int(0));
    }
    let lim = limits(ctx);
    hash_for_write(ctx, key)?.set(field, value, lim);
    ctx.dirty(1);
    ctx.notify(notify::HASH, "hset", key);
    Ok(Reply::Int(1))
}

fn hget(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let field = args.next_bytes()?;
    Ok(match read_hash(ctx, key)?.and_then(|h| h.get(field)) {
        Some(v) => b(v),
        None => Reply::Null,
    })
}

fn hmget(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let fields = args.rest();
    let h = read_hash(ctx, key)?;
    Ok(Reply::Array(
        fields
            .iter()
            .map(|f| h.and_then(|h| h.get(f)).map_or(Reply::Null, b))
            .collect(),
    ))
}

fn hgetall(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Map(match read_hash(ctx, key)? {
        Some(h) => h.iter().map(|(f, v)| (b(f), b(v))).collect(),
        None => Vec::new(),
    }))
}

fn hkeys(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Array(match read_hash(ctx, key)? {
        Some(h) => h.iter().map(|(f, _)| b(f)).collect(),
        None => Vec::new(),
    }))
}

fn hvals(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Array(match read_hash(ctx, key)? {
        Some(h) => h.iter().map(|(_, v)| b(v)).collect(),
        None => Vec::new(),
    }))
}

fn hdel(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let fields = args.rest();
    if !check_hash(ctx, key)? {
        return Ok(Reply::Int(0));
    }
    let h = hash_for_write(ctx, key)?;
    let mut deleted = 0;
    for f in fields {
        if h.remove(f) {
            deleted += 1;
            if h.is_empty() {
                break;
            }
        }
    }
    let emptied = h.is_empty();
    if deleted > 0 {
        ctx.dirty(deleted as u64);
        ctx.notify(notify::HASH, "hdel", key);
        if emptied {
            let db = ctx.db();
            ctx.ks.remove(db, key);
            ctx.notify(notify::GENERIC, "del", key);
        }
    }
    Ok(Reply::Int(deleted))
}

fn hexists(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let field = args.next_bytes()?;
    Ok(Reply::Int(
        read_hash(ctx, key)?.is_some_and(|h| h.contains(field)) as i64,
    ))
}

fn hlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Int(
        read_hash(ctx, key)?.map_or(0, |h| h.len()) as i64
    ))
}

fn hstrlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let field = args.next_bytes()?;
    Ok(Reply::Int(
        read_hash(ctx, key)?
            .and_then(|h| h.get(field))
            .map_or(0, |v| v.len()) as i64,
    ))
}

fn hincrby(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let field = args.next_bytes()?;
    let incr = args.next_i64()?;
    let current = match write_view(ctx, key)?.and_then(|h| h.get(field)) {
        Some(v) => {
            num::parse_i64(v).ok_or_else(|| CmdError::err("hash value is not an integer"))?
        }
        None => 0,
    };
    let new = current.checked_add(incr).ok_or(CmdError::Overflow)?;
    let lim = limits(ctx);
    let text = num::i64_to_bytes(new);
    hash_for_write(ctx, key)?.set_keep_ttl(field, &text, lim);
    ctx.dirty(1);
    ctx.notify(notify::HASH, "hincrby", key);
    Ok(Reply::Int(new))
}

fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let field = args.next_bytes()?;
    let incr_arg = args.peek().ok_or(CmdError::Syntax)?;
    let incr = args.next_f64()?;
    if incr.is_infinite() {
        return Err(CmdError::err("value is NaN or Infinity"));
    }
    let (current, current_text) = match write_view(ctx, key)?.and_then(|h| h.get(field)) {
        // A stored "inf" is a float (the sum below then reports it).
        Some(v) => match num::parse_f64(v) {
            Some(f) => (f, Bytes::copy_from_slice(v)),
            None => return Err(CmdError::err("hash value is not a float")),
        },
        None => (0.0, Bytes::from_static(b"0")),
    };
    let new = current + incr;
    if !new.is_finite() {
        return Err(CmdError::err("increment would produce NaN or Infinity"));
    }
    // Redis adds in long double and prints 17 decimals; the software long double
    // reproduces its text (0.1 + 0.2 = "0.3"), f64 is the fallback for odd inputs.
    let text = Bytes::from(
        super::strings::add_float_strings(&current_text, incr_arg)
            .unwrap_or_else(|_| num::format_float_plain(new)),
    );
    let lim = limits(ctx);
    hash_for_write(ctx, key)?.set_keep_ttl(field, &text, lim);
    ctx.dirty(1);
    ctx.notify(notify::HASH, "hincrbyfloat", key);
    // Logged as HSET of the result so a replay never accumulates float error.
    ctx.propagate(vec![
        Bytes::from_static(b"HSET"),
        Bytes::copy_from_slice(key),
        Bytes::copy_from_slice(field),
        text.clone(),
    ]);
    Ok(Reply::Bulk(text))
}

fn hrandfield(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    if args.is_empty() {
        let mut rng = rand::thread_rng();
        return Ok(
            match read_hash(ctx, key)?.and_then(|h| h.random(&mut rng)) {
                Some((f, _)) => b(f),
                None => Reply::Null,
            },
        );
    }
    let count_arg = args.next_bytes()?;
    let withvalues = if args.is_empty() {
        false
    } else if args.flag("WITHVALUES") && args.is_empty() {
        true
    } else {
        return Err(CmdError::Syntax);
    };
    let l = num::parse_i64(count_arg).ok_or(CmdError::NotInteger)?;
    // Redis takes the count in -LONG_MAX..LONG_MAX, and half that with values (the
    // reply would hold twice as many elements).
    if l == i64::MIN {
        return Err(CmdError::err(RANGE_LONG));
    }
    if withvalues && l < -(i64::MAX / 2) {
        return Err(CmdError::err("value is out of range"));
    }
    let resp3 = ctx.resp3();
    let Some(h) = read_hash(ctx, key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let pair = |f: &[u8], v: &[u8], out: &mut Vec<Reply>| {
        if !withvalues {
            out.push(b(f));
        } else if resp3 {
            out.push(Reply::Array(vec![b(f), b(v)]));
        } else {
            out.push(b(f));
            out.push(b(v));
        }
    };
    let mut out = Vec::new();
    let mut rng = rand::thread_rng();
    let len = h.len();
    if l < 0 {
        let count = l.unsigned_abs() as usize;
        for _ in 0..count {
            let (f, v) = h.random(&mut rng).expect("non-empty");
            pair(f, v, &mut out);
        }
    } else if l as usize >= len {
        for (f, v) in h.iter() {
            pair(f, v, &mut out);
        }
    } else {
        let count = l as usize;
        let picked = rand::seq::index::sample(&mut rng, len, count);
        let mut picked: Vec<usize> = picked.into_vec();
        if matches!(h, HashValue::Pack(_) | HashValue::PackEx(_)) {
            // One linear pass instead of one per pick.
            picked.sort_unstable();
            let mut next = picked.iter().peekable();
            for (i, (f, v)) in h.iter().enumerate() {
                if next.peek() == Some(&&i) {
                    next.next();
                    pair(f, v, &mut out);
                }
            }
        } else {
            for i in picked {
                let (f, v) = h.get_index(i).expect("in range");
                pair(f, v, &mut out);
            }
        }
    }
    Ok(Reply::Array(out))
}

/// Redis's `getRangeLongFromObjectOrReply` text for -LONG_MAX..LONG_MAX.
pub(crate) const RANGE_LONG: &str =
    "value is out of range, value must between -9223372036854775807 and 9223372036854775807";

fn hscan(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let opts = parse_scan(args, false)?;
    let Some(h) = read_hash(ctx, key)? else {
        return Ok(scan_reply(0, Vec::new()));
    };
    let mut items = Vec::new();
    let next = h.scan(opts.cursor, opts.count, |f, v| {
        if opts.matches(f) {
            items.push(b(f));
            items.push(b(v));
        }
    });
    Ok(scan_reply(next, items))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::{Protocol, Reply};

    #[test]
    fn hset_hget_and_friends() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["HSET", "h", "a", "1", "b", "2"]), int(2));
        assert_eq!(t.run(&["HSET", "h", "a", "3", "c", "4"]), int(1));
        assert_eq!(t.run(&["HGET", "h", "a"]), bulk("3"));
        assert_eq!(t.run(&["HGET", "h", "zz"]), Reply::Null);
        assert_eq!(t.run(&["HGET", "nokey", "a"]), Reply::Null);
        assert_eq!(t.run(&["HLEN", "h"]), int(3));
        assert_eq!(t.run(&["HSTRLEN", "h", "a"]), int(1));
        assert_eq!(t.run(&["HEXISTS", "h", "b"]), int(1));
        assert_eq!(t.run(&["HEXISTS", "h", "x"]), int(0));
        assert_eq!(
            t.run(&["HMGET", "h", "a", "x", "c"]),
            Reply::Array(vec![bulk("3"), Reply::Null, bulk("4")])
        );
        assert_eq!(t.run(&["HKEYS", "h"]), bulks(&["a", "b", "c"]));
        assert_eq!(t.run(&["HVALS", "h"]), bulks(&["3", "2", "4"]));
        assert_eq!(t.run(&["HSETNX", "h", "a", "9"]), int(0));
        assert_eq!(t.run(&["HSETNX", "h", "d", "9"]), int(1));
        assert_eq!(t.run(&["HMSET", "h", "e", "5"]), ok());
        assert_eq!(
            t.run(&["HSET", "h", "a"]),
            err("ERR wrong number of arguments for 'hset' command")
        );
        assert_eq!(
            t.run(&["HMSET", "h", "a", "1", "b"]),
            err("ERR wrong number of arguments for 'hmset' command")
        );
        assert_eq!(t.run(&["HDEL", "h", "a", "b", "zz"]), int(2));
        assert_eq!(t.run(&["HDEL", "h", "c", "d", "e"]), int(3));
        assert_eq!(t.run(&["EXISTS", "h"]), int(0));
        t.run(&["SET", "s", "x"]);
        let wt = err("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert_eq!(t.run(&["HGET", "s", "a"]), wt);
        assert_eq!(t.run(&["HSET", "s", "a", "1"]), wt);
        assert_eq!(t.run(&["HGETALL", "s"]), wt);
        assert_eq!(t.run(&["TYPE", "s"]), Reply::Status("string"));
        t.run(&["HSET", "h2", "f", "v"]);
        assert_eq!(t.run(&["TYPE", "h2"]), Reply::Status("hash"));
    }

    #[test]
    fn hgetall_shapes() {
        let mut t = TestClient::new();
        t.run(&["HSET", "h", "a", "1"]);
        assert_eq!(t.resp(&["HGETALL", "h"]), "*2\r\n$1\r\na\r\n$1\r\n1\r\n");
        t.set_proto(Protocol::Resp3);
        assert_eq!(t.resp(&["HGETALL", "h"]), "%1\r\n$1\r\na\r\n$1\r\n1\r\n");
        assert_eq!(t.resp(&["HGETALL", "nokey"]), "%0\r\n");
    }

    #[test]
    fn counters() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["HINCRBY", "h", "n", "5"]), int(5));
        assert_eq!(t.run(&["HINCRBY", "h", "n", "-7"]), int(-2));
        t.run(&["HSET", "h", "s", "abc", "big", "9223372036854775807"]);
        assert_eq!(
            t.run(&["HINCRBY", "h", "s", "1"]),
            err("ERR hash value is not an integer")
        );
        assert_eq!(
            t.run(&["HINCRBY", "h", "big", "1"]),
            err("ERR increment or decrement would overflow")
        );
        assert_eq!(
            t.run(&["HINCRBY", "h", "n", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(t.run(&["HINCRBYFLOAT", "h", "f", "10.5"]), bulk("10.5"));
        assert_eq!(t.run(&["HINCRBYFLOAT", "h", "f", "0.1"]), bulk("10.6"));
        assert_eq!(t.run(&["HINCRBYFLOAT", "h", "p", "0.1"]), bulk("0.1"));
        assert_eq!(t.run(&["HINCRBYFLOAT", "h", "p", "0.2"]), bulk("0.3"));
        assert_eq!(t.run(&["HINCRBYFLOAT", "h", "p", "-0.3"]), bulk("0"));
        assert_eq!(t.run(&["HINCRBYFLOAT", "h", "n", "2"]), bulk("0"));
        assert_eq!(
            t.run(&["HINCRBYFLOAT", "h", "s", "1"]),
            err("ERR hash value is not a float")
        );
        t.run(&["HSET", "h", "i", "inf"]);
        assert_eq!(
            t.run(&["HINCRBYFLOAT", "h", "i", "1"]),
            err("ERR increment would produce NaN or Infinity")
        );
        assert_eq!(
            t.run(&["HINCRBYFLOAT", "h", "f", "x"]),
            err("ERR value is not a valid float")
        );
        assert_eq!(
            t.run(&["HINCRBYFLOAT", "h", "f", "+inf"]),
            err("ERR value is NaN or Infinity")
        );
        assert_eq!(
            t.run(&["HINCRBYFLOAT", "newkey", "f", "x"]),
            err("ERR value is not a valid float")
        );
        assert_eq!(t.run(&["EXISTS", "newkey"]), int(0));
    }

    #[test]
    fn hrandfield() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["HRANDFIELD", "nokey"]), Reply::Null);
        assert_eq!(t.run(&["HRANDFIELD", "nokey", "5"]), Reply::Array(vec![]));
        t.run(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
        let Reply::Array(all) = t.run(&["HRANDFIELD", "h", "10"]) else {
            panic!()
        };
        assert_eq!(all.len(), 3);
        let Reply::Array(two) = t.run(&["HRANDFIELD", "h", "2", "WITHVALUES"]) else {
            panic!()
        };
        assert_eq!(two.len(), 4);
        assert_ne!(two[0], two[2]);
        let Reply::Array(many) = t.run(&["HRANDFIELD", "h", "-10"]) else {
            panic!()
        };
        assert_eq!(many.len(), 10);
        assert_eq!(t.run(&["HRANDFIELD", "h", "0"]), Reply::Array(vec![]));
        assert_eq!(
            t.run(&["HRANDFIELD", "h", "-9223372036854775808"]),
            err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
        );
        assert_eq!(
            t.run(&["HRANDFIELD", "h", "-9223372036854770000", "WITHVALUES"]),
            err("ERR value is out of range")
        );
        assert_eq!(
            t.run(&["HRANDFIELD", "h", "1", "WITHVALUES", "x"]),
            err("ERR syntax error")
        );
        t.set_proto(Protocol::Resp3);
        let Reply::Array(pairs) = t.run(&["HRANDFIELD", "h", "-2", "WITHVALUES"]) else {
            panic!()
        };
        assert_eq!(pairs.len(), 2);
        assert!(matches!(&pairs[0], Reply::Array(p) if p.len() == 2));
    }

    #[test]
    fn hscan() {
        let mut t = TestClient::new();
        t.run(&["CONFIG", "SET", "hash-max-listpack-entries", "4"]);
        for i in 0..50 {
            t.run(&["HSET", "h", &format!("f{i}"), &format!("{i}")]);
        }
        let mut cursor = "0".to_string();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let Reply::Array(r) = t.run(&["HSCAN", "h", &cursor, "COUNT", "7"]) else {
                panic!()
            };
            let Reply::Bulk(c) = &r[0] else { panic!() };
            cursor = String::from_utf8(c.to_vec()).unwrap();
            let Reply::Array(items) = &r[1] else { panic!() };
            for kv in items.chunks(2) {
                seen.insert(format!("{:?}", kv[0]));
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 50);
        let r = t.run(&["HSCAN", "h", "0", "MATCH", "f1*", "COUNT", "1000"]);
        let Reply::Array(r) = r else { panic!() };
        assert!(matches!(&r[1], Reply::Array(items) if items.len() == 22));
        assert_eq!(t.run(&["HSCAN", "h", "x"]), err("ERR invalid cursor"));
        assert_eq!(t.run(&["HSCAN", "h", " 1"]), err("ERR invalid cursor"));
        assert_eq!(
            t.run(&["HSCAN", "h", "18446744073709551616"]),
            err("ERR invalid cursor")
        );
        assert!(matches!(t.run(&["HSCAN", "h", "-1"]), Reply::Array(_)));
        assert_eq!(
            t.run(&["HSCAN", "h", "0", "COUNT", "0"]),
            err("ERR syntax error")
        );
        assert_eq!(
            t.run(&["HSCAN", "h", "0", "NOVALUES"]),
            err("ERR syntax error")
        );
    }

    #[test]
    fn encodings_follow_config() {
        let mut t = TestClient::new();
        t.run(&["HSET", "h", "a", "1"]);
        let db = t.client.db;
        let mut ks = t.store.keyspace.lock_keys([&b"h"[..]]);
        let e = ks.get(db, b"h", 0).unwrap();
        assert_eq!(e.value.encoding(), "listpack");
        drop(ks);
        t.run(&["HSET", "h", "long", &"x".repeat(65)]);
        let mut ks = t.store.keyspace.lock_keys([&b"h"[..]]);
        assert_eq!(ks.get(db, b"h", 0).unwrap().value.encoding(), "hashtable");
    }
}
