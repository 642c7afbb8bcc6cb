//! String commands: GET/SET and their variants, counters, ranges, LCS and multi-key
//! get/set. Bit-level commands live in `bitops.rs`.

use bytes::{Bytes, BytesMut};
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::config::notify;
use crate::error::{CmdError, CmdResult};
use crate::exec::{read_string, Ctx};
use crate::families::longdouble::LongDouble;
use crate::num;
use crate::str_value::StrValue;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("string");
    vec![
        s(cmd("get", 2, READONLY | FAST, keys(1, 1, 1), get).summary("Returns the string value of a key.")),
        s(cmd("set", -3, WRITE | DENYOOM, keys(1, 1, 1), set).key_roles(KeyRoles::WriteAndReadIfGet).summary("Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.")),
        s(cmd("setnx", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), setnx).key_roles(KeyRoles::Each(&[kf::OW | kf::INSERT])).summary("Set the string value of a key only when the key doesn't exist.")),
        s(cmd("setex", 4, WRITE | DENYOOM, keys(1, 1, 1), setex).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE])).summary("Sets the string value and expiration time of a key. Creates the key if it doesn't exist.")),
        s(cmd("psetex", 4, WRITE | DENYOOM, keys(1, 1, 1), psetex).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE])).summary("Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.")),
        s(cmd("getset", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), getset).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Returns the previous string value of a key after setting it to a new value.")),
        s(cmd("getdel", 2, WRITE | FAST, keys(1, 1, 1), getdel).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns the string value of a key after deleting the key.")),
        s(cmd("getex", -2, WRITE | FAST, keys(1, 1, 1), getex).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Returns the string value of a key after setting its expiration time.")),
        s(cmd("incr", 2, WRITE | DENYOOM | FAST, keys(1, 1, 1), incr).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("decr", 2, WRITE | DENYOOM | FAST, keys(1, 1, 1), decr).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("incrby", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), incrby).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("decrby", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), decrby).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("incrbyfloat", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), incrbyfloat).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.")),
        s(cmd("mget", -2, READONLY | FAST, keys(1, -1, 1), mget).summary("Atomically returns the string values of one or more keys.")),
        s(cmd("mset", -3, WRITE | DENYOOM, keys(1, -1, 2), mset).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE])).summary("Atomically creates or modifies the string values of one or more keys.")),
        s(cmd("msetnx", -3, WRITE | DENYOOM, keys(1, -1, 2), msetnx).key_roles(KeyRoles::Each(&[kf::OW | kf::INSERT])).summary("Atomically modifies the string values of one or more keys only when all keys don't exist.")),
        s(cmd("append", 3, WRITE | DENYOOM | FAST, keys(1, 1, 1), append).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Appends a string to the value of a key. Creates the key if it doesn't exist.")),
        s(cmd("strlen", 2, READONLY | FAST, keys(1, 1, 1), strlen).key_roles(KeyRoles::Each(&[kf::RO])).summary("Returns the length of a string value.")),
        s(cmd("getrange", 4, READONLY, keys(1, 1, 1), getrange).summary("Returns a substring of the string stored at a key.")),
        s(cmd("substr", 4, READONLY, keys(1, 1, 1), getrange).summary("Returns a substring from a string value.")),
        s(cmd("setrange", 4, WRITE | DENYOOM, keys(1, 1, 1), setrange).summary("Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.")),
        s(cmd("lcs", -3, READONLY, keys(1, 2, 1), lcs).summary("Finds the longest common substring.")),
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

/// Raises a keyspace notification in database `db` (MOVE and COPY … DB notify in
/// the destination database, not the client's).
pub fn notify_in(ctx: &mut Ctx<'_>, db: usize, class: u32, event: &'static str, key: &[u8]) {
    let flags = ctx.store.config.notify_flags();
    if flags & class != 0 && flags & (notify::KEYSPACE | notify::KEYEVENT) != 0 {
        ctx.ev
            .notifications
            .push((class, event, db, Bytes::copy_from_slice(key)));
    }
}

/// Stores `entry` under an owned copy of `key` (never a slice of the read buffer),
/// raising Redis's `new` event when the key did not exist.
pub fn store_key(ctx: &mut Ctx<'_>, db: usize, key: &[u8], entry: Entry) {
    if ctx.ks.upsert(db, key, entry).is_none() {
        notify_in(ctx, db, notify::NEW, "new", key);
    }
}

/// The largest string Redis lets a command build (`proto-max-bulk-len`).
pub fn check_string_length(ctx: &Ctx<'_>, size: u64, append: u64) -> Result<(), CmdError> {
    let max = ctx
        .store
        .config
        .proto_max_bulk_len
        .load(std::sync::atomic::Ordering::Relaxed);
    match size.checked_add(append) {
        Some(total) if total <= max => Ok(()),
        _ => Err(CmdError::err(
            "string exceeds maximum allowed size (proto-max-bulk-len)",
        )),
    }
}

/// Runs `f` on a string value in place: the buffer is reused when nothing else
/// shares it (a reply still being written may), otherwise copied once.
pub fn edit_bytes<R>(b: &mut StrValue, f: impl FnOnce(&mut BytesMut) -> R) -> R {
    let mut m = match std::mem::take(b) {
        StrValue::Shared(shared) => BytesMut::from(shared),
        inline => BytesMut::from(inline.as_slice()),
    };
    let r = f(&mut m);
    *b = StrValue::from(m.freeze());
    r
}

/// The string stored at `key` for modification: `Ok(None)` if absent, WRONGTYPE if
/// it holds another type.
pub fn string_mut<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c mut Entry>, CmdError> {
    let db = ctx.db();
    let now = ctx.now;
    match ctx.ks.get_mut(db, key, now) {
        None => Ok(None),
        Some(e) => match e.value {
            Value::Str(_) => Ok(Some(e)),
            #[allow(unreachable_patterns)]
            _ => Err(CmdError::WrongType),
        },
    }
}

/// The bytes of a string entry (callers have checked the type).
pub fn str_bytes(e: &mut Entry) -> &mut StrValue {
    match &mut e.value {
        Value::Str(b) => b,
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by string_mut"),
    }
}

/// SET's and GETEX's options, as Redis's `parseExtendedStringArgumentsOrReply` reads
/// them: conflicting options are a syntax error; repeating the same one is not.
struct StrOpts<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// (option name upper-cased, its argument)
    expire: Option<(&'static str, &'a Bytes)>,
}

fn parse_str_opts<'a>(args: &mut Args<'a>, for_set: bool) -> Result<StrOpts<'a>, CmdError> {
    let mut o = StrOpts {
        nx: false,
        xx: false,
        get: false,
        keepttl: false,
        persist: false,
        expire: None,
    };
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        let upper = opt.to_ascii_uppercase();
        let other_expire = |name: &str| o.expire.is_some_and(|(n, _)| n != name);
        match upper.as_slice() {
            b"NX" if for_set && !o.xx => o.nx = true,
            b"XX" if for_set && !o.nx => o.xx = true,
            b"GET" if for_set => o.get = true,
            b"KEEPTTL" if for_set && !o.persist && o.expire.is_none() => o.keepttl = true,
            b"PERSIST" if !for_set && o.expire.is_none() && !o.keepttl => o.persist = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                let name = match upper.as_slice() {
                    b"EX" => "EX",
                    b"PX" => "PX",
                    b"EXAT" => "EXAT",
                    _ => "PXAT",
                };
                if o.keepttl || o.persist || other_expire(name) || args.is_empty() {
                    return Err(CmdError::Syntax);
                }
                o.expire = Some((name, args.next_bytes()?));
            }
            _ => return Err(CmdError::Syntax),
        }
    }
    Ok(o)
}

/// Resolves an EX/PX/EXAT/PXAT option to absolute unix milliseconds.
fn resolve_expire(ctx: &Ctx<'_>, opt: Option<(&str, &Bytes)>) -> Result<Option<u64>, CmdError> {
    let Some((name, arg)) = opt else {
        return Ok(None);
    };
    let (unit, abs) = match name {
        "EX" => (1000, false),
        "PX" => (1, false),
        "EXAT" => (1000, true),
        _ => (1, true),
    };
    expire_arg(ctx, arg, unit, abs).map(Some)
}

/// What SET and its variants did.
enum SetOutcome {
    /// Not set because of NX/XX; carries the old value when GET was asked.
    Skipped(Option<Bytes>),
    Done(Option<Bytes>),
}

/// The core of SET, SETNX, SETEX, PSETEX: `expire` is absolute ms or KEEPTTL.
fn set_generic(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    value: &Bytes,
    nx: bool,
    xx: bool,
    want_get: bool,
    expire: ExpireOpt,
) -> Result<SetOutcome, CmdError> {
    let db = ctx.db();
    let now = ctx.now;
    // The old value is copied out only for SET … GET: cloning it is not free.
    let (exists, old_expire, old_value) = match ctx.ks.get(db, key, now) {
        None => (false, 0, None),
        Some(e) => match &e.value {
            Value::Str(b) => (true, e.expire_at, want_get.then(|| b.to_bytes())),
            #[allow(unreachable_patterns)]
            _ if want_get => return Err(CmdError::WrongType),
            _ => (true, e.expire_at, None),
        },
    };
    if (nx && exists) || (xx && !exists) {
        return Ok(SetOutcome::Skipped(old_value));
    }
    let expire_at = match expire {
        ExpireOpt::At(t) => t,
        ExpireOpt::KeepTtl => old_expire,
        _ => 0,
    };
    store_key(
        ctx,
        db,
        key,
        Entry::with_expiry(Value::Str(StrValue::copy_from_slice(value)), expire_at),
    );
    ctx.dirty(1);
    ctx.notify(notify::STRING, "set", key);
    if let ExpireOpt::At(_) = expire {
        ctx.notify(notify::GENERIC, "expire", key);
    }
    if !ctx.store.logging() {
        // Nothing reads log records: skip building one.
        ctx.propagate_nothing();
    } else if let ExpireOpt::At(at) = expire {
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
    Ok(SetOutcome::Done(old_value))
}

fn set(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    let o = parse_str_opts(args, true)?;
    let expire = match resolve_expire(ctx, o.expire)? {
        Some(at) => ExpireOpt::At(at),
        None if o.keepttl => ExpireOpt::KeepTtl,
        None => ExpireOpt::None,
    };
    Ok(
        match set_generic(ctx, key, value, o.nx, o.xx, o.get, expire)? {
            SetOutcome::Skipped(old) | SetOutcome::Done(old) if o.get => old.into(),
            SetOutcome::Skipped(_) => Reply::Null,
            SetOutcome::Done(_) => Reply::ok(),
        },
    )
}

fn setnx(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    Ok(
        match set_generic(ctx, key, value, true, false, false, ExpireOpt::None)? {
            SetOutcome::Skipped(_) => Reply::Int(0),
            SetOutcome::Done(_) => Reply::Int(1),
        },
    )
}

fn setex_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, unit_ms: i64) -> CmdResult {
    let key = args.next_bytes()?;
    let at = expire_arg(ctx, args.next_bytes()?, unit_ms, false)?;
    let value = args.next_bytes()?;
    set_generic(ctx, key, value, false, false, false, ExpireOpt::At(at))?;
    Ok(Reply::ok())
}

fn setex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    setex_generic(ctx, args, 1000)
}

fn psetex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    setex_generic(ctx, args, 1)
}

fn getset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    let old = read_string(ctx, key)?;
    set_generic(ctx, key, value, false, false, false, ExpireOpt::None)?;
    Ok(old.into())
}

fn getdel(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let old = read_string(ctx, key)?;
    if old.is_some() {
        let db = ctx.db();
        ctx.ks.remove(db, key);
        ctx.dirty(1);
        ctx.notify(notify::GENERIC, "del", key);
        ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
    }
    Ok(old.into())
}

fn getex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let o = parse_str_opts(args, false)?;
    let Some(value) = read_string(ctx, key)? else {
        return Ok(Reply::Null);
    };
    let at = resolve_expire(ctx, o.expire)?;
    let db = ctx.db();
    let now = ctx.now;
    if let Some(at) = at {
        if at <= now {
            // An EXAT/PXAT in the past deletes the key (relative times are > now).
            ctx.ks.remove(db, key);
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "del", key);
            ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
        } else {
            ctx.ks.set_expire(db, key, at);
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "expire", key);
            ctx.propagate(vec![
                Bytes::from_static(b"PEXPIREAT"),
                key.clone(),
                num::i64_to_bytes(at as i64),
            ]);
        }
    } else if o.persist && ctx.ks.get(db, key, now).is_some_and(|e| e.expire_at != 0) {
        ctx.ks.set_expire(db, key, 0);
        ctx.dirty(1);
        ctx.notify(notify::GENERIC, "persist", key);
        ctx.propagate(vec![Bytes::from_static(b"PERSIST"), key.clone()]);
    }
    Ok(Reply::Bulk(value))
}

/// Adds `delta` to the integer stored at `key`, keeping its TTL.
pub fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) -> CmdResult {
    let db = ctx.db();
    let now = ctx.now;
    let new = match ctx.ks.get_mut(db, key, now) {
        // Updated in place: one lookup, and the TTL stays as it is.
        Some(e) => {
            let new = match &e.value {
                Value::Str(b) => num::parse_i64(b)
                    .ok_or(CmdError::NotInteger)?
                    .checked_add(delta)
                    .ok_or(CmdError::Overflow)?,
                #[allow(unreachable_patterns)]
                _ => return Err(CmdError::WrongType),
            };
            e.value = Value::Str(StrValue::from_i64(new));
            if !crate::evict::lfu_mode() {
                // What replacing the entry would have done (LFU keeps its counter).
                e.access = crate::evict::initial_access();
            }
            new
        }
        None => {
            store_key(
                ctx,
                db,
                key,
                Entry::new(Value::Str(StrValue::from_i64(delta))),
            );
            delta
        }
    };
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

/// Redis reads at most this many characters as a long double.
const MAX_LONG_DOUBLE_CHARS: usize = 5 * 1024;

/// INCRBYFLOAT's sum exactly as Redis computes and prints it (long double
/// arithmetic, `%.17Lf`): see [`LongDouble`].
pub fn add_float_strings(a: &[u8], b: &[u8]) -> Result<String, CmdError> {
    let parse = |s: &[u8]| -> Result<Option<LongDouble>, CmdError> {
        if s.len() > MAX_LONG_DOUBLE_CHARS {
            return Err(CmdError::NotFloat);
        }
        match LongDouble::parse(s) {
            Some(v) => Ok(Some(v)),
            // Only infinities are valid floats the emulation does not represent.
            None => match num::parse_f64(s) {
                Some(f) if f.is_infinite() => Ok(None),
                _ => Err(CmdError::NotFloat),
            },
        }
    };
    let nan_or_inf = || CmdError::err("increment would produce NaN or Infinity");
    match (parse(a)?, parse(b)?) {
        (Some(x), Some(y)) => Ok(x.checked_add(y).ok_or_else(nan_or_inf)?.to_human()),
        _ => Err(nan_or_inf()),
    }
}

fn incrbyfloat(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let incr = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    let (current, expire_at) = match ctx.ks.get(db, key, now) {
        None => (Bytes::from_static(b"0"), 0),
        Some(e) => match &e.value {
            Value::Str(b) => (b.to_bytes(), e.expire_at),
            #[allow(unreachable_patterns)]
            _ => return Err(CmdError::WrongType),
        },
    };
    let new = Bytes::from(add_float_strings(&current, incr)?);
    store_key(
        ctx,
        db,
        key,
        Entry::with_expiry(Value::Str(new.clone().into()), expire_at),
    );
    ctx.dirty(1);
    ctx.notify(notify::STRING, "incrbyfloat", key);
    // Logged as the final value so float formatting can never make a replay differ.
    ctx.propagate(vec![
        Bytes::from_static(b"SET"),
        key.clone(),
        new.clone(),
        Bytes::from_static(b"KEEPTTL"),
    ]);
    Ok(Reply::Bulk(new))
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
            }) => Reply::Bulk(b.to_bytes()),
            _ => Reply::Null,
        });
    }
    Ok(Reply::Array(out))
}

fn mset_pairs<'a>(ctx: &Ctx<'_>, args: &mut Args<'a>) -> Result<&'a [Bytes], CmdError> {
    if !args.remaining().is_multiple_of(2) {
        return Err(CmdError::WrongArity(ctx.cmd.full_name.clone()));
    }
    Ok(args.rest())
}

fn mset_all(ctx: &mut Ctx<'_>, pairs: &[Bytes]) {
    let db = ctx.db();
    for kv in pairs.chunks(2) {
        store_key(
            ctx,
            db,
            &kv[0],
            Entry::new(Value::Str(StrValue::copy_from_slice(&kv[1]))),
        );
        ctx.notify(notify::STRING, "set", &kv[0]);
    }
    ctx.dirty(pairs.len() as u64 / 2);
}

fn mset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let pairs = mset_pairs(ctx, args)?;
    mset_all(ctx, pairs);
    Ok(Reply::ok())
}

fn msetnx(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let pairs = mset_pairs(ctx, args)?;
    let db = ctx.db();
    let now = ctx.now;
    for kv in pairs.chunks(2) {
        if ctx.ks.get(db, &kv[0], now).is_some() {
            return Ok(Reply::Int(0));
        }
    }
    mset_all(ctx, pairs);
    Ok(Reply::Int(1))
}

fn append(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let tail = args.next_bytes()?;
    let current_len = string_mut(ctx, key)?.map(|e| str_bytes(e).len() as u64);
    let new_len = match current_len {
        None => {
            let db = ctx.db();
            store_key(
                ctx,
                db,
                key,
                Entry::new(Value::Str(StrValue::copy_from_slice(tail))),
            );
            tail.len()
        }
        Some(len) => {
            check_string_length(ctx, len, tail.len() as u64)?;
            let e = string_mut(ctx, key)?.expect("present");
            edit_bytes(str_bytes(e), |m| {
                m.extend_from_slice(tail);
                m.len()
            })
        }
    };
    ctx.dirty(1);
    ctx.notify(notify::STRING, "append", key);
    Ok(Reply::Int(new_len as i64))
}

fn strlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Int(
        read_string(ctx, key)?.map_or(0, |b| b.len() as i64),
    ))
}

fn getrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let mut start = args.next_i64()?;
    let mut end = args.next_i64()?;
    let Some(s) = read_string(ctx, key)? else {
        return Ok(Reply::Bulk(Bytes::new()));
    };
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Bulk(Bytes::new()));
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return Ok(Reply::Bulk(Bytes::new()));
    }
    Ok(Reply::Bulk(s.slice(start as usize..=end as usize)))
}

fn setrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let offset = args.next_i64()?;
    let value = args.next_bytes()?;
    if offset < 0 {
        return Err(CmdError::err("offset is out of range"));
    }
    let offset = offset as u64;
    let current_len = string_mut(ctx, key)?.map(|e| str_bytes(e).len());
    let Some(len) = current_len else {
        if value.is_empty() {
            return Ok(Reply::Int(0));
        }
        check_string_length(ctx, offset, value.len() as u64)?;
        let mut buf = vec![0u8; offset as usize + value.len()];
        buf[offset as usize..].copy_from_slice(value);
        let db = ctx.db();
        store_key(ctx, db, key, Entry::new(Value::Str(buf.into())));
        ctx.dirty(1);
        ctx.notify(notify::STRING, "setrange", key);
        return Ok(Reply::Int((offset as usize + value.len()) as i64));
    };
    if value.is_empty() {
        return Ok(Reply::Int(len as i64));
    }
    check_string_length(ctx, offset, value.len() as u64)?;
    let e = string_mut(ctx, key)?.expect("present");
    let new_len = edit_bytes(str_bytes(e), |m| {
        let end = offset as usize + value.len();
        if m.len() < end {
            m.resize(end, 0);
        }
        m[offset as usize..end].copy_from_slice(value);
        m.len()
    });
    ctx.dirty(1);
    ctx.notify(notify::STRING, "setrange", key);
    Ok(Reply::Int(new_len as i64))
}

fn lcs(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let ka = args.next_bytes()?;
    let kb = args.next_bytes()?;
    let db = ctx.db();
    let now = ctx.now;
    let mut strings = [Bytes::new(), Bytes::new()];
    for (slot, key) in strings.iter_mut().zip([ka, kb]) {
        match ctx.ks.lookup_read(db, key, now) {
            None => {}
            Some(Entry {
                value: Value::Str(b),
                ..
            }) => *slot = b.to_bytes(),
            #[allow(unreachable_patterns)]
            Some(_) => {
                return Err(CmdError::err(
                    "The specified keys must contain string values",
                ))
            }
        }
    }
    let (mut getidx, mut getlen, mut withmatchlen, mut minmatchlen) = (false, false, false, 0u64);
    while let Some(opt) = args.peek() {
        args.next_bytes()?;
        let upper = opt.to_ascii_uppercase();
        match upper.as_slice() {
            b"IDX" => getidx = true,
            b"LEN" => getlen = true,
            b"WITHMATCHLEN" => withmatchlen = true,
            b"MINMATCHLEN" if !args.is_empty() => minmatchlen = args.next_i64()?.max(0) as u64,
            _ => return Err(CmdError::Syntax),
        }
    }
    if getidx && getlen {
        return Err(CmdError::err(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    let [a, b] = strings;
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    let max = ctx
        .store
        .config
        .proto_max_bulk_len
        .load(std::sync::atomic::Ordering::Relaxed);
    if cells.saturating_mul(4) > max {
        return Err(CmdError::err(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    // table[i][j] = LCS length of a[..i] and b[..j].
    let w = blen + 1;
    let mut table = vec![0u32; cells as usize];
    for i in 1..=alen {
        for j in 1..=blen {
            table[i * w + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * w + j - 1] + 1
            } else {
                table[(i - 1) * w + j].max(table[i * w + j - 1])
            };
        }
    }
    let total = table[alen * w + blen];
    if getlen {
        return Ok(Reply::Int(total as i64));
    }
    // Walk back from the end, collecting the common string and the matching ranges
    // (from the end of the strings towards the start, as Redis reports them).
    let mut result = vec![0u8; total as usize];
    let mut idx = total as usize;
    let mut matches = Vec::new();
    let (mut i, mut j) = (alen, blen);
    // Current range: (a_start, a_end, b_start, b_end), None when not in a range.
    let mut range: Option<(usize, usize, usize, usize)> = None;
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            range = Some(match range {
                None => (i - 1, i - 1, j - 1, j - 1),
                Some((as_, ae, bs, be)) if as_ == i && bs == j => (as_ - 1, ae, bs - 1, be),
                Some(r) => {
                    emit = true;
                    r
                }
            });
            if let Some((as_, _, bs, _)) = range {
                if as_ == 0 || bs == 0 {
                    emit = true;
                }
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[(i - 1) * w + j] > table[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = range.is_some();
        }
        if emit {
            if let Some((as_, ae, bs, be)) = range.take() {
                let len = (ae - as_ + 1) as u64;
                if minmatchlen == 0 || len >= minmatchlen {
                    let mut m = vec![
                        Reply::Array(vec![Reply::Int(as_ as i64), Reply::Int(ae as i64)]),
                        Reply::Array(vec![Reply::Int(bs as i64), Reply::Int(be as i64)]),
                    ];
                    if withmatchlen {
                        m.push(Reply::Int(len as i64));
                    }
                    matches.push(Reply::Array(m));
                }
            }
        }
    }
    if getidx {
        return Ok(Reply::Map(vec![
            (Reply::bulk_str("matches"), Reply::Array(matches)),
            (Reply::bulk_str("len"), Reply::Int(total as i64)),
        ]));
    }
    Ok(Reply::Bulk(result.into()))
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

    #[test]
    fn set_variants() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["SETNX", "k", "1"]), int(1));
        assert_eq!(t.run(&["SETNX", "k", "2"]), int(0));
        assert_eq!(t.run(&["GET", "k"]), bulk("1"));
        assert_eq!(t.run(&["SETEX", "k", "100", "v"]), ok());
        assert_eq!(t.run(&["TTL", "k"]), int(100));
        assert_eq!(
            t.run(&["SETEX", "k", "0", "v"]),
            err("ERR invalid expire time in 'setex' command")
        );
        assert_eq!(
            t.run(&["PSETEX", "k", "-5", "v"]),
            err("ERR invalid expire time in 'psetex' command")
        );
        assert_eq!(t.run(&["PSETEX", "k", "100000", "w"]), ok());
        assert_eq!(t.run(&["TTL", "k"]), int(100));
        assert_eq!(t.run(&["SET", "k", "v", "EX", "10", "EX", "20"]), ok());
        assert_eq!(t.run(&["TTL", "k"]), int(20));
        assert_eq!(
            t.run(&["SET", "k", "v", "EX", "10", "KEEPTTL"]),
            err("ERR syntax error")
        );
        assert_eq!(
            t.run(&["SET", "k", "v", "PERSIST"]),
            err("ERR syntax error")
        );
        assert_eq!(t.run(&["SET", "k", "v", "EX"]), err("ERR syntax error"));
        assert_eq!(t.run(&["SET", "n", "v", "NX", "GET"]), Reply::Null);
        assert_eq!(t.run(&["SET", "n", "w", "NX", "GET"]), bulk("v"));
        assert_eq!(t.run(&["GET", "n"]), bulk("v"));
    }

    #[test]
    fn get_variants() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["GETSET", "k", "1"]), Reply::Null);
        t.run(&["EXPIRE", "k", "100"]);
        assert_eq!(t.run(&["GETSET", "k", "2"]), bulk("1"));
        assert_eq!(t.run(&["TTL", "k"]), int(-1));
        assert_eq!(t.run(&["GETDEL", "k"]), bulk("2"));
        assert_eq!(t.run(&["GETDEL", "k"]), Reply::Null);
        t.run(&["SET", "k", "v"]);
        assert_eq!(t.run(&["GETEX", "k", "EX", "100"]), bulk("v"));
        assert_eq!(t.run(&["TTL", "k"]), int(100));
        assert_eq!(t.run(&["GETEX", "k", "PERSIST"]), bulk("v"));
        assert_eq!(t.run(&["TTL", "k"]), int(-1));
        assert_eq!(t.run(&["GETEX", "k", "PX", "5000"]), bulk("v"));
        assert_eq!(t.run(&["TTL", "k"]), int(5));
        assert_eq!(t.run(&["GETEX", "k"]), bulk("v"));
        assert_eq!(t.run(&["TTL", "k"]), int(5));
        assert_eq!(
            t.run(&["GETEX", "k", "EX", "-1"]),
            err("ERR invalid expire time in 'getex' command")
        );
        assert_eq!(
            t.run(&["GETEX", "k", "EX", "10", "PERSIST"]),
            err("ERR syntax error")
        );
        assert_eq!(t.run(&["GETEX", "k", "KEEPTTL"]), err("ERR syntax error"));
        assert_eq!(t.run(&["GETEX", "nokey", "EX", "0"]), Reply::Null);
        assert_eq!(t.run(&["GETEX", "k", "EXAT", "1"]), bulk("v"));
        assert_eq!(t.run(&["EXISTS", "k"]), int(0));
    }

    #[test]
    fn msetnx_append_strlen_ranges() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["MSETNX", "a", "1", "b", "2"]), int(1));
        assert_eq!(t.run(&["MSETNX", "b", "3", "c", "4"]), int(0));
        assert_eq!(t.run(&["EXISTS", "c"]), int(0));
        assert_eq!(
            t.run(&["MSETNX", "a", "1", "b"]),
            err("ERR wrong number of arguments for 'msetnx' command")
        );
        assert_eq!(t.run(&["APPEND", "s", "hello"]), int(5));
        assert_eq!(t.run(&["APPEND", "s", " world"]), int(11));
        assert_eq!(t.run(&["STRLEN", "s"]), int(11));
        assert_eq!(t.run(&["STRLEN", "nokey"]), int(0));
        assert_eq!(t.run(&["GETRANGE", "s", "0", "4"]), bulk("hello"));
        assert_eq!(t.run(&["GETRANGE", "s", "-5", "-1"]), bulk("world"));
        assert_eq!(t.run(&["GETRANGE", "s", "-1", "-5"]), bulk(""));
        assert_eq!(t.run(&["GETRANGE", "s", "5", "100"]), bulk(" world"));
        assert_eq!(t.run(&["SUBSTR", "s", "0", "0"]), bulk("h"));
        assert_eq!(t.run(&["GETRANGE", "nokey", "0", "1"]), bulk(""));
        assert_eq!(t.run(&["SETRANGE", "s", "6", "WORLD"]), int(11));
        assert_eq!(t.run(&["GET", "s"]), bulk("hello WORLD"));
        assert_eq!(t.run(&["SETRANGE", "z", "3", "x"]), int(4));
        assert_eq!(t.run(&["GET", "z"]), bulk("\0\0\0x"));
        assert_eq!(t.run(&["SETRANGE", "nokey", "3", ""]), int(0));
        assert_eq!(t.run(&["EXISTS", "nokey"]), int(0));
        assert_eq!(t.run(&["SETRANGE", "s", "100", ""]), int(11));
        assert_eq!(
            t.run(&["SETRANGE", "s", "-1", "x"]),
            err("ERR offset is out of range")
        );
        assert_eq!(
            t.run(&["SETRANGE", "s", "536870911", "xx"]),
            err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        );
    }

    #[test]
    fn incrbyfloat() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "1"]), bulk("1"));
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "0.25"]), bulk("1.25"));
        t.run(&["SET", "f", "0.1"]);
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "0.2"]), bulk("0.3"));
        t.run(&["SET", "f", "10.50"]);
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "0.1"]), bulk("10.6"));
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "-5"]), bulk("5.6"));
        t.run(&["SET", "f", "5.0e3"]);
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "2.0e2"]), bulk("5200"));
        t.run(&["SET", "f", "1"]);
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "-1.1"]), bulk("-0.1"));
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "0.1"]), bulk("0"));
        t.run(&["SET", "f", "1000"]);
        assert_eq!(
            t.run(&["INCRBYFLOAT", "f", "0.1"]),
            bulk("1000.09999999999999998")
        );
        t.run(&["SET", "f", "1e308"]);
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "1e308"]), bulk("199999999999999999993371759311691291321120199694831134415594095989843469737676123744200253843777078640893494450108026446304269499187921167194841628860392837535918200039206381557326219209014213335878306791577877829121087126122536729803237260434173178506889763247582601711514636284849020905456510092687857156096"));
        t.run(&["SET", "f", "17179869184"]);
        assert_eq!(t.run(&["INCRBYFLOAT", "f", "1.5"]), bulk("17179869185.5"));
        assert_eq!(
            t.run(&["INCRBYFLOAT", "f", "+inf"]),
            err("ERR increment would produce NaN or Infinity")
        );
        assert_eq!(
            t.run(&["INCRBYFLOAT", "f", "abc"]),
            err("ERR value is not a valid float")
        );
        t.run(&["SET", "f", "1 "]);
        assert_eq!(
            t.run(&["INCRBYFLOAT", "f", "1"]),
            err("ERR value is not a valid float")
        );
        t.run(&["SET", "f", "1", "EX", "100"]);
        t.run(&["INCRBYFLOAT", "f", "1"]);
        assert_eq!(t.run(&["TTL", "f"]), int(100));
    }

    #[test]
    fn lcs() {
        let mut t = TestClient::new();
        t.run(&["MSET", "key1", "ohmytext", "key2", "mynewtext"]);
        assert_eq!(t.run(&["LCS", "key1", "key2"]), bulk("mytext"));
        assert_eq!(t.run(&["LCS", "key1", "key2", "LEN"]), int(6));
        let r = t.run(&[
            "LCS",
            "key1",
            "key2",
            "IDX",
            "MINMATCHLEN",
            "4",
            "WITHMATCHLEN",
        ]);
        assert_eq!(
            r,
            Reply::Map(vec![
                (
                    bulk("matches"),
                    Reply::Array(vec![Reply::Array(vec![
                        Reply::Array(vec![int(4), int(7)]),
                        Reply::Array(vec![int(5), int(8)]),
                        int(4)
                    ])])
                ),
                (bulk("len"), int(6))
            ])
        );
        let r = t.run(&["LCS", "key1", "key2", "IDX"]);
        let Reply::Map(m) = r else { panic!() };
        assert_eq!(
            m[0].1,
            Reply::Array(vec![
                Reply::Array(vec![
                    Reply::Array(vec![int(4), int(7)]),
                    Reply::Array(vec![int(5), int(8)])
                ]),
                Reply::Array(vec![
                    Reply::Array(vec![int(2), int(3)]),
                    Reply::Array(vec![int(0), int(1)])
                ])
            ])
        );
        assert_eq!(
            t.run(&["LCS", "key1", "key2", "IDX", "LEN"]),
            err("ERR If you want both the length and indexes, please just use IDX.")
        );
        assert_eq!(
            t.run(&["LCS", "key1", "key2", "FOO"]),
            err("ERR syntax error")
        );
        assert_eq!(t.run(&["LCS", "key1", "nokey"]), bulk(""));
    }

    #[test]
    fn wrong_type_everywhere() {
        use crate::value::{Entry, Value};
        use bytes::Bytes;
        let mut t = TestClient::new();
        t.store.keyspace.lock_all().insert(
            0,
            Bytes::from_static(b"l"),
            Entry::new(Value::List(Box::default())),
        );
        t.run(&["SET", "s", "abc"]);
        let wrongtype = err("WRONGTYPE Operation against a key holding the wrong kind of value");
        for cmd in [
            &["GET", "l"][..],
            &["GETSET", "l", "x"],
            &["GETDEL", "l"],
            &["GETEX", "l", "PERSIST"],
            &["SET", "l", "x", "GET"],
            &["APPEND", "l", "x"],
            &["STRLEN", "l"],
            &["GETRANGE", "l", "0", "1"],
            &["SETRANGE", "l", "0", "x"],
            &["INCR", "l"],
            &["INCRBYFLOAT", "l", "1"],
            &["SETBIT", "l", "0", "1"],
            &["GETBIT", "l", "0"],
            &["BITCOUNT", "l"],
            &["BITPOS", "l", "1"],
            &["BITOP", "AND", "d", "s", "l"],
            &["BITFIELD", "l", "GET", "u8", "0"],
            &["BITFIELD_RO", "l"],
        ] {
            assert_eq!(t.run(cmd), wrongtype, "{cmd:?}");
        }
        assert_eq!(
            t.run(&["LCS", "s", "l"]),
            err("ERR The specified keys must contain string values")
        );
        assert_eq!(
            t.run(&["MGET", "l", "s"]),
            Reply::Array(vec![Reply::Null, bulk("abc")])
        );
        assert_eq!(t.run(&["SET", "l", "x"]), ok());
        assert_eq!(t.run(&["GET", "l"]), bulk("x"));
    }
}
