//! Tokens: TokenRequest signatures, HS256 JWTs, and Tidewire-issued tokens.
//!
//! Tidewire-issued tokens are themselves HS256 JWTs signed with the issuing key's
//! secret (`kid` = key name), so verifying one needs only the keyring, never a lookup
//! table: a restart or a second node accepts them as long as the key exists. They
//! carry Ably's claims (`iat`, `exp`, `x-ably-capability`, `x-ably-clientId`) plus
//! millisecond-precision `x-tidewire-issued`/`x-tidewire-expires`, so customer-minted
//! Ably JWTs and our own tokens share one verification path ([`verify_jwt`]).

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{AblyError, ErrorCode};
use crate::protocol::lenient;

type HmacSha256 = Hmac<Sha256>;

/// Ably's TokenRequest, signed by a key holder so that a client can exchange it for a
/// token without ever seeing the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub key_name: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl TokenRequest {
    /// The text the mac covers: each field followed by `\n`, empty when absent.
    pub fn signing_text(&self) -> String {
        let opt_num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n",
            self.key_name,
            opt_num(self.ttl),
            self.capability.as_deref().unwrap_or(""),
            self.client_id.as_deref().unwrap_or(""),
            opt_num(self.timestamp),
            self.nonce.as_deref().unwrap_or(""),
        )
    }

    /// base64(HMAC-SHA256(secret, signing_text)).
    pub fn compute_mac(&self, secret: &str) -> String {
        B64.encode(hmac(secret.as_bytes(), self.signing_text().as_bytes()))
    }

    /// Constant-time check of `mac` against the secret.
    pub fn verify_mac(&self, secret: &str) -> bool {
        let Some(mac) = self.mac.as_deref() else {
            return false;
        };
        let Ok(given) = B64.decode(mac.as_bytes()) else {
            return false;
        };
        let mut m = new_mac(secret.as_bytes());
        m.update(self.signing_text().as_bytes());
        m.verify_slice(&given).is_ok()
    }
}

/// Ably's TokenDetails, as returned by `requestToken`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenDetails {
    pub token: String,
    pub key_name: String,
    pub issued: i64,
    pub expires: i64,
    pub capability: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// What a verified token grants, before the capability text is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub key_name: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// Capability JSON text; `None` means "whatever the key holds".
    pub capability: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct JwtClaims {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    exp: Option<i64>,
    #[serde(
        rename = "x-ably-capability",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    capability: Option<CapabilityClaim>,
    #[serde(
        rename = "x-ably-clientId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    client_id: Option<String>,
    #[serde(
        rename = "x-tidewire-issued",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    issued_ms: Option<i64>,
    #[serde(
        rename = "x-tidewire-expires",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    expires_ms: Option<i64>,
}

/// The capability claim is a JSON string per Ably, but some minters put the object in
/// directly; accept both.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum CapabilityClaim {
    Text(String),
    Object(serde_json::Value),
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = new_mac(key);
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Mints an HS256 JWT carrying `claims`, signed with `secret` and tagged `kid`.
pub fn sign_token(secret: &str, claims: &TokenClaims) -> String {
    let header = JwtHeader {
        alg: "HS256".into(),
        kid: Some(claims.key_name.clone()),
        typ: Some("JWT".into()),
    };
    let body = JwtClaims {
        iat: Some(claims.issued_ms / 1000),
        // Round up so the coarse claim never expires before the precise one.
        // (Saturating: `tidewire token` with a huge --ttl saturates expires_ms.)
        exp: Some(claims.expires_ms.saturating_add(999) / 1000),
        capability: claims.capability.clone().map(CapabilityClaim::Text),
        client_id: claims.client_id.clone(),
        issued_ms: Some(claims.issued_ms),
        expires_ms: Some(claims.expires_ms),
    };
    let h = B64URL.encode(serde_json::to_vec(&header).unwrap_or_default());
    let c = B64URL.encode(serde_json::to_vec(&body).unwrap_or_default());
    let input = format!("{h}.{c}");
    let sig = B64URL.encode(hmac(secret.as_bytes(), input.as_bytes()));
    format!("{input}.{sig}")
}

/// The `kid` of a JWT-shaped token, without verifying anything. `None` when the text is
/// not a JWT at all.
pub fn jwt_key_name(token: &str) -> Result<String, AblyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AblyError::of(ErrorCode::InvalidTokenFormat));
    };
    let bad = || AblyError::of(ErrorCode::InvalidJwt);
    let header: JwtHeader = B64URL
        .decode(h.trim_end_matches('=').as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(bad)?;
    if header.alg != "HS256" {
        return Err(AblyError::new(
            ErrorCode::InvalidJwt,
            "Only HS256 JWTs are supported",
        ));
    }
    header
        .kid
        .ok_or_else(|| AblyError::new(ErrorCode::InvalidJwt, "JWT has no kid"))
}

/// Verifies an HS256 JWT against `secret` and returns its claims. Expiry is *not*
/// checked here (the caller decides between 40142 and in-band renewal).
pub fn verify_jwt(token: &str, secret: &str) -> Result<TokenClaims, AblyError> {
    let key_name = jwt_key_name(token)?;
    let bad = |m: &str| AblyError::new(ErrorCode::InvalidJwt, m.to_owned());
    let (input, sig) = token.rsplit_once('.').ok_or_else(|| bad("malformed JWT"))?;
    let sig = B64URL
        .decode(sig.trim_end_matches('=').as_bytes())
        .map_err(|_| bad("malformed JWT signature"))?;
    let mut m = new_mac(secret.as_bytes());
    m.update(input.as_bytes());
    if m.verify_slice(&sig).is_err() {
        return Err(AblyError::new(
            ErrorCode::InvalidCredentials,
            "JWT signature verification failed",
        ));
    }
    let claims_part = input
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("malformed JWT"))?;
    let claims: JwtClaims = B64URL
        .decode(claims_part.trim_end_matches('=').as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("malformed JWT claims"))?;
    let expires_ms = claims
        .expires_ms
        .or(claims.exp.map(|s| s.saturating_mul(1000)))
        .ok_or_else(|| bad("JWT has no exp claim"))?;
    let issued_ms = claims
        .issued_ms
        .or(claims.iat.map(|s| s.saturating_mul(1000)))
        .ok_or_else(|| bad("JWT has no iat claim"))?;
    let capability = match claims.capability {
        None => None,
        Some(CapabilityClaim::Text(t)) => Some(t),
        Some(CapabilityClaim::Object(v)) => Some(v.to_string()),
    };
    Ok(TokenClaims {
        key_name,
        issued_ms,
        expires_ms,
        capability,
        client_id: claims.client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_request_mac_matches_reference_construction() {
        let tr = TokenRequest {
            key_name: "app.key".into(),
            ttl: Some(3_600_000),
            capability: Some(r#"{"*":["*"]}"#.into()),
            client_id: None,
            timestamp: Some(1_700_000_000_000),
            nonce: Some("0123456789abcdef".into()),
            mac: None,
        };
        assert_eq!(
            tr.signing_text(),
            "app.key\n3600000\n{\"*\":[\"*\"]}\n\n1700000000000\n0123456789abcdef\n"
        );
        let mac = tr.compute_mac("secret");
        let expected = B64.encode(hmac(b"secret", tr.signing_text().as_bytes()));
        assert_eq!(mac, expected);
        let signed = TokenRequest {
            mac: Some(mac),
            ..tr.clone()
        };
        assert!(signed.verify_mac("secret"));
        assert!(!signed.verify_mac("other"));
        let tampered = TokenRequest {
            ttl: Some(1),
            ..signed
        };
        assert!(!tampered.verify_mac("secret"));
    }

    #[test]
    fn hmac_sha256_known_vector() {
        // RFC 4231 test case 2.
        let out = hmac(b"Jefe", b"what do ya want for nothing?");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn issued_token_verifies_and_rejects_tampering() {
        let claims = TokenClaims {
            key_name: "app.k1".into(),
            issued_ms: 1_000_123,
            expires_ms: 2_000_456,
            capability: Some(r#"{"a":["publish"]}"#.into()),
            client_id: Some("alice".into()),
        };
        let t = sign_token("s3cret", &claims);
        assert_eq!(jwt_key_name(&t).unwrap(), "app.k1");
        assert_eq!(verify_jwt(&t, "s3cret").unwrap(), claims);
        assert_eq!(
            verify_jwt(&t, "wrong").unwrap_err().code,
            ErrorCode::InvalidCredentials
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64URL.encode(br#"{"exp":99999999999,"x-ably-capability":"{\"*\":[\"*\"]}"}"#);
        parts[1] = &forged;
        assert!(verify_jwt(&parts.join("."), "s3cret").is_err());
    }

    #[test]
    fn expiry_at_the_end_of_time_signs_without_overflow() {
        // Found by the realtime_jwt fuzz target (re-signing verified claims).
        let claims = TokenClaims {
            key_name: "app.k1".into(),
            issued_ms: 0,
            expires_ms: i64::MAX,
            capability: None,
            client_id: None,
        };
        let t = sign_token("s", &claims);
        assert_eq!(verify_jwt(&t, "s").unwrap(), claims);
    }

    #[test]
    fn foreign_ably_jwt_with_second_claims() {
        // Built by hand the way an app backend would mint one.
        let h = B64URL.encode(br#"{"typ":"JWT","alg":"HS256","kid":"app.k1"}"#);
        let c = B64URL.encode(
            br#"{"iat":1700000000,"exp":1700003600,"x-ably-capability":"{\"*\":[\"subscribe\"]}","x-ably-clientId":"bob"}"#,
        );
        let input = format!("{h}.{c}");
        let sig = B64URL.encode(hmac(b"sec", input.as_bytes()));
        let claims = verify_jwt(&format!("{input}.{sig}"), "sec").unwrap();
        assert_eq!(claims.expires_ms, 1_700_003_600_000);
        assert_eq!(claims.client_id.as_deref(), Some("bob"));
        assert_eq!(claims.capability.as_deref(), Some(r#"{"*":["subscribe"]}"#));
    }

    #[test]
    fn non_jwt_and_other_algorithms_rejected() {
        assert_eq!(
            jwt_key_name("opaque-token").unwrap_err().code,
            ErrorCode::InvalidTokenFormat
        );
        let h = B64URL.encode(br#"{"alg":"none","kid":"a.b"}"#);
        assert_eq!(
            jwt_key_name(&format!("{h}.e30.")).unwrap_err().code,
            ErrorCode::InvalidJwt
        );
    }
}
