//! A raw Ably-protocol client for the multi-node realtime tests: REST calls
//! with a key's basic auth and WebSocket frames in JSON (or msgpack, read back
//! through the realtime crate's types as JSON), every wait bounded by
//! `common::WAIT` (the including test crate declares `mod common;` first).

#![allow(dead_code)]

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::WAIT;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An in-process node on `engine` serving the realtime API key `key`, its
/// configuration adjusted by `tweak`; the node, its HTTP address and its data
/// directory (kept for the node's life).
pub async fn engine_node(
    engine: &str,
    key: &str,
    tweak: impl FnOnce(&mut tidewire_server::Config),
) -> (tidewire_server::Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = crate::common::engine_config(engine, &dir);
    config.realtime.keys = vec![tidewire_realtime::KeyConfig {
        key: key.into(),
        capability: None,
        revocable_tokens: false,
    }];
    tweak(&mut config);
    let server = tidewire_server::start(config)
        .await
        .expect("node starts on the engine");
    let http = server.http_addr.to_string();
    (server, http, dir)
}

/// The HTTP Basic header of an API key.
pub fn auth(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A REST publish to the node at `http`; whether it was acknowledged within
/// `timeout`.
pub async fn try_post(
    http: &str,
    key: &str,
    channel: &str,
    body: Value,
    timeout: Duration,
) -> bool {
    let sent = reqwest::Client::new()
        .post(format!("http://{http}/channels/{channel}/messages"))
        .header("Authorization", auth(key))
        .timeout(timeout)
        .json(&body)
        .send()
        .await;
    matches!(sent, Ok(r) if r.status().is_success())
}

/// A REST publish that must be acknowledged.
pub async fn post(http: &str, key: &str, channel: &str, body: Value) {
    assert!(
        try_post(http, key, channel, body, WAIT).await,
        "REST publish on {http} acknowledged"
    );
}

/// A REST GET that must succeed, as JSON.
pub async fn get(http: &str, key: &str, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("http://{http}{path}"))
        .header("Authorization", auth(key))
        .timeout(WAIT)
        .send()
        .await
        .expect("REST read");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("JSON body")
}

/// A WebSocket client of the node at `http` (`query`: further parameters,
/// each starting with `&`); the connection and its CONNECTED frame.
pub async fn connect(http: &str, key: &str, query: &str) -> (Ws, Value) {
    connect_as(http, key, "json", query).await
}

/// [`connect`] with frames in `format` (`json` or `msgpack`); what is sent is
/// JSON either way (the server takes both).
pub async fn connect_as(http: &str, key: &str, format: &str, query: &str) -> (Ws, Value) {
    let url = format!(
        "ws://{http}/?key={}&format={format}&v=5{query}",
        key.replace(':', "%3A")
    );
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("ws connect in time")
        .expect("ws connect");
    if format == "msgpack" {
        let first = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("CONNECTED in time")
            .expect("a frame")
            .expect("ws read");
        let WsMessage::Binary(b) = first else {
            panic!("a msgpack connection's frames are binary: {first:?}");
        };
        let pm: tidewire_realtime::protocol::ProtocolMessage =
            rmp_serde::from_slice(&b).expect("msgpack frame");
        let connected = serde_json::to_value(pm).expect("as JSON");
        assert_eq!(connected["action"], 4, "CONNECTED first: {connected}");
        return (ws, connected);
    }
    let connected = next_action(&mut ws, 4).await;
    (ws, connected)
}

/// ATTACH, waiting for ATTACHED.
pub async fn attach(ws: &mut Ws, channel: &str) {
    send(ws, json!({"action": 10, "channel": channel})).await;
    next_action(ws, 11).await;
}

/// Enters a presence member with `data` on `channel` as the connection's
/// message `msg_serial`, waiting for the ACK.
pub async fn enter(ws: &mut Ws, channel: &str, msg_serial: u64, data: &str) {
    send(
        ws,
        json!({"action": 14, "channel": channel, "msgSerial": msg_serial,
               "presence": [{"action": 2, "data": data}]}),
    )
    .await;
    next_action(ws, 1).await;
}

/// ATTACH on a msgpack connection, waiting for ATTACHED.
pub async fn attach_msgpack(ws: &mut Ws, channel: &str) {
    send_msgpack(ws, json!({"action": 10, "channel": channel})).await;
    next_action(ws, 11).await;
}

/// Sends `frame` as a msgpack protocol message.
pub async fn send_msgpack(ws: &mut Ws, frame: Value) {
    let pm: tidewire_realtime::protocol::ProtocolMessage =
        serde_json::from_value(frame).expect("a protocol message");
    let bytes = rmp_serde::to_vec_named(&pm).expect("msgpack");
    ws.send(WsMessage::Binary(bytes.into()))
        .await
        .expect("ws send");
}

pub async fn send(ws: &mut Ws, frame: Value) {
    ws.send(WsMessage::Text(frame.to_string().into()))
        .await
        .expect("ws send");
}

/// The next frame with `action` before `deadline`, `None` past it.
pub async fn action_before(ws: &mut Ws, action: u64, deadline: Instant) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()?
            .expect("stream ended")
            .expect("ws error");
        let v: Value = match frame {
            WsMessage::Text(t) => serde_json::from_str(&t).expect("json frame"),
            WsMessage::Binary(b) => {
                let pm: tidewire_realtime::protocol::ProtocolMessage =
                    rmp_serde::from_slice(&b).expect("msgpack frame");
                serde_json::to_value(pm).expect("as JSON")
            }
            _ => continue,
        };
        if v["action"].as_u64() == Some(action) {
            return Some(v);
        }
    }
}

/// The next frame with `action`, within the bounded wait.
pub async fn next_action(ws: &mut Ws, action: u64) -> Value {
    action_before(ws, action, Instant::now() + WAIT)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for action {action}"))
}

/// Every message received until one whose data is `until` (included).
pub async fn messages_until(ws: &mut Ws, until: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let frame = next_action(ws, 15).await;
        for m in frame["messages"].as_array().cloned().unwrap_or_default() {
            let last = m["data"] == until;
            got.push(m);
            if last {
                return got;
            }
        }
    }
}

/// The `data` of messages (a history page's or received ones), as text.
pub fn data_of(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["data"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Nothing more arrives on `ws` for a short while.
pub async fn assert_no_more_messages(ws: &mut Ws, who: &str) {
    let extra = action_before(ws, 15, Instant::now() + Duration::from_millis(300)).await;
    assert!(extra.is_none(), "{who}: nothing delivered twice: {extra:?}");
}

/// Resumes connection `id` (its `connection_key`, with clientId `client`) on
/// the node at `http` and re-attaches `channel` from `channel_serial`: checks
/// it is the same connection and that the attach is continuous but does not
/// claim RESUMED (its presence members were the old node's: the client enters
/// them again here). Returns the connection, ready for the replay.
pub async fn resume_on(
    http: &str,
    key: &str,
    client: &str,
    (id, connection_key): (&str, &str),
    channel: &str,
    channel_serial: &str,
) -> Ws {
    let query = format!(
        "&clientId={client}&resume={}",
        connection_key.replace('!', "%21")
    );
    let (mut ws, resumed) = connect(http, key, &query).await;
    assert!(resumed.get("error").is_none(), "resumed: {resumed}");
    assert_eq!(resumed["connectionId"], id, "same connection");
    send(
        &mut ws,
        json!({"action": 10, "channel": channel, "channelSerial": channel_serial, "flags": 32}),
    )
    .await;
    let attached = next_action(&mut ws, 11).await;
    assert!(
        attached.get("error").is_none(),
        "continuous on {http}: {attached}"
    );
    assert_eq!(
        attached["flags"].as_u64().unwrap_or(0) & 4,
        0,
        "not RESUMED: {attached}"
    );
    ws
}
