//! Authentication: turning a key, a token or a TokenRequest into a [`Principal`].
//!
//! [`Keyring`] holds the configured API keys. Every front door (WebSocket query,
//! REST `Authorization` header, in-band AUTH) ends in [`Keyring::principal_for_key`] or
//! [`Keyring::principal_for_token`]; token issuing ([`Keyring::issue_token`]) checks a
//! TokenRequest's mac, clock window and nonce before minting a self-verifying token.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::capability::Capability;
use crate::config::{CapabilityConfig, RealtimeConfig};
use crate::error::{AblyError, ErrorCode};
use crate::token::{self, TokenClaims, TokenDetails, TokenRequest};

/// TokenRequest timestamps must be within this many ms of server time.
const CLOCK_WINDOW_MS: i64 = 120_000;
/// Longest token lifetime we mint (Ably: 24 h).
const MAX_TOKEN_TTL_MS: i64 = 86_400_000;
/// How far in the future a JWT's `iat` may be (issuer and server clocks differ a
/// little); a token issued later than that was minted with a wrong or forged clock.
const JWT_CLOCK_SKEW_MS: i64 = 30_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A configured API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// `appId.keyId`.
    pub name: String,
    pub secret: String,
    pub capability: Capability,
    /// Tokens of this key can be revoked (`POST /keys/{name}/revokeTokens`).
    pub revocable: bool,
}

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Token,
}

/// The verified identity behind a request or connection.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_name: String,
    pub method: AuthMethod,
    pub capability: Capability,
    /// Bound clientId; `Some("*")` means "may act as anyone".
    pub client_id: Option<String>,
    /// Token expiry (ms since epoch); `None` for key auth.
    pub expires_ms: Option<i64>,
    /// When the token was issued (ms); `None` for key auth.
    pub issued_ms: Option<i64>,
}

impl Principal {
    /// Whether this principal may publish as `client_id` (`None` = unidentified).
    pub fn may_use_client_id(&self, client_id: Option<&str>) -> bool {
        match (self.method, self.client_id.as_deref(), client_id) {
            (_, _, None) => true,
            (AuthMethod::Basic, _, Some(_)) => true,
            (AuthMethod::Token, Some("*"), Some(_)) => true,
            (AuthMethod::Token, Some(bound), Some(c)) => bound == c,
            (AuthMethod::Token, None, Some(_)) => false,
        }
    }
}

/// The configured keys plus the TokenRequest nonce memory.
#[derive(Debug)]
pub struct Keyring {
    keys: HashMap<String, ApiKey>,
    default_ttl_ms: i64,
    /// (keyName, nonce) → timestamp, pruned past the clock window: replaying a signed
    /// TokenRequest inside its validity window is refused (40105).
    nonces: Mutex<HashMap<(String, String), i64>>,
    /// When this keyring was built (server start), ms. The nonce memory starts
    /// empty, so a TokenRequest timestamped before it may have been used already:
    /// it is refused (40104) rather than remembered across restarts.
    started_ms: i64,
    /// Token revocations in force (revocable keys only).
    revocations: Mutex<Vec<Revocation>>,
    /// Bumped by every revocation, so live connections check their own token.
    revoked: tokio::sync::watch::Sender<u64>,
}

/// Tokens of `key_name` for `target` issued before `issued_before_ms` are
/// refused from `applies_at_ms` on (40141).
#[derive(Debug, Clone)]
struct Revocation {
    key_name: String,
    target: RevocationTarget,
    issued_before_ms: i64,
    applies_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RevocationTarget {
    ClientId(String),
    /// Tidewire's tokens carry no revocation key or channel list of their own:
    /// accepted, matching no token.
    Other,
}

/// With `allowReauthMargin`, a revocation waits this long, so that clients can get
/// a new token first (Ably: 30 s).
const REAUTH_MARGIN_MS: i64 = 30_000;

impl Keyring {
    /// Builds the keyring; malformed keys or capabilities are configuration errors.
    pub fn from_config(config: &RealtimeConfig) -> Result<Self, String> {
        Self::from_config_started_at(config, now_ms())
    }

    /// [`Keyring::from_config`] for a server that started at `started_ms`: tests and
    /// the fuzz targets run on a fixed clock, and TokenRequests older than the start
    /// are refused.
    pub fn from_config_started_at(
        config: &RealtimeConfig,
        started_ms: i64,
    ) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for k in &config.keys {
            let (name, secret) = k
                .key
                .split_once(':')
                .ok_or_else(|| format!("key {:?} is not appId.keyId:secret", k.key))?;
            if !name.contains('.') || secret.is_empty() {
                return Err(format!("key {name:?} is not appId.keyId:secret"));
            }
            let capability = match &k.capability {
                None => Ok(Capability::all()),
                Some(CapabilityConfig::Text(t)) => Capability::parse(t),
                Some(CapabilityConfig::Map(v)) => Capability::from_value(v),
            }
            .map_err(|e| format!("key {name:?}: {}", e.message))?;
            keys.insert(
                name.to_owned(),
                ApiKey {
                    name: name.to_owned(),
                    secret: secret.to_owned(),
                    capability,
                    revocable: k.revocable_tokens,
                },
            );
        }
        Ok(Keyring {
            keys,
            default_ttl_ms: config.default_token_ttl_ms,
            nonces: Mutex::new(HashMap::new()),
            started_ms,
            revocations: Mutex::new(Vec::new()),
            revoked: tokio::sync::watch::channel(0).0,
        })
    }

    /// Whether a key of app `app_id` is configured.
    pub fn has_app(&self, app_id: &str) -> bool {
        self.keys
            .keys()
            .any(|name| name.split_once('.').is_some_and(|(app, _)| app == app_id))
    }

    /// Every configured key, by name: for listings (the dashboard shows names and
    /// capabilities, never the secrets).
    pub fn keys(&self) -> Vec<&ApiKey> {
        let mut keys: Vec<&ApiKey> = self.keys.values().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }

    /// Looks up a key by name.
    pub fn key(&self, name: &str) -> Option<&ApiKey> {
        self.keys.get(name)
    }

    /// Authenticates a full `appId.keyId:secret` key.
    pub fn principal_for_key(&self, key: &str) -> Result<Principal, AblyError> {
        let invalid = || AblyError::new(ErrorCode::InvalidCredentials, "Invalid key in request");
        let (name, secret) = key.split_once(':').ok_or_else(invalid)?;
        let k = self.keys.get(name).ok_or_else(|| {
            AblyError::new(
                ErrorCode::InvalidCredentials,
                format!("Invalid key in request: {name}"),
            )
        })?;
        if !constant_time_eq(k.secret.as_bytes(), secret.as_bytes()) {
            return Err(invalid());
        }
        Ok(Principal {
            key_name: k.name.clone(),
            method: AuthMethod::Basic,
            capability: k.capability.clone(),
            client_id: None,
            expires_ms: None,
            issued_ms: None,
        })
    }

    /// Verifies a token (Tidewire-issued or an Ably JWT) at time `now`.
    pub fn principal_for_token(&self, token: &str, now: i64) -> Result<Principal, AblyError> {
        let key_name = token::jwt_key_name(token)?;
        let key = self.keys.get(&key_name).ok_or_else(|| {
            AblyError::new(
                ErrorCode::TokenUnrecognised,
                format!("No key named {key_name}"),
            )
        })?;
        let claims = token::verify_jwt(token, &key.secret)?;
        if claims.expires_ms <= now {
            return Err(AblyError::new(ErrorCode::TokenExpired, "Token expired"));
        }
        // Ably's limits hold for JWTs minted elsewhere too: at most 24 h of life,
        // and not issued in the future.
        if claims.expires_ms.saturating_sub(claims.issued_ms) > MAX_TOKEN_TTL_MS {
            return Err(AblyError::new(
                ErrorCode::InvalidParameterValue,
                "Excessive value for TTL",
            ));
        }
        if claims.issued_ms > now.saturating_add(JWT_CLOCK_SKEW_MS) {
            return Err(AblyError::of(ErrorCode::TimestampNotCurrent));
        }
        let capability = match &claims.capability {
            None => key.capability.clone(),
            Some(text) => key.capability.intersect(&Capability::parse(text)?)?,
        };
        let principal = Principal {
            key_name,
            method: AuthMethod::Token,
            capability,
            client_id: claims.client_id,
            expires_ms: Some(claims.expires_ms),
            issued_ms: Some(claims.issued_ms),
        };
        if key.revocable && self.is_revoked(&principal, now) {
            return Err(AblyError::of(ErrorCode::TokenRevoked));
        }
        Ok(principal)
    }

    /// Whether a revocation in force covers this principal's token.
    pub fn is_revoked(&self, p: &Principal, now: i64) -> bool {
        let (Some(issued), AuthMethod::Token) = (p.issued_ms, p.method) else {
            return false;
        };
        let revocations = self.revocations.lock().unwrap_or_else(|e| e.into_inner());
        revocations.iter().any(|r| {
            r.key_name == p.key_name
                && now >= r.applies_at_ms
                && issued < r.issued_before_ms
                && match &r.target {
                    RevocationTarget::ClientId(c) => p.client_id.as_deref() == Some(c.as_str()),
                    RevocationTarget::Other => false,
                }
        })
    }

    /// Changes whenever tokens are revoked: live connections then check theirs.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revoked.subscribe()
    }

    /// `POST /keys/{keyName}/revokeTokens`: revokes the key's tokens for each
    /// `type:value` target (`clientId`, `revocationKey`, `channel`) issued before
    /// `issued_before` (default: now), from now on or, with `reauth_margin`, 30 s
    /// from now. Answers Ably's batch result.
    pub fn revoke(
        &self,
        key_name: &str,
        targets: &[String],
        issued_before: Option<i64>,
        reauth_margin: bool,
        now: i64,
    ) -> Result<serde_json::Value, AblyError> {
        let key = self.keys.get(key_name).ok_or_else(|| {
            AblyError::new(ErrorCode::NotFound, format!("No key named {key_name}"))
        })?;
        if !key.revocable {
            return Err(AblyError::new(
                ErrorCode::BadRequest,
                format!("Token revocation is not enabled for key {key_name}"),
            ));
        }
        let issued_before_ms = issued_before.unwrap_or(now);
        let applies_at_ms = if reauth_margin {
            now + REAUTH_MARGIN_MS
        } else {
            now
        };
        let mut results = Vec::new();
        let (mut ok, mut failed) = (0, 0);
        let mut added = Vec::new();
        for t in targets {
            let target = match t.split_once(':') {
                Some(("clientId", v)) if !v.is_empty() => {
                    Some(RevocationTarget::ClientId(v.to_owned()))
                }
                Some(("revocationKey" | "channel", v)) if !v.is_empty() => {
                    Some(RevocationTarget::Other)
                }
                _ => None,
            };
            match target {
                Some(target) => {
                    ok += 1;
                    added.push(Revocation {
                        key_name: key_name.to_owned(),
                        target,
                        issued_before_ms,
                        applies_at_ms,
                    });
                    results.push(serde_json::json!({
                        "target": t,
                        "issuedBefore": issued_before_ms,
                        "appliesAt": applies_at_ms,
                    }));
                }
                None => {
                    failed += 1;
                    let e = AblyError::new(
                        ErrorCode::InvalidParameterValue,
                        format!("Invalid revocation target {t:?}"),
                    );
                    results.push(serde_json::json!({"target": t, "error": e.to_info()}));
                }
            }
        }
        self.revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(added);
        self.revoked.send_modify(|n| *n += 1);
        if reauth_margin {
            // Live connections check again once the revocation applies.
            let tx = self.revoked.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(REAUTH_MARGIN_MS as u64))
                        .await;
                    tx.send_modify(|n| *n += 1);
                });
            }
        }
        Ok(serde_json::json!({
            "successCount": ok,
            "failureCount": failed,
            "results": results,
        }))
    }

    /// Verifies a signed TokenRequest and mints a token (`POST /keys/{name}/requestToken`).
    /// An unsigned request is accepted only when `caller` authenticated with that key.
    pub fn issue_token(
        &self,
        key_name: &str,
        req: &TokenRequest,
        caller: Option<&Principal>,
        now: i64,
    ) -> Result<TokenDetails, AblyError> {
        if req.key_name != key_name && !req.key_name.is_empty() {
            return Err(AblyError::new(
                ErrorCode::IncompatibleCredentials,
                "TokenRequest keyName does not match the request path",
            ));
        }
        let key = self.keys.get(key_name).ok_or_else(|| {
            AblyError::new(
                ErrorCode::InvalidCredentials,
                format!("Invalid key name {key_name}"),
            )
        })?;
        if req.mac.is_some() {
            if !req.verify_mac(&key.secret) {
                return Err(AblyError::new(
                    ErrorCode::InvalidCredentials,
                    "TokenRequest mac verification failed",
                ));
            }
            let ts = req.timestamp.ok_or_else(|| {
                AblyError::new(
                    ErrorCode::TimestampNotCurrent,
                    "TokenRequest has no timestamp",
                )
            })?;
            if ts.saturating_sub(now).saturating_abs() > CLOCK_WINDOW_MS || ts < self.started_ms {
                return Err(AblyError::of(ErrorCode::TimestampNotCurrent));
            }
            let nonce = req.nonce.as_deref().unwrap_or("");
            if nonce.len() < 16 {
                return Err(AblyError::new(
                    ErrorCode::InvalidParameterValue,
                    "TokenRequest nonce must be at least 16 characters",
                ));
            }
            self.remember_nonce(key_name, nonce, ts, now)?;
        } else {
            match caller {
                Some(p) if p.method == AuthMethod::Basic && p.key_name == key_name => {}
                _ => {
                    return Err(AblyError::new(
                        ErrorCode::Unauthorized,
                        "Unsigned token requests need Basic auth with the same key",
                    ))
                }
            }
        }
        let ttl = req.ttl.unwrap_or(self.default_ttl_ms);
        if ttl <= 0 || ttl > MAX_TOKEN_TTL_MS {
            return Err(AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid ttl {ttl}"),
            ));
        }
        let capability = match req.capability.as_deref() {
            None | Some("") => key.capability.clone(),
            Some(text) => key.capability.intersect(&Capability::parse(text)?)?,
        };
        let capability_text = capability.to_canonical_json();
        let claims = TokenClaims {
            key_name: key_name.to_owned(),
            issued_ms: now,
            expires_ms: now + ttl,
            capability: Some(capability_text.clone()),
            client_id: req.client_id.clone().filter(|c| !c.is_empty()),
        };
        Ok(TokenDetails {
            token: token::sign_token(&key.secret, &claims),
            key_name: key_name.to_owned(),
            issued: claims.issued_ms,
            expires: claims.expires_ms,
            capability: capability_text,
            client_id: claims.client_id,
        })
    }

    fn remember_nonce(&self, key: &str, nonce: &str, ts: i64, now: i64) -> Result<(), AblyError> {
        let mut seen = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, t| (*t - now).abs() <= CLOCK_WINDOW_MS);
        let k = (key.to_owned(), nonce.to_owned());
        if seen.contains_key(&k) {
            return Err(AblyError::of(ErrorCode::NonceReplayed));
        }
        seen.insert(k, ts);
        Ok(())
    }

    /// Authenticates an HTTP `Authorization` header value (`Basic` or `Bearer`).
    pub fn principal_for_header(&self, value: &str, now: i64) -> Result<Principal, AblyError> {
        match parse_authorization(value)? {
            HeaderCredentials::Key(key) => self.principal_for_key(&key),
            HeaderCredentials::Token(token) => self.principal_for_token(&token, now),
        }
    }
}

/// What an HTTP `Authorization` header carries.
pub enum HeaderCredentials {
    /// `Basic base64(appId.keyId:secret)`.
    Key(String),
    /// `Bearer <token>`; Ably REST clients send base64(token), raw tokens are
    /// accepted too.
    Token(String),
}

/// Reads an `Authorization` header value (without checking the credentials).
pub fn parse_authorization(value: &str) -> Result<HeaderCredentials, AblyError> {
    let (scheme, rest) = value.trim().split_once(' ').ok_or_else(|| {
        AblyError::new(
            ErrorCode::InvalidCredentials,
            "Malformed Authorization header",
        )
    })?;
    let rest = rest.trim();
    let decoded = B64
        .decode(rest.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    if scheme.eq_ignore_ascii_case("basic") {
        let key = decoded.ok_or_else(|| {
            AblyError::new(ErrorCode::InvalidCredentials, "Malformed Basic credentials")
        })?;
        Ok(HeaderCredentials::Key(key))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let token = decoded
            .filter(|t| t.split('.').count() == 3)
            .unwrap_or_else(|| rest.to_owned());
        Ok(HeaderCredentials::Token(token))
    } else {
        Err(AblyError::new(
            ErrorCode::InvalidCredentials,
            "Unsupported Authorization scheme",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyConfig;

    fn ring() -> Keyring {
        let cfg = RealtimeConfig {
            keys: vec![
                KeyConfig {
                    key: "app.full:secret".into(),
                    capability: None,
                    revocable_tokens: false,
                },
                KeyConfig {
                    key: "app.sub:s2".into(),
                    capability: Some(CapabilityConfig::Text(
                        r#"{"stream:*":["subscribe"]}"#.into(),
                    )),
                    revocable_tokens: false,
                },
            ],
            ..Default::default()
        };
        Keyring::from_config(&cfg).unwrap()
    }

    fn signed(key: &str, secret: &str, now: i64, nonce: &str) -> TokenRequest {
        let mut tr = TokenRequest {
            key_name: key.into(),
            ttl: Some(60_000),
            capability: Some(r#"{"stream:1":["subscribe","publish"]}"#.into()),
            client_id: Some("alice".into()),
            timestamp: Some(now),
            nonce: Some(nonce.into()),
            mac: None,
        };
        tr.mac = Some(tr.compute_mac(secret));
        tr
    }

    #[test]
    fn key_auth() {
        let r = ring();
        assert!(r.principal_for_key("app.full:secret").is_ok());
        assert_eq!(
            r.principal_for_key("app.full:nope").unwrap_err().code,
            ErrorCode::InvalidCredentials
        );
        assert!(r.principal_for_key("app.none:x").is_err());
        let hdr = format!("Basic {}", B64.encode("app.full:secret"));
        assert!(r.principal_for_header(&hdr, 0).is_ok());
    }

    #[test]
    fn token_request_flow_intersects_capability() {
        let r = ring();
        let now = now_ms();
        let td = r
            .issue_token(
                "app.sub",
                &signed("app.sub", "s2", now, "nonce-000000000001"),
                None,
                now,
            )
            .unwrap();
        assert_eq!(td.capability, r#"{"stream:1":["subscribe"]}"#);
        assert_eq!(td.expires - td.issued, 60_000);
        let p = r.principal_for_token(&td.token, now).unwrap();
        assert_eq!(p.client_id.as_deref(), Some("alice"));
        assert!(p.capability.allows("stream:1", "subscribe"));
        assert!(!p.capability.allows("stream:1", "publish"));
        // Bearer form, base64-encoded.
        let hdr = format!("Bearer {}", B64.encode(&td.token));
        assert!(r.principal_for_header(&hdr, now).is_ok());
        // Expired.
        assert_eq!(
            r.principal_for_token(&td.token, td.expires)
                .unwrap_err()
                .code,
            ErrorCode::TokenExpired
        );
    }

    #[test]
    fn token_request_refusals() {
        let r = ring();
        let now = now_ms();
        let tr = signed("app.full", "secret", now, "nonce-000000000002");
        assert!(r.issue_token("app.full", &tr, None, now).is_ok());
        assert_eq!(
            r.issue_token("app.full", &tr, None, now).unwrap_err().code,
            ErrorCode::NonceReplayed
        );
        let old = signed("app.full", "secret", now - 200_000, "nonce-000000000003");
        assert_eq!(
            r.issue_token("app.full", &old, None, now).unwrap_err().code,
            ErrorCode::TimestampNotCurrent
        );
        let wrong = signed("app.full", "bad", now, "nonce-000000000004");
        assert_eq!(
            r.issue_token("app.full", &wrong, None, now)
                .unwrap_err()
                .code,
            ErrorCode::InvalidCredentials
        );
        let unsigned = TokenRequest {
            key_name: "app.full".into(),
            ..Default::default()
        };
        assert!(r.issue_token("app.full", &unsigned, None, now).is_err());
        let caller = r.principal_for_key("app.full:secret").unwrap();
        assert!(r
            .issue_token("app.full", &unsigned, Some(&caller), now)
            .is_ok());
    }

    #[test]
    fn client_id_rules() {
        let r = ring();
        let basic = r.principal_for_key("app.full:secret").unwrap();
        assert!(basic.may_use_client_id(Some("anyone")));
        let mut tok = basic.clone();
        tok.method = AuthMethod::Token;
        tok.client_id = Some("alice".into());
        assert!(tok.may_use_client_id(Some("alice")));
        assert!(!tok.may_use_client_id(Some("bob")));
        assert!(tok.may_use_client_id(None));
        tok.client_id = Some("*".into());
        assert!(tok.may_use_client_id(Some("bob")));
        tok.client_id = None;
        assert!(!tok.may_use_client_id(Some("bob")));
    }
}
