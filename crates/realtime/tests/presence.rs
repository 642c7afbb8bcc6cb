//! Presence over the raw protocol and REST.

mod common;

use common::*;
use serde_json::{json, Value};

const PRESENCE_SUBSCRIBE_AND_MORE: u64 = 0xF0000;

async fn enter(c: &mut Client, channel: &str, serial: i64, data: &str) -> Value {
    c.send(
        json!({"action": 14, "channel": channel, "msgSerial": serial,
        "presence": [{"action": 2, "data": data}]}),
    )
    .await;
    loop {
        let m = c.recv().await.expect("reply");
        if m["action"] == 1 || m["action"] == 2 {
            return m;
        }
    }
}

#[tokio::test]
async fn enter_is_broadcast_and_synced_to_late_attachers() {
    let s = start(base_config()).await;
    let (mut watcher, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    watcher.attach("room").await;
    let (mut alice, m) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=alice")).await;
    let alice_conn = m["connectionId"].as_str().unwrap().to_owned();
    alice.attach("room").await;
    assert_eq!(enter(&mut alice, "room", 0, "hi").await["action"], 1);

    let ev = watcher.expect(14).await;
    let p = &ev["presence"][0];
    assert_eq!(p["action"], 2);
    assert_eq!(p["clientId"], "alice");
    assert_eq!(p["connectionId"], alice_conn.as_str());
    assert_eq!(p["id"], format!("{alice_conn}:0:0"));
    assert_eq!(p["data"], "hi");

    let (mut late, _) = Client::connected(&s, &format!("key={FULL_KEY}&format=msgpack")).await;
    late.send(json!({"action": 10, "channel": "room"})).await;
    let attached = late.expect(11).await;
    let f = attached["flags"].as_u64().unwrap();
    assert_ne!(f & 1, 0, "HAS_PRESENCE");
    assert_ne!(f & PRESENCE_SUBSCRIBE_AND_MORE, 0);
    let sync = late.expect(16).await;
    assert!(sync["channelSerial"].as_str().unwrap().ends_with(':'));
    assert_eq!(sync["presence"][0]["action"], 1);
    assert_eq!(sync["presence"][0]["clientId"], "alice");

    // REST sees the same set.
    let members: Vec<Value> = http()
        .get(s.http("/channels/room/presence"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["clientId"], "alice");
    let status: Value = http()
        .get(s.http("/channels/room"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["status"]["occupancy"]["metrics"]["presenceMembers"],
        1
    );

    // CLOSE makes alice leave at once, with a synthesized LEAVE.
    alice.send(json!({"action": 7})).await;
    alice.expect(8).await;
    let ev = watcher.expect(14).await;
    let p = &ev["presence"][0];
    assert_eq!(p["action"], 3);
    assert_eq!(p["clientId"], "alice");
    assert!(!p["id"].as_str().unwrap().starts_with(&alice_conn));
}

#[tokio::test]
async fn presence_refusals() {
    let s = start(base_config()).await;
    let (mut anon, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let r = enter(&mut anon, "room", 0, "x").await;
    assert_eq!(r["action"], 2);
    assert_eq!(r["error"]["code"], 91000);
    let (mut sub, _) = Client::connected(&s, &format!("key={SUB_KEY}&clientId=bob")).await;
    let r = enter(&mut sub, "chat", 0, "x").await;
    assert_eq!(r["action"], 2);
    assert_eq!(r["error"]["code"], 40160);
    // Explicit leave and update round trip.
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=carol")).await;
    assert_eq!(enter(&mut c, "room2", 0, "a").await["action"], 1);
    c.send(json!({"action": 14, "channel": "room2", "msgSerial": 1, "presence": [{"action": 3}]}))
        .await;
    assert_eq!(c.expect(1).await["msgSerial"], 1);
    let ch = s.hub.existing_channel("room2");
    assert!(ch.is_none_or(|c| c.members(None, None).is_empty()));

    // Detaching leaves implicitly.
    let (mut watcher, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    watcher.attach("room3").await;
    c.attach("room3").await;
    assert_eq!(enter(&mut c, "room3", 2, "b").await["action"], 1);
    assert_eq!(watcher.expect(14).await["presence"][0]["action"], 2);
    c.send(json!({"action": 12, "channel": "room3"})).await;
    c.expect(13).await;
    let ev = watcher.expect(14).await;
    assert_eq!(ev["presence"][0]["action"], 3);
    assert_eq!(ev["presence"][0]["clientId"], "carol");
}

#[tokio::test]
async fn abrupt_disconnect_leaves_after_grace_unless_resumed() {
    let mut cfg = base_config();
    // (Long enough to reconnect and resume in on a loaded machine.)
    cfg.presence_leave_grace_ms = 1500;
    let s = start(cfg).await;
    let (mut watcher, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    watcher.attach("grace").await;

    // Dropped and not resumed: leaves after the grace period.
    let (mut a, _) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=gone")).await;
    assert_eq!(enter(&mut a, "grace", 0, "x").await["action"], 1);
    assert_eq!(watcher.expect(14).await["presence"][0]["action"], 2);
    drop(a);
    let ev = watcher.expect(14).await;
    assert_eq!(ev["presence"][0]["action"], 3);
    assert_eq!(ev["presence"][0]["clientId"], "gone");

    // Dropped and resumed in time: stays, and the re-attach keeps continuity.
    let (mut b, m) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=back")).await;
    let key = m["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let att = b.attach("grace").await;
    let serial = att["channelSerial"].as_str().unwrap().to_owned();
    assert_eq!(enter(&mut b, "grace", 0, "y").await["action"], 1);
    assert_eq!(watcher.expect(14).await["presence"][0]["action"], 2);
    drop(b);
    let (mut b, m2) =
        Client::connected(&s, &format!("key={FULL_KEY}&clientId=back&resume={key}")).await;
    assert_eq!(m2["connectionId"], m["connectionId"]);
    b.send(json!({"action": 10, "channel": "grace", "channelSerial": serial}))
        .await;
    let att = b.expect(11).await;
    assert_ne!(att["flags"].as_u64().unwrap() & 4, 0, "RESUMED");
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let members = s.hub.existing_channel("grace").unwrap().members(None, None);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].client_id.as_deref(), Some("back"));
}

/// A client's SYNC (`channel.sync()`) gets the channel's presence set again; an
/// attachment without presence_subscribe gets nothing.
#[tokio::test]
async fn client_sync_request_gets_the_presence_set_again() {
    let s = start(base_config()).await;
    let (mut member, _) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=ann")).await;
    member.attach("sync-again").await;
    member
        .send(
            json!({"action": 14, "channel": "sync-again", "msgSerial": 0,
            "presence": [{"action": 2, "clientId": "ann"}]}),
        )
        .await;
    member.expect(1).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("sync-again").await;
    let first = c.expect(16).await;
    assert_eq!(first["presence"][0]["clientId"], "ann");
    c.send(json!({"action": 16, "channel": "sync-again"})).await;
    let again = c.expect(16).await;
    assert_eq!(again["presence"][0]["clientId"], "ann");
    assert!(again["channelSerial"].as_str().unwrap().ends_with(':'));
}
