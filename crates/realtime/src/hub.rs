//! The [`Hub`]: channels, the connection registry, publishing and the backend bridge.
//!
//! Everything that publishes (WebSocket sessions, REST, the Redis bridge) goes through
//! [`Hub::publish_async`] (or its synchronous face [`Hub::publish`]): ids are checked
//! against the engine's [`DedupeStore`](crate::engine::DedupeStore), then the engine's
//! [`Broker`](crate::engine::Broker) positions, stores and fans the publication out to
//! every node; on this node it arrives at [`Hub::on_publication`](BrokerHandler), which
//! hands it to the local [`Channel`] for its subscribers. Presence changes and
//! connection state are written through to the engine's
//! [`PresenceStore`](crate::engine::PresenceStore) and
//! [`ConnectionStateStore`](crate::engine::ConnectionStateStore), and this node's
//! occupancy counts to the presence store, debounced (see
//! [`Hub::occupancy_changed`]). The channel map and
//! registry are std mutexes held only for map operations, never across an await.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::auth::{now_ms, Keyring};
use crate::channel::{
    format_serial, Attachment, Backlog, Channel, ChannelEvent, Origin, Published, Publisher,
    Subscriber,
};
use crate::config::RealtimeConfig;
use crate::engine::{BoxFuture, BrokerHandler, ConnectionState, Engine, Payload, Publication};
use crate::error::{AblyError, ErrorCode};
use crate::history::{HistoryPage, HistoryQuery, HistoryStore};
use crate::presence::Occupancy;
use crate::protocol::{Message, MessageData};
use crate::registry::{Registry, SessionLink};

pub use crate::registry::ConnectionRecord;

/// The shortest sweep period [`RealtimeConfig::sweep_interval_ms`] may set.
const MIN_SWEEP_MS: u64 = 50;
/// Capacity of the [`Hub::subscribe_all`] broadcast; slower observers see `Lagged`.
const OBSERVER_CAPACITY: usize = 4096;
/// How many sweeps a node may go without a heartbeat before its presence members
/// are made to leave (one missed sweep is not a death).
const PRESENCE_NODE_GRACE_SWEEPS: i64 = 3;
/// How often an attach re-reads the broker when publishes keep overtaking its read.
const ATTACH_READS: usize = 8;

/// Shared realtime state. Create with [`Hub::new`], serve with [`crate::router`].
pub struct Hub {
    config: RealtimeConfig,
    /// `config.history_retention` in matching order, resolved once.
    retention_rules: Vec<crate::config::RetentionRule>,
    keyring: Keyring,
    history: Arc<dyn HistoryStore>,
    /// Where channel positions, presence, connection state and recent ids live.
    engine: Engine,
    /// This hub's name among the engine's nodes (echo suppression, presence
    /// ownership, connection state).
    node_id: String,
    /// The hub itself, for work handed to the runtime from `&self` methods.
    me: Weak<Hub>,
    channels: RwLock<HashMap<String, Arc<Channel>>>,
    registry: Registry,
    connection_count: AtomicUsize,
    next_conn: AtomicU64,
    next_publish: AtomicU64,
    /// Last serial given to a presence-history entry (one sequence for all channels).
    /// Presence changes on their way to the engine (store, then the other
    /// nodes), in each channel's order.
    presence_out: crate::engine::OrderedCalls,
    /// This node's occupancy counts on their way to the engine (see
    /// [`Hub::occupancy_changed`]).
    occupancy_share: Mutex<OccupancyShare>,
    /// Their writes and the notifications after them, in each channel's order.
    occupancy_out: crate::engine::OrderedCalls,
    /// When this node's last heartbeat reached the engine (0: none yet).
    last_beat_ms: AtomicI64,
    observers: broadcast::Sender<Arc<ChannelEvent>>,
    sweeper_started: std::sync::atomic::AtomicBool,
    stats: crate::stats::Stats,
    /// Messages published (after dedupe) and messages delivered to subscribers,
    /// since start (`/metrics`).
    messages_in: AtomicU64,
    messages_out: AtomicU64,
}

/// What this node has told the engine of its occupancy counts.
#[derive(Default)]
struct OccupancyShare {
    /// Channels whose counts are written once the debounce has passed.
    pending: HashSet<String>,
    /// The counts last written per channel (absent: zero, which the engine does
    /// not keep; `None`: unknown after a failed write, so written whatever they are).
    written: HashMap<String, Option<Occupancy>>,
}

/// One app's realtime figures (see [`Hub::metrics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubMetrics {
    pub connections: u64,
    pub channels: u64,
    pub presence_members: u64,
    pub messages_in: u64,
    pub messages_out: u64,
}

/// One connection as listed by [`Hub::connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub record: ConnectionRecord,
    /// Channels it is attached to, sorted (empty while parked).
    pub channels: Vec<String>,
}

/// A transport's slot in the hub: counts toward `max_connections` and, once the
/// connection is registered, reports the transport's end to the registry on drop
/// (so a panicking session still leaves a consistent registry).
pub struct ConnectionSlot {
    hub: Arc<Hub>,
    /// Transport id, also the registry generation.
    pub id: u64,
    connection_id: Option<String>,
    resumable: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.hub.connection_count.fetch_sub(1, Ordering::Relaxed);
        if let Some(cid) = &self.connection_id {
            let before = self.hub.registry.state(cid);
            self.hub
                .registry
                .ended(cid, self.id, self.resumable, now_ms());
            // Only the transport that owned it speaks for it (a newer one took over
            // otherwise, and writes its own state).
            if let Some((record, _, generation)) = before {
                if generation == self.id {
                    self.hub.store_connection_change(&record);
                }
            }
        }
    }
}

impl ConnectionSlot {
    /// Registers a new connection served by this transport.
    pub fn register(&mut self, rec: ConnectionRecord) -> SessionLink {
        self.connection_id = Some(rec.connection_id.clone());
        let state = ConnectionState {
            record: rec.clone(),
            msg_serial: None,
            node: self.hub.node_id.clone(),
        };
        let link = self.hub.registry.register(rec, self.id);
        // A new connectionId: nobody else can hold it.
        let store = self.hub.engine.connections.clone();
        crate::engine::now_or_spawn(Box::pin(async move {
            log_engine_error(store.save(state).await);
        }));
        link
    }

    /// Takes over the connection named by `key` (resume/recover): one this hub
    /// registered, or one another node served, read from the engine's connection
    /// state. Of several transports (on any nodes) presenting one key, one wins.
    pub async fn resume(
        &mut self,
        key: &str,
        key_name: &str,
        client_id: Option<&str>,
    ) -> Result<(ConnectionRecord, SessionLink), AblyError> {
        let ttl = self.hub.config.connection_state_ttl_ms as i64;
        let resume = |slot: &Self| {
            slot.hub
                .registry
                .resume(key, key_name, client_id, slot.id, now_ms(), ttl)
        };
        let (rec, link) = match resume(self) {
            Err(e) if e.code == ErrorCode::ConnectionExpired => {
                // Unknown here: another node may have served it.
                if !self.hub.adopt_connection(key).await? {
                    return Err(e);
                }
                resume(self)?
            }
            other => other?,
        };
        // The engine's copy changes hands only from the key presented, so that two
        // nodes resuming one connection cannot both have it.
        let state = ConnectionState {
            record: rec.clone(),
            msg_serial: link.last_msg_serial(),
            node: self.hub.node_id.clone(),
        };
        let store = &self.hub.engine.connections;
        let taken_elsewhere = match store.take_over(key, state.clone()).await {
            Ok(true) => false,
            Ok(false) => match store.load(&rec.connection_id).await {
                // Not in the engine (made before it, or expired there): ours now.
                Ok(None) => {
                    log_engine_error(store.save(state).await);
                    false
                }
                // Under another key: a transport on another node took it first.
                Ok(Some(_)) => true,
                Err(e) => {
                    log_engine_error::<()>(Err(e));
                    false
                }
            },
            Err(e) => {
                log_engine_error::<()>(Err(e));
                false
            }
        };
        if taken_elsewhere {
            self.hub.registry.forget(&rec.connection_id);
            return Err(AblyError::new(
                ErrorCode::ConnectionExpired,
                "Unable to resume connection (resumed elsewhere); a new connection was created",
            ));
        }
        self.connection_id = Some(rec.connection_id.clone());
        Ok((rec, link))
    }

    /// Whether the connection may be resumed after this transport ends (true for a
    /// lost transport, false after CLOSE or a fatal error).
    pub fn set_resumable(&mut self, resumable: bool) {
        self.resumable = resumable;
    }
}

impl Hub {
    /// Builds a hub. Panics only on invalid configured keys (a startup error); use
    /// [`Hub::try_new`] to handle that yourself.
    pub fn new(config: RealtimeConfig, history: Arc<dyn HistoryStore>) -> Arc<Hub> {
        match Hub::try_new(config, history) {
            Ok(h) => h,
            Err(e) => panic!("invalid realtime configuration: {e}"),
        }
    }

    /// Builds a hub, reporting invalid keys or capabilities as an error.
    pub fn try_new(
        config: RealtimeConfig,
        history: Arc<dyn HistoryStore>,
    ) -> Result<Arc<Hub>, String> {
        let engine = Engine::in_process(history.clone());
        Hub::try_with_engine(config, history, engine)
    }

    /// Builds a hub on `engine`. `history` is what the hub reads and writes
    /// directly (presence history, the dashboard's pages); the in-process
    /// broker keeps channel history there too, a shared engine's broker keeps it
    /// itself.
    pub fn try_with_engine(
        config: RealtimeConfig,
        history: Arc<dyn HistoryStore>,
        engine: Engine,
    ) -> Result<Arc<Hub>, String> {
        use rand::distributions::{Alphanumeric, DistString};
        let keyring = Keyring::from_config(&config)?;
        let (observers, _) = broadcast::channel(OBSERVER_CAPACITY);
        let retention_rules = config.history_retention.ordered();
        let node_id = format!(
            "{}-{}",
            config.server_id,
            Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
        );
        let hub = Arc::new_cyclic(|me| Hub {
            retention_rules,
            config,
            keyring,
            history,
            engine,
            node_id,
            me: me.clone(),
            channels: RwLock::new(HashMap::new()),
            registry: Registry::default(),
            connection_count: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            next_publish: AtomicU64::new(1),
            presence_out: crate::engine::OrderedCalls::default(),
            occupancy_share: Mutex::new(OccupancyShare::default()),
            occupancy_out: crate::engine::OrderedCalls::default(),
            last_beat_ms: AtomicI64::new(0),
            observers,
            sweeper_started: std::sync::atomic::AtomicBool::new(false),
            stats: crate::stats::Stats::default(),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
        });
        let handler: Weak<dyn BrokerHandler> = Arc::downgrade(&hub) as Weak<Hub>;
        hub.engine.broker.register(handler);
        hub.spawn_sweeper();
        Ok(hub)
    }

    /// Periodically expires history, when built inside a tokio runtime. Holds only a
    /// weak reference so that dropping the last `Arc<Hub>` stops it.
    ///
    /// Also called on every new connection, so a hub built outside a runtime gets
    /// its sweeper as soon as it serves anyone.
    fn spawn_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = self.sweep_every();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { break };
                let now = now_ms();
                let ttl = hub.config.connection_state_ttl_ms as i64;
                hub.registry.sweep(now, ttl);
                hub.sweep_engine(now, ttl).await;
            }
        });
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.config
    }

    /// How often the sweeper runs ([`RealtimeConfig::sweep_interval_ms`], at
    /// least [`MIN_SWEEP_MS`]).
    fn sweep_every(&self) -> Duration {
        Duration::from_millis(self.config.sweep_interval_ms.max(MIN_SWEEP_MS))
    }

    /// How long a node may go without a heartbeat before its presence members
    /// are made to leave: [`PRESENCE_NODE_GRACE_SWEEPS`] sweeps.
    fn presence_node_grace_ms(&self) -> i64 {
        let sweep = i64::try_from(self.sweep_every().as_millis()).unwrap_or(i64::MAX);
        sweep.saturating_mul(PRESENCE_NODE_GRACE_SWEEPS)
    }

    /// The app's statistics (`GET /stats`).
    pub fn stats(&self) -> &crate::stats::Stats {
        &self.stats
    }

    /// The app's id: the `appId` of its keys.
    pub fn app_id(&self) -> String {
        self.config
            .keys
            .first()
            .and_then(|k| k.key.split_once('.'))
            .map(|(app, _)| app.to_owned())
            .unwrap_or_default()
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn history(&self) -> &dyn HistoryStore {
        self.history.as_ref()
    }

    /// Looks up a connection (live or resumable) by connectionId.
    pub fn connection(&self, connection_id: &str) -> Option<ConnectionRecord> {
        self.registry.get(connection_id)
    }

    /// Looks up a connection by its connectionKey, the handle clients present in
    /// `resume=`/`recover=`.
    pub fn connection_by_key(&self, connection_key: &str) -> Option<ConnectionRecord> {
        self.registry.get_by_key(connection_key)
    }

    /// Every registered connection with the channels it is attached to, for
    /// operators' views (the dashboard); read-only. Takes the channel map's read
    /// lock and each channel's lock briefly, one at a time.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut by_generation: HashMap<u64, Vec<String>> = HashMap::new();
        let channels = self.channel_snapshot();
        for ch in channels {
            for id in ch.lock().subscribers.keys() {
                by_generation
                    .entry(*id)
                    .or_default()
                    .push(ch.name().to_owned());
            }
        }
        self.registry
            .list()
            .into_iter()
            .map(|(record, generation)| {
                let mut channels = if record.disconnected_ms.is_none() {
                    by_generation.remove(&generation).unwrap_or_default()
                } else {
                    Vec::new()
                };
                channels.sort();
                ConnectionInfo { record, channels }
            })
            .collect()
    }

    /// Closes a connection from the server side (the dashboard's disconnect): its
    /// transport sends DISCONNECTED (80003) and ends, not resumable; a parked one
    /// is forgotten. False if no such connection.
    pub fn disconnect(&self, connection_id: &str) -> bool {
        let before = self.registry.state(connection_id);
        let known = self.registry.kick(connection_id);
        // A parked connection is forgotten now; a live one when its transport ends.
        if let Some((record, ..)) = before {
            if record.disconnected_ms.is_some() {
                self.store_connection_change(&record);
            }
        }
        known
    }

    /// Number of live WebSocket connections.
    pub fn connection_count(&self) -> usize {
        self.connection_count.load(Ordering::Relaxed)
    }

    /// Reserves a connection slot, refusing past `max_connections` (40111).
    pub fn open_connection(self: &Arc<Self>) -> Result<ConnectionSlot, AblyError> {
        self.spawn_sweeper();
        let prev = self.connection_count.fetch_add(1, Ordering::Relaxed);
        let slot = ConnectionSlot {
            hub: self.clone(),
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            connection_id: None,
            resumable: true,
        };
        if prev >= self.config.max_connections {
            // Dropping the slot gives the count back.
            drop(slot);
            return Err(AblyError::new(
                ErrorCode::ConnectionLimit,
                "Maximum number of connections exceeded",
            ));
        }
        Ok(slot)
    }

    /// The channel, created on first use with its serial continuing from history.
    /// A view (`[?params]name`, `[filter=…]name`) is created with its base channel,
    /// which relays every message to it.
    pub fn channel(&self, name: &str) -> Arc<Channel> {
        if let Some(c) = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return c.clone();
        }
        let view = crate::qualifier::parse(name).ok().filter(|q| q.is_view());
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(name) {
            return c.clone();
        }
        let channel = match view {
            Some(q) => {
                let base = map
                    .entry(q.base.to_owned())
                    .or_insert_with(|| {
                        let last = self.history.last_serial(q.base).unwrap_or(0);
                        Arc::new(Channel::new(q.base, last))
                    })
                    .clone();
                let last = crate::channel::parse_serial(&base.serial()).unwrap_or(0);
                let view = Arc::new(Channel::view(name, q.base, q.filter, last));
                // Under the map's lock (map, then channel): a release of the base
                // cannot pass between its creation and this.
                base.add_view(&view);
                view
            }
            None => {
                let last = self.history.last_serial(name).unwrap_or(0);
                Arc::new(Channel::new(name, last))
            }
        };
        map.insert(name.to_owned(), channel.clone());
        channel
    }

    /// The channels now in the map, taken under its read lock only for the copy, so
    /// that walking them (each under its own lock) never holds the map.
    fn channel_snapshot(&self) -> Vec<Arc<Channel>> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Figures for `/metrics`: live channels (views included), presence members
    /// over all channels, messages published and delivered since start.
    pub fn metrics(&self) -> HubMetrics {
        let channels = self.channel_snapshot();
        HubMetrics {
            connections: self.connection_count() as u64,
            channels: channels.len() as u64,
            presence_members: channels.iter().map(|c| c.member_count() as u64).sum(),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
        }
    }

    /// An existing channel, if any connection or publish has it live.
    pub fn existing_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Names of live channels starting with `prefix`, sorted.
    pub fn channel_names(&self, prefix: &str) -> Vec<String> {
        let map = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = map
            .iter()
            .filter(|(n, c)| n.starts_with(prefix) && !c.is_idle())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// The channels active on any node (attachments or presence members there,
    /// as the engine's occupancy counts tell), starting with `prefix`, sorted.
    pub async fn channel_names_everywhere(&self, prefix: &str) -> Result<Vec<String>, AblyError> {
        let mut names = self.channel_names(prefix);
        names.extend(
            self.engine
                .presence
                .occupied_channels()
                .await?
                .into_iter()
                .filter(|n| n.starts_with(prefix)),
        );
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Forgets `name` if nobody is attached and nobody else holds it. Holding the
    /// write lock while checking the reference count makes this race-free: new users
    /// must take the lock to obtain the channel.
    ///
    /// Lock order is always map, then channel; channel code never takes the map.
    pub fn release_channel(&self, name: &str) {
        // Busy channels (the common case on every publish) need no write lock.
        {
            let map = self.channels.read().unwrap_or_else(|p| p.into_inner());
            match map.get(name) {
                Some(c) if c.is_idle() => {}
                _ => return,
            }
        }
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        let Some(c) = map.get(name) else {
            return;
        };
        if Arc::strong_count(c) != 1 || !c.is_idle() {
            return;
        }
        let Some(view) = map.remove(name) else {
            return;
        };
        // A view leaves its base, which may then be idle too.
        let base = crate::qualifier::base(name);
        let mut base_released = None;
        if base != name {
            if let Some(b) = map.get(base) {
                b.remove_view(&view);
                if Arc::strong_count(b) == 1 && b.is_idle() {
                    base_released = map.remove(base);
                }
            }
        }
        drop(map);
        self.unsubscribe_engine(&view);
        if let Some(b) = base_released {
            self.unsubscribe_engine(&b);
        }
    }

    /// Gives back the broker subscription `ch` took on its first attach, if any.
    fn unsubscribe_engine(&self, ch: &Channel) {
        if !ch.engine_subscribed.swap(false, Ordering::AcqRel) {
            return;
        }
        let broker = self.engine.broker.clone();
        let source = ch.source().to_owned();
        crate::engine::now_or_spawn(Box::pin(async move {
            log_engine_error(broker.unsubscribe(&source).await);
        }));
    }

    /// Publishes `messages` on `channel` and returns its outcome, for callers that
    /// cannot wait (the Redis `PUBLISH` bridge) and tests. The in-process engine
    /// completes at once; an engine that must wait finishes the publish on the
    /// runtime and this reports no serials. Errors are logged.
    pub fn publish(
        &self,
        channel: &str,
        messages: Vec<Message>,
        publisher: &Publisher,
        proto_id: Option<String>,
        origin: Origin,
    ) -> Published {
        let unfinished = Published {
            serials: Vec::new(),
            channel_serial: String::new(),
            delivered: 0,
        };
        let Some(hub) = self.me.upgrade() else {
            return unfinished;
        };
        let (channel, publisher) = (channel.to_owned(), publisher.clone());
        let fut: BoxFuture<'static, Result<Published, AblyError>> = Box::pin(async move {
            hub.publish_async(&channel, messages, &publisher, proto_id, origin)
                .await
        });
        match crate::engine::now_or_spawn(fut) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::error!(error = %e.message, "publish failed");
                unfinished
            }
            None => unfinished,
        }
    }

    /// Publishes `messages` on `channel`: drops ids seen recently, then the broker
    /// orders, stores and fans them out (to observers too). `proto_id` defaults to
    /// a hub-unique id. Fails only when the engine does.
    pub async fn publish_async(
        &self,
        channel: &str,
        messages: Vec<Message>,
        publisher: &Publisher,
        proto_id: Option<String>,
        origin: Origin,
    ) -> Result<Published, AblyError> {
        // A message published on a view is the base channel's.
        let channel = crate::qualifier::base(channel);
        let proto_id = proto_id.unwrap_or_else(|| self.next_publish_id());
        let now = now_ms();
        // Client-supplied ids make publishes idempotent (REST and realtime alike):
        // drop messages whose id was seen on this channel recently.
        // Per message, whether it was new; left empty (all new) without client ids.
        let mut fresh_mask: Vec<bool> = Vec::new();
        let mut recorded_ids: Vec<String> = Vec::new();
        let mut messages = if origin != Origin::Backend && messages.iter().any(|m| m.id.is_some()) {
            fresh_mask = vec![true; messages.len()];
            let ids: Vec<String> = messages.iter().filter_map(|m| m.id.clone()).collect();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let fresh = self
                .engine
                .dedupe
                .first_seen(channel, &id_refs, now)
                .await?;
            let mut fresh = fresh.into_iter();
            let mut kept = Vec::with_capacity(messages.len());
            for (i, m) in messages.into_iter().enumerate() {
                // An id the store did not answer for counts as new.
                if m.id.is_some() && !fresh.next().unwrap_or(true) {
                    fresh_mask[i] = false;
                } else {
                    recorded_ids.extend(m.id.clone());
                    kept.push(m);
                }
            }
            kept
        } else {
            messages
        };
        let transport = match origin {
            Origin::Realtime => Some(crate::stats::Transport::Realtime),
            Origin::Rest => Some(crate::stats::Transport::Rest),
            Origin::Backend => None,
        };
        if let Some(t) = transport.filter(|_| !messages.is_empty()) {
            let bytes = messages.iter().map(Message::size).sum();
            self.stats.record_inbound(t, messages.len(), bytes, now);
        }
        self.messages_in
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        // Held while publishing: the channel (and its views) stay live to receive it.
        let ch = self.channel(channel);
        let mut published = if messages.is_empty() {
            // Nothing to position: the channel's serial as it stands.
            ch.flush_presence();
            Ok(Published {
                serials: Vec::new(),
                channel_serial: ch.serial(),
                delivered: 0,
            })
        } else {
            for (i, m) in messages.iter_mut().enumerate() {
                crate::channel::stamp_message(m, i, &proto_id, now, publisher);
            }
            let publication = self.publication(
                channel,
                publisher,
                proto_id,
                now,
                origin,
                Payload::Messages(messages),
            );
            let before = self.messages_out.load(Ordering::Relaxed);
            self.engine
                .broker
                .publish(publication)
                .await
                .inspect(|p| {
                    if !self.engine.broker.delivers_before_returning() {
                        self.tell_observers(p);
                    }
                })
                .map(|p| Published {
                    serials: p.positions.iter().map(|s| format_serial(*s)).collect(),
                    channel_serial: p.last_position().map(format_serial).unwrap_or_default(),
                    // On this node; exact when the engine delivers during the publish
                    // and nothing else publishes meanwhile (a figure for tests).
                    delivered: self
                        .messages_out
                        .load(Ordering::Relaxed)
                        .saturating_sub(before),
                })
        };
        drop(ch);
        self.release_channel(channel);
        if published.is_err() && !recorded_ids.is_empty() {
            // Not published: a retry with these ids is not a duplicate.
            let ids: Vec<&str> = recorded_ids.iter().map(String::as_str).collect();
            log_engine_error(self.engine.dedupe.release(channel, &ids).await);
        }
        if let Ok(published) = published.as_mut() {
            if fresh_mask.iter().any(|f| !f) {
                let mut assigned = std::mem::take(&mut published.serials).into_iter();
                published.serials = fresh_mask
                    .iter()
                    .map(|fresh| {
                        if *fresh {
                            assigned.next().unwrap_or_default()
                        } else {
                            String::new()
                        }
                    })
                    .collect();
            }
        }
        Ok(published?)
    }

    /// A publication of `payload` on `channel` from this node.
    fn publication(
        &self,
        channel: &str,
        publisher: &Publisher,
        proto_id: String,
        now: i64,
        origin: Origin,
        payload: Payload,
    ) -> Publication {
        Publication {
            channel: channel.to_owned(),
            proto_id,
            connection_id: publisher.connection_id.clone(),
            node: self.node_id.clone(),
            publisher_conn: publisher.conn,
            timestamp: now,
            origin,
            retention: self.retention_for(channel),
            payload,
            positions: Vec::new(),
        }
    }

    /// Whether messages on `channel` may be updated, deleted and appended to
    /// (`mutable_messages` patterns).
    pub fn is_mutable(&self, channel: &str) -> bool {
        self.config
            .mutable_messages
            .iter()
            .any(|p| crate::capability::resource_matches(p, channel))
    }

    /// The message `serial` as published on `channel`, from the broker's history
    /// (so on a shared engine a message published through any node).
    async fn original_message(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Option<Message>, AblyError> {
        let Some(n) = crate::channel::parse_serial(serial) else {
            return Ok(None);
        };
        let q = HistoryQuery {
            limit: 1,
            from_serial: Some(n.saturating_add(1)),
            ..Default::default()
        };
        let snapshot = self.engine.broker.read(channel, q, now_ms()).await?;
        Ok(snapshot
            .page
            .messages
            .into_iter()
            .find(|m| m.serial == n)
            .map(|m| m.message))
    }

    /// Every version of message `serial` on `channel`, the original first; empty
    /// when there is no such message. From the broker, so on a shared engine
    /// the versions made through any node.
    pub async fn message_versions(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Vec<Message>, AblyError> {
        let Some(original) = self.original_message(channel, serial).await? else {
            return Ok(Vec::new());
        };
        let Some(position) = crate::channel::parse_serial(serial) else {
            return Ok(Vec::new());
        };
        let later = self
            .engine
            .broker
            .versions(channel, position, now_ms())
            .await?;
        let mut all = vec![original];
        all.extend(later.into_iter().map(|v| v.message));
        Ok(all)
    }

    /// The latest version of message `serial` on `channel`.
    pub async fn latest_message(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Option<Message>, AblyError> {
        Ok(self.message_versions(channel, serial).await?.pop())
    }

    /// Makes a new version of message `serial` (`action` update, delete or
    /// append): the fields `patch` carries replace the latest version's (an
    /// append adds its data to the latest data), `patch.version` is the operation
    /// (clientId, description, metadata). Subscribers get the new version; the
    /// version serial is returned.
    pub async fn mutate_message(
        &self,
        channel: &str,
        serial: &str,
        action: u64,
        patch: Message,
        publisher: &Publisher,
    ) -> Result<String, AblyError> {
        use crate::protocol::message_actions::{APPEND, DELETE, UPDATE};
        if !self.is_mutable(channel) {
            return Err(AblyError::new(
                ErrorCode::MutableMessagesDisabled,
                format!(
                    "Message updates, deletes and appends are not enabled for channel {channel}"
                ),
            ));
        }
        let mut next = self.latest_message(channel, serial).await?.ok_or_else(|| {
            AblyError::new(ErrorCode::NotFound, format!("Message {serial} not found"))
        })?;
        // What subscribers are sent: the new version, or for an append the
        // appended data alone (kept before `patch` is spent).
        let appended = (action == APPEND).then(|| (patch.data.clone(), patch.encoding.clone()));
        match action {
            APPEND => {
                next.data =
                    match (next.data.take(), patch.data) {
                        (Some(MessageData::String(a)), Some(MessageData::String(b))) => {
                            Some(MessageData::String(a + &b))
                        }
                        (Some(MessageData::Binary(a)), Some(MessageData::Binary(b))) => Some(
                            MessageData::Binary([a.as_ref(), b.as_ref()].concat().into()),
                        ),
                        (None, b) => b,
                        _ => return Err(AblyError::new(
                            ErrorCode::InvalidMessageData,
                            "Only string or binary data can be appended to data of the same type",
                        )),
                    };
                // An append reads as an update of the whole message.
                next.action = Some(UPDATE);
            }
            UPDATE | DELETE => {
                if patch.data.is_some() {
                    next.data = patch.data;
                    next.encoding = patch.encoding;
                }
                if patch.name.is_some() {
                    next.name = patch.name;
                }
                if patch.extras.is_some() {
                    next.extras = patch.extras;
                }
                next.action = Some(action);
            }
            _ => {
                return Err(AblyError::new(
                    ErrorCode::InvalidParameterValue,
                    format!("Invalid message action {action}"),
                ))
            }
        }
        let mut version = match patch.version {
            Some(serde_json::Value::Object(v)) => v,
            _ => serde_json::Map::new(),
        };
        if !version.contains_key("clientId") {
            if let Some(c) = &publisher.client_id {
                version.insert("clientId".into(), c.clone().into());
            }
        }
        next.version = Some(serde_json::Value::Object(version));
        next.serial = Some(serial.to_owned());
        let ch = self.channel(channel);
        let now = now_ms();
        next.timestamp.get_or_insert(now);
        let mut sent = next.clone();
        if let Some((data, encoding)) = appended {
            sent.data = data;
            sent.encoding = encoding;
            sent.action = Some(APPEND);
        }
        let publication = self.publication(
            channel,
            publisher,
            String::new(),
            now,
            Origin::Rest,
            Payload::Version {
                stored: Box::new(next),
                sent: Box::new(sent),
            },
        );
        let published = self.engine.broker.publish(publication).await;
        drop(ch);
        self.release_channel(channel);
        let published = published?;
        let version_serial = published
            .last_position()
            .map(format_serial)
            .unwrap_or_default();
        Ok(version_serial)
    }

    /// Publishes annotations of messages on a `mutable_messages` channel (else
    /// `93002`): each gets an id, a serial from the channel, the publisher's
    /// clientId and connectionId and a timestamp; attachments with the
    /// annotation_subscribe mode receive it, and every receiving attachment the
    /// annotated message's new summary.
    pub async fn publish_annotations(
        &self,
        channel: &str,
        annotations: Vec<crate::protocol::Annotation>,
        publisher: &Publisher,
        proto_id: &str,
    ) -> Result<(), AblyError> {
        if !self.is_mutable(channel) {
            return Err(AblyError::new(
                ErrorCode::MutableMessagesDisabled,
                format!("Annotations are not enabled for channel {channel}"),
            ));
        }
        let now = now_ms();
        for (i, mut a) in annotations.into_iter().enumerate() {
            let Some(_) = a.message_serial else {
                return Err(AblyError::new(
                    ErrorCode::InvalidParameterValue,
                    "An annotation needs the messageSerial of the message it annotates",
                ));
            };
            if a.kind.as_deref().is_none_or(str::is_empty) {
                return Err(AblyError::new(
                    ErrorCode::InvalidParameterValue,
                    "An annotation needs a type",
                ));
            }
            a.id.get_or_insert_with(|| format!("{proto_id}:{i}"));
            a.action.get_or_insert(0);
            a.timestamp.get_or_insert(now);
            if a.client_id.is_none() {
                a.client_id.clone_from(&publisher.client_id);
            }
            a.connection_id.clone_from(&publisher.connection_id);
            let ch = self.channel(channel);
            let publication = self.publication(
                channel,
                publisher,
                proto_id.to_owned(),
                now,
                Origin::Rest,
                Payload::Annotation {
                    annotation: Box::new(a),
                    all: Vec::new(),
                },
            );
            let published = self.engine.broker.publish(publication).await;
            drop(ch);
            self.release_channel(channel);
            published?;
        }
        Ok(())
    }

    /// The annotations of message `serial`, in publish order, from the broker
    /// (so on a shared engine those published through any node).
    pub async fn annotations_of(
        &self,
        channel: &str,
        serial: &str,
    ) -> Result<Vec<crate::protocol::Annotation>, AblyError> {
        let Some(position) = crate::channel::parse_serial(serial) else {
            return Ok(Vec::new());
        };
        Ok(self
            .engine
            .broker
            .annotations(channel, position, now_ms())
            .await?)
    }

    /// Delay that coalesces occupancy changes into one `[meta]occupancy` event.
    pub fn occupancy_debounce(&self) -> Duration {
        Duration::from_millis(self.config.occupancy_debounce_ms)
    }

    /// `channel`'s occupancy over the deployment: this node's counts, read
    /// now, and the other nodes' from the engine (channel status REST).
    pub async fn occupancy(&self, channel: &str) -> Result<Occupancy, AblyError> {
        let others = self.other_nodes_occupancy(channel.to_owned()).await?;
        let here = self
            .existing_channel(channel)
            .map(|c| c.occupancy())
            .unwrap_or_default();
        Ok(here.plus(&others))
    }

    /// The sum of every other node's counts of `channel` in the engine. Owns
    /// what it needs, so that nothing holds the hub or a channel while it waits.
    fn other_nodes_occupancy(
        &self,
        channel: String,
    ) -> BoxFuture<'static, crate::engine::EngineResult<Occupancy>> {
        let store = self.engine.presence.clone();
        let node = self.node_id.clone();
        Box::pin(async move {
            let counts = store.occupancy(&channel).await?;
            Ok(counts
                .iter()
                .filter(|(n, _)| *n != node)
                .fold(Occupancy::default(), |sum, (_, o)| sum.plus(o)))
        })
    }

    /// `ch`'s occupancy changed on this node (an attach, a detach, a presence
    /// change): its `[meta]occupancy` event here, and this node's counts to the
    /// engine, from where the other nodes send theirs. Both debounced.
    ///
    /// Why the counts go through the engine rather than with the notification:
    /// the channel status REST endpoint reads them on any node at any time, and
    /// a dead node's counts must go when it does, which the presence store's
    /// node heartbeats already decide.
    pub fn occupancy_changed(&self, ch: &Arc<Channel>) {
        self.schedule_occupancy_event(ch);
        self.share_occupancy(ch.name());
    }

    /// Schedules `ch`'s `[meta]occupancy` event (if an attachment wants one and
    /// none is scheduled): after the debounce, the other nodes' counts are read
    /// and the event carries them added to this node's, counted at send time.
    /// A read that does not complete at once (a shared engine) lets later
    /// changes schedule another event, so that a notification arriving while
    /// it is under way is not lost. Holds the channel only weakly.
    fn schedule_occupancy_event(&self, ch: &Arc<Channel>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !ch.occupancy_event_due() {
            return;
        }
        let (channel, hub) = (Arc::downgrade(ch), self.me.clone());
        let debounce = self.occupancy_debounce();
        rt.spawn(async move {
            tokio::time::sleep(debounce).await;
            let read = {
                let (Some(ch), Some(hub)) = (channel.upgrade(), hub.upgrade()) else {
                    return;
                };
                hub.other_nodes_occupancy(ch.name().to_owned())
            };
            let (others, scheduled) = {
                use futures_util::FutureExt;
                let mut read = read;
                match (&mut read).now_or_never() {
                    Some(others) => (others, true),
                    None => {
                        if let Some(ch) = channel.upgrade() {
                            ch.occupancy_event_reading();
                        }
                        (read.await, false)
                    }
                }
            };
            let Some(ch) = channel.upgrade() else {
                return;
            };
            match others {
                Ok(others) => ch.send_occupancy(now_ms(), others, scheduled),
                Err(e) => {
                    if scheduled {
                        ch.occupancy_event_reading();
                    }
                    log_engine_error::<()>(Err(e));
                }
            }
        });
    }

    fn lock_share(&self) -> std::sync::MutexGuard<'_, OccupancyShare> {
        self.occupancy_share
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules writing this node's counts of `name` to the engine, once the
    /// debounce has passed (one write per window, of the counts at its end).
    fn share_occupancy(&self, name: &str) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut share = self.lock_share();
            if share.pending.contains(name) {
                return;
            }
            share.pending.insert(name.to_owned());
        }
        let (hub, name) = (self.me.clone(), name.to_owned());
        let debounce = self.occupancy_debounce();
        rt.spawn(async move {
            tokio::time::sleep(debounce).await;
            if let Some(hub) = hub.upgrade() {
                hub.write_occupancy(&name);
            }
        });
    }

    /// Writes this node's counts of `name` to the engine if they differ from
    /// what it wrote last, then tells the other nodes (positionless, through
    /// the broker) to read the totals again. Counts are taken when the write is
    /// queued, in the channel's lane: writes land in the order they were
    /// counted. A released channel counts zero, which forgets this node's.
    fn write_occupancy(&self, name: &str) {
        let counts = self
            .existing_channel(name)
            .map(|c| c.occupancy())
            .unwrap_or_default();
        {
            let mut share = self.lock_share();
            share.pending.remove(name);
            let last = share
                .written
                .get(name)
                .copied()
                .unwrap_or(Some(Occupancy::default()));
            if last == Some(counts) {
                return;
            }
            if counts.is_zero() {
                share.written.remove(name);
            } else {
                share.written.insert(name.to_owned(), Some(counts));
            }
        }
        let store = self.engine.presence.clone();
        let broker = self.engine.broker.clone();
        let (node, hub, owned) = (self.node_id.clone(), self.me.clone(), name.to_owned());
        let announce = self.occupancy_publication(name);
        self.occupancy_out.run(
            name,
            Box::pin(async move {
                if let Err(e) = store.set_occupancy(&owned, &node, counts, now_ms()).await {
                    log_engine_error::<()>(Err(e));
                    // Unknown now: written again (whatever they are) shortly.
                    if let Some(hub) = hub.upgrade() {
                        hub.lock_share().written.insert(owned.clone(), None);
                        hub.share_occupancy(&owned);
                    }
                    return;
                }
                log_engine_error(broker.publish(announce).await);
            }),
        );
    }

    /// Writes every channel's counts this node has in the engine again (as if
    /// unknown there), debounced like any change.
    fn share_all_occupancy_again(&self) {
        let names: Vec<String> = {
            let mut share = self.lock_share();
            let names: Vec<String> = share.written.keys().cloned().collect();
            for name in &names {
                share.written.insert(name.clone(), None);
            }
            names
        };
        for name in names {
            self.share_occupancy(&name);
        }
    }

    /// A dead node's counts of `name` were reaped here: the event on this node,
    /// and the notification to the others (each channel is reaped by one node).
    fn occupancy_reaped(&self, name: &str) {
        if let Some(ch) = self.existing_channel(name) {
            self.schedule_occupancy_event(&ch);
        }
        let broker = self.engine.broker.clone();
        let announce = self.occupancy_publication(name);
        self.occupancy_out.run(
            name,
            Box::pin(async move {
                log_engine_error(broker.publish(announce).await);
            }),
        );
    }

    /// "This node's counts of `name` changed" as a broker publication (no
    /// position), on the channel `name` is (or is a view of), which every node
    /// with an attachment on either listens to.
    fn occupancy_publication(&self, name: &str) -> Publication {
        Publication {
            channel: crate::qualifier::base(name).to_owned(),
            proto_id: String::new(),
            connection_id: None,
            node: self.node_id.clone(),
            publisher_conn: None,
            timestamp: now_ms(),
            origin: Origin::Realtime,
            retention: Duration::ZERO,
            payload: Payload::Occupancy(name.to_owned()),
            positions: Vec::new(),
        }
    }

    /// How long `channel`'s history is kept: the first matching namespace rule, else
    /// `history_retention_secs`.
    pub fn retention_for(&self, channel: &str) -> Duration {
        let secs = self
            .retention_rules
            .iter()
            .find(|r| crate::capability::resource_matches(&r.pattern, channel))
            .map_or(self.config.history_retention_secs, |r| r.secs);
        Duration::from_secs(secs)
    }

    /// A fresh id for a publish; its messages are `<id>:<index>` unless they
    /// carry ids of their own.
    pub fn next_publish_id(&self) -> String {
        format!(
            "{}:{}",
            self.config.server_id,
            self.next_publish.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A message produced by the Redis side, checked as a publish would be.
    fn backend_message(
        &self,
        channel: &str,
        name: Option<String>,
        data: MessageData,
        encoding: Option<String>,
    ) -> Result<Message, AblyError> {
        validate_channel_name(channel)?;
        let m = Message {
            name,
            data: Some(data),
            encoding,
            ..Default::default()
        };
        if m.size() > self.config.max_message_size {
            return Err(AblyError::of(ErrorCode::MessageTooLarge));
        }
        Ok(m)
    }

    /// [`Hub::publish_from_backend`], waiting for the engine: for the bridge on a
    /// shared engine, which runs it in the channel's order.
    pub async fn publish_from_backend_async(
        &self,
        channel: &str,
        name: Option<String>,
        data: impl Into<MessageData>,
        encoding: Option<String>,
    ) -> Result<String, AblyError> {
        let m = self.backend_message(channel, name, data.into(), encoding)?;
        let p = self
            .publish_async(
                channel,
                vec![m],
                &Publisher::default(),
                None,
                Origin::Backend,
            )
            .await?;
        Ok(p.channel_serial)
    }

    /// Whether `channel` is attached anywhere: on this node, or (asking the
    /// engine) on another. An engine that cannot tell counts as "no".
    pub async fn is_attached_anywhere(&self, channel: &str) -> bool {
        if self.existing_channel(channel).is_some() {
            return true;
        }
        match self.engine.broker.has_interest(channel).await {
            Ok(any) => any,
            Err(e) => {
                log_engine_error::<()>(Err(e));
                false
            }
        }
    }

    /// Bridge entry point: delivers a message produced by the Redis side (e.g.
    /// `PUBLISH`) to realtime subscribers of `channel`, and records it in history.
    /// See docs/realtime.md for the name/data/encoding mapping.
    pub fn publish_from_backend(
        &self,
        channel: &str,
        name: Option<String>,
        data: impl Into<MessageData>,
        encoding: Option<String>,
    ) -> Result<String, AblyError> {
        let m = self.backend_message(channel, name, data.into(), encoding)?;
        let p = self.publish(
            channel,
            vec![m],
            &Publisher::default(),
            None,
            Origin::Backend,
        );
        Ok(p.channel_serial)
    }

    /// Every message published on any channel, in per-channel order, for bridging
    /// to Redis `SUBSCRIBE`. Check [`ChannelEvent::origin`] to avoid echo loops.
    /// A receiver that falls more than 4096 events behind gets `Lagged`.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<ChannelEvent>> {
        self.observers.subscribe()
    }

    /// Applies stamped presence messages from `connection_id` on `channel`.
    pub fn presence(
        &self,
        channel: &str,
        msgs: Vec<crate::protocol::PresenceMessage>,
        connection_id: &str,
    ) -> Result<(), AblyError> {
        let ch = self.channel(channel);
        let mut changes = Vec::new();
        let result = ch.presence_update(
            msgs,
            connection_id,
            now_ms(),
            self.config.max_presence_members,
            (self.config.presence_batch_threshold > 0).then(|| {
                (
                    self.config.presence_batch_threshold,
                    Duration::from_millis(self.config.presence_batch_ms),
                )
            }),
            &mut |m| changes.push(m.clone()),
        );
        self.store_presence(channel, changes);
        self.occupancy_changed(&ch);
        drop(ch);
        self.release_channel(channel);
        result
    }

    /// Makes every member `connection_id` entered on `channels` leave.
    pub fn remove_presence(&self, connection_id: &str, channels: &[String]) {
        let now = now_ms();
        for name in channels {
            if let Some(ch) = self.existing_channel(name) {
                let mut leaves = Vec::new();
                if ch.remove_connection_members(connection_id, now, &mut |m| {
                    leaves.push(m.clone());
                }) > 0
                {
                    self.occupancy_changed(&ch);
                }
                self.store_presence(name, leaves);
                drop(ch);
                self.release_channel(name);
            }
        }
    }

    /// A page of `channel`'s presence history (REST `/presence/history`): the
    /// events of every node, which the broker keeps with their publication
    /// (see [`Publication::presence_history_messages`]).
    pub async fn presence_history_page(
        &self,
        channel: &str,
        q: &HistoryQuery,
    ) -> Result<(Vec<crate::protocol::PresenceMessage>, Option<u64>), AblyError> {
        let page = self
            .engine
            .broker
            .read(&presence_history_key(channel), q.clone(), now_ms())
            .await?
            .page;
        let members = page
            .messages
            .into_iter()
            .map(|s| {
                let m = s.message;
                crate::protocol::PresenceMessage {
                    id: m.id,
                    action: m.name.and_then(|n| n.parse().ok()),
                    client_id: m.client_id,
                    connection_id: m.connection_id,
                    data: m.data,
                    encoding: m.encoding,
                    extras: m.extras,
                    timestamp: m.timestamp,
                }
            })
            .collect();
        Ok((members, page.next))
    }

    /// The end of a lost transport's presence grace: `connection_id`'s members
    /// on `channels` leave, unless a transport serves it here again, or another
    /// node took the connection over (a resume there). Then that node owns its
    /// presence (the client enters again there): the members are dropped here
    /// without a LEAVE, and the engine's presence store is left to the new owner.
    /// Returns whether they left.
    pub async fn end_presence_grace(&self, connection_id: &str, channels: &[String]) -> bool {
        if self.is_connection_live(connection_id) {
            return false;
        }
        let taken = match self.engine.connections.load(connection_id).await {
            Ok(Some(state)) => state.node != self.node_id,
            Ok(None) => false,
            Err(e) => {
                log_engine_error::<()>(Err(e));
                false
            }
        };
        if taken {
            for name in channels {
                if let Some(ch) = self.existing_channel(name) {
                    if ch.forget_connection_members(connection_id) > 0 {
                        self.occupancy_changed(&ch);
                    }
                    drop(ch);
                    self.release_channel(name);
                }
            }
            return false;
        }
        self.remove_presence(connection_id, channels);
        true
    }

    /// Whether a transport currently serves `connection_id`.
    pub fn is_connection_live(&self, connection_id: &str) -> bool {
        self.registry
            .get(connection_id)
            .is_some_and(|r| r.disconnected_ms.is_none())
    }

    /// Reads a page of `channel`'s history.
    /// Straight from the history store, for callers that cannot wait (the
    /// dashboard) and tests; REST reads [`Hub::read_history`].
    pub fn history_page(&self, channel: &str, q: &HistoryQuery) -> HistoryPage {
        self.history.query(channel, q, now_ms())
    }

    /// Reads a page of `channel`'s history from the broker (REST history).
    pub async fn read_history(
        &self,
        channel: &str,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, AblyError> {
        let snapshot = self
            .engine
            .broker
            .read(channel, q.clone(), now_ms())
            .await?;
        Ok(snapshot.page)
    }
}

impl BrokerHandler for Hub {
    /// A publication of this node or another reaches this node's subscribers and
    /// observers, in the channel's position order.
    fn on_publication(&self, p: &Publication) {
        let summary = match &p.payload {
            Payload::Messages(_) => {
                // Another node's publication, or ours when the broker delivers it
                // before returning (else `publish_async` tells of ours).
                if p.node != self.node_id || self.engine.broker.delivers_before_returning() {
                    self.tell_observers(p);
                }
                None
            }
            Payload::Version { .. } => None,
            Payload::Annotation { all, .. } => annotation_summary(all),
            Payload::Presence(events) => {
                // This node's own events reached its subscribers when applied.
                if p.node != self.node_id {
                    if let Some(ch) = self.existing_channel(&p.channel) {
                        ch.remote_presence(events.clone(), p.timestamp);
                    }
                }
                return;
            }
            Payload::Occupancy(name) => {
                // This node scheduled its own event when its counts changed.
                if p.node != self.node_id {
                    if let Some(ch) = self.existing_channel(name) {
                        self.schedule_occupancy_event(&ch);
                    }
                }
                return;
            }
        };
        let Some(ch) = self.existing_channel(&p.channel) else {
            return;
        };
        // Echo suppression names transports of the node that took the publish.
        let publisher = Publisher {
            conn: p.publisher_conn.filter(|_| p.node == self.node_id),
            connection_id: p.connection_id.clone(),
            client_id: None,
        };
        let delivered = ch.deliver(p, &publisher, summary);
        self.messages_out.fetch_add(delivered, Ordering::Relaxed);
    }

    /// Reads what this node missed of `channel` from history and delivers it,
    /// holding later publications back until then (see
    /// [`Channel::begin_recovery`]).
    fn on_gap(&self, channel: &str) {
        let (Some(ch), Some(hub)) = (self.existing_channel(channel), self.me.upgrade()) else {
            return;
        };
        // Held from here until the task below finishes the recovery.
        let Some(from) = ch.begin_recovery() else {
            return;
        };
        crate::engine::now_or_spawn(Box::pin(async move {
            let mut from = from;
            loop {
                let reached = hub.deliver_missed(&ch, from).await;
                let (delivered, again) = ch.finish_recovery(reached);
                hub.messages_out.fetch_add(delivered, Ordering::Relaxed);
                match again {
                    Some(next) => from = next,
                    None => break,
                }
            }
            hub.resync_presence(&ch).await;
        }));
    }
}

/// Most messages read back from history after a fan-out gap: as many as the
/// engine's history keeps of a channel.
const MAX_RECOVERED: usize = 100_000;
/// Messages per history read while recovering.
const RECOVERY_PAGE: usize = 1000;

/// Reads of the presence store a SYNC (an attach's, a client's, a resync's)
/// makes while other nodes' presence events keep overtaking them; the last one
/// is sent regardless.
const PRESENCE_SYNC_READS: usize = 3;

impl Hub {
    /// Delivers what `channel`'s history holds after serial `from` (what a
    /// fan-out gap made this node miss) while its live publications are held,
    /// read and delivered a page at a time, at most [`MAX_RECOVERED`] messages.
    /// Returns the serial reached.
    async fn deliver_missed(&self, channel: &Channel, from: u64) -> u64 {
        let name = channel.name.as_str();
        let (mut after, mut reached, mut read) = (from, from, 0);
        loop {
            let page = match self
                .engine
                .broker
                .since(name, after, RECOVERY_PAGE, now_ms())
                .await
            {
                Ok(snapshot) => snapshot.page,
                Err(e) => {
                    tracing::warn!(channel = name, error = %e.0, "realtime: missed publications not recovered");
                    return reached;
                }
            };
            read += page.messages.len();
            let missed = self.recovered_publications(name, page.messages);
            let (delivered, now_reached) = channel.deliver_recovered(reached, missed);
            self.messages_out.fetch_add(delivered, Ordering::Relaxed);
            reached = now_reached;
            match page.next {
                Some(next) if read < MAX_RECOVERED => after = next,
                Some(_) => {
                    tracing::warn!(
                        channel = name,
                        recovered = read,
                        "realtime: more publications missed than recovered; attached clients lose the rest"
                    );
                    return reached;
                }
                None => return reached,
            }
        }
    }

    /// Publications rebuilt from history entries, in position order: one per
    /// run of entries one publish made (adjacent positions, one protocol id), so
    /// they go out in the frames they first went out in.
    fn recovered_publications(
        &self,
        channel: &str,
        entries: Vec<crate::history::StoredMessage>,
    ) -> Vec<(Publication, Publisher)> {
        let mut out: Vec<(Publication, Publisher)> = Vec::new();
        for e in entries {
            let id = e.message.id.clone().unwrap_or_default();
            let proto_id = id
                .rsplit_once(':')
                .map_or(id.as_str(), |(p, _)| p)
                .to_owned();
            if let Some((p, _)) = out.last_mut() {
                let joins = p.proto_id == proto_id
                    && p.timestamp == e.received_ms
                    && p.last_position().is_some_and(|l| l + 1 == e.serial);
                if let (true, Payload::Messages(msgs)) = (joins, &mut p.payload) {
                    msgs.push(e.message);
                    p.positions.push(e.serial);
                    continue;
                }
            }
            let publisher = Publisher {
                conn: None,
                connection_id: e.message.connection_id.clone(),
                client_id: None,
            };
            out.push((
                Publication {
                    channel: channel.to_owned(),
                    proto_id,
                    connection_id: e.message.connection_id.clone(),
                    node: String::new(),
                    publisher_conn: None,
                    timestamp: e.received_ms,
                    origin: Origin::Backend,
                    retention: self.retention_for(channel),
                    payload: Payload::Messages(vec![e.message]),
                    positions: vec![e.serial],
                },
                publisher,
            ));
        }
        out
    }
}

impl Hub {
    /// Hands a publication's messages to [`Hub::subscribe_all`]'s receivers.
    fn tell_observers(&self, p: &Publication) {
        let Payload::Messages(msgs) = &p.payload else {
            return;
        };
        if self.observers.receiver_count() == 0 {
            return;
        }
        for (m, serial) in msgs.iter().zip(&p.positions) {
            let _ = self.observers.send(Arc::new(ChannelEvent {
                channel: p.channel.clone(),
                serial: *serial,
                origin: p.origin,
                message: m.clone(),
                local: p.node == self.node_id,
            }));
        }
    }

    /// Attaches `sub` to `channel` with `backlog` replayed: reads the broker (for a
    /// rewind or resume), then attaches under the channel's lock with what it read
    /// (see [`Channel::attach_after_read`]), reading again if publishes overtook
    /// the read. Fails only when the engine does.
    pub async fn attach(
        &self,
        channel: &Arc<Channel>,
        mut sub: Subscriber,
        backlog: Backlog,
    ) -> Result<Attachment, AblyError> {
        let source = channel.source();
        let wants_presence = sub.presence;
        // Interest first, then the read: what is positioned after the read is
        // delivered here.
        if !channel.engine_subscribed.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.engine.broker.subscribe(source).await {
                channel.engine_subscribed.store(false, Ordering::Release);
                return Err(e.into());
            }
            // The channel object started at this node's own history (empty on
            // a shared engine): from now on it is at the broker's position, so a
            // resume from a serial another node delivered reads what it missed.
            match self.engine.broker.position(source).await {
                Ok(Some(position)) => channel.catch_up(position),
                Ok(None) => {}
                Err(e) => log_engine_error::<()>(Err(e)),
            }
        }
        for attempt in 1..=ATTACH_READS {
            let read = match channel.backlog_query(&backlog) {
                Some(q) => Some(self.engine.broker.read(source, q, now_ms()).await?),
                None => None,
            };
            match channel.attach_after_read(sub, &backlog, read, attempt == ATTACH_READS) {
                Ok(att) if wants_presence => {
                    return self.with_other_nodes_members(channel, att).await
                }
                Ok(att) => return Ok(att),
                Err(again) => sub = again,
            }
        }
        // The last attempt never asks for another read.
        Err(AblyError::of(ErrorCode::Internal))
    }

    /// Adds to an attachment's presence set (this node's members) the members
    /// other nodes entered, from the engine's presence store. Read after the
    /// attach: an event another node announces from then on reaches the new
    /// subscriber too, so it ends with the right set whichever comes first.
    async fn with_other_nodes_members(
        &self,
        channel: &Channel,
        mut att: Attachment,
    ) -> Result<Attachment, AblyError> {
        let others = self.other_nodes_members_for_sync(channel).await?;
        crate::presence::add_members(&mut att.members, others);
        Ok(att)
    }

    /// The members of `channel` that other nodes own, from the engine's
    /// presence store (this node's own are in its channel).
    async fn other_nodes_members(
        &self,
        channel: &str,
    ) -> Result<Vec<crate::protocol::PresenceMessage>, AblyError> {
        let owned = self.engine.presence.owned_members(channel).await?;
        Ok(owned
            .into_iter()
            .filter(|(node, _)| *node != self.node_id)
            .map(|(_, m)| m)
            .collect())
    }

    /// [`Hub::other_nodes_members`] for a SYNC to a subscriber already in
    /// place. Another node's event passed on while the store is read may be
    /// newer than the read and already queued for the subscriber, ahead of the
    /// SYNC; the store is then read again (at most [`PRESENCE_SYNC_READS`]
    /// times), so that the SYNC never undoes an event sent before it.
    async fn other_nodes_members_for_sync(
        &self,
        channel: &Channel,
    ) -> Result<Vec<crate::protocol::PresenceMessage>, AblyError> {
        let mut read = 1;
        loop {
            let seen = channel.remote_presence_frames();
            let others = self.other_nodes_members(&channel.name).await?;
            if read == PRESENCE_SYNC_READS || channel.remote_presence_frames() == seen {
                return Ok(others);
            }
            read += 1;
        }
    }

    /// `channel`'s whole presence set, as a SYNC a client asks for sends it:
    /// this node's members and the other nodes'.
    pub async fn presence_set(
        &self,
        channel: &Channel,
    ) -> Result<Vec<crate::protocol::PresenceMessage>, AblyError> {
        let others = self.other_nodes_members_for_sync(channel).await?;
        let mut members = channel.members(None, None);
        crate::presence::add_members(&mut members, others);
        Ok(members)
    }

    /// After a fan-out gap, when `channel` has presence subscribers here: sends
    /// them the whole presence set again (see [`Channel::resync_presence`]),
    /// since the other nodes' presence events of the gap did not reach them.
    async fn resync_presence(&self, channel: &Channel) {
        for read in 1..=PRESENCE_SYNC_READS {
            let (subscribed, seen) = channel.presence_resync_point();
            if !subscribed {
                return;
            }
            let others = match self.other_nodes_members(&channel.name).await {
                Ok(others) => others,
                Err(e) => {
                    tracing::warn!(channel = %channel.name, error = %e.message, "realtime: presence not synced again after a fan-out gap");
                    return;
                }
            };
            if channel.resync_presence(others, seen, read == PRESENCE_SYNC_READS) {
                return;
            }
        }
    }

    /// Writes presence changes (in the order the channel applied them) to the
    /// engine's presence store, owned by this node, then hands them to the other
    /// nodes through the broker for their presence subscribers. In the channel's
    /// order (see [`crate::engine::OrderedCalls`]).
    fn store_presence(&self, channel: &str, changes: Vec<crate::protocol::PresenceMessage>) {
        if changes.is_empty() {
            return;
        }
        let store = self.engine.presence.clone();
        let broker = self.engine.broker.clone();
        let (name, node) = (channel.to_owned(), self.node_id.clone());
        let announce = self.presence_publication(channel, changes.clone());
        self.presence_out.run(
            channel,
            Box::pin(async move {
                for m in changes {
                    let connection_id = m.connection_id.clone().unwrap_or_default();
                    let client_id = m.client_id.clone().unwrap_or_default();
                    if m.action == Some(crate::presence::actions::LEAVE) {
                        log_engine_error(store.leave(&name, &connection_id, &client_id).await);
                    } else {
                        let mut present = m;
                        present.action = Some(crate::presence::actions::PRESENT);
                        let now = now_ms();
                        log_engine_error(store.enter(&name, &node, present, now).await);
                    }
                }
                log_engine_error(broker.publish(announce).await);
            }),
        );
    }

    /// Presence events of this node as a broker publication (no position).
    fn presence_publication(
        &self,
        channel: &str,
        events: Vec<crate::protocol::PresenceMessage>,
    ) -> Publication {
        Publication {
            channel: channel.to_owned(),
            proto_id: String::new(),
            connection_id: None,
            node: self.node_id.clone(),
            publisher_conn: None,
            timestamp: now_ms(),
            origin: Origin::Realtime,
            // How long its events stay in the channel's presence history.
            retention: self.retention_for(channel),
            payload: Payload::Presence(events),
            positions: Vec::new(),
        }
    }

    /// `channel`'s presence members on every node, optionally filtered (REST).
    pub async fn presence_members(
        &self,
        channel: &str,
        client_id: Option<&str>,
        connection_id: Option<&str>,
    ) -> Result<Vec<crate::protocol::PresenceMessage>, AblyError> {
        let members = self.engine.presence.members(channel).await?;
        Ok(members
            .into_iter()
            .filter(|m| {
                connection_id.is_none_or(|x| m.connection_id.as_deref() == Some(x))
                    && client_id.is_none_or(|x| m.client_id.as_deref().unwrap_or("") == x)
            })
            .collect())
    }

    /// Registers here, parked, a connection another node served, if the engine
    /// keeps one under `key`; whether it did. A connection this node served is
    /// never adopted back (the registry is its authority here).
    async fn adopt_connection(&self, key: &str) -> Result<bool, AblyError> {
        let Some((_, id)) = key.split_once('!') else {
            return Ok(false);
        };
        let Some(state) = self.engine.connections.load(id).await? else {
            return Ok(false);
        };
        if state.node == self.node_id || state.record.connection_key != key {
            return Ok(false);
        }
        self.registry.adopt(state.record, state.msg_serial);
        Ok(true)
    }

    /// Writes what the registry now holds of the connection `before` was (parked)
    /// to the engine, or forgets it there when the registry did; both only under
    /// the key this node knew, so that a node that lost the connection to a resume
    /// elsewhere leaves the new owner's state alone (and forgets its own copy).
    fn store_connection_change(&self, before: &ConnectionRecord) {
        let store = self.engine.connections.clone();
        let id = before.connection_id.clone();
        let key = before.connection_key.clone();
        let state = self
            .registry
            .state(&id)
            .map(|(record, msg_serial, _)| ConnectionState {
                record,
                msg_serial,
                node: self.node_id.clone(),
            });
        let hub = self.me.clone();
        crate::engine::now_or_spawn(Box::pin(async move {
            let Some(state) = state else {
                return log_engine_error(store.remove(&id, &key).await);
            };
            match store.take_over(&key, state.clone()).await {
                Ok(true) => {}
                Ok(false) => match store.load(&id).await {
                    // Not in the engine (made before it, or expired there).
                    Ok(None) => log_engine_error(store.save(state).await),
                    // Resumed on another node: it is theirs.
                    Ok(Some(_)) => {
                        if let Some(hub) = hub.upgrade() {
                            hub.registry.forget_if_key(&id, &key);
                        }
                    }
                    Err(e) => log_engine_error::<()>(Err(e)),
                },
                Err(e) => log_engine_error::<()>(Err(e)),
            }
        }));
    }

    /// The periodic part of the engine: expiry of history, positions and
    /// connection state; this node's heartbeat; dead nodes' presence members
    /// leaving.
    async fn sweep_engine(&self, now: i64, connection_ttl_ms: i64) {
        log_engine_error(self.engine.broker.expire(now).await);
        log_engine_error(self.engine.connections.expire(now, connection_ttl_ms).await);
        match self.engine.presence.heartbeat(&self.node_id, now).await {
            Ok(()) => {
                // Silent for longer than the grace (stalled, or the engine was
                // out of reach): other nodes may have taken this one for dead
                // and reaped its counts, so they are written again.
                let before = self.last_beat_ms.swap(now, Ordering::Relaxed);
                if before != 0 && now.saturating_sub(before) > self.presence_node_grace_ms() {
                    self.share_all_occupancy_again();
                }
            }
            Err(e) => log_engine_error::<()>(Err(e)),
        }
        // Counts before members (either order is safe; see PresenceStore).
        match self
            .engine
            .presence
            .reap_occupancy(now, self.presence_node_grace_ms())
            .await
        {
            Ok(channels) => {
                for name in channels {
                    self.occupancy_reaped(&name);
                }
            }
            Err(e) => log_engine_error::<()>(Err(e)),
        }
        let reaped = match self
            .engine
            .presence
            .reap(now, self.presence_node_grace_ms())
            .await
        {
            Ok(r) => r,
            Err(e) => return log_engine_error::<()>(Err(e)),
        };
        // A dead node's members leave: announced here and, through the broker,
        // on every other node (each member is reaped by one node only).
        let mut by_channel: HashMap<String, Vec<crate::protocol::PresenceMessage>> = HashMap::new();
        for (i, (channel, member)) in reaped.into_iter().enumerate() {
            let connection_id = member.connection_id.clone().unwrap_or_default();
            by_channel
                .entry(channel)
                .or_default()
                .push(crate::protocol::PresenceMessage {
                    id: Some(format!("synthetic-leave-{connection_id}:{now}:{i}")),
                    action: Some(crate::presence::actions::LEAVE),
                    timestamp: Some(now),
                    extras: None,
                    ..member
                });
        }
        for (channel, leaves) in by_channel {
            if let Some(ch) = self.existing_channel(&channel) {
                ch.remote_presence(leaves.clone(), now);
                self.schedule_occupancy_event(&ch);
            }
            let announce = self.presence_publication(&channel, leaves);
            let broker = self.engine.broker.clone();
            self.presence_out.run(
                &channel,
                Box::pin(async move {
                    log_engine_error(broker.publish(announce).await);
                }),
            );
        }
    }
}

/// Logs a failed engine call the caller cannot report to a client.
fn log_engine_error<T>(r: Result<T, crate::engine::EngineError>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "realtime engine call failed");
    }
}

/// History key for a channel's presence events. The control character cannot appear
/// in a valid channel name, so it never collides with a channel's own history.
pub fn presence_history_key(channel: &str) -> String {
    format!("{PRESENCE_HISTORY_PREFIX}{channel}")
}

/// What [`presence_history_key`] puts before the channel's name.
pub const PRESENCE_HISTORY_PREFIX: &str = "\u{1}presence:";

/// Ably's channel naming rules (40010); see [`crate::qualifier::parse`].
pub fn validate_channel_name(name: &str) -> Result<(), AblyError> {
    crate::qualifier::parse(name).map(|_| ())
}

/// The capability operation a message action (update, delete, append) needs.
pub fn mutation_op(action: u64) -> Result<&'static str, AblyError> {
    use crate::protocol::message_actions::{APPEND, DELETE, UPDATE};
    match action {
        UPDATE | APPEND => Ok(crate::capability::ops::MESSAGE_UPDATE_ANY),
        DELETE => Ok(crate::capability::ops::MESSAGE_DELETE_ANY),
        other => Err(AblyError::new(
            ErrorCode::InvalidParameterValue,
            format!("Invalid message action {other}"),
        )),
    }
}

/// A message's annotation summary by type, as Ably aggregates them (by the
/// type's suffix): `total.v1` counts, `flag.v1` counts distinct clients,
/// `distinct.v1` / `unique.v1` count distinct clients per name, `multiple.v1`
/// counts per name and client. Deletes (action 1) take a client's annotation back.
/// The annotated message's summary after a delivered annotation, from every
/// annotation of the message up to it (the broker's `all`, in position order).
fn annotation_summary(all: &[crate::protocol::Annotation]) -> Option<Message> {
    let target = all.last()?.message_serial.clone()?;
    Some(Message {
        action: Some(crate::protocol::message_actions::SUMMARY),
        serial: Some(target),
        annotations: Some(serde_json::json!({"summary": summarise(all)})),
        ..Default::default()
    })
}

fn summarise(list: &[crate::protocol::Annotation]) -> serde_json::Value {
    use std::collections::BTreeMap;
    // type -> name -> client -> count (creates minus deletes)
    let mut by_type: BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>> = BTreeMap::new();
    for a in list {
        let kind = a.kind.clone().unwrap_or_default();
        let name = a.name.clone().unwrap_or_default();
        let client = a.client_id.clone().unwrap_or_default();
        let n = by_type
            .entry(kind)
            .or_default()
            .entry(name)
            .or_default()
            .entry(client)
            .or_default();
        if a.action == Some(1) {
            *n = 0;
        } else {
            *n += a.count.map_or(1, |c| c as i64);
        }
    }
    let mut out = serde_json::Map::new();
    for (kind, names) in by_type {
        let clients_of = |m: &BTreeMap<String, i64>| -> Vec<String> {
            m.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(c, _)| c.clone())
                .collect()
        };
        let v = if kind.ends_with("total.v1") {
            let total: i64 = names
                .values()
                .flat_map(|m| m.values())
                .filter(|n| **n > 0)
                .sum();
            serde_json::json!({"total": total})
        } else if kind.ends_with("flag.v1") {
            let mut all: BTreeMap<String, i64> = BTreeMap::new();
            for m in names.values() {
                for (c, n) in m {
                    *all.entry(c.clone()).or_default() += n;
                }
            }
            let ids = clients_of(&all);
            serde_json::json!({"total": ids.len(), "clientIds": ids, "clipped": false})
        } else if kind.ends_with("multiple.v1") {
            let mut per = serde_json::Map::new();
            for (name, m) in &names {
                let counts: serde_json::Map<String, serde_json::Value> = m
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(c, n)| (c.clone(), (*n).into()))
                    .collect();
                if counts.is_empty() {
                    continue;
                }
                let total: i64 = m.values().filter(|n| **n > 0).sum();
                per.insert(
                    name.clone(),
                    serde_json::json!({"total": total, "clientIds": counts, "totalUnidentified": 0,
                        "clipped": false, "totalClientIds": m.values().filter(|n| **n > 0).count()}),
                );
            }
            serde_json::Value::Object(per)
        } else {
            let mut per = serde_json::Map::new();
            for (name, m) in &names {
                let ids = clients_of(m);
                if ids.is_empty() {
                    continue;
                }
                per.insert(
                    name.clone(),
                    serde_json::json!({"total": ids.len(), "clientIds": ids, "clipped": false}),
                );
            }
            serde_json::Value::Object(per)
        };
        out.insert(kind, v);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Subscriber;
    use crate::history::MemoryHistoryStore;
    use crate::outbox::Outbox;

    #[test]
    fn channel_names_follow_ablys_rules() {
        for ok in [
            "a",
            "ns:chan",
            "a:",
            "[?rewind=1]chan",
            "[meta]log",
            "a[b]",
            "é:x",
        ] {
            assert!(validate_channel_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ":hell", "::", "[invalid", "[x]chan", "[meta]", "[?a=1]:b", "a\nb",
        ] {
            let e = validate_channel_name(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidChannelName, "{bad}");
        }
    }

    fn hub() -> Arc<Hub> {
        Hub::new(
            RealtimeConfig::default(),
            Arc::new(MemoryHistoryStore::default()),
        )
    }

    fn subscribe(h: &Hub, ch: &str, id: u64) -> Arc<Outbox> {
        let (tx, rx) = crate::outbox::channel(16);
        h.channel(ch).attach(
            Subscriber::test(id, &format!("c{id}"), tx),
            crate::channel::Backlog::None,
            h.history(),
            0,
        );
        rx
    }

    #[tokio::test]
    async fn backend_publish_reaches_subscribers_observers_and_history() {
        let h = hub();
        let rx = subscribe(&h, "news", 1);
        let mut all = h.subscribe_all();
        h.publish_from_backend("news", Some("n".into()), "hello", None)
            .unwrap();
        let f = rx.recv().await.unwrap();
        let m = &f.message.messages.as_ref().unwrap()[0];
        assert_eq!(m.data, Some(MessageData::String("hello".into())));
        let ev = all.recv().await.unwrap();
        assert_eq!(ev.channel, "news");
        assert_eq!(ev.origin, Origin::Backend);
        assert!(ev.message_json().contains("\"hello\""));
        let page = h.history_page("news", &HistoryQuery::default());
        assert_eq!(page.messages.len(), 1);
    }

    #[tokio::test]
    async fn serials_increase_across_channel_recreation() {
        let h = hub();
        let a = h.publish(
            "x",
            vec![Message::default()],
            &Publisher::default(),
            None,
            Origin::Rest,
        );
        assert!(h.existing_channel("x").is_none(), "idle channel released");
        let b = h.publish(
            "x",
            vec![Message::default()],
            &Publisher::default(),
            None,
            Origin::Rest,
        );
        assert!(b.channel_serial > a.channel_serial);
    }

    #[tokio::test]
    async fn rest_ids_are_idempotent() {
        let h = hub();
        let _keep = subscribe(&h, "d", 1);
        let m = Message {
            id: Some("fixed:0".into()),
            ..Default::default()
        };
        let a = h.publish(
            "d",
            vec![m.clone()],
            &Publisher::default(),
            None,
            Origin::Rest,
        );
        let b = h.publish("d", vec![m], &Publisher::default(), None, Origin::Rest);
        assert!(!a.serials[0].is_empty());
        assert!(b.serials[0].is_empty());
        assert_eq!(
            h.history_page("d", &HistoryQuery::default()).messages.len(),
            1
        );
    }

    #[tokio::test]
    async fn realtime_ids_are_idempotent_too() {
        let h = hub();
        let rx = subscribe(&h, "d", 1);
        let m = Message {
            id: Some("client:0".into()),
            ..Default::default()
        };
        let publisher = Publisher {
            conn: Some(2),
            connection_id: Some("c2".into()),
            client_id: None,
        };
        for serial in 0..2 {
            h.publish(
                "d",
                vec![m.clone()],
                &publisher,
                Some(format!("c2:{serial}")),
                Origin::Realtime,
            );
        }
        assert!(rx.recv().await.is_some());
        assert!(rx.try_recv().is_err(), "duplicate id delivered once");
    }

    #[tokio::test]
    async fn presence_events_are_kept_in_presence_history() {
        use crate::presence::actions;
        use crate::protocol::PresenceMessage;
        let h = hub();
        let _keep = subscribe(&h, "p", 1);
        let enter = PresenceMessage {
            id: Some("c9:0:0".into()),
            action: Some(actions::ENTER),
            client_id: Some("ann".into()),
            connection_id: Some("c9".into()),
            data: Some(MessageData::String("hi".into())),
            timestamp: Some(1),
            ..Default::default()
        };
        h.presence("p", vec![enter], "c9").unwrap();
        h.remove_presence("c9", &["p".to_owned()]);
        let q = HistoryQuery {
            direction: crate::history::Direction::Forwards,
            ..Default::default()
        };
        let (events, next) = h.presence_history_page("p", &q).await.expect("read");
        assert!(next.is_none());
        let acts: Vec<_> = events.iter().map(|e| e.action).collect();
        assert_eq!(acts, vec![Some(actions::ENTER), Some(actions::LEAVE)]);
        assert_eq!(events[0].data, Some(MessageData::String("hi".into())));
        assert!(h
            .history_page("p", &HistoryQuery::default())
            .messages
            .is_empty());
    }

    #[test]
    fn sweeper_starts_lazily_for_hubs_built_outside_a_runtime() {
        let h = hub();
        assert!(!h.sweeper_started.load(Ordering::Relaxed));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let _slot = h.open_connection().expect("slot");
        });
        assert!(h.sweeper_started.load(Ordering::Relaxed));
    }

    #[test]
    fn retention_follows_namespace_rules() {
        let h = Hub::new(
            serde_json::from_str(r#"{"history_retention":{"stream:*":259200,"stream:hot:*":10}}"#)
                .unwrap(),
            Arc::new(MemoryHistoryStore::default()),
        );
        assert_eq!(h.retention_for("stream:a"), Duration::from_secs(259200));
        assert_eq!(h.retention_for("stream:hot:x"), Duration::from_secs(10));
        assert_eq!(h.retention_for("chat"), Duration::from_secs(120));
    }

    #[tokio::test]
    async fn history_uses_the_channel_retention() {
        let h = Hub::new(
            serde_json::from_str(r#"{"history_retention":[{"pattern":"short","secs":0}]}"#)
                .unwrap(),
            Arc::new(MemoryHistoryStore::default()),
        );
        for ch in ["short", "long"] {
            h.publish(
                ch,
                vec![Message::default()],
                &Publisher::default(),
                None,
                Origin::Rest,
            );
        }
        // Zero retention: gone as soon as the clock moves on.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(h
            .history_page("short", &HistoryQuery::default())
            .messages
            .is_empty());
        assert_eq!(
            h.history_page("long", &HistoryQuery::default())
                .messages
                .len(),
            1
        );
    }

    /// Two hubs on one in-process engine: two nodes of one deployment.
    fn two_nodes() -> (Arc<Hub>, Arc<Hub>) {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let engine = Engine::in_process(history.clone());
        let node = || {
            Hub::try_with_engine(RealtimeConfig::default(), history.clone(), engine.clone())
                .expect("hub")
        };
        (node(), node())
    }

    #[tokio::test]
    async fn a_publish_on_one_node_reaches_the_others_once_in_order() {
        let (a, b) = two_nodes();
        let on_b = subscribe(&b, "x", 1);
        let on_a = subscribe(&a, "x", 2);
        let m = |id: &str| Message {
            id: Some(id.into()),
            ..Default::default()
        };
        let first = a
            .publish_async(
                "x",
                vec![m("i1")],
                &Publisher::default(),
                None,
                Origin::Rest,
            )
            .await
            .expect("publish");
        let again = b
            .publish_async(
                "x",
                vec![m("i1"), m("i2")],
                &Publisher::default(),
                None,
                Origin::Rest,
            )
            .await
            .expect("publish");
        assert_eq!(
            again.serials[0], "",
            "an id seen on node a is a duplicate on b"
        );
        assert!(
            again.serials[1] > first.serials[0],
            "one sequence for both nodes"
        );
        for rx in [&on_a, &on_b] {
            let got: Vec<_> = (0..2)
                .map(|_| rx.try_recv().expect("delivered"))
                .map(|f| f.message.messages.as_ref().expect("messages")[0].id.clone())
                .collect();
            assert_eq!(got, vec![Some("i1".to_owned()), Some("i2".to_owned())]);
            assert!(rx.try_recv().is_err(), "nothing twice");
        }
    }

    #[tokio::test]
    async fn members_of_a_connection_resumed_elsewhere_do_not_leave_when_the_old_grace_ends() {
        use crate::presence::actions::{ENTER, LEAVE};
        let (a, b) = two_nodes();
        let id = "uvwxyzabcd";
        let key = crate::registry::connection_key_for(id);
        let mut slot = a.open_connection().expect("slot");
        slot.register(ConnectionRecord {
            connection_id: id.into(),
            connection_key: key.clone(),
            client_id: Some("ann".into()),
            key_name: "app.key".into(),
            connected_ms: now_ms(),
            disconnected_ms: None,
        });
        a.presence("room", vec![enter("ann", id)], id)
            .expect("enter on a");
        let (watch_a, _) = presence_subscriber(&a, "room", 7).await;
        let (watch_b, _) = presence_subscriber(&b, "room", 8).await;
        // The transport drops (resumable) and the client resumes on node b,
        // where it enters again (the new node owns its presence).
        drop(slot);
        let mut taker = b.open_connection().expect("slot");
        taker
            .resume(&key, "app.key", Some("ann"))
            .await
            .expect("resumed on b");
        b.presence("room", vec![enter("ann", id)], id)
            .expect("enter on b");
        assert_eq!(presence_events(&watch_a), vec![(ENTER, "ann".to_owned())]);
        presence_events(&watch_b);
        // Node a's grace for its lost transport ends: nothing leaves anywhere.
        let left = a.end_presence_grace(id, &["room".to_owned()]).await;
        assert!(!left, "taken over: not a leave");
        assert!(presence_events(&watch_a).is_empty(), "no LEAVE on node a");
        assert!(presence_events(&watch_b).is_empty(), "no LEAVE on node b");
        let members = b
            .presence_members("room", None, None)
            .await
            .expect("members");
        assert_eq!(members.len(), 1, "still present, owned by node b");
        // A connection nobody took over does leave.
        let other = "klmnopqrsz";
        a.presence("room", vec![enter("bob", other)], other)
            .expect("enter");
        presence_events(&watch_b);
        assert!(a.end_presence_grace(other, &["room".to_owned()]).await);
        assert_eq!(presence_events(&watch_b), vec![(LEAVE, "bob".to_owned())]);
    }

    #[tokio::test]
    async fn a_connection_parked_on_one_node_resumes_on_another() {
        let (a, b) = two_nodes();
        let id = "abcdefghij";
        let key = crate::registry::connection_key_for(id);
        let mut slot = a.open_connection().expect("slot");
        let link = slot.register(ConnectionRecord {
            connection_id: id.into(),
            connection_key: key.clone(),
            client_id: Some("ann".into()),
            key_name: "app.key".into(),
            connected_ms: now_ms(),
            disconnected_ms: None,
        });
        link.set_last_msg_serial(41);
        // The transport drops (resumable): node a parks the connection.
        drop(slot);
        let mut taker = b.open_connection().expect("slot");
        let (rec, link) = taker
            .resume(&key, "app.key", Some("ann"))
            .await
            .expect("resumed on node b");
        assert_eq!(rec.connection_id, id);
        assert_eq!(link.last_msg_serial(), Some(41), "msgSerial carried over");
        assert_ne!(rec.connection_key, key, "a new key, as on one node");
        // The old key is spent everywhere.
        let mut late = a.open_connection().expect("slot");
        let e = late.resume(&key, "app.key", Some("ann")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ConnectionExpired);
    }

    #[tokio::test]
    async fn a_node_that_lost_a_connection_to_another_leaves_its_state_alone() {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let engine = Engine::in_process(history.clone());
        let node = || {
            Hub::try_with_engine(RealtimeConfig::default(), history.clone(), engine.clone())
                .expect("hub")
        };
        let (a, b) = (node(), node());
        let id = "klmnopqrst";
        let key = crate::registry::connection_key_for(id);
        let mut slot = a.open_connection().expect("slot");
        slot.register(ConnectionRecord {
            connection_id: id.into(),
            connection_key: key.clone(),
            client_id: None,
            key_name: "app.key".into(),
            connected_ms: now_ms(),
            disconnected_ms: None,
        });
        // Node b takes the connection over before node a noticed its transport
        // was gone (node a still thinks it live).
        let mut taker = b.open_connection().expect("slot");
        let (rec, _) = taker.resume(&key, "app.key", None).await.expect("resumed");
        // Node a's transport ends late, resumable: it must not park b's connection.
        drop(slot);
        let kept = engine
            .connections
            .load(id)
            .await
            .expect("load")
            .expect("kept");
        assert_eq!(kept.record.connection_key, rec.connection_key, "b's key");
        assert_eq!(kept.record.disconnected_ms, None, "b's transport is live");
        assert!(a.connection(id).is_none(), "node a forgot its copy");
        // Node b's transport ends for good: forgotten everywhere.
        taker.set_resumable(false);
        drop(taker);
        assert_eq!(engine.connections.load(id).await, Ok(None));
    }

    #[tokio::test]
    async fn a_dead_nodes_members_leave_after_the_grace_period() {
        use crate::presence::actions;
        use crate::protocol::PresenceMessage;
        let (a, b) = two_nodes();
        let _keep = subscribe(&a, "p", 1);
        let now = now_ms();
        let enter = PresenceMessage {
            id: Some("c9:0:0".into()),
            action: Some(actions::ENTER),
            client_id: Some("ann".into()),
            connection_id: Some("c9".into()),
            timestamp: Some(now),
            ..Default::default()
        };
        a.presence("p", vec![enter], "c9").expect("enter");
        let seen = b.presence_members("p", None, None).await.expect("members");
        assert_eq!(seen.len(), 1, "node b sees node a's member");
        assert_eq!(seen[0].action, Some(actions::PRESENT));
        // Node b keeps beating; node a has stopped (it died).
        let ttl = 120_000;
        b.sweep_engine(now + b.presence_node_grace_ms(), ttl).await;
        assert_eq!(
            b.presence_members("p", None, None).await.map(|m| m.len()),
            Ok(1),
            "within the grace period"
        );
        b.sweep_engine(now + 2 * b.presence_node_grace_ms(), ttl)
            .await;
        assert_eq!(
            b.presence_members("p", None, None).await.map(|m| m.len()),
            Ok(0),
            "gone after it"
        );
    }

    /// A presence store whose next members read runs `after_read` once it has
    /// read and before it answers: another node changing presence right then.
    struct LateRead {
        inner: Arc<dyn crate::engine::PresenceStore>,
        after_read: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl crate::engine::PresenceStore for LateRead {
        fn enter<'a>(
            &'a self,
            channel: &'a str,
            node: &'a str,
            member: crate::protocol::PresenceMessage,
            now_ms: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            self.inner.enter(channel, node, member, now_ms)
        }
        fn leave<'a>(
            &'a self,
            channel: &'a str,
            connection_id: &'a str,
            client_id: &'a str,
        ) -> BoxFuture<'a, crate::engine::EngineResult<bool>> {
            self.inner.leave(channel, connection_id, client_id)
        }
        fn owned_members<'a>(
            &'a self,
            channel: &'a str,
        ) -> BoxFuture<
            'a,
            crate::engine::EngineResult<Vec<(String, crate::protocol::PresenceMessage)>>,
        > {
            Box::pin(async move {
                let read = self.inner.owned_members(channel).await;
                let hook = self.after_read.lock().ok().and_then(|mut h| h.take());
                if let Some(hook) = hook {
                    hook();
                }
                read
            })
        }
        fn heartbeat<'a>(
            &'a self,
            node: &'a str,
            now_ms: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            self.inner.heartbeat(node, now_ms)
        }
        fn reap(
            &self,
            now_ms: i64,
            grace_ms: i64,
        ) -> BoxFuture<
            '_,
            crate::engine::EngineResult<Vec<(String, crate::protocol::PresenceMessage)>>,
        > {
            self.inner.reap(now_ms, grace_ms)
        }
        fn set_occupancy<'a>(
            &'a self,
            channel: &'a str,
            node: &'a str,
            counts: crate::presence::Occupancy,
            now_ms: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            self.inner.set_occupancy(channel, node, counts, now_ms)
        }
        fn occupancy<'a>(
            &'a self,
            channel: &'a str,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Vec<(String, crate::presence::Occupancy)>>>
        {
            self.inner.occupancy(channel)
        }
        fn reap_occupancy(
            &self,
            now_ms: i64,
            grace_ms: i64,
        ) -> BoxFuture<'_, crate::engine::EngineResult<Vec<String>>> {
            self.inner.reap_occupancy(now_ms, grace_ms)
        }
        fn occupied_channels(&self) -> BoxFuture<'_, crate::engine::EngineResult<Vec<String>>> {
            self.inner.occupied_channels()
        }
    }

    /// An attach reads the other nodes' members after the subscriber is in
    /// place; a LEAVE another node makes just after that read reaches the
    /// subscriber at once, ahead of its SYNC. The SYNC must not list the member
    /// again (the client would keep it): the store is read again.
    #[tokio::test]
    async fn an_attach_sync_never_undoes_an_event_sent_before_it() {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let mut engine = Engine::in_process(history.clone());
        let late = Arc::new(LateRead {
            inner: engine.presence.clone(),
            after_read: std::sync::Mutex::new(None),
        });
        engine.presence = late.clone();
        let node = || {
            Hub::try_with_engine(RealtimeConfig::default(), history.clone(), engine.clone())
                .expect("hub")
        };
        let (a, b) = (node(), node());
        b.presence("p", vec![enter("bob", "cb")], "cb")
            .expect("enter");
        let b2 = b.clone();
        *late.after_read.lock().expect("hook") = Some(Box::new(move || {
            b2.presence("p", vec![leave("bob", "cb")], "cb")
                .expect("leave");
        }));
        let (rx, members) = presence_subscriber(&a, "p", 1).await;
        assert_eq!(
            presence_events(&rx),
            vec![(crate::presence::actions::LEAVE, "bob".to_string())],
            "the LEAVE went out during the attach"
        );
        assert!(
            members.is_empty(),
            "the SYNC does not bring bob back: {members:?}"
        );

        // The same for a SYNC the client asks for.
        b.presence("p", vec![enter("carol", "cc")], "cc")
            .expect("enter");
        let b2 = b.clone();
        *late.after_read.lock().expect("hook") = Some(Box::new(move || {
            b2.presence("p", vec![leave("carol", "cc")], "cc")
                .expect("leave");
        }));
        let set = a.presence_set(&a.channel("p")).await.expect("set");
        assert!(set.is_empty(), "carol is not brought back: {set:?}");
    }

    /// A presence subscriber attached to `ch` on `h` through the hub (as a
    /// connection attaches), with the SYNC set it got.
    async fn presence_subscriber(
        h: &Hub,
        ch: &str,
        id: u64,
    ) -> (Arc<Outbox>, Vec<crate::protocol::PresenceMessage>) {
        let (tx, rx) = crate::outbox::channel(16);
        let channel = h.channel(ch);
        let att = h
            .attach(
                &channel,
                Subscriber::test(id, &format!("sub{id}"), tx),
                Backlog::None,
            )
            .await
            .expect("attach");
        (rx, att.members)
    }

    /// The presence events of every PRESENCE frame queued on `rx`, as (action,
    /// clientId).
    fn presence_events(rx: &Outbox) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            if f.message.action == crate::protocol::Action::Presence {
                for m in f.message.presence.iter().flatten() {
                    out.push((
                        m.action.unwrap_or(0),
                        m.client_id.clone().unwrap_or_default(),
                    ));
                }
            }
        }
        out
    }

    fn enter(client: &str, connection: &str) -> crate::protocol::PresenceMessage {
        crate::protocol::PresenceMessage {
            id: Some(format!("{connection}:0:0")),
            action: Some(crate::presence::actions::ENTER),
            client_id: Some(client.into()),
            connection_id: Some(connection.into()),
            timestamp: Some(now_ms()),
            ..Default::default()
        }
    }

    /// The LEAVE of a member [`enter`] made.
    fn leave(client: &str, connection: &str) -> crate::protocol::PresenceMessage {
        crate::protocol::PresenceMessage {
            id: Some(format!("{connection}:1:0")),
            action: Some(crate::presence::actions::LEAVE),
            ..enter(client, connection)
        }
    }

    #[tokio::test]
    async fn presence_events_of_one_node_reach_presence_subscribers_on_another() {
        use crate::presence::actions::{ENTER, LEAVE};
        let (a, b) = two_nodes();
        let (on_b, synced) = presence_subscriber(&b, "room", 1).await;
        assert!(synced.is_empty());
        let (on_a, _) = presence_subscriber(&a, "room", 2).await;
        a.presence("room", vec![enter("ann", "c1")], "c1")
            .expect("enter");
        assert_eq!(presence_events(&on_b), vec![(ENTER, "ann".to_owned())]);
        assert_eq!(
            presence_events(&on_a),
            vec![(ENTER, "ann".to_owned())],
            "the entering node's subscribers get it once, not again from the broker"
        );
        a.remove_presence("c1", &["room".to_owned()]);
        assert_eq!(presence_events(&on_b), vec![(LEAVE, "ann".to_owned())]);
        assert_eq!(presence_events(&on_a), vec![(LEAVE, "ann".to_owned())]);
    }

    #[tokio::test]
    async fn an_attach_on_one_node_syncs_the_members_other_nodes_entered() {
        let (a, b) = two_nodes();
        a.presence("room", vec![enter("ann", "c1")], "c1")
            .expect("enter on a");
        b.presence("room", vec![enter("bob", "c2")], "c2")
            .expect("enter on b");
        let (_on_b, synced) = presence_subscriber(&b, "room", 1).await;
        let mut clients: Vec<String> = synced.iter().filter_map(|m| m.client_id.clone()).collect();
        clients.sort();
        assert_eq!(
            clients,
            vec!["ann", "bob"],
            "each member once, from both nodes"
        );
    }

    #[tokio::test]
    async fn occupancy_counts_every_node_and_a_dead_ones_stop_counting() {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let engine = Engine::in_process(history.clone());
        let config = RealtimeConfig {
            occupancy_debounce_ms: 10,
            ..Default::default()
        };
        let node =
            || Hub::try_with_engine(config.clone(), history.clone(), engine.clone()).expect("hub");
        let (a, b, dead) = (node(), node(), node());
        let (tx, on_a) = crate::outbox::channel(64);
        let room = a.channel("room");
        let watcher = Subscriber {
            occupancy: true,
            ..Subscriber::test(1, "a1", tx)
        };
        a.attach(&room, watcher, Backlog::None)
            .await
            .expect("attach");
        a.occupancy_changed(&room);
        let mut queues = Vec::new();
        for (h, id) in [(&b, 2), (&b, 3), (&dead, 4)] {
            let (tx, rx) = crate::outbox::channel(16);
            queues.push(rx);
            let ch = h.channel("room");
            h.attach(
                &ch,
                Subscriber::test(id, &format!("c{id}"), tx),
                Backlog::None,
            )
            .await
            .expect("attach");
            h.occupancy_changed(&ch);
        }
        // The connections of the last `[meta]occupancy` event on `rx`, once one
        // says `want` (bounded wait).
        async fn wait_for_event(rx: &Outbox, want: u64) -> Option<u64> {
            let mut last = None;
            for _ in 0..500 {
                while let Ok(f) = rx.try_recv() {
                    let m = &f.message.messages.as_ref().expect("messages")[0];
                    assert_eq!(m.name.as_deref(), Some("[meta]occupancy"));
                    let Some(MessageData::String(json)) = &m.data else {
                        panic!("json text expected");
                    };
                    let v: serde_json::Value = serde_json::from_str(json).expect("json");
                    last = v["metrics"]["connections"].as_u64();
                }
                if last == Some(want) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            last
        }
        assert_eq!(
            wait_for_event(&on_a, 4).await,
            Some(4),
            "an event on a counts the attachments on b and the other node"
        );
        for h in [&a, &b] {
            assert_eq!(
                h.occupancy("room").await.map(|o| o.connections),
                Ok(4),
                "the status counts every node"
            );
        }
        // `dead` stops beating; a and b go on.
        let t = now_ms() + 2 * a.presence_node_grace_ms();
        for h in [&a, &b] {
            h.engine
                .presence
                .heartbeat(&h.node_id, t)
                .await
                .expect("heartbeat");
        }
        b.sweep_engine(t, 120_000).await;
        assert_eq!(
            wait_for_event(&on_a, 3).await,
            Some(3),
            "reaped on b, the event on a leaves the dead node out"
        );
        assert_eq!(a.occupancy("room").await.map(|o| o.connections), Ok(3));

        // b goes silent past the grace and a reaps its counts; when b beats
        // again it writes them again.
        let later = t + 2 * a.presence_node_grace_ms();
        a.sweep_engine(later, 120_000).await;
        assert_eq!(wait_for_event(&on_a, 1).await, Some(1), "b taken for dead");
        b.sweep_engine(later, 120_000).await;
        assert_eq!(
            wait_for_event(&on_a, 3).await,
            Some(3),
            "b counts again once it beats"
        );
    }

    #[tokio::test]
    async fn a_dead_nodes_members_leave_on_every_live_node() {
        use crate::presence::actions::LEAVE;
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let engine = Engine::in_process(history.clone());
        let node = || {
            Hub::try_with_engine(RealtimeConfig::default(), history.clone(), engine.clone())
                .expect("hub")
        };
        let (dead, b, c) = (node(), node(), node());
        let (on_b, _) = presence_subscriber(&b, "room", 1).await;
        let (on_c, _) = presence_subscriber(&c, "room", 2).await;
        dead.presence("room", vec![enter("ann", "c9")], "c9")
            .expect("enter");
        presence_events(&on_b);
        presence_events(&on_c);
        let now = now_ms();
        // b and c keep beating; the node that entered ann does not.
        c.sweep_engine(now + 2 * b.presence_node_grace_ms(), 120_000)
            .await;
        b.sweep_engine(now + 2 * b.presence_node_grace_ms(), 120_000)
            .await;
        assert_eq!(
            presence_events(&on_c),
            vec![(LEAVE, "ann".to_owned())],
            "the reaping node announces the leave"
        );
        assert_eq!(
            presence_events(&on_b),
            vec![(LEAVE, "ann".to_owned())],
            "and so does every other node, once"
        );
    }

    /// The in-process broker, counting each channel's subscriptions.
    struct CountingBroker {
        inner: crate::engine::MemoryBroker,
        interest: Mutex<HashMap<String, i64>>,
    }

    impl CountingBroker {
        fn count(&self, channel: &str, by: i64) {
            *self
                .interest
                .lock()
                .unwrap()
                .entry(channel.to_owned())
                .or_default() += by;
        }
    }

    impl crate::engine::Broker for CountingBroker {
        fn register(&self, h: Weak<dyn BrokerHandler>) {
            self.inner.register(h)
        }
        fn delivers_before_returning(&self) -> bool {
            self.inner.delivers_before_returning()
        }
        fn subscribe<'a>(&'a self, c: &'a str) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            self.count(c, 1);
            self.inner.subscribe(c)
        }
        fn unsubscribe<'a>(&'a self, c: &'a str) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            self.count(c, -1);
            self.inner.unsubscribe(c)
        }
        fn publish(
            &self,
            p: Publication,
        ) -> BoxFuture<'_, crate::engine::EngineResult<Publication>> {
            self.inner.publish(p)
        }
        fn read<'a>(
            &'a self,
            c: &'a str,
            q: HistoryQuery,
            now: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<crate::engine::Snapshot>> {
            self.inner.read(c, q, now)
        }
        fn position<'a>(
            &'a self,
            c: &'a str,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Option<u64>>> {
            self.inner.position(c)
        }
        fn versions<'a>(
            &'a self,
            c: &'a str,
            serial: u64,
            now: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Vec<crate::history::StoredMessage>>>
        {
            self.inner.versions(c, serial, now)
        }
        fn annotations<'a>(
            &'a self,
            c: &'a str,
            serial: u64,
            now: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Vec<crate::protocol::Annotation>>> {
            self.inner.annotations(c, serial, now)
        }
        fn expire(&self, now: i64) -> BoxFuture<'_, crate::engine::EngineResult<()>> {
            self.inner.expire(now)
        }
    }

    #[tokio::test]
    async fn a_channel_holds_one_broker_subscription_while_live() {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let broker = Arc::new(CountingBroker {
            inner: crate::engine::MemoryBroker::new(history.clone()),
            interest: Mutex::new(HashMap::new()),
        });
        let engine = Engine {
            broker: broker.clone(),
            ..Engine::in_process(history.clone())
        };
        let h = Hub::try_with_engine(RealtimeConfig::default(), history, engine).expect("hub");
        let interest = |c: &str| broker.interest.lock().unwrap().get(c).copied();
        for (name, base) in [("plain", "plain"), ("[?rewind=1]base", "base")] {
            let ch = h.channel(name);
            for id in [1, 2] {
                let (tx, _rx) = crate::outbox::channel(4);
                h.attach(&ch, Subscriber::test(id, "c", tx), Backlog::None)
                    .await
                    .expect("attach");
            }
            assert_eq!(interest(base), Some(1), "{name}: subscribed once");
            // Publishing without subscribers takes no interest.
            h.publish(
                "idle",
                vec![Message::default()],
                &Publisher::default(),
                None,
                Origin::Rest,
            );
            assert_eq!(interest("idle"), None, "{name}: no interest in idle");
            ch.detach(1);
            ch.detach(2);
            drop(ch);
            h.release_channel(name);
            assert_eq!(interest(base), Some(0), "{name}: given back on release");
        }
    }

    /// A broker whose engine is unreachable.
    struct DownBroker;

    impl crate::engine::Broker for DownBroker {
        fn register(&self, _: Weak<dyn BrokerHandler>) {}
        fn subscribe<'a>(&'a self, _: &'a str) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            crate::engine::ready(Err(crate::engine::EngineError("down".into())))
        }
        fn unsubscribe<'a>(&'a self, _: &'a str) -> BoxFuture<'a, crate::engine::EngineResult<()>> {
            crate::engine::ready(Ok(()))
        }
        fn publish(
            &self,
            _: Publication,
        ) -> BoxFuture<'_, crate::engine::EngineResult<Publication>> {
            crate::engine::ready(Err(crate::engine::EngineError("down".into())))
        }
        fn read<'a>(
            &'a self,
            _: &'a str,
            _: HistoryQuery,
            _: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<crate::engine::Snapshot>> {
            crate::engine::ready(Err(crate::engine::EngineError("down".into())))
        }
        fn position<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Option<u64>>> {
            crate::engine::ready(Err(crate::engine::EngineError("down".into())))
        }
        fn versions<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Vec<crate::history::StoredMessage>>>
        {
            crate::engine::ready(Err(crate::engine::EngineError("down".into())))
        }
        fn annotations<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: i64,
        ) -> BoxFuture<'a, crate::engine::EngineResult<Vec<crate::protocol::Annotation>>> {
            crate::engine::ready(Err(crate::engine::EngineError("down".into())))
        }
        fn expire(&self, _: i64) -> BoxFuture<'_, crate::engine::EngineResult<()>> {
            crate::engine::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_publish_the_engine_refused_fails_and_its_ids_stay_unseen() {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let engine = Engine {
            broker: Arc::new(DownBroker),
            ..Engine::in_process(history.clone())
        };
        let h =
            Hub::try_with_engine(RealtimeConfig::default(), history, engine.clone()).expect("hub");
        let m = Message {
            id: Some("retry-me".into()),
            ..Default::default()
        };
        let e = h
            .publish_async("d", vec![m], &Publisher::default(), None, Origin::Rest)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(
            engine.dedupe.first_seen("d", &["retry-me"], now_ms()).await,
            Ok(vec![true]),
            "the retry is not a duplicate"
        );
    }

    #[test]
    fn connection_limit() {
        let h = Hub::new(
            RealtimeConfig {
                max_connections: 1,
                ..Default::default()
            },
            Arc::new(MemoryHistoryStore::default()),
        );
        let a = h.open_connection().unwrap();
        assert_eq!(
            h.open_connection().err().map(|e| e.code),
            Some(ErrorCode::ConnectionLimit)
        );
        drop(a);
        assert!(h.open_connection().is_ok());
    }
}
