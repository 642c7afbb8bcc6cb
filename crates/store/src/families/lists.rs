//! List commands (Redis's `t_list.c`): pushes and pops at both ends, index and range
//! access, LPOS/LREM/LINSERT/LTRIM, moves between lists, and the blocking pops
//! (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP) built on `Ctx::block`.

use bytes::Bytes;
use tidewire_resp::{BulkArray, Reply};

use crate::args::Args;
use crate::blocking::parse_timeout;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, Keys};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::num;
use crate::types::list::ListValue;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let l = |c: CommandSpec| c.group("list");
    vec![
        l(cmd("lpush", -3, WRITE | DENYOOM | FAST, keys(1, 1, 1), lpush).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Prepends one or more elements to a list. Creates the key if it doesn't exist.")),
        l(cmd("rpush", -3, WRITE | DENYOOM | FAST, keys(1, 1, 1), rpush).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Appends one or more elements to a list. Creates the key if it doesn't exist.")),
        l(cmd("lpushx", -3, WRITE | DENYOOM | FAST, keys(1, 1, 1), lpushx).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Prepends one or more elements to a list only when the list exists.")),
        l(cmd("rpushx", -3, WRITE | DENYOOM | FAST, keys(1, 1, 1), rpushx).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Appends an element to a list only when the list exists.")),
        l(cmd("lpop", -2, WRITE | FAST, keys(1, 1, 1), lpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns the first elements in a list after removing it. Deletes the list if the last element was popped.")),
        l(cmd("rpop", -2, WRITE | FAST, keys(1, 1, 1), rpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns and removes the last elements of a list. Deletes the list if the last element was popped.")),
        l(cmd("llen", 2, READONLY | FAST, keys(1, 1, 1), llen).key_roles(KeyRoles::Each(&[kf::RO])).summary("Returns the length of a list.")),
        l(cmd("lrange", 4, READONLY, keys(1, 1, 1), lrange).summary("Returns a range of elements from a list.")),
        l(cmd("lindex", 3, READONLY, keys(1, 1, 1), lindex).summary("Returns an element from a list by its index.")),
        l(cmd("lset", 4, WRITE | DENYOOM, keys(1, 1, 1), lset).summary("Sets the value of an element in a list by its index.")),
        l(cmd("linsert", 5, WRITE | DENYOOM, keys(1, 1, 1), linsert).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Inserts an element before or after another element in a list.")),
        l(cmd("lrem", 4, WRITE, keys(1, 1, 1), lrem).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes elements from a list. Deletes the list if the last element was removed.")),
        l(cmd("ltrim", 4, WRITE, keys(1, 1, 1), ltrim).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes elements from both ends a list. Deletes the list if all elements were trimmed.")),
        l(cmd("lpos", -3, READONLY, keys(1, 1, 1), lpos).summary("Returns the index of matching elements in a list.")),
        l(cmd("lmove", 5, WRITE | DENYOOM, keys(1, 2, 1), lmove).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::RW | kf::INSERT])).summary("Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.")),
        l(cmd("rpoplpush", 3, WRITE | DENYOOM, keys(1, 2, 1), rpoplpush).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::RW | kf::INSERT])).summary("Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.")),
        l(cmd("lmpop", -4, WRITE, Keys::Custom(lmpop_keys), lmpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.")),
        l(cmd("blpop", -3, WRITE | BLOCKING, keys(1, -2, 1), blpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.")),
        l(cmd("brpop", -3, WRITE | BLOCKING, keys(1, -2, 1), brpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.")),
        l(cmd("blmove", 6, WRITE | DENYOOM | BLOCKING, keys(1, 2, 1), blmove).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::RW | kf::INSERT])).summary("Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.")),
        l(cmd("brpoplpush", 4, WRITE | DENYOOM | BLOCKING, keys(1, 2, 1), brpoplpush).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::RW | kf::INSERT])).summary("Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.")),
        l(cmd("blmpop", -5, WRITE | BLOCKING, Keys::Custom(blmpop_keys), blmpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.")),
    ]
}

/// Keys of a `numkeys key…` form whose numkeys argument sits at `at`.
pub fn numkeys_positions(argv: &[Bytes], at: usize) -> Vec<usize> {
    let Some(n) = argv.get(at).and_then(|a| num::parse_i64(a)) else {
        return Vec::new();
    };
    if n <= 0 || (n as u64) > (argv.len() as u64) {
        return Vec::new();
    }
    (at + 1..(at + 1 + n as usize).min(argv.len())).collect()
}

fn lmpop_keys(argv: &[Bytes]) -> Vec<usize> {
    numkeys_positions(argv, 1)
}

fn blmpop_keys(argv: &[Bytes]) -> Vec<usize> {
    numkeys_positions(argv, 2)
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn list_limit(ctx: &Ctx<'_>) -> i64 {
    ctx.store
        .config
        .encoding
        .get(crate::config::Limit::ListMaxListpackSize)
}

/// The list at `key` for writing: `Ok(None)` if absent, WRONGTYPE if not a list.
fn list_mut<'a>(ctx: &'a mut Ctx<'_>, key: &[u8]) -> Result<Option<&'a mut ListValue>, CmdError> {
    let (db, now) = (ctx.db(), ctx.now);
    match ctx.ks.get_mut(db, key, now) {
        None => Ok(None),
        Some(Entry {
            value: Value::List(l),
            ..
        }) => Ok(Some(&mut **l)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The list at `key` for reading (counts hits and misses).
fn list_read<'a>(ctx: &'a mut Ctx<'_>, key: &[u8]) -> Result<Option<&'a ListValue>, CmdError> {
    let (db, now) = (ctx.db(), ctx.now);
    match ctx.ks.lookup_read(db, key, now) {
        None => Ok(None),
        Some(Entry {
            value: Value::List(l),
            ..
        }) => Ok(Some(&**l)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// Pushes `elems` onto `key` (creating it unless `only_existing`); returns the new
/// length, 0 when `only_existing` and absent.
pub fn push_elems(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    elems: &[Bytes],
    front: bool,
    only_existing: bool,
) -> Result<usize, CmdError> {
    let limit = list_limit(ctx);
    let len = match list_mut(ctx, key)? {
        Some(l) => {
            for e in elems {
                let e = Bytes::copy_from_slice(e);
                if front {
                    l.push_front(e)
                } else {
                    l.push_back(e)
                }
            }
            l.update_encoding(limit);
            l.len()
        }
        None if only_existing => return Ok(0),
        None => {
            let mut l = ListValue::new();
            for e in elems {
                let e = Bytes::copy_from_slice(e);
                if front {
                    l.push_front(e)
                } else {
                    l.push_back(e)
                }
            }
            l.update_encoding(limit);
            let n = l.len();
            let db = ctx.db();
            ctx.ks.insert(
                db,
                Bytes::copy_from_slice(key),
                Entry::new(Value::List(Box::new(l))),
            );
            n
        }
    };
    ctx.dirty(elems.len() as u64);
    ctx.notify(notify::LIST, if front { "lpush" } else { "rpush" }, key);
    ctx.signal_ready(key);
    Ok(len)
}

fn push_cmd(ctx: &mut Ctx<'_>, args: &mut Args<'_>, front: bool, only_existing: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let elems = args.rest();
    Ok(Reply::Int(
        push_elems(ctx, key, elems, front, only_existing)? as i64,
    ))
}

fn lpush(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    push_cmd(ctx, args, true, false)
}

fn rpush(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    push_cmd(ctx, args, false, false)
}

fn lpushx(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    push_cmd(ctx, args, true, true)
}

fn rpushx(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    push_cmd(ctx, args, false, true)
}

/// Pops up to `count` elements from one end; `Ok(None)` if the key is absent.
/// Raises the pop event and deletes the key when emptied.
pub fn pop_elems(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    front: bool,
    count: usize,
) -> Result<Option<Vec<Bytes>>, CmdError> {
    let limit = list_limit(ctx);
    let Some(l) = list_mut(ctx, key)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(count.min(l.len()));
    for _ in 0..count {
        match if front { l.pop_front() } else { l.pop_back() } {
            Some(v) => out.push(v),
            None => break,
        }
    }
    l.update_encoding(limit);
    if !out.is_empty() {
        ctx.dirty(out.len() as u64);
        ctx.notify(notify::LIST, if front { "lpop" } else { "rpop" }, key);
        ctx.remove_if_empty(key);
    }
    Ok(Some(out))
}

/// A count argument that must be >= 0 (LPOP's, with Redis's message).
fn positive_count(arg: &[u8], msg: &str) -> Result<i64, CmdError> {
    match num::parse_i64(arg) {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(CmdError::err(msg)),
    }
}

fn pop_cmd(ctx: &mut Ctx<'_>, args: &mut Args<'_>, front: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let count = match args.peek() {
        Some(_) => Some(positive_count(
            args.next_bytes()?,
            "value is out of range, must be positive",
        )?),
        None => None,
    };
    if !args.is_empty() {
        return Err(CmdError::WrongArity(ctx.cmd.full_name.clone()));
    }
    match count {
        None => Ok(match pop_elems(ctx, key, front, 1)? {
            Some(mut v) => v.pop().map_or(Reply::Null, Reply::Bulk),
            None => Reply::Null,
        }),
        Some(n) => {
            if list_mut(ctx, key)?.is_none() {
                return Ok(Reply::NullArray);
            }
            let v = pop_elems(ctx, key, front, n as usize)?.unwrap_or_default();
            Ok(Reply::Array(v.into_iter().map(Reply::Bulk).collect()))
        }
    }
}

fn lpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    pop_cmd(ctx, args, true)
}

fn rpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    pop_cmd(ctx, args, false)
}

fn llen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Int(
        list_read(ctx, key)?.map_or(0, |l| l.len()) as i64
    ))
}

/// Redis's start/end normalisation for LRANGE and LTRIM: `None` for an empty range.
fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        return None;
    }
    if end >= len {
        end = len - 1;
    }
    Some((start as usize, end as usize))
}

fn lrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let start = args.next_i64()?;
    let end = args.next_i64()?;
    let Some(l) = list_read(ctx, key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let Some((s, e)) = clamp_range(start, end, l.len()) else {
        return Ok(Reply::Array(Vec::new()));
    };
    // Straight to wire form, sized in one cheap pass over the element lengths.
    let payload = l.range(s, e).map(|v| v.len()).sum();
    let mut list = BulkArray::with_capacity(e + 1 - s, payload);
    l.range(s, e).for_each(|v| list.push(v));
    Ok(Reply::Bulks(list))
}

fn index_of(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 { len as i64 + index } else { index };
    (i >= 0 && i < len as i64).then_some(i as usize)
}

fn lindex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let index = args.next_i64()?;
    let Some(l) = list_read(ctx, key)? else {
        return Ok(Reply::Null);
    };
    Ok(index_of(index, l.len())
        .and_then(|i| l.get(i))
        .map_or(Reply::Null, |v| Reply::Bulk(v.clone())))
}

fn lset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let index = args.next_i64()?;
    let value = args.next_owned()?;
    let limit = list_limit(ctx);
    let l = list_mut(ctx, key)?.ok_or(CmdError::NoSuchKey)?;
    let i = index_of(index, l.len()).ok_or(CmdError::IndexOutOfRange)?;
    l.set(i, value);
    l.update_encoding(limit);
    ctx.dirty(1);
    ctx.notify(notify::LIST, "lset", key);
    Ok(Reply::ok())
}

fn linsert(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let after = match args.next_upper()?.as_str() {
        "BEFORE" => false,
        "AFTER" => true,
        _ => return Err(CmdError::Syntax),
    };
    let pivot = args.next_bytes()?;
    let value = args.next_owned()?;
    let limit = list_limit(ctx);
    let Some(l) = list_mut(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let Some(pos) = l.iter().position(|v| v == pivot) else {
        return Ok(Reply::Int(-1));
    };
    l.insert(if after { pos + 1 } else { pos }, value);
    l.update_encoding(limit);
    let len = l.len();
    ctx.dirty(1);
    ctx.notify(notify::LIST, "linsert", key);
    Ok(Reply::Int(len as i64))
}

fn lrem(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let count = args.next_i64()?;
    let value = args.next_bytes()?;
    let limit = list_limit(ctx);
    let Some(l) = list_mut(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let removed = l.remove_matching(value, count.unsigned_abs() as usize, count >= 0);
    l.update_encoding(limit);
    if removed > 0 {
        ctx.dirty(removed as u64);
        ctx.notify(notify::LIST, "lrem", key);
        ctx.remove_if_empty(key);
    }
    Ok(Reply::Int(removed as i64))
}

fn ltrim(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let start = args.next_i64()?;
    let end = args.next_i64()?;
    let limit = list_limit(ctx);
    let Some(l) = list_mut(ctx, key)? else {
        return Ok(Reply::ok());
    };
    let before = l.len();
    match clamp_range(start, end, before) {
        Some((s, e)) => l.trim(s, e),
        None => l.trim(1, 0),
    }
    l.update_encoding(limit);
    let removed = before - l.len();
    ctx.dirty(removed as u64);
    ctx.notify(notify::LIST, "ltrim", key);
    ctx.remove_if_empty(key);
    Ok(Reply::ok())
}

fn lpos(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let elem = args.next_bytes()?;
    let (mut rank, mut count, mut maxlen) = (1i64, None::<i64>, 0i64);
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        let more = !args.is_empty();
        if opt.eq_ignore_ascii_case(b"RANK") && more {
            let v = args.next_bytes()?;
            rank = match num::parse_i64(v) {
                None => return Err(CmdError::NotInteger),
                Some(i64::MIN) => {
                    return Err(CmdError::err(
                        "value is out of range, value must between -9223372036854775807 and 9223372036854775807",
                    ))
                }
                Some(0) => {
                    return Err(CmdError::err(
                        "RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    ))
                }
                Some(n) => n,
            };
        } else if opt.eq_ignore_ascii_case(b"COUNT") && more {
            count = Some(positive_count(
                args.next_bytes()?,
                "COUNT can't be negative",
            )?);
        } else if opt.eq_ignore_ascii_case(b"MAXLEN") && more {
            maxlen = positive_count(args.next_bytes()?, "MAXLEN can't be negative")?;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let Some(l) = list_read(ctx, key)? else {
        return Ok(if count.is_some() {
            Reply::Array(Vec::new())
        } else {
            Reply::Null
        });
    };
    let want = match count {
        Some(0) => usize::MAX,
        Some(n) => n as usize,
        None => 1,
    };
    let len = l.len();
    let scan = if maxlen == 0 {
        len
    } else {
        (maxlen as usize).min(len)
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    let mut check = |i: usize, v: &Bytes| -> bool {
        if v == elem {
            if skip > 0 {
                skip -= 1;
            } else {
                found.push(Reply::Int(i as i64));
                if found.len() >= want {
                    return true;
                }
            }
        }
        false
    };
    if rank > 0 {
        for (i, v) in l.iter().enumerate().take(scan) {
            if check(i, v) {
                break;
            }
        }
    } else {
        for (j, v) in l.iter().rev().enumerate().take(scan) {
            if check(len - 1 - j, v) {
                break;
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found),
        None => found.pop().unwrap_or(Reply::Null),
    })
}

fn parse_side(arg: &[u8]) -> Result<bool, CmdError> {
    if arg.eq_ignore_ascii_case(b"LEFT") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"RIGHT") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

/// LMOVE's work: `Ok(None)` when the source is absent. The destination's type is
/// checked before anything changes.
fn move_elem(
    ctx: &mut Ctx<'_>,
    src: &[u8],
    dst: &[u8],
    from_left: bool,
    to_left: bool,
) -> Result<Option<Bytes>, CmdError> {
    if list_mut(ctx, src)?.is_none() {
        return Ok(None);
    }
    list_mut(ctx, dst)?;
    let limit = list_limit(ctx);
    let Some(l) = list_mut(ctx, src)? else {
        return Ok(None);
    };
    let Some(v) = (if from_left {
        l.pop_front()
    } else {
        l.pop_back()
    }) else {
        return Ok(None);
    };
    l.update_encoding(limit);
    push_elems(ctx, dst, std::slice::from_ref(&v), to_left, false)?;
    // push_elems counted one change; the pop is part of the same move.
    ctx.notify(notify::LIST, if from_left { "lpop" } else { "rpop" }, src);
    ctx.remove_if_empty(src);
    Ok(Some(v))
}

fn lmove(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let from = parse_side(args.next_bytes()?)?;
    let to = parse_side(args.next_bytes()?)?;
    Ok(move_elem(ctx, src, dst, from, to)?.into())
}

fn rpoplpush(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    Ok(move_elem(ctx, src, dst, false, true)?.into())
}

/// numkeys parsing shared by LMPOP/ZMPOP: Redis's message for anything but n > 0.
pub fn parse_numkeys(arg: &[u8], msg: &str) -> Result<usize, CmdError> {
    match num::parse_i64(arg) {
        Some(n) if n > 0 => Ok(n as usize),
        _ => Err(CmdError::err(msg)),
    }
}

/// Parsed `numkeys key… LEFT|RIGHT [COUNT n]`.
struct MpopArgs<'a> {
    keys: &'a [Bytes],
    front: bool,
    count: usize,
}

fn parse_mpop<'a>(args: &mut Args<'a>) -> Result<MpopArgs<'a>, CmdError> {
    let numkeys = parse_numkeys(args.next_bytes()?, "numkeys should be greater than 0")?;
    let rest = args.rest();
    if rest.len() < numkeys + 1 {
        return Err(CmdError::Syntax);
    }
    let (keys, opts) = rest.split_at(numkeys);
    let front = parse_side(&opts[0])?;
    let mut count = None;
    let mut i = 1;
    while i < opts.len() {
        if count.is_none() && opts[i].eq_ignore_ascii_case(b"COUNT") && i + 1 < opts.len() {
            count = Some(match num::parse_i64(&opts[i + 1]) {
                Some(n) if n >= 1 => n as usize,
                _ => return Err(CmdError::err("count should be greater than 0")),
            });
            i += 2;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(MpopArgs {
        keys,
        front,
        count: count.unwrap_or(1),
    })
}

/// Serves an LMPOP/BLMPOP from the first non-empty list, propagating the pop.
fn serve_mpop(ctx: &mut Ctx<'_>, m: &MpopArgs<'_>) -> Result<Option<Reply>, CmdError> {
    for key in m.keys {
        if let Some(v) = pop_elems(ctx, key, m.front, m.count)? {
            let n = v.len();
            ctx.propagate(vec![
                b(if m.front { "LPOP" } else { "RPOP" }),
                key.clone(),
                num::i64_to_bytes(n as i64),
            ]);
            return Ok(Some(Reply::Array(vec![
                Reply::Bulk(key.clone()),
                Reply::Array(v.into_iter().map(Reply::Bulk).collect()),
            ])));
        }
    }
    Ok(None)
}

fn lmpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let m = parse_mpop(args)?;
    Ok(serve_mpop(ctx, &m)?.unwrap_or(Reply::NullArray))
}

fn owned(keys: &[Bytes]) -> Vec<Bytes> {
    keys.iter().map(|k| Bytes::copy_from_slice(k)).collect()
}

fn bpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>, front: bool) -> CmdResult {
    let all = args.rest();
    let (keys, timeout) = all.split_at(all.len() - 1);
    let timeout = parse_timeout(&timeout[0])?;
    for key in keys {
        if let Some(mut v) = pop_elems(ctx, key, front, 1)? {
            if let Some(v) = v.pop() {
                ctx.propagate(vec![b(if front { "LPOP" } else { "RPOP" }), key.clone()]);
                return Ok(Reply::Array(vec![Reply::Bulk(key.clone()), Reply::Bulk(v)]));
            }
        }
    }
    if ctx.no_block {
        return Ok(Reply::NullArray);
    }
    Ok(ctx.block(owned(keys), timeout, Reply::NullArray))
}

fn blpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    bpop(ctx, args, true)
}

fn brpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    bpop(ctx, args, false)
}

fn bmove(
    ctx: &mut Ctx<'_>,
    src: &Bytes,
    dst: &Bytes,
    from: bool,
    to: bool,
    timeout: &[u8],
) -> CmdResult {
    let timeout = parse_timeout(timeout)?;
    if let Some(v) = move_elem(ctx, src, dst, from, to)? {
        let plain = if ctx.argv[0].eq_ignore_ascii_case(b"brpoplpush") {
            vec![b("RPOPLPUSH"), src.clone(), dst.clone()]
        } else {
            vec![
                b("LMOVE"),
                src.clone(),
                dst.clone(),
                b(if from { "LEFT" } else { "RIGHT" }),
                b(if to { "LEFT" } else { "RIGHT" }),
            ]
        };
        ctx.propagate(plain);
        return Ok(Reply::Bulk(v));
    }
    if ctx.no_block {
        return Ok(Reply::Null);
    }
    Ok(ctx.block(owned(std::slice::from_ref(src)), timeout, Reply::NullArray))
}

fn blmove(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let from = parse_side(args.next_bytes()?)?;
    let to = parse_side(args.next_bytes()?)?;
    let timeout = args.next_bytes()?;
    bmove(ctx, src, dst, from, to, timeout)
}

fn brpoplpush(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let timeout = args.next_bytes()?;
    bmove(ctx, src, dst, false, true, timeout)
}

fn blmpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let timeout = parse_timeout(args.next_bytes()?)?;
    let m = parse_mpop(args)?;
    if let Some(r) = serve_mpop(ctx, &m)? {
        return Ok(r);
    }
    if ctx.no_block {
        return Ok(Reply::NullArray);
    }
    Ok(ctx.block(owned(m.keys), timeout, Reply::NullArray))
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::testkit::*;
    use tidewire_resp::{Protocol, Reply};

    #[test]
    fn push_pop_range() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["RPUSH", "l", "a", "b", "c"]), int(3));
        assert_eq!(t.run(&["LPUSH", "l", "z"]), int(4));
        assert_eq!(
            t.run(&["LRANGE", "l", "0", "-1"]),
            bulks(&["z", "a", "b", "c"])
        );
        assert_eq!(t.run(&["LRANGE", "l", "-100", "1"]), bulks(&["z", "a"]));
        assert_eq!(t.run(&["LRANGE", "l", "5", "10"]), bulks(&[]));
        assert_eq!(t.run(&["LPUSHX", "nope", "a"]), int(0));
        assert_eq!(t.run(&["LPOP", "l"]), bulk("z"));
        assert_eq!(t.run(&["RPOP", "l", "2"]), bulks(&["c", "b"]));
        assert_eq!(t.run(&["LPOP", "l", "0"]), bulks(&[]));
        assert_eq!(t.run(&["LPOP", "nope", "2"]), Reply::NullArray);
        assert_eq!(t.run(&["LPOP", "nope"]), Reply::Null);
        assert_eq!(
            t.run(&["LPOP", "l", "-1"]),
            err("ERR value is out of range, must be positive")
        );
        assert_eq!(
            t.run(&["LPOP", "l", "1", "2"]),
            err("ERR wrong number of arguments for 'lpop' command")
        );
        assert_eq!(t.run(&["RPOP", "l", "5"]), bulks(&["a"]));
        assert_eq!(t.run(&["EXISTS", "l"]), int(0));
        t.run(&["SET", "s", "x"]);
        assert_eq!(
            t.run(&["LPUSH", "s", "x"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        t.set_proto(Protocol::Resp3);
        assert_eq!(t.resp(&["LPOP", "nope", "1"]), "_\r\n");
        t.set_proto(Protocol::Resp2);
        assert_eq!(t.resp(&["LPOP", "nope", "1"]), "*-1\r\n");
        assert_eq!(t.resp(&["LPOP", "nope"]), "$-1\r\n");
    }

    #[test]
    fn index_set_insert_rem_trim() {
        let mut t = TestClient::new();
        t.run(&["RPUSH", "l", "a", "b", "a", "c", "a"]);
        assert_eq!(t.run(&["LINDEX", "l", "-1"]), bulk("a"));
        assert_eq!(t.run(&["LINDEX", "l", "9"]), Reply::Null);
        assert_eq!(
            t.run(&["LSET", "l", "9", "x"]),
            err("ERR index out of range")
        );
        assert_eq!(t.run(&["LSET", "nope", "0", "x"]), err("ERR no such key"));
        assert_eq!(t.run(&["LSET", "l", "1", "B"]), ok());
        assert_eq!(t.run(&["LINSERT", "l", "BEFORE", "c", "x"]), int(6));
        assert_eq!(t.run(&["LINSERT", "l", "AFTER", "zz", "x"]), int(-1));
        assert_eq!(t.run(&["LINSERT", "nope", "AFTER", "zz", "x"]), int(0));
        assert_eq!(
            t.run(&["LINSERT", "l", "MIDDLE", "c", "x"]),
            err("ERR syntax error")
        );
        assert_eq!(t.run(&["LREM", "l", "-1", "a"]), int(1));
        assert_eq!(
            t.run(&["LRANGE", "l", "0", "-1"]),
            bulks(&["a", "B", "a", "x", "c"])
        );
        assert_eq!(t.run(&["LREM", "l", "0", "a"]), int(2));
        assert_eq!(t.run(&["LTRIM", "l", "1", "-1"]), ok());
        assert_eq!(t.run(&["LRANGE", "l", "0", "-1"]), bulks(&["x", "c"]));
        assert_eq!(t.run(&["LTRIM", "l", "5", "1"]), ok());
        assert_eq!(t.run(&["EXISTS", "l"]), int(0));
    }

    #[test]
    fn lpos_options() {
        let mut t = TestClient::new();
        t.run(&["RPUSH", "l", "a", "b", "c", "1", "2", "3", "c", "c"]);
        assert_eq!(t.run(&["LPOS", "l", "c"]), int(2));
        assert_eq!(t.run(&["LPOS", "l", "c", "RANK", "2"]), int(6));
        assert_eq!(t.run(&["LPOS", "l", "c", "RANK", "-1"]), int(7));
        assert_eq!(
            t.run(&["LPOS", "l", "c", "COUNT", "0"]),
            Reply::Array(vec![int(2), int(6), int(7)])
        );
        assert_eq!(
            t.run(&["LPOS", "l", "c", "RANK", "-2", "COUNT", "2"]),
            Reply::Array(vec![int(6), int(2)])
        );
        assert_eq!(t.run(&["LPOS", "l", "c", "MAXLEN", "2"]), Reply::Null);
        assert_eq!(
            t.run(&["LPOS", "l", "c", "COUNT", "-1"]),
            err("ERR COUNT can't be negative")
        );
        assert_eq!(
            t.run(&["LPOS", "l", "c", "MAXLEN", "-1"]),
            err("ERR MAXLEN can't be negative")
        );
        assert_eq!(
            t.run(&["LPOS", "l", "c", "RANK", "0"]),
            err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list")
        );
        assert_eq!(t.run(&["LPOS", "l", "c", "RANK"]), err("ERR syntax error"));
        assert_eq!(t.run(&["LPOS", "nope", "c", "COUNT", "1"]), bulks(&[]));
    }

    #[test]
    fn moves_and_mpop() {
        let mut t = TestClient::new();
        t.run(&["RPUSH", "a", "1", "2", "3"]);
        assert_eq!(t.run(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), bulk("1"));
        assert_eq!(t.run(&["RPOPLPUSH", "a", "a"]), bulk("3"));
        assert_eq!(t.run(&["LRANGE", "a", "0", "-1"]), bulks(&["3", "2"]));
        t.run(&["SET", "s", "x"]);
        assert_eq!(
            t.run(&["LMOVE", "a", "s", "LEFT", "RIGHT"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(t.run(&["LLEN", "a"]), int(2));
        assert_eq!(t.run(&["LMOVE", "nope", "s", "LEFT", "RIGHT"]), Reply::Null);
        assert_eq!(
            t.run(&["LMPOP", "2", "nope", "a", "RIGHT", "COUNT", "5"]),
            Reply::Array(vec![bulk("a"), bulks(&["2", "3"])])
        );
        assert_eq!(t.run(&["LMPOP", "1", "a", "LEFT"]), Reply::NullArray);
        assert_eq!(
            t.run(&["LMPOP", "0", "a", "LEFT"]),
            err("ERR numkeys should be greater than 0")
        );
        assert_eq!(t.run(&["LMPOP", "2", "a", "LEFT"]), err("ERR syntax error"));
        assert_eq!(
            t.run(&["LMPOP", "1", "a", "LEFT", "COUNT", "0"]),
            err("ERR count should be greater than 0")
        );
        assert_eq!(t.run(&["LMPOP", "1", "a", "UP"]), err("ERR syntax error"));
    }

    #[test]
    fn blocking_forms_without_blocking() {
        let mut t = TestClient::new();
        t.run(&["RPUSH", "b", "x"]);
        assert_eq!(t.run(&["BLPOP", "a", "b", "0"]), bulks(&["b", "x"]));
        assert_eq!(
            t.run(&["BLPOP", "a", "b", "0.01"]),
            Reply::Status("BLOCKED")
        );
        assert_eq!(t.run(&["BLPOP", "a", "-1"]), err("ERR timeout is negative"));
        assert_eq!(
            t.run(&["BLPOP", "a", "x"]),
            err("ERR timeout is not a float or out of range")
        );
        assert_eq!(t.run(&["MULTI"]), ok());
        t.run(&["BLPOP", "a", "0"]);
        t.run(&["BRPOPLPUSH", "a", "b", "0"]);
        t.run(&["BLMPOP", "0", "1", "a", "LEFT"]);
        assert_eq!(
            t.run(&["EXEC"]),
            Reply::Array(vec![Reply::NullArray, Reply::Null, Reply::NullArray])
        );
        assert_eq!(t.store.blocking.blocked_clients(), 0);
        t.run(&["RPUSH", "a", "1"]);
        assert_eq!(
            t.run(&["BLMOVE", "a", "c", "RIGHT", "LEFT", "0"]),
            bulk("1")
        );
        assert_eq!(t.run(&["LRANGE", "c", "0", "-1"]), bulks(&["1"]));
    }

    /// Keyspace events (`__keyevent@0__:<event>` messages) raised by `cmds`.
    pub(crate) fn events_of(cmds: &[&[&str]]) -> Vec<String> {
        let mut t = TestClient::new();
        t.run(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
        let mut sub = t.other();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        sub.client.info.set_push_channel(tx);
        sub.run(&["PSUBSCRIBE", "__keyevent@0__:*"]);
        for c in cmds {
            t.run(c);
        }
        let mut out = Vec::new();
        while let Ok((msg, _)) = rx.try_recv() {
            if let Reply::Push(parts) | Reply::Array(parts) = msg {
                if let (Some(Reply::Bulk(ch)), Some(Reply::Bulk(key))) =
                    (parts.get(2), parts.get(3))
                {
                    let ch = String::from_utf8_lossy(ch);
                    let event = ch.rsplit(':').next().unwrap_or_default().to_string();
                    out.push(format!("{event} {}", String::from_utf8_lossy(key)));
                }
            }
        }
        out
    }

    #[test]
    fn keyspace_events() {
        assert_eq!(
            events_of(&[
                &["RPUSH", "a", "1", "2"],
                &["LMOVE", "a", "b", "LEFT", "RIGHT"],
                &["LSET", "a", "0", "x"],
                &["LINSERT", "a", "BEFORE", "x", "y"],
                &["LREM", "a", "0", "y"],
                &["LTRIM", "a", "0", "-1"],
                &["RPOP", "a"],
                &["BLPOP", "b", "0"],
            ]),
            vec![
                "rpush a",
                "rpush b",
                "lpop a",
                "lset a",
                "linsert a",
                "lrem a",
                "ltrim a",
                "rpop a",
                "del a",
                "lpop b",
                "del b",
            ]
        );
    }

    #[test]
    fn encoding_and_type() {
        let mut t = TestClient::new();
        t.run(&["CONFIG", "SET", "list-max-listpack-size", "4"]);
        t.run(&["RPUSH", "l", "1", "2", "3"]);
        assert_eq!(t.run(&["TYPE", "l"]), Reply::Status("list"));
        assert_eq!(encoding_of(&t, "l"), "listpack");
        t.run(&["RPUSH", "l", "4", "5"]);
        assert_eq!(encoding_of(&t, "l"), "quicklist");
    }
}
