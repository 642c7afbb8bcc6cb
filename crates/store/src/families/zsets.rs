//! Sorted-set commands (Redis's `t_zset.c`): ZADD and its options, rank/score/lex
//! ranges (ZRANGE and the legacy forms, ZRANGESTORE, ZREMRANGEBY*), pops (ZPOP*,
//! ZMPOP, and the blocking BZPOP*/BZMPOP), set algebra (ZUNION/ZINTER/ZDIFF,
//! their STORE forms, ZINTERCARD), ZRANDMEMBER and ZSCAN.
//!
//! Scores are replied with `Reply::Double`: a RESP3 double, or in RESP2 a bulk
//! string formatted as Redis 7.2 does. WITHSCORES replies are flat in RESP2 and
//! `[member, score]` pairs in RESP3.

use std::collections::HashMap;
use std::ops::Bound;

use bytes::Bytes;
use rand::Rng;
use tidewire_resp::{format_double, BulkArray, Reply};

use crate::args::Args;
use crate::blocking::parse_timeout;
use crate::blocking::BlockKind;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, Keys};
use crate::config::notify;
use crate::config::Limit;
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::keys::{parse_scan, scan_reply};
use crate::families::lists::{numkeys_positions, parse_numkeys};
use crate::num;
use crate::types::zset::ZSetValue;
use crate::value::{Entry, Value};

pub fn commands() -> Vec<CommandSpec> {
    let z = |c: CommandSpec| c.group("sorted_set");
    vec![
        z(cmd("zadd", -4, WRITE | DENYOOM | FAST, keys(1, 1, 1), zadd).summary("Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.")),
        z(cmd("zincrby", 4, WRITE | DENYOOM | FAST, keys(1, 1, 1), zincrby).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE])).summary("Increments the score of a member in a sorted set.")),
        z(cmd("zrem", -3, WRITE | FAST, keys(1, 1, 1), zrem).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.")),
        z(cmd("zcard", 2, READONLY | FAST, keys(1, 1, 1), zcard).key_roles(KeyRoles::Each(&[kf::RO])).summary("Returns the number of members in a sorted set.")),
        z(cmd("zscore", 3, READONLY | FAST, keys(1, 1, 1), zscore).summary("Returns the score of a member in a sorted set.")),
        z(cmd("zmscore", -3, READONLY | FAST, keys(1, 1, 1), zmscore).summary("Returns the score of one or more members in a sorted set.")),
        z(cmd("zrank", -3, READONLY | FAST, keys(1, 1, 1), zrank).summary("Returns the index of a member in a sorted set ordered by ascending scores.")),
        z(cmd("zrevrank", -3, READONLY | FAST, keys(1, 1, 1), zrevrank).summary("Returns the index of a member in a sorted set ordered by descending scores.")),
        z(cmd("zcount", 4, READONLY | FAST, keys(1, 1, 1), zcount).summary("Returns the count of members in a sorted set that have scores within a range.")),
        z(cmd("zlexcount", 4, READONLY | FAST, keys(1, 1, 1), zlexcount).summary("Returns the number of members in a sorted set within a lexicographical range.")),
        z(cmd("zrange", -4, READONLY, keys(1, 1, 1), zrange).summary("Returns members in a sorted set within a range of indexes.")),
        z(cmd("zrangestore", -5, WRITE | DENYOOM, keys(1, 2, 1), zrangestore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores a range of members from sorted set in a key.")),
        z(cmd("zrevrange", -4, READONLY, keys(1, 1, 1), zrevrange).summary("Returns members in a sorted set within a range of indexes in reverse order.")),
        z(cmd("zrangebyscore", -4, READONLY, keys(1, 1, 1), zrangebyscore).summary("Returns members in a sorted set within a range of scores.")),
        z(cmd("zrevrangebyscore", -4, READONLY, keys(1, 1, 1), zrevrangebyscore).summary("Returns members in a sorted set within a range of scores in reverse order.")),
        z(cmd("zrangebylex", -4, READONLY, keys(1, 1, 1), zrangebylex).summary("Returns members in a sorted set within a lexicographical range.")),
        z(cmd("zrevrangebylex", -4, READONLY, keys(1, 1, 1), zrevrangebylex).summary("Returns members in a sorted set within a lexicographical range in reverse order.")),
        z(cmd("zremrangebyrank", 4, WRITE, keys(1, 1, 1), zremrangebyrank).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes members in a sorted set within a range of indexes. Deletes the sorted set if all members were removed.")),
        z(cmd("zremrangebyscore", 4, WRITE, keys(1, 1, 1), zremrangebyscore).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes members in a sorted set within a range of scores. Deletes the sorted set if all members were removed.")),
        z(cmd("zremrangebylex", 4, WRITE, keys(1, 1, 1), zremrangebylex).key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE])).summary("Removes members in a sorted set within a lexicographical range. Deletes the sorted set if all members were removed.")),
        z(cmd("zpopmin", -2, WRITE | FAST, keys(1, 1, 1), zpopmin).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.")),
        z(cmd("zpopmax", -2, WRITE | FAST, keys(1, 1, 1), zpopmax).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.")),
        z(cmd("zmpop", -4, WRITE, Keys::Custom(at1_keys), zmpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).summary("Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped.")),
        z(cmd("bzpopmin", -3, WRITE | FAST | BLOCKING, keys(1, -2, 1), bzpopmin).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).blocks_on(BlockKind::ZSet).summary("Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.")),
        z(cmd("bzpopmax", -3, WRITE | FAST | BLOCKING, keys(1, -2, 1), bzpopmax).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).blocks_on(BlockKind::ZSet).summary("Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise.  Deletes the sorted set if the last element was popped.")),
        z(cmd("bzmpop", -5, WRITE | BLOCKING, Keys::Custom(at2_keys), bzmpop).key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::DELETE])).blocks_on(BlockKind::ZSet).summary("Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.")),
        z(cmd("zrandmember", -2, READONLY, keys(1, 1, 1), zrandmember).summary("Returns one or more random members from a sorted set.")),
        z(cmd("zunion", -3, READONLY, Keys::Custom(at1_keys), zunion).summary("Returns the union of multiple sorted sets.")),
        z(cmd("zinter", -3, READONLY, Keys::Custom(at1_keys), zinter).summary("Returns the intersect of multiple sorted sets.")),
        z(cmd("zdiff", -3, READONLY, Keys::Custom(at1_keys), zdiff).summary("Returns the difference between multiple sorted sets.")),
        z(cmd("zunionstore", -4, WRITE | DENYOOM, Keys::Custom(store_keys), zunionstore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores the union of multiple sorted sets in a key.")),
        z(cmd("zinterstore", -4, WRITE | DENYOOM, Keys::Custom(store_keys), zinterstore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores the intersect of multiple sorted sets in a key.")),
        z(cmd("zdiffstore", -4, WRITE | DENYOOM, Keys::Custom(store_keys), zdiffstore).key_roles(KeyRoles::Each(&[kf::OW | kf::UPDATE, kf::RO | kf::ACCESS])).summary("Stores the difference of multiple sorted sets in a key.")),
        z(cmd("zintercard", -3, READONLY, Keys::Custom(at1_keys), zintercard).summary("Returns the number of members of the intersect of multiple sorted sets.")),
        z(cmd("zscan", -3, READONLY, keys(1, 1, 1), zscan).summary("Iterates over members and scores of a sorted set.")),
    ]
}

fn at1_keys(argv: &[Bytes]) -> Vec<usize> {
    numkeys_positions(argv, 1)
}

fn at2_keys(argv: &[Bytes]) -> Vec<usize> {
    numkeys_positions(argv, 2)
}

fn store_keys(argv: &[Bytes]) -> Vec<usize> {
    let mut v = vec![1];
    v.extend(numkeys_positions(argv, 2));
    v
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

pub(crate) fn limits(ctx: &Ctx<'_>) -> (usize, usize) {
    let c = &ctx.store.config;
    (
        c.encoding.get_usize(Limit::ZsetMaxListpackEntries),
        c.encoding.get_usize(Limit::ZsetMaxListpackValue),
    )
}

fn zset_mut<'a>(ctx: &'a mut Ctx<'_>, key: &[u8]) -> Result<Option<&'a mut ZSetValue>, CmdError> {
    let (db, now) = (ctx.db(), ctx.now);
    match ctx.ks.get_mut(db, key, now) {
        None => Ok(None),
        Some(Entry {
            value: Value::ZSet(z),
            ..
        }) => Ok(Some(&mut **z)),
        Some(_) => Err(CmdError::WrongType),
    }
}

pub(crate) fn zset_read<'a>(
    ctx: &'a mut Ctx<'_>,
    key: &[u8],
) -> Result<Option<&'a ZSetValue>, CmdError> {
    let (db, now) = (ctx.db(), ctx.now);
    match ctx.ks.lookup_read(db, key, now) {
        None => Ok(None),
        Some(Entry {
            value: Value::ZSet(z),
            ..
        }) => Ok(Some(&**z)),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn score_arg(arg: &[u8]) -> Result<f64, CmdError> {
    num::parse_f64(arg).ok_or(CmdError::NotFloat)
}

/// `member score` pairs: flat in RESP2 (and when `flat`), pairs in RESP3.
fn scored_reply(ctx: &Ctx<'_>, items: Vec<(Bytes, f64)>, withscores: bool, nested: bool) -> Reply {
    let mut out = Vec::with_capacity(items.len() * if withscores && !nested { 2 } else { 1 });
    for (m, s) in items {
        if !withscores {
            out.push(Reply::Bulk(m));
        } else if nested {
            out.push(Reply::Array(vec![Reply::Bulk(m), Reply::Double(s)]));
        } else {
            out.push(Reply::Bulk(m));
            out.push(Reply::Double(s));
        }
    }
    let _ = ctx;
    Reply::Array(out)
}

// ---------------------------------------------------------------- ZADD family

#[derive(Default, Clone, Copy)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

enum AddOutcome {
    Added(f64),
    Updated(f64),
    /// Present, score unchanged (still "processed": INCR replies with it).
    Same(f64),
    Nop,
}

fn add_one(
    z: &mut ZSetValue,
    f: AddFlags,
    score: f64,
    member: &[u8],
) -> Result<AddOutcome, CmdError> {
    match z.score(member) {
        Some(cur) => {
            if f.nx {
                return Ok(AddOutcome::Nop);
            }
            let new = if f.incr {
                let n = cur + score;
                if n.is_nan() {
                    return Err(CmdError::err("resulting score is not a number (NaN)"));
                }
                n
            } else {
                score
            };
            if (f.gt && new <= cur) || (f.lt && new >= cur) {
                return Ok(AddOutcome::Nop);
            }
            if new != cur {
                z.insert(Bytes::copy_from_slice(member), new);
                Ok(AddOutcome::Updated(new))
            } else {
                Ok(AddOutcome::Same(new))
            }
        }
        None => {
            if f.xx {
                return Ok(AddOutcome::Nop);
            }
            z.insert(Bytes::copy_from_slice(member), score);
            Ok(AddOutcome::Added(score))
        }
    }
}

fn zadd_generic(ctx: &mut Ctx<'_>, key: &[u8], f: AddFlags, pairs: &[Bytes]) -> CmdResult {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(CmdError::Syntax);
    }
    if f.nx && f.xx {
        return Err(CmdError::err(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if ((f.gt || f.lt) && f.nx) || (f.gt && f.lt) {
        return Err(CmdError::err(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if f.incr && pairs.len() > 2 {
        return Err(CmdError::err(
            "INCR option supports a single increment-element pair",
        ));
    }
    let scores = pairs
        .chunks(2)
        .map(|p| score_arg(&p[0]))
        .collect::<Result<Vec<_>, _>>()?;
    // Two key lookups in all (this check, then the mutable borrow), not four.
    let exists = zset_mut(ctx, key)?.is_some();
    if !exists && f.xx {
        return Ok(if f.incr { Reply::Null } else { Reply::Int(0) });
    }
    let (max_entries, max_value) = limits(ctx);
    let (mut added, mut updated, mut last) = (0i64, 0i64, None);
    if !exists {
        let db = ctx.db();
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(key),
            Entry::new(Value::ZSet(Box::default())),
        );
    }
    let z = zset_mut(ctx, key)?.expect("present or just created");
    let mut failure = None;
    for (p, score) in pairs.chunks(2).zip(scores) {
        match add_one(z, f, score, &p[1]) {
            Ok(AddOutcome::Added(s)) => {
                added += 1;
                last = Some(s);
            }
            Ok(AddOutcome::Updated(s)) => {
                updated += 1;
                last = Some(s);
            }
            Ok(AddOutcome::Same(s)) => last = Some(s),
            Ok(AddOutcome::Nop) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    z.update_encoding(max_entries, max_value);
    let empty = z.is_empty();
    if added + updated > 0 {
        ctx.dirty((added + updated) as u64);
        ctx.notify(notify::ZSET, if f.incr { "zincr" } else { "zadd" }, key);
        ctx.signal_ready(key);
    }
    if empty {
        remove_if_empty_silent(ctx, key);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(if f.incr {
        last.map_or(Reply::Null, Reply::Double)
    } else {
        Reply::Int(if f.ch { added + updated } else { added })
    })
}

/// Drops a zset this command created but left empty (no event: it never existed).
fn remove_if_empty_silent(ctx: &mut Ctx<'_>, key: &[u8]) {
    let (db, now) = (ctx.db(), ctx.now);
    if matches!(ctx.ks.get(db, key, now), Some(Entry { value: Value::ZSet(z), .. }) if z.is_empty())
    {
        ctx.ks.remove(db, key);
    }
}

fn zadd(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let mut f = AddFlags::default();
    loop {
        if args.flag("NX") {
            f.nx = true
        } else if args.flag("XX") {
            f.xx = true
        } else if args.flag("GT") {
            f.gt = true
        } else if args.flag("LT") {
            f.lt = true
        } else if args.flag("CH") {
            f.ch = true
        } else if args.flag("INCR") {
            f.incr = true
        } else {
            break;
        }
    }
    let pairs = args.rest();
    zadd_generic(ctx, key, f, pairs)
}

fn zincrby(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let pairs = args.rest();
    let f = AddFlags {
        incr: true,
        ..Default::default()
    };
    zadd_generic(ctx, key, f, pairs)
}

fn zrem(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let Some(z) = zset_mut(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let removed = members.iter().filter(|m| z.remove(m).is_some()).count();
    if removed > 0 {
        ctx.dirty(removed as u64);
        ctx.notify(notify::ZSET, "zrem", key);
        ctx.remove_if_empty(key);
    }
    Ok(Reply::Int(removed as i64))
}

fn zcard(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    Ok(Reply::Int(
        zset_read(ctx, key)?.map_or(0, |z| z.len()) as i64
    ))
}

fn zscore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let member = args.next_bytes()?;
    Ok(zset_read(ctx, key)?
        .and_then(|z| z.score(member))
        .map_or(Reply::Null, Reply::Double))
}

fn zmscore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let members = args.rest();
    let z = zset_read(ctx, key)?;
    Ok(Reply::Array(
        members
            .iter()
            .map(|m| {
                z.and_then(|z| z.score(m))
                    .map_or(Reply::Null, Reply::Double)
            })
            .collect(),
    ))
}

fn rank_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, rev: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let member = args.next_bytes()?;
    let withscore = match args.remaining() {
        0 => false,
        1 if args.flag("WITHSCORE") => true,
        1 => return Err(CmdError::Syntax),
        _ => return Err(CmdError::WrongArity(ctx.cmd.full_name.clone())),
    };
    let null = if withscore {
        Reply::NullArray
    } else {
        Reply::Null
    };
    let Some(z) = zset_read(ctx, key)? else {
        return Ok(null);
    };
    let (Some(r), Some(s)) = (z.rank(member), z.score(member)) else {
        return Ok(null);
    };
    let r = if rev { z.len() - 1 - r } else { r } as i64;
    Ok(if withscore {
        Reply::Array(vec![Reply::Int(r), Reply::Double(s)])
    } else {
        Reply::Int(r)
    })
}

fn zrank(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    rank_generic(ctx, args, false)
}

fn zrevrank(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    rank_generic(ctx, args, true)
}

// ---------------------------------------------------------------- ranges

/// A score range (Redis's `zrangespec`).
#[derive(Clone, Copy, Debug)]
pub struct ScoreRange {
    min: f64,
    max: f64,
    minex: bool,
    maxex: bool,
}

fn parse_score_bound(arg: &[u8]) -> Option<(f64, bool)> {
    match arg.strip_prefix(b"(") {
        Some(rest) => num::parse_f64(rest).map(|v| (v, true)),
        None => num::parse_f64(arg).map(|v| (v, false)),
    }
}

fn parse_score_range(min: &[u8], max: &[u8]) -> Result<ScoreRange, CmdError> {
    let err = || CmdError::err("min or max is not a float");
    let (min, minex) = parse_score_bound(min).ok_or_else(err)?;
    let (max, maxex) = parse_score_bound(max).ok_or_else(err)?;
    Ok(ScoreRange {
        min,
        max,
        minex,
        maxex,
    })
}

/// A lex range (Redis's `zlexrangespec`).
#[derive(Clone, Debug)]
pub struct LexRange {
    min: Bound<Bytes>,
    max: Bound<Bytes>,
    /// `+` as min or `-` as max: matches nothing.
    empty: bool,
}

fn parse_lex_bound(arg: &[u8]) -> Option<(Bound<Bytes>, i8)> {
    match arg.first()? {
        b'+' if arg.len() == 1 => Some((Bound::Unbounded, 1)),
        b'-' if arg.len() == 1 => Some((Bound::Unbounded, -1)),
        b'(' => Some((Bound::Excluded(Bytes::copy_from_slice(&arg[1..])), 0)),
        b'[' => Some((Bound::Included(Bytes::copy_from_slice(&arg[1..])), 0)),
        _ => None,
    }
}

fn parse_lex_range(min: &[u8], max: &[u8]) -> Result<LexRange, CmdError> {
    let err = || CmdError::err("min or max not valid string range item");
    let (min, lo) = parse_lex_bound(min).ok_or_else(err)?;
    let (max, hi) = parse_lex_bound(max).ok_or_else(err)?;
    Ok(LexRange {
        min,
        max,
        empty: lo == 1 || hi == -1,
    })
}

impl ScoreRange {
    /// Ascending ranks `[start, end)` of the elements in range.
    fn ranks(&self, z: &ZSetValue) -> (usize, usize) {
        if self.min > self.max || (self.min == self.max && (self.minex || self.maxex)) {
            return (0, 0);
        }
        let start = z.count_prefix(|s, _| {
            if self.minex {
                s <= self.min
            } else {
                s < self.min
            }
        });
        let end = z.count_prefix(|s, _| {
            if self.maxex {
                s < self.max
            } else {
                s <= self.max
            }
        });
        (start, end.max(start))
    }
}

impl LexRange {
    fn ranks(&self, z: &ZSetValue) -> (usize, usize) {
        if self.empty {
            return (0, 0);
        }
        let start = match &self.min {
            Bound::Unbounded => 0,
            Bound::Included(m) => z.count_prefix(|_, x| x < &m[..]),
            Bound::Excluded(m) => z.count_prefix(|_, x| x <= &m[..]),
        };
        let end = match &self.max {
            Bound::Unbounded => z.len(),
            Bound::Included(m) => z.count_prefix(|_, x| x <= &m[..]),
            Bound::Excluded(m) => z.count_prefix(|_, x| x < &m[..]),
        };
        (start, end.max(start))
    }
}

/// Redis's rank normalisation: `None` for an empty range.
fn clamp_ranks(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
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

#[derive(Clone, Copy, PartialEq)]
enum RangeKind {
    Auto,
    Rank,
    Score,
    Lex,
}

/// Everything ZRANGE and friends accept.
struct RangeReq {
    kind: RangeKind,
    rev: bool,
    withscores: bool,
    offset: i64,
    /// -1 = no limit.
    limit: i64,
    has_limit: bool,
    min: Bytes,
    max: Bytes,
}

fn parse_range(
    args: &mut Args<'_>,
    kind: RangeKind,
    rev: Option<bool>,
    store: bool,
) -> Result<RangeReq, CmdError> {
    let min = args.next_bytes()?.clone();
    let max = args.next_bytes()?.clone();
    let mut r = RangeReq {
        kind,
        rev: rev.unwrap_or(false),
        withscores: false,
        offset: 0,
        limit: -1,
        has_limit: false,
        min,
        max,
    };
    let rev_fixed = rev.is_some();
    let mut rev_set = false;
    while let Some(opt) = args.peek() {
        let left = args.remaining() - 1;
        if !store && opt.eq_ignore_ascii_case(b"WITHSCORES") {
            args.next_bytes()?;
            r.withscores = true;
        } else if opt.eq_ignore_ascii_case(b"LIMIT") && left >= 2 {
            args.next_bytes()?;
            r.offset = args.next_i64()?;
            r.limit = args.next_i64()?;
            r.has_limit = true;
        } else if !rev_fixed && !rev_set && opt.eq_ignore_ascii_case(b"REV") {
            args.next_bytes()?;
            r.rev = true;
            rev_set = true;
        } else if r.kind == RangeKind::Auto && opt.eq_ignore_ascii_case(b"BYLEX") {
            args.next_bytes()?;
            r.kind = RangeKind::Lex;
        } else if r.kind == RangeKind::Auto && opt.eq_ignore_ascii_case(b"BYSCORE") {
            args.next_bytes()?;
            r.kind = RangeKind::Score;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if r.kind == RangeKind::Auto {
        r.kind = RangeKind::Rank;
    }
    if r.has_limit && r.kind == RangeKind::Rank {
        return Err(CmdError::err(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if r.withscores && r.kind == RangeKind::Lex {
        return Err(CmdError::err(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    if r.rev && r.kind != RangeKind::Rank {
        std::mem::swap(&mut r.min, &mut r.max);
    }
    Ok(r)
}

/// Checked, parsed bounds, resolved before the key is looked up (errors first).
enum ParsedRange {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

fn parse_bounds(r: &RangeReq) -> Result<ParsedRange, CmdError> {
    Ok(match r.kind {
        RangeKind::Rank | RangeKind::Auto => ParsedRange::Rank(
            num::parse_i64(&r.min).ok_or(CmdError::NotInteger)?,
            num::parse_i64(&r.max).ok_or(CmdError::NotInteger)?,
        ),
        RangeKind::Score => ParsedRange::Score(parse_score_range(&r.min, &r.max)?),
        RangeKind::Lex => ParsedRange::Lex(parse_lex_range(&r.min, &r.max)?),
    })
}

/// Where the selected elements start in the walk's direction and how many there
/// are; `None` when the range is empty.
fn window(z: &ZSetValue, r: &RangeReq, bounds: &ParsedRange) -> Option<(usize, usize)> {
    let len = z.len();
    let (start, end) = match bounds {
        ParsedRange::Rank(s, e) => return clamp_ranks(*s, *e, len).map(|(s, e)| (s, e + 1 - s)),
        ParsedRange::Score(sr) => sr.ranks(z),
        ParsedRange::Lex(lr) => lr.ranks(z),
    };
    if r.offset < 0 || start >= end {
        return None;
    }
    let n = end - start;
    let offset = r.offset as usize;
    if offset >= n {
        return None;
    }
    let take = if r.limit < 0 {
        n - offset
    } else {
        (r.limit as usize).min(n - offset)
    };
    let first = if r.rev {
        len - end + offset
    } else {
        start + offset
    };
    Some((first, take))
}

/// The selected elements, in reply order.
fn select(z: &ZSetValue, r: &RangeReq, bounds: &ParsedRange) -> Vec<(Bytes, f64)> {
    window(z, r, bounds).map_or_else(Vec::new, |(first, take)| {
        z.iter_from(first, r.rev)
            .take(take)
            .map(|(m, s)| (Bytes::copy_from_slice(m), s))
            .collect()
    })
}

fn range_generic(
    ctx: &mut Ctx<'_>,
    args: &mut Args<'_>,
    kind: RangeKind,
    rev: Option<bool>,
) -> CmdResult {
    let key = args.next_bytes()?;
    let r = parse_range(args, kind, rev, false)?;
    let bounds = parse_bounds(&r)?;
    let resp3 = ctx.resp3();
    let Some(z) = zset_read(ctx, key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let Some((first, take)) = window(z, &r, &bounds) else {
        return Ok(Reply::Array(Vec::new()));
    };
    let elements = z.iter_from(first, r.rev).take(take);
    if r.withscores && resp3 {
        // RESP3 pairs each member with a double: nested arrays, not plain strings.
        let items = elements
            .map(|(m, s)| (Bytes::copy_from_slice(m), s))
            .collect();
        return Ok(scored_reply(ctx, items, true, true));
    }
    // Members (and RESP2's scores, which are strings) written straight to wire form.
    let strings = if r.withscores { take * 2 } else { take };
    let mut list = BulkArray::with_capacity(strings, strings * 16);
    for (member, score) in elements {
        list.push(member);
        if r.withscores {
            list.push(format_double(score).as_bytes());
        }
    }
    Ok(Reply::Bulks(list))
}

fn zrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, RangeKind::Auto, None)
}

fn zrevrange(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, RangeKind::Rank, Some(true))
}

fn zrangebyscore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, RangeKind::Score, Some(false))
}

fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, RangeKind::Score, Some(true))
}

fn zrangebylex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, RangeKind::Lex, Some(false))
}

fn zrevrangebylex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    range_generic(ctx, args, RangeKind::Lex, Some(true))
}

/// Replaces `dst` with a zset of `items` (or deletes it when empty); returns the
/// count. `event` is the keyspace event for a non-empty result.
fn store_result(
    ctx: &mut Ctx<'_>,
    dst: &[u8],
    items: impl IntoIterator<Item = (Bytes, f64)>,
    event: &'static str,
) -> Result<usize, CmdError> {
    let (max_entries, max_value) = limits(ctx);
    let mut z = ZSetValue::new();
    for (m, s) in items {
        z.insert(m, s);
    }
    z.reset_encoding(max_entries, max_value);
    let n = z.len();
    let db = ctx.db();
    if n == 0 {
        if ctx.ks.remove(db, dst).is_some() {
            ctx.dirty(1);
            ctx.notify(notify::GENERIC, "del", dst);
        }
    } else {
        ctx.ks.insert(
            db,
            Bytes::copy_from_slice(dst),
            Entry::new(Value::ZSet(Box::new(z))),
        );
        ctx.dirty(1);
        ctx.notify(notify::ZSET, event, dst);
        ctx.signal_ready(dst);
    }
    Ok(n)
}

fn zrangestore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let dst = args.next_bytes()?;
    let src = args.next_bytes()?;
    let r = parse_range(args, RangeKind::Auto, None, true)?;
    let bounds = parse_bounds(&r)?;
    let items = match zset_read(ctx, src)? {
        Some(z) => select(z, &r, &bounds),
        None => Vec::new(),
    };
    Ok(Reply::Int(
        store_result(ctx, dst, items, "zrangestore")? as i64
    ))
}

fn zcount(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let range = parse_score_range(args.next_bytes()?, args.next_bytes()?)?;
    Ok(Reply::Int(zset_read(ctx, key)?.map_or(0, |z| {
        let (s, e) = range.ranks(z);
        e - s
    }) as i64))
}

fn zlexcount(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let range = parse_lex_range(args.next_bytes()?, args.next_bytes()?)?;
    Ok(Reply::Int(zset_read(ctx, key)?.map_or(0, |z| {
        let (s, e) = range.ranks(z);
        e - s
    }) as i64))
}

fn remrange(ctx: &mut Ctx<'_>, key: &[u8], bounds: ParsedRange, event: &'static str) -> CmdResult {
    let Some(z) = zset_mut(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let (start, end) = match &bounds {
        ParsedRange::Rank(s, e) => match clamp_ranks(*s, *e, z.len()) {
            Some((s, e)) => (s, e + 1),
            None => (0, 0),
        },
        ParsedRange::Score(r) => r.ranks(z),
        ParsedRange::Lex(r) => r.ranks(z),
    };
    if start >= end {
        return Ok(Reply::Int(0));
    }
    let removed = z.remove_range(start, end - 1).len();
    ctx.dirty(removed as u64);
    ctx.notify(notify::ZSET, event, key);
    ctx.remove_if_empty(key);
    Ok(Reply::Int(removed as i64))
}

fn zremrangebyrank(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let s = args.next_i64()?;
    let e = args.next_i64()?;
    remrange(ctx, key, ParsedRange::Rank(s, e), "zremrangebyrank")
}

fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let r = parse_score_range(args.next_bytes()?, args.next_bytes()?)?;
    remrange(ctx, key, ParsedRange::Score(r), "zremrangebyscore")
}

fn zremrangebylex(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let r = parse_lex_range(args.next_bytes()?, args.next_bytes()?)?;
    remrange(ctx, key, ParsedRange::Lex(r), "zremrangebylex")
}

// ---------------------------------------------------------------- pops

/// Pops up to `count` from `key`; `Ok(None)` if absent. Raises the event, deletes
/// the key when emptied.
fn pop_some(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    max: bool,
    count: usize,
) -> Result<Option<Vec<(Bytes, f64)>>, CmdError> {
    let Some(z) = zset_mut(ctx, key)? else {
        return Ok(None);
    };
    let items = z.pop(count, max);
    if !items.is_empty() {
        ctx.dirty(items.len() as u64);
        ctx.notify(notify::ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
        ctx.remove_if_empty(key);
    }
    Ok(Some(items))
}

fn zpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>, max: bool) -> CmdResult {
    let key = args.next_bytes()?;
    let count = match args.peek() {
        Some(_) => Some(match num::parse_i64(args.next_bytes()?) {
            Some(n) if n >= 0 => n as usize,
            _ => return Err(CmdError::err("value is out of range, must be positive")),
        }),
        None => None,
    };
    if !args.is_empty() {
        return Err(CmdError::Syntax);
    }
    if count == Some(0) {
        zset_read(ctx, key)?;
        return Ok(Reply::Array(Vec::new()));
    }
    let items = pop_some(ctx, key, max, count.unwrap_or(1))?.unwrap_or_default();
    let nested = count.is_some() && ctx.resp3();
    Ok(scored_reply(ctx, items, true, nested))
}

fn zpopmin(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    zpop(ctx, args, false)
}

fn zpopmax(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    zpop(ctx, args, true)
}

struct MpopArgs<'a> {
    keys: &'a [Bytes],
    max: bool,
    count: usize,
}

fn parse_mpop<'a>(args: &mut Args<'a>) -> Result<MpopArgs<'a>, CmdError> {
    let numkeys = parse_numkeys(args.next_bytes()?, "numkeys should be greater than 0")?;
    let rest = args.rest();
    if rest.len() < numkeys + 1 {
        return Err(CmdError::Syntax);
    }
    let (keys, opts) = rest.split_at(numkeys);
    let max = if opts[0].eq_ignore_ascii_case(b"MIN") {
        false
    } else if opts[0].eq_ignore_ascii_case(b"MAX") {
        true
    } else {
        return Err(CmdError::Syntax);
    };
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
        max,
        count: count.unwrap_or(1),
    })
}

fn serve_mpop(ctx: &mut Ctx<'_>, m: &MpopArgs<'_>) -> Result<Option<Reply>, CmdError> {
    for key in m.keys {
        if let Some(items) = pop_some(ctx, key, m.max, m.count)? {
            if items.is_empty() {
                continue;
            }
            ctx.propagate(vec![
                b(if m.max { "ZPOPMAX" } else { "ZPOPMIN" }),
                key.clone(),
                num::i64_to_bytes(items.len() as i64),
            ]);
            let inner = scored_reply(ctx, items, true, true);
            return Ok(Some(Reply::Array(vec![Reply::Bulk(key.clone()), inner])));
        }
    }
    Ok(None)
}

fn zmpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let m = parse_mpop(args)?;
    Ok(serve_mpop(ctx, &m)?.unwrap_or(Reply::NullArray))
}

fn owned(keys: &[Bytes]) -> Vec<Bytes> {
    keys.iter().map(|k| Bytes::copy_from_slice(k)).collect()
}

fn bzpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>, max: bool) -> CmdResult {
    let all = args.rest();
    let (keys, timeout) = all.split_at(all.len() - 1);
    let timeout = parse_timeout(&timeout[0])?;
    for key in keys {
        if let Some(mut items) = pop_some(ctx, key, max, 1)? {
            if let Some((m, s)) = items.pop() {
                ctx.propagate(vec![
                    b(if max { "ZPOPMAX" } else { "ZPOPMIN" }),
                    key.clone(),
                ]);
                return Ok(Reply::Array(vec![
                    Reply::Bulk(key.clone()),
                    Reply::Bulk(m),
                    Reply::Double(s),
                ]));
            }
        }
    }
    if ctx.no_block {
        return Ok(Reply::NullArray);
    }
    Ok(ctx.block(owned(keys), timeout, Reply::NullArray))
}

fn bzpopmin(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    bzpop(ctx, args, false)
}

fn bzpopmax(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    bzpop(ctx, args, true)
}

fn bzmpop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
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

// ---------------------------------------------------------------- random, scan

fn zrandmember(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let count = match args.peek() {
        Some(_) => Some(args.next_i64()?),
        None => None,
    };
    let withscores = match args.remaining() {
        0 => false,
        1 if count.is_some() && args.flag("WITHSCORES") => true,
        _ => return Err(CmdError::Syntax),
    };
    let resp3 = ctx.resp3();
    let Some(count) = count else {
        let Some(z) = zset_read(ctx, key)? else {
            return Ok(Reply::Null);
        };
        let r = rand::thread_rng().gen_range(0..z.len());
        return Ok(z
            .at(r)
            .map_or(Reply::Null, |(m, _)| Reply::Bulk(Bytes::copy_from_slice(m))));
    };
    if !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(CmdError::err("value is out of range"));
    }
    let Some(z) = zset_read(ctx, key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let len = z.len();
    let mut rng = rand::thread_rng();
    let items: Vec<(Bytes, f64)> = if count < 0 {
        (0..count.unsigned_abs())
            .filter_map(|_| {
                z.at(rng.gen_range(0..len))
                    .map(|(m, s)| (Bytes::copy_from_slice(m), s))
            })
            .collect()
    } else if count as usize >= len {
        z.iter()
            .map(|(m, s)| (Bytes::copy_from_slice(m), s))
            .collect()
    } else {
        rand::seq::index::sample(&mut rng, len, count as usize)
            .into_iter()
            .filter_map(|i| z.at(i).map(|(m, s)| (Bytes::copy_from_slice(m), s)))
            .collect()
    };
    Ok(scored_reply(ctx, items, withscores, resp3))
}

fn zscan(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?;
    let opts = parse_scan(args, false)?;
    let mut out = Vec::new();
    let mut next = 0;
    if let Some(z) = zset_read(ctx, key)? {
        let mut emit = |m: &[u8], s: f64| {
            if opts.matches(m) {
                out.push(Reply::Bulk(Bytes::copy_from_slice(m)));
                out.push(Reply::Bulk(Bytes::from(format_double(s))));
            }
        };
        if z.encoding() == "listpack" {
            // Small sets come back whole and in order, as Redis does for listpacks.
            z.iter().for_each(|(m, s)| emit(m, s));
        } else {
            next = z.scan(opts.cursor, opts.count, emit);
        }
    }
    Ok(scan_reply(next, out))
}

// ---------------------------------------------------------------- set algebra

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn apply(self, acc: &mut f64, v: f64) {
        match self {
            Aggregate::Sum => {
                *acc += v;
                if acc.is_nan() {
                    *acc = 0.0;
                }
            }
            Aggregate::Min => *acc = acc.min(v),
            Aggregate::Max => *acc = acc.max(v),
        }
    }
}

/// One input's members and scores (absent key = empty).
type Source = Vec<(Bytes, f64)>;

struct AlgebraReq {
    sources: Vec<Source>,
    weights: Vec<f64>,
    aggregate: Aggregate,
    withscores: bool,
    limit: usize,
}

/// Parses `numkeys key… [WEIGHTS …] [AGGREGATE …] [WITHSCORES] [LIMIT n]` and reads
/// the inputs. `store` forbids WITHSCORES; `card` is ZINTERCARD (LIMIT only).
fn parse_algebra(
    ctx: &mut Ctx<'_>,
    args: &mut Args<'_>,
    op: SetOp,
    store: bool,
    card: bool,
) -> Result<AlgebraReq, CmdError> {
    let numkeys = match num::parse_i64(args.next_bytes()?) {
        None => return Err(CmdError::NotInteger),
        Some(n) if n < 1 => {
            return Err(CmdError::err(format!(
                "at least 1 input key is needed for '{}' command",
                ctx.cmd.full_name
            )))
        }
        Some(n) => n as usize,
    };
    let rest = args.rest();
    if numkeys > rest.len() {
        return Err(CmdError::Syntax);
    }
    let (keys, opts) = rest.split_at(numkeys);
    let mut sources = Vec::with_capacity(numkeys);
    for key in keys {
        let (db, now) = (ctx.db(), ctx.now);
        sources.push(match ctx.ks.lookup_read(db, key, now) {
            None => Vec::new(),
            Some(Entry {
                value: Value::ZSet(z),
                ..
            }) => z
                .iter()
                .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                .collect(),
            // A plain set counts as a sorted set whose members all score 1, as in Redis.
            Some(Entry {
                value: Value::Set(set),
                ..
            }) => set
                .iter()
                .map(|m| (Bytes::copy_from_slice(&m), 1.0))
                .collect(),
            Some(_) => return Err(CmdError::WrongType),
        });
    }
    let mut req = AlgebraReq {
        sources,
        weights: vec![1.0; numkeys],
        aggregate: Aggregate::Sum,
        withscores: false,
        limit: 0,
    };
    let mut i = 0;
    while i < opts.len() {
        let remaining = opts.len() - i;
        let o = &opts[i];
        if op != SetOp::Diff && !card && remaining > numkeys && o.eq_ignore_ascii_case(b"WEIGHTS") {
            for k in 0..numkeys {
                req.weights[k] = num::parse_f64(&opts[i + 1 + k])
                    .ok_or_else(|| CmdError::err("weight value is not a float"))?;
            }
            i += 1 + numkeys;
        } else if op != SetOp::Diff
            && !card
            && remaining >= 2
            && o.eq_ignore_ascii_case(b"AGGREGATE")
        {
            let a = &opts[i + 1];
            req.aggregate = if a.eq_ignore_ascii_case(b"SUM") {
                Aggregate::Sum
            } else if a.eq_ignore_ascii_case(b"MIN") {
                Aggregate::Min
            } else if a.eq_ignore_ascii_case(b"MAX") {
                Aggregate::Max
            } else {
                return Err(CmdError::Syntax);
            };
            i += 2;
        } else if !store && !card && o.eq_ignore_ascii_case(b"WITHSCORES") {
            req.withscores = true;
            i += 1;
        } else if card && remaining >= 2 && o.eq_ignore_ascii_case(b"LIMIT") {
            req.limit = match num::parse_i64(&opts[i + 1]) {
                Some(n) if n >= 0 => n as usize,
                _ => return Err(CmdError::err("LIMIT can't be negative")),
            };
            i += 2;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(req)
}

fn weighted(w: f64, s: f64) -> f64 {
    let v = w * s;
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

/// Computes the result, sorted by (score, member).
fn compute(req: &AlgebraReq, op: SetOp) -> Vec<(Bytes, f64)> {
    let mut out: Vec<(Bytes, f64)> = match op {
        SetOp::Union => {
            let mut acc: HashMap<&Bytes, f64, ahash::RandomState> = HashMap::default();
            for (src, w) in req.sources.iter().zip(&req.weights) {
                for (m, s) in src {
                    let v = weighted(*w, *s);
                    match acc.get_mut(m) {
                        Some(a) => req.aggregate.apply(a, v),
                        None => {
                            acc.insert(m, v);
                        }
                    }
                }
            }
            acc.into_iter()
                .map(|(m, s)| (Bytes::copy_from_slice(m), s))
                .collect()
        }
        SetOp::Inter => {
            let lookups: Vec<HashMap<&Bytes, f64, ahash::RandomState>> = req
                .sources
                .iter()
                .map(|s| s.iter().map(|(m, s)| (m, *s)).collect())
                .collect();
            let Some(first) = req.sources.first() else {
                return Vec::new();
            };
            let mut res = Vec::new();
            'outer: for (m, s) in first {
                let mut acc = weighted(req.weights[0], *s);
                for (k, l) in lookups.iter().enumerate().skip(1) {
                    match l.get(m) {
                        Some(s) => req.aggregate.apply(&mut acc, weighted(req.weights[k], *s)),
                        None => continue 'outer,
                    }
                }
                res.push((m.clone(), acc));
            }
            res
        }
        SetOp::Diff => {
            let others: Vec<HashMap<&Bytes, f64, ahash::RandomState>> = req
                .sources
                .iter()
                .skip(1)
                .map(|s| s.iter().map(|(m, s)| (m, *s)).collect())
                .collect();
            req.sources
                .first()
                .map(|first| {
                    first
                        .iter()
                        .filter(|(m, _)| others.iter().all(|o| !o.contains_key(m)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    out.sort_by(|a, b| crate::types::zset::cmp_entry(a.1, &a.0, b.1, &b.0));
    out
}

fn algebra(ctx: &mut Ctx<'_>, args: &mut Args<'_>, op: SetOp) -> CmdResult {
    let req = parse_algebra(ctx, args, op, false, false)?;
    let items = compute(&req, op);
    let resp3 = ctx.resp3();
    Ok(scored_reply(ctx, items, req.withscores, resp3))
}

fn algebra_store(
    ctx: &mut Ctx<'_>,
    args: &mut Args<'_>,
    op: SetOp,
    event: &'static str,
) -> CmdResult {
    let dst = args.next_bytes()?;
    let req = parse_algebra(ctx, args, op, true, false)?;
    let items = compute(&req, op);
    Ok(Reply::Int(store_result(ctx, dst, items, event)? as i64))
}

fn zunion(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra(ctx, args, SetOp::Union)
}

fn zinter(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra(ctx, args, SetOp::Inter)
}

fn zdiff(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra(ctx, args, SetOp::Diff)
}

fn zunionstore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra_store(ctx, args, SetOp::Union, "zunionstore")
}

fn zinterstore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra_store(ctx, args, SetOp::Inter, "zinterstore")
}

fn zdiffstore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    algebra_store(ctx, args, SetOp::Diff, "zdiffstore")
}

fn zintercard(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let req = parse_algebra(ctx, args, SetOp::Inter, true, true)?;
    let mut n = compute(&req, SetOp::Inter).len();
    if req.limit > 0 {
        n = n.min(req.limit);
    }
    Ok(Reply::Int(n as i64))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod set_input_tests {
    use crate::testkit::*;

    #[test]
    fn union_and_inter_accept_plain_sets_with_score_one() {
        let mut t = TestClient::new();
        t.run(&["SADD", "s", "a", "b"]);
        t.run(&["ZADD", "z", "2", "b", "5", "c"]);
        assert_eq!(
            t.resp(&["ZUNION", "2", "s", "z", "WITHSCORES"]),
            "*6\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n3\r\n$1\r\nc\r\n$1\r\n5\r\n"
        );
        assert_eq!(t.run(&["ZINTERSTORE", "d", "2", "s", "z"]), int(1));
        assert_eq!(t.resp(&["ZSCORE", "d", "b"]), "$1\r\n3\r\n");
        t.run(&["SET", "str", "x"]);
        assert_eq!(
            t.run(&["ZUNION", "2", "s", "str"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
    }
}
