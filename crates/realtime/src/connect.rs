//! Connect-time decisions: query parameters, credentials, clientId, rewind params.
//!
//! Pure functions of the request and the keyring, kept apart from the session loop in
//! [`crate::connection`] so they are testable without a transport.

use std::collections::HashMap;

use crate::auth::{now_ms, AuthMethod, Principal};
use crate::codec::Format;
use crate::error::{AblyError, ErrorCode};
use crate::history::{Direction, HistoryQuery};
use crate::hub::Hub;

/// Oldest and newest Ably protocol versions accepted in `v=`.
const MIN_VERSION: u32 = 2;
const MAX_VERSION: u32 = 6;
/// Most messages a rewind replays (Ably: 100).
pub const MAX_REWIND: usize = 100;

/// Parses the `rewind` channel param: a message count (`"10"`) or a duration
/// (`"30s"`, `"2m"`, `"1h"`), at most [`MAX_REWIND`] messages either way.
pub fn parse_rewind(v: &str) -> Result<Option<HistoryQuery>, AblyError> {
    let bad = || {
        AblyError::new(
            ErrorCode::InvalidParameterValue,
            format!("Invalid rewind {v:?}"),
        )
    };
    let v = v.trim();
    if let Ok(n) = v.parse::<usize>() {
        return Ok((n > 0).then(|| HistoryQuery {
            limit: n.min(MAX_REWIND),
            direction: Direction::Backwards,
            ..Default::default()
        }));
    }
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(bad()),
    };
    Ok((ms > 0).then(|| HistoryQuery {
        start: Some(now_ms().saturating_sub(ms)),
        limit: MAX_REWIND,
        direction: Direction::Backwards,
        ..Default::default()
    }))
}

/// Connect-time options parsed from the WebSocket query string.
#[derive(Debug, Clone, Default)]
pub struct ConnectParams {
    pub format: Format,
    pub heartbeats: bool,
    pub echo: bool,
    pub client_id: Option<String>,
    pub key: Option<String>,
    pub token: Option<String>,
    /// connectionKey from `resume=` or `recover=`. Connection state is not retained
    /// across transports yet, so this is answered with a new connection plus an
    /// 80008 error, which makes the SDK re-attach its channels.
    pub resume: Option<String>,
}

impl ConnectParams {
    /// Parses the query; errors are reported to the client after the upgrade.
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, AblyError> {
        let format = Format::from_param(q.get("format").map(String::as_str))?;
        if let Some(v) = q.get("v") {
            let ok = v
                .parse::<f64>()
                .ok()
                .filter(|n| *n >= MIN_VERSION as f64 && *n < (MAX_VERSION + 1) as f64)
                .is_some();
            if !ok {
                return Err(AblyError::new(
                    ErrorCode::UnsupportedProtocolVersion,
                    format!("Unsupported protocol version {v:?}; supported: {MIN_VERSION}..{MAX_VERSION}"),
                ));
            }
        }
        let flag = |name: &str, default: bool| match q.get(name).map(String::as_str) {
            Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            _ => default,
        };
        Ok(ConnectParams {
            format,
            heartbeats: flag("heartbeats", false),
            echo: flag("echo", true),
            client_id: q.get("clientId").filter(|c| !c.is_empty()).cloned(),
            key: q.get("key").cloned(),
            token: q
                .get("access_token")
                .or_else(|| q.get("accessToken"))
                .cloned(),
            resume: q
                .get("resume")
                .or_else(|| q.get("recover"))
                .filter(|k| !k.is_empty())
                .cloned(),
        })
    }
}

/// Checks credentials and resolves the connection's clientId.
pub fn authenticate(
    hub: &Hub,
    params: &ConnectParams,
) -> Result<(Principal, Option<String>), AblyError> {
    let principal = match (&params.key, &params.token) {
        (Some(k), _) => hub.keyring().principal_for_key(k)?,
        (None, Some(t)) => hub.keyring().principal_for_token(t, now_ms())?,
        (None, None) => {
            return Err(AblyError::new(
                ErrorCode::NoCredentials,
                "No key or access_token in the connection request",
            ))
        }
    };
    let client_id = resolve_client_id(&principal, params.client_id.as_deref())?;
    Ok((principal, client_id))
}

/// The clientId a connection runs as, given its credentials and requested id.
pub fn resolve_client_id(
    p: &Principal,
    requested: Option<&str>,
) -> Result<Option<String>, AblyError> {
    if requested == Some("*") {
        return Err(AblyError::new(
            ErrorCode::InvalidClientId,
            "A connection cannot use the wildcard clientId",
        ));
    }
    match (p.method, p.client_id.as_deref(), requested) {
        (AuthMethod::Token, Some(bound), Some(req)) if bound != "*" && bound != req => {
            Err(AblyError::new(
                ErrorCode::IncompatibleCredentials,
                format!("clientId {req:?} is incompatible with the token's clientId {bound:?}"),
            ))
        }
        (AuthMethod::Token, None, Some(_)) => Err(AblyError::new(
            ErrorCode::IncompatibleCredentials,
            "The token does not permit a clientId",
        )),
        (_, _, Some(req)) => Ok(Some(req.to_owned())),
        (_, Some(bound), None) if bound != "*" => Ok(Some(bound.to_owned())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyConfig, RealtimeConfig};
    use crate::history::MemoryHistoryStore;
    use std::sync::Arc;

    fn hub() -> Arc<Hub> {
        Hub::new(
            RealtimeConfig {
                keys: vec![KeyConfig {
                    key: "app.k:s".into(),
                    capability: None,
                    revocable_tokens: false,
                }],
                ..Default::default()
            },
            Arc::new(MemoryHistoryStore::default()),
        )
    }

    #[test]
    fn rewind_parsing() {
        assert_eq!(parse_rewind("5").unwrap().unwrap().limit, 5);
        assert_eq!(parse_rewind("500").unwrap().unwrap().limit, MAX_REWIND);
        assert!(parse_rewind("0").unwrap().is_none());
        let q = parse_rewind("2m").unwrap().unwrap();
        assert!(q.start.unwrap() <= now_ms() - 119_000);
        for bad in ["x", "5d", "-1", "s"] {
            assert!(parse_rewind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_id_resolution() {
        let h = hub();
        let basic = h.keyring().principal_for_key("app.k:s").unwrap();
        assert_eq!(
            resolve_client_id(&basic, Some("a")).unwrap().as_deref(),
            Some("a")
        );
        assert!(resolve_client_id(&basic, Some("*")).is_err());
        let mut tok = basic.clone();
        tok.method = AuthMethod::Token;
        tok.client_id = Some("bob".into());
        assert_eq!(
            resolve_client_id(&tok, None).unwrap().as_deref(),
            Some("bob")
        );
        assert!(resolve_client_id(&tok, Some("eve")).is_err());
        tok.client_id = Some("*".into());
        assert_eq!(resolve_client_id(&tok, None).unwrap(), None);
        assert_eq!(
            resolve_client_id(&tok, Some("eve")).unwrap().as_deref(),
            Some("eve")
        );
    }
}
