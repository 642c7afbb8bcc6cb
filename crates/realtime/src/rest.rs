//! Ably REST: publish, history, channel metadata, batch publish, token requests, time.
//!
//! Each handler authenticates (`RestCtx`), checks the capability, calls the
//! [`Hub`], and answers through `RestCtx::reply`, which picks JSON or msgpack from
//! `Accept`, wraps in `{statusCode, response, headers}` for `envelope=json`, and turns
//! errors into Ably error bodies (the one place REST errors are shaped).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

use crate::auth::{now_ms, AuthMethod, Principal};
use crate::capability::ops;
use crate::channel::{Origin, Publisher};
use crate::codec::{self, Format};
use crate::error::{AblyError, ErrorCode};
use crate::history::{Direction, HistoryQuery};
use crate::hub::{validate_channel_name, Hub};
use crate::protocol::Message;
use crate::token::TokenRequest;

/// History page size bounds (Ably: default 100, max 1000).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// REST routes, to be merged at the root of the HTTP port.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/time", get(time))
        .route("/channels", get(list_channels))
        .route("/channels/{channel}", get(channel_details))
        .route("/channels/{channel}/messages", get(history).post(publish))
        .route(
            "/channels/{channel}/messages/{serial}",
            get(get_message).patch(mutate_message),
        )
        .route(
            "/channels/{channel}/messages/{serial}/versions",
            get(message_versions),
        )
        .route(
            "/channels/{channel}/messages/{serial}/annotations",
            get(list_annotations).post(post_annotations),
        )
        .route("/channels/{channel}/presence", get(presence))
        .route(
            "/channels/{channel}/presence/history",
            get(presence_history),
        )
        .route("/messages", post(batch_publish))
        .route("/presence", get(batch_presence))
        .route("/keys/{key_name}/requestToken", post(request_token))
        .route("/keys/{key_name}/revokeTokens", post(revoke_tokens))
        .route("/stats", get(stats).post(post_stats_fixtures))
}

type Params = Query<HashMap<String, String>>;

/// Any path or method Ably's REST API does not have: Ably's 404 (40400).
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    AblyError::new(ErrorCode::NotFound, format!("Not found: {}", uri.path())).into_response()
}

/// Per-request view of format, envelope and credentials.
struct RestCtx<'a> {
    hub: &'a Hub,
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
    format: Format,
    envelope: bool,
}

/// A REST response body before encoding.
enum Payload {
    Value(serde_json::Value),
    Messages(Vec<Message>),
    Presence(Vec<crate::protocol::PresenceMessage>),
}

impl<'a> RestCtx<'a> {
    fn new(hub: &'a Hub, headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let envelope = query.get("envelope").map(String::as_str) == Some("json");
        let format = if !envelope
            && (accept.contains("application/x-msgpack")
                || query.get("format").map(String::as_str) == Some("msgpack"))
        {
            Format::Msgpack
        } else {
            Format::Json
        };
        RestCtx {
            hub,
            headers,
            query,
            format,
            envelope,
        }
    }

    /// Format of the request body, from Content-Type.
    fn body_format(&self) -> Format {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.contains("msgpack") {
            Format::Msgpack
        } else {
            Format::Json
        }
    }

    fn principal(&self) -> Result<Principal, AblyError> {
        let now = now_ms();
        if let Some(h) = self.headers.get(header::AUTHORIZATION) {
            let v = h.to_str().map_err(|_| {
                AblyError::new(
                    ErrorCode::InvalidCredentials,
                    "Malformed Authorization header",
                )
            })?;
            return self.hub.keyring().principal_for_header(v, now);
        }
        if let Some(k) = self.query.get("key") {
            return self.hub.keyring().principal_for_key(k);
        }
        if let Some(t) = self
            .query
            .get("access_token")
            .or_else(|| self.query.get("accessToken"))
        {
            return self.hub.keyring().principal_for_token(t, now);
        }
        Err(AblyError::new(
            ErrorCode::Unauthorized,
            "No authentication information provided",
        ))
    }

    /// clientId from `X-Ably-ClientId` (base64), which key holders may assert.
    fn header_client_id(&self) -> Option<String> {
        let v = self.headers.get("x-ably-clientid")?.to_str().ok()?;
        let b = B64.decode(v.trim().as_bytes()).ok()?;
        String::from_utf8(b).ok().filter(|s| !s.is_empty())
    }

    fn reply(&self, status: StatusCode, payload: Payload, link: Option<String>) -> Response {
        if self.envelope {
            let body = match payload {
                Payload::Value(v) => v,
                Payload::Messages(ms) => match codec::encode_messages(&ms, Format::Json)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                {
                    Some(v) => v,
                    None => return self.error(AblyError::of(ErrorCode::Internal)),
                },
                Payload::Presence(mut ps) => {
                    ps.iter_mut().for_each(codec::presence_to_json_wire);
                    match serde_json::to_value(&ps) {
                        Ok(v) => v,
                        Err(_) => return self.error(AblyError::of(ErrorCode::Internal)),
                    }
                }
            };
            let mut hdrs = serde_json::Map::new();
            if let Some(l) = &link {
                hdrs.insert("link".into(), l.clone().into());
            }
            let env = serde_json::json!({
                "statusCode": status.as_u16(),
                "response": body,
                "headers": hdrs,
            });
            return json_response(StatusCode::OK, env.to_string().into_bytes(), link);
        }
        let encoded = match (&payload, self.format) {
            (Payload::Messages(ms), f) => codec::encode_messages(ms, f),
            (Payload::Presence(ps), Format::Json) => {
                let mut ps = ps.clone();
                ps.iter_mut().for_each(codec::presence_to_json_wire);
                serde_json::to_vec(&ps).map_err(|_| AblyError::of(ErrorCode::Internal))
            }
            (Payload::Presence(ps), Format::Msgpack) => codec::to_msgpack(ps),
            (Payload::Value(v), Format::Json) => Ok(v.to_string().into_bytes()),
            (Payload::Value(v), Format::Msgpack) => codec::to_msgpack(v),
        };
        match encoded {
            Ok(body) => {
                let mut resp = (status, body).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.format.content_type()),
                );
                add_link(&mut resp, link);
                resp
            }
            Err(e) => self.error(e),
        }
    }

    fn error(&self, e: AblyError) -> Response {
        if self.envelope {
            let env = serde_json::json!({
                "statusCode": e.code.status(),
                "response": e.body_json(),
                "headers": {},
            });
            return json_response(StatusCode::OK, env.to_string().into_bytes(), None);
        }
        e.into_response()
    }

    fn finish(&self, r: Result<Response, AblyError>) -> Response {
        r.unwrap_or_else(|e| self.error(e))
    }
}

fn json_response(status: StatusCode, body: Vec<u8>, link: Option<String>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_link(&mut resp, link);
    resp
}

fn add_link(resp: &mut Response, link: Option<String>) {
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, v);
    }
}

fn require(p: &Principal, channel: &str, op: &str) -> Result<(), AblyError> {
    if p.capability.allows(channel, op) {
        Ok(())
    } else {
        Err(AblyError::new(
            ErrorCode::CapabilityDenied,
            format!("Operation {op} not permitted on channel {channel}"),
        ))
    }
}

async fn time(State(hub): State<Arc<Hub>>, headers: HeaderMap, Query(q): Params) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    ctx.reply(
        StatusCode::OK,
        Payload::Value(serde_json::json!([now_ms()])),
        None,
    )
}

/// `GET /stats?unit&start&end&direction&limit`: the app's statistics.
async fn stats(State(hub): State<Arc<Hub>>, headers: HeaderMap, Query(q): Params) -> Response {
    use crate::stats::{parse_time, StatsQuery, Unit};
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r = (|| {
        ctx.principal()?;
        // `by` is the older name of `unit`.
        let unit = q.get("unit").or_else(|| q.get("by"));
        let unit = Unit::parse(unit.map_or("minute", String::as_str))?;
        let start = q.get("start").map(|s| parse_time(s, false)).transpose()?;
        let end = q.get("end").map(|s| parse_time(s, true)).transpose()?;
        let forwards = match q.get("direction").map(String::as_str) {
            None | Some("backwards") => false,
            Some("forwards") => true,
            Some(other) => {
                return Err(AblyError::new(
                    ErrorCode::InvalidParameterValue,
                    format!("Invalid direction {other:?}"),
                ))
            }
        };
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    AblyError::new(
                        ErrorCode::InvalidParameterValue,
                        format!("Invalid limit {l:?}"),
                    )
                })?,
        };
        let cursor = q
            .get("cursor")
            .map(|c| {
                c.parse::<i64>().map_err(|_| {
                    AblyError::new(
                        ErrorCode::InvalidParameterValue,
                        format!("Invalid cursor {c:?}"),
                    )
                })
            })
            .transpose()?;
        let query = StatsQuery {
            unit,
            start,
            end,
            forwards,
            limit,
            cursor,
        };
        let (records, next) = hub.stats().query(&query, &hub.app_id(), now_ms());
        // Always a link to the first page; one to the next while there is more.
        let mut params = vec![
            format!("unit={}", query.unit_name()),
            format!("limit={limit}"),
            format!(
                "direction={}",
                if forwards { "forwards" } else { "backwards" }
            ),
        ];
        if let Some(s) = start {
            params.push(format!("start={s}"));
        }
        if let Some(e) = end {
            params.push(format!("end={e}"));
        }
        let first = params.join("&");
        let mut link = format!("<./stats?{first}>; rel=\"first\"");
        if let Some(n) = next {
            link.push_str(&format!(", <./stats?{first}&cursor={n}>; rel=\"next\""));
        }
        let link = Some(link);
        Ok(ctx.reply(
            StatusCode::OK,
            Payload::Value(serde_json::Value::Array(records)),
            link,
        ))
    })();
    ctx.finish(r)
}

/// `POST /stats` (sandbox apps only, with one of the app's keys): stats fixtures,
/// as Ably's sandbox takes them for SDK test suites.
async fn post_stats_fixtures(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r = (|| {
        if !hub.config().sandbox {
            return Err(AblyError::new(ErrorCode::NotFound, "Not found: /stats"));
        }
        let p = ctx.principal()?;
        if p.method != AuthMethod::Basic {
            return Err(AblyError::new(
                ErrorCode::Unauthorized,
                "Stats fixtures need one of the app's keys",
            ));
        }
        let fixtures: serde_json::Value = codec::decode_body(&body, ctx.body_format())?;
        hub.stats().load_fixtures(&fixtures)?;
        Ok(ctx.reply(
            StatusCode::CREATED,
            Payload::Value(serde_json::json!({})),
            None,
        ))
    })();
    ctx.finish(r)
}

/// A body that is either one item or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(t) => vec![t],
        }
    }
}

/// Checks and stamps messages from a REST publisher; returns them ready to publish.
fn prepare_messages(
    ctx: &RestCtx<'_>,
    p: &Principal,
    channel: &str,
    mut msgs: Vec<Message>,
) -> Result<(Vec<Message>, Publisher), AblyError> {
    validate_channel_name(channel)?;
    require(p, channel, ops::PUBLISH)?;
    let header_cid = ctx.header_client_id();
    if header_cid.is_some() && p.method != AuthMethod::Basic {
        // Only key holders may assert an identity by header.
        if !p.may_use_client_id(header_cid.as_deref()) {
            return Err(AblyError::of(ErrorCode::InvalidClientId));
        }
    }
    let default_cid = header_cid.or_else(|| p.client_id.clone().filter(|c| c != "*"));
    let mut size = 0;
    for m in &mut msgs {
        codec::normalize_message(m);
        // Published on behalf of a realtime connection: the message is that
        // connection's (its connectionId; its echo rules).
        if let Some(key) = m.connection_key.take() {
            let rec = ctx.hub.connection_by_key(&key).ok_or_else(|| {
                AblyError::new(
                    ErrorCode::InvalidConnectionKey,
                    "Invalid connectionKey: no such connection",
                )
            })?;
            m.connection_id = Some(rec.connection_id);
        }
        if m.client_id.is_some() {
            let ok = match (p.method, default_cid.as_deref(), p.client_id.as_deref()) {
                (_, _, Some("*")) => true,
                (AuthMethod::Basic, _, _) => true,
                (AuthMethod::Token, _, _) => p.may_use_client_id(m.client_id.as_deref()),
            };
            if !ok {
                return Err(AblyError::new(
                    ErrorCode::InvalidClientId,
                    format!(
                        "Mismatched clientId {:?} for these credentials",
                        m.client_id.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        size += m.size();
    }
    let max = ctx.hub.config().max_message_size;
    if size > max {
        return Err(AblyError::new(
            ErrorCode::MessageTooLarge,
            format!("Maximum size of messages that can be published at once exceeded (was {size} bytes; limit is {max} bytes)"),
        ));
    }
    Ok((
        msgs,
        Publisher {
            conn: None,
            connection_id: None,
            client_id: default_cid,
        },
    ))
}

async fn publish(
    State(hub): State<Arc<Hub>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        let msgs: OneOrMany<Message> = codec::decode_body(&body, ctx.body_format())?;
        let (msgs, publisher) = prepare_messages(&ctx, &p, &channel, msgs.into_vec())?;
        let first_id = msgs.first().and_then(|m| m.id.clone());
        let published = hub
            .publish_async(&channel, msgs, &publisher, None, Origin::Rest)
            .await?;
        let mut body = serde_json::json!({
            "channel": channel,
            "serials": published.serials,
        });
        if let Some(id) = first_id {
            body["messageId"] = id.into();
        }
        Ok(ctx.reply(StatusCode::CREATED, Payload::Value(body), None))
    }
    .await;
    ctx.finish(r)
}

/// A message as a REST body value (binary data base64-encoded, as in JSON).
fn message_value(mut m: Message) -> Result<serde_json::Value, AblyError> {
    codec::message_to_json_wire(&mut m);
    serde_json::to_value(&m).map_err(|_| AblyError::of(ErrorCode::Internal))
}

/// The versions of message `serial` on `channel` for a caller allowed `history`
/// (404 when there is no such message).
async fn readable_versions(
    ctx: &RestCtx<'_>,
    channel: &str,
    serial: &str,
) -> Result<Vec<Message>, AblyError> {
    let p = ctx.principal()?;
    validate_channel_name(channel)?;
    require(&p, channel, ops::HISTORY)?;
    let versions = ctx.hub.message_versions(channel, serial).await?;
    if versions.is_empty() {
        return Err(AblyError::new(
            ErrorCode::NotFound,
            format!("Message {serial} not found"),
        ));
    }
    Ok(versions)
}

/// `GET /channels/{channel}/messages/{serial}`: the latest version of a message.
async fn get_message(
    State(hub): State<Arc<Hub>>,
    Path((channel, serial)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r = async {
        let mut versions = readable_versions(&ctx, &channel, &serial).await?;
        let latest = versions
            .pop()
            .ok_or_else(|| AblyError::of(ErrorCode::Internal))?;
        Ok(ctx.reply(StatusCode::OK, Payload::Value(message_value(latest)?), None))
    }
    .await;
    ctx.finish(r)
}

/// `GET /channels/{channel}/messages/{serial}/versions`: every version, oldest first.
async fn message_versions(
    State(hub): State<Arc<Hub>>,
    Path((channel, serial)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r = async {
        let items = readable_versions(&ctx, &channel, &serial)
            .await?
            .into_iter()
            .map(message_value)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ctx.reply(StatusCode::OK, Payload::Value(items.into()), None))
    }
    .await;
    ctx.finish(r)
}

/// `PATCH /channels/{channel}/messages/{serial}`: a new version of the message —
/// the body's `action` is update (1), delete (2) or append (5), its `version`
/// the operation's clientId, description and metadata.
async fn mutate_message(
    State(hub): State<Arc<Hub>>,
    Path((channel, serial)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    use crate::protocol::message_actions;
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        validate_channel_name(&channel)?;
        let mut m: Message = codec::decode_body(&body, ctx.body_format())?;
        codec::normalize_message(&mut m);
        let action = m.action.unwrap_or(message_actions::UPDATE);
        require(&p, &channel, crate::hub::mutation_op(action)?)?;
        let publisher = Publisher {
            conn: None,
            connection_id: None,
            client_id: p.client_id.clone().filter(|c| c != "*"),
        };
        let version_serial = hub
            .mutate_message(&channel, &serial, action, m, &publisher)
            .await?;
        Ok(ctx.reply(
            StatusCode::OK,
            Payload::Value(serde_json::json!({"versionSerial": version_serial})),
            None,
        ))
    }
    .await;
    ctx.finish(r)
}

/// `POST /channels/{channel}/messages/{serial}/annotations`: one annotation or
/// an array (see [`Hub::publish_annotations`]).
async fn post_annotations(
    State(hub): State<Arc<Hub>>,
    Path((channel, serial)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        validate_channel_name(&channel)?;
        require(&p, &channel, ops::ANNOTATION_PUBLISH)?;
        let anns: OneOrMany<crate::protocol::Annotation> =
            codec::decode_body(&body, ctx.body_format())?;
        let mut anns = anns.into_vec();
        for a in &mut anns {
            a.message_serial.get_or_insert_with(|| serial.clone());
        }
        let publisher = Publisher {
            conn: None,
            connection_id: None,
            client_id: ctx
                .header_client_id()
                .or_else(|| p.client_id.clone().filter(|c| c != "*")),
        };
        hub.publish_annotations(&channel, anns, &publisher, &hub.next_publish_id())
            .await?;
        Ok(ctx.reply(
            StatusCode::CREATED,
            Payload::Value(serde_json::json!({})),
            None,
        ))
    }
    .await;
    ctx.finish(r)
}

/// `GET /channels/{channel}/messages/{serial}/annotations?limit`: the message's
/// annotations, oldest first, paged by a `cursor` (an offset).
async fn list_annotations(
    State(hub): State<Arc<Hub>>,
    Path((channel, serial)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        validate_channel_name(&channel)?;
        require(&p, &channel, ops::HISTORY)?;
        let limit = parse_num::<usize>(&q, "limit")?
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT);
        let from = parse_num::<usize>(&q, "cursor")?.unwrap_or(0);
        let all = hub.annotations_of(&channel, &serial).await?;
        let page: Vec<serde_json::Value> = all
            .iter()
            .skip(from)
            .take(limit)
            .map(|a| {
                let mut a = a.clone();
                codec::to_json_data(&mut a.data, &mut a.encoding);
                serde_json::to_value(&a).unwrap_or_default()
            })
            .collect();
        let mut link = format!("<./annotations?limit={limit}>; rel=\"first\"");
        if from + limit < all.len() {
            link.push_str(&format!(
                ", <./annotations?limit={limit}&cursor={}>; rel=\"next\"",
                from + limit
            ));
        }
        Ok(ctx.reply(StatusCode::OK, Payload::Value(page.into()), Some(link)))
    }
    .await;
    ctx.finish(r)
}

fn parse_num<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    k: &str,
) -> Result<Option<T>, AblyError> {
    match q.get(k).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid value for {k}: {v:?}"),
            )
        }),
    }
}

/// Builds the history query from request params.
fn history_query(q: &HashMap<String, String>) -> Result<HistoryQuery, AblyError> {
    let direction = match q.get("direction").map(String::as_str) {
        None | Some("") | Some("backwards") => Direction::Backwards,
        Some("forwards") => Direction::Forwards,
        Some(other) => {
            return Err(AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid direction {other:?}"),
            ))
        }
    };
    let limit = parse_num::<usize>(q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AblyError::new(
            ErrorCode::InvalidParameterValue,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let serial_param = |k: &str| -> Result<Option<u64>, AblyError> {
        q.get(k)
            .map(|s| {
                crate::channel::parse_serial(s).ok_or_else(|| {
                    AblyError::new(ErrorCode::InvalidParameterValue, format!("Invalid {k}"))
                })
            })
            .transpose()
    };
    // `cursor` is our pagination cursor (exclusive); `from_serial` is what SDKs send
    // for `untilAttach` (the attach serial, inclusive).
    let from_serial = match (serial_param("cursor")?, serial_param("from_serial")?) {
        (Some(c), _) => Some(c),
        (None, Some(f)) => match direction {
            Direction::Backwards => Some(f.saturating_add(1)),
            Direction::Forwards => f.checked_sub(1),
        },
        (None, None) => None,
    };
    let start = parse_num::<i64>(q, "start")?;
    let end = parse_num::<i64>(q, "end")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(AblyError::new(
                ErrorCode::InvalidParameterValue,
                "start must not be after end",
            ));
        }
    }
    Ok(HistoryQuery {
        start,
        end,
        direction,
        limit,
        from_serial,
    })
}

/// `Link` header for the next page, in the relative form ably-js expects.
fn next_link(q: &HistoryQuery, next: u64) -> String {
    let mut parts = Vec::new();
    if let Some(s) = q.start {
        parts.push(format!("start={s}"));
    }
    if let Some(e) = q.end {
        parts.push(format!("end={e}"));
    }
    parts.push(format!("limit={}", q.limit));
    parts.push(format!(
        "direction={}",
        match q.direction {
            Direction::Backwards => "backwards",
            Direction::Forwards => "forwards",
        }
    ));
    let first = parts.join("&");
    parts.push(format!("cursor={}", crate::channel::format_serial(next)));
    format!(
        "<./messages?{first}>; rel=\"first\", <./messages?{}>; rel=\"next\"",
        parts.join("&")
    )
}

async fn history(
    State(hub): State<Arc<Hub>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    history_reply(&hub, &channel, &headers, &q, HistoryKind::Messages).await
}

/// Presence history: the same query parameters and paging as message history.
async fn presence_history(
    State(hub): State<Arc<Hub>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    history_reply(&hub, &channel, &headers, &q, HistoryKind::Presence).await
}

/// Which history a history endpoint reads.
enum HistoryKind {
    /// The channel's messages, from the broker.
    Messages,
    /// The channel's presence events, from the broker.
    Presence,
}

/// What both history endpoints share: auth, channel name and HISTORY capability
/// checks, query parsing, and the `Link` header for the next page of `page`.
async fn history_reply(
    hub: &Hub,
    channel: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    kind: HistoryKind,
) -> Response {
    let ctx = RestCtx::new(hub, headers, q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        validate_channel_name(channel)?;
        require(&p, channel, ops::HISTORY)?;
        let hq = history_query(q)?;
        let (payload, next) = match kind {
            HistoryKind::Messages => {
                let page = hub.read_history(channel, &hq).await?;
                let msgs = page.messages.into_iter().map(|m| m.message).collect();
                (Payload::Messages(msgs), page.next)
            }
            HistoryKind::Presence => {
                let (members, next) = hub.presence_history_page(channel, &hq).await?;
                (Payload::Presence(members), next)
            }
        };
        let link = next.map(|n| next_link(&hq, n));
        Ok(ctx.reply(StatusCode::OK, payload, link))
    }
    .await;
    ctx.finish(r)
}

/// A channel's status: its occupancy over every node of the deployment.
async fn details(hub: &Hub, name: &str) -> Result<serde_json::Value, AblyError> {
    let o = hub.occupancy(name).await?;
    Ok(serde_json::json!({
        "channelId": name,
        "name": name,
        "status": {
            "isActive": o.connections > 0 || o.presence_members > 0,
            "occupancy": {
                "metrics": o.metrics_json()
            }
        }
    }))
}

async fn presence(
    State(hub): State<Arc<Hub>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        validate_channel_name(&channel)?;
        require(&p, &channel, ops::SUBSCRIBE)?;
        let limit = parse_num::<usize>(&q, "limit")?
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT);
        let members: Vec<_> = hub
            .presence_members(
                &channel,
                q.get("clientId").map(String::as_str),
                q.get("connectionId").map(String::as_str),
            )
            .await?
            .into_iter()
            .take(limit)
            .map(|mut m| {
                if ctx.format == Format::Json {
                    codec::presence_to_json_wire(&mut m);
                }
                m
            })
            .collect();
        let body = match ctx.format {
            Format::Json if !ctx.envelope => {
                serde_json::to_vec(&members).map_err(|_| AblyError::of(ErrorCode::Internal))?
            }
            Format::Json => {
                let v = serde_json::to_value(&members)
                    .map_err(|_| AblyError::of(ErrorCode::Internal))?;
                return Ok(ctx.reply(StatusCode::OK, Payload::Value(v), None));
            }
            Format::Msgpack => codec::to_msgpack(&members)?,
        };
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ctx.format.content_type()),
        );
        Ok(resp)
    }
    .await;
    ctx.finish(r)
}

async fn channel_details(
    State(hub): State<Arc<Hub>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        validate_channel_name(&channel)?;
        require(&p, &channel, ops::CHANNEL_METADATA)?;
        let status = details(&hub, &channel).await?;
        Ok(ctx.reply(StatusCode::OK, Payload::Value(status), None))
    }
    .await;
    ctx.finish(r)
}

async fn list_channels(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
        let limit = parse_num::<usize>(&q, "limit")?
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT);
        let names: Vec<String> = hub
            .channel_names_everywhere(prefix)
            .await?
            .into_iter()
            .filter(|n| p.capability.allows(n, ops::CHANNEL_METADATA))
            .take(limit)
            .collect();
        let body = if q.get("by").map(String::as_str) == Some("id") {
            serde_json::json!(names)
        } else {
            let statuses =
                futures_util::future::join_all(names.iter().map(|n| details(&hub, n))).await;
            serde_json::Value::Array(statuses.into_iter().collect::<Result<_, _>>()?)
        };
        Ok(ctx.reply(StatusCode::OK, Payload::Value(body), None))
    }
    .await;
    ctx.finish(r)
}

/// One batch publish spec.
#[derive(Deserialize)]
struct BatchSpec {
    channels: OneOrMany<String>,
    messages: OneOrMany<Message>,
}

async fn batch_publish(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        let specs: OneOrMany<BatchSpec> = codec::decode_body(&body, ctx.body_format())?;
        // One spec (not in an array) is answered with its channels' results alone.
        let single = matches!(specs, OneOrMany::One(_));
        let mut out = Vec::new();
        for spec in specs.into_vec() {
            let msgs = spec.messages.into_vec();
            let mut results = Vec::new();
            let (mut ok, mut failed) = (0, 0);
            for ch in spec.channels.into_vec() {
                match prepare_messages(&ctx, &p, &ch, msgs.clone()) {
                    Ok((m, publisher)) => {
                        // Ably's messageId: the id the messages share (client ids
                        // of their own win).
                        let id = m
                            .first()
                            .and_then(|m| m.id.clone())
                            .unwrap_or_else(|| hub.next_publish_id());
                        let published = match hub
                            .publish_async(&ch, m, &publisher, Some(id.clone()), Origin::Rest)
                            .await
                        {
                            Ok(p) => p,
                            Err(e) => {
                                failed += 1;
                                results
                                    .push(serde_json::json!({"channel": ch, "error": e.to_info()}));
                                continue;
                            }
                        };
                        ok += 1;
                        results.push(serde_json::json!({
                            "channel": ch,
                            "messageId": id,
                            "serials": published.serials,
                        }));
                    }
                    Err(e) => {
                        failed += 1;
                        results.push(serde_json::json!({"channel": ch, "error": e.to_info()}));
                    }
                }
            }
            if single {
                out = results;
                break;
            }
            out.push(serde_json::json!({
                "successCount": ok,
                "failureCount": failed,
                "results": results,
            }));
        }
        Ok(ctx.reply(
            StatusCode::CREATED,
            Payload::Value(serde_json::Value::Array(out)),
            None,
        ))
    }
    .await;
    ctx.finish(r)
}

/// `GET /presence?channels=a,b`: members of several channels in one call.
async fn batch_presence(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r: Result<Response, AblyError> = async {
        let p = ctx.principal()?;
        let names = q.get("channels").map(String::as_str).unwrap_or("");
        let (mut ok, mut failed) = (0, 0);
        let mut results = Vec::new();
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let check =
                validate_channel_name(name).and_then(|()| require(&p, name, ops::SUBSCRIBE));
            match check {
                Ok(()) => {
                    ok += 1;
                    let members: Vec<_> = hub
                        .presence_members(name, None, None)
                        .await?
                        .into_iter()
                        .map(|mut m| {
                            codec::presence_to_json_wire(&mut m);
                            m
                        })
                        .collect();
                    results.push(serde_json::json!({"channel": name, "presence": members}));
                }
                Err(e) => {
                    failed += 1;
                    results.push(serde_json::json!({"channel": name, "error": e.to_info()}));
                }
            }
        }
        let body = serde_json::json!({
            "successCount": ok,
            "failureCount": failed,
            "results": results,
        });
        Ok(ctx.reply(StatusCode::OK, Payload::Value(body), None))
    }
    .await;
    ctx.finish(r)
}

async fn request_token(
    State(hub): State<Arc<Hub>>,
    Path(key_name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r = (|| {
        let req: TokenRequest = if body.is_empty() {
            TokenRequest::default()
        } else {
            codec::decode_body(&body, ctx.body_format())?
        };
        // Signed requests need no credentials; unsigned ones need the key itself.
        let caller = if req.mac.is_none() {
            Some(ctx.principal()?)
        } else {
            None
        };
        let td = hub
            .keyring()
            .issue_token(&key_name, &req, caller.as_ref(), now_ms())?;
        let v = serde_json::to_value(&td).map_err(|_| AblyError::of(ErrorCode::Internal))?;
        Ok(ctx.reply(StatusCode::OK, Payload::Value(v), None))
    })();
    ctx.finish(r)
}

/// The body of `POST /keys/{keyName}/revokeTokens`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokeRequest {
    targets: Vec<String>,
    #[serde(default)]
    issued_before: Option<i64>,
    #[serde(default)]
    allow_reauth_margin: bool,
}

/// `POST /keys/{keyName}/revokeTokens` with that key (Basic): revokes its tokens
/// by target (see [`crate::auth::Keyring::revoke`]).
async fn revoke_tokens(
    State(hub): State<Arc<Hub>>,
    Path(key_name): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let ctx = RestCtx::new(&hub, &headers, &q);
    let r = (|| {
        let p = ctx.principal()?;
        if p.method != AuthMethod::Basic || p.key_name != key_name {
            return Err(AblyError::new(
                ErrorCode::Unauthorized,
                format!("Revoking tokens of {key_name} needs that key"),
            ));
        }
        let req: RevokeRequest = codec::decode_body(&body, ctx.body_format())?;
        let result = hub.keyring().revoke(
            &key_name,
            &req.targets,
            req.issued_before,
            req.allow_reauth_margin,
            now_ms(),
        )?;
        Ok(ctx.reply(StatusCode::OK, Payload::Value(result), None))
    })();
    ctx.finish(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_query_parsing() {
        let q: HashMap<String, String> =
            [("limit", "10"), ("direction", "forwards"), ("start", "5")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
        let hq = history_query(&q).unwrap();
        assert_eq!(hq.limit, 10);
        assert_eq!(hq.direction, Direction::Forwards);
        assert_eq!(hq.start, Some(5));
        let bad: HashMap<String, String> = [("limit".to_owned(), "5000".to_owned())].into();
        assert!(history_query(&bad).is_err());
    }

    #[test]
    fn link_header_is_relative() {
        let hq = HistoryQuery {
            limit: 2,
            ..Default::default()
        };
        let l = next_link(&hq, 255);
        assert!(
            l.contains(
                "<./messages?limit=2&direction=backwards&cursor=00000000000000ff>; rel=\"next\""
            ),
            "{l}"
        );
    }
}
