//! Tidewire's native primitives as they stand: throttle keys (CL.THROTTLE /
//! TW.THROTTLE), idempotency keys in flight, held locks with their fence, TTL and
//! waiters, and single-flight fills in flight.
//!
//! Throttles, idempotency records and locks are string keys, found by a bounded
//! SCAN (`TYPE string`) and read with GET, then recognised by each family's own
//! parser (`inspect` in `throttle.rs`, `idempotency.rs`, `lock.rs`). A throttle
//! key holds a bare number (or `tier=number` lines), which any counter could
//! also hold: it counts as one only when the number, a schedule in unix ns,
//! agrees with the key's TTL (the key expires when the schedule catches up with
//! the clock). Fills live in memory, not in the keyspace: listed from the store's
//! lease table.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tidewire_resp::Reply;
use tidewire_store::exec::resolve;
use tidewire_store::families::{idempotency, lock, throttle};

use super::{api_error, args, ok, read_err, DashState, Peer, Session};

/// Keys sampled when the request does not say.
const DEFAULT_SAMPLE: usize = 5000;
/// Most keys one listing samples.
const MAX_SAMPLE: usize = 50_000;
/// Most entries per list (throttles: the most loaded first).
const MAX_LISTED: usize = 100;
/// How far a throttle key's schedule may disagree with its TTL (ms) and still
/// count as a throttle: clock reads a little apart.
const TAT_SLACK_MS: i128 = 1500;
/// Keys read per batch.
const BATCH: usize = 500;

#[derive(Deserialize)]
pub(super) struct SampleQuery {
    sample: Option<usize>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The first characters of a lock token: enough to tell holders apart, not
/// enough to release the lock with.
fn token_hint(token: &[u8]) -> String {
    let t = String::from_utf8_lossy(token);
    format!("{}…", t.chars().take(8).collect::<String>())
}

impl DashState {
    /// Whether the session's user may read `key` (ACL key patterns): the fill
    /// table is read outside the command path, so it is filtered here.
    fn may_read(&self, s: &Session, key: &[u8]) -> bool {
        let Some(name) = s.user.as_deref() else {
            return true;
        };
        let argv = [Bytes::from_static(b"GET"), Bytes::copy_from_slice(key)];
        match (self.rest.store.acl.user(name), resolve(&argv)) {
            (Some(u), Ok(cmd)) => u.may_run(cmd, &argv),
            _ => false,
        }
    }
}

pub(super) async fn list(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Query(q): Query<SampleQuery>,
) -> Response {
    let s = session_or_401!(st, headers);
    let limit = q.sample.unwrap_or(DEFAULT_SAMPLE).clamp(1, MAX_SAMPLE);
    let (keys, complete) = match st.scan_sample(&s, &peer, None, Some("string"), limit) {
        Ok(r) => r,
        Err(e) => return read_err(&e),
    };
    let now = now_ms();
    let mut throttles = Vec::new();
    let mut idem_inflight = Vec::new();
    let mut idem_done = 0u64;
    let mut locks = Vec::new();
    for chunk in keys.chunks(BATCH) {
        // GET and PTTL per key, so that a key an ACL hides costs only itself.
        let cmds: Vec<Vec<Bytes>> = chunk
            .iter()
            .flat_map(|k| {
                [
                    args(&[b"GET", k.as_bytes()]),
                    args(&[b"PTTL", k.as_bytes()]),
                ]
            })
            .collect();
        let replies = st.read_many(&s, &peer, &cmds);
        for (k, pair) in chunk.iter().zip(replies.chunks(2)) {
            let (Reply::Bulk(value), Reply::Int(pttl)) = (&pair[0], &pair[1]) else {
                continue;
            };
            let pttl = *pttl;
            if let Some((token, fence)) = lock::inspect(value) {
                locks.push((k.clone(), token, fence, pttl));
            } else if let Some(r) = idempotency::inspect(value) {
                if r.in_flight {
                    idem_inflight.push(json!({
                        "key": k,
                        "age_ms": now.saturating_sub(r.started_ms),
                        "ttl_ms": pttl,
                        "fingerprint": String::from_utf8_lossy(&r.fingerprint),
                    }));
                } else {
                    idem_done += 1;
                }
            } else if let Some(tiers) = throttle::inspect(value) {
                let now_ns = now as i128 * 1_000_000;
                let ahead_ms = tiers.iter().map(|(_, t)| *t).max().unwrap_or(0) - now_ns;
                let ahead_ms = ahead_ms / 1_000_000;
                if pttl > 0 && (ahead_ms - pttl as i128).abs() <= TAT_SLACK_MS {
                    let tiers: Vec<Value> = tiers
                        .iter()
                        .map(|(name, tat)| {
                            json!({
                                "tier": String::from_utf8_lossy(name),
                                "reset_ms": ((tat - now_ns) / 1_000_000).max(0) as i64,
                            })
                        })
                        .collect();
                    throttles.push((ahead_ms.max(0) as i64, k.clone(), tiers));
                }
            }
        }
    }
    // The most loaded first: the schedule furthest ahead of the clock is the key
    // that needs the longest to get its whole burst back.
    throttles.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let throttle_count = throttles.len();
    let throttles: Vec<Value> = throttles
        .into_iter()
        .take(MAX_LISTED)
        .map(|(ahead, key, tiers)| {
            json!({
                "key": key,
                "kind": if tiers.len() == 1 && tiers[0]["tier"] == "" { "CL.THROTTLE" } else { "TW.THROTTLE" },
                "reset_ms": ahead,
                "tiers": tiers,
            })
        })
        .collect();
    idem_inflight.sort_by_key(|v| std::cmp::Reverse(v["age_ms"].as_u64().unwrap_or(0)));
    let idem_count = idem_inflight.len();
    idem_inflight.truncate(MAX_LISTED);
    let lock_count = locks.len();
    locks.truncate(MAX_LISTED);
    let infos = st.read_many(
        &s,
        &peer,
        &locks
            .iter()
            .map(|(k, ..)| args(&[b"TW.LOCK.INFO", k.as_bytes()]))
            .collect::<Vec<_>>(),
    );
    let locks: Vec<Value> = locks
        .iter()
        .zip(infos)
        .map(|((key, token, fence, pttl), info)| {
            let info = super::reply_json(&info);
            json!({
                "key": key,
                "holder": token_hint(token),
                "fence": fence,
                "ttl_ms": pttl,
                "waiters": info["waiters"].as_u64().unwrap_or(0),
            })
        })
        .collect();
    let store = &st.rest.store;
    let mut fills: Vec<Value> = store
        .fill_leases
        .in_flight(0, now)
        .into_iter()
        .filter(|(k, _)| st.may_read(&s, k))
        .map(|(key, until)| {
            json!({
                "key": String::from_utf8_lossy(&key),
                "lease_ms": until.saturating_sub(now),
                "waiters": store.blocking.queue(0, &key).len(),
            })
        })
        .collect();
    fills.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    let fill_count = fills.len();
    fills.truncate(MAX_LISTED);
    ok(json!({
        "sampled": keys.len(),
        "complete": complete,
        "throttles": { "count": throttle_count, "top": throttles },
        "idempotency": { "in_flight_count": idem_count, "done_count": idem_done, "in_flight": idem_inflight },
        "locks": { "count": lock_count, "held": locks },
        "fills": { "count": fill_count, "in_flight": fills },
    }))
}
