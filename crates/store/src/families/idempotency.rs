//! Idempotency keys (`Idempotency-Key` for payments and webhooks), as atomic
//! commands: the first request for a key owns it (a token), the others see it in
//! flight or get its stored response — never a second run.
//!
//! - `TW.IDEM.BEGIN key ttl_ms [FINGERPRINT fp]` → `["new", token]`,
//!   `["inflight", elapsed_ms]` or `["done", response]`; a different fingerprint
//!   for the key is refused with `MISMATCH` (the key was reused for another request).
//! - `TW.IDEM.COMPLETE key token response [TTL ms]` stores the response (`NOTOWNER`
//!   for a token that does not own the key).
//! - `TW.IDEM.ABORT key token` → 1 when the owner gave the key up (a retry may run).
//!
//! A record is one string key, which expires after `ttl_ms` (so an owner that
//! died lets the key go) or after COMPLETE's TTL. Its layout: `idem1|<state>|
//! <token>|<started_ms>|<fingerprint length>|<fingerprint><response>`.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::records;
use crate::num;

pub fn commands() -> Vec<CommandSpec> {
    let flags = WRITE | DENYOOM | FAST | NATIVE;
    vec![
        cmd("tw.idem.begin", -3, flags, keys(1, 1, 1), begin)
            .key_roles(KeyRoles::Each(&[kf::RW | kf::ACCESS | kf::INSERT]))
            .group("generic")
            .summary(
                "Claims an idempotency key, or reports it in flight or done with its response.",
            ),
        cmd("tw.idem.complete", -4, flags, keys(1, 1, 1), complete)
            .group("generic")
            .summary("Stores the response of the request that owns an idempotency key."),
        cmd(
            "tw.idem.abort",
            3,
            WRITE | FAST | NATIVE,
            keys(1, 1, 1),
            abort,
        )
        .key_roles(KeyRoles::Each(&[kf::RW | kf::DELETE]))
        .group("generic")
        .summary("Gives up an idempotency key its owner could not complete."),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    InFlight,
    Done,
}

struct Record {
    state: State,
    token: Bytes,
    started_ms: u64,
    fingerprint: Bytes,
    response: Bytes,
}

impl Record {
    fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(64 + self.fingerprint.len() + self.response.len());
        v.extend_from_slice(b"idem1|");
        v.extend_from_slice(match self.state {
            State::InFlight => b"inflight|",
            State::Done => b"done|",
        });
        v.extend_from_slice(&self.token);
        v.push(b'|');
        v.extend_from_slice(self.started_ms.to_string().as_bytes());
        v.push(b'|');
        v.extend_from_slice(self.fingerprint.len().to_string().as_bytes());
        v.push(b'|');
        v.extend_from_slice(&self.fingerprint);
        v.extend_from_slice(&self.response);
        Bytes::from(v)
    }

    fn decode(b: &[u8]) -> Option<Record> {
        let mut rest = b.strip_prefix(b"idem1|")?;
        let mut field = || -> Option<&[u8]> {
            let at = rest.iter().position(|c| *c == b'|')?;
            let (f, r) = rest.split_at(at);
            rest = &r[1..];
            Some(f)
        };
        let state = match field()? {
            b"inflight" => State::InFlight,
            b"done" => State::Done,
            _ => return None,
        };
        let token = Bytes::copy_from_slice(field()?);
        let started_ms = num::parse_i64(field()?)? as u64;
        let fp_len = num::parse_i64(field()?)? as usize;
        if rest.len() < fp_len {
            return None;
        }
        let (fp, response) = rest.split_at(fp_len);
        Some(Record {
            state,
            token,
            started_ms,
            fingerprint: Bytes::copy_from_slice(fp),
            response: Bytes::copy_from_slice(response),
        })
    }
}

/// What a read-only tool (the dashboard) shows of an idempotency record, without
/// its token (which would let a viewer complete or abort it) or its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    /// Still owned by the request that began it (not yet completed).
    pub in_flight: bool,
    /// Unix ms at which the owner began.
    pub started_ms: u64,
    pub fingerprint: Bytes,
    /// Length of the stored response (0 while in flight).
    pub response_len: usize,
}

/// Reads an idempotency record's value; `None` for any other value.
pub fn inspect(value: &[u8]) -> Option<RecordView> {
    Record::decode(value).map(|r| RecordView {
        in_flight: r.state == State::InFlight,
        started_ms: r.started_ms,
        fingerprint: r.fingerprint,
        response_len: r.response.len(),
    })
}

fn load(ctx: &mut Ctx<'_>, key: &Bytes) -> Result<Option<Record>, CmdError> {
    records::load(ctx, key, "an idempotency record", Record::decode)
}

fn text(s: &'static str) -> Reply {
    Reply::Bulk(Bytes::from_static(s.as_bytes()))
}

/// `TW.IDEM.BEGIN`'s arguments after the name: key, TTL (ms) and fingerprint
/// (empty without one); shared with the Redis engine's script.
pub fn parse_begin(args: &mut Args<'_>) -> Result<(Bytes, u64, Bytes), CmdError> {
    let key = args.next_bytes()?.clone();
    let ttl = records::positive_ms(args)?;
    let mut fingerprint = Bytes::new();
    while !args.is_empty() {
        if args.flag("FINGERPRINT") {
            fingerprint = args.next_bytes()?.clone();
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok((key, ttl, fingerprint))
}

fn begin(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, ttl, fingerprint) = parse_begin(args)?;
    if let Some(r) = load(ctx, &key)? {
        ctx.propagate_nothing();
        if !fingerprint.is_empty() && !r.fingerprint.is_empty() && r.fingerprint != fingerprint {
            return Err(CmdError::raw(
                "MISMATCH the idempotency key was used for a different request",
            ));
        }
        let p = &ctx.store.stats.primitives;
        crate::PrimitiveStats::bump(match r.state {
            State::InFlight => &p.idem_inflight,
            State::Done => &p.idem_replayed,
        });
        return Ok(match r.state {
            State::InFlight => Reply::Array(vec![
                text("inflight"),
                Reply::Int(ctx.now.saturating_sub(r.started_ms) as i64),
            ]),
            State::Done => Reply::Array(vec![text("done"), Reply::Bulk(r.response)]),
        });
    }
    crate::PrimitiveStats::bump(&ctx.store.stats.primitives.idem_new);
    let token = Bytes::from(crate::random_hex(32));
    let record = Record {
        state: State::InFlight,
        token: token.clone(),
        started_ms: ctx.now,
        fingerprint,
        response: Bytes::new(),
    };
    let at = ctx.now.saturating_add(ttl);
    records::store_at(ctx, &key, record.encode(), at);
    Ok(Reply::Array(vec![text("new"), Reply::Bulk(token)]))
}

/// `TW.IDEM.COMPLETE`'s arguments after the name: key, token, response and the
/// TTL (ms) if given; shared with the Redis engine's script.
pub fn parse_complete(args: &mut Args<'_>) -> Result<(Bytes, Bytes, Bytes, Option<u64>), CmdError> {
    let key = args.next_bytes()?.clone();
    let token = args.next_bytes()?.clone();
    let response = args.next_bytes()?.clone();
    let mut ttl = None;
    while !args.is_empty() {
        if args.flag("TTL") {
            ttl = Some(records::positive_ms(args)?);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok((key, token, response, ttl))
}

fn complete(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (key, token, response, ttl) = parse_complete(args)?;
    let owned = load(ctx, &key)?.filter(|r| r.state == State::InFlight && r.token == token);
    let Some(mut record) = owned else {
        ctx.propagate_nothing();
        return Err(CmdError::raw(
            "NOTOWNER the token does not own this idempotency key (it expired, was aborted or completed)",
        ));
    };
    let db = ctx.db();
    let kept = ctx
        .ks
        .get(db, &key, ctx.now)
        .map(|e| e.expire_at)
        .unwrap_or(0);
    let at = match ttl {
        Some(ms) => ctx.now.saturating_add(ms),
        None => kept,
    };
    record.state = State::Done;
    record.response = response;
    records::store_at(ctx, &key, record.encode(), at);
    Ok(Reply::ok())
}

fn abort(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    let token = args.next_bytes()?.clone();
    let owned = load(ctx, &key)?.is_some_and(|r| r.state == State::InFlight && r.token == token);
    if !owned {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    }
    records::delete(ctx, &key);
    Ok(Reply::Int(1))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn parts(r: &Reply) -> (String, Reply) {
        match r {
            Reply::Array(v) => match &v[0] {
                Reply::Bulk(s) => (String::from_utf8_lossy(s).into_owned(), v[1].clone()),
                _ => panic!("{r:?}"),
            },
            _ => panic!("{r:?}"),
        }
    }

    #[test]
    fn one_owner_then_replays() {
        let mut a = TestClient::new();
        let mut b = a.other();
        let (state, token) =
            parts(&a.run(&["TW.IDEM.BEGIN", "pay:1", "60000", "FINGERPRINT", "amt=10"]));
        assert_eq!(state, "new");
        let Reply::Bulk(token) = token else { panic!() };
        let token = String::from_utf8(token.to_vec()).unwrap();
        // A double click while it runs: in flight, never a second owner.
        assert_eq!(
            parts(&b.run(&["TW.IDEM.BEGIN", "pay:1", "60000", "FINGERPRINT", "amt=10"])).0,
            "inflight"
        );
        assert_eq!(
            b.run(&["TW.IDEM.BEGIN", "pay:1", "60000", "FINGERPRINT", "amt=99"]),
            err("MISMATCH the idempotency key was used for a different request")
        );
        assert!(matches!(
            b.run(&["TW.IDEM.COMPLETE", "pay:1", "not-the-token", "x"]),
            Reply::Error(e) if e.starts_with("NOTOWNER")
        ));
        assert_eq!(
            a.run(&[
                "TW.IDEM.COMPLETE",
                "pay:1",
                &token,
                "{\"charge\":\"ch_1\"}",
                "TTL",
                "86400000"
            ]),
            ok()
        );
        let (state, response) = parts(&b.run(&["TW.IDEM.BEGIN", "pay:1", "60000"]));
        assert_eq!(
            (state.as_str(), response),
            ("done", bulk("{\"charge\":\"ch_1\"}"))
        );
        assert!(matches!(a.run(&["PTTL", "pay:1"]), Reply::Int(n) if n > 86_000_000));
        // An aborted key lets the retry own it.
        let (_, t2) = parts(&a.run(&["TW.IDEM.BEGIN", "pay:2", "60000"]));
        let Reply::Bulk(t2) = t2 else { panic!() };
        let t2 = String::from_utf8(t2.to_vec()).unwrap();
        assert_eq!(b.run(&["TW.IDEM.ABORT", "pay:2", "wrong"]), int(0));
        assert_eq!(a.run(&["TW.IDEM.ABORT", "pay:2", &t2]), int(1));
        assert_eq!(parts(&b.run(&["TW.IDEM.BEGIN", "pay:2", "60000"])).0, "new");
        assert_eq!(
            a.run(&["TW.IDEM.BEGIN", "pay:3", "0"]),
            err("ERR invalid expire time, must be a positive number of milliseconds")
        );
    }
}
