//! Single-flight cache fills: on a miss, exactly one caller computes the value
//! while the others wait for it, instead of every caller hitting the database at
//! once (a thundering herd) or polling a hand-made "mini-lock".
//!
//! - `TW.FILL.GET key lease_ms [WAIT ms]` → `["hit", value]`; on a miss
//!   `["fill", token]` to one caller, who holds a lease on the fill for `lease_ms`;
//!   callers that find a fill in flight wait (up to `WAIT`) and then get
//!   `["hit", value]`, or `["fill", token]` when the lease ended without a value
//!   (the filler died or gave up), or `["timeout"]`. Without `WAIT` (and inside
//!   MULTI or a script) nobody waits: `["timeout"]` at once.
//! - `TW.FILL.SET key token value [EX s | PX ms]` stores the value (1), unless
//!   another caller's live lease holds the fill (0: this filler lost its lease and
//!   the new filler will store a fresher value).
//! - `TW.FILL.ABORT key token` gives the lease up (1 if it held it): the oldest
//!   waiter gets the next `fill` at once.
//!
//! The value is an ordinary string key: GET, TTL and DEL work on it, and DEL is
//! the invalidation. A lease lives in memory only, so a fill in flight leaves no
//! trace in the keyspace (a GET meanwhile still sees nothing): a restart ends
//! every lease along with its filler's connection, and the next TW.FILL.GET hands
//! out a new fill. The value itself is as durable as any string.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::blocking::BlockKind;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::error::{CmdError, CmdResult};
use crate::exec::{read_string, Ctx};
use crate::families::records;
use crate::keyspace::NUM_DBS;
use crate::PrimitiveStats;

pub fn commands() -> Vec<CommandSpec> {
    vec![
        cmd(
            "tw.fill.get",
            -3,
            WRITE | FAST | BLOCKING | BLOCKS_ON_OPTION | NATIVE,
            keys(1, 1, 1),
            get,
        )
        .key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::INSERT]))
        .blocks_on(BlockKind::Fill)
        .group("string")
        .summary(
            "Reads a cached value, or makes the caller its one filler, or waits for the filler.",
        ),
        cmd(
            "tw.fill.set",
            -4,
            WRITE | DENYOOM | NATIVE,
            keys(1, 1, 1),
            set,
        )
        .group("string")
        .summary("Stores the value of a fill and hands it to the callers waiting for it."),
        cmd(
            "tw.fill.abort",
            3,
            WRITE | FAST | NATIVE,
            keys(1, 1, 1),
            abort,
        )
        .key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE]))
        .group("string")
        .summary("Gives up a fill's lease, so that a waiting caller fills instead."),
    ]
}

/// One fill in flight.
struct Lease {
    token: Bytes,
    /// Unix ms at which the lease ends.
    until: u64,
}

/// The fills in flight, per database and key (looked up by the borrowed key).
/// Locked only briefly, under the key's shard lock (or by the expiry task, which
/// takes no shard lock with it).
#[derive(Default)]
pub struct Leases {
    dbs: Mutex<[HashMap<Bytes, Lease>; NUM_DBS]>,
}

impl Leases {
    /// The token of the live lease on the key, if there is one.
    pub fn holder(&self, db: usize, key: &[u8], now: u64) -> Option<Bytes> {
        self.dbs.lock()[db]
            .get(key)
            .filter(|l| l.until > now)
            .map(|l| l.token.clone())
    }

    /// The live leases of database `db` as `(key, unix ms the lease ends)`: what
    /// the dashboard lists as fills in flight (they are not in the keyspace).
    pub fn in_flight(&self, db: usize, now: u64) -> Vec<(Bytes, u64)> {
        self.dbs
            .lock()
            .get(db)
            .map(|m| {
                m.iter()
                    .filter(|(_, l)| l.until > now)
                    .map(|(k, l)| (k.clone(), l.until))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn grant(&self, db: usize, key: &Bytes, until: u64) -> Bytes {
        let token = Bytes::from(crate::random_hex(32));
        self.dbs.lock()[db].insert(
            key.clone(),
            Lease {
                token: token.clone(),
                until,
            },
        );
        token
    }

    /// Ends the lease on the key if `token` holds it, live or not.
    fn end(&self, db: usize, key: &[u8], token: &[u8]) {
        let mut dbs = self.dbs.lock();
        if dbs[db].get(key).is_some_and(|l| l.token == token) {
            dbs[db].remove(key);
        }
    }

    /// Drops the leases that ended by `now`; the keys among them that `waited`
    /// says have waiters (they look again: one of them becomes the filler).
    pub fn take_expired(
        &self,
        now: u64,
        waited: impl Fn(usize, &Bytes) -> bool,
    ) -> Vec<(usize, Bytes)> {
        let mut woken = Vec::new();
        for (db, map) in self.dbs.lock().iter_mut().enumerate() {
            map.retain(|key, l| {
                if l.until > now {
                    return true;
                }
                if waited(db, key) {
                    woken.push((db, key.clone()));
                }
                false
            });
        }
        woken
    }
}

fn word(s: &'static str) -> Reply {
    Reply::Bulk(Bytes::from_static(s.as_bytes()))
}

/// `TW.FILL.GET`'s arguments after the name: key, lease (ms) and `WAIT` (ms) if
/// given; shared with the Redis engine's script.
pub fn parse_get(args: &mut Args<'_>) -> Result<(Bytes, u64, Option<u64>), CmdError> {
    let key = args.next_bytes()?.clone();
    let lease = records::positive_ms(args)?;
    let mut wait = None;
    while !args.is_empty() {
        if args.flag("WAIT") {
            wait = Some(records::positive_ms(args)?);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok((key, lease, wait))
}

fn get(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, lease, wait) = parse_get(args)?;
    ctx.propagate_nothing();
    let store = ctx.store;
    let stats = &store.stats.primitives;
    if let Some(value) = read_string(ctx, &key)? {
        PrimitiveStats::bump(&stats.fill_hit);
        return Ok(Reply::Array(vec![word("hit"), Reply::Bulk(value)]));
    }
    let db = ctx.db();
    let leases = &store.fill_leases;
    if leases.holder(db, &key, ctx.now).is_none() {
        PrimitiveStats::bump(&stats.fill_granted);
        let token = leases.grant(db, &key, ctx.now.saturating_add(lease));
        return Ok(Reply::Array(vec![word("fill"), Reply::Bulk(token)]));
    }
    // (a queued caller counts once: its retries are not new requests)
    if !ctx.client.retrying {
        PrimitiveStats::bump(&stats.fill_waited);
    }
    let timeout = Reply::Array(vec![word("timeout")]);
    Ok(match wait {
        Some(ms) if !ctx.no_block => ctx.block(
            vec![key],
            Some(std::time::Duration::from_millis(ms)),
            timeout,
        ),
        _ => timeout,
    })
}

/// `TW.FILL.SET`'s arguments after the name: key, token, value and the expiry
/// (ms from now) if `EX`/`PX` gave one; shared with the Redis engine's script.
pub fn parse_set(args: &mut Args<'_>) -> Result<(Bytes, Bytes, Bytes, Option<u64>), CmdError> {
    let key = args.next_bytes()?.clone();
    let token = args.next_bytes()?.clone();
    let value = args.next_bytes()?.clone();
    let mut expiry = None;
    while !args.is_empty() {
        let unit = if args.flag("EX") {
            1000
        } else if args.flag("PX") {
            1
        } else {
            return Err(CmdError::Syntax);
        };
        if expiry.is_some() {
            return Err(CmdError::Syntax);
        }
        let n = args.next_i64()?;
        if n <= 0 {
            return Err(CmdError::err(
                "invalid expire time in 'tw.fill.set' command",
            ));
        }
        expiry = Some((n as u64).saturating_mul(unit));
    }
    Ok((key, token, value, expiry))
}

fn set(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, token, value, expiry) = parse_set(args)?;
    let at = expiry.map_or(0, |ms| ctx.now.saturating_add(ms));
    let db = ctx.db();
    let leases = &ctx.store.fill_leases;
    if leases.holder(db, &key, ctx.now).is_some_and(|t| t != token) {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    }
    leases.end(db, &key, &token);
    records::store_at(ctx, &key, value, at);
    ctx.signal_ready(&key);
    Ok(Reply::Int(1))
}

fn abort(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let token = args.next_bytes()?.clone();
    ctx.propagate_nothing();
    let db = ctx.db();
    let live = ctx.store.fill_leases.holder(db, &key, ctx.now);
    if live.as_deref() != Some(&token[..]) {
        return Ok(Reply::Int(0));
    }
    ctx.store.fill_leases.end(db, &key, &token);
    ctx.signal_ready(&key);
    Ok(Reply::Int(1))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn bulk_at(r: &Reply, i: usize) -> String {
        match r {
            Reply::Array(v) => match &v[i] {
                Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_filler_the_others_wait_for_its_value() {
        let mut a = TestClient::new();
        let mut b = a.other();
        let mut c = a.other();
        let r = a.run(&["TW.FILL.GET", "profile:7", "5000"]);
        assert_eq!(bulk_at(&r, 0), "fill");
        let token = bulk_at(&r, 1);
        // Without WAIT a second caller does not wait.
        assert_eq!(
            b.run(&["TW.FILL.GET", "profile:7", "5000"]),
            Reply::Array(vec![bulk("timeout")])
        );
        let wb = b.block(&["TW.FILL.GET", "profile:7", "5000", "WAIT", "5000"]);
        let wc = c.block(&["TW.FILL.GET", "profile:7", "5000", "WAIT", "5000"]);
        // No trace of the fill in the keyspace meanwhile.
        assert_eq!(a.run(&["GET", "profile:7"]), Reply::Null);
        assert_eq!(a.run(&["TW.FILL.SET", "profile:7", "other", "x"]), int(0));
        assert_eq!(
            a.run(&[
                "TW.FILL.SET",
                "profile:7",
                &token,
                "{\"name\":\"ada\"}",
                "EX",
                "60"
            ]),
            int(1)
        );
        for w in [wb, wc] {
            let served = w.waiter.take_served().expect("served by the fill");
            assert_eq!(bulk_at(&served[0], 0), "hit");
            assert_eq!(bulk_at(&served[0], 1), "{\"name\":\"ada\"}");
        }
        assert_eq!(a.run(&["GET", "profile:7"]), bulk("{\"name\":\"ada\"}"));
        let ttl = a.run(&["TTL", "profile:7"]);
        assert!(matches!(ttl, Reply::Int(n) if n > 50 && n <= 60), "{ttl:?}");
        // DEL invalidates: the next caller fills.
        a.run(&["DEL", "profile:7"]);
        assert_eq!(
            bulk_at(&a.run(&["TW.FILL.GET", "profile:7", "5000"]), 0),
            "fill"
        );
        let stats = a.resp(&["INFO", "stats"]);
        assert!(stats.contains("tw_fill_hit:2\r\n"), "{stats}");
        assert!(stats.contains("tw_fill_granted:2\r\n"), "{stats}");
        assert!(stats.contains("tw_fill_waited:3\r\n"), "{stats}");
    }

    #[test]
    fn an_aborted_fill_passes_to_the_oldest_waiter() {
        let mut a = TestClient::new();
        let mut b = a.other();
        let mut c = a.other();
        let token = bulk_at(&a.run(&["TW.FILL.GET", "k", "5000"]), 1);
        let wb = b.block(&["TW.FILL.GET", "k", "5000", "WAIT", "5000"]);
        let wc = c.block(&["TW.FILL.GET", "k", "5000", "WAIT", "5000"]);
        assert_eq!(a.run(&["TW.FILL.ABORT", "k", "not-mine"]), int(0));
        assert_eq!(a.run(&["TW.FILL.ABORT", "k", &token]), int(1));
        let served = wb.waiter.take_served().expect("b fills next");
        assert_eq!(bulk_at(&served[0], 0), "fill");
        assert!(
            wc.waiter.take_served().is_none(),
            "c still waits for b's value"
        );
        let tb = bulk_at(&served[0], 1);
        // The first filler lost its lease: its late value is refused.
        assert_eq!(a.run(&["TW.FILL.SET", "k", &token, "stale"]), int(0));
        assert_eq!(a.run(&["TW.FILL.SET", "k", &tb, "fresh"]), int(1));
        let served = wc.waiter.take_served().expect("c gets b's value");
        assert_eq!(bulk_at(&served[0], 1), "fresh");
    }

    #[test]
    fn bad_arguments_and_wrong_types_are_refused() {
        let mut a = TestClient::new();
        let e = a.resp(&["TW.FILL.GET", "k", "0"]);
        assert!(e.contains("positive"), "{e}");
        let e = a.resp(&["TW.FILL.GET", "k", "100", "WAIT"]);
        assert!(e.starts_with("-ERR"), "{e}");
        let e = a.resp(&["TW.FILL.SET", "k", "t", "v", "EX", "0"]);
        assert!(e.contains("invalid expire time"), "{e}");
        let e = a.resp(&["TW.FILL.SET", "k", "t", "v", "EX", "1", "PX", "5"]);
        assert!(e.starts_with("-ERR syntax"), "{e}");
        a.run(&["LPUSH", "list", "x"]);
        let e = a.resp(&["TW.FILL.GET", "list", "100"]);
        assert!(e.starts_with("-WRONGTYPE"), "{e}");
        // Inside MULTI nothing waits.
        let token = bulk_at(&a.run(&["TW.FILL.GET", "m", "5000"]), 1);
        assert!(!token.is_empty());
        let mut b = a.other();
        b.run(&["MULTI"]);
        b.run(&["TW.FILL.GET", "m", "5000", "WAIT", "5000"]);
        assert_eq!(
            b.run(&["EXEC"]),
            Reply::Array(vec![Reply::Array(vec![bulk("timeout")])])
        );
    }
}
