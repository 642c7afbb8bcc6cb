//! The RESP listener end to end: a real server on 127.0.0.1:0, driven by raw sockets
//! (exact bytes, protocol errors, pub/sub frames) and by the `redis` crate.

mod common;

use std::time::Duration;

use common::*;

/// Polls at most ~10 s for `cond` (no timing assertions: only an upper bound).
macro_rules! wait_until {
    ($cond:expr) => {{
        let mut ok = false;
        for _ in 0..500 {
            if $cond {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ok
    }};
}

#[tokio::test]
async fn pipeline_of_1000_commands_raw_and_redis_crate() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(&encode(&["INCR", "counter"]));
    }
    c.send_raw(&batch).await;
    for i in 1..=1000 {
        assert_eq!(c.read().await, V::Int(i));
    }

    let client = redis::Client::open(url(&server)).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    pipe.cmd("DBSIZE");
    let (n,): (i64,) = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(n, 1001);
    let v: String = redis::cmd("GET")
        .arg("k999")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "999");
    server.shutdown().await;
}

#[tokio::test]
async fn inline_commands() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    c.send_raw(b"PING\r\n").await;
    assert_eq!(c.read().await, V::Simple("PONG".into()));
    c.send_raw(b"SET greeting \"hello world\"\r\nGET greeting\n")
        .await;
    assert_eq!(c.read().await, V::Simple("OK".into()));
    assert_eq!(c.read().await, V::bulk("hello world"));
    // Blank lines are skipped, as Redis does.
    c.send_raw(b"\r\n\r\nECHO 'a b'\r\n").await;
    assert_eq!(c.read().await, V::bulk("a b"));
    server.shutdown().await;
}

#[tokio::test]
async fn resp3_via_hello() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let V::Map(hello) = c.cmd(&["HELLO", "3"]).await else {
        panic!("HELLO 3 answers a map")
    };
    assert!(hello.contains(&(V::bulk("proto"), V::Int(3))));
    assert!(hello.contains(&(V::bulk("version"), V::bulk("7.2.4"))));
    assert_eq!(c.cmd(&["GET", "missing"]).await, V::Nil);
    let V::Map(cfg) = c.cmd(&["CONFIG", "GET", "maxmemory"]).await else {
        panic!("CONFIG GET answers a map in RESP3")
    };
    assert_eq!(cfg, vec![(V::bulk("maxmemory"), V::bulk("0"))]);
    let V::Array(info) = c.cmd(&["COMMAND", "INFO", "get"]).await else {
        panic!()
    };
    let V::Array(get) = &info[0] else { panic!() };
    assert!(matches!(get[2], V::Set(_)), "flags are a set: {:?}", get[2]);
    let V::Verbatim(text) = c.cmd(&["CLIENT", "INFO"]).await else {
        panic!("CLIENT INFO is a verbatim string")
    };
    assert!(text.contains(" resp=3 "), "{text}");
    assert_eq!(
        c.cmd(&["HELLO", "4"]).await,
        V::Err("NOPROTO unsupported protocol version".into())
    );
    // Back to RESP2: maps become flat arrays.
    c.cmd(&["HELLO", "2"]).await;
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "maxmemory"]).await,
        bulks(&["maxmemory", "0"])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_close_only_that_connection() {
    let (server, _dir) = start().await;
    let mut other = Raw::connect(&server).await;
    assert_eq!(other.cmd(&["SET", "k", "v"]).await, V::Simple("OK".into()));

    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*3000000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\nfoo\r\n",
            "ERR Protocol error: expected '$', got 'f'",
        ),
        (
            b"SET k \"unbalanced\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (bytes, want) in cases {
        let mut c = Raw::connect(&server).await;
        c.send_raw(bytes).await;
        assert_eq!(c.read().await, V::Err(want.to_string()));
        assert!(c.closed().await, "connection closed after {want}");
    }

    // An inline request longer than 64 KB without a newline.
    let mut c = Raw::connect(&server).await;
    c.send_raw(&vec![b'a'; 70 * 1024]).await;
    assert_eq!(
        c.read().await,
        V::Err("ERR Protocol error: too big inline request".into())
    );
    assert!(c.closed().await);

    // proto-max-bulk-len is enforced as configured.
    assert_eq!(
        other
            .cmd(&["CONFIG", "SET", "proto-max-bulk-len", "1mb"])
            .await,
        V::Simple("OK".into())
    );
    let mut c = Raw::connect(&server).await;
    c.send_raw(b"*2\r\n$4\r\nECHO\r\n$2000000\r\n").await;
    assert_eq!(
        c.read().await,
        V::Err("ERR Protocol error: invalid bulk length".into())
    );
    assert!(c.closed().await);

    // The server and the other client carry on.
    assert_eq!(other.cmd(&["GET", "k"]).await, V::bulk("v"));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_commands_and_arity_errors_keep_the_connection() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    assert_eq!(
        c.cmd(&["NOSUCH", "a", "b"]).await,
        V::Err("ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' ".into())
    );
    assert_eq!(
        c.cmd(&["GET"]).await,
        V::Err("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        c.cmd(&["CLIENT", "NOPE"]).await,
        V::Err("ERR unknown subcommand 'NOPE'. Try CLIENT HELP.".into())
    );
    let info = c.cmd(&["INFO", "errorstats"]).await.text();
    assert!(info.contains("errorstat_ERR:count=3"), "{info}");
    server.shutdown().await;
}

#[tokio::test]
async fn expiry_is_seen_and_notified() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Ex"])
        .await;
    let mut sub = Raw::connect(&server).await;
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "__keyevent@0__:expired"]).await,
        V::Array(vec![
            V::bulk("subscribe"),
            V::bulk("__keyevent@0__:expired"),
            V::Int(1)
        ])
    );
    assert_eq!(
        c.cmd(&["SET", "short", "v", "PX", "30"]).await,
        V::Simple("OK".into())
    );
    // Active expiry (or a lazy lookup) removes it and raises the event.
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("message"),
            V::bulk("__keyevent@0__:expired"),
            V::bulk("short")
        ])
    );
    assert_eq!(c.cmd(&["GET", "short"]).await, V::Nil);

    // Lazy expiry on access raises it too.
    c.cmd(&["SET", "lazy", "v", "PX", "20"]).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(c.cmd(&["GET", "lazy"]).await, V::Nil);
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("message"),
            V::bulk("__keyevent@0__:expired"),
            V::bulk("lazy")
        ])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn pubsub_across_clients_with_patterns() {
    let (server, _dir) = start().await;
    let mut s1 = Raw::connect(&server).await;
    let mut s2 = Raw::connect(&server).await;
    let mut p = Raw::connect(&server).await;
    s1.send(&["SUBSCRIBE", "news", "sport"]).await;
    assert_eq!(
        s1.read().await,
        V::Array(vec![V::bulk("subscribe"), V::bulk("news"), V::Int(1)])
    );
    assert_eq!(
        s1.read().await,
        V::Array(vec![V::bulk("subscribe"), V::bulk("sport"), V::Int(2)])
    );
    assert_eq!(
        s2.cmd(&["PSUBSCRIBE", "n*"]).await,
        V::Array(vec![V::bulk("psubscribe"), V::bulk("n*"), V::Int(1)])
    );
    assert_eq!(p.cmd(&["PUBLISH", "news", "hello"]).await, V::Int(2));
    assert_eq!(
        s1.read().await,
        V::Array(vec![V::bulk("message"), V::bulk("news"), V::bulk("hello")])
    );
    assert_eq!(
        s2.read().await,
        V::Array(vec![
            V::bulk("pmessage"),
            V::bulk("n*"),
            V::bulk("news"),
            V::bulk("hello")
        ])
    );
    assert_eq!(
        p.cmd(&["PUBSUB", "NUMSUB", "news", "none"]).await,
        V::Array(vec![V::bulk("news"), V::Int(1), V::bulk("none"), V::Int(0)])
    );
    assert_eq!(p.cmd(&["PUBSUB", "NUMPAT"]).await, V::Int(1));

    // RESP2 subscribed mode refuses other commands, with Redis's exact text.
    assert_eq!(
        s1.cmd(&["GET", "x"]).await,
        V::Err("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context".into())
    );
    assert_eq!(
        s1.cmd(&["PING"]).await,
        V::Array(vec![V::bulk("pong"), V::bulk("")])
    );

    // RESP3: push frames, and other commands are allowed while subscribed.
    let mut r3 = Raw::connect(&server).await;
    r3.cmd(&["HELLO", "3"]).await;
    assert_eq!(
        r3.cmd(&["SUBSCRIBE", "news"]).await,
        V::Push(vec![V::bulk("subscribe"), V::bulk("news"), V::Int(1)])
    );
    assert_eq!(r3.cmd(&["GET", "x"]).await, V::Nil);
    assert_eq!(p.cmd(&["PUBLISH", "news", "again"]).await, V::Int(3));
    assert_eq!(
        r3.read().await,
        V::Push(vec![V::bulk("message"), V::bulk("news"), V::bulk("again")])
    );
    assert_eq!(
        s1.read().await,
        V::Array(vec![V::bulk("message"), V::bulk("news"), V::bulk("again")])
    );
    assert_eq!(
        s2.read().await.text(),
        format!(
            "{:?}",
            V::Array(vec![
                V::bulk("pmessage"),
                V::bulk("n*"),
                V::bulk("news"),
                V::bulk("again")
            ])
        )
    );

    // Sharded channels.
    assert_eq!(
        s2.cmd(&["SSUBSCRIBE", "shard"]).await,
        V::Array(vec![V::bulk("ssubscribe"), V::bulk("shard"), V::Int(1)])
    );
    assert_eq!(p.cmd(&["SPUBLISH", "shard", "m"]).await, V::Int(1));
    assert_eq!(
        s2.read().await,
        V::Array(vec![V::bulk("smessage"), V::bulk("shard"), V::bulk("m")])
    );

    // Unsubscribing everything leaves subscribed mode.
    s1.send(&["UNSUBSCRIBE"]).await;
    s1.read().await;
    assert_eq!(
        s1.read().await,
        V::Array(vec![V::bulk("unsubscribe"), V::bulk("sport"), V::Int(0)])
    );
    assert_eq!(s1.cmd(&["GET", "x"]).await, V::Nil);
    server.shutdown().await;
}

#[tokio::test]
async fn keyspace_notifications() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let mut sub = Raw::connect(&server).await;
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"])
            .await,
        V::Simple("OK".into())
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "notify-keyspace-events"]).await,
        bulks(&["notify-keyspace-events", "AKE"])
    );
    sub.cmd(&["PSUBSCRIBE", "__key*__:*"]).await;
    c.cmd(&["SET", "foo", "bar"]).await;
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("pmessage"),
            V::bulk("__key*__:*"),
            V::bulk("__keyspace@0__:foo"),
            V::bulk("set")
        ])
    );
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("pmessage"),
            V::bulk("__key*__:*"),
            V::bulk("__keyevent@0__:set"),
            V::bulk("foo")
        ])
    );
    // Masked classes are not sent: only generic events now.
    c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Eg"])
        .await;
    c.cmd(&["SET", "foo", "baz"]).await;
    c.cmd(&["DEL", "foo"]).await;
    assert_eq!(
        sub.read().await,
        V::Array(vec![
            V::bulk("pmessage"),
            V::bulk("__key*__:*"),
            V::bulk("__keyevent@0__:del"),
            V::bulk("foo")
        ])
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Q"])
            .await,
        V::Err("ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn transactions_and_watch_across_clients() {
    let (server, _dir) = start().await;
    let mut a = Raw::connect(&server).await;
    let mut b = Raw::connect(&server).await;
    let ok = V::Simple("OK".into());
    let queued = V::Simple("QUEUED".into());

    // A change by another client breaks the WATCH.
    assert_eq!(a.cmd(&["WATCH", "k"]).await, ok);
    assert_eq!(b.cmd(&["SET", "k", "1"]).await, ok);
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    assert_eq!(a.cmd(&["SET", "k", "2"]).await, queued);
    assert_eq!(a.cmd(&["EXEC"]).await, V::Nil);
    assert_eq!(a.cmd(&["GET", "k"]).await, V::bulk("1"));

    // Untouched WATCH: EXEC runs; run-time errors are per command.
    assert_eq!(a.cmd(&["WATCH", "k"]).await, ok);
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    assert_eq!(a.cmd(&["INCR", "k"]).await, queued);
    assert_eq!(a.cmd(&["SET", "s", "x"]).await, queued);
    assert_eq!(a.cmd(&["INCR", "s"]).await, queued);
    assert_eq!(
        a.cmd(&["EXEC"]).await,
        V::Array(vec![
            V::Int(2),
            ok.clone(),
            V::Err("ERR value is not an integer or out of range".into())
        ])
    );

    // Queue-time errors (wrong arity, unknown command) abort the whole transaction.
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    assert_eq!(a.cmd(&["SET", "k", "3"]).await, queued);
    assert_eq!(
        a.cmd(&["GET"]).await,
        V::Err("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        a.cmd(&["EXEC"]).await,
        V::Err("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(a.cmd(&["GET", "k"]).await, V::bulk("2"));

    // Nesting and stray EXEC/DISCARD.
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    assert_eq!(
        a.cmd(&["MULTI"]).await,
        V::Err("ERR MULTI calls can not be nested".into())
    );
    assert_eq!(
        a.cmd(&["WATCH", "x"]).await,
        V::Err("ERR WATCH inside MULTI is not allowed".into())
    );
    assert_eq!(a.cmd(&["DISCARD"]).await, ok);
    assert_eq!(
        a.cmd(&["EXEC"]).await,
        V::Err("ERR EXEC without MULTI".into())
    );
    assert_eq!(
        a.cmd(&["DISCARD"]).await,
        V::Err("ERR DISCARD without MULTI".into())
    );

    // FLUSHDB breaks the WATCH of an existing key, but not of a missing one.
    assert_eq!(a.cmd(&["WATCH", "missing"]).await, ok);
    assert_eq!(b.cmd(&["FLUSHDB"]).await, ok);
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    a.cmd(&["PING"]).await;
    assert_eq!(
        a.cmd(&["EXEC"]).await,
        V::Array(vec![V::Simple("PONG".into())])
    );
    b.cmd(&["SET", "k", "1"]).await;
    assert_eq!(a.cmd(&["WATCH", "k"]).await, ok);
    assert_eq!(b.cmd(&["FLUSHALL"]).await, ok);
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    a.cmd(&["PING"]).await;
    assert_eq!(a.cmd(&["EXEC"]).await, V::Nil);

    // A watched key that expires counts as changed.
    b.cmd(&["SET", "t", "1", "PX", "30"]).await;
    assert_eq!(a.cmd(&["WATCH", "t"]).await, ok);
    let mut gone = false;
    for _ in 0..500 {
        if b.cmd(&["EXISTS", "t"]).await == V::Int(0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone);
    assert_eq!(a.cmd(&["MULTI"]).await, ok);
    a.cmd(&["PING"]).await;
    assert_eq!(a.cmd(&["EXEC"]).await, V::Nil);
    server.shutdown().await;
}

#[tokio::test]
async fn slow_subscriber_is_disconnected_at_the_output_limit() {
    let (server, _dir) = start().await;
    let mut admin = Raw::connect(&server).await;
    assert_eq!(
        admin
            .cmd(&[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 256kb 128kb 60"
            ])
            .await,
        V::Simple("OK".into())
    );
    // Subscribes, then never reads again.
    let mut slow = Raw::connect(&server).await;
    slow.cmd(&["SUBSCRIBE", "firehose"]).await;
    let mut fast = Raw::connect(&server).await;
    fast.cmd(&["SUBSCRIBE", "other"]).await;

    let mut publisher = Raw::connect(&server).await;
    let payload = "x".repeat(64 * 1024);
    let mut dropped = false;
    // Loopback socket buffers hold a few MB; 4000 × 64 KB is far more than that.
    for _ in 0..4000 {
        if publisher.cmd(&["PUBLISH", "firehose", &payload]).await == V::Int(0) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the slow subscriber was never disconnected");
    assert!(wait_until!(
        admin.cmd(&["PUBSUB", "NUMSUB", "firehose"]).await
            == V::Array(vec![V::bulk("firehose"), V::Int(0)])
    ));
    // Everyone else carries on.
    assert_eq!(publisher.cmd(&["PUBLISH", "other", "hi"]).await, V::Int(1));
    assert_eq!(
        fast.read().await,
        V::Array(vec![V::bulk("message"), V::bulk("other"), V::bulk("hi")])
    );
    assert_eq!(admin.cmd(&["PING"]).await, V::Simple("PONG".into()));
    server.shutdown().await;
}

fn field(list: &str, id: i64, name: &str) -> Option<String> {
    let line = list.lines().find(|l| l.starts_with(&format!("id={id} ")))?;
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(|s| s.to_string())
}

#[tokio::test]
async fn client_setname_list_kill() {
    let (server, _dir) = start().await;
    let mut a = Raw::connect(&server).await;
    let mut b = Raw::connect(&server).await;
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]).await, V::Nil);
    assert_eq!(
        a.cmd(&["CLIENT", "SETNAME", "worker-1"]).await,
        V::Simple("OK".into())
    );
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]).await, V::bulk("worker-1"));
    let V::Int(a_id) = a.cmd(&["CLIENT", "ID"]).await else {
        panic!()
    };
    a.cmd(&["SELECT", "3"]).await;
    let list = b.cmd(&["CLIENT", "LIST"]).await.text();
    assert_eq!(field(&list, a_id, "name").as_deref(), Some("worker-1"));
    assert_eq!(field(&list, a_id, "db").as_deref(), Some("3"));
    assert_eq!(field(&list, a_id, "cmd").as_deref(), Some("select"));
    assert_eq!(field(&list, a_id, "flags").as_deref(), Some("N"));
    let only = b
        .cmd(&["CLIENT", "LIST", "ID", &a_id.to_string()])
        .await
        .text();
    assert_eq!(only.lines().count(), 1);
    assert_eq!(
        b.cmd(&["CLIENT", "LIST", "TYPE", "bogus"]).await,
        V::Err("ERR Unknown client type 'bogus'".into())
    );

    // Kill by id: the victim's connection closes, the killer carries on.
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", "ID", &a_id.to_string()]).await,
        V::Int(1)
    );
    assert!(a.closed().await);
    assert!(wait_until!(!b
        .cmd(&["CLIENT", "LIST"])
        .await
        .text()
        .contains("worker-1")));

    // Old form by address.
    let mut c = Raw::connect(&server).await;
    let V::Int(c_id) = c.cmd(&["CLIENT", "ID"]).await else {
        panic!()
    };
    let list = b.cmd(&["CLIENT", "LIST"]).await.text();
    let addr = field(&list, c_id, "addr").unwrap();
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", &addr]).await,
        V::Simple("OK".into())
    );
    assert!(c.closed().await);
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", &addr]).await,
        V::Err("ERR No such client".into())
    );

    // CLIENT REPLY OFF / SKIP / ON.
    b.send(&["CLIENT", "REPLY", "OFF"]).await;
    b.send(&["SET", "silent", "1"]).await;
    b.send(&["CLIENT", "REPLY", "SKIP"]).await;
    b.send(&["CLIENT", "REPLY", "ON"]).await;
    assert_eq!(b.read().await, V::Simple("OK".into()));
    b.send(&["CLIENT", "REPLY", "SKIP"]).await;
    b.send(&["GET", "silent"]).await;
    assert_eq!(b.cmd(&["ECHO", "after"]).await, V::bulk("after"));
    server.shutdown().await;
}

#[tokio::test]
async fn monitor_shows_commands_of_others() {
    let (server, _dir) = start().await;
    let mut m = Raw::connect(&server).await;
    assert_eq!(m.cmd(&["MONITOR"]).await, V::Simple("OK".into()));
    let mut c = Raw::connect(&server).await;
    c.cmd(&["SET", "a", "b c"]).await;
    c.cmd(&["MULTI"]).await;
    c.cmd(&["GET", "a"]).await;
    c.cmd(&["EXEC"]).await;
    let lines: Vec<String> = [
        m.read().await,
        m.read().await,
        m.read().await,
        m.read().await,
    ]
    .iter()
    .map(|v| v.text())
    .collect();
    assert!(lines[0].ends_with("\"SET\" \"a\" \"b c\""), "{lines:?}");
    assert!(lines[0].contains(" [0 127.0.0.1:"), "{lines:?}");
    assert!(lines[1].ends_with("\"MULTI\""), "{lines:?}");
    assert!(lines[2].ends_with("\"GET\" \"a\""), "{lines:?}");
    assert!(lines[3].ends_with("\"EXEC\""), "{lines:?}");
    server.shutdown().await;
}

/// Counters from one INFO stats reply.
async fn stats<const N: usize>(c: &mut Raw, names: [&str; N]) -> [u64; N] {
    let info = c.cmd(&["INFO", "stats"]).await.text();
    names.map(|name| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO stats lacks {name}: {info}"))
    })
}

/// `busy_polls` from INFO stats.
async fn busy_polls(c: &mut Raw) -> u64 {
    let [n] = stats(c, ["busy_polls"]).await;
    n
}

/// A pipelined batch is read in one read and answered in one write, as Redis does,
/// however many batches came before it on the connection. (The input buffer's free
/// tail used to shrink with every command parsed off its front, until one batch in
/// a few arrived in two reads and was answered in two writes.)
#[tokio::test]
async fn each_pipelined_batch_is_read_once_and_answered_in_one_write() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let value = "v".repeat(60);
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend_from_slice(&encode(&["SET", &format!("key:{i:04}"), &value]));
    }
    assert!(batch.len() > 3_000, "a batch is {} bytes", batch.len());
    let counters = ["total_reads_processed", "total_writes_processed"];
    let [reads, writes] = stats(&mut c, counters).await;
    let batches = 24;
    for _ in 0..batches {
        c.send_raw(&batch).await;
        for _ in 0..40 {
            assert_eq!(c.read().await, V::Simple("OK".into()));
        }
    }
    // Plus one each: this INFO's read, and the previous INFO's write.
    let [reads_after, writes_after] = stats(&mut c, counters).await;
    assert_eq!(
        (reads_after - reads, writes_after - writes),
        (batches + 1, batches + 1)
    );
    server.shutdown().await;
}

// The test runtime is single-threaded, as the server's own is on 2 cores: the
// poller runs (on a machine with one core it is never started).
#[tokio::test]
async fn busy_poller_polls_between_requests_and_sleeps_when_idle() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "busy-poll-us"]).await,
        bulks(&["busy-poll-us", "50"])
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "busy-poll-us", "1001"]).await,
        V::Err("ERR CONFIG SET failed (possibly related to argument 'busy-poll-us') - argument must be between 0 and 1000 inclusive".into())
    );
    c.cmd(&["CONFIG", "SET", "busy-poll-us", "1000"]).await;
    for i in 0..200 {
        c.cmd(&["SET", "k", &i.to_string()]).await;
    }
    assert!(busy_polls(&mut c).await > 0, "no polling between requests");
    // Idle: the poller goes back to sleep within the window (at most 50 µs now, a
    // few hundred polls at most). Polling on for the 300 ms would be tens of
    // thousands (one poll is two syscalls).
    c.cmd(&["CONFIG", "SET", "busy-poll-us", "50"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let busy = busy_polls(&mut c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = busy_polls(&mut c).await;
    assert!(
        idle - busy < 5_000,
        "still polling while idle: {busy} -> {idle}"
    );
    // Off: requests no longer start any polling.
    c.cmd(&["CONFIG", "SET", "busy-poll-us", "0"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let off = busy_polls(&mut c).await;
    for i in 0..50 {
        c.cmd(&["SET", "k", &i.to_string()]).await;
    }
    assert_eq!(busy_polls(&mut c).await, off);
    server.shutdown().await;
}

#[tokio::test]
async fn slowlog_and_info() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    c.cmd(&["CLIENT", "SETNAME", "slowpoke"]).await;
    c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
        .await;
    c.cmd(&["SET", "k", "v"]).await;
    let V::Array(entries) = c.cmd(&["SLOWLOG", "GET", "1"]).await else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
    let V::Array(e) = &entries[0] else { panic!() };
    assert_eq!(e.len(), 6);
    assert_eq!(e[3], bulks(&["SET", "k", "v"]));
    assert_eq!(e[5], V::bulk("slowpoke"));
    assert_eq!(
        c.cmd(&["SLOWLOG", "GET", "-2"]).await,
        V::Err("ERR count should be greater than or equal to -1".into())
    );
    assert_eq!(c.cmd(&["SLOWLOG", "RESET"]).await, V::Simple("OK".into()));
    c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"])
        .await;
    let info = c.cmd(&["INFO"]).await.text();
    for f in [
        "redis_version:7.2.4",
        "tidewire_version:",
        "loading:0",
        "connected_clients:1",
        "blocked_clients:0",
        "keyspace_hits:",
        "total_commands_processed:",
        "instantaneous_ops_per_sec:",
        "expired_keys:",
        "db0:keys=1,expires=0,avg_ttl=0",
    ] {
        assert!(info.contains(f), "INFO lacks {f}");
    }
    let all = c.cmd(&["INFO", "commandstats"]).await.text();
    // Command statistics are process-wide; other tests run in this process too.
    assert!(all.contains("cmdstat_set:calls="), "{all}");
    let V::Int(t) = c.cmd(&["LASTSAVE"]).await else {
        panic!()
    };
    assert!(t > 0);
    assert_eq!(
        c.cmd(&["CONFIG", "REWRITE"]).await,
        V::Err("ERR The server is running without a config file".into())
    );
    assert_eq!(c.cmd(&["FUNCTION", "FLUSH"]).await, V::Simple("OK".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_command_stops_the_server_gracefully() {
    let (server, _dir) = start().await;
    let mut requested = server.shutdown_requested();
    // Idle, subscribed and blocked connections are all closed by the shutdown itself,
    // not left to the 10 s deadline after which the server aborts them.
    let mut other = Raw::connect(&server).await;
    other.cmd(&["PING"]).await;
    let mut subscriber = Raw::connect(&server).await;
    subscriber.cmd(&["SUBSCRIBE", "news"]).await;
    let mut blocked = Raw::connect(&server).await;
    blocked.send(&["BLPOP", "jobs", "0"]).await;
    let mut c = Raw::connect(&server).await;
    assert!(wait_until!(c
        .cmd(&["INFO", "clients"])
        .await
        .text()
        .contains("blocked_clients:1")));
    c.send(&["SHUTDOWN", "NOSAVE"]).await;
    assert!(c.closed().await, "SHUTDOWN closes without a reply");
    tokio::time::timeout(WAIT, requested.changed())
        .await
        .expect("shutdown requested")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown completes before its forced-abort deadline");
    assert!(other.closed().await);
    assert!(subscriber.closed().await);
    assert!(blocked.closed().await);
}

#[tokio::test]
async fn requirepass_and_unauthenticated_limits() {
    let dir = tempfile::tempdir().unwrap();
    let config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        requirepass: Some("s3cret".into()),
        ..tidewire_server::Config::default()
    };
    let server = tidewire_server::start(config).await.unwrap();
    let mut c = Raw::connect(&server).await;
    assert_eq!(
        c.cmd(&["GET", "k"]).await,
        V::Err("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        c.cmd(&["AUTH", "wrong"]).await,
        V::Err("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(c.cmd(&["AUTH", "s3cret"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["GET", "k"]).await, V::Nil);

    // Before AUTH, requests stay small, as in Redis.
    let mut u = Raw::connect(&server).await;
    u.send_raw(b"*100\r\n").await;
    assert_eq!(
        u.read().await,
        V::Err("ERR Protocol error: unauthenticated multibulk length".into())
    );
    assert!(u.closed().await);
    let mut u = Raw::connect(&server).await;
    u.send_raw(b"*1\r\n$100000000\r\n").await;
    assert_eq!(
        u.read().await,
        V::Err("ERR Protocol error: unauthenticated bulk length".into())
    );
    assert!(u.closed().await);
    // Once authenticated, the same request is accepted.
    let mut pipeline = encode(&["AUTH", "s3cret"]);
    let big = "x".repeat(100_000);
    pipeline.extend_from_slice(&encode(&["SET", "big", &big]));
    c.send_raw(&pipeline).await;
    assert_eq!(c.read().await, V::Simple("OK".into()));
    assert_eq!(c.read().await, V::Simple("OK".into()));
    server.shutdown().await;
}
