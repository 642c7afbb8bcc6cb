//! Shared helpers: start `router(hub)` on 127.0.0.1:0 and drive it with a raw
//! WebSocket client (JSON or msgpack) and reqwest.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tidewire_realtime::protocol::ProtocolMessage;
use tidewire_realtime::{router, Hub, MemoryHistoryStore, RealtimeConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const FULL_KEY: &str = "test.full:fullsecret";
pub const SUB_KEY: &str = "test.sub:subsecret";

/// Per-receive timeout; generous because CI machines are shared.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub fn base_config() -> RealtimeConfig {
    serde_json::from_value(json!({
        "keys": [
            {"key": FULL_KEY},
            {"key": SUB_KEY, "capability": {"public:*": ["subscribe", "history"], "chat": ["subscribe", "publish"]}}
        ]
    }))
    .expect("config")
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub hub: Arc<Hub>,
}

impl Server {
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

pub async fn start(config: RealtimeConfig) -> Server {
    let hub = Hub::new(config, Arc::new(MemoryHistoryStore::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(hub.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server { addr, hub }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fmt {
    Json,
    Msgpack,
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub fmt: Fmt,
}

impl Client {
    /// Connects with the raw query string (without the leading `?`).
    pub async fn connect(server: &Server, query: &str) -> Client {
        let fmt = if query.contains("format=msgpack") {
            Fmt::Msgpack
        } else {
            Fmt::Json
        };
        let url = format!("ws://{}/?{}", server.addr, query);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Client { ws, fmt }
    }

    /// Connects and waits for CONNECTED.
    pub async fn connected(server: &Server, query: &str) -> (Client, Value) {
        let mut c = Client::connect(server, query).await;
        let m = c.recv().await.expect("CONNECTED");
        assert_eq!(m["action"], 4, "expected CONNECTED, got {m}");
        (c, m)
    }

    pub async fn send(&mut self, v: Value) {
        let frame = match self.fmt {
            Fmt::Json => WsMsg::Text(v.to_string().into()),
            Fmt::Msgpack => WsMsg::Binary(rmp_serde::to_vec_named(&v).expect("msgpack").into()),
        };
        self.ws.send(frame).await.expect("send");
    }

    pub async fn send_raw(&mut self, m: WsMsg) {
        self.ws.send(m).await.expect("send");
    }

    /// Next protocol message as JSON (msgpack frames are decoded through the crate's
    /// types; binary data then shows as an array of numbers). `None` on close.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match next {
                Some(Ok(WsMsg::Text(t))) => return Some(serde_json::from_str(&t).expect("json")),
                Some(Ok(WsMsg::Binary(b))) => {
                    let pm: ProtocolMessage = rmp_serde::from_slice(&b).expect("msgpack frame");
                    return Some(serde_json::to_value(pm).expect("to json"));
                }
                Some(Ok(WsMsg::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next raw frame (including pings).
    pub async fn recv_raw(&mut self) -> Option<WsMsg> {
        tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
            .await
            .expect("timed out waiting for a frame")
            .and_then(Result::ok)
    }

    /// Skips messages until one with `action` arrives.
    pub async fn expect(&mut self, action: u64) -> Value {
        for _ in 0..100 {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for action {action}"));
            if m["action"] == action {
                return m;
            }
        }
        panic!("action {action} never arrived");
    }

    /// Attaches and waits for ATTACHED.
    pub async fn attach(&mut self, channel: &str) -> Value {
        self.send(json!({"action": 10, "channel": channel})).await;
        let m = self.recv().await.expect("attach reply");
        assert_eq!(m["action"], 11, "expected ATTACHED, got {m}");
        m
    }

    /// Whether the server closes the connection (possibly after more frames).
    pub async fn closes(&mut self) -> bool {
        for _ in 0..100 {
            if self.recv().await.is_none() {
                return true;
            }
        }
        false
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}
