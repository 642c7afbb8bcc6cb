//! Generic key commands: DEL, EXISTS, TYPE, and the expiry family.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, keys, CommandSpec};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::num;

pub fn commands() -> Vec<CommandSpec> {
    let g = |c: CommandSpec| c.group("generic");
    vec![
        g(cmd("del", -2, WRITE, keys(1, -1, 1), del).summary("Deletes one or more keys.")),
        g(cmd("unlink", -2, WRITE | FAST, keys(1, -1, 1), del)
            .summary("Asynchronously deletes one or more keys.")),
        g(cmd("exists", -2, READONLY | FAST, keys(1, -1, 1), exists)
            .summary("Determines whether one or more keys exist.")),
        g(cmd("type", 2, READONLY | FAST, keys(1, 1, 1), type_)
            .summary("Determines the type of value stored at a key.")),
        g(cmd("expire", -3, WRITE | FAST, keys(1, 1, 1), expire)
            .summary("Sets the expiration time of a key in seconds.")),
        g(cmd("pexpire", -3, WRITE | FAST, keys(1, 1, 1), pexpire)
            .summary("Sets the expiration time of a key in milliseconds.")),
        g(cmd("expireat", -3, WRITE | FAST, keys(1, 1, 1), expireat)
            .summary("Sets the expiration time of a key to a Unix timestamp.")),
        g(cmd("pexpireat", -3, WRITE | FAST, keys(1, 1, 1), pexpireat)
            .summary("Sets the expiration time of a key to a Unix milliseconds timestamp.")),
        g(cmd("ttl", 2, READONLY | FAST, keys(1, 1, 1), ttl)
            .summary("Returns the expiration time in seconds of a key.")),
        g(cmd("pttl", 2, READONLY | FAST, keys(1, 1, 1), pttl)
            .summary("Returns the expiration time in milliseconds of a key.")),
        g(
            cmd("expiretime", 2, READONLY | FAST, keys(1, 1, 1), expiretime)
                .summary("Returns the expiration time of a key as a Unix timestamp."),
        ),
        g(cmd(
            "pexpiretime",
            2,
            READONLY | FAST,
            keys(1, 1, 1),
            pexpiretime,
        )
        .summary("Returns the expiration time of a key as a Unix milliseconds timestamp.")),
        g(cmd("persist", 2, WRITE | FAST, keys(1, 1, 1), persist)
            .summary("Removes the expiration time of a key.")),
    ]
}

fn del(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let db = ctx.db();
    let now = ctx.now;
    let mut deleted = 0;
    for key in args.rest() {
        if ctx.ks.exists(db, key, now) {
            ctx.ks.remove(db, key);
            ctx.notify(notify::GENERIC, "del", key);
            deleted += 1;
        }
    }
    ctx.dirty(deleted as u64);
    Ok(Reply::Int(deleted))
}

fn exists(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let db = ctx.db();
    let now = ctx.now;
    let mut n = 0;
    for key in args.rest() {
        if ctx.ks.lookup_read(db, key, now).is_some() {
            n += 1;
        }
    }
    Ok(Reply::Int(n))
}

fn type_(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let db = ctx.db();
    let name = ctx
        .ks
        .get(db, key, ctx.now)
        .map_or("none", |e| e.value.type_name());
    Ok(Reply::Status(name))
}

/// EXPIRE and friends: `unit_ms` converts the argument, `absolute` for the *AT forms.
fn expire_generic(
    ctx: &mut Ctx<'_>,
    args: &mut Args<'_>,
    unit_ms: i64,
    absolute: bool,
) -> CmdResult {
    let key = args.next_bytes()?;
    let arg = args.next_bytes()?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(CmdError::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CmdError::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(CmdError::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    let n = num::parse_i64(arg).ok_or(CmdError::NotInteger)?;
    let invalid = || CmdError::InvalidExpire(ctx.cmd.full_name.clone());
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(ctx.now as i64).ok_or_else(invalid)?
    };
    let db = ctx.db();
    let now = ctx.now;
    let Some(entry) = ctx.ks.get(db, key, now) else {
        return Ok(Reply::Int(0));
    };
    let current = entry.expire_at;
    // A key without TTL counts as an infinite TTL for GT/LT.
    let allowed = if nx {
        current == 0
    } else if xx && current == 0 {
        false
    } else if gt {
        current != 0 && at > current as i64
    } else if lt {
        current == 0 || at < current as i64
    } else {
        true
    };
    if !allowed {
        return Ok(Reply::Int(0));
    }
    if at <= now as i64 {
        ctx.ks.remove(db, key);
        ctx.dirty(1);
        ctx.notify(notify::GENERIC, "del", key);
        ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
        return Ok(Reply::Int(1));
    }
    ctx.ks.set_expire(db, key, at as u64);
    ctx.dirty(1);
    ctx.notify(notify::GENERIC, "expire", key);
    ctx.propagate(vec![
        Bytes::from_static(b"PEXPIREAT"),
        key.clone(),
        num::i64_to_bytes(at),
    ]);
    Ok(Reply::Int(1))
}

fn expire(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, false)
}

fn pexpire(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, false)
}

fn expireat(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, true)
}

fn pexpireat(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, true)
}

/// -2 for a missing key, -1 for no TTL, else `f(expire_at)`.
fn ttl_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, f: impl Fn(u64, u64) -> i64) -> CmdResult {
    let key = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    Ok(Reply::Int(match ctx.ks.lookup_read(db, key, now) {
        None => -2,
        Some(e) if e.expire_at == 0 => -1,
        Some(e) => f(e.expire_at, now),
    }))
}

fn ttl(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| {
        ((at.saturating_sub(now) + 500) / 1000) as i64
    })
}

fn pttl(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, now| at.saturating_sub(now) as i64)
}

fn expiretime(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| (at / 1000) as i64)
}

fn pexpiretime(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, |at, _| at as i64)
}

fn persist(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    match ctx.ks.get(db, key, now) {
        Some(e) if e.expire_at != 0 => {
            ctx.ks.set_expire(db, key, 0);
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "persist", key);
            Ok(Reply::Int(1))
        }
        _ => Ok(Reply::Int(0)),
    }
}
