//! WebSocket protocol behaviour against a real server on 127.0.0.1:0.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMsg;

#[tokio::test]
async fn connected_carries_full_connection_details_in_both_formats() {
    let s = start(base_config()).await;
    for fmt in ["json", "msgpack"] {
        let q = format!("key={FULL_KEY}&format={fmt}&v=3&clientId=alice");
        let (_c, m) = Client::connected(&s, &q).await;
        let d = &m["connectionDetails"];
        assert!(m["connectionId"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(d["clientId"], "alice");
        assert!(d["connectionKey"].as_str().is_some_and(|k| k.contains('!')));
        assert_eq!(d["maxMessageSize"], 65536);
        assert!(d["maxFrameSize"].as_u64().is_some());
        assert!(d["maxInboundRate"].as_u64().is_some());
        assert_eq!(d["connectionStateTtl"], 120000);
        assert_eq!(d["maxIdleInterval"], 15000);
        assert_eq!(d["serverId"], "tidewire");
        let rec = s
            .hub
            .connection(m["connectionId"].as_str().unwrap())
            .expect("registered");
        assert_eq!(rec.client_id.as_deref(), Some("alice"));
    }
}

#[tokio::test]
async fn protocol_versions_two_to_six_accepted_others_refused() {
    let s = start(base_config()).await;
    for v in ["2", "3", "4", "5", "6"] {
        Client::connected(&s, &format!("key={FULL_KEY}&v={v}")).await;
    }
    for v in ["1", "7", "x"] {
        let mut c = Client::connect(&s, &format!("key={FULL_KEY}&v={v}")).await;
        let m = c.recv().await.expect("error frame");
        assert_eq!(m["action"], 9);
        assert_eq!(m["error"]["code"], 40017);
        assert!(c.closes().await);
    }
}

#[tokio::test]
async fn ping_heartbeat_is_echoed_with_id() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.send(json!({"action": 0, "id": "ping-1"})).await;
    let m = c.expect(0).await;
    assert_eq!(m["id"], "ping-1");
}

#[tokio::test]
async fn heartbeat_frames_or_ws_pings_by_heartbeats_param() {
    let mut cfg = base_config();
    cfg.max_idle_interval_ms = 150;
    let s = start(cfg).await;
    let (mut c, m) = Client::connected(&s, &format!("key={FULL_KEY}&heartbeats=true")).await;
    assert_eq!(m["connectionDetails"]["maxIdleInterval"], 150);
    let hb = c.expect(0).await;
    assert!(hb.get("id").is_none());

    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&heartbeats=false")).await;
    let mut got_ping = false;
    for _ in 0..5 {
        if let Some(WsMsg::Ping(_)) = c.recv_raw().await {
            got_ping = true;
            break;
        }
    }
    assert!(got_ping);
}

#[tokio::test]
async fn close_gets_closed() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.send(json!({"action": 7})).await;
    assert_eq!(c.expect(8).await["action"], 8);
    assert!(c.closes().await);
}

#[tokio::test]
async fn attach_echoes_modes_and_params_detach_replies_detached() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let subscribe_publish = (1u64 << 17) | (1u64 << 18);
    c.send(json!({"action": 10, "channel": "modes", "flags": subscribe_publish, "params": {"delta": "vcdiff"}}))
        .await;
    let m = c.expect(11).await;
    assert_eq!(m["flags"].as_u64().unwrap() & 0xF0000, subscribe_publish);
    assert_eq!(m["params"]["delta"], "vcdiff");
    assert!(m["channelSerial"].is_string());
    c.send(json!({"action": 12, "channel": "modes"})).await;
    let d = c.expect(13).await;
    assert_eq!(d["channel"], "modes");
}

#[tokio::test]
async fn publishes_are_acked_in_contiguous_ranges_and_fanned_out_in_order() {
    let s = start(base_config()).await;
    let (mut sub, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    sub.attach("order").await;
    let (mut publ, connected) =
        Client::connected(&s, &format!("key={FULL_KEY}&format=msgpack")).await;
    let conn_id = connected["connectionId"].as_str().unwrap().to_owned();
    for i in 0..20 {
        publ.send(json!({"action": 15, "channel": "order", "msgSerial": i,
            "messages": [{"name": "n", "data": format!("m{i}")}]}))
            .await;
    }
    let mut next_expected = 0;
    while next_expected < 20 {
        let ack = publ.expect(1).await;
        assert_eq!(
            ack["msgSerial"], next_expected,
            "ACK ranges contiguous: {ack}"
        );
        next_expected += ack["count"].as_i64().unwrap();
    }
    assert_eq!(next_expected, 20);
    let mut prev_serial = String::new();
    for i in 0..20 {
        let m = sub.expect(15).await;
        let msg = &m["messages"][0];
        assert_eq!(msg["data"], format!("m{i}"));
        // id, connectionId and timestamp travel once on the protocol message; the
        // client derives each message's (`<id>:<index>`), as with Ably's servers.
        assert!(msg.get("id").is_none() && msg.get("connectionId").is_none());
        assert_eq!(m["id"], format!("{conn_id}:{i}"));
        assert_eq!(m["connectionId"], conn_id.as_str());
        assert!(m["timestamp"].as_i64().is_some());
        let serial = m["channelSerial"].as_str().unwrap().to_owned();
        assert!(serial > prev_serial);
        prev_serial = serial;
    }
}

#[tokio::test]
async fn resent_msg_serial_is_acked_not_republished() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("dup").await;
    let publish =
        json!({"action": 15, "channel": "dup", "msgSerial": 0, "messages": [{"data": "once"}]});
    c.send(publish.clone()).await;
    c.send(publish).await;
    c.send(
        json!({"action": 15, "channel": "dup", "msgSerial": 1, "messages": [{"data": "twice"}]}),
    )
    .await;
    let mut datas = Vec::new();
    let mut acked = 0;
    while acked < 3 || datas.len() < 2 {
        let m = c.recv().await.expect("frame");
        match m["action"].as_u64() {
            Some(1) => acked += m["count"].as_i64().unwrap(),
            Some(15) => datas.push(m["messages"][0]["data"].clone()),
            _ => {}
        }
    }
    assert_eq!(datas, vec![json!("once"), json!("twice")]);
}

/// A MESSAGE whose extras nest 100k arrays deep: must be refused, not overflow a stack.
fn deep_msgpack() -> Vec<u8> {
    let mut b = vec![0x82, 0xa6];
    b.extend_from_slice(b"action");
    b.extend_from_slice(&[0x0f, 0xa8]);
    b.extend_from_slice(b"messages");
    b.extend_from_slice(&[0x91, 0x81, 0xa6]);
    b.extend_from_slice(b"extras");
    b.extend(std::iter::repeat_n(0x91, 100_000));
    b.push(0xc0);
    b
}

#[tokio::test]
async fn malformed_frame_gets_error_and_close_without_affecting_others() {
    let s = start(base_config()).await;
    let (mut good, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    good.attach("calm").await;
    for bad in [
        WsMsg::Text("{not json".into()),
        WsMsg::Binary(vec![0xc1u8, 0x00].into()),
        WsMsg::Text(r#"{"action": 250}"#.into()),
        WsMsg::Binary(deep_msgpack().into()),
    ] {
        let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
        c.send_raw(bad).await;
        let e = c.expect(9).await;
        assert_eq!(e["error"]["code"], 40000);
        assert!(e.get("channel").is_none());
        assert!(c.closes().await);
    }
    good.send(json!({"action": 15, "channel": "calm", "msgSerial": 0, "messages": [{"data": "still here"}]}))
        .await;
    assert_eq!(good.expect(15).await["messages"][0]["data"], "still here");
}

#[tokio::test]
async fn echo_false_suppresses_own_messages_only() {
    let s = start(base_config()).await;
    let (mut quiet, _) = Client::connected(&s, &format!("key={FULL_KEY}&echo=false")).await;
    let (mut other, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    quiet.attach("echo").await;
    other.attach("echo").await;
    quiet
        .send(json!({"action": 15, "channel": "echo", "msgSerial": 0, "messages": [{"data": "mine"}]}))
        .await;
    other
        .send(json!({"action": 15, "channel": "echo", "msgSerial": 0, "messages": [{"data": "theirs"}]}))
        .await;
    // `quiet` sees its ACK and then only the other connection's message.
    let mut seen = Vec::new();
    while seen.is_empty() {
        let m = quiet.recv().await.expect("frame");
        if m["action"] == 15 {
            seen.push(m["messages"][0]["data"].clone());
        }
    }
    assert_eq!(seen, vec![json!("theirs")]);
    let mut other_seen = Vec::new();
    while other_seen.len() < 2 {
        let m = other.expect(15).await;
        other_seen.push(m["messages"][0]["data"].clone());
    }
    assert!(other_seen.contains(&json!("mine")));
}

#[tokio::test]
async fn payloads_survive_between_json_and_msgpack_clients() {
    let s = start(base_config()).await;
    let (mut js, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let (mut mp, _) = Client::connected(&s, &format!("key={FULL_KEY}&format=msgpack")).await;
    js.attach("mix").await;
    mp.attach("mix").await;
    // msgpack publisher: binary, JSON-encoded string, plain string with encoding chain.
    let pm = json!({"action": 15, "channel": "mix", "msgSerial": 0, "messages": [
        {"name": "s", "data": "plain"},
        {"name": "j", "data": "{\"a\":1}", "encoding": "json"},
    ]});
    mp.send(pm).await;
    // Raw msgpack with a real `bin` payload.
    #[derive(serde::Serialize)]
    struct M {
        name: &'static str,
        #[serde(with = "serde_bytes_compat")]
        data: Vec<u8>,
    }
    mod serde_bytes_compat {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }
    #[derive(serde::Serialize)]
    struct P {
        action: u8,
        channel: &'static str,
        #[serde(rename = "msgSerial")]
        msg_serial: u32,
        messages: Vec<M>,
    }
    let raw = rmp_serde::to_vec_named(&P {
        action: 15,
        channel: "mix",
        msg_serial: 1,
        messages: vec![M {
            name: "b",
            data: vec![0, 1, 2, 254, 255],
        }],
    })
    .unwrap();
    mp.send_raw(WsMsg::Binary(raw.into())).await;

    let first = js.expect(15).await;
    assert_eq!(first["messages"][0]["data"], "plain");
    assert!(first["messages"][0].get("encoding").is_none());
    assert_eq!(first["messages"][1]["data"], "{\"a\":1}");
    assert_eq!(first["messages"][1]["encoding"], "json");
    let second = js.expect(15).await;
    assert_eq!(second["messages"][0]["data"], "AAEC/v8=");
    assert_eq!(second["messages"][0]["encoding"], "base64");

    // JSON publisher sending base64 reaches msgpack as bin.
    js.send(json!({"action": 15, "channel": "mix", "msgSerial": 0,
        "messages": [{"name": "b64", "data": "AAEC/v8=", "encoding": "utf-8/base64"}]}))
        .await;
    let mut found = None;
    for _ in 0..10 {
        let m = mp.expect(15).await;
        if m["messages"][0]["name"] == "b64" {
            found = Some(m);
            break;
        }
    }
    let m = found.expect("b64 message");
    assert_eq!(m["messages"][0]["data"], json!([0, 1, 2, 254, 255]));
    assert_eq!(m["messages"][0]["encoding"], "utf-8");
}

#[tokio::test]
async fn capability_refusals_40160_on_publish_and_attach() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={SUB_KEY}")).await;
    c.attach("public:news").await;
    c.send(json!({"action": 15, "channel": "public:news", "msgSerial": 0, "messages": [{"data": "x"}]}))
        .await;
    let nack = c.expect(2).await;
    assert_eq!(nack["msgSerial"], 0);
    assert_eq!(nack["error"]["code"], 40160);
    assert_eq!(nack["error"]["statusCode"], 401);
    c.send(json!({"action": 10, "channel": "private"})).await;
    let e = c.expect(9).await;
    assert_eq!(e["channel"], "private");
    assert_eq!(e["error"]["code"], 40160);
    // The connection survives a channel-scoped refusal.
    c.send(json!({"action": 15, "channel": "chat", "msgSerial": 1, "messages": [{"data": "ok"}]}))
        .await;
    assert_eq!(c.expect(1).await["msgSerial"], 1);
}

#[tokio::test]
async fn oversize_publish_is_nacked_40009() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&format=msgpack")).await;
    let big = "x".repeat(65537);
    c.send(json!({"action": 15, "channel": "big", "msgSerial": 0, "messages": [{"data": big}]}))
        .await;
    let nack = c.expect(2).await;
    assert_eq!(nack["error"]["code"], 40009);
    let fits = "x".repeat(60000);
    c.send(json!({"action": 15, "channel": "big", "msgSerial": 1, "messages": [{"data": fits}]}))
        .await;
    assert_eq!(c.expect(1).await["msgSerial"], 1);
}

#[tokio::test]
async fn channel_limit_90010_rate_limit_42910_connection_limit_40111() {
    let mut cfg = base_config();
    cfg.max_channels_per_connection = 2;
    cfg.max_inbound_rate = 3;
    cfg.max_connections = 1;
    let s = start(cfg).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("a").await;
    c.attach("b").await;
    c.send(json!({"action": 10, "channel": "c"})).await;
    let e = c.expect(9).await;
    assert_eq!(e["error"]["code"], 90010);
    assert_eq!(e["channel"], "c");

    for i in 0..10 {
        c.send(json!({"action": 15, "channel": "a", "msgSerial": i, "messages": [{"data": i}]}))
            .await;
    }
    let mut nacked = false;
    let mut settled = 0;
    while settled < 10 {
        let m = c.recv().await.expect("frame");
        match m["action"].as_u64() {
            Some(1) => settled += m["count"].as_i64().unwrap(),
            Some(2) => {
                settled += m["count"].as_i64().unwrap();
                assert_eq!(m["error"]["code"], 42910);
                nacked = true;
            }
            _ => {}
        }
    }
    assert!(nacked);

    let mut second = Client::connect(&s, &format!("key={FULL_KEY}")).await;
    let e = second.expect(9).await;
    assert_eq!(e["error"]["code"], 40111);
    assert!(second.closes().await);
}

#[tokio::test]
async fn bad_credentials_complete_upgrade_then_error() {
    let s = start(base_config()).await;
    for (q, code) in [
        ("key=test.full:wrong".to_owned(), 40101),
        ("key=nope.none:x".to_owned(), 40101),
        (String::new(), 40106),
        ("access_token=garbage".to_owned(), 40145),
    ] {
        let mut c = Client::connect(&s, &q).await;
        let m = c.expect(9).await;
        assert_eq!(m["error"]["code"], code, "query {q}");
        assert!(c.closes().await);
    }
}

#[tokio::test]
async fn backend_bridge_delivers_and_observes() {
    let s = start(base_config()).await;
    let mut all = s.hub.subscribe_all();
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("bridge").await;
    s.hub
        .publish_from_backend("bridge", Some("evt".into()), "payload", None)
        .unwrap();
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["name"], "evt");
    assert_eq!(m["messages"][0]["data"], "payload");
    c.send(json!({"action": 15, "channel": "bridge", "msgSerial": 0, "messages": [{"name": "up", "data": "from ws"}]}))
        .await;
    let first = all.recv().await.unwrap();
    assert_eq!(first.origin, tidewire_realtime::Origin::Backend);
    let second = all.recv().await.unwrap();
    assert_eq!(second.origin, tidewire_realtime::Origin::Realtime);
    assert_eq!(second.channel, "bridge");
    let v: serde_json::Value = serde_json::from_str(&second.message_json()).unwrap();
    assert_eq!(v["data"], "from ws");
}

#[tokio::test]
async fn rewind_replays_backlog_in_order_then_live_messages() {
    let s = start(base_config()).await;
    for i in 0..5 {
        s.hub
            .publish_from_backend("rewind", Some("r".into()), format!("old{i}"), None)
            .unwrap();
    }
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&format=msgpack")).await;
    c.send(json!({"action": 10, "channel": "rewind", "params": {"rewind": "3"}}))
        .await;
    let attached = c.expect(11).await;
    assert_eq!(attached["params"]["rewind"], "3");
    assert_ne!(attached["flags"].as_u64().unwrap() & 2, 0, "HAS_BACKLOG");
    s.hub
        .publish_from_backend("rewind", Some("r".into()), "live", None)
        .unwrap();
    let mut datas = Vec::new();
    while datas.len() < 4 {
        let m = c.expect(15).await;
        datas.push(m["messages"][0]["data"].as_str().unwrap().to_owned());
    }
    assert_eq!(datas, ["old2", "old3", "old4", "live"]);

    // A re-attach flagged ATTACH_RESUME does not replay again.
    let (mut again, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    again
        .send(json!({"action": 10, "channel": "rewind", "flags": 32, "params": {"rewind": "3"}}))
        .await;
    again.expect(11).await;
    s.hub
        .publish_from_backend("rewind", None, "after", None)
        .unwrap();
    assert_eq!(again.expect(15).await["messages"][0]["data"], "after");
}

#[tokio::test]
async fn resume_keeps_connection_id_and_replays_missed_messages() {
    let s = start(base_config()).await;
    let (mut c, m) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=res")).await;
    let id = m["connectionId"].as_str().unwrap().to_owned();
    let key = m["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.hub.connection_by_key(&key).unwrap().connection_id, id);
    assert!(s.hub.connection_by_key("forged!nope").is_none());
    c.attach("resume").await;
    c.send(
        json!({"action": 15, "channel": "resume", "msgSerial": 0, "messages": [{"data": "seen"}]}),
    )
    .await;
    let seen = c.expect(15).await;
    let channel_serial = seen["channelSerial"].as_str().unwrap().to_owned();
    // The transport drops without CLOSE.
    drop(c);
    for i in 0..3 {
        s.hub
            .publish_from_backend("resume", None, format!("missed{i}"), None)
            .unwrap();
    }
    let (mut c, m) =
        Client::connected(&s, &format!("key={FULL_KEY}&clientId=res&resume={key}")).await;
    assert_eq!(m["connectionId"], id.as_str());
    assert!(m.get("error").is_none(), "resume succeeded: {m}");
    // The resumed connection has a new key (as Ably): the old one no longer
    // takes it over, so a replaced transport cannot take it back.
    let new_key = m["connectionDetails"]["connectionKey"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert_eq!(s.hub.connection_by_key(new_key).unwrap().connection_id, id);
    assert!(s.hub.connection_by_key(&key).is_none());
    c.send(
        json!({"action": 10, "channel": "resume", "channelSerial": channel_serial, "flags": 32}),
    )
    .await;
    let attached = c.expect(11).await;
    assert_ne!(
        attached["flags"].as_u64().unwrap() & 4,
        0,
        "RESUMED: {attached}"
    );
    for i in 0..3 {
        assert_eq!(
            c.expect(15).await["messages"][0]["data"],
            format!("missed{i}")
        );
    }
    // msgSerial continues across the resume: a re-sent 0 is ACKed, not republished.
    c.send(
        json!({"action": 15, "channel": "resume", "msgSerial": 0, "messages": [{"data": "seen"}]}),
    )
    .await;
    c.send(
        json!({"action": 15, "channel": "resume", "msgSerial": 1, "messages": [{"data": "new"}]}),
    )
    .await;
    let mut acked = 0;
    let mut datas = Vec::new();
    while acked < 2 || datas.is_empty() {
        let m = c.recv().await.expect("frame");
        match m["action"].as_u64() {
            Some(1) => acked += m["count"].as_i64().unwrap(),
            Some(15) => datas.push(m["messages"][0]["data"].clone()),
            _ => {}
        }
    }
    assert_eq!(datas, vec![json!("new")]);
}

#[tokio::test]
async fn resume_refusals_and_continuity_loss() {
    let s = start(base_config()).await;
    // Closed connections cannot be resumed.
    let (mut c, m) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let key = m["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    c.send(json!({"action": 7})).await;
    c.expect(8).await;
    let (_c2, m2) = Client::connected(&s, &format!("key={FULL_KEY}&resume={key}")).await;
    assert_ne!(m2["connectionId"], m["connectionId"]);
    assert_eq!(m2["error"]["code"], 80008);

    // Other credentials cannot take a connection over.
    let (c3, m3) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let key3 = m3["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c3);
    let (_c4, m4) = Client::connected(&s, &format!("key={SUB_KEY}&resume={key3}")).await;
    assert_eq!(m4["error"]["code"], 80011);

    // A resume while the old transport is still open supersedes it.
    let (mut old, m5) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let key5 = m5["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_new, m6) = Client::connected(&s, &format!("key={FULL_KEY}&resume={key5}")).await;
    assert_eq!(m6["connectionId"], m5["connectionId"]);
    assert!(old.closes().await);

    // A channelSerial history cannot bridge: attached, but continuity lost.
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    s.hub.publish_from_backend("gap", None, "x", None).unwrap();
    c.send(json!({"action": 10, "channel": "gap", "channelSerial": "0000000000000001"}))
        .await;
    let a = c.expect(11).await;
    assert_eq!(a["flags"].as_u64().unwrap() & 4, 0);
    assert_eq!(a["error"]["code"], 90003);

    // A new connection presenting a retained channelSerial gets the missed messages,
    // but not RESUMED: only a resumed connection keeps presence.
    let serial = a["channelSerial"].as_str().unwrap().to_owned();
    s.hub
        .publish_from_backend("gap", None, "later", None)
        .unwrap();
    let (mut fresh, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    fresh
        .send(json!({"action": 10, "channel": "gap", "channelSerial": serial}))
        .await;
    let a = fresh.expect(11).await;
    assert_eq!(a["flags"].as_u64().unwrap() & 4, 0);
    assert!(a.get("error").is_none());
    assert_eq!(fresh.expect(15).await["messages"][0]["data"], "later");
}

#[tokio::test]
async fn extreme_msg_serials_do_not_break_the_connection() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.send(
        json!({"action": 15, "channel": "x", "msgSerial": i64::MAX, "messages": [{"data": "a"}]}),
    )
    .await;
    assert_eq!(c.expect(1).await["msgSerial"], i64::MAX);
    c.send(json!({"action": 15, "channel": "x", "messages": [{"data": "b"}]}))
        .await;
    c.send(json!({"action": 0, "id": "still-alive"})).await;
    assert_eq!(c.expect(0).await["id"], "still-alive");
}

#[tokio::test]
async fn slow_subscriber_is_disconnected_without_stalling_the_channel() {
    let mut cfg = base_config();
    cfg.outbound_queue = 8;
    let s = start(cfg).await;
    let (mut slow, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    slow.attach("firehose").await;
    let (mut fast, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    fast.attach("firehose").await;
    // `slow` reads nothing while far more than socket buffers hold is published.
    let payload = "x".repeat(32 * 1024);
    for _ in 0..600 {
        s.hub
            .publish_from_backend("firehose", None, payload.as_str(), None)
            .unwrap();
    }
    // The channel kept flowing: `fast` can read its share, then a marker.
    s.hub
        .publish_from_backend("firehose", Some("end".into()), "marker", None)
        .unwrap();
    let mut got_marker = false;
    for _ in 0..700 {
        match fast.recv().await {
            Some(m) if m["action"] == 15 && m["messages"][0]["name"] == "end" => {
                got_marker = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    // `fast` may itself have been cut off if it fell behind; what matters is that
    // `slow` is told why and closed, and that the hub never blocked.
    let mut disconnected = false;
    for _ in 0..1000 {
        match slow.recv().await {
            Some(m) if m["action"] == 6 => {
                assert_eq!(m["error"]["code"], 80003);
                disconnected = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(disconnected, "slow subscriber got DISCONNECTED 80003");
    assert!(got_marker || fast.closes().await);
}

#[tokio::test]
async fn client_supplied_ids_are_idempotent_across_rest_and_realtime() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("idem-rt").await;
    for serial in 0..2 {
        c.send(
            json!({"action": 15, "channel": "idem-rt", "msgSerial": serial,
            "messages": [{"id": "app-chosen:0", "data": "once"}]}),
        )
        .await;
    }
    let r = http()
        .post(s.http("/channels/idem-rt/messages"))
        .header("authorization", basic(FULL_KEY))
        .json(&json!({"id": "app-chosen:0", "data": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    c.send(json!({"action": 0, "id": "fence"})).await;
    let mut delivered = 0;
    loop {
        let m = c.recv().await.expect("frame");
        if m["action"] == 15 {
            delivered += 1;
            assert_eq!(m["messages"][0]["id"], "app-chosen:0");
        }
        if m["action"] == 0 && m["id"] == "fence" {
            break;
        }
    }
    assert_eq!(delivered, 1);
}

#[tokio::test]
async fn wrong_kind_of_frame_or_a_string_action_is_a_protocol_error() {
    let s = start(base_config()).await;
    let attach = json!({"action": 10, "channel": "kinds"});
    let msgpack_attach = rmp_serde::to_vec_named(&attach).unwrap();
    for (query, bad) in [
        // A string action is not an action, even if it parses as a number.
        (
            "",
            WsMsg::Text(r#"{"action":"10","channel":"kinds"}"#.into()),
        ),
        // A well-formed msgpack ATTACH on a JSON connection (explicit and default).
        ("&format=json", WsMsg::Binary(msgpack_attach.clone().into())),
        ("", WsMsg::Binary(msgpack_attach.clone().into())),
        // A well-formed JSON ATTACH on a msgpack connection.
        ("&format=msgpack", WsMsg::Text(attach.to_string().into())),
    ] {
        let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}{query}")).await;
        c.send_raw(bad).await;
        let e = c.expect(9).await;
        assert_eq!(e["error"]["code"], 40000, "{query}: {e}");
        assert_eq!(e["error"]["statusCode"], 400);
        assert!(c.closes().await, "{query}: closed after the error");
    }
}

/// Modes asked for at attach (`params.modes` first, then the flags) are granted
/// as far as the capability allows, reported in ATTACHED's flags, and enforced:
/// publishing or entering presence without the mode is refused with 40165.
#[tokio::test]
async fn attach_modes_are_granted_reported_and_enforced() {
    const PRESENCE: u64 = 1 << 16;
    const PUBLISH: u64 = 1 << 17;
    const SUBSCRIBE: u64 = 1 << 18;
    const MODES: u64 = 0xff << 16;
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=me")).await;
    c.send(json!({"action": 10, "channel": "m", "flags": PUBLISH,
        "params": {"modes": "subscribe,presence", "delta": "vcdiff", "nonexistent": "x"}}))
        .await;
    let attached = c.expect(11).await;
    assert_eq!(
        attached["flags"].as_u64().unwrap() & MODES,
        SUBSCRIBE | PRESENCE
    );
    assert_eq!(
        attached["params"],
        json!({"modes": "subscribe,presence", "delta": "vcdiff"})
    );
    c.send(json!({"action": 15, "channel": "m", "msgSerial": 0, "messages": [{"data": "x"}]}))
        .await;
    let nack = c.expect(2).await;
    assert_eq!(nack["error"]["code"], 40165);
    c.send(json!({"action": 14, "channel": "m", "msgSerial": 1,
        "presence": [{"action": 2, "clientId": "me"}]}))
        .await;
    assert_eq!(
        c.expect(1).await["msgSerial"],
        1,
        "entering presence is allowed"
    );

    // Modes in the flags alone.
    c.send(json!({"action": 10, "channel": "n", "flags": SUBSCRIBE}))
        .await;
    let attached = c.expect(11).await;
    assert_eq!(attached["flags"].as_u64().unwrap() & MODES, SUBSCRIBE);
    c.send(json!({"action": 14, "channel": "n", "msgSerial": 2,
        "presence": [{"action": 2, "clientId": "me"}]}))
        .await;
    let nack = c.expect(2).await;
    assert_eq!(nack["error"]["code"], 40165);
}

/// An ACK carries one publish result per acknowledged message, with the serials
/// its messages got (what ably-js's `publish()` resolves to).
#[tokio::test]
async fn acks_carry_the_published_serials() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("serials").await;
    c.send(json!({"action": 15, "channel": "serials", "msgSerial": 0,
        "messages": [{"data": "a"}, {"data": "b"}]}))
        .await;
    let ack = loop {
        let m = c.recv().await.expect("frame");
        if m["action"] == 1 {
            break m;
        }
    };
    let serials = ack["res"][0]["serials"].as_array().unwrap();
    assert_eq!(serials.len(), 2);
    assert!(serials[0].as_str().unwrap() < serials[1].as_str().unwrap());
    let h = http()
        .get(s.http("/channels/serials/messages?direction=forwards"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap();
    let history: serde_json::Value = h.json().await.unwrap();
    assert_eq!(history[0]["serial"], serials[0]);
}

/// Channel params may come as numbers (`{rewind: 1}`, as ably-js sends what the
/// application gave), over JSON and msgpack alike.
#[tokio::test]
async fn numeric_channel_params_are_accepted() {
    let s = start(base_config()).await;
    let (mut p, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    p.send(json!({"action": 15, "channel": "num", "msgSerial": 0, "messages": [{"data": "old"}]}))
        .await;
    p.expect(1).await;
    for fmt in ["json", "msgpack"] {
        let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&format={fmt}")).await;
        c.send(json!({"action": 10, "channel": "num", "params": {"rewind": 1}}))
            .await;
        let attached = c.expect(11).await;
        assert_eq!(attached["params"]["rewind"], "1", "{fmt}");
        let m = c.expect(15).await;
        assert_eq!(m["messages"][0]["data"], "old", "{fmt}");
    }
}

/// `delta=vcdiff`: the first message after attaching goes whole, the next as a
/// VCDIFF delta against it, naming it in `extras.delta.from`.
#[tokio::test]
async fn delta_attachments_get_vcdiff_deltas() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.send(json!({"action": 10, "channel": "d", "params": {"delta": "vcdiff"}}))
        .await;
    c.expect(11).await;
    for (i, data) in [r#"{"n":1,"s":"a"}"#, r#"{"n":2,"s":"a"}"#]
        .iter()
        .enumerate()
    {
        c.send(
            json!({"action": 15, "channel": "d", "msgSerial": i, "id": format!("pub{i}"),
            "messages": [{"data": data, "encoding": "json"}]}),
        )
        .await;
    }
    let first = c.expect(15).await;
    assert_eq!(first["messages"][0]["encoding"], "json");
    let second = c.expect(15).await;
    let m = &second["messages"][0];
    assert_eq!(m["encoding"], "json/utf-8/vcdiff/base64");
    assert_eq!(
        m["extras"]["delta"],
        json!({"from": "pub0:0", "format": "vcdiff"})
    );
    use base64::Engine;
    let delta = base64::engine::general_purpose::STANDARD
        .decode(m["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&delta[..4], &[0xD6, 0xC3, 0xC4, 0x00]);
}

/// Annotations on a mutable channel: an attachment with annotation_subscribe
/// gets each annotation (its own serial, after the message's) and every
/// attachment the message's new summary; REST lists them in pages.
#[tokio::test]
async fn annotations_are_delivered_summarised_and_listed() {
    let mut config = base_config();
    config.mutable_messages = vec!["mutable:*".into()];
    let s = start(config).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}&clientId=amy")).await;
    c.send(json!({"action": 10, "channel": "mutable:a",
        "params": {"modes": "publish,subscribe,annotation_publish,annotation_subscribe"}}))
        .await;
    let attached = c.expect(11).await;
    assert_ne!(attached["flags"].as_u64().unwrap() & (1 << 22), 0);
    c.send(
        json!({"action": 15, "channel": "mutable:a", "msgSerial": 0, "messages": [{"data": "hi"}]}),
    )
    .await;
    let serial = c.expect(15).await["messages"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, name) in ["up", "down", "up"].iter().enumerate() {
        c.send(json!({"action": 21, "channel": "mutable:a", "msgSerial": i + 1,
            "annotations": [{"action": 0, "messageSerial": serial, "type": "reaction:distinct.v1", "name": name}]}))
            .await;
        let ann = c.expect(21).await;
        let a = &ann["annotations"][0];
        assert_eq!(a["name"], *name);
        assert_eq!(a["clientId"], "amy");
        assert!(a["serial"].as_str().unwrap() > serial.as_str());
        let summary = c.expect(15).await;
        let m = &summary["messages"][0];
        assert_eq!(m["action"], 4);
        assert_eq!(m["serial"], serial.as_str());
        assert_eq!(
            m["annotations"]["summary"]["reaction:distinct.v1"]["up"]["total"],
            1
        );
    }
    let r = http()
        .get(s.http(&format!(
            "/channels/mutable:a/messages/{serial}/annotations?limit=2"
        )))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[1]["name"], "down");
    assert!(link.contains("cursor=2>; rel=\"next\""), "{link}");
}

/// A derived channel (`channels.getDerived(name, { filter })` attaches
/// `[filter=<base64>]name`) gets the base channel's messages that its filter
/// matches, under its own name, beside a plain attachment to the same channel on
/// the same connection, which gets them all.
#[tokio::test]
async fn derived_channel_delivers_filtered_messages_under_its_own_name() {
    use base64::Engine;
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let filter = "name == `\"filtered\"` && headers.number == `26095`";
    let derived = format!(
        "[filter={}]chan",
        base64::engine::general_purpose::STANDARD.encode(filter)
    );
    let att = c.attach(&derived).await;
    assert_eq!(att["channel"], derived.as_str());
    c.attach("chan").await;
    let (mut p, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let sent = [
        json!({"name": "filtered", "data": "a", "extras": {"headers": {"number": 26095}}}),
        json!({"name": "filtered", "data": "b"}),
        json!({"name": "other", "data": "c", "extras": {"headers": {"number": 26095}}}),
        json!({"name": "filtered", "data": "d", "extras": {"headers": {"number": 12345}}}),
        json!({"name": "filtered", "data": "e", "extras": {"headers": {"number": 26095}}}),
    ];
    for (i, m) in sent.iter().enumerate() {
        p.send(json!({"action": 15, "channel": "chan", "msgSerial": i, "messages": [m]}))
            .await;
    }
    let mut plain = Vec::new();
    let mut filtered = Vec::new();
    while plain.len() < sent.len() || filtered.len() < 2 {
        let m = c.expect(15).await;
        let data = m["messages"][0]["data"].as_str().unwrap().to_owned();
        match m["channel"].as_str().unwrap() {
            "chan" => plain.push(data),
            name => {
                assert_eq!(name, derived);
                filtered.push(data);
            }
        }
    }
    assert_eq!(plain, ["a", "b", "c", "d", "e"]);
    assert_eq!(filtered, ["a", "e"]);
    let m = s.hub.metrics();
    assert_eq!((m.messages_in, m.messages_out), (5, 7), "{m:?}");
    assert_eq!((m.connections, m.channels), (2, 2), "{m:?}");
    // A filter that does not parse is refused with 40010, as an invalid name.
    let bad = format!(
        "[filter={}]chan",
        base64::engine::general_purpose::STANDARD.encode("name ==")
    );
    c.send(json!({"action": 10, "channel": bad})).await;
    let e = c.expect(9).await;
    assert_eq!(e["error"]["code"], 40010);
}

/// `[?rewind=1]chan` is channel `chan` with the `rewind` param: it replays chan's
/// last message under the qualified name, then gets chan's new ones; a publish
/// on the qualified name goes to chan.
#[tokio::test]
async fn params_in_the_channel_name_apply_to_the_base_channel() {
    let s = start(base_config()).await;
    let (mut p, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    p.attach("base").await;
    for (i, d) in ["old", "last"].iter().enumerate() {
        p.send(json!({"action": 15, "channel": "base", "msgSerial": i, "messages": [{"data": d}]}))
            .await;
        p.expect(1).await;
    }
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.send(json!({"action": 10, "channel": "[?rewind=1]base"}))
        .await;
    let att = c.expect(11).await;
    assert_eq!(att["channel"], "[?rewind=1]base");
    let replay = c.expect(15).await;
    assert_eq!(replay["channel"], "[?rewind=1]base");
    assert_eq!(replay["messages"][0]["data"], "last");
    c.send(
        json!({"action": 15, "channel": "[?rewind=1]base", "msgSerial": 0,
        "messages": [{"data": "via-view"}]}),
    )
    .await;
    c.expect(1).await;
    // The base channel's subscriber gets it, and so does the view.
    let on_base = loop {
        let m = p.expect(15).await;
        if m["messages"][0]["data"] == "via-view" {
            break m;
        }
    };
    assert_eq!(on_base["channel"], "base");
    let on_view = c.expect(15).await;
    assert_eq!(on_view["channel"], "[?rewind=1]base");
    assert_eq!(on_view["messages"][0]["data"], "via-view");
    assert_eq!(
        s.hub
            .history_page("base", &Default::default())
            .messages
            .len(),
        3,
        "one history, the base channel's"
    );
    // Detaching the view releases it, then its idle base.
    c.send(json!({"action": 12, "channel": "[?rewind=1]base"}))
        .await;
    c.expect(13).await;
    assert!(s.hub.existing_channel("[?rewind=1]base").is_none());
}
