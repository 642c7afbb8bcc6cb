//! Three Tidewire nodes on one Redis Cluster (`--engine`) behave as one realtime
//! deployment: a REST publish on one node reaches WebSocket subscribers on the
//! others in order (JSON and msgpack); history reads the same from every node; presence entered on
//! one node is listed on another, its events reach presence subscribers on
//! the others, an attach there syncs it and its presence history reads the
//! same there; an idempotent publish offered on two nodes is
//! delivered once; a message published through one node is updated through
//! another, and annotated through two with one summary; a connection resumes on another node with what it missed; a node
//! whose subscriber connection to the engine was lost delivers what was
//! published meanwhile; the Redis pub/sub bridge spans the nodes.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod ably_support;
mod common;
mod redis_support;

use std::time::Duration;

use ably_support::{attach, data_of, messages_until, next_action, send, Ws};
use futures_util::StreamExt;
use redis_support::RedisCluster;
use serde_json::{json, Value};
use tidewire_server::Server;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The API key every node shares (one app on every node).
const KEY: &str = "scaleapp.k1:0123456789abcdef0123456789abcdef";

async fn node(engine: &str) -> (Server, tempfile::TempDir) {
    let (server, _, dir) = ably_support::engine_node(engine, KEY, |config| {
        config.realtime.mutable_messages = vec!["scale:mutable".into()];
    })
    .await;
    (server, dir)
}

fn auth() -> String {
    ably_support::auth(KEY)
}

async fn post_messages(server: &Server, channel: &str, body: Value) {
    ably_support::post(&server.http_addr.to_string(), KEY, channel, body).await
}

/// A REST update, delete or append (`body.action`) of message `serial`.
async fn patch_message(server: &Server, channel: &str, serial: &str, body: Value) {
    let r = reqwest::Client::new()
        .patch(format!(
            "http://{}/channels/{channel}/messages/{serial}",
            server.http_addr
        ))
        .header("Authorization", auth())
        .json(&body)
        .send()
        .await
        .expect("REST PATCH");
    assert!(
        r.status().is_success(),
        "{body} on {}: {}",
        server.http_addr,
        r.status()
    );
}

async fn get(server: &Server, path: &str) -> Value {
    ably_support::get(&server.http_addr.to_string(), KEY, path).await
}

/// A WebSocket client of `server`, connected (optionally with a clientId).
async fn connect(server: &Server, client_id: Option<&str>) -> Ws {
    let query = client_id
        .map(|id| format!("&clientId={id}"))
        .unwrap_or_default();
    ably_support::connect(&server.http_addr.to_string(), KEY, &query)
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_are_one_realtime_deployment() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (n1, _d1) = node(&seed).await;
    let (n2, _d2) = node(&seed).await;
    let (n3, _d3) = node(&seed).await;

    // Fan-out: a REST publish on node 1 reaches subscribers on nodes 2 and 3,
    // in order.
    let channel = "scale:orders";
    let mut on2 = connect(&n2, None).await;
    let mut on3 = connect(&n3, None).await;
    let (mut packed3, _) =
        ably_support::connect_as(&n3.http_addr.to_string(), KEY, "msgpack", "").await;
    attach(&mut on2, channel).await;
    attach(&mut on3, channel).await;
    ably_support::attach_msgpack(&mut packed3, channel).await;
    let sent: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for data in &sent {
        post_messages(&n1, channel, json!({"name": "order", "data": data})).await;
    }
    for (ws, node) in [
        (&mut on2, "node 2"),
        (&mut on3, "node 3"),
        (&mut packed3, "node 3 (msgpack)"),
    ] {
        let got = messages_until(ws, "m4").await;
        assert_eq!(
            data_of(&got),
            sent,
            "{node} receives node 1's publishes in order"
        );
        let serials: Vec<&str> = got.iter().filter_map(|m| m["serial"].as_str()).collect();
        let mut sorted = serials.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            serials.len(),
            sent.len(),
            "{node}: every message has a serial"
        );
        assert_eq!(serials, sorted, "{node}: serials increase");
    }

    // History: the same page from every node.
    let path = format!("/channels/{channel}/messages?direction=forwards");
    let from1 = get(&n1, &path).await;
    assert_eq!(
        data_of(from1.as_array().expect("a page")),
        sent,
        "node 1's history"
    );
    assert_eq!(
        get(&n2, &path).await,
        from1,
        "node 2 reads the same history"
    );
    assert_eq!(
        get(&n3, &path).await,
        from1,
        "node 3 reads the same history"
    );

    // Presence: entered on node 1, listed on node 2; its event reaches a
    // presence subscriber on node 3; an attach on node 2 syncs it.
    let room = "scale:room";
    let mut watcher = connect(&n3, None).await;
    attach(&mut watcher, room).await;
    let mut alice = connect(&n1, Some("alice")).await;
    attach(&mut alice, room).await;
    ably_support::enter(&mut alice, room, 0, "hello").await;
    let listed = common::eventually(|| async {
        let members = get(&n2, &format!("/channels/{room}/presence")).await;
        members
            .as_array()
            .is_some_and(|m| m.len() == 1 && m[0]["clientId"] == "alice")
    })
    .await;
    assert!(listed, "node 2 lists the member entered on node 1");
    let event = next_action(&mut watcher, 14).await;
    assert_eq!(
        (
            event["presence"][0]["action"].as_u64(),
            event["presence"][0]["clientId"].as_str()
        ),
        (Some(2), Some("alice")),
        "node 3's presence subscriber gets node 1's ENTER: {event}"
    );
    // Presence history: node 1's ENTER, read from node 2.
    let history = get(&n2, &format!("/channels/{room}/presence/history")).await;
    assert_eq!(
        history.as_array().map(|events| events
            .iter()
            .map(|e| (
                e["action"].as_u64(),
                e["clientId"].as_str(),
                e["data"].as_str()
            ))
            .collect::<Vec<_>>()),
        Some(vec![(Some(2), Some("alice"), Some("hello"))]),
        "node 2 reads the presence history node 1 made: {history}"
    );
    let mut late = connect(&n2, None).await;
    send(&mut late, json!({"action": 10, "channel": room})).await;
    let sync = next_action(&mut late, 16).await;
    assert_eq!(
        sync["presence"].as_array().map(|m| m
            .iter()
            .filter_map(|p| p["clientId"].as_str())
            .collect::<Vec<_>>()),
        Some(vec!["alice"]),
        "an attach on node 2 syncs the member node 1 holds: {sync}"
    );

    // Idempotent publish: the same message id on nodes 1 and 2 is delivered once.
    let idem = "scale:idem";
    attach(&mut on3, idem).await;
    let once = json!({"id": "order-42", "name": "order", "data": "once"});
    post_messages(&n1, idem, once.clone()).await;
    post_messages(&n2, idem, once).await;
    post_messages(&n2, idem, json!({"name": "order", "data": "end"})).await;
    let got = messages_until(&mut on3, "end").await;
    assert_eq!(
        data_of(&got),
        vec!["once", "end"],
        "an id offered on two nodes is delivered once"
    );
    let history = get(
        &n3,
        &format!("/channels/{idem}/messages?direction=forwards"),
    )
    .await;
    assert_eq!(
        data_of(history.as_array().expect("a page")),
        vec!["once", "end"],
        "and kept once"
    );

    // A message published through node 1 can be updated through node 2 (its
    // original is in the shared history).
    let doc = "scale:mutable";
    post_messages(&n1, doc, json!({"name": "doc", "data": "draft"})).await;
    let page = get(&n2, &format!("/channels/{doc}/messages")).await;
    let serial = page[0]["serial"].as_str().expect("a serial").to_owned();
    patch_message(&n2, doc, &serial, json!({"action": 1, "data": "final"})).await;
    let latest = get(&n2, &format!("/channels/{doc}/messages/{serial}")).await;
    assert_eq!(latest["data"], "final", "node 2 reads its update");
    // An append through node 1 builds on node 2's update, and every node lists
    // every version.
    patch_message(&n1, doc, &serial, json!({"action": 5, "data": "!"})).await;
    for (n, who) in [(&n1, "node 1"), (&n3, "node 3")] {
        let latest = get(n, &format!("/channels/{doc}/messages/{serial}")).await;
        assert_eq!(
            latest["data"], "final!",
            "{who} reads the append on node 2's update"
        );
        let versions = get(n, &format!("/channels/{doc}/messages/{serial}/versions")).await;
        assert_eq!(
            data_of(versions.as_array().expect("a page of versions")),
            vec!["draft", "final", "final!"],
            "{who} lists every version: {versions}"
        );
    }

    // Annotations through nodes 1 and 2, the first before node 3 has anyone
    // on the channel: node 3's subscriber gets a summary counting both, and
    // every node lists both.
    let mut watcher3 = None;
    for (n, name) in [(&n1, "like"), (&n2, "love")] {
        if name == "love" {
            let mut ws = connect(&n3, None).await;
            attach(&mut ws, doc).await;
            watcher3 = Some(ws);
        }
        let r = reqwest::Client::new()
            .post(format!(
                "http://{}/channels/{doc}/messages/{serial}/annotations",
                n.http_addr
            ))
            .header("Authorization", auth())
            .json(&json!({"type": "reaction:distinct.v1", "name": name}))
            .send()
            .await
            .expect("REST annotation");
        assert!(r.status().is_success(), "annotation: {}", r.status());
    }
    let mut watcher3 = watcher3.expect("attached on node 3");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let mut summary = Value::Null;
    while summary["like"].is_null() || summary["love"].is_null() {
        let frame = ably_support::action_before(&mut watcher3, 15, deadline)
            .await
            .unwrap_or_else(|| panic!("a summary counting both, last: {summary}"));
        if let Some(s) =
            frame["messages"][0]["annotations"]["summary"]["reaction:distinct.v1"].as_object()
        {
            summary = Value::Object(s.clone());
        }
    }
    for n in [&n1, &n3] {
        let listed = get(n, &format!("/channels/{doc}/messages/{serial}/annotations")).await;
        let names: Vec<&str> = listed
            .as_array()
            .map(|l| l.iter().filter_map(|a| a["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, vec!["like", "love"], "listed from {}", n.http_addr);
    }

    // Nothing left over on node 2's subscriber.
    let extra = tokio::time::timeout(Duration::from_millis(200), on2.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(WsMessage::Text(ref t)))) if t.contains("\"action\":15")),
        "no message delivered twice: {extra:?}"
    );
    for s in [n1, n2, n3] {
        s.shutdown().await;
    }
}

/// A connection served by node 1 resumes on node 3 after its transport dropped:
/// same connectionId, and the messages published meanwhile (through node 2) are
/// replayed from the shared history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_resumes_on_another_node() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (n1, _d1) = node(&seed).await;
    let (n2, _d2) = node(&seed).await;
    let (n3, _d3) = node(&seed).await;
    let channel = "scale:resume";

    let (mut ws, connected) =
        ably_support::connect(&n1.http_addr.to_string(), KEY, "&clientId=res").await;
    let id = connected["connectionId"].as_str().expect("id").to_owned();
    let key = connected["connectionDetails"]["connectionKey"]
        .as_str()
        .expect("key")
        .to_owned();
    attach(&mut ws, channel).await;
    post_messages(&n1, channel, json!({"data": "seen"})).await;
    let seen = next_action(&mut ws, 15).await;
    let channel_serial = seen["channelSerial"].as_str().expect("serial").to_owned();
    drop(ws);
    for i in 0..3 {
        post_messages(&n2, channel, json!({"data": format!("missed{i}")})).await;
    }

    let mut ws = ably_support::resume_on(
        &n3.http_addr.to_string(),
        KEY,
        "res",
        (id.as_str(), key.as_str()),
        channel,
        &channel_serial,
    )
    .await;
    let got = messages_until(&mut ws, "missed2").await;
    assert_eq!(
        data_of(&got),
        vec!["missed0", "missed1", "missed2"],
        "what was published meanwhile, once, in order"
    );
    for s in [n1, n2, n3] {
        s.shutdown().await;
    }
}

/// A node whose subscriber connection to the engine is killed subscribes again
/// and reads what was published in between from history: its attached clients
/// get every message once, in order, without reattaching, and its presence
/// subscribers the presence set as it is after the changes they did not hear of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_fan_out_connection_recovers_what_was_missed() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (n1, _d1) = node(&seed).await;
    let (n2, _d2) = node(&seed).await;
    let channel = "scale:gap";
    let mut on2 = connect(&n2, None).await;
    attach(&mut on2, channel).await;
    post_messages(&n1, channel, json!({"data": "before"})).await;
    let got = messages_until(&mut on2, "before").await;
    assert_eq!(data_of(&got), vec!["before"], "delivered live");

    // Presence: two members on node 1, a presence subscriber on node 2, whose
    // own SYNC request lists node 1's members too.
    let room = "scale:gap-room";
    let mut stays = connect(&n1, Some("stays")).await;
    let mut goes = connect(&n1, Some("goes")).await;
    for ws in [&mut stays, &mut goes] {
        attach(ws, room).await;
        ably_support::enter(ws, room, 0, "here").await;
    }
    // An ENTER is acknowledged once node 1 applied it; the engine's store has
    // it a moment later.
    let stored = common::eventually(|| async {
        let members = get(&n2, &format!("/channels/{room}/presence")).await;
        members.as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    assert!(stored, "node 2 lists both members");
    let mut watcher = connect(&n2, None).await;
    send(&mut watcher, json!({"action": 10, "channel": room})).await;
    next_action(&mut watcher, 11).await;
    assert_eq!(
        sync_members(&mut watcher).await,
        vec!["goes", "stays"],
        "attach SYNC"
    );
    send(&mut watcher, json!({"action": 16, "channel": room})).await;
    assert_eq!(
        sync_members(&mut watcher).await,
        vec!["goes", "stays"],
        "a SYNC the client asks node 2 for has node 1's members"
    );

    let killed: i64 = cluster
        .masters
        .iter()
        .map(|m| m.cmd::<i64>(&["CLIENT", "KILL", "TYPE", "pubsub"]))
        .sum();
    assert!(killed >= 1, "node 2's subscriber connection is killed");
    // Published while node 2 is not subscribed (it waits before subscribing
    // again), as one publish of two messages and single ones.
    post_messages(&n1, channel, json!([{"data": "gap0"}, {"data": "gap1"}])).await;
    for data in ["gap2", "gap3"] {
        post_messages(&n1, channel, json!({ "data": data })).await;
    }
    // More than one page of history (1,000 messages a read).
    let bulk: Vec<String> = (0..1200).map(|i| format!("bulk{i}")).collect();
    for part in bulk.chunks(400) {
        let body: Vec<Value> = part.iter().map(|d| json!({ "data": d })).collect();
        post_messages(&n1, channel, Value::Array(body)).await;
    }
    // Presence changes node 2 does not hear of: one member leaves, one enters.
    send(
        &mut goes,
        json!({"action": 14, "channel": room, "msgSerial": 1, "presence": [{"action": 3}]}),
    )
    .await;
    next_action(&mut goes, 1).await;
    let mut arrives = connect(&n1, Some("arrives")).await;
    attach(&mut arrives, room).await;
    ably_support::enter(&mut arrives, room, 0, "new").await;
    // Node 2 subscribes again half a second after the loss; what follows that
    // is delivered live (either way every message must arrive once, in order).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for data in ["after0", "after1"] {
        post_messages(&n1, channel, json!({ "data": data })).await;
    }
    let got = messages_until(&mut on2, "after1").await;
    let mut expected: Vec<String> = ["gap0", "gap1", "gap2", "gap3"].map(String::from).into();
    expected.extend(bulk);
    expected.extend(["after0", "after1"].map(String::from));
    assert_eq!(
        data_of(&got),
        expected,
        "what was published while the connection was down, then what followed, once, in order"
    );
    let serials: Vec<&str> = got.iter().filter_map(|m| m["serial"].as_str()).collect();
    let mut sorted = serials.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(serials, sorted, "serials increase");
    let extra = tokio::time::timeout(Duration::from_millis(300), on2.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(WsMessage::Text(ref t)))) if t.contains("\"action\":15")),
        "nothing delivered twice: {extra:?}"
    );
    // Node 2's presence subscriber is sent the whole set again: without the
    // member that left, with the one that entered.
    assert_eq!(
        sync_members(&mut watcher).await,
        vec!["arrives", "stays"],
        "presence synced again after the gap"
    );
    for s in [n1, n2] {
        s.shutdown().await;
    }
}

/// The clientIds of the next SYNC sequence `ws` gets (every SYNC frame up to
/// the one whose cursor is empty), sorted.
async fn sync_members(ws: &mut Ws) -> Vec<String> {
    let mut members = Vec::new();
    loop {
        let sync = next_action(ws, 16).await;
        members.extend(
            sync["presence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["clientId"].as_str().map(str::to_owned)),
        );
        if sync["channelSerial"]
            .as_str()
            .is_some_and(|s| s.ends_with(':'))
        {
            break;
        }
    }
    members.sort();
    members
}

/// The bridge between Redis pub/sub and realtime channels spans the nodes: a
/// realtime message published through node 1 reaches a Redis subscriber
/// connected to node 2 once (no node has the channel attached), and a Redis
/// `PUBLISH` sent to node 1 (alone or inside MULTI) reaches a WebSocket
/// subscriber attached on node 2, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_bridge_spans_the_nodes() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let (n1, _d1) = node(&seed).await;
    let (n2, _d2) = node(&seed).await;

    // Realtime → Redis.
    let redis2 = redis::Client::open(format!("redis://{}/", n2.resp_addr)).expect("client");
    let mut pubsub = redis2.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe("scale:to-redis").await.expect("subscribe");
    post_messages(
        &n1,
        "scale:to-redis",
        json!({"name": "greet", "data": "hi"}),
    )
    .await;
    post_messages(
        &n1,
        "scale:to-redis",
        json!({"name": "greet", "data": "again"}),
    )
    .await;
    let mut stream = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(common::WAIT, stream.next())
            .await
            .expect("the Redis subscriber on node 2 gets the realtime message")
            .expect("stream open");
        let payload: String = m.get_payload().expect("text payload");
        let v: Value = serde_json::from_str(&payload).expect("JSON");
        got.push(v["data"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(got, vec!["hi", "again"], "in order");
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err(), "delivered once: {extra:?}");
    drop(stream);

    // Redis → realtime.
    let channel = "scale:from-redis";
    let mut on2 = connect(&n2, None).await;
    attach(&mut on2, channel).await;
    let redis1 = redis::Client::open(format!("redis://{}/", n1.resp_addr)).expect("client");
    let mut conn = redis1
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    for data in ["r1", "r2", "r3"] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(data)
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
    }
    let got = messages_until(&mut on2, "r3").await;
    assert_eq!(
        data_of(&got),
        vec!["r1", "r2", "r3"],
        "node 2's subscriber gets node 1's PUBLISHes once, in order"
    );
    // A PUBLISH inside MULTI is bridged too, once EXEC ran it.
    let (published,): (i64,) = redis::pipe()
        .atomic()
        .cmd("PUBLISH")
        .arg(channel)
        .arg("t1")
        .query_async(&mut conn)
        .await
        .expect("MULTI/PUBLISH/EXEC");
    assert!(published >= 0, "EXEC answers PUBLISH's count");
    let got = messages_until(&mut on2, "t1").await;
    assert_eq!(data_of(&got), vec!["t1"], "bridged from inside MULTI");
    let history = get(
        &n1,
        &format!("/channels/{channel}/messages?direction=forwards"),
    )
    .await;
    assert_eq!(
        data_of(history.as_array().expect("a page")),
        vec!["r1", "r2", "r3", "t1"],
        "kept once in the shared history"
    );
    // A channel nobody attached anywhere stays on the Redis side.
    let _: i64 = redis::cmd("PUBLISH")
        .arg("scale:nobody")
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
    // (The bridge decides after asking the engine: give it the time it takes.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nobody = get(&n2, "/channels/scale:nobody/messages").await;
    assert_eq!(nobody, json!([]), "not bridged: {nobody}");
    for s in [n1, n2] {
        s.shutdown().await;
    }
}
