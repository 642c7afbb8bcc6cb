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
//! ([`delivery`]).

pub mod delivery;
pub mod events;
pub mod lanes;
pub mod message;
pub mod retry_delay;
pub mod schedule;
pub mod signature;
pub mod storage;
pub mod url_group;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tidewire_store::Store;
use tokio::sync::{watch, Notify};

use crate::config::{Config, QstashConfig};
use lanes::{Lane, LaneSettings};
use message::{Message, Refused};
use signature::SigningKeys;
use storage::Storage;

/// Most ids one bulk request names or one page lists.
const MAX_PAGE: usize = 1000;
/// A page's size when the request names none.
const DEFAULT_PAGE: usize = 100;

/// Shared by the routes and the delivery loop.
pub struct Qstash {
    pub storage: Storage,
    pub keys: SigningKeys,
    tokens: Vec<String>,
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
            tokens,
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

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
        else {
            return false;
        };
        self.tokens
            .iter()
            .any(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())))
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

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
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

/// `/v2/enqueue/<queue>/<destination>`: a publish whose messages wait their turn
/// in the queue.
async fn enqueue(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v2/enqueue/").unwrap_or("");
    let (name, dest) = rest.split_once('/').unwrap_or((rest, ""));
    if !url_group::valid_name(name) {
        return error(StatusCode::BAD_REQUEST, "invalid queue name");
    }
    let name = name.to_string();
    let mut destination = decode_destination(dest);
    if let Some(query) = req.uri().query() {
        destination.push('?');
        destination.push_str(query);
    }
    let ip = caller_ip(&req);
    let (parts, body) = req.into_parts();
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = delivery::now_ms();
    let mut publishes = match q.expand(&destination, &parts.headers, body, now, &ip) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    if let Err(r) = q.ensure_queue(&name, now).await {
        return refused(r);
    }
    for p in &mut publishes {
        p.message.queue_name = Some(name.clone());
    }
    match q.accept_all(&destination, publishes).await {
        Ok((status, reply)) => (status, axum::Json(reply)).into_response(),
        Err(r) => refused(r),
    }
}

async fn list_queues(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .lanes(false)
        .iter()
        .map(|(lane, s)| s.queue_json(q.storage.lag(lane)))
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

async fn get_queue(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    let lane = Lane::Queue(name);
    match q.storage.lane(&lane) {
        Some(s) => axum::Json(s.queue_json(q.storage.lag(&lane))).into_response(),
        None => not_found("queue", lane.name()),
    }
}

/// `{"queueName","parallelism","paused"}`: creates or changes a queue.
async fn upsert_queue(State(q): State<Arc<Qstash>>, body: Body) -> Response {
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (name, parallelism, paused) = match lanes::parse_upsert(&body) {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let now = delivery::now_ms();
    let lane = Lane::Queue(name);
    let mut s = q
        .storage
        .lane(&lane)
        .unwrap_or_else(|| LaneSettings::queue(lane.name(), now));
    if let Some(p) = parallelism {
        s.parallelism = p;
    }
    if let Some(p) = paused {
        s.paused = p;
    }
    s.updated_at = now;
    q.save_lane(&lane, &s).await
}

impl Qstash {
    /// Stores a lane's settings (durably), wakes the loop, answers 200.
    async fn save_lane(&self, lane: &Lane, s: &LaneSettings) -> Response {
        match self.storage.save_lane(lane, s) {
            Ok(seq) => {
                self.wait_durable(seq).await;
                self.wake.notify_one();
                StatusCode::OK.into_response()
            }
            Err(e) => refused(store_refused(e)),
        }
    }

    /// Changes a lane that exists (404 otherwise) and saves it.
    async fn change_lane(&self, lane: Lane, change: impl FnOnce(&mut LaneSettings)) -> Response {
        let what = match lane {
            Lane::Queue(_) => "queue",
            Lane::Flow(_) => "flow control key",
        };
        let Some(mut s) = self.storage.lane(&lane) else {
            return not_found(what, lane.name());
        };
        change(&mut s);
        s.updated_at = delivery::now_ms();
        self.save_lane(&lane, &s).await
    }
}

async fn delete_queue(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    match q.storage.delete_lane(&Lane::Queue(name.clone())) {
        (true, seq) => {
            q.wait_durable(seq).await;
            StatusCode::OK.into_response()
        }
        (false, _) => not_found("queue", &name),
    }
}

async fn pause_queue(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    q.change_lane(Lane::Queue(name), |s| s.paused = true).await
}

async fn resume_queue(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    q.change_lane(Lane::Queue(name), |s| s.paused = false).await
}

/// QStash's view of a flow-control key.
fn flow_json(q: &Qstash, lane: &Lane, s: &LaneSettings) -> Value {
    let (used, left) = q.storage.rate_used(lane);
    let period_ms = s.period_secs.max(1) * 1000;
    json!({
        "flowControlKey": lane.name(),
        "waitListSize": q.storage.lag(lane),
        "parallelismMax": s.parallelism,
        "parallelismCount": q.storage.in_flight(lane),
        "rateMax": s.rate,
        "rateCount": used,
        "ratePeriod": s.period_secs,
        "ratePeriodStart": if left > 0 { delivery::now_ms() + left - period_ms } else { 0 },
        "isPaused": s.paused,
        "isPinnedParallelism": s.pinned_parallelism,
        "isPinnedRate": s.pinned_rate,
    })
}

async fn list_flows(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .lanes(true)
        .iter()
        .map(|(lane, s)| flow_json(&q, lane, s))
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

async fn get_flow(State(q): State<Arc<Qstash>>, Path(key): Path<String>) -> Response {
    let lane = Lane::Flow(key);
    match q.storage.lane(&lane) {
        Some(s) => axum::Json(flow_json(&q, &lane, &s)).into_response(),
        None => not_found("flow control key", lane.name()),
    }
}

/// `POST /v2/flowControl/<key>/pause|resume|pin|unpin|resetRate`.
async fn flow_action(
    State(q): State<Arc<Qstash>>,
    Path((key, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    let lane = Lane::Flow(key);
    let pairs = query_pairs(req.uri().query());
    let number = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
    };
    match action.as_str() {
        "pause" => q.change_lane(lane, |s| s.paused = true).await,
        "resume" => q.change_lane(lane, |s| s.paused = false).await,
        "pin" => {
            let limit = |n: u64| n.min(u64::from(lanes::MAX_PARALLELISM)) as u32;
            let (parallelism, rate, period) =
                (number("parallelism"), number("rate"), number("period"));
            q.change_lane(lane, |s| {
                if let Some(p) = parallelism {
                    s.parallelism = limit(p);
                    s.pinned_parallelism = true;
                }
                if let Some(r) = rate {
                    s.rate = limit(r);
                    s.pinned_rate = true;
                }
                if let Some(p) = period {
                    s.period_secs = p.max(1);
                    s.pinned_rate = true;
                }
            })
            .await
        }
        "unpin" => {
            let (parallelism, rate) = (flag("parallelism"), flag("rate"));
            q.change_lane(lane, |s| {
                s.pinned_parallelism &= !parallelism;
                s.pinned_rate &= !rate;
            })
            .await
        }
        "resetRate" => {
            if q.storage.lane(&lane).is_none() {
                return not_found("flow control key", lane.name());
            }
            q.storage.reset_rate(&lane);
            q.wake.notify_one();
            StatusCode::OK.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Deliveries in flight over all lanes and none, against the loop's slots.
async fn global_parallelism(State(q): State<Arc<Qstash>>) -> Response {
    axum::Json(json!({
        "parallelismMax": q.config.parallelism,
        "parallelismCount": q.in_flight.load(std::sync::atomic::Ordering::Relaxed),
    }))
    .into_response()
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

fn dlq_matches(b: &Bulk, l: &storage::DeadLetter) -> bool {
    b.url.as_ref().is_none_or(|u| &l.message.url == u)
        && b.message_id
            .as_ref()
            .is_none_or(|id| &l.message.message_id == id)
}

/// The DLQ entries a bulk request names, and the cursor of the next page.
fn dlq_selection(q: &Qstash, b: &Bulk) -> (Vec<storage::DeadLetter>, Option<String>) {
    if !b.ids.is_empty() {
        let letters = b
            .ids
            .iter()
            .filter_map(|id| q.storage.dead_letter(id))
            .collect();
        return (letters, None);
    }
    let ids = q.storage.dead_letters(b.cursor, b.count);
    let cursor = next_cursor(b, ids.len());
    let letters = ids
        .iter()
        .filter_map(|id| q.storage.dead_letter(id))
        .filter(|l| dlq_matches(b, l))
        .collect();
    (letters, cursor)
}

async fn list_dlq(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let b = bulk(req.uri().query(), "dlqIds");
    let (letters, cursor) = dlq_selection(&q, &b);
    let mut reply = json!({
        "messages": letters.iter().map(storage::DeadLetter::to_json).collect::<Vec<_>>(),
    });
    if let Some(c) = cursor {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}

async fn get_dlq(State(q): State<Arc<Qstash>>, Path(id): Path<String>) -> Response {
    match q.storage.dead_letter(&id) {
        Some(l) => axum::Json(l.to_json()).into_response(),
        None => not_found("dlq message", &id),
    }
}

async fn delete_dlq_one(State(q): State<Arc<Qstash>>, Path(id): Path<String>) -> Response {
    if q.storage.forget_dead_letter(&id) {
        axum::Json(json!({ "deleted": 1 })).into_response()
    } else {
        not_found("dlq message", &id)
    }
}

async fn delete_dlq_many(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let mut b = bulk(req.uri().query(), "dlqIds");
    // Deleting removes what it lists: every page of "all" starts at the front.
    b.cursor = 0;
    let (letters, cursor) = dlq_selection(&q, &b);
    let deleted = letters
        .iter()
        .filter(|l| q.storage.forget_dead_letter(&l.dlq_id))
        .count();
    let mut reply = json!({ "deleted": deleted });
    if let Some(c) = cursor.filter(|_| b.ids.is_empty()) {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}

/// Publishes each named DLQ entry again as a new message with its retries reset,
/// and removes it from the DLQ.
async fn retry_dlq(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let mut b = bulk(req.uri().query(), "dlqIds");
    b.cursor = 0;
    let (letters, cursor) = dlq_selection(&q, &b);
    let mut responses = Vec::with_capacity(letters.len());
    for l in letters {
        match q.retry_dead_letter(&l).await {
            Ok(id) => responses.push(json!({ "messageId": id })),
            Err(r) => return refused(r),
        }
    }
    let mut reply = json!({ "responses": responses });
    if let Some(c) = cursor.filter(|_| b.ids.is_empty()) {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}

async fn list_schedules(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .schedules()
        .iter()
        .map(schedule::Schedule::to_json)
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

/// `/v2/schedules/<rest>`: one route, as a destination URL (POST) holds slashes
/// an id (GET, DELETE, PATCH …/pause) does not.
async fn schedules(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/v2/schedules/")
        .unwrap_or("")
        .to_string();
    let method = req.method().clone();
    match method.as_str() {
        "POST" => create_schedule(q, req).await,
        "GET" => match q.storage.schedule(&rest) {
            Some(s) => axum::Json(s.to_json()).into_response(),
            None => not_found("schedule", &rest),
        },
        "DELETE" => match q.storage.delete_schedule(&rest) {
            (true, seq) => {
                q.wait_durable(seq).await;
                StatusCode::OK.into_response()
            }
            (false, _) => not_found("schedule", &rest),
        },
        "PATCH" => {
            let (id, pause) = match rest.rsplit_once('/') {
                Some((id, "pause")) => (id, true),
                Some((id, "resume")) => (id, false),
                _ => return error(StatusCode::NOT_FOUND, "Not Found"),
            };
            let Some(mut s) = q.storage.schedule(id) else {
                return not_found("schedule", id);
            };
            if s.is_paused != pause {
                s.is_paused = pause;
                if !pause {
                    match schedule::next_tick(&s.cron, delivery::now_ms()) {
                        Ok(next) => s.next_schedule_time = next,
                        Err(r) => return refused(r),
                    }
                }
                let seq = match q.storage.save_schedule(&s) {
                    Ok(seq) => seq,
                    Err(e) => return refused(store_refused(e)),
                };
                q.wait_durable(seq).await;
                q.wake.notify_one();
            }
            StatusCode::OK.into_response()
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    }
}

/// A schedule from a publish-shaped request with `Upstash-Cron`;
/// `Upstash-Schedule-Id` names it (replacing the schedule of that id).
async fn create_schedule(q: Arc<Qstash>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let destination = {
        let rest = path.strip_prefix("/v2/schedules/").unwrap_or("");
        let mut d = decode_destination(rest);
        if let Some(query) = req.uri().query() {
            d.push('?');
            d.push_str(query);
        }
        d
    };
    let ip = caller_ip(&req);
    let (parts, body) = req.into_parts();
    let Some(cron) = parts
        .headers
        .get("upstash-cron")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "Upstash-Cron header is required");
    };
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = delivery::now_ms();
    let next = match schedule::next_tick(cron, now) {
        Ok(t) => t,
        Err(r) => return refused(r),
    };
    // Not-before means nothing for a template; its delay applies to each tick.
    let mut headers = parts.headers.clone();
    headers.remove("upstash-not-before");
    // A group's schedule keeps the group's name and fans out at each tick, to the
    // endpoints the group has then.
    let group = if message::is_url(&destination) || !url_group::valid_name(&destination) {
        None
    } else {
        match q.storage.url_group(&destination) {
            Some(g) => Some(g),
            None => return not_found("url group", &destination),
        }
    };
    let template_url = group
        .as_ref()
        .and_then(|g| g.endpoints.first())
        .map_or(destination.as_str(), |e| e.url.as_str());
    let mut publish = match Message::from_publish(template_url, &headers, body, &q.config, now, &ip)
    {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    publish.message.url_group = group.map(|g| g.name);
    // `Upstash-Queue-Name`: each tick's messages wait their turn in that queue.
    if let Some(name) = parts
        .headers
        .get("upstash-queue-name")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        if !url_group::valid_name(name) {
            return error(StatusCode::BAD_REQUEST, "invalid Upstash-Queue-Name");
        }
        if let Err(r) = q.ensure_queue(name, now).await {
            return refused(r);
        }
        publish.message.queue_name = Some(name.to_string());
    }
    let id = match parts
        .headers
        .get("upstash-schedule-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(id) if id.len() <= 256 && !id.contains('/') => id.to_string(),
        Some(_) => return error(StatusCode::BAD_REQUEST, "invalid Upstash-Schedule-Id"),
        None => message::new_id("scd_"),
    };
    let created_at = q.storage.schedule(&id).map_or(now, |old| old.created_at);
    let template = publish.message;
    let s = schedule::Schedule {
        schedule_id: id.clone(),
        cron: cron.to_string(),
        delay_ms: template.not_before.saturating_sub(now),
        template,
        created_at,
        is_paused: false,
        last_schedule_time: None,
        next_schedule_time: next,
    };
    let seq = match q.storage.save_schedule(&s) {
        Ok(seq) => seq,
        Err(e) => return refused(store_refused(e)),
    };
    q.wait_durable(seq).await;
    q.wake.notify_one();
    axum::Json(json!({ "scheduleId": id })).into_response()
}

async fn list_url_groups(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .url_groups()
        .iter()
        .map(url_group::UrlGroup::to_json)
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

async fn get_url_group(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    match q.storage.url_group(&name) {
        Some(g) => axum::Json(g.to_json()).into_response(),
        None => not_found("url group", &name),
    }
}

async fn delete_url_group(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    match q.storage.delete_url_group(&name) {
        (true, seq) => {
            q.wait_durable(seq).await;
            StatusCode::OK.into_response()
        }
        (false, _) => not_found("url group", &name),
    }
}

/// Adds endpoints to a group, creating it; an endpoint with a URL already in the
/// group replaces it (so its name can change).
async fn add_endpoints(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    if !url_group::valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            "a url group name has only letters, digits, '-', '_' and '.' (at most 128)",
        );
    }
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let added = match url_group::parse_endpoints(&body, true) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    let now = delivery::now_ms();
    let mut g = q.storage.url_group(&name).unwrap_or(url_group::UrlGroup {
        name: name.clone(),
        created_at: now,
        updated_at: now,
        endpoints: Vec::new(),
    });
    for e in added {
        g.endpoints.retain(|old| old.url != e.url);
        g.endpoints.push(e);
    }
    if g.endpoints.len() > url_group::MAX_ENDPOINTS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "a url group holds at most {} endpoints",
                url_group::MAX_ENDPOINTS
            ),
        );
    }
    g.updated_at = now;
    let seq = match q.storage.save_url_group(&g) {
        Ok(seq) => seq,
        Err(e) => return refused(store_refused(e)),
    };
    q.wait_durable(seq).await;
    StatusCode::OK.into_response()
}

/// Removes the endpoints matching by name or by URL; a group left empty goes.
async fn remove_endpoints(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let removed = match url_group::parse_endpoints(&body, false) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    let Some(mut g) = q.storage.url_group(&name) else {
        return not_found("url group", &name);
    };
    g.endpoints.retain(|e| {
        !removed.iter().any(|r| {
            (!r.url.is_empty() && r.url == e.url) || (r.name.is_some() && r.name == e.name)
        })
    });
    g.updated_at = delivery::now_ms();
    let seq = match q.storage.save_url_group(&g) {
        Ok(seq) => seq,
        Err(e) => return refused(store_refused(e)),
    };
    q.wait_durable(seq).await;
    StatusCode::OK.into_response()
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
