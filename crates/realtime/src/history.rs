//! Channel history: the [`HistoryStore`] trait and its in-memory implementation.
//!
//! The hub appends every published message with its channel serial; REST history
//! (and later rewind/resume) reads pages by time range or from a serial. The trait is
//! synchronous and narrow on purpose: the hub calls it while holding a channel's lock
//! (that lock is what orders a channel), so implementations must not block for long
//! and must never await. The server crate implements it on the Redis keyspace.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::Message;

/// One message as kept in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Channel serial: strictly increasing per channel, never reused.
    pub serial: u64,
    /// Server receive time (ms since epoch); non-decreasing with `serial`.
    pub received_ms: i64,
    /// The message as delivered to subscribers (id, timestamp, connectionId filled in).
    pub message: Message,
}

impl StoredMessage {
    /// Compact binary form (msgpack, binary data kept as bytes) for stores that keep
    /// history as opaque values, e.g. the Redis keyspace.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Inverse of [`StoredMessage::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        crate::codec::from_msgpack(b).ok()
    }
}

/// Page order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Newest first (Ably's default).
    #[default]
    Backwards,
    Forwards,
}

/// A history read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Earliest `received_ms` included.
    pub start: Option<i64>,
    /// Latest `received_ms` included.
    pub end: Option<i64>,
    pub direction: Direction,
    /// Page size, at least 1.
    pub limit: usize,
    /// Continue after this serial (exclusive): older than it when going backwards,
    /// newer when going forwards. This is the pagination cursor and the resume point.
    pub from_serial: Option<u64>,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery {
            start: None,
            end: None,
            direction: Direction::Backwards,
            limit: 100,
            from_serial: None,
        }
    }
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryPage {
    /// Messages in the query's direction.
    pub messages: Vec<StoredMessage>,
    /// Cursor for the next page (pass as `from_serial`), `None` on the last page.
    pub next: Option<u64>,
}

/// The page `q` asks for out of `ascending`, one channel's retained messages in
/// serial order: the query semantics of every [`HistoryStore`] in one place, so
/// that a store that can only narrow its candidates (a Redis script) answers
/// exactly as the in-memory one. `ascending` must hold every retained message
/// the query could pick up to one past the page, in its direction.
pub fn page_of(ascending: &[StoredMessage], q: &HistoryQuery) -> HistoryPage {
    let in_range = |m: &&StoredMessage| {
        q.start.is_none_or(|s| m.received_ms >= s) && q.end.is_none_or(|e| m.received_ms <= e)
    };
    let limit = q.limit.max(1);
    let from = q.from_serial;
    let candidates: Box<dyn Iterator<Item = &StoredMessage>> = match q.direction {
        Direction::Forwards => Box::new(
            ascending
                .iter()
                .filter(move |m| from.is_none_or(|f| m.serial > f)),
        ),
        Direction::Backwards => Box::new(
            ascending
                .iter()
                .rev()
                .filter(move |m| from.is_none_or(|f| m.serial < f)),
        ),
    };
    let mut picked: Vec<StoredMessage> = Vec::with_capacity(limit.min(1000));
    let mut more = false;
    for m in candidates.filter(in_range) {
        if picked.len() == limit {
            more = true;
            break;
        }
        picked.push(m.clone());
    }
    let next = if more {
        picked.last().map(|m| m.serial)
    } else {
        None
    };
    HistoryPage {
        messages: picked,
        next,
    }
}

/// Where channel history lives.
///
/// Contract:
/// - `append` is called with strictly increasing `serial` per channel, one call at a
///   time per channel (the hub holds the channel lock). Calls for different channels
///   may run concurrently.
/// - `query` returns messages of one channel ordered by serial (ascending for
///   `Forwards`, descending for `Backwards`), only those within the retention
///   passed at append time, within `start..=end`, and strictly beyond `from_serial`.
/// - `next` is `Some` only if at least one further matching message existed at the
///   time of the read.
/// - `last_serial` returns the highest serial ever appended and still retained, so a
///   channel re-created after idling continues its sequence.
/// - No method may block on I/O for long or await: they run under a channel lock.
///
/// [`contract_suite`] checks these promises; run it against every implementation.
pub trait HistoryStore: Send + Sync {
    /// Appends one message to `channel`'s history, kept for `retention`.
    fn append(&self, channel: &str, msg: StoredMessage, retention: Duration);

    /// Reads one page of `channel`'s history as of `now_ms`.
    fn query(&self, channel: &str, q: &HistoryQuery, now_ms: i64) -> HistoryPage;

    /// Highest retained serial of `channel`.
    fn last_serial(&self, channel: &str) -> Option<u64>;

    /// Drops expired messages; the hub calls this periodically. Stores that expire
    /// entries themselves (e.g. keyspace TTLs) keep the default no-op.
    fn expire(&self, _now_ms: i64) {}
}

struct ChannelLog {
    retention_ms: i64,
    items: VecDeque<StoredMessage>,
}

impl ChannelLog {
    fn prune(&mut self, now_ms: i64, cap: usize) {
        let horizon = now_ms.saturating_sub(self.retention_ms);
        while self
            .items
            .front()
            .is_some_and(|m| m.received_ms < horizon || self.items.len() > cap)
        {
            self.items.pop_front();
        }
    }
}

/// Shards of the in-memory store; channels hash to one, so publishes on different
/// channels rarely contend.
const SHARDS: usize = 16;

type Shard = Mutex<HashMap<String, ChannelLog>>;

/// In-memory history: a deque per channel, channels spread over mutex-guarded shards,
/// pruned on every access.
pub struct MemoryHistoryStore {
    shards: Vec<Shard>,
    /// Hard cap per channel so that a retention misconfiguration cannot exhaust memory.
    max_per_channel: usize,
}

impl Default for MemoryHistoryStore {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryHistoryStore {
    /// A store keeping at most `max_per_channel` messages per channel.
    pub fn new(max_per_channel: usize) -> Self {
        MemoryHistoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_per_channel: max_per_channel.max(1),
        }
    }

    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, HashMap<String, ChannelLog>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        let i = (h.finish() as usize) % self.shards.len();
        // A panic while holding a shard must not make history unusable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops channels whose every message has expired; call periodically.
    pub fn sweep(&self, now_ms: i64) {
        for shard in &self.shards {
            let mut ch = shard.lock().unwrap_or_else(|p| p.into_inner());
            ch.retain(|_, log| {
                log.prune(now_ms, self.max_per_channel);
                !log.items.is_empty()
            });
        }
    }
}

impl HistoryStore for MemoryHistoryStore {
    fn append(&self, channel: &str, msg: StoredMessage, retention: Duration) {
        let now = msg.received_ms;
        let mut ch = self.shard(channel);
        let log = ch.entry(channel.to_owned()).or_insert_with(|| ChannelLog {
            retention_ms: 0,
            items: VecDeque::new(),
        });
        log.retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
        log.items.push_back(msg);
        log.prune(now, self.max_per_channel);
    }

    fn query(&self, channel: &str, q: &HistoryQuery, now_ms: i64) -> HistoryPage {
        let mut ch = self.shard(channel);
        let Some(log) = ch.get_mut(channel) else {
            return HistoryPage::default();
        };
        log.prune(now_ms, self.max_per_channel);
        page_of(log.items.make_contiguous(), q)
    }

    fn expire(&self, now_ms: i64) {
        self.sweep(now_ms);
    }

    fn last_serial(&self, channel: &str) -> Option<u64> {
        let ch = self.shard(channel);
        ch.get(channel)
            .and_then(|log| log.items.back())
            .map(|m| m.serial)
    }
}

/// The [`HistoryStore`] contract as executable checks, for every implementation
/// (the server crate runs it against its keyspace-backed store). Give it a fresh,
/// empty store; it panics at the first violation. Uses channels `contract:c` and
/// `contract:other` and synthetic times around 1_000 ms.
pub fn contract_suite(store: &dyn HistoryStore) {
    fn msg(serial: u64, t: i64) -> StoredMessage {
        StoredMessage {
            serial,
            received_ms: t,
            message: Message {
                id: Some(format!("id:{serial}:0")),
                name: Some(format!("m{serial}")),
                data: Some(crate::protocol::MessageData::Binary(bytes::Bytes::from(
                    vec![0, 255, serial as u8],
                ))),
                encoding: Some("cipher+aes-128-cbc".into()),
                timestamp: Some(t),
                ..Default::default()
            },
        }
    }
    let (c, other) = ("contract:c", "contract:other");
    let keep = Duration::from_secs(60);
    for i in 1..=25u64 {
        store.append(c, msg(i, 1_000 + i as i64), keep);
    }
    store.append(other, msg(1, 1_000), keep);
    assert_eq!(store.last_serial(c), Some(25), "last_serial");
    assert_eq!(store.last_serial("contract:none"), None, "unknown channel");

    // Messages come back exactly as stored (binary data, encoding, ids).
    let newest = store.query(
        c,
        &HistoryQuery {
            limit: 1,
            ..Default::default()
        },
        2_000,
    );
    assert_eq!(
        newest.messages,
        vec![msg(25, 1_025)],
        "stored message round trip"
    );

    // Backwards pagination covers everything exactly once, newest first.
    let mut seen = Vec::new();
    let mut q = HistoryQuery {
        limit: 10,
        ..Default::default()
    };
    for _ in 0..10 {
        let page = store.query(c, &q, 2_000);
        seen.extend(page.messages.iter().map(|m| m.serial));
        match page.next {
            Some(n) => q.from_serial = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>(), "backwards pages");

    // Forwards within a time window, continued from a cursor.
    let q = HistoryQuery {
        start: Some(1_005),
        end: Some(1_009),
        direction: Direction::Forwards,
        limit: 3,
        from_serial: None,
    };
    let page = store.query(c, &q, 2_000);
    let serials: Vec<u64> = page.messages.iter().map(|m| m.serial).collect();
    assert_eq!(serials, vec![5, 6, 7], "forwards window");
    assert_eq!(page.next, Some(7), "forwards cursor");
    let page = store.query(
        c,
        &HistoryQuery {
            from_serial: Some(7),
            ..q
        },
        2_000,
    );
    let serials: Vec<u64> = page.messages.iter().map(|m| m.serial).collect();
    assert_eq!(serials, vec![8, 9], "forwards continuation");
    assert_eq!(page.next, None, "last page has no cursor");

    // Reading from a serial (what resume does): strictly after it.
    let after = store.query(
        c,
        &HistoryQuery {
            direction: Direction::Forwards,
            from_serial: Some(22),
            limit: 100,
            ..Default::default()
        },
        2_000,
    );
    let serials: Vec<u64> = after.messages.iter().map(|m| m.serial).collect();
    assert_eq!(serials, vec![23, 24, 25], "from_serial is exclusive");

    // Channels are independent.
    let page = store.query(other, &HistoryQuery::default(), 2_000);
    assert_eq!(page.messages.len(), 1, "channel isolation");

    // Retention: everything is gone once older than the retention.
    let page = store.query(c, &HistoryQuery::default(), 1_000 + 61_000 + 25);
    assert!(page.messages.is_empty(), "retention");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_meets_contract() {
        contract_suite(&MemoryHistoryStore::default());
    }

    fn msg(serial: u64, t: i64) -> StoredMessage {
        StoredMessage {
            serial,
            received_ms: t,
            message: Message::default(),
        }
    }

    #[test]
    fn memory_store_caps_per_channel() {
        let s = MemoryHistoryStore::new(3);
        for i in 1..=5 {
            s.append("c", msg(i, 10), Duration::from_secs(60));
        }
        let page = s.query("c", &HistoryQuery::default(), 10);
        assert_eq!(
            page.messages.iter().map(|m| m.serial).collect::<Vec<_>>(),
            vec![5, 4, 3]
        );
    }

    #[test]
    fn stored_message_bytes_roundtrip_keeps_binary() {
        let mut m = msg(9, 5);
        m.message.data = Some(crate::protocol::MessageData::Binary(
            bytes::Bytes::from_static(&[0, 255]),
        ));
        assert_eq!(StoredMessage::from_bytes(&m.to_bytes()), Some(m));
    }
}
