//! `tidewire token`: mint realtime credentials from the command line — a signed
//! TokenRequest (what an `authCallback`/`authUrl` endpoint returns), or a token (an
//! HS256 JWT the SDK accepts as `token`/`accessToken`), or full TokenDetails — for a
//! capability, clientId and TTL. Handy for scripts, tests and backends in languages
//! without an Ably SDK.

use clap::{Args, ValueEnum};
use rand::distributions::{Alphanumeric, DistString};
use tidewire_realtime::capability::Capability;
use tidewire_realtime::token::{sign_token, TokenClaims, TokenRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// A signed TokenRequest (JSON) for authCallback / authUrl.
    Request,
    /// A token string (HS256 JWT) for `token` / `accessToken`.
    Jwt,
    /// TokenDetails JSON: token, keyName, issued, expires, capability, clientId.
    Details,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// API key `appId.keyId:secret`. Default: TIDEWIRE_REALTIME_KEY, else the first
    /// `[[realtime.keys]]` of the config file, else the generated root key in the data
    /// dir.
    #[arg(long, env = "TIDEWIRE_REALTIME_KEY")]
    pub key: Option<String>,
    /// Capability JSON, e.g. '{"user:42":["subscribe","presence"]}'. Default: the key's.
    #[arg(long)]
    pub capability: Option<String>,
    /// The clientId the holder must use (`*` lets it choose any).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    #[arg(long, value_enum, default_value_t = TokenFormat::Jwt)]
    pub format: TokenFormat,
}

/// Builds the requested credential as the text to print.
pub fn mint(args: &TokenArgs, key: &str, now_ms: i64) -> anyhow::Result<String> {
    let (key_name, secret) = key
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("an API key looks like appId.keyId:secret"))?;
    if let Some(c) = &args.capability {
        Capability::parse(c).map_err(|e| anyhow::anyhow!("invalid capability: {}", e.message))?;
    }
    let ttl_ms = i64::try_from(args.ttl.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok(match args.format {
        TokenFormat::Request => {
            let mut req = TokenRequest {
                key_name: key_name.to_string(),
                ttl: Some(ttl_ms),
                capability: args.capability.clone(),
                client_id: args.client_id.clone(),
                timestamp: Some(now_ms),
                nonce: Some(Alphanumeric.sample_string(&mut rand::thread_rng(), 24)),
                mac: None,
            };
            req.mac = Some(req.compute_mac(secret));
            serde_json::to_string_pretty(&req)?
        }
        TokenFormat::Jwt | TokenFormat::Details => {
            let claims = TokenClaims {
                key_name: key_name.to_string(),
                issued_ms: now_ms,
                expires_ms: now_ms.saturating_add(ttl_ms),
                capability: args.capability.clone(),
                client_id: args.client_id.clone(),
            };
            let token = sign_token(secret, &claims);
            if args.format == TokenFormat::Jwt {
                token
            } else {
                serde_json::to_string_pretty(&serde_json::json!({
                    "token": token,
                    "keyName": key_name,
                    "issued": claims.issued_ms,
                    "expires": claims.expires_ms,
                    "capability": claims.capability,
                    "clientId": claims.client_id,
                }))?
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewire_realtime::auth::Keyring;
    use tidewire_realtime::{KeyConfig, RealtimeConfig};

    const KEY: &str = "app.k1:s3cret";

    fn args(format: TokenFormat) -> TokenArgs {
        TokenArgs {
            key: None,
            capability: Some(r#"{"user:42":["subscribe"]}"#.into()),
            client_id: Some("u42".into()),
            ttl: 60,
            format,
        }
    }

    fn keyring() -> Keyring {
        let config = RealtimeConfig {
            keys: vec![KeyConfig {
                key: KEY.into(),
                capability: None,
                revocable_tokens: false,
            }],
            ..Default::default()
        };
        Keyring::from_config(&config).unwrap()
    }

    #[test]
    fn minted_jwt_is_accepted_with_its_capability_and_client_id() {
        let now = tidewire_realtime::auth::now_ms();
        let jwt = mint(&args(TokenFormat::Jwt), KEY, now).unwrap();
        let p = keyring().principal_for_token(&jwt, now).expect("accepted");
        assert!(p.may_use_client_id(Some("u42")));
        assert!(!p.may_use_client_id(Some("someone-else")));
        // Expired once its TTL has passed.
        assert!(keyring().principal_for_token(&jwt, now + 61_000).is_err());
    }

    #[test]
    fn minted_token_request_carries_a_valid_mac() {
        let text = mint(&args(TokenFormat::Request), KEY, 1_700_000_000_000).unwrap();
        let req: TokenRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(req.key_name, "app.k1");
        assert!(req.verify_mac("s3cret"));
        assert!(!req.verify_mac("wrong"));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(mint(&args(TokenFormat::Jwt), "no-colon", 0).is_err());
        let mut a = args(TokenFormat::Jwt);
        a.capability = Some("not json".into());
        assert!(mint(&a, KEY, 0).is_err());
    }
}
