//! The web dashboard at `/dashboard` on the HTTP port: a page, its script and style
//! embedded in the binary (no CDN, works offline), and the JSON API under
//! `/dashboard/api/` that the page calls.
//!
//! Login takes one credential: the REST read-write token (an admin session), a
//! read-only REST token (a read-only session), a REST token mapped to an ACL user
//! (`[upstash] acl_tokens`), or an ACL `user:password`. ACL sessions are admin
//! when their user may run `ACL SETUSER` (`+@admin` or `+@all`), read-only
//! otherwise. The session lives in a server-side map behind an HttpOnly,
//! SameSite=Strict cookie with a random id.
//!
//! Every command runs through the REST API's client ([`RestState::client_as`]),
//! as the session's ACL user, so ACLs apply exactly as over REST or RESP. A
//! read-only session is refused any command not flagged `readonly` here, on the
//! server, whatever the page shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes as BodyBytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use tidewire_resp::Reply;
use tidewire_store::exec::resolve;

use crate::upstash::auth::Access;
use crate::upstash::{policy, RestState};

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// Name of the session cookie.
const COOKIE: &str = "tw_dashboard";
/// A session ends after this long without a request.
const IDLE: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept at most; the oldest goes first, so logins cannot grow memory.
const MAX_SESSIONS: usize = 1024;
/// Most entries a key view returns at once (hash fields, set members, …).
const MAX_ITEMS: i64 = 1000;
/// Most bytes of a string value a key view returns.
const MAX_STRING: i64 = 256 * 1024;

/// A logged-in browser.
#[derive(Clone)]
struct Session {
    /// ACL user the commands run as; `None` is the default user (REST tokens).
    user: Option<String>,
    admin: bool,
    seen: Instant,
}

/// Shared by every dashboard request.
pub struct DashState {
    rest: Arc<RestState>,
    /// The QStash API, when enabled (its view).
    qstash: Option<Arc<crate::qstash::Qstash>>,
    hubs: Vec<Arc<tidewire_realtime::Hub>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The last (time, commands processed) sample and the rate it gave: ops/s
    /// between two calls, shared by every open page (one closer than 200 ms to the
    /// last sample gets that sample's rate).
    sample: Mutex<Option<(Instant, u64, Option<f64>)>>,
}

/// The dashboard's routes (`/dashboard`, `/dashboard/…`). Merged beside the
/// realtime router, whose root catch-all these static paths outrank.
pub fn routes(
    rest: Arc<RestState>,
    hubs: Vec<Arc<tidewire_realtime::Hub>>,
    qstash: Option<Arc<crate::qstash::Qstash>>,
) -> Router {
    let st = Arc::new(DashState {
        rest,
        qstash,
        hubs,
        sessions: Mutex::new(HashMap::new()),
        sample: Mutex::new(None),
    });
    Router::new()
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(index))
        .route("/dashboard/index.html", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
        .route("/dashboard/api/login", post(login))
        .route("/dashboard/api/logout", post(logout))
        .route("/dashboard/api/session", get(session_info))
        .route("/dashboard/api/overview", get(overview))
        .route("/dashboard/api/keys", get(keys))
        .route("/dashboard/api/key", get(key_get).post(key_write))
        .route("/dashboard/api/command", post(command))
        .route("/dashboard/api/commands", get(command_names))
        .route("/dashboard/api/slowlog", get(slowlog))
        .route("/dashboard/api/realtime/channels", get(rt_channels))
        .route("/dashboard/api/realtime/channel", get(rt_channel))
        .route("/dashboard/api/realtime/tail", get(rt_tail))
        .route("/dashboard/api/realtime/connections", get(rt_connections))
        .route("/dashboard/api/realtime/disconnect", post(rt_disconnect))
        .route("/dashboard/api/realtime/keys", get(tokens::keys))
        .route("/dashboard/api/realtime/token", post(tokens::mint))
        .route("/dashboard/api/queues", get(queues::list))
        .route("/dashboard/api/queue", get(queues::jobs))
        .route("/dashboard/api/queue/job", get(queues::job))
        .route("/dashboard/api/queue/action", post(queues::action))
        .route("/dashboard/api/primitives", get(primitives::list))
        .route("/dashboard/api/memory", get(memory::by_prefix))
        .route("/dashboard/api/qstash", get(qstash::overview))
        .route("/dashboard/api/qstash/action", post(qstash::action))
        .with_state(st)
}

/// Security headers for every asset: nothing loads from elsewhere, no framing.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn api_error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// The client's address, for CLIENT LIST (empty when unknown, as in tests that
/// call the router without a socket).
struct Peer(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
        ))
    }
}

/// 32 random bytes, URL-safe base64: unguessable session ids.
fn session_id() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

impl DashState {
    /// The request's session, refreshed; `None` if absent or expired.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_value(headers)?;
        let mut map = self.sessions.lock();
        let now = Instant::now();
        let s = map.get_mut(&id)?;
        if now.duration_since(s.seen) > IDLE {
            map.remove(&id);
            return None;
        }
        s.seen = now;
        Some(s.clone())
    }

    fn insert(&self, s: Session) -> String {
        let id = session_id();
        let mut map = self.sessions.lock();
        let now = Instant::now();
        map.retain(|_, v| now.duration_since(v.seen) <= IDLE);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| v.seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), s);
        id
    }

    /// Whether `user` may administer (run `ACL SETUSER`): what makes an ACL
    /// session an admin one.
    fn is_admin(&self, user: &str) -> bool {
        let argv = [
            Bytes::from_static(b"ACL"),
            Bytes::from_static(b"SETUSER"),
            Bytes::from_static(b"x"),
        ];
        match (self.rest.store.acl.user(user), resolve(&argv)) {
            (Some(u), Ok(cmd)) => u.may_run(cmd, &argv),
            _ => false,
        }
    }

    /// Checks a pasted credential: a REST token first, then `user:password`.
    fn authenticate(&self, peer: &str, credential: &str) -> Option<Session> {
        let session = |user: Option<String>, admin| Session {
            user,
            admin,
            seen: Instant::now(),
        };
        match self.rest.tokens.access(credential) {
            Some(Access::ReadWrite) => return Some(session(None, true)),
            Some(Access::ReadOnly) => return Some(session(None, false)),
            Some(Access::User(i)) => {
                let name = self.rest.tokens.user_name(i).to_string();
                let admin = self.is_admin(&name);
                return Some(session(Some(name), admin));
            }
            None => {}
        }
        let (name, password) = credential.split_once(':')?;
        let user = self.rest.store.acl.user(name)?;
        // A `nopass` user would let any password in: the dashboard asks for one
        // that was set (RESP may be private where the HTTP port is not).
        if user.password_matches(session_id().as_bytes()) {
            return None;
        }
        // AUTH itself decides (enabled, password), and logs a failure in ACL LOG.
        let mut client = self.rest.client_as(peer, None);
        let reply = client.execute(&[
            Bytes::from_static(b"AUTH"),
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(password.as_bytes()),
        ]);
        if reply.is_error() {
            return None;
        }
        let admin = self.is_admin(name);
        Some(session(Some(name.to_string()), admin))
    }

    /// Runs one command as the session's user. With `reads_only_check` a read-only
    /// session may run only commands that read (SLOWLOG, which reads but is not
    /// flagged so, goes without). Errors come back as a status and message.
    async fn run(
        &self,
        s: &Session,
        peer: &str,
        argv: &[Bytes],
        reads_only_check: bool,
    ) -> Result<Reply, (StatusCode, String)> {
        if argv.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "ERR empty command".into()));
        }
        // Subscriptions, MONITOR, blocking commands, MULTI: refused as over REST.
        if let Err(Reply::Error(e)) = policy::check(argv, Access::ReadWrite) {
            return Err((StatusCode::BAD_REQUEST, e));
        }
        if reads_only_check && !s.admin {
            let allowed = match resolve(argv) {
                Ok(cmd) => policy::reads_only(cmd),
                Err(Reply::Error(e)) => return Err((StatusCode::BAD_REQUEST, e)),
                Err(_) => false,
            };
            if !allowed {
                return Err((
                    StatusCode::FORBIDDEN,
                    "NOPERM this dashboard session is read-only".into(),
                ));
            }
        }
        let (reply, write_seq) = {
            let mut client = self.rest.client_as(peer, s.user.as_deref());
            // With `--engine`, on the engine, as the REST API runs it.
            let reply = client.execute_routed(argv).await;
            (reply, client.write_seq)
        };
        self.rest.wait_durable(write_seq).await;
        match reply {
            Reply::Error(e) if e.starts_with("NOPERM") => Err((StatusCode::FORBIDDEN, e)),
            Reply::Error(e) => Err((StatusCode::BAD_REQUEST, e)),
            r => Ok(r),
        }
    }
}

/// A reply as JSON: strings for bulk and status replies, arrays for arrays, an
/// object for a map with string keys.
pub fn reply_json(r: &Reply) -> Value {
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
    match r {
        Reply::Status(s) => Value::String((*s).to_string()),
        Reply::SimpleString(s) | Reply::BigNumber(s) => Value::String(s.clone()),
        Reply::Error(e) => json!({ "error": e }),
        Reply::Int(n) => json!(n),
        Reply::Bulk(b) | Reply::Verbatim(_, b) => text(b),
        Reply::Null | Reply::NullArray => Value::Null,
        Reply::Array(v) | Reply::Set(v) | Reply::Push(v) => {
            Value::Array(v.iter().map(reply_json).collect())
        }
        Reply::Bulks(list) => Value::Array(list.iter().map(text).collect()),
        Reply::Map(pairs) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in pairs {
                let key = match reply_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, reply_json(v));
            }
            Value::Object(obj)
        }
        Reply::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Reply::Bool(b) => Value::Bool(*b),
    }
}

fn args(items: &[&[u8]]) -> Vec<Bytes> {
    items.iter().map(|a| Bytes::copy_from_slice(a)).collect()
}

/// Resolves the session or answers 401.
macro_rules! session_or_401 {
    ($st:expr, $headers:expr) => {
        match $st.session(&$headers) {
            Some(s) => s,
            None => return api_error(StatusCode::UNAUTHORIZED, "not logged in"),
        }
    };
}

fn run_err((status, msg): (StatusCode, String)) -> Response {
    api_error(status, &msg)
}

/// An error from [`DashState::read_many`] as a response: `403` for NOPERM.
fn read_err(e: &str) -> Response {
    let status = if e.starts_with("NOPERM") {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    api_error(status, e)
}

/// Refuses a read-only session with `403`.
macro_rules! admin_or_403 {
    ($s:expr) => {
        if !$s.admin {
            return api_error(StatusCode::FORBIDDEN, "this dashboard session is read-only");
        }
    };
}

mod memory;
mod primitives;
mod qstash;
mod queues;
mod tokens;

/// Most SCAN calls one sampled walk makes (each asks for 1000 keys), so that a
/// walk with a rare MATCH over a huge keyspace still ends.
const MAX_SCAN_CALLS: usize = 1000;

impl DashState {
    /// Runs commands that only read (flagged `readonly`), back to back with one
    /// client as the session's user, for the views that read many keys at once
    /// (queues, primitives, memory). One reply per command, errors included; a
    /// command that would write is answered with an error, not run.
    fn read_many(&self, s: &Session, peer: &str, cmds: &[Vec<Bytes>]) -> Vec<Reply> {
        let mut client = self.rest.client_as(peer, s.user.as_deref());
        cmds.iter()
            .map(|argv| match resolve(argv) {
                Ok(cmd) if policy::reads_only(cmd) => client.execute(argv),
                Ok(_) => Reply::Error("ERR the dashboard only reads here".into()),
                Err(e) => e,
            })
            .collect()
    }

    /// One read command's reply as JSON (`Err` with the error text).
    fn read_one(&self, s: &Session, peer: &str, argv: Vec<Bytes>) -> Result<Value, String> {
        match self.read_many(s, peer, &[argv]).pop() {
            Some(Reply::Error(e)) => Err(e),
            Some(r) => Ok(reply_json(&r)),
            None => Err("ERR no reply".into()),
        }
    }

    /// Walks SCAN (optionally with MATCH and TYPE) until `limit` keys or the end of
    /// the keyspace: the keys, and whether the walk reached the end.
    fn scan_sample(
        &self,
        s: &Session,
        peer: &str,
        pattern: Option<&str>,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), String> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        for _ in 0..MAX_SCAN_CALLS {
            let mut argv = args(&[b"SCAN", cursor.as_bytes(), b"COUNT", b"1000"]);
            if let Some(p) = pattern {
                argv.extend(args(&[b"MATCH", p.as_bytes()]));
            }
            if let Some(t) = kind {
                argv.extend(args(&[b"TYPE", t.as_bytes()]));
            }
            let page = self.read_one(s, peer, argv)?;
            cursor = page[0].as_str().unwrap_or("0").to_string();
            if let Some(found) = page[1].as_array() {
                keys.extend(found.iter().filter_map(|k| k.as_str().map(String::from)));
            }
            if keys.len() >= limit {
                keys.truncate(limit);
                return Ok((keys, false));
            }
            if cursor == "0" {
                return Ok((keys, true));
            }
        }
        Ok((keys, false))
    }
}

#[derive(Deserialize)]
struct LoginBody {
    credential: String,
}

async fn login(State(st): State<Arc<DashState>>, Peer(peer): Peer, body: BodyBytes) -> Response {
    let Ok(b) = serde_json::from_slice::<LoginBody>(&body) else {
        return api_error(StatusCode::BAD_REQUEST, "expected {\"credential\": \"…\"}");
    };
    let Some(s) = st.authenticate(&peer, b.credential.trim()) else {
        return api_error(StatusCode::UNAUTHORIZED, "invalid credential");
    };
    let info = session_json(&s);
    let id = st.insert(s);
    let cookie = format!(
        "{COOKIE}={id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}",
        IDLE.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], axum::Json(info)).into_response()
}

async fn logout(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_value(&headers) {
        st.sessions.lock().remove(&id);
    }
    let cookie = format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        [(header::SET_COOKIE, cookie)],
        axum::Json(json!({"ok": true})),
    )
        .into_response()
}

fn session_json(s: &Session) -> Value {
    json!({
        "role": if s.admin { "admin" } else { "read-only" },
        "user": s.user.as_deref().unwrap_or("default"),
    })
}

async fn session_info(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    let s = session_or_401!(st, headers);
    ok(session_json(&s))
}

async fn overview(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    let _s = session_or_401!(st, headers);
    let store = st.rest.store.clone();
    // Counting keys takes every shard lock briefly: off the async workers.
    let (hits, misses, keys) = tokio::task::spawn_blocking(move || {
        let (hits, misses, _) = store.keyspace_counters();
        let mut ks = store.keyspace.lock_all_readonly();
        let mut keys = 0usize;
        for db in 0..tidewire_store::keyspace::NUM_DBS {
            for part in ks.db_parts(db) {
                keys += part.map.len();
            }
        }
        (hits, misses, keys)
    })
    .await
    .unwrap_or_default();
    let store = &st.rest.store;
    let ops_total: u64 = tidewire_store::command::registry()
        .all()
        .map(|c| c.stats.calls.get())
        .sum();
    let now = Instant::now();
    let ops_per_sec = {
        let mut sample = st.sample.lock();
        match *sample {
            Some((at, n, _)) if now.duration_since(at) >= Duration::from_millis(200) => {
                let rate =
                    ops_total.saturating_sub(n) as f64 / now.duration_since(at).as_secs_f64();
                *sample = Some((now, ops_total, Some(rate)));
                Some(rate)
            }
            Some((_, _, last)) => last,
            None => {
                *sample = Some((now, ops_total, None));
                None
            }
        }
    };
    let (allocated, resident) = tidewire_store::families::server_info::MEMORY_PROBE
        .get()
        .map_or((0, 0), |f| f());
    let (mut rt_conns, mut rt_in, mut rt_out, mut rt_channels) = (0u64, 0u64, 0u64, 0u64);
    for h in &st.hubs {
        let m = h.metrics();
        rt_conns += m.connections;
        rt_in += m.messages_in;
        rt_out += m.messages_out;
        rt_channels += m.channels;
    }
    let lookups = hits + misses;
    ok(json!({
        "ops_total": ops_total,
        "ops_per_sec": ops_per_sec,
        "used_memory": allocated,
        "used_memory_rss": resident,
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate": if lookups > 0 { Some(hits as f64 / lookups as f64) } else { None },
        "evicted_keys": store.stats.evicted_keys.load(std::sync::atomic::Ordering::Relaxed),
        "keys": keys,
        "clients": {
            "resp": store.connected_clients("resp"),
            "http_in_flight": store.connected_clients("http"),
            "rest_requests_total": crate::metrics::rest_requests_total(),
            "realtime": rt_conns,
        },
        "realtime": { "messages_in": rt_in, "messages_out": rt_out, "channels": rt_channels },
    }))
}

#[derive(Deserialize)]
struct KeysQuery {
    cursor: Option<String>,
    #[serde(rename = "match")]
    pattern: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    count: Option<u32>,
}

async fn keys(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Query(q): Query<KeysQuery>,
) -> Response {
    let s = session_or_401!(st, headers);
    let cursor = q.cursor.unwrap_or_else(|| "0".into());
    let count = q.count.unwrap_or(100).clamp(1, 1000).to_string();
    let mut argv = args(&[b"SCAN", cursor.as_bytes(), b"COUNT", count.as_bytes()]);
    if let Some(p) = q.pattern.filter(|p| !p.is_empty()) {
        argv.extend(args(&[b"MATCH", p.as_bytes()]));
    }
    if let Some(t) = q.kind.filter(|t| !t.is_empty()) {
        argv.extend(args(&[b"TYPE", t.as_bytes()]));
    }
    let reply = match st.run(&s, &peer, &argv, true).await {
        Ok(r) => reply_json(&r),
        Err(e) => return run_err(e),
    };
    let next = reply.get(0).cloned().unwrap_or(json!("0"));
    let names: Vec<String> = reply
        .get(1)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(names.len());
    for k in names {
        let t = st
            .run(&s, &peer, &args(&[b"TYPE", k.as_bytes()]), true)
            .await
            .map(|r| reply_json(&r))
            .unwrap_or(Value::Null);
        out.push(json!({ "key": k, "type": t }));
    }
    ok(json!({ "cursor": next, "keys": out }))
}

#[derive(Deserialize)]
struct KeyQuery {
    key: String,
    start: Option<i64>,
    stop: Option<i64>,
}

async fn key_get(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Query(q): Query<KeyQuery>,
) -> Response {
    let s = session_or_401!(st, headers);
    let k = q.key.as_bytes();
    let start = q.start.unwrap_or(0).max(0);
    let stop = q
        .stop
        .unwrap_or(start + 99)
        .clamp(start, start + MAX_ITEMS - 1);
    let (start_s, stop_s) = (start.to_string(), stop.to_string());
    let max = MAX_ITEMS.to_string();
    macro_rules! cmd {
        ($($a:expr),*) => {
            match st.run(&s, &peer, &args(&[$($a),*]), true).await {
                Ok(r) => reply_json(&r),
                Err(e) => return run_err(e),
            }
        };
    }
    let kind = cmd!(b"TYPE", k);
    let kind = kind.as_str().unwrap_or("none").to_string();
    if kind == "none" {
        return api_error(StatusCode::NOT_FOUND, "no such key");
    }
    let ttl_ms = cmd!(b"PTTL", k);
    let mut out = json!({ "key": q.key, "type": kind, "pttl": ttl_ms });
    match kind.as_str() {
        "string" => {
            out["length"] = cmd!(b"STRLEN", k);
            let end = (MAX_STRING - 1).to_string();
            out["value"] = cmd!(b"GETRANGE", k, b"0", end.as_bytes());
        }
        "hash" | "set" => {
            let (count, all, scan): (&[u8], &[u8], &[u8]) = if kind == "hash" {
                (b"HLEN", b"HGETALL", b"HSCAN")
            } else {
                (b"SCARD", b"SMEMBERS", b"SSCAN")
            };
            let len = cmd!(count, k);
            out["length"] = len.clone();
            out["value"] = if len.as_i64().unwrap_or(0) <= MAX_ITEMS {
                cmd!(all, k)
            } else {
                // Too many to show: the first SCAN page (its reply is [cursor, items]).
                cmd!(scan, k, b"0", b"COUNT", max.as_bytes())[1].take()
            };
        }
        "list" => {
            out["length"] = cmd!(b"LLEN", k);
            out["start"] = json!(start);
            out["value"] = cmd!(b"LRANGE", k, start_s.as_bytes(), stop_s.as_bytes());
        }
        "zset" => {
            out["length"] = cmd!(b"ZCARD", k);
            out["start"] = json!(start);
            out["value"] = cmd!(
                b"ZRANGE",
                k,
                start_s.as_bytes(),
                stop_s.as_bytes(),
                b"WITHSCORES"
            );
        }
        "stream" => {
            out["length"] = cmd!(b"XLEN", k);
            out["value"] = cmd!(b"XREVRANGE", k, b"+", b"-", b"COUNT", b"100");
            out["groups"] = cmd!(b"XINFO", b"GROUPS", k);
        }
        _ => {}
    }
    ok(out)
}

/// One edit from the key viewer.
#[derive(Deserialize)]
struct KeyWrite {
    op: String,
    key: String,
    field: Option<String>,
    value: Option<String>,
    index: Option<i64>,
    score: Option<f64>,
    seconds: Option<i64>,
    /// Stream entry fields for `xadd`.
    fields: Option<Vec<(String, String)>>,
}

impl KeyWrite {
    /// The command this edit is, or a message naming what is missing.
    fn argv(&self) -> Result<Vec<Bytes>, String> {
        let k = self.key.as_bytes();
        let need = |v: &Option<String>, what: &str| -> Result<Vec<u8>, String> {
            v.as_ref()
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| format!("'{}' needs '{what}'", self.op))
        };
        let value = || need(&self.value, "value");
        let field = || need(&self.field, "field");
        let n = |v: Option<i64>, what: &str| {
            v.map(|n| n.to_string())
                .ok_or_else(|| format!("'{}' needs '{what}'", self.op))
        };
        Ok(match self.op.as_str() {
            "set" => args(&[b"SET", k, &value()?, b"KEEPTTL"]),
            "hset" => args(&[b"HSET", k, &field()?, &value()?]),
            "hdel" => args(&[b"HDEL", k, &field()?]),
            "lpush" => args(&[b"LPUSH", k, &value()?]),
            "rpush" => args(&[b"RPUSH", k, &value()?]),
            "lset" => args(&[b"LSET", k, n(self.index, "index")?.as_bytes(), &value()?]),
            "lrem" => args(&[b"LREM", k, b"1", &value()?]),
            "sadd" => args(&[b"SADD", k, &value()?]),
            "srem" => args(&[b"SREM", k, &value()?]),
            "zadd" => {
                let score = self
                    .score
                    .filter(|s| s.is_finite())
                    .ok_or("'zadd' needs a finite 'score'")?
                    .to_string();
                args(&[b"ZADD", k, score.as_bytes(), &value()?])
            }
            "zrem" => args(&[b"ZREM", k, &value()?]),
            "xadd" => {
                let fields = self.fields.as_deref().unwrap_or_default();
                if fields.is_empty() {
                    return Err("'xadd' needs 'fields'".into());
                }
                let mut a = args(&[b"XADD", k, b"*"]);
                for (f, v) in fields {
                    a.extend(args(&[f.as_bytes(), v.as_bytes()]));
                }
                a
            }
            "expire" => args(&[b"EXPIRE", k, n(self.seconds, "seconds")?.as_bytes()]),
            "persist" => args(&[b"PERSIST", k]),
            "del" => args(&[b"DEL", k]),
            other => return Err(format!("unknown op '{other}'")),
        })
    }
}

async fn key_write(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    body: BodyBytes,
) -> Response {
    let s = session_or_401!(st, headers);
    if !s.admin {
        return api_error(StatusCode::FORBIDDEN, "this dashboard session is read-only");
    }
    let w: KeyWrite = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("bad edit: {e}")),
    };
    let argv = match w.argv() {
        Ok(a) => a,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    match st.run(&s, &peer, &argv, true).await {
        Ok(r) => ok(json!({ "result": reply_json(&r) })),
        Err(e) => run_err(e),
    }
}

#[derive(Deserialize)]
struct CommandBody {
    args: Vec<String>,
}

async fn command(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    body: BodyBytes,
) -> Response {
    let s = session_or_401!(st, headers);
    let b: CommandBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "expected {\"args\": [\"GET\", \"key\"]}",
            )
        }
    };
    let argv: Vec<Bytes> = b.args.into_iter().map(Bytes::from).collect();
    match st.run(&s, &peer, &argv, true).await {
        Ok(r) => ok(json!({ "result": reply_json(&r) })),
        Err(e) => run_err(e),
    }
}

/// Command names for the console's completion (from the command table, so that
/// read-only sessions, which may not run COMMAND, complete too).
async fn command_names(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    let _s = session_or_401!(st, headers);
    let mut names: Vec<String> = tidewire_store::command::registry()
        .all()
        .map(|c| c.full_name.replace('|', " ").to_ascii_uppercase())
        .collect();
    names.sort();
    ok(json!(names))
}

async fn slowlog(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
) -> Response {
    let s = session_or_401!(st, headers);
    // SLOWLOG only reads, though it is not flagged so: read-only sessions see it,
    // still subject to the user's ACL.
    let argv = args(&[b"SLOWLOG", b"GET", b"128"]);
    let reply = match st.run(&s, &peer, &argv, false).await {
        Ok(r) => r,
        Err(e) => return run_err(e),
    };
    let Reply::Array(entries) = reply else {
        return ok(json!([]));
    };
    let out: Vec<Value> = entries
        .iter()
        .map(|e| {
            let v = reply_json(e);
            json!({
                "id": v.get(0),
                "time": v.get(1),
                "micros": v.get(2),
                "args": v.get(3),
                "client": v.get(4),
                "name": v.get(5),
            })
        })
        .collect();
    ok(json!(out))
}

// ---- Realtime ----------------------------------------------------------------

/// Most history entries the channel view shows.
const RT_HISTORY: usize = 50;

#[derive(Deserialize)]
struct AppQuery {
    app: Option<String>,
}

#[derive(Deserialize)]
struct ChannelQuery {
    app: Option<String>,
    name: String,
}

impl DashState {
    /// The hub of `app`, the default app's when none is named.
    fn hub(&self, app: Option<&str>) -> Option<&Arc<tidewire_realtime::Hub>> {
        match app.filter(|a| !a.is_empty()) {
            None => self.hubs.first(),
            Some(a) => self.hubs.iter().find(|h| h.app_id() == a),
        }
    }
}

macro_rules! hub_or_404 {
    ($st:expr, $app:expr) => {
        match $st.hub($app) {
            Some(h) => h.clone(),
            None => return api_error(StatusCode::NOT_FOUND, "no such app"),
        }
    };
}

/// A message in Ably's JSON wire form, as a value.
fn message_value(m: &tidewire_realtime::Message) -> Value {
    let mut m = m.clone();
    tidewire_realtime::codec::message_to_json_wire(&mut m);
    serde_json::to_value(&m).unwrap_or(Value::Null)
}

/// Every app with its live channels and their occupancy.
async fn rt_channels(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    let _s = session_or_401!(st, headers);
    let apps: Vec<Value> = st
        .hubs
        .iter()
        .map(|h| {
            let m = h.metrics();
            let names = h.channel_names("");
            let total = names.len();
            let channels: Vec<Value> = names
                .into_iter()
                .take(MAX_ITEMS as usize)
                .filter_map(|n| {
                    let o = h.existing_channel(&n)?.occupancy();
                    Some(json!({
                        "name": n,
                        "connections": o.connections,
                        "publishers": o.publishers,
                        "subscribers": o.subscribers,
                        "presence_members": o.presence_members,
                    }))
                })
                .collect();
            json!({
                "app": h.app_id(),
                "connections": m.connections,
                "messages_in": m.messages_in,
                "messages_out": m.messages_out,
                "presence_members": m.presence_members,
                "total_channels": total,
                "channels": channels,
            })
        })
        .collect();
    ok(json!({ "apps": apps }))
}

/// One channel: occupancy, presence members and the latest history page. Reads
/// only: a channel that is not live is not created.
async fn rt_channel(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Query(q): Query<ChannelQuery>,
) -> Response {
    let _s = session_or_401!(st, headers);
    let hub = hub_or_404!(st, q.app.as_deref());
    if let Err(e) = tidewire_realtime::hub::validate_channel_name(&q.name) {
        return api_error(StatusCode::BAD_REQUEST, &e.message);
    }
    let live = hub.existing_channel(&q.name);
    let (occupancy, members) = match &live {
        Some(c) => {
            let o = c.occupancy();
            let members: Vec<Value> = c
                .members(None, None)
                .into_iter()
                .take(MAX_ITEMS as usize)
                .map(|mut p| {
                    tidewire_realtime::codec::presence_to_json_wire(&mut p);
                    serde_json::to_value(&p).unwrap_or(Value::Null)
                })
                .collect();
            (
                json!({
                    "connections": o.connections,
                    "publishers": o.publishers,
                    "subscribers": o.subscribers,
                    "presence_members": o.presence_members,
                }),
                members,
            )
        }
        None => (Value::Null, Vec::new()),
    };
    let page = hub.history_page(
        &q.name,
        &tidewire_realtime::HistoryQuery {
            limit: RT_HISTORY,
            ..Default::default()
        },
    );
    let history: Vec<Value> = page
        .messages
        .iter()
        .map(|m| {
            let mut v = message_value(&m.message);
            v["serial"] = json!(m.serial);
            v
        })
        .collect();
    ok(json!({
        "app": hub.app_id(),
        "name": q.name,
        "live": live.is_some(),
        "occupancy": occupancy,
        "members": members,
        "history": history,
    }))
}

/// A live tail of one channel's messages as Server-Sent Events (`message` events
/// carrying the message's JSON; a `note` when the tail fell behind and skipped
/// some). Ends when the client goes away: the stream is dropped with the response.
/// What a slow tail can hold back is bounded by the hub's observer broadcast.
async fn rt_tail(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Query(q): Query<ChannelQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let _s = session_or_401!(st, headers);
    let hub = hub_or_404!(st, q.app.as_deref());
    if let Err(e) = tidewire_realtime::hub::validate_channel_name(&q.name) {
        return api_error(StatusCode::BAD_REQUEST, &e.message);
    }
    let rx = hub.subscribe_all();
    // Only the hub's observer handle is kept, not the hub: a tail holds no channel.
    drop(hub);
    let stream = futures_util::stream::unfold((rx, q.name), |(mut rx, name)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(ev) if ev.channel == name => Event::default()
                    .event("message")
                    .id(ev.serial.to_string())
                    .data(ev.message_json()),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("note")
                    .data(format!("the tail fell behind: {n} messages skipped")),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(event), (rx, name)));
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An app's connections (live and resumable) with clientId and channels.
async fn rt_connections(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Query(q): Query<AppQuery>,
) -> Response {
    let _s = session_or_401!(st, headers);
    let hub = hub_or_404!(st, q.app.as_deref());
    let all = hub.connections();
    let total = all.len();
    let list: Vec<Value> = all
        .into_iter()
        .take(MAX_ITEMS as usize)
        .map(|c| {
            json!({
                "id": c.record.connection_id,
                "clientId": c.record.client_id,
                "key": c.record.key_name,
                "connected_ms": c.record.connected_ms,
                "disconnected_ms": c.record.disconnected_ms,
                "channels": c.channels,
            })
        })
        .collect();
    ok(json!({ "app": hub.app_id(), "total": total, "connections": list }))
}

#[derive(Deserialize)]
struct DisconnectBody {
    app: Option<String>,
    id: String,
}

/// Closes one connection from the server side (admin sessions only): the client
/// gets DISCONNECTED and its presence members leave.
async fn rt_disconnect(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Response {
    let s = session_or_401!(st, headers);
    if !s.admin {
        return api_error(StatusCode::FORBIDDEN, "this dashboard session is read-only");
    }
    let Ok(b) = serde_json::from_slice::<DisconnectBody>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "expected {\"id\": \"connectionId\"}",
        );
    };
    let hub = hub_or_404!(st, b.app.as_deref());
    if hub.disconnect(&b.id) {
        ok(json!({ "ok": true }))
    } else {
        api_error(StatusCode::NOT_FOUND, "no such connection")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_become_commands() {
        let w: KeyWrite =
            serde_json::from_str(r#"{"op":"hset","key":"h","field":"f","value":"v"}"#).unwrap();
        assert_eq!(w.argv().unwrap(), args(&[b"HSET", b"h", b"f", b"v"]));
        let w: KeyWrite = serde_json::from_str(r#"{"op":"hset","key":"h"}"#).unwrap();
        assert!(w.argv().is_err());
        let w: KeyWrite =
            serde_json::from_str(r#"{"op":"xadd","key":"s","fields":[["a","1"]]}"#).unwrap();
        assert_eq!(w.argv().unwrap(), args(&[b"XADD", b"s", b"*", b"a", b"1"]));
        let w: KeyWrite = serde_json::from_str(r#"{"op":"nope","key":"k"}"#).unwrap();
        assert!(w.argv().is_err());
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; tw_dashboard=xyz".parse().unwrap());
        assert_eq!(cookie_value(&h).as_deref(), Some("xyz"));
    }
}
