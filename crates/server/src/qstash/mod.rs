//! The QStash-compatible message API under `/v2` on the HTTP listener, so
//! `@upstash/qstash`'s `Client` (with `QSTASH_URL` pointing here) publishes
//! messages and its `Receiver` verifies what Tidewire delivers:
//!
//! - `POST /v2/publish/<url>`: one message (`Upstash-Delay`, `-Not-Before`,
//!   `-Retries`, `-Retry-Delay`, `-Method`, `-Timeout`, `-Callback`,
//!   `-Failure-Callback`, `-Deduplication-Id`, `-Content-Based-Deduplication`,
//!   `-Forward-*`); 201 `{"messageId","url"}`, 202 with `deduplicated` for a
//!   repeat;
//! - `POST /v2/batch`: several, as a JSON array;
//! - `GET|DELETE /v2/messages/<id>`, `DELETE /v2/messages`: read and cancel;
//! - `GET|DELETE /v2/dlq[/<id>]`, `POST /v2/dlq/retry`: the dead-letter queue;
//! - `POST /v2/schedules/<url>` (`Upstash-Cron`), `GET /v2/schedules[/<id>]`,
//!   `DELETE /v2/schedules/<id>`, `PATCH /v2/schedules/<id>/pause|resume`
//!   ([`schedule`]);
//! - `GET|DELETE /v2/topics[/<name>]`, `POST|DELETE /v2/topics/<name>/endpoints`:
//!   URL groups ([`url_group`]); a publish or schedule to a group's name fans out
//!   to its endpoints;
//! - `POST /v2/enqueue/<queue>/<url>`, `GET|POST /v2/queues`,
//!   `GET|DELETE /v2/queues/<name>`, `POST /v2/queues/<name>/pause|resume`:
//!   queues, delivering in order with a parallelism of their own; and flow
//!   control (`Upstash-Flow-Control-Key`: parallelism and rate per key;
//!   `GET /v2/flowControl[/<key>]`, `POST /v2/flowControl/<key>/<action>`,
//!   `GET /v2/globalParallelism`) ([`lanes`]);
//! - `GET /v2/events`: the events log ([`events`]);
//! - `GET /v2/keys`: the signing keys a receiver verifies with.
//!
//! Messages live in the keyspace ([`storage`]) and are sent by one delivery loop
//! ([`delivery`]). This file has the state, publishing, messages and events; the
//! routes of lanes, the DLQ, schedules and URL groups have files of their own.

pub mod delivery;
mod dlq_routes;
pub mod events;
mod lane_routes;
pub mod lanes;
pub mod message;
pub mod retry_delay;
pub mod schedule;
mod schedule_routes;
pub mod signature;
pub mod storage;
pub mod url_group;
mod url_group_routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tidewire_store::Store;
use tokio::sync::{watch, Notify};

use crate::config::{Config, QstashConfig};
use crate::upstash::auth::Tokens;
use crate::upstash::json_error as error;
use dlq_routes::*;
use lane_routes::*;
use lanes::{Lane, LaneSettings};
use message::{Message, Refused};
use schedule_routes::*;
use signature::SigningKeys;
use storage::Storage;
use url_group_routes::*;

/// Most ids one bulk request names or one page lists.
const MAX_PAGE: usize = 1000;
/// A page's size when the request names none.
const DEFAULT_PAGE: usize = 100;

/// Shared by the routes and the delivery loop.
pub struct Qstash {
    pub storage: Storage,
    pub keys: SigningKeys,
    /// Bearer tokens, checked as the REST API checks its own.
    tokens: Tokens,
    config: QstashConfig,
    pub(crate) store: Arc<Store>,
    http: reqwest::Client,
    /// Wakes the delivery loop: a message was published or a slot came free.
    wake: Notify,
    /// Deliveries running now (`/v2/globalParallelism`).
    in_flight: std::sync::atomic::AtomicUsize,
    max_body: usize,
}

impl Qstash {
    /// `rest_tokens`: the Upstash REST read-write tokens, used when `[qstash]`
    /// names none.
    pub fn new(
        store: Arc<Store>,
        config: &Config,
        rest_tokens: &[String],
    ) -> anyhow::Result<Arc<Qstash>> {
        let q = &config.qstash;
        let tokens: Vec<String> = if q.tokens.is_empty() {
            rest_tokens
        } else {
            &q.tokens
        }
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
        let http = reqwest::Client::builder()
            // A destination's redirect is its answer, as QStash treats it.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Arc::new(Qstash {
            storage: Storage::new(store.clone(), q.db, q.events),
            keys: SigningKeys::resolve(q, &config.data_dir)?,
            tokens: Tokens::new(tokens, Vec::new()),
            config: q.clone(),
            store,
            http,
            wake: Notify::new(),
            in_flight: Default::default(),
            max_body: config.http.max_body_bytes,
        }))
    }

    /// Starts the delivery loop.
    pub fn spawn_delivery(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        delivery::run(self.clone(), shutdown)
    }

    /// A bearer token only: QStash takes none in the query string.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        self.tokens.check(headers, None).is_some()
    }

    /// Under `appendfsync always`, returns once the writes up to `seq` are on disk.
    async fn wait_durable(&self, seq: u64) {
        if seq > 0 {
            if let Some(mut durable) = self.store.durable_waiter() {
                durable.wait_for(seq).await;
            }
        }
    }

    /// Stores a publish and answers as QStash does; the answer is sent once the
    /// message is durable (under `appendfsync always`).
    async fn accept(&self, publish: message::Publish) -> Result<(StatusCode, Value), Refused> {
        let m = &publish.message;
        let (result, seq) = self
            .storage
            .enqueue(m, publish.dedup.as_deref())
            .map_err(store_refused)?;
        self.wait_durable(seq).await;
        Ok(match result {
            storage::Enqueued::Stored => {
                self.wake.notify_one();
                (
                    StatusCode::CREATED,
                    json!({ "messageId": m.message_id, "url": m.url }),
                )
            }
            storage::Enqueued::Duplicate(first) => (
                StatusCode::ACCEPTED,
                json!({ "messageId": first, "url": m.url, "deduplicated": true }),
            ),
        })
    }

    /// Publishes a DLQ entry again as a new message with its retries reset, and
    /// removes it from the DLQ; the new message's id.
    pub async fn retry_dead_letter(&self, l: &storage::DeadLetter) -> Result<String, Refused> {
        let now = delivery::now_ms();
        let mut m = l.message.clone();
        m.message_id = message::new_id("msg_");
        m.retried = 0;
        m.not_before = now;
        m.created_at = now;
        let id = m.message_id.clone();
        self.accept(message::Publish {
            message: m,
            dedup: None,
        })
        .await?;
        self.storage.forget_dead_letter(&l.dlq_id);
        Ok(id)
    }

    /// What the dashboard shows: counts, the first pending messages and DLQ
    /// entries, schedules, queues, flow-control keys and the newest events.
    pub fn overview(&self) -> Value {
        const LISTED: usize = 100;
        let pending: Vec<Value> = self
            .storage
            .pending(0, LISTED)
            .iter()
            .filter_map(|id| self.storage.get(id))
            .map(|m| {
                json!({
                    "messageId": m.message_id,
                    "url": m.url,
                    "method": m.method,
                    "notBefore": m.not_before,
                    "retried": m.retried,
                    "maxRetries": m.max_retries,
                    "queueName": m.queue_name,
                    "flowControlKey": m.flow_control.as_ref().map(|f| &f.key),
                    "scheduleId": m.schedule_id,
                })
            })
            .collect();
        let dlq: Vec<Value> = self
            .storage
            .dead_letters(0, LISTED)
            .iter()
            .filter_map(|id| self.storage.dead_letter(id))
            .map(|l| {
                json!({
                    "dlqId": l.dlq_id,
                    "messageId": l.message.message_id,
                    "url": l.message.url,
                    "responseStatus": l.response_status,
                    "responseBody": l.response_body.chars().take(200).collect::<String>(),
                    "failedAt": l.failed_at,
                })
            })
            .collect();
        let lanes = |flows: bool| -> Vec<Value> {
            self.storage
                .lanes(flows)
                .iter()
                .map(|(lane, s)| {
                    json!({
                        "name": lane.name(),
                        "parallelism": s.parallelism,
                        "rate": s.rate,
                        "periodSecs": s.period_secs,
                        "paused": s.paused,
                        "waiting": self.storage.lag(lane),
                        "inFlight": self.storage.in_flight(lane),
                    })
                })
                .collect()
        };
        let (events, _) = self.storage.events(&events::Filter::default(), 50, None);
        json!({
            "counts": {
                "pending": self.storage.pending_count(),
                "dlq": self.storage.dlq_count(),
                "inFlight": self.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            },
            "pending": pending,
            "dlq": dlq,
            "schedules": self.storage.schedules().iter().map(schedule::Schedule::to_json).collect::<Vec<_>>(),
            "queues": lanes(false),
            "flows": lanes(true),
            "events": events,
        })
    }

    /// The messages a publish to `dest` makes: one for a URL, one per endpoint
    /// for the name of a URL group (404 if there is no such group).
    fn expand(
        &self,
        dest: &str,
        headers: &HeaderMap,
        body: Vec<u8>,
        now: u64,
        ip: &str,
    ) -> Result<Vec<message::Publish>, Refused> {
        if message::is_url(dest) || !url_group::valid_name(dest) {
            return Ok(vec![Message::from_publish(
                dest,
                headers,
                body,
                &self.config,
                now,
                ip,
            )?]);
        }
        let group = self
            .storage
            .url_group(dest)
            .ok_or_else(|| Refused(404, format!("url group {dest} not found")))?;
        group
            .endpoints
            .iter()
            .map(|e| {
                let mut p =
                    Message::from_publish(&e.url, headers, body.clone(), &self.config, now, ip)?;
                p.message.url_group = Some(group.name.clone());
                p.message.endpoint_name = e.name.clone();
                // One deduplication id covers the publish: each endpoint's message.
                if let Some(d) = p.dedup.as_mut() {
                    d.push(':');
                    d.push_str(&e.url);
                }
                Ok(p)
            })
            .collect()
    }

    /// A queue named by a message that does not exist yet is made with one
    /// delivery at a time, as QStash does.
    async fn ensure_queue(&self, name: &str, now: u64) -> Result<(), Refused> {
        let lane = Lane::Queue(name.to_string());
        if self.storage.lane(&lane).is_none() {
            let seq = self
                .storage
                .save_lane(&lane, &LaneSettings::queue(name, now))
                .map_err(store_refused)?;
            self.wait_durable(seq).await;
        }
        Ok(())
    }

    /// Stores what a publish expanded to: one answer for a URL, an array for a
    /// group. The status is the first message's (201, or 202 if deduplicated).
    async fn accept_all(
        &self,
        dest: &str,
        publishes: Vec<message::Publish>,
    ) -> Result<(StatusCode, Value), Refused> {
        let to_group = !message::is_url(dest);
        let mut status = StatusCode::CREATED;
        let mut replies = Vec::with_capacity(publishes.len());
        for p in publishes {
            let (s, reply) = self.accept(p).await?;
            if replies.is_empty() {
                status = s;
            }
            replies.push(reply);
        }
        Ok(match (to_group, replies.len()) {
            (false, 1) => (status, replies.pop().unwrap_or(Value::Null)),
            _ => (status, Value::Array(replies)),
        })
    }
}

/// The routes, refusing requests without a valid token.
pub fn routes(q: Arc<Qstash>) -> Router {
    Router::new()
        .route("/v2/publish/{*destination}", post(publish))
        .route("/v2/batch", post(batch))
        .route("/v2/messages", axum::routing::delete(cancel_many))
        .route("/v2/messages/{id}", get(get_message).delete(cancel_one))
        .route("/v2/dlq", get(list_dlq).delete(delete_dlq_many))
        .route("/v2/dlq/retry", post(retry_dlq))
        .route("/v2/dlq/{id}", get(get_dlq).delete(delete_dlq_one))
        .route("/v2/schedules", get(list_schedules))
        .route("/v2/schedules/{*rest}", axum::routing::any(schedules))
        .route("/v2/topics", get(list_url_groups))
        .route(
            "/v2/topics/{name}",
            get(get_url_group).delete(delete_url_group),
        )
        .route(
            "/v2/topics/{name}/endpoints",
            post(add_endpoints).delete(remove_endpoints),
        )
        .route("/v2/enqueue/{queue}/{*destination}", post(enqueue))
        .route("/v2/queues", get(list_queues).post(upsert_queue))
        .route("/v2/queues/{name}", get(get_queue).delete(delete_queue))
        .route("/v2/queues/{name}/pause", post(pause_queue))
        .route("/v2/queues/{name}/resume", post(resume_queue))
        .route("/v2/flowControl", get(list_flows))
        .route("/v2/flowControl/{key}", get(get_flow))
        .route("/v2/flowControl/{key}/{action}", post(flow_action))
        .route("/v2/globalParallelism", get(global_parallelism))
        .route("/v2/events", get(list_events))
        .route("/v2/keys", get(keys))
        .layer(axum::middleware::from_fn_with_state(
            q.clone(),
            require_token,
        ))
        .with_state(q)
}

async fn require_token(
    State(q): State<Arc<Qstash>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if !q.authorized(req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: invalid or missing QStash token",
        );
    }
    next.run(req).await
}

/// A write the store refused (`OOM` under `maxmemory`, `LOADING` at start):
/// nothing is acknowledged.
fn store_refused(e: String) -> Refused {
    let status = if e.starts_with("LOADING") { 503 } else { 500 };
    Refused(status, e)
}

/// 404 for the `what` named `id`.
fn not_found(what: &str, id: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("{what} {id} not found"))
}

fn refused(r: Refused) -> Response {
    error(
        StatusCode::from_u16(r.0).unwrap_or(StatusCode::BAD_REQUEST),
        &r.1,
    )
}

async fn read_body(q: &Qstash, body: Body) -> Result<Vec<u8>, Response> {
    axum::body::to_bytes(body, q.max_body)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("message body larger than {} bytes", q.max_body),
            )
        })
}

fn caller_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default()
}

/// The destination as the client wrote it after `/v2/publish/`, with the query
/// (the destination's own).
fn raw_destination(req: &Request) -> String {
    let path = req.uri().path();
    let mut dest = decode_destination(path.strip_prefix("/v2/publish/").unwrap_or(path));
    if let Some(query) = req.uri().query() {
        dest.push('?');
        dest.push_str(query);
    }
    dest
}

/// A destination percent-encoded as a whole (`https%3A%2F%2F…`) is decoded;
/// otherwise it is taken as written.
fn decode_destination(rest: &str) -> String {
    let lower = rest.get(..8).unwrap_or(rest).to_ascii_lowercase();
    if lower.starts_with("http%3a") || lower.starts_with("https%3a") {
        percent_encoding::percent_decode_str(rest)
            .decode_utf8_lossy()
            .into_owned()
    } else {
        rest.to_string()
    }
}

async fn publish(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let destination = raw_destination(&req);
    let ip = caller_ip(&req);
    let (parts, body) = req.into_parts();
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let publishes = match q.expand(&destination, &parts.headers, body, delivery::now_ms(), &ip) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    match q.accept_all(&destination, publishes).await {
        Ok((status, reply)) => (status, axum::Json(reply)).into_response(),
        Err(r) => refused(r),
    }
}

/// `[{"destination","headers":{…},"body"}, …]`: each entry as one publish.
async fn batch(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let ip = caller_ip(&req);
    let body = match read_body(&q, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "batch body must be a JSON array of messages",
        );
    };
    if entries.len() > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("a batch holds at most {MAX_PAGE} messages"),
        );
    }
    // Every entry is checked before any is stored: a bad one fails the batch.
    let mut publishes = Vec::with_capacity(entries.len());
    let now = delivery::now_ms();
    for entry in &entries {
        let Some(destination) = entry.get("destination").and_then(Value::as_str) else {
            return error(
                StatusCode::BAD_REQUEST,
                "every batch entry needs a destination",
            );
        };
        let queue = match entry.get("queue") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if url_group::valid_name(name) => Some(name.as_str()),
            Some(_) => return error(StatusCode::BAD_REQUEST, "invalid queue name"),
        };
        let mut headers = HeaderMap::new();
        if let Some(map) = entry.get("headers").and_then(Value::as_object) {
            for (k, v) in map {
                let (Ok(name), Some(Ok(value))) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    v.as_str().map(HeaderValue::from_str),
                ) else {
                    return error(StatusCode::BAD_REQUEST, &format!("invalid header {k:?}"));
                };
                headers.append(name, value);
            }
        }
        let body = match entry.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        };
        match q.expand(destination, &headers, body, now, &ip) {
            Ok(mut p) => {
                if let Some(name) = queue {
                    if let Err(r) = q.ensure_queue(name, now).await {
                        return refused(r);
                    }
                    for one in &mut p {
                        one.message.queue_name = Some(name.to_string());
                    }
                }
                publishes.push((destination, p))
            }
            Err(r) => return refused(r),
        }
    }
    let mut replies = Vec::with_capacity(publishes.len());
    for (destination, p) in publishes {
        match q.accept_all(destination, p).await {
            Ok((_, reply)) => replies.push(reply),
            Err(r) => return refused(r),
        }
    }
    axum::Json(Value::Array(replies)).into_response()
}

async fn get_message(State(q): State<Arc<Qstash>>, Path(id): Path<String>) -> Response {
    match q.storage.get(&id) {
        Some(m) => axum::Json(m.to_json()).into_response(),
        None => not_found("message", &id),
    }
}

async fn cancel_one(State(q): State<Arc<Qstash>>, Path(id): Path<String>) -> Response {
    if q.storage.cancel(&id) {
        axum::Json(json!({ "cancelled": 1 })).into_response()
    } else {
        not_found("message", &id)
    }
}

/// Query pairs, percent-decoded, repeated names kept.
fn query_pairs(req_query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    req_query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// What a bulk request names: ids, or (none named) a page of everything.
struct Bulk {
    ids: Vec<String>,
    count: usize,
    cursor: usize,
    /// Filters on the listed entries (`url`, `messageId`).
    url: Option<String>,
    message_id: Option<String>,
}

fn bulk(query: Option<&str>, ids_name: &str) -> Bulk {
    let mut b = Bulk {
        ids: Vec::new(),
        count: DEFAULT_PAGE,
        cursor: 0,
        url: None,
        message_id: None,
    };
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "count" => b.count = v.parse().unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
            "cursor" => b.cursor = v.parse().unwrap_or(0),
            "url" => b.url = Some(v),
            "messageId" => b.message_id = Some(v),
            k if k == ids_name && b.ids.len() < MAX_PAGE => b.ids.push(v),
            _ => {}
        }
    }
    b
}

/// The next page's cursor, when `listed` filled the page.
fn next_cursor(b: &Bulk, listed: usize) -> Option<String> {
    (listed == b.count).then(|| (b.cursor + listed).to_string())
}

async fn cancel_many(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let b = bulk(req.uri().query(), "messageIds");
    let all = b.ids.is_empty();
    let ids = if all {
        q.storage.pending(b.cursor, b.count)
    } else {
        b.ids.clone()
    };
    let cancelled = ids
        .iter()
        .filter(|id| {
            let chosen = b
                .url
                .as_ref()
                .is_none_or(|u| q.storage.get(id).is_some_and(|m| &m.url == u));
            chosen && q.storage.cancel(id)
        })
        .count();
    let mut reply = json!({ "cancelled": cancelled });
    // Cancelled messages leave the list, so the next page starts after the
    // ones this page kept.
    if all && ids.len() == b.count {
        reply["cursor"] = (b.cursor + ids.len() - cancelled).to_string().into();
    }
    axum::Json(reply).into_response()
}

/// `GET /v2/events`: a page of the events log, newest first.
async fn list_events(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let mut filter = events::Filter::default();
    let mut count = DEFAULT_PAGE;
    let mut cursor = None;
    for (k, v) in query_pairs(req.uri().query()) {
        match k.as_str() {
            "count" => count = v.parse().unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
            "cursor" if !v.is_empty() => cursor = Some(v),
            "messageId" | "messageIds" if filter.message_ids.len() < MAX_PAGE => {
                filter.message_ids.push(v)
            }
            "state" => filter.state = Some(v),
            "url" => filter.url = Some(v),
            "topicName" | "urlGroup" => filter.url_group = Some(v),
            "queueName" => filter.queue_name = Some(v),
            "scheduleId" => filter.schedule_id = Some(v),
            "fromDate" => filter.from = v.parse().ok(),
            "toDate" => filter.to = v.parse().ok(),
            _ => {}
        }
    }
    let (events, next) = q.storage.events(&filter, count, cursor.as_deref());
    let mut reply = json!({ "events": events });
    if let Some(c) = next {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}

async fn keys(State(q): State<Arc<Qstash>>) -> Response {
    axum::Json(json!({ "current": q.keys.current, "next": q.keys.next })).into_response()
}
