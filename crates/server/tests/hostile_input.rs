//! Hostile input through the real binary: what a malicious or broken client sends
//! costs that client only. Memory is read from the server process (`VmRSS`) and
//! from `INFO`, never assumed.
//!
//! - a NUL byte inside an inline command (it used to spin a core and allocate
//!   without bound, before AUTH);
//! - a bulk length header declaring far more than is sent (it used to reserve the
//!   declared size, count it against `maxmemory` and evict everyone's keys);
//! - an HTTP body declaring a large `Content-Length` and sending a little;
//! - a second server started on a data dir in use (it used to start, and the two
//!   lost each other's acknowledged writes);
//! - DEBUG OBJECT / DIGEST / DIGEST-VALUE inside MULTI (each locked the keyspace its
//!   own EXEC held: the whole server hung).

mod persistence_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use persistence_support::*;

/// Resident memory of the server process, in bytes.
fn rss(node: &Node) -> u64 {
    node.rss_kib() * 1024
}

fn raw(node: &Node) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// What arrives on `s` within its read timeout (empty: nothing).
fn read_some(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Reads until `want` arrives or the connection ends, for at most 10 s.
fn read_until(s: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !got.windows(want.len()).any(|w| w == want) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    got
}

fn ping(node: &Node) {
    let mut c = raw(node);
    c.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_until(&mut c, b"\r\n"), b"+PONG\r\n");
}

#[test]
fn nul_in_an_inline_command_costs_nothing_before_auth() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[("requirepass", "secret")]);
    let before = rss(&node);
    let inputs: [&[u8]; 3] = [b"PING\x00\n", b"\x00\n", b"GET a\x00b\r\n"];
    let mut conns: Vec<TcpStream> = inputs
        .iter()
        .map(|input| {
            let mut c = raw(&node);
            c.write_all(input).unwrap();
            c
        })
        .collect();
    // As redis-server: the NUL hides the newline, so there is no reply yet.
    std::thread::sleep(Duration::from_millis(500));
    for c in &mut conns {
        assert_eq!(read_some(c), b"", "no reply to a line cut by a NUL");
    }
    let grown = rss(&node).saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
    // Everyone else carries on.
    let mut c = raw(&node);
    c.write_all(b"AUTH secret\r\nPING\r\n").unwrap();
    assert_eq!(read_until(&mut c, b"PONG\r\n"), b"+OK\r\n+PONG\r\n");
    // Past the inline limit without a (visible) newline: Redis's error, then close.
    let c = &mut conns[0];
    c.write_all(&vec![b'x'; 70 * 1024]).unwrap();
    let reply = read_until(c, b"request\r\n");
    assert_eq!(reply, b"-ERR Protocol error: too big inline request\r\n");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        c.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "closed after the error"
    );
    let grown = rss(&node).saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
}

#[test]
fn a_declared_bulk_length_reserves_nothing_and_evicts_nobody() {
    const KEYS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        &[("maxmemory", "100mb"), ("maxmemory-policy", "allkeys-lru")],
    );
    let mut c = node.conn();
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.cmd("SET")
            .arg(format!("key:{i}"))
            .arg(&[b'v'; 100][..])
            .ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let used = |c: &mut redis::Connection| -> u64 {
        node.info_field(c, "used_memory").unwrap().parse().unwrap()
    };
    let used_before = used(&mut c);
    let rss_before = rss(&node);
    // Three clients each declare a 512 MB argument and send 4 KB of it.
    let hostile: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = raw(&node);
            s.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\n").unwrap();
            s.write_all(&[b'a'; 4096]).unwrap();
            s
        })
        .collect();
    // Let the server read all of it (a round trip on each proves nothing, the
    // requests are unfinished: wait for the bytes to be counted instead).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let input: u64 = node
            .info_field(&mut c, "total_net_input_bytes")
            .unwrap()
            .parse()
            .unwrap();
        if input >= 3 * 4096 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let used_after = used(&mut c);
    let grown = used_after.saturating_sub(used_before);
    assert!(grown < 4 << 20, "used_memory grew by {grown} bytes");
    let rss_grown = rss(&node).saturating_sub(rss_before);
    assert!(rss_grown < 16 << 20, "RSS grew by {rss_grown} bytes");
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, KEYS, "nothing was evicted");
    let evicted = node.info_field(&mut c, "evicted_keys").unwrap();
    assert_eq!(evicted, "0");
    redis::cmd("SET")
        .arg("after")
        .arg("ok")
        .query::<()>(&mut c)
        .unwrap();
    // A real large value still arrives whole, read as it comes.
    let big = vec![b'z'; 3 << 20];
    redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query::<()>(&mut c)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(back, big);
    drop(hostile);
    ping(&node);
}

/// A guard: the HTTP front doors already read bodies as they arrive; this keeps
/// them from starting to trust `Content-Length`.
#[test]
fn an_http_body_costs_what_arrived_not_its_content_length() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let before = rss(&node);
    // Just under the default 10 MB body limit, from 20 clients at once.
    let declared = 10 * 1024 * 1024 - 1;
    let mut conns = Vec::new();
    for path in ["/redis", "/channels/c/messages"] {
        for _ in 0..10 {
            let mut s = TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\
                 Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n["
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&[b' '; 1024]).unwrap();
            conns.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss(&node).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "RSS grew by {grown} bytes for ~20 KB received"
    );
    drop(conns);
    ping(&node);
}

#[test]
fn a_second_server_on_a_data_dir_in_use_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &[("appendfsync", "always")]);
    let mut c = first.conn();
    redis::cmd("SET")
        .arg("k")
        .arg("first")
        .query::<()>(&mut c)
        .unwrap();
    let err = match try_start(dir.path(), &[]) {
        Ok(_) => panic!("a second server started on a data dir in use"),
        Err(stderr) => stderr,
    };
    assert!(err.contains("is in use by another tidewire"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    // The first one is unharmed and still writes.
    redis::cmd("SET")
        .arg("k2")
        .arg("still")
        .query::<()>(&mut c)
        .unwrap();
    // A holder killed with SIGKILL leaves no stale lock behind.
    first.kill9();
    let second = start(dir.path(), &[]);
    let mut c = second.conn();
    let got: Vec<String> = redis::cmd("MGET").arg("k").arg("k2").query(&mut c).unwrap();
    assert_eq!(got, ["first", "still"]);
}

#[test]
fn an_sse_subscriber_that_never_reads_is_dropped_at_its_output_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        &[("client-output-buffer-limit", "pubsub 4mb 1mb 60")],
    );
    let token = std::fs::read_to_string(node.dir.join("rest-token")).unwrap();
    let mut sub = TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "GET /redis/subscribe/feed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token.trim()
    );
    sub.write_all(head.as_bytes()).unwrap();
    assert!(!read_until(&mut sub, b"subscribe,feed,1").is_empty());
    let mut c = node.conn();
    let before = rss(&node);
    // 64 MB published to a subscriber that reads nothing more.
    let message = vec![b'm'; 64 * 1024];
    let mut receivers = Vec::new();
    for _ in 0..1024 {
        let n: i64 = redis::cmd("PUBLISH")
            .arg("feed")
            .arg(&message)
            .query(&mut c)
            .unwrap();
        receivers.push(n);
    }
    assert_eq!(receivers[0], 1);
    assert_eq!(*receivers.last().unwrap(), 0, "the subscriber was dropped");
    let numsub: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("feed")
        .query(&mut c)
        .unwrap();
    assert_eq!(numsub.1, 0);
    let grown = rss(&node).saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "RSS grew by {grown} bytes for 64 MB published"
    );
}

/// `MULTI; GET k; DEBUG OBJECT k; EXEC` hung the whole server: the DEBUG handler
/// locked the shard its own EXEC held. Now the dispatcher holds DEBUG's keys, and
/// the subcommands that reload the dataset are refused inside MULTI.
#[test]
fn debug_inside_multi_answers_and_hangs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[("enable-debug-command", "yes")]);
    let mut c = node.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (object, digests, digest): (String, Vec<String>, String) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg("k")
        .ignore()
        .cmd("DEBUG")
        .arg("OBJECT")
        .arg("k")
        .cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg("k")
        .cmd("DEBUG")
        .arg("DIGEST")
        .query(&mut c)
        .expect("EXEC answered");
    assert!(object.contains("encoding:embstr"), "{object}");
    assert_eq!(digests.len(), 1);
    assert_eq!(digest.len(), 40);
    ping(&node);
    let mut s = raw(&node);
    s.write_all(b"MULTI\r\nDEBUG RELOAD\r\n").unwrap();
    let reply = read_until(&mut s, b"transaction\r\n");
    assert!(
        String::from_utf8_lossy(&reply).contains("ERR Command not allowed inside a transaction"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    ping(&node);
}
