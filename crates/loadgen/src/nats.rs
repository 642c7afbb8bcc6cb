//! NATS client protocol over nats-server's WebSocket listener: INFO, CONNECT, SUB,
//! PUB/MSG, PING/PONG. A protocol operation may span WebSocket frames and one frame
//! may hold several operations, so input goes through a small streaming [`Parser`].

use anyhow::{anyhow, bail};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::{connect_ws, make_payload, next_data, record, ticker, Args, Shared, SubResult, Ws};

/// Longest control line accepted before the input is declared garbage.
const MAX_LINE: usize = 64 * 1024;
/// Largest message payload accepted.
const MAX_PAYLOAD: usize = 8 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    Info,
    Msg(Vec<u8>),
    Ping,
    Pong,
    Ok,
    Err(String),
}

#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete operation, `Ok(None)` if more input is needed.
    pub fn next_op(&mut self) -> anyhow::Result<Option<Op>> {
        let Some(eol) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            if self.buf.len() > MAX_LINE {
                bail!("NATS control line too long");
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&self.buf[..eol])
            .map_err(|_| anyhow!("NATS control line is not UTF-8"))?
            .to_owned();
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let op = match verb.as_str() {
            "MSG" => {
                let args: Vec<&str> = words.collect();
                let n: usize = args
                    .last()
                    .and_then(|n| n.parse().ok())
                    .filter(|_| args.len() == 3 || args.len() == 4)
                    .ok_or_else(|| anyhow!("bad MSG line: {line}"))?;
                if n > MAX_PAYLOAD {
                    bail!("NATS payload of {n} bytes is too large");
                }
                let start = eol + 2;
                if self.buf.len() < start + n + 2 {
                    return Ok(None);
                }
                let payload = self.buf[start..start + n].to_vec();
                self.buf.drain(..start + n + 2);
                return Ok(Some(Op::Msg(payload)));
            }
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(line.clone()),
            "INFO" => Op::Info,
            _ => bail!("unexpected NATS operation: {line}"),
        };
        self.buf.drain(..eol + 2);
        Ok(Some(op))
    }
}

fn connect_line() -> String {
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"0.1\",\"protocol\":1,\"headers\":false,\"no_responders\":false}\r\n".to_string()
}

async fn send(ws: &mut Ws, s: String) -> anyhow::Result<()> {
    ws.send(Message::Text(s.into())).await?;
    Ok(())
}

/// Reads until `want` (by discriminant), answering PINGs; fails on -ERR.
async fn expect(ws: &mut Ws, parser: &mut Parser, want: &Op) -> anyhow::Result<()> {
    loop {
        while let Some(op) = parser.next_op()? {
            match op {
                Op::Ping => send(ws, "PONG\r\n".into()).await?,
                Op::Err(e) => bail!("server: {e}"),
                op if std::mem::discriminant(&op) == std::mem::discriminant(want) => return Ok(()),
                _ => {}
            }
        }
        let Some(data) = next_data(ws).await? else {
            bail!("connection closed during handshake");
        };
        parser.push(&data);
    }
}

async fn handshake(args: &Args) -> anyhow::Result<(Ws, Parser)> {
    let mut ws = connect_ws(&args.url).await?;
    let mut parser = Parser::default();
    expect(&mut ws, &mut parser, &Op::Info).await?;
    send(&mut ws, connect_line()).await?;
    Ok((ws, parser))
}

pub async fn subscribe(args: &Args) -> anyhow::Result<Ws> {
    let (mut ws, mut parser) = handshake(args).await?;
    send(&mut ws, format!("SUB {} 1\r\nPING\r\n", args.channel)).await?;
    // PONG after SUB: the server has processed the subscription.
    expect(&mut ws, &mut parser, &Op::Pong).await?;
    Ok(ws)
}

/// Handles one frame on a subscriber; false ends the subscriber.
pub async fn on_frame(
    shared: &Shared,
    res: &mut SubResult,
    parser: &mut Parser,
    ws: &mut Ws,
    data: &[u8],
) -> bool {
    parser.push(data);
    loop {
        match parser.next_op() {
            Ok(None) => return true,
            Ok(Some(Op::Msg(p))) => record(shared, res, &p),
            Ok(Some(Op::Ping)) => {
                if send(ws, "PONG\r\n".into()).await.is_err() {
                    return false;
                }
            }
            Ok(Some(Op::Err(e))) => {
                eprintln!("subscriber: server said {e}");
                return false;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                eprintln!("subscriber: {e:#}");
                return false;
            }
        }
    }
}

pub async fn publish(args: &Args, shared: &Shared, total: u64) -> anyhow::Result<(u64, u64)> {
    let limit = std::time::Duration::from_secs(args.connect_timeout);
    let (mut ws, mut parser) = tokio::time::timeout(limit, handshake(args))
        .await
        .map_err(|_| anyhow!("publisher handshake timed out"))??;
    let pad = "x".repeat(args.payload_bytes);
    let mut tick = ticker(args.rate);
    let mut sent = 0u64;
    while sent < total {
        tokio::select! {
            _ = tick.tick() => {
                let payload = make_payload(sent, shared.now_us(), &pad);
                send(&mut ws, format!("PUB {} {}\r\n{payload}\r\n", args.channel, payload.len())).await?;
                sent += 1;
            }
            frame = next_data(&mut ws) => {
                let Some(data) = frame? else { bail!("publisher connection closed") };
                parser.push(&data);
                while let Some(op) = parser.next_op()? {
                    match op {
                        Op::Ping => send(&mut ws, "PONG\r\n".into()).await?,
                        Op::Err(e) => bail!("publisher: server said {e}"),
                        _ => {}
                    }
                }
            }
        }
    }
    // A final PING/PONG: every PUB before it has been processed by the server.
    send(&mut ws, "PING\r\n".into()).await?;
    let acked = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        expect(&mut ws, &mut parser, &Op::Pong),
    )
    .await
    {
        Ok(Ok(())) => sent,
        _ => 0,
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), ws.close(None)).await;
    Ok((sent, acked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_and_batched_operations() {
        let mut p = Parser::default();
        p.push(b"INFO {\"server_id\":\"x\"}\r\nPI");
        assert_eq!(p.next_op().unwrap(), Some(Op::Info));
        assert_eq!(p.next_op().unwrap(), None);
        p.push(b"NG\r\nMSG bench 1 5\r\nhel");
        assert_eq!(p.next_op().unwrap(), Some(Op::Ping));
        assert_eq!(p.next_op().unwrap(), None);
        p.push(b"lo\r\nMSG bench 1 r.x 2\r\nhi\r\n+OK\r\n-ERR 'bad'\r\n");
        assert_eq!(p.next_op().unwrap(), Some(Op::Msg(b"hello".to_vec())));
        assert_eq!(p.next_op().unwrap(), Some(Op::Msg(b"hi".to_vec())));
        assert_eq!(p.next_op().unwrap(), Some(Op::Ok));
        assert!(matches!(p.next_op().unwrap(), Some(Op::Err(_))));
        assert_eq!(p.next_op().unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        let mut p = Parser::default();
        p.push(b"WHAT\r\n");
        assert!(p.next_op().is_err());
        let mut p = Parser::default();
        p.push(b"MSG a b\r\n");
        assert!(p.next_op().is_err());
        let mut p = Parser::default();
        p.push(b"MSG a 1 99999999999\r\n");
        assert!(p.next_op().is_err());
    }
}
