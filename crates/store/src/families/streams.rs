//! Stream commands (Redis's `t_stream.c`): XADD and the range reads, XDEL/XTRIM/
//! XSETID, XREAD and XREADGROUP (blocking through `Ctx::block`), consumer groups
//! (XGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM) and XINFO. Values live in
//! [`crate::types::stream::StreamValue`].
//!
//! Writes reach the log deterministically, as Redis propagates them: generated
//! ids are logged as explicit ids, approximate trims as the exact trim they did,
//! and deliveries to a group as the XCLAIM / XGROUP SETID that reproduce them.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::blocking::BlockKind;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, Keys, NO_KEYS};
use crate::config::{notify, Limit};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::server::subcommand_syntax;
use crate::num;
use crate::types::stream::{
    Consumer, Group, NodeLimits, RefPolicy, StreamEntry, StreamId, StreamValue, Trim,
    ENTRIES_READ_INVALID,
};
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("stream");
    vec![
        s(cmd("xadd", -5, WRITE | DENYOOM | FAST, keys(1, 1, 1), xadd).summary("Appends a new message to a stream. Creates the key if it doesn't exist.")),
        s(cmd("xlen", 2, READONLY | FAST, keys(1, 1, 1), xlen).key_roles(KeyRoles::Each(&[kf::RO])).summary("Return the number of messages in a stream.")),
        s(cmd("xrange", -4, READONLY, keys(1, 1, 1), xrange).summary("Returns the messages from a stream within a range of IDs.")),
        s(cmd("xrevrange", -4, READONLY, keys(1, 1, 1), xrevrange).summary("Returns the messages from a stream within a range of IDs in reverse order.")),
        s(cmd("xdel", -3, WRITE | FAST, keys(1, 1, 1), xdel).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Returns the number of messages after removing them from a stream.")),
        s(cmd("xdelex", -5, WRITE | FAST, keys(1, 1, 1), xdelex).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Deletes one or multiple entries from the stream.")),
        s(cmd("xtrim", -4, WRITE, keys(1, 1, 1), xtrim).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Deletes messages from the beginning of a stream.")),
        s(cmd("xsetid", -3, WRITE | DENYOOM | FAST, keys(1, 1, 1), xsetid).summary("An internal command for replicating stream values.")),
        s(cmd("xread", -4, READONLY | BLOCKING | BLOCKS_ON_OPTION, Keys::Custom(xread_keys), xread)
            .blocks_on(BlockKind::Stream)
            .summary("Returns messages from multiple streams with IDs greater than the ones requested. Blocks until a message is available otherwise.")),
        s(cmd("xreadgroup", -7, WRITE | BLOCKING | BLOCKS_ON_OPTION, Keys::Custom(xread_keys), xreadgroup).key_roles(KeyRoles::Each(&[kf::RO | kf::ACCESS]))
            .blocks_on(BlockKind::StreamGroup)
            .summary("Returns new or historical messages from a stream for a consumer in a group. Blocks until a message is available otherwise.")),
        s(cmd("xack", -4, WRITE | FAST, keys(1, 1, 1), xack).summary("Returns the number of messages that were successfully acknowledged by the consumer group member of a stream.")),
        s(cmd("xackdel", -6, WRITE | FAST, keys(1, 1, 1), xackdel).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Acknowledges and conditionally deletes one or multiple entries for a stream consumer group.")),
        s(cmd("xpending", -3, READONLY, keys(1, 1, 1), xpending).summary("Returns the information and entries from a stream consumer group's pending entries list.")),
        s(cmd("xclaim", -6, WRITE | FAST, keys(1, 1, 1), xclaim).summary("Changes, or acquires, ownership of a message in a consumer group, as if the message was delivered a consumer group member.")),
        s(cmd("xautoclaim", -6, WRITE | FAST, keys(1, 1, 1), xautoclaim).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Changes, or acquires, ownership of messages in a consumer group, as if the messages were delivered to as consumer group member.")),
        s(cmd("xgroup", -2, NO_KEYSPACE, NO_KEYS, subcommand_missing).summary("A container for consumer groups commands.").subs(vec![
            cmd("create", -5, WRITE | DENYOOM, keys(2, 2, 1), xgroup_create).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Creates a consumer group."),
            cmd("setid", -5, WRITE, keys(2, 2, 1), xgroup_setid).summary("Sets the last-delivered ID of a consumer group."),
            cmd("destroy", 4, WRITE, keys(2, 2, 1), xgroup_destroy).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Destroys a consumer group."),
            cmd("createconsumer", 5, WRITE | DENYOOM, keys(2, 2, 1), xgroup_createconsumer).key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT])).summary("Creates a consumer in a consumer group."),
            cmd("delconsumer", 5, WRITE, keys(2, 2, 1), xgroup_delconsumer).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Deletes a consumer from a consumer group."),
            cmd("help", 2, LOADING | STALE | NO_KEYSPACE, NO_KEYS, xgroup_help).summary("Returns helpful text about the different subcommands."),
        ])),
        s(cmd("xinfo", -2, NO_KEYSPACE, NO_KEYS, subcommand_missing).summary("A container for stream introspection commands.").subs(vec![
            cmd("stream", -3, READONLY, keys(2, 2, 1), xinfo_stream).summary("Returns information about a stream."),
            cmd("groups", 3, READONLY, keys(2, 2, 1), xinfo_groups).summary("Returns a list of the consumer groups of a stream."),
            cmd("consumers", 4, READONLY, keys(2, 2, 1), xinfo_consumers).summary("Returns a list of the consumers in a consumer group."),
            cmd("help", 2, LOADING | STALE | NO_KEYSPACE, NO_KEYS, xinfo_help).summary("Returns helpful text about the different subcommands."),
        ])),
    ]
}

/// The keys of XREAD/XREADGROUP: the first half of what follows STREAMS.
fn xread_keys(argv: &[Bytes]) -> Vec<usize> {
    let Some(at) = argv
        .iter()
        .skip(1)
        .position(|a| a.eq_ignore_ascii_case(b"streams"))
        .map(|p| p + 2)
    else {
        return Vec::new();
    };
    let n = (argv.len() - at) / 2;
    (at..at + n).collect()
}

fn subcommand_missing(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity(ctx.cmd.full_name.clone()))
}

// ---- ids -------------------------------------------------------------------------

fn invalid_id() -> CmdError {
    CmdError::err("Invalid stream ID specified as stream command argument")
}

/// Redis's `streamGenericParseIDOrReply`: `ms[-seq]`, `-`/`+` unless `strict`;
/// a missing sequence is `missing_seq`. With `allow_star_seq`, `ms-*` parses
/// and the second value says the sequence was not given.
fn parse_id_full(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    allow_star_seq: bool,
) -> Result<(StreamId, bool), CmdError> {
    if arg.len() > 127 {
        return Err(invalid_id());
    }
    match arg {
        b"-" if !strict => return Ok((StreamId::MIN, true)),
        b"+" if !strict => return Ok((StreamId::MAX, true)),
        b"-" | b"+" => return Err(invalid_id()),
        _ => {}
    }
    let (ms_part, seq_part) = match arg.iter().position(|c| *c == b'-') {
        Some(i) => (&arg[..i], Some(&arg[i + 1..])),
        None => (arg, None),
    };
    let ms = num::parse_u64_digits(ms_part).ok_or_else(invalid_id)?;
    match seq_part {
        Some(b"*") if allow_star_seq => Ok((StreamId::new(ms, 0), false)),
        Some(s) => {
            let seq = num::parse_u64_digits(s).ok_or_else(invalid_id)?;
            Ok((StreamId::new(ms, seq), true))
        }
        None => Ok((StreamId::new(ms, missing_seq), true)),
    }
}

fn parse_strict_id(arg: &[u8]) -> Result<StreamId, CmdError> {
    parse_id_full(arg, 0, true, false).map(|(id, _)| id)
}

/// A range bound: `-`, `+`, an id, or `(id` for an exclusive one.
fn parse_range_bound(arg: &[u8], missing_seq: u64) -> Result<(StreamId, bool), CmdError> {
    if arg.len() > 1 && arg[0] == b'(' {
        let (id, _) = parse_id_full(&arg[1..], missing_seq, true, false)?;
        Ok((id, true))
    } else {
        let (id, _) = parse_id_full(arg, missing_seq, false, false)?;
        Ok((id, false))
    }
}

/// Start and end of XRANGE-style intervals, exclusive bounds resolved.
fn parse_interval(start: &[u8], end: &[u8]) -> Result<(StreamId, StreamId), CmdError> {
    let (mut s, s_ex) = parse_range_bound(start, 0)?;
    if s_ex {
        s = s
            .next()
            .ok_or_else(|| CmdError::err("invalid start ID for the interval"))?;
    }
    let (mut e, e_ex) = parse_range_bound(end, u64::MAX)?;
    if e_ex {
        e = e
            .prev()
            .ok_or_else(|| CmdError::err("invalid end ID for the interval"))?;
    }
    Ok((s, e))
}

fn id_reply(id: StreamId) -> Reply {
    Reply::Bulk(id.to_bytes())
}

fn entry_reply((id, fields): StreamEntry) -> Reply {
    Reply::Array(vec![
        id_reply(id),
        Reply::Array(fields.into_iter().map(Reply::Bulk).collect()),
    ])
}

fn entries_reply(entries: Vec<StreamEntry>) -> Reply {
    Reply::Array(entries.into_iter().map(entry_reply).collect())
}

/// Entries straight from the stream's nodes in reply form (range reads).
fn wire_reply(entries: Vec<(StreamId, tidewire_resp::BulkArray)>) -> Reply {
    Reply::Array(
        entries
            .into_iter()
            .map(|(id, fields)| Reply::Array(vec![id_reply(id), Reply::Bulks(fields)]))
            .collect(),
    )
}

// ---- storage helpers ---------------------------------------------------------------

fn limits(ctx: &Ctx<'_>) -> NodeLimits {
    let enc = &ctx.store.config.encoding;
    NodeLimits {
        max_entries: enc.get_usize(Limit::StreamNodeMaxEntries),
        max_bytes: enc.get_usize(Limit::StreamNodeMaxBytes),
    }
}

/// The stream at `key` for reading: `Ok(None)` if absent, WRONGTYPE otherwise.
fn read_stream<'c>(
    ctx: &'c mut Ctx<'_>,
    key: &[u8],
) -> Result<Option<&'c mut StreamValue>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Stream(s),
            ..
        }) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The stream at `key` as a write command sees it.
fn write_stream<'c>(
    ctx: &'c mut Ctx<'_>,
    key: &[u8],
) -> Result<Option<&'c mut StreamValue>, CmdError> {
    let (db, now) = (ctx.db(), ctx.now);
    match ctx.ks.get_mut(db, key, now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Stream(s),
            ..
        }) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// Creates an empty stream at `key` (which the caller checked is absent).
fn create_stream(ctx: &mut Ctx<'_>, key: &[u8]) {
    let db = ctx.db();
    ctx.ks.insert(
        db,
        Bytes::copy_from_slice(key),
        Entry::new(Value::Stream(Box::default())),
    );
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn int_bytes(n: impl ToString) -> Bytes {
    Bytes::from(n.to_string())
}

fn now_i64(ctx: &Ctx<'_>) -> i64 {
    ctx.now as i64
}

// ---- XADD / XTRIM ----------------------------------------------------------------------

/// Options shared by XADD and XTRIM, and XADD's id and NOMKSTREAM.
struct TrimArgs {
    how: Option<Trim>,
    approx: bool,
    limit: u64,
    /// The id given to XADD (`None` for `*`), and whether its sequence was given.
    id: Option<(StreamId, bool)>,
    nomkstream: bool,
    /// KEEPREF / DELREF / ACKED: what trimming does about group references.
    policy: RefPolicy,
}

/// Parses XADD/XTRIM options from `args` (Redis's `streamParseAddOrTrimArgsOrReply`).
/// For XADD, stops at the id and returns it with `seq given`; NOMKSTREAM too.
fn parse_trim_args(ctx: &Ctx<'_>, args: &mut Args<'_>, xadd: bool) -> Result<TrimArgs, CmdError> {
    let mut t = TrimArgs {
        how: None,
        approx: false,
        limit: 0,
        id: None,
        nomkstream: false,
        policy: RefPolicy::KeepRef,
    };
    let mut limit_given = None;
    while let Some(opt) = args.peek() {
        let more = args.remaining() - 1;
        if xadd && &opt[..] == b"*" {
            args.next_bytes()?;
            break;
        }
        if (opt.eq_ignore_ascii_case(b"maxlen") || opt.eq_ignore_ascii_case(b"minid")) && more > 0 {
            let maxlen = opt.eq_ignore_ascii_case(b"maxlen");
            args.next_bytes()?;
            if t.how.is_some() {
                return Err(CmdError::err(
                    "syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            t.approx = false;
            if more >= 2 {
                match args.peek().map(|a| &a[..]) {
                    Some(b"~") => {
                        t.approx = true;
                        args.next_bytes()?;
                    }
                    Some(b"=") => {
                        args.next_bytes()?;
                    }
                    _ => {}
                }
            }
            let arg = args.next_bytes()?;
            if maxlen {
                let n = num::parse_i64(arg).ok_or(CmdError::NotInteger)?;
                if n < 0 {
                    return Err(CmdError::err("The MAXLEN argument must be >= 0."));
                }
                t.how = Some(Trim::MaxLen(n as u64));
            } else {
                t.how = Some(Trim::MinId(parse_strict_id(arg)?));
            }
        } else if opt.eq_ignore_ascii_case(b"limit") && more > 0 {
            args.next_bytes()?;
            let n = num::parse_i64(args.next_bytes()?).ok_or(CmdError::NotInteger)?;
            if n < 0 {
                return Err(CmdError::err("The LIMIT argument must be >= 0."));
            }
            limit_given = Some(n as u64);
        } else if xadd && opt.eq_ignore_ascii_case(b"nomkstream") {
            args.next_bytes()?;
            t.nomkstream = true;
        } else if let Some(policy) = RefPolicy::parse(opt) {
            // Redis 8.2: one of these anywhere among the options; the last one counts.
            args.next_bytes()?;
            t.policy = policy;
        } else if xadd {
            let arg = args.next_bytes()?;
            t.id = Some(parse_id_full(arg, 0, true, true)?);
            break;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if limit_given.is_some_and(|l| l > 0) && t.how.is_none() {
        return Err(CmdError::err(
            "syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && t.how.is_none() {
        return Err(CmdError::err(
            "syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if ctx.client.is_loader() {
        // The log holds exact trims already.
        t.limit = 0;
    } else if let Some(l) = limit_given {
        if !t.approx {
            return Err(CmdError::err(
                "syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        t.limit = l;
    } else if t.approx {
        let per_node = ctx
            .store
            .config
            .encoding
            .get(Limit::StreamNodeMaxEntries)
            .saturating_mul(100);
        t.limit = if per_node <= 0 {
            10_000
        } else {
            per_node.min(1_000_000) as u64
        };
    }
    Ok(t)
}

/// The exact trim that reproduces what a trim just did: the entries a trim
/// removes are the oldest its policy allows, so trimming to the resulting length
/// with the same policy removes the same ones (and drops the same references).
fn trim_record(key: &Bytes, s: &StreamValue, policy: RefPolicy) -> Vec<Bytes> {
    let mut rec = vec![
        b("XTRIM"),
        key.clone(),
        b("MAXLEN"),
        b("="),
        int_bytes(s.len()),
    ];
    if policy != RefPolicy::KeepRef {
        rec.push(b(policy.word()));
    }
    rec
}

fn xadd(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let trim = parse_trim_args(ctx, args, true)?;
    let (id, nomkstream) = (trim.id, trim.nomkstream);
    let fields = args.rest();
    if fields.len() < 2 || !fields.len().is_multiple_of(2) {
        return Err(CmdError::WrongArity(ctx.cmd.full_name.clone()));
    }
    if let Some((id, true)) = id {
        if id.is_zero() {
            return Err(CmdError::err(
                "The ID specified in XADD must be greater than 0-0",
            ));
        }
    }
    if write_stream(ctx, &key)?.is_none() {
        if nomkstream {
            return Ok(Reply::Null);
        }
        create_stream(ctx, &key);
    }
    let lim = limits(ctx);
    let now = ctx.now;
    let Some(s) = write_stream(ctx, &key)? else {
        return Ok(Reply::Null);
    };
    if s.last_id == StreamId::MAX {
        return Err(CmdError::err(
            "The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    let too_small = || {
        CmdError::err(
            "The ID specified in XADD is equal or smaller than the target stream top item",
        )
    };
    let new_id = match id {
        Some((id, true)) => id,
        Some((id, false)) => {
            if s.last_id.ms == id.ms {
                if s.last_id.seq == u64::MAX {
                    return Err(too_small());
                }
                StreamId::new(id.ms, s.last_id.seq + 1)
            } else {
                id
            }
        }
        None => {
            if now > s.last_id.ms {
                StreamId::new(now, 0)
            } else {
                s.last_id.next().ok_or_else(too_small)?
            }
        }
    };
    if new_id <= s.last_id {
        // A stream XADD just created is empty: drop it again.
        if s.is_empty() && s.entries_added == 0 && s.groups().is_none() && s.last_id.is_zero() {
            let db = ctx.db();
            ctx.ks.remove(db, &key);
        }
        return Err(too_small());
    }
    s.append(new_id, fields, lim);
    let trimmed = match trim.how {
        Some(how) => s.trim_with(how, trim.approx, trim.limit, trim.policy),
        None => 0,
    };
    let trim_rec = (trimmed > 0).then(|| trim_record(&key, s, trim.policy));
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xadd", &key);
    if ctx.store.logging() {
        let mut record = Vec::with_capacity(3 + fields.len());
        record.push(b("XADD"));
        record.push(key.clone());
        record.push(new_id.to_bytes());
        record.extend(fields.iter().cloned());
        ctx.propagate(record);
    } else {
        ctx.propagate_nothing();
    }
    if let Some(rec) = trim_rec {
        ctx.notify(notify::STREAM, "xtrim", &key);
        ctx.propagate(rec);
    }
    ctx.signal_ready(&key);
    Ok(id_reply(new_id))
}

fn xtrim(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let trim = parse_trim_args(ctx, args, false)?;
    let Some(s) = write_stream(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let Some(how) = trim.how else {
        return Ok(Reply::Int(0));
    };
    let deleted = s.trim_with(how, trim.approx, trim.limit, trim.policy);
    if deleted > 0 {
        let rec = trim_record(&key, s, trim.policy);
        ctx.dirty(deleted);
        ctx.notify(notify::STREAM, "xtrim", &key);
        ctx.propagate(rec);
    }
    Ok(Reply::Int(deleted as i64))
}

// ---- reads -----------------------------------------------------------------------------

fn xlen(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Int(
        read_stream(ctx, key)?.map_or(0, |s| s.len() as i64),
    ))
}

fn range_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, rev: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let a = args.next_bytes()?;
    let z = args.next_bytes()?;
    let (start, end) = if rev { (z, a) } else { (a, z) };
    let (start, end) = parse_interval(start, end)?;
    let mut count: i64 = -1;
    while !args.is_empty() {
        if args.flag("COUNT") && !args.is_empty() {
            count = args.next_i64()?.max(0);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let Some(s) = read_stream(ctx, key)? else {
        return Ok(Reply::Array(vec![]));
    };
    if count == 0 {
        return Ok(Reply::NullArray);
    }
    let count = if count < 0 { 0 } else { count as usize };
    Ok(wire_reply(s.range_wire(start, end, count, rev)))
}

fn xrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, false)
}

fn xrevrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, true)
}

// ---- XDEL / XSETID ---------------------------------------------------------------------

fn xdel(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let ids = args
        .rest()
        .iter()
        .map(|a| parse_strict_id(a))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(s) = write_stream(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let deleted = ids.into_iter().filter(|id| s.delete(*id)).count() as u64;
    if deleted > 0 {
        ctx.dirty(deleted);
        ctx.notify(notify::STREAM, "xdel", &key);
    }
    Ok(Reply::Int(deleted as i64))
}

// ---- XDELEX / XACKDEL (Redis 8.2) ----------------------------------------------------

/// Per-id replies of XDELEX and XACKDEL.
const DEL_NO_ID: i64 = -1;
const DEL_DONE: i64 = 1;
const DEL_STILL_REFERENCED: i64 = 2;

/// Parses `[KEEPREF | DELREF | ACKED] IDS numids id [id ...]` (the rest of
/// XDELEX / XACKDEL): at most one policy, on either side of the IDS block, and
/// exactly `numids` ids. Returns the policy and the ids, parsed before any
/// change is made so that a bad id fails the whole command.
fn parse_del_args(args: &mut Args<'_>) -> Result<(RefPolicy, Vec<StreamId>), CmdError> {
    let mut policy = None;
    let mut ids: Option<&[Bytes]> = None;
    let rest = args.rest();
    let mut i = 0;
    while let Some(opt) = rest.get(i) {
        if opt.eq_ignore_ascii_case(b"ids") && i + 1 < rest.len() {
            let n = num::parse_i64(&rest[i + 1])
                .filter(|n| *n > 0)
                .ok_or_else(|| CmdError::err("Number of IDs must be a positive integer"))?;
            let start = i + 2;
            let available = (rest.len() - start) as u64;
            if n as u64 > available {
                return Err(CmdError::err(
                    "The `numids` parameter must match the number of arguments",
                ));
            }
            let end = start + n as usize;
            ids = rest.get(start..end);
            i = end;
        } else if let Some(p) = RefPolicy::parse(opt).filter(|_| policy.is_none()) {
            policy = Some(p);
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let ids = ids
        .ok_or(CmdError::Syntax)?
        .iter()
        .map(|a| parse_strict_id(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((policy.unwrap_or_default(), ids))
}

/// One integer per id, all `code`: for a missing stream or group.
fn codes_reply(n: usize, code: i64) -> Reply {
    Reply::Array(vec![Reply::Int(code); n])
}

/// `XDELEX key [KEEPREF | DELREF | ACKED] IDS numids id …`: XDEL with a policy
/// for group references. Per id: 1 deleted, -1 no such entry, 2 kept because a
/// group still needs it (ACKED). Logged as received: its effect depends only on
/// the stream's state.
fn xdelex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let (policy, ids) = parse_del_args(args)?;
    let Some(s) = write_stream(ctx, &key)? else {
        return Ok(codes_reply(ids.len(), DEL_NO_ID));
    };
    let (mut deleted, mut changed) = (0u64, 0u64);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut modified = false;
        let code = match policy {
            RefPolicy::Acked if s.is_referenced(id) => DEL_STILL_REFERENCED,
            _ => {
                // DELREF drops references even to an id no longer in the stream.
                if policy == RefPolicy::DelRef {
                    modified = s.drop_refs(id);
                }
                if s.delete(id) {
                    deleted += 1;
                    modified = true;
                    DEL_DONE
                } else {
                    DEL_NO_ID
                }
            }
        };
        changed += u64::from(modified);
        out.push(Reply::Int(code));
    }
    ctx.dirty(changed);
    if deleted > 0 {
        ctx.notify(notify::STREAM, "xdel", &key);
    }
    Ok(Reply::Array(out))
}

/// `XACKDEL key group [KEEPREF | DELREF | ACKED] IDS numids id …`: XACK, then
/// XDELEX of what was acknowledged. Per id: -1 not pending in the group, 1
/// acknowledged and deleted (or already gone), 2 acknowledged but kept because
/// another group still needs it (ACKED). A missing stream or group answers -1
/// for every id, as Redis does.
fn xackdel(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let (policy, ids) = parse_del_args(args)?;
    let Some(s) = write_stream(ctx, &key)? else {
        return Ok(codes_reply(ids.len(), DEL_NO_ID));
    };
    let Some(g) = s.group_mut(&group) else {
        return Ok(codes_reply(ids.len(), DEL_NO_ID));
    };
    // Acknowledge first: ACKED then asks about the other groups only.
    let acked: Vec<bool> = ids.iter().map(|id| g.ack(*id)).collect();
    let (mut deleted, mut changed) = (0u64, 0u64);
    let mut out = Vec::with_capacity(ids.len());
    for (id, was_pending) in ids.into_iter().zip(acked) {
        if !was_pending {
            out.push(Reply::Int(DEL_NO_ID));
            continue;
        }
        changed += 1;
        let code = match policy {
            RefPolicy::Acked if s.is_referenced(id) => DEL_STILL_REFERENCED,
            _ => {
                if policy == RefPolicy::DelRef {
                    s.drop_refs(id);
                }
                if s.delete(id) {
                    deleted += 1;
                    changed += 1;
                }
                DEL_DONE
            }
        };
        out.push(Reply::Int(code));
    }
    ctx.dirty(changed);
    if deleted > 0 {
        ctx.notify(notify::STREAM, "xdel", &key);
    }
    Ok(Reply::Array(out))
}

fn xsetid(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let id = parse_strict_id(args.next_bytes()?)?;
    let mut entries_added: i64 = -1;
    let mut max_deleted = StreamId::MIN;
    while !args.is_empty() {
        let more = args.remaining() > 1;
        if more && args.flag("ENTRIESADDED") {
            entries_added = args.next_i64()?;
            if entries_added < 0 {
                return Err(CmdError::err("entries_added must be positive"));
            }
        } else if more && args.flag("MAXDELETEDID") {
            max_deleted = parse_strict_id(args.next_bytes()?)?;
            if id < max_deleted {
                return Err(CmdError::err(
                    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                ));
            }
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let Some(s) = write_stream(ctx, &key)? else {
        return Err(CmdError::NoSuchKey);
    };
    if id < s.max_deleted_id {
        return Err(CmdError::err(
            "The ID specified in XSETID is smaller than current max_deleted_entry_id",
        ));
    }
    if !s.is_empty() {
        if id < s.last_live_id() {
            return Err(CmdError::err(
                "The ID specified in XSETID is smaller than the target stream top item",
            ));
        }
        if entries_added != -1 && s.len() > entries_added as u64 {
            return Err(CmdError::err(
                "The entries_added specified in XSETID is smaller than the target stream length",
            ));
        }
    }
    s.last_id = id;
    if entries_added != -1 {
        s.entries_added = entries_added as u64;
    }
    if !max_deleted.is_zero() {
        s.max_deleted_id = max_deleted;
    }
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xsetid", &key);
    Ok(Reply::Status("OK"))
}

// ---- XREAD / XREADGROUP ------------------------------------------------------------------

struct ReadArgs {
    block: Option<Option<std::time::Duration>>,
    count: usize,
    noack: bool,
    group: Option<(Bytes, Bytes)>,
    keys: Vec<Bytes>,
    /// Position of the first id in argv, and the ids as given.
    ids_at: usize,
    ids: Vec<Bytes>,
}

fn parse_read(ctx: &Ctx<'_>, args: &mut Args<'_>, group_cmd: bool) -> Result<ReadArgs, CmdError> {
    let mut r = ReadArgs {
        block: None,
        count: 0,
        noack: false,
        group: None,
        keys: Vec::new(),
        ids_at: 0,
        ids: Vec::new(),
    };
    let mut streams = false;
    while let Some(opt) = args.peek() {
        let more = args.remaining() - 1;
        if opt.eq_ignore_ascii_case(b"block") && more > 0 {
            args.next_bytes()?;
            if ctx.ev.in_script {
                return Err(CmdError::err(format!(
                    "{} command is not allowed with BLOCK option from scripts",
                    String::from_utf8_lossy(&ctx.argv[0])
                )));
            }
            let ms = num::parse_i64(args.next_bytes()?)
                .ok_or_else(|| CmdError::err("timeout is not an integer or out of range"))?;
            if ms < 0 {
                return Err(CmdError::err("timeout is negative"));
            }
            r.block = Some((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)));
        } else if opt.eq_ignore_ascii_case(b"count") && more > 0 {
            args.next_bytes()?;
            r.count = args.next_i64()?.max(0) as usize;
        } else if opt.eq_ignore_ascii_case(b"streams") && more > 0 {
            args.next_bytes()?;
            let rest = args.rest();
            if !rest.len().is_multiple_of(2) {
                return Err(CmdError::err(format!(
                    "Unbalanced '{}' list of streams: for each stream key an ID or '{}' must be specified.",
                    ctx.cmd.full_name,
                    if group_cmd { '>' } else { '$' }
                )));
            }
            let n = rest.len() / 2;
            r.keys = rest[..n].to_vec();
            r.ids = rest[n..].to_vec();
            r.ids_at = ctx.argv.len() - n;
            streams = true;
            break;
        } else if opt.eq_ignore_ascii_case(b"group") && more >= 2 {
            if !group_cmd {
                return Err(CmdError::err(
                    "The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            args.next_bytes()?;
            let g = args.next_owned()?;
            let c = args.next_owned()?;
            r.group = Some((g, c));
        } else if opt.eq_ignore_ascii_case(b"noack") {
            if !group_cmd {
                return Err(CmdError::err(
                    "The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            args.next_bytes()?;
            r.noack = true;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if !streams {
        return Err(CmdError::Syntax);
    }
    if group_cmd && r.group.is_none() {
        return Err(CmdError::err("Missing GROUP option for XREADGROUP"));
    }
    Ok(r)
}

/// What a read asks of one stream.
#[derive(Clone, Copy)]
enum After {
    /// Entries above this id.
    Id(StreamId),
    /// XREADGROUP `>`: entries never delivered to the group.
    New,
}

fn xread(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_generic(ctx, args, false)
}

fn xreadgroup(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    read_generic(ctx, args, true)
}

fn nogroup(key: &[u8], group: &[u8]) -> CmdError {
    CmdError::raw(format!(
        "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}

fn read_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, group_cmd: bool) -> CmdResult {
    let r = parse_read(ctx, args, group_cmd)?;
    // Resolve every id first: errors come before any delivery.
    let mut afters = Vec::with_capacity(r.keys.len());
    for (key, id) in r.keys.iter().zip(&r.ids) {
        let s = read_stream(ctx, key)?;
        if let Some((g, _)) = &r.group {
            if s.as_ref().and_then(|s| s.group(g)).is_none() {
                return Err(nogroup(key, g));
            }
        }
        let last = s.map(|s| s.last_id);
        let after = match &id[..] {
            b"$" => {
                if group_cmd {
                    return Err(CmdError::err("The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."));
                }
                After::Id(last.unwrap_or(StreamId::MIN))
            }
            b">" => {
                if !group_cmd {
                    return Err(CmdError::err("The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."));
                }
                After::New
            }
            other => After::Id(parse_strict_id(other)?),
        };
        afters.push(after);
    }
    let mut results: Vec<(Bytes, Reply)> = Vec::new();
    for (i, key) in r.keys.iter().enumerate() {
        let served = match &r.group {
            None => read_plain(ctx, key, afters[i], r.count)?,
            Some((g, c)) => read_group(ctx, key, g, c, afters[i], r.count, r.noack)?,
        };
        if let Some(reply) = served {
            results.push((key.clone(), reply));
        }
    }
    if !results.is_empty() {
        return Ok(if ctx.resp3() {
            Reply::Map(
                results
                    .into_iter()
                    .map(|(k, v)| (Reply::Bulk(k), v))
                    .collect(),
            )
        } else {
            Reply::Array(
                results
                    .into_iter()
                    .map(|(k, v)| Reply::Array(vec![Reply::Bulk(k), v]))
                    .collect(),
            )
        });
    }
    match r.block {
        Some(timeout) if !ctx.no_block => {
            // `$` means "after what is there now": the retried command must not
            // see entries added meanwhile as already read.
            let mut argv = ctx.argv.to_vec();
            for (i, id) in r.ids.iter().enumerate() {
                if &id[..] == b"$" {
                    if let After::Id(resolved) = afters[i] {
                        argv[r.ids_at + i] = resolved.to_bytes();
                    }
                }
            }
            ctx.block_with(argv, r.keys.clone(), timeout, Reply::NullArray);
            Ok(Reply::Null)
        }
        _ => Ok(Reply::NullArray),
    }
}

/// XREAD of one stream: entries above `after`, `None` if there are none.
fn read_plain(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    after: After,
    count: usize,
) -> Result<Option<Reply>, CmdError> {
    let Some(s) = read_stream(ctx, key)? else {
        return Ok(None);
    };
    let After::Id(after) = after else {
        return Ok(None);
    };
    if s.is_empty() || s.last_live_id() <= after {
        return Ok(None);
    }
    let Some(start) = after.next() else {
        return Ok(None);
    };
    Ok(Some(wire_reply(s.range_wire(
        start,
        StreamId::MAX,
        count,
        false,
    ))))
}

/// XREADGROUP of one stream: new entries (`>`), or the consumer's own pending
/// history from an id. `None` when there is nothing new to deliver.
#[allow(clippy::too_many_arguments)]
fn read_group(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    group: &Bytes,
    consumer: &Bytes,
    after: After,
    count: usize,
    noack: bool,
) -> Result<Option<Reply>, CmdError> {
    let now = now_i64(ctx);
    let Some(s) = write_stream(ctx, key)? else {
        return Err(nogroup(key, group));
    };
    let mut created = false;
    let mut records: Vec<Vec<Bytes>> = Vec::new();
    let reply = s.with_group(group, |s, g| {
        if !g.consumers.contains_key(consumer) {
            g.consumers.insert(consumer.clone(), Consumer::new(now));
            created = true;
        }
        if let Some(c) = g.consumers.get_mut(consumer) {
            c.seen_time = now;
        }
        match after {
            After::Id(from) => Some(group_history(s, g, consumer, from, count, now)),
            After::New => {
                if s.is_empty() || s.last_live_id() <= g.last_id {
                    return None;
                }
                let start = g.last_id.next()?;
                let entries = s.range(start, StreamId::MAX, count);
                let before = (g.last_id, g.entries_read);
                for (id, _) in &entries {
                    s.advance_group(g, *id);
                    if !noack {
                        let nack = g.assign(*id, consumer, now);
                        nack.delivery_time = now;
                        nack.delivery_count = 1;
                        records.push(claim_record(key, group, consumer, *id, now, 1, g.last_id));
                    }
                }
                if let Some(c) = g.consumers.get_mut(consumer) {
                    if !noack && !entries.is_empty() {
                        c.active_time = now;
                    }
                }
                if (g.last_id, g.entries_read) != before {
                    records.push(vec![
                        b("XGROUP"),
                        b("SETID"),
                        key.clone(),
                        group.clone(),
                        g.last_id.to_bytes(),
                        b("ENTRIESREAD"),
                        int_bytes(g.entries_read),
                    ]);
                }
                Some(entries_reply(entries))
            }
        }
    });
    let Some(reply) = reply else {
        return Err(nogroup(key, group));
    };
    if created {
        ctx.dirty(1);
        ctx.notify(notify::STREAM, "xgroup-createconsumer", key);
        ctx.propagate(vec![
            b("XGROUP"),
            b("CREATECONSUMER"),
            key.clone(),
            group.clone(),
            consumer.clone(),
        ]);
    }
    if reply.is_some() {
        ctx.dirty(1);
    }
    for rec in records {
        ctx.propagate(rec);
    }
    // The records above stand for the read; the command itself is not logged.
    ctx.propagate_nothing();
    Ok(reply)
}

/// A consumer's pending entries from `from` (XREADGROUP with an id): each one
/// counts as a new delivery; deleted entries read as nil.
fn group_history(
    s: &StreamValue,
    g: &mut Group,
    consumer: &Bytes,
    from: StreamId,
    count: usize,
    now: i64,
) -> Reply {
    let Some(c) = g.consumers.get(consumer) else {
        return Reply::Array(vec![]);
    };
    // Like every XREAD id, the one given is the last seen: history starts after it.
    let Some(from) = from.next() else {
        return Reply::Array(vec![]);
    };
    let ids: Vec<StreamId> = c
        .pel
        .range(from..)
        .take(if count == 0 { usize::MAX } else { count })
        .copied()
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match s.get(id) {
            Some(e) => {
                if let Some(n) = g.pel.get_mut(&id) {
                    n.delivery_time = now;
                    n.delivery_count += 1;
                }
                out.push(entry_reply(e));
            }
            None => out.push(Reply::Array(vec![id_reply(id), Reply::NullArray])),
        }
    }
    Reply::Array(out)
}

/// The XCLAIM that reproduces a delivery or claim on replay (Redis's
/// `streamPropagateXCLAIM`).
fn claim_record(
    key: &Bytes,
    group: &Bytes,
    consumer: &Bytes,
    id: StreamId,
    time: i64,
    count: u64,
    last_id: StreamId,
) -> Vec<Bytes> {
    vec![
        b("XCLAIM"),
        key.clone(),
        group.clone(),
        consumer.clone(),
        b("0"),
        id.to_bytes(),
        b("TIME"),
        int_bytes(time),
        b("RETRYCOUNT"),
        int_bytes(count),
        b("FORCE"),
        b("JUSTID"),
        b("LASTID"),
        last_id.to_bytes(),
    ]
}

// ---- XACK / XPENDING ---------------------------------------------------------------------

fn xack(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let id_args = args.rest();
    let present = match read_stream(ctx, &key)? {
        Some(s) => s.group(&group).is_some(),
        None => false,
    };
    if !present {
        return Ok(Reply::Int(0));
    }
    let ids = id_args
        .iter()
        .map(|a| parse_strict_id(a))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(g) = write_stream(ctx, &key)?.and_then(|s| s.group_mut(&group)) else {
        return Ok(Reply::Int(0));
    };
    let acked = ids.into_iter().filter(|id| g.ack(*id)).count() as u64;
    ctx.dirty(acked);
    Ok(Reply::Int(acked as i64))
}

fn pending_nogroup(key: &[u8], group: &[u8]) -> CmdError {
    CmdError::raw(format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}

fn xpending(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let argc = ctx.argv.len();
    if argc != 3 && !(6..=9).contains(&argc) {
        return Err(CmdError::Syntax);
    }
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let mut detail = None;
    if argc >= 6 {
        let mut min_idle = 0i64;
        if args.flag("IDLE") {
            min_idle = args.next_i64()?;
            if argc < 8 {
                return Err(CmdError::Syntax);
            }
        }
        let start_arg = args.next_bytes()?;
        let end_arg = args.next_bytes()?;
        let count = args.next_i64()?.max(0) as usize;
        let (start, end) = parse_interval(start_arg, end_arg)?;
        let consumer = if args.is_empty() {
            None
        } else {
            Some(args.next_owned()?)
        };
        args.finish()?;
        detail = Some((min_idle, start, end, count, consumer));
    }
    let now = now_i64(ctx);
    let s = read_stream(ctx, &key)?;
    let Some(g) = s.and_then(|s| s.group(&group)) else {
        return Err(pending_nogroup(&key, &group));
    };
    let Some((min_idle, start, end, count, consumer)) = detail else {
        if g.pel.is_empty() {
            return Ok(Reply::Array(vec![
                Reply::Int(0),
                Reply::Null,
                Reply::Null,
                Reply::NullArray,
            ]));
        }
        let first = g.pel.keys().next().copied().unwrap_or_default();
        let last = g.pel.keys().next_back().copied().unwrap_or_default();
        let per_consumer = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pel.is_empty())
            .map(|(name, c)| {
                Reply::Array(vec![
                    Reply::Bulk(name.clone()),
                    Reply::Bulk(int_bytes(c.pel.len())),
                ])
            })
            .collect();
        return Ok(Reply::Array(vec![
            Reply::Int(g.pel.len() as i64),
            id_reply(first),
            id_reply(last),
            Reply::Array(per_consumer),
        ]));
    };
    if start > end {
        return Ok(Reply::Array(vec![]));
    }
    let ids: Box<dyn Iterator<Item = StreamId>> = match &consumer {
        Some(name) => match g.consumers.get(name) {
            Some(c) => Box::new(c.pel.range(start..=end).copied()),
            None => return Ok(Reply::Array(vec![])),
        },
        None => Box::new(g.pel.range(start..=end).map(|(id, _)| *id)),
    };
    let mut out = Vec::new();
    for id in ids {
        if out.len() >= count {
            break;
        }
        let Some(n) = g.pel.get(&id) else { continue };
        let idle = now - n.delivery_time;
        if min_idle != 0 && idle < min_idle {
            continue;
        }
        out.push(Reply::Array(vec![
            id_reply(id),
            Reply::Bulk(n.consumer.clone()),
            Reply::Int(idle.max(0)),
            Reply::Int(n.delivery_count as i64),
        ]));
    }
    Ok(Reply::Array(out))
}

// ---- XCLAIM / XAUTOCLAIM -------------------------------------------------------------------

fn ensure_consumer(g: &mut Group, name: &Bytes, now: i64) -> bool {
    let created = !g.consumers.contains_key(name);
    g.consumers
        .entry(name.clone())
        .or_insert_with(|| Consumer::new(now))
        .seen_time = now;
    created
}

fn xclaim(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let consumer = args.next_owned()?;
    let exists = match read_stream(ctx, &key)? {
        Some(s) => s.group(&group).is_some(),
        None => false,
    };
    if !exists {
        return Err(pending_nogroup(&key, &group));
    }
    let min_idle = num::parse_i64(args.next_bytes()?)
        .ok_or_else(|| CmdError::err("Invalid min-idle-time argument for XCLAIM"))?
        .max(0);
    let mut ids = Vec::new();
    while let Some(a) = args.peek() {
        match parse_strict_id(a) {
            Ok(id) => {
                ids.push((id, a.clone()));
                args.next_bytes()?;
            }
            Err(_) => break,
        }
    }
    let now = now_i64(ctx);
    let (mut force, mut justid) = (false, false);
    let mut delivery: Option<i64> = None;
    let mut retry: Option<i64> = None;
    let mut last_id = StreamId::MIN;
    while let Some(opt) = args.peek().cloned() {
        args.next_bytes()?;
        let more = !args.is_empty();
        let int_opt = |args: &mut Args<'_>, what: &str| {
            num::parse_i64(args.next_bytes()?)
                .ok_or_else(|| CmdError::err(format!("Invalid {what} option argument for XCLAIM")))
        };
        if opt.eq_ignore_ascii_case(b"FORCE") {
            force = true;
        } else if opt.eq_ignore_ascii_case(b"JUSTID") {
            justid = true;
        } else if opt.eq_ignore_ascii_case(b"IDLE") && more {
            delivery = Some(now - int_opt(args, "IDLE")?);
        } else if opt.eq_ignore_ascii_case(b"TIME") && more {
            delivery = Some(int_opt(args, "TIME")?);
        } else if opt.eq_ignore_ascii_case(b"RETRYCOUNT") && more {
            retry = Some(int_opt(args, "RETRYCOUNT")?);
        } else if opt.eq_ignore_ascii_case(b"LASTID") && more {
            last_id = parse_strict_id(args.next_bytes()?)?;
        } else {
            return Err(CmdError::err(format!(
                "Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(&opt)
            )));
        }
    }
    let delivery = match delivery {
        Some(t) if t >= 0 && t <= now => t,
        _ => now,
    };
    let Some(s) = write_stream(ctx, &key)? else {
        return Err(pending_nogroup(&key, &group));
    };
    let mut records = Vec::new();
    let mut changes = 0u64;
    let result = s.with_group(&group, |s, g| {
        let mut propagate_last = false;
        if last_id > g.last_id {
            g.last_id = last_id;
            propagate_last = true;
        }
        let created = ensure_consumer(g, &consumer, now);
        let mut out = Vec::new();
        for (id, _) in &ids {
            let id = *id;
            if !s.contains(id) {
                if let Some(n) = g.pel.get(&id).cloned() {
                    records.push(claim_record(
                        &key,
                        &group,
                        &n.consumer,
                        id,
                        n.delivery_time,
                        n.delivery_count,
                        g.last_id,
                    ));
                    propagate_last = false;
                    g.ack(id);
                    changes += 1;
                }
                continue;
            }
            let pending = g.pel.get(&id);
            if pending.is_none() && !force {
                continue;
            }
            if let Some(n) = pending {
                if min_idle > 0 && now - n.delivery_time < min_idle {
                    continue;
                }
            }
            let nack = g.assign(id, &consumer, now);
            nack.delivery_time = delivery;
            if let Some(r) = retry.filter(|r| *r >= 0) {
                nack.delivery_count = r as u64;
            } else if !justid {
                nack.delivery_count += 1;
            }
            let (t, c) = (nack.delivery_time, nack.delivery_count);
            if justid {
                out.push(id_reply(id));
            } else if let Some(e) = s.get(id) {
                out.push(entry_reply(e));
            }
            if let Some(cons) = g.consumers.get_mut(&consumer) {
                cons.active_time = now;
            }
            records.push(claim_record(&key, &group, &consumer, id, t, c, g.last_id));
            propagate_last = false;
            changes += 1;
        }
        if propagate_last {
            records.push(vec![
                b("XGROUP"),
                b("SETID"),
                key.clone(),
                group.clone(),
                g.last_id.to_bytes(),
                b("ENTRIESREAD"),
                int_bytes(g.entries_read),
            ]);
            changes += 1;
        }
        (created, out)
    });
    let Some((created, out)) = result else {
        return Err(pending_nogroup(&key, &group));
    };
    finish_claim(ctx, &key, &group, &consumer, created, changes, records);
    Ok(Reply::Array(out))
}

/// Logs what XCLAIM/XAUTOCLAIM changed, as the XCLAIMs that reproduce it.
fn finish_claim(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    group: &Bytes,
    consumer: &Bytes,
    created: bool,
    changes: u64,
    records: Vec<Vec<Bytes>>,
) {
    if created {
        ctx.dirty(1);
        ctx.notify(notify::STREAM, "xgroup-createconsumer", key);
        ctx.propagate(vec![
            b("XGROUP"),
            b("CREATECONSUMER"),
            key.clone(),
            group.clone(),
            consumer.clone(),
        ]);
    }
    ctx.dirty(changes);
    for r in records {
        ctx.propagate(r);
    }
    ctx.propagate_nothing();
}

fn xautoclaim(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let consumer = args.next_owned()?;
    let min_idle = num::parse_i64(args.next_bytes()?)
        .ok_or_else(|| CmdError::err("Invalid min-idle-time argument for XAUTOCLAIM"))?
        .max(0);
    let (mut start, start_ex) = parse_range_bound(args.next_bytes()?, 0)?;
    if start_ex {
        start = start
            .next()
            .ok_or_else(|| CmdError::err("invalid start ID for the interval"))?;
    }
    let mut count: i64 = 100;
    let mut justid = false;
    while !args.is_empty() {
        if args.remaining() > 1 && args.flag("COUNT") {
            let max = i64::MAX / 16;
            count = match num::parse_i64(args.next_bytes()?) {
                Some(n) if (1..=max).contains(&n) => n,
                _ => return Err(CmdError::err("COUNT must be > 0")),
            };
        } else if args.flag("JUSTID") {
            justid = true;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let exists = match read_stream(ctx, &key)? {
        Some(s) => s.group(&group).is_some(),
        None => false,
    };
    if !exists {
        return Err(pending_nogroup(&key, &group));
    }
    let now = now_i64(ctx);
    let Some(s) = write_stream(ctx, &key)? else {
        return Err(pending_nogroup(&key, &group));
    };
    let mut records = Vec::new();
    let mut changes = 0u64;
    let result = s.with_group(&group, |s, g| {
        let created = ensure_consumer(g, &consumer, now);
        let mut attempts = count.saturating_mul(10);
        let mut left = count;
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut cursor = Some(start);
        let mut next_id = StreamId::MIN;
        while let Some(from) = cursor {
            let Some((&id, nack)) = g.pel.range(from..).next() else {
                break;
            };
            if attempts == 0 || left == 0 {
                next_id = id;
                break;
            }
            attempts -= 1;
            cursor = id.next();
            if !s.contains(id) {
                let n = nack.clone();
                records.push(claim_record(
                    &key,
                    &group,
                    &n.consumer,
                    id,
                    n.delivery_time,
                    n.delivery_count,
                    g.last_id,
                ));
                g.ack(id);
                deleted.push(id_reply(id));
                left -= 1;
                changes += 1;
                continue;
            }
            if min_idle > 0 && now - nack.delivery_time < min_idle {
                continue;
            }
            let nack = g.assign(id, &consumer, now);
            nack.delivery_time = now;
            if !justid {
                nack.delivery_count += 1;
            }
            let c = nack.delivery_count;
            if justid {
                claimed.push(id_reply(id));
            } else if let Some(e) = s.get(id) {
                claimed.push(entry_reply(e));
            }
            if let Some(cons) = g.consumers.get_mut(&consumer) {
                cons.active_time = now;
            }
            records.push(claim_record(&key, &group, &consumer, id, now, c, g.last_id));
            left -= 1;
            changes += 1;
        }
        (created, next_id, claimed, deleted)
    });
    let Some((created, next_id, claimed, deleted)) = result else {
        return Err(pending_nogroup(&key, &group));
    };
    finish_claim(ctx, &key, &group, &consumer, created, changes, records);
    Ok(Reply::Array(vec![
        id_reply(next_id),
        Reply::Array(claimed),
        Reply::Array(deleted),
    ]))
}

// ---- XGROUP ----------------------------------------------------------------------------------

/// XGROUP's options after `<key> <group> <id>`: MKSTREAM (CREATE only), ENTRIESREAD.
fn group_options(
    ctx: &Ctx<'_>,
    args: &mut Args<'_>,
    create: bool,
) -> Result<(bool, i64), CmdError> {
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_INVALID;
    while !args.is_empty() {
        if create && args.flag("MKSTREAM") {
            mkstream = true;
        } else if args.remaining() > 1 && args.flag("ENTRIESREAD") {
            entries_read = args.next_i64()?;
            if entries_read < 0 && entries_read != ENTRIES_READ_INVALID {
                return Err(CmdError::err(
                    "value for ENTRIESREAD must be positive or -1",
                ));
            }
        } else {
            return Err(subcommand_syntax(ctx));
        }
    }
    Ok((mkstream, entries_read))
}

fn requires_key() -> CmdError {
    CmdError::err("The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.")
}

fn no_such_group(key: &[u8], group: &[u8]) -> CmdError {
    CmdError::raw(format!(
        "NOGROUP No such consumer group '{}' for key name '{}'",
        String::from_utf8_lossy(group),
        String::from_utf8_lossy(key)
    ))
}

fn xgroup_create(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if ctx.argv.len() > 8 {
        return Err(subcommand_syntax(ctx));
    }
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let id_arg = args.next_owned()?;
    let (mkstream, entries_read) = group_options(ctx, args, true)?;
    let exists = write_stream(ctx, &key)?.is_some();
    if !exists && !mkstream {
        return Err(requires_key());
    }
    let id = if &id_arg[..] == b"$" {
        write_stream(ctx, &key)?.map_or(StreamId::MIN, |s| s.last_id)
    } else {
        parse_strict_id(&id_arg)?
    };
    if !exists {
        create_stream(ctx, &key);
        ctx.dirty(1);
    }
    let Some(s) = write_stream(ctx, &key)? else {
        return Err(requires_key());
    };
    if !s.create_group(group, Group::new(id, entries_read)) {
        return Err(CmdError::raw(
            "BUSYGROUP Consumer Group name already exists",
        ));
    }
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xgroup-create", &key);
    Ok(Reply::Status("OK"))
}

/// The stream and group an XGROUP subcommand other than CREATE works on.
fn existing_group<'c>(
    ctx: &'c mut Ctx<'_>,
    key: &[u8],
    group: &[u8],
) -> Result<&'c mut StreamValue, CmdError> {
    let Some(s) = write_stream(ctx, key)? else {
        return Err(requires_key());
    };
    Ok(s).and_then(|s| {
        if s.group(group).is_some() {
            Ok(s)
        } else {
            Err(no_such_group(key, group))
        }
    })
}

fn xgroup_setid(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let argc = ctx.argv.len();
    if argc != 5 && argc != 7 {
        return Err(subcommand_syntax(ctx));
    }
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let id_arg = args.next_owned()?;
    let (_, entries_read) = group_options(ctx, args, false)?;
    if write_stream(ctx, &key)?.is_none() {
        return Err(requires_key());
    }
    let s = existing_group(ctx, &key, &group)?;
    let id = if &id_arg[..] == b"$" {
        s.last_id
    } else {
        parse_id_full(&id_arg, 0, false, false)?.0
    };
    if let Some(g) = s.group_mut(&group) {
        g.last_id = id;
        g.entries_read = entries_read;
    }
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xgroup-setid", &key);
    Ok(Reply::Status("OK"))
}

fn xgroup_destroy(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let Some(s) = write_stream(ctx, &key)? else {
        return Err(requires_key());
    };
    if !s.destroy_group(&group) {
        return Ok(Reply::Int(0));
    }
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xgroup-destroy", &key);
    // Clients blocked reading this group learn it is gone.
    ctx.signal_ready(&key);
    Ok(Reply::Int(1))
}

fn xgroup_createconsumer(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let consumer = args.next_owned()?;
    let now = now_i64(ctx);
    let s = existing_group(ctx, &key, &group)?;
    let Some(g) = s.group_mut(&group) else {
        return Err(no_such_group(&key, &group));
    };
    if g.consumers.contains_key(&consumer) {
        return Ok(Reply::Int(0));
    }
    g.consumers.insert(consumer, Consumer::new(now));
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xgroup-createconsumer", &key);
    Ok(Reply::Int(1))
}

fn xgroup_delconsumer(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let consumer = args.next_owned()?;
    let s = existing_group(ctx, &key, &group)?;
    let Some(g) = s.group_mut(&group) else {
        return Err(no_such_group(&key, &group));
    };
    let Some(c) = g.consumers.remove(&consumer) else {
        return Ok(Reply::Int(0));
    };
    for id in &c.pel {
        g.pel.remove(id);
    }
    ctx.dirty(1);
    ctx.notify(notify::STREAM, "xgroup-delconsumer", &key);
    Ok(Reply::Int(c.pel.len() as i64))
}

fn xgroup_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(crate::families::server::help_lines(
        "XGROUP",
        &[
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
        ],
    ))
}

// ---- XINFO -------------------------------------------------------------------------------------

fn kv(name: &'static str, v: Reply) -> (Reply, Reply) {
    (Reply::Bulk(b(name)), v)
}

fn opt_int(v: Option<i64>) -> Reply {
    v.map_or(Reply::Null, Reply::Int)
}

fn entries_read_reply(g: &Group) -> Reply {
    opt_int((g.entries_read != ENTRIES_READ_INVALID).then_some(g.entries_read))
}

fn stream_for_info<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<&'c mut StreamValue, CmdError> {
    read_stream(ctx, key)?.ok_or(CmdError::NoSuchKey)
}

fn xinfo_stream(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let opts = args.rest();
    let full = !opts.is_empty();
    let mut count: i64 = 10;
    if full {
        if (opts.len() != 1 && opts.len() != 3) || !opts[0].eq_ignore_ascii_case(b"full") {
            return Err(subcommand_syntax(ctx));
        }
        if opts.len() == 3 {
            if !opts[1].eq_ignore_ascii_case(b"count") {
                return Err(subcommand_syntax(ctx));
            }
            count = num::parse_i64(&opts[2]).ok_or(CmdError::NotInteger)?;
            if count < 0 {
                count = 10;
            }
        }
    }
    let s = stream_for_info(ctx, &key)?;
    let mut m = vec![
        kv("length", Reply::Int(s.len() as i64)),
        kv("radix-tree-keys", Reply::Int(s.node_count() as i64)),
        kv("radix-tree-nodes", Reply::Int(s.node_count() as i64 + 1)),
        kv("last-generated-id", id_reply(s.last_id)),
        kv("max-deleted-entry-id", id_reply(s.max_deleted_id)),
        kv("entries-added", Reply::Int(s.entries_added as i64)),
        kv("recorded-first-entry-id", id_reply(s.first_id)),
    ];
    if !full {
        m.push(kv(
            "groups",
            Reply::Int(s.groups().map_or(0, |g| g.len()) as i64),
        ));
        let first = s.range(StreamId::MIN, StreamId::MAX, 1).pop();
        let last = s.rev_range(StreamId::MIN, StreamId::MAX, 1).pop();
        m.push(kv("first-entry", first.map_or(Reply::Null, entry_reply)));
        m.push(kv("last-entry", last.map_or(Reply::Null, entry_reply)));
        return Ok(Reply::Map(m));
    }
    let count = count as usize;
    m.push(kv(
        "entries",
        entries_reply(s.range(StreamId::MIN, StreamId::MAX, count)),
    ));
    let groups = s
        .groups()
        .into_iter()
        .flatten()
        .map(|(name, g)| {
            let take = if count == 0 { usize::MAX } else { count };
            let pending = g
                .pel
                .iter()
                .take(take)
                .map(|(id, n)| {
                    Reply::Array(vec![
                        id_reply(*id),
                        Reply::Bulk(n.consumer.clone()),
                        Reply::Int(n.delivery_time),
                        Reply::Int(n.delivery_count as i64),
                    ])
                })
                .collect();
            let consumers = g
                .consumers
                .iter()
                .map(|(cname, c)| {
                    let pel = c
                        .pel
                        .iter()
                        .take(take)
                        .filter_map(|id| {
                            let n = g.pel.get(id)?;
                            Some(Reply::Array(vec![
                                id_reply(*id),
                                Reply::Int(n.delivery_time),
                                Reply::Int(n.delivery_count as i64),
                            ]))
                        })
                        .collect();
                    Reply::Map(vec![
                        kv("name", Reply::Bulk(cname.clone())),
                        kv("seen-time", Reply::Int(c.seen_time)),
                        kv("active-time", Reply::Int(c.active_time)),
                        kv("pel-count", Reply::Int(c.pel.len() as i64)),
                        kv("pending", Reply::Array(pel)),
                    ])
                })
                .collect();
            Reply::Map(vec![
                kv("name", Reply::Bulk(name.clone())),
                kv("last-delivered-id", id_reply(g.last_id)),
                kv("entries-read", entries_read_reply(g)),
                kv("lag", opt_int(s.group_lag(g))),
                kv("pel-count", Reply::Int(g.pel.len() as i64)),
                kv("pending", Reply::Array(pending)),
                kv("consumers", Reply::Array(consumers)),
            ])
        })
        .collect();
    m.push(kv("groups", Reply::Array(groups)));
    Ok(Reply::Map(m))
}

fn xinfo_groups(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let s = stream_for_info(ctx, &key)?;
    let groups = s
        .groups()
        .into_iter()
        .flatten()
        .map(|(name, g)| {
            Reply::Map(vec![
                kv("name", Reply::Bulk(name.clone())),
                kv("consumers", Reply::Int(g.consumers.len() as i64)),
                kv("pending", Reply::Int(g.pel.len() as i64)),
                kv("last-delivered-id", id_reply(g.last_id)),
                kv("entries-read", entries_read_reply(g)),
                kv("lag", opt_int(s.group_lag(g))),
            ])
        })
        .collect();
    Ok(Reply::Array(groups))
}

fn xinfo_consumers(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_owned()?;
    let group = args.next_owned()?;
    let now = now_i64(ctx);
    let s = stream_for_info(ctx, &key)?;
    let Some(g) = s.group(&group) else {
        return Err(no_such_group(&key, &group));
    };
    let consumers = g
        .consumers
        .iter()
        .map(|(name, c)| {
            let inactive = if c.active_time != -1 {
                now - c.active_time
            } else {
                -1
            };
            Reply::Map(vec![
                kv("name", Reply::Bulk(name.clone())),
                kv("pending", Reply::Int(c.pel.len() as i64)),
                kv("idle", Reply::Int((now - c.seen_time).max(0))),
                kv("inactive", Reply::Int(inactive)),
            ])
        })
        .collect();
    Ok(Reply::Array(consumers))
}

fn xinfo_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(crate::families::server::help_lines(
        "XINFO",
        &[
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
        ],
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tidewire_resp::Reply;

    use crate::testkit::*;

    fn entry(id: &str, fields: &[&str]) -> Reply {
        Reply::Array(vec![bulk(id), bulks(fields)])
    }

    /// Consumer `c` of group `g` waiting for new entries of stream `s`.
    const GROUP_READ: [&str; 9] = [
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ];

    /// The group reader `w` was served Redis 7.2's error for a vanished group.
    fn assert_nogroup(w: &crate::Blocked) {
        assert_eq!(
            w.waiter.take_served(),
            Some(vec![err(
                "NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option"
            )])
        );
    }

    #[test]
    fn ids_and_their_errors() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["XADD", "s", "5-1", "a", "1"]), bulk("5-1"));
        assert_eq!(t.run(&["XADD", "s", "5-*", "a", "2"]), bulk("5-2"));
        assert_eq!(t.run(&["XADD", "s", "7", "a", "3"]), bulk("7-0"));
        assert_eq!(
            t.run(&["XADD", "s", "6-0", "a", "1"]),
            err("ERR The ID specified in XADD is equal or smaller than the target stream top item")
        );
        assert_eq!(
            t.run(&["XADD", "new", "0-0", "a", "1"]),
            err("ERR The ID specified in XADD must be greater than 0-0")
        );
        assert_eq!(
            t.run(&["XADD", "s", "1-x", "a", "1"]),
            err("ERR Invalid stream ID specified as stream command argument")
        );
        assert_eq!(
            t.run(&["XADD", "s", "*", "a"]),
            err("ERR wrong number of arguments for 'xadd' command")
        );
        assert_eq!(
            t.run(&["XADD", "nope", "NOMKSTREAM", "*", "a", "1"]),
            Reply::Null
        );
        assert_eq!(t.run(&["EXISTS", "nope", "new"]), int(0));
        assert_eq!(
            t.run(&["XADD", "s", "MAXLEN", "1", "MINID", "1", "*", "a", "1"]),
            err("ERR syntax error, MAXLEN and MINID options at the same time are not compatible")
        );
        assert_eq!(
            t.run(&["XADD", "s", "MAXLEN", "1", "LIMIT", "5", "*", "a", "1"]),
            err("ERR syntax error, LIMIT cannot be used without the special ~ option")
        );
        assert_eq!(
            t.run(&["XTRIM", "s", "LIMIT", "5"]),
            err("ERR syntax error, LIMIT cannot be used without specifying a trimming strategy")
        );
        t.run(&["SET", "str", "v"]);
        assert_eq!(
            t.run(&["XADD", "str", "*", "a", "1"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(t.run(&["TYPE", "s"]), Reply::Status("stream"));
        assert_eq!(
            t.run(&["XRANGE", "s", "(5-1", "+"]),
            Reply::Array(vec![entry("5-2", &["a", "2"]), entry("7-0", &["a", "3"])])
        );
        assert_eq!(
            t.run(&["XREVRANGE", "s", "+", "-", "COUNT", "1"]),
            Reply::Array(vec![entry("7-0", &["a", "3"])])
        );
        assert_eq!(
            t.run(&["XRANGE", "s", "-", "+", "COUNT", "0"]),
            Reply::NullArray
        );
    }

    #[test]
    fn blocking_xread_resolves_dollar_when_it_blocks() {
        let mut a = TestClient::new();
        let mut p = a.other();
        p.run(&["XADD", "s", "1-0", "f", "old"]);
        let w = a.block(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
        let mut b = a.other();
        let w2 = b.block(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
        // A write that is not an entry does not serve them.
        p.run(&["XDEL", "s", "1-0"]);
        assert_eq!(w.waiter.take_served(), None);
        p.run(&["XADD", "s", "2-0", "f", "new"]);
        let want = Some(vec![Reply::Array(vec![Reply::Array(vec![
            bulk("s"),
            Reply::Array(vec![entry("2-0", &["f", "new"])]),
        ])])]);
        // Readers do not consume: both are served.
        assert_eq!(w.waiter.take_served(), want);
        assert_eq!(w2.waiter.take_served(), want);
        assert_eq!(a.store.blocking.blocked_clients(), 0);
        // Inside MULTI, BLOCK does not block.
        a.run(&["MULTI"]);
        a.run(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
        assert_eq!(a.run(&["EXEC"]), Reply::Array(vec![Reply::NullArray]));
    }

    #[test]
    fn blocked_group_readers_hear_of_deletion_and_destroyed_groups() {
        let mut a = TestClient::new();
        let mut p = a.other();
        p.run(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
        let w = a.block(&GROUP_READ);
        p.run(&["XADD", "s", "1-0", "f", "v"]);
        assert_eq!(
            w.waiter.take_served(),
            Some(vec![Reply::Array(vec![Reply::Array(vec![
                bulk("s"),
                Reply::Array(vec![entry("1-0", &["f", "v"])]),
            ])])])
        );
        let w = a.block(&GROUP_READ);
        p.run(&["XGROUP", "DESTROY", "s", "g"]);
        assert_nogroup(&w);
        p.run(&["XGROUP", "CREATE", "s", "g", "$"]);
        let w = a.block(&GROUP_READ);
        p.run(&["DEL", "s"]);
        assert_nogroup(&w);
        assert_eq!(a.store.blocking.blocked_clients(), 0);
    }

    #[test]
    fn swapdb_wakes_stream_readers() {
        let mut a = TestClient::new();
        let mut p = a.other();
        a.run(&["SELECT", "1"]);
        let w = a.block(&["XREAD", "BLOCK", "0", "STREAMS", "s", "0"]);
        p.run(&["XADD", "s", "1-0", "f", "v"]);
        p.run(&["XGROUP", "CREATE", "s", "g", "0"]);
        assert_eq!(w.waiter.take_served(), None);
        p.run(&["SWAPDB", "0", "1"]);
        assert_eq!(
            w.waiter.take_served(),
            Some(vec![Reply::Array(vec![Reply::Array(vec![
                bulk("s"),
                Reply::Array(vec![entry("1-0", &["f", "v"])]),
            ])])])
        );
        // The stream swapped away under a group reader: it hears of it.
        a.run(&["XGROUP", "SETID", "s", "g", "$"]);
        let w = a.block(&GROUP_READ);
        p.run(&["SWAPDB", "0", "1"]);
        assert_nogroup(&w);
    }

    #[test]
    fn writes_are_logged_deterministically() {
        let mut t = TestClient::new();
        let log = Arc::new(LogRecorder::default());
        t.store.set_write_log(log.clone());
        t.run(&["CONFIG", "SET", "stream-node-max-entries", "2"]);
        t.run(&["XADD", "s", "1-*", "f", "v"]);
        for i in 2..=6 {
            t.run(&["XADD", "s", "MAXLEN", "~", "3", &format!("{i}-0"), "f", "v"]);
        }
        t.run(&["XGROUP", "CREATE", "s", "g", "0"]);
        let Reply::Array(_) = t.run(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ]) else {
            panic!()
        };
        t.run(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "0"]);
        let log = log.0.lock().clone();
        let time = log
            .iter()
            .find(|l| l.starts_with("XCLAIM"))
            .and_then(|l| l.split(' ').nth(7))
            .unwrap()
            .to_string();
        assert_eq!(
            log,
            vec![
                "XADD s 1-0 f v".to_string(),
                "XADD s 2-0 f v".into(),
                "XADD s 3-0 f v".into(),
                "XADD s 4-0 f v".into(),
                "XADD s 5-0 f v".into(),
                "XTRIM s MAXLEN = 3".into(),
                "XADD s 6-0 f v".into(),
                "XGROUP CREATE s g 0".into(),
                "XGROUP CREATECONSUMER s g c".into(),
                // Whole nodes only: 3-0 … 6-0 are left.
                format!("XCLAIM s g c 0 3-0 TIME {time} RETRYCOUNT 1 FORCE JUSTID LASTID 3-0"),
                "XGROUP SETID s g 3-0 ENTRIESREAD 3".into(),
            ]
        );
        assert_eq!(t.run(&["XLEN", "s"]), int(4));
    }

    #[test]
    fn claims_and_pending() {
        let mut t = TestClient::new();
        for i in 1..=3 {
            t.run(&["XADD", "s", &format!("{i}-0"), "f", &i.to_string()]);
        }
        t.run(&["XGROUP", "CREATE", "s", "g", "0"]);
        t.run(&["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">"]);
        assert_eq!(
            t.run(&["XPENDING", "s", "g"]),
            Reply::Array(vec![
                int(3),
                bulk("1-0"),
                bulk("3-0"),
                Reply::Array(vec![bulks(&["alice", "3"])]),
            ])
        );
        assert_eq!(
            t.run(&["XCLAIM", "s", "g", "bob", "0", "2-0", "JUSTID"]),
            bulks(&["2-0"])
        );
        t.run(&["XDEL", "s", "3-0"]);
        // A deleted entry is dropped from the PEL and reported.
        assert_eq!(
            t.run(&["XAUTOCLAIM", "s", "g", "carol", "0", "0"]),
            Reply::Array(vec![
                bulk("0-0"),
                Reply::Array(vec![entry("1-0", &["f", "1"]), entry("2-0", &["f", "2"])]),
                bulks(&["3-0"]),
            ])
        );
        assert_eq!(t.run(&["XACK", "s", "g", "1-0", "9-0"]), int(1));
        assert_eq!(t.run(&["XGROUP", "DELCONSUMER", "s", "g", "carol"]), int(1));
        assert_eq!(
            t.run(&["XPENDING", "s", "g", "-", "+", "10"]),
            Reply::Array(vec![])
        );
        assert_eq!(
            t.run(&["XCLAIM", "s", "nog", "c", "0", "1-0"]),
            err("NOGROUP No such key 's' or consumer group 'nog'")
        );
        assert_eq!(
            t.run(&["XGROUP", "CREATE", "s", "g", "$"]),
            err("BUSYGROUP Consumer Group name already exists")
        );
        assert_eq!(
            t.run(&["XGROUP", "CREATE", "missing", "g", "$"]),
            err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.")
        );
    }

    fn ints(v: &[i64]) -> Reply {
        Reply::Array(v.iter().map(|n| int(*n)).collect())
    }

    const NO_PENDING: fn() -> Reply =
        || Reply::Array(vec![int(0), Reply::Null, Reply::Null, Reply::NullArray]);

    /// How many entries group `g` of stream `s` has pending.
    fn pending(t: &mut TestClient, g: &str) -> i64 {
        match t.run(&["XPENDING", "s", g]) {
            Reply::Array(v) => match v.first() {
                Some(Reply::Int(n)) => *n,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// Stream `s` with entries 1-0 … n-0, read in full by groups `g1` (consumer
    /// `c1`) and `g2` (consumer `c2`).
    fn two_groups(n: u64) -> TestClient {
        let mut t = TestClient::new();
        for i in 1..=n {
            t.run(&["XADD", "s", &format!("{i}-0"), "f", "v"]);
        }
        for (g, c) in [("g1", "c1"), ("g2", "c2")] {
            t.run(&["XGROUP", "CREATE", "s", g, "0"]);
            t.run(&["XREADGROUP", "GROUP", g, c, "STREAMS", "s", ">"]);
        }
        t
    }

    #[test]
    fn xdelex_policies() {
        let mut t = two_groups(3);
        // KEEPREF (the default): deleted, still pending in both groups.
        assert_eq!(
            t.run(&["XDELEX", "s", "IDS", "2", "1-0", "9-0"]),
            ints(&[1, -1])
        );
        assert_eq!(
            t.run(&["XPENDING", "s", "g1"]),
            Reply::Array(vec![
                int(3),
                bulk("1-0"),
                bulk("3-0"),
                Reply::Array(vec![bulks(&["c1", "3"])])
            ])
        );
        // ACKED: pending in g2 only still counts.
        t.run(&["XACK", "s", "g1", "2-0"]);
        assert_eq!(
            t.run(&["XDELEX", "s", "ACKED", "IDS", "1", "2-0"]),
            ints(&[2])
        );
        t.run(&["XACK", "s", "g2", "2-0"]);
        assert_eq!(
            t.run(&["xdelex", "s", "acked", "IDS", "1", "2-0"]),
            ints(&[1])
        );
        // DELREF: gone from the stream and from every PEL.
        assert_eq!(
            t.run(&["XDELEX", "s", "IDS", "1", "3-0", "DELREF"]),
            ints(&[1])
        );
        assert_eq!(
            t.run(&["XPENDING", "s", "g2"]),
            Reply::Array(vec![
                int(1),
                bulk("1-0"),
                bulk("1-0"),
                Reply::Array(vec![bulks(&["c2", "1"])])
            ])
        );
        // DELREF also clears references to an entry already deleted (-1).
        assert_eq!(
            t.run(&["XDELEX", "s", "DELREF", "IDS", "1", "1-0"]),
            ints(&[-1])
        );
        assert_eq!(t.run(&["XPENDING", "s", "g1"]), NO_PENDING());
        assert_eq!(t.run(&["XPENDING", "s", "g2"]), NO_PENDING());
        assert_eq!(t.run(&["XLEN", "s"]), int(0));
        // A missing key: -1 for every id.
        assert_eq!(
            t.run(&["XDELEX", "nokey", "IDS", "2", "1-0", "2-0"]),
            ints(&[-1, -1])
        );
    }

    #[test]
    fn xdelex_acked_needs_every_group_to_have_read_past() {
        let mut t = TestClient::new();
        for i in 1..=5 {
            t.run(&["XADD", "s", &format!("{i}-0"), "f", "v"]);
        }
        t.run(&["XGROUP", "CREATE", "s", "g1", "1-0"]);
        t.run(&["XGROUP", "CREATE", "s", "g2", "3-0"]);
        // 1-0 is at or below every group's last id and pending nowhere.
        assert_eq!(
            t.run(&["XDELEX", "s", "ACKED", "IDS", "1", "1-0"]),
            ints(&[1])
        );
        // g1 has not been delivered 2-0 yet, nor anyone 9-0.
        assert_eq!(
            t.run(&["XDELEX", "s", "ACKED", "IDS", "2", "2-0", "9-0"]),
            ints(&[2, 2])
        );
        t.run(&["XGROUP", "DESTROY", "s", "g1"]);
        assert_eq!(
            t.run(&["XDELEX", "s", "ACKED", "IDS", "1", "2-0"]),
            ints(&[1])
        );
        // Without groups nothing is referenced.
        t.run(&["XGROUP", "DESTROY", "s", "g2"]);
        assert_eq!(
            t.run(&["XDELEX", "s", "ACKED", "IDS", "2", "5-0", "9-0"]),
            ints(&[1, -1])
        );
    }

    #[test]
    fn xackdel_policies() {
        // ACKED: acknowledged in g1, kept while g2 has it pending.
        let mut t = two_groups(2);
        assert_eq!(
            t.run(&["XACKDEL", "s", "g1", "ACKED", "IDS", "2", "1-0", "2-0"]),
            ints(&[2, 2])
        );
        assert_eq!(t.run(&["XLEN", "s"]), int(2));
        assert_eq!(t.run(&["XPENDING", "s", "g1"]), NO_PENDING());
        assert_eq!(
            t.run(&["XACKDEL", "s", "g2", "ACKED", "IDS", "2", "1-0", "2-0"]),
            ints(&[1, 1])
        );
        assert_eq!(t.run(&["XLEN", "s"]), int(0));
        assert_eq!(t.run(&["XPENDING", "s", "g2"]), NO_PENDING());

        // KEEPREF: g2's references stay, and acknowledging them later answers 1.
        let mut t = two_groups(2);
        assert_eq!(
            t.run(&["XACKDEL", "s", "g1", "IDS", "2", "1-0", "2-0"]),
            ints(&[1, 1])
        );
        assert_eq!(t.run(&["XLEN", "s"]), int(0));
        assert_eq!(
            t.run(&["XPENDING", "s", "g2"]),
            Reply::Array(vec![
                int(2),
                bulk("1-0"),
                bulk("2-0"),
                Reply::Array(vec![bulks(&["c2", "2"])])
            ])
        );
        assert_eq!(
            t.run(&["XACKDEL", "s", "g2", "KEEPREF", "IDS", "2", "1-0", "2-0"]),
            ints(&[1, 1])
        );
        assert_eq!(t.run(&["XPENDING", "s", "g2"]), NO_PENDING());

        // DELREF: references go from every group; g2 then has nothing to ack.
        let mut t = two_groups(2);
        assert_eq!(
            t.run(&["XACKDEL", "s", "g1", "DELREF", "IDS", "2", "1-0", "2-0"]),
            ints(&[1, 1])
        );
        assert_eq!(t.run(&["XPENDING", "s", "g2"]), NO_PENDING());
        assert_eq!(
            t.run(&["XACKDEL", "s", "g2", "DELREF", "IDS", "2", "1-0", "2-0"]),
            ints(&[-1, -1])
        );

        // A missing key or group answers -1 per id, not NOGROUP.
        let mut t = TestClient::new();
        assert_eq!(
            t.run(&["XACKDEL", "s", "g", "IDS", "2", "1-1", "2-2"]),
            ints(&[-1, -1])
        );
        t.run(&["XADD", "s", "1-0", "f", "v"]);
        assert_eq!(
            t.run(&["XACKDEL", "s", "g", "IDS", "2", "1-1", "2-2"]),
            ints(&[-1, -1])
        );
    }

    #[test]
    fn xdelex_xackdel_errors() {
        let mut t = TestClient::new();
        t.run(&["XADD", "s", "1-0", "f", "v"]);
        t.run(&["XGROUP", "CREATE", "s", "g", "0"]);
        t.run(&["SET", "str", "x"]);
        for pre in [&["XDELEX", "s"][..], &["XACKDEL", "s", "g"][..]] {
            let run = |t: &mut TestClient, rest: &[&str]| {
                let argv: Vec<&str> = pre.iter().chain(rest).copied().collect();
                t.run(&argv)
            };
            for n in ["abc", "0", "-5"] {
                assert_eq!(
                    run(&mut t, &["IDS", n, "1-1"]),
                    err("ERR Number of IDs must be a positive integer")
                );
            }
            assert_eq!(
                run(&mut t, &["IDS", "3", "1-1", "2-2"]),
                err("ERR The `numids` parameter must match the number of arguments")
            );
            assert_eq!(
                run(&mut t, &["IDS", "1", "1-1", "2-2"]),
                err("ERR syntax error")
            );
            assert_eq!(
                run(&mut t, &["KEEPREF", "DELREF", "IDS", "1", "1-1"]),
                err("ERR syntax error")
            );
            assert_eq!(
                run(&mut t, &["ACKED", "IDS", "1", "1-1", "ACKED"]),
                err("ERR syntax error")
            );
            assert_eq!(
                run(&mut t, &["BOGUS", "IDS", "1", "1-1"]),
                err("ERR syntax error")
            );
            assert_eq!(
                run(&mut t, &["IDS", "1", "nope"]),
                err("ERR Invalid stream ID specified as stream command argument")
            );
        }
        assert_eq!(
            t.run(&["XDELEX", "s", "IDS", "1"]),
            err("ERR wrong number of arguments for 'xdelex' command")
        );
        assert_eq!(
            t.run(&["XACKDEL", "s", "g", "IDS", "1"]),
            err("ERR wrong number of arguments for 'xackdel' command")
        );
        assert_eq!(
            t.run(&["XDELEX", "str", "IDS", "1", "1-0"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(
            t.run(&["XACKDEL", "str", "g", "IDS", "1", "1-0"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        // Nothing was changed by any of the above.
        assert_eq!(t.run(&["XLEN", "s"]), int(1));
    }

    #[test]
    fn trimming_with_ref_policies() {
        // ACKED skips what a group still needs and goes on past it.
        let mut t = two_groups(5);
        t.run(&["XACK", "s", "g1", "1-0", "3-0", "4-0"]);
        t.run(&["XACK", "s", "g2", "1-0", "3-0", "4-0"]);
        assert_eq!(t.run(&["XTRIM", "s", "MAXLEN", "2", "ACKED"]), int(3));
        assert_eq!(
            t.run(&["XRANGE", "s", "-", "+"]),
            Reply::Array(vec![entry("2-0", &["f", "v"]), entry("5-0", &["f", "v"])])
        );
        // Nothing else is acknowledged: nothing more goes.
        assert_eq!(t.run(&["XTRIM", "s", "MINID", "9", "ACKED"]), int(0));
        // KEEPREF leaves the references; DELREF drops them.
        assert_eq!(t.run(&["XTRIM", "s", "MAXLEN", "1"]), int(1));
        assert_eq!(pending(&mut t, "g1"), 2);
        assert_eq!(
            t.run(&["XADD", "s", "DELREF", "MAXLEN", "0", "6-0", "f", "v"]),
            bulk("6-0")
        );
        assert_eq!(t.run(&["XLEN", "s"]), int(0));
        // 5-0's references went with it; 2-0's (deleted by KEEPREF) stay.
        assert_eq!(pending(&mut t, "g2"), 1);
        assert_eq!(
            t.run(&["XTRIM", "s", "MAXLEN", "0", "BOGUS"]),
            err("ERR syntax error")
        );
        // Without groups the policies agree.
        let mut t = TestClient::new();
        for i in 1..=4 {
            t.run(&["XADD", "s", &format!("{i}-0"), "f", "v"]);
        }
        assert_eq!(t.run(&["XTRIM", "s", "MINID", "3", "ACKED"]), int(2));
        assert_eq!(t.run(&["XLEN", "s"]), int(2));
    }

    #[test]
    fn approximate_acked_trim_is_logged_as_the_exact_equivalent() {
        let mut t = TestClient::new();
        let log = Arc::new(LogRecorder::default());
        t.store.set_write_log(log.clone());
        t.run(&["CONFIG", "SET", "stream-node-max-entries", "2"]);
        for i in 1..=6 {
            t.run(&["XADD", "s", &format!("{i}-0"), "f", "v"]);
        }
        t.run(&["XGROUP", "CREATE", "s", "g", "0"]);
        t.run(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "6",
            "STREAMS",
            "s",
            ">",
        ]);
        t.run(&["XACK", "s", "g", "1-0", "3-0", "4-0"]);
        // Nodes [1,2] [3,4] [5,6]: ~ 2 takes the first two; 2-0 is pending.
        assert_eq!(
            t.run(&["XADD", "s", "ACKED", "MAXLEN", "~", "2", "7-0", "f", "v"]),
            bulk("7-0")
        );
        assert_eq!(t.run(&["XLEN", "s"]), int(4));
        assert_eq!(
            t.run(&["XDELEX", "s", "DELREF", "IDS", "1", "2-0"]),
            ints(&[1])
        );
        // Only state changes are logged: this answers -1 and changes nothing.
        t.run(&["XDELEX", "s", "IDS", "1", "2-0"]);
        t.run(&["XACKDEL", "s", "g", "IDS", "1", "5-0"]);
        let log = log.0.lock().clone();
        let tail: Vec<&str> = log.iter().rev().take(4).rev().map(|l| l.as_str()).collect();
        assert_eq!(
            tail,
            vec![
                "XADD s 7-0 f v",
                "XTRIM s MAXLEN = 4 ACKED",
                "XDELEX s DELREF IDS 1 2-0",
                "XACKDEL s g IDS 1 5-0",
            ]
        );
    }
}
