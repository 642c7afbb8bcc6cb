//! The bridge between Redis pub/sub and realtime channels, end to end: a raw Ably
//! WebSocket client and a Redis client on one server.

mod common;

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_action(ws: &mut Ws, action: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for frame")
            .expect("stream ended")
            .expect("ws error");
        if let WsMessage::Text(t) = frame {
            let v: serde_json::Value = serde_json::from_str(&t).expect("json frame");
            if v["action"].as_u64() == Some(action) {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_publish_reaches_realtime_and_back() {
    let (server, _dir) = common::start().await;
    let key = server
        .realtime_root_key
        .clone()
        .expect("root key generated");
    let url = format!(
        "ws://{}/?key={}&format=json&v=5",
        server.http_addr,
        urlencode(&key)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    next_action(&mut ws, 4).await; // CONNECTED
    ws.send(WsMessage::Text(
        r#"{"action":10,"channel":"stream:42"}"#.into(),
    ))
    .await
    .unwrap();
    next_action(&mut ws, 11).await; // ATTACHED

    // Redis → realtime, with an Ably envelope.
    let mut conn = common::redis_conn(&server).await;
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("stream:42")
        .arg(r#"{"name":"tip:new","data":{"amount":5}}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let msg = next_action(&mut ws, 15).await;
    assert_eq!(msg["messages"][0]["name"], "tip:new");
    assert_eq!(msg["messages"][0]["data"]["amount"], 5);

    // Plain payloads become data with no name.
    let _: i64 = redis::cmd("PUBLISH")
        .arg("stream:42")
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    let msg = next_action(&mut ws, 15).await;
    assert_eq!(msg["messages"][0]["data"], "hello");
    assert!(msg["messages"][0].get("name").is_none());

    // Realtime (REST publish) → Redis subscribers of the same channel.
    let client = redis::Client::open(format!("redis://{}/", server.resp_addr)).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("stream:42").await.unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(&key);
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/channels/stream:42/messages",
            server.http_addr
        ))
        .header("Authorization", format!("Basic {auth}"))
        .json(&serde_json::json!({"name": "greet", "data": "hi"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut stream = pubsub.on_message();
    let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("redis subscriber got the realtime message")
        .unwrap();
    let payload: String = m.get_payload().unwrap();
    let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(v["name"], "greet");
    assert_eq!(v["data"], "hi");

    // Redis PUBLISH to a channel nobody attached stays on the Redis side.
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("nobody:here")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 0);
    drop(stream);
    server.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
