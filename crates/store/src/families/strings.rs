//! String commands: GET/SET and options, counters, multi-key get/set.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, keys, CommandSpec};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::{read_string, Ctx};
use crate::num;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("string");
    vec![
        s(cmd("get", 2, READONLY | FAST, keys(1, 1, 1), get).summary("Returns the string value of a key.")),
        s(cmd("set", -3, WRITE | DENYOOM, keys(1, 1, 1), set).summary("Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.")),
        s(cmd("incr", 2, WRITE | DENYOOM | FAST, keys(1, 1, 1), incr).summary("Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("decr", 2, WRITE | DENYOOM | FAST, keys(1, 1, 1), decr).summary("Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("incrby", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), incrby).summary("Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("decrby", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), decrby).summary("Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("mget", -2, READONLY | FAST, keys(1, -1, 1), mget).summary("Atomically returns the string values of one or more keys.")),
        s(cmd("mset", -3, WRITE | DENYOOM, keys(1, -1, 2), mset).summary("Atomically creates or modifies the string values of one or more keys.")),
    ]
}

fn get(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(read_string(ctx, key)?.into())
}

/// Expiry options shared by SET and GETEX.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ExpireOpt {
    None,
    KeepTtl,
    /// Absolute unix milliseconds.
    At(u64),
    Persist,
}

/// Converts a relative or absolute expiry argument to absolute milliseconds with
/// Redis's validation (`invalid expire time in '<cmd>' command` for <= 0 or overflow).
pub fn expire_arg(
    ctx: &Ctx<'_>,
    arg: &[u8],
    unit_ms: i64,
    absolute: bool,
) -> Result<u64, CmdError> {
    let n = num::parse_i64(arg).ok_or(CmdError::NotInteger)?;
    let invalid = || CmdError::InvalidExpire(ctx.cmd.full_name.clone());
    if n <= 0 {
        return Err(invalid());
    }
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(ctx.now as i64).ok_or_else(invalid)?
    };
    Ok(at as u64)
}

fn set(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    let (mut nx, mut xx, mut want_get) = (false, false, false);
    let mut expire = ExpireOpt::None;
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        let upper = opt.to_ascii_uppercase();
        match upper.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => want_get = true,
            b"KEEPTTL" if expire == ExpireOpt::None => expire = ExpireOpt::KeepTtl,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expire == ExpireOpt::None => {
                let arg = args.next_bytes()?;
                let (unit, abs) = match upper.as_slice() {
                    b"EX" => (1000, false),
                    b"PX" => (1, false),
                    b"EXAT" => (1000, true),
                    _ => (1, true),
                };
                expire = ExpireOpt::At(expire_arg(ctx, arg, unit, abs)?);
            }
            _ => return Err(CmdError::Syntax),
        }
    }
    let db = ctx.db();
    let now = ctx.now;
    let old = match ctx.ks.get(db, key, now) {
        None => None,
        Some(e) => match &e.value {
            Value::Str(b) => Some((b.clone(), e.expire_at)),
            #[allow(unreachable_patterns)]
            _ if want_get => return Err(CmdError::WrongType),
            _ => Some((Bytes::new(), e.expire_at)),
        },
    };
    let old_reply = || -> Reply {
        match &old {
            Some((b, _)) => Reply::Bulk(b.clone()),
            None => Reply::Null,
        }
    };
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(if want_get { old_reply() } else { Reply::Null });
    }
    let expire_at = match expire {
        ExpireOpt::At(t) => t,
        ExpireOpt::KeepTtl => old.as_ref().map_or(0, |(_, e)| *e),
        _ => 0,
    };
    ctx.ks.insert(
        db,
        Bytes::copy_from_slice(key),
        Entry::with_expiry(Value::Str(Bytes::copy_from_slice(value)), expire_at),
    );
    ctx.dirty(1);
    ctx.notify(notify::STRING, "set", key);
    if let ExpireOpt::At(at) = expire {
        ctx.notify(notify::GENERIC, "expire", key);
        // Relative times are logged as absolute so a replay never extends a TTL.
        ctx.propagate(vec![
            Bytes::from_static(b"SET"),
            key.clone(),
            value.clone(),
            Bytes::from_static(b"PXAT"),
            num::i64_to_bytes(at as i64),
        ]);
    } else {
        let mut p = vec![Bytes::from_static(b"SET"), key.clone(), value.clone()];
        if expire == ExpireOpt::KeepTtl {
            p.push(Bytes::from_static(b"KEEPTTL"));
        }
        ctx.propagate(p);
    }
    Ok(if want_get { old_reply() } else { Reply::ok() })
}

/// Adds `delta` to the integer stored at `key`, keeping its TTL.
pub fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) -> CmdResult {
    let db = ctx.db();
    let now = ctx.now;
    let (current, expire_at) = match ctx.ks.get(db, key, now) {
        None => (0, 0),
        Some(e) => match &e.value {
            Value::Str(b) => (num::parse_i64(b).ok_or(CmdError::NotInteger)?, e.expire_at),
            #[allow(unreachable_patterns)]
            _ => return Err(CmdError::WrongType),
        },
    };
    let new = current.checked_add(delta).ok_or(CmdError::Overflow)?;
    ctx.ks.insert(
        db,
        Bytes::copy_from_slice(key),
        Entry::with_expiry(Value::Str(num::i64_to_bytes(new)), expire_at),
    );
    ctx.dirty(1);
    ctx.notify(notify::STRING, "incrby", key);
    Ok(Reply::Int(new))
}

fn incr(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    incr_by(ctx, key, 1)
}

fn decr(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    incr_by(ctx, key, -1)
}

fn incrby(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let delta = args.next_i64()?;
    incr_by(ctx, key, delta)
}

fn decrby(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let delta = args.next_i64()?;
    if delta == i64::MIN {
        return Err(CmdError::err("decrement would overflow"));
    }
    incr_by(ctx, key, -delta)
}

fn mget(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let db = ctx.db();
    let now = ctx.now;
    let mut out = Vec::with_capacity(args.remaining());
    for key in args.rest() {
        out.push(match ctx.ks.lookup_read(db, key, now) {
            Some(Entry {
                value: Value::Str(b),
                ..
            }) => Reply::Bulk(b.clone()),
            _ => Reply::Null,
        });
    }
    Ok(Reply::Array(out))
}

fn mset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if !args.remaining().is_multiple_of(2) {
        return Err(CmdError::WrongArity(ctx.cmd.full_name.clone()));
    }
    let db = ctx.db();
    let pairs = args.rest();
    for kv in pairs.chunks(2) {
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(&kv[0]),
            Entry::new(Value::Str(Bytes::copy_from_slice(&kv[1]))),
        );
        ctx.notify(notify::STRING, "set", &kv[0]);
    }
    ctx.dirty(pairs.len() as u64 / 2);
    Ok(Reply::ok())
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn set_get_options() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["SET", "k", "v"]), ok());
        assert_eq!(t.run(&["GET", "k"]), bulk("v"));
        assert_eq!(t.run(&["SET", "k", "w", "NX"]), Reply::Null);
        assert_eq!(t.run(&["SET", "k", "w", "XX", "GET"]), bulk("v"));
        assert_eq!(t.run(&["SET", "n", "1", "XX"]), Reply::Null);
        assert_eq!(
            t.run(&["SET", "k", "v", "EX", "0"]),
            err("ERR invalid expire time in 'set' command")
        );
        assert_eq!(
            t.run(&["SET", "k", "v", "EX", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["SET", "k", "v", "NX", "XX"]),
            err("ERR syntax error")
        );
        assert_eq!(
            t.run(&["SET", "k", "v", "EX", "10", "PX", "5"]),
            err("ERR syntax error")
        );
        assert_eq!(t.run(&["SET", "k", "v", "EX", "100"]), ok());
        assert_eq!(t.run(&["TTL", "k"]), int(100));
        assert_eq!(t.run(&["SET", "k", "v2", "KEEPTTL"]), ok());
        assert_eq!(t.run(&["TTL", "k"]), int(100));
        assert_eq!(t.run(&["SET", "k", "v3"]), ok());
        assert_eq!(t.run(&["TTL", "k"]), int(-1));
        assert_eq!(
            t.run(&["get"]),
            err("ERR wrong number of arguments for 'get' command")
        );
    }

    #[test]
    fn counters() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["INCR", "c"]), int(1));
        assert_eq!(t.run(&["INCRBY", "c", "10"]), int(11));
        assert_eq!(t.run(&["DECRBY", "c", "20"]), int(-9));
        t.run(&["SET", "s", "abc"]);
        assert_eq!(
            t.run(&["INCR", "s"]),
            err("ERR value is not an integer or out of range")
        );
        t.run(&["SET", "m", "9223372036854775807"]);
        assert_eq!(
            t.run(&["INCR", "m"]),
            err("ERR increment or decrement would overflow")
        );
        assert_eq!(
            t.run(&["MSET", "a", "1", "b"]),
            err("ERR wrong number of arguments for 'mset' command")
        );
        assert_eq!(t.run(&["MSET", "a", "1", "b", "2"]), ok());
        assert_eq!(
            t.run(&["MGET", "a", "nope", "b"]),
            Reply::Array(vec![bulk("1"), Reply::Null, bulk("2")])
        );
    }

    #[test]
    fn multi_exec_and_watch() {
        let mut t = TestClient::new();
        let mut other = t.other();
        assert_eq!(t.run(&["MULTI"]), ok());
        assert_eq!(t.run(&["SET", "x", "1"]), Reply::Status("QUEUED"));
        assert_eq!(t.run(&["INCR", "x"]), Reply::Status("QUEUED"));
        assert_eq!(t.run(&["EXEC"]), Reply::Array(vec![ok(), int(2)]));
        assert_eq!(t.run(&["WATCH", "x"]), ok());
        other.run(&["SET", "x", "5"]);
        t.run(&["MULTI"]);
        t.run(&["INCR", "x"]);
        assert_eq!(t.run(&["EXEC"]), Reply::NullArray);
        t.run(&["MULTI"]);
        assert_eq!(
            t.run(&["NOPE"]),
            err("ERR unknown command 'NOPE', with args beginning with: ")
        );
        assert_eq!(
            t.run(&["EXEC"]),
            err("EXECABORT Transaction discarded because of previous errors.")
        );
        assert_eq!(t.run(&["EXEC"]), err("ERR EXEC without MULTI"));
    }
}
