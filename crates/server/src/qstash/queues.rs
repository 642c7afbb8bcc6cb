//! Queues: messages enqueued to a named queue (`/v2/enqueue/<queue>/<url>`) are
//! delivered in the order they became due, at most `parallelism` at a time, and
//! not at all while the queue is paused. A message first waits out its delay in
//! the due set like any other, then joins its queue's waiting list; the delivery
//! loop starts the head of each list while the queue has a free slot.
//!
//! A message in flight is in the queue's active set; after a restart those go
//! back to the front of the list, so none is lost (at least once). A retry leaves
//! the slot, waits its backoff, and joins the end of the list again.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidewire_store::Reply;

use super::message::Message;
use super::storage::{active_key, argv, ids, message_key, queue_key, waiting_key, Storage, DUE};

const QUEUES: &str = "qstash:queues";
/// Most deliveries one queue may run at once.
pub const MAX_PARALLELISM: u32 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    pub name: String,
    pub parallelism: u32,
    pub paused: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

impl QueueSettings {
    /// A queue made by its first message: one delivery at a time.
    pub fn new(name: &str, now: u64) -> QueueSettings {
        QueueSettings {
            name: name.to_string(),
            parallelism: 1,
            paused: false,
            created_at: now,
            updated_at: now,
        }
    }

    /// QStash's view; `lag`: messages waiting for their turn.
    pub fn to_json(&self, lag: u64) -> Value {
        json!({
            "name": self.name,
            "parallelism": self.parallelism,
            "paused": self.paused,
            "lag": lag,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

impl Storage {
    pub fn queue(&self, name: &str) -> Option<QueueSettings> {
        match self.one(argv(&["GET", &queue_key(name)])) {
            Reply::Bulk(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    pub fn queues(&self) -> Vec<QueueSettings> {
        ids(self.one(argv(&["ZRANGE", QUEUES, "0", "-1"])))
            .iter()
            .filter_map(|n| self.queue(n))
            .collect()
    }

    pub fn save_queue(&self, q: &QueueSettings) -> Result<u64, String> {
        let json = serde_json::to_vec(q).unwrap_or_default();
        self.write(&[
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from(queue_key(&q.name)),
                Bytes::from(json),
            ],
            argv(&["ZADD", QUEUES, "NX", &q.created_at.to_string(), &q.name]),
        ])
        .map(|(_, seq)| seq)
    }

    /// Messages waiting for their turn.
    pub fn lag(&self, name: &str) -> u64 {
        match self.one(argv(&["LLEN", &waiting_key(name)])) {
            Reply::Int(n) => n.max(0) as u64,
            _ => 0,
        }
    }

    /// Deletes a queue and cancels the messages waiting in it (those in flight
    /// finish).
    pub fn delete_queue(&self, name: &str) -> (bool, u64) {
        let waiting = ids(self.one(argv(&["LRANGE", &waiting_key(name), "0", "-1"])));
        let mut cmds = vec![
            argv(&["DEL", &queue_key(name)]),
            argv(&["ZREM", QUEUES, name]),
            argv(&["DEL", &waiting_key(name)]),
        ];
        for id in &waiting {
            cmds.push(argv(&["DEL", &message_key(id)]));
            cmds.push(argv(&["ZREM", DUE, id]));
        }
        let (r, seq) = self.run(&cmds);
        (matches!(r.first(), Some(Reply::Int(1))), seq)
    }

    /// A queue's message whose time has come leaves the due set for the end of
    /// its queue's waiting list.
    pub fn join_queue(&self, queue: &str, id: &str) {
        self.run(&[
            argv(&["ZREM", DUE, id]),
            argv(&["RPUSH", &waiting_key(queue), id]),
        ]);
    }

    /// The next message of `queue` to deliver, now counted in flight; `None` when
    /// its list is empty or its slots are taken. Ids of cancelled messages are
    /// skipped.
    pub fn start_next(&self, q: &QueueSettings) -> Option<Message> {
        loop {
            let active = match self.one(argv(&["SCARD", &active_key(&q.name)])) {
                Reply::Int(n) => n.max(0) as u64,
                _ => 0,
            };
            if active >= u64::from(q.parallelism) {
                return None;
            }
            let id = match self.one(argv(&["LPOP", &waiting_key(&q.name)])) {
                Reply::Bulk(b) => String::from_utf8(b.to_vec()).ok()?,
                _ => return None,
            };
            if let Some(m) = self.get(&id) {
                self.run(&[argv(&["SADD", &active_key(&q.name), &id])]);
                return Some(m);
            }
        }
    }

    /// After a restart: messages that were in flight go back to the front of
    /// their queues, in their order.
    pub fn requeue_in_flight(&self) {
        for q in self.queues() {
            let active = ids(self.one(argv(&["SMEMBERS", &active_key(&q.name)])));
            if active.is_empty() {
                continue;
            }
            let mut push = argv(&["LPUSH", &waiting_key(&q.name)]);
            push.extend(active.iter().rev().map(|id| Bytes::from(id.clone())));
            self.run(&[push, argv(&["DEL", &active_key(&q.name)])]);
        }
    }
}

/// `{"queueName","parallelism","paused"}` of an upsert.
pub fn parse_upsert(body: &[u8]) -> Result<(String, Option<u32>, Option<bool>), String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| "body must be {\"queueName\", \"parallelism\", \"paused\"}".to_string())?;
    let name = v
        .get("queueName")
        .and_then(Value::as_str)
        .filter(|n| super::url_group::valid_name(n))
        .ok_or("queueName: letters, digits, '-', '_' and '.' (at most 128)")?;
    let parallelism = match v.get("parallelism") {
        None | Some(Value::Null) => None,
        Some(p) => match p.as_u64() {
            Some(n) if (1..=u64::from(MAX_PARALLELISM)).contains(&n) => Some(n as u32),
            _ => {
                return Err(format!(
                    "parallelism must be between 1 and {MAX_PARALLELISM}"
                ))
            }
        },
    };
    let paused = v.get("paused").and_then(Value::as_bool);
    Ok((name.to_string(), parallelism, paused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts() {
        assert_eq!(
            parse_upsert(br#"{"queueName":"emails","parallelism":3,"paused":true}"#).unwrap(),
            ("emails".to_string(), Some(3), Some(true))
        );
        assert_eq!(
            parse_upsert(br#"{"queueName":"emails"}"#).unwrap(),
            ("emails".to_string(), None, None)
        );
        for bad in [
            r#"{"queueName":"a/b"}"#,
            r#"{"parallelism":1}"#,
            r#"{"queueName":"q","parallelism":0}"#,
            r#"{"queueName":"q","parallelism":5000}"#,
            "nope",
        ] {
            assert!(parse_upsert(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
