//! `GET /metrics`: Prometheus text with command, client, keyspace, memory, pub/sub
//! and REST figures.

mod upstash_support;

use serde_json::json;
use upstash_support::*;

#[tokio::test]
async fn metrics_text() {
    let t = start().await;
    t.cmd(json!(["SET", "a", "1", "EX", 100])).await;
    t.cmd(json!(["SET", "b", "2"])).await;
    t.cmd(json!(["GET", "a"])).await;
    t.post_json("", &json!(["GET", "a"]), "bad").await;
    let r = t
        .http
        .get(format!("http://{}/metrics", t.server().http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for want in [
        "tidewire_commands_processed_total{cmd=\"set\"}",
        "tidewire_rest_requests_total{status=\"200\"}",
        "tidewire_rest_requests_total{status=\"401\"}",
        "tidewire_connected_clients{door=\"resp\"} 0",
        "tidewire_connected_clients{door=\"http\"}",
        "tidewire_keyspace_keys{db=\"0\"} 2",
        "tidewire_keyspace_expiring_keys{db=\"0\"} 1",
        "tidewire_command_duration_seconds_bucket{",
        "family=\"string\"",
        "tidewire_memory_allocated_bytes",
        "tidewire_expired_keys_total",
        "tidewire_evicted_keys_total",
        "tidewire_pubsub_channels 0",
        "tidewire_pubsub_patterns 0",
        "tidewire_primitive_decisions_total{decision=\"throttle_allowed\"}",
        "tidewire_primitive_decisions_total{decision=\"lock_busy\"}",
        "# EOF",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    t.stop().await;
}

/// An Upstash call sent to the root of the HTTP port (a REST URL without `/redis`)
/// gets a JSON error naming the right URL, which `@upstash/redis` shows.
#[tokio::test]
async fn upstash_call_without_the_mount_path_gets_a_json_error() {
    let t = start().await;
    let addr = t.server().http_addr;
    for path in ["", "/", "/pipeline", "/multi-exec"] {
        let r = t
            .http
            .post(format!("http://{addr}{path}"))
            .header("Authorization", "Bearer whatever")
            .json(&json!(["GET", "a"]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("UPSTASH_REDIS_REST_URL=http://{addr}/redis")),
            "{path}: {body}"
        );
    }
    // The realtime layer still owns GET / (its WebSocket endpoint).
    let r = t.http.get(format!("http://{addr}/")).send().await.unwrap();
    assert_ne!(r.status(), 404);
    t.stop().await;
}
