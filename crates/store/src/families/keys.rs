//! Generic key commands: DEL, EXISTS, TYPE, TOUCH, the expiry family, whole-keyspace
//! walks (KEYS, SCAN, RANDOMKEY), moving values between names and databases
//! (RENAME, COPY, MOVE, SWAPDB) and OBJECT introspection.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rand::Rng;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{
    cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, RequestPolicy, ResponsePolicy,
    NO_KEYS,
};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::evict::Policy;
use crate::exec::Ctx;
use crate::families::strings::{notify_in, store_key};
use crate::glob::glob_match;
use crate::keyspace::NUM_DBS;
use crate::num;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let g = |c: CommandSpec| c.group("generic");
    vec![
        g(cmd("del", -2, WRITE, keys(1, -1, 1), del).key_roles(KeyRoles::Each(&[kf::RM | kf::DELETE])).summary("Deletes one or more keys.")),
        g(cmd("unlink", -2, WRITE | FAST, keys(1, -1, 1), del).key_roles(KeyRoles::Each(&[kf::RM | kf::DELETE]))
            .summary("Asynchronously deletes one or more keys.")),
        g(cmd("exists", -2, READONLY | FAST, keys(1, -1, 1), exists).key_roles(KeyRoles::Each(&[kf::RO]))
            .summary("Determines whether one or more keys exist.")),
        g(cmd("type", 2, READONLY | FAST, keys(1, 1, 1), type_).key_roles(KeyRoles::Each(&[kf::RO]))
            .summary("Determines the type of value stored at a key.")),
        g(cmd("touch", -2, READONLY | FAST, keys(1, -1, 1), touch).key_roles(KeyRoles::Each(&[kf::RO]))
            .summary("Returns the number of existing keys out of those specified after updating the time they were last accessed.")),
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
        g(cmd("keys", 2, READONLY | ALL_KEYS, NO_KEYS, keys_)
            .summary("Returns all key names that match a pattern.")
            .policy(RequestPolicy::AllShards, ResponsePolicy::Default)),
        g(cmd("scan", -2, READONLY | ALL_KEYS, NO_KEYS, scan)
            .summary("Iterates over the key names in the database.")),
        g(cmd("randomkey", 1, READONLY | ALL_KEYS, NO_KEYS, randomkey)
            .summary("Returns a random key name from the database.")
            .policy(RequestPolicy::AllShards, ResponsePolicy::AnyNonNil)),
        g(cmd("rename", 3, WRITE, keys(1, 2, 1), rename).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::OW | kf::UPDATE]))
            .summary("Renames a key and overwrites the destination.")),
        g(cmd("renamenx", 3, WRITE | FAST, keys(1, 2, 1), renamenx).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE, kf::OW | kf::INSERT]))
            .summary("Renames a key only when the target key name doesn't exist.")),
        g(cmd("copy", -3, WRITE | DENYOOM, keys(1, 2, 1), copy).key_roles(KeyRoles::Each(&[kf::RO | kf::ACCESS, kf::OW | kf::UPDATE]))
            .summary("Copies the value of a key to a new key.")),
        g(cmd("move", 3, WRITE | FAST, keys(1, 1, 1), move_).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE]))
            .summary("Moves a key to another database.")),
        cmd("swapdb", 3, WRITE | FAST | ALL_KEYS, NO_KEYS, swapdb)
            .group("server")
            .summary("Swaps two Redis databases."),
        g(cmd("object", -2, READONLY, NO_KEYS, object_help)
            .summary("A container for object introspection commands.")
            .subs(vec![
                cmd("encoding", 3, READONLY, keys(2, 2, 1), object_encoding)
                    .key_roles(KeyRoles::Each(&[kf::RO]))
                    .summary("Returns the internal encoding of a Redis object."),
                cmd("freq", 3, READONLY, keys(2, 2, 1), object_freq)
                    .key_roles(KeyRoles::Each(&[kf::RO]))
                    .summary("Returns the logarithmic access frequency counter of a Redis object."),
                cmd("idletime", 3, READONLY, keys(2, 2, 1), object_idletime)
                    .key_roles(KeyRoles::Each(&[kf::RO]))
                    .summary("Returns the time since the last access to a Redis object."),
                cmd("refcount", 3, READONLY, keys(2, 2, 1), object_refcount)
                    .key_roles(KeyRoles::Each(&[kf::RO]))
                    .summary("Returns the reference count of a value of a key."),
                cmd("help", 2, LOADING | STALE | NO_KEYSPACE, NO_KEYS, object_help)
                    .summary("Returns helpful text about the different subcommands."),
            ])),
    ]
}

/// Blocked clients may wait on a list or sorted set that a key move creates.
fn signal_if_blocking_type(ctx: &mut Ctx<'_>, db: usize, key: &[u8], value: &Value) {
    if matches!(value, Value::List(_) | Value::ZSet(_)) {
        ctx.ev.ready.push((db, Bytes::copy_from_slice(key)));
    }
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
        if ctx.ks.get(db, key, now).is_some() {
            n += 1;
        }
    }
    Ok(Reply::Int(n))
}

fn touch(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
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
    let options = args.rest();
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in options {
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
    // Logged as an absolute time, options kept, as Redis rewrites it.
    let mut p = vec![
        Bytes::from_static(b"PEXPIREAT"),
        key.clone(),
        num::i64_to_bytes(at),
    ];
    p.extend(options.iter().cloned());
    ctx.propagate(p);
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
    Ok(Reply::Int(match ctx.ks.get(db, key, now) {
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
    // Rounded to the nearest second, as Redis does for TTL too.
    ttl_generic(ctx, args, |at, _| ((at + 500) / 1000) as i64)
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

fn keys_(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let pattern = args.next_bytes()?;
    // `*` also matches the empty key, which the glob matcher (like Redis's) does not.
    let all = pattern.as_ref() == b"*";
    let db = ctx.db();
    let now = ctx.now;
    let mut out = Vec::new();
    for part in ctx.ks.db_parts(db) {
        for (k, e) in part.map.iter() {
            if !e.is_expired(now) && (all || glob_match(pattern, k, false)) {
                out.push(Reply::Bulk(k.to_bytes()));
            }
        }
    }
    Ok(Reply::Array(out))
}

/// The arguments shared by SCAN and the collection scans (HSCAN, SSCAN, ZSCAN).
pub struct ScanOpts<'a> {
    pub cursor: u64,
    pub pattern: Option<&'a [u8]>,
    pub count: usize,
    pub type_name: Option<String>,
    /// Upstash's `WITHTYPE` (SCAN only): each key followed by its type.
    pub with_type: bool,
}

impl ScanOpts<'_> {
    /// Whether `s` passes the MATCH pattern (if any).
    pub fn matches(&self, s: &[u8]) -> bool {
        self.pattern.is_none_or(|p| glob_match(p, s, false))
    }
}

/// Parses `cursor [MATCH pattern] [COUNT count] [TYPE type]` (TYPE only if
/// `allow_type`). The cursor follows Redis 7.2's strtoul rules (`num::parse_cursor`).
pub fn parse_scan<'a>(args: &mut Args<'a>, allow_type: bool) -> Result<ScanOpts<'a>, CmdError> {
    let cursor =
        num::parse_cursor(args.next_bytes()?).ok_or_else(|| CmdError::err("invalid cursor"))?;
    let mut opts = ScanOpts {
        cursor,
        pattern: None,
        count: 10,
        type_name: None,
        with_type: false,
    };
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        let upper = opt.to_ascii_uppercase();
        if allow_type && upper == b"WITHTYPE" {
            opts.with_type = true;
            continue;
        }
        if args.is_empty() {
            return Err(CmdError::Syntax);
        }
        match upper.as_slice() {
            b"COUNT" => {
                let n = args.next_i64()?;
                if n < 1 {
                    return Err(CmdError::Syntax);
                }
                opts.count = n as usize;
            }
            b"MATCH" => {
                let p = args.next_bytes()?;
                opts.pattern = (p.as_ref() != b"*").then_some(p.as_ref());
            }
            b"TYPE" if allow_type => {
                opts.type_name = Some(String::from_utf8_lossy(args.next_bytes()?).to_lowercase());
            }
            _ => return Err(CmdError::Syntax),
        }
    }
    Ok(opts)
}

/// The SCAN reply: the next cursor as a bulk string, then the elements.
pub fn scan_reply(cursor: u64, items: Vec<Reply>) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Bytes::from(cursor.to_string())),
        Reply::Array(items),
    ])
}

fn scan(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let opts = parse_scan(args, true)?;
    let db = ctx.db();
    let now = ctx.now;
    let mut out = Vec::new();
    let next = ctx.ks.scan(db, opts.cursor, opts.count, now, |k, e| {
        if !opts.matches(k) {
            return;
        }
        if let Some(t) = &opts.type_name {
            if e.value.type_name() != t {
                return;
            }
        }
        out.push(Reply::Bulk(Bytes::copy_from_slice(k)));
        if opts.with_type {
            out.push(Reply::Bulk(Bytes::from_static(
                e.value.type_name().as_bytes(),
            )));
        }
    });
    Ok(scan_reply(next, out))
}

fn randomkey(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let db = ctx.db();
    let now = ctx.now;
    let mut rng = rand::thread_rng();
    loop {
        let total = ctx.ks.len(db);
        if total == 0 {
            return Ok(Reply::Null);
        }
        let mut pick = rng.gen_range(0..total);
        let mut found = None;
        for part in ctx.ks.db_parts(db) {
            if pick < part.map.len() {
                let (k, e) = part.map.get_index(pick).expect("index in range");
                found = Some((k.to_bytes(), e.is_expired(now)));
                break;
            }
            pick -= part.map.len();
        }
        let Some((key, expired)) = found else {
            return Ok(Reply::Null);
        };
        if !expired {
            return Ok(Reply::Bulk(key));
        }
        // Each round deletes one expired key, so this ends.
        ctx.ks.expire_now(db, &key);
    }
}

fn rename_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, nx: bool) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    if ctx.ks.get(db, src, now).is_none() {
        return Err(CmdError::NoSuchKey);
    }
    if src == dst {
        return Ok(if nx { Reply::Int(0) } else { Reply::ok() });
    }
    if ctx.ks.get(db, dst, now).is_some() {
        if nx {
            return Ok(Reply::Int(0));
        }
        ctx.ks.remove(db, dst);
    }
    let entry = ctx.ks.remove(db, src).expect("checked above");
    signal_if_blocking_type(ctx, db, dst, &entry.value);
    store_key(ctx, db, dst, entry);
    ctx.notify(notify::GENERIC, "rename_from", src);
    ctx.notify(notify::GENERIC, "rename_to", dst);
    ctx.dirty(1);
    Ok(if nx { Reply::Int(1) } else { Reply::ok() })
}

fn rename(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    rename_generic(ctx, args, false)
}

fn renamenx(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    rename_generic(ctx, args, true)
}

fn copy(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let src_db = ctx.db();
    let mut dst_db = src_db;
    let mut replace = false;
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        if opt.eq_ignore_ascii_case(b"REPLACE") {
            replace = true;
        } else if opt.eq_ignore_ascii_case(b"DB") && !args.is_empty() {
            let n = num::parse_i64(args.next_bytes()?).ok_or(CmdError::NotInteger)?;
            if !(0..NUM_DBS as i64).contains(&n) {
                return Err(CmdError::DbIndexOutOfRange);
            }
            dst_db = n as usize;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if src_db == dst_db && src == dst {
        // Upstash's REST API answers 0 (its clients' NOT_COPIED) where Redis
        // refuses; RESP keeps Redis's error.
        if ctx.client.info.kind == "http" {
            return Ok(Reply::Int(0));
        }
        return Err(CmdError::err("source and destination objects are the same"));
    }
    let now = ctx.now;
    let Some(entry) = ctx.ks.lookup_read(src_db, src, now) else {
        return Ok(Reply::Int(0));
    };
    let copied = Entry::with_expiry(entry.value.clone(), entry.expire_at);
    if ctx.ks.get(dst_db, dst, now).is_some() {
        if !replace {
            return Ok(Reply::Int(0));
        }
        ctx.ks.remove(dst_db, dst);
    }
    signal_if_blocking_type(ctx, dst_db, dst, &copied.value);
    store_key(ctx, dst_db, dst, copied);
    if dst_db != src_db {
        ctx.touch(dst_db, dst);
    }
    notify_in(ctx, dst_db, notify::GENERIC, "copy_to", dst);
    ctx.dirty(1);
    Ok(Reply::Int(1))
}

fn move_(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let n = num::parse_i64(args.next_bytes()?).ok_or(CmdError::NotInteger)?;
    if !(0..NUM_DBS as i64).contains(&n) {
        return Err(CmdError::DbIndexOutOfRange);
    }
    let (src_db, dst_db) = (ctx.db(), n as usize);
    if src_db == dst_db {
        return Err(CmdError::err("source and destination objects are the same"));
    }
    let now = ctx.now;
    if ctx.ks.get(src_db, key, now).is_none() || ctx.ks.get(dst_db, key, now).is_some() {
        return Ok(Reply::Int(0));
    }
    let entry = ctx.ks.remove(src_db, key).expect("checked above");
    signal_if_blocking_type(ctx, dst_db, key, &entry.value);
    store_key(ctx, dst_db, key, entry);
    ctx.touch(dst_db, key);
    notify_in(ctx, src_db, notify::GENERIC, "move_from", key);
    notify_in(ctx, dst_db, notify::GENERIC, "move_to", key);
    ctx.dirty(1);
    Ok(Reply::Int(1))
}

fn swapdb(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let a = num::parse_i64(args.next_bytes()?)
        .ok_or_else(|| CmdError::err("invalid first DB index"))?;
    let b = num::parse_i64(args.next_bytes()?)
        .ok_or_else(|| CmdError::err("invalid second DB index"))?;
    let range = 0..NUM_DBS as i64;
    if !range.contains(&a) || !range.contains(&b) {
        return Err(CmdError::DbIndexOutOfRange);
    }
    let (a, b) = (a as usize, b as usize);
    if a != b {
        touch_watchers_for_swap(ctx, a, b);
        ctx.ks.swap_dbs(a, b);
        // Clients blocked in either database look at their keys again: a list,
        // sorted set or stream may have arrived, or a group reader's stream gone.
        if ctx.store.blocking.has_waiters() {
            for db in [a, b] {
                let waited = ctx.store.blocking.waited_keys(db);
                ctx.ev.ready.extend(waited);
            }
        }
    }
    ctx.dirty(1);
    Ok(Reply::ok())
}

/// Above this many keys SWAPDB touches every watched key of both databases instead
/// of working out which ones really change (a spurious EXEC failure is allowed;
/// walking millions of keys under every shard lock is not).
const SWAPDB_PRECISE_TOUCH_LIMIT: usize = 100_000;

/// As Redis: a key watched in either database counts as changed if it is live in
/// either of them (it appears, disappears or gets another value); a key absent or
/// expired in both does not.
fn touch_watchers_for_swap(ctx: &mut Ctx<'_>, a: usize, b: usize) {
    if !ctx.store.watches.any() {
        return;
    }
    if ctx.ks.len(a) + ctx.ks.len(b) > SWAPDB_PRECISE_TOUCH_LIMIT {
        ctx.ev.touched_dbs.push(Some(a));
        ctx.ev.touched_dbs.push(Some(b));
        return;
    }
    let now = ctx.now;
    let mut live = Vec::new();
    for db in [a, b] {
        for part in ctx.ks.db_parts(db) {
            live.extend(
                part.map
                    .iter()
                    .filter(|(_, e)| !e.is_expired(now))
                    .map(|(k, _)| k.to_bytes()),
            );
        }
    }
    for k in live {
        ctx.touch(a, &k);
        ctx.touch(b, &k);
    }
}

fn object_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let lines = [
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        "HELP",
        "    Print this help.",
    ];
    Ok(Reply::Array(
        lines.iter().map(|l| Reply::Status(l)).collect(),
    ))
}

fn object_lookup<'c>(
    ctx: &'c mut Ctx<'_>,
    args: &mut Args<'_>,
) -> Result<Option<&'c Entry>, CmdError> {
    let key = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    Ok(ctx.ks.get(db, key, now))
}

fn maxmemory_policy_is_lfu(ctx: &Ctx<'_>) -> bool {
    ctx.store
        .config
        .get("maxmemory-policy")
        .is_some_and(|p| p.ends_with("lfu"))
}

fn object_encoding(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    Ok(match object_lookup(ctx, args)? {
        Some(e) => Reply::bulk_str(e.value.encoding()),
        None => Reply::Null,
    })
}

fn object_idletime(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let lfu = maxmemory_policy_is_lfu(ctx);
    let Some(e) = object_lookup(ctx, args)? else {
        return Ok(Reply::Null);
    };
    if lfu {
        return Err(CmdError::err("An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
    }
    Ok(Reply::Int(crate::evict::idle_secs(e) as i64))
}

fn object_freq(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let lfu = maxmemory_policy_is_lfu(ctx);
    let Some(e) = object_lookup(ctx, args)? else {
        return Ok(Reply::Null);
    };
    if !lfu {
        return Err(CmdError::err("An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
    }
    Ok(Reply::Int(crate::evict::freq(e) as i64))
}

fn object_refcount(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    // Redis shares the integers 0..9999 and reports them as INT_MAX references,
    // except under a maxmemory limit with an LRU or LFU policy, where each key needs
    // its own access data and so its own object.
    let policy = Policy::parse(&ctx.store.config.get("maxmemory-policy").unwrap_or_default());
    let per_key_access =
        ctx.store.config.maxmemory.load(Ordering::Relaxed) != 0 && (policy.lru() || policy.lfu());
    Ok(match object_lookup(ctx, args)? {
        Some(Entry {
            value: Value::Str(b),
            ..
        }) if !per_key_access && num::parse_i64(b).is_some_and(|n| (0..10_000).contains(&n)) => {
            Reply::Int(i32::MAX as i64)
        }
        Some(_) => Reply::Int(1),
        None => Reply::Null,
    })
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn sorted(r: Reply) -> Vec<String> {
        let Reply::Array(items) = r else {
            panic!("not an array: {r:?}")
        };
        let mut v: Vec<String> = items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
                other => panic!("not a bulk: {other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keys_pattern_and_empty_key() {
        let mut t = TestClient::new();
        t.run(&["MSET", "foo_a", "1", "foo_b", "2", "bar", "3", "", "4"]);
        assert_eq!(sorted(t.run(&["KEYS", "foo*"])), ["foo_a", "foo_b"]);
        assert_eq!(sorted(t.run(&["KEYS", "*"])), ["", "bar", "foo_a", "foo_b"]);
        assert_eq!(sorted(t.run(&["KEYS", "b?r"])), ["bar"]);
    }

    /// Upstash's SCAN extension: each key followed by its type, with or without
    /// the TYPE filter; other scans refuse the word.
    #[test]
    fn scan_withtype_pairs_keys_with_types() {
        let mut t = TestClient::new();
        t.run(&["SET", "s", "1"]);
        t.run(&["ZADD", "z", "1", "m"]);
        let Reply::Array(parts) = t.run(&["SCAN", "0", "WITHTYPE", "COUNT", "100"]) else {
            panic!("not an array");
        };
        let mut pairs: Vec<String> = match &parts[1] {
            Reply::Array(items) => items
                .chunks(2)
                .map(|c| format!("{:?}={:?}", c[0], c[1]))
                .collect(),
            other => panic!("{other:?}"),
        };
        pairs.sort();
        assert_eq!(
            pairs,
            [
                format!("{:?}={:?}", bulk("s"), bulk("string")),
                format!("{:?}={:?}", bulk("z"), bulk("zset")),
            ]
        );
        let Reply::Array(parts) = t.run(&["SCAN", "0", "TYPE", "zset", "WITHTYPE"]) else {
            panic!("not an array");
        };
        assert_eq!(parts[1], Reply::Array(vec![bulk("z"), bulk("zset")]));
        t.run(&["HSET", "h", "f", "v"]);
        assert_eq!(
            t.run(&["HSCAN", "h", "0", "WITHTYPE"]),
            err("ERR syntax error")
        );
        // RESP keeps Redis's answer to COPY onto itself.
        assert_eq!(
            t.run(&["COPY", "s", "s"]),
            err("ERR source and destination objects are the same")
        );
    }

    #[test]
    fn scan_returns_every_key_once_and_filters() {
        let mut t = TestClient::new();
        for i in 0..500 {
            t.run(&["SET", &format!("key:{i}"), "v"]);
        }
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let Reply::Array(r) = t.run(&["SCAN", &cursor, "COUNT", "7"]) else {
                panic!()
            };
            let Reply::Bulk(c) = &r[0] else { panic!() };
            cursor = String::from_utf8_lossy(c).into_owned();
            seen.extend(sorted(r[1].clone()));
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(cursor, "0");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 500);
        let Reply::Array(r) = t.run(&["SCAN", "0", "MATCH", "key:1?", "COUNT", "1000"]) else {
            panic!()
        };
        assert_eq!(sorted(r[1].clone()).len(), 10);
        let Reply::Array(r) = t.run(&["SCAN", "0", "TYPE", "list", "COUNT", "1000"]) else {
            panic!()
        };
        assert_eq!(r[1], Reply::Array(vec![]));
        assert_eq!(t.run(&["SCAN", "x"]), err("ERR invalid cursor"));
        assert_eq!(t.run(&["SCAN", "1 "]), err("ERR invalid cursor"));
        // strtoul reads "" as 0, as for HSCAN/SSCAN/ZSCAN.
        let Reply::Array(r) = t.run(&["SCAN", "", "COUNT", "1000"]) else {
            panic!("SCAN \"\" is a full scan from 0")
        };
        assert_eq!(r[0], bulk("0"));
        assert_eq!(t.run(&["SCAN", "0", "COUNT", "0"]), err("ERR syntax error"));
        assert_eq!(
            t.run(&["SCAN", "0", "COUNT", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(t.run(&["SCAN", "0", "MATCH"]), err("ERR syntax error"));
    }

    #[test]
    fn scan_survives_deletes_during_scan() {
        let mut t = TestClient::new();
        for i in 0..300 {
            t.run(&["SET", &format!("k{i}"), "v"]);
        }
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        let mut deleted = 0;
        for _ in 0..10_000 {
            let Reply::Array(r) = t.run(&["SCAN", &cursor, "COUNT", "5"]) else {
                panic!()
            };
            let Reply::Bulk(c) = &r[0] else { panic!() };
            cursor = String::from_utf8_lossy(c).into_owned();
            seen.extend(sorted(r[1].clone()));
            // Delete keys with an odd number, some before they are seen.
            if deleted < 150 {
                t.run(&["DEL", &format!("k{}", deleted * 2 + 1)]);
                deleted += 1;
            }
            if cursor == "0" {
                break;
            }
        }
        for i in (0..300).step_by(2) {
            assert!(seen.contains(&format!("k{i}")), "k{i} missed");
        }
    }

    #[test]
    fn randomkey() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["RANDOMKEY"]), Reply::Null);
        t.run(&["SET", "a", "1"]);
        t.run(&["SET", "b", "1"]);
        let r = t.run(&["RANDOMKEY"]);
        assert!(r == bulk("a") || r == bulk("b"));
    }

    #[test]
    fn rename_family() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["RENAME", "nokey", "x"]), err("ERR no such key"));
        assert_eq!(t.run(&["RENAMENX", "nokey", "x"]), err("ERR no such key"));
        assert_eq!(t.run(&["RENAME", "nokey", "nokey"]), err("ERR no such key"));
        t.run(&["SET", "a", "1", "EX", "100"]);
        assert_eq!(t.run(&["RENAME", "a", "a"]), ok());
        assert_eq!(t.run(&["RENAMENX", "a", "a"]), int(0));
        assert_eq!(t.run(&["RENAME", "a", "b"]), ok());
        assert_eq!(t.run(&["EXISTS", "a"]), int(0));
        assert_eq!(t.run(&["GET", "b"]), bulk("1"));
        assert_eq!(t.run(&["TTL", "b"]), int(100));
        t.run(&["SET", "c", "2"]);
        assert_eq!(t.run(&["RENAMENX", "b", "c"]), int(0));
        assert_eq!(t.run(&["RENAMENX", "b", "d"]), int(1));
        t.run(&["SET", "e", "3", "EX", "50"]);
        assert_eq!(t.run(&["RENAME", "c", "e"]), ok());
        assert_eq!(t.run(&["TTL", "e"]), int(-1));
        assert_eq!(t.run(&["GET", "e"]), bulk("2"));
    }

    #[test]
    fn copy_and_move() {
        let mut t = TestClient::new();
        t.run(&["SET", "a", "v", "EX", "100"]);
        assert_eq!(t.run(&["COPY", "a", "b"]), int(1));
        assert_eq!(t.run(&["TTL", "b"]), int(100));
        t.run(&["SET", "b", "other"]);
        assert_eq!(t.run(&["COPY", "a", "b"]), int(0));
        assert_eq!(t.run(&["COPY", "a", "b", "REPLACE"]), int(1));
        assert_eq!(t.run(&["GET", "b"]), bulk("v"));
        assert_eq!(t.run(&["COPY", "nokey", "b"]), int(0));
        assert_eq!(
            t.run(&["COPY", "a", "a"]),
            err("ERR source and destination objects are the same")
        );
        assert_eq!(t.run(&["COPY", "a", "a", "DB", "1"]), int(1));
        assert_eq!(
            t.run(&["COPY", "a", "b", "DB", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["COPY", "a", "b", "DB", "16"]),
            err("ERR DB index is out of range")
        );
        assert_eq!(t.run(&["COPY", "a", "b", "FOO"]), err("ERR syntax error"));
        assert_eq!(t.run(&["COPY", "a", "b", "DB"]), err("ERR syntax error"));
        t.run(&["SELECT", "1"]);
        assert_eq!(t.run(&["GET", "a"]), bulk("v"));
        assert_eq!(t.run(&["TTL", "a"]), int(100));
        t.run(&["SELECT", "0"]);

        t.run(&["SET", "m", "1", "EX", "100"]);
        assert_eq!(
            t.run(&["MOVE", "m", "0"]),
            err("ERR source and destination objects are the same")
        );
        assert_eq!(
            t.run(&["MOVE", "m", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            t.run(&["MOVE", "m", "99"]),
            err("ERR DB index is out of range")
        );
        assert_eq!(t.run(&["MOVE", "m", "2"]), int(1));
        assert_eq!(t.run(&["EXISTS", "m"]), int(0));
        assert_eq!(t.run(&["MOVE", "nokey", "2"]), int(0));
        t.run(&["SET", "m", "2"]);
        assert_eq!(t.run(&["MOVE", "m", "2"]), int(0));
        t.run(&["SELECT", "2"]);
        assert_eq!(t.run(&["GET", "m"]), bulk("1"));
        assert_eq!(t.run(&["TTL", "m"]), int(100));
    }

    #[test]
    fn swapdb_and_watch() {
        let mut t = TestClient::new();
        let mut other = t.other();
        t.run(&["SET", "x", "db0"]);
        t.run(&["SELECT", "1"]);
        t.run(&["SET", "x", "db1"]);
        assert_eq!(t.run(&["WATCH", "x"]), ok());
        assert_eq!(other.run(&["SWAPDB", "0", "1"]), ok());
        t.run(&["MULTI"]);
        t.run(&["GET", "x"]);
        assert_eq!(t.run(&["EXEC"]), Reply::NullArray);
        assert_eq!(t.run(&["GET", "x"]), bulk("db0"));
        // A watched key absent from both databases is not touched.
        assert_eq!(t.run(&["WATCH", "absent"]), ok());
        assert_eq!(other.run(&["SWAPDB", "0", "1"]), ok());
        t.run(&["MULTI"]);
        t.run(&["PING"]);
        assert_eq!(t.run(&["EXEC"]), Reply::Array(vec![Reply::Status("PONG")]));
        // Nor one replaced by a key that only exists expired.
        other.run(&["SELECT", "0"]);
        other.run(&["SET", "stale", "v", "PX", "1"]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(t.run(&["WATCH", "stale"]), ok());
        assert_eq!(other.run(&["SWAPDB", "0", "1"]), ok());
        t.run(&["MULTI"]);
        t.run(&["PING"]);
        assert_eq!(t.run(&["EXEC"]), Reply::Array(vec![Reply::Status("PONG")]));
        assert_eq!(
            t.run(&["SWAPDB", "a", "1"]),
            err("ERR invalid first DB index")
        );
        assert_eq!(
            t.run(&["SWAPDB", "1", "b"]),
            err("ERR invalid second DB index")
        );
        assert_eq!(
            t.run(&["SWAPDB", "1", "100"]),
            err("ERR DB index is out of range")
        );
    }

    #[test]
    fn no_touch_reads_leave_the_idle_time_alone() {
        let _turn = crate::evict::access_mode_turn();
        let mut t = TestClient::new();
        t.run(&["SET", "k", "v"]);
        let age = |t: &TestClient| {
            let mut ks = t.store.keyspace.lock_all();
            let e = ks.get_mut(0, b"k", crate::clock::now_ms()).unwrap();
            e.access = crate::clock::lru_clock() - 100;
        };
        age(&t);
        assert_eq!(t.run(&["CLIENT", "NO-TOUCH", "on"]), ok());
        t.run(&["GET", "k"]);
        assert!(matches!(t.run(&["OBJECT", "IDLETIME", "k"]), Reply::Int(n) if n >= 100));
        // TOUCH still touches.
        t.run(&["TOUCH", "k"]);
        assert_eq!(t.run(&["OBJECT", "IDLETIME", "k"]), int(0));
        age(&t);
        assert_eq!(t.run(&["CLIENT", "NO-TOUCH", "off"]), ok());
        t.run(&["GET", "k"]);
        assert_eq!(t.run(&["OBJECT", "IDLETIME", "k"]), int(0));
    }

    #[test]
    fn touch_object_and_type() {
        let _turn = crate::evict::access_mode_turn();
        let mut t = TestClient::new();
        t.run(&["SET", "a", "1"]);
        t.run(&["SET", "s", "hello"]);
        t.run(&["SET", "l", &"x".repeat(50)]);
        assert_eq!(t.run(&["TOUCH", "a", "nokey", "s"]), int(2));
        assert_eq!(t.run(&["OBJECT", "ENCODING", "a"]), bulk("int"));
        assert_eq!(t.run(&["OBJECT", "ENCODING", "s"]), bulk("embstr"));
        assert_eq!(t.run(&["OBJECT", "ENCODING", "l"]), bulk("raw"));
        assert_eq!(t.run(&["OBJECT", "ENCODING", "nokey"]), Reply::Null);
        assert_eq!(t.run(&["OBJECT", "IDLETIME", "s"]), int(0));
        assert_eq!(t.run(&["OBJECT", "REFCOUNT", "a"]), int(2147483647));
        assert_eq!(t.run(&["OBJECT", "REFCOUNT", "s"]), int(1));
        assert_eq!(t.run(&["OBJECT", "FREQ", "nokey"]), Reply::Null);
        assert_eq!(t.run(&["OBJECT", "FREQ", "s"]), err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
        t.run(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]);
        // A key written under LFU starts at Redis's LFU_INIT_VAL; its counter, not
        // its LRU clock, is what FREQ reads.
        t.run(&["SET", "f", "x"]);
        assert_eq!(t.run(&["OBJECT", "FREQ", "f"]), int(5));
        assert_eq!(t.run(&["OBJECT", "IDLETIME", "s"]), err("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
        assert_eq!(t.run(&["OBJECT", "IDLETIME", "nokey"]), Reply::Null);
        // Shared integers: not under a limit with an LRU/LFU policy.
        t.run(&["CONFIG", "SET", "maxmemory", "1gb"]);
        assert_eq!(t.run(&["OBJECT", "REFCOUNT", "a"]), int(1));
        t.run(&["CONFIG", "SET", "maxmemory-policy", "allkeys-random"]);
        assert_eq!(t.run(&["OBJECT", "REFCOUNT", "a"]), int(2147483647));
        t.run(&["CONFIG", "SET", "maxmemory", "0"]);
        t.run(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        assert_eq!(
            t.run(&["OBJECT", "NOPE", "s"]),
            err("ERR unknown subcommand 'NOPE'. Try OBJECT HELP.")
        );
        assert!(matches!(t.run(&["OBJECT", "HELP"]), Reply::Array(v) if v.len() == 15));
        assert_eq!(t.run(&["TYPE", "s"]), Reply::Status("string"));
        assert_eq!(t.run(&["TYPE", "nokey"]), Reply::Status("none"));
    }

    #[test]
    fn expire_options_and_errors() {
        let mut t = TestClient::new();
        t.run(&["SET", "k", "v"]);
        assert_eq!(t.run(&["EXPIRE", "k", "100", "XX"]), int(0));
        assert_eq!(t.run(&["EXPIRE", "k", "100", "GT"]), int(0));
        assert_eq!(t.run(&["EXPIRE", "k", "100", "NX"]), int(1));
        assert_eq!(t.run(&["EXPIRE", "k", "200", "NX"]), int(0));
        assert_eq!(t.run(&["EXPIRE", "k", "50", "GT"]), int(0));
        assert_eq!(t.run(&["EXPIRE", "k", "200", "GT"]), int(1));
        assert_eq!(t.run(&["EXPIRE", "k", "300", "LT"]), int(0));
        assert_eq!(t.run(&["TTL", "k"]), int(200));
        assert_eq!(
            t.run(&["EXPIRE", "k", "100", "NX", "XX"]),
            err("ERR NX and XX, GT or LT options at the same time are not compatible")
        );
        assert_eq!(
            t.run(&["EXPIRE", "k", "100", "GT", "LT"]),
            err("ERR GT and LT options at the same time are not compatible")
        );
        assert_eq!(
            t.run(&["EXPIRE", "k", "100", "FOO"]),
            err("ERR Unsupported option FOO")
        );
        assert_eq!(
            t.run(&["EXPIRE", "k", "9223372036854775807"]),
            err("ERR invalid expire time in 'expire' command")
        );
        assert_eq!(
            t.run(&["EXPIRE", "k", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(t.run(&["PERSIST", "k"]), int(1));
        assert_eq!(t.run(&["PERSIST", "k"]), int(0));
        assert_eq!(t.run(&["TTL", "k"]), int(-1));
        assert_eq!(t.run(&["TTL", "nokey"]), int(-2));
        assert_eq!(t.run(&["PEXPIREAT", "k", "4000000000600"]), int(1));
        assert_eq!(t.run(&["EXPIRETIME", "k"]), int(4000000001));
        assert_eq!(t.run(&["PEXPIRETIME", "k"]), int(4000000000600));
        assert_eq!(t.run(&["EXPIRE", "k", "-1"]), int(1));
        assert_eq!(t.run(&["EXISTS", "k"]), int(0));
        assert_eq!(t.run(&["EXPIRE", "nokey", "10"]), int(0));
    }

    /// Subscribes another client to every keyevent channel; returns a drain function.
    fn keyevents(t: &mut TestClient) -> impl FnMut() -> Vec<String> {
        t.run(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
        let mut sub = t.other();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        sub.client.info.set_push_channel(tx);
        sub.run(&["PSUBSCRIBE", "__keyevent@*"]);
        move || {
            let _keep = &sub;
            let mut out = Vec::new();
            while let Ok((r, _)) = rx.try_recv() {
                if let Reply::Push(v) = r {
                    if let (Some(Reply::Bulk(ch)), Some(Reply::Bulk(msg))) = (v.get(2), v.get(3)) {
                        out.push(format!(
                            "{} {}",
                            String::from_utf8_lossy(ch),
                            String::from_utf8_lossy(msg)
                        ));
                    }
                }
            }
            out
        }
    }

    #[test]
    fn move_copy_rename_events() {
        let mut t = TestClient::new();
        let mut drain = keyevents(&mut t);
        t.run(&["SET", "a", "1"]);
        t.run(&["RENAME", "a", "b"]);
        t.run(&["COPY", "b", "c", "DB", "3"]);
        t.run(&["MOVE", "b", "5"]);
        assert_eq!(
            drain(),
            [
                "__keyevent@0__:set a",
                "__keyevent@0__:rename_from a",
                "__keyevent@0__:rename_to b",
                "__keyevent@3__:copy_to c",
                "__keyevent@0__:move_from b",
                "__keyevent@5__:move_to b",
            ]
        );
        t.run(&["CONFIG", "SET", "notify-keyspace-events", "En"]);
        t.run(&["SET", "x", "1"]);
        t.run(&["SET", "x", "2"]);
        t.run(&["SETBIT", "y", "1", "1"]);
        assert_eq!(drain(), ["__keyevent@0__:new x", "__keyevent@0__:new y"]);
    }

    #[test]
    fn moving_a_list_wakes_clients_blocked_on_the_destination() {
        use crate::value::{Entry, Value};
        use bytes::Bytes;
        let mut t = TestClient::new();
        let put = |t: &TestClient, db: usize, key: &'static str| {
            let mut ks = t.store.keyspace.lock_all();
            ks.insert(
                db,
                Bytes::from_static(key.as_bytes()),
                Entry::new(Value::List(Box::default())),
            );
        };
        let wait = |t: &TestClient, db: usize, key: &'static str| {
            t.store
                .blocking
                .register(99, &[(db, Bytes::from_static(key.as_bytes()))], None)
        };
        put(&t, 0, "l");
        let w = wait(&t, 0, "dst");
        assert_eq!(t.run(&["RENAME", "l", "dst"]), ok());
        assert!(w.take_wakeup());
        let w = wait(&t, 4, "dst");
        assert_eq!(t.run(&["COPY", "dst", "dst", "DB", "4"]), int(1));
        assert!(w.take_wakeup());
        let w = wait(&t, 6, "dst");
        assert_eq!(t.run(&["MOVE", "dst", "6"]), int(1));
        assert!(w.take_wakeup());
        put(&t, 7, "s");
        let w = wait(&t, 8, "s");
        assert_eq!(t.run(&["SWAPDB", "7", "8"]), ok());
        assert!(w.take_wakeup());
        // A string does not wake anyone.
        t.run(&["SET", "str", "v"]);
        let w = wait(&t, 0, "str2");
        t.run(&["RENAME", "str", "str2"]);
        assert!(!w.take_wakeup());
    }

    #[test]
    fn del_unlink_exists_pttl() {
        let mut t = TestClient::new();
        t.run(&["MSET", "a", "1", "b", "2", "c", "3"]);
        assert_eq!(t.run(&["EXISTS", "a", "a", "nokey", "b"]), int(3));
        assert_eq!(t.run(&["DEL", "a", "a", "nokey"]), int(1));
        assert_eq!(t.run(&["UNLINK", "b", "c"]), int(2));
        assert_eq!(t.run(&["EXISTS", "a", "b", "c"]), int(0));
        assert_eq!(t.run(&["PTTL", "nokey"]), int(-2));
        t.run(&["SET", "a", "1", "PX", "100000"]);
        let Reply::Int(ms) = t.run(&["PTTL", "a"]) else {
            panic!()
        };
        assert!(ms > 99_000 && ms <= 100_000);
        assert_eq!(
            t.run(&["DEL"]),
            err("ERR wrong number of arguments for 'del' command")
        );
    }

    #[test]
    fn scan_guarantee_under_random_writes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut t = TestClient::new();
        // Keys 0..400 stay for the whole scan; 400.. come and go.
        for i in 0..400 {
            t.run(&["SET", &format!("stable{i}"), "v"]);
        }
        for round in 0..5 {
            let mut cursor = "0".to_string();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..100_000 {
                let count = rng.gen_range(1..20).to_string();
                let Reply::Array(r) = t.run(&["SCAN", &cursor, "COUNT", &count]) else {
                    panic!()
                };
                let Reply::Bulk(c) = &r[0] else { panic!() };
                cursor = String::from_utf8_lossy(c).into_owned();
                seen.extend(sorted(r[1].clone()));
                for _ in 0..rng.gen_range(0..10) {
                    let k = format!("volatile{}", rng.gen_range(0..300));
                    if rng.gen_bool(0.5) {
                        t.run(&["SET", &k, "v"]);
                    } else {
                        t.run(&["DEL", &k]);
                    }
                }
                if cursor == "0" {
                    break;
                }
            }
            assert_eq!(cursor, "0", "round {round} did not finish");
            for i in 0..400 {
                assert!(
                    seen.contains(&format!("stable{i}")),
                    "round {round}: stable{i} missed"
                );
            }
        }
    }
}
