//! The native primitives through the real server: CL.THROTTLE and TW.THROTTLE over
//! Upstash REST, and their state and an idempotency key's stored response kept
//! across a restart (the AOF holds them with absolute expiries); TW.LOCK and
//! TW.FILL waiters handed over when a holder finishes or dies.

mod common;

async fn start_in(dir: &std::path::Path) -> tidewire_server::Server {
    let mut config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.to_path_buf(),
        ..tidewire_server::Config::default()
    };
    config.upstash.tokens = vec!["t0ken".into()];
    tidewire_server::start(config).await.expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_over_rest_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let call = |body: serde_json::Value| common::rest_call(&server, "t0ken", body);
    // 10 per minute, burst 2 (limit 3): three pass, the fourth is limited.
    for remaining in [2, 1, 0] {
        let r = call(serde_json::json!(["CL.THROTTLE", "ip:1", "2", "10", "60"])).await;
        assert_eq!(r["result"][0], 0, "{r}");
        assert_eq!(r["result"][2], remaining, "{r}");
    }
    let r = call(serde_json::json!(["CL.THROTTLE", "ip:1", "2", "10", "60"])).await;
    assert_eq!(r["result"][0], 1, "{r}");
    assert!(r["result"][3].as_i64().unwrap() > 0, "retry_after: {r}");
    let r = call(serde_json::json!([
        "TW.THROTTLE",
        "user:7",
        "TIER",
        "burst",
        "4",
        "10",
        "1000",
        "TIER",
        "minute",
        "99",
        "100",
        "60000"
    ]))
    .await;
    assert_eq!(r["result"][0], 0, "{r}");
    assert_eq!(r["result"][2][0], "burst", "{r}");
    let r = call(serde_json::json!(["TW.IDEM.BEGIN", "idem:pay:9", "60000"])).await;
    assert_eq!(r["result"][0], "new", "{r}");
    let token = r["result"][1].as_str().unwrap().to_owned();
    let r = call(serde_json::json!([
        "TW.IDEM.COMPLETE",
        "idem:pay:9",
        token,
        "charged"
    ]))
    .await;
    assert_eq!(r["result"], "OK", "{r}");
    // Locks and fills over REST: WAIT answers at once there (a request never
    // waits, as XREAD's BLOCK), taken or not.
    let r = call(serde_json::json!(["TW.LOCK.ACQUIRE", "lock:rest", "60000"])).await;
    assert!(r["result"][1].as_i64().unwrap() > 0, "{r}");
    let r = call(serde_json::json!([
        "TW.LOCK.ACQUIRE",
        "lock:rest",
        "60000",
        "WAIT",
        "5000"
    ]))
    .await;
    assert!(r["result"].is_null(), "{r}");
    let r = call(serde_json::json!(["TW.FILL.GET", "cache:rest", "60000"])).await;
    assert_eq!(r["result"][0], "fill", "{r}");
    let fill_token = r["result"][1].as_str().unwrap().to_owned();
    let r = call(serde_json::json!([
        "TW.FILL.GET",
        "cache:rest",
        "60000",
        "WAIT",
        "5000"
    ]))
    .await;
    assert_eq!(r["result"], serde_json::json!(["timeout"]), "{r}");
    let r = call(serde_json::json!([
        "TW.FILL.SET",
        "cache:rest",
        fill_token,
        "v"
    ]))
    .await;
    assert_eq!(r["result"], 1, "{r}");
    let r = call(serde_json::json!(["TW.FILL.GET", "cache:rest", "60000"])).await;
    assert_eq!(r["result"], serde_json::json!(["hit", "v"]), "{r}");
    server.shutdown().await;

    // The limits are where they were.
    let server = start_in(dir.path()).await;
    let mut conn = common::redis_conn(&server).await;
    let r: Vec<i64> = redis::cmd("CL.THROTTLE")
        .arg("ip:1")
        .arg(2)
        .arg(10)
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(r[0], 1, "still limited after the restart: {r:?}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg("user:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0, "{pttl}");
    drop(conn);
    server.shutdown().await;
}

/// A lock whose holder never releases it goes to the waiter when it expires, and
/// fences keep rising across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiters_take_over_at_expiry_and_fences_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let mut a = common::redis_conn(&server).await;
    let mut b = common::redis_conn(&server).await;
    // Timed from before the holder's lock: the waiter cannot get it sooner than
    // the holder's 300 ms, however late this task runs.
    let started = std::time::Instant::now();
    let (_, f1): (String, i64) = redis::cmd("TW.LOCK.ACQUIRE")
        .arg("job:payout")
        .arg(300)
        .query_async(&mut a)
        .await
        .unwrap();
    let (_, f2): (String, i64) = redis::cmd("TW.LOCK.ACQUIRE")
        .arg("job:payout")
        .arg(60000)
        .arg("WAIT")
        .arg(5000)
        .query_async(&mut b)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(f2 > f1, "{f2} > {f1}");
    assert!(
        waited >= std::time::Duration::from_millis(200)
            && waited < std::time::Duration::from_secs(3),
        "handed over at the holder's expiry, not at the wait's end: {waited:?}"
    );
    drop((a, b));
    server.shutdown().await;
    let server = start_in(dir.path()).await;
    let mut c = common::redis_conn(&server).await;
    let held: Option<(String, i64)> = redis::cmd("TW.LOCK.ACQUIRE")
        .arg("job:payout")
        .arg(1000)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(held.is_none(), "b's lock survived the restart");
    let (_, f3): (String, i64) = redis::cmd("TW.LOCK.ACQUIRE")
        .arg("job:other")
        .arg(1000)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(f3 > f2, "fences rise across the restart: {f3} > {f2}");
    drop(c);
    server.shutdown().await;
}

/// TW.FILL.GET from a thousand callers at once on one missing key: one fills, the
/// 999 others wait and get its value; a filler that dies loses its lease and a
/// waiter takes the fill over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_fill() {
    const CALLERS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let mut conns = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        conns.push(common::redis_conn(&server).await);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let r: Vec<String> = redis::cmd("TW.FILL.GET")
                    .arg("profile:1")
                    .arg(10_000)
                    .arg("WAIT")
                    .arg(20_000)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                if r[0] == "fill" {
                    // The one filler computes for a while, then stores.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let stored: i64 = redis::cmd("TW.FILL.SET")
                        .arg("profile:1")
                        .arg(&r[1])
                        .arg("ada")
                        .arg("EX")
                        .arg(60)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    assert_eq!(stored, 1);
                }
                r
            })
        })
        .collect();
    let mut fills = 0;
    let mut hits = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r[0].as_str() {
            "fill" => fills += 1,
            "hit" => {
                assert_eq!(r[1], "ada");
                hits += 1;
            }
            other => panic!("unexpected reply {other}: {r:?}"),
        }
    }
    assert_eq!((fills, hits), (1, CALLERS - 1));

    // A filler that dies: its lease (300 ms) ends and the waiter fills instead.
    let mut a = common::redis_conn(&server).await;
    let mut b = common::redis_conn(&server).await;
    // Timed from before the lease is taken (see the lock test above).
    let started = std::time::Instant::now();
    let r: Vec<String> = redis::cmd("TW.FILL.GET")
        .arg("profile:2")
        .arg(300)
        .query_async(&mut a)
        .await
        .unwrap();
    assert_eq!(r[0], "fill");
    let r: Vec<String> = redis::cmd("TW.FILL.GET")
        .arg("profile:2")
        .arg(5000)
        .arg("WAIT")
        .arg(10_000)
        .query_async(&mut b)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r[0], "fill", "{r:?}");
    assert!(
        waited >= std::time::Duration::from_millis(200)
            && waited < std::time::Duration::from_secs(5),
        "taken over when the lease ended, not at the wait's end: {waited:?}"
    );
    drop((a, b));
    server.shutdown().await;
}
