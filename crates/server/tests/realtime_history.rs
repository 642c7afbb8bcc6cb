//! Realtime channel history lives in the keyspace: visible to Redis clients and
//! persisted with it, so it survives a restart.

mod common;

use base64::Engine;

async fn start_in(dir: &std::path::Path) -> tidewire_server::Server {
    let config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.to_path_buf(),
        ..tidewire_server::Config::default()
    };
    tidewire_server::start(config).await.expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_in_the_keyspace_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let key = server.realtime_root_key.clone().expect("root key");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    let http = reqwest::Client::new();
    for i in 0..3 {
        let r = http
            .post(format!(
                "http://{}/channels/stream:7/messages",
                server.http_addr
            ))
            .header("Authorization", &auth)
            .json(&serde_json::json!({"name": "tip:new", "data": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    // Inspectable from the Redis side.
    let mut conn = common::redis_conn(&server).await;
    let _: () = redis::cmd("SELECT")
        .arg(15)
        .query_async(&mut conn)
        .await
        .unwrap();
    let n: i64 = redis::cmd("ZCARD")
        .arg("realtime:history:stream:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let ttl: i64 = redis::cmd("PTTL")
        .arg("realtime:history:stream:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "history carries the retention as a TTL");
    drop(conn);
    server.shutdown().await;

    let server = start_in(dir.path()).await;
    let r = http
        .get(format!(
            "http://{}/channels/stream:7/messages?direction=forwards",
            server.http_addr
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let body: serde_json::Value = r.json().await.unwrap();
    let data: Vec<&str> = body
        .as_array()
        .expect("array of messages")
        .iter()
        .map(|m| m["data"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(data, vec!["m0", "m1", "m2"]);
    server.shutdown().await;
}

/// The connections the history store uses internally are not Redis clients: CLIENT
/// KILL must neither count nor kill them (Redis's harness checks the count against
/// INFO's connected_clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_leaves_history_connections_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let mut me = common::redis_conn(&server).await;
    let _other = common::redis_conn(&server).await;
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut me)
        .await
        .unwrap();
    let connected: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients");
    let listed: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut me)
        .await
        .unwrap();
    assert_eq!(listed.lines().count() as i64, connected, "{listed}");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut me)
        .await
        .unwrap();
    assert_eq!(killed, connected - 1);
    server.shutdown().await;
}
