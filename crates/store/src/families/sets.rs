//! Set commands (Redis's `t_set.c`): membership, random picks and pops, moves,
//! and the algebra (SINTER/SUNION/SDIFF and their STORE forms, SINTERCARD).
//! Values live in [`crate::types::set::SetValue`].

use std::borrow::Cow;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, Keys};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::hashes::RANGE_LONG;
use crate::families::keys::{parse_scan, scan_reply};
use crate::num;
use crate::types::set::{member_bytes, SetLimits, SetValue};
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("set");
    vec![
        s(cmd("sadd", -3, WRITE | DENYOOM | FAST, keys(1, 1, 1), sadd).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Adds one or more members to a set. Creates the key if it doesn't exist.")),
        s(cmd("srem", -3, WRITE | FAST, keys(1, 1, 1), srem).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes one or more members from a set. Deletes the set if the last member was removed.")),
        s(cmd("smembers", 2, READONLY, keys(1, 1, 1), smembers).summary("Returns all members of a set.")),
        s(cmd("sismember", 3, READONLY | FAST, keys(1, 1, 1), sismember).key_roles(KeyRoles::Each(&[kf::RO])).summary("Determines whether a member belongs to a set.")),
        s(cmd("smismember", -3, READONLY | FAST, keys(1, 1, 1), smismember).summary("Determines whether multiple members belong to a set.")),
        s(cmd("scard", 2, READONLY | FAST, keys(1, 1, 1), scard).key_roles(KeyRoles::Each(&[kf::RO])).summary("Returns the number of members in a set.")),
        s(cmd("spop", -2, WRITE | FAST, keys(1, 1, 1), spop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.")),
        s(cmd("srandmember", -2, READONLY, keys(1, 1, 1), srandmember).summary("Get one or multiple random members from a set")),
        s(cmd("smove", 4, WRITE | FAST, keys(1, 2, 1), smove).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::RW | kf::INSERT])).summary("Moves a member from one set to another.")),
        s(cmd("sinter", -2, READONLY, keys(1, -1, 1), sinter).summary("Returns the intersect of multiple sets.")),
        s(cmd("sintercard", -3, READONLY, Keys::Custom(numkeys_positions), sintercard).summary("Returns the number of members of the intersect of multiple sets.")),
        s(cmd("sinterstore", -3, WRITE | DENYOOM, keys(1, -1, 1), sinterstore).key_roles(KeyRoles::Each(&[kf::RW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores the intersect of multiple sets in a key.")),
        s(cmd("sunion", -2, READONLY, keys(1, -1, 1), sunion).summary("Returns the union of multiple sets.")),
        s(cmd("sunionstore", -3, WRITE | DENYOOM, keys(1, -1, 1), sunionstore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores the union of multiple sets in a key.")),
        s(cmd("sdiff", -2, READONLY, keys(1, -1, 1), sdiff).summary("Returns the difference of multiple sets.")),
        s(cmd("sdiffstore", -3, WRITE | DENYOOM, keys(1, -1, 1), sdiffstore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores the difference of multiple sets in a key.")),
        s(cmd("sscan", -3, READONLY, keys(1, 1, 1), sscan).summary("Iterates over members of a set.")),
    ]
}

/// `CMD numkeys key [key …] …`: keys at 2 .. 2+numkeys.
pub fn numkeys_positions(argv: &[Bytes]) -> Vec<usize> {
    match argv.get(1).and_then(|n| num::parse_i64(n)) {
        Some(n) if n > 0 && (n as usize) <= argv.len().saturating_sub(2) => {
            (2..2 + n as usize).collect()
        }
        _ => Vec::new(),
    }
}

// ---- storage helpers -------------------------------------------------------------

fn read_set<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c SetValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Set(s),
            ..
        }) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn write_set<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c mut SetValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.get_mut(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Set(s),
            ..
        }) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// Removes `key` if its set was emptied, with Redis's `del` event.
fn drop_if_empty(ctx: &mut Ctx<'_>, key: &[u8]) {
    let db = ctx.db();
    let now = ctx.now;
    if let Some(Entry {
        value: Value::Set(s),
        ..
    }) = ctx.ks.get(db, key, now)
    {
        if s.is_empty() {
            ctx.ks.remove(db, key);
            ctx.notify(notify::GENERIC, "del", key);
        }
    }
}

fn limits(ctx: &Ctx<'_>) -> SetLimits {
    SetLimits::from_config(&ctx.store.config)
}

fn bulk(m: Cow<'_, [u8]>) -> Reply {
    Reply::Bulk(member_bytes(m))
}

// ---- commands --------------------------------------------------------------------

fn sadd(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let lim = limits(ctx);
    let db = ctx.db();
    let set = match write_set(ctx, key)? {
        Some(s) => s,
        None => {
            // Redis's setTypeCreate: the encoding is chosen from the first member
            // and the number of members about to be added.
            let n = members.len();
            let fresh = if num::parse_i64(&members[0]).is_some() && n <= lim.max_intset {
                SetValue::default()
            } else if n <= lim.max_listpack_entries {
                SetValue::Pack(Default::default())
            } else {
                SetValue::Map(Default::default())
            };
            ctx.ks.insert(
                db,
                Bytes::copy_from_slice(key),
                Entry::new(Value::Set(fresh)),
            );
            write_set(ctx, key)?.expect("just inserted")
        }
    };
    let mut added = 0;
    for m in members {
        if set.add(m, lim) {
            added += 1;
        }
    }
    if added > 0 {
        ctx.dirty(added as u64);
        ctx.notify(notify::SET, "sadd", key);
    }
    Ok(Reply::Int(added))
}

fn srem(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let Some(set) = write_set(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let mut removed = 0;
    for m in members {
        if set.remove(m) {
            removed += 1;
            if set.is_empty() {
                break;
            }
        }
    }
    if removed > 0 {
        ctx.dirty(removed as u64);
        ctx.notify(notify::SET, "srem", key);
        drop_if_empty(ctx, key);
    }
    Ok(Reply::Int(removed))
}

fn smembers(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Set(match read_set(ctx, key)? {
        Some(s) => s.iter().map(bulk).collect(),
        None => Vec::new(),
    }))
}

fn sismember(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let m = args.next_bytes()?;
    Ok(Reply::Int(
        read_set(ctx, key)?.is_some_and(|s| s.contains(m)) as i64,
    ))
}

fn smismember(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let s = read_set(ctx, key)?;
    Ok(Reply::Array(
        members
            .iter()
            .map(|m| Reply::Int(s.is_some_and(|s| s.contains(m)) as i64))
            .collect(),
    ))
}

fn scard(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Int(read_set(ctx, key)?.map_or(0, |s| s.len()) as i64))
}

fn spop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let count = match args.peek() {
        None => None,
        Some(a) => {
            args.next_bytes()?;
            args.finish()?;
            match num::parse_i64(a) {
                Some(n) if n >= 0 => Some(n as u64),
                _ => return Err(CmdError::err("value is out of range, must be positive")),
            }
        }
    };
    let mut rng = rand::thread_rng();
    let key_b = Bytes::copy_from_slice(key);
    let Some(set) = write_set(ctx, key)? else {
        return Ok(if count.is_some() {
            Reply::Set(Vec::new())
        } else {
            Reply::Null
        });
    };
    let Some(count) = count else {
        let m = set.pop_random(&mut rng).expect("sets are never empty");
        ctx.dirty(1);
        ctx.notify(notify::SET, "spop", key);
        ctx.propagate(vec![Bytes::from_static(b"SREM"), key_b, m.clone()]);
        drop_if_empty(ctx, key);
        return Ok(Reply::Bulk(m));
    };
    if count == 0 {
        return Ok(Reply::Set(Vec::new()));
    }
    let popped: Vec<Bytes> = if count as usize >= set.len() {
        let all: Vec<Bytes> = set.iter().map(member_bytes).collect();
        ctx.dirty(all.len() as u64);
        ctx.notify(notify::SET, "spop", key);
        let db = ctx.db();
        ctx.ks.remove(db, key);
        ctx.notify(notify::GENERIC, "del", key);
        ctx.propagate(vec![Bytes::from_static(b"DEL"), key_b]);
        all
    } else {
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            out.push(set.pop_random(&mut rng).expect("count < len"));
        }
        ctx.dirty(out.len() as u64);
        ctx.notify(notify::SET, "spop", key);
        // Random pops are logged as the removals they turned out to be.
        for chunk in out.chunks(1024) {
            let mut argv = Vec::with_capacity(chunk.len() + 2);
            argv.push(Bytes::from_static(b"SREM"));
            argv.push(key_b.clone());
            argv.extend(chunk.iter().cloned());
            ctx.propagate(argv);
        }
        out
    };
    Ok(Reply::Set(popped.into_iter().map(Reply::Bulk).collect()))
}

fn srandmember(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let mut rng = rand::thread_rng();
    if args.is_empty() {
        return Ok(match read_set(ctx, key)?.and_then(|s| s.random(&mut rng)) {
            Some(m) => bulk(m),
            None => Reply::Null,
        });
    }
    let l = args.next_i64()?;
    args.finish()?;
    if l == i64::MIN {
        return Err(CmdError::err(RANGE_LONG));
    }
    let Some(set) = read_set(ctx, key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let len = set.len();
    let out = if l < 0 {
        // Grown as filled: an absurd count must not be one giant allocation.
        let mut out = Vec::new();
        for _ in 0..l.unsigned_abs() {
            out.push(bulk(set.random(&mut rng).expect("non-empty")));
        }
        out
    } else if l as usize >= len {
        set.iter().map(bulk).collect()
    } else {
        let mut picked = rand::seq::index::sample(&mut rng, len, l as usize).into_vec();
        if matches!(set, SetValue::Pack(_)) {
            picked.sort_unstable();
            let mut next = picked.iter().peekable();
            let mut out = Vec::with_capacity(picked.len());
            for (i, m) in set.iter().enumerate() {
                if next.peek() == Some(&&i) {
                    next.next();
                    out.push(bulk(m));
                }
            }
            out
        } else {
            picked
                .into_iter()
                .map(|i| bulk(set.get_index(i).expect("in range")))
                .collect()
        }
    };
    Ok(Reply::Array(out))
}

fn smove(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let m = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    let src_has = match write_set(ctx, src)? {
        None => return Ok(Reply::Int(0)),
        Some(s) => s.contains(m),
    };
    write_set(ctx, dst)?;
    if src == dst {
        return Ok(Reply::Int(src_has as i64));
    }
    if !src_has {
        return Ok(Reply::Int(0));
    }
    write_set(ctx, src)?.expect("checked").remove(m);
    // Watchers of the destination are told only if the member was really added.
    ctx.own_touches();
    ctx.touch(db, src);
    ctx.notify(notify::SET, "srem", src);
    drop_if_empty(ctx, src);
    let lim = limits(ctx);
    if ctx.ks.get(db, dst, now).is_none() {
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(dst),
            Entry::new(Value::Set(SetValue::default())),
        );
    }
    if write_set(ctx, dst)?.expect("exists").add(m, lim) {
        ctx.touch(db, dst);
        ctx.notify(notify::SET, "sadd", dst);
    }
    ctx.dirty(1);
    Ok(Reply::Int(1))
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// Type-checks every key (expiring stale ones), then computes the operation over
/// shared borrows of all the sets. `limit` stops an intersection early (0 = none).
fn compute(
    ctx: &mut Ctx<'_>,
    keys: &[Bytes],
    op: Op,
    limit: usize,
) -> Result<Vec<Bytes>, CmdError> {
    for k in keys {
        read_set(ctx, k)?;
    }
    let db = ctx.db();
    let sets: Vec<Option<&SetValue>> = keys
        .iter()
        .map(|k| match ctx.ks.peek(db, k) {
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => Some(s),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    match op {
        Op::Inter => {
            if sets.iter().any(|s| s.is_none()) {
                return Ok(out);
            }
            let mut sets: Vec<&SetValue> = sets.into_iter().flatten().collect();
            sets.sort_by_key(|s| s.len());
            'outer: for m in sets[0].iter() {
                for other in &sets[1..] {
                    if !other.contains(&m) {
                        continue 'outer;
                    }
                }
                out.push(member_bytes(m));
                if limit != 0 && out.len() >= limit {
                    break;
                }
            }
        }
        Op::Union => {
            let mut seen: indexmap::IndexSet<Bytes, ahash::RandomState> = Default::default();
            for s in sets.into_iter().flatten() {
                for m in s.iter() {
                    if !seen.contains(&m[..]) {
                        seen.insert(member_bytes(m));
                    }
                }
            }
            out = seen.into_iter().collect();
        }
        Op::Diff => {
            let Some(first) = sets[0] else {
                return Ok(out);
            };
            let others: Vec<&SetValue> = sets[1..].iter().flatten().copied().collect();
            let mut seen: indexmap::IndexSet<Bytes, ahash::RandomState> = Default::default();
            for m in first.iter() {
                if others.iter().all(|o| !o.contains(&m)) && !seen.contains(&m[..]) {
                    seen.insert(member_bytes(m));
                }
            }
            out = seen.into_iter().collect();
        }
    }
    Ok(out)
}

fn algebra(ctx: &mut Ctx<'_>, args: &mut Args<'_>, op: Op) -> CmdResult {
    let keys = args.rest();
    let members = compute(ctx, keys, op, 0)?;
    Ok(Reply::Set(members.into_iter().map(Reply::Bulk).collect()))
}

fn algebra_store(ctx: &mut Ctx<'_>, args: &mut Args<'_>, op: Op, event: &'static str) -> CmdResult {
    let dst = args.next_bytes()?;
    let keys = args.rest();
    let members = compute(ctx, keys, op, 0)?;
    let db = ctx.db();
    let now = ctx.now;
    if members.is_empty() {
        if ctx.ks.get(db, dst, now).is_some() {
            ctx.ks.remove(db, dst);
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "del", dst);
        }
        return Ok(Reply::Int(0));
    }
    let lim = limits(ctx);
    let set = SetValue::from_members(members.iter().map(|m| &m[..]), lim);
    let n = set.len();
    ctx.ks
        .insert(db, Bytes::copy_from_slice(dst), Entry::new(Value::Set(set)));
    ctx.dirty(1);
    ctx.notify(notify::SET, event, dst);
    Ok(Reply::Int(n as i64))
}

fn sinter(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra(ctx, args, Op::Inter)
}

fn sunion(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra(ctx, args, Op::Union)
}

fn sdiff(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra(ctx, args, Op::Diff)
}

fn sinterstore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra_store(ctx, args, Op::Inter, "sinterstore")
}

fn sunionstore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra_store(ctx, args, Op::Union, "sunionstore")
}

fn sdiffstore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra_store(ctx, args, Op::Diff, "sdiffstore")
}

fn sintercard(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let numkeys_err = || CmdError::err("numkeys should be greater than 0");
    let n = num::parse_i64(args.next_bytes()?).ok_or_else(numkeys_err)?;
    if n <= 0 {
        return Err(numkeys_err());
    }
    if n as usize > args.remaining() {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let all = args.rest();
    let (keys, opts) = all.split_at(n as usize);
    let mut opts = Args::new(opts, 0);
    let mut limit = 0usize;
    while !opts.is_empty() {
        if opts.remaining() >= 2 && opts.flag("LIMIT") {
            match num::parse_i64(opts.next_bytes()?) {
                Some(l) if l >= 0 => limit = l as usize,
                _ => return Err(CmdError::err("LIMIT can't be negative")),
            }
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(Reply::Int(
        compute(ctx, keys, Op::Inter, limit)?.len() as i64
    ))
}

fn sscan(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let opts = parse_scan(args, false)?;
    let Some(s) = read_set(ctx, key)? else {
        return Ok(scan_reply(0, Vec::new()));
    };
    let mut items = Vec::new();
    let next = s.scan(opts.cursor, opts.count, |m| {
        if opts.matches(m) {
            items.push(Reply::Bulk(Bytes::copy_from_slice(m)));
        }
    });
    Ok(scan_reply(next, items))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::{Protocol, Reply};

    fn sorted(r: Reply) -> Vec<String> {
        let items = match r {
            Reply::Array(v) | Reply::Set(v) => v,
            other => panic!("{other:?}"),
        };
        let mut out: Vec<String> = items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(b) => String::from_utf8(b.to_vec()).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn basics() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["SADD", "s", "a", "b", "a", "1"]), int(3));
        assert_eq!(t.run(&["SADD", "s", "a"]), int(0));
        assert_eq!(t.run(&["SCARD", "s"]), int(3));
        assert_eq!(t.run(&["SISMEMBER", "s", "a"]), int(1));
        assert_eq!(t.run(&["SISMEMBER", "s", "z"]), int(0));
        assert_eq!(
            t.run(&["SMISMEMBER", "s", "a", "z", "1"]),
            Reply::Array(vec![int(1), int(0), int(1)])
        );
        assert_eq!(sorted(t.run(&["SMEMBERS", "s"])), vec!["1", "a", "b"]);
        assert_eq!(t.run(&["SREM", "s", "a", "z"]), int(1));
        assert_eq!(t.run(&["SREM", "s", "b", "1"]), int(2));
        assert_eq!(t.run(&["EXISTS", "s"]), int(0));
        assert_eq!(t.run(&["TYPE", "nokey"]), Reply::Status("none"));
        t.run(&["SET", "str", "x"]);
        let wt = err("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert_eq!(t.run(&["SADD", "str", "a"]), wt);
        assert_eq!(t.run(&["SINTER", "str"]), wt);
        assert_eq!(t.run(&["SMEMBERS", "str"]), wt);
        t.run(&["SADD", "s", "x"]);
        assert_eq!(t.run(&["TYPE", "s"]), Reply::Status("set"));
        t.set_proto(Protocol::Resp3);
        assert_eq!(t.resp(&["SMEMBERS", "s"]), "~1\r\n$1\r\nx\r\n");
        assert_eq!(t.resp(&["SMEMBERS", "nokey"]), "~0\r\n");
    }

    #[test]
    fn spop_srandmember() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["SPOP", "nokey"]), Reply::Null);
        assert_eq!(t.run(&["SPOP", "nokey", "3"]), Reply::Set(vec![]));
        assert_eq!(t.run(&["SRANDMEMBER", "nokey"]), Reply::Null);
        assert_eq!(t.run(&["SRANDMEMBER", "nokey", "3"]), Reply::Array(vec![]));
        t.run(&["SADD", "s", "1", "2", "3", "4", "5"]);
        assert_eq!(
            t.run(&["SPOP", "s", "-1"]),
            err("ERR value is out of range, must be positive")
        );
        assert_eq!(t.run(&["SPOP", "s", "1", "2"]), err("ERR syntax error"));
        assert_eq!(sorted(t.run(&["SRANDMEMBER", "s", "10"])).len(), 5);
        assert_eq!(sorted(t.run(&["SRANDMEMBER", "s", "-10"])).len(), 10);
        let three = sorted(t.run(&["SRANDMEMBER", "s", "3"]));
        assert_eq!(three.len(), 3);
        assert!(three.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(sorted(t.run(&["SPOP", "s", "2"])).len(), 2);
        assert_eq!(t.run(&["SCARD", "s"]), int(3));
        assert!(matches!(t.run(&["SPOP", "s"]), Reply::Bulk(_)));
        assert_eq!(sorted(t.run(&["SPOP", "s", "10"])).len(), 2);
        assert_eq!(t.run(&["EXISTS", "s"]), int(0));
        assert_eq!(
            t.run(&["SRANDMEMBER", "s", "-9223372036854775808"]),
            err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
        );
    }

    #[test]
    fn smove() {
        let mut t = TestClient::new();
        t.run(&["SADD", "a", "x", "y"]);
        t.run(&["SET", "str", "v"]);
        let wt = err("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert_eq!(t.run(&["SMOVE", "a", "str", "x"]), wt);
        assert_eq!(t.run(&["SMOVE", "str", "a", "x"]), wt);
        assert_eq!(t.run(&["SMOVE", "nokey", "a", "x"]), int(0));
        assert_eq!(t.run(&["SMOVE", "a", "b", "zz"]), int(0));
        assert_eq!(t.run(&["SMOVE", "a", "a", "x"]), int(1));
        assert_eq!(t.run(&["SMOVE", "a", "b", "x"]), int(1));
        assert_eq!(t.run(&["SMOVE", "a", "b", "y"]), int(1));
        assert_eq!(t.run(&["EXISTS", "a"]), int(0));
        assert_eq!(sorted(t.run(&["SMEMBERS", "b"])), vec!["x", "y"]);
        // A move into a set that already has the member leaves its watchers alone.
        t.run(&["SADD", "src", "x"]);
        let mut other = t.other();
        assert_eq!(t.run(&["WATCH", "b"]), ok());
        assert_eq!(other.run(&["SMOVE", "src", "b", "x"]), int(1));
        t.run(&["MULTI"]);
        t.run(&["SCARD", "b"]);
        assert_eq!(t.run(&["EXEC"]), Reply::Array(vec![int(2)]));
        t.run(&["SADD", "src", "z"]);
        assert_eq!(t.run(&["WATCH", "b"]), ok());
        assert_eq!(other.run(&["SMOVE", "src", "b", "z"]), int(1));
        t.run(&["MULTI"]);
        t.run(&["SCARD", "b"]);
        assert_eq!(t.run(&["EXEC"]), Reply::NullArray);
    }

    #[test]
    fn algebra() {
        let mut t = TestClient::new();
        t.run(&["SADD", "a", "1", "2", "3", "x"]);
        t.run(&["SADD", "b", "2", "3", "4", "x"]);
        t.run(&["SADD", "c", "3", "x", "9"]);
        assert_eq!(sorted(t.run(&["SINTER", "a", "b", "c"])), vec!["3", "x"]);
        assert_eq!(
            sorted(t.run(&["SINTER", "a", "nokey"])),
            Vec::<String>::new()
        );
        assert_eq!(
            sorted(t.run(&["SUNION", "a", "nokey", "c"])),
            vec!["1", "2", "3", "9", "x"]
        );
        assert_eq!(sorted(t.run(&["SDIFF", "a", "b"])), vec!["1"]);
        assert_eq!(
            sorted(t.run(&["SDIFF", "nokey", "b"])),
            Vec::<String>::new()
        );
        assert_eq!(t.run(&["SINTERSTORE", "d", "a", "b"]), int(3));
        assert_eq!(sorted(t.run(&["SMEMBERS", "d"])), vec!["2", "3", "x"]);
        assert_eq!(t.run(&["SUNIONSTORE", "d", "d", "c"]), int(4));
        assert_eq!(t.run(&["SDIFFSTORE", "d", "a", "a"]), int(0));
        assert_eq!(t.run(&["EXISTS", "d"]), int(0));
        assert_eq!(t.run(&["SINTERCARD", "2", "a", "b"]), int(3));
        assert_eq!(t.run(&["SINTERCARD", "2", "a", "b", "LIMIT", "2"]), int(2));
        assert_eq!(t.run(&["SINTERCARD", "2", "a", "b", "LIMIT", "0"]), int(3));
        assert_eq!(
            t.run(&["SINTERCARD", "0", "a"]),
            err("ERR numkeys should be greater than 0")
        );
        assert_eq!(
            t.run(&["SINTERCARD", "3", "a", "b"]),
            err("ERR Number of keys can't be greater than number of args")
        );
        assert_eq!(
            t.run(&["SINTERCARD", "2", "a", "b", "LIMIT", "-1"]),
            err("ERR LIMIT can't be negative")
        );
        assert_eq!(
            t.run(&["SINTERCARD", "2", "a", "b", "FOO", "1"]),
            err("ERR syntax error")
        );
        t.run(&["SET", "str", "v"]);
        assert_eq!(
            t.run(&["SINTERSTORE", "str2", "a", "str"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        // The destination may hold anything: it is replaced.
        assert_eq!(t.run(&["SUNIONSTORE", "str", "a"]), int(4));
        assert_eq!(t.run(&["TYPE", "str"]), Reply::Status("set"));
    }

    #[test]
    fn sscan_and_encodings() {
        let mut t = TestClient::new();
        for i in 0..200 {
            t.run(&["SADD", "s", &i.to_string()]);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        for _ in 0..1000 {
            let Reply::Array(r) = t.run(&["SSCAN", "s", &cursor, "COUNT", "13"]) else {
                panic!()
            };
            let Reply::Bulk(c) = &r[0] else { panic!() };
            cursor = String::from_utf8(c.to_vec()).unwrap();
            for m in sorted(r[1].clone()) {
                seen.insert(m);
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 200);
        let enc = |t: &mut TestClient, k: &str| {
            let db = t.client.db;
            let mut ks = t.store.keyspace.lock_keys([k.as_bytes()]);
            ks.get(db, k.as_bytes(), 0).unwrap().value.encoding()
        };
        assert_eq!(enc(&mut t, "s"), "intset");
        t.run(&["SADD", "s2", "a", "1"]);
        assert_eq!(enc(&mut t, "s2"), "listpack");
        t.run(&["CONFIG", "SET", "set-max-intset-entries", "100"]);
        t.run(&["SADD", "s", "1000"]);
        assert_eq!(enc(&mut t, "s"), "hashtable");
    }

    /// Records keyevent notifications through the pub/sub bridge.
    struct Recorder(parking_lot::Mutex<Vec<String>>);

    impl crate::pubsub::PublishBridge for Recorder {
        fn on_publish(&self, channel: &[u8], message: &[u8]) -> usize {
            let ch = String::from_utf8_lossy(channel);
            if let Some(ev) = ch.strip_prefix("__keyevent@0__:") {
                self.0
                    .lock()
                    .push(format!("{ev} {}", String::from_utf8_lossy(message)));
            }
            0
        }
    }

    #[test]
    fn keyspace_events_of_hashes_sets_sort_hll() {
        let mut t = TestClient::new();
        let rec = std::sync::Arc::new(Recorder(Default::default()));
        t.store.pubsub.set_bridge(rec.clone());
        assert_eq!(
            t.run(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]),
            ok()
        );
        t.run(&["HSET", "h", "a", "1", "b", "2"]);
        t.run(&["HINCRBY", "h", "a", "1"]);
        t.run(&["HINCRBYFLOAT", "h", "a", "1.5"]);
        t.run(&["HDEL", "h", "zz"]);
        t.run(&["HDEL", "h", "a", "b"]);
        t.run(&["SADD", "s", "x", "y"]);
        t.run(&["SADD", "s", "x"]);
        t.run(&["SREM", "s", "x"]);
        t.run(&["SMOVE", "s", "d", "y"]);
        t.run(&["SADD", "s", "1"]);
        t.run(&["SPOP", "s"]);
        t.run(&["SINTERSTORE", "i", "d", "d"]);
        t.run(&["SUNIONSTORE", "u", "d"]);
        t.run(&["SDIFFSTORE", "u", "d", "d"]);
        t.run(&["SORT", "d", "ALPHA", "STORE", "l"]);
        t.run(&["PFADD", "p", "a"]);
        let got = rec.0.lock().clone();
        let want = [
            "hset h",
            "hincrby h",
            "hincrbyfloat h",
            "hdel h",
            "del h",
            "sadd s",
            "srem s",
            "srem s",
            "del s",
            "sadd d",
            "sadd s",
            "spop s",
            "del s",
            "sinterstore i",
            "sunionstore u",
            "del u",
            "sortstore l",
            "pfadd p",
        ];
        assert_eq!(got, want);
    }

    struct Log(parking_lot::Mutex<Vec<String>>);

    impl crate::WriteLog for Log {
        fn append(&self, cmds: &[(usize, Vec<bytes::Bytes>)]) -> u64 {
            let mut l = self.0.lock();
            for (_, argv) in cmds {
                let words: Vec<String> = argv
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                l.push(words.join(" "));
            }
            0
        }
    }

    #[test]
    fn propagation_of_random_and_float_commands() {
        let mut t = TestClient::new();
        let log = std::sync::Arc::new(Log(Default::default()));
        t.store.set_write_log(log.clone());
        t.run(&["SADD", "s", "only"]);
        t.run(&["SPOP", "s"]);
        t.run(&["SADD", "s", "a", "b", "c"]);
        t.run(&["SPOP", "s", "5"]);
        t.run(&["HINCRBYFLOAT", "h", "f", "1.5"]);
        t.run(&["SREM", "nokey", "x"]);
        t.run(&["SINTERSTORE", "d", "nokey"]);
        let got = log.0.lock().clone();
        assert_eq!(
            got,
            vec![
                "SADD s only",
                "SREM s only",
                "SADD s a b c",
                "DEL s",
                "HSET h f 1.5",
            ]
        );
        t.run(&["SADD", "s", "1", "2", "3"]);
        t.run(&["SPOP", "s", "2"]);
        let last = log.0.lock().last().unwrap().clone();
        assert!(
            last.starts_with("SREM s ") && last.split(' ').count() == 4,
            "{last}"
        );
    }
}
