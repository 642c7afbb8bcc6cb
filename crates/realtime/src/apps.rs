//! Apps: the realtime layer serves one or more Ably apps, each a [`Hub`] of its own
//! (its keys, channels, history, presence, limits), chosen per request by the app id
//! in the request's credentials (`appId.keyId` key names, a token's `kid`).
//!
//! The configured app is the default hub; `[[realtime.apps]]` in the config file
//! adds more, each with its own keys. With `[realtime] sandbox = true` — made
//! for SDK test suites such as ably-js's, which provision a fresh app per run — apps
//! can also be created with `POST /apps` (no authentication, as Ably's sandbox) and
//! deleted with `DELETE /apps/{appId}`; they live in memory only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::auth::HeaderCredentials;
use crate::config::{CapabilityConfig, KeyConfig, RealtimeConfig, RetentionRule, RetentionRules};
use crate::error::{AblyError, ErrorCode};
use crate::history::MemoryHistoryStore;
use crate::hub::Hub;
use crate::protocol::{MessageData, PresenceMessage};

/// How long a sandbox app's `persisted` namespaces keep history (Ably: 24 h).
const PERSISTED_HISTORY_SECS: u64 = 86_400;

/// One app: its hub and the routes bound to it.
struct App {
    hub: Arc<Hub>,
    routes: Router,
}

/// The apps this server serves.
pub struct Apps {
    default: App,
    sandbox: bool,
    /// Settings sandbox apps start from (the server's own, minus its keys).
    template: RealtimeConfig,
    /// Apps from the config file, by id.
    configured: HashMap<String, App>,
    created: RwLock<HashMap<String, App>>,
}

impl Apps {
    /// The configured app and `others` (the config file's further apps), plus
    /// sandbox provisioning when `config.sandbox`.
    pub fn new(hub: Arc<Hub>, others: Vec<Arc<Hub>>) -> Arc<Apps> {
        let mut template = hub.config().clone();
        template.keys.clear();
        template.apps.clear();
        let configured = others
            .into_iter()
            .map(|hub| {
                let app = App {
                    routes: crate::hub_router(hub.clone()),
                    hub,
                };
                (app.hub.app_id(), app)
            })
            .collect();
        Arc::new(Apps {
            configured,
            sandbox: template.sandbox,
            default: App {
                routes: crate::hub_router(hub.clone()),
                hub,
            },
            template,
            created: RwLock::new(HashMap::new()),
        })
    }

    /// The hub of a further app, if there is one by that id.
    pub fn app(&self, app_id: &str) -> Option<Arc<Hub>> {
        if let Some(app) = self.configured.get(app_id) {
            return Some(app.hub.clone());
        }
        let created = self.created.read().unwrap_or_else(|e| e.into_inner());
        created.get(app_id).map(|a| a.hub.clone())
    }

    /// The routes of the app a request's credentials name (the default app when
    /// they name none, or one this server does not have).
    fn routes_for(&self, req: &Request) -> Router {
        // With one app there are no credentials to read per request.
        if !self.sandbox && self.configured.is_empty() {
            return self.default.routes.clone();
        }
        if let Some(id) = app_id_of(req) {
            if let Some(app) = self.configured.get(&id) {
                return app.routes.clone();
            }
            let created = self.created.read().unwrap_or_else(|e| e.into_inner());
            if let Some(app) = created.get(&id) {
                return app.routes.clone();
            }
        }
        self.default.routes.clone()
    }

    /// `POST /apps`: a new app from Ably's sandbox setup body.
    fn create(&self, spec: AppSpec, host: &str) -> Result<Value, AblyError> {
        let mut rng = rand::thread_rng();
        let app_id = loop {
            let id = Alphanumeric.sample_string(&mut rng, 6);
            let taken = self.default.hub.keyring().has_app(&id)
                || self.configured.contains_key(&id)
                || self
                    .created
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&id);
            if !taken {
                break id;
            }
        };
        let mut config = self.template.clone();
        let mut keys = Vec::new();
        for k in &spec.keys {
            let name = format!("{app_id}.{}", Alphanumeric.sample_string(&mut rng, 6));
            let secret = Alphanumeric.sample_string(&mut rng, 32);
            // Answered in canonical form, as the tokens made from it will have it.
            let capability = match &k.capability {
                Some(text) => crate::capability::Capability::parse(text)?.to_canonical_json(),
                None => crate::capability::Capability::all().to_canonical_json(),
            };
            config.keys.push(KeyConfig {
                key: format!("{name}:{secret}"),
                capability: Some(CapabilityConfig::Text(capability.clone())),
                revocable_tokens: k.revocable_tokens,
            });
            keys.push(json!({
                "id": name.split_once('.').map_or("", |(_, k)| k),
                "keyName": name,
                "keySecret": secret,
                "keyStr": format!("{name}:{secret}"),
                "capability": capability,
                "revocableTokens": k.revocable_tokens,
                "status": 0,
            }));
        }
        let mut rules = config.history_retention.ordered();
        for ns in spec.namespaces.iter().filter(|ns| ns.persisted) {
            rules.insert(
                0,
                RetentionRule {
                    pattern: format!("{}:*", ns.id),
                    secs: PERSISTED_HISTORY_SECS,
                },
            );
        }
        config.history_retention = RetentionRules::List(rules);
        config.mutable_messages.extend(
            spec.namespaces
                .iter()
                .filter(|ns| ns.mutable_messages)
                .map(|ns| format!("{}:*", ns.id)),
        );
        if let Some(max) = spec.limits.presence.max_members {
            config.max_presence_members = max;
        }
        let hub = Hub::try_new(config, Arc::new(MemoryHistoryStore::default()))
            .map_err(|e| AblyError::new(ErrorCode::InvalidRequestBody, e))?;
        for ch in &spec.channels {
            seed_presence(&hub, ch)?;
        }
        let namespaces: Vec<Value> = spec
            .namespaces
            .iter()
            .map(|ns| json!({"id": ns.id, "persisted": ns.persisted}))
            .collect();
        let (hostname, port) = split_host(host);
        let reply = json!({
            "appId": app_id,
            "accountId": "tidewire",
            "id": app_id,
            "keys": keys,
            "namespaces": namespaces,
            "endpoint": hostname,
            "port": port,
            "tls": false,
        });
        let app = App {
            routes: crate::hub_router(hub.clone()),
            hub,
        };
        self.created
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app_id, app);
        Ok(reply)
    }
}

/// What the sandbox setup body may say (ably-common's `test-app-setup.json`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct AppSpec {
    keys: Vec<KeySpec>,
    namespaces: Vec<NamespaceSpec>,
    limits: Limits,
    channels: Vec<ChannelSpec>,
}

/// A channel with presence members present from the start (fixtures).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ChannelSpec {
    name: String,
    presence: Vec<MemberSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MemberSpec {
    client_id: String,
    data: Option<String>,
    encoding: Option<String>,
}

/// The connection id fixture members are present from.
const FIXTURE_CONNECTION: &str = "fixture";

/// Puts a channel's fixture members in its presence set, as if a connection of the
/// server's own had entered them (they stay: no connection of theirs can drop).
fn seed_presence(hub: &Hub, spec: &ChannelSpec) -> Result<(), AblyError> {
    crate::hub::validate_channel_name(&spec.name)?;
    let now = crate::auth::now_ms();
    let members = spec
        .presence
        .iter()
        .enumerate()
        .map(|(i, m)| PresenceMessage {
            id: Some(format!("{FIXTURE_CONNECTION}:{i}:0")),
            action: Some(crate::presence::actions::ENTER),
            client_id: Some(m.client_id.clone()),
            connection_id: Some(FIXTURE_CONNECTION.into()),
            data: m.data.clone().map(MessageData::String),
            encoding: m.encoding.clone(),
            timestamp: Some(now),
            ..Default::default()
        })
        .collect();
    hub.presence(&spec.name, members, FIXTURE_CONNECTION)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct KeySpec {
    capability: Option<String>,
    revocable_tokens: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NamespaceSpec {
    id: String,
    persisted: bool,
    mutable_messages: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Limits {
    presence: PresenceLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PresenceLimits {
    max_members: Option<usize>,
}

/// The host name and port a client reached us by (`Host` header; port 80 when
/// it names none).
fn split_host(host: &str) -> (String, u16) {
    match host.parse::<axum::http::uri::Authority>() {
        Ok(a) => (a.host().to_owned(), a.port_u16().unwrap_or(80)),
        Err(_) => (host.to_owned(), 80),
    }
}

/// The app id a request's credentials name: the `appId` of an `appId.keyId` key
/// (Basic auth, `key=` parameter, a requestToken path) or of a token's key.
fn app_id_of(req: &Request) -> Option<String> {
    let key_app = |name: &str| name.split_once('.').map(|(app, _)| app.to_owned());
    let token_app = |token: &str| {
        crate::token::jwt_key_name(token)
            .ok()
            .and_then(|name| key_app(&name))
    };
    if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return match crate::auth::parse_authorization(value).ok()? {
            HeaderCredentials::Key(key) => key_app(&key),
            HeaderCredentials::Token(token) => token_app(&token),
        };
    }
    let path = req.uri().path();
    if let Some(name) = path
        .strip_prefix("/keys/")
        .and_then(|p| p.strip_suffix("/requestToken"))
    {
        return key_app(name);
    }
    let query = req.uri().query().unwrap_or("");
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "key" | "key_name" => return key_app(&v),
            "access_token" | "accessToken" => return token_app(&v),
            _ => {}
        }
    }
    None
}

/// The realtime HTTP surface of every app, with the sandbox's provisioning routes
/// when enabled.
pub fn router(apps: Arc<Apps>) -> Router {
    let mut r = Router::new();
    if apps.sandbox {
        r = r
            .route("/apps", post(create_app))
            .route("/apps/{app_id}", delete(delete_app));
    }
    r.fallback(dispatch).with_state(apps)
}

async fn dispatch(State(apps): State<Arc<Apps>>, req: Request) -> Response {
    let routes = apps.routes_for(&req);
    match routes.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

async fn create_app(State(apps): State<Arc<Apps>>, headers: HeaderMap, body: Bytes) -> Response {
    let spec: AppSpec = if body.iter().all(u8::is_ascii_whitespace) {
        AppSpec::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                return AblyError::new(ErrorCode::InvalidRequestBody, e.to_string()).into_response()
            }
        }
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    match apps.create(spec, host) {
        Ok(v) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /apps/{appId}`, authenticated with one of the app's keys (Basic).
async fn delete_app(
    State(apps): State<Arc<Apps>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Apps from the config file stay: only sandbox-made apps are deleted.
    let made = apps
        .created
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&app_id)
        .map(|a| a.hub.clone());
    let Some(hub) = made else {
        return AblyError::new(ErrorCode::NotFound, format!("No app {app_id}")).into_response();
    };
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| hub.keyring().principal_for_header(v, crate::auth::now_ms()))
        .is_some_and(|p| p.is_ok_and(|p| p.method == crate::auth::AuthMethod::Basic));
    if !authorised {
        return AblyError::new(
            ErrorCode::Unauthorized,
            "Deleting an app needs one of its keys",
        )
        .into_response();
    }
    // Its connections keep the hub until they close; nothing new reaches it.
    apps.created
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&app_id);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, auth: Option<&str>) -> Request {
        let mut b = Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn app_ids_from_credentials() {
        use base64::engine::general_purpose::STANDARD as B64;
        use base64::Engine;
        let basic = format!("Basic {}", B64.encode("abc.def:secret"));
        assert_eq!(
            app_id_of(&req("/channels/x", Some(&basic))).as_deref(),
            Some("abc")
        );
        assert_eq!(
            app_id_of(&req("/?key=app1.k%3As&format=json", None)).as_deref(),
            Some("app1")
        );
        assert_eq!(
            app_id_of(&req("/keys/app2.k/requestToken", None)).as_deref(),
            Some("app2")
        );
        assert_eq!(app_id_of(&req("/time", None)), None);
    }

    #[test]
    fn host_split() {
        assert_eq!(split_host("localhost:8080"), ("localhost".into(), 8080));
        assert_eq!(split_host("127.0.0.1"), ("127.0.0.1".into(), 80));
    }
}
