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
        "# EOF",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    t.stop().await;
}
