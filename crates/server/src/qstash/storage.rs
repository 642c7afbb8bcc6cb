//! Messages kept in the keyspace, so they are persisted with it (AOF, snapshots),
//! survive restarts, and can be inspected with redis-cli. In database
//! `[qstash] db` (14 by default):
//!
//! - `qstash:message:<id>`: the message as JSON;
//! - `qstash:due`: sorted set of message ids by the unix ms of their next attempt;
//!   a message being delivered is pushed to the end of its delivery's timeout, so a
//!   crash mid-delivery means a new attempt after restart (at least once);
//! - `qstash:dedup:<id>`: the message id a deduplication id first published;
//! - `qstash:dlq` / `qstash:dlq:<dlqId>`: the dead-letter queue, by failure time;
//! - `qstash:queue:<name>`, `qstash:flow:<hex key>` and their `…:waiting`,
//!   `…:active`, `…:rate`: queues and flow-control keys ([`super::lanes`]);
//! - `qstash:schedule:<id>`: a schedule as JSON, `qstash:schedules` its id by
//!   creation time, `qstash:schedules:due` the active ones by their next tick.
//!
//! Every operation runs as ordinary commands through `Store::execute` on an
//! internal client, so the append-only log records them with everything else.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewire_store::{Client, Reply, Store};

use super::delivery::now_ms;
use super::events::State;
use super::lanes::Lane;
use super::message::Message;
use super::schedule::Schedule;

pub(super) const DUE: &str = "qstash:due";
const DLQ: &str = "qstash:dlq";
const SCHEDULES: &str = "qstash:schedules";
const SCHEDULES_DUE: &str = "qstash:schedules:due";
/// How long a publisher's deduplication id is remembered (as QStash: 90 days).
pub const DEDUP_SECS: u64 = 90 * 86_400;

/// What [`Storage::enqueue`] did.
#[derive(Debug, PartialEq)]
pub enum Enqueued {
    Stored,
    /// Its deduplication id was seen: nothing stored; the first message's id.
    Duplicate(String),
}

/// A message that used up its retries, with the last response it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub dlq_id: String,
    pub message: Message,
    /// Unix ms it was moved here.
    pub failed_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    #[serde(default)]
    pub response_header: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub response_body: String,
}

impl DeadLetter {
    /// QStash's view of a DLQ entry: the message's fields and the response's.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.message.to_json();
        v["dlqId"] = self.dlq_id.clone().into();
        if let Some(s) = self.response_status {
            v["responseStatus"] = s.into();
        }
        v["responseHeader"] = serde_json::json!(self.response_header);
        v["responseBody"] = self.response_body.clone().into();
        v
    }
}

/// The keyspace side of the message API.
pub struct Storage {
    store: Arc<Store>,
    /// Entries the events log keeps ([`super::events`]).
    pub(super) events_kept: usize,
    client: Mutex<Client>,
}

impl Storage {
    pub fn new(store: Arc<Store>, db: usize, events_kept: usize) -> Storage {
        let c = store.new_internal_client("qstash", "qstash", db);
        Storage {
            store,
            events_kept,
            client: Mutex::new(c),
        }
    }

    /// Runs commands in order on the internal client; returns their replies and
    /// the write-log sequence of their writes (to wait on under `appendfsync always`).
    pub(super) fn run(&self, commands: &[Vec<Bytes>]) -> (Vec<Reply>, u64) {
        let mut client = self.client.lock();
        tidewire_store::exec::take_write_seq();
        let replies = commands
            .iter()
            .map(|argv| self.store.execute_now(&mut client, argv))
            .collect();
        (replies, tidewire_store::exec::take_write_seq())
    }

    /// Runs writes a client is answered for: the first error reply (an `OOM`
    /// under `maxmemory`, `LOADING` while the dataset loads) fails them, so
    /// nothing is acknowledged that was not stored.
    pub(super) fn write(&self, commands: &[Vec<Bytes>]) -> Result<(Vec<Reply>, u64), String> {
        let (replies, seq) = self.run(commands);
        match replies.iter().find_map(|r| match r {
            Reply::Error(e) => Some(e.clone()),
            _ => None,
        }) {
            Some(e) => Err(e),
            None => Ok((replies, seq)),
        }
    }

    /// Runs `f` with the internal client held: the commands it runs (through
    /// the function it is given) are one step for every other QStash operation.
    pub(super) fn with_client<R>(
        &self,
        f: impl FnOnce(&mut dyn FnMut(Vec<Bytes>) -> Reply) -> R,
    ) -> R {
        let mut client = self.client.lock();
        let mut exec = |argv: Vec<Bytes>| self.store.execute_now(&mut client, &argv);
        f(&mut exec)
    }

    pub(super) fn one(&self, argv: Vec<Bytes>) -> Reply {
        self.run(&[argv]).0.pop().unwrap_or(Reply::Null)
    }

    /// Stores a new message and schedules it. With a deduplication id already
    /// seen, stores nothing and names the first message. `Err`: the store
    /// refused the write.
    pub fn enqueue(&self, m: &Message, dedup: Option<&str>) -> Result<(Enqueued, u64), String> {
        self.enqueue_dedup_for(m, dedup, DEDUP_SECS)
    }

    /// [`Storage::enqueue`], remembering the deduplication id `dedup_secs`.
    pub fn enqueue_dedup_for(
        &self,
        m: &Message,
        dedup: Option<&str>,
        dedup_secs: u64,
    ) -> Result<(Enqueued, u64), String> {
        let mut seq = 0;
        // A message under a flow-control key (and in no queue) makes or updates
        // the key's lane, whichever way it was published (API, schedule, DLQ).
        if let (None, Some(f)) = (&m.queue_name, &m.flow_control) {
            seq = seq.max(self.follow_flow(f, m.created_at)?);
        }
        if let Some(d) = dedup {
            let (mut r, s) = self.write(&[argv(&[
                "SET",
                &format!("qstash:dedup:{d}"),
                &m.message_id,
                "NX",
                "GET",
                "EX",
                &dedup_secs.max(1).to_string(),
            ])])?;
            seq = seq.max(s);
            if let Some(Reply::Bulk(first)) = r.pop() {
                let first = String::from_utf8_lossy(&first).into_owned();
                return Ok((Enqueued::Duplicate(first), seq));
            }
        }
        // A queue's message due at once joins its queue here, so messages
        // enqueued together keep the order they were accepted in.
        let mut cmds = vec![self.save_cmd(m)];
        match Lane::of(m) {
            Some(lane) if m.not_before <= m.created_at => {
                cmds.extend(lane.push(&m.message_id, false))
            }
            _ => cmds.push(zadd(DUE, m.not_before, &m.message_id)),
        }
        match self.write(&cmds) {
            Ok((_, s)) => {
                self.record(State::Created, m, m.created_at, Value::Null);
                Ok((Enqueued::Stored, seq.max(s)))
            }
            Err(e) => {
                // Not stored: a retried publish with the same id must not be
                // taken for a duplicate of nothing.
                if let Some(d) = dedup {
                    self.run(&[argv(&["DEL", &format!("qstash:dedup:{d}")])]);
                }
                self.run(&[argv(&["DEL", &message_key(&m.message_id)])]);
                Err(e)
            }
        }
    }

    fn save_cmd(&self, m: &Message) -> Vec<Bytes> {
        let json = serde_json::to_vec(m).unwrap_or_default();
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from(message_key(&m.message_id)),
            Bytes::from(json),
        ]
    }

    pub fn get(&self, id: &str) -> Option<Message> {
        match self.one(argv(&["GET", &message_key(id)])) {
            Reply::Bulk(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    /// Ids of messages due by `now_ms`, at most `count`, earliest first. The
    /// caller leases each ([`Storage::reschedule`]) before delivering it.
    pub fn claim_due(&self, now_ms: u64, count: usize) -> Vec<String> {
        ids(self.one(argv(&[
            "ZRANGEBYSCORE",
            DUE,
            "-inf",
            &now_ms.to_string(),
            "LIMIT",
            "0",
            &count.to_string(),
        ])))
    }

    /// Pushes `id`'s next attempt to `at_ms` (if it is still scheduled).
    pub fn reschedule(&self, id: &str, at_ms: u64) {
        self.one(argv(&["ZADD", DUE, "XX", &at_ms.to_string(), id]));
    }

    /// The earliest next attempt, if any message is scheduled.
    pub fn next_due(&self) -> Option<u64> {
        first_score(self.one(argv(&["ZRANGE", DUE, "0", "0", "WITHSCORES"])))
    }

    /// A delivered message leaves the queue.
    pub fn complete(&self, m: &Message) {
        let id = &m.message_id;
        let mut cmds = vec![argv(&["ZREM", DUE, id]), argv(&["DEL", &message_key(id)])];
        cmds.extend(Lane::of(m).map(|lane| lane.done(id)));
        self.run(&cmds);
    }

    /// A failed attempt with retries left: stores the new count, schedules the
    /// next (a queue's message then waits for its turn again). A message cancelled
    /// during its delivery stays cancelled: `SET … XX` finds no message, and
    /// nothing is scheduled.
    pub fn retry_later(&self, m: &Message, at_ms: u64) {
        let mut save = self.save_cmd(m);
        save.push(Bytes::from_static(b"XX"));
        let mut first = vec![save];
        first.extend(Lane::of(m).map(|lane| lane.done(&m.message_id)));
        let (r, _) = self.run(&first);
        if matches!(r.first(), Some(Reply::Status(_) | Reply::SimpleString(_))) {
            self.run(&[zadd(DUE, at_ms, &m.message_id)]);
        }
    }

    /// Cancels a message (scheduled, or waiting in its lane); whether it was
    /// there.
    pub fn cancel(&self, id: &str) -> bool {
        let message = self.get(id);
        let mut cmds = vec![argv(&["ZREM", DUE, id]), argv(&["DEL", &message_key(id)])];
        if let Some(lane) = message.as_ref().and_then(Lane::of) {
            cmds.push(argv(&["LREM", &lane.waiting_key(), "1", id]));
        }
        let (r, _) = self.run(&cmds);
        let gone = matches!(r.get(1), Some(Reply::Int(1)));
        if let (true, Some(m)) = (gone, message) {
            self.record(State::Canceled, &m, now_ms(), Value::Null);
        }
        gone
    }

    /// Messages scheduled or waiting in a lane.
    pub fn pending_count(&self) -> u64 {
        let waiting: u64 = self
            .ready_lanes()
            .iter()
            .map(|(lane, _)| self.lag(lane))
            .sum();
        count(self.one(argv(&["ZCARD", DUE]))) + waiting
    }

    /// Entries in the dead-letter queue.
    pub fn dlq_count(&self) -> u64 {
        count(self.one(argv(&["ZCARD", DLQ])))
    }

    /// Ids of pending messages, `count` at most from position `from`: scheduled
    /// ones in order of their next attempt, then those waiting in each queue.
    pub fn pending(&self, from: usize, count: usize) -> Vec<String> {
        let mut skip = from;
        let mut out = Vec::new();
        let lanes = self.ready_lanes().into_iter();
        let lists = std::iter::once((DUE.to_string(), "ZRANGE", "ZCARD"))
            .chain(lanes.map(|(lane, _)| (lane.waiting_key(), "LRANGE", "LLEN")));
        for (key, range, len) in lists {
            if out.len() >= count {
                break;
            }
            let n = self::count(self.one(argv(&[len, &key]))) as usize;
            if skip >= n {
                skip -= n;
                continue;
            }
            let last = skip + (count - out.len()) - 1;
            out.extend(ids(self.one(argv(&[
                range,
                &key,
                &skip.to_string(),
                &last.to_string(),
            ]))));
            skip = 0;
        }
        out
    }

    /// Moves a message that used up its retries to the dead-letter queue.
    pub fn bury(&self, letter: &DeadLetter) {
        let json = serde_json::to_vec(letter).unwrap_or_default();
        let id = &letter.message.message_id;
        self.run(&[
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from(dlq_key(&letter.dlq_id)),
                Bytes::from(json),
            ],
            zadd(DLQ, letter.failed_at, &letter.dlq_id),
            argv(&["ZREM", DUE, id]),
            argv(&["DEL", &message_key(id)]),
        ]);
        if let Some(lane) = Lane::of(&letter.message) {
            self.run(&[lane.done(id)]);
        }
    }

    pub fn dead_letter(&self, dlq_id: &str) -> Option<DeadLetter> {
        match self.one(argv(&["GET", &dlq_key(dlq_id)])) {
            Reply::Bulk(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    /// DLQ ids, oldest failure first.
    pub fn dead_letters(&self, from: usize, count: usize) -> Vec<String> {
        ids(self.one(argv(&[
            "ZRANGE",
            DLQ,
            &from.to_string(),
            &(from + count).saturating_sub(1).to_string(),
        ])))
    }

    pub fn forget_dead_letter(&self, dlq_id: &str) -> bool {
        let (r, _) = self.run(&[
            argv(&["ZREM", DLQ, dlq_id]),
            argv(&["DEL", &dlq_key(dlq_id)]),
        ]);
        matches!(r.first(), Some(Reply::Int(1)))
    }
}

impl Storage {
    /// Stores a schedule (new or replaced), due at its next tick unless paused.
    pub fn save_schedule(&self, s: &Schedule) -> Result<u64, String> {
        let json = serde_json::to_vec(s).unwrap_or_default();
        let id = &s.schedule_id;
        let due = if s.is_paused {
            argv(&["ZREM", SCHEDULES_DUE, id])
        } else {
            zadd(SCHEDULES_DUE, s.next_schedule_time, id)
        };
        self.write(&[
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from(schedule_key(id)),
                Bytes::from(json),
            ],
            argv(&["ZADD", SCHEDULES, "NX", &s.created_at.to_string(), id]),
            due,
        ])
        .map(|(_, seq)| seq)
    }

    pub fn schedule(&self, id: &str) -> Option<Schedule> {
        match self.one(argv(&["GET", &schedule_key(id)])) {
            Reply::Bulk(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    /// Every schedule, oldest first.
    pub fn schedules(&self) -> Vec<Schedule> {
        ids(self.one(argv(&["ZRANGE", SCHEDULES, "0", "-1"])))
            .iter()
            .filter_map(|id| self.schedule(id))
            .collect()
    }

    /// Active schedules whose next tick is due by `now_ms`: (id, tick).
    pub fn due_schedules(&self, now_ms: u64, count: usize) -> Vec<(String, u64)> {
        let items = self
            .one(argv(&[
                "ZRANGEBYSCORE",
                SCHEDULES_DUE,
                "-inf",
                &now_ms.to_string(),
                "WITHSCORES",
                "LIMIT",
                "0",
                &count.to_string(),
            ]))
            .into_array()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(id), Some(score)) = (it.next(), it.next()) {
            if let (Some(id), Some(tick)) = (ids(Reply::Array(vec![id])).pop(), score_of(&score)) {
                out.push((id, tick));
            }
        }
        out
    }

    /// The earliest next tick of an active schedule.
    pub fn next_schedule_due(&self) -> Option<u64> {
        first_score(self.one(argv(&["ZRANGE", SCHEDULES_DUE, "0", "0", "WITHSCORES"])))
    }

    pub fn delete_schedule(&self, id: &str) -> (bool, u64) {
        let (r, seq) = self.run(&[
            argv(&["DEL", &schedule_key(id)]),
            argv(&["ZREM", SCHEDULES, id]),
            argv(&["ZREM", SCHEDULES_DUE, id]),
        ]);
        (matches!(r.first(), Some(Reply::Int(1))), seq)
    }
}

fn first_score(reply: Reply) -> Option<u64> {
    score_of(reply.into_array()?.get(1)?)
}

fn score_of(score: &Reply) -> Option<u64> {
    match score {
        Reply::Bulk(s) => std::str::from_utf8(s)
            .ok()?
            .parse::<f64>()
            .ok()
            .map(|f| f as u64),
        Reply::Double(d) => Some(*d as u64),
        _ => None,
    }
}

fn schedule_key(id: &str) -> String {
    format!("qstash:schedule:{id}")
}

pub(super) fn message_key(id: &str) -> String {
    format!("qstash:message:{id}")
}

fn dlq_key(id: &str) -> String {
    format!("qstash:dlq:{id}")
}

pub(super) fn argv(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

pub(super) fn zadd(key: &str, score: u64, member: &str) -> Vec<Bytes> {
    argv(&["ZADD", key, &score.to_string(), member])
}

/// An integer reply as a count (0 for anything else).
pub(super) fn count(reply: Reply) -> u64 {
    match reply {
        Reply::Int(n) => n.max(0) as u64,
        _ => 0,
    }
}

pub(super) fn ids(reply: Reply) -> Vec<String> {
    // SMEMBERS answers a set, which RESP2 sends as an array.
    let items = match reply {
        Reply::Set(items) => items,
        other => other.into_array().unwrap_or_default(),
    };
    items
        .into_iter()
        .filter_map(|r| match r {
            Reply::Bulk(b) => String::from_utf8(b.to_vec()).ok(),
            _ => None,
        })
        .collect()
}
