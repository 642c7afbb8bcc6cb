//! A message as published: where it goes, what it carries, how it is retried.
//! Parsed from a publish request's headers (`Upstash-*`), kept as JSON in the
//! keyspace, and shown by `GET /v2/messages/{id}` in QStash's shape.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::retry_delay::RetryDelay;
use crate::config::QstashConfig;

/// Longest delay or not-before distance accepted (QStash's limit is a year).
const MAX_DELAY_MS: u64 = 365 * 24 * 3_600_000;

/// One message waiting for (or being retried to) its destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    pub url: String,
    pub method: String,
    /// Headers delivered with the message (`Upstash-Forward-*` unprefixed, and
    /// `Content-Type`), by name as the publisher wrote it.
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    pub max_retries: u32,
    /// Delivery attempts that failed so far.
    pub retried: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    /// Unix ms before which it is not delivered.
    pub not_before: u64,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_callback: Option<String>,
    pub timeout_secs: u64,
    pub caller_ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// For a callback: the message whose delivery it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_message_id: Option<String>,
    /// For a schedule's firing: the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// Published to a URL group: the group, and the endpoint's name in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    /// Enqueued: the queue it waits in for its turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    /// `Upstash-Flow-Control-Key` and `-Value`: the key it waits under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<FlowControl>,
}

/// A flow-control key and the limits a publish gave it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlowControl {
    pub key: String,
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    pub period_secs: u64,
}

/// Longest flow-control key accepted.
const MAX_FLOW_KEY: usize = 512;

impl FlowControl {
    /// From `Upstash-Flow-Control-Key` and `-Value` (`parallelism=3, rate=10,
    /// period=1m`); at least one limit is needed.
    fn parse(key: &str, value: Option<&str>) -> Result<FlowControl, Refused> {
        if key.len() > MAX_FLOW_KEY {
            return Err(Refused::bad(format!(
                "Upstash-Flow-Control-Key longer than {MAX_FLOW_KEY} bytes"
            )));
        }
        let mut f = FlowControl {
            key: key.to_string(),
            parallelism: None,
            rate: None,
            period_secs: 1,
        };
        let limit = |v: &str| match v.trim().parse::<u32>() {
            Ok(n) if (1..=super::lanes::MAX_PARALLELISM).contains(&n) => Ok(n),
            _ => Err(Refused::bad(format!(
                "invalid Upstash-Flow-Control-Value: {v} (1 to {})",
                super::lanes::MAX_PARALLELISM
            ))),
        };
        for part in value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Refused::bad(format!("invalid Upstash-Flow-Control-Value: {part}"))
            })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "parallelism" => f.parallelism = Some(limit(v)?),
                "rate" | "ratepersecond" => f.rate = Some(limit(v)?),
                "period" => {
                    let ms = parse_duration_ms(v, "Upstash-Flow-Control-Value period")?;
                    f.period_secs = ms.div_ceil(1000).max(1);
                }
                _ => {
                    return Err(Refused::bad(format!(
                        "invalid Upstash-Flow-Control-Value: {part}"
                    )))
                }
            }
        }
        if f.parallelism.is_none() && f.rate.is_none() {
            return Err(Refused::bad(
                "Upstash-Flow-Control-Value needs parallelism or rate",
            ));
        }
        Ok(f)
    }
}

/// A request QStash refuses: its status and message.
#[derive(Debug, PartialEq)]
pub struct Refused(pub u16, pub String);

impl Refused {
    pub fn bad(msg: impl Into<String>) -> Refused {
        Refused(400, msg.into())
    }
}

/// What a publish asked for besides the message itself.
pub struct Publish {
    pub message: Message,
    /// The deduplication id (given, or derived from the content).
    pub dedup: Option<String>,
}

impl Message {
    /// The message a publish to `url` with these headers and body describes.
    pub fn from_publish(
        url: &str,
        headers: &HeaderMap,
        body: Vec<u8>,
        config: &QstashConfig,
        now_ms: u64,
        caller_ip: &str,
    ) -> Result<Publish, Refused> {
        let url = destination(url)?;
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let method = get("upstash-method").unwrap_or("POST").to_ascii_uppercase();
        if !matches!(
            method.as_str(),
            "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS"
        ) {
            return Err(Refused::bad(format!("invalid Upstash-Method: {method}")));
        }
        let max_retries = match get("upstash-retries") {
            None => config.retries.min(config.max_retries),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n <= config.max_retries => n,
                Ok(_) => {
                    return Err(Refused::bad(format!(
                        "Upstash-Retries cannot exceed {}",
                        config.max_retries
                    )))
                }
                Err(_) => return Err(Refused::bad(format!("invalid Upstash-Retries: {v}"))),
            },
        };
        let retry_delay = match get("upstash-retry-delay") {
            Some(expr) => {
                RetryDelay::parse(expr).map_err(Refused::bad)?;
                Some(expr.to_string())
            }
            None => None,
        };
        let not_before = match (get("upstash-not-before"), get("upstash-delay")) {
            (Some(nb), _) => {
                let secs: u64 = nb
                    .parse()
                    .map_err(|_| Refused::bad(format!("invalid Upstash-Not-Before: {nb}")))?;
                secs.saturating_mul(1000)
            }
            (None, Some(d)) => now_ms + parse_duration_ms(d, "Upstash-Delay")?,
            (None, None) => now_ms,
        };
        if not_before > now_ms + MAX_DELAY_MS {
            return Err(Refused::bad("delay cannot exceed one year"));
        }
        let timeout_secs = match get("upstash-timeout") {
            Some(t) => {
                let ms = parse_duration_ms(t, "Upstash-Timeout")?;
                (ms.div_ceil(1000)).clamp(1, config.timeout_secs)
            }
            None => config.timeout_secs,
        };
        let callback = get("upstash-callback").map(destination).transpose()?;
        let failure_callback = get("upstash-failure-callback")
            .map(destination)
            .transpose()?;
        let mut header: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let Ok(value) = value.to_str() else { continue };
            let n = name.as_str();
            let delivered = if n == "content-type" {
                "Content-Type".to_string()
            } else if let Some(rest) = n.strip_prefix("upstash-forward-") {
                canonical(rest)
            } else {
                continue;
            };
            if !delivered.is_empty() {
                header.entry(delivered).or_default().push(value.to_string());
            }
        }
        let flow_control = match get("upstash-flow-control-key") {
            Some(key) => Some(FlowControl::parse(key, get("upstash-flow-control-value"))?),
            None => None,
        };
        let labels = get("upstash-label")
            .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let dedup = match get("upstash-deduplication-id") {
            Some(id) => Some(format!("id:{id}")),
            None if get("upstash-content-based-deduplication") == Some("true") => {
                let mut h = Sha256::new();
                h.update(url.as_bytes());
                h.update([0]);
                h.update(method.as_bytes());
                for (k, vs) in &header {
                    for v in vs {
                        h.update([0]);
                        h.update(k.as_bytes());
                        h.update(b":");
                        h.update(v.as_bytes());
                    }
                }
                h.update([0]);
                h.update(&body);
                Some(format!(
                    "content:{}",
                    tidewire_store::acl::hex(&h.finalize())
                ))
            }
            None => None,
        };
        Ok(Publish {
            message: Message {
                message_id: new_id("msg_"),
                url,
                method,
                header,
                body,
                max_retries,
                retried: 0,
                retry_delay,
                not_before,
                created_at: now_ms,
                callback,
                failure_callback,
                timeout_secs,
                caller_ip: caller_ip.to_string(),
                labels,
                source_message_id: None,
                schedule_id: None,
                url_group: None,
                endpoint_name: None,
                queue_name: None,
                flow_control,
            },
            dedup,
        })
    }

    /// Milliseconds to wait before the next attempt, after `self.retried` failures
    /// (the message's expression, or QStash's `min(1 day, e^(2.5·n))` seconds).
    pub fn retry_delay_ms(&self) -> u64 {
        if let Some(d) = self
            .retry_delay
            .as_deref()
            .and_then(|e| RetryDelay::parse(e).ok())
        {
            return d.millis(self.retried.saturating_sub(1));
        }
        let secs = (2.5 * self.retried as f64).exp().min(86_400.0);
        (secs * 1000.0) as u64
    }

    /// QStash's view of the message (`GET /v2/messages/{id}`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "messageId": self.message_id,
            "url": self.url,
            "method": self.method,
            "header": self.header,
            "maxRetries": self.max_retries,
            "notBefore": self.not_before,
            "createdAt": self.created_at,
            "callerIP": self.caller_ip,
        });
        self.put_body(&mut v);
        self.put_labels(&mut v);
        if let Some(e) = &self.retry_delay {
            v["retryDelayExpression"] = json!(e);
        }
        if let Some(c) = &self.callback {
            v["callback"] = json!(c);
        }
        if let Some(c) = &self.failure_callback {
            v["failureCallback"] = json!(c);
        }
        if let Some(s) = &self.schedule_id {
            v["scheduleId"] = json!(s);
        }
        if let Some(g) = &self.url_group {
            v["topicName"] = json!(g);
        }
        if let Some(e) = &self.endpoint_name {
            v["endpointName"] = json!(e);
        }
        if let Some(q) = &self.queue_name {
            v["queueName"] = json!(q);
        }
        if let Some(f) = &self.flow_control {
            v["flowControlKey"] = json!(f.key);
            if let Some(p) = f.parallelism {
                v["parallelism"] = json!(p);
            }
            if let Some(r) = f.rate {
                v["rate"] = json!(r);
                v["period"] = json!(f.period_secs);
            }
        }
        v
    }

    /// `body` as text, or `bodyBase64` when it is not UTF-8, as QStash shows it.
    pub fn put_body(&self, v: &mut Value) {
        match std::str::from_utf8(&self.body) {
            Ok(text) => v["body"] = json!(text),
            Err(_) => v["bodyBase64"] = json!(STANDARD.encode(&self.body)),
        }
    }

    /// `labels`, and `label` (the first, QStash's older field), if any.
    pub fn put_labels(&self, v: &mut Value) {
        if let Some(first) = self.labels.first() {
            v["label"] = json!(first);
            v["labels"] = json!(self.labels);
        }
    }
}

/// Whether a destination is meant as a URL (else it names a URL group).
pub fn is_url(dest: &str) -> bool {
    let lower = dest.get(..6).unwrap_or(dest).to_ascii_lowercase();
    lower.starts_with("http:") || lower.starts_with("https:")
}

/// A destination must be an absolute http(s) URL. A client that builds the
/// publish path by joining segments may leave `https:/host` (one slash) after a
/// proxy merges slashes; that is read as `https://host`.
pub fn destination(url: &str) -> Result<String, Refused> {
    for scheme in ["https:", "http:"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let host_and_path = rest.trim_start_matches('/');
            if host_and_path.is_empty() || host_and_path.starts_with(['?', '#']) {
                break;
            }
            return Ok(format!("{scheme}//{host_and_path}"));
        }
    }
    Err(Refused::bad(format!(
        "invalid destination url: {url:?}: Tidewire delivers to http:// and https:// URLs \
         or the name of a URL group (APIs are not supported)"
    )))
}

/// `10s`, `5m`, `2h`, `1d`, `500ms`, or plain seconds.
pub fn parse_duration_ms(text: &str, header: &str) -> Result<u64, Refused> {
    let bad = || Refused::bad(format!("invalid {header}: {text}"));
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" | "s" => 1000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// `x-my-header` → `X-My-Header`, the form delivered headers are shown in.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `prefix` and 24 random letters and digits: a message's, schedule's or DLQ
/// entry's id.
pub fn new_id(prefix: &str) -> String {
    random_id(&mut rand::thread_rng(), prefix, 24)
}

/// `prefix` and `len` letters and digits from `rng`, without the look-alikes
/// (0, O, I, l), as QStash's ids and keys are written.
pub fn random_id(rng: &mut impl Rng, prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let tail: String = (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn publish(pairs: &[(&str, &str)]) -> Result<Publish, Refused> {
        Message::from_publish(
            "https://example.com/hook",
            &headers(pairs),
            b"{}".to_vec(),
            &QstashConfig::default(),
            1_000_000,
            "127.0.0.1",
        )
    }

    #[test]
    fn headers_become_the_message() {
        let p = publish(&[
            ("content-type", "application/json"),
            ("upstash-forward-x-tenant", "t1"),
            ("upstash-delay", "5m"),
            ("upstash-retries", "2"),
            ("upstash-method", "put"),
            ("upstash-callback", "https://example.com/cb"),
            ("upstash-timeout", "10s"),
            ("authorization", "Bearer secret"),
        ])
        .unwrap();
        let m = p.message;
        assert_eq!(m.not_before, 1_000_000 + 300_000);
        assert_eq!(m.max_retries, 2);
        assert_eq!(m.method, "PUT");
        assert_eq!(m.timeout_secs, 10);
        assert_eq!(m.callback.as_deref(), Some("https://example.com/cb"));
        assert_eq!(m.header["Content-Type"], vec!["application/json"]);
        assert_eq!(m.header["X-Tenant"], vec!["t1"]);
        assert!(
            !m.header.contains_key("Authorization"),
            "the publisher's token is never forwarded"
        );
        assert!(m.message_id.starts_with("msg_"));
        assert!(p.dedup.is_none());
        let stored: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(stored, m);
    }

    #[test]
    fn not_before_wins_over_delay_and_limits_hold() {
        let m = publish(&[("upstash-not-before", "2000"), ("upstash-delay", "5s")])
            .unwrap()
            .message;
        assert_eq!(m.not_before, 2_000_000);
        assert_eq!(publish(&[("upstash-retries", "21")]).err().unwrap().0, 400);
        assert_eq!(
            publish(&[("upstash-delay", "5 parsecs")]).err().unwrap().0,
            400
        );
        assert_eq!(
            publish(&[("upstash-retry-delay", "pow(")]).err().unwrap().0,
            400
        );
        assert_eq!(publish(&[("upstash-method", "BREW")]).err().unwrap().0, 400);
        assert_eq!(publish(&[("upstash-delay", "400d")]).err().unwrap().0, 400);
    }

    #[test]
    fn flow_control_values() {
        let f = publish(&[
            ("upstash-flow-control-key", "user:1"),
            (
                "upstash-flow-control-value",
                "parallelism=3, rate=10, period=1m",
            ),
        ])
        .unwrap()
        .message
        .flow_control
        .unwrap();
        assert_eq!(
            (f.key.as_str(), f.parallelism, f.rate, f.period_secs),
            ("user:1", Some(3), Some(10), 60)
        );
        for bad in [
            "",
            "period=5s",
            "parallelism=0",
            "rate=x",
            "speed=3",
            "rate",
        ] {
            let r = publish(&[
                ("upstash-flow-control-key", "k"),
                ("upstash-flow-control-value", bad),
            ]);
            assert_eq!(r.err().map(|e| e.0), Some(400), "{bad:?}");
        }
    }

    #[test]
    fn deduplication_ids() {
        let a = publish(&[("upstash-content-based-deduplication", "true")]).unwrap();
        let b = publish(&[("upstash-content-based-deduplication", "true")]).unwrap();
        assert_eq!(a.dedup, b.dedup);
        let c = publish(&[
            ("upstash-content-based-deduplication", "true"),
            ("upstash-forward-x", "1"),
        ])
        .unwrap();
        assert_ne!(a.dedup, c.dedup);
        let d = publish(&[("upstash-deduplication-id", "abc")]).unwrap();
        assert_eq!(d.dedup.as_deref(), Some("id:abc"));
    }

    #[test]
    fn destinations_and_durations() {
        assert_eq!(
            destination("https:/a.example/x").unwrap(),
            "https://a.example/x"
        );
        assert_eq!(
            destination("http://127.0.0.1:9/x?y=1").unwrap(),
            "http://127.0.0.1:9/x?y=1"
        );
        assert!(destination("my-url-group").is_err());
        assert!(destination("https://").is_err());
        assert!(destination("ftp://a").is_err());
        assert_eq!(parse_duration_ms("90", "d").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("2h", "d").unwrap(), 7_200_000);
        assert_eq!(parse_duration_ms("250ms", "d").unwrap(), 250);
        assert!(parse_duration_ms("-1s", "d").is_err());
        assert!(parse_duration_ms("99999999999999999999d", "d").is_err());
    }

    #[test]
    fn default_backoff_is_qstashs() {
        let mut m = publish(&[]).unwrap().message;
        m.retried = 1;
        assert_eq!(m.retry_delay_ms(), 12_182);
        m.retried = 10;
        assert_eq!(m.retry_delay_ms(), 86_400_000);
        m.retry_delay = Some("1000 * (1 + retried)".into());
        m.retried = 1;
        assert_eq!(m.retry_delay_ms(), 1000, "the first retry sees retried = 0");
    }
}
