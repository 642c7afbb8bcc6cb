//! Server-Sent Events: subscribe, psubscribe and monitor streams, and cleanup when
//! the HTTP client goes away.

mod upstash_support;

use std::time::{Duration, Instant};

use serde_json::json;
use upstash_support::*;

/// Reads the stream until `want` appears (bounded in time).
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(want) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want:?} in {seen:?}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("no data")
            .unwrap()
            .expect("stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn open(t: &Rest, path: &str) -> reqwest::Response {
    let r = t
        .http
        .post(format!("{}{}", t.base, path))
        .bearer_auth(&t.token)
        .header("Accept", "text/event-stream")
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    r
}

async fn numsub(t: &Rest, ch: &str) -> i64 {
    t.cmd(json!(["PUBSUB", "NUMSUB", ch])).await.1["result"][1]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn subscribe_streams_messages_and_cleans_up() {
    let t = start().await;
    let mut s = open(&t, "/subscribe/news").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "data: subscribe,news,1\n").await;
    assert_eq!(numsub(&t, "news").await, 1);
    assert_eq!(
        t.cmd(json!(["PUBLISH", "news", "hello, world"])).await.1,
        json!({"result": 1})
    );
    read_until(&mut s, &mut seen, "data: message,news,hello, world\n").await;
    drop(s);
    // The server notices the closed connection; publishing helps it notice sooner.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.cmd(json!(["PUBLISH", "news", "anyone?"])).await;
        if numsub(&t, "news").await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "subscription left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
}

#[tokio::test]
async fn psubscribe_and_get_form() {
    let t = start().await;
    let mut s = t
        .http
        .get(format!("{}/psubscribe/user:*", t.base))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "data: psubscribe,user:*,1\n").await;
    t.cmd(json!(["PUBLISH", "user:7", "{\"a\":1}"])).await;
    read_until(
        &mut s,
        &mut seen,
        "data: pmessage,user:*,user:7,{\"a\":1}\n",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn monitor_streams_commands() {
    let t = start().await;
    let mut s = open(&t, "/monitor").await;
    let mut seen = String::new();
    // Commands from other clients appear; retry until the monitor is registered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.cmd(json!(["SET", "mon", "v"])).await;
        let got = tokio::time::timeout(Duration::from_millis(300), s.chunk()).await;
        if let Ok(Ok(Some(c))) = got {
            seen.push_str(&String::from_utf8_lossy(&c));
        }
        if seen.contains("\"SET\" \"mon\" \"v\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no monitor line in {seen:?}");
    }
    t.stop().await;
}

#[tokio::test]
async fn sse_needs_a_name_and_rights() {
    let t = start_with(|c| {
        c.upstash.tokens = vec!["rw".into()];
        c.upstash.readonly_tokens = vec!["ro".into()];
    })
    .await;
    let (status, _) = t.post_json("/subscribe", &json!([]), "rw").await;
    assert_eq!(status, 400);
    let (status, body) = t.post_json("/monitor", &json!([]), "ro").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("NOPERM"));
    let r = t
        .http
        .get(format!("{}/subscribe/x", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    t.stop().await;
}

#[tokio::test]
async fn shutdown_ends_streams() {
    let t = start().await;
    let mut s = open(&t, "/subscribe/bye").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, "subscribe,bye,1").await;
    let started = Instant::now();
    t.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "shutdown waited for SSE"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = s.chunk().await {}
    })
    .await;
    assert!(end.is_ok());
}
