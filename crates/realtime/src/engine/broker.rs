//! The [`Broker`]: the per-channel ordering point of every publish, and its
//! in-process implementation [`MemoryBroker`].
//!
//! A publish reaches the broker as a [`Publication`] (messages, a new version of a
//! message, or an annotation) without positions. The broker gives it the channel's
//! next positions (the Ably channel serials), appends what history keeps, and hands
//! it to every node's [`BrokerHandler`], which fans it out to that node's
//! subscribers. Resume and rewind read "everything since position P" back as a
//! [`Snapshot`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use super::{ready, BoxFuture, EngineResult};
use crate::channel::{format_serial, Origin};
use crate::history::{Direction, HistoryPage, HistoryQuery, HistoryStore, StoredMessage};
use crate::protocol::{Annotation, Message, PresenceMessage};

/// What a publication carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Messages, stamped (id, timestamp, connectionId, clientId) but without
    /// serials; each takes one position and is kept in history.
    Messages(Vec<Message>),
    /// A new version of a message (update, delete, append): takes one position
    /// (its `version.serial`); history keeps `stored` (the whole latest version),
    /// subscribers get `sent` (for an append, the appended data alone).
    Version {
        stored: Box<Message>,
        sent: Box<Message>,
    },
    /// An annotation: takes one position, not kept in history; the broker keeps
    /// it with its message's other annotations ([`Broker::annotations`]).
    /// `all` is empty when published; when delivered, the broker has filled it
    /// with every annotation of the message up to this one (included), in
    /// position order, so that every node summarises the same list.
    Annotation {
        annotation: Box<Annotation>,
        all: Vec<Annotation>,
    },
    /// Presence events one node applied to its members (enters, updates, leaves,
    /// in that node's order): no position, not kept in history. The other nodes
    /// pass them to their presence subscribers; the members themselves are in
    /// the [`super::PresenceStore`].
    Presence(Vec<PresenceMessage>),
    /// One node's occupancy counts of the named channel (the publication's
    /// channel, or a view of it) changed, and are in the
    /// [`super::PresenceStore`]: no position, not kept in history. The other
    /// nodes read the totals again for their `[meta]occupancy` events.
    Occupancy(String),
}

/// One publish on one channel, as it travels from the node that took it, through
/// the broker, to every node.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub channel: String,
    /// The publish's protocol message id (the fan-out envelope's `id`).
    pub proto_id: String,
    /// The publishing connection's connectionId, if a connection published.
    pub connection_id: Option<String>,
    /// The node that took the publish and the publishing transport there: echo
    /// suppression (`echoMessages=false`) applies on that node only.
    pub node: String,
    pub publisher_conn: Option<u64>,
    /// Server receive time (ms since epoch): history time, envelope timestamp,
    /// and the floor of the positions (see [`Broker`]).
    pub timestamp: i64,
    pub origin: Origin,
    /// How long history keeps what this publication appends.
    pub retention: Duration,
    pub payload: Payload,
    /// The positions the broker assigned, ascending, one per
    /// [`Publication::positions_needed`]; empty before the publish.
    pub positions: Vec<u64>,
}

impl Publication {
    /// How many positions the publication takes.
    pub fn positions_needed(&self) -> usize {
        match &self.payload {
            Payload::Messages(m) => m.len(),
            Payload::Version { .. } | Payload::Annotation { .. } => 1,
            Payload::Presence(_) | Payload::Occupancy(_) => 0,
        }
    }

    /// The position of the message a [`Payload::Version`] is a version of
    /// (`stored.serial`); `None` for any other payload.
    pub fn version_of(&self) -> Option<u64> {
        match &self.payload {
            Payload::Version { stored, .. } => stored
                .serial
                .as_deref()
                .and_then(crate::channel::parse_serial),
            _ => None,
        }
    }

    /// The position of the message an annotation annotates; `None` for any
    /// other payload.
    pub fn annotation_of(&self) -> Option<u64> {
        match &self.payload {
            Payload::Annotation { annotation, .. } => annotation
                .message_serial
                .as_deref()
                .and_then(crate::channel::parse_serial),
            _ => None,
        }
    }

    /// The last position assigned (the channel serial after this publication).
    pub fn last_position(&self) -> Option<u64> {
        self.positions.last().copied()
    }

    /// Records the assigned `positions` and writes them into the payload as Ably
    /// serials: each message's `serial`, a version's `version.serial` and
    /// `version.timestamp`, an annotation's `serial`. Every broker calls this
    /// (so the stamps are the same whichever engine runs).
    pub fn stamp(&mut self, positions: Vec<u64>) {
        match &mut self.payload {
            Payload::Messages(msgs) => {
                for (m, p) in msgs.iter_mut().zip(&positions) {
                    m.serial = Some(format_serial(*p));
                }
            }
            Payload::Version { stored, sent } => {
                if let Some(p) = positions.first() {
                    for m in [stored, sent] {
                        let mut version = match m.version.take() {
                            Some(serde_json::Value::Object(v)) => v,
                            _ => serde_json::Map::new(),
                        };
                        version.insert("serial".into(), format_serial(*p).into());
                        version.insert("timestamp".into(), self.timestamp.into());
                        m.version = Some(serde_json::Value::Object(version));
                    }
                }
            }
            Payload::Annotation { annotation, .. } => {
                annotation.serial = positions.first().map(|p| format_serial(*p));
            }
            Payload::Presence(_) | Payload::Occupancy(_) => {}
        }
        self.positions = positions;
    }

    /// What a channel's presence history keeps of presence events, in order, as
    /// messages (the action in `name`, which presence messages lack), without
    /// serials: the broker gives them positions of the presence history's own
    /// ([`crate::hub::presence_history_key`]). Empty for other payloads.
    pub fn presence_history_messages(&self) -> Vec<Message> {
        let Payload::Presence(events) = &self.payload else {
            return Vec::new();
        };
        events
            .iter()
            .map(|m| Message {
                id: m.id.clone(),
                client_id: m.client_id.clone(),
                connection_id: m.connection_id.clone(),
                name: Some(m.action.unwrap_or(0).to_string()),
                data: m.data.clone(),
                encoding: m.encoding.clone(),
                extras: m.extras.clone(),
                timestamp: m.timestamp.or(Some(self.timestamp)),
                ..Default::default()
            })
            .collect()
    }

    /// What history keeps of a stamped publication, in position order.
    pub fn history_entries(&self) -> Vec<StoredMessage> {
        let entry = |serial: u64, message: &Message| StoredMessage {
            serial,
            received_ms: self.timestamp,
            message: message.clone(),
        };
        match &self.payload {
            Payload::Messages(msgs) => msgs
                .iter()
                .zip(&self.positions)
                .map(|(m, p)| entry(*p, m))
                .collect(),
            Payload::Version { stored, .. } => self
                .positions
                .first()
                .map(|p| vec![entry(*p, stored.as_ref())])
                .unwrap_or_default(),
            Payload::Annotation { .. } | Payload::Presence(_) | Payload::Occupancy(_) => Vec::new(),
        }
    }
}

/// A read of a channel's history together with the channel's position at the
/// moment of the read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub page: HistoryPage,
    /// The channel's last assigned position when the page was read (0: none):
    /// every message at or below it that the query matches is in `page` (up to
    /// the page's limit), nothing above it is.
    pub position: u64,
}

/// A node's receiver of publications.
pub trait BrokerHandler: Send + Sync {
    /// One publication of `channel`, stamped. Called once per publication per
    /// node, in position order per channel, never concurrently for one channel.
    /// Must not block: it runs inside the broker's ordering of the channel.
    fn on_publication(&self, publication: &Publication);

    /// Publications of `channel` may have been missed here (the broker lost
    /// and regained its subscription): the handler reads them from history.
    /// Called in the channel's order: after every publication delivered before
    /// the gap, before any delivered after it. Must not block.
    fn on_gap(&self, _channel: &str) {}
}

/// The ordering point of every channel: positions, history and fan-out.
///
/// Promises, per channel:
/// - **Positions.** [`Broker::publish`] gives a publication
///   [`Publication::positions_needed`] positions, strictly greater than every
///   position the channel had before and never below `timestamp * 1000` (so a
///   channel whose state and history were both lost never reuses a serial), and
///   stamps them with [`Publication::stamp`].
/// - **Atomic position + append.** The positions are taken and
///   [`Publication::history_entries`] appended as one step: no reader, on any
///   node, sees a position without its history entry, and concurrent publishers
///   on one channel never get interleaved or duplicate positions.
/// - **Fan-out in order.** Every registered handler subscribed to the channel
///   (every node with an interest in it) receives every publication once, in
///   position order, after its history is appended. Publishing does not wait
///   for that unless [`Broker::delivers_before_returning`] says so.
/// - **Since P.** [`Broker::read`] answers from history as of one moment, with the
///   channel's position at that moment ([`Snapshot`]); a forwards query from
///   serial P is "everything since position P".
/// - Different channels are independent and may be published concurrently.
///
/// A caller that needs publications of its own in order (one connection's
/// publishes on one channel) awaits each publish before the next.
///
/// [`contract_suite`] checks these promises; run it against every implementation.
pub trait Broker: Send + Sync {
    /// Registers a node's handler. Held weakly: a node that is gone stops
    /// receiving.
    fn register(&self, handler: Weak<dyn BrokerHandler>);

    /// Asks for `channel`'s publications at this node's handler from the moment
    /// the returned future completes. A node subscribes before it reads history
    /// for an attach, so that nothing positioned after the read is missed. Calls
    /// for one channel nest: it takes as many unsubscribes as subscribes to end
    /// the interest. A broker may also deliver channels nobody subscribed to (the
    /// in-process one delivers all); handlers ignore what they have no use for.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<()>>;

    /// Gives back one [`Broker::subscribe`] of `channel`.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<()>>;

    /// Positions, appends and fans out `publication`; returns it stamped.
    fn publish(&self, publication: Publication) -> BoxFuture<'_, EngineResult<Publication>>;

    /// One page of `channel`'s history as of now, with the channel's position.
    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Snapshot>>;

    /// The channel's last assigned position, `None` if it has none (retained).
    fn position<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<Option<u64>>>;

    /// The later versions of the message at position `serial` (what its
    /// [`Payload::Version`] publications stored, stamped), oldest first, from
    /// every node, for as long as their channel's history keeps them. Kept
    /// apart from history so that an update finds the latest version without
    /// reading the channel's messages since the original.
    fn versions<'a>(
        &'a self,
        channel: &'a str,
        serial: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<StoredMessage>>>;

    /// The annotations of the message at position `serial`, stamped, in
    /// position order, from every node, for as long as their channel's history
    /// would keep them.
    fn annotations<'a>(
        &'a self,
        channel: &'a str,
        serial: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<Annotation>>>;

    /// Drops expired state; the hub calls it periodically.
    fn expire(&self, now_ms: i64) -> BoxFuture<'_, EngineResult<()>>;

    /// Whether every publication reaches this process's handlers before
    /// [`Broker::publish`] returns (the in-process broker). The hub then tells
    /// its observers of its own publications as they are delivered, in position
    /// order; otherwise (this node may not be subscribed) when they are
    /// published.
    fn delivers_before_returning(&self) -> bool {
        false
    }

    /// Whether any node has subscribed to `channel`, for bridging publishes
    /// from outside the realtime layer only where someone listens. A broker
    /// that serves this process alone answers no: the hub knows its own
    /// channels.
    fn has_interest<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, EngineResult<bool>> {
        ready(Ok(false))
    }

    /// Everything on `channel` after position `after`, oldest first, at most
    /// `limit` messages (resume).
    fn since<'a>(
        &'a self,
        channel: &'a str,
        after: u64,
        limit: usize,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Snapshot>> {
        let q = HistoryQuery {
            direction: Direction::Forwards,
            from_serial: Some(after),
            limit,
            ..Default::default()
        };
        self.read(channel, q, now_ms)
    }
}

/// A channel's place in the [`MemoryBroker`].
struct Position {
    /// Last assigned position; `None` until first used (then read from history).
    last: Option<u64>,
    /// When it was last used, for [`Broker::expire`].
    touched_ms: i64,
}

/// How long the memory broker remembers an idle channel's position; after that
/// the position is read from history again (as it was before the broker existed).
const IDLE_POSITION_MS: i64 = 60_000;

/// The in-process broker: a mutex per channel as the ordering point, history in a
/// [`HistoryStore`], fan-out by calling the handlers directly (on the publishing
/// task, so one node's fan-out costs what it did before there was a broker). Every
/// call completes before it returns.
pub struct MemoryBroker {
    history: Arc<dyn HistoryStore>,
    channels: RwLock<HashMap<String, Arc<Mutex<Position>>>>,
    handlers: RwLock<Vec<Weak<dyn BrokerHandler>>>,
    /// Later versions by (channel, original position).
    versions: MessageLists<StoredMessage>,
    /// Annotations by (channel, annotated position).
    annotations: MessageLists<Annotation>,
}

/// What the [`MemoryBroker`] keeps per message (its versions, its
/// annotations), in position order, each item for as long as its channel's
/// history keeps what its publication appended.
struct MessageLists<T> {
    /// By (channel, message position): the items with when each expires (ms).
    lists: Mutex<HashMap<MessageKey, Vec<Expiring<T>>>>,
}

/// A message: its channel and position.
type MessageKey = (String, u64);
/// An item with when it expires (ms).
type Expiring<T> = (i64, T);

impl<T: Clone> MessageLists<T> {
    fn new() -> Self {
        MessageLists {
            lists: Mutex::new(HashMap::new()),
        }
    }

    /// Appends `item` of `p` to the list of the message at `of`.
    fn push(&self, p: &Publication, of: u64, item: T) {
        let retention = i64::try_from(p.retention.as_millis()).unwrap_or(i64::MAX);
        let expires = p.timestamp.saturating_add(retention);
        self.lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((p.channel.clone(), of))
            .or_default()
            .push((expires, item));
    }

    /// The items of the message at `of` on `channel` live at `now_ms`, in
    /// position order.
    fn live(&self, channel: &str, of: u64, now_ms: i64) -> Vec<T> {
        let lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        lists
            .get(&(channel.to_owned(), of))
            .map(|list| {
                list.iter()
                    .filter(|(expires, _)| *expires > now_ms)
                    .map(|(_, item)| item.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops what expired by `now_ms`.
    fn expire(&self, now_ms: i64) {
        self.lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, list| {
                list.retain(|(expires, _)| *expires > now_ms);
                !list.is_empty()
            });
    }
}

impl MemoryBroker {
    pub fn new(history: Arc<dyn HistoryStore>) -> Self {
        MemoryBroker {
            history,
            channels: RwLock::new(HashMap::new()),
            handlers: RwLock::new(Vec::new()),
            versions: MessageLists::new(),
            annotations: MessageLists::new(),
        }
    }

    /// The history the broker appends to.
    pub fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.history
    }

    fn channel(&self, name: &str) -> Arc<Mutex<Position>> {
        if let Some(p) = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return p.clone();
        }
        self.channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Position {
                    last: None,
                    touched_ms: 0,
                }))
            })
            .clone()
    }

    fn handlers(&self) -> Vec<Arc<dyn BrokerHandler>> {
        self.handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// The next `count` positions of `pos` (a channel or a channel's presence
    /// history, kept in history under `key`), floored by `timestamp`.
    fn take_positions(
        &self,
        pos: &mut Position,
        key: &str,
        count: usize,
        timestamp: i64,
    ) -> Vec<u64> {
        let mut last = match pos.last {
            Some(l) => l,
            None => self.history.last_serial(key).unwrap_or(0),
        };
        let floor = (timestamp.max(0) as u64).saturating_mul(1000);
        let positions = (0..count)
            .map(|_| {
                last = (last + 1).max(floor);
                last
            })
            .collect();
        pos.last = Some(last);
        pos.touched_ms = timestamp;
        positions
    }

    fn publish_now(&self, mut p: Publication) -> Publication {
        let slot = self.channel(&p.channel);
        // Held through append and fan-out: this is the channel's ordering point.
        let mut pos = slot.lock().unwrap_or_else(|e| e.into_inner());
        // A positionless publication (presence events) leaves the position and
        // its history lookup alone; its events go to the presence history.
        if p.positions_needed() > 0 {
            let positions =
                self.take_positions(&mut pos, &p.channel, p.positions_needed(), p.timestamp);
            p.stamp(positions);
        }
        if let Some(of) = p.annotation_of() {
            if let Payload::Annotation { annotation, .. } = &p.payload {
                self.annotations.push(&p, of, annotation.as_ref().clone());
            }
            let listed = self.annotations.live(&p.channel, of, p.timestamp);
            if let Payload::Annotation { all, .. } = &mut p.payload {
                *all = listed;
            }
        }
        let presence = p.presence_history_messages();
        if !presence.is_empty() {
            let key = crate::hub::presence_history_key(&p.channel);
            let slot = self.channel(&key);
            let mut ppos = slot.lock().unwrap_or_else(|e| e.into_inner());
            let positions = self.take_positions(&mut ppos, &key, presence.len(), p.timestamp);
            for (message, serial) in presence.into_iter().zip(positions) {
                let entry = StoredMessage {
                    serial,
                    received_ms: p.timestamp,
                    message,
                };
                self.history.append(&key, entry, p.retention);
            }
        }
        for entry in p.history_entries() {
            if let Some(original) = p.version_of() {
                self.versions.push(&p, original, entry.clone());
            }
            self.history.append(&p.channel, entry, p.retention);
        }
        for h in self.handlers() {
            h.on_publication(&p);
        }
        p
    }

    fn read_now(&self, channel: &str, q: &HistoryQuery, now_ms: i64) -> Snapshot {
        let slot = self.channel(channel);
        // Under the channel's lock: no publish is half done while we read.
        let pos = slot.lock().unwrap_or_else(|e| e.into_inner());
        let page = self.history.query(channel, q, now_ms);
        let position = pos
            .last
            .or_else(|| self.history.last_serial(channel))
            .unwrap_or(0);
        Snapshot { page, position }
    }
}

impl Broker for MemoryBroker {
    fn register(&self, handler: Weak<dyn BrokerHandler>) {
        let mut hs = self.handlers.write().unwrap_or_else(|p| p.into_inner());
        hs.retain(|h| h.strong_count() > 0);
        hs.push(handler);
    }

    fn delivers_before_returning(&self) -> bool {
        true
    }

    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, EngineResult<()>> {
        // Every handler receives every channel: nothing to ask for.
        ready(Ok(()))
    }

    fn unsubscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, EngineResult<()>> {
        ready(Ok(()))
    }

    fn publish(&self, publication: Publication) -> BoxFuture<'_, EngineResult<Publication>> {
        ready(Ok(self.publish_now(publication)))
    }

    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Snapshot>> {
        ready(Ok(self.read_now(channel, &query, now_ms)))
    }

    fn position<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<Option<u64>>> {
        let slot = self.channel(channel);
        let pos = slot.lock().unwrap_or_else(|e| e.into_inner());
        let last = pos.last.or_else(|| self.history.last_serial(channel));
        ready(Ok(last))
    }

    fn versions<'a>(
        &'a self,
        channel: &'a str,
        serial: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<StoredMessage>>> {
        ready(Ok(self.versions.live(channel, serial, now_ms)))
    }

    fn annotations<'a>(
        &'a self,
        channel: &'a str,
        serial: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<Annotation>>> {
        ready(Ok(self.annotations.live(channel, serial, now_ms)))
    }

    fn expire(&self, now_ms: i64) -> BoxFuture<'_, EngineResult<()>> {
        self.history.expire(now_ms);
        self.annotations.expire(now_ms);
        self.versions.expire(now_ms);
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, slot| {
            // In use right now (a publish holds it): keep.
            Arc::strong_count(slot) > 1
                || slot
                    .lock()
                    .map(|p| now_ms - p.touched_ms < IDLE_POSITION_MS)
                    .unwrap_or(false)
        });
        ready(Ok(()))
    }
}

/// The [`Broker`] contract as executable checks, for every implementation. `a` and
/// `b` are two nodes' handles on one fresh, empty broker (the in-process broker
/// passes itself twice). Panics at the first violation. Uses channels under
/// `contract:` and times around `now_ms` (pass the current time: engines may
/// expire by the clock). Needs a multi-threaded tokio runtime.
pub async fn contract_suite(a: Arc<dyn Broker>, b: Arc<dyn Broker>, now_ms: i64) {
    /// A node that records what it receives.
    #[derive(Default)]
    struct Node {
        seen: Mutex<Vec<(String, Vec<u64>, Payload)>>,
    }
    impl BrokerHandler for Node {
        fn on_publication(&self, p: &Publication) {
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                p.channel.clone(),
                p.positions.clone(),
                p.payload.clone(),
            ));
        }
    }
    impl Node {
        fn positions(&self, channel: &str) -> Vec<u64> {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.iter()
                .filter(|(c, _, _)| c == channel)
                .flat_map(|(_, p, _)| p.clone())
                .collect()
        }

        /// `channel`'s positions once at least `count` have arrived, or after a
        /// bounded wait (5 s): a publish may return before the fan-out reaches
        /// a node.
        async fn positions_once(&self, channel: &str, count: usize) -> Vec<u64> {
            for _ in 0..200 {
                if self.positions(channel).len() >= count {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            self.positions(channel)
        }
    }

    fn publication(channel: &str, names: &[&str], t: i64) -> Publication {
        Publication {
            channel: channel.to_owned(),
            proto_id: "p:0".into(),
            connection_id: Some("conn".into()),
            node: "n".into(),
            publisher_conn: None,
            timestamp: t,
            origin: Origin::Rest,
            retention: Duration::from_secs(600),
            payload: Payload::Messages(
                names
                    .iter()
                    .map(|n| Message {
                        name: Some((*n).to_owned()),
                        id: Some(format!("id-{n}")),
                        ..Default::default()
                    })
                    .collect(),
            ),
            positions: Vec::new(),
        }
    }
    fn serials(s: &Snapshot) -> Vec<u64> {
        s.page.messages.iter().map(|m| m.serial).collect()
    }

    let node_a = Arc::new(Node::default());
    let node_b = Arc::new(Node::default());
    let weak_a: Weak<dyn BrokerHandler> = Arc::downgrade(&node_a) as Weak<Node>;
    let weak_b: Weak<dyn BrokerHandler> = Arc::downgrade(&node_b) as Weak<Node>;
    a.register(weak_a);
    b.register(weak_b);

    let c = "contract:broker";
    let (hot, other) = ("contract:broker:hot", "contract:broker:other");
    for ch in [c, hot, other] {
        a.subscribe(ch).await.expect("subscribe");
        b.subscribe(ch).await.expect("subscribe");
    }
    assert_eq!(
        a.position(c).await,
        Ok(None),
        "a new channel has no position"
    );

    // Positions: stamped, increasing, floored by the time.
    let p1 = a
        .publish(publication(c, &["one", "two"], now_ms))
        .await
        .expect("publish");
    let floor = (now_ms as u64) * 1000;
    assert_eq!(p1.positions.len(), 2, "one position per message");
    assert!(p1.positions[0] >= floor, "positions floored by time");
    assert!(p1.positions[0] < p1.positions[1], "positions increase");
    match &p1.payload {
        Payload::Messages(m) => assert_eq!(
            m.iter().map(|m| m.serial.clone()).collect::<Vec<_>>(),
            p1.positions
                .iter()
                .map(|p| Some(format_serial(*p)))
                .collect::<Vec<_>>(),
            "messages stamped with their serials"
        ),
        other => panic!("payload changed kind: {other:?}"),
    }
    // From the other node: same position, same history.
    assert_eq!(
        b.position(c).await,
        Ok(p1.last_position()),
        "position seen from b"
    );
    let p2 = b
        .publish(publication(c, &["three"], now_ms))
        .await
        .expect("publish");
    assert!(
        p2.positions[0] > p1.positions[1],
        "b continues a's sequence"
    );

    // Fan-out: both nodes got both publications, in order.
    let all: Vec<u64> = p1.positions.iter().chain(&p2.positions).copied().collect();
    assert_eq!(
        node_a.positions_once(c, all.len()).await,
        all,
        "node a receives every publication in order"
    );
    assert_eq!(
        node_b.positions_once(c, all.len()).await,
        all,
        "node b receives every publication in order"
    );

    // Since P: exclusive, oldest first, same from either node.
    let since = a
        .since(c, p1.positions[0], 100, now_ms)
        .await
        .expect("since");
    assert_eq!(serials(&since), all[1..].to_vec(), "since P is exclusive");
    assert_eq!(since.position, p2.positions[0], "snapshot position");
    assert_eq!(
        since.page.messages[0].message.name.as_deref(),
        Some("two"),
        "history keeps the message"
    );
    assert_eq!(
        since.page.messages[0].message.serial,
        Some(format_serial(p1.positions[1])),
        "history keeps the stamped serial"
    );
    let from_b = b.since(c, 0, 100, now_ms).await.expect("since");
    assert_eq!(serials(&from_b), all, "since 0 from b");
    let limited = b.since(c, 0, 1, now_ms).await.expect("since");
    assert_eq!(serials(&limited), all[..1].to_vec(), "limit");
    assert!(
        limited.page.next.is_some(),
        "a limited read says there is more"
    );
    let nothing = a
        .since(c, p2.positions[0], 100, now_ms)
        .await
        .expect("since");
    assert!(
        nothing.page.messages.is_empty(),
        "nothing after the last position"
    );
    let back = a
        .read(
            c,
            HistoryQuery {
                limit: 2,
                ..Default::default()
            },
            now_ms,
        )
        .await
        .expect("read");
    assert_eq!(
        serials(&back),
        vec![all[2], all[1]],
        "a backwards read (rewind) is newest first"
    );

    // A version takes a position and is kept; an annotation takes one, not kept.
    let mut version = publication(c, &[], now_ms);
    version.payload = Payload::Version {
        stored: Box::new(Message {
            name: Some("v-stored".into()),
            ..Default::default()
        }),
        sent: Box::new(Message {
            name: Some("v-sent".into()),
            ..Default::default()
        }),
    };
    let v = a.publish(version).await.expect("version");
    assert_eq!(v.positions.len(), 1, "a version takes one position");
    if let Payload::Version { stored, sent } = &v.payload {
        for m in [stored, sent] {
            assert_eq!(
                m.version
                    .as_ref()
                    .and_then(|v| v.get("serial"))
                    .and_then(|s| s.as_str()),
                Some(format_serial(v.positions[0]).as_str()),
                "version serial stamped"
            );
        }
    }
    let mut annotation = publication(c, &[], now_ms);
    annotation.payload = Payload::Annotation {
        annotation: Box::default(),
        all: Vec::new(),
    };
    let an = a.publish(annotation).await.expect("annotation");
    assert!(an.positions[0] > v.positions[0], "annotation after version");
    let tail = a
        .since(c, p2.positions[0], 100, now_ms)
        .await
        .expect("since");
    assert_eq!(
        serials(&tail),
        v.positions,
        "versions kept, annotations not"
    );
    assert_eq!(
        tail.page.messages[0].message.name.as_deref(),
        Some("v-stored")
    );
    assert_eq!(
        tail.position, an.positions[0],
        "position counts the annotation"
    );

    // Presence events take no position, are not kept, and reach every node.
    let mut presence = publication(c, &[], now_ms);
    let event = crate::protocol::PresenceMessage {
        action: Some(crate::presence::actions::ENTER),
        client_id: Some("ann".into()),
        connection_id: Some("conn".into()),
        ..Default::default()
    };
    presence.payload = Payload::Presence(vec![event.clone()]);
    let pr = b.publish(presence).await.expect("presence");
    assert!(pr.positions.is_empty(), "presence takes no position");
    assert_eq!(
        a.position(c).await,
        Ok(an.last_position()),
        "presence leaves the position alone"
    );
    // A positionless publication has no position to wait for: the publish may
    // return before a node's fan-out has it, so allow a bounded wait.
    let presence_seen = |node: &Node| -> Vec<Payload> {
        node.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(ch, _, p)| ch == c && matches!(p, Payload::Presence(_)))
            .map(|(_, _, p)| p.clone())
            .collect()
    };
    for _ in 0..200 {
        if !presence_seen(&node_a).is_empty() && !presence_seen(&node_b).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (who, node) in [("a", &node_a), ("b", &node_b)] {
        let got = presence_seen(node);
        assert_eq!(
            got,
            vec![Payload::Presence(vec![event.clone()])],
            "node {who} receives the presence events once"
        );
    }
    let after = a
        .since(c, an.positions[0], 100, now_ms)
        .await
        .expect("since");
    assert!(after.page.messages.is_empty(), "presence is not in history");
    // ... but in the channel's presence history, from either node.
    let presence_history = crate::hub::presence_history_key(c);
    for (who, broker) in [("a", &a), ("b", &b)] {
        let page = broker
            .read(&presence_history, HistoryQuery::default(), now_ms)
            .await
            .expect("presence history")
            .page;
        assert_eq!(
            page.messages
                .iter()
                .map(|m| (m.message.client_id.as_deref(), m.message.name.as_deref()))
                .collect::<Vec<_>>(),
            vec![(Some("ann"), Some("2"))],
            "node {who} reads the presence event in the presence history"
        );
    }

    // Atomic position + append under concurrent publishers on both nodes: no
    // duplicate or lost position, history and fan-out in the same order.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let broker = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for j in 0..20 {
                let name = format!("{i}-{j}");
                let p = broker
                    .publish(publication(hot, &[name.as_str(), "x"], now_ms))
                    .await
                    .expect("publish");
                got.extend(p.positions);
            }
            got
        }));
    }
    let mut assigned = Vec::new();
    for t in tasks {
        assigned.extend(t.await.expect("publisher task"));
    }
    assigned.sort_unstable();
    let total = 16 * 20 * 2;
    assert_eq!(assigned.len(), total, "every message got a position");
    assigned.dedup();
    assert_eq!(assigned.len(), total, "no position given twice");
    let stored = a.since(hot, 0, total + 1, now_ms).await.expect("since");
    for (what, got) in [
        (
            "node a receives in position order",
            node_a.positions_once(hot, total).await,
        ),
        (
            "node b receives in position order",
            node_b.positions_once(hot, total).await,
        ),
        (
            "history holds exactly what was positioned, in order",
            serials(&stored),
        ),
    ] {
        let first_difference = got.iter().zip(&assigned).position(|(g, a)| g != a);
        assert!(
            got.len() == assigned.len() && first_difference.is_none(),
            "{what}: {} of {} positions, first difference at index {first_difference:?}",
            got.len(),
            assigned.len()
        );
    }
    assert_eq!(
        stored.position,
        *assigned.last().unwrap_or(&0),
        "position is the last"
    );
    // A publication's messages stay together (atomic per publication).
    let seen = node_a
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (ch, positions, _) in seen.iter().filter(|(ch, _, _)| ch == hot) {
        assert_eq!(ch, hot);
        assert_eq!(positions.len(), 2, "a publication is delivered whole");
        assert_eq!(
            positions[0] + 1,
            positions[1],
            "a publication's positions are adjacent"
        );
    }

    // Versions: made through either node, listed from either node, oldest
    // first, apart from other messages' versions.
    let versioned = "contract:broker:versions";
    let original = a
        .publish(publication(versioned, &["original", "other"], now_ms))
        .await
        .expect("publish");
    let (of, other_of) = (original.positions[0], original.positions[1]);
    let version = |name: &str| {
        let m = Message {
            name: Some(name.to_owned()),
            serial: Some(format_serial(of)),
            action: Some(crate::protocol::message_actions::UPDATE),
            ..Default::default()
        };
        Publication {
            payload: Payload::Version {
                stored: Box::new(m.clone()),
                sent: Box::new(m),
            },
            ..publication(versioned, &[], now_ms)
        }
    };
    let v1 = a.publish(version("v1")).await.expect("version");
    let v2 = b.publish(version("v2")).await.expect("version");
    for (who, broker) in [("a", &a), ("b", &b)] {
        let listed = broker
            .versions(versioned, of, now_ms)
            .await
            .expect("versions");
        assert_eq!(
            listed
                .iter()
                .map(|v| (v.serial, v.message.name.clone()))
                .collect::<Vec<_>>(),
            vec![
                (v1.positions[0], Some("v1".to_owned())),
                (v2.positions[0], Some("v2".to_owned()))
            ],
            "node {who} lists both versions, oldest first"
        );
        assert_eq!(
            listed[0].message.serial,
            Some(format_serial(of)),
            "a version keeps the serial of the message it is a version of"
        );
        assert!(
            broker
                .versions(versioned, other_of, now_ms)
                .await
                .expect("versions")
                .is_empty(),
            "another message has no versions"
        );
    }

    // Annotations: kept per message, listed from either node in position
    // order, and each delivered with every annotation of its message so far.
    for node in [&a, &b] {
        node.subscribe(versioned).await.expect("subscribe");
    }
    let annotate = |name: &str| Publication {
        payload: Payload::Annotation {
            annotation: Box::new(Annotation {
                name: Some(name.to_owned()),
                kind: Some("reaction:distinct.v1".into()),
                message_serial: Some(format_serial(of)),
                ..Default::default()
            }),
            all: Vec::new(),
        },
        ..publication(versioned, &[], now_ms)
    };
    let x1 = a.publish(annotate("x1")).await.expect("annotation");
    let x2 = b.publish(annotate("x2")).await.expect("annotation");
    let expected = vec![
        (Some("x1".to_owned()), Some(format_serial(x1.positions[0]))),
        (Some("x2".to_owned()), Some(format_serial(x2.positions[0]))),
    ];
    for (who, broker) in [("a", &a), ("b", &b)] {
        let listed = broker
            .annotations(versioned, of, now_ms)
            .await
            .expect("annotations");
        assert_eq!(
            listed
                .iter()
                .map(|x| (x.name.clone(), x.serial.clone()))
                .collect::<Vec<_>>(),
            expected,
            "node {who} lists both annotations, stamped, in position order"
        );
    }
    for (who, node) in [("a", &node_a), ("b", &node_b)] {
        let delivered_all = |node: &Node| -> Vec<usize> {
            node.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter_map(|(ch, _, p)| match p {
                    Payload::Annotation { all, .. } if ch == versioned => Some(all.len()),
                    _ => None,
                })
                .collect()
        };
        for _ in 0..200 {
            if delivered_all(node).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            delivered_all(node),
            vec![1, 2],
            "node {who} gets each annotation with its message's annotations so far"
        );
    }
    for node in [&a, &b] {
        node.unsubscribe(versioned).await.expect("unsubscribe");
    }

    // Channels are independent.
    let o = a
        .publish(publication(other, &["o"], now_ms))
        .await
        .expect("publish");
    let mine = a.since(other, 0, 100, now_ms).await.expect("since");
    assert_eq!(serials(&mine), o.positions, "channel isolation");
    assert_eq!(
        a.position(c).await,
        Ok(an.last_position()),
        "other channel untouched"
    );

    // Subscriptions nest: b gives one of two back and still receives.
    b.subscribe(other).await.expect("subscribe");
    b.unsubscribe(other).await.expect("unsubscribe");
    let before_b = node_b.positions_once(other, o.positions.len()).await.len();
    a.publish(publication(other, &["nested"], now_ms))
        .await
        .expect("publish");
    assert_eq!(
        node_b.positions_once(other, before_b + 1).await.len(),
        before_b + 1,
        "a node subscribed twice, unsubscribed once, still receives"
    );

    // A node that is gone stops receiving; the others carry on.
    let before = node_a
        .positions_once(other, o.positions.len() + 1)
        .await
        .len();
    drop(node_b);
    a.publish(publication(other, &["after"], now_ms))
        .await
        .expect("publish");
    assert_eq!(
        node_a.positions_once(other, before + 1).await.len(),
        before + 1,
        "live node still receives"
    );
    for ch in [c, hot, other] {
        a.unsubscribe(ch).await.expect("unsubscribe");
        b.unsubscribe(ch).await.expect("unsubscribe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::MemoryHistoryStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_broker_meets_contract() {
        let broker: Arc<dyn Broker> =
            Arc::new(MemoryBroker::new(Arc::new(MemoryHistoryStore::default())));
        contract_suite(broker.clone(), broker, crate::auth::now_ms()).await;
    }

    #[tokio::test]
    async fn positions_continue_from_history() {
        let history: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::default());
        let first = MemoryBroker::new(history.clone());
        let now = crate::auth::now_ms();
        let p = Publication {
            channel: "c".into(),
            proto_id: "x:0".into(),
            connection_id: None,
            node: "n".into(),
            publisher_conn: None,
            timestamp: now,
            origin: Origin::Rest,
            retention: Duration::from_secs(60),
            payload: Payload::Messages(vec![Message::default()]),
            positions: Vec::new(),
        };
        let a = first.publish(p.clone()).await.unwrap();
        // A broker that forgot the channel (a restart) continues after history.
        let second = MemoryBroker::new(history);
        let b = second
            .publish(Publication { timestamp: 0, ..p })
            .await
            .unwrap();
        assert_eq!(b.positions, vec![a.positions[0] + 1]);
    }
}
