//! `Upstash-Signature`: a JWT (HS256) on every delivery, signed with the current
//! signing key, that `@upstash/qstash`'s `Receiver.verify` checks against the
//! current key and then the next one. Its claims bind the token to the
//! destination (`sub`) and to the body (`body`: SHA-256, base64url), so a captured
//! signature cannot be replayed with another body or against another endpoint.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::QstashConfig;

/// Name of the file in the data dir that keeps generated signing keys.
pub const KEYS_FILE: &str = "qstash-signing-keys";

/// How long a signature stays valid after it is made.
const VALIDITY_SECS: u64 = 300;

/// The two keys a receiver accepts; rotating moves `next` to `current`.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub current: String,
    pub next: String,
    /// Where generated keys are kept; `None` when both are configured.
    pub file: Option<PathBuf>,
}

impl SigningKeys {
    /// The configured keys, or else those kept in (or now created in) the data dir.
    pub fn resolve(config: &QstashConfig, data_dir: &Path) -> anyhow::Result<SigningKeys> {
        if !config.current_signing_key.is_empty() && !config.next_signing_key.is_empty() {
            return Ok(SigningKeys {
                current: config.current_signing_key.clone(),
                next: config.next_signing_key.clone(),
                file: None,
            });
        }
        let path = data_dir.join(KEYS_FILE);
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines = kept.lines().map(str::trim).filter(|l| !l.is_empty());
        let (current, next) = match (lines.next(), lines.next()) {
            (Some(c), Some(n)) => (c.to_string(), n.to_string()),
            _ => {
                let (c, n) = (generate_key(), generate_key());
                crate::secrets::write_private(&path, &format!("{c}\n{n}\n"))?;
                (c, n)
            }
        };
        // A key set in the file wins over the kept one of the same role.
        let pick = |configured: &str, kept: String| {
            if configured.is_empty() {
                kept
            } else {
                configured.to_string()
            }
        };
        Ok(SigningKeys {
            current: pick(&config.current_signing_key, current),
            next: pick(&config.next_signing_key, next),
            file: Some(path),
        })
    }
}

/// `sig_` and 28 random letters and digits from the OS, the shape of QStash's
/// keys.
fn generate_key() -> String {
    super::message::random_id(&mut rand::rngs::OsRng, "sig_", 28)
}

/// The signature of a delivery of `body` to `url`, made at `now_secs`.
pub fn sign(key: &str, url: &str, body: &[u8], now_secs: u64, jwt_id: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": "Upstash",
        "sub": url,
        "exp": now_secs + VALIDITY_SECS,
        "nbf": now_secs,
        "iat": now_secs,
        "jti": jwt_id,
        "body": URL_SAFE.encode(Sha256::digest(body)),
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a token the way a JWT library does: the HMAC over the first two
    /// parts, then the claims.
    fn verify(key: &str, token: &str) -> serde_json::Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .expect("signature");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
    }

    #[test]
    fn signature_binds_destination_body_and_time() {
        let token = sign("sig_k", "https://a.example/x", b"{\"a\":1}", 1_000, "jwt_1");
        let claims = verify("sig_k", &token);
        assert_eq!(claims["iss"], "Upstash");
        assert_eq!(claims["sub"], "https://a.example/x");
        assert_eq!(claims["nbf"], 1_000);
        assert_eq!(claims["exp"], 1_300);
        // SHA-256 of {"a":1}, base64url with its padding.
        assert_eq!(
            claims["body"],
            URL_SAFE.encode(Sha256::digest(b"{\"a\":1}")).as_str()
        );
        let parts: Vec<&str> = token.split('.').collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"sig_other").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert!(mac
            .verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .is_err());
    }

    #[test]
    fn generated_keys_are_kept_and_configured_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKeys::resolve(&QstashConfig::default(), dir.path()).unwrap();
        let b = SigningKeys::resolve(&QstashConfig::default(), dir.path()).unwrap();
        assert_eq!((&a.current, &a.next), (&b.current, &b.next));
        assert!(a.current.starts_with("sig_") && a.current.len() == 32);
        assert_ne!(a.current, a.next);
        let configured = QstashConfig {
            current_signing_key: "sig_mine".into(),
            next_signing_key: "sig_next".into(),
            ..Default::default()
        };
        let c = SigningKeys::resolve(&configured, dir.path()).unwrap();
        assert_eq!(
            (c.current.as_str(), c.next.as_str()),
            ("sig_mine", "sig_next")
        );
        assert!(c.file.is_none());
    }
}
