//! Tokens: HS256 JWT parsing and verification ([`tidewire_realtime::token`]) and
//! TokenRequest exchange ([`Keyring::issue_token`]), with a fixed clock.
//!
//! - [`JWT`] feeds token text. Invariants: parsing returns; a token that verifies
//!   with one secret fails with any other, and fails once any character of its claims
//!   or signature changes; verified claims re-signed verify to the same claims; a
//!   token the keyring accepts is unexpired, lives at most 24 h, was not issued more
//!   than 30 s ahead, verifies with its key's secret, and grants no more than its
//!   key's capability; the `Authorization: Bearer` door agrees with the direct one.
//! - [`TOKEN_REQUEST`] feeds TokenRequest JSON. Invariants: without a caller, only a
//!   request whose mac verifies with the key's secret, inside the clock window, is
//!   exchanged; exchanging the same request again is refused as a replay; the token
//!   minted is accepted by the keyring, lives at most 24 h, carries the requested
//!   clientId and grants no more than the key.

#![forbid(unsafe_code)]

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::SmallRng;
use rand::Rng;
use sha2::Sha256;
use tidewire_realtime::auth::{AuthMethod, Keyring};
use tidewire_realtime::config::{CapabilityConfig, KeyConfig, RealtimeConfig};
use tidewire_realtime::token::{self, TokenClaims, TokenRequest};
use tidewire_realtime::ErrorCode;

use crate::driver::Target;
use crate::finding::fnv1a;
use crate::targets::capability::{is_within, random_capability};

/// The fixed "now" of every check (2023-11-14), so runs repeat exactly.
pub const NOW_MS: i64 = 1_700_000_000_000;
/// TokenRequest timestamps must be this close to now (the keyring's window).
const CLOCK_WINDOW_MS: i64 = 120_000;
const DAY_MS: i64 = 86_400_000;
/// How far ahead of now a JWT's `iat` may be (the keyring's allowance).
const JWT_CLOCK_SKEW_MS: i64 = 30_000;

/// The keys of the test keyring: name, secret, capability (`None`: everything).
pub const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("app.full", "secret", None),
    ("app.sub", "s2", Some(r#"{"stream:*":["subscribe"]}"#)),
    (
        "app.wild",
        "s3",
        Some(r#"{"*:*":["subscribe","publish"],"a":["history"]}"#),
    ),
];

pub const JWT: Target = Target {
    name: "realtime_jwt",
    check: check_jwt,
    generate: generate_jwt,
    dictionary: &[
        b"eyJhbGciOiJIUzI1NiIsImtpZCI6ImFwcC5mdWxsIn0",
        b"eyJhbGciOiJub25lIn0",
        b"e30",
        b".",
        b"=",
        b"-",
        b"_",
    ],
    max_len: 2048,
    alloc_per_byte: 64,
    alloc_base: 64 * 1024,
};

pub const TOKEN_REQUEST: Target = Target {
    name: "realtime_token_request",
    check: check_token_request,
    generate: generate_token_request,
    dictionary: &[
        b"\"keyName\":\"app.full\"",
        b"\"keyName\":\"app.sub\"",
        b"\"ttl\":86400001",
        b"\"ttl\":-1",
        b"\"ttl\":\"60000\"",
        b"\"timestamp\":1700000000000",
        b"\"timestamp\":1700000000000.0",
        b"\"nonce\":\"0123456789abcdef\"",
        b"\"capability\":\"{\\\"*\\\":[\\\"*\\\"]}\"",
        b"\"clientId\":\"*\"",
        b"\"mac\":\"",
    ],
    max_len: 2048,
    alloc_per_byte: 256,
    alloc_base: 64 * 1024,
};

/// A fresh keyring with [`KEYS`] (fresh per input: its nonce memory is state).
pub fn keyring() -> Keyring {
    let config = RealtimeConfig {
        keys: KEYS
            .iter()
            .map(|(name, secret, cap)| KeyConfig {
                key: format!("{name}:{secret}"),
                capability: cap.map(|c| CapabilityConfig::Text(c.to_owned())),
                revocable_tokens: false,
            })
            .collect(),
        ..Default::default()
    };
    // Started well before NOW_MS, so the clock window alone decides.
    Keyring::from_config_started_at(&config, NOW_MS - DAY_MS)
        .unwrap_or_else(|e| panic!("test keyring: {e}"))
}

fn check_jwt(input: &[u8]) -> Result<(), String> {
    let Ok(token) = std::str::from_utf8(input) else {
        return Ok(());
    };
    let _ = token::jwt_key_name(token);
    for (_, secret, _) in KEYS {
        if let Ok(claims) = token::verify_jwt(token, secret) {
            verified_token_holds(token, secret, &claims)?;
        }
    }
    let ring = keyring();
    if let Ok(p) = ring.principal_for_token(token, NOW_MS) {
        let key = ring
            .key(&p.key_name)
            .ok_or_else(|| format!("accepted for unknown key {}", p.key_name))?;
        let claims = token::verify_jwt(token, &key.secret)
            .map_err(|e| format!("accepted, yet does not verify with its key's secret: {e:?}"))?;
        if p.method != AuthMethod::Token || !matches!(p.expires_ms, Some(e) if e > NOW_MS) {
            return Err(format!("accepted expired or untimed: {:?}", p.expires_ms));
        }
        if claims.expires_ms.saturating_sub(claims.issued_ms) > DAY_MS {
            return Err(format!("accepted a lifetime over 24 h: {claims:?}"));
        }
        if claims.issued_ms > NOW_MS + JWT_CLOCK_SKEW_MS {
            return Err(format!("accepted a token issued in the future: {claims:?}"));
        }
        is_within(&p.capability, &[&key.capability])?;
        let header = ring
            .principal_for_header(&format!("Bearer {}", B64.encode(token)), NOW_MS)
            .map_err(|e| format!("Bearer door refuses what the direct one accepts: {e:?}"))?;
        if header.key_name != p.key_name || header.expires_ms != p.expires_ms {
            return Err("Bearer door disagrees with the direct one".into());
        }
    }
    Ok(())
}

fn verified_token_holds(token: &str, secret: &str, claims: &TokenClaims) -> Result<(), String> {
    if token::verify_jwt(token, "not-the-secret").is_ok() {
        return Err("verifies with a wrong secret".into());
    }
    if token::jwt_key_name(token).as_ref() != Ok(&claims.key_name) {
        return Err("verified claims name another key than the header".into());
    }
    // Change one character of the claims and one of the signature, at places chosen
    // from the token: both must break verification.
    let parts: Vec<&str> = token.split('.').collect();
    let h = fnv1a(token.as_bytes());
    for part in [1, 2] {
        let text = parts[part];
        if text.is_empty() {
            continue;
        }
        let at = (h >> (part * 16)) as usize % text.len();
        let Some(old) = text.get(at..).and_then(|rest| rest.chars().next()) else {
            continue;
        };
        if old == '=' {
            continue;
        }
        let new = if old == 'A' { 'B' } else { 'A' };
        let mut tampered: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        tampered[part].replace_range(at..at + old.len_utf8(), &new.to_string());
        let tampered = tampered.join(".");
        if token::verify_jwt(&tampered, secret).is_ok() {
            return Err(format!(
                "still verifies after changing part {part}: {tampered}"
            ));
        }
    }
    let again = token::sign_token(secret, claims);
    match token::verify_jwt(&again, secret) {
        Ok(c) if c == *claims => Ok(()),
        other => Err(format!("re-signed claims {claims:?} verify as {other:?}")),
    }
}

fn hmac_b64url(secret: &str, input: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(input.as_bytes());
    B64URL.encode(m.finalize().into_bytes())
}

/// Signed tokens: Tidewire-minted ones, and foreign-style ones with odd claims
/// (10-year lifetimes, future `iat`, numbers as text or floats, capability objects),
/// mostly signed with the right secret so the checks past the signature are reached.
fn generate_jwt(rng: &mut SmallRng) -> Vec<u8> {
    let (name, secret, _) = KEYS[rng.gen_range(0..KEYS.len())];
    let secret = if rng.gen_bool(0.9) { secret } else { "wrong" };
    if rng.gen_bool(0.3) {
        let issued_ms = NOW_MS + rng.gen_range(-DAY_MS..DAY_MS);
        let claims = TokenClaims {
            key_name: name.to_owned(),
            issued_ms,
            expires_ms: issued_ms.saturating_add(rng.gen_range(-DAY_MS..10 * 365 * DAY_MS)),
            capability: rng.gen_bool(0.6).then(|| random_capability(rng)),
            client_id: rng.gen_bool(0.3).then(|| "alice".to_owned()),
        };
        return token::sign_token(secret, &claims).into_bytes();
    }
    const TIMES: &[&str] = &[
        "1700000000",
        "1700003600",
        "2015360000",
        "1600000000",
        "1700000000.0",
        "\"1700003600\"",
        "9223372036854775807",
        "-9223372036854775808",
        "1e300",
        "null",
        "0",
    ];
    const MS_TIMES: &[&str] = &[
        "1700000000000",
        "1700003600000",
        "2015360000000",
        "9223372036854775807",
        "9223372036854775000",
        "-1",
    ];
    let mut claims = Vec::new();
    for (field, values) in [("iat", TIMES), ("exp", TIMES)] {
        if rng.gen_bool(0.8) {
            claims.push(format!(
                "\"{field}\":{}",
                values[rng.gen_range(0..values.len())]
            ));
        }
    }
    for field in ["x-tidewire-issued", "x-tidewire-expires"] {
        if rng.gen_bool(0.3) {
            let v = MS_TIMES[rng.gen_range(0..MS_TIMES.len())];
            claims.push(format!("\"{field}\":{v}"));
        }
    }
    match rng.gen_range(0..3) {
        0 => claims.push(format!(
            "\"x-ably-capability\":{}",
            serde_json::to_string(&random_capability(rng)).unwrap_or_default()
        )),
        1 => claims.push(format!("\"x-ably-capability\":{}", random_capability(rng))),
        _ => {}
    }
    if rng.gen_bool(0.3) {
        claims.push("\"x-ably-clientId\":\"bob\"".into());
    }
    let header = match rng.gen_range(0..6) {
        0 => format!("{{\"alg\":\"none\",\"kid\":\"{name}\"}}"),
        1 => "{\"alg\":\"HS256\"}".to_owned(),
        _ => format!("{{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"{name}\"}}"),
    };
    let input = format!(
        "{}.{}",
        B64URL.encode(header),
        B64URL.encode(format!("{{{}}}", claims.join(",")))
    );
    let sig = hmac_b64url(secret, &input);
    format!("{input}.{sig}").into_bytes()
}

fn check_token_request(input: &[u8]) -> Result<(), String> {
    let Ok(req) = tidewire_realtime::codec::from_json::<TokenRequest>(input) else {
        return Ok(());
    };
    for (name, secret, _) in KEYS {
        let ring = keyring();
        if let Ok(details) = ring.issue_token(name, &req, None, NOW_MS) {
            if !req.verify_mac(secret) {
                return Err(format!("exchanged for {name} without a valid mac"));
            }
            let ts = req.timestamp.unwrap_or(i64::MIN);
            if ts.abs_diff(NOW_MS) > CLOCK_WINDOW_MS as u64 {
                return Err(format!(
                    "exchanged with a timestamp {ts} outside the window"
                ));
            }
            match ring.issue_token(name, &req, None, NOW_MS) {
                Err(e) if e.code == ErrorCode::NonceReplayed => {}
                other => return Err(format!("replay answered {other:?}")),
            }
            minted_token_holds(&ring, name, &req, &details.token)?;
        }
        // The unsigned form, exchanged by a caller holding the key.
        let ring = keyring();
        let caller = ring
            .principal_for_key(&format!("{name}:{secret}"))
            .map_err(|e| format!("key auth failed: {e:?}"))?;
        let unsigned = TokenRequest {
            mac: None,
            ..req.clone()
        };
        if let Ok(details) = ring.issue_token(name, &unsigned, Some(&caller), NOW_MS) {
            minted_token_holds(&ring, name, &unsigned, &details.token)?;
        }
    }
    Ok(())
}

fn minted_token_holds(
    ring: &Keyring,
    name: &str,
    req: &TokenRequest,
    minted: &str,
) -> Result<(), String> {
    let p = ring
        .principal_for_token(minted, NOW_MS)
        .map_err(|e| format!("the keyring refuses its own token: {e:?}"))?;
    let key = ring.key(name).ok_or("key vanished")?;
    let lifetime = p.expires_ms.unwrap_or(i64::MAX) - NOW_MS;
    if lifetime <= 0 || lifetime > DAY_MS {
        return Err(format!("minted a token living {lifetime} ms"));
    }
    let wanted = req.client_id.clone().filter(|c| !c.is_empty());
    if p.client_id != wanted {
        return Err(format!("clientId {:?}, requested {wanted:?}", p.client_id));
    }
    is_within(&p.capability, &[&key.capability])
}

/// TokenRequests as a client library builds them, signed with the right secret most
/// of the time, with ttl, timestamp, nonce and capability around their limits.
fn generate_token_request(rng: &mut SmallRng) -> Vec<u8> {
    let (name, secret, _) = KEYS[rng.gen_range(0..KEYS.len())];
    let mut req = TokenRequest {
        key_name: name.to_owned(),
        ttl: match rng.gen_range(0..6) {
            0 => None,
            1 => Some(DAY_MS + 1),
            2 => Some(10 * 365 * DAY_MS),
            3 => Some(rng.gen_range(-5..5)),
            _ => Some(rng.gen_range(1..DAY_MS)),
        },
        capability: match rng.gen_range(0..4) {
            0 => None,
            1 => Some("{\"*\":[\"*\"]}".to_owned()),
            _ => Some(random_capability(rng)),
        },
        client_id: rng.gen_bool(0.5).then(|| "alice".to_owned()),
        timestamp: Some(NOW_MS + rng.gen_range(-200_000..200_000)),
        nonce: Some("n".repeat(rng.gen_range(0..24))),
        mac: None,
    };
    req.mac = Some(req.compute_mac(if rng.gen_bool(0.85) { secret } else { "wrong" }));
    serde_json::to_vec(&serde_json::json!({
        "keyName": req.key_name,
        "ttl": req.ttl,
        "capability": req.capability,
        "clientId": req.client_id,
        "timestamp": req.timestamp,
        "nonce": req.nonce,
        "mac": req.mac,
    }))
    .unwrap_or_default()
}
