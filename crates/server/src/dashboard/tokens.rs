//! The realtime API keys (names and capabilities; never the secrets) and token
//! minting: an admin picks a key, a capability and a clientId, and gets Ably
//! TokenDetails from the key's own keyring ([`Keyring::issue_token`], the code
//! behind `POST /keys/{name}/requestToken`), so a minted token is exactly what an
//! Ably SDK would get. Admin sessions only: a token is a credential.
//!
//! [`Keyring::issue_token`]: tidewire_realtime::auth::Keyring::issue_token

use std::sync::Arc;

use axum::body::Bytes as BodyBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tidewire_realtime::auth::now_ms;
use tidewire_realtime::token::TokenRequest;

use super::{api_error, ok, DashState};

/// Every app's keys: name, capability (as JSON) and whether its tokens can be
/// revoked.
pub(super) async fn keys(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    let s = session_or_401!(st, headers);
    admin_or_403!(s);
    let apps: Vec<Value> = st
        .hubs
        .iter()
        .map(|h| {
            let keys: Vec<Value> = h
                .keyring()
                .keys()
                .into_iter()
                .map(|k| {
                    let capability: Value = serde_json::from_str(&k.capability.to_canonical_json())
                        .unwrap_or(Value::Null);
                    json!({
                        "name": k.name,
                        "capability": capability,
                        "revocable": k.revocable,
                    })
                })
                .collect();
            json!({ "app": h.app_id(), "keys": keys })
        })
        .collect();
    ok(json!({ "apps": apps }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MintBody {
    app: Option<String>,
    /// The key's name, `appId.keyId`.
    key: String,
    /// Capability JSON text; empty or absent: the key's own.
    capability: Option<String>,
    client_id: Option<String>,
    /// Lifetime in ms; absent: the app's default token TTL.
    ttl: Option<i64>,
}

/// Mints a token for a configured key: `{"key", "capability"?, "clientId"?,
/// "ttl"?, "app"?}` → Ably TokenDetails. The capability is intersected with the
/// key's, as Ably does; errors carry Ably's code.
pub(super) async fn mint(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Response {
    let s = session_or_401!(st, headers);
    admin_or_403!(s);
    let b: MintBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    };
    let Some(hub) = st.hub(b.app.as_deref()) else {
        return api_error(StatusCode::NOT_FOUND, "no such app");
    };
    let keyring = hub.keyring();
    let Some(key) = keyring.key(&b.key) else {
        return api_error(StatusCode::NOT_FOUND, "no such key");
    };
    // The dashboard acts as the key's holder: an unsigned request made with the
    // key itself, which is how requestToken over Basic auth is authorized.
    let caller = match keyring.principal_for_key(&format!("{}:{}", key.name, key.secret)) {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.message),
    };
    let req = TokenRequest {
        key_name: key.name.clone(),
        ttl: b.ttl,
        capability: b.capability.filter(|c| !c.trim().is_empty()),
        client_id: b.client_id.filter(|c| !c.is_empty()),
        ..TokenRequest::default()
    };
    match keyring.issue_token(&key.name, &req, Some(&caller), now_ms()) {
        Ok(details) => ok(serde_json::to_value(&details).unwrap_or(Value::Null)),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": e.message, "code": e.code.code() })),
        )
            .into_response(),
    }
}
