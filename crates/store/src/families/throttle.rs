//! Rate limiting as single atomic commands, with the generic cell rate algorithm
//! (GCRA): a key keeps the "theoretical arrival time" (TAT) of the next request,
//! and a request is allowed when it would not push the TAT further ahead of now
//! than the burst allows. No background work, O(1) memory per key.
//!
//! - `CL.THROTTLE key max_burst count_per_period period_s [quantity]`, as the
//!   redis-cell module answers it: `[limited, limit, remaining, retry_after_s,
//!   reset_after_s]`, the key holding the TAT in nanoseconds as a string.
//! - `TW.THROTTLE key [QUANTITY n] TIER name max_burst count period_ms [TIER …]`:
//!   every tier checked and charged together, or none charged.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::error::{CmdError, CmdResult};
use crate::exec::{read_string, Ctx};
use crate::families::records;
use crate::num;

pub fn commands() -> Vec<CommandSpec> {
    let flags = WRITE | DENYOOM | FAST | NATIVE;
    vec![
        cmd("cl.throttle", -5, flags, keys(1, 1, 1), cl_throttle)
        .key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE]))
            .group("generic")
            .summary("Rate limits a key with the generic cell rate algorithm (redis-cell's CL.THROTTLE)."),
        cmd("tw.throttle", -7, flags, keys(1, 1, 1), tw_throttle)
        .key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::UPDATE]))
            .group("generic")
            .summary("Rate limits a key against several tiers at once, all charged or none."),
    ]
}

const NS_PER_MS: i128 = 1_000_000;
const NS_PER_S: i128 = 1_000_000_000;

/// One limit: a request of `quantity` costs `emission * quantity` of schedule,
/// and the schedule may run `tolerance` ahead of now. Public so that the Redis
/// engine's script (tidewire-server) decides with the very same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Nanoseconds between requests at the sustained rate.
    pub emission: i128,
    /// How far ahead of now the schedule may run: `emission * (max_burst + 1)`.
    pub tolerance: i128,
    /// `max_burst + 1`.
    pub limit: i64,
}

impl Limit {
    fn new(max_burst: i64, count: i64, period_ns: i128) -> Result<Limit, CmdError> {
        if max_burst < 0 || count < 0 || period_ns < 0 {
            return Err(CmdError::err("value is out of range, must be positive"));
        }
        if count == 0 || period_ns == 0 {
            return Err(CmdError::err("zero rates are not supported"));
        }
        let emission = period_ns / count as i128;
        if emission == 0 {
            return Err(CmdError::err("zero rates are not supported"));
        }
        Ok(Limit {
            emission,
            tolerance: emission * (max_burst as i128 + 1),
            limit: max_burst.saturating_add(1),
        })
    }
}

/// One decision of GCRA against a stored TAT (`None`: no key).
struct Decision {
    limited: bool,
    /// The TAT to store when allowed.
    new_tat: i128,
    /// How long until the limit is back to full (ns, the key's TTL when stored).
    ttl: i128,
    /// How long until the request could pass (ns); `None` when it never can
    /// (more than the whole burst) or it passed.
    retry_after: Option<i128>,
    remaining: i64,
}

fn decide(l: Limit, tat: Option<i128>, now: i128, quantity: i64) -> Decision {
    let increment = l.emission * quantity as i128;
    let tat = tat.unwrap_or(now);
    let new_tat = tat.max(now) + increment;
    let allow_at = new_tat - l.tolerance;
    let diff = now - allow_at;
    let (limited, ttl, retry_after) = if diff < 0 {
        let retry = (increment <= l.tolerance).then_some(-diff);
        (true, tat - now, retry)
    } else {
        (false, new_tat - now, None)
    };
    // Requests of one emission each that still fit, as redis-cell counts them.
    let next = l.tolerance - ttl;
    let remaining = if next > -l.emission {
        let unit = if l.emission >= 1000 { 1000 } else { 1 };
        ((next / unit) as f64 / (l.emission / unit) as f64) as i64
    } else {
        0
    };
    Decision {
        limited,
        new_tat,
        ttl,
        retry_after,
        remaining,
    }
}

/// Whole units of `per` in `ns`, one more for any part of a millisecond left
/// (a caller told to wait must not come back too early).
fn round_up(ns: i128, per: i128) -> i64 {
    let whole = ns / per;
    let extra = (ns % per) / NS_PER_MS > 0;
    (whole + i128::from(extra)) as i64
}

/// The stored TAT of a CL.THROTTLE key.
fn stored_tat(ctx: &mut Ctx<'_>, key: &Bytes) -> Result<Option<i128>, CmdError> {
    match read_string(ctx, key)? {
        None => Ok(None),
        Some(v) => num::parse_i64(&v)
            .map(|t| Some(t as i128))
            .ok_or(CmdError::NotInteger),
    }
}

/// Stores `value` under `key` until `ttl_ns` from now (rounded up to a
/// millisecond); a TTL of zero removes the key.
fn store_until(ctx: &mut Ctx<'_>, key: &Bytes, value: Bytes, ttl_ns: i128) {
    if ttl_ns <= 0 {
        return records::delete(ctx, key);
    }
    let ttl_ms = (ttl_ns + NS_PER_MS - 1) / NS_PER_MS;
    let at = ctx.now.saturating_add(ttl_ms.min(u64::MAX as i128) as u64);
    records::store_at(ctx, key, value, at);
}

/// `CL.THROTTLE`'s arguments after the name: the key, its limit and the quantity
/// (also what the Redis engine's script is given, so errors are the same there).
pub fn parse_cl_throttle(args: &mut Args<'_>) -> Result<(Bytes, Limit, i64), CmdError> {
    let key = args.next_bytes()?.clone();
    let max_burst = args.next_i64()?;
    let count = args.next_i64()?;
    let period_s = args.next_i64()?;
    let quantity = if args.is_empty() { 1 } else { args.next_i64()? };
    if !args.is_empty() {
        return Err(CmdError::Syntax);
    }
    if quantity < 0 {
        return Err(CmdError::err("value is out of range, must be positive"));
    }
    let limit = Limit::new(max_burst, count, period_s as i128 * NS_PER_S)?;
    Ok((key, limit, quantity))
}

fn cl_throttle(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, limit, quantity) = parse_cl_throttle(args)?;
    let now = ctx.now as i128 * NS_PER_MS;
    let d = decide(limit, stored_tat(ctx, &key)?, now, quantity);
    let p = &ctx.store.stats.primitives;
    crate::PrimitiveStats::bump(if d.limited {
        &p.throttle_limited
    } else {
        &p.throttle_allowed
    });
    if d.limited {
        ctx.propagate_nothing();
    } else {
        store_until(ctx, &key, num::i64_to_bytes(d.new_tat as i64), d.ttl);
    }
    let retry_after = d.retry_after.map_or(-1, |r| round_up(r, NS_PER_S));
    Ok(Reply::Array(vec![
        Reply::Int(i64::from(d.limited)),
        Reply::Int(limit.limit),
        Reply::Int(d.remaining),
        Reply::Int(if d.limited { retry_after } else { -1 }),
        Reply::Int(round_up(d.ttl.max(0), NS_PER_S)),
    ]))
}

/// A TW.THROTTLE key's tiers: `name=tat` lines (names hold no `=` or newline).
fn parse_tiers(value: &[u8]) -> Vec<(Vec<u8>, i128)> {
    value
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|b| *b == b'=')?;
            let tat = num::parse_i64(&line[at + 1..])?;
            Some((line[..at].to_vec(), tat as i128))
        })
        .collect()
}

/// A throttle key's schedule, for read-only tools (the dashboard): one `(tier,
/// TAT in unix ns)` per tier, the tier empty for CL.THROTTLE's single TAT; `None`
/// when the value is neither shape. A bare integer is also what any counter holds:
/// callers should check that the TAT agrees with the key's TTL (a throttle key
/// expires when its schedule catches up with the clock).
pub fn inspect(value: &[u8]) -> Option<Vec<(Bytes, i128)>> {
    if let Some(tat) = num::parse_i64(value) {
        return Some(vec![(Bytes::new(), tat as i128)]);
    }
    let tiers = parse_tiers(value);
    let lines = value.split(|b| *b == b'\n').count();
    (!tiers.is_empty() && tiers.len() == lines).then(|| {
        tiers
            .into_iter()
            .map(|(name, tat)| (Bytes::from(name), tat))
            .collect()
    })
}

/// `TW.THROTTLE`'s tiers by name, in the order given.
pub type Tiers = Vec<(Bytes, Limit)>;

/// `TW.THROTTLE`'s arguments after the name: the key, the quantity and the
/// tiers in the order given (shared with the Redis engine's script).
pub fn parse_tw_throttle(args: &mut Args<'_>) -> Result<(Bytes, i64, Tiers), CmdError> {
    let key = args.next_bytes()?.clone();
    let mut quantity = 1i64;
    let mut tiers: Vec<(Bytes, Limit)> = Vec::new();
    while !args.is_empty() {
        if args.flag("QUANTITY") {
            quantity = args.next_i64()?;
            if quantity < 0 {
                return Err(CmdError::err("value is out of range, must be positive"));
            }
        } else if args.flag("TIER") {
            if args.remaining() < 4 {
                return Err(CmdError::Syntax);
            }
            let name = args.next_bytes()?.clone();
            if name.is_empty() || name.iter().any(|b| *b == b'=' || *b == b'\n') {
                return Err(CmdError::err(
                    "tier names must be non-empty, without '=' or newlines",
                ));
            }
            if tiers.iter().any(|(n, _)| *n == name) {
                return Err(CmdError::err("duplicate tier name"));
            }
            let max_burst = args.next_i64()?;
            let count = args.next_i64()?;
            let period_ms = args.next_i64()?;
            tiers.push((
                name,
                Limit::new(max_burst, count, period_ms as i128 * NS_PER_MS)?,
            ));
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if tiers.is_empty() {
        return Err(CmdError::Syntax);
    }
    Ok((key, quantity, tiers))
}

fn tw_throttle(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, quantity, tiers) = parse_tw_throttle(args)?;
    let stored = match read_string(ctx, &key)? {
        Some(v) => parse_tiers(&v),
        None => Vec::new(),
    };
    let now = ctx.now as i128 * NS_PER_MS;
    let decisions: Vec<Decision> = tiers
        .iter()
        .map(|(name, limit)| {
            let tat = stored
                .iter()
                .find(|(n, _)| n[..] == name[..])
                .map(|(_, t)| *t);
            decide(*limit, tat, now, quantity)
        })
        .collect();
    let limited = decisions.iter().any(|d| d.limited);
    let p = &ctx.store.stats.primitives;
    crate::PrimitiveStats::bump(if limited {
        &p.throttle_limited
    } else {
        &p.throttle_allowed
    });
    let retry_after_ms = if limited {
        // Allowed once every limiting tier allows it; never, if one never will.
        let limiting: Vec<Option<i128>> = decisions
            .iter()
            .filter(|d| d.limited)
            .map(|d| d.retry_after)
            .collect();
        if limiting.iter().any(Option::is_none) {
            -1
        } else {
            let worst = limiting.iter().flatten().max().copied().unwrap_or(0);
            ((worst + NS_PER_MS - 1) / NS_PER_MS) as i64
        }
    } else {
        -1
    };
    if limited {
        // A refused request costs no tier anything.
        ctx.propagate_nothing();
    } else {
        let mut value = Vec::new();
        for ((name, _), d) in tiers.iter().zip(&decisions) {
            if !value.is_empty() {
                value.push(b'\n');
            }
            value.extend_from_slice(name);
            value.push(b'=');
            value.extend_from_slice(&num::i64_to_bytes(d.new_tat as i64));
        }
        let ttl = decisions.iter().map(|d| d.ttl).max().unwrap_or(0);
        store_until(ctx, &key, Bytes::from(value), ttl);
    }
    let mut out = vec![Reply::Int(i64::from(limited)), Reply::Int(retry_after_ms)];
    for ((name, limit), d) in tiers.iter().zip(&decisions) {
        // A refused request changed nothing: every tier shows the state it found.
        let (ttl, remaining) = if limited {
            let tat = stored
                .iter()
                .find(|(n, _)| n[..] == name[..])
                .map(|(_, t)| *t);
            let found = decide(*limit, tat, now, 0);
            (found.ttl, found.remaining)
        } else {
            (d.ttl, d.remaining)
        };
        out.push(Reply::Array(vec![
            Reply::Bulk(name.clone()),
            Reply::Int(limit.limit),
            Reply::Int(remaining),
            Reply::Int(((ttl.max(0) + NS_PER_MS - 1) / NS_PER_MS) as i64),
        ]));
    }
    Ok(Reply::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// redis-cell's own table of cases (1 per second, burst 4: limit 5), replayed
    /// against `decide` with the same clock.
    #[test]
    fn gcra_matches_redis_cells_cases() {
        let l = Limit::new(4, 1, NS_PER_S).unwrap();
        let s = 1_000_000 * NS_PER_S;
        let ms = |n: i128| n * NS_PER_MS;
        let secs = |n: i128| n * NS_PER_S;
        let mut tat: Option<i128> = None;
        // (now, quantity, remaining, reset_after, retry_after, limited)
        let cases: [(i128, i64, i64, i128, Option<i128>, bool); 15] = [
            (s, 6, 5, 0, None, true),
            (s, 1, 4, secs(1), None, false),
            (s, 1, 3, secs(2), None, false),
            (s, 1, 2, secs(3), None, false),
            (s, 1, 1, secs(4), None, false),
            (s, 1, 0, secs(5), None, false),
            (s, 1, 0, secs(5), Some(secs(1)), true),
            (s + ms(3000), 1, 2, ms(3000), None, false),
            (s + ms(3100), 1, 1, ms(3900), None, false),
            (s + ms(4000), 1, 1, ms(4000), None, false),
            (s + ms(8000), 1, 4, ms(1000), None, false),
            (s + ms(9500), 1, 4, ms(1000), None, false),
            (s + ms(9500), 0, 4, secs(1), None, false),
            (s + ms(9500), 2, 2, secs(3), None, false),
            (s + ms(9500), 5, 2, secs(3), Some(secs(3)), true),
        ];
        for (i, (now, q, remaining, reset, retry, limited)) in cases.into_iter().enumerate() {
            let d = decide(l, tat, now, q);
            assert_eq!(d.limited, limited, "case {i}");
            assert_eq!(d.remaining, remaining, "case {i}");
            assert_eq!(d.ttl, reset, "case {i}");
            assert_eq!(d.retry_after, retry, "case {i}");
            if !d.limited {
                tat = Some(d.new_tat);
            }
        }
    }

    #[test]
    fn cl_throttle_replies_and_state() {
        use crate::testkit::*;
        let mut t = TestClient::new();
        let r = t.run(&["CL.THROTTLE", "user123", "15", "30", "60"]);
        assert_eq!(
            r,
            Reply::Array(vec![int(0), int(16), int(15), int(-1), int(2)])
        );
        let r = t.run(&["CL.THROTTLE", "user123", "15", "30", "60", "15"]);
        assert!(
            matches!(&r, Reply::Array(v) if v[0] == int(0) && v[2] == int(0)),
            "{r:?}"
        );
        let r = t.run(&["CL.THROTTLE", "user123", "15", "30", "60"]);
        assert!(
            matches!(&r, Reply::Array(v) if v[0] == int(1) && v[3] == int(2)),
            "{r:?}"
        );
        // The key is an ordinary string with a TTL.
        assert!(matches!(t.run(&["PTTL", "user123"]), Reply::Int(n) if n > 30_000 && n <= 32_000));
        assert_eq!(
            t.run(&["CL.THROTTLE", "k", "1", "0", "60"]),
            err("ERR zero rates are not supported")
        );
        assert_eq!(
            t.run(&["CL.THROTTLE", "k", "x", "1", "60"]),
            err("ERR value is not an integer or out of range")
        );
        let info = t.resp(&["INFO", "stats"]);
        assert!(
            info.contains("tw_throttle_allowed:2\r\n")
                && info.contains("tw_throttle_limited:1\r\n"),
            "{info}"
        );
        t.run(&["LPUSH", "list", "a"]);
        assert_eq!(
            t.run(&["CL.THROTTLE", "list", "1", "1", "1"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
    }

    #[test]
    fn tw_throttle_charges_all_tiers_or_none() {
        use crate::testkit::*;
        let mut t = TestClient::new();
        let call = |t: &mut TestClient| {
            t.run(&[
                "TW.THROTTLE",
                "api:u1",
                "TIER",
                "burst",
                "1",
                "2",
                "1000",
                "TIER",
                "sustained",
                "2",
                "3",
                "60000",
            ])
        };
        let tier = |r: &Reply, i: usize| match r {
            Reply::Array(v) => v[2 + i].clone(),
            _ => Reply::Null,
        };
        // burst: 2 per second (limit 2); sustained: 3 per minute (limit 3).
        let r = call(&mut t);
        assert!(
            matches!(&r, Reply::Array(v) if v[0] == int(0) && v[1] == int(-1)),
            "{r:?}"
        );
        assert_eq!(
            tier(&r, 1),
            Reply::Array(vec![bulk("sustained"), int(3), int(2), int(20_000)])
        );
        call(&mut t);
        // The burst tier refuses the third call at once: sustained is not charged.
        let r = call(&mut t);
        assert!(
            matches!(&r, Reply::Array(v) if v[0] == int(1) && v[1] != int(-1)),
            "{r:?}"
        );
        // (the clock may have moved a millisecond or two since the first call)
        let Reply::Array(t1) = tier(&r, 1) else {
            panic!("{r:?}")
        };
        assert_eq!(t1[..3], [bulk("sustained"), int(3), int(1)]);
        assert!(
            matches!(t1[3], Reply::Int(ms) if (39_900..=40_000).contains(&ms)),
            "{t1:?}"
        );
        let stored = t.run(&["GET", "api:u1"]);
        assert!(
            matches!(&stored, Reply::Bulk(b) if b.starts_with(b"burst=")),
            "{stored:?}"
        );
        assert_eq!(
            t.run(&[
                "TW.THROTTLE",
                "k",
                "TIER",
                "a",
                "1",
                "1",
                "1000",
                "TIER",
                "a",
                "1",
                "1",
                "1000"
            ]),
            err("ERR duplicate tier name")
        );
    }
}
