//! Several realtime apps in one server (`[[realtime.apps]]`): each app's keys reach
//! its own channels and history, kept in the keyspace under its own prefix.

mod common;

use base64::Engine;

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

const MAIN: &str = "main.a1:main-secret";

/// A server with these realtime settings, in `dir`.
async fn start_with(
    dir: &std::path::Path,
    realtime: tidewire_realtime::RealtimeConfig,
) -> anyhow::Result<tidewire_server::Server> {
    let config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.to_path_buf(),
        realtime,
        ..tidewire_server::Config::default()
    };
    tidewire_server::start(config).await
}
const SHOP: &str = "shop.k1:shop-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_apps_have_their_own_keys_channels_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[realtime]\nkeys = [{{ key = \"{MAIN}\" }}]\n\n[[realtime.apps]]\nkeys = [{{ key = \"{SHOP}\" }}]\nmutable_messages = [\"m:*\"]\n"
    );
    let file: toml::Value = toml::from_str(&toml).unwrap();
    let realtime: tidewire_realtime::RealtimeConfig = file["realtime"]
        .clone()
        .try_into()
        .expect("realtime section");
    let server = start_with(dir.path(), realtime)
        .await
        .expect("server starts");
    let http = reqwest::Client::new();
    let url = format!("http://{}/channels/orders/messages", server.http_addr);
    let r = http
        .post(&url)
        .header("Authorization", basic(SHOP))
        .json(&serde_json::json!({"name": "placed", "data": "shop-1"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let history = |key: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .get(&url)
                .header("Authorization", basic(key))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let body: serde_json::Value = r.json().await.unwrap();
            body.as_array()
                .expect("messages")
                .iter()
                .map(|m| m["data"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(history(SHOP).await, ["shop-1"]);
    assert!(
        history(MAIN).await.is_empty(),
        "the main app has its own channel"
    );
    // A wrong secret for the shop's key is refused, not served by another app.
    let r = http
        .get(&url)
        .header("Authorization", basic("shop.k1:wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut conn = common::redis_conn(&server).await;
    let _: () = redis::cmd("SELECT")
        .arg(15)
        .query_async(&mut conn)
        .await
        .unwrap();
    let n: i64 = redis::cmd("ZCARD")
        .arg("realtime:shop:history:orders")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "the shop's history is under its own prefix");
    drop(conn);
    server.shutdown().await;
}

#[tokio::test]
async fn an_app_without_keys_of_its_own_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let realtime: tidewire_realtime::RealtimeConfig = serde_json::from_value(serde_json::json!({
        "keys": [{"key": MAIN}],
        "apps": [{"keys": [{"key": "main.b2:other"}]}],
    }))
    .unwrap();
    let err = start_with(dir.path(), realtime)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("already used"), "{err}");
}

/// `/metrics` reports the realtime layer by app, and the history writes the realtime
/// layer makes in the keyspace are not counted as users' commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_the_realtime_layer_by_app() {
    let dir = tempfile::tempdir().unwrap();
    let realtime: tidewire_realtime::RealtimeConfig = serde_json::from_value(serde_json::json!({
        "keys": [{"key": MAIN}],
        "apps": [{"keys": [{"key": "metrics.k:s"}]}],
    }))
    .unwrap();
    let server = start_with(dir.path(), realtime)
        .await
        .expect("server starts");
    let http = reqwest::Client::new();
    for i in 0..2 {
        let r = http
            .post(format!("http://{}/channels/m/messages", server.http_addr))
            .header("Authorization", basic(MAIN))
            .json(&serde_json::json!({"data": format!("x{i}")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let text = http
        .get(format!("http://{}/metrics", server.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "tidewire_realtime_messages_in_total{app=\"main\"} 2",
        "tidewire_realtime_messages_in_total{app=\"metrics\"} 0",
        "tidewire_realtime_messages_out_total{app=\"main\"} 0",
        "tidewire_realtime_connections{app=\"main\"} 0",
        "tidewire_realtime_channels{app=\"metrics\"} 0",
        "tidewire_realtime_presence_members{app=\"main\"} 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("cmd=\"zadd\""),
        "history appends counted as user commands:\n{text}"
    );
    server.shutdown().await;
}
