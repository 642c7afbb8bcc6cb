//! Wiring of the realtime (Ably-compatible) layer into the server: its API keys
//! (a root key generated on first start and kept in the data dir), its router at the
//! root of the HTTP port, and the bridge between Redis pub/sub and realtime channels.
//!
//! Bridge mapping (documented in docs/realtime.md):
//! - Redis `PUBLISH ch payload` reaches realtime subscribers of `ch` when that channel
//!   is active (someone attached). A payload that is a JSON object with a string
//!   `name` and a `data` member (and optionally a string `encoding`) is taken as an
//!   Ably message envelope; any other payload becomes the message's `data` (a string
//!   when it is UTF-8, binary otherwise) with no name.
//! - Every realtime message (from WebSocket or REST publishers) is published to Redis
//!   subscribers of the same channel name as its Ably JSON wire form.
//! - On a shared engine (`--engine`), "attached" means on any node (the engine
//!   is asked), and Redis subscribers are the engine's: the node a realtime
//!   message was published through publishes it there.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rand::distributions::{Alphanumeric, DistString};
use tidewire_engine::Cluster;
use tidewire_realtime::engine::dedupe::ABLY_DEDUPE_WINDOW_MS;
use tidewire_realtime::engine::{Engine, OrderedCalls};
use tidewire_realtime::{HistoryStore, Hub, KeyConfig, Origin, RealtimeConfig};
use tidewire_store::pubsub::PublishBridge;
use tidewire_store::Store;
use tokio::sync::{broadcast, watch};

use crate::engine::realtime::{
    Fanout, RedisBroker, RedisConnectionStateStore, RedisDedupeStore, RedisPresenceStore,
};

const ROOT_KEY_FILE: &str = "realtime-root-key";

/// Ensures the realtime config has at least one key: with none configured, a root
/// key is generated on first start, stored in the data dir and reused afterwards.
/// Returns the generated/loaded root key when one was used, for the banner.
pub fn ensure_keys(config: &mut RealtimeConfig, data_dir: &Path) -> anyhow::Result<Option<String>> {
    if !config.keys.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(ROOT_KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
        _ => {
            let mut rng = rand::thread_rng();
            let key = format!(
                "tidewire.{}:{}",
                Alphanumeric.sample_string(&mut rng, 6),
                Alphanumeric.sample_string(&mut rng, 32)
            );
            crate::secrets::write_private(&path, &key)?;
            key
        }
    };
    config.keys.push(KeyConfig {
        key: key.clone(),
        capability: None,
        revocable_tokens: false,
    });
    Ok(Some(key))
}

/// Database that holds realtime channel history (see `history.rs`).
pub const HISTORY_DB: usize = 15;

/// What the hubs run on: in-process (the embedded engine), or the Redis engine
/// that every node shares, with this process's one [`Fanout`] for all its hubs.
pub enum RealtimeEngine {
    InProcess,
    Redis {
        cluster: Arc<Cluster>,
        fanout: Fanout,
    },
}

impl RealtimeEngine {
    /// The realtime side of the keyspace engine (starts the fan-out's control
    /// task on the Redis engine, so call it inside the runtime).
    pub fn of(engine: &crate::engine::Engine) -> RealtimeEngine {
        match engine {
            crate::engine::Engine::Embedded => RealtimeEngine::InProcess,
            crate::engine::Engine::Redis(cluster, _) => RealtimeEngine::Redis {
                cluster: cluster.clone(),
                fanout: Fanout::new(cluster.clone()),
            },
        }
    }

    /// A hub for the app `app_id`. In-process: exactly the hub of a single node.
    /// On Redis: broker, presence and dedupe under the app's own keys (two apps
    /// may name the same channel), connection state shared (connectionIds are
    /// unique across apps); `history` is then only what the hub reads directly
    /// (presence history, a message's earlier versions), not channel history.
    fn hub(
        &self,
        config: RealtimeConfig,
        history: Arc<dyn HistoryStore>,
        app_id: &str,
    ) -> Result<Arc<Hub>, String> {
        match self {
            RealtimeEngine::InProcess => Hub::try_new(config, history),
            RealtimeEngine::Redis { cluster, fanout } => {
                let parked_ttl_ms =
                    i64::try_from(config.connection_state_ttl_ms).unwrap_or(i64::MAX);
                let engine = Engine {
                    broker: Arc::new(RedisBroker::new(cluster.clone(), fanout.clone(), app_id)),
                    presence: Arc::new(RedisPresenceStore::scoped(cluster.clone(), app_id)),
                    connections: Arc::new(RedisConnectionStateStore::new(
                        cluster.clone(),
                        parked_ttl_ms,
                    )),
                    dedupe: Arc::new(RedisDedupeStore::scoped(
                        cluster.clone(),
                        ABLY_DEDUPE_WINDOW_MS,
                        app_id,
                    )),
                };
                Hub::try_with_engine(config, history, engine)
            }
        }
    }
}

/// The app id of a config's keys (`<appId>.<keyName>:<secret>`), as the hub
/// reports it.
fn app_id_of(config: &RealtimeConfig) -> String {
    config
        .keys
        .first()
        .and_then(|k| k.key.split_once('.'))
        .map(|(app, _)| app.to_owned())
        .unwrap_or_default()
}

/// The hub, with channel history kept in the keyspace (persisted with it).
pub fn build_hub(
    config: RealtimeConfig,
    store: &Arc<Store>,
    engine: &RealtimeEngine,
) -> anyhow::Result<Arc<Hub>> {
    let history = Arc::new(crate::history::KeyspaceHistory::new(
        store.clone(),
        HISTORY_DB,
    ));
    let app_id = app_id_of(&config);
    engine
        .hub(config, history, &app_id)
        .map_err(|e| anyhow::anyhow!("realtime config: {e}"))
}

/// The hubs of the config file's further apps (`[[realtime.apps]]`), each with its
/// history under its own key prefix.
pub fn build_app_hubs(
    config: &RealtimeConfig,
    store: &Arc<Store>,
    engine: &RealtimeEngine,
) -> anyhow::Result<Vec<Arc<Hub>>> {
    let apps = config
        .app_configs()
        .map_err(|e| anyhow::anyhow!("realtime config: {e}"))?;
    apps.into_iter()
        .map(|(id, app)| {
            let history = Arc::new(crate::history::KeyspaceHistory::for_app(
                store.clone(),
                HISTORY_DB,
                &id,
            ));
            engine
                .hub(app, history, &id)
                .map_err(|e| anyhow::anyhow!("realtime app {id}: {e}"))
        })
        .collect()
}

/// Redis → realtime: PUBLISH on a channel that realtime clients are attached to.
struct RedisToRealtime {
    hub: Arc<Hub>,
    /// On a shared engine: "attached" means on any node, which takes asking
    /// the engine, so the publish finishes on the runtime, in each channel's
    /// order. `None`: the embedded engine, where this node is everyone.
    shared: Option<OrderedCalls>,
}

impl PublishBridge for RedisToRealtime {
    fn on_publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return 0;
        };
        if channel.starts_with("__key") {
            return 0;
        }
        let (name, data, encoding) = decode_envelope(message);
        let Some(lanes) = &self.shared else {
            if self.hub.existing_channel(channel).is_none() {
                return 0;
            }
            return match self.hub.publish_from_backend(channel, name, data, encoding) {
                Ok(_) => 1,
                Err(e) => {
                    tracing::debug!(channel, error = %e.message, "bridge publish refused");
                    0
                }
            };
        };
        let (hub, channel_name) = (self.hub.clone(), channel.to_owned());
        lanes.run(
            channel,
            Box::pin(async move {
                if !hub.is_attached_anywhere(&channel_name).await {
                    return;
                }
                if let Err(e) = hub
                    .publish_from_backend_async(&channel_name, name, data, encoding)
                    .await
                {
                    tracing::debug!(channel = %channel_name, error = %e.message, "bridge publish refused");
                }
            }),
        );
        // Not known yet: the realtime side counts no receiver in PUBLISH's reply.
        0
    }
}

/// Splits a Redis payload into Ably (name, data, encoding) per the mapping above.
fn decode_envelope(
    payload: &[u8],
) -> (
    Option<String>,
    tidewire_realtime::MessageData,
    Option<String>,
) {
    use tidewire_realtime::MessageData;
    if payload.first() == Some(&b'{') {
        if let Ok(serde_json::Value::Object(obj)) =
            serde_json::from_slice::<serde_json::Value>(payload)
        {
            if let (Some(serde_json::Value::String(name)), Some(data)) =
                (obj.get("name"), obj.get("data"))
            {
                let encoding = obj
                    .get("encoding")
                    .and_then(|e| e.as_str())
                    .map(str::to_string);
                let data = match data {
                    serde_json::Value::String(s) => MessageData::String(s.clone()),
                    other => MessageData::Json(other.clone()),
                };
                return (Some(name.clone()), data, encoding);
            }
        }
    }
    match std::str::from_utf8(payload) {
        Ok(s) => (None, MessageData::String(s.to_string()), None),
        Err(_) => (
            None,
            MessageData::Binary(Bytes::copy_from_slice(payload)),
            None,
        ),
    }
}

/// Connects both directions of the bridge; the realtime → Redis half runs as a task
/// until shutdown. On a shared engine, Redis subscribers are the engine's: each
/// node publishes there the messages published through it (once each), instead
/// of to its own store's subscribers.
pub fn connect_bridge(
    store: &Arc<Store>,
    hub: &Arc<Hub>,
    engine: &crate::engine::Engine,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let cluster = match engine {
        crate::engine::Engine::Embedded => None,
        crate::engine::Engine::Redis(cluster, _) => Some(cluster.clone()),
    };
    store.pubsub.set_bridge(Arc::new(RedisToRealtime {
        hub: hub.clone(),
        shared: cluster.is_some().then(OrderedCalls::default),
    }));
    let mut events = hub.subscribe_all();
    let store = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        if ev.origin == Origin::Backend {
                            continue;
                        }
                        match &cluster {
                            None => {
                                let limit = store.config.pubsub_output_limit.load(Ordering::Relaxed);
                                store.pubsub.publish_local(ev.channel.as_bytes(), ev.message_json().as_bytes(), limit);
                            }
                            Some(cluster) if ev.local => publish_on_engine(cluster, &ev).await,
                            Some(_) => {}
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "realtime → Redis bridge fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    })
}

/// A realtime message to the engine's Redis subscribers of its channel (awaited,
/// so that one channel's messages reach them in order).
async fn publish_on_engine(cluster: &Cluster, ev: &tidewire_realtime::ChannelEvent) {
    let argv = vec![
        Bytes::from_static(b"PUBLISH"),
        Bytes::copy_from_slice(ev.channel.as_bytes()),
        Bytes::from(ev.message_json()),
    ];
    // Not retried: a retry after a lost reply could deliver it twice.
    if let Err(e) = cluster
        .run(tidewire_resp::Protocol::Resp2, None, &[argv], false)
        .await
    {
        tracing::warn!(channel = %ev.channel, error = %e, "realtime → Redis bridge: the engine refused a publish");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewire_realtime::MessageData;

    #[test]
    fn envelope_mapping() {
        let (n, d, e) = decode_envelope(br#"{"name":"tip:new","data":{"amount":5}}"#);
        assert_eq!(n.as_deref(), Some("tip:new"));
        assert_eq!(d, MessageData::Json(serde_json::json!({"amount": 5})));
        assert_eq!(e, None);
        let (n, d, _) = decode_envelope(b"plain text");
        assert_eq!(n, None);
        assert_eq!(d, MessageData::String("plain text".into()));
        let (_, d, _) = decode_envelope(&[0xff, 0x00]);
        assert_eq!(d, MessageData::Binary(Bytes::from_static(&[0xff, 0x00])));
        let (n, _, _) = decode_envelope(br#"{"amount":5}"#);
        assert_eq!(n, None);
    }
}
