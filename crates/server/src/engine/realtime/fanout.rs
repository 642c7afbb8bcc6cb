//! [`Fanout`]: this process's subscriber connections to the engine, through
//! which the broker's publications reach every hub of the process.
//!
//! One per process, shared by every hub's [`super::RedisBroker`] (one per
//! realtime app): a shard channel is subscribed once however many brokers want
//! it, with one subscriber connection per master. Each connection's pushes arrive
//! in order on its read task, which calls the handlers directly: so a channel's
//! publications reach them in the order the engine published them (position
//! order), once, and never concurrently.
//!
//! Subscribing and unsubscribing go through one control task, so the engine sees
//! them in the order they were asked; a subscribe completes when the engine has
//! confirmed it. A lost subscriber connection, or a shard channel whose slot moved
//! to another master (the engine then unsubscribes it), is subscribed again on the
//! slot's owner. Publications positioned in between did not come through it:
//! once the new subscription is confirmed, the handlers are told of the gap
//! ([`BrokerHandler::on_gap`]) before any later publication of the channel, and
//! read what they missed from history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tidewire_engine::{Cluster, NodeConnection};
use tidewire_realtime::engine::{BrokerHandler, EngineError, EngineResult};
use tidewire_resp::{Protocol, Reply};
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::owner_sink;

use super::publication;

/// A subscribe not confirmed by then fails.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// Pause before subscribing again after the engine could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One broker's handlers, and its nested interest per shard channel.
pub struct Listener {
    id: u64,
    handlers: RwLock<Vec<Weak<dyn BrokerHandler>>>,
}

impl Listener {
    pub fn register(&self, handler: Weak<dyn BrokerHandler>) {
        let mut hs = self.handlers.write();
        hs.retain(|h| h.strong_count() > 0);
        hs.push(handler);
    }

    fn live(&self) -> Vec<Arc<dyn BrokerHandler>> {
        self.handlers
            .read()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// The process's shard-channel subscriptions (see the module docs).
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Arc<Cluster>,
    state: Mutex<State>,
    control: mpsc::UnboundedSender<Control>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    channels: HashMap<String, Sub>,
    /// Subscriber connections by master address.
    conns: HashMap<Arc<str>, Conn>,
    listeners: HashMap<u64, Weak<Listener>>,
}

struct Conn {
    id: u64,
    connection: NodeConnection,
    /// SUNSUBSCRIBEs sent and not yet confirmed, by shard channel: their
    /// confirmations are not news (any other unsubscribe push is: a moved slot).
    leaving: HashMap<String, usize>,
}

/// One shard channel's subscription.
struct Sub {
    /// The realtime channel it carries (what handlers are told of a gap in).
    name: String,
    slot: u16,
    /// Subscribe counts by listener; the subscription lives while any is > 0.
    interest: HashMap<u64, usize>,
    /// The connection SSUBSCRIBE was sent on; `None`: not (yet, or no longer).
    on: Option<u64>,
    confirmed: bool,
    /// Confirmed at least once: a later confirmation follows a gap.
    ever_confirmed: bool,
    waiting: Vec<oneshot::Sender<EngineResult<()>>>,
    /// The last position delivered here, for publishers held back while this
    /// node's fan-out trails (see [`Fanout::delivered`]).
    delivered: watch::Sender<u64>,
}

enum Control {
    Subscribe(String),
    Unsubscribe { channel: String, conn: u64 },
}

impl Fanout {
    /// Starts the control task on the current tokio runtime.
    pub fn new(cluster: Arc<Cluster>) -> Fanout {
        let (control, requests) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            cluster,
            state: Mutex::new(State::default()),
            control,
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(control_loop(Arc::downgrade(&inner), requests));
        Fanout { inner }
    }

    /// A new broker's listener.
    pub fn listener(&self) -> Arc<Listener> {
        let listener = Arc::new(Listener {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            handlers: RwLock::new(Vec::new()),
        });
        let mut st = self.inner.state.lock();
        st.listeners.retain(|_, l| l.strong_count() > 0);
        st.listeners.insert(listener.id, Arc::downgrade(&listener));
        listener
    }

    /// One more subscribe of the shard channel `channel` (in `slot`, carrying the
    /// realtime channel `name`) by `listener`; completes once the engine
    /// confirmed the shard channel's subscription.
    pub async fn subscribe(
        &self,
        listener: &Listener,
        channel: &str,
        name: &str,
        slot: u16,
    ) -> EngineResult<()> {
        let (answer, ask) = {
            let mut st = self.inner.state.lock();
            let sub = st
                .channels
                .entry(channel.to_owned())
                .or_insert_with(|| Sub {
                    name: name.to_owned(),
                    slot,
                    interest: HashMap::new(),
                    on: None,
                    confirmed: false,
                    ever_confirmed: false,
                    waiting: Vec::new(),
                    delivered: watch::Sender::new(0),
                });
            *sub.interest.entry(listener.id).or_default() += 1;
            if sub.confirmed {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            sub.waiting.push(tx);
            (rx, sub.on.is_none())
        };
        if ask {
            let _ = self
                .inner
                .control
                .send(Control::Subscribe(channel.to_owned()));
        }
        let failure = match tokio::time::timeout(SUBSCRIBE_WAIT, answer).await {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(e))) => e,
            Ok(Err(_)) => EngineError("the subscription was dropped".into()),
            Err(_) => EngineError(format!("SSUBSCRIBE {channel}: not confirmed in time")),
        };
        self.unsubscribe(listener, channel);
        Err(failure)
    }

    /// Gives back one subscribe of `channel` by `listener`; the last one
    /// unsubscribes the shard channel.
    pub fn unsubscribe(&self, listener: &Listener, channel: &str) {
        let mut st = self.inner.state.lock();
        let Some(sub) = st.channels.get_mut(channel) else {
            return;
        };
        if let Some(n) = sub.interest.get_mut(&listener.id) {
            *n -= 1;
            if *n == 0 {
                sub.interest.remove(&listener.id);
            }
        }
        if !sub.interest.is_empty() {
            return;
        }
        let on = sub.on;
        st.channels.remove(channel);
        if let Some(conn) = on {
            let _ = self.inner.control.send(Control::Unsubscribe {
                channel: channel.to_owned(),
                conn,
            });
        }
    }

    /// Waits (a bounded time) until `position` of `channel` has been delivered
    /// here, if this process is subscribed to it; at once if it has been.
    pub async fn delivered(&self, channel: &str, position: u64, wait: Duration) {
        let mut seen = {
            let st = self.inner.state.lock();
            match st.channels.get(channel) {
                Some(sub) if sub.confirmed && *sub.delivered.borrow() < position => {
                    sub.delivered.subscribe()
                }
                _ => return,
            }
        };
        let reached = tokio::time::timeout(wait, seen.wait_for(|d| *d >= position)).await;
        if reached.is_err() {
            tracing::warn!(
                channel,
                position,
                "realtime fan-out: this node's delivery of the channel trails its publishes; publishing on"
            );
        }
    }
}

/// Serialises subscribes and unsubscribes (see the module docs).
async fn control_loop(inner: Weak<Inner>, mut requests: mpsc::UnboundedReceiver<Control>) {
    while let Some(request) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        match request {
            Control::Subscribe(channel) => inner.send_subscribe(channel).await,
            Control::Unsubscribe { channel, conn } => inner.send_unsubscribe(channel, conn).await,
        }
    }
}

fn command(name: &'static [u8], channel: &str) -> Vec<Bytes> {
    vec![
        Bytes::from_static(name),
        Bytes::copy_from_slice(channel.as_bytes()),
    ]
}

impl Inner {
    async fn send_subscribe(self: &Arc<Self>, channel: String) {
        let slot = {
            let st = self.state.lock();
            match st.channels.get(&channel) {
                Some(sub) if sub.on.is_none() => sub.slot,
                _ => return,
            }
        };
        let (id, connection) = match self.connection_for(slot).await {
            Ok(c) => c,
            Err(e) => return self.failed(&channel, e),
        };
        {
            let mut st = self.state.lock();
            match st.channels.get_mut(&channel) {
                Some(sub) if sub.on.is_none() => sub.on = Some(id),
                _ => return,
            }
        }
        if let Err(e) = connection
            .send_without_reply(&[command(b"SSUBSCRIBE", &channel)])
            .await
        {
            self.failed(&channel, EngineError(e.to_string()));
        }
    }

    async fn send_unsubscribe(&self, channel: String, conn: u64) {
        let connection = {
            let mut st = self.state.lock();
            let Some(c) = st.conns.values_mut().find(|c| c.id == conn) else {
                return;
            };
            *c.leaving.entry(channel.clone()).or_default() += 1;
            c.connection.clone()
        };
        if let Err(e) = connection
            .send_without_reply(&[command(b"SUNSUBSCRIBE", &channel)])
            .await
        {
            tracing::debug!(channel, error = %e, "SUNSUBSCRIBE not sent");
        }
    }

    /// A subscribe could not be sent: its waiters fail (and give their interest
    /// back); whoever else still wants the channel (a node resubscribing after a
    /// loss) gets another try after a pause.
    fn failed(self: &Arc<Self>, channel: &str, e: EngineError) {
        {
            let mut st = self.state.lock();
            let Some(sub) = st.channels.get_mut(channel) else {
                return;
            };
            sub.on = None;
            sub.confirmed = false;
            for w in sub.waiting.drain(..) {
                let _ = w.send(Err(e.clone()));
            }
        }
        tracing::warn!(channel, error = %e, "realtime fan-out: subscribe failed, trying again shortly while the channel is wanted");
        // A no-op by then if the waiters were the only interest.
        self.resubscribe_later(channel.to_owned());
    }

    fn resubscribe_later(self: &Arc<Self>, channel: String) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_PAUSE).await;
            if let Some(inner) = weak.upgrade() {
                // A read in the slot follows a MOVED, so the slot map is right
                // when the subscribe asks who owns the slot.
                inner.refresh_owner(&channel).await;
                let _ = inner.control.send(Control::Subscribe(channel));
            }
        });
    }

    async fn refresh_owner(&self, channel: &str) {
        let slot = match self.state.lock().channels.get(channel) {
            Some(sub) => sub.slot,
            None => return,
        };
        let probe = vec![
            Bytes::from_static(b"EXISTS"),
            Bytes::copy_from_slice(channel.as_bytes()),
        ];
        let _ = self
            .cluster
            .run(Protocol::Resp2, Some(slot), &[probe], true)
            .await;
    }

    /// The live subscriber connection to the owner of `slot`, opened if needed.
    /// Only the control task opens them, so two are never opened for one master.
    async fn connection_for(
        self: &Arc<Self>,
        slot: u16,
    ) -> Result<(u64, NodeConnection), EngineError> {
        let map = |e: tidewire_engine::EngineError| EngineError(e.to_string());
        let addr = self.cluster.owner(Some(slot)).await.map_err(map)?;
        if let Some(c) = self
            .state
            .lock()
            .conns
            .get(&addr)
            .filter(|c| c.connection.is_alive())
        {
            return Ok((c.id, c.connection.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sink = owner_sink(
            self,
            id,
            |i, id, push| i.on_push(id, push),
            |i, id| i.on_lost(id),
        );
        let (addr, connection) = self
            .cluster
            .open_subscriber(Some(slot), sink)
            .await
            .map_err(map)?;
        self.state.lock().conns.insert(
            addr,
            Conn {
                id,
                connection: connection.clone(),
                leaving: HashMap::new(),
            },
        );
        Ok((id, connection))
    }

    /// What a subscriber connection pushed; runs on its read task, in order.
    fn on_push(self: &Arc<Self>, conn: u64, push: Reply) {
        let items = match push {
            Reply::Push(items) => items,
            Reply::Error(e) => return self.refused(conn, e),
            _ => return,
        };
        let mut items = items.into_iter();
        let (Some(Reply::Bulk(kind)), Some(Reply::Bulk(channel))) = (items.next(), items.next())
        else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(&channel) else {
            return;
        };
        match &kind[..] {
            b"smessage" => {
                if let Some(Reply::Bulk(payload)) = items.next() {
                    self.deliver(channel, &payload);
                }
            }
            b"ssubscribe" => self.confirmed(conn, channel),
            b"sunsubscribe" => self.unsubscribed(conn, channel),
            _ => {}
        }
    }

    /// The engine confirmed `channel`'s SSUBSCRIBE on `conn`. A channel that was
    /// subscribed before lost what was published in between: its handlers hear
    /// of the gap here, on the read task, so before any later publication.
    fn confirmed(&self, conn: u64, channel: &str) {
        let (name, handlers) = {
            let mut st = self.state.lock();
            let Some(sub) = st.channels.get_mut(channel).filter(|s| s.on == Some(conn)) else {
                return;
            };
            sub.confirmed = true;
            for w in sub.waiting.drain(..) {
                let _ = w.send(Ok(()));
            }
            if !std::mem::replace(&mut sub.ever_confirmed, true) {
                return;
            }
            let name = sub.name.clone();
            (name, Self::handlers_of(&st, channel))
        };
        tracing::info!(
            channel = name,
            "realtime fan-out: subscribed again; reading what was published meanwhile from history"
        );
        for h in handlers {
            h.on_gap(&name);
        }
    }

    /// The live handlers of every listener interested in `channel`.
    fn handlers_of(st: &State, channel: &str) -> Vec<Arc<dyn BrokerHandler>> {
        let Some(sub) = st.channels.get(channel) else {
            return Vec::new();
        };
        sub.interest
            .keys()
            .filter_map(|id| st.listeners.get(id).and_then(Weak::upgrade))
            .flat_map(|l| l.live())
            .collect()
    }

    /// An error pushed unasked: a refused SSUBSCRIBE (the slot moved). Every
    /// unconfirmed subscription on the connection is tried again.
    fn refused(self: &Arc<Self>, conn: u64, error: String) {
        let again: Vec<String> = {
            let mut st = self.state.lock();
            st.channels
                .iter_mut()
                .filter(|(_, s)| s.on == Some(conn) && !s.confirmed)
                .map(|(name, s)| {
                    s.on = None;
                    name.clone()
                })
                .collect()
        };
        for channel in again {
            tracing::debug!(channel, error, "SSUBSCRIBE refused, subscribing again");
            self.resubscribe_later(channel);
        }
    }

    /// The engine unsubscribed `channel`: as asked, or because its slot moved.
    fn unsubscribed(self: &Arc<Self>, conn: u64, channel: &str) {
        let mut st = self.state.lock();
        if let Some(c) = st.conns.values_mut().find(|c| c.id == conn) {
            if let Some(n) = c.leaving.get_mut(channel) {
                *n -= 1;
                if *n == 0 {
                    c.leaving.remove(channel);
                }
                return;
            }
        }
        let Some(sub) = st.channels.get_mut(channel).filter(|s| s.on == Some(conn)) else {
            return;
        };
        sub.on = None;
        sub.confirmed = false;
        drop(st);
        tracing::warn!(
            channel,
            "realtime fan-out: the engine moved a channel; subscribing again"
        );
        self.resubscribe_later(channel.to_owned());
    }

    /// A subscriber connection is gone, its subscriptions with it.
    fn on_lost(self: &Arc<Self>, conn: u64) {
        let again: Vec<String> = {
            let mut st = self.state.lock();
            st.conns.retain(|_, c| c.id != conn);
            st.channels
                .iter_mut()
                .filter(|(_, s)| s.on == Some(conn))
                .map(|(name, s)| {
                    s.on = None;
                    s.confirmed = false;
                    name.clone()
                })
                .collect()
        };
        if !again.is_empty() {
            tracing::warn!(
                channels = again.len(),
                "realtime fan-out: a subscriber connection to the engine was lost; subscribing again"
            );
        }
        for channel in again {
            self.resubscribe_later(channel);
        }
    }

    /// Hands one fanned-out publication to every interested listener's handlers.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let Some(envelope) = publication::Envelope::parse(payload) else {
            tracing::warn!(
                channel,
                "realtime fan-out: a message that is not a publication"
            );
            return;
        };
        let Some(mut p) = publication::decode(envelope.body, envelope.first) else {
            tracing::warn!(
                channel,
                "realtime fan-out: a publication that does not decode"
            );
            return;
        };
        if let tidewire_realtime::engine::Payload::Annotation { all, .. } = &mut p.payload {
            // Expired by the annotation's own time: what the message had then.
            *all = envelope
                .list
                .iter()
                .filter_map(|m| publication::annotation_entry(m, p.timestamp))
                .collect();
        }
        let (handlers, delivered) = {
            let st = self.state.lock();
            let Some(sub) = st.channels.get(channel) else {
                return;
            };
            (Self::handlers_of(&st, channel), sub.delivered.clone())
        };
        for h in handlers {
            h.on_publication(&p);
        }
        if let Some(last) = p.last_position() {
            delivered.send_modify(|d| *d = (*d).max(last));
        }
    }
}
