//! MIGRATE between two servers: keys moved (or copied) with their TTLs, the KEYS
//! form, the target's refusals passed on, NOKEY, and an unreachable target.

mod common;

use common::V;

async fn cmd(c: &mut common::Raw, args: &[&str]) -> V {
    c.cmd(args).await
}

async fn run(c: &mut common::Raw, v: Vec<String>) -> V {
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    c.cmd(&refs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_copies_and_reports_the_targets_errors() {
    let (a, _da) = common::start().await;
    let (b, _db) = common::start().await;
    let mut ca = common::Raw::connect(&a).await;
    let mut cb = common::Raw::connect(&b).await;
    let port = b.resp_addr.port().to_string();
    let migrate = |rest: &[&str]| {
        let mut v = vec!["MIGRATE", "127.0.0.1", port.as_str()];
        v.extend_from_slice(rest);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    cmd(&mut ca, &["SET", "s", "v", "PX", "60000"]).await;
    cmd(&mut ca, &["RPUSH", "l", "x", "y"]).await;
    // One key, into database 2 of the target.
    assert_eq!(
        run(&mut ca, migrate(&["s", "2", "5000"])).await,
        V::Simple("OK".into())
    );
    assert_eq!(cmd(&mut ca, &["EXISTS", "s"]).await, V::Int(0));
    cmd(&mut cb, &["SELECT", "2"]).await;
    assert_eq!(cmd(&mut cb, &["GET", "s"]).await, V::bulk("v"));
    match cmd(&mut cb, &["PTTL", "s"]).await {
        V::Int(ms) => assert!(ms > 50_000 && ms <= 60_000, "TTL kept: {ms}"),
        other => panic!("{other:?}"),
    }
    // Nothing to move.
    assert_eq!(
        run(&mut ca, migrate(&["s", "2", "5000"])).await,
        V::Simple("NOKEY".into())
    );
    // KEYS with COPY: the list stays here too.
    assert_eq!(
        run(
            &mut ca,
            migrate(&["", "2", "5000", "COPY", "KEYS", "l", "missing"])
        )
        .await,
        V::Simple("OK".into())
    );
    assert_eq!(cmd(&mut ca, &["LLEN", "l"]).await, V::Int(2));
    assert_eq!(cmd(&mut cb, &["LLEN", "l"]).await, V::Int(2));
    // The target refuses an existing key without REPLACE: the key stays here.
    assert_eq!(
        run(&mut ca, migrate(&["l", "2", "5000"])).await,
        V::Err(
            "ERR Target instance replied with error: BUSYKEY Target key name already exists."
                .into()
        )
    );
    assert_eq!(cmd(&mut ca, &["LLEN", "l"]).await, V::Int(2));
    cmd(&mut ca, &["RPUSH", "l", "z"]).await;
    assert_eq!(
        run(&mut ca, migrate(&["l", "2", "5000", "REPLACE"])).await,
        V::Simple("OK".into())
    );
    assert_eq!(cmd(&mut ca, &["EXISTS", "l"]).await, V::Int(0));
    assert_eq!(cmd(&mut cb, &["LLEN", "l"]).await, V::Int(3));
    // Argument errors, and a target nobody listens on.
    cmd(&mut ca, &["SET", "k", "1"]).await;
    assert_eq!(
        run(&mut ca, migrate(&["k", "0", "5000", "KEYS", "k"])).await,
        V::Err(
            "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string"
                .into()
        )
    );
    assert_eq!(
        run(&mut ca, migrate(&["k", "0", "5000", "BOGUS"])).await,
        V::Err("ERR syntax error".into())
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    assert_eq!(
        cmd(
            &mut ca,
            &["MIGRATE", "127.0.0.1", &dead_port, "k", "0", "300"]
        )
        .await,
        V::Err("IOERR error or timeout connecting to the client".into())
    );
    assert_eq!(cmd(&mut ca, &["GET", "k"]).await, V::bulk("1"));
    drop((ca, cb));
    a.shutdown().await;
    b.shutdown().await;
}
