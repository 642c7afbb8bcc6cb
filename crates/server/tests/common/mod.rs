//! Helpers for the RESP integration tests: an in-process server on 127.0.0.1:0 with
//! a temporary data directory, and a raw RESP2/RESP3 client that reads replies into
//! a small value tree so tests can compare exact bytes and error texts.

#![allow(dead_code)]

use std::time::Duration;

use tidewire_server::{Config, Server};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Every single wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A node's configuration on the engine at `engine` (`--engine`), ports 0 on
/// 127.0.0.1, its data in `dir`.
pub fn engine_config(engine: &str, dir: &tempfile::TempDir) -> Config {
    Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        engine: Some(engine.to_string()),
        ..Config::default()
    }
}

/// A node on the engine at `engine` with [`engine_config`], and its data
/// directory (kept for the node's life).
pub async fn engine_node(engine: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = tidewire_server::start(engine_config(engine, &dir))
        .await
        .expect("node starts on the engine");
    (server, dir)
}

pub async fn start() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let server = tidewire_server::start(config).await.expect("server starts");
    (server, dir)
}

pub fn url(server: &Server) -> String {
    format!("redis://{}/", server.resp_addr)
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<V>),
    Map(Vec<(V, V)>),
    Set(Vec<V>),
    Push(Vec<V>),
    Double(String),
    Bool(bool),
    Verbatim(String),
}

impl V {
    pub fn bulk(s: &str) -> V {
        V::Bulk(s.as_bytes().to_vec())
    }

    pub fn text(&self) -> String {
        match self {
            V::Simple(s) | V::Err(s) | V::Verbatim(s) | V::Double(s) => s.clone(),
            V::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            V::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

pub fn bulks(items: &[&str]) -> V {
    V::Array(items.iter().map(|s| V::bulk(s)).collect())
}

pub struct Raw {
    pub r: BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(server: &Server) -> Raw {
        let s = TcpStream::connect(server.resp_addr).await.expect("connect");
        Raw {
            r: BufReader::new(s),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, args: &[&str]) {
        self.send_raw(&encode(args)).await;
    }

    /// Sends a command and reads one reply.
    pub async fn cmd(&mut self, args: &[&str]) -> V {
        self.send(args).await;
        self.read().await
    }

    pub async fn read(&mut self) -> V {
        tokio::time::timeout(WAIT, read_value(&mut self.r))
            .await
            .expect("reply within the time limit")
            .expect("a reply, not a closed connection")
    }

    /// Reads a reply, or `None` when the server closed the connection.
    pub async fn try_read(&mut self) -> Option<V> {
        tokio::time::timeout(WAIT, read_value(&mut self.r))
            .await
            .expect("reply or close within the time limit")
    }

    /// True once the server has closed the connection (reads return EOF).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.r.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut l = String::new();
    let n = r.read_line(&mut l).await.ok()?;
    if n == 0 {
        return None;
    }
    Some(l.trim_end_matches("\r\n").to_string())
}

fn read_value(
    r: &mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<V>> + Send + '_>> {
    Box::pin(async move {
        let l = line(r).await?;
        let (t, rest) = l.split_at(1);
        let n = || rest.parse::<i64>().unwrap_or(-1);
        Some(match t {
            "+" => V::Simple(rest.into()),
            "-" => V::Err(rest.into()),
            ":" => V::Int(n()),
            "_" => V::Nil,
            "," => V::Double(rest.into()),
            "#" => V::Bool(rest == "t"),
            "$" | "=" => {
                if n() < 0 {
                    V::Nil
                } else {
                    let mut buf = vec![0u8; n() as usize + 2];
                    r.read_exact(&mut buf).await.ok()?;
                    buf.truncate(n() as usize);
                    if t == "=" {
                        V::Verbatim(String::from_utf8_lossy(&buf[4..]).into_owned())
                    } else {
                        V::Bulk(buf)
                    }
                }
            }
            "*" | "~" | ">" => {
                if n() < 0 {
                    V::Nil
                } else {
                    let mut v = Vec::new();
                    for _ in 0..n() {
                        v.push(read_value(r).await?);
                    }
                    match t {
                        "*" => V::Array(v),
                        "~" => V::Set(v),
                        _ => V::Push(v),
                    }
                }
            }
            "%" => {
                let mut v = Vec::new();
                for _ in 0..n() {
                    let k = read_value(r).await?;
                    let val = read_value(r).await?;
                    v.push((k, val));
                }
                V::Map(v)
            }
            other => panic!("unexpected reply type {other:?} in {l:?}"),
        })
    })
}

/// Polls `f` until it returns true, at most `WAIT` (bounded, no timing assertion).
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A `redis` crate connection to the server.
pub async fn redis_conn(server: &Server) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url(server)).expect("client");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// One Upstash REST command (`body`: the command as a JSON array) with `token`;
/// the JSON answer.
pub async fn rest_call(server: &Server, token: &str, body: serde_json::Value) -> serde_json::Value {
    rest_post(server, token, "", body).await
}

/// A POST to `path` under the REST mount (`""`, `/pipeline`, `/multi-exec`) with
/// `token`; the JSON answer.
pub async fn rest_post(
    server: &Server,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("http://{}/redis{path}", server.http_addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON answer")
}
