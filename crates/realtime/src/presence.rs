//! Presence: the per-channel member set, its events and its SYNC.
//!
//! Members live in the channel's state, keyed by (connectionId, clientId), and change
//! under the same lock as messages, so presence events and messages reach every
//! subscriber in one order. ENTER/UPDATE/PRESENT store the member (as PRESENT, the
//! form SYNC sends); LEAVE removes it. When a connection goes away for good its
//! members leave with *synthesized* LEAVE events whose ids do not start with the
//! connectionId, which tells clients to order them by timestamp (Ably's rule for
//! server-generated presence).

use std::sync::Arc;

use crate::channel::{Channel, SharedFrame};
use crate::error::{AblyError, ErrorCode};
use crate::protocol::{Action, PresenceMessage, ProtocolMessage};

/// Presence actions on the wire.
pub mod actions {
    pub const ABSENT: u64 = 0;
    pub const PRESENT: u64 = 1;
    pub const ENTER: u64 = 2;
    pub const LEAVE: u64 = 3;
    pub const UPDATE: u64 = 4;
}

/// Members per SYNC protocol message.
const SYNC_PAGE: usize = 100;
/// Most presence events in one batched PRESENCE frame (bounds frame size).
pub const BATCH_FRAME: usize = 500;

/// Occupancy figures for channel metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub connections: usize,
    /// Attachments with the publish mode.
    pub publishers: usize,
    pub subscribers: usize,
    pub presence_connections: usize,
    pub presence_members: usize,
    pub presence_subscribers: usize,
}

impl Channel {
    /// Applies presence messages (already stamped with id, connectionId, clientId and
    /// timestamp) and fans them out to presence subscribers. Refuses (91003) an enter
    /// that would take the set past `max_members`.
    ///
    /// With `batch = Some((threshold, delay))`, on a channel holding at least
    /// `threshold` members the events are queued and sent `delay` later in one frame
    /// together with every other event of that window (at most [`BATCH_FRAME`] per
    /// frame): a large channel's subscribers get fewer, larger frames. Nothing is
    /// lost or reordered: the queue is flushed before any message, server-made
    /// LEAVE or attach on the channel.
    pub fn presence_update(
        self: &Arc<Self>,
        msgs: Vec<PresenceMessage>,
        connection_id: &str,
        now_ms: i64,
        max_members: usize,
        batch: Option<(usize, std::time::Duration)>,
        record: &mut dyn FnMut(&PresenceMessage),
    ) -> Result<(), AblyError> {
        let mut st = self.lock();
        let new_members = msgs
            .iter()
            .filter(|m| {
                matches!(
                    m.action,
                    Some(actions::ENTER | actions::UPDATE | actions::PRESENT)
                )
            })
            .filter(|m| {
                let key = (
                    connection_id.to_owned(),
                    m.client_id.clone().unwrap_or_default(),
                );
                !st.members.contains_key(&key)
            })
            .count();
        if st.members.len() + new_members > max_members {
            return Err(AblyError::new(
                ErrorCode::PresenceLimit,
                format!("Unable to enter presence channel (maximum member limit {max_members} exceeded)"),
            ));
        }
        for m in &msgs {
            // Under the lock, so presence history has the order subscribers saw.
            record(m);
            let key = (
                connection_id.to_owned(),
                m.client_id.clone().unwrap_or_default(),
            );
            match m.action {
                Some(actions::LEAVE) => {
                    st.members.remove(&key);
                }
                _ => {
                    let mut stored = m.clone();
                    stored.action = Some(actions::PRESENT);
                    st.members.insert(key, stored);
                }
            }
        }
        let rt = tokio::runtime::Handle::try_current().ok();
        match (batch, rt) {
            (Some((threshold, delay)), Some(rt)) if st.members.len() >= threshold => {
                st.presence_batch.extend(msgs);
                if !st.presence_flush_pending {
                    st.presence_flush_pending = true;
                    let weak = Arc::downgrade(self);
                    rt.spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Some(ch) = weak.upgrade() {
                            let mut st = ch.lock();
                            Self::flush_presence_batch(&ch.name, &mut st);
                        }
                    });
                }
            }
            _ => {
                // Earlier queued events go first.
                Self::flush_presence_batch(&self.name, &mut st);
                let frame = SharedFrame::new(ProtocolMessage {
                    action: Action::Presence,
                    channel: Some(self.name.clone()),
                    connection_id: Some(connection_id.to_owned()),
                    timestamp: Some(now_ms),
                    presence: Some(msgs),
                    ..Default::default()
                });
                Self::fan_out_presence(&st, &frame);
            }
        }
        Ok(())
    }

    /// Sends queued presence events (see [`Channel::presence_update`]), in order, in
    /// frames of at most [`BATCH_FRAME`] events. Called with the channel locked.
    pub(crate) fn flush_presence_batch(name: &str, st: &mut crate::channel::State) {
        st.presence_flush_pending = false;
        if st.presence_batch.is_empty() {
            return;
        }
        let events = std::mem::take(&mut st.presence_batch);
        for chunk in events.chunks(BATCH_FRAME) {
            let frame = SharedFrame::new(ProtocolMessage {
                action: Action::Presence,
                channel: Some(name.to_owned()),
                timestamp: chunk.last().and_then(|m| m.timestamp),
                presence: Some(chunk.to_vec()),
                ..Default::default()
            });
            Self::fan_out_presence(st, &frame);
        }
    }

    /// Removes every member entered by `connection_id` without a word: for a
    /// connection another node took over, whose members that node owns now
    /// (their events reach subscribers from there). Returns how many.
    pub fn forget_connection_members(&self, connection_id: &str) -> usize {
        let mut st = self.lock();
        let before = st.members.len();
        st.members.retain(|(c, _), _| c != connection_id);
        before - st.members.len()
    }

    /// Removes every member entered by `connection_id`, announcing synthesized
    /// LEAVEs. Returns how many left.
    pub fn remove_connection_members(
        &self,
        connection_id: &str,
        now_ms: i64,
        record: &mut dyn FnMut(&PresenceMessage),
    ) -> usize {
        let mut st = self.lock();
        Self::flush_presence_batch(&self.name, &mut st);
        let keys: Vec<(String, String)> = st
            .members
            .keys()
            .filter(|(c, _)| c == connection_id)
            .cloned()
            .collect();
        if keys.is_empty() {
            return 0;
        }
        let mut leaves = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            if let Some(m) = st.members.remove(key) {
                leaves.push(PresenceMessage {
                    id: Some(format!("synthetic-leave-{connection_id}:{now_ms}:{i}")),
                    action: Some(actions::LEAVE),
                    client_id: m.client_id,
                    connection_id: Some(connection_id.to_owned()),
                    data: m.data,
                    encoding: m.encoding,
                    extras: None,
                    timestamp: Some(now_ms),
                });
            }
        }
        leaves.iter().for_each(&mut *record);
        let n = leaves.len();
        let frame = SharedFrame::new(ProtocolMessage {
            action: Action::Presence,
            channel: Some(self.name.clone()),
            timestamp: Some(now_ms),
            presence: Some(leaves),
            ..Default::default()
        });
        Self::fan_out_presence(&st, &frame);
        n
    }

    /// Passes presence events another node applied to its members to this node's
    /// presence subscribers (after any queued here). The members themselves stay
    /// in the engine's presence store: this node's set holds its own only.
    pub fn remote_presence(&self, events: Vec<PresenceMessage>, timestamp: i64) {
        if events.is_empty() {
            return;
        }
        let mut st = self.lock();
        Self::flush_presence_batch(&self.name, &mut st);
        st.remote_presence_frames += 1;
        let frame = SharedFrame::new(ProtocolMessage {
            action: Action::Presence,
            channel: Some(self.name.clone()),
            timestamp: Some(timestamp),
            presence: Some(events),
            ..Default::default()
        });
        Self::fan_out_presence(&st, &frame);
    }

    /// Whether a presence subscriber is attached here, and how many frames of
    /// other nodes' presence events were passed on so far (see
    /// [`Channel::resync_presence`]).
    pub fn presence_resync_point(&self) -> (bool, u64) {
        let st = self.lock();
        let subscribed = st.subscribers.values().any(|s| s.presence);
        (subscribed, st.remote_presence_frames)
    }

    /// How many frames of other nodes' presence events were passed on so far:
    /// a read of the engine's presence store that saw this change may be older
    /// than an event already sent.
    pub fn remote_presence_frames(&self) -> u64 {
        self.lock().remote_presence_frames
    }

    /// Sends every presence subscriber a SYNC of the whole set (Ably's
    /// server-initiated sync, RTP18): this node's members and `others`, the
    /// members other nodes own as the engine's store had them. For a node that
    /// missed other nodes' presence events (a fan-out gap): a client drops the
    /// members the SYNC lacks and adds the ones it brings.
    ///
    /// `others` was read after [`Channel::presence_resync_point`] answered
    /// `seen`. If another node's event has been passed on since, it may be
    /// newer than the read and already sent: then nothing is sent and `false`
    /// comes back (read again), unless `last`.
    pub fn resync_presence(&self, others: Vec<PresenceMessage>, seen: u64, last: bool) -> bool {
        let mut st = self.lock();
        if st.remote_presence_frames != seen && !last {
            return false;
        }
        Self::flush_presence_batch(&self.name, &mut st);
        let mut members: Vec<PresenceMessage> = st.members.values().cloned().collect();
        add_members(&mut members, others);
        for frame in full_sync_messages(&self.name, members) {
            Self::fan_out_presence(&st, &SharedFrame::new(frame));
        }
        true
    }

    fn fan_out_presence(st: &crate::channel::State, frame: &Arc<SharedFrame>) {
        for sub in st.subscribers.values().filter(|s| s.presence) {
            // Refused only for an evicted connection, which is disconnecting.
            let _ = sub.conn.tx.try_send(frame.clone());
        }
    }

    /// How many members are present.
    pub fn member_count(&self) -> usize {
        self.lock().members.len()
    }

    /// Current members, optionally filtered.
    pub fn members(
        &self,
        client_id: Option<&str>,
        connection_id: Option<&str>,
    ) -> Vec<PresenceMessage> {
        self.lock()
            .members
            .iter()
            .filter(|((c, k), _)| {
                connection_id.is_none_or(|x| x == c) && client_id.is_none_or(|x| x == k)
            })
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Occupancy figures.
    pub fn occupancy(&self) -> Occupancy {
        Self::occupancy_of(&self.lock())
    }

    fn occupancy_of(st: &crate::channel::State) -> Occupancy {
        // Members are keyed by (connectionId, clientId), so equal connectionIds are
        // adjacent and dedup counts distinct connections.
        let mut presence_connections: Vec<&String> = st.members.keys().map(|(c, _)| c).collect();
        presence_connections.dedup();
        Occupancy {
            connections: st.subscribers.len(),
            publishers: st.subscribers.values().filter(|s| s.publish).count(),
            subscribers: st.subscribers.values().filter(|s| s.receive).count(),
            presence_connections: presence_connections.len(),
            presence_members: st.members.len(),
            presence_subscribers: st.subscribers.values().filter(|s| s.presence).count(),
        }
    }

    /// Schedules a `[meta]occupancy` event `debounce` from now for attachments that
    /// asked for one, unless one is already scheduled: changes inside the window are
    /// coalesced, and the event reports the figures at send time. The timer holds
    /// only a weak reference, so a released channel is not kept alive by it.
    pub fn occupancy_changed(self: &Arc<Self>, debounce: std::time::Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut st = self.lock();
            if st.occupancy_pending || st.occupancy_subscribers == 0 {
                return;
            }
            st.occupancy_pending = true;
        }
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            tokio::time::sleep(debounce).await;
            if let Some(ch) = weak.upgrade() {
                ch.emit_occupancy(crate::auth::now_ms());
            }
        });
    }

    /// Marks a debounced `[meta]occupancy` event as scheduled, if one is due: an
    /// attachment wants events and none is scheduled yet. Whoever gets `true`
    /// sends it ([`Channel::send_occupancy`]) or calls
    /// [`Channel::occupancy_event_reading`].
    pub(crate) fn occupancy_event_due(&self) -> bool {
        let mut st = self.lock();
        if st.occupancy_pending || st.occupancy_subscribers == 0 {
            return false;
        }
        st.occupancy_pending = true;
        true
    }

    /// The scheduled event is reading the other nodes' counts (or gave up): a
    /// change from now on schedules another, so that none is missed.
    pub(crate) fn occupancy_event_reading(&self) {
        self.lock().occupancy_pending = false;
    }

    /// Sends the current occupancy to attachments with `occupancy` set, as Ably does:
    /// a MESSAGE named `[meta]occupancy` whose data is `{"metrics": {...}}`.
    pub fn emit_occupancy(&self, now_ms: i64) {
        self.send_occupancy(now_ms, Occupancy::default(), true);
    }

    /// [`Channel::emit_occupancy`] with `others` (the other nodes' counts of the
    /// channel) added to this node's. `scheduled`: this is the scheduled event,
    /// which ends with it (not when [`Channel::occupancy_event_reading`] ended
    /// it before: a later change may have scheduled the next one since).
    pub(crate) fn send_occupancy(&self, now_ms: i64, others: Occupancy, scheduled: bool) {
        let mut st = self.lock();
        if scheduled {
            st.occupancy_pending = false;
        }
        let o = Self::occupancy_of(&st).plus(&others);
        let data = serde_json::json!({ "metrics": o.metrics_json() });
        let msg = crate::protocol::Message {
            id: Some(format!("occupancy:{now_ms}:0")),
            name: Some("[meta]occupancy".to_owned()),
            data: Some(crate::protocol::MessageData::String(data.to_string())),
            encoding: Some("json".to_owned()),
            timestamp: Some(now_ms),
            ..Default::default()
        };
        let frame = SharedFrame::new(ProtocolMessage {
            action: Action::Message,
            channel: Some(self.name.clone()),
            id: Some(format!("occupancy:{now_ms}")),
            timestamp: Some(now_ms),
            messages: Some(vec![msg]),
            ..Default::default()
        });
        for sub in st.subscribers.values().filter(|s| s.occupancy) {
            // Refused only for an evicted connection, which is disconnecting.
            let _ = sub.conn.tx.try_send(frame.clone());
        }
    }
}

impl Occupancy {
    /// The figures as a list, in [`Occupancy::metrics_json`]'s order (how an
    /// engine store keeps them).
    pub fn to_array(&self) -> [usize; 6] {
        [
            self.connections,
            self.publishers,
            self.subscribers,
            self.presence_connections,
            self.presence_members,
            self.presence_subscribers,
        ]
    }

    /// Inverse of [`Occupancy::to_array`].
    pub fn from_array(a: [usize; 6]) -> Occupancy {
        Occupancy {
            connections: a[0],
            publishers: a[1],
            subscribers: a[2],
            presence_connections: a[3],
            presence_members: a[4],
            presence_subscribers: a[5],
        }
    }

    /// Both figures summed (two nodes' counts of one channel), saturating.
    pub fn plus(&self, other: &Occupancy) -> Occupancy {
        let (a, b) = (self.to_array(), other.to_array());
        Occupancy::from_array(std::array::from_fn(|i| a[i].saturating_add(b[i])))
    }

    /// Whether every figure is 0 (nothing on the channel).
    pub fn is_zero(&self) -> bool {
        *self == Occupancy::default()
    }

    /// Ably's `metrics` object (object counts are always 0: objects are not
    /// implemented).
    pub fn metrics_json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections,
            "publishers": self.publishers,
            "subscribers": self.subscribers,
            "presenceConnections": self.presence_connections,
            "presenceMembers": self.presence_members,
            "presenceSubscribers": self.presence_subscribers,
            "objectPublishers": 0,
            "objectSubscribers": 0,
        })
    }
}

/// SYNC protocol messages carrying `members` to one attaching connection; the cursor
/// after the `:` is empty on the last one, which ends the sync.
pub fn sync_messages(channel: &str, members: Vec<PresenceMessage>) -> Vec<ProtocolMessage> {
    let sync_id = format!("{:x}", crate::auth::now_ms());
    let pages: Vec<Vec<PresenceMessage>> = members
        .chunks(SYNC_PAGE)
        .map(<[PresenceMessage]>::to_vec)
        .collect();
    let n = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| ProtocolMessage {
            action: Action::Sync,
            channel: Some(channel.to_owned()),
            channel_serial: Some(if i + 1 == n {
                format!("{sync_id}:")
            } else {
                format!("{sync_id}:{}", i + 1)
            }),
            presence: Some(page),
            ..Default::default()
        })
        .collect()
}

/// Adds to `members` (this node's) those of `others` (other nodes', from the
/// engine's store) that are not among them: a member this node has is the
/// latest word on it.
pub fn add_members(members: &mut Vec<PresenceMessage>, others: Vec<PresenceMessage>) {
    let key = |m: &PresenceMessage| {
        (
            m.connection_id.clone(),
            m.client_id.clone().unwrap_or_default(),
        )
    };
    let own: std::collections::HashSet<_> = members.iter().map(key).collect();
    members.extend(others.into_iter().filter(|m| !own.contains(&key(m))));
}

/// [`sync_messages`] for a sync the client did not start by attaching (its
/// `channel.sync()`, or a resync): with no members, one SYNC without any, which
/// still ends the client's sync and empties its set.
pub fn full_sync_messages(channel: &str, members: Vec<PresenceMessage>) -> Vec<ProtocolMessage> {
    let mut frames = sync_messages(channel, members);
    if frames.is_empty() {
        frames.push(ProtocolMessage {
            action: Action::Sync,
            channel: Some(channel.to_owned()),
            channel_serial: Some(format!("{:x}:", crate::auth::now_ms())),
            presence: Some(Vec::new()),
            ..Default::default()
        });
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Backlog, Subscriber};
    use crate::history::MemoryHistoryStore;
    use crate::outbox;

    fn member(conn: &str, client: &str, action: u64) -> PresenceMessage {
        PresenceMessage {
            id: Some(format!("{conn}:0:0")),
            action: Some(action),
            client_id: Some(client.into()),
            connection_id: Some(conn.into()),
            timestamp: Some(1),
            ..Default::default()
        }
    }

    /// One presence action by `client` on connection `conn` (limit 10), which must
    /// be accepted.
    fn act(ch: &Arc<Channel>, conn: &str, client: &str, action: u64) {
        ch.presence_update(
            vec![member(conn, client, action)],
            conn,
            1,
            10,
            None,
            &mut |_| {},
        )
        .unwrap();
    }

    /// A resync sends this node's members and the others' as one SYNC, unless
    /// another node's event was passed on after the read (then only when told
    /// it is the last read).
    #[test]
    fn a_resync_is_one_full_sync_unless_overtaken() {
        let ch = Arc::new(Channel::new("p", 0));
        let (tx, rx) = outbox::channel(16);
        let history = MemoryHistoryStore::default();
        ch.attach(
            Subscriber::test(9, "watcher", tx),
            Backlog::None,
            &history,
            0,
        );
        act(&ch, "c1", "alice", actions::ENTER);
        while rx.try_recv().is_ok() {}
        let syncs = |rx: &Arc<crate::outbox::Outbox>| {
            let mut clients = Vec::new();
            while let Ok(f) = rx.try_recv() {
                assert_eq!(f.message.action, Action::Sync);
                assert!(f.message.channel_serial.as_deref().unwrap().ends_with(':'));
                for m in f.message.presence.iter().flatten() {
                    clients.push(m.client_id.clone().unwrap_or_default());
                }
            }
            clients
        };

        let (subscribed, seen) = ch.presence_resync_point();
        assert!(subscribed);
        // Another node's member, and a duplicate of ours: ours is kept.
        let others = vec![
            member("n2c", "bob", actions::PRESENT),
            member("c1", "alice", actions::PRESENT),
        ];
        assert!(ch.resync_presence(others.clone(), seen, false));
        assert_eq!(syncs(&rx), vec!["alice", "bob"]);

        let (_, seen) = ch.presence_resync_point();
        ch.remote_presence(vec![member("n2c", "bob", actions::LEAVE)], 2);
        while rx.try_recv().is_ok() {}
        assert!(
            !ch.resync_presence(others.clone(), seen, false),
            "overtaken: read again"
        );
        assert!(syncs(&rx).is_empty(), "nothing sent");
        assert!(
            ch.resync_presence(vec![], seen, true),
            "the last read is sent"
        );
        assert_eq!(syncs(&rx), vec!["alice"]);
    }

    #[test]
    fn enter_update_leave_and_connection_cleanup() {
        let ch = Arc::new(Channel::new("p", 0));
        let (tx, rx) = outbox::channel(16);
        let history = MemoryHistoryStore::default();
        let att = ch.attach(
            Subscriber::test(9, "watcher", tx),
            Backlog::None,
            &history,
            0,
        );
        assert!(att.members.is_empty());
        act(&ch, "c1", "alice", actions::ENTER);
        act(&ch, "c1", "bob", actions::ENTER);
        act(&ch, "c2", "carol", actions::ENTER);
        act(&ch, "c1", "alice", actions::UPDATE);
        assert_eq!(ch.members(None, None).len(), 3);
        assert!(ch
            .members(None, None)
            .iter()
            .all(|m| m.action == Some(actions::PRESENT)));
        assert_eq!(ch.occupancy().presence_connections, 2);
        assert_eq!(
            ch.presence_update(
                vec![member("c3", "dave", actions::ENTER)],
                "c3",
                1,
                3,
                None,
                &mut |_| {}
            )
            .unwrap_err()
            .code,
            ErrorCode::PresenceLimit
        );
        act(&ch, "c2", "carol", actions::LEAVE);
        assert_eq!(ch.remove_connection_members("c1", 5, &mut |_| {}), 2);
        assert!(ch.members(None, None).is_empty());
        let mut last = None;
        while let Ok(f) = rx.try_recv() {
            last = Some(f);
        }
        let leaves = last.unwrap().message.presence.clone().unwrap();
        assert_eq!(leaves.len(), 2);
        assert!(leaves.iter().all(
            |m| m.action == Some(actions::LEAVE) && !m.id.as_deref().unwrap().starts_with("c1")
        ));
    }

    #[tokio::test]
    async fn occupancy_events_are_debounced_and_counted() {
        let ch = Arc::new(Channel::new("o", 0));
        let history = MemoryHistoryStore::default();
        let (tx, rx) = outbox::channel(16);
        let mk = |id: u64, occupancy: bool, tx| Subscriber {
            presence: false,
            publish: id == 1,
            occupancy,
            ..Subscriber::test(id, &format!("c{id}"), tx)
        };
        ch.attach(mk(1, true, tx), Backlog::None, &history, 0);
        let (tx2, _rx2) = outbox::channel(16);
        ch.attach(mk(2, false, tx2), Backlog::None, &history, 0);
        let debounce = std::time::Duration::from_millis(20);
        // Three changes inside one window make one event.
        for _ in 0..3 {
            ch.occupancy_changed(debounce);
        }
        act(&ch, "c2", "bob", actions::ENTER);
        let f = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("occupancy event in time")
            .expect("frame");
        // The ENTER was sent to presence subscribers only; the first frame here is
        // the occupancy event.
        let m = &f.message.messages.as_ref().unwrap()[0];
        assert_eq!(m.name.as_deref(), Some("[meta]occupancy"));
        let Some(crate::protocol::MessageData::String(s)) = &m.data else {
            panic!("json text expected");
        };
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(v["metrics"]["connections"], 2);
        assert_eq!(v["metrics"]["publishers"], 1);
        assert_eq!(v["metrics"]["presenceMembers"], 1);
        assert!(rx.try_recv().is_err(), "coalesced into one event");
    }

    #[tokio::test]
    async fn large_channels_batch_presence_events_without_losing_or_reordering() {
        let ch = Arc::new(Channel::new("big", 0));
        let history = MemoryHistoryStore::default();
        let (tx, rx) = outbox::channel(64);
        ch.attach(
            Subscriber {
                publish: false,
                ..Subscriber::test(1, "w", tx)
            },
            Backlog::None,
            &history,
            0,
        );
        // Threshold 2 members, a long delay: only flushes can send the batch.
        let batch = Some((2, std::time::Duration::from_secs(3600)));
        for i in 0..5 {
            ch.presence_update(
                vec![member("c", &format!("m{i}"), actions::ENTER)],
                "c",
                1,
                100,
                batch,
                &mut |_| {},
            )
            .unwrap();
        }
        // m0 went out alone (below the threshold); m1..m4 wait.
        let mut frames = Vec::new();
        while let Ok(f) = rx.try_recv() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 1);
        // A message publish flushes the batch first, in one frame.
        ch.publish(
            vec![crate::protocol::Message::default()],
            &crate::channel::PublishCtx {
                publisher: &crate::channel::Publisher::default(),
                proto_id: "p",
                now_ms: 1,
                history: &history,
                retention: std::time::Duration::from_secs(60),
                origin: crate::channel::Origin::Rest,
                observers: &tokio::sync::broadcast::channel(1).0,
            },
        );
        let batched = rx.try_recv().unwrap();
        let names: Vec<_> = batched
            .message
            .presence
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.client_id.clone().unwrap())
            .collect();
        assert_eq!(names, ["m1", "m2", "m3", "m4"]);
        assert_eq!(rx.try_recv().unwrap().message.action, Action::Message);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn sync_pages_end_with_an_empty_cursor() {
        let members: Vec<_> = (0..250)
            .map(|i| member("c", &format!("m{i}"), actions::PRESENT))
            .collect();
        let pages = sync_messages("p", members);
        assert_eq!(pages.len(), 3);
        assert!(pages[0].channel_serial.as_deref().unwrap().ends_with(":1"));
        assert!(pages[2].channel_serial.as_deref().unwrap().ends_with(':'));
        assert_eq!(pages[2].presence.as_ref().unwrap().len(), 50);
    }
}
