//! The Upstash-compatible REST API, mounted at `/redis` on the HTTP listener (and
//! optionally at `/` of its own port).
//!
//! One request, one [`Client`]: authenticate the token ([`auth`]), read the body
//! (bounded), turn it into argument vectors, refuse what REST does not run
//! ([`policy`]), execute through [`Store::execute`] exactly as the RESP listener
//! does, and encode the replies ([`encode`]). Routes under the mount:
//!
//! - `POST /` with `["SET","k","v"]` — one command, `{"result":…}` / 400 `{"error":…}`;
//! - `GET|POST /set/k/v` — the path form; a POST body is the last argument;
//! - `POST /pipeline` — `[[…],[…]]`, not atomic, one envelope per command;
//! - `POST /multi-exec` — the same, atomic (MULTI … EXEC on one client);
//! - `GET|POST /subscribe/<ch>`, `/psubscribe/<pattern>`, `/monitor` — Server-Sent
//!   Events ([`sse`]).
//!
//! Tidewire is one node, so every request already sees every earlier write:
//! `upstash-sync-token` is answered with a growing number only so that clients that
//! track it keep working.

pub mod auth;
pub mod encode;
pub mod policy;
pub mod sse;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tidewire_resp::Reply;
use tidewire_store::{Client, Store};
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::{Engine, EngineSession, Forwarded};
use auth::{Access, TokenSource, Tokens};
use encode::Format;

/// Shared by every REST request.
pub struct RestState {
    pub store: Arc<Store>,
    /// Where keyspace commands run (see [`crate::engine`]).
    pub engine: Engine,
    pub tokens: Tokens,
    pub token_source: TokenSource,
    pub max_body: usize,
    pub max_pipeline: usize,
    pub timeout: Duration,
    sync: AtomicU64,
    /// Ends SSE streams on shutdown.
    pub shutdown: watch::Receiver<bool>,
    local_addr: String,
}

impl RestState {
    pub fn new(
        store: Arc<Store>,
        engine: Engine,
        config: &Config,
        local_addr: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<RestState>> {
        let (tokens, token_source) = Tokens::resolve(
            &config.upstash.tokens,
            &config.upstash.readonly_tokens,
            &config.data_dir,
        )?;
        let tokens = tokens.with_users(config.upstash.acl_tokens.clone());
        Ok(Arc::new(RestState {
            store,
            engine,
            tokens,
            token_source,
            max_body: config.http.max_body_bytes,
            max_pipeline: config.upstash.max_pipeline,
            timeout: config.http.request_timeout,
            sync: AtomicU64::new(0),
            shutdown,
            local_addr: local_addr.to_string(),
        }))
    }

    /// Under `appendfsync always`, returns once the writes up to `write_seq` (0:
    /// none) are on disk, so a request is answered only then, as RESP replies are.
    pub(crate) async fn wait_durable(&self, write_seq: u64) {
        if write_seq > 0 {
            if let Some(mut durable) = self.store.durable_waiter() {
                durable.wait_for(write_seq).await;
            }
        }
    }

    /// A client for one request: never blocks, authenticated by its token (as the
    /// token's ACL user, if it has one).
    fn client(&self, peer: &str, access: Access) -> RequestClient<'_> {
        let user = match access {
            Access::User(i) => Some(self.tokens.user_name(i)),
            _ => None,
        };
        self.client_as(peer, user)
    }

    /// A request client running as `user` (`None`: the default user), shared with
    /// the dashboard so that its commands take exactly the REST API's path.
    pub(crate) fn client_as(&self, peer: &str, user: Option<&str>) -> RequestClient<'_> {
        let mut client = self
            .store
            .new_client(peer.to_string(), self.local_addr.clone(), "http");
        client.no_block = true;
        client.authenticated = true;
        if let Some(name) = user {
            client.info.set_user(name);
        }
        RequestClient {
            store: &self.store,
            client,
            write_seq: 0,
            engine: self.engine.request_session(),
        }
    }
}

/// Unregisters the request's client however the request ends.
pub(crate) struct RequestClient<'a> {
    store: &'a Store,
    pub(crate) client: Client,
    /// Write-log sequence of this request's writes: with `appendfsync always` the
    /// response waits until it is on disk, as RESP replies do.
    pub(crate) write_seq: u64,
    /// With `--engine`: where keyspace commands go.
    engine: Option<EngineSession>,
}

impl RequestClient<'_> {
    /// Runs one command that passed the policy check.
    pub(crate) fn execute(&mut self, argv: &[Bytes]) -> Reply {
        // `execute_now` is synchronous: the sequence taken right after it is this
        // request's own (see `tidewire_store::exec::take_write_seq`). REST
        // clients have `no_block` set, so handlers answer at once.
        tidewire_store::exec::take_write_seq();
        let reply = self.store.execute_now(&mut self.client, argv);
        self.write_seq = self.write_seq.max(tidewire_store::exec::take_write_seq());
        reply
    }

    /// Runs one command that passed the policy check on the engine, if there is
    /// one and the command is for it, else here.
    pub(crate) async fn execute_routed(&mut self, argv: &[Bytes]) -> Reply {
        if let Some(engine) = self.engine.as_mut() {
            match engine.execute(self.store, &mut self.client, argv).await {
                Forwarded::Local => {}
                Forwarded::Reply(reply) => return reply,
                // Never for a request session (it does not subscribe).
                Forwarded::Pushed => return Reply::Null,
            }
        }
        self.execute(argv)
    }

    /// How many of `commands`, from the first, the engine takes as one batch
    /// (each allowed by the policy); 0 without an engine.
    fn engine_batch_len(&self, commands: &[Vec<Bytes>], access: Access) -> usize {
        let Some(engine) = self.engine.as_ref() else {
            return 0;
        };
        let allowed = commands
            .iter()
            .take(crate::engine::MAX_BATCH)
            .take_while(|argv| policy::check(argv, access).is_ok())
            .count();
        engine.batch_len(&self.client, &commands[..allowed])
    }

    /// Runs a run [`RequestClient::engine_batch_len`] accepted on the engine.
    async fn run_engine_batch(&mut self, commands: &[Vec<Bytes>]) -> Vec<Reply> {
        match self.engine.as_mut() {
            Some(engine) => {
                engine
                    .execute_batch(self.store, &mut self.client, commands)
                    .await
            }
            None => commands.iter().map(|argv| self.execute(argv)).collect(),
        }
    }

    async fn run(&mut self, argv: &[Bytes], access: Access) -> Reply {
        match policy::check(argv, access) {
            Ok(()) => self.execute_routed(argv).await,
            Err(e) => e,
        }
    }
}

impl Drop for RequestClient<'_> {
    fn drop(&mut self) {
        self.store.drop_client(&mut self.client);
    }
}

/// A mount of the API: the shared state and the path prefix it answers under.
#[derive(Clone)]
struct Mounted {
    st: Arc<RestState>,
    mount: Arc<str>,
}

/// The API's routes under `mount` (`""` = the root, for the separate port).
pub fn routes(state: Arc<RestState>, mount: &str) -> Router {
    let m = Mounted {
        st: state,
        mount: mount.into(),
    };
    let r = if mount.is_empty() {
        Router::new()
            .route("/", any(handle))
            .route("/{*rest}", any(handle))
    } else {
        Router::new()
            .route(mount, any(handle))
            .route(&format!("{mount}/"), any(handle))
            .route(&format!("{mount}/{{*rest}}"), any(handle))
    };
    r.with_state(m)
}

async fn handle(State(m): State<Mounted>, req: Request) -> Response {
    let resp = match tokio::time::timeout(m.st.timeout, serve(&m.st, &m.mount, req)).await {
        Ok(r) => r,
        Err(_) => json_error(StatusCode::GATEWAY_TIMEOUT, "ERR request timed out"),
    };
    crate::metrics::rest_request(resp.status().as_u16());
    resp
}

async fn serve(st: &Arc<RestState>, mount: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::POST {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return r;
    }
    let Some(access) = st.tokens.check(&parts.headers, parts.uri.query()) else {
        return json_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let segments = match path_segments(parts.uri.path(), mount) {
        Some(s) => s,
        None => return json_error(StatusCode::NOT_FOUND, "Not Found"),
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let format = format_of(&parts.headers);
    let body = if parts.method == Method::POST {
        match read_body(body, &parts.headers, st.max_body).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Bytes::new()
    };
    let endpoint = segments.first().map(|s| s.to_ascii_lowercase());
    let (mut resp, write_seq) = match endpoint.as_deref() {
        None => match parse_command(&body) {
            Ok(argv) => single(st, &peer, &argv, access, format).await,
            Err(e) => (json_error(StatusCode::BAD_REQUEST, &e), 0),
        },
        Some(b"pipeline") => pipeline(st, &peer, &body, access, format).await,
        Some(b"multi-exec") => multi_exec(st, &peer, &body, access, format).await,
        Some(b"subscribe") => (
            sse::serve(st, &peer, sse::Kind::Channel, &segments[1..], access).await,
            0,
        ),
        Some(b"psubscribe") => (
            sse::serve(st, &peer, sse::Kind::Pattern, &segments[1..], access).await,
            0,
        ),
        Some(b"monitor") => (
            sse::serve(st, &peer, sse::Kind::Monitor, &[], access).await,
            0,
        ),
        Some(_) => {
            let mut argv = segments;
            if !body.is_empty() {
                argv.push(body);
            }
            single(st, &peer, &argv, access, format).await
        }
    };
    st.wait_durable(write_seq).await;
    let token = st.sync.fetch_add(1, Ordering::Relaxed) + 1;
    resp.headers_mut()
        .insert("upstash-sync-token", HeaderValue::from(token));
    resp
}

fn format_of(headers: &HeaderMap) -> Format {
    let is = |name: &str, value: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    if is("upstash-response-format", "resp2") {
        Format::Resp2
    } else if is("upstash-encoding", "base64") {
        Format::Base64
    } else {
        Format::Json
    }
}

/// The URL-decoded path segments after the mount; `None` if the path is not under it.
fn path_segments(path: &str, mount: &str) -> Option<Vec<Bytes>> {
    let rest = path.strip_prefix(mount)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    Some(
        rest.split('/')
            .map(|s| Bytes::from(percent_encoding::percent_decode_str(s).collect::<Vec<u8>>()))
            .collect(),
    )
}

async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Response> {
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("ERR max request size exceeded ({max} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("ERR bad body: {e}")))?;
        let have = first.as_ref().map_or(0, |f| f.len()) + buf.len();
        if have + chunk.len() > max {
            return Err(too_large());
        }
        // The usual single-chunk body is kept as is; only more chunks are copied.
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            None => buf.extend_from_slice(&chunk),
            Some(f) => {
                buf.reserve(f.len() + chunk.len());
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// One JSON argument: a string, or a number or boolean sent as its text. Parsed
/// straight into bytes, without an intermediate `serde_json::Value`.
struct Arg(Bytes);

impl<'de> serde::Deserialize<'de> for Arg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Arg, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Arg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg(Bytes::copy_from_slice(v.as_bytes())))
            }
            fn visit_string<E>(self, v: String) -> Result<Arg, E> {
                Ok(Arg(Bytes::from(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Arg, E> {
                Ok(Arg(Bytes::from_static(if v { b"true" } else { b"false" })))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Arg, E> {
                Ok(Arg(Bytes::from(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Arg, E> {
                Ok(Arg(Bytes::from(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Arg, E> {
                // The text serde_json itself would print for this number.
                let text = serde_json::Number::from_f64(v)
                    .map_or_else(|| v.to_string(), |n| n.to_string());
                Ok(Arg(Bytes::from(text)))
            }
        }
        d.deserialize_any(V)
    }
}

fn to_argv(args: Vec<Arg>) -> Result<Vec<Bytes>, String> {
    if args.is_empty() {
        return Err("ERR empty command".into());
    }
    Ok(args.into_iter().map(|a| a.0).collect())
}

/// A JSON command: an array of strings, numbers and booleans. Public for the fuzz
/// targets (crates/fuzz), which feed it hostile bodies.
pub fn parse_command(body: &[u8]) -> Result<Vec<Bytes>, String> {
    let args: Vec<Arg> = serde_json::from_slice(body).map_err(|e| {
        format!("ERR failed to parse command: expected a JSON array such as [\"SET\",\"k\",\"v\"] ({e})")
    })?;
    to_argv(args)
}

/// A JSON pipeline (`/pipeline`, `/multi-exec`): an array of at most `max` commands.
/// Public for the fuzz targets (crates/fuzz).
pub fn parse_pipeline(body: &[u8], max: usize) -> Result<Vec<Vec<Bytes>>, String> {
    let cmds: Vec<Vec<Arg>> = serde_json::from_slice(body).map_err(|e| {
        format!("ERR failed to parse pipeline: expected a JSON array of commands such as [[\"SET\",\"k\",\"v\"],[\"GET\",\"k\"]] ({e})")
    })?;
    if cmds.len() > max {
        return Err(format!(
            "ERR pipeline too long: {} commands, at most {max} allowed",
            cmds.len()
        ));
    }
    cmds.into_iter().map(to_argv).collect()
}

async fn single(
    st: &RestState,
    peer: &str,
    argv: &[Bytes],
    access: Access,
    format: Format,
) -> (Response, u64) {
    let mut client = st.client(peer, access);
    let reply = client.run(argv, access).await;
    let status = if reply.is_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        respond(status, encode::body(&reply, format), format),
        client.write_seq,
    )
}

/// Commands run in order on one client; between batches the task yields so the
/// request timeout and other requests get their turn.
async fn pipeline(
    st: &RestState,
    peer: &str,
    body: &[u8],
    access: Access,
    format: Format,
) -> (Response, u64) {
    let cmds = match parse_pipeline(body, st.max_pipeline) {
        Ok(c) => c,
        Err(e) => return (json_error(StatusCode::BAD_REQUEST, &e), 0),
    };
    let mut replies = Vec::with_capacity(cmds.len());
    let write_seq;
    {
        let mut client = st.client(peer, access);
        let mut i = 0;
        while i < cmds.len() {
            if i > 0 && i % 256 == 0 {
                // No lock is held here: each command locked and unlocked its shards.
                tokio::task::yield_now().await;
            }
            // On the engine, a run of plain keyed commands goes together.
            let batch = client.engine_batch_len(&cmds[i..], access);
            if batch > 1 {
                replies.extend(client.run_engine_batch(&cmds[i..i + batch]).await);
                i += batch;
                continue;
            }
            replies.push(client.run(&cmds[i], access).await);
            i += 1;
        }
        write_seq = client.write_seq;
    }
    (
        respond(StatusCode::OK, encode::many(&replies, format), format),
        write_seq,
    )
}

async fn multi_exec(
    st: &RestState,
    peer: &str,
    body: &[u8],
    access: Access,
    format: Format,
) -> (Response, u64) {
    let cmds = match parse_pipeline(body, st.max_pipeline) {
        Ok(c) => c,
        Err(e) => return (json_error(StatusCode::BAD_REQUEST, &e), 0),
    };
    for argv in &cmds {
        if let Err(Reply::Error(e)) = policy::check(argv, access) {
            return (error_reply(&e, format), 0);
        }
    }
    let mut client = st.client(peer, access);
    client.execute_routed(&[Bytes::from_static(b"MULTI")]).await;
    for argv in &cmds {
        // QUEUED, or an error that makes EXEC answer EXECABORT.
        client.execute_routed(argv).await;
    }
    let resp = match client.execute_routed(&[Bytes::from_static(b"EXEC")]).await {
        Reply::Array(replies) => respond(StatusCode::OK, encode::many(&replies, format), format),
        Reply::Error(e) => error_reply(&e, format),
        _ => error_reply("EXECABORT Transaction discarded.", format),
    };
    (resp, client.write_seq)
}

fn error_reply(msg: &str, format: Format) -> Response {
    respond(
        StatusCode::BAD_REQUEST,
        encode::body(&Reply::Error(msg.to_string()), format),
        format,
    )
}

fn respond(status: StatusCode, body: Vec<u8>, format: Format) -> Response {
    let ct = match format {
        Format::Resp2 => "application/octet-stream",
        _ => "application/json",
    };
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

pub(crate) fn json_error(status: StatusCode, msg: &str) -> Response {
    respond(status, encode::error_body(msg), Format::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        let s = path_segments("/redis/set/a%2Fb/%F0%9F%98%80/", "/redis").unwrap();
        assert_eq!(
            s,
            vec![Bytes::from("set"), Bytes::from("a/b"), Bytes::from("😀")]
        );
        assert_eq!(
            path_segments("/redis", "/redis").unwrap(),
            Vec::<Bytes>::new()
        );
        assert!(path_segments("/redisx/get", "/redis").is_none());
        assert_eq!(path_segments("/get/k", "").unwrap().len(), 2);
    }

    #[test]
    fn json_arguments() {
        assert_eq!(
            parse_command(br#"["SET","k",1.5,true,100]"#).unwrap(),
            vec![
                Bytes::from("SET"),
                Bytes::from("k"),
                Bytes::from("1.5"),
                Bytes::from("true"),
                Bytes::from("100")
            ]
        );
        assert!(parse_command(br#"["SET",null]"#).is_err());
        assert!(parse_command(br#"[]"#).is_err());
        assert!(parse_pipeline(br#"[["PING"],["PING"]]"#, 1).is_err());
    }
}
