//! Occupancy across Tidewire nodes on one Redis Cluster (`--engine`, issue #25):
//! the channel status from any node and the `[meta]occupancy` events of an
//! attachment that asked for them count the connections, publishers,
//! subscribers and presence members of every node; a killed node stops counting
//! once the survivors reap it (three sweeps without its heartbeat), and a
//! channel nobody is on keeps no occupancy key in the engine.
//!
//! Nodes A and B run in-process; node C is the `tidewire` binary as a child
//! process, so that it can be killed with SIGKILL. Needs `redis-server` and
//! `redis-cli` on the PATH (`./test.sh` installs them).

mod ably_support;
mod common;
mod persistence_support;
mod redis_support;

use ably_support::{action_before, next_action, send, Ws};
use redis_support::RedisCluster;
use serde_json::{json, Value};
use tidewire_engine::key_slot;
use tokio::time::Instant;

/// The API key every node shares (one app on every node).
const KEY: &str = "occapp.k1:0123456789abcdef0123456789abcdef";
/// Every node's sweep period: a node silent for three sweeps is dead.
const SWEEP_MS: u64 = 300;
/// Every node's occupancy debounce.
const DEBOUNCE_MS: u64 = 50;

/// An in-process node on `engine`; `http` is its HTTP address.
async fn node(engine: &str) -> (tidewire_server::Server, String, tempfile::TempDir) {
    ably_support::engine_node(engine, KEY, |config| {
        config.realtime.sweep_interval_ms = SWEEP_MS;
        config.realtime.occupancy_debounce_ms = DEBOUNCE_MS;
    })
    .await
}

/// The `tidewire` binary as a child process on `engine`; its HTTP address.
async fn killable_node(engine: &str, dir: &std::path::Path) -> (persistence_support::Node, String) {
    let toml = format!(
        "engine = \"{engine}\"\n[realtime]\nsweep_interval_ms = {SWEEP_MS}\n\
         occupancy_debounce_ms = {DEBOUNCE_MS}\n\
         [[realtime.keys]]\nkey = \"{KEY}\"\n"
    );
    persistence_support::started_with_toml(dir, toml).await
}

async fn connect(http: &str, query: &str) -> Ws {
    ably_support::connect(http, KEY, query).await.0
}

/// Attaches to `channel` (with `params`, if any), waiting for ATTACHED.
async fn attach_with(ws: &mut Ws, channel: &str, params: Option<Value>) {
    let mut frame = json!({"action": 10, "channel": channel});
    if let Some(p) = params {
        frame["params"] = p;
    }
    send(ws, frame).await;
    next_action(ws, 11).await;
}

/// Enters presence on `channel` (as the connection's clientId), waiting for
/// the ACK.
async fn enter(ws: &mut Ws, channel: &str) {
    ably_support::enter(ws, channel, 0, "here").await;
}

/// The channel status's occupancy metrics, read from `http`.
async fn status_metrics(http: &str, channel: &str) -> Value {
    let status = ably_support::get(http, KEY, &format!("/channels/{channel}")).await;
    status["status"]["occupancy"]["metrics"].clone()
}

/// Metrics with `connections` attachments (each with every mode) and
/// `present` members, each of its own connection.
fn metrics(connections: u64, present: u64) -> Value {
    json!({
        "connections": connections,
        "publishers": connections,
        "subscribers": connections,
        "presenceConnections": present,
        "presenceMembers": present,
        "presenceSubscribers": connections,
        "objectPublishers": 0,
        "objectSubscribers": 0,
    })
}

/// Reads `[meta]occupancy` events on `ws` until one carries `want` (bounded);
/// the last metrics seen.
async fn occupancy_event(ws: &mut Ws, want: &Value) -> Option<Value> {
    let deadline = Instant::now() + common::WAIT;
    let mut last = None;
    while let Some(frame) = action_before(ws, 15, deadline).await {
        for m in frame["messages"].as_array().cloned().unwrap_or_default() {
            if m["name"] != "[meta]occupancy" {
                continue;
            }
            let data: Value =
                serde_json::from_str(m["data"].as_str().expect("json text")).expect("json");
            last = Some(data["metrics"].clone());
        }
        if last.as_ref() == Some(want) {
            break;
        }
    }
    last
}

/// Waits (bounded) until the channel status from every one of `nodes` shows
/// `want`; the metrics each showed last.
async fn status_everywhere(nodes: &[&str], channel: &str, want: &Value) -> Vec<Value> {
    let mut seen = Vec::new();
    for http in nodes {
        let mut last = Value::Null;
        let deadline = Instant::now() + common::WAIT;
        while Instant::now() < deadline {
            last = status_metrics(http, channel).await;
            if &last == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        seen.push(last);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_counts_every_node_and_a_killed_one_stops_counting() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let dc = tempfile::tempdir().expect("temp dir");
    let (nc, hc) = killable_node(&seed, dc.path()).await;
    let (na, ha, _da) = node(&seed).await;
    let (nb, hb, _db) = node(&seed).await;
    let room = "occ:room";

    // A watcher on A asks for occupancy events.
    let mut watcher = connect(&ha, "").await;
    attach_with(&mut watcher, room, Some(json!({"occupancy": "metrics"}))).await;
    assert_eq!(
        occupancy_event(&mut watcher, &metrics(1, 0)).await,
        Some(metrics(1, 0)),
        "its own attach"
    );

    // Attaches and a presence member on B reach the watcher's events.
    let mut bob = connect(&hb, "&clientId=bob").await;
    attach_with(&mut bob, room, None).await;
    enter(&mut bob, room).await;
    let mut carol = connect(&hb, "").await;
    attach_with(&mut carol, room, None).await;
    assert_eq!(
        occupancy_event(&mut watcher, &metrics(3, 1)).await,
        Some(metrics(3, 1)),
        "an event on A counts B's attachments and member"
    );

    // And C's.
    let mut dave = connect(&hc, "&clientId=dave").await;
    attach_with(&mut dave, room, None).await;
    enter(&mut dave, room).await;
    assert_eq!(
        occupancy_event(&mut watcher, &metrics(4, 2)).await,
        Some(metrics(4, 2)),
        "an event on A counts C's too"
    );
    assert_eq!(
        status_everywhere(&[&ha, &hb, &hc], room, &metrics(4, 2)).await,
        vec![metrics(4, 2); 3],
        "the channel status from every node counts every node"
    );

    // The channel list of a node lists a channel active on another node only.
    let mut solo = connect(&hb, "").await;
    attach_with(&mut solo, "occ:only-on-b", None).await;
    let listed = common::eventually(|| async {
        let names = ably_support::get(&ha, KEY, "/channels?by=id&prefix=occ:").await;
        names
            .as_array()
            .is_some_and(|n| n.iter().any(|c| c == "occ:only-on-b"))
    })
    .await;
    assert!(listed, "node A lists the channel attached on node B alone");
    drop(solo);

    // C dies without a word: once reaped, it counts no more.
    tokio::task::spawn_blocking(move || nc.kill9())
        .await
        .expect("killed");
    drop(dave);
    assert_eq!(
        occupancy_event(&mut watcher, &metrics(3, 1)).await,
        Some(metrics(3, 1)),
        "the event on A leaves the dead node out"
    );
    assert_eq!(
        status_everywhere(&[&ha, &hb], room, &metrics(3, 1)).await,
        vec![metrics(3, 1); 2],
        "so does the status"
    );

    // A detach on B (which makes bob's member leave) lowers the totals.
    send(&mut bob, json!({"action": 12, "channel": room})).await;
    next_action(&mut bob, 13).await;
    assert_eq!(
        occupancy_event(&mut watcher, &metrics(2, 0)).await,
        Some(metrics(2, 0)),
        "a detach on B"
    );

    // Nobody left: the channel keeps no occupancy key in the engine.
    for ws in [&mut carol, &mut watcher] {
        send(ws, json!({"action": 12, "channel": room})).await;
        next_action(ws, 13).await;
    }
    assert_eq!(
        status_everywhere(&[&ha, &hb], room, &metrics(0, 0)).await,
        vec![metrics(0, 0); 2],
        "nobody on the channel"
    );
    let tag = format!("{}:{room}", room.len());
    let key = format!("tw:rt:app:6:occapp:occupancy:{{{tag}}}:counts");
    let owner = cluster.owner_of(key_slot(tag.as_bytes()));
    let gone = common::eventually(|| async { owner.cmd::<i64>(&["EXISTS", &key]) == 0 }).await;
    assert!(gone, "{key} is gone");
    for s in [na, nb] {
        s.shutdown().await;
    }
}
