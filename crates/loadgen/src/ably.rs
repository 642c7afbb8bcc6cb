//! Ably realtime protocol (v5): the few frames the benchmark needs, JSON or msgpack.

use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    connect_ws, make_payload, next_data, record, ticker, Args, Format, Shared, SubResult, Ws,
};

const ACK: u64 = 1;
const NACK: u64 = 2;
const CONNECTED: u64 = 4;
const DISCONNECTED: u64 = 6;
const ERROR: u64 = 9;
const ATTACH: u8 = 10;
const ATTACHED: u64 = 11;
const DETACHED: u64 = 13;
const MESSAGE: u8 = 15;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Out<'a> {
    action: u8,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_serial: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    messages: Vec<OutMessage<'a>>,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    name: &'a str,
    data: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct In {
    action: u64,
    count: Option<u64>,
    messages: Vec<InMessage>,
    error: Option<InError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InMessage {
    data: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct InError {
    code: Option<u64>,
    message: Option<String>,
}

fn decode(format: Format, data: &[u8]) -> anyhow::Result<In> {
    Ok(match format {
        Format::Json => serde_json::from_slice(data)?,
        Format::Msgpack => rmp_serde::from_slice(data)?,
    })
}

fn encode(format: Format, out: &Out<'_>) -> anyhow::Result<Message> {
    Ok(match format {
        Format::Json => Message::Text(serde_json::to_string(out)?.into()),
        Format::Msgpack => Message::Binary(rmp_serde::to_vec_named(out)?.into()),
    })
}

/// The URL of client `i` (the publisher is 0): `--url` may list several nodes
/// of one deployment, comma-separated, and clients take them in turn.
fn url(args: &Args, client: &str, i: usize) -> String {
    let fmt = match args.format {
        Format::Json => "json",
        Format::Msgpack => "msgpack",
    };
    let nodes: Vec<&str> = args.url.split(',').map(str::trim).collect();
    let base = nodes[i % nodes.len()].trim_end_matches('/');
    format!(
        "{base}/?key={}&format={fmt}&v=5&heartbeats=false&clientId={client}",
        encode_component(&args.key)
    )
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads frames until one with `action` arrives; fails on ERROR/DISCONNECTED.
async fn expect(ws: &mut Ws, format: Format, action: u64) -> anyhow::Result<()> {
    loop {
        let Some(data) = next_data(ws).await? else {
            bail!("connection closed while waiting for action {action}");
        };
        let pm = decode(format, &data)?;
        if pm.action == action {
            return Ok(());
        }
        if matches!(pm.action, ERROR | DISCONNECTED | DETACHED) {
            bail!("server sent action {}: {:?}", pm.action, pm.error);
        }
    }
}

pub async fn subscribe(args: &Args, i: usize) -> anyhow::Result<Ws> {
    let mut ws = connect_ws(&url(args, &format!("sub{i}"), i)).await?;
    expect(&mut ws, args.format, CONNECTED).await?;
    let attach = Out {
        action: ATTACH,
        channel: &args.channel,
        msg_serial: None,
        messages: Vec::new(),
    };
    ws.send(encode(args.format, &attach)?).await?;
    expect(&mut ws, args.format, ATTACHED).await?;
    Ok(ws)
}

/// Handles one frame on a subscriber; false ends the subscriber.
pub fn on_frame(args: &Args, shared: &Shared, res: &mut SubResult, data: &[u8]) -> bool {
    if args.format == Format::Json && fast_json_messages(shared, res, data) {
        return true;
    }
    let pm = match decode(args.format, data) {
        Ok(pm) => pm,
        Err(_) => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    };
    match pm.action {
        a if a == u64::from(MESSAGE) => {
            for m in &pm.messages {
                match &m.data {
                    Some(d) => record(shared, res, d.as_bytes()),
                    None => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            true
        }
        ERROR | DISCONNECTED | DETACHED => {
            if shared.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("subscriber got action {}: {:?}", pm.action, pm.error);
            }
            pm.action == DETACHED
        }
        _ => true,
    }
}

pub async fn publish(args: &Args, shared: &Shared, total: u64) -> anyhow::Result<(u64, u64)> {
    let limit = std::time::Duration::from_secs(args.connect_timeout);
    let mut ws = tokio::time::timeout(limit, async {
        let mut ws = connect_ws(&url(args, "publisher", 0)).await?;
        expect(&mut ws, args.format, CONNECTED).await?;
        Ok::<_, anyhow::Error>(ws)
    })
    .await
    .map_err(|_| anyhow!("publisher handshake timed out"))??;
    let pad = "x".repeat(args.payload_bytes);
    let mut tick = ticker(args.rate);
    let (mut sent, mut acked, mut nacked) = (0u64, 0u64, 0u64);
    let mut ack_deadline = None;
    loop {
        if sent >= total && acked + nacked >= sent {
            break;
        }
        if sent >= total && ack_deadline.is_none() {
            ack_deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
        }
        let wait_acks = async {
            match ack_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick(), if sent < total => {
                let out = Out {
                    action: MESSAGE,
                    channel: &args.channel,
                    msg_serial: Some(sent),
                    messages: vec![OutMessage {
                        name: "b",
                        data: make_payload(sent, shared.now_us(), &pad),
                    }],
                };
                ws.send(encode(args.format, &out)?).await?;
                sent += 1;
            }
            frame = ws.next() => match frame {
                None => bail!("publisher connection closed"),
                Some(Err(e)) => bail!("publisher connection: {e}"),
                Some(Ok(Message::Text(t))) => count_acks(args.format, t.as_bytes(), &mut acked, &mut nacked)?,
                Some(Ok(Message::Binary(b))) => count_acks(args.format, &b, &mut acked, &mut nacked)?,
                Some(Ok(Message::Ping(p))) => ws.send(Message::Pong(p)).await?,
                Some(Ok(_)) => {}
            },
            _ = wait_acks => {
                eprintln!("publisher: {} of {sent} publishes unacknowledged after 5 s", sent - acked - nacked);
                break;
            }
        }
    }
    if nacked > 0 {
        eprintln!("publisher: {nacked} publishes NACKed");
    }
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), ws.close(None)).await;
    Ok((sent, acked))
}

/// Cheap path for JSON MESSAGE frames, so that the generator (which shares the
/// machine with the server) spends as little CPU per delivery as the NATS path does:
/// a top-level `"action":15` and one `"data":"<payload>"` per message. Our payloads
/// contain no quotes or escapes. Returns false (and records nothing) when the frame
/// does not look like that; the caller then decodes it fully.
fn fast_json_messages(shared: &Shared, res: &mut SubResult, data: &[u8]) -> bool {
    const ACTION: &[u8] = b"\"action\":15";
    const DATA: &[u8] = b"\"data\":\"";
    let Some(at) = find(data, ACTION) else {
        return false;
    };
    if !matches!(data.get(at + ACTION.len()), Some(b',' | b'}')) {
        return false;
    }
    let mut rest = data;
    let mut seen = 0;
    while let Some(i) = find(rest, DATA) {
        rest = &rest[i + DATA.len()..];
        let Some(end) = rest.iter().position(|&b| b == b'"') else {
            break;
        };
        record(shared, res, &rest[..end]);
        rest = &rest[end..];
        seen += 1;
    }
    seen > 0
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count_acks(
    format: Format,
    data: &[u8],
    acked: &mut u64,
    nacked: &mut u64,
) -> anyhow::Result<()> {
    let Ok(pm) = decode(format, data) else {
        return Ok(());
    };
    match pm.action {
        ACK => *acked += pm.count.unwrap_or(1),
        NACK => {
            if *nacked == 0 {
                eprintln!("publisher NACK: {:?}", pm.error);
            }
            *nacked += pm.count.unwrap_or(1)
        }
        ERROR | DISCONNECTED => bail!("publisher got action {}: {:?}", pm.action, pm.error),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_formats() {
        let j =
            br#"{"action":15,"channel":"bench","messages":[{"data":"1 2 "}],"connectionId":"x"}"#;
        let pm = decode(Format::Json, j).unwrap();
        assert_eq!(pm.action, 15);
        assert_eq!(pm.messages[0].data.as_deref(), Some("1 2 "));
        let out = Out {
            action: MESSAGE,
            channel: "bench",
            msg_serial: Some(3),
            messages: vec![OutMessage {
                name: "b",
                data: "1 2 ".into(),
            }],
        };
        let Message::Binary(b) = encode(Format::Msgpack, &out).unwrap() else {
            panic!("binary expected")
        };
        let pm = decode(Format::Msgpack, &b).unwrap();
        assert_eq!(pm.action, 15);
        assert_eq!(pm.messages[0].data.as_deref(), Some("1 2 "));
        assert!(decode(Format::Json, b"{nope").is_err());
    }

    #[test]
    fn fast_path_matches_message_frames_only() {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let shared = Shared {
            base: std::time::Instant::now(),
            ready: Default::default(),
            failed: Default::default(),
            delivered: Default::default(),
            errors: Default::default(),
            stop: rx,
        };
        let mut res = SubResult::default();
        let f = br#"{"action":15,"channel":"bench","messages":[{"id":"a:0","data":"1 0 ","name":"b"},{"data":"2 0 "}]}"#;
        assert!(fast_json_messages(&shared, &mut res, f));
        assert_eq!(res.latencies_us.len(), 2);
        assert!(!fast_json_messages(
            &shared,
            &mut res,
            br#"{"action":1,"msgSerial":0}"#
        ));
        assert!(!fast_json_messages(&shared, &mut res, br#"{"action":150}"#));
        assert!(!fast_json_messages(
            &shared,
            &mut res,
            br#"{"action":15,"messages":[]}"#
        ));
        assert_eq!(res.latencies_us.len(), 2);
    }

    #[test]
    fn key_is_percent_encoded() {
        assert_eq!(encode_component("a.b:c/d"), "a.b%3Ac%2Fd");
    }
}
