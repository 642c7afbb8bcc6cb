//! `CLIENT TRACKING` with `--engine`: two Tidewire nodes over one 3-master
//! Redis Cluster. A tracking client of one node hears of keys changed on the
//! engine by the other node or by a client of the engine itself: default mode
//! for the keys it read (on every master), BCAST by prefix, a RESP2 client
//! through REDIRECT to a `__redis__:invalidate` subscriber, and FLUSHALL as a
//! nil invalidation.
//!
//! Absence is checked without timing: after a change that must not be
//! announced, a change that must follows on the same master (the engine
//! announces a master's changes in order), and the next push must be that one.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod common;
mod redis_support;

use common::{bulks, Raw, V};
use redis_support::RedisCluster;
use tidewire_engine::key_slot;
use tidewire_server::Server;

fn ok() -> V {
    V::Simple("OK".into())
}

fn invalidate(keys: &[&str]) -> V {
    V::Push(vec![V::bulk("invalidate"), bulks(keys)])
}

/// A key, under `prefix`, that hashes into the slot range of each master.
fn key_per_master(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    cluster
        .masters
        .iter()
        .map(|m| {
            (0..10_000)
                .map(|i| format!("{prefix}{i}"))
                .find(|k| cluster.owner_of(key_slot(k.as_bytes())).port == m.port)
                .expect("a key for every master")
        })
        .collect()
}

/// A RESP3 connection to `server`.
async fn resp3(server: &Server) -> Raw {
    let mut c = Raw::connect(server).await;
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, V::Map(_)));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_clients_hear_of_changes_on_the_engine() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (a, _da) = common::engine_node(&seed).await;
    let (b, _db) = common::engine_node(&seed).await;
    let mut writer = Raw::connect(&a).await;

    // Default mode on node B: the keys it read, on every master.
    let mut t = resp3(&b).await;
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "ON"]).await, ok());
    for key in key_per_master(&cluster, "k") {
        assert_eq!(t.cmd(&["GET", &key]).await, V::Nil);
        assert_eq!(writer.cmd(&["SET", &key, "1"]).await, ok());
        assert_eq!(
            t.read().await,
            invalidate(&[&key]),
            "written through node A"
        );
        // Told once, forgotten until read again.
        assert_eq!(t.cmd(&["GET", &key]).await, V::bulk("1"));
        let owner = cluster.owner_of(key_slot(key.as_bytes()));
        let _: () = owner.cmd(&["SET", &key, "2"]);
        assert_eq!(t.read().await, invalidate(&[&key]), "written on the engine");
    }
    // A key it did not read is not announced (nor one already announced): the
    // next push is for the key written after them, on the same master.
    assert_eq!(t.cmd(&["GET", "{s}read"]).await, V::Nil);
    assert_eq!(t.cmd(&["GET", "{s}told"]).await, V::Nil);
    assert_eq!(writer.cmd(&["SET", "{s}told", "1"]).await, ok());
    assert_eq!(t.read().await, invalidate(&["{s}told"]));
    assert_eq!(writer.cmd(&["SET", "{s}unread", "1"]).await, ok());
    assert_eq!(writer.cmd(&["SET", "{s}told", "2"]).await, ok());
    assert_eq!(writer.cmd(&["SET", "{s}read", "1"]).await, ok());
    assert_eq!(t.read().await, invalidate(&["{s}read"]));

    // Reads in a pipeline (forwarded as one batch) and in MULTI … EXEC.
    let mut pipeline = common::encode(&["GET", "{p}a"]);
    pipeline.extend(common::encode(&["GET", "{p}b"]));
    t.send_raw(&pipeline).await;
    assert_eq!(t.read().await, V::Nil);
    assert_eq!(t.read().await, V::Nil);
    assert_eq!(writer.cmd(&["SET", "{p}b", "1"]).await, ok());
    assert_eq!(t.read().await, invalidate(&["{p}b"]));
    assert_eq!(t.cmd(&["MULTI"]).await, ok());
    assert_eq!(t.cmd(&["GET", "{m}k"]).await, V::Simple("QUEUED".into()));
    assert_eq!(t.cmd(&["EXEC"]).await, V::Array(vec![V::Nil]));
    assert_eq!(writer.cmd(&["SET", "{m}k", "1"]).await, ok());
    assert_eq!(t.read().await, invalidate(&["{m}k"]));

    // BCAST with a prefix: changes under it, on any master, whoever read them.
    let mut bcast = resp3(&b).await;
    assert_eq!(
        bcast
            .cmd(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"])
            .await,
        ok()
    );
    let users = key_per_master(&cluster, "user:");
    for user in &users {
        let other = format!("other:{{{user}}}");
        assert_eq!(writer.cmd(&["SET", &other, "x"]).await, ok());
        assert_eq!(writer.cmd(&["SET", user, "x"]).await, ok());
        assert_eq!(bcast.read().await, invalidate(&[user]));
    }
    let owner = cluster.owner_of(key_slot(users[1].as_bytes()));
    let _: () = owner.cmd(&["SET", &users[1], "y"]);
    assert_eq!(bcast.read().await, invalidate(&[&users[1]]));

    // RESP2 with REDIRECT to a client subscribed to __redis__:invalidate.
    let mut sub = Raw::connect(&b).await;
    let V::Int(sub_id) = sub.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID answers an integer");
    };
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "__redis__:invalidate"]).await,
        V::Array(vec![
            V::bulk("subscribe"),
            V::bulk("__redis__:invalidate"),
            V::Int(1)
        ])
    );
    let mut r2 = Raw::connect(&b).await;
    let id = sub_id.to_string();
    assert_eq!(
        r2.cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]).await,
        ok()
    );
    assert_eq!(r2.cmd(&["GET", "{r}k"]).await, V::Nil);
    assert_eq!(writer.cmd(&["SET", "{r}k", "1"]).await, ok());
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("message"),
            V::bulk("__redis__:invalidate"),
            bulks(&["{r}k"])
        ])
    );

    // FLUSHALL on the engine: every tracking client drops everything (one nil
    // per master, as each master flushes). `{p}a` was read and not announced.
    assert_eq!(writer.cmd(&["FLUSHALL"]).await, ok());
    let flushed = V::Push(vec![V::bulk("invalidate"), V::Nil]);
    assert_eq!(t.read().await, flushed);
    assert_eq!(bcast.read().await, flushed);
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("message"),
            V::bulk("__redis__:invalidate"),
            V::Nil
        ])
    );
}

/// The id (on `node`) of the node's listening connection there: the one
/// client with tracking on.
fn listener_id(node: &redis_support::Node) -> String {
    let list: String = node.cmd(&["CLIENT", "LIST"]);
    list.lines()
        .find(|line| {
            line.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .expect("a client with tracking on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_makes_tracking_clients_drop_their_caches() {
    let cluster = RedisCluster::started().await;
    let (a, _da) = common::engine_node(&cluster.masters[0].url()).await;
    let mut writer = Raw::connect(&a).await;
    let mut t = resp3(&a).await;
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "ON"]).await, ok());
    assert_eq!(t.cmd(&["GET", "k"]).await, V::Nil);
    let owner = cluster.owner_of(key_slot(b"k"));
    let _: i64 = owner.cmd(&["CLIENT", "KILL", "ID", &listener_id(owner)]);
    let flushed = V::Push(vec![V::bulk("invalidate"), V::Nil]);
    assert_eq!(t.read().await, flushed, "changes may have been missed");

    // Listened to again (by the periodic check or before this read), with one
    // more nil then; after it, reads are announced as before.
    t.send(&["GET", "k"]).await;
    let mut seen = Vec::new();
    while !seen.contains(&V::Nil) || !seen.contains(&flushed) {
        seen.push(t.read().await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(writer.cmd(&["SET", "k", "1"]).await, ok());
    assert_eq!(t.read().await, invalidate(&["k"]));
}
