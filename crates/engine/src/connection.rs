//! One pipelined connection to one engine node. Requests from every client of a
//! Tidewire node share it: a writer task sends them in order, a reader task hands
//! each its replies in the same order (RESP answers in order on one connection).
//! Neither task holds a lock; they talk through channels. The stream is TCP, or
//! TLS over TCP for `rediss://` engines.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tidewire_resp::{decode_lossy as decode, encode_command, Protocol, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::error::EngineError;
use crate::seed::Credentials;
use crate::tls::EngineTls;

/// Either half of a plain or TLS stream: the loops do not care which.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// What every connection to the engine's nodes is opened with: the seeds'
/// credentials and scheme (nodes learned later are reached the same way), and
/// whom to tell when one breaks.
#[derive(Clone, Default, Debug)]
pub struct Connector {
    /// Sent with `AUTH` first thing on every connection.
    pub credentials: Option<Credentials>,
    /// `Some` for `rediss://`.
    pub tls: Option<EngineTls>,
    /// Notified when a connection is lost on the engine's side (not when it is
    /// dropped here): the topology may have changed.
    pub lost: Option<Arc<Notify>>,
}

/// Bytes gathered from queued requests before one write.
const WRITE_BATCH: usize = 256 * 1024;
/// Read buffer room kept between replies; more, grown for a large reply, is
/// given back once that reply is decoded.
const KEPT_READ_BUFFER: usize = 1024 * 1024;

/// A request on its way: its commands in wire form and how many replies end it.
struct Request {
    wire: BytesMut,
    replies: usize,
    done: oneshot::Sender<Result<Vec<Reply>, EngineError>>,
}

/// A request written and waiting for its replies.
struct Waiting {
    replies: usize,
    done: oneshot::Sender<Result<Vec<Reply>, EngineError>>,
}

/// Where a subscriber connection's out-of-band data goes: `Some(push)` for each
/// message or subscription change, `None` once when the connection is gone (its
/// subscriptions with it).
pub type PushSink = Arc<dyn Fn(Option<Reply>) + Send + Sync>;

/// A handle on one node connection; clones share it.
#[derive(Clone)]
pub struct NodeConnection {
    requests: mpsc::UnboundedSender<Request>,
    alive: Arc<AtomicBool>,
}

impl NodeConnection {
    /// Connects (TLS first for `rediss://`), authenticates and (for RESP3) says
    /// `HELLO 3`, within `timeout`.
    pub async fn open(
        addr: &str,
        connector: &Connector,
        proto: Protocol,
        timeout: Duration,
    ) -> Result<NodeConnection, EngineError> {
        NodeConnection::open_with(addr, connector, proto, timeout, None).await
    }

    /// A RESP3 connection for SUBSCRIBE and the like: what the engine pushes
    /// (confirmations and messages alike) goes to `pushes`; requests sent with
    /// [`NodeConnection::send_without_reply`] get no reply of their own.
    pub async fn open_subscriber(
        addr: &str,
        connector: &Connector,
        timeout: Duration,
        pushes: PushSink,
    ) -> Result<NodeConnection, EngineError> {
        NodeConnection::open_with(addr, connector, Protocol::Resp3, timeout, Some(pushes)).await
    }

    async fn open_with(
        addr: &str,
        connector: &Connector,
        proto: Protocol,
        timeout: Duration,
        pushes: Option<PushSink>,
    ) -> Result<NodeConnection, EngineError> {
        let unreachable = |e: String| EngineError::Unreachable(format!("{addr}: {e}"));
        let (mut reader, mut writer) =
            connect_stream(addr, connector.tls.as_ref(), timeout).await?;
        let credentials = connector.credentials.as_ref();
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut handshake: Vec<Vec<Bytes>> = Vec::new();
        if let Some(c) = credentials {
            let mut auth = vec![Bytes::from_static(b"AUTH")];
            if let Some(user) = &c.user {
                auth.push(Bytes::copy_from_slice(user.as_bytes()));
            }
            auth.push(Bytes::copy_from_slice(c.password.as_bytes()));
            handshake.push(auth);
        }
        if proto == Protocol::Resp3 {
            handshake.push(vec![Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")]);
        }
        let steps = async {
            for argv in &handshake {
                let mut wire = BytesMut::new();
                encode_command(&mut wire, argv);
                writer
                    .write_all(&wire)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                if let Reply::Error(e) = read_one(&mut reader, &mut inbuf, addr).await? {
                    let step = String::from_utf8_lossy(&argv[0]).into_owned();
                    return Err(EngineError::Config(format!("{addr} refused {step}: {e}")));
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| unreachable("handshake timed out".into()))??;
        let alive = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicBool::new(false));
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (waiting_tx, waiting_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            writer,
            request_rx,
            waiting_tx,
            alive.clone(),
            dropped.clone(),
        ));
        let ending = Ending {
            alive: alive.clone(),
            dropped,
            lost: connector.lost.clone(),
        };
        tokio::spawn(read_loop(reader, inbuf, waiting_rx, ending, pushes));
        Ok(NodeConnection { requests, alive })
    }

    /// False once the connection broke: the next request should use a new one.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && !self.requests.is_closed()
    }

    /// Marks the connection broken (a request on it timed out).
    pub fn abandon(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    /// Sends `commands` back to back and returns one reply per command.
    pub async fn send(&self, commands: &[Vec<Bytes>]) -> Result<Vec<Reply>, EngineError> {
        self.send_expecting(commands, commands.len()).await
    }

    /// Sends commands whose answers are pushes (SUBSCRIBE … on a subscriber
    /// connection); returns once they are written.
    pub async fn send_without_reply(&self, commands: &[Vec<Bytes>]) -> Result<(), EngineError> {
        self.send_expecting(commands, 0).await.map(drop)
    }

    async fn send_expecting(
        &self,
        commands: &[Vec<Bytes>],
        replies: usize,
    ) -> Result<Vec<Reply>, EngineError> {
        let mut wire = BytesMut::new();
        for argv in commands {
            encode_command(&mut wire, argv);
        }
        let (done, answer) = oneshot::channel();
        let request = Request {
            wire,
            replies,
            done,
        };
        if self.requests.send(request).is_err() {
            self.abandon();
            return Err(EngineError::Unreachable("connection closed".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(EngineError::Lost("connection closed".into())))
    }
}

/// The stream to `addr`, TLS over TCP when `tls` is given, in halves; the
/// connect and the TLS handshake each within `timeout`.
async fn connect_stream(
    addr: &str,
    tls: Option<&EngineTls>,
    timeout: Duration,
) -> Result<(ReadHalf, WriteHalf), EngineError> {
    let unreachable = |e: String| EngineError::Unreachable(format!("{addr}: {e}"));
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(match tls {
        None => {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        Some(tls) => {
            // A plain port never answers a ClientHello: it waits for a line.
            let stream = tokio::time::timeout(timeout, tls.handshake(addr, stream))
                .await
                .map_err(|_| unreachable("TLS handshake timed out (is it a TLS port?)".into()))??;
            let (r, w) = tokio::io::split(stream);
            (Box::new(r), Box::new(w))
        }
    })
}

/// How a connection's reader learns how it ended: `dropped` is set when every
/// handle was dropped here, so the close that follows is not a loss to report.
struct Ending {
    alive: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
    lost: Option<Arc<Notify>>,
}

/// Reads one reply during the handshake.
async fn read_one(
    reader: &mut ReadHalf,
    inbuf: &mut BytesMut,
    addr: &str,
) -> Result<Reply, EngineError> {
    loop {
        match decode(inbuf) {
            Ok(Some((reply, used))) => {
                inbuf.advance(used);
                return Ok(reply);
            }
            Ok(None) => {}
            Err(e) => return Err(EngineError::Protocol(format!("{addr}: {e}"))),
        }
        match reader.read_buf(inbuf).await {
            Ok(0) => return Err(EngineError::Unreachable(format!("{addr}: closed"))),
            Ok(_) => {}
            Err(e) => return Err(EngineError::Unreachable(format!("{addr}: {e}"))),
        }
    }
}

async fn write_loop(
    mut writer: WriteHalf,
    mut requests: mpsc::UnboundedReceiver<Request>,
    waiting: mpsc::UnboundedSender<Waiting>,
    alive: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = requests.recv().await {
        let mut next = Some(first);
        let mut written = Vec::new();
        while let Some(request) = next.take() {
            out.extend_from_slice(&request.wire);
            if request.replies == 0 {
                // Nothing will answer it: done once written.
                written.push(request.done);
                if out.len() < WRITE_BATCH {
                    next = requests.try_recv().ok();
                }
                continue;
            }
            // Handed to the reader before the bytes leave, so a reply never
            // arrives ahead of the request it answers.
            let entry = Waiting {
                replies: request.replies,
                done: request.done,
            };
            if let Err(mpsc::error::SendError(entry)) = waiting.send(entry) {
                let _ = entry
                    .done
                    .send(Err(EngineError::Unreachable("connection closed".into())));
            }
            if out.len() < WRITE_BATCH {
                next = requests.try_recv().ok();
            }
        }
        if writer.write_all(&out).await.is_err() {
            alive.store(false, Ordering::Relaxed);
            return;
        }
        for done in written {
            let _ = done.send(Ok(Vec::new()));
        }
        out.clear();
        if out.capacity() > KEPT_READ_BUFFER {
            out = BytesMut::with_capacity(16 * 1024);
        }
    }
    // Every handle is gone: close our side (a TLS close_notify, then FIN), so
    // the engine closes too and the reader ends; a TLS read half would keep the
    // stream open otherwise.
    alive.store(false, Ordering::Relaxed);
    dropped.store(true, Ordering::Relaxed);
    let _ = writer.shutdown().await;
}

async fn read_loop(
    mut reader: ReadHalf,
    mut inbuf: BytesMut,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    ending: Ending,
    pushes: Option<PushSink>,
) {
    let mut queue: VecDeque<Waiting> = VecDeque::new();
    let mut replies: Vec<Reply> = Vec::new();
    let failure = 'read: loop {
        loop {
            let (reply, used) = match decode(&inbuf) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => break 'read EngineError::Protocol(e.to_string()),
            };
            inbuf.advance(used);
            // Out-of-band data is not an answer to anything.
            if matches!(reply, Reply::Push(_)) {
                if let Some(sink) = &pushes {
                    sink(Some(reply));
                }
                continue;
            }
            while let Ok(entry) = waiting.try_recv() {
                queue.push_back(entry);
            }
            let Some(front) = queue.front() else {
                // On a subscriber connection an error can come unasked (a refused
                // SSUBSCRIBE): it is the client's to see.
                if let Some(sink) = pushes.as_ref().filter(|_| reply.is_error()) {
                    sink(Some(reply));
                    continue;
                }
                break 'read EngineError::Protocol("a reply nobody asked for".into());
            };
            replies.push(reply);
            if replies.len() == front.replies {
                if let Some(entry) = queue.pop_front() {
                    let _ = entry.done.send(Ok(std::mem::take(&mut replies)));
                }
            }
        }
        if inbuf.is_empty() && inbuf.capacity() > KEPT_READ_BUFFER {
            // A large reply is gone: its room is not kept for the connection's life.
            inbuf = BytesMut::with_capacity(16 * 1024);
        } else if inbuf.capacity() - inbuf.len() < 8 * 1024 {
            // Large replies read in growing chunks, so they are decoded few times.
            inbuf.reserve(inbuf.len().max(16 * 1024));
        }
        match reader.read_buf(&mut inbuf).await {
            Ok(0) => break EngineError::Lost("closed by the engine".into()),
            Ok(_) => {}
            Err(e) => break EngineError::Lost(e.to_string()),
        }
    };
    ending.alive.store(false, Ordering::Relaxed);
    if !ending.dropped.load(Ordering::Relaxed) {
        if let Some(lost) = &ending.lost {
            lost.notify_one();
        }
    }
    if let Some(sink) = &pushes {
        sink(None);
    }
    waiting.close();
    while let Ok(entry) = waiting.try_recv() {
        queue.push_back(entry);
    }
    for entry in queue {
        let _ = entry.done.send(Err(failure.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_in_multibulk_form() {
        let mut out = BytesMut::new();
        encode_command(
            &mut out,
            &[
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"k"),
                Bytes::new(),
            ],
        );
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn an_error_line_that_is_not_utf8_is_still_a_reply() {
        // A script's error_reply can carry any bytes; one such reply must not
        // break the connection every client of the node shares.
        let (reply, used) = decode(b"-ERR bad \xff byte\r\n").unwrap().unwrap();
        assert_eq!(used, 17);
        assert!(matches!(reply, Reply::Error(e) if e.starts_with("ERR bad ")));
    }

    #[tokio::test]
    async fn a_close_by_the_engine_is_reported_and_a_drop_here_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            // The first connection is closed by the "engine"…
            let (first, _) = listener.accept().await.unwrap();
            drop(first);
            // …the second by us: the engine sees EOF and closes in turn.
            let (mut second, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            while second.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let lost = Arc::new(Notify::new());
        let connector = Connector {
            lost: Some(lost.clone()),
            ..Connector::default()
        };
        let wait = Duration::from_secs(5);
        let first = NodeConnection::open(&addr, &connector, Protocol::Resp2, wait)
            .await
            .unwrap();
        tokio::time::timeout(wait, lost.notified())
            .await
            .expect("the engine's close is reported");
        assert!(!first.is_alive());
        let second = NodeConnection::open(&addr, &connector, Protocol::Resp2, wait)
            .await
            .unwrap();
        drop(second);
        tokio::time::timeout(wait, server)
            .await
            .expect("a dropped connection is closed")
            .unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), lost.notified()).await;
        assert!(quiet.is_err(), "a connection dropped here is no loss");
    }

    #[tokio::test]
    async fn replies_reach_their_requests_in_order_and_a_close_fails_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            // Two commands, then two replies in one write, then close.
            while seen.windows(4).filter(|w| w == b"PING").count() < 2 {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"+one\r\n:2\r\n").await.unwrap();
        });
        let conn = NodeConnection::open(
            &addr,
            &Connector::default(),
            Protocol::Resp2,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let ping = vec![Bytes::from_static(b"PING")];
        let (a, b) = tokio::join!(conn.send(std::slice::from_ref(&ping)), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            conn.send(std::slice::from_ref(&ping)).await
        });
        assert!(matches!(&a.unwrap()[..], [Reply::SimpleString(s)] if s == "one"));
        assert!(matches!(&b.unwrap()[..], [Reply::Int(2)]));
        server.await.unwrap();
        let after = conn.send(std::slice::from_ref(&ping)).await;
        assert!(after.is_err());
        assert!(!conn.is_alive());
    }
}
