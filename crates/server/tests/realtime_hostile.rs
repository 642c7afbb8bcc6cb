//! Hostile realtime clients through the real binary (issue #18): what one client
//! does must cost only that client. A subscriber that stops reading is cut off at
//! its output limit (and can resume from history), a WebSocket frame that declares
//! a huge length costs what was sent, not what was declared, and a signed
//! TokenRequest cannot be replayed across a restart.

#[path = "persistence_support/mod.rs"]
mod persistence_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use persistence_support::{try_start_with_toml, Node};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Payload of every published message.
const MESSAGE_BYTES: usize = 64 * 1024;
/// How far the publisher may run ahead of the healthy subscriber.
const IN_FLIGHT: usize = 16;

fn start(toml: &str) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = try_start_with_toml(dir.path(), toml).unwrap_or_else(|e| panic!("start: {e}"));
    (node, dir)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A raw Ably JSON WebSocket client on a socket with a small receive buffer, so
/// that one which stops reading fills up quickly and predictably.
async fn connect(node: &Node, extra: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let addr = format!("127.0.0.1:{}", node.http_port).parse().unwrap();
    let stream = socket.connect(addr).await.expect("tcp connect");
    let url = format!(
        "ws://127.0.0.1:{}/?key={}&format=json&v=5{extra}",
        node.http_port,
        urlencode(&node.realtime_key())
    );
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("ws handshake");
    ws
}

/// The next JSON protocol message, or `None` once the connection ended.
async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no frame within {wait:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_)))) => return None,
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                return Some(serde_json::from_str(&t).expect("JSON frame"))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn expect_action(ws: &mut Ws, action: u64) -> Value {
    for _ in 0..10_000 {
        let m = next_json(ws, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("connection ended waiting for action {action}"));
        if m["action"] == action {
            return m;
        }
    }
    panic!("no action {action}");
}

async fn attach(ws: &mut Ws, channel: &str, serial: Option<&str>) -> Value {
    let mut m = json!({"action": 10, "channel": channel});
    if let Some(s) = serial {
        m["channelSerial"] = json!(s);
    }
    ws.send(WsMessage::Text(m.to_string().into()))
        .await
        .unwrap();
    expect_action(ws, 11).await
}

/// Number of connections attached to `channel`, per the REST channel details.
async fn occupancy(node: &Node, channel: &str) -> u64 {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/channels/{channel}", node.http_base()))
        .basic_auth(
            node.realtime_key().split_once(':').unwrap().0,
            Some(node.realtime_key().split_once(':').unwrap().1),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["status"]["occupancy"]["metrics"]["connections"]
        .as_u64()
        .expect("connections metric")
}

/// Message payload `i`: its index first, so receivers can check order and gaps.
fn payload(i: usize) -> String {
    let mut p = format!("{i:08}:");
    p.push_str(&"x".repeat(MESSAGE_BYTES - p.len()));
    p
}

fn index_of(m: &Value) -> usize {
    let data = m["messages"][0]["data"].as_str().expect("string data");
    data[..8].parse().expect("index prefix")
}

/// One run: `slow` subscribers that never read, one healthy subscriber, `count`
/// 64 KiB messages published (paced to the healthy subscriber); the server's RSS
/// may grow by at most `max_growth_kib` while publishing.
async fn slow_subscribers_are_cut_off(slow: usize, count: usize, max_growth_kib: u64) {
    let (node, _dir) = start(
        "[realtime]\n\
         output_buffer_hard_limit = 4194304\n\
         output_buffer_soft_limit = 1048576\n\
         output_buffer_soft_secs = 10\n\
         history_retention_secs = 600\n",
    );
    let channel = "firehose";
    let mut slow_ws = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..slow {
        let mut ws = connect(&node, "").await;
        let connected = expect_action(&mut ws, 4).await;
        keys.push(
            connected["connectionDetails"]["connectionKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let attached = attach(&mut ws, channel, None).await;
        slow_ws.push((ws, attached["channelSerial"].as_str().unwrap().to_owned()));
    }
    let mut healthy = connect(&node, "").await;
    expect_action(&mut healthy, 4).await;
    attach(&mut healthy, channel, None).await;
    assert_eq!(occupancy(&node, channel).await, slow as u64 + 1);

    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut next = 0;
            while next < count {
                let m = expect_action(&mut healthy, 15).await;
                assert_eq!(index_of(&m), next, "healthy subscriber: in order, no gaps");
                next += 1;
                received.store(next, Ordering::Release);
            }
            healthy
        })
    };

    let before = node.rss_kib();
    let mut peak = before;
    let mut redis = node.conn();
    for i in 0..count {
        // Paced so that the healthy subscriber is never the one that falls behind.
        for _ in 0..20_000 {
            if received.load(Ordering::Acquire) + IN_FLIGHT > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload(i))
            .query(&mut redis)
            .expect("PUBLISH");
        if i % 16 == 0 {
            peak = peak.max(node.rss_kib());
        }
    }
    let mut healthy = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("healthy subscriber received everything")
        .unwrap();

    eprintln!("RSS KiB while publishing {count} x 64 KiB: before {before}, peak {peak}");
    assert!(
        peak.saturating_sub(before) < max_growth_kib,
        "RSS grew {} KiB",
        peak - before
    );
    // The slow subscribers were disconnected and left the channel.
    let mut occupied = occupancy(&node, channel).await;
    for _ in 0..300 {
        if occupied == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        occupied = occupancy(&node, channel).await;
    }
    assert_eq!(occupied, 1, "only the healthy subscriber is left");
    eprintln!("RSS KiB once they are gone: {}", node.rss_kib());

    for ((mut ws, mut last_serial), key) in slow_ws.into_iter().zip(keys) {
        // What the socket still held, then the end (DISCONNECTED first if the
        // socket took it).
        let mut seen = 0;
        loop {
            match next_json(&mut ws, Duration::from_secs(30)).await {
                None => break,
                Some(m) if m["action"] == 6 => assert_eq!(m["error"]["code"], 80003, "{m}"),
                Some(m) if m["action"] == 15 => {
                    assert_eq!(index_of(&m), seen, "slow subscriber: in order, no gaps");
                    seen += 1;
                    last_serial = m["channelSerial"].as_str().unwrap().to_owned();
                }
                Some(_) => {}
            }
        }
        assert!(seen < count, "the slow subscriber was cut off early");

        // It comes back with `resume` and is replayed what it missed.
        let mut back = connect(&node, &format!("&resume={}", urlencode(&key))).await;
        let connected = expect_action(&mut back, 4).await;
        assert!(connected["error"].is_null(), "resumed cleanly: {connected}");
        // The same connection, under a new key (as Ably gives on resume).
        let new_key = connected["connectionDetails"]["connectionKey"]
            .as_str()
            .unwrap_or_default();
        assert_ne!(new_key, key);
        assert_eq!(
            new_key.split_once('!').map(|k| k.1),
            key.split_once('!').map(|k| k.1)
        );
        let attached = attach(&mut back, channel, Some(&last_serial)).await;
        assert!(attached["error"].is_null(), "continuity kept: {attached}");
        for i in seen..count {
            let m = expect_action(&mut back, 15).await;
            assert_eq!(index_of(&m), i, "replay: in order, no gaps");
        }
    }
    healthy.close(None).await.ok();
}

/// Light default variant: two subscribers stop reading while ~31 MiB is published
/// against a 4 MiB limit. History keeps all of it (600 s retention), which is most
/// of the allowed growth; unbounded queues grew RSS by ~150 MiB here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_stop_reading_are_cut_off_and_resume_from_history() {
    slow_subscribers_are_cut_off(2, 500, 96 * 1024).await;
}

/// Heavier variant: three slow subscribers, ~62 MiB published (unbounded: RSS grew
/// by ~300 MiB). Still a few seconds, so it runs by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_slow_subscribers_keep_memory_bounded() {
    slow_subscribers_are_cut_off(3, 1000, 160 * 1024).await;
}

/// Opens a WebSocket by hand (so that frames can be written byte by byte) and
/// returns the socket once the server has switched protocols.
async fn raw_websocket(node: &Node) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.http_port))
        .await
        .expect("tcp connect");
    let req = format!(
        "GET /?key={}&format=json HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        urlencode(&node.realtime_key())
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "oversized handshake response");
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("handshake response")
            .unwrap();
        assert_eq!(n, 1, "connection closed during handshake");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Memory follows the bytes a client sends, not the lengths its frame headers
/// declare: many connections each announce a text frame just under the limit and
/// then trickle a few bytes of it. A guard: tungstenite already behaves so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_frame_lengths_do_not_reserve_memory() {
    use tokio::io::AsyncWriteExt;
    const CONNECTIONS: usize = 200;
    // Under the transport limit (2 x max_frame_size = 512 KiB), so not refused.
    const DECLARED: u64 = 500_000;
    let (node, _dir) = start("");
    let before = node.rss_kib();
    let mut sockets = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut s = raw_websocket(&node).await;
        // FIN + text, masked, 64-bit length, mask key, then 16 of the bytes.
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&DECLARED.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&[b'{' ^ 1; 16]);
        s.write_all(&frame).await.unwrap();
        sockets.push(s);
    }
    // Every connection still open and waiting for the rest of its frame: a
    // connection that answered and closed would not hold anything.
    let probe = occupancy_probe(&node).await;
    assert!(probe, "server still serves requests");
    let after = node.rss_kib();
    let declared_kib = CONNECTIONS as u64 * DECLARED / 1024;
    eprintln!("RSS KiB: before {before}, after {after}; declared {declared_kib} KiB in total");
    assert!(
        after.saturating_sub(before) < declared_kib / 4,
        "RSS grew {} KiB for {declared_kib} KiB declared",
        after - before
    );
    drop(sockets);
}

/// Whether the REST side answers (used as a barrier after raw socket writes).
async fn occupancy_probe(node: &Node) -> bool {
    occupancy(node, "probe").await == 0
}

/// A signed TokenRequest from before a restart cannot be exchanged again after
/// it (the nonce memory does not survive; the timestamp is refused instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_cannot_be_replayed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = try_start_with_toml(dir.path(), "").expect("start");
    let key = node.realtime_key();
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["token", "--format", "request", "--key", &key])
        .output()
        .expect("tidewire token");
    assert!(minted.status.success(), "{minted:?}");
    let request = String::from_utf8(minted.stdout).unwrap();
    let key_name = key.split_once(':').unwrap().0.to_owned();
    let exchange = |node: &Node| {
        reqwest::Client::new()
            .post(format!("{}/keys/{key_name}/requestToken", node.http_base()))
            .header("Content-Type", "application/json")
            .body(request.trim().to_owned())
            .send()
    };
    let first = exchange(&node).await.unwrap();
    assert_eq!(first.status(), 200);
    let again = exchange(&node).await.unwrap();
    assert_eq!(again.status(), 401, "replay before the restart");
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40105);

    node.stop();
    let node = try_start_with_toml(dir.path(), "").expect("restart");
    let replay = exchange(&node).await.unwrap();
    assert_eq!(replay.status(), 401, "replay after the restart");
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40104, "{body}");
    assert_eq!(body["error"]["statusCode"], 401);
    assert_eq!(body["error"]["message"], "Timestamp not current");
}
