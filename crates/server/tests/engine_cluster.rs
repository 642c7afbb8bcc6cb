//! Two Tidewire nodes over one real Redis Cluster (`--engine`): they serve one
//! keyspace over RESP and REST, route by slot across all three masters, answer
//! CROSSSLOT as a cluster does, run MULTI/EXEC and EVAL on the slot's master, and
//! follow a slot migrated between masters (ASK while it moves, MOVED after)
//! without the client seeing an error; a killed master's replica takes over with
//! no error seen by the client. Also: a standalone redis-server as the engine,
//! and a clear startup error for what is not supported. TLS, passwords and the
//! background topology refresh: `engine_security.rs`.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod common;
mod redis_support;

use common::{bulks, Raw, V};
use redis_support::{RedisCluster, Standalone};
use serde_json::json;
use tidewire_engine::key_slot;
use tidewire_server::{Config, Server};

const TOKEN: &str = "engine-test-token";
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// A node's configuration on `engine`, with its data in `dir`.
fn engine_config(engine: &str, dir: &tempfile::TempDir) -> Config {
    let mut config = common::engine_config(engine, dir);
    config.upstash.tokens = vec![TOKEN.into()];
    config
}

async fn node(engine: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = engine_config(engine, &dir);
    let server = tidewire_server::start(config)
        .await
        .expect("node starts on the engine");
    (server, dir)
}

async fn rest(server: &Server, path: &str, body: serde_json::Value) -> serde_json::Value {
    common::rest_post(server, TOKEN, path, body).await
}

fn err(text: &str) -> V {
    V::Err(text.into())
}

fn ok() -> V {
    V::Simple("OK".into())
}

/// A key that hashes into the slot range of each master, one per master.
fn key_per_master(cluster: &RedisCluster) -> Vec<String> {
    cluster
        .masters
        .iter()
        .map(|m| {
            (0..10_000)
                .map(|i| format!("k{i}"))
                .find(|k| cluster.owner_of(key_slot(k.as_bytes())).port == m.port)
                .expect("a key for every master")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_cluster_keyspace() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (a, _da) = node(&seed).await;
    let (b, _db) = node(&seed).await;
    let mut ra = Raw::connect(&a).await;
    let mut rb = Raw::connect(&b).await;

    // A write through A is read through B, over RESP and over REST.
    assert_eq!(ra.cmd(&["SET", "foo", "bar"]).await, ok());
    assert_eq!(rb.cmd(&["GET", "foo"]).await, V::bulk("bar"));
    assert_eq!(
        rest(&b, "", json!(["GET", "foo"])).await,
        json!({"result": "bar"})
    );
    assert_eq!(
        rest(&a, "", json!(["SET", "viarest", "1"])).await,
        json!({"result": "OK"})
    );
    assert_eq!(rb.cmd(&["GET", "viarest"]).await, V::bulk("1"));

    // A value larger than the engine connection's read buffer, both ways.
    let big = "x".repeat(3 * 1024 * 1024);
    assert_eq!(ra.cmd(&["SET", "big", &big]).await, ok());
    assert_eq!(rb.cmd(&["GET", "big"]).await, V::bulk(&big));
    assert_eq!(rb.cmd(&["DEL", "big"]).await, V::Int(1));

    // Keys in every master's slots, each stored on its own master.
    let keys = key_per_master(&cluster);
    for (key, master) in keys.iter().zip(&cluster.masters) {
        assert_eq!(ra.cmd(&["SET", key, "v"]).await, ok());
        assert_eq!(rb.cmd(&["GET", key]).await, V::bulk("v"));
        let direct: Option<String> = master.cmd(&["GET", key]);
        assert_eq!(direct.as_deref(), Some("v"), "{key} is on its master");
    }

    // Connection commands stay local; keyspace-wide ones fan out.
    assert_eq!(ra.cmd(&["PING"]).await, V::Simple("PONG".into()));
    assert_eq!(ra.cmd(&["SELECT", "0"]).await, ok());
    assert_eq!(
        ra.cmd(&["SELECT", "1"]).await,
        err("ERR SELECT is not allowed in cluster mode")
    );
    let total: i64 = cluster
        .masters
        .iter()
        .map(|m| m.cmd::<i64>(&["DBSIZE"]))
        .sum();
    assert_eq!(rb.cmd(&["DBSIZE"]).await, V::Int(total));
    match rb.cmd(&["KEYS", "*"]).await {
        V::Array(found) => assert_eq!(found.len() as i64, total),
        other => panic!("KEYS: {other:?}"),
    }
    // SCAN walks every master behind one cursor, small pages included.
    let mut cursor = "0".to_string();
    let mut scanned = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let V::Array(page) = ra.cmd(&["SCAN", &cursor, "COUNT", "2"]).await else {
            panic!("SCAN page");
        };
        cursor = page[0].text();
        if let V::Array(keys) = &page[1] {
            scanned.extend(keys.iter().map(V::text));
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "the walk ends");
    assert_eq!(scanned.len() as i64, total);
    assert_eq!(
        ra.cmd(&["SCAN", "1023"]).await,
        err("ERR invalid cursor"),
        "a cursor naming no master"
    );

    // Multi-key commands: one slot or CROSSSLOT, exactly as a cluster says.
    assert_eq!(ra.cmd(&["MSET", "a", "1", "b", "2"]).await, err(CROSSSLOT));
    assert_eq!(ra.cmd(&["MSET", "{t}a", "1", "{t}b", "2"]).await, ok());
    assert_eq!(rb.cmd(&["MGET", "{t}a", "{t}b"]).await, bulks(&["1", "2"]));

    // RESP3 replies keep their RESP3 shapes; RESP2 gets the RESP2 ones.
    assert_eq!(ra.cmd(&["HSET", "h", "f", "v"]).await, V::Int(1));
    assert_eq!(rb.cmd(&["HGETALL", "h"]).await, bulks(&["f", "v"]));
    assert_eq!(ra.cmd(&["ZADD", "z", "1.5", "m"]).await, V::Int(1));
    assert_eq!(rb.cmd(&["ZSCORE", "z", "m"]).await, V::bulk("1.5"));
    let mut r3 = Raw::connect(&b).await;
    assert!(matches!(r3.cmd(&["HELLO", "3"]).await, V::Map(_)));
    assert_eq!(
        r3.cmd(&["HGETALL", "h"]).await,
        V::Map(vec![(V::bulk("f"), V::bulk("v"))])
    );
    assert_eq!(r3.cmd(&["ZSCORE", "z", "m"]).await, V::Double("1.5".into()));
    assert_eq!(r3.cmd(&["GET", "nokey"]).await, V::Nil);

    // MULTI/EXEC on one slot; across slots EXEC answers CROSSSLOT; a refused
    // command makes EXEC abort.
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(ra.cmd(&["INCR", "{t}n"]).await, V::Simple("QUEUED".into()));
    assert_eq!(ra.cmd(&["INCR", "{t}n"]).await, V::Simple("QUEUED".into()));
    assert_eq!(ra.cmd(&["GET", "{t}a"]).await, V::Simple("QUEUED".into()));
    assert_eq!(
        ra.cmd(&["EXEC"]).await,
        V::Array(vec![V::Int(1), V::Int(2), V::bulk("1")])
    );
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(ra.cmd(&["SET", "a", "1"]).await, V::Simple("QUEUED".into()));
    assert_eq!(ra.cmd(&["SET", "b", "1"]).await, V::Simple("QUEUED".into()));
    assert_eq!(ra.cmd(&["EXEC"]).await, err(CROSSSLOT));
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(ra.cmd(&["MSET", "a", "1", "b", "2"]).await, err(CROSSSLOT));
    assert_eq!(
        ra.cmd(&["EXEC"]).await,
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(ra.cmd(&["EXEC"]).await, err("ERR EXEC without MULTI"));
    let exec = rest(
        &b,
        "/multi-exec",
        json!([["SET", "{u}x", "1"], ["INCR", "{u}x"]]),
    )
    .await;
    assert_eq!(exec, json!([{"result": "OK"}, {"result": 2}]));
    let pipeline = rest(&b, "/pipeline", json!([["GET", "{u}x"], ["GET", "foo"]])).await;
    assert_eq!(pipeline, json!([{"result": "2"}, {"result": "bar"}]));

    // Scripts run where their declared keys live.
    let script = "return redis.call('SET', KEYS[1], ARGV[1])";
    assert_eq!(
        ra.cmd(&["EVAL", script, "1", "foo", "scripted"]).await,
        ok()
    );
    assert_eq!(rb.cmd(&["GET", "foo"]).await, V::bulk("scripted"));
    assert_eq!(
        ra.cmd(&["EVAL", "return 1", "2", "a", "b"]).await,
        err(CROSSSLOT)
    );
    assert_eq!(ra.cmd(&["EVAL", "return 7", "0"]).await, V::Int(7));
    // An error line that is not UTF-8 is passed on, and the connection the node
    // shares with its other clients survives it.
    match ra
        .cmd(&["EVAL", "return redis.error_reply('bad \\255')", "1", "foo"])
        .await
    {
        V::Err(e) => assert!(e.starts_with("bad "), "{e}"),
        other => panic!("error_reply: {other:?}"),
    }
    assert_eq!(rb.cmd(&["GET", "{t}a"]).await, V::bulk("1"));
    let sha = match ra.cmd(&["SCRIPT", "LOAD", "return KEYS[1]"]).await {
        V::Bulk(sha) => String::from_utf8(sha).expect("hex"),
        other => panic!("SCRIPT LOAD: {other:?}"),
    };
    for key in &keys {
        assert_eq!(rb.cmd(&["EVALSHA", &sha, "1", key]).await, V::bulk(key));
    }
    assert_eq!(
        rb.cmd(&["SCRIPT", "EXISTS", &sha, "0000"]).await,
        V::Array(vec![V::Int(1), V::Int(0)])
    );
    // SCRIPT EXISTS asks every master (Redis's `agg_logical_and`): a script a
    // master lacks is not there, whichever master it is.
    for lacking in 0..cluster.masters.len() {
        assert_eq!(
            rb.cmd(&["SCRIPT", "LOAD", "return KEYS[1]"]).await,
            V::bulk(&sha)
        );
        let _: String = cluster.masters[lacking].cmd(&["SCRIPT", "FLUSH"]);
        assert_eq!(
            rb.cmd(&["SCRIPT", "EXISTS", &sha]).await,
            V::Array(vec![V::Int(0)]),
            "master {lacking} lacks it"
        );
    }
    assert_eq!(
        ra.cmd(&["SCRIPT", "LOAD", "return KEYS[1]"]).await,
        V::bulk(&sha)
    );
    let library = "#!lua name=enginelib\nredis.register_function('keyname', function(keys, args) return keys[1] end)";
    assert_eq!(
        ra.cmd(&["FUNCTION", "LOAD", library]).await,
        V::bulk("enginelib")
    );
    for key in &keys {
        assert_eq!(rb.cmd(&["FCALL", "keyname", "1", key]).await, V::bulk(key));
    }
    match rb.cmd(&["FUNCTION", "LIST"]).await {
        V::Array(libraries) => assert_eq!(libraries.len(), 1, "the engine's libraries"),
        other => panic!("FUNCTION LIST: {other:?}"),
    }

    // WATCH guards a transaction on the client's own engine connection: a
    // change through the other node makes EXEC answer nil.
    assert_eq!(ra.cmd(&["WATCH", "{w}k"]).await, ok());
    assert_eq!(rb.cmd(&["SET", "{w}k", "theirs"]).await, ok());
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        ra.cmd(&["SET", "{w}k", "mine"]).await,
        V::Simple("QUEUED".into())
    );
    assert_eq!(ra.cmd(&["EXEC"]).await, V::Nil);
    assert_eq!(rb.cmd(&["GET", "{w}k"]).await, V::bulk("theirs"));
    assert_eq!(ra.cmd(&["WATCH", "{w}k"]).await, ok());
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        ra.cmd(&["SET", "{w}k", "mine"]).await,
        V::Simple("QUEUED".into())
    );
    assert_eq!(ra.cmd(&["EXEC"]).await, V::Array(vec![ok()]));
    // DISCARD and UNWATCH forget the watch on the engine too.
    assert_eq!(ra.cmd(&["WATCH", "{w}k"]).await, ok());
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(ra.cmd(&["DISCARD"]).await, ok());
    assert_eq!(rb.cmd(&["SET", "{w}k", "again"]).await, ok());
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(ra.cmd(&["GET", "{w}k"]).await, V::Simple("QUEUED".into()));
    assert_eq!(ra.cmd(&["EXEC"]).await, V::Array(vec![V::bulk("again")]));
    assert_eq!(ra.cmd(&["WATCH", "a", "b"]).await, err(CROSSSLOT));
    assert_eq!(ra.cmd(&["WATCH", "{w}k"]).await, ok());
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(ra.cmd(&["SET", "a", "1"]).await, V::Simple("QUEUED".into()));
    assert_eq!(
        ra.cmd(&["EXEC"]).await,
        err(CROSSSLOT),
        "another slot than the watched one"
    );

    // Blocking commands wait on the client's own engine connection: a push
    // through the other node wakes them; a timeout answers nil.
    ra.send(&["BLPOP", "{q}jobs", "5"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rb.cmd(&["RPUSH", "{q}jobs", "job1"]).await, V::Int(1));
    assert_eq!(ra.read().await, bulks(&["{q}jobs", "job1"]));
    assert_eq!(ra.cmd(&["BLPOP", "{q}none", "0.1"]).await, V::Nil);
    assert_eq!(ra.cmd(&["BLPOP", "a", "b", "1"]).await, err(CROSSSLOT));
    // A client that leaves while blocked leaves nothing blocked on the engine,
    // so a later push is not popped for nobody.
    let queue_owner = cluster.owner_of(key_slot(b"{q}gone"));
    let blocked = || queue_owner.cmd::<String>(&["INFO", "clients"]);
    {
        let mut leaving = Raw::connect(&a).await;
        leaving.send(&["BLPOP", "{q}gone", "0"]).await;
        assert!(
            common::eventually(|| async { blocked().contains("blocked_clients:1") }).await,
            "the BLPOP blocks on the engine"
        );
    }
    assert!(
        common::eventually(|| async { blocked().contains("blocked_clients:0") }).await,
        "the engine stops blocking once the client left"
    );
    assert_eq!(rb.cmd(&["RPUSH", "{q}gone", "kept"]).await, V::Int(1));
    assert_eq!(rb.cmd(&["LLEN", "{q}gone"]).await, V::Int(1));
    // Inside MULTI a blocking command does not block, as in Redis.
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        ra.cmd(&["BLPOP", "{q}none", "0"]).await,
        V::Simple("QUEUED".into())
    );
    assert_eq!(ra.cmd(&["EXEC"]).await, V::Array(vec![V::Nil]));
    // REST requests never wait.
    let over_rest = rest(&b, "", json!(["XREAD", "BLOCK", "0", "STREAMS", "s", "$"])).await;
    assert_eq!(
        over_rest,
        json!({"error": "ERR blocking command XREAD is not supported over REST"})
    );

    // Pub/sub across nodes: a subscriber on A hears a PUBLISH through B, in
    // RESP2 (arrays) and RESP3 (pushes); patterns too.
    let mut sub2 = Raw::connect(&a).await;
    assert_eq!(
        sub2.cmd(&["SUBSCRIBE", "news"]).await,
        V::Array(vec![V::bulk("subscribe"), V::bulk("news"), V::Int(1)])
    );
    assert_eq!(
        sub2.cmd(&["PSUBSCRIBE", "n*"]).await,
        V::Array(vec![V::bulk("psubscribe"), V::bulk("n*"), V::Int(2)])
    );
    let mut sub3 = Raw::connect(&a).await;
    assert!(matches!(sub3.cmd(&["HELLO", "3"]).await, V::Map(_)));
    assert_eq!(
        sub3.cmd(&["SUBSCRIBE", "news"]).await,
        V::Push(vec![V::bulk("subscribe"), V::bulk("news"), V::Int(1)])
    );
    assert!(matches!(
        rb.cmd(&["PUBLISH", "news", "hello"]).await,
        V::Int(_)
    ));
    let message = [V::bulk("message"), V::bulk("news"), V::bulk("hello")];
    let pmessage = [
        V::bulk("pmessage"),
        V::bulk("n*"),
        V::bulk("news"),
        V::bulk("hello"),
    ];
    let mut heard = vec![sub2.read().await, sub2.read().await];
    heard.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        heard,
        vec![V::Array(message.to_vec()), V::Array(pmessage.to_vec())]
    );
    assert_eq!(sub3.read().await, V::Push(message.to_vec()));
    assert_eq!(
        sub3.cmd(&["UNSUBSCRIBE", "news"]).await,
        V::Push(vec![V::bulk("unsubscribe"), V::bulk("news"), V::Int(0)])
    );
    // Shard channels: SSUBSCRIBE on the owner of the channel's slot, SPUBLISH
    // through the other node; channels of several slots are refused.
    assert_eq!(
        sub3.cmd(&["SSUBSCRIBE", "{s}orders"]).await,
        V::Push(vec![V::bulk("ssubscribe"), V::bulk("{s}orders"), V::Int(1)])
    );
    assert_eq!(rb.cmd(&["SPUBLISH", "{s}orders", "o1"]).await, V::Int(1));
    assert_eq!(
        sub3.read().await,
        V::Push(vec![
            V::bulk("smessage"),
            V::bulk("{s}orders"),
            V::bulk("o1")
        ])
    );
    assert_eq!(sub3.cmd(&["SSUBSCRIBE", "a", "b"]).await, err(CROSSSLOT));
    assert_eq!(
        sub3.cmd(&["SUNSUBSCRIBE"]).await,
        V::Push(vec![
            V::bulk("sunsubscribe"),
            V::bulk("{s}orders"),
            V::Int(0)
        ])
    );
    assert_eq!(rb.cmd(&["SPUBLISH", "{s}orders", "o2"]).await, V::Int(0));
    // Nothing else was pushed (a master without shard channels said nothing).
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(sub3.cmd(&["PING"]).await, V::Simple("PONG".into()));

    // A RESP2 subscriber is in subscribed mode, as on Redis.
    assert_eq!(
        sub2.cmd(&["GET", "foo"]).await,
        err("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
    );
    assert_eq!(sub2.cmd(&["PING"]).await, bulks(&["pong", ""]));

    // RESET lets the subscriber connection go without closing the client's.
    assert_eq!(sub2.cmd(&["RESET"]).await, V::Simple("RESET".into()));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(sub2.cmd(&["PING"]).await, V::Simple("PONG".into()));

    // WAIT on masters without replicas: none acknowledges, at once when none
    // is asked for, else once the timeout passes (twice: the connections it
    // waits on are kept between waits).
    assert_eq!(ra.cmd(&["WAIT", "0", "0"]).await, V::Int(0));
    for _ in 0..2 {
        assert_eq!(ra.cmd(&["SET", "{w}k", "waited"]).await, ok());
        assert_eq!(ra.cmd(&["WAIT", "1", "50"]).await, V::Int(0));
    }
    // A master that refuses the write WAIT makes first: its error, not a count
    // that would cover less than the client wrote.
    for m in &cluster.masters {
        let _: String = m.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    }
    let refused = ra.cmd(&["WAIT", "0", "0"]).await;
    for m in &cluster.masters {
        let _: String = m.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    }
    match refused {
        V::Err(e) => assert!(e.starts_with("EXECABORT"), "{e}"),
        other => panic!("WAIT after a refused write: {other:?}"),
    }

    // A slot moves between masters while both nodes keep using it.
    let slot = key_slot(b"foo");
    let source = cluster.owner_of(slot);
    let target = cluster
        .masters
        .iter()
        .find(|m| m.port != source.port)
        .expect("another master");
    let slot_text = slot.to_string();
    target.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source.id()]);
    source.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target.id()]);
    // A new key of the migrating slot belongs to the target already (ASK).
    assert_eq!(ra.cmd(&["SET", "{foo}new", "fresh"]).await, ok());
    assert_eq!(rb.cmd(&["GET", "{foo}new"]).await, V::bulk("fresh"));
    // So does a transaction on new keys of that slot: one ASKING before MULTI.
    assert_eq!(ra.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        ra.cmd(&["SET", "{foo}tx", "t"]).await,
        V::Simple("QUEUED".into())
    );
    assert_eq!(
        ra.cmd(&["GET", "{foo}tx"]).await,
        V::Simple("QUEUED".into())
    );
    assert_eq!(ra.cmd(&["EXEC"]).await, V::Array(vec![ok(), V::bulk("t")]));
    let on_target: Option<String> = target.conn_get_asking("{foo}new");
    assert_eq!(on_target.as_deref(), Some("fresh"));
    // The old keys move; reads follow them.
    let moving: Vec<String> = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
    assert!(!moving.is_empty());
    let mut migrate = vec![
        "MIGRATE".to_string(),
        "127.0.0.1".into(),
        target.port.to_string(),
        String::new(),
        "0".into(),
        "5000".into(),
        "KEYS".into(),
    ];
    migrate.extend(moving);
    let migrate: Vec<&str> = migrate.iter().map(String::as_str).collect();
    source.cmd::<()>(&migrate);
    assert_eq!(ra.cmd(&["GET", "foo"]).await, V::bulk("scripted"));
    assert_eq!(rb.cmd(&["INCR", "{foo}count"]).await, V::Int(1));
    // The move ends: every master learns the new owner; the nodes follow MOVED.
    for m in &cluster.masters {
        m.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target.id()]);
    }
    assert_eq!(ra.cmd(&["GET", "foo"]).await, V::bulk("scripted"));
    assert_eq!(rb.cmd(&["GET", "{foo}new"]).await, V::bulk("fresh"));
    assert_eq!(rb.cmd(&["INCR", "{foo}count"]).await, V::Int(2));
    assert_eq!(
        rest(&a, "", json!(["GET", "foo"])).await,
        json!({"result": "scripted"})
    );
    let direct: Option<String> = target.cmd(&["GET", "foo"]);
    assert_eq!(direct.as_deref(), Some("scripted"));

    // The dashboard's console works on the engine too.
    let http = reqwest::Client::new();
    let dashboard = format!("http://{}/dashboard/api", b.http_addr);
    let login = http
        .post(format!("{dashboard}/login"))
        .json(&json!({ "credential": TOKEN }))
        .send()
        .await
        .expect("login");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let console: serde_json::Value = http
        .post(format!("{dashboard}/command"))
        .header("cookie", cookie)
        .json(&json!({ "args": ["GET", "foo"] }))
        .send()
        .await
        .expect("command")
        .json()
        .await
        .expect("JSON");
    assert_eq!(console, json!({"result": "scripted"}));

    // Forwarded commands count in the node's INFO like its own.
    match ra.cmd(&["INFO", "commandstats"]).await {
        V::Bulk(info) => {
            let info = String::from_utf8_lossy(&info).into_owned();
            assert!(info.contains("cmdstat_get:calls="), "{info}");
            assert!(info.contains("cmdstat_mset:calls="), "{info}");
        }
        other => panic!("INFO: {other:?}"),
    }

    // FLUSHALL empties every master.
    assert_eq!(ra.cmd(&["FLUSHALL"]).await, ok());
    assert_eq!(rb.cmd(&["DBSIZE"]).await, V::Int(0));

    a.shutdown().await;
    b.shutdown().await;
}

/// REST's Server-Sent Events subscriptions listen on the engine: a `PUBLISH`
/// through another node (RESP or REST) reaches a `/subscribe` or `/psubscribe`
/// stream, and the stream's subscription ends with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscriptions_hear_every_node() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (n1, _d1) = node(&seed).await;
    let (n2, _d2) = node(&seed).await;
    let http = reqwest::Client::new();
    let open = |path: &str| {
        http.get(format!("http://{}/redis{path}", n2.http_addr))
            .bearer_auth(TOKEN)
            .header("Accept", "text/event-stream")
            .send()
    };
    let mut plain = open("/subscribe/news").await.expect("subscribe stream");
    let mut pattern = open("/psubscribe/new*").await.expect("psubscribe stream");
    assert_eq!(plain.status(), 200);
    assert_eq!(pattern.status(), 200);
    let mut seen_plain = String::new();
    let mut seen_pattern = String::new();
    read_until(&mut plain, &mut seen_plain, "data: subscribe,news,1\n").await;
    read_until(&mut pattern, &mut seen_pattern, "data: psubscribe,new*,1\n").await;

    let mut resp1 = Raw::connect(&n1).await;
    // A cluster passes PUBLISH to every node; the count is the receiving
    // master's subscribers (both streams hold theirs on the first master).
    assert_eq!(
        resp1.cmd(&["PUBLISH", "news", "from resp"]).await,
        V::Int(2),
        "both streams are subscribed on the engine"
    );
    rest(&n1, "/", json!(["PUBLISH", "news", "from rest"])).await;
    read_until(
        &mut plain,
        &mut seen_plain,
        "data: message,news,from rest\n",
    )
    .await;
    assert!(
        seen_plain.contains("data: message,news,from resp\n"),
        "{seen_plain}"
    );
    read_until(
        &mut pattern,
        &mut seen_pattern,
        "data: pmessage,new*,news,from rest\n",
    )
    .await;

    // The stream's end gives its subscription back on the engine.
    drop(plain);
    let gone = common::eventually(|| async {
        rest(&n2, "/", json!(["PUBSUB", "NUMSUB", "news"])).await["result"][1] == 0
    })
    .await;
    assert!(
        gone,
        "the closed stream's subscription is gone from the engine"
    );
    drop(pattern);
    for s in [n1, n2] {
        s.shutdown().await;
    }
}

/// Reads an event stream until `want` appears (bounded in time).
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !seen.contains(want) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {want:?} in {seen:?}"))
            .expect("stream readable")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_server_is_one_node_owning_every_slot() {
    let redis = tokio::task::spawn_blocking(redis_support::standalone)
        .await
        .expect("redis-server starts");
    let Standalone {
        node: redis_node, ..
    } = &redis;
    let (a, _da) = node(&redis_node.url()).await;
    let mut r = Raw::connect(&a).await;
    assert_eq!(r.cmd(&["MSET", "{t}a", "1", "{t}b", "2"]).await, ok());
    // A cluster's rules hold even on one server: every node of a deployment
    // answers alike whatever the engine's size.
    assert_eq!(r.cmd(&["MSET", "a", "1", "b", "2"]).await, err(CROSSSLOT));
    assert_eq!(r.cmd(&["SET", "a", "x"]).await, ok());
    let direct: Option<String> = redis_node.cmd(&["GET", "a"]);
    assert_eq!(direct.as_deref(), Some("x"));
    assert_eq!(r.cmd(&["DBSIZE"]).await, V::Int(3));
    a.shutdown().await;

    // Credentials the engine refuses stop the start, without showing them.
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = format!("redis://app:s3cret@127.0.0.1:{}", redis_node.port);
    let config = engine_config(&wrong, &dir);
    let error = match tidewire_server::start(config).await {
        Ok(_) => panic!("started with refused credentials"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("refused AUTH"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
}

#[tokio::test]
async fn unsupported_or_unreachable_engines_stop_the_start() {
    for (engine, expect) in [
        (
            "rediss://127.0.0.1:1,redis://127.0.0.1:2",
            "mix redis:// and rediss://",
        ),
        ("http://127.0.0.1:1", "expected redis://"),
        ("redis://127.0.0.1:1", "cannot reach the engine"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = engine_config(engine, &dir);
        let error = match tidewire_server::start(config).await {
            Ok(_) => panic!("{engine}: started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(expect), "{engine}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_s_replica_takes_over_without_client_errors() {
    let mut cluster = RedisCluster::started_with_replicas().await;
    // The victim is the master nodes subscribe on (the first by address); the
    // seed is another.
    let victim = (0..cluster.masters.len())
        .min_by_key(|i| cluster.masters[*i].addr())
        .expect("masters");
    let seed = cluster.masters[(victim + 1) % cluster.masters.len()].url();
    let (a, _da) = node(&seed).await;
    let mut r = Raw::connect(&a).await;
    let keys = key_per_master(&cluster);
    for key in &keys {
        assert_eq!(r.cmd(&["SET", key, "kept"]).await, ok());
    }
    let mut subscriber = Raw::connect(&a).await;
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]).await,
        V::Array(vec![V::bulk("subscribe"), V::bulk("news"), V::Int(1)])
    );
    // WAIT through the node covers the client's writes on every master: with
    // the replicas stopped none acknowledges them (a wait on a connection
    // that wrote nothing would answer at once that every replica has).
    for replica in &cluster.replicas {
        replica.signal("STOP");
    }
    assert_eq!(r.cmd(&["SET", &keys[0], "kept"]).await, ok());
    let waited = r.cmd(&["WAIT", "1", "300"]).await;
    for replica in &cluster.replicas {
        replica.signal("CONT");
    }
    assert_eq!(waited, V::Int(0), "no replica acknowledged yet");
    // The victim's writes are on its replica before it dies (replication is
    // asynchronous: docs/scale-out.md says what an unlucky moment loses).
    assert_eq!(r.cmd(&["WAIT", "1", "5000"]).await, V::Int(1));
    match r.cmd(&["WAIT", "1", "-1"]).await {
        V::Err(e) => assert_eq!(e, "ERR timeout is negative"),
        other => panic!("WAIT with a negative timeout: {other:?}"),
    }
    let victim_key = keys[victim].clone();
    cluster.masters[victim].kill();
    // Reads of the dead master's slots wait inside the node while the replica is
    // promoted (bounded retries), then go on; other masters never stopped.
    for key in &keys {
        assert_eq!(r.cmd(&["GET", key]).await, V::bulk("kept"), "{key}");
    }
    assert_eq!(r.cmd(&["SET", &victim_key, "after"]).await, ok());
    assert_eq!(r.cmd(&["GET", &victim_key]).await, V::bulk("after"));
    // Its subscriptions died with the master: the subscriber is disconnected so
    // that it reconnects and subscribes again, and then hears publications.
    assert!(
        subscriber.closed().await,
        "the subscriber is told by a close"
    );
    let mut again = Raw::connect(&a).await;
    assert_eq!(
        again.cmd(&["SUBSCRIBE", "news"]).await,
        V::Array(vec![V::bulk("subscribe"), V::bulk("news"), V::Int(1)])
    );
    assert!(matches!(
        r.cmd(&["PUBLISH", "news", "back"]).await,
        V::Int(_)
    ));
    assert_eq!(
        again.read().await,
        V::Array(vec![V::bulk("message"), V::bulk("news"), V::bulk("back")])
    );
    a.shutdown().await;
}
