//! [`RealtimeConfig`]: keys, limits and retention for the realtime layer.
//!
//! Deserialisable (the server reads it from its config file) and `Default` (every
//! field has Ably's published default, or a generous one where Ably's would throttle
//! ordinary benchmarks).

use serde::{Deserialize, Serialize};

/// One API key: `appId.keyId:secret` and what it may do.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct KeyConfig {
    /// The full key, `appId.keyId:secret`.
    pub key: String,
    /// Capability as a JSON string or an inline map; absent means `{"*":["*"]}`.
    #[serde(default)]
    pub capability: Option<CapabilityConfig>,
    /// Tokens issued with this key can be revoked (Ably's `revocableTokens`).
    #[serde(default)]
    pub revocable_tokens: bool,
}

/// Capability in either form a config file is likely to use.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum CapabilityConfig {
    Text(String),
    Map(serde_json::Value),
}

/// One retention rule: channels matching `pattern` keep history for `secs`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct RetentionRule {
    pub pattern: String,
    pub secs: u64,
}

/// Per-namespace history retention, written either as a map
/// (`{ "stream:*" = 259200 }`; the longest matching pattern wins, so specific
/// namespaces override broad ones) or as a list of `{pattern, secs}` (first match wins,
/// for full control).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RetentionRules {
    Map(std::collections::BTreeMap<String, u64>),
    List(Vec<RetentionRule>),
}

impl Default for RetentionRules {
    fn default() -> Self {
        RetentionRules::List(Vec::new())
    }
}

impl RetentionRules {
    /// The rules in matching order (first match wins).
    pub fn ordered(&self) -> Vec<RetentionRule> {
        match self {
            RetentionRules::List(l) => l.clone(),
            RetentionRules::Map(m) => {
                let mut v: Vec<RetentionRule> = m
                    .iter()
                    .map(|(pattern, secs)| RetentionRule {
                        pattern: pattern.clone(),
                        secs: *secs,
                    })
                    .collect();
                // Longest pattern first; BTreeMap order breaks ties deterministically.
                v.sort_by_key(|r| std::cmp::Reverse(r.pattern.len()));
                v
            }
        }
    }
}

/// Realtime layer configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RealtimeConfig {
    /// API keys accepted by this server.
    pub keys: Vec<KeyConfig>,
    /// How long channel history is kept, in seconds, for channels no
    /// [`RealtimeConfig::history_retention`] rule matches (Ably keeps 2 min of
    /// ephemeral history unless persistence is enabled).
    pub history_retention_secs: u64,
    /// Per-namespace retention, so e.g. `stream:*` can keep 72 h while chat keeps the
    /// default. Patterns use capability syntax (`stream:*` matches `stream:a:b`).
    pub history_retention: RetentionRules,
    /// Largest total size of the messages in one publish (Ably default 64 KiB).
    pub max_message_size: usize,
    /// Largest inbound WebSocket frame accepted; bounds per-connection buffering.
    pub max_frame_size: usize,
    /// Channels one connection may have attached at once (Ably: 200).
    pub max_channels_per_connection: usize,
    /// Messages per second a connection may publish (token bucket, burst = 1 s worth).
    pub max_inbound_rate: u32,
    /// Concurrent WebSocket connections this hub accepts.
    pub max_connections: usize,
    /// Announced in CONNECTED as `serverId`.
    pub server_id: String,
    /// Promised maximum silence on a connection, ms (Ably: 15000).
    pub max_idle_interval_ms: u64,
    /// How long connection state is kept for resume, ms (Ably: 120000).
    pub connection_state_ttl_ms: u64,
    /// How often the hub sweeps, ms (at least 50): expired history and
    /// connection state go and, on a shared engine (`--engine`), the node
    /// renews its heartbeat. A node silent for three sweeps counts as dead and
    /// its presence members leave, so give every node of a deployment the same
    /// value.
    pub sweep_interval_ms: u64,
    /// Default token lifetime when a TokenRequest gives none, ms (Ably: 60 min).
    pub default_token_ttl_ms: i64,
    /// Messages queued for a slow subscriber before it is disconnected.
    pub outbound_queue: usize,
    /// Hard limit, in bytes, on one connection's pending output (queued fan-out
    /// plus frames its writer has not handed to the socket yet): a subscriber that
    /// passes it is disconnected at once and its queue freed, so a client that stops
    /// reading costs the server at most this much. Like Redis's
    /// `client-output-buffer-limit pubsub 32mb 8mb 60`. 0 disables.
    pub output_buffer_hard_limit: usize,
    /// Soft limit, in bytes: a connection that stays above it for
    /// [`RealtimeConfig::output_buffer_soft_secs`] is disconnected too. 0 disables.
    pub output_buffer_soft_limit: usize,
    /// How long a connection may stay above the soft limit, in seconds.
    pub output_buffer_soft_secs: u64,
    /// Presence members one channel may hold (Ably's default is 200).
    pub max_presence_members: usize,
    /// How long members of an abruptly disconnected connection stay present
    /// waiting for a resume, ms (Ably: 15000).
    pub presence_leave_grace_ms: u64,
    /// `[meta]occupancy` events are sent at most once per this many ms per channel,
    /// so a burst of attaches costs subscribers one event, not one per change.
    pub occupancy_debounce_ms: u64,
    /// Channels with at least this many presence members batch presence events
    /// (0 disables batching): at 10,000 members, per-event frames would cost every
    /// presence subscriber one frame per change.
    pub presence_batch_threshold: usize,
    /// How long a batched presence event may wait for others, ms.
    pub presence_batch_ms: u64,
    /// Channels whose messages may be updated, deleted and appended to
    /// (capability-style patterns, e.g. `"mutable:*"`).
    pub mutable_messages: Vec<String>,
    /// Lets anyone create and delete apps (`POST /apps`, `DELETE /apps/{id}`), as
    /// Ably's sandbox does for SDK test suites. Never on a server others can reach.
    pub sandbox: bool,
    /// Further apps (`[[realtime.apps]]`), each with its own keys, channels,
    /// history and presence: an entry takes these settings and overrides what it
    /// names (`keys` it must name). See [`RealtimeConfig::app_configs`].
    pub apps: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            keys: Vec::new(),
            history_retention_secs: 120,
            history_retention: RetentionRules::default(),
            max_message_size: 65536,
            max_frame_size: 262_144,
            max_channels_per_connection: 200,
            max_inbound_rate: 1000,
            max_connections: 100_000,
            server_id: "tidewire".to_owned(),
            max_idle_interval_ms: 15_000,
            connection_state_ttl_ms: 120_000,
            sweep_interval_ms: 10_000,
            default_token_ttl_ms: 3_600_000,
            outbound_queue: 4096,
            output_buffer_hard_limit: 32 * 1024 * 1024,
            output_buffer_soft_limit: 8 * 1024 * 1024,
            output_buffer_soft_secs: 60,
            max_presence_members: 10_000,
            presence_leave_grace_ms: 15_000,
            occupancy_debounce_ms: 1_000,
            presence_batch_threshold: 500,
            presence_batch_ms: 50,
            mutable_messages: Vec::new(),
            sandbox: false,
            apps: Vec::new(),
        }
    }
}

impl RealtimeConfig {
    /// The settings of each further app (`apps`), with its id: these settings
    /// with the entry's on top. Every app needs keys of its own, all of one
    /// `appId`, used by no other app; the sandbox switch is the server's alone.
    pub fn app_configs(&self) -> Result<Vec<(String, RealtimeConfig)>, String> {
        let mut inherited = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let Some(map) = inherited.as_object_mut() {
            map.remove("keys");
            map.remove("apps");
        }
        let mut taken: Vec<String> = app_ids(&self.keys)?.into_iter().collect();
        let mut out = Vec::new();
        for (i, entry) in self.apps.iter().enumerate() {
            let which = format!("realtime.apps[{i}]");
            if entry.contains_key("apps") || entry.contains_key("sandbox") {
                return Err(format!("{which}: `apps` and `sandbox` are server-wide"));
            }
            let mut merged = inherited.clone();
            if let Some(map) = merged.as_object_mut() {
                map.extend(entry.clone());
            }
            let config: RealtimeConfig =
                serde_json::from_value(merged).map_err(|e| format!("{which}: {e}"))?;
            let ids = app_ids(&config.keys)?;
            let id = match ids.as_slice() {
                [id] => id.clone(),
                [] => return Err(format!("{which}: an app needs `keys` of its own")),
                _ => return Err(format!("{which}: keys of several apps: {}", ids.join(", "))),
            };
            if taken.contains(&id) {
                return Err(format!("{which}: app id {id:?} is already used"));
            }
            taken.push(id.clone());
            out.push((id, config));
        }
        Ok(out)
    }

    /// The per-connection output limits these settings describe.
    pub fn output_limits(&self) -> crate::outbox::OutputLimits {
        crate::outbox::OutputLimits {
            hard_bytes: self.output_buffer_hard_limit,
            soft_bytes: self.output_buffer_soft_limit,
            soft_for: std::time::Duration::from_secs(self.output_buffer_soft_secs),
        }
    }
}

/// The distinct app ids (`appId` of `appId.keyId:secret`) of `keys`, in order.
fn app_ids(keys: &[KeyConfig]) -> Result<Vec<String>, String> {
    let mut ids: Vec<String> = Vec::new();
    for k in keys {
        let id = k
            .key
            .split_once('.')
            .map(|(app, _)| app)
            .filter(|app| !app.is_empty())
            .ok_or_else(|| {
                format!(
                    "key {:?} is not appId.keyId:secret",
                    k.key.split(':').next().unwrap_or("")
                )
            })?;
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_inherit_settings_and_need_keys_of_their_own() {
        let c: RealtimeConfig = serde_json::from_str(
            r#"{"keys":[{"key":"main.a:s"}], "max_presence_members": 7,
                "apps":[{"keys":[{"key":"shop.k:t"},{"key":"shop.j:u"}],
                         "mutable_messages":["m:*"]}]}"#,
        )
        .unwrap();
        let apps = c.app_configs().unwrap();
        assert_eq!(apps.len(), 1);
        let (id, shop) = &apps[0];
        assert_eq!(id, "shop");
        assert_eq!(shop.keys.len(), 2);
        assert_eq!(shop.max_presence_members, 7);
        assert_eq!(shop.mutable_messages, ["m:*"]);
        for bad in [
            r#"{"keys":[{"key":"main.a:s"}], "apps":[{"max_presence_members": 3}]}"#,
            r#"{"keys":[{"key":"main.a:s"}], "apps":[{"keys":[{"key":"main.b:t"}]}]}"#,
            r#"{"keys":[{"key":"main.a:s"}], "apps":[{"keys":[{"key":"x.b:t"},{"key":"y.c:u"}]}]}"#,
            r#"{"keys":[{"key":"main.a:s"}], "apps":[{"keys":[{"key":"x.b:t"}],"sandbox":true}]}"#,
        ] {
            let c: RealtimeConfig = serde_json::from_str(bad).unwrap();
            assert!(c.app_configs().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_both_capability_forms_and_defaults() {
        let c: RealtimeConfig = serde_json::from_str(
            r#"{"keys":[{"key":"a.b:s","capability":"{\"*\":[\"*\"]}"},
                        {"key":"a.c:t","capability":{"x":["subscribe"]}},
                        {"key":"a.d:u"}],
                "max_inbound_rate": 5}"#,
        )
        .unwrap();
        assert_eq!(c.keys.len(), 3);
        assert!(matches!(
            c.keys[0].capability,
            Some(CapabilityConfig::Text(_))
        ));
        assert!(matches!(
            c.keys[1].capability,
            Some(CapabilityConfig::Map(_))
        ));
        assert_eq!(c.max_inbound_rate, 5);
        assert_eq!(c.max_message_size, 65536);
        assert_eq!(c.history_retention_secs, 120);
        assert_eq!(c.history_retention, RetentionRules::default());
    }

    #[test]
    fn retention_rules_parse_as_map_or_list() {
        let c: RealtimeConfig =
            serde_json::from_str(r#"{"history_retention":{"stream:*":259200,"stream:hot:*":10}}"#)
                .unwrap();
        let rules = c.history_retention.ordered();
        assert_eq!(rules[0].pattern, "stream:hot:*");
        assert_eq!(rules[1].secs, 259200);
        let c: RealtimeConfig = serde_json::from_str(
            r#"{"history_retention":[{"pattern":"a:*","secs":5},{"pattern":"*","secs":7}]}"#,
        )
        .unwrap();
        let rules = c.history_retention.ordered();
        assert_eq!((rules[0].secs, rules[1].secs), (5, 7));
    }
}
