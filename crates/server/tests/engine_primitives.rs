//! The native primitives on a Redis Cluster engine (`--engine`): the same
//! scenario, run against an embedded node and against a node on the engine,
//! gets the same replies (tokens, fences and times compared by shape); two
//! nodes on one engine share throttles, idempotency keys, locks and fills; a
//! `WAIT` on one node is served when the other node releases (or the lock's TTL
//! ends, or the fill lands).
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod common;
mod redis_support;

use std::time::{Duration, Instant};

use common::{Raw, V};
use redis_support::RedisCluster;
use tidewire_server::Server;

const TOKEN: &str = "engine-primitives-token";

async fn engine_node(engine: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = common::engine_config(engine, &dir);
    config.upstash.tokens = vec![TOKEN.into()];
    let server = tidewire_server::start(config)
        .await
        .expect("node starts on the engine");
    (server, dir)
}

async fn cluster() -> RedisCluster {
    RedisCluster::started().await
}

/// What differs between runs made comparable: tokens (32 hex digits), fences
/// (microseconds since the epoch) and an in-flight request's elapsed time.
fn normalize(v: V) -> V {
    match v {
        V::Bulk(b) if b.len() == 32 && b.iter().all(|c| c.is_ascii_hexdigit()) => {
            V::Simple("<token>".into())
        }
        V::Int(n) if n > 1_000_000_000_000_000 => V::Simple("<fence>".into()),
        V::Array(items) => {
            if matches!(items.as_slice(), [V::Bulk(s), V::Int(_)] if s == b"inflight") {
                return V::Array(vec![V::bulk("inflight"), V::Simple("<ms>".into())]);
            }
            V::Array(items.into_iter().map(normalize).collect())
        }
        V::Map(pairs) => V::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A time in milliseconds as the nearest second: the milliseconds between two
/// calls do not matter, the value does.
fn seconds(v: &V) -> V {
    match v {
        V::Int(n) if *n >= 0 => V::Int((n + 500) / 1000),
        other => other.clone(),
    }
}

/// One client's replies in a scenario, normalized.
struct Run<'a> {
    c: &'a mut Raw,
    out: Vec<V>,
}

impl Run<'_> {
    /// Sends a command; its reply is recorded (normalized) and returned as is.
    async fn cmd(&mut self, args: &[&str]) -> V {
        let reply = self.c.cmd(args).await;
        self.out.push(normalize(reply.clone()));
        reply
    }

    /// Records `v` in place of the last reply.
    fn replace_last(&mut self, v: V) {
        if let Some(last) = self.out.last_mut() {
            *last = v;
        }
    }
}

fn at(v: &V, i: usize) -> V {
    match v {
        V::Array(items) => items.get(i).cloned().unwrap_or(V::Nil),
        _ => V::Nil,
    }
}

fn int(v: &V) -> i64 {
    match v {
        V::Int(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

async fn throttle_scenario(c: &mut Raw) -> Vec<V> {
    let mut r = Run { c, out: Vec::new() };
    r.cmd(&["CL.THROTTLE", "user123", "15", "30", "60"]).await;
    r.cmd(&["CL.THROTTLE", "user123", "15", "30", "60", "15"])
        .await;
    r.cmd(&["CL.THROTTLE", "user123", "15", "30", "60"]).await;
    r.cmd(&["CL.THROTTLE", "user123", "15", "30", "60", "0"])
        .await;
    r.cmd(&["CL.THROTTLE", "user123", "15", "30", "60", "99"])
        .await;
    let pttl = r.cmd(&["PTTL", "user123"]).await;
    r.replace_last(seconds(&pttl));
    r.cmd(&["CL.THROTTLE", "fresh", "0", "1", "1", "0"]).await;
    r.cmd(&["EXISTS", "fresh"]).await;
    r.cmd(&["CL.THROTTLE", "k", "1", "0", "60"]).await;
    r.cmd(&["CL.THROTTLE", "k", "x", "1", "60"]).await;
    r.cmd(&["CL.THROTTLE", "k", "-1", "1", "60"]).await;
    r.cmd(&["CL.THROTTLE", "k", "1", "1", "1", "-1"]).await;
    r.cmd(&["CL.THROTTLE", "k", "1", "1", "1", "1", "x"]).await;
    r.cmd(&["CL.THROTTLE", "k", "1", "1"]).await;
    r.cmd(&["LPUSH", "list", "a"]).await;
    r.cmd(&["CL.THROTTLE", "list", "1", "1", "1"]).await;
    r.cmd(&["SET", "text", "abc"]).await;
    r.cmd(&["CL.THROTTLE", "text", "1", "1", "1"]).await;
    let tiers = [
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
    ];
    for _ in 0..3 {
        let reply = r.cmd(&tiers).await;
        // Milliseconds as seconds: the calls are a few milliseconds apart.
        let mut items = match normalize(reply) {
            V::Array(items) => items,
            other => panic!("{other:?}"),
        };
        // retry_after_ms: some 500 ms, or -1.
        if let V::Int(n) = items[1] {
            items[1] = V::Int(n.signum());
        }
        for tier in items.iter_mut().skip(2) {
            if let V::Array(t) = tier {
                t[3] = seconds(&t[3]);
            }
        }
        r.replace_last(V::Array(items));
    }
    r.cmd(&["TYPE", "api:u1"]).await;
    let mut quantity = tiers.to_vec();
    quantity.splice(2..2, ["QUANTITY", "50"]);
    quantity[1] = "api:u2";
    r.cmd(&quantity).await;
    for bad in [
        &[
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
            "1000",
        ][..],
        &["TW.THROTTLE", "k", "TIER", "a=b", "1", "1", "1000"],
        &["TW.THROTTLE", "k", "TIER", "", "1", "1", "1000"],
        &[
            "TW.THROTTLE",
            "k",
            "QUANTITY",
            "-1",
            "TIER",
            "a",
            "1",
            "1",
            "1000",
        ],
        &["TW.THROTTLE", "k", "QUANTITY", "1", "TIER", "a", "1", "1"],
        &["TW.THROTTLE", "k", "TIER", "a", "1", "0", "1000"],
        &["TW.THROTTLE", "k", "QUANTITY", "1", "QUANTITY", "2"],
        &["TW.THROTTLE", "k", "TIER", "a", "1"],
        &["TW.THROTTLE", "list", "TIER", "a", "1", "1", "1000"],
    ] {
        r.cmd(bad).await;
    }
    r.out
}

async fn idempotency_scenario(c: &mut Raw) -> Vec<V> {
    let mut r = Run { c, out: Vec::new() };
    let begun = r
        .cmd(&["TW.IDEM.BEGIN", "pay:1", "60000", "FINGERPRINT", "amt=10"])
        .await;
    let token = at(&begun, 1).text();
    r.cmd(&["TW.IDEM.BEGIN", "pay:1", "60000", "FINGERPRINT", "amt=10"])
        .await;
    r.cmd(&["TW.IDEM.BEGIN", "pay:1", "60000", "FINGERPRINT", "amt=99"])
        .await;
    r.cmd(&["TW.IDEM.BEGIN", "pay:1", "60000"]).await;
    r.cmd(&["TW.IDEM.COMPLETE", "pay:1", "not-the-token", "x"])
        .await;
    r.cmd(&[
        "TW.IDEM.COMPLETE",
        "pay:1",
        &token,
        "{\"charge\":\"ch_1\"}",
        "TTL",
        "86400000",
    ])
    .await;
    r.cmd(&["TW.IDEM.BEGIN", "pay:1", "60000"]).await;
    r.cmd(&["TW.IDEM.COMPLETE", "pay:1", &token, "again"]).await;
    let pttl = r.cmd(&["PTTL", "pay:1"]).await;
    r.replace_last(seconds(&pttl));
    let begun = r.cmd(&["TW.IDEM.BEGIN", "pay:2", "60000"]).await;
    let t2 = at(&begun, 1).text();
    r.cmd(&["TW.IDEM.ABORT", "pay:2", "wrong"]).await;
    r.cmd(&["TW.IDEM.ABORT", "pay:2", &t2]).await;
    r.cmd(&["TW.IDEM.ABORT", "pay:2", &t2]).await;
    let begun = r.cmd(&["TW.IDEM.BEGIN", "pay:2", "60000"]).await;
    let t3 = at(&begun, 1).text();
    r.cmd(&["TW.IDEM.COMPLETE", "pay:2", &t3, ""]).await;
    let pttl = r.cmd(&["PTTL", "pay:2"]).await;
    r.replace_last(seconds(&pttl));
    r.cmd(&["TW.IDEM.BEGIN", "pay:2", "60000", "FINGERPRINT", "z"])
        .await;
    r.cmd(&["TW.IDEM.BEGIN", "pay:3", "0"]).await;
    r.cmd(&["TW.IDEM.BEGIN", "pay:3", "100", "FINGERPRINT"])
        .await;
    r.cmd(&["TW.IDEM.BEGIN", "pay:3", "100", "NOPE", "x"]).await;
    r.cmd(&["TW.IDEM.COMPLETE", "pay:3", "t", "r", "TTL", "0"])
        .await;
    r.cmd(&["TW.IDEM.COMPLETE", "pay:3", "t", "r"]).await;
    r.cmd(&["SET", "text", "abc"]).await;
    r.cmd(&["TW.IDEM.BEGIN", "text", "1000"]).await;
    r.cmd(&["TW.IDEM.ABORT", "text", "t"]).await;
    r.cmd(&["LPUSH", "list", "a"]).await;
    r.cmd(&["TW.IDEM.BEGIN", "list", "1000"]).await;
    r.cmd(&["MULTI"]).await;
    r.cmd(&["TW.IDEM.BEGIN", "m", "1000"]).await;
    r.cmd(&["TW.IDEM.BEGIN", "m", "1000"]).await;
    r.cmd(&["TW.IDEM.BEGIN", "m", "0"]).await;
    r.cmd(&["EXEC"]).await;
    r.out
}

async fn lock_scenario(c: &mut Raw) -> Vec<V> {
    let mut r = Run { c, out: Vec::new() };
    let held = r.cmd(&["TW.LOCK.ACQUIRE", "payout", "10000"]).await;
    let (token, fence) = (at(&held, 0).text(), int(&at(&held, 1)));
    r.cmd(&["TW.LOCK.ACQUIRE", "payout", "10000"]).await;
    r.cmd(&["TW.LOCK.RELEASE", "payout", "not-mine"]).await;
    r.cmd(&["TW.LOCK.RENEW", "payout", "not-mine", "5000"])
        .await;
    r.cmd(&["TW.LOCK.RENEW", "payout", &token, "20000"]).await;
    let info = r.cmd(&["TW.LOCK.INFO", "payout"]).await;
    // RESP2: [fence, f, ttl_ms, t, waiters, w]
    let mut items = match normalize(info) {
        V::Array(items) => items,
        other => panic!("{other:?}"),
    };
    items[3] = seconds(&items[3]);
    r.replace_last(V::Array(items));
    r.cmd(&["TW.LOCK.INFO", "nolock"]).await;
    // WAIT passes while the lock is held: nil, after the wait.
    let start = Instant::now();
    r.cmd(&["TW.LOCK.ACQUIRE", "payout", "10000", "WAIT", "300"])
        .await;
    assert!(start.elapsed() >= Duration::from_millis(250), "it waited");
    r.cmd(&["TW.LOCK.RELEASE", "payout", &token]).await;
    r.cmd(&["TW.LOCK.RELEASE", "payout", &token]).await;
    let again = r.cmd(&["TW.LOCK.ACQUIRE", "payout", "10000"]).await;
    let fence2 = int(&at(&again, 1));
    assert!(fence2 > fence, "fences rise: {fence2} > {fence}");
    // The key gone (DEL), fences still rise.
    r.cmd(&["DEL", "payout"]).await;
    let third = r
        .cmd(&["TW.LOCK.ACQUIRE", "payout", "10000", "WAIT", "1000"])
        .await;
    assert!(int(&at(&third, 1)) > fence2);
    let third_token = at(&third, 0).text();
    r.cmd(&["TW.LOCK.ACQUIRE", "x", "0"]).await;
    r.cmd(&["TW.LOCK.ACQUIRE", "x", "100", "WAIT"]).await;
    r.cmd(&["TW.LOCK.ACQUIRE", "x", "100", "WAIT", "0"]).await;
    r.cmd(&["TW.LOCK.ACQUIRE", "x", "100", "FOR", "1"]).await;
    r.cmd(&["TW.LOCK.RENEW", "x", "t", "-5"]).await;
    r.cmd(&["TW.LOCK.RENEW", "x", "t", "5"]).await;
    r.cmd(&["SET", "text", "abc"]).await;
    r.cmd(&["TW.LOCK.ACQUIRE", "text", "1000"]).await;
    r.cmd(&["TW.LOCK.RELEASE", "text", "t"]).await;
    r.cmd(&["TW.LOCK.INFO", "text"]).await;
    r.cmd(&["LPUSH", "list", "a"]).await;
    r.cmd(&["TW.LOCK.ACQUIRE", "list", "1000"]).await;
    // Inside MULTI nothing waits.
    r.cmd(&["MULTI"]).await;
    r.cmd(&["TW.LOCK.ACQUIRE", "payout", "10000", "WAIT", "5000"])
        .await;
    r.cmd(&["TW.LOCK.ACQUIRE", "payout", "0"]).await;
    r.cmd(&["TW.LOCK.RENEW", "payout", "nope", "100"]).await;
    let start = Instant::now();
    let exec = r.cmd(&["EXEC"]).await;
    assert!(start.elapsed() < Duration::from_secs(4), "{exec:?}");
    r.cmd(&["MULTI"]).await;
    r.cmd(&["TW.LOCK.INFO", "payout"]).await;
    let exec = r.cmd(&["EXEC"]).await;
    match normalize(exec) {
        V::Array(mut outer) => {
            if let Some(V::Array(items)) = outer.get_mut(0) {
                items[3] = seconds(&items[3]);
            }
            r.replace_last(V::Array(outer));
        }
        other => panic!("{other:?}"),
    }
    // A transaction guarded by WATCH runs on the watching connection.
    r.cmd(&["WATCH", "payout"]).await;
    r.cmd(&["MULTI"]).await;
    r.cmd(&["TW.LOCK.RENEW", "payout", "nope", "100"]).await;
    // (a key of the same slot: the engine's transactions stay in one)
    r.cmd(&["TW.LOCK.INFO", "x{payout}"]).await;
    r.cmd(&["EXEC"]).await;
    // A WAIT no clock could count to is accepted; the holder's TTL ends it.
    r.cmd(&["TW.LOCK.ACQUIRE", "brief", "300"]).await;
    let start = Instant::now();
    let far = r
        .cmd(&[
            "TW.LOCK.ACQUIRE",
            "brief",
            "1000",
            "WAIT",
            "9223372036854775807",
        ])
        .await;
    assert!(matches!(far, V::Array(_)), "{far:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    // RESP3: INFO is a map. (Renewed first: its TTL, shown in whole seconds, must
    // not depend on how long the steps above took on each side.)
    r.cmd(&["TW.LOCK.RENEW", "payout", &third_token, "10000"])
        .await;
    r.c.cmd(&["HELLO", "3"]).await;
    let info = r.cmd(&["TW.LOCK.INFO", "payout"]).await;
    match normalize(info) {
        V::Map(mut pairs) => {
            pairs[1].1 = seconds(&pairs[1].1);
            r.replace_last(V::Map(pairs));
        }
        other => panic!("{other:?}"),
    }
    r.out
}

async fn fill_scenario(c: &mut Raw) -> Vec<V> {
    let mut r = Run { c, out: Vec::new() };
    let first = r.cmd(&["TW.FILL.GET", "profile:7", "5000"]).await;
    let token = at(&first, 1).text();
    r.cmd(&["TW.FILL.GET", "profile:7", "5000"]).await;
    let start = Instant::now();
    r.cmd(&["TW.FILL.GET", "profile:7", "5000", "WAIT", "300"])
        .await;
    assert!(start.elapsed() >= Duration::from_millis(250), "it waited");
    r.cmd(&["GET", "profile:7"]).await;
    r.cmd(&["TW.FILL.SET", "profile:7", "other", "x"]).await;
    r.cmd(&[
        "TW.FILL.SET",
        "profile:7",
        &token,
        "{\"name\":\"ada\"}",
        "EX",
        "60",
    ])
    .await;
    r.cmd(&["TW.FILL.GET", "profile:7", "5000", "WAIT", "5000"])
        .await;
    r.cmd(&["GET", "profile:7"]).await;
    r.cmd(&["TTL", "profile:7"]).await;
    r.cmd(&["DEL", "profile:7"]).await;
    let next = r.cmd(&["TW.FILL.GET", "profile:7", "5000"]).await;
    let t2 = at(&next, 1).text();
    r.cmd(&["TW.FILL.ABORT", "profile:7", "not-mine"]).await;
    r.cmd(&["TW.FILL.ABORT", "profile:7", &t2]).await;
    r.cmd(&["TW.FILL.ABORT", "profile:7", &t2]).await;
    let third = r.cmd(&["TW.FILL.GET", "profile:7", "5000"]).await;
    let t3 = at(&third, 1).text();
    r.cmd(&["TW.FILL.SET", "profile:7", &t2, "stale"]).await;
    r.cmd(&["TW.FILL.SET", "profile:7", &t3, "fresh", "PX", "60000"])
        .await;
    r.cmd(&["TW.FILL.GET", "profile:7", "5000"]).await;
    // No lease at all: a value is stored, without expiry.
    r.cmd(&["TW.FILL.SET", "plain", "t", "v"]).await;
    r.cmd(&["TTL", "plain"]).await;
    r.cmd(&["TW.FILL.GET", "k", "0"]).await;
    r.cmd(&["TW.FILL.GET", "k", "100", "WAIT"]).await;
    r.cmd(&["TW.FILL.GET", "k", "100", "WAIT", "-1"]).await;
    r.cmd(&["TW.FILL.SET", "k", "t", "v", "EX", "0"]).await;
    r.cmd(&["TW.FILL.SET", "k", "t", "v", "EX", "1", "PX", "5"])
        .await;
    r.cmd(&["TW.FILL.SET", "k", "t", "v", "KEEPTTL"]).await;
    r.cmd(&["LPUSH", "list", "x"]).await;
    r.cmd(&["TW.FILL.GET", "list", "100"]).await;
    r.cmd(&["TW.FILL.GET", "m", "5000"]).await;
    r.cmd(&["MULTI"]).await;
    r.cmd(&["TW.FILL.GET", "m", "5000", "WAIT", "5000"]).await;
    r.cmd(&["TW.FILL.GET", "m", "0"]).await;
    r.cmd(&["EXEC"]).await;
    r.out
}

/// Every scenario on an embedded node and on an engine node, each on a fresh
/// connection: the same replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_answers_as_the_embedded_store() {
    let cluster = cluster().await;
    let (embedded, _de) = common::start().await;
    let (node, _dn) = engine_node(&cluster.masters[0].url()).await;
    macro_rules! compare {
        ($scenario:ident) => {{
            let mut e = Raw::connect(&embedded).await;
            let mut n = Raw::connect(&node).await;
            let want = $scenario(&mut e).await;
            let got = $scenario(&mut n).await;
            assert_eq!(want.len(), got.len());
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                assert_eq!(w, g, "{} step {i}", stringify!($scenario));
            }
            // The state is on the engine.
            assert!(cluster_keys(&cluster) > 0);
            let mut fresh = Raw::connect(&node).await;
            fresh.cmd(&["FLUSHALL"]).await;
            let mut fresh = Raw::connect(&embedded).await;
            fresh.cmd(&["FLUSHALL"]).await;
        }};
    }
    compare!(throttle_scenario);
    compare!(idempotency_scenario);
    compare!(lock_scenario);
    compare!(fill_scenario);
}

fn cluster_keys(cluster: &RedisCluster) -> i64 {
    cluster
        .masters
        .iter()
        .map(|m| m.cmd::<i64>(&["DBSIZE"]))
        .sum()
}

/// Two nodes on one engine: one throttle, one idempotency record, one lock
/// (with its waiters served across nodes), one fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_engine_share_the_primitives() {
    let cluster = cluster().await;
    let seed = cluster.masters[0].url();
    let (a, _da) = engine_node(&seed).await;
    let (b, _db) = engine_node(&seed).await;
    let mut ra = Raw::connect(&a).await;
    let mut rb = Raw::connect(&b).await;

    // One limit: 3 through A, the fourth through B is limited.
    for _ in 0..3 {
        let r = ra.cmd(&["CL.THROTTLE", "ip:1", "2", "10", "60"]).await;
        assert_eq!(at(&r, 0), V::Int(0), "{r:?}");
    }
    let r = rb.cmd(&["CL.THROTTLE", "ip:1", "2", "10", "60"]).await;
    assert_eq!(at(&r, 0), V::Int(1), "{r:?}");
    // Each node counts its own decisions (INFO is the node's).
    let stats = ra.cmd(&["INFO", "stats"]).await.text();
    assert!(stats.contains("tw_throttle_allowed:3\r\n"), "{stats}");
    let stats = rb.cmd(&["INFO", "stats"]).await.text();
    assert!(stats.contains("tw_throttle_limited:1\r\n"), "{stats}");

    // One idempotency record.
    let r = ra.cmd(&["TW.IDEM.BEGIN", "idem:1", "60000"]).await;
    assert_eq!(at(&r, 0), V::bulk("new"));
    let r = rb.cmd(&["TW.IDEM.BEGIN", "idem:1", "60000"]).await;
    assert_eq!(at(&r, 0), V::bulk("inflight"));

    // A lock taken through A is held for B; B's waiter gets it promptly when A
    // releases, with a higher fence.
    let held = ra.cmd(&["TW.LOCK.ACQUIRE", "lock:1", "30000"]).await;
    let (token, fence) = (at(&held, 0).text(), int(&at(&held, 1)));
    assert_eq!(
        rb.cmd(&["TW.LOCK.ACQUIRE", "lock:1", "30000"]).await,
        V::Nil
    );
    rb.send(&["TW.LOCK.ACQUIRE", "lock:1", "30000", "WAIT", "8000"])
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = ra.cmd(&["TW.LOCK.INFO", "lock:1"]).await;
        if at(&info, 5) == V::Int(1) {
            break;
        }
        assert!(Instant::now() < deadline, "B's waiter is counted: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let released = Instant::now();
    assert_eq!(
        ra.cmd(&["TW.LOCK.RELEASE", "lock:1", &token]).await,
        V::Int(1)
    );
    let got = rb.read().await;
    assert!(
        released.elapsed() < Duration::from_secs(4),
        "served promptly: {:?}",
        released.elapsed()
    );
    assert!(int(&at(&got, 1)) > fence, "{got:?}");
    // B found it held twice (once without WAIT, once queued) and got it once.
    let stats = rb.cmd(&["INFO", "stats"]).await.text();
    assert!(
        stats.contains("tw_lock_busy:2\r\n") && stats.contains("tw_lock_acquired:1\r\n"),
        "{stats}"
    );

    // A holder that dies (its TTL ends) lets B's waiter in: expiry wakes nobody,
    // the waiter's bound does.
    let short = ra.cmd(&["TW.LOCK.ACQUIRE", "lock:2", "400"]).await;
    assert!(matches!(short, V::Array(_)), "{short:?}");
    let start = Instant::now();
    let got = rb
        .cmd(&["TW.LOCK.ACQUIRE", "lock:2", "30000", "WAIT", "8000"])
        .await;
    assert!(matches!(got, V::Array(_)), "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // One fill: B waits for the value A computes.
    let fill = ra.cmd(&["TW.FILL.GET", "cache:1", "10000"]).await;
    assert_eq!(at(&fill, 0), V::bulk("fill"));
    rb.send(&["TW.FILL.GET", "cache:1", "10000", "WAIT", "8000"])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored = Instant::now();
    assert_eq!(
        ra.cmd(&["TW.FILL.SET", "cache:1", &at(&fill, 1).text(), "value"])
            .await,
        V::Int(1)
    );
    let got = rb.read().await;
    assert_eq!(got, V::Array(vec![V::bulk("hit"), V::bulk("value")]));
    assert!(stored.elapsed() < Duration::from_secs(4));

    // A filler that gives up hands the fill to B's waiter.
    let fill = ra.cmd(&["TW.FILL.GET", "cache:2", "10000"]).await;
    rb.send(&["TW.FILL.GET", "cache:2", "10000", "WAIT", "8000"])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let aborted = Instant::now();
    assert_eq!(
        ra.cmd(&["TW.FILL.ABORT", "cache:2", &at(&fill, 1).text()])
            .await,
        V::Int(1)
    );
    let got = rb.read().await;
    assert_eq!(at(&got, 0), V::bulk("fill"), "{got:?}");
    assert!(aborted.elapsed() < Duration::from_secs(4));

    // Over REST a request never waits: WAIT answers at once, as embedded.
    let held = ra.cmd(&["TW.LOCK.ACQUIRE", "lock:3", "30000"]).await;
    assert!(matches!(held, V::Array(_)), "{held:?}");
    let start = Instant::now();
    let r = common::rest_call(
        &b,
        TOKEN,
        serde_json::json!(["TW.LOCK.ACQUIRE", "lock:3", "1000", "WAIT", "5000"]),
    )
    .await;
    assert_eq!(r, serde_json::json!({"result": null}));
    assert!(start.elapsed() < Duration::from_secs(4));
    let r = common::rest_call(
        &b,
        TOKEN,
        serde_json::json!(["CL.THROTTLE", "ip:1", "2", "10", "60"]),
    )
    .await;
    assert_eq!(r["result"][0], 1, "{r}");
}

/// Six clients, three on each of two nodes, contend for one lock with WAIT:
/// each gets it in turn (no lost wake-up, no two holders), with rising fences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_two_nodes_each_get_the_lock_in_turn() {
    let cluster = cluster().await;
    let seed = cluster.masters[0].url();
    let (a, _da) = engine_node(&seed).await;
    let (b, _db) = engine_node(&seed).await;
    let holders = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let mut c = Raw::connect(server).await;
        let holders = holders.clone();
        tasks.push(tokio::spawn(async move {
            let got = c
                .cmd(&["TW.LOCK.ACQUIRE", "contended", "5000", "WAIT", "8000"])
                .await;
            let (token, fence) = (at(&got, 0).text(), int(&at(&got, 1)));
            let now = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(now, 0, "one holder at a time");
            tokio::time::sleep(Duration::from_millis(30)).await;
            holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            let released = c.cmd(&["TW.LOCK.RELEASE", "contended", &token]).await;
            assert_eq!(released, V::Int(1));
            fence
        }));
    }
    let start = Instant::now();
    let mut fences = Vec::new();
    for t in tasks {
        fences.push(t.await.expect("a waiter got the lock"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 6, "every acquisition has its own fence");
}
