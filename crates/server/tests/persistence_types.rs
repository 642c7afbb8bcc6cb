//! Restart round trips for every data type: the full dataset (values, TTLs as
//! absolute times, several databases) is compared before and after a restart that
//! loads it from (a) the AOF as written, (b) the AOF after BGREWRITEAOF (base file),
//! (c) a snapshot only (`appendonly no`). Types whose commands this build does not
//! know yet are skipped with a message.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tidewire_server::{Config, Server};

async fn boot(dir: &std::path::Path, params: &[(&str, &str)]) -> Server {
    let config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.to_path_buf(),
        redis: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Config::default()
    };
    tidewire_server::start(config).await.unwrap()
}

async fn conn(s: &Server) -> MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", s.resp_addr))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn known(c: &mut MultiplexedConnection, args: &[&str]) -> bool {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<redis::Value>(c).await {
        Ok(_) => true,
        Err(e) if e.to_string().contains("unknown command") => {
            eprintln!(
                "SKIPPED: '{}' is not implemented in this build yet",
                args[0]
            );
            false
        }
        Err(e) => panic!("{args:?}: {e}"),
    }
}

const NAMES: &[&str] = &[
    "s:plain",
    "s:bin",
    "s:ttl",
    "s:px",
    "s:n",
    "s:gone",
    "h",
    "h2",
    "h:ttl",
    "h:ttlbig",
    "j",
    "set",
    "z",
    "l",
    "after",
    "x",
    "x:empty",
    "x:trimmed",
];

/// Runs a command whose reply does not matter.
async fn run(c: &mut MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(c).await.unwrap();
}

/// XREADGROUP of group `g` on stream `x`.
async fn read_group(c: &mut MultiplexedConnection, consumer: &str, count: &str, id: &str) {
    run(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            consumer,
            "COUNT",
            count,
            "STREAMS",
            "x",
            id,
        ],
    )
    .await;
}

/// Streams with groups, consumers, pending entries, deletions and trims.
async fn populate_streams(c: &mut MultiplexedConnection) {
    run(c, &["XADD", "x", "1-1", "a", "1"]).await;
    run(c, &["XADD", "x", "*", "b", "2", "c", "3"]).await;
    for i in 0..30 {
        run(c, &["XADD", "x", "*", "n", &i.to_string()]).await;
    }
    run(c, &["XDEL", "x", "1-1"]).await;
    run(c, &["XGROUP", "CREATE", "x", "g", "0"]).await;
    read_group(c, "alice", "3", ">").await;
    read_group(c, "bob", "2", ">").await;
    read_group(c, "alice", "1", "0").await;
    run(
        c,
        &["XAUTOCLAIM", "x", "g", "carol", "0", "0", "COUNT", "1"],
    )
    .await;
    run(
        c,
        &["XGROUP", "CREATE", "x", "late", "$", "ENTRIESREAD", "5"],
    )
    .await;
    run(c, &["XGROUP", "CREATECONSUMER", "x", "late", "idle"]).await;
    run(c, &["XGROUP", "CREATE", "x:empty", "g", "$", "MKSTREAM"]).await;
    for i in 0..250 {
        run(
            c,
            &[
                "XADD",
                "x:trimmed",
                "MAXLEN",
                "~",
                "120",
                "*",
                "f",
                &i.to_string(),
            ],
        )
        .await;
    }
    run(c, &["XTRIM", "x:trimmed", "MINID", "0-1"]).await;
    run(c, &["XSETID", "x:trimmed", "99999999999999-5"]).await;
}

/// What a stream holds, minus what a restart may legitimately change (idle
/// times, node layout).
async fn render_stream(c: &mut MultiplexedConnection, k: &[u8]) -> String {
    let entries: redis::Value = redis::cmd("XRANGE")
        .arg(k)
        .arg("-")
        .arg("+")
        .query_async(c)
        .await
        .unwrap();
    let info: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(k)
        .query_async(c)
        .await
        .unwrap();
    let info: Vec<String> = info
        .chunks(2)
        .filter(|kv| !format!("{:?}", kv[0]).contains("radix"))
        .map(|kv| format!("{kv:?}"))
        .collect();
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(k)
        .query_async(c)
        .await
        .unwrap();
    let mut pending = Vec::new();
    let names: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(k)
        .query_async(c)
        .await
        .unwrap();
    for g in names {
        let name: String = redis::from_redis_value(&g[1]).unwrap();
        let p: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
            .arg(k)
            .arg(&name)
            .arg("-")
            .arg("+")
            .arg(1000)
            .query_async(c)
            .await
            .unwrap();
        let consumers: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(k)
            .arg(&name)
            .query_async(c)
            .await
            .unwrap();
        let consumers: Vec<String> = consumers
            .iter()
            .map(|c| format!("{:?} {:?}", c[1], c[3]))
            .collect();
        pending.push(format!(
            "{:?} {consumers:?}",
            p.into_iter()
                .map(|(id, who, _, n)| (id, who, n))
                .collect::<Vec<_>>()
        ));
    }
    format!("{entries:?} {info:?} {groups:?} {pending:?}")
}

async fn populate(c: &mut MultiplexedConnection) {
    let far = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000)
        .to_string();
    for db in ["0", "3"] {
        let _: () = redis::cmd("SELECT").arg(db).query_async(c).await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("s:plain")
            .arg("v")
            .query_async(c)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("s:bin")
            .arg(&b"a\r\nb\x00c"[..])
            .query_async(c)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("s:ttl")
            .arg("x")
            .arg("PXAT")
            .arg(&far)
            .query_async(c)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("s:px")
            .arg("y")
            .arg("PX")
            .arg(500_000)
            .query_async(c)
            .await
            .unwrap();
        let _: i64 = redis::cmd("INCRBY")
            .arg("s:n")
            .arg(41)
            .query_async(c)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("s:gone")
            .arg("z")
            .arg("PX")
            .arg(1)
            .query_async(c)
            .await
            .unwrap();
        if known(c, &["HSET", "h", "f1", "v1", "f2", "v2"]).await {
            known(c, &["PEXPIREAT", "h", &far]).await;
            known(c, &["HSET", "h2", "a", "1"]).await;
        }
        // Hash fields with TTLs (absolute times survive; a field already due is
        // gone on both sides) and a JSON document.
        if known(c, &["HSET", "h:ttl", "keep", "1", "ttl", "2", "soon", "3"]).await {
            known(c, &["HPEXPIREAT", "h:ttl", &far, "FIELDS", "1", "ttl"]).await;
            known(c, &["HPEXPIRE", "h:ttl", "1", "FIELDS", "1", "soon"]).await;
            // Past hash-max-listpack-entries (128): the map form, TTLs at two times.
            let mut big = vec!["HSET".to_string(), "h:ttlbig".to_string()];
            for i in 0..130 {
                big.push(format!("f{i}"));
                big.push(format!("v{i}"));
            }
            let big: Vec<&str> = big.iter().map(String::as_str).collect();
            known(c, &big).await;
            let later = (far.parse::<u64>().unwrap() + 1000).to_string();
            known(
                c,
                &["HPEXPIREAT", "h:ttlbig", &far, "FIELDS", "2", "f0", "f7"],
            )
            .await;
            known(
                c,
                &["HPEXPIREAT", "h:ttlbig", &later, "FIELDS", "1", "f129"],
            )
            .await;
        }
        known(
            c,
            &[
                "JSON.SET",
                "j",
                "$",
                r#"{"a":[1,2.5,"x"],"b":{"c":null,"d":true}}"#,
            ],
        )
        .await;
        if known(c, &["SADD", "set", "a", "b", "c", "1", "2"]).await {
            known(c, &["SREM", "set", "b"]).await;
        }
        if known(c, &["ZADD", "z", "1", "a", "2.5", "b", "-3", "c"]).await {
            known(c, &["ZINCRBY", "z", "10", "a"]).await;
        }
        if known(c, &["RPUSH", "l", "a", "b", "c", "a"]).await {
            known(c, &["LPUSH", "l", "first"]).await;
            known(c, &["PEXPIREAT", "l", &far]).await;
        }
        populate_streams(c).await;
    }
    let _: () = redis::cmd("SELECT").arg(0).query_async(c).await.unwrap();
}

/// Every key of every database: (db, key) -> (type, value rendering, expire time).
async fn dump(c: &mut MultiplexedConnection) -> BTreeMap<(u8, Vec<u8>), (String, String, i64)> {
    let mut out = BTreeMap::new();
    for db in 0..16u8 {
        let _: () = redis::cmd("SELECT").arg(db).query_async(c).await.unwrap();
        // KEYS/SCAN belong to another branch: enumerate the names this test writes,
        // and check DBSIZE so that nothing else is there.
        let mut found = 0;
        for k in NAMES.iter().map(|k| k.as_bytes().to_vec()) {
            let n: i64 = redis::cmd("EXISTS").arg(&k).query_async(c).await.unwrap();
            if n == 0 {
                continue;
            }
            found += 1;
            let t: String = redis::cmd("TYPE").arg(&k).query_async(c).await.unwrap();
            let v = match t.as_str() {
                "string" => format!(
                    "{:?}",
                    redis::cmd("GET")
                        .arg(&k)
                        .query_async::<Vec<u8>>(c)
                        .await
                        .unwrap()
                ),
                "hash" => {
                    let m: BTreeMap<String, String> =
                        redis::cmd("HGETALL").arg(&k).query_async(c).await.unwrap();
                    let mut ttls = Vec::new();
                    for f in m.keys() {
                        let t: Vec<i64> = redis::cmd("HPEXPIRETIME")
                            .arg(&k)
                            .arg("FIELDS")
                            .arg(1)
                            .arg(f)
                            .query_async(c)
                            .await
                            .unwrap();
                        ttls.push(t);
                    }
                    // The encoding too: a restart must bring a hash back compact
                    // (`listpack`, `listpackex`) or not as it was.
                    let enc: String = redis::cmd("OBJECT")
                        .arg("ENCODING")
                        .arg(&k)
                        .query_async(c)
                        .await
                        .unwrap();
                    format!("{enc} {m:?} {ttls:?}")
                }
                "ReJSON-RL" => {
                    let v: String = redis::cmd("JSON.GET").arg(&k).query_async(c).await.unwrap();
                    v
                }
                "set" => {
                    let mut m: Vec<String> =
                        redis::cmd("SMEMBERS").arg(&k).query_async(c).await.unwrap();
                    m.sort();
                    format!("{m:?}")
                }
                "zset" => {
                    let m: Vec<String> = redis::cmd("ZRANGE")
                        .arg(&k)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(c)
                        .await
                        .unwrap();
                    format!("{m:?}")
                }
                "list" => {
                    let m: Vec<String> = redis::cmd("LRANGE")
                        .arg(&k)
                        .arg(0)
                        .arg(-1)
                        .query_async(c)
                        .await
                        .unwrap();
                    format!("{m:?}")
                }
                "stream" => render_stream(c, &k).await,
                other => panic!("unexpected type {other}"),
            };
            let exp: i64 = redis::cmd("PEXPIRETIME")
                .arg(&k)
                .query_async(c)
                .await
                .unwrap();
            out.insert((db, k), (t, v, exp));
        }
        // After the EXISTS above, expired keys are gone from DBSIZE too.
        let dbsize: usize = redis::cmd("DBSIZE").query_async(c).await.unwrap();
        assert_eq!(found, dbsize, "db {db} holds keys this test did not write");
    }
    let _: () = redis::cmd("SELECT").arg(0).query_async(c).await.unwrap();
    out
}

/// Waits (bounded) until the server's first AOF rewrite has finished.
async fn first_rewrite_done(c: &mut MultiplexedConnection) {
    for _ in 0..500 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(c)
            .await
            .unwrap();
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrites:1") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A small hash with field TTLs is compact (`listpackex`, as Redis 7.4), one past
/// `hash-max-listpack-entries` a `hashtable`; both keep their TTLs.
fn assert_hash_ttl_encodings(data: &BTreeMap<(u8, Vec<u8>), (String, String, i64)>) {
    for db in [0, 3] {
        let small = &data[&(db, b"h:ttl".to_vec())].1;
        assert!(small.starts_with("listpackex "), "{small}");
        assert!(!small.contains("soon"), "a due field is gone: {small}");
        let big = &data[&(db, b"h:ttlbig".to_vec())].1;
        assert!(big.starts_with("hashtable "), "{big}");
        assert_eq!(big.matches("[-1]").count(), 127, "{big}");
    }
}

async fn round_trip(params: &[(&str, &str)], rewrite: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let s = boot(tmp.path(), params).await;
    let mut c = conn(&s).await;
    populate(&mut c).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = dump(&mut c).await;
    assert!(before.len() >= 10, "{before:?}");
    assert!(!before.contains_key(&(0, b"s:gone".to_vec())));
    assert_hash_ttl_encodings(&before);
    if rewrite {
        let r: String = redis::cmd("BGREWRITEAOF")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(r, "Background append only file rewriting started");
        first_rewrite_done(&mut c).await;
        // Written after the rewrite: lands in the new incremental file.
        let _: () = redis::cmd("SET")
            .arg("after")
            .arg("rewrite")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let before = dump(&mut c).await;
    drop(c);
    s.shutdown().await;
    let s = boot(tmp.path(), params).await;
    let mut c = conn(&s).await;
    let after = dump(&mut c).await;
    assert_eq!(before, after);
    assert_hash_ttl_encodings(&after);
    drop(c);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_aof_keeps_every_type() {
    round_trip(&[("appendonly", "yes"), ("save", "")], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_rewritten_aof_keeps_every_type() {
    round_trip(&[("appendonly", "yes"), ("save", "")], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_keeps_every_type() {
    round_trip(&[("appendonly", "no"), ("save", "3600 1")], false).await;
}

/// DEBUG RELOAD (save, empty, load the snapshot back) and DEBUG LOADAOF (empty,
/// load the AOF back) keep every type, and what they replay is not logged again:
/// the AOF's size is unchanged (but for a LOADAOF's cut) and a restart from it gives
/// the same dataset (a doubled log would double the lists).
async fn debug_round_trip(sub: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let params = [
        ("appendonly", "yes"),
        ("save", ""),
        ("enable-debug-command", "yes"),
    ];
    let s = boot(tmp.path(), &params).await;
    let mut c = conn(&s).await;
    populate(&mut c).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = dump(&mut c).await;
    let digest = |c: &mut MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            redis::cmd("DEBUG")
                .arg("DIGEST")
                .query_async::<String>(&mut c)
                .await
                .unwrap()
        }
    };
    let aof_size = |c: &mut MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query_async(&mut c)
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("aof_current_size:"))
                .unwrap()
                .trim()
                .to_string()
        }
    };
    let digest_before = digest(&mut c).await;
    let size_before = aof_size(&mut c).await;
    let r: String = redis::cmd("DEBUG")
        .arg(sub)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(r, "OK");
    assert_eq!(dump(&mut c).await, before);
    assert_eq!(digest(&mut c).await, digest_before);
    if sub == "RELOAD" {
        assert_eq!(aof_size(&mut c).await, size_before);
    }
    drop(c);
    s.shutdown().await;
    let s = boot(tmp.path(), &params).await;
    let mut c = conn(&s).await;
    assert_eq!(dump(&mut c).await, before);
    drop(c);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_reload_keeps_every_type_and_logs_nothing() {
    debug_round_trip("RELOAD").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_loadaof_keeps_every_type_and_logs_nothing() {
    debug_round_trip("LOADAOF").await;
}

/// The round trips above would pass if RELOAD or LOADAOF did nothing: here a key
/// written after the files were made must be gone once they are loaded back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_reload_and_loadaof_load_what_is_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [
        ("appendonly", "no"),
        ("save", ""),
        ("enable-debug-command", "yes"),
    ];
    let s = boot(tmp.path(), &params).await;
    let mut c = conn(&s).await;
    let run = |c: &MultiplexedConnection, args: &'static [&'static str]| {
        let mut c = c.clone();
        async move {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query_async::<redis::Value>(&mut c).await.unwrap()
        }
    };
    let exists = |c: &MultiplexedConnection, key: &'static str| {
        let mut c = c.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };
    run(&c, &["SET", "kept", "1"]).await;
    run(&c, &["DEBUG", "RELOAD"]).await; // saves the snapshot with `kept`
    run(&c, &["SET", "after-save", "1"]).await;
    run(&c, &["DEBUG", "RELOAD", "NOSAVE"]).await;
    assert_eq!(exists(&c, "kept").await, 1);
    assert_eq!(
        exists(&c, "after-save").await,
        0,
        "RELOAD NOSAVE loaded the file"
    );

    run(&c, &["BGREWRITEAOF"]).await;
    first_rewrite_done(&mut c).await;
    run(&c, &["SET", "after-rewrite", "1"]).await;
    run(&c, &["DEBUG", "LOADAOF"]).await;
    assert_eq!(exists(&c, "kept").await, 1);
    assert_eq!(
        exists(&c, "after-rewrite").await,
        0,
        "LOADAOF loaded the files"
    );
    drop(c);
    s.shutdown().await;
}
