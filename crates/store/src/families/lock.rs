//! Fenced locks: `TW.LOCK.ACQUIRE name ttl_ms [WAIT ms]` → `[token, fence]` or nil,
//! `TW.LOCK.RENEW name token ttl_ms`, `TW.LOCK.RELEASE name token` (1 / 0, the
//! holder only), `TW.LOCK.INFO name`.
//!
//! A lock is one string key, held until released or its TTL passes (a holder that
//! dies lets it go). Waiters (`WAIT`) queue first come, first served and are handed
//! the lock when it is released, deleted or expires — no polling. The fence is a
//! number that rises with every acquisition of the name, so that a storage layer
//! can refuse a holder that lost the lock without knowing it (paused, partitioned):
//! the current time in microseconds, or one more than the last fence this process
//! gave, whichever is higher — so it keeps rising across restarts and after the
//! key is gone (unless the system clock steps back). Layout: `lock1|<token>|<fence>`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::blocking::BlockKind;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::records;
use crate::num;

pub fn commands() -> Vec<CommandSpec> {
    vec![
        cmd(
            "tw.lock.acquire",
            -3,
            WRITE | DENYOOM | FAST | BLOCKING | BLOCKS_ON_OPTION | NATIVE,
            keys(1, 1, 1),
            acquire,
        )
        .key_roles(KeyRoles::Each(&[kf::RW | kf::INSERT]))
        .blocks_on(BlockKind::Lock)
        .group("generic")
        .summary("Takes a lock with a fencing number, waiting for it if asked."),
        cmd(
            "tw.lock.renew",
            4,
            WRITE | FAST | NATIVE,
            keys(1, 1, 1),
            renew,
        )
        .group("generic")
        .summary("Extends a lock its holder still has."),
        cmd(
            "tw.lock.release",
            3,
            WRITE | FAST | NATIVE,
            keys(1, 1, 1),
            release,
        )
        .key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE]))
        .group("generic")
        .summary("Releases a lock, handing it to the oldest waiter."),
        cmd(
            "tw.lock.info",
            2,
            READONLY | FAST | NATIVE,
            keys(1, 1, 1),
            info,
        )
        .group("generic")
        .summary("Reports a lock's fence, remaining time and waiters."),
    ]
}

/// The last fence handed out by this process (fences rise even for different
/// names, which keeps each name's rising).
static LAST_FENCE: AtomicU64 = AtomicU64::new(0);

fn next_fence(now_ms: u64) -> u64 {
    let floor = now_ms.saturating_mul(1000);
    let mut last = LAST_FENCE.load(Ordering::Relaxed);
    loop {
        let fence = floor.max(last.saturating_add(1));
        match LAST_FENCE.compare_exchange(last, fence, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return fence,
            Err(seen) => last = seen,
        }
    }
}

struct Held {
    token: Bytes,
    fence: u64,
}

fn encode(token: &[u8], fence: u64) -> Bytes {
    Bytes::from(format!("lock1|{}|{fence}", String::from_utf8_lossy(token)))
}

fn parse(value: &[u8]) -> Option<Held> {
    let rest = value.strip_prefix(b"lock1|")?;
    let at = rest.iter().position(|c| *c == b'|')?;
    Some(Held {
        token: Bytes::copy_from_slice(&rest[..at]),
        fence: num::parse_i64(&rest[at + 1..])? as u64,
    })
}

/// The holder's token and fence in a lock record's value; `None` for any other
/// value. For tools that list locks without taking part in them (the dashboard
/// reads the value with GET, then the waiters with TW.LOCK.INFO).
pub fn inspect(value: &[u8]) -> Option<(Bytes, u64)> {
    parse(value).map(|h| (h.token, h.fence))
}

fn load(ctx: &mut Ctx<'_>, key: &Bytes) -> Result<Option<Held>, CmdError> {
    records::load(ctx, key, "a lock", parse)
}

/// `TW.LOCK.ACQUIRE`'s arguments after the name: name, TTL (ms) and `WAIT` (ms)
/// if given; shared with the Redis engine's script.
pub fn parse_acquire(args: &mut Args<'_>) -> Result<(Bytes, u64, Option<u64>), CmdError> {
    let key = args.next_bytes()?.clone();
    let ttl = records::positive_ms(args)?;
    let mut wait = None;
    while !args.is_empty() {
        if args.flag("WAIT") {
            wait = Some(records::positive_ms(args)?);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok((key, ttl, wait))
}

fn acquire(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, ttl, wait) = parse_acquire(args)?;
    if load(ctx, &key)?.is_some() {
        // (a queued waiter counts once: its retries are not new requests)
        if !ctx.client.retrying {
            crate::PrimitiveStats::bump(&ctx.store.stats.primitives.lock_busy);
        }
        ctx.propagate_nothing();
        return Ok(match wait {
            // Inside MULTI or a script nothing waits.
            Some(ms) if !ctx.no_block => ctx.block(
                vec![key],
                Some(std::time::Duration::from_millis(ms)),
                Reply::Null,
            ),
            _ => Reply::Null,
        });
    }
    crate::PrimitiveStats::bump(&ctx.store.stats.primitives.lock_acquired);
    let token = Bytes::from(crate::random_hex(32));
    // The clock carries fences across restarts; the process-wide counter keeps
    // them strict within a run.
    let fence = next_fence(ctx.now);
    let at = ctx.now.saturating_add(ttl);
    records::store_at(ctx, &key, encode(&token, fence), at);
    Ok(Reply::Array(vec![
        Reply::Bulk(token),
        Reply::Int(fence.min(i64::MAX as u64) as i64),
    ]))
}

fn renew(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let token = args.next_bytes()?.clone();
    let ttl = records::positive_ms(args)?;
    match load(ctx, &key)? {
        Some(h) if h.token == token => {
            let at = ctx.now.saturating_add(ttl);
            records::store_at(ctx, &key, encode(&token, h.fence), at);
            Ok(Reply::Int(1))
        }
        _ => {
            ctx.propagate_nothing();
            Ok(Reply::Int(0))
        }
    }
}

fn release(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let token = args.next_bytes()?.clone();
    match load(ctx, &key)? {
        Some(h) if h.token == token => {
            records::delete(ctx, &key);
            Ok(Reply::Int(1))
        }
        _ => {
            ctx.propagate_nothing();
            Ok(Reply::Int(0))
        }
    }
}

fn info(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let waiters = ctx.store.blocking.queue(ctx.db(), &key).len() as i64;
    let Some(h) = load(ctx, &key)? else {
        return Ok(Reply::Null);
    };
    let db = ctx.db();
    let ttl = ctx
        .ks
        .get(db, &key, ctx.now)
        .map_or(-1, |e| e.expire_at.saturating_sub(ctx.now) as i64);
    let text = |s: &'static str| Reply::Bulk(Bytes::from_static(s.as_bytes()));
    Ok(Reply::Map(vec![
        (
            text("fence"),
            Reply::Int(h.fence.min(i64::MAX as u64) as i64),
        ),
        (text("ttl_ms"), Reply::Int(ttl)),
        (text("waiters"), Reply::Int(waiters)),
    ]))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn held(r: &Reply) -> (String, i64) {
        match r {
            Reply::Array(v) => match (&v[0], &v[1]) {
                (Reply::Bulk(t), Reply::Int(f)) => (String::from_utf8_lossy(t).into_owned(), *f),
                _ => panic!("{r:?}"),
            },
            _ => panic!("{r:?}"),
        }
    }

    #[test]
    fn one_holder_fences_rise_waiters_take_over_in_order() {
        let mut a = TestClient::new();
        let mut b = a.other();
        let mut c = a.other();
        let (token, fence) = held(&a.run(&["TW.LOCK.ACQUIRE", "payout", "10000"]));
        assert_eq!(b.run(&["TW.LOCK.ACQUIRE", "payout", "10000"]), Reply::Null);
        assert_eq!(b.run(&["TW.LOCK.RELEASE", "payout", "not-mine"]), int(0));
        assert_eq!(
            b.run(&["TW.LOCK.RENEW", "payout", "not-mine", "5000"]),
            int(0)
        );
        assert_eq!(a.run(&["TW.LOCK.RENEW", "payout", &token, "20000"]), int(1));
        // b, then c, wait; a release hands the lock to b first.
        let wb = b.block(&["TW.LOCK.ACQUIRE", "payout", "10000", "WAIT", "5000"]);
        let wc = c.block(&["TW.LOCK.ACQUIRE", "payout", "10000", "WAIT", "5000"]);
        let info = a.resp(&["TW.LOCK.INFO", "payout"]);
        assert!(info.contains("waiters") && info.contains(":2"), "{info}");
        assert_eq!(a.run(&["TW.LOCK.RELEASE", "payout", &token]), int(1));
        let served = wb.waiter.take_served().expect("b was handed the lock");
        let (tb, fb) = held(&served[0]);
        assert!(fb > fence, "fences rise: {fb} > {fence}");
        assert!(wc.waiter.take_served().is_none(), "c still waits");
        // Released by b: c gets it.
        assert_eq!(b.run(&["TW.LOCK.RELEASE", "payout", &tb]), int(1));
        let (_, fc) = held(&wc.waiter.take_served().expect("c was handed the lock")[0]);
        assert!(fc > fb);
        let stats = a.resp(&["INFO", "stats"]);
        // a, b (handed over) and c acquired; b's first try and b's and c's queued tries were busy.
        assert!(stats.contains("tw_lock_acquired:3\r\n"), "{stats}");
        assert!(stats.contains("tw_lock_busy:3\r\n"), "{stats}");
        // Inside MULTI nothing waits.
        c.run(&["MULTI"]);
        c.run(&["TW.LOCK.ACQUIRE", "payout", "10000", "WAIT", "5000"]);
        assert_eq!(c.run(&["EXEC"]), Reply::Array(vec![Reply::Null]));
    }
}
