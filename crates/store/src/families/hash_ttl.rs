//! Hash-field expiry (Redis 7.4 and 8.0): a TTL per hash field. HEXPIRE,
//! HPEXPIRE, HEXPIREAT, HPEXPIREAT set it (`NX`/`XX`/`GT`/`LT`), HTTL, HPTTL,
//! HEXPIRETIME, HPEXPIRETIME read it, HPERSIST removes it; HGETDEL, HGETEX and
//! HSETEX read or write fields and their TTLs in one command.
//!
//! An expired field is never seen: any lookup of the key deletes the due fields
//! first (and the hash with its last field), logged as HDEL with the `hexpired`
//! event, and the active expiry cycle samples hashes with field TTLs. TTLs are
//! logged as absolute times (HPEXPIREAT), so a replay never extends them. Replies,
//! errors and the order of checks follow Redis's `t_hash.c`.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::hashes::{hash_for_write, limits, read_hash, write_view};
use crate::num;

pub fn commands() -> Vec<CommandSpec> {
    let h = |c: CommandSpec| c.group("hash");
    let set = WRITE | DENYOOM | FAST;
    let read = READONLY | FAST;
    vec![
        h(cmd("hexpire", -6, set, keys(1, 1, 1), hexpire).summary("Set expiry for hash field using relative time to expire (seconds)")),
        h(cmd("hpexpire", -6, set, keys(1, 1, 1), hpexpire).summary("Set expiry for hash field using relative time to expire (milliseconds)")),
        h(cmd("hexpireat", -6, set, keys(1, 1, 1), hexpireat).summary("Set expiry for hash field using an absolute Unix timestamp (seconds)")),
        h(cmd("hpexpireat", -6, set, keys(1, 1, 1), hpexpireat).summary("Set expiry for hash field using an absolute Unix timestamp (milliseconds)")),
        h(cmd("httl", -5, read, keys(1, 1, 1), httl).summary("Returns the TTL in seconds of a hash field.")),
        h(cmd("hpttl", -5, read, keys(1, 1, 1), hpttl).summary("Returns the TTL in milliseconds of a hash field.")),
        h(cmd("hexpiretime", -5, read, keys(1, 1, 1), hexpiretime).summary("Returns the expiration time of a hash field as a Unix timestamp, in seconds.")),
        h(cmd("hpexpiretime", -5, read, keys(1, 1, 1), hpexpiretime).summary("Returns the expiration time of a hash field as a Unix timestamp, in msec.")),
        h(cmd("hpersist", -5, WRITE | FAST, keys(1, 1, 1), hpersist).summary("Removes the expiration time for each specified field")),
        h(cmd("hgetdel", -5, WRITE | FAST, keys(1, 1, 1), hgetdel).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns the value of a field and deletes it from the hash.")),
        h(cmd("hgetex", -5, WRITE | FAST, keys(1, 1, 1), hgetex).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Get the value of one or more fields of a given hash key, and optionally set their expiration.")),
        h(cmd("hsetex", -6, set, keys(1, 1, 1), hsetex).summary("Set the value of one or more fields of a given hash key, and optionally set their expiration.")),
    ]
}

/// The largest absolute expiry Redis accepts for a field (ms).
const MAX_ABS_MS: i64 = 0x0000_FFFF_FFFF_FFFF >> 2;

fn invalid_time(ctx: &Ctx<'_>) -> CmdError {
    CmdError::err(format!(
        "invalid expire time in '{}' command",
        ctx.cmd.spec.name
    ))
}

/// `FIELDS numfields field …` starting at the current argument: the fields
/// (`per_field` arguments each), with Redis's errors.
fn fields<'a>(
    ctx: &Ctx<'_>,
    args: &mut Args<'a>,
    count_error: &str,
    per_field: usize,
) -> Result<&'a [Bytes], CmdError> {
    if !args
        .peek()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"FIELDS"))
    {
        return Err(CmdError::err(
            "Mandatory argument FIELDS is missing or not at the right position",
        ));
    }
    args.next_bytes()?;
    let n = args
        .next_bytes()
        .ok()
        .and_then(|a| num::parse_i64(a))
        .filter(|n| *n >= 1)
        .ok_or_else(|| CmdError::err(count_error))?;
    let rest = args.rest();
    if (n as u128) * per_field as u128 != rest.len() as u128 {
        // Redis 8's HGETEX and HSETEX call this an arity error.
        return Err(if matches!(ctx.cmd.spec.name, "hgetex" | "hsetex") {
            CmdError::WrongArity(ctx.cmd.full_name.clone())
        } else {
            CmdError::err("The `numfields` parameter must match the number of arguments")
        });
    }
    Ok(rest)
}

#[derive(Clone, Copy, PartialEq)]
enum Cond {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
}

fn hexpire(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, ctx.now as i64, 1000)
}
fn hpexpire(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, ctx.now as i64, 1)
}
fn hexpireat(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 0, 1000)
}
fn hpexpireat(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 0, 1)
}

/// HEXPIRE and its forms: per field -2 (no such field), 0 (condition not met),
/// 1 (TTL set), 2 (deleted: the time has passed).
fn expire_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, base: i64, unit: i64) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let exists = write_view(ctx, &key)?.is_some();
    let mut at = args.next_i64()?;
    if at < 0 {
        return Err(CmdError::err("invalid expire time, must be >= 0"));
    }
    if unit == 1000 {
        if at > MAX_ABS_MS / 1000 {
            return Err(invalid_time(ctx));
        }
        at *= 1000;
    }
    if at > MAX_ABS_MS - base {
        return Err(invalid_time(ctx));
    }
    at += base;
    let cond = match args.peek().map(|a| a.to_ascii_uppercase()) {
        Some(w) if w == b"NX" => Cond::Nx,
        Some(w) if w == b"XX" => Cond::Xx,
        Some(w) if w == b"GT" => Cond::Gt,
        Some(w) if w == b"LT" => Cond::Lt,
        _ => Cond::Always,
    };
    if cond != Cond::Always {
        args.next_bytes()?;
    }
    let list = fields(
        ctx,
        args,
        "Parameter `numFields` should be greater than 0",
        1,
    )?;
    if !exists {
        return Ok(Reply::Array(vec![Reply::Int(-2); list.len()]));
    }
    let at = at as u64;
    let (now, db) = (ctx.now, ctx.db());
    let lim = limits(ctx);
    let h = hash_for_write(ctx, &key)?;
    let mut codes = Vec::with_capacity(list.len());
    let (mut set, mut deleted) = (Vec::new(), Vec::new());
    for f in list {
        if !h.contains(f) {
            codes.push(Reply::Int(-2));
            continue;
        }
        let prev = h.field_ttl(f);
        let allowed = match (cond, prev) {
            (Cond::Always, _) => true,
            (Cond::Nx, p) => p.is_none(),
            (Cond::Xx, p) => p.is_some(),
            // A field without a TTL never expires: later than any time.
            (Cond::Gt, p) => p.is_some_and(|p| at > p),
            (Cond::Lt, p) => p.is_none_or(|p| at < p),
        };
        if !allowed {
            codes.push(Reply::Int(0));
        } else if at <= now {
            h.remove(f);
            deleted.push(f.clone());
            codes.push(Reply::Int(2));
        } else {
            h.set_field_ttl(f, at, lim);
            set.push(f.clone());
            codes.push(Reply::Int(1));
        }
    }
    let emptied = h.is_empty();
    if !set.is_empty() {
        ctx.ks.db(db, &key).track_field_ttls(&key);
    }
    finish_ttl_change(ctx, &key, at, &set, &deleted, emptied);
    Ok(Reply::Array(codes))
}

/// Events, dirty count and log records after TTLs were set (`set`) or fields
/// deleted because their time had passed (`deleted`), as Redis's
/// `hashTypeSetExDone`.
fn finish_ttl_change(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    at: u64,
    set: &[Bytes],
    deleted: &[Bytes],
    emptied: bool,
) {
    if set.is_empty() && deleted.is_empty() {
        ctx.propagate_nothing();
        return;
    }
    ctx.dirty((set.len() + deleted.len()) as u64);
    if emptied {
        let db = ctx.db();
        ctx.ks.remove(db, key);
        ctx.notify(notify::HASH, "hdel", key);
        ctx.notify(notify::GENERIC, "del", key);
    } else {
        let event = if deleted.is_empty() {
            "hexpire"
        } else {
            "hdel"
        };
        ctx.notify(notify::HASH, event, key);
    }
    if !deleted.is_empty() {
        let mut hdel = vec![Bytes::from_static(b"HDEL"), key.clone()];
        hdel.extend(deleted.iter().cloned());
        ctx.propagate(hdel);
    }
    if !set.is_empty() {
        ctx.propagate(pexpireat_record(key, at, set));
    }
}

fn pexpireat_record(key: &Bytes, at: u64, fields: &[Bytes]) -> Vec<Bytes> {
    let mut rec = vec![
        Bytes::from_static(b"HPEXPIREAT"),
        key.clone(),
        num::i64_to_bytes(at as i64),
        Bytes::from_static(b"FIELDS"),
        num::i64_to_bytes(fields.len() as i64),
    ];
    rec.extend(fields.iter().cloned());
    rec
}

fn httl(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, true, 1000)
}
fn hpttl(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, true, 1)
}
fn hexpiretime(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, false, 1000)
}
fn hpexpiretime(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, false, 1)
}

/// HTTL and its forms: per field -2 (no such field), -1 (no TTL), else the time
/// left (`relative`) or the expiry time, in seconds (rounded up) or ms.
fn ttl_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, relative: bool, unit: u64) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let now = ctx.now;
    read_hash(ctx, &key)?;
    let list = fields(ctx, args, "Number of fields must be a positive integer", 1)?;
    let Some(h) = write_view(ctx, &key)? else {
        return Ok(Reply::Array(vec![Reply::Int(-2); list.len()]));
    };
    let base = if relative { now } else { 0 };
    Ok(Reply::Array(
        list.iter()
            .map(|f| {
                if !h.contains(f) {
                    return Reply::Int(-2);
                }
                match h.field_ttl(f) {
                    None => Reply::Int(-1),
                    Some(at) => {
                        let ms = at.saturating_sub(base);
                        Reply::Int(if unit == 1000 { ms.div_ceil(1000) } else { ms } as i64)
                    }
                }
            })
            .collect(),
    ))
}

/// HPERSIST: per field -2 (no such field), -1 (no TTL), 1 (TTL removed).
fn hpersist(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let exists = write_view(ctx, &key)?.is_some();
    let list = fields(ctx, args, "Number of fields must be a positive integer", 1)?;
    if !exists {
        ctx.propagate_nothing();
        return Ok(Reply::Array(vec![Reply::Int(-2); list.len()]));
    }
    let h = hash_for_write(ctx, &key)?;
    let mut changed = false;
    let codes = list
        .iter()
        .map(|f| {
            if !h.contains(f) {
                Reply::Int(-2)
            } else if h.persist_field(f) {
                changed = true;
                Reply::Int(1)
            } else {
                Reply::Int(-1)
            }
        })
        .collect();
    if changed {
        ctx.dirty(1);
        ctx.notify(notify::HASH, "hpersist", &key);
    } else {
        ctx.propagate_nothing();
    }
    Ok(Reply::Array(codes))
}

/// HGETDEL: the fields' values (nil for missing ones), and the fields deleted.
fn hgetdel(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let exists = write_view(ctx, &key)?.is_some();
    let list = fields(ctx, args, "Number of fields must be a positive integer", 1)?;
    if !exists {
        ctx.propagate_nothing();
        return Ok(Reply::Array(vec![Reply::Null; list.len()]));
    }
    let h = hash_for_write(ctx, &key)?;
    let mut values = Vec::with_capacity(list.len());
    let mut deleted = Vec::new();
    for f in list {
        match h.get(f).map(Bytes::copy_from_slice) {
            Some(v) => {
                h.remove(f);
                deleted.push(f.clone());
                values.push(Reply::Bulk(v));
            }
            None => values.push(Reply::Null),
        }
    }
    let emptied = h.is_empty();
    if deleted.is_empty() {
        ctx.propagate_nothing();
        return Ok(Reply::Array(values));
    }
    ctx.dirty(deleted.len() as u64);
    ctx.notify(notify::HASH, "hdel", &key);
    if emptied {
        let db = ctx.db();
        ctx.ks.remove(db, &key);
        ctx.notify(notify::GENERIC, "del", &key);
    }
    let mut hdel = vec![Bytes::from_static(b"HDEL"), key.clone()];
    hdel.extend(deleted);
    ctx.propagate(hdel);
    Ok(Reply::Array(values))
}

/// The expiry option of HGETEX / HSETEX: an absolute time, PERSIST (HGETEX) or
/// KEEPTTL (HSETEX), or none.
#[derive(Clone, Copy, PartialEq)]
enum Expiry {
    None,
    At(u64),
    Persist,
    KeepTtl,
}

/// Reads `EX|PX|EXAT|PXAT n` or `alt` (PERSIST / KEEPTTL) if the current argument
/// is one; Redis's errors for a second one or a bad time.
fn expiry_option(
    ctx: &Ctx<'_>,
    args: &mut Args<'_>,
    current: &mut Expiry,
    alt: (&str, Expiry),
    only_one: &str,
) -> Result<bool, CmdError> {
    let Some(word) = args.peek().map(|a| a.to_ascii_uppercase()) else {
        return Ok(false);
    };
    let (base, unit) = match word.as_slice() {
        b"EX" => (ctx.now as i64, 1000),
        b"PX" => (ctx.now as i64, 1),
        b"EXAT" => (0, 1000),
        b"PXAT" => (0, 1),
        w if w == alt.0.as_bytes() => {
            if *current != Expiry::None {
                return Err(CmdError::err(only_one));
            }
            args.next_bytes()?;
            *current = alt.1;
            return Ok(true);
        }
        _ => return Ok(false),
    };
    if *current != Expiry::None {
        return Err(CmdError::err(only_one));
    }
    args.next_bytes()?;
    let n = args.next_i64()?;
    if n < 0 || n > MAX_ABS_MS / unit {
        return Err(invalid_time(ctx));
    }
    let ms = n * unit;
    if ms > MAX_ABS_MS - base {
        return Err(invalid_time(ctx));
    }
    *current = Expiry::At((ms + base) as u64);
    Ok(true)
}

/// HGETEX: the fields' values, and their TTLs set (EX/PX/EXAT/PXAT) or removed
/// (PERSIST); a time already passed deletes the fields.
fn hgetex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let exists = write_view(ctx, &key)?.is_some();
    let mut expiry = Expiry::None;
    while expiry_option(
        ctx,
        args,
        &mut expiry,
        ("PERSIST", Expiry::Persist),
        "Only one of EX, PX, EXAT, PXAT or PERSIST arguments can be specified",
    )? {}
    let list = fields(ctx, args, "invalid number of fields", 1)?;
    if !exists {
        ctx.propagate_nothing();
        return Ok(Reply::Array(vec![Reply::Null; list.len()]));
    }
    let now = ctx.now;
    let lim = limits(ctx);
    let h = hash_for_write(ctx, &key)?;
    let mut values = Vec::with_capacity(list.len());
    let (mut set, mut deleted, mut persisted) = (Vec::new(), Vec::new(), Vec::new());
    for f in list {
        let Some(v) = h.get(f).map(Bytes::copy_from_slice) else {
            values.push(Reply::Null);
            continue;
        };
        values.push(Reply::Bulk(v));
        match expiry {
            Expiry::At(at) if at <= now => {
                h.remove(f);
                deleted.push(f.clone());
            }
            Expiry::At(at) => {
                h.set_field_ttl(f, at, lim);
                set.push(f.clone());
            }
            Expiry::Persist if h.persist_field(f) => persisted.push(f.clone()),
            _ => {}
        }
    }
    let emptied = h.is_empty();
    if !set.is_empty() {
        let db = ctx.db();
        ctx.ks.db(db, &key).track_field_ttls(&key);
    }
    let at = match expiry {
        Expiry::At(at) => at,
        _ => 0,
    };
    if persisted.is_empty() {
        finish_ttl_change(ctx, &key, at, &set, &deleted, emptied);
    } else {
        ctx.dirty(persisted.len() as u64);
        ctx.notify(notify::HASH, "hpersist", &key);
        let mut rec = vec![
            Bytes::from_static(b"HPERSIST"),
            key.clone(),
            Bytes::from_static(b"FIELDS"),
            num::i64_to_bytes(persisted.len() as i64),
        ];
        rec.extend(persisted);
        ctx.propagate(rec);
    }
    Ok(Reply::Array(values))
}

/// HSETEX: sets the fields (all or, with FNX / FXX, none) with a TTL, keeping
/// (KEEPTTL) or dropping their old ones; 1 if set, 0 if the condition failed.
fn hsetex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    write_view(ctx, &key)?;
    let (mut fnx, mut fxx) = (false, false);
    let mut expiry = Expiry::None;
    let only_one = "Only one of EX, PX, EXAT, PXAT or KEEPTTL arguments can be specified";
    loop {
        if args.flag("FNX") && !fxx {
            fnx = true;
        } else if args.flag("FXX") && !fnx {
            fxx = true;
        } else if !expiry_option(
            ctx,
            args,
            &mut expiry,
            ("KEEPTTL", Expiry::KeepTtl),
            only_one,
        )? {
            break;
        }
    }
    let pairs = fields(ctx, args, "invalid number of fields", 2)?;
    let (db, now) = (ctx.db(), ctx.now);
    if fnx || fxx {
        let h = write_view(ctx, &key)?;
        let present = |f: &Bytes| h.is_some_and(|h| h.contains(f));
        let ok = pairs.chunks(2).all(|p| present(&p[0]) == fxx);
        if !ok {
            ctx.propagate_nothing();
            return Ok(Reply::Int(0));
        }
    }
    let lim = limits(ctx);
    let h = hash_for_write(ctx, &key)?;
    let mut set = Vec::new();
    let mut deleted = Vec::new();
    for p in pairs.chunks(2) {
        match expiry {
            Expiry::KeepTtl => {
                h.set_keep_ttl(&p[0], &p[1], lim);
            }
            Expiry::At(at) if at <= now => {
                h.remove(&p[0]);
                deleted.push(p[0].clone());
            }
            Expiry::At(at) => {
                h.set(&p[0], &p[1], lim);
                h.set_field_ttl(&p[0], at, lim);
                set.push(p[0].clone());
            }
            _ => {
                h.set(&p[0], &p[1], lim);
            }
        }
    }
    let emptied = h.is_empty();
    if emptied {
        ctx.ks.remove(db, &key);
    } else if !set.is_empty() {
        ctx.ks.db(db, &key).track_field_ttls(&key);
    }
    ctx.dirty(pairs.len() as u64 / 2);
    ctx.notify(notify::HASH, "hset", &key);
    if !set.is_empty() {
        ctx.notify(notify::HASH, "hexpire", &key);
    }
    if !deleted.is_empty() {
        ctx.notify(notify::HASH, "hdel", &key);
    }
    if emptied {
        ctx.notify(notify::GENERIC, "del", &key);
    }
    // Logged as its effects: the values (HSET drops old TTLs, so KEEPTTL is
    // logged as itself), then the TTLs as absolute times.
    match expiry {
        Expiry::KeepTtl => {} // the command as received
        _ => {
            let mut hset = vec![Bytes::from_static(b"HSET"), key.clone()];
            for p in pairs.chunks(2) {
                hset.push(p[0].clone());
                hset.push(p[1].clone());
            }
            ctx.propagate(hset);
            if let Expiry::At(at) = expiry {
                if at <= now {
                    let mut hdel = vec![Bytes::from_static(b"HDEL"), key.clone()];
                    hdel.extend(deleted);
                    ctx.propagate(hdel);
                } else {
                    ctx.propagate(pexpireat_record(&key, at, &set));
                }
            }
        }
    }
    Ok(Reply::Int(1))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn ints(v: &[i64]) -> Reply {
        Reply::Array(v.iter().map(|n| int(*n)).collect())
    }

    #[test]
    fn ttls_set_read_and_conditions_as_redis() {
        let mut t = TestClient::new();
        t.run(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
        assert_eq!(
            t.run(&["HEXPIRE", "h", "100", "FIELDS", "2", "a", "zz"]),
            ints(&[1, -2])
        );
        assert_eq!(
            t.run(&["HTTL", "h", "FIELDS", "3", "a", "b", "zz"]),
            ints(&[100, -1, -2])
        );
        assert_eq!(
            t.run(&["HEXPIRE", "h", "50", "XX", "FIELDS", "1", "b"]),
            ints(&[0])
        );
        assert_eq!(
            t.run(&["HEXPIRE", "h", "50", "GT", "FIELDS", "1", "a"]),
            ints(&[0])
        );
        assert_eq!(
            t.run(&["HEXPIRE", "h", "50", "LT", "FIELDS", "2", "a", "c"]),
            ints(&[1, 1])
        );
        assert_eq!(
            t.run(&["HEXPIRE", "h", "60", "NX", "FIELDS", "2", "a", "b"]),
            ints(&[0, 1])
        );
        assert_eq!(
            t.run(&["HPERSIST", "h", "FIELDS", "2", "a", "zz"]),
            ints(&[1, -2])
        );
        assert_eq!(t.run(&["HTTL", "h", "FIELDS", "1", "a"]), ints(&[-1]));
        // HSET makes a field persistent again; HINCRBY keeps its TTL.
        t.run(&["HSET", "h", "b", "5"]);
        assert_eq!(t.run(&["HTTL", "h", "FIELDS", "1", "b"]), ints(&[-1]));
        t.run(&["HINCRBY", "h", "c", "1"]);
        assert_eq!(t.run(&["HTTL", "h", "FIELDS", "1", "c"]), ints(&[50]));
        // A time already passed deletes the field (the hash with its last one).
        assert_eq!(
            t.run(&["HPEXPIREAT", "h", "1", "FIELDS", "1", "c"]),
            ints(&[2])
        );
        assert_eq!(t.run(&["HLEN", "h"]), int(2));
        assert_eq!(t.run(&["HTTL", "nokey", "FIELDS", "1", "a"]), ints(&[-2]));
        t.run(&["SET", "s", "v"]);
        for (args, e) in [
            (
                &["HEXPIRE", "h", "-1", "FIELDS", "1", "a"][..],
                "ERR invalid expire time, must be >= 0",
            ),
            (
                &["HEXPIRE", "h", "10", "FIELDS", "2", "a"][..],
                "ERR The `numfields` parameter must match the number of arguments",
            ),
            (
                &["HEXPIRE", "h", "10", "FIELDS", "0", "a"][..],
                "ERR Parameter `numFields` should be greater than 0",
            ),
            (
                &["HEXPIRE", "h", "10", "FOO", "1", "a"][..],
                "ERR Mandatory argument FIELDS is missing or not at the right position",
            ),
            (
                &["HEXPIRE", "h", "999999999999999", "FIELDS", "1", "a"][..],
                "ERR invalid expire time in 'hexpire' command",
            ),
            (
                &["HTTL", "h", "FIELDS", "0", "a"][..],
                "ERR Number of fields must be a positive integer",
            ),
            (
                &["HEXPIRE", "s", "10", "FIELDS", "1", "a"][..],
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (
                &["HSETEX", "h", "EX", "1", "KEEPTTL", "FIELDS", "1", "a", "1"][..],
                "ERR Only one of EX, PX, EXAT, PXAT or KEEPTTL arguments can be specified",
            ),
            (
                &["HGETEX", "h", "EX", "1", "PERSIST", "FIELDS", "1", "a"][..],
                "ERR Only one of EX, PX, EXAT, PXAT or PERSIST arguments can be specified",
            ),
        ] {
            assert_eq!(t.run(args), err(e), "{args:?}");
        }
    }

    #[test]
    fn expired_fields_are_never_seen_and_the_hash_goes_with_the_last() {
        let mut t = TestClient::new();
        t.run(&["HSET", "h", "a", "1", "b", "2"]);
        t.run(&["HPEXPIRE", "h", "30", "FIELDS", "1", "a"]);
        t.run(&["HSETEX", "g", "PX", "30", "FIELDS", "2", "x", "1", "y", "2"]);
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(
            t.run(&["HGETALL", "h"]),
            Reply::Map(vec![(bulk("b"), bulk("2"))])
        );
        assert_eq!(t.run(&["HLEN", "h"]), int(1));
        assert_eq!(t.run(&["EXISTS", "g"]), int(0));
        let stats = t.resp(&["INFO", "stats"]);
        assert!(stats.contains("expired_subkeys:3\r\n"), "{stats}");
    }

    #[test]
    fn getdel_getex_setex() {
        let mut t = TestClient::new();
        assert_eq!(
            t.run(&["HSETEX", "h", "FNX", "EX", "100", "FIELDS", "2", "a", "1", "b", "2"]),
            int(1)
        );
        assert_eq!(
            t.run(&["HSETEX", "h", "FNX", "FIELDS", "1", "a", "9"]),
            int(0)
        );
        assert_eq!(
            t.run(&["HSETEX", "h", "FXX", "KEEPTTL", "FIELDS", "1", "a", "7"]),
            int(1)
        );
        assert_eq!(
            t.run(&["HTTL", "h", "FIELDS", "2", "a", "b"]),
            ints(&[100, 100])
        );
        assert_eq!(
            t.run(&["HGETEX", "h", "PERSIST", "FIELDS", "2", "a", "zz"]),
            Reply::Array(vec![bulk("7"), Reply::Null])
        );
        assert_eq!(t.run(&["HTTL", "h", "FIELDS", "1", "a"]), ints(&[-1]));
        assert_eq!(
            t.run(&["HGETDEL", "h", "FIELDS", "2", "b", "zz"]),
            Reply::Array(vec![bulk("2"), Reply::Null])
        );
        assert_eq!(
            t.run(&["HGETEX", "h", "PXAT", "1", "FIELDS", "1", "a"]),
            Reply::Array(vec![bulk("7")])
        );
        assert_eq!(t.run(&["EXISTS", "h"]), int(0));
    }

    /// Small hashes with field TTLs stay compact (`listpackex`) until a limit is
    /// passed; DUMP refuses them while a TTL is left, as it does the map form.
    #[test]
    fn small_hashes_with_ttls_are_listpackex() {
        let mut t = TestClient::new();
        let enc = |t: &mut TestClient, k: &str| t.run(&["OBJECT", "ENCODING", k]);
        t.run(&["CONFIG", "SET", "hash-max-listpack-entries", "3"]);
        t.run(&["HSET", "h", "a", "1", "b", "2"]);
        assert_eq!(enc(&mut t, "h"), bulk("listpack"));
        assert_eq!(
            t.run(&["HEXPIRE", "h", "100", "FIELDS", "2", "a", "zz"]),
            ints(&[1, -2])
        );
        assert_eq!(enc(&mut t, "h"), bulk("listpackex"));
        t.run(&["HSETEX", "g", "EX", "100", "FIELDS", "1", "x", "1"]);
        assert_eq!(enc(&mut t, "g"), bulk("listpackex"));
        assert_eq!(
            t.run(&["DUMP", "h"]),
            err("ERR DUMP of a hash with field TTLs is not supported")
        );
        t.run(&["HSET", "h", "c", "3"]);
        assert_eq!(enc(&mut t, "h"), bulk("listpackex"));
        let Reply::Array(picked) = t.run(&["HRANDFIELD", "h", "2"]) else {
            panic!("no fields")
        };
        assert_eq!(picked.len(), 2);
        t.run(&["HSET", "h", "d", "4"]);
        assert_eq!(enc(&mut t, "h"), bulk("hashtable"));
        assert_eq!(
            t.run(&["HTTL", "h", "FIELDS", "2", "a", "d"]),
            ints(&[100, -1])
        );
        // Without TTLs left it dumps as a plain small hash.
        assert_eq!(t.run(&["HPERSIST", "g", "FIELDS", "1", "x"]), ints(&[1]));
        let Reply::Bulk(payload) = t.run(&["DUMP", "g"]) else {
            panic!("no payload")
        };
        let mut argv: Vec<_> = ["RESTORE", "g2", "0"]
            .iter()
            .map(|a| bytes::Bytes::from_static(a.as_bytes()))
            .collect();
        argv.push(payload);
        assert_eq!(t.run_bytes(argv), Reply::Status("OK"));
        assert_eq!(enc(&mut t, "g2"), bulk("listpack"));
        assert_eq!(t.run(&["HGET", "g2", "x"]), bulk("1"));
        // Due fields go at the next lookup, the hash with its last one.
        t.run(&["HPEXPIRE", "g", "20", "FIELDS", "1", "x"]);
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert_eq!(t.run(&["EXISTS", "g"]), int(0));
    }

    /// What the log and a rewrite hold brings the same fields and TTLs back.
    #[test]
    fn rewrite_keeps_ttls_as_absolute_times() {
        let mut t = TestClient::new();
        t.run(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
        t.run(&["HPEXPIREAT", "h", "9999999999999", "FIELDS", "2", "a", "b"]);
        let cmds = match t.store.keyspace.lock_all().get(0, b"h", 0) {
            Some(e) => e.value.rewrite_commands(&bytes::Bytes::from_static(b"h")),
            None => panic!("no hash"),
        };
        let mut fresh = TestClient::new();
        for c in &cmds {
            let args: Vec<String> = c
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            fresh.run(&refs);
        }
        assert_eq!(
            fresh.run(&["HPEXPIRETIME", "h", "FIELDS", "3", "a", "b", "c"]),
            ints(&[9999999999999, 9999999999999, -1])
        );
        assert_eq!(
            t.run(&["DUMP", "h"]),
            err("ERR DUMP of a hash with field TTLs is not supported")
        );
    }
}
