//! The QStash-compatible API over real HTTP: publish, signed delivery to a local
//! receiver, delay, retries into the dead-letter queue, callbacks, cancel,
//! deduplication, limits, and delivery after a restart.

mod common;
mod persistence_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tidewire_server::{Config, Server};

/// Bodies a slow endpoint got, with when each request started and ended.
type Runs = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// A request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

/// A local HTTP endpoint that records what it receives and answers with the
/// statuses it is given, in turn (the last one repeats).
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
    url: String,
}

async fn record(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    r.got.lock().push(Got {
        headers,
        body,
        at: Instant::now(),
    });
    let mut s = r.statuses.lock();
    let status = if s.len() > 1 { s.remove(0) } else { s[0] };
    (
        StatusCode::from_u16(status).unwrap(),
        format!("answer {status}"),
    )
}

async fn receiver(statuses: &[u16]) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = Receiver {
        got: Arc::default(),
        statuses: Arc::new(Mutex::new(statuses.to_vec())),
        url: format!("http://{}/hook", listener.local_addr().unwrap()),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::any(record))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    r
}

impl Receiver {
    fn got(&self) -> Vec<Got> {
        self.got.lock().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Got> {
        assert!(
            common::eventually(|| async { self.got.lock().len() >= n }).await,
            "{} of {n} deliveries arrived",
            self.got.lock().len()
        );
        self.got()
    }
}

struct Q {
    server: Option<Server>,
    base: String,
    token: String,
    http: reqwest::Client,
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.redis.push(("appendonly".into(), "yes".into()));
    c
}

async fn start_in(dir: &std::path::Path) -> Q {
    let server = tidewire_server::start(config(dir))
        .await
        .expect("server starts");
    Q {
        base: format!("http://{}/v2", server.http_addr),
        token: server.rest.tokens.primary().to_string(),
        server: Some(server),
        http: reqwest::Client::new(),
    }
}

impl Q {
    fn keys(&self) -> (String, String) {
        let q = self.server.as_ref().unwrap().qstash.as_ref().unwrap();
        (q.keys.current.clone(), q.keys.next.clone())
    }

    async fn publish(&self, url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/publish/{url}", self.base))
            .bearer_auth(&self.token)
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Verifies a JWT as a receiver does; returns its claims.
fn verify(key: &str, token: &str) -> Option<Value> {
    let parts: Vec<&str> = token.split('.').collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).ok()?)
        .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).ok()?).ok()
}

#[tokio::test]
async fn published_message_arrives_signed_with_forwarded_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let r = receiver(&[200]).await;
    let (status, reply) = q
        .publish(
            &r.url,
            r#"{"eventId":"evt_123"}"#,
            &[
                ("content-type", "application/json"),
                ("upstash-forward-x-tenant", "t1"),
            ],
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["messageId"].as_str().unwrap().to_string();
    assert_eq!(reply["url"], r.url.as_str());
    let got = r.wait_for(1).await;
    let h = &got[0].headers;
    assert_eq!(got[0].body, r#"{"eventId":"evt_123"}"#);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-tenant"], "t1");
    assert_eq!(h["upstash-message-id"], id.as_str());
    assert_eq!(h["upstash-retried"], "0");
    assert!(
        h.get("authorization").is_none(),
        "the QStash token stays with the publisher"
    );
    let (current, next) = q.keys();
    let sig = h["upstash-signature"].to_str().unwrap();
    let claims = verify(&current, sig).expect("signed with the current key");
    assert!(verify(&next, sig).is_none());
    assert_eq!(claims["iss"], "Upstash");
    assert_eq!(claims["sub"], r.url.as_str());
    assert_eq!(
        claims["body"],
        URL_SAFE
            .encode(Sha256::digest(br#"{"eventId":"evt_123"}"#))
            .as_str()
    );
    // Delivered: it left the queue.
    assert!(
        common::eventually(|| async {
            q.call(reqwest::Method::GET, &format!("/messages/{id}"))
                .await
                .0
                == 404
        })
        .await
    );
    let (status, keys) = q.call(reqwest::Method::GET, "/keys").await;
    assert_eq!(
        (status, keys),
        (200, json!({"current": current, "next": next}))
    );
    q.stop().await;
}

#[tokio::test]
async fn delay_holds_the_message_and_cancel_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let r = receiver(&[200]).await;
    let sent = Instant::now();
    let (_, reply) = q.publish(&r.url, "later", &[("upstash-delay", "1s")]).await;
    let id = reply["messageId"].as_str().unwrap().to_string();
    let (status, m) = q
        .call(reqwest::Method::GET, &format!("/messages/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(m["url"], r.url.as_str());
    assert_eq!(m["body"], "later");
    assert!(m["notBefore"].as_u64().unwrap() >= m["createdAt"].as_u64().unwrap() + 1000);
    let got = r.wait_for(1).await;
    assert!(got[0].at.duration_since(sent) >= Duration::from_millis(900));

    let (_, reply) = q.publish(&r.url, "never", &[("upstash-delay", "1h")]).await;
    let id = reply["messageId"].as_str().unwrap().to_string();
    let path = format!("/messages/{id}");
    assert_eq!(
        q.call(reqwest::Method::DELETE, &path).await,
        (200, json!({"cancelled": 1}))
    );
    assert_eq!(q.call(reqwest::Method::GET, &path).await.0, 404);
    assert_eq!(q.call(reqwest::Method::DELETE, &path).await.0, 404);
    q.stop().await;
}

#[tokio::test]
async fn failures_are_retried_then_dead_lettered_with_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    // Two failures, then success: three attempts, counted in Upstash-Retried.
    let flaky = receiver(&[500, 503, 200]).await;
    let callback = receiver(&[200]).await;
    let (_, reply) = q
        .publish(
            &flaky.url,
            "x",
            &[
                ("upstash-retries", "3"),
                ("upstash-retry-delay", "50"),
                ("upstash-callback", &callback.url),
            ],
        )
        .await;
    let got = flaky.wait_for(3).await;
    let retried: Vec<_> = got
        .iter()
        .map(|g| g.headers["upstash-retried"].clone())
        .collect();
    assert_eq!(retried, ["0", "1", "2"]);
    let cb = callback.wait_for(1).await;
    let report: Value = serde_json::from_slice(&cb[0].body).unwrap();
    assert_eq!(report["status"], 200);
    assert_eq!(report["sourceMessageId"], reply["messageId"]);
    assert_eq!(
        report["body"],
        base64::engine::general_purpose::STANDARD.encode("answer 200")
    );
    let (current, _) = q.keys();
    assert!(verify(
        &current,
        cb[0].headers["upstash-signature"].to_str().unwrap()
    )
    .is_some());

    // Always failing: 1 + 1 retry, then the DLQ and the failure callback.
    let down = receiver(&[500]).await;
    let failure = receiver(&[200]).await;
    let (_, reply) = q
        .publish(
            &down.url,
            "y",
            &[
                ("upstash-retries", "1"),
                ("upstash-retry-delay", "50"),
                ("upstash-failure-callback", &failure.url),
            ],
        )
        .await;
    let cb = failure.wait_for(1).await;
    assert_eq!(down.got().len(), 2);
    let report: Value = serde_json::from_slice(&cb[0].body).unwrap();
    assert_eq!(report["status"], 500);
    assert_eq!(report["sourceMessageId"], reply["messageId"]);
    let (status, dlq) = q.call(reqwest::Method::GET, "/dlq").await;
    assert_eq!(status, 200);
    let entry = &dlq["messages"][0];
    assert_eq!(entry["messageId"], reply["messageId"]);
    assert_eq!(entry["responseStatus"], 500);
    assert_eq!(entry["responseBody"], "answer 500");
    assert_eq!(entry["dlqId"], report["dlqId"]);
    // Retried from the DLQ: a new message, delivered once the endpoint is back.
    *down.statuses.lock() = vec![200];
    let dlq_id = entry["dlqId"].as_str().unwrap();
    let (status, retried) = q
        .call(
            reqwest::Method::POST,
            &format!("/dlq/retry?dlqIds={dlq_id}"),
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_ne!(retried["responses"][0]["messageId"], reply["messageId"]);
    down.wait_for(3).await;
    assert_eq!(
        q.call(reqwest::Method::GET, "/dlq").await.1["messages"],
        json!([])
    );
    // Attempts by outcome on /metrics (process-wide counters: at least these).
    let metrics = q
        .http
        .get(format!(
            "http://{}/metrics",
            q.server.as_ref().unwrap().http_addr
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in ["delivered", "retrying", "dead_lettered"] {
        let line = format!("tidewire_qstash_delivery_attempts_total{{outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    q.stop().await;
}

#[tokio::test]
async fn deduplication_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let r = receiver(&[200]).await;
    let h = [("upstash-deduplication-id", "order-1")];
    let (s1, first) = q.publish(&r.url, "a", &h).await;
    let (s2, second) = q.publish(&r.url, "a", &h).await;
    assert_eq!((s1, s2), (201, 202));
    assert_eq!(first["messageId"], second["messageId"]);
    assert_eq!(second["deduplicated"], true);
    let other = receiver(&[200]).await;
    let batch = json!([
        {"destination": other.url, "headers": {"Content-Type": "text/plain"}, "body": "b1"},
        {"destination": other.url, "body": "b2"},
    ]);
    let resp = q
        .http
        .post(format!("{}/batch", q.base))
        .bearer_auth(&q.token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ids: Value = resp.json().await.unwrap();
    assert_eq!(ids.as_array().unwrap().len(), 2);
    let got = other.wait_for(2).await;
    let mut bodies: Vec<_> = got.iter().map(|g| g.body.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, ["b1", "b2"]);
    // The duplicate was never delivered.
    r.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.got().len(), 1);
    q.stop().await;
}

#[tokio::test]
async fn bad_requests_cost_only_their_sender() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let r = receiver(&[200]).await;
    let unauthorized = q
        .http
        .post(format!("{}/publish/{}", q.base, r.url))
        .bearer_auth("wrong")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let (status, err) = q.publish("ftp://files.example/x", "x", &[]).await;
    assert_eq!(status, 400);
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("invalid destination"));
    assert_eq!(q.publish("no-such-group", "x", &[]).await.0, 404);
    for bad in [
        ("upstash-delay", "soon"),
        ("upstash-retries", "1000"),
        ("upstash-retry-delay", "pow(2,"),
        ("upstash-callback", "not a url"),
    ] {
        assert_eq!(q.publish(&r.url, "x", &[bad]).await.0, 400, "{bad:?}");
    }
    // A body over the HTTP listener's limit is refused without being stored.
    let huge = "x".repeat(11 * 1024 * 1024);
    assert_eq!(q.publish(&r.url, &huge, &[]).await.0, 413);
    // The server stops reading the oversized body and closes that connection.
    q.http = reqwest::Client::new();
    let batch = q
        .http
        .post(format!("{}/batch", q.base))
        .bearer_auth(&q.token)
        .json(&json!([{"destination": r.url, "body": "ok"}, {"destination": "ftp://nope"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 400, "a bad entry fails the whole batch");
    // None of it was queued; a good publish still goes through.
    assert_eq!(q.publish(&r.url, "fine", &[]).await.0, 201);
    let got = r.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.got().len(), 1, "{got:?}");
    q.stop().await;
}

#[tokio::test]
async fn an_accepted_message_is_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let r = receiver(&[200]).await;
    let (status, reply) = q
        .publish(&r.url, "survives", &[("upstash-delay", "1s")])
        .await;
    assert_eq!(status, 201);
    q.stop().await;
    assert!(r.got().is_empty());
    let mut q = start_in(dir.path()).await;
    let got = r.wait_for(1).await;
    assert_eq!(got[0].body, "survives");
    assert_eq!(
        got[0].headers["upstash-message-id"],
        reply["messageId"].as_str().unwrap()
    );
    q.stop().await;
}

#[tokio::test]
async fn schedules_fire_at_their_tick_and_can_be_paused() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let r = receiver(&[200]).await;
    let resp = q
        .http
        .post(format!("{}/schedules/{}", q.base, r.url))
        .bearer_auth(&q.token)
        .header("Upstash-Cron", "0 4 * * *")
        .header("Upstash-Forward-X-Job", "nightly")
        .header("Upstash-Queue-Name", "reports")
        .body("report")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["scheduleId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, s) = q
        .call(reqwest::Method::GET, &format!("/schedules/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(s["cron"], "0 4 * * *");
    assert_eq!(s["destination"], r.url.as_str());
    assert_eq!(s["isPaused"], false);
    assert_eq!(s["queueName"], "reports");
    let next = s["nextScheduleTime"].as_u64().unwrap();
    assert_eq!(next % 86_400_000, 4 * 3_600_000, "04:00 UTC");
    assert_eq!(
        q.call(reqwest::Method::GET, "/schedules").await.1[0]["scheduleId"],
        id.as_str()
    );

    // The tick comes: bring it forward in the keyspace instead of waiting a day.
    let server = q.server.as_ref().unwrap();
    let mut redis = common::redis_conn(server).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _: () = redis::pipe()
        .cmd("SELECT")
        .arg(14)
        .ignore()
        .cmd("ZADD")
        .arg("qstash:schedules:due")
        .arg(now)
        .arg(&id)
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();
    let got = r.wait_for(1).await;
    assert_eq!(got[0].body, "report");
    assert_eq!(got[0].headers["x-job"], "nightly");
    assert_eq!(got[0].headers["upstash-schedule-id"], id.as_str());
    // It went through its queue, made with the schedule.
    assert_eq!(q.call(reqwest::Method::GET, "/queues/reports").await.0, 200);
    let (_, s) = q
        .call(reqwest::Method::GET, &format!("/schedules/{id}"))
        .await;
    assert_eq!(
        s["nextScheduleTime"].as_u64().unwrap() % 86_400_000,
        4 * 3_600_000
    );
    assert!(s["lastScheduleTime"].as_u64().is_some());

    // Paused, a due tick does not fire; resumed, the next tick is computed anew.
    let pause = format!("/schedules/{id}/pause");
    assert_eq!(q.call(reqwest::Method::PATCH, &pause).await.0, 200);
    assert_eq!(
        q.call(reqwest::Method::GET, &format!("/schedules/{id}"))
            .await
            .1["isPaused"],
        true
    );
    let _: () = redis::pipe()
        .cmd("SELECT")
        .arg(14)
        .ignore()
        .cmd("ZADD")
        .arg("qstash:schedules:due")
        .arg(now)
        .arg(&id)
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();
    // The loop looks at least once a second: a paused schedule stays silent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.got().len(), 1);
    assert_eq!(
        q.call(reqwest::Method::PATCH, &format!("/schedules/{id}/resume"))
            .await
            .0,
        200
    );
    let (_, s) = q
        .call(reqwest::Method::GET, &format!("/schedules/{id}"))
        .await;
    assert_eq!(s["isPaused"], false);
    assert!(s["nextScheduleTime"].as_u64().unwrap() > now);

    let path = format!("/schedules/{id}");
    assert_eq!(q.call(reqwest::Method::DELETE, &path).await.0, 200);
    assert_eq!(q.call(reqwest::Method::GET, &path).await.0, 404);
    assert_eq!(
        q.call(reqwest::Method::GET, "/schedules").await.1,
        json!([])
    );
    let bad = q
        .http
        .post(format!("{}/schedules/{}", q.base, r.url))
        .bearer_auth(&q.token)
        .header("Upstash-Cron", "every day")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    q.stop().await;
}

#[tokio::test]
async fn a_url_group_fans_a_message_out_to_its_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let (a, b) = (receiver(&[200]).await, receiver(&[500]).await);
    let add = |eps: Value| {
        q.http
            .post(format!("{}/topics/orders/endpoints", q.base))
            .bearer_auth(&q.token)
            .json(&json!({ "endpoints": eps }))
            .send()
    };
    assert_eq!(
        add(json!([{"name": "billing", "url": a.url}]))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        add(json!([{"name": "shipping", "url": b.url}]))
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, g) = q.call(reqwest::Method::GET, "/topics/orders").await;
    assert_eq!(status, 200);
    assert_eq!(g["name"], "orders");
    assert_eq!(
        g["endpoints"],
        json!([{"name": "billing", "url": a.url}, {"name": "shipping", "url": b.url}])
    );
    assert_eq!(
        q.call(reqwest::Method::GET, "/topics").await.1[0]["name"],
        "orders"
    );

    let (status, reply) = q
        .publish("orders", "order 7", &[("upstash-retries", "0")])
        .await;
    assert_eq!(status, 201, "{reply}");
    let sent = reply.as_array().expect("one answer per endpoint");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["url"], a.url.as_str());
    assert_eq!(sent[1]["url"], b.url.as_str());
    assert_eq!(a.wait_for(1).await[0].body, "order 7");
    assert_eq!(b.wait_for(1).await[0].body, "order 7");
    // Each endpoint's message fails or succeeds on its own: only shipping's is
    // dead-lettered, with the group and the endpoint named.
    assert!(
        common::eventually(|| async {
            q.call(reqwest::Method::GET, "/dlq").await.1["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        })
        .await
    );
    let (_, dlq) = q.call(reqwest::Method::GET, "/dlq").await;
    assert_eq!(dlq["messages"][0]["topicName"], "orders");
    assert_eq!(dlq["messages"][0]["endpointName"], "shipping");
    assert_eq!(dlq["messages"][0]["url"], b.url.as_str());

    // Removing by name; the last endpoint removed deletes the group.
    let remove = |eps: Value| {
        q.http
            .delete(format!("{}/topics/orders/endpoints", q.base))
            .bearer_auth(&q.token)
            .json(&json!({ "endpoints": eps }))
            .send()
    };
    assert_eq!(
        remove(json!([{"name": "shipping"}]))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        q.call(reqwest::Method::GET, "/topics/orders").await.1["endpoints"],
        json!([{"name": "billing", "url": a.url}])
    );
    assert_eq!(remove(json!([{"url": a.url}])).await.unwrap().status(), 200);
    assert_eq!(q.call(reqwest::Method::GET, "/topics/orders").await.0, 404);
    let (status, err) = q.publish("orders", "x", &[]).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(q.publish("not a group!", "x", &[]).await.0, 400);
    q.stop().await;
}

#[tokio::test]
async fn a_queue_delivers_in_order_within_its_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    // A slow endpoint: with parallelism 1 the next message may start only once
    // the previous one was answered.
    let got: Runs = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::post(|State(got): State<Runs>, body: String| async move {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(100)).await;
                got.lock().push((body, start, Instant::now()));
                "ok"
            }),
        )
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    for i in 0..5 {
        let r = q
            .http
            .post(format!("{}/enqueue/emails/{url}", q.base))
            .bearer_auth(&q.token)
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (status, queue) = q.call(reqwest::Method::GET, "/queues/emails").await;
    assert_eq!(status, 200);
    assert_eq!(queue["parallelism"], 1, "made by its first message");
    assert!(common::eventually(|| async { got.lock().len() == 5 }).await);
    let done = got.lock().clone();
    let order: Vec<_> = done.iter().map(|(b, _, _)| b.as_str()).collect();
    assert_eq!(order, ["m0", "m1", "m2", "m3", "m4"]);
    for pair in done.windows(2) {
        assert!(pair[1].1 >= pair[0].2, "one at a time: {:?}", order);
    }

    // Paused, nothing starts; lag counts what waits. Resumed, it drains.
    let upsert = |body: Value| {
        q.http
            .post(format!("{}/queues", q.base))
            .bearer_auth(&q.token)
            .json(&body)
            .send()
    };
    let r = upsert(json!({"queueName": "emails", "parallelism": 3, "paused": true}));
    assert_eq!(r.await.unwrap().status(), 200);
    for i in 5..8 {
        q.http
            .post(format!("{}/enqueue/emails/{url}", q.base))
            .bearer_auth(&q.token)
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got.lock().len(), 5);
    let (_, queue) = q.call(reqwest::Method::GET, "/queues/emails").await;
    assert_eq!(
        (queue["paused"].clone(), queue["lag"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(
        q.call(reqwest::Method::POST, "/queues/emails/resume")
            .await
            .0,
        200
    );
    assert!(common::eventually(|| async { got.lock().len() == 8 }).await);
    // With parallelism 3, the three ran together.
    let last3: Vec<_> = got.lock()[5..].to_vec();
    assert!(last3[2].1 < last3[0].2, "{last3:?}");
    assert_eq!(
        q.call(reqwest::Method::GET, "/queues").await.1[0]["name"],
        "emails"
    );
    // A paused queue's waiting message can be read and cancelled.
    let paused = json!({"queueName": "emails", "paused": true});
    assert_eq!(upsert(paused).await.unwrap().status(), 200);
    let r = q
        .http
        .post(format!("{}/enqueue/emails/{url}", q.base))
        .bearer_auth(&q.token)
        .body("m8")
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/messages/{id}");
    assert_eq!(
        q.call(reqwest::Method::GET, &path).await.1["queueName"],
        "emails"
    );
    assert_eq!(q.call(reqwest::Method::DELETE, &path).await.0, 200);
    assert_eq!(
        q.call(reqwest::Method::POST, "/queues/emails/resume")
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got.lock().len(), 8, "the cancelled message is skipped");
    assert_eq!(
        q.call(reqwest::Method::DELETE, "/queues/emails").await.0,
        200
    );
    assert_eq!(q.call(reqwest::Method::GET, "/queues/emails").await.0, 404);
    assert_eq!(
        upsert(json!({"queueName": "x", "parallelism": 0}))
            .await
            .unwrap()
            .status(),
        400
    );
    q.stop().await;
}

#[tokio::test]
async fn a_queued_message_in_flight_at_shutdown_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    // The first attempt hangs past the shutdown; later ones answer at once.
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hang", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/hang",
            axum::routing::post(
                |State(calls): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    let first = {
                        let mut c = calls.lock();
                        c.push(body);
                        c.len() == 1
                    };
                    if first {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    "ok"
                },
            ),
        )
        .with_state(calls.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = q
        .http
        .post(format!("{}/enqueue/jobs/{url}", q.base))
        .bearer_auth(&q.token)
        .body("job 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(common::eventually(|| async { calls.lock().len() == 1 }).await);
    q.stop().await;
    let mut q = start_in(dir.path()).await;
    assert!(
        common::eventually(|| async { calls.lock().len() == 2 }).await,
        "the interrupted delivery is made again"
    );
    assert_eq!(calls.lock()[1], "job 1");
    q.stop().await;
}

/// Through the real binary, whose allocator counts memory for `maxmemory`.
#[tokio::test]
async fn a_publish_the_store_refuses_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let node = persistence_support::start(
        dir.path(),
        &[("maxmemory", "1"), ("maxmemory-policy", "noeviction")],
    );
    let r = receiver(&[200]).await;
    let token = std::fs::read_to_string(dir.path().join("data/rest-token")).unwrap();
    let publish = || {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/v2/publish/{}",
                node.http_port, r.url
            ))
            .bearer_auth(token.trim())
            .header("Upstash-Deduplication-Id", "once")
            .body("x")
            .send()
    };
    let refused = publish().await.unwrap();
    assert_eq!(refused.status(), 500);
    let err: Value = refused.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().starts_with("OOM"), "{err}");
    let mut redis = redis::Client::open(node.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    // Nothing was kept, not even the deduplication id: the retry is a new message.
    assert_eq!(publish().await.unwrap().status(), 201);
    assert_eq!(r.wait_for(1).await.len(), 1);
    node.stop();
}

#[tokio::test]
async fn the_events_log_shows_each_state_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let ok = receiver(&[200]).await;
    let down = receiver(&[503]).await;
    let states = |id: String| {
        let q = &q;
        async move {
            let (_, page) = q
                .call(reqwest::Method::GET, &format!("/events?messageId={id}"))
                .await;
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["state"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let (_, delivered) = q.publish(&ok.url, "a", &[]).await;
    let delivered = delivered["messageId"].as_str().unwrap().to_string();
    let (_, failed) = q
        .publish(
            &down.url,
            "b",
            &[("upstash-retries", "1"), ("upstash-retry-delay", "50")],
        )
        .await;
    let failed = failed["messageId"].as_str().unwrap().to_string();
    let (_, canceled) = q.publish(&ok.url, "c", &[("upstash-delay", "1h")]).await;
    let canceled = canceled["messageId"].as_str().unwrap().to_string();
    q.call(reqwest::Method::DELETE, &format!("/messages/{canceled}"))
        .await;

    assert!(
        common::eventually(|| async {
            states(failed.clone()).await.first().map(String::as_str) == Some("FAILED")
        })
        .await
    );
    assert_eq!(
        states(failed.clone()).await,
        ["FAILED", "ACTIVE", "ERROR", "ACTIVE", "CREATED"]
    );
    assert!(
        common::eventually(|| async {
            states(delivered.clone()).await == ["DELIVERED", "ACTIVE", "CREATED"]
        })
        .await
    );
    assert_eq!(states(canceled.clone()).await, ["CANCELED", "CREATED"]);

    let (_, page) = q
        .call(reqwest::Method::GET, &format!("/events?messageId={failed}"))
        .await;
    let events = page["events"].as_array().unwrap();
    assert!(events[0]["error"].as_str().unwrap().starts_with("503"));
    assert!(events[2]["nextDeliveryTime"].as_u64().is_some());
    assert_eq!(events[4]["url"], down.url.as_str());
    assert_eq!(
        events[4]["body"],
        base64::engine::general_purpose::STANDARD.encode("b")
    );
    // Pages: two at a time, each older than the last, until none is left.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..20 {
        let (_, page) = q
            .call(
                reqwest::Method::GET,
                &format!("/events?count=2&cursor={cursor}"),
            )
            .await;
        let events = page["events"].as_array().unwrap();
        seen.extend(events.iter().map(|e| e["time"].as_u64().unwrap()));
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10, "every event once");
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
    q.stop().await;
}

#[tokio::test]
async fn cancelling_everything_pages_through_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let (a, b) = (receiver(&[200]).await, receiver(&[200]).await);
    let mut kept = Vec::new();
    for i in 0..6 {
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let (_, reply) = q.publish(url, "later", &[("upstash-delay", "1h")]).await;
        if i % 2 == 1 {
            kept.push(reply["messageId"].as_str().unwrap().to_string());
        }
    }
    // A paused queue's waiting messages are pending too.
    q.http
        .post(format!("{}/queues", q.base))
        .bearer_auth(&q.token)
        .json(&json!({"queueName": "held", "paused": true}))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        q.http
            .post(format!("{}/enqueue/held/{}", q.base, a.url))
            .bearer_auth(&q.token)
            .body("queued")
            .send()
            .await
            .unwrap();
    }
    // Only a's, two per page: 3 scheduled and 2 queued, whatever b's sit between.
    let mut cancelled = 0;
    let mut cursor = "0".to_string();
    for _ in 0..10 {
        let (status, page) = q
            .call(
                reqwest::Method::DELETE,
                &format!("/messages?count=2&cursor={cursor}&url={}", a.url),
            )
            .await;
        assert_eq!(status, 200);
        cancelled += page["cancelled"].as_u64().unwrap();
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(cancelled, 5);
    for id in &kept {
        let (status, _) = q
            .call(reqwest::Method::GET, &format!("/messages/{id}"))
            .await;
        assert_eq!(status, 200, "b's message {id} is still pending");
    }
    let (_, held) = q.call(reqwest::Method::GET, "/queues/held").await;
    assert_eq!(held["lag"], 0);
    q.stop().await;
}

/// An endpoint that takes `ms` to answer and records when each request started
/// and how many were running at once.
async fn slow_endpoint(ms: u64) -> (String, Arc<Mutex<Vec<Instant>>>, Arc<Mutex<(usize, usize)>>) {
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    // (running now, most running at once)
    let running: Arc<Mutex<(usize, usize)>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    let (s, r) = (starts.clone(), running.clone());
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::post(move || {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.lock().push(Instant::now());
                {
                    let mut r = r.lock();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                r.lock().0 -= 1;
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, starts, running)
}

#[tokio::test]
async fn flow_control_keys_bound_parallelism_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let flow = |value: &'static str| {
        [
            ("upstash-flow-control-key", "tenant:7"),
            ("upstash-flow-control-value", value),
        ]
    };
    // Parallelism 2: never more than two at once.
    let (url, starts, running) = slow_endpoint(150).await;
    for _ in 0..6 {
        assert_eq!(q.publish(&url, "p", &flow("parallelism=2")).await.0, 201);
    }
    let (status, info) = q.call(reqwest::Method::GET, "/flowControl/tenant:7").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["flowControlKey"], "tenant:7");
    assert_eq!(info["parallelismMax"], 2);
    assert!(common::eventually(|| async { starts.lock().len() == 6 }).await);
    assert!(common::eventually(|| async { running.lock().0 == 0 }).await);
    assert_eq!(running.lock().1, 2, "at most two at once");

    // Rate 2 per second: the third and fourth wait for the next period.
    let (url, starts, _) = slow_endpoint(0).await;
    let begin = Instant::now();
    for _ in 0..4 {
        assert_eq!(
            q.publish(&url, "r", &flow("rate=2, period=1s")).await.0,
            201
        );
    }
    assert!(common::eventually(|| async { starts.lock().len() == 4 }).await);
    let late: Vec<_> = starts
        .lock()
        .iter()
        .map(|t| t.duration_since(begin))
        .collect();
    assert!(late[1] < Duration::from_millis(900), "{late:?}");
    assert!(late[2] >= Duration::from_millis(900), "{late:?}");
    let (_, info) = q.call(reqwest::Method::GET, "/flowControl/tenant:7").await;
    assert_eq!(
        (info["rateMax"].clone(), info["ratePeriod"].clone()),
        (json!(2), json!(1))
    );

    // Pinned, publishes' values do not change it; paused, nothing starts.
    let pin = "/flowControl/tenant:7/pin?parallelism=1";
    assert_eq!(q.call(reqwest::Method::POST, pin).await.0, 200);
    assert_eq!(
        q.call(reqwest::Method::POST, "/flowControl/tenant:7/pause")
            .await
            .0,
        200
    );
    let (url, starts, _) = slow_endpoint(0).await;
    q.publish(&url, "held", &flow("parallelism=9")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(starts.lock().is_empty());
    let (_, info) = q.call(reqwest::Method::GET, "/flowControl/tenant:7").await;
    assert_eq!(info["parallelismMax"], 1);
    assert_eq!(info["isPinnedParallelism"], true);
    assert_eq!(info["isPaused"], true);
    assert_eq!(info["waitListSize"], 1);
    assert_eq!(
        q.call(reqwest::Method::POST, "/flowControl/tenant:7/resume")
            .await
            .0,
        200
    );
    assert!(common::eventually(|| async { starts.lock().len() == 1 }).await);
    let unpin = "/flowControl/tenant:7/unpin?parallelism=true";
    assert_eq!(q.call(reqwest::Method::POST, unpin).await.0, 200);
    assert_eq!(
        q.call(reqwest::Method::GET, "/flowControl").await.1[0]["isPinnedParallelism"],
        false
    );
    let (status, global) = q.call(reqwest::Method::GET, "/globalParallelism").await;
    assert_eq!(status, 200);
    assert_eq!(global["parallelismMax"], 32);
    assert_eq!(
        q.call(reqwest::Method::GET, "/flowControl/nobody").await.0,
        404
    );
    let bad = [
        ("upstash-flow-control-key", "k"),
        ("upstash-flow-control-value", "speed=3"),
    ];
    assert_eq!(q.publish(&url, "x", &bad).await.0, 400);
    q.stop().await;
}

#[tokio::test]
async fn a_non_retryable_answer_goes_to_the_dlq_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = start_in(dir.path()).await;
    let calls: Arc<Mutex<usize>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/refuse", listener.local_addr().unwrap());
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/refuse",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                *counted.lock() += 1;
                (
                    StatusCode::from_u16(489).unwrap(),
                    [("Upstash-NonRetryable-Error", "true")],
                    "bad payload",
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_, reply) = q.publish(&url, "x", &[("upstash-retries", "5")]).await;
    assert!(
        common::eventually(|| async {
            q.call(reqwest::Method::GET, "/dlq").await.1["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        })
        .await
    );
    let (_, dlq) = q.call(reqwest::Method::GET, "/dlq").await;
    assert_eq!(dlq["messages"][0]["messageId"], reply["messageId"]);
    assert_eq!(dlq["messages"][0]["responseStatus"], 489);
    assert_eq!(*calls.lock(), 1, "no retry after a non-retryable answer");
    q.stop().await;
}
