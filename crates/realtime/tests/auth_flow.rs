//! Token issue, token auth on WS and REST, expiry and in-band renewal.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use tidewire_realtime::auth::now_ms;
use tidewire_realtime::token::TokenRequest;

fn signed_request(
    key_name: &str,
    secret: &str,
    ttl: i64,
    capability: Option<&str>,
    client_id: Option<&str>,
) -> TokenRequest {
    let mut tr = TokenRequest {
        key_name: key_name.into(),
        ttl: Some(ttl),
        capability: capability.map(str::to_owned),
        client_id: client_id.map(str::to_owned),
        timestamp: Some(now_ms()),
        nonce: Some(format!("{:032x}", rand_nonce())),
        mac: None,
    };
    tr.mac = Some(tr.compute_mac(secret));
    tr
}

fn rand_nonce() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    (now_ms() as u128) << 20 | u128::from(N.fetch_add(1, Ordering::Relaxed))
}

async fn request_token(s: &Server, tr: &TokenRequest) -> reqwest::Response {
    http()
        .post(s.http(&format!("/keys/{}/requestToken", tr.key_name)))
        .json(tr)
        .send()
        .await
        .expect("request")
}

async fn token(s: &Server, ttl: i64, capability: Option<&str>, client_id: Option<&str>) -> Value {
    let tr = signed_request("test.full", "fullsecret", ttl, capability, client_id);
    let r = request_token(s, &tr).await;
    assert_eq!(r.status(), 200);
    r.json().await.expect("token details")
}

#[tokio::test]
async fn token_request_flow_and_refusals() {
    let s = start(base_config()).await;
    let td = token(
        &s,
        60_000,
        Some(r#"{"chat":["publish","subscribe"]}"#),
        Some("alice"),
    )
    .await;
    assert_eq!(td["keyName"], "test.full");
    assert_eq!(td["clientId"], "alice");
    assert_eq!(td["capability"], r#"{"chat":["publish","subscribe"]}"#);
    assert_eq!(
        td["expires"].as_i64().unwrap() - td["issued"].as_i64().unwrap(),
        60_000
    );
    let t = td["token"].as_str().unwrap();

    // The token works on WS, bound to its clientId and capability.
    let (mut c, m) = Client::connected(&s, &format!("access_token={t}")).await;
    assert_eq!(m["connectionDetails"]["clientId"], "alice");
    c.attach("chat").await;
    c.send(json!({"action": 10, "channel": "other"})).await;
    assert_eq!(c.expect(9).await["error"]["code"], 40160);
    c.send(json!({"action": 15, "channel": "chat", "msgSerial": 0,
        "messages": [{"data": "as bob", "clientId": "bob"}]}))
        .await;
    assert_eq!(c.expect(2).await["error"]["code"], 40012);
    c.send(json!({"action": 15, "channel": "chat", "msgSerial": 1, "messages": [{"data": "me"}]}))
        .await;
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["clientId"], "alice");

    // ...and a wrong clientId at connect time is refused.
    let mut bad = Client::connect(&s, &format!("accessToken={t}&clientId=mallory")).await;
    assert_eq!(bad.expect(9).await["error"]["code"], 40102);

    // Replayed nonce, stale timestamp, bad mac.
    let tr = signed_request("test.full", "fullsecret", 1000, None, None);
    assert_eq!(request_token(&s, &tr).await.status(), 200);
    let r = request_token(&s, &tr).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40105);
    let mut old = signed_request("test.full", "fullsecret", 1000, None, None);
    old.timestamp = Some(now_ms() - 10 * 60_000);
    old.mac = Some(old.compute_mac("fullsecret"));
    let body: Value = request_token(&s, &old).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40104);
    let forged = signed_request("test.full", "not-the-secret", 1000, None, None);
    let body: Value = request_token(&s, &forged).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40101);
    // A capability the key cannot grant.
    let sub = signed_request(
        "test.sub",
        "subsecret",
        1000,
        Some(r#"{"private":["publish"]}"#),
        None,
    );
    let body: Value = request_token(&s, &sub).await.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40160);
}

#[tokio::test]
async fn rest_bearer_token_is_base64_encoded() {
    let s = start(base_config()).await;
    let td = token(&s, 60_000, Some(r#"{"chat":["publish"]}"#), None).await;
    let t = td["token"].as_str().unwrap();
    let r = http()
        .post(s.http("/channels/chat/messages"))
        .header("authorization", format!("Bearer {}", B64.encode(t)))
        .json(&json!({"name": "n", "data": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http()
        .get(s.http("/channels/chat/messages"))
        .header("authorization", format!("Bearer {}", B64.encode(t)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40160);
}

#[tokio::test]
async fn expired_token_is_refused_40142_at_connect() {
    let s = start(base_config()).await;
    let td = token(&s, 1, None, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut c = Client::connect(
        &s,
        &format!("access_token={}", td["token"].as_str().unwrap()),
    )
    .await;
    let e = c.expect(9).await;
    assert_eq!(e["error"]["code"], 40142);
    assert!(c.closes().await);
}

#[tokio::test]
async fn token_expiry_without_renewal_disconnects_40142() {
    let s = start(base_config()).await;
    // (Long enough for CONNECTED to come first on a loaded machine.)
    let td = token(&s, 3000, None, None).await;
    let (mut c, _) = Client::connected(
        &s,
        &format!("access_token={}", td["token"].as_str().unwrap()),
    )
    .await;
    // At expiry, with no new token sent (AUTH), the server disconnects with the
    // token error the SDK renews on (it asks for no token first, as Ably: an SDK
    // without a way to renew would fail the connection on such a request).
    let d = c.expect(6).await;
    assert_eq!(d["error"]["code"], 40142);
    assert!(c.closes().await);
}

#[tokio::test]
async fn in_band_auth_renewal_keeps_connection_and_channels() {
    let s = start(base_config()).await;
    // (Long enough to connect, attach and renew first on a loaded machine.)
    let td = token(&s, 4000, None, Some("carol")).await;
    let (mut c, first) = Client::connected(
        &s,
        &format!(
            "access_token={}&format=msgpack",
            td["token"].as_str().unwrap()
        ),
    )
    .await;
    c.attach("renew").await;
    let fresh = token(&s, 60_000, None, Some("carol")).await;
    c.send(json!({"action": 17, "auth": {"accessToken": fresh["token"]}}))
        .await;
    let again = c.expect(4).await;
    assert_eq!(again["connectionId"], first["connectionId"]);
    assert_eq!(again["connectionDetails"]["clientId"], "carol");
    // Well past the first token's expiry, the channel still works.
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    c.send(
        json!({"action": 15, "channel": "renew", "msgSerial": 0, "messages": [{"data": "alive"}]}),
    )
    .await;
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["data"], "alive");

    // A token for a different identity is refused.
    let other = token(&s, 60_000, None, Some("dave")).await;
    c.send(json!({"action": 17, "auth": {"accessToken": other["token"]}}))
        .await;
    assert_eq!(c.expect(9).await["error"]["code"], 40102);
}

#[tokio::test]
async fn hand_minted_ably_jwt_is_accepted() {
    use hmac::{Hmac, Mac};
    let s = start(base_config()).await;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64url.encode(br#"{"typ":"JWT","alg":"HS256","kid":"test.full"}"#);
    let now = now_ms() / 1000;
    let claims = b64url.encode(
        json!({"iat": now, "exp": now + 600, "x-ably-capability": "{\"jwt:*\":[\"*\"]}", "x-ably-clientId": "jwt-user"})
            .to_string(),
    );
    let input = format!("{header}.{claims}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"fullsecret").unwrap();
    mac.update(input.as_bytes());
    let jwt = format!("{input}.{}", b64url.encode(mac.finalize().into_bytes()));
    let (mut c, m) = Client::connected(&s, &format!("access_token={jwt}")).await;
    assert_eq!(m["connectionDetails"]["clientId"], "jwt-user");
    c.attach("jwt:room").await;
    c.send(json!({"action": 10, "channel": "elsewhere"})).await;
    assert_eq!(c.expect(9).await["error"]["code"], 40160);
}

/// An HS256 JWT for `test.full` with these `iat`/`exp` (seconds).
fn jwt_with_times(iat: i64, exp: i64) -> String {
    use hmac::{Hmac, Mac};
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64url.encode(br#"{"typ":"JWT","alg":"HS256","kid":"test.full"}"#);
    let claims = b64url.encode(json!({"iat": iat, "exp": exp}).to_string());
    let input = format!("{header}.{claims}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"fullsecret").unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn jwts_beyond_ablys_lifetime_or_issued_in_the_future_are_refused() {
    let s = start(base_config()).await;
    let now = now_ms() / 1000;
    let day = 86_400;
    let cases = [
        // Ten years of life: Ably tokens live 24 h at most.
        (jwt_with_times(now, now + 10 * 365 * day), 40003, 400),
        (jwt_with_times(now - 60, now + day), 40003, 400),
        // Issued an hour from now: beyond any clock skew.
        (jwt_with_times(now + 3600, now + 7200), 40104, 401),
    ];
    for (jwt, code, status) in cases {
        let mut c = Client::connect(&s, &format!("access_token={jwt}")).await;
        let e = c.expect(9).await;
        assert_eq!(e["error"]["code"], code, "{e}");
        assert_eq!(e["error"]["statusCode"], status, "{e}");
        let r = http()
            .get(s.http("/channels/x/messages"))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
    }
    // Within the limits (a full day, a few seconds of skew) is fine.
    for jwt in [
        jwt_with_times(now, now + day),
        jwt_with_times(now + 5, now + 600),
    ] {
        Client::connected(&s, &format!("access_token={jwt}")).await;
    }
}

/// A re-authentication that widens the capability widens the attachments too:
/// the modes asked for at attach are granted again against the new capability.
#[tokio::test]
async fn in_band_auth_capability_upgrade_adds_publish() {
    let s = start(base_config()).await;
    let narrow = token(&s, 60_000, Some(r#"{"up":["subscribe"]}"#), Some("erin")).await;
    let (mut c, _) = Client::connected(
        &s,
        &format!("access_token={}", narrow["token"].as_str().unwrap()),
    )
    .await;
    c.attach("up").await;
    let publish = |serial: u64| json!({"action": 15, "channel": "up", "msgSerial": serial, "messages": [{"data": "x"}]});
    c.send(publish(0)).await;
    assert_eq!(c.expect(2).await["error"]["code"], 40160);
    let wide = token(
        &s,
        60_000,
        Some(r#"{"up":["subscribe","publish"]}"#),
        Some("erin"),
    )
    .await;
    c.send(json!({"action": 17, "auth": {"accessToken": wide["token"]}}))
        .await;
    c.expect(4).await;
    c.send(publish(1)).await;
    assert_eq!(c.expect(1).await["msgSerial"], 1);
}

/// A connection on a wildcard-clientId token without a clientId of its own is
/// told `*` in CONNECTED (the SDK's auth.clientId becomes `*`).
#[tokio::test]
async fn wildcard_token_connection_reports_star_client_id() {
    let s = start(base_config()).await;
    let td = token(&s, 60_000, None, Some("*")).await;
    let (_c, connected) = Client::connected(
        &s,
        &format!("access_token={}", td["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(connected["connectionDetails"]["clientId"], "*");
}

/// `POST /keys/{name}/revokeTokens` on a key with revocable tokens: the targets'
/// tokens are refused from then on (40141), live connections using them are
/// disconnected with 40141, other tokens carry on; invalid targets fail alone.
#[tokio::test]
async fn revoked_tokens_are_refused_and_their_connections_dropped() {
    let mut config = base_config();
    config.keys[0].revocable_tokens = true;
    let s = start(config).await;
    let revoked = token(&s, 60_000, None, Some("mallory")).await;
    let kept = token(&s, 60_000, None, Some("trent")).await;
    let (mut victim, _) = Client::connected(
        &s,
        &format!("access_token={}", revoked["token"].as_str().unwrap()),
    )
    .await;
    let (mut other, _) = Client::connected(
        &s,
        &format!("access_token={}", kept["token"].as_str().unwrap()),
    )
    .await;
    // Issued-before is strict: let the clock pass the tokens' issue time.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let revoke = |auth: String| {
        http()
            .post(s.http("/keys/test.full/revokeTokens"))
            .header("authorization", auth)
            .json(&json!({"targets": ["clientId:mallory", "invalidType:abc"]}))
            .send()
    };
    assert_eq!(revoke(basic(SUB_KEY)).await.unwrap().status(), 401);
    let r = revoke(basic(FULL_KEY)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["successCount"], 1);
    assert_eq!(body["failureCount"], 1);
    assert_eq!(body["results"][0]["target"], "clientId:mallory");
    assert!(body["results"][0]["issuedBefore"].is_i64());
    assert_eq!(body["results"][1]["error"]["statusCode"], 400);

    let gone = victim.expect(6).await;
    assert_eq!(gone["error"]["code"], 40141);
    assert!(victim.closes().await);
    other.attach("still-here").await;
    let r = http()
        .get(s.http("/channels/x/messages"))
        .header(
            "authorization",
            format!("Bearer {}", revoked["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40141);
    // A key without revocable tokens cannot revoke.
    let r = http()
        .post(s.http("/keys/test.sub/revokeTokens"))
        .header("authorization", basic(SUB_KEY))
        .json(&json!({"targets": ["clientId:x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
