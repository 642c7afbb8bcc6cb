//! A channel: its serial counter and its attached connections.
//!
//! All publishes to one channel pass through [`Channel::publish`], which holds the
//! channel's mutex while it assigns the serial, appends to history and queues the
//! message for every subscriber. That lock is the ordering point: every subscriber and
//! the history see one channel's messages in the same order. Nothing under it awaits;
//! delivery is a non-blocking `try_send` into each connection's bounded queue, and a
//! connection past its output limits is evicted (see [`crate::outbox`]) rather than
//! slowing the channel down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;

use crate::codec::{encode_frame, Format, Frame};
use crate::history::{Direction, HistoryQuery, HistoryStore, StoredMessage};
use crate::protocol::{Action, Message, PresenceMessage, ProtocolMessage};

/// An outbound protocol message shared by every recipient, encoded at most once per
/// format however many connections receive it. The encoded bytes are reference
/// counted, so handing them to 10,000 writers copies nothing.
#[derive(Debug)]
pub struct SharedFrame {
    pub message: ProtocolMessage,
    /// Approximate encoded size, counted against a connection's output limits.
    weight: usize,
    json: OnceLock<Option<Frame>>,
    msgpack: OnceLock<Option<Frame>>,
}

impl SharedFrame {
    pub fn new(message: ProtocolMessage) -> Arc<Self> {
        Arc::new(SharedFrame {
            weight: approximate_size(&message),
            message,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        })
    }

    /// The encoded frame for `format`; `None` if encoding failed (logged once).
    /// JSON comes back as [`Frame::SharedText`], so cloning it is a reference-count
    /// bump rather than a copy of the text per recipient.
    pub fn frame(&self, format: Format) -> Option<Frame> {
        let cell = match format {
            Format::Json => &self.json,
            Format::Msgpack => &self.msgpack,
        };
        cell.get_or_init(|| match encode_frame(&self.message, format) {
            Ok(Frame::Text(t)) => Some(Frame::SharedText(Bytes::from(t))),
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "failed to encode outbound message");
                None
            }
        })
        .clone()
    }

    /// Approximate encoded size in bytes (see [`approximate_size`]).
    pub fn weight(&self) -> usize {
        self.weight
    }
}

/// Envelope bytes counted per frame on top of its payloads (action, channel,
/// serials, ids).
const FRAME_OVERHEAD: usize = 128;

/// A cheap estimate of a frame's encoded size: payload sizes plus a fixed
/// envelope. Computed once per frame (not per recipient), before it is encoded.
fn approximate_size(pm: &ProtocolMessage) -> usize {
    let messages: usize = pm
        .messages
        .iter()
        .flatten()
        .map(|m| m.size() + FRAME_OVERHEAD)
        .sum();
    let presence: usize = pm
        .presence
        .iter()
        .flatten()
        .map(|p| {
            p.data
                .as_ref()
                .map_or(0, crate::protocol::MessageData::size)
                + p.client_id.as_ref().map_or(0, String::len)
                + FRAME_OVERHEAD
        })
        .sum();
    FRAME_OVERHEAD + messages + presence
}

/// Drops the per-message fields a client derives from the enclosing MESSAGE (`id` =
/// `<protocol id>:<index>`, its `connectionId` and `timestamp`), as Ably's own
/// servers do: every fan-out frame is encoded, copied and parsed once per recipient,
/// so these ~80 redundant bytes per message cost on both sides.
fn strip_derived_fields(pm: &mut ProtocolMessage) {
    let Some(msgs) = pm.messages.as_mut() else {
        return;
    };
    for (i, m) in msgs.iter_mut().enumerate() {
        if let (Some(id), Some(parent)) = (m.id.as_deref(), pm.id.as_deref()) {
            let derived = id
                .strip_prefix(parent)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|idx| idx.parse::<usize>().ok() == Some(i));
            if derived {
                m.id = None;
            }
        }
        if m.connection_id.is_some() && m.connection_id == pm.connection_id {
            m.connection_id = None;
        }
        if m.timestamp.is_some() && m.timestamp == pm.timestamp {
            m.timestamp = None;
        }
    }
}

/// What the hub needs to reach one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Process-unique numeric id (cheap map key).
    pub id: u64,
    /// Ably connectionId.
    pub connection_id: String,
    /// Its outbound queue; also how an over-limit connection is evicted.
    pub tx: Arc<crate::outbox::Outbox>,
}

/// A connection's attachment to a channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnHandle,
    /// Whether messages are delivered (capability and mode both allow subscribe).
    pub receive: bool,
    /// Whether presence events and SYNC are delivered (PRESENCE_SUBSCRIBE mode).
    pub presence: bool,
    /// Whether the connection wants its own publishes back.
    pub echo: bool,
    /// Whether the attachment may publish (counted as a publisher in occupancy).
    pub publish: bool,
    /// Whether `[meta]occupancy` events are delivered (the `occupancy` channel param,
    /// granted only with the channel-metadata capability).
    pub occupancy: bool,
    /// Messages go out as VCDIFF deltas (the `delta=vcdiff` channel param) once the
    /// attachment has had a message to apply them to.
    pub delta: bool,
    /// The attachment has received a message since it attached: its SDK holds
    /// the payload the next delta applies to.
    pub primed: bool,
    /// Annotations are delivered (the annotation_subscribe mode).
    pub annotations: bool,
}

#[cfg(test)]
impl Subscriber {
    /// A subscriber for unit tests: receives, sees presence, echoes and may publish;
    /// no occupancy events. Tests adjust fields with `..Subscriber::test(…)`.
    pub(crate) fn test(id: u64, connection_id: &str, tx: Arc<crate::outbox::Outbox>) -> Self {
        Subscriber {
            conn: ConnHandle {
                id,
                connection_id: connection_id.to_string(),
                tx,
            },
            receive: true,
            presence: true,
            echo: true,
            publish: true,
            occupancy: false,
            delta: false,
            primed: false,
            annotations: false,
        }
    }
}

impl Subscriber {
    /// Whether a message from `publisher` is delivered here: the attachment
    /// receives, and it is not its own connection's publish unless it echoes.
    fn takes_from(&self, publisher: &Publisher) -> bool {
        self.receive && (self.echo || publisher.conn != Some(self.conn.id))
    }
}

/// Who published a message.
#[derive(Debug, Clone, Default)]
pub struct Publisher {
    /// Internal id of the publishing connection (for echo suppression).
    pub conn: Option<u64>,
    pub connection_id: Option<String>,
    /// clientId to stamp on messages that carry none.
    pub client_id: Option<String>,
}

/// Where a message entered Tidewire, so bridges can avoid loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Realtime,
    Rest,
    Backend,
}

/// A published message as seen by [`crate::Hub::subscribe_all`] observers.
#[derive(Debug, Clone)]
pub struct ChannelEvent {
    pub channel: String,
    pub serial: u64,
    pub origin: Origin,
    pub message: Message,
    /// Published through this node (not delivered here from another node by the
    /// engine): what a node bridges to the shared engine's Redis subscribers, so
    /// that each message reaches them once.
    pub local: bool,
}

impl ChannelEvent {
    /// The message in Ably's JSON wire form (binary data as base64 + encoding).
    pub fn message_json(&self) -> String {
        let mut m = self.message.clone();
        crate::codec::message_to_json_wire(&mut m);
        serde_json::to_string(&m).unwrap_or_default()
    }
}

pub(crate) struct State {
    pub(crate) last_serial: u64,
    pub(crate) subscribers: HashMap<u64, Subscriber>,
    /// How many `subscribers` have `occupancy` set, so that attach/detach need not
    /// scan all of them (10,000 attaches would otherwise be quadratic).
    pub(crate) occupancy_subscribers: usize,
    /// How many `subscribers` have `delta` set: a publish makes delta frames only
    /// when there is one, without a scan of every subscriber.
    pub(crate) delta_subscribers: usize,
    /// Presence set: (connectionId, clientId) → latest PRESENT message.
    pub(crate) members: BTreeMap<(String, String), PresenceMessage>,
    /// A debounced occupancy event is scheduled (see `Channel::occupancy_changed`).
    pub(crate) occupancy_pending: bool,
    /// Presence events applied to `members` but not yet sent (large channels batch
    /// them; see `Channel::presence_update`). Flushed before anything else is sent
    /// or any subscriber attaches, so no subscriber sees events out of order, twice,
    /// or misses one.
    pub(crate) presence_batch: Vec<PresenceMessage>,
    /// A flush of `presence_batch` is scheduled.
    pub(crate) presence_flush_pending: bool,
    /// Id and payload of the last message published, which the next message's
    /// delta is taken against (`delta=vcdiff` attachments).
    pub(crate) delta_base: Option<(String, Vec<u8>)>,
    /// Views of this channel (`[?params]name`, `[filter=…]name`) that are live:
    /// each publish is relayed to them under this channel's lock, so their
    /// subscribers see the channel's order. The hub adds and removes them.
    pub(crate) views: Vec<Weak<Channel>>,
    /// While the publications this node missed are read back from history
    /// ([`Channel::begin_recovery`]): the ones that arrive meanwhile, held so
    /// that subscribers get everything in position order. `None` otherwise.
    pub(crate) held: Option<Vec<Held>>,
    /// Another gap was reported during the recovery: read again once it ends.
    pub(crate) recover_again: bool,
    /// Frames of other nodes' presence events passed on so far: a resync
    /// ([`Channel::resync_presence`]) reads the engine's set and sends it only
    /// if none came while it read.
    pub(crate) remote_presence_frames: u64,
}

/// A publication held during a recovery, with what [`Channel::deliver`] was
/// given for it.
pub(crate) struct Held {
    publication: crate::engine::Publication,
    publisher: Publisher,
    summary: Option<Message>,
}

/// What an attaching connection wants replayed.
#[derive(Debug, Clone)]
pub enum Backlog {
    None,
    /// The `rewind` channel param.
    Rewind(HistoryQuery),
    /// Everything after the client's last `channelSerial`. Continuity holds when
    /// `from` is the current serial, or when the message with serial `from` is still
    /// in history (retention drops oldest first, so everything after it is too) and at
    /// most `cap` messages followed it; `from == 0` means "saw nothing yet". Without
    /// continuity nothing is replayed.
    FromSerial {
        from: u64,
        cap: usize,
    },
}

/// The result of [`Channel::attach`].
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Current channel serial.
    pub serial: String,
    /// Messages to replay, in publish order.
    pub backlog: Vec<StoredMessage>,
    /// For [`Backlog::FromSerial`]: whether nothing was lost.
    pub continuous: bool,
    /// The presence set (empty unless the subscriber receives presence).
    pub members: Vec<PresenceMessage>,
}

/// One channel, or a view of one (see [`crate::qualifier`]).
pub struct Channel {
    pub(crate) name: String,
    /// The channel whose history this one reads: its own name, or a view's base.
    source: String,
    /// A derived channel's filter: only messages it matches reach the view.
    filter: Option<crate::filter::Filter>,
    state: Mutex<State>,
    /// This channel object holds a [`crate::engine::Broker::subscribe`] of
    /// `source`, given back when the hub releases it.
    pub(crate) engine_subscribed: std::sync::atomic::AtomicBool,
}

/// Outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// One serial per message, in order (duplicates dropped by the hub report the
    /// empty string).
    pub serials: Vec<String>,
    pub channel_serial: String,
    /// Messages handed to subscribers (one per message per receiving attachment).
    pub delivered: u64,
}

/// Inputs to [`Channel::publish`] besides the messages.
pub struct PublishCtx<'a> {
    pub publisher: &'a Publisher,
    /// Protocol message id; children without ids become `<id>:<index>`.
    pub proto_id: &'a str,
    pub now_ms: i64,
    pub history: &'a dyn HistoryStore,
    pub retention: std::time::Duration,
    pub origin: Origin,
    pub observers: &'a tokio::sync::broadcast::Sender<Arc<ChannelEvent>>,
}

/// Channel serials are rendered as fixed-width hex so that they sort as text too.
pub fn format_serial(serial: u64) -> String {
    format!("{serial:016x}")
}

/// Inverse of [`format_serial`], tolerant of `epoch:serial` forms from older versions.
pub fn parse_serial(s: &str) -> Option<u64> {
    let tail = s.rsplit(':').next().unwrap_or(s);
    u64::from_str_radix(tail, 16).ok()
}

impl Channel {
    /// A channel whose serials continue after `last_serial`.
    pub fn new(name: &str, last_serial: u64) -> Self {
        Self::view(name, name, None, last_serial)
    }

    /// A view named `name` of channel `source` (which relays its messages to it),
    /// passing only what `filter` matches.
    pub fn view(
        name: &str,
        source: &str,
        filter: Option<crate::filter::Filter>,
        last_serial: u64,
    ) -> Self {
        Channel {
            name: name.to_owned(),
            source: source.to_owned(),
            filter,
            state: Mutex::new(State {
                last_serial,
                subscribers: HashMap::new(),
                occupancy_subscribers: 0,
                delta_subscribers: 0,
                members: BTreeMap::new(),
                occupancy_pending: false,
                presence_batch: Vec::new(),
                presence_flush_pending: false,
                delta_base: None,
                views: Vec::new(),
                held: None,
                recover_again: false,
                remote_presence_frames: 0,
            }),
            engine_subscribed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel whose messages this one carries: its own name, or a view's base.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not take the channel down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a subscriber and, atomically with that (no message or
    /// presence event can fall between, nor appear twice), reads what the connection
    /// needs to start from: a message backlog per `backlog`, and the presence set.
    ///
    /// Reads `history` under the channel's lock, so only for a history that answers
    /// at once; the hub attaches through [`crate::Hub::attach`], which reads its
    /// broker first and calls [`Channel::attach_after_read`].
    pub fn attach(
        &self,
        sub: Subscriber,
        backlog: Backlog,
        history: &dyn HistoryStore,
        now_ms: i64,
    ) -> Attachment {
        let mut st = self.lock();
        // Pending presence events are already in `members`: send them to the current
        // subscribers now, so the newcomer gets them only through its SYNC.
        Self::flush_presence_batch(&self.name, &mut st);
        let (messages, continuous) = match backlog {
            Backlog::None => (Vec::new(), true),
            Backlog::Rewind(q) => {
                let mut msgs = history.query(&self.source, &q, now_ms).messages;
                if q.direction == Direction::Backwards {
                    msgs.reverse();
                }
                (msgs, true)
            }
            Backlog::FromSerial { from, cap } => {
                self.read_from_serial(st.last_serial, history, from, cap, now_ms)
            }
        };
        self.finish_attach(&mut st, sub, messages, continuous)
    }

    /// The history read an attach with `backlog` needs, if any, given the serial
    /// this channel is at now (see [`Channel::attach_after_read`]).
    pub fn backlog_query(&self, backlog: &Backlog) -> Option<HistoryQuery> {
        match backlog {
            Backlog::None => None,
            Backlog::Rewind(q) => Some(q.clone()),
            Backlog::FromSerial { from, .. } if *from >= self.lock().last_serial => None,
            Backlog::FromSerial { from, cap } => Some(HistoryQuery {
                direction: Direction::Forwards,
                from_serial: from.checked_sub(1),
                limit: cap.saturating_add(1),
                ..Default::default()
            }),
        }
    }

    /// [`Channel::attach`] with the history read beforehand (outside the lock) from
    /// the broker, for [`Channel::backlog_query`]'s query. The read holds what the
    /// broker had positioned when it was made; messages positioned after it are
    /// still to be delivered here, so the backlog stops at what this channel has
    /// delivered. If this channel delivered more since the read (or needs a read it
    /// was not given), the subscriber comes back as `Err` to read again, unless
    /// `last_try`, when the attach goes ahead without claiming continuity it
    /// cannot show.
    pub fn attach_after_read(
        &self,
        sub: Subscriber,
        backlog: &Backlog,
        read: Option<crate::engine::Snapshot>,
        last_try: bool,
    ) -> Result<Attachment, Subscriber> {
        let mut st = self.lock();
        Self::flush_presence_batch(&self.name, &mut st);
        let last = st.last_serial;
        // The read must cover everything delivered here, or subscribers that were
        // attached then saw messages this one would miss.
        let covers = |r: &crate::engine::Snapshot| r.position >= last;
        let (messages, continuous) = match (backlog, read) {
            (Backlog::None, _) => (Vec::new(), true),
            (Backlog::FromSerial { from, .. }, _) if *from >= last => (Vec::new(), *from == last),
            (_, Some(r)) if !covers(&r) && !last_try => return Err(sub),
            (_, None) if !last_try => return Err(sub),
            (Backlog::Rewind(q), r) => {
                let mut msgs = r.map(|r| r.page.messages).unwrap_or_default();
                msgs.retain(|m| m.serial <= last);
                if q.direction == Direction::Backwards {
                    msgs.reverse();
                }
                (msgs, true)
            }
            (Backlog::FromSerial { from, cap }, Some(r)) if covers(&r) => {
                let page = r.page;
                let complete =
                    page.next.is_none() || page.messages.last().is_some_and(|m| m.serial >= last);
                let mut msgs = page.messages;
                msgs.retain(|m| m.serial <= last);
                let anchored = msgs.first().is_some_and(|m| m.serial == *from);
                if anchored {
                    msgs.remove(0);
                }
                if (anchored || *from == 0) && complete && msgs.len() <= *cap {
                    (msgs, true)
                } else {
                    (Vec::new(), false)
                }
            }
            (Backlog::FromSerial { .. }, _) => (Vec::new(), false),
        };
        Ok(self.finish_attach(&mut st, sub, messages, continuous))
    }

    /// The rest of an attach, under the lock: the view's filter, the presence set,
    /// the subscriber itself.
    fn finish_attach(
        &self,
        st: &mut State,
        sub: Subscriber,
        messages: Vec<StoredMessage>,
        continuous: bool,
    ) -> Attachment {
        let messages = match &self.filter {
            Some(f) => messages
                .into_iter()
                .filter(|m| f.matches(&m.message))
                .collect(),
            None => messages,
        };
        let members = if sub.presence {
            st.members.values().cloned().collect()
        } else {
            Vec::new()
        };
        let wants_occupancy = sub.occupancy;
        let mut sub = sub;
        // A replay that ends with the channel's latest message leaves the SDK
        // holding the payload the next delta applies to: deltas resume at once.
        sub.primed = messages.last().is_some_and(|m| {
            st.delta_base
                .as_ref()
                .is_some_and(|(id, _)| m.message.id.as_deref() == Some(id.as_str()))
        });
        let wants_delta = sub.delta;
        if let Some(old) = st.subscribers.insert(sub.conn.id, sub) {
            st.occupancy_subscribers -= usize::from(old.occupancy);
            st.delta_subscribers -= usize::from(old.delta);
        }
        st.occupancy_subscribers += usize::from(wants_occupancy);
        st.delta_subscribers += usize::from(wants_delta);
        Attachment {
            serial: format_serial(st.last_serial),
            backlog: messages,
            continuous,
            members,
        }
    }

    /// Messages after serial `from` (see [`Backlog::FromSerial`]) and whether they
    /// bridge the gap.
    fn read_from_serial(
        &self,
        last_serial: u64,
        history: &dyn HistoryStore,
        from: u64,
        cap: usize,
        now_ms: i64,
    ) -> (Vec<StoredMessage>, bool) {
        if from >= last_serial {
            return (Vec::new(), from == last_serial);
        }
        let q = HistoryQuery {
            direction: Direction::Forwards,
            from_serial: from.checked_sub(1),
            limit: cap.saturating_add(1),
            ..Default::default()
        };
        let page = history.query(&self.source, &q, now_ms);
        let mut msgs = page.messages;
        let anchored = msgs.first().is_some_and(|m| m.serial == from);
        if anchored {
            msgs.remove(0);
        }
        if (anchored || from == 0) && page.next.is_none() && msgs.len() <= cap {
            (msgs, true)
        } else {
            (Vec::new(), false)
        }
    }

    /// Removes a subscriber; returns whether the channel has none left.
    pub fn detach(&self, conn: u64) -> bool {
        let mut st = self.lock();
        if let Some(old) = st.subscribers.remove(&conn) {
            st.occupancy_subscribers -= usize::from(old.occupancy);
            st.delta_subscribers -= usize::from(old.delta);
        }
        st.subscribers.is_empty()
    }

    /// Whether nobody is attached or present (an idle channel may be released).
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.subscribers.is_empty() && st.members.is_empty() && st.views.is_empty()
    }

    /// Adds a view this channel relays its messages to.
    pub(crate) fn add_view(&self, view: &Arc<Channel>) {
        self.lock().views.push(Arc::downgrade(view));
    }

    /// Forgets a view (and any view that is gone).
    pub(crate) fn remove_view(&self, view: &Arc<Channel>) {
        let target = Arc::downgrade(view);
        self.lock()
            .views
            .retain(|w| w.strong_count() > 0 && !w.ptr_eq(&target));
    }

    /// A message frame of the channel this view belongs to, passed on to the
    /// view's subscribers: filtered, under the view's name, at the channel's serial.
    /// Returns the messages delivered (per subscriber).
    fn relay(&self, pm: &ProtocolMessage, publisher: &Publisher) -> u64 {
        let mut st = self.lock();
        if let Some(serial) = pm.channel_serial.as_deref().and_then(parse_serial) {
            st.last_serial = st.last_serial.max(serial);
        }
        if st.subscribers.is_empty() {
            return 0;
        }
        let mut out = pm.clone();
        out.channel = Some(self.name.clone());
        if let (Some(f), Some(msgs)) = (&self.filter, out.messages.as_mut()) {
            msgs.retain(|m| f.matches(m));
            if msgs.is_empty() {
                return 0;
            }
        }
        let count = out.messages.as_ref().map_or(0, Vec::len) as u64;
        // Ids derived from a message's position stay only where it did not move.
        strip_derived_fields(&mut out);
        let frame = SharedFrame::new(out);
        let mut delivered = 0;
        for sub in st.subscribers.values_mut() {
            if sub.takes_from(publisher) {
                sub.primed = true;
                delivered += count;
                let _ = sub.conn.tx.try_send(frame.clone());
            }
        }
        delivered
    }

    /// The live views, for a relay under this channel's lock.
    fn live_views(st: &State) -> Vec<Arc<Channel>> {
        st.views.iter().filter_map(Weak::upgrade).collect()
    }

    /// Current serial, rendered.
    pub fn serial(&self) -> String {
        format_serial(self.lock().last_serial)
    }

    /// Assigns serials, records history and fans `messages` out, atomically with
    /// respect to other publishes on this channel, with no engine: the channel's
    /// own counter gives the serials and `ctx.history` keeps them. For tests and
    /// tools; the hub publishes through its [`crate::engine::Broker`], which calls
    /// [`Channel::deliver`]. The fan-out is the same code either way.
    pub fn publish(&self, mut messages: Vec<Message>, ctx: &PublishCtx<'_>) -> Published {
        let mut st = self.lock();
        // Keeps presence events and messages in one order for every subscriber.
        Self::flush_presence_batch(&self.name, &mut st);
        let floor = (ctx.now_ms.max(0) as u64).saturating_mul(1000);
        let mut serials = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter_mut().enumerate() {
            stamp_message(m, i, ctx.proto_id, ctx.now_ms, ctx.publisher);
            let serial = (st.last_serial + 1).max(floor);
            st.last_serial = serial;
            let rendered = format_serial(serial);
            m.serial = Some(rendered.clone());
            serials.push(rendered);
            ctx.history.append(
                &self.name,
                StoredMessage {
                    serial,
                    received_ms: ctx.now_ms,
                    message: m.clone(),
                },
                ctx.retention,
            );
            if ctx.observers.receiver_count() > 0 {
                let _ = ctx.observers.send(Arc::new(ChannelEvent {
                    channel: self.name.clone(),
                    serial,
                    origin: ctx.origin,
                    message: m.clone(),
                    local: true,
                }));
            }
        }
        let last = st.last_serial;
        let delivered = self.deliver_messages(
            &mut st,
            messages,
            last,
            ctx.proto_id,
            ctx.publisher,
            ctx.now_ms,
        );
        Published {
            serials,
            channel_serial: format_serial(last),
            delivered,
        }
    }

    /// Fans out a publication the broker positioned (see
    /// [`crate::engine::BrokerHandler`]) to this channel's subscribers and views;
    /// `summary` is an annotation's message summary. Returns the messages
    /// delivered (per receiving attachment). Called in position order.
    pub fn deliver(
        &self,
        p: &crate::engine::Publication,
        publisher: &Publisher,
        summary: Option<Message>,
    ) -> u64 {
        if p.last_position().is_none() {
            return 0;
        }
        let mut st = self.lock();
        if let Some(held) = st.held.as_mut() {
            held.push(Held {
                publication: p.clone(),
                publisher: publisher.clone(),
                summary,
            });
            return 0;
        }
        self.deliver_locked(&mut st, p, publisher, summary)
    }

    /// Starts a recovery: publications delivered from now on are held until
    /// [`Channel::finish_recovery`]. Returns the channel's serial, after which
    /// the missed ones are to be read; `None` if a recovery is under way (its
    /// end then asks for another read: the new gap may postdate its read).
    pub fn begin_recovery(&self) -> Option<u64> {
        let mut st = self.lock();
        if st.held.is_some() {
            st.recover_again = true;
            return None;
        }
        st.held = Some(Vec::new());
        Some(st.last_serial)
    }

    /// Ends a recovery: delivers the publications held meanwhile that come
    /// after serial `reached` (what [`Channel::deliver_recovered`] got to; the
    /// others were read back from history already). Returns the messages
    /// delivered and, if another gap was reported meanwhile, the serial to read
    /// from again: the recovery then goes on (publications are still held).
    pub fn finish_recovery(&self, reached: u64) -> (u64, Option<u64>) {
        let mut st = self.lock();
        let held = st.held.take().unwrap_or_default();
        let mut delivered = 0;
        for h in held {
            let p = &h.publication;
            if p.positions.first().is_some_and(|first| *first <= reached) {
                continue; // recovered from history already
            }
            delivered += self.deliver_locked(&mut st, p, &h.publisher, h.summary);
        }
        if std::mem::take(&mut st.recover_again) {
            st.held = Some(Vec::new());
            return (delivered, Some(st.last_serial));
        }
        (delivered, None)
    }

    /// Delivers part of what a recovery read back (publications after serial
    /// `from`, in position order) while later ones are still held: a long gap
    /// is read and delivered a page at a time. Returns the messages delivered
    /// and the serial reached, to go on from (and, at the end, to give
    /// [`Channel::finish_recovery`]).
    pub fn deliver_recovered(
        &self,
        from: u64,
        missed: Vec<(crate::engine::Publication, Publisher)>,
    ) -> (u64, u64) {
        let mut st = self.lock();
        let mut reached = from;
        let mut delivered = 0;
        for (p, publisher) in missed {
            match (p.positions.first(), p.last_position()) {
                (Some(first), Some(last)) if *first > reached => {
                    delivered += self.deliver_locked(&mut st, &p, &publisher, None);
                    reached = last;
                }
                _ => {}
            }
        }
        (delivered, reached)
    }

    /// [`Channel::deliver`] with the channel locked and no recovery under way.
    fn deliver_locked(
        &self,
        st: &mut State,
        p: &crate::engine::Publication,
        publisher: &Publisher,
        summary: Option<Message>,
    ) -> u64 {
        use crate::engine::Payload;
        let Some(last) = p.last_position() else {
            return 0;
        };
        match &p.payload {
            Payload::Messages(msgs) => {
                Self::flush_presence_batch(&self.name, st);
                st.last_serial = st.last_serial.max(last);
                self.deliver_messages(st, msgs.clone(), last, &p.proto_id, publisher, p.timestamp)
            }
            Payload::Version { sent, .. } => {
                Self::advance(&self.name, st, last);
                let frame = SharedFrame::new(ProtocolMessage {
                    action: Action::Message,
                    channel: Some(self.name.clone()),
                    channel_serial: Some(format_serial(last)),
                    timestamp: Some(p.timestamp),
                    messages: Some(vec![sent.as_ref().clone()]),
                    ..Default::default()
                });
                for sub in st.subscribers.values() {
                    if !sub.takes_from(publisher) {
                        continue;
                    }
                    let _ = sub.conn.tx.try_send(frame.clone());
                }
                0
            }
            Payload::Annotation {
                annotation: ann, ..
            } => {
                Self::advance(&self.name, st, last);
                let rendered = format_serial(last);
                let frame = SharedFrame::new(ProtocolMessage {
                    action: Action::Annotation,
                    channel: Some(self.name.clone()),
                    channel_serial: Some(rendered.clone()),
                    timestamp: Some(p.timestamp),
                    annotations: Some(vec![ann.as_ref().clone()]),
                    ..Default::default()
                });
                let summary_frame = summary.map(|m| {
                    SharedFrame::new(ProtocolMessage {
                        action: Action::Message,
                        channel: Some(self.name.clone()),
                        channel_serial: Some(rendered.clone()),
                        timestamp: Some(p.timestamp),
                        messages: Some(vec![m]),
                        ..Default::default()
                    })
                });
                for sub in st.subscribers.values() {
                    if sub.annotations {
                        let _ = sub.conn.tx.try_send(frame.clone());
                    }
                    if let (Some(f), true) = (&summary_frame, sub.receive) {
                        let _ = sub.conn.tx.try_send(f.clone());
                    }
                }
                0
            }
            // Positionless: the hub hands these to `Channel::remote_presence`,
            // or reads the occupancy totals again.
            Payload::Presence(_) | Payload::Occupancy(_) => 0,
        }
    }

    /// Builds the MESSAGE frame for stamped `fresh` messages (the last at serial
    /// `last`) and queues it for every view and receiving subscriber, as deltas
    /// where asked. Called with the channel locked, after the serials were taken.
    fn deliver_messages(
        &self,
        st: &mut State,
        fresh: Vec<Message>,
        last: u64,
        proto_id: &str,
        publisher: &Publisher,
        now_ms: i64,
    ) -> u64 {
        if fresh.is_empty() {
            return 0;
        }
        let mut pm = ProtocolMessage {
            action: Action::Message,
            channel: Some(self.name.clone()),
            channel_serial: Some(format_serial(last)),
            id: Some(proto_id.to_owned()),
            connection_id: publisher.connection_id.clone(),
            timestamp: Some(now_ms),
            messages: Some(fresh),
            ..Default::default()
        };
        // Delta attachments get the same messages as deltas, each against the
        // message before it (made only when such an attachment is primed).
        let wants_deltas = st.delta_subscribers > 0;
        let base = st.delta_base.take();
        let delta_pm = wants_deltas.then(|| {
            let mut dpm = pm.clone();
            if let Some(msgs) = dpm.messages.as_mut() {
                crate::delta::encode_messages(base.clone(), msgs);
            }
            strip_derived_fields(&mut dpm);
            SharedFrame::new(dpm)
        });
        // Only kept while a delta attachment exists: it costs a copy of the payload.
        st.delta_base = if wants_deltas {
            pm.messages
                .as_ref()
                .and_then(|m| m.last())
                .and_then(crate::delta::base_of)
        } else {
            None
        };
        let mut delivered = 0u64;
        for view in Self::live_views(st) {
            delivered += view.relay(&pm, publisher);
        }
        let count = pm.messages.as_ref().map_or(0, Vec::len) as u64;
        strip_derived_fields(&mut pm);
        let frame = SharedFrame::new(pm);
        for sub in st.subscribers.values_mut() {
            if !sub.takes_from(publisher) {
                continue;
            }
            delivered += count;
            let f = match (&delta_pm, sub.delta && sub.primed) {
                (Some(d), true) => d.clone(),
                _ => frame.clone(),
            };
            sub.primed = true;
            // A refused frame means the connection fell behind its output limits:
            // the outbox has evicted it and its session disconnects it, so the
            // client resumes from history instead of silently missing messages.
            let _ = sub.conn.tx.try_send(f);
        }
        delivered
    }

    /// Moves the channel to `position`, the broker's when this node's interest in
    /// the channel began: publications at or before it are not coming here, so
    /// the channel counts as having delivered them (a resume from one of them
    /// then reads history instead of claiming there is nothing to replay).
    pub(crate) fn catch_up(&self, position: u64) {
        let mut st = self.lock();
        Self::advance(&self.name, &mut st, position);
    }

    /// Moves the channel to `serial`, taken for something sent outside a publish (a
    /// message version, an annotation), after the presence events queued before it.
    fn advance(name: &str, st: &mut State, serial: u64) {
        Self::flush_presence_batch(name, st);
        st.last_serial = st.last_serial.max(serial);
        // Views keep the channel's serial, so that a resume on them stays continuous.
        for view in Self::live_views(st) {
            let mut vs = view.lock();
            vs.last_serial = vs.last_serial.max(serial);
        }
    }

    /// Sends presence events queued for a batch now (what a publish does first).
    pub(crate) fn flush_presence(&self) {
        let mut st = self.lock();
        Self::flush_presence_batch(&self.name, &mut st);
    }
}

/// Fills in what a published message carries from its publish: its id
/// (`<proto_id>:<index>` unless it has one), timestamp, connectionId and clientId;
/// drops a connectionKey (never relayed).
pub fn stamp_message(
    m: &mut Message,
    index: usize,
    proto_id: &str,
    now_ms: i64,
    publisher: &Publisher,
) {
    if m.id.is_none() {
        m.id = Some(format!("{proto_id}:{index}"));
    }
    m.timestamp.get_or_insert(now_ms);
    if m.connection_id.is_none() {
        m.connection_id.clone_from(&publisher.connection_id);
    }
    if m.client_id.is_none() {
        m.client_id.clone_from(&publisher.client_id);
    }
    m.connection_key = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::MemoryHistoryStore;

    fn sub(id: u64, tx: Arc<crate::outbox::Outbox>, occupancy: bool) -> Subscriber {
        Subscriber {
            presence: false,
            occupancy,
            ..Subscriber::test(id, &format!("c{id}"), tx)
        }
    }

    #[test]
    fn fan_out_frames_omit_what_the_client_derives_and_history_keeps_it() {
        let ch = Channel::new("c", 0);
        let history = MemoryHistoryStore::default();
        let (tx, rx) = crate::outbox::channel(4);
        ch.attach(sub(1, tx, false), Backlog::None, &history, 0);
        let (observers, _) = tokio::sync::broadcast::channel(1);
        let publisher = Publisher {
            conn: Some(9),
            connection_id: Some("pub".into()),
            client_id: None,
        };
        let mine = Message {
            data: Some(crate::protocol::MessageData::String("a".into())),
            ..Default::default()
        };
        // Fields that differ from what the client would derive must survive.
        let foreign = Message {
            id: Some("custom".into()),
            connection_id: Some("other".into()),
            timestamp: Some(5),
            ..Default::default()
        };
        ch.publish(
            vec![mine, foreign],
            &PublishCtx {
                publisher: &publisher,
                proto_id: "pub:0",
                now_ms: 1000,
                history: &history,
                retention: std::time::Duration::from_secs(60),
                origin: Origin::Realtime,
                observers: &observers,
            },
        );
        let f = rx.try_recv().expect("delivered");
        let Some(Frame::SharedText(text)) = f.frame(Format::Json) else {
            panic!("shared JSON text expected");
        };
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["id"], "pub:0");
        assert_eq!(v["connectionId"], "pub");
        assert_eq!(v["timestamp"], 1000);
        let m0 = &v["messages"][0];
        assert!(m0.get("id").is_none() && m0.get("connectionId").is_none());
        assert!(m0.get("timestamp").is_none());
        assert_eq!(m0["serial"], format_serial(1_000_000));
        let m1 = &v["messages"][1];
        assert_eq!(m1["id"], "custom");
        assert_eq!(m1["connectionId"], "other");
        assert_eq!(m1["timestamp"], 5);
        let q = HistoryQuery::default();
        let stored = history.query("c", &q, 1000).messages;
        let first = stored.iter().find(|s| s.serial == 1_000_000).unwrap();
        assert_eq!(first.message.id.as_deref(), Some("pub:0:0"));
        assert_eq!(first.message.connection_id.as_deref(), Some("pub"));
        assert_eq!(first.message.timestamp, Some(1000));
    }

    #[test]
    fn a_message_id_is_only_dropped_at_its_own_index() {
        let mut pm = ProtocolMessage {
            id: Some("p".into()),
            messages: Some(vec![
                Message {
                    id: Some("p:1".into()),
                    ..Default::default()
                },
                Message {
                    id: Some("p:1".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        strip_derived_fields(&mut pm);
        let msgs = pm.messages.unwrap();
        assert_eq!(msgs[0].id.as_deref(), Some("p:1"));
        assert_eq!(msgs[1].id, None);
    }

    /// A recovery delivers what was missed, then what arrived meanwhile, in
    /// position order, each once.
    #[test]
    fn a_recovery_delivers_the_missed_then_the_held_once_in_order() {
        let ch = Channel::new("c", 0);
        let history = MemoryHistoryStore::default();
        let (tx, rx) = crate::outbox::channel(16);
        ch.attach(sub(1, tx, false), Backlog::None, &history, 0);
        let publication = |positions: Vec<u64>| crate::engine::Publication {
            channel: "c".into(),
            proto_id: format!("p{}", positions[0]),
            connection_id: None,
            node: "other".into(),
            publisher_conn: None,
            timestamp: 1,
            origin: Origin::Rest,
            retention: std::time::Duration::from_secs(60),
            payload: crate::engine::Payload::Messages(
                positions.iter().map(|_| Message::default()).collect(),
            ),
            positions,
        };
        let publisher = Publisher::default();
        ch.deliver(&publication(vec![1]), &publisher, None);
        let from = ch.begin_recovery().expect("a recovery starts");
        assert_eq!(from, 1, "from the last position delivered");
        // Arrive live during the read: held.
        ch.deliver(&publication(vec![4]), &publisher, None);
        ch.deliver(&publication(vec![5]), &publisher, None);
        let serial_of = |f: Arc<SharedFrame>| f.message.channel_serial.clone();
        assert_eq!(
            rx.try_recv().map(serial_of).ok(),
            Some(Some(format_serial(1)))
        );
        assert!(rx.try_recv().is_err(), "nothing goes out while recovering");
        // History had 2-3 and 4 (it was stored before the read), read in two
        // pages.
        assert_eq!(
            ch.deliver_recovered(from, vec![(publication(vec![2, 3]), publisher.clone())]),
            (2, 3),
            "the first page"
        );
        assert_eq!(
            ch.deliver_recovered(3, vec![(publication(vec![4]), publisher.clone())]),
            (1, 4),
            "the second page"
        );
        ch.deliver(&publication(vec![6]), &publisher, None);
        assert_eq!(ch.finish_recovery(4), (2, None), "5 and 6 once each");
        let got: Vec<Option<String>> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(serial_of)
            .collect();
        assert_eq!(
            got,
            [3, 4, 5, 6].map(|p| Some(format_serial(p))).to_vec(),
            "the missed publish (2-3), then 4 once, then 5 and 6"
        );
        ch.deliver(&publication(vec![7]), &publisher, None);
        assert!(rx.try_recv().is_ok(), "delivered live again");

        // A second gap during a recovery: its end asks for another read and
        // keeps holding until that one ends.
        let from = ch.begin_recovery().expect("a recovery starts");
        assert_eq!(ch.begin_recovery(), None, "reported during the recovery");
        ch.deliver(&publication(vec![9]), &publisher, None);
        let (_, reached) =
            ch.deliver_recovered(from, vec![(publication(vec![8]), publisher.clone())]);
        let (_, again) = ch.finish_recovery(reached);
        assert_eq!(again, Some(9), "read again from the last delivered");
        assert_eq!(
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(serial_of)
                .collect::<Vec<_>>(),
            vec![Some(format_serial(8)), Some(format_serial(9))]
        );
        ch.deliver(&publication(vec![11]), &publisher, None);
        assert!(rx.try_recv().is_err(), "still held");
        let (_, reached) =
            ch.deliver_recovered(9, vec![(publication(vec![10]), publisher.clone())]);
        let (_, again) = ch.finish_recovery(reached);
        assert_eq!(again, None);
        assert_eq!(
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(serial_of)
                .collect::<Vec<_>>(),
            vec![Some(format_serial(10)), Some(format_serial(11))]
        );
    }

    #[test]
    fn occupancy_subscriber_count_follows_attach_replace_and_detach() {
        let ch = Channel::new("c", 0);
        let history = MemoryHistoryStore::default();
        let (tx, _rx) = crate::outbox::channel(1);
        ch.attach(sub(1, tx.clone(), true), Backlog::None, &history, 0);
        ch.attach(sub(2, tx.clone(), false), Backlog::None, &history, 0);
        assert_eq!(ch.lock().occupancy_subscribers, 1);
        // Re-attaching with different params replaces, not adds.
        ch.attach(sub(1, tx.clone(), true), Backlog::None, &history, 0);
        assert_eq!(ch.lock().occupancy_subscribers, 1);
        ch.attach(sub(1, tx.clone(), false), Backlog::None, &history, 0);
        assert_eq!(ch.lock().occupancy_subscribers, 0);
        ch.attach(sub(2, tx, true), Backlog::None, &history, 0);
        assert_eq!(ch.lock().occupancy_subscribers, 1);
        ch.detach(2);
        ch.detach(1);
        assert_eq!(ch.lock().occupancy_subscribers, 0);
    }
}
