//! The engine connection's security and freshness: `rediss://` to a redis-server
//! with a TLS port (certificates made here with rcgen, checked against the CA
//! given with `engine_tls_ca`; a wrong CA stops the start), a password cluster
//! whose every connection (shared, subscriber, dedicated, and to masters learned
//! from CLUSTER SLOTS) authenticates, and the background topology refresh that
//! notices moved slots before any request is redirected.
//!
//! Needs `redis-server` (built with TLS) and `redis-cli` on the PATH.

mod common;
mod redis_support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Raw, V};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use redis_support::{Extra, RedisCluster};
use tidewire_engine::{key_slot, parse_seeds, Cluster, ConnectOptions};
use tidewire_server::Config;

/// Writes a CA (`<name>-ca.crt`) and, signed by it, a certificate for
/// localhost / 127.0.0.1; returns (cert, key, ca) paths.
fn pki(dir: &Path, name: &str) -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = params.self_signed(&ca_key).expect("CA cert");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, "redis");
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("leaf cert");
    let path = |f: &str| {
        dir.join(format!("{name}-{f}"))
            .to_string_lossy()
            .into_owned()
    };
    let (c, k, a) = (path("server.crt"), path("server.key"), path("ca.crt"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    std::fs::write(&a, ca.pem()).expect("write CA");
    (c, k, a)
}

fn config(engine: &str, ca: Option<&str>, dir: &tempfile::TempDir) -> Config {
    Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        engine: Some(engine.to_string()),
        engine_tls_ca: ca.map(Into::into),
        ..Config::default()
    }
}

/// The error `start` gives on this engine configuration.
async fn start_error(engine: &str, ca: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    match tidewire_server::start(config(engine, ca, &dir)).await {
        Ok(_) => panic!("{engine}: started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_engine_is_verified_against_the_given_ca() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key, ca) = pki(certs.path(), "good");
    let (_, _, other_ca) = pki(certs.path(), "other");
    let extra = Extra {
        tls: Some((cert, key, ca.clone())),
        ..Extra::default()
    };
    let redis = tokio::task::spawn_blocking(move || redis_support::standalone_with(&extra))
        .await
        .expect("redis-server starts");
    let tls_port = redis.node.tls_port.expect("a TLS port");

    // By IP (checked against the IP SAN) and by name (the DNS SAN).
    for host in ["127.0.0.1", "localhost"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = format!("rediss://{host}:{tls_port}");
        let node = tidewire_server::start(config(&engine, Some(&ca), &dir))
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e:#}"));
        let mut r = Raw::connect(&node).await;
        assert_eq!(
            r.cmd(&["SET", host, "over tls"]).await,
            V::Simple("OK".into())
        );
        assert_eq!(r.cmd(&["GET", host]).await, V::bulk("over tls"));
        // Blocking commands (a dedicated connection) and subscribers too.
        assert_eq!(
            r.cmd(&["BLPOP", "nothing", "0.05"]).await,
            V::Nil,
            "BLPOP over TLS"
        );
        let mut sub = Raw::connect(&node).await;
        assert_eq!(
            sub.cmd(&["SUBSCRIBE", "tls-news"]).await,
            V::Array(vec![V::bulk("subscribe"), V::bulk("tls-news"), V::Int(1)])
        );
        assert_eq!(r.cmd(&["PUBLISH", "tls-news", "hi"]).await, V::Int(1));
        assert_eq!(
            sub.read().await,
            V::Array(vec![V::bulk("message"), V::bulk("tls-news"), V::bulk("hi")])
        );
        node.shutdown().await;
    }
    // The key is on the engine, read over its plain port.
    let direct: Option<String> = redis.node.cmd(&["GET", "localhost"]);
    assert_eq!(direct.as_deref(), Some("over tls"));

    // A CA that did not sign the engine's certificate, or none (public CAs only).
    let engine = format!("rediss://127.0.0.1:{tls_port}");
    for ca in [Some(other_ca.as_str()), None] {
        let error = start_error(&engine, ca).await;
        assert!(
            error.contains("TLS certificate refused") && error.contains("UnknownIssuer"),
            "{ca:?}: {error}"
        );
    }
    // TLS to a plain port fails to handshake; mixed schemes and an unreadable CA
    // are configuration errors.
    let error = start_error(
        &format!("rediss://127.0.0.1:{}", redis.node.port),
        Some(&ca),
    )
    .await;
    assert!(error.contains("TLS handshake"), "{error}");
    let mixed = format!("{engine},redis://127.0.0.1:{}", redis.node.port);
    let error = start_error(&mixed, Some(&ca)).await;
    assert!(error.contains("mix redis:// and rediss://"), "{error}");
    let error = start_error(&engine, Some("/nonexistent/ca.crt")).await;
    assert!(
        error.contains("engine TLS CA /nonexistent/ca.crt"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_s_masters_are_reached_over_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    let tls = pki(certs.path(), "cluster");
    let ca = tls.2.clone();
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::with_tls(tls))
        .await
        .expect("TLS cluster starts");
    // One TLS seed: the other masters come from CLUSTER SLOTS, with TLS ports.
    let seed = format!(
        "rediss://127.0.0.1:{}",
        cluster.masters[0].tls_port.expect("a TLS port")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let node = tidewire_server::start(config(&seed, Some(&ca), &dir))
        .await
        .expect("starts on the TLS cluster");
    let mut r = Raw::connect(&node).await;
    for i in 0..40 {
        let key = format!("tk{i}");
        assert_eq!(r.cmd(&["SET", &key, "v"]).await, V::Simple("OK".into()));
        assert_eq!(r.cmd(&["GET", &key]).await, V::bulk("v"));
    }
    // Every master got some of them, read over its plain port.
    for master in &cluster.masters {
        let keys: i64 = master.cmd(&["DBSIZE"]);
        assert!(keys > 0, "{} holds none of the keys", master.addr());
    }
    assert_eq!(r.cmd(&["DBSIZE"]).await, V::Int(40));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_cluster_authenticates_every_connection() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::with_password("cl-pass"))
        .await
        .expect("cluster starts");
    // One seed: the other masters are learned from CLUSTER SLOTS.
    let seed = cluster.masters[0].url();
    assert!(seed.contains(":cl-pass@"), "{seed}");
    let dir = tempfile::tempdir().expect("temp dir");
    let node = tidewire_server::start(config(&seed, None, &dir))
        .await
        .expect("starts with the cluster's password");
    let mut r = Raw::connect(&node).await;
    for master in &cluster.masters {
        let key = (0..10_000)
            .map(|i| format!("pk{i}"))
            .find(|k| cluster.owner_of(key_slot(k.as_bytes())).port == master.port)
            .expect("a key for every master");
        assert_eq!(r.cmd(&["SET", &key, "v"]).await, V::Simple("OK".into()));
        let direct: Option<String> = master.cmd(&["GET", &key]);
        assert_eq!(direct.as_deref(), Some("v"), "{key}");
        // A dedicated connection to that master.
        assert_eq!(
            r.cmd(&["BLPOP", &key, "0.01"]).await,
            V::Err("WRONGTYPE Operation against a key holding the wrong kind of value".into())
        );
    }
    let mut sub = Raw::connect(&node).await;
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "auth-news"]).await,
        V::Array(vec![V::bulk("subscribe"), V::bulk("auth-news"), V::Int(1)])
    );
    assert!(matches!(
        r.cmd(&["PUBLISH", "auth-news", "x"]).await,
        V::Int(_)
    ));
    assert_eq!(
        sub.read().await,
        V::Array(vec![V::bulk("message"), V::bulk("auth-news"), V::bulk("x")])
    );
    node.shutdown().await;

    // No password, or a wrong one: Redis's own refusal, the password not shown.
    let port = cluster.masters[0].port;
    let error = start_error(&format!("redis://:nope-pass@127.0.0.1:{port}"), None).await;
    assert!(error.contains("refused AUTH: WRONGPASS"), "{error}");
    assert!(!error.contains("nope-pass"), "{error}");
    let error = start_error(&format!("redis://127.0.0.1:{port}"), None).await;
    assert!(error.contains("NOAUTH"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_sees_moved_slots_without_a_redirect() {
    let cluster = RedisCluster::started().await;
    let seed = cluster.masters[0].url();
    let options = ConnectOptions {
        refresh_every: Duration::from_millis(200),
        ..ConnectOptions::default()
    };
    let engine = Cluster::connect_with(parse_seeds(&seed).expect("seed"), options)
        .await
        .expect("connects");
    // The giver has a shared connection (a read of one of its keys) and no key,
    // so its slots can be given away by CLUSTER SETSLOT … NODE alone.
    let (giver, taker) = (&cluster.masters[1], &cluster.masters[2]);
    let giver_slots = slots_of(giver);
    let slot = *giver_slots.first().expect("the giver has slots");
    let key = (0..100_000)
        .map(|i| format!("g{i}"))
        .find(|k| key_slot(k.as_bytes()) == slot)
        .expect("a key in the slot");
    let get = vec![bytes::Bytes::from_static(b"GET"), key.clone().into()];
    let reply = engine
        .run(tidewire_resp::Protocol::Resp2, Some(slot), &[get], true)
        .await
        .expect("GET");
    assert!(
        matches!(reply[..], [tidewire_resp::Reply::Null]),
        "{reply:?}"
    );
    let giver_addr = giver.addr();
    assert!(engine.connected_nodes().iter().any(|n| **n == giver_addr));

    // Every slot of the giver goes to the taker, told to every node.
    let taker_id = taker.id();
    tokio::task::spawn_blocking({
        let nodes: Vec<String> = [taker, giver, &cluster.masters[0]]
            .iter()
            .map(|n| n.url())
            .collect();
        move || {
            for url in nodes {
                let mut conn = redis::Client::open(format!("{url}/"))
                    .and_then(|c| c.get_connection())
                    .expect("connect");
                let mut pipe = redis::pipe();
                for s in &giver_slots {
                    pipe.cmd("CLUSTER")
                        .arg("SETSLOT")
                        .arg(*s)
                        .arg("NODE")
                        .arg(&taker_id)
                        .ignore();
                }
                pipe.query::<()>(&mut conn).expect("SETSLOT NODE");
            }
        }
    })
    .await
    .expect("slots moved");

    // No request is sent: only the background refresh can tell the client.
    let taker_addr = taker.addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owner = engine.owner(Some(slot)).await.expect("owner");
        let masters = engine.masters();
        let connected = engine.connected_nodes();
        if *owner == *taker_addr
            && !masters.iter().any(|m| **m == giver_addr)
            && !connected.iter().any(|n| **n == giver_addr)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the map was not refreshed: owner {owner}, masters {masters:?}, connected {connected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The slots `node` serves, from its own CLUSTER SLOTS.
fn slots_of(node: &redis_support::Node) -> Vec<u16> {
    let redis::Value::Array(ranges) = node.cmd::<redis::Value>(&["CLUSTER", "SLOTS"]) else {
        panic!("CLUSTER SLOTS");
    };
    let mut slots = Vec::new();
    for range in ranges {
        let redis::Value::Array(f) = range else {
            continue;
        };
        if let (
            Some(redis::Value::Int(a)),
            Some(redis::Value::Int(b)),
            Some(redis::Value::Array(m)),
        ) = (f.first(), f.get(1), f.get(2))
        {
            if matches!(m.get(1), Some(redis::Value::Int(p)) if *p == node.port as i64) {
                slots.extend((*a as u16)..=(*b as u16));
            }
        }
    }
    slots
}
