//! Realtime channel history kept in the Redis keyspace, so it is persisted with it
//! (AOF, snapshots), survives restarts and can be inspected with redis-cli.
//!
//! Layout: channel `ch` is the sorted set `realtime:history:ch` (a further app's:
//! `realtime:<appId>:history:ch`) in database
//! `history_db` (15 by default, out of the way of applications' database 0).
//! Score = channel serial; member = 8-byte big-endian expiry time (unix ms) followed
//! by the message in its compact msgpack form. The key's own TTL is refreshed to the
//! retention on every append, so an idle channel's history disappears as a whole;
//! within a live channel, expired messages are trimmed from the oldest end on append
//! and skipped by reads.
//!
//! Every operation runs as ordinary commands through `Store::execute` on an internal
//! client, so history writes take the normal write path: the append-only log records
//! them in order with everything else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tidewire_realtime::history::{
    Direction, HistoryPage, HistoryQuery, HistoryStore, StoredMessage,
};
use tidewire_store::{Client, Reply, Store};

/// Key prefix of history sorted sets.
pub const KEY_PREFIX: &str = "realtime:history:";
/// Internal clients, so appends on different channels do not queue behind one mutex.
const CLIENTS: usize = 8;
/// Entries read per step when a page needs filtering (time range, expiry).
const BATCH: usize = 256;

pub struct KeyspaceHistory {
    store: Arc<Store>,
    clients: Vec<Mutex<Client>>,
    /// Key prefix of this app's channels.
    prefix: String,
}

impl KeyspaceHistory {
    pub fn new(store: Arc<Store>, db: usize) -> Self {
        Self::with_prefix(store, db, KEY_PREFIX.to_owned())
    }

    /// History of a further app, under `realtime:<app_id>:history:`.
    pub fn for_app(store: Arc<Store>, db: usize, app_id: &str) -> Self {
        Self::with_prefix(store, db, format!("realtime:{app_id}:history:"))
    }

    fn with_prefix(store: Arc<Store>, db: usize, prefix: String) -> Self {
        let clients = (0..CLIENTS)
            .map(|_| Mutex::new(store.new_internal_client("realtime", "history", db)))
            .collect();
        KeyspaceHistory {
            store,
            clients,
            prefix,
        }
    }

    fn run(&self, channel: &str, argv: Vec<Bytes>) -> Reply {
        let idx = channel
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % CLIENTS;
        let mut client = self.clients[idx].lock();
        self.store.execute_now(&mut client, &argv)
    }

    fn key(&self, channel: &str) -> Bytes {
        Bytes::from(format!("{}{channel}", self.prefix))
    }

    /// Members with scores of `channel` in serial order from `from` (exclusive),
    /// `count` at most, forwards or backwards.
    fn range(
        &self,
        channel: &str,
        from: Option<u64>,
        forwards: bool,
        count: usize,
    ) -> Vec<(Bytes, u64)> {
        let (cmd, min, max) = if forwards {
            let min = from.map_or("-inf".to_string(), |f| format!("({f}"));
            ("ZRANGEBYSCORE", min, "+inf".to_string())
        } else {
            let max = from.map_or("+inf".to_string(), |f| format!("({f}"));
            ("ZREVRANGEBYSCORE", max, "-inf".to_string())
        };
        let argv = vec![
            Bytes::from_static(cmd.as_bytes()),
            self.key(channel),
            Bytes::from(min),
            Bytes::from(max),
            Bytes::from_static(b"WITHSCORES"),
            Bytes::from_static(b"LIMIT"),
            Bytes::from_static(b"0"),
            Bytes::from(count.to_string()),
        ];
        let Some(items) = self.run(channel, argv).into_array() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(Reply::Bulk(member)), Some(score)) = (it.next(), it.next()) {
            let serial = match score {
                Reply::Bulk(s) => std::str::from_utf8(&s)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok()),
                Reply::Double(d) => Some(d),
                _ => None,
            };
            if let Some(s) = serial {
                out.push((member, s as u64));
            }
        }
        out
    }

    /// Drops expired messages from the oldest end of `channel`'s history.
    fn trim(&self, channel: &str, now_ms: i64) {
        let oldest = self.range(channel, None, true, 32);
        let expired = oldest
            .iter()
            .take_while(|(m, _)| expiry_of(m) <= now_ms)
            .count();
        if expired > 0 {
            self.run(
                channel,
                vec![
                    Bytes::from_static(b"ZREMRANGEBYRANK"),
                    self.key(channel),
                    Bytes::from_static(b"0"),
                    Bytes::from((expired - 1).to_string()),
                ],
            );
        }
    }
}

fn expiry_of(member: &[u8]) -> i64 {
    member
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_be_bytes)
}

fn decode(member: &[u8]) -> Option<StoredMessage> {
    StoredMessage::from_bytes(member.get(8..)?)
}

impl HistoryStore for KeyspaceHistory {
    fn append(&self, channel: &str, msg: StoredMessage, retention: Duration) {
        let retention_ms = retention.as_millis().min(i64::MAX as u128 / 2) as i64;
        let expires = msg.received_ms.saturating_add(retention_ms);
        let mut member = expires.to_be_bytes().to_vec();
        member.extend_from_slice(&msg.to_bytes());
        let key = self.key(channel);
        self.run(
            channel,
            vec![
                Bytes::from_static(b"ZADD"),
                key.clone(),
                Bytes::from(msg.serial.to_string()),
                Bytes::from(member),
            ],
        );
        self.run(
            channel,
            vec![
                Bytes::from_static(b"PEXPIRE"),
                key,
                Bytes::from(retention_ms.max(1).to_string()),
            ],
        );
        self.trim(channel, msg.received_ms);
    }

    fn query(&self, channel: &str, q: &HistoryQuery, now_ms: i64) -> HistoryPage {
        let limit = q.limit.max(1);
        let forwards = q.direction == Direction::Forwards;
        let mut picked = Vec::with_capacity(limit.min(1000));
        let mut cursor = q.from_serial;
        let mut more = false;
        'pages: loop {
            let batch = self.range(channel, cursor, forwards, BATCH.max(limit + 1));
            let exhausted = batch.len() < BATCH.max(limit + 1);
            for (member, serial) in batch {
                cursor = Some(serial);
                if expiry_of(&member) <= now_ms {
                    continue;
                }
                let Some(m) = decode(&member) else { continue };
                let in_range = q.start.is_none_or(|s| m.received_ms >= s)
                    && q.end.is_none_or(|e| m.received_ms <= e);
                if !in_range {
                    continue;
                }
                if picked.len() == limit {
                    more = true;
                    break 'pages;
                }
                picked.push(m);
            }
            if exhausted {
                break;
            }
        }
        let next = if more {
            picked.last().map(|m: &StoredMessage| m.serial)
        } else {
            None
        };
        HistoryPage {
            messages: picked,
            next,
        }
    }

    fn last_serial(&self, channel: &str) -> Option<u64> {
        self.range(channel, None, false, 1).first().map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_history_store_contract() {
        let store = Store::new();
        let h = KeyspaceHistory::new(store, 15);
        tidewire_realtime::history::contract_suite(&h);
    }

    /// The in-process broker keeps its promises (atomic position + append under
    /// concurrent publishers, since P) with history on the keyspace too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_broker_contract_over_keyspace_history() {
        use tidewire_realtime::engine::{broker, Broker, MemoryBroker};
        let h = Arc::new(KeyspaceHistory::new(Store::new(), 15));
        let b: Arc<dyn Broker> = Arc::new(MemoryBroker::new(h));
        broker::contract_suite(b.clone(), b, tidewire_realtime::auth::now_ms()).await;
    }
}
