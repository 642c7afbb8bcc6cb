//! A client's pipeline through a node on a real Redis Cluster (`--engine`): the
//! consecutive keyed commands go to the masters together, yet every reply comes
//! back in the client's order with the value that order gives, across slots and
//! masters, with errors, local commands and MULTI in the middle, and with a slot
//! being migrated (ASK) or moved (MOVED) under the batch.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod common;
mod redis_support;

use common::{bulks, Raw, V};
use redis_support::RedisCluster;
use tidewire_engine::key_slot;
use tidewire_server::Config;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

fn ok() -> V {
    V::Simple("OK".into())
}

fn queued() -> V {
    V::Simple("QUEUED".into())
}

/// Sends every command in one write, then reads one reply per command.
async fn pipeline(r: &mut Raw, commands: &[Vec<String>]) -> Vec<V> {
    let mut wire = Vec::new();
    for c in commands {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        wire.extend(common::encode(&args));
    }
    r.send_raw(&wire).await;
    let mut replies = Vec::with_capacity(commands.len());
    for _ in commands {
        replies.push(r.read().await);
    }
    replies
}

fn c(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Keys that hash into the slots of each master, `count` per master.
fn keys_per_master(cluster: &RedisCluster, count: usize) -> Vec<Vec<String>> {
    let mut found = vec![Vec::new(); cluster.masters.len()];
    for i in 0..100_000 {
        let key = format!("pk{i}");
        let owner = cluster.owner_of(key_slot(key.as_bytes())).port;
        let Some(master) = cluster.masters.iter().position(|m| m.port == owner) else {
            continue;
        };
        if found[master].len() < count {
            found[master].push(key);
        }
        if found.iter().all(|keys| keys.len() == count) {
            break;
        }
    }
    found
}

/// GET's call count summed over the cluster's masters. The node's own
/// commandstats are process-wide, and the other tests of this file run GETs
/// in the same process; each test has its own cluster.
fn master_get_calls(cluster: &RedisCluster) -> i64 {
    cluster
        .masters
        .iter()
        .map(|node| {
            let info: String = node.cmd(&["INFO", "commandstats"]);
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// The node's count of error replies starting with `code` (per server, unlike
/// its commandstats).
async fn error_count(r: &mut Raw, code: &str) -> i64 {
    let info = r.cmd(&["INFO", "errorstats"]).await.text();
    let prefix = format!("errorstat_{code}:count=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn total_reads(node: &redis_support::Node) -> i64 {
    let info: String = node.cmd(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_reads_processed in INFO stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_across_masters_answers_in_order() {
    let cluster = RedisCluster::started().await;
    let (a, _da) = common::engine_node(&cluster.masters[0].url()).await;
    let mut r = Raw::connect(&a).await;
    let keys = keys_per_master(&cluster, 4);
    let [k0, k1, k2] = [&keys[0][0], &keys[1][0], &keys[2][0]];

    // The same key written and read back twice in one pipeline, with writes to
    // the other masters between: each GET sees exactly the SET before it.
    let mixed = vec![
        c(&["SET", k0, "v1"]),
        c(&["SET", k1, "w1"]),
        c(&["GET", k0]),
        c(&["SET", k0, "v2"]),
        c(&["INCR", k2]),
        c(&["GET", k0]),
        c(&["INCR", k2]),
        c(&["GET", k1]),
        // Errors in the middle: the engine's own, a refusal of the node, an
        // unknown command; none ends the pipeline.
        c(&["INCR", k0]),
        c(&["MSET", k0, "x", k1, "y"]),
        c(&["NOSUCHCOMMAND", k0]),
        c(&["GET"]),
        // A local command in the middle.
        c(&["PING"]),
        c(&["APPEND", k1, "+"]),
        c(&["GET", k1]),
        // A transaction in the middle, queued and run whole.
        c(&["MULTI"]),
        c(&["INCR", &format!("{{{k2}}}tx")]),
        c(&["GET", k2]),
        c(&["EXEC"]),
        c(&["DEL", k0, k0]),
        c(&["GET", k0]),
        c(&["GET", k2]),
    ];
    let replies = pipeline(&mut r, &mixed).await;
    let expected = vec![
        ok(),
        ok(),
        V::bulk("v1"),
        ok(),
        V::Int(1),
        V::bulk("v2"),
        V::Int(2),
        V::bulk("w1"),
        V::Err("ERR value is not an integer or out of range".into()),
        V::Err(CROSSSLOT.into()),
        V::Err(format!(
            "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: '{k0}' "
        )),
        V::Err("ERR wrong number of arguments for 'get' command".into()),
        V::Simple("PONG".into()),
        V::Int(3),
        V::bulk("w1+"),
        ok(),
        queued(),
        queued(),
        V::Array(vec![V::Int(1), V::bulk("2")]),
        V::Int(1),
        V::Nil,
        V::bulk("2"),
    ];
    assert_eq!(replies, expected);

    // A long pipeline of list pushes interleaved over every master: each list
    // holds its elements in the order sent.
    let mut pushes = Vec::new();
    for i in 0..60 {
        for list in keys.iter().map(|k| &k[1]) {
            pushes.push(c(&["RPUSH", list, &i.to_string()]));
        }
    }
    for list in keys.iter().map(|k| &k[1]) {
        pushes.push(c(&["LRANGE", list, "0", "-1"]));
    }
    let replies = pipeline(&mut r, &pushes).await;
    let in_order: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    let in_order: Vec<&str> = in_order.iter().map(String::as_str).collect();
    for (i, reply) in replies[..180].iter().enumerate() {
        assert_eq!(*reply, V::Int(i as i64 / 3 + 1), "push {i}");
    }
    for reply in &replies[180..] {
        assert_eq!(*reply, bulks(&in_order));
    }

    // The pipeline goes to each master together: far fewer reads on the
    // master than commands sent to it (one each without batching).
    let master = &cluster.masters[1];
    let before = total_reads(master);
    let sets: Vec<Vec<String>> = (0..50)
        .map(|i| c(&["SET", &keys[1][i % 4], &i.to_string()]))
        .collect();
    let replies = pipeline(&mut r, &sets).await;
    assert!(replies.iter().all(|reply| *reply == ok()));
    let reads = total_reads(master) - before;
    assert!(reads < 25, "{reads} reads for 50 pipelined commands");

    // Admission stays per command: a command the user may not run is refused
    // in the middle of a batch, the others run; each refusal counts in INFO.
    let mut limited = Raw::connect(&a).await;
    assert_eq!(
        r.cmd(&["ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-get"])
            .await,
        ok()
    );
    assert_eq!(limited.cmd(&["AUTH", "limited", "pw"]).await, ok());
    let calls_before = master_get_calls(&cluster);
    let refusals_before = error_count(&mut r, "NOPERM").await;
    let replies = pipeline(
        &mut limited,
        &[
            c(&["SET", k0, "a"]),
            c(&["GET", k0]),
            c(&["APPEND", k0, "b"]),
            c(&["GET", k1]),
            c(&["STRLEN", k0]),
        ],
    )
    .await;
    assert_eq!(replies[0], ok());
    assert!(
        matches!(&replies[1], V::Err(e) if e.starts_with("NOPERM")),
        "{:?}",
        replies[1]
    );
    assert_eq!(replies[2], V::Int(2));
    assert!(matches!(&replies[3], V::Err(e) if e.starts_with("NOPERM")));
    assert_eq!(replies[4], V::Int(2));
    assert_eq!(
        master_get_calls(&cluster),
        calls_before,
        "refused GETs never reached the engine"
    );
    assert_eq!(error_count(&mut r, "NOPERM").await, refusals_before + 2);
    // RESP3 replies keep their shapes in a batch.
    assert!(matches!(limited.cmd(&["HELLO", "3"]).await, V::Map(_)));
    let replies = pipeline(
        &mut limited,
        &[
            c(&["HSET", k2, "f", "v"]),
            c(&["HGETALL", k2]),
            c(&["HGETALL", k1]),
        ],
    )
    .await;
    assert_eq!(
        replies[0],
        V::Err("WRONGTYPE Operation against a key holding the wrong kind of value".into())
    );
    assert_eq!(
        replies[1],
        V::Err("WRONGTYPE Operation against a key holding the wrong kind of value".into())
    );
    assert_eq!(
        replies[2],
        V::Err("WRONGTYPE Operation against a key holding the wrong kind of value".into())
    );
    let hash = format!("{{{k2}}}h");
    let replies = pipeline(
        &mut limited,
        &[c(&["HSET", &hash, "f", "v"]), c(&["HGETALL", &hash])],
    )
    .await;
    assert_eq!(
        replies,
        vec![V::Int(1), V::Map(vec![(V::bulk("f"), V::bulk("v"))])]
    );

    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_follows_a_slot_migrated_under_it() {
    let cluster = RedisCluster::started().await;
    let (a, _da) = common::engine_node(&cluster.masters[0].url()).await;
    let mut r = Raw::connect(&a).await;
    let keys = keys_per_master(&cluster, 1);
    let slot = key_slot(b"mig");
    let source = cluster.owner_of(slot);
    let target = cluster
        .masters
        .iter()
        .find(|m| m.port != source.port)
        .expect("another master");
    let elsewhere = keys
        .iter()
        .flatten()
        .find(|k| cluster.owner_of(key_slot(k.as_bytes())).port == target.port)
        .expect("a key on the target")
        .clone();
    assert_eq!(r.cmd(&["SET", "{mig}old", "o"]).await, ok());

    let slot_text = slot.to_string();
    target.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source.id()]);
    source.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target.id()]);

    // While the slot moves, new keys are asked to the target (ASK) and old
    // ones still answer on the source, in one pipeline with other masters'
    // keys; each command's reply is where the client's order puts it.
    let during = vec![
        c(&["SET", "{mig}new", "n1"]),
        c(&["SET", &elsewhere, "e1"]),
        c(&["GET", "{mig}new"]),
        c(&["GET", "{mig}old"]),
        c(&["INCR", "{mig}n"]),
        c(&["SET", "{mig}new", "n2"]),
        c(&["INCR", "{mig}n"]),
        c(&["GET", "{mig}new"]),
        c(&["GET", &elsewhere]),
        c(&["MULTI"]),
        c(&["INCR", "{mig}n"]),
        c(&["EXEC"]),
        c(&["GET", "{mig}n"]),
    ];
    let replies = pipeline(&mut r, &during).await;
    assert_eq!(
        replies,
        vec![
            ok(),
            ok(),
            V::bulk("n1"),
            V::bulk("o"),
            V::Int(1),
            ok(),
            V::Int(2),
            V::bulk("n2"),
            V::bulk("e1"),
            ok(),
            queued(),
            V::Array(vec![V::Int(3)]),
            V::bulk("3"),
        ]
    );
    assert_eq!(target.conn_get_asking("{mig}new").as_deref(), Some("n2"));

    // The old key moves, then the slot: the node still believes the source
    // owns it, so the next pipeline meets MOVED mid-batch.
    let migrate = [
        "MIGRATE",
        "127.0.0.1",
        &target.port.to_string(),
        "",
        "0",
        "5000",
        "KEYS",
        "{mig}old",
    ];
    source.cmd::<()>(&migrate);
    for m in &cluster.masters {
        m.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target.id()]);
    }
    let after = vec![
        c(&["SET", &elsewhere, "e2"]),
        c(&["APPEND", "{mig}old", "1"]),
        c(&["GET", "{mig}old"]),
        c(&["INCR", "{mig}n"]),
        c(&["GET", &elsewhere]),
        c(&["APPEND", "{mig}old", "2"]),
        c(&["GET", "{mig}old"]),
        c(&["GET", "{mig}n"]),
    ];
    let replies = pipeline(&mut r, &after).await;
    assert_eq!(
        replies,
        vec![
            ok(),
            V::Int(2),
            V::bulk("o1"),
            V::Int(4),
            V::bulk("e2"),
            V::Int(3),
            V::bulk("o12"),
            V::bulk("4"),
        ]
    );
    let direct: Option<String> = target.cmd(&["GET", "{mig}old"]);
    assert_eq!(direct.as_deref(), Some("o12"));

    a.shutdown().await;
}

/// Upstash REST `/pipeline` on the engine: its commands go to the masters in
/// batches too, with replies in order (errors, a refused command and a local
/// command in the middle) and far fewer reads on a master than commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_pipeline_is_batched_and_answers_in_order() {
    const TOKEN: &str = "engine-pipeline-token";
    let cluster = RedisCluster::started().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        engine: Some(cluster.masters[0].url()),
        ..Config::default()
    };
    config.upstash.tokens = vec![TOKEN.into()];
    let server = tidewire_server::start(config)
        .await
        .expect("node starts on the engine");
    let keys = keys_per_master(&cluster, 2);
    let (a, b, c0) = (&keys[0][0], &keys[1][0], &keys[2][0]);
    let body = serde_json::json!([
        ["SET", a, "v1"],
        ["GET", a],
        ["SET", b, "w"],
        ["SET", a, "v2"],
        ["INCR", a],
        ["GET", a],
        ["PING"],
        ["RPUSH", c0, "x", "y"],
        ["LRANGE", c0, "0", "-1"],
        ["GET", b],
    ]);
    let replies = common::rest_post(&server, TOKEN, "/pipeline", body).await;
    let results: Vec<serde_json::Value> = replies
        .as_array()
        .expect("an array of results")
        .iter()
        .map(|r| {
            r.get("result")
                .cloned()
                .unwrap_or_else(|| r["error"].clone())
        })
        .collect();
    assert_eq!(
        results,
        vec![
            serde_json::json!("OK"),
            serde_json::json!("v1"),
            serde_json::json!("OK"),
            serde_json::json!("OK"),
            serde_json::json!("ERR value is not an integer or out of range"),
            serde_json::json!("v2"),
            serde_json::json!("PONG"),
            serde_json::json!(2),
            serde_json::json!(["x", "y"]),
            serde_json::json!("w"),
        ],
        "every result in the request's order"
    );

    let master = &cluster.masters[1];
    let before = total_reads(master);
    let sets: Vec<serde_json::Value> = (0..60)
        .map(|i| serde_json::json!(["SET", &keys[1][i % 2], i.to_string()]))
        .collect();
    let replies = common::rest_post(&server, TOKEN, "/pipeline", serde_json::json!(sets)).await;
    assert_eq!(replies.as_array().map(Vec::len), Some(60));
    assert!(replies
        .as_array()
        .is_some_and(|r| r.iter().all(|r| r["result"] == "OK")));
    let reads = total_reads(master) - before;
    assert!(
        reads < 20,
        "{reads} reads for 60 commands of one REST pipeline"
    );
    server.shutdown().await;
}
