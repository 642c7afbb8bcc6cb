//! Lanes: where a message waits for its turn. A queue (`/v2/enqueue/<queue>/…`)
//! and a flow-control key (`Upstash-Flow-Control-Key`) are both lanes: their
//! messages are started in the order they became due, at most `parallelism` at
//! a time (a queue: 1 unless set; a flow key: no limit unless set), at most
//! `rate` starts per `period` (flow keys), and none while paused. A message first
//! waits out its delay in the due set like any other, then joins its lane's
//! waiting list; the delivery loop starts the head of each list while the lane
//! allows.
//!
//! A message in flight is in its lane's active set; after a restart those go back
//! to the front of the list, so none is lost (at least once). A retry leaves the
//! slot, waits its backoff, and joins the end of the list again.
//!
//! Keys: `qstash:queue:<name>` / `qstash:flow:<hex of the key>` (settings), with
//! `…:waiting` (list), `…:active` (set) and, for rates, `…:rate` (starts in the
//! current period, expiring with it); `qstash:queues` / `qstash:flows` list them.
//! `qstash:lanes:ready` holds the lanes with messages waiting, so the delivery
//! loop looks only at those however many flow-control keys there are: every push
//! onto a waiting list adds its lane there, and a lane found empty leaves it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidewire_store::Reply;

use super::message::{FlowControl, Message};
use super::storage::{argv, count, ids, message_key, Storage, DUE};

const READY: &str = "qstash:lanes:ready";

/// Most deliveries one lane may run at once, and most starts per period.
pub const MAX_PARALLELISM: u32 = 1000;

/// A queue, or a flow-control key.
#[derive(Debug, Clone, PartialEq)]
pub enum Lane {
    Queue(String),
    Flow(String),
}

impl Lane {
    /// The lane a message waits in: its queue, else its flow-control key.
    pub fn of(m: &Message) -> Option<Lane> {
        match (&m.queue_name, &m.flow_control) {
            (Some(q), _) => Some(Lane::Queue(q.clone())),
            (None, Some(f)) => Some(Lane::Flow(f.key.clone())),
            (None, None) => None,
        }
    }

    /// The lane as a member of the ready set: `q:<queue>` or `f:<flow key>`.
    fn id(&self) -> String {
        match self {
            Lane::Queue(n) => format!("q:{n}"),
            Lane::Flow(k) => format!("f:{k}"),
        }
    }

    fn from_id(id: &str) -> Option<Lane> {
        match id.split_at_checked(2)? {
            ("q:", n) => Some(Lane::Queue(n.to_string())),
            ("f:", k) => Some(Lane::Flow(k.to_string())),
            _ => None,
        }
    }

    /// Puts message `id` at the end of the waiting list (or, `front`, at its
    /// head), and the lane among the ready ones.
    pub fn push(&self, id: &str, front: bool) -> [Vec<Bytes>; 2] {
        let op = if front { "LPUSH" } else { "RPUSH" };
        [
            argv(&[op, &self.waiting_key(), id]),
            argv(&["SADD", READY, &self.id()]),
        ]
    }

    pub fn name(&self) -> &str {
        match self {
            Lane::Queue(n) | Lane::Flow(n) => n,
        }
    }

    fn registry(&self) -> &'static str {
        match self {
            Lane::Queue(_) => "qstash:queues",
            Lane::Flow(_) => "qstash:flows",
        }
    }

    /// The settings' key; the lane's other keys extend it. A flow key may hold
    /// any bytes, so it is written in hex.
    fn base(&self) -> String {
        match self {
            Lane::Queue(n) => format!("qstash:queue:{n}"),
            Lane::Flow(k) => format!("qstash:flow:{}", tidewire_store::acl::hex(k.as_bytes())),
        }
    }

    pub fn waiting_key(&self) -> String {
        format!("{}:waiting", self.base())
    }

    pub fn active_key(&self) -> String {
        format!("{}:active", self.base())
    }

    fn rate_key(&self) -> String {
        format!("{}:rate", self.base())
    }

    /// The lane's message is no longer in flight.
    pub fn done(&self, id: &str) -> Vec<Bytes> {
        argv(&["SREM", &self.active_key(), id])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LaneSettings {
    pub name: String,
    /// Deliveries at once; 0: no limit.
    pub parallelism: u32,
    /// Starts per period; 0: no limit.
    #[serde(default)]
    pub rate: u32,
    #[serde(default = "one_second")]
    pub period_secs: u64,
    pub paused: bool,
    /// Set through the API: publishes' flow-control values do not change it.
    #[serde(default)]
    pub pinned_parallelism: bool,
    #[serde(default)]
    pub pinned_rate: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

fn one_second() -> u64 {
    1
}

impl LaneSettings {
    /// A queue made by its first message: one delivery at a time.
    pub fn queue(name: &str, now: u64) -> LaneSettings {
        LaneSettings {
            name: name.to_string(),
            parallelism: 1,
            rate: 0,
            period_secs: 1,
            paused: false,
            pinned_parallelism: false,
            pinned_rate: false,
            created_at: now,
            updated_at: now,
        }
    }

    /// Takes a publish's flow-control values, but not over pinned ones.
    pub fn follow(&mut self, f: &FlowControl, now: u64) {
        if !self.pinned_parallelism {
            self.parallelism = f.parallelism.unwrap_or(0);
        }
        if !self.pinned_rate {
            self.rate = f.rate.unwrap_or(0);
            self.period_secs = f.period_secs;
        }
        self.updated_at = now;
    }

    /// QStash's view of a queue; `lag`: messages waiting for their turn.
    pub fn queue_json(&self, lag: u64) -> Value {
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

/// What [`Storage::start_next`] found.
pub enum Next {
    Started(Box<Message>),
    /// Every slot is taken.
    Full,
    /// Nothing waits.
    Empty,
    /// The period's starts are used up: the next period begins in this many ms.
    RateLimited(u64),
}

impl Storage {
    pub fn lane(&self, lane: &Lane) -> Option<LaneSettings> {
        match self.one(argv(&["GET", &lane.base()])) {
            Reply::Bulk(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    /// Every queue (`Lane::Queue`) or flow key (`Lane::Flow`), oldest first.
    pub fn lanes(&self, flows: bool) -> Vec<(Lane, LaneSettings)> {
        let registry = if flows {
            "qstash:flows"
        } else {
            "qstash:queues"
        };
        ids(self.one(argv(&["ZRANGE", registry, "0", "-1"])))
            .into_iter()
            .map(|n| if flows { Lane::Flow(n) } else { Lane::Queue(n) })
            .filter_map(|l| self.lane(&l).map(|s| (l, s)))
            .collect()
    }

    pub fn save_lane(&self, lane: &Lane, s: &LaneSettings) -> Result<u64, String> {
        let json = serde_json::to_vec(s).unwrap_or_default();
        self.write(&[
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from(lane.base()),
                Bytes::from(json),
            ],
            argv(&[
                "ZADD",
                lane.registry(),
                "NX",
                &s.created_at.to_string(),
                lane.name(),
            ]),
        ])
        .map(|(_, seq)| seq)
    }

    /// A flow-control key takes the limits of its latest message (unless
    /// pinned); it is made by its first.
    pub fn follow_flow(&self, f: &FlowControl, now: u64) -> Result<u64, String> {
        let lane = Lane::Flow(f.key.clone());
        let existing = self.lane(&lane);
        let mut s = existing
            .clone()
            .unwrap_or_else(|| LaneSettings::queue(&f.key, now));
        s.follow(f, now);
        let limits = |s: &LaneSettings| (s.parallelism, s.rate, s.period_secs);
        if existing.is_some_and(|e| limits(&e) == limits(&s)) {
            return Ok(0);
        }
        self.save_lane(&lane, &s)
    }

    /// The lanes with messages waiting, and their settings; a lane whose
    /// settings are gone (a deleted queue) leaves the ready set.
    pub fn ready_lanes(&self) -> Vec<(Lane, LaneSettings)> {
        let mut ready = Vec::new();
        for id in ids(self.one(argv(&["SMEMBERS", READY]))) {
            let lane = Lane::from_id(&id);
            match lane.as_ref().and_then(|l| self.lane(l)) {
                Some(s) => ready.extend(lane.map(|l| (l, s))),
                None => {
                    self.run(&[argv(&["SREM", READY, &id])]);
                }
            }
        }
        ready
    }

    /// Takes the lane out of the ready set if its waiting list is empty. The
    /// check and the removal are one step for every other QStash operation (they
    /// all run on this client), so a message pushed meanwhile is never stranded.
    pub fn retire_if_empty(&self, lane: &Lane) {
        self.with_client(|exec| {
            if count(exec(argv(&["LLEN", &lane.waiting_key()]))) == 0 {
                exec(argv(&["SREM", READY, &lane.id()]));
            }
        });
    }

    /// Messages waiting for their turn.
    pub fn lag(&self, lane: &Lane) -> u64 {
        count(self.one(argv(&["LLEN", &lane.waiting_key()])))
    }

    /// In flight now.
    pub fn in_flight(&self, lane: &Lane) -> u64 {
        count(self.one(argv(&["SCARD", &lane.active_key()])))
    }

    /// Starts made in the current period, and the ms left of it.
    pub fn rate_used(&self, lane: &Lane) -> (u64, u64) {
        let (r, _) = self.run(&[
            argv(&["GET", &lane.rate_key()]),
            argv(&["PTTL", &lane.rate_key()]),
        ]);
        let used = match r.first() {
            Some(Reply::Bulk(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        let left = match r.get(1) {
            Some(Reply::Int(n)) if *n > 0 => *n as u64,
            _ => 0,
        };
        (used, left)
    }

    /// Starts a new period of the lane's rate.
    pub fn reset_rate(&self, lane: &Lane) {
        self.run(&[argv(&["DEL", &lane.rate_key()])]);
    }

    /// Deletes a lane and cancels the messages waiting in it (those in flight
    /// finish).
    pub fn delete_lane(&self, lane: &Lane) -> (bool, u64) {
        let waiting = ids(self.one(argv(&["LRANGE", &lane.waiting_key(), "0", "-1"])));
        let mut cmds = vec![
            argv(&["DEL", &lane.base()]),
            argv(&["ZREM", lane.registry(), lane.name()]),
            argv(&["DEL", &lane.waiting_key(), &lane.rate_key()]),
            argv(&["SREM", READY, &lane.id()]),
        ];
        for id in &waiting {
            cmds.push(argv(&["DEL", &message_key(id)]));
            cmds.push(argv(&["ZREM", DUE, id]));
        }
        let (r, seq) = self.run(&cmds);
        (matches!(r.first(), Some(Reply::Int(1))), seq)
    }

    /// A lane's message whose time has come leaves the due set for the end of
    /// its lane's waiting list.
    pub fn join(&self, lane: &Lane, id: &str) {
        let [push, ready] = lane.push(id, false);
        self.run(&[argv(&["ZREM", DUE, id]), push, ready]);
    }

    /// The next message of the lane to deliver, now counted in flight (and in
    /// the period's rate). Ids of cancelled messages are skipped.
    pub fn start_next(&self, lane: &Lane, s: &LaneSettings) -> Next {
        loop {
            if s.parallelism > 0 && self.in_flight(lane) >= u64::from(s.parallelism) {
                return Next::Full;
            }
            if self.lag(lane) == 0 {
                return Next::Empty;
            }
            if s.rate > 0 {
                let (used, left) = self.rate_used(lane);
                if used >= u64::from(s.rate) && left > 0 {
                    return Next::RateLimited(left);
                }
            }
            let id = match self.one(argv(&["LPOP", &lane.waiting_key()])) {
                Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => return Next::Empty,
            };
            let Some(m) = self.get(&id) else {
                continue;
            };
            let mut cmds = vec![argv(&["SADD", &lane.active_key(), &id])];
            if s.rate > 0 {
                // The period starts with its first start.
                cmds.push(argv(&["INCR", &lane.rate_key()]));
                cmds.push(argv(&[
                    "PEXPIRE",
                    &lane.rate_key(),
                    &(s.period_secs.max(1) * 1000).to_string(),
                    "NX",
                ]));
            }
            self.run(&cmds);
            return Next::Started(Box::new(m));
        }
    }

    /// After a restart: messages that were in flight go back to the front of
    /// their lanes, in their order, and every lane with messages waiting is
    /// among the ready ones.
    pub fn requeue_in_flight(&self) {
        for (lane, _) in self.lanes(false).into_iter().chain(self.lanes(true)) {
            let active = ids(self.one(argv(&["SMEMBERS", &lane.active_key()])));
            let mut cmds = vec![argv(&["DEL", &lane.active_key()])];
            for id in &active {
                cmds.extend(lane.push(id, true));
            }
            self.run(&cmds);
            if self.lag(&lane) > 0 {
                self.run(&[argv(&["SADD", READY, &lane.id()])]);
            }
        }
    }
}

/// `{"queueName","parallelism","paused"}` of a queue's upsert.
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

    #[test]
    fn flow_keys_of_any_bytes_get_keys_of_their_own() {
        let a = Lane::Flow("user:1:waiting".into());
        let b = Lane::Flow("user:1".into());
        assert_ne!(a.base(), b.base());
        assert!(!a.base()[12..].contains(':'), "{}", a.base());
        assert_eq!(
            Lane::Queue("q".into()).waiting_key(),
            "qstash:queue:q:waiting"
        );
    }
}
