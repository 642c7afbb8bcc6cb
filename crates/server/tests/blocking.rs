//! Blocking list and sorted-set commands against a real server on 127.0.0.1:0,
//! driven by the `redis` crate: timeouts, FIFO service, wake-ups from MULTI/EXEC,
//! disconnects and CLIENT UNBLOCK leaving no waiter behind. Every wait is bounded;
//! nothing asserts on timing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Value};
use tidewire_server::{start, Config, Server};

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    (start(config).await.unwrap(), dir)
}

fn connect(server: &Server) -> Connection {
    let client = redis::Client::open(format!("redis://{}/", server.resp_addr)).unwrap();
    client.get_connection().unwrap()
}

/// Runs a command on a blocking connection in a thread; the handle yields its reply.
fn spawn_cmd(
    mut con: Connection,
    args: &'static [&'static str],
) -> std::thread::JoinHandle<(Connection, RedisResult<Value>)> {
    std::thread::spawn(move || {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let r = c.query(&mut con);
        (con, r)
    })
}

/// Waits (bounded) until the server reports `n` blocked clients.
fn wait_blocked(server: &Server, n: usize) {
    let start = Instant::now();
    while server.store.blocking.blocked_clients() != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "expected {n} blocked clients, have {}",
            server.store.blocking.blocked_clients()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn join(
    h: std::thread::JoinHandle<(Connection, RedisResult<Value>)>,
) -> (Connection, RedisResult<Value>) {
    h.join().unwrap()
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn pair(k: &str, v: &str) -> Value {
    Value::Array(vec![bulk(k), bulk(v)])
}

fn info_blocked(con: &mut Connection) -> String {
    let info: String = redis::cmd("INFO").arg("clients").query(con).unwrap();
    info.lines()
        .find(|l| l.starts_with("blocked_clients:"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_errors() {
    let (server, _dir) = server().await;
    let mut c = connect(&server);
    let r: Value = redis::cmd("BLPOP")
        .arg("nokey")
        .arg("0.05")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    let r: Value = redis::cmd("BZPOPMIN")
        .arg("nokey")
        .arg("0.01")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    let r: Value = redis::cmd("BLMOVE")
        .arg("nokey")
        .arg("dst")
        .arg("LEFT")
        .arg("RIGHT")
        .arg("0.01")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    let e = redis::cmd("BLPOP")
        .arg("k")
        .arg("abc")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.detail(), Some("timeout is not a float or out of range"));
    let e = redis::cmd("BRPOP")
        .arg("k")
        .arg("-1")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.detail(), Some("timeout is negative"));
    assert_eq!(info_blocked(&mut c), "blocked_clients:0");
    drop(c);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_across_three_clients() {
    let (server, _dir) = server().await;
    let mut ctl = connect(&server);
    let h1 = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 1);
    let h2 = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 2);
    let h3 = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 3);
    assert_eq!(info_blocked(&mut ctl), "blocked_clients:3");
    // One push of three elements: served oldest first, in element order.
    let _: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("a")
        .arg("b")
        .arg("c")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(join(h1).1.unwrap(), pair("q", "a"));
    assert_eq!(join(h2).1.unwrap(), pair("q", "b"));
    assert_eq!(join(h3).1.unwrap(), pair("q", "c"));
    wait_blocked(&server, 0);

    // A client woken for an element someone else took keeps its place in line.
    let h1 = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 1);
    let h2 = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 2);
    let r: Value = redis::pipe()
        .atomic()
        .cmd("RPUSH")
        .arg("q")
        .arg("gone")
        .cmd("LPOP")
        .arg("q")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(r, Value::Array(vec![Value::Int(1), bulk("gone")]));
    let _: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("first")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(join(h1).1.unwrap(), pair("q", "first"));
    let _: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("second")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(join(h2).1.unwrap(), pair("q", "second"));
    wait_blocked(&server, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn woken_by_multi_exec_and_lmove() {
    let (server, _dir) = server().await;
    let mut ctl = connect(&server);
    let h = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 1);
    let _: Value = redis::pipe()
        .atomic()
        .cmd("LPUSH")
        .arg("q")
        .arg("a")
        .cmd("LPUSH")
        .arg("q")
        .arg("b")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(join(h).1.unwrap(), pair("q", "b"));
    // BRPOPLPUSH into a list another client waits on wakes that client too.
    let h1 = spawn_cmd(connect(&server), &["BRPOPLPUSH", "src", "dst", "0"]);
    wait_blocked(&server, 1);
    let h2 = spawn_cmd(connect(&server), &["BLPOP", "dst", "0"]);
    wait_blocked(&server, 2);
    let _: i64 = redis::cmd("RPUSH")
        .arg("src")
        .arg("x")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(join(h1).1.unwrap(), bulk("x"));
    assert_eq!(join(h2).1.unwrap(), pair("dst", "x"));
    let n: i64 = redis::cmd("EXISTS")
        .arg("src")
        .arg("dst")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(n, 0);
    // Inside MULTI a blocking pop does not block.
    let r: Value = redis::pipe()
        .atomic()
        .cmd("BLPOP")
        .arg("empty")
        .arg("0")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(r, Value::Array(vec![Value::Nil]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_unblock_leave_no_waiter() {
    let (server, _dir) = server().await;
    let mut ctl = connect(&server);
    // A raw socket so the client can vanish while blocked.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(server.resp_addr).unwrap();
        s.write_all(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n")
            .unwrap();
        wait_blocked(&server, 1);
    }
    wait_blocked(&server, 0);
    let _: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("kept")
        .query(&mut ctl)
        .unwrap();
    let n: i64 = redis::cmd("LLEN").arg("q").query(&mut ctl).unwrap();
    assert_eq!(n, 1, "nobody may have consumed the element");
    let _: i64 = redis::cmd("DEL").arg("q").query(&mut ctl).unwrap();

    // CLIENT UNBLOCK … ERROR, as the CLIENT command does it.
    let h = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 1);
    let info = server
        .store
        .clients()
        .into_iter()
        .find(|c| c.blocked.load(Ordering::SeqCst))
        .unwrap();
    info.unblock.store(2, Ordering::SeqCst);
    info.unblock_notify.notify_one();
    let err = join(h).1.unwrap_err();
    assert_eq!(err.code(), Some("UNBLOCKED"));
    // The error reply is counted, as Redis counts it.
    let errors: String = redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut ctl)
        .unwrap();
    assert!(errors.contains("errorstat_UNBLOCKED:count=1"), "{errors}");
    wait_blocked(&server, 0);
    assert_eq!(info_blocked(&mut ctl), "blocked_clients:0");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bzpopmin_and_bzmpop() {
    let (server, _dir) = server().await;
    let mut ctl = connect(&server);
    let h = spawn_cmd(connect(&server), &["BZPOPMIN", "z1", "z2", "0"]);
    wait_blocked(&server, 1);
    let _: i64 = redis::cmd("ZADD")
        .arg("z2")
        .arg("2")
        .arg("b")
        .arg("1.5")
        .arg("a")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(
        join(h).1.unwrap(),
        Value::Array(vec![bulk("z2"), bulk("a"), bulk("1.5")])
    );
    let h = spawn_cmd(
        connect(&server),
        &["BZMPOP", "0", "1", "z2", "MAX", "COUNT", "5"],
    );
    // z2 still holds b: served at once.
    assert_eq!(
        join(h).1.unwrap(),
        Value::Array(vec![bulk("z2"), Value::Array(vec![pair("b", "2")])])
    );
    let n: i64 = redis::cmd("EXISTS").arg("z2").query(&mut ctl).unwrap();
    assert_eq!(n, 0);
    let h = spawn_cmd(connect(&server), &["BZPOPMAX", "z3", "0"]);
    wait_blocked(&server, 1);
    let r: Value = redis::pipe()
        .atomic()
        .cmd("ZADD")
        .arg("z3")
        .arg("1")
        .arg("x")
        .cmd("ZADD")
        .arg("z3")
        .arg("9")
        .arg("y")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(r, Value::Array(vec![Value::Int(1), Value::Int(1)]));
    assert_eq!(
        join(h).1.unwrap(),
        Value::Array(vec![bulk("z3"), bulk("y"), bulk("9")])
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_blocked_clients() {
    let (server, _dir) = server().await;
    let h = spawn_cmd(connect(&server), &["BLPOP", "q", "0"]);
    wait_blocked(&server, 1);
    let store = server.store.clone();
    // Bounded: shutdown itself gives up after 10 s; a blocked client must not make
    // it wait that long (checked loosely: it must simply finish and free the waiter).
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .unwrap();
    assert_eq!(store.blocking.blocked_clients(), 0);
    assert!(join(h).1.is_err());
}

/// Keys created whole by another command (SORT … STORE, RENAME) wake blocked clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn woken_by_sort_store_and_rename() {
    let (server, _dir) = server().await;
    let mut ctl = connect(&server);
    let _: i64 = redis::cmd("RPUSH")
        .arg("src")
        .arg("3")
        .arg("1")
        .arg("2")
        .query(&mut ctl)
        .unwrap();
    // A 10 s timeout bounds the test: without the wake-up it gets nil and fails.
    let h = spawn_cmd(connect(&server), &["BLPOP", "sorted", "10"]);
    wait_blocked(&server, 1);
    let n: i64 = redis::cmd("SORT")
        .arg("src")
        .arg("STORE")
        .arg("sorted")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(join(h).1.unwrap(), pair("sorted", "1"));
    let h = spawn_cmd(connect(&server), &["BLPOP", "renamed", "10"]);
    wait_blocked(&server, 1);
    let _: () = redis::cmd("RENAME")
        .arg("src")
        .arg("renamed")
        .query(&mut ctl)
        .unwrap();
    assert_eq!(join(h).1.unwrap(), pair("renamed", "3"));
    server.shutdown().await;
}
