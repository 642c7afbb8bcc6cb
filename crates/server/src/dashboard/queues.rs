//! Bull (v3/v4, "classic") and BullMQ queues found in the keyspace, with counts
//! per state, a page of jobs per state, a job's details, and the actions Bull
//! Board offers: retry a failed job, promote a delayed one, clean the completed or
//! failed jobs.
//!
//! Discovery: a queue `<prefix>:<name>` keeps a job-id counter `<prefix>:<name>:id`
//! (a string) and, with BullMQ, a `<prefix>:<name>:meta` hash. A bounded SCAN for
//! `*:id` and `*:meta` finds the candidates whatever prefix the app chose; one
//! counts as a queue when its keys have the shapes the libraries give them (state
//! lists and sorted sets, a meta hash with BullMQ's fields). BullMQ is told from
//! Bull by the meta hash or the `:events` stream, which Bull never writes.
//!
//! The actions are one Lua script each, run through the store as the session's
//! user, so they are atomic against workers. They do what the libraries' own
//! retry and promote do, so that workers then take the job as usual: BullMQ's
//! workers wait on the queue's `:marker` sorted set and watch the `:events`
//! stream, so a job put back in `wait` (or `prioritized`) also gets the marker
//! (unless the queue is paused or at its concurrency limit) and a `waiting`
//! event; classic Bull's workers block on the `wait` list itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes as BodyBytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tidewire_resp::Reply;

use super::{api_error, args, ok, read_err, reply_json, run_err, DashState, Peer, Session};

/// Candidate keys looked at per discovery pattern.
const MAX_CANDIDATES: usize = 1000;
/// Most jobs one page lists.
const MAX_PAGE: i64 = 200;
/// Characters of a job's data shown in a list (the job view has it all).
const DATA_PREVIEW: usize = 300;
/// Most finished jobs one clean removes (a bigger backlog takes several).
const MAX_CLEAN: i64 = 10_000;

/// The states of a BullMQ queue, in Bull Board's order, each a key of its own.
const BULLMQ_STATES: &[&str] = &[
    "wait",
    "paused",
    "prioritized",
    "waiting-children",
    "active",
    "delayed",
    "completed",
    "failed",
];
/// The states of a classic Bull queue.
const BULL_STATES: &[&str] = &["wait", "paused", "active", "delayed", "completed", "failed"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    BullMq,
    Bull,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::BullMq => "bullmq",
            Kind::Bull => "bull",
        }
    }

    fn states(self) -> &'static [&'static str] {
        match self {
            Kind::BullMq => BULLMQ_STATES,
            Kind::Bull => BULL_STATES,
        }
    }
}

/// A queue's name and the key prefix its app gave it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct QueueRef {
    prefix: String,
    name: String,
}

impl QueueRef {
    /// The queue of a key `<prefix>:<name>:<suffix>`; the prefix may hold `:`, the
    /// name (the segment before the suffix) may not.
    fn of_key(key: &str, suffix: &str) -> Option<QueueRef> {
        let base = key.strip_suffix(suffix)?.strip_suffix(':')?;
        let (prefix, name) = base.rsplit_once(':')?;
        (!prefix.is_empty() && !name.is_empty()).then(|| QueueRef {
            prefix: prefix.into(),
            name: name.into(),
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{}:{suffix}", self.prefix, self.name)
    }

    /// What job ids are appended to for their hash's key.
    fn job_prefix(&self) -> String {
        self.key("")
    }
}

/// A queue as inspected: its kind, whether paused, and per state the key's type
/// (`list`, `zset` or `none`) and length.
struct QueueInfo {
    kind: Kind,
    paused: bool,
    states: Vec<(&'static str, String, i64)>,
}

impl QueueInfo {
    fn json(&self, q: &QueueRef) -> Value {
        let counts: serde_json::Map<String, Value> = self
            .states
            .iter()
            .map(|(st, _, n)| ((*st).to_string(), json!(n)))
            .collect();
        json!({
            "prefix": q.prefix,
            "name": q.name,
            "kind": self.kind.name(),
            "paused": self.paused,
            "counts": counts,
            // The states in the libraries' own order (`counts` is sorted by name).
            "states": self.states.iter().map(|(st, ..)| *st).collect::<Vec<_>>(),
        })
    }

    fn state_type(&self, state: &str) -> Option<&str> {
        self.states
            .iter()
            .find(|(s, ..)| *s == state)
            .map(|(_, t, _)| t.as_str())
    }
}

fn text(r: &Reply) -> Option<String> {
    match reply_json(r) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

impl DashState {
    /// Reads a candidate queue's keys; `None` when they do not look like a Bull
    /// or BullMQ queue.
    fn inspect_queue(&self, s: &Session, peer: &str, q: &QueueRef) -> Option<QueueInfo> {
        let (meta, events, id) = (q.key("meta"), q.key("events"), q.key("id"));
        let mut probe = vec![
            args(&[b"TYPE", meta.as_bytes()]),
            args(&[
                b"HMGET",
                meta.as_bytes(),
                b"version",
                b"opts.maxLenEvents",
                b"paused",
            ]),
            args(&[b"TYPE", events.as_bytes()]),
            args(&[b"GET", id.as_bytes()]),
            args(&[b"EXISTS", q.key("meta-paused").as_bytes()]),
        ];
        // Every state either kind has (BullMQ's are a superset of Bull's).
        for st in BULLMQ_STATES {
            probe.push(args(&[b"TYPE", q.key(st).as_bytes()]));
        }
        let r = self.read_many(s, peer, &probe);
        let meta_is_hash = text(&r[0]).as_deref() == Some("hash");
        let fields = reply_json(&r[1]);
        let version = fields[0].as_str().unwrap_or("");
        let has_events = text(&r[2]).as_deref() == Some("stream");
        let id_is_counter = text(&r[3]).is_some_and(|v| v.parse::<u64>().is_ok());
        let types: Vec<String> = r[5..].iter().map(|t| text(t).unwrap_or_default()).collect();
        // The shape each state's key has when it exists.
        let shaped = BULLMQ_STATES.iter().zip(&types).any(|(st, t)| {
            let want = if matches!(*st, "wait" | "paused" | "active") {
                "list"
            } else {
                "zset"
            };
            t == want
        });
        let bullmq_meta =
            meta_is_hash && (version.starts_with("bullmq") || !fields[1].is_null() || shaped);
        let kind = if bullmq_meta || (has_events && id_is_counter) {
            Kind::BullMq
        } else if id_is_counter && shaped {
            Kind::Bull
        } else {
            return None;
        };
        let paused = match kind {
            Kind::BullMq => !fields[2].is_null(),
            Kind::Bull => matches!(r[4], Reply::Int(1)),
        };
        let mut states = Vec::new();
        let mut lens = Vec::new();
        for st in kind.states() {
            let at = BULLMQ_STATES.iter().position(|x| x == st).unwrap_or(0);
            let t = types.get(at).cloned().unwrap_or_default();
            let key = q.key(st);
            lens.push(match t.as_str() {
                "list" => args(&[b"LLEN", key.as_bytes()]),
                "zset" => args(&[b"ZCARD", key.as_bytes()]),
                _ => args(&[b"EXISTS", key.as_bytes()]),
            });
            states.push((*st, if t.is_empty() { "none".into() } else { t }, 0));
        }
        for ((_, t, n), r) in states.iter_mut().zip(self.read_many(s, peer, &lens)) {
            if let (Reply::Int(len), true) = (r, t != "none") {
                *n = len;
            }
        }
        Some(QueueInfo {
            kind,
            paused,
            states,
        })
    }

    /// The queue a request names, inspected (`None`: no such queue).
    fn find_queue(
        &self,
        s: &Session,
        peer: &str,
        prefix: String,
        name: String,
    ) -> Option<(QueueRef, QueueInfo)> {
        let queue = QueueRef { prefix, name };
        let info = self.inspect_queue(s, peer, &queue)?;
        Some((queue, info))
    }
}

/// Every queue found: `{"queues": [{prefix, name, kind, paused, counts}], "complete"}`.
pub(super) async fn list(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
) -> Response {
    let s = session_or_401!(st, headers);
    let mut found = BTreeMap::new();
    let mut complete = true;
    for (pattern, suffix, kind) in [("*:id", "id", "string"), ("*:meta", "meta", "hash")] {
        let (keys, done) =
            match st.scan_sample(&s, &peer, Some(pattern), Some(kind), MAX_CANDIDATES) {
                Ok(r) => r,
                Err(e) => return read_err(&e),
            };
        complete &= done;
        for k in keys {
            if let Some(q) = QueueRef::of_key(&k, suffix) {
                found.insert(q, ());
            }
        }
    }
    let queues: Vec<Value> = found
        .keys()
        .filter_map(|q| Some(st.inspect_queue(&s, &peer, q)?.json(q)))
        .collect();
    ok(json!({ "queues": queues, "complete": complete }))
}

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    prefix: String,
    name: String,
    state: Option<String>,
    start: Option<i64>,
    count: Option<i64>,
}

/// The fields a job list shows, in this order.
const LIST_FIELDS: &[&str] = &[
    "name",
    "timestamp",
    "processedOn",
    "finishedOn",
    "atm",
    "attemptsMade",
    "failedReason",
    "delay",
    "priority",
    "data",
];

/// A queue's counts and one page of one state's jobs (newest first for completed
/// and failed, soonest first for delayed, in list order for the lists).
pub(super) async fn jobs(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Query(q): Query<JobsQuery>,
) -> Response {
    let s = session_or_401!(st, headers);
    let Some((queue, info)) = st.find_queue(&s, &peer, q.prefix, q.name) else {
        return api_error(StatusCode::NOT_FOUND, "no such queue");
    };
    let state = q.state.unwrap_or_else(|| "failed".into());
    let Some(kind) = info.state_type(&state) else {
        return api_error(StatusCode::BAD_REQUEST, "no such state for this queue");
    };
    let start = q.start.unwrap_or(0).max(0);
    let stop = start + q.count.unwrap_or(25).clamp(1, MAX_PAGE) - 1;
    let (start_s, stop_s) = (start.to_string(), stop.to_string());
    let key = queue.key(&state);
    let listing = match kind {
        "list" => Some(args(&[
            b"LRANGE",
            key.as_bytes(),
            start_s.as_bytes(),
            stop_s.as_bytes(),
        ])),
        "zset" => {
            let cmd: &[u8] = if matches!(state.as_str(), "completed" | "failed") {
                b"ZREVRANGE"
            } else {
                b"ZRANGE"
            };
            Some(args(&[
                cmd,
                key.as_bytes(),
                start_s.as_bytes(),
                stop_s.as_bytes(),
                b"WITHSCORES",
            ]))
        }
        _ => None,
    };
    let mut ids: Vec<(String, Option<String>)> = Vec::new();
    if let Some(argv) = listing {
        let page = match st.read_one(&s, &peer, argv) {
            Ok(v) => v,
            Err(e) => return read_err(&e),
        };
        let items: Vec<String> = page
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if kind == "zset" {
            ids = items
                .chunks(2)
                .map(|p| (p[0].clone(), p.get(1).cloned()))
                .collect();
        } else {
            ids = items.into_iter().map(|id| (id, None)).collect();
        }
    }
    let prefix = queue.job_prefix();
    let cmds: Vec<Vec<Bytes>> = ids
        .iter()
        .map(|(id, _)| {
            let mut a = args(&[b"HMGET", format!("{prefix}{id}").as_bytes()]);
            a.extend(LIST_FIELDS.iter().map(|f| Bytes::from_static(f.as_bytes())));
            a
        })
        .collect();
    let jobs: Vec<Value> = ids
        .iter()
        .zip(st.read_many(&s, &peer, &cmds))
        .map(|((id, score), r)| {
            let v = reply_json(&r);
            let f = |name: &str| {
                LIST_FIELDS
                    .iter()
                    .position(|x| *x == name)
                    .map_or(Value::Null, |i| v[i].clone())
            };
            let data = f("data")
                .as_str()
                .map(|d| d.chars().take(DATA_PREVIEW).collect::<String>());
            let attempts = if f("atm").is_null() {
                f("attemptsMade")
            } else {
                f("atm")
            };
            json!({
                "id": id,
                "score": score,
                "exists": !v.as_array().is_some_and(|a| a.iter().all(Value::is_null)),
                "name": f("name"),
                "timestamp": f("timestamp"),
                "processedOn": f("processedOn"),
                "finishedOn": f("finishedOn"),
                "attemptsMade": attempts,
                "failedReason": f("failedReason"),
                "delay": f("delay"),
                "priority": f("priority"),
                "data": data,
            })
        })
        .collect();
    let total = info
        .states
        .iter()
        .find(|(s, ..)| *s == state)
        .map_or(0, |(_, _, n)| *n);
    let mut out = info.json(&queue);
    out["state"] = json!(state);
    out["start"] = json!(start);
    out["total"] = json!(total);
    out["jobs"] = json!(jobs);
    ok(out)
}

#[derive(Deserialize)]
pub(super) struct JobQuery {
    prefix: String,
    name: String,
    id: String,
}

/// A job hash's text fields that hold JSON (shown parsed when they parse).
const JSON_FIELDS: &[&str] = &["data", "opts", "returnvalue", "stacktrace"];

/// One job: every field of its hash (`data`, `opts`, `returnvalue` and
/// `stacktrace` parsed from JSON), the state that holds it, and its logs.
pub(super) async fn job(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Query(q): Query<JobQuery>,
) -> Response {
    let s = session_or_401!(st, headers);
    let Some((queue, info)) = st.find_queue(&s, &peer, q.prefix, q.name) else {
        return api_error(StatusCode::NOT_FOUND, "no such queue");
    };
    let job_key = format!("{}{}", queue.job_prefix(), q.id);
    let fields = match st.read_one(&s, &peer, args(&[b"HGETALL", job_key.as_bytes()])) {
        Ok(v) => v,
        Err(e) => return read_err(&e),
    };
    // HGETALL answers a map (RESP3 shape) or a flat list.
    let mut map = serde_json::Map::new();
    match fields {
        Value::Object(m) => map = m,
        Value::Array(a) => {
            for p in a.chunks(2) {
                if let (Some(k), Some(v)) = (p[0].as_str(), p.get(1)) {
                    map.insert(k.to_string(), v.clone());
                }
            }
        }
        _ => {}
    }
    if map.is_empty() {
        return api_error(StatusCode::NOT_FOUND, "no such job");
    }
    for f in JSON_FIELDS {
        if let Some(Value::String(t)) = map.get(*f) {
            if let Ok(parsed) = serde_json::from_str::<Value>(t) {
                map.insert((*f).to_string(), parsed);
            }
        }
    }
    // Which state holds it: ZSCORE for the sorted sets, LPOS for the lists.
    let probes: Vec<Vec<Bytes>> = info
        .states
        .iter()
        .map(|(st, t, _)| {
            let key = queue.key(st);
            if t == "list" {
                args(&[b"LPOS", key.as_bytes(), q.id.as_bytes()])
            } else {
                args(&[b"ZSCORE", key.as_bytes(), q.id.as_bytes()])
            }
        })
        .collect();
    let state = info
        .states
        .iter()
        .zip(st.read_many(&s, &peer, &probes))
        .find(|((_, t, _), r)| t != "none" && !matches!(r, Reply::Null | Reply::Error(_)))
        .map(|((st, ..), _)| *st);
    let logs = st
        .read_one(
            &s,
            &peer,
            args(&[b"LRANGE", format!("{job_key}:logs").as_bytes(), b"0", b"99"]),
        )
        .unwrap_or(Value::Null);
    ok(json!({
        "id": q.id,
        "queue": info.json(&queue),
        "state": state,
        "fields": map,
        "logs": logs,
    }))
}

/// Retries a failed BullMQ job, as BullMQ's own `Job.retry('failed')` does:
/// off the failed set, the failure fields (and, if asked, the attempt counters)
/// cleared, back to `wait` (`prioritized` when it has a priority), the marker
/// set so a waiting worker wakes, a `waiting` event on the stream, and a parent
/// waiting on it told it is pending again.
///
/// KEYS: job, failed, wait, meta, active, marker, events, prioritized, priority
/// counter. ARGV: id, reset attempts ("1"/"0"). Returns 1, or -1 (no such job),
/// -3 (not in the failed set).
const BULLMQ_RETRY: &str = r#"
local job, failed, wait, meta, active, marker, events, prioritized, pc =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local id = ARGV[1]
if redis.call("EXISTS", job) == 0 then return -1 end
if redis.call("ZREM", failed, id) == 0 then return -3 end
local clear = {"finishedOn", "processedOn", "failedReason"}
if ARGV[2] == "1" then
  for _, f in ipairs({"atm", "ats", "attemptsMade"}) do table.insert(clear, f) end
end
redis.call("HDEL", job, unpack(clear))
-- Held back: paused, or as many active as the queue's concurrency allows.
local m = redis.call("HMGET", meta, "paused", "concurrency")
local held = m[1] ~= false
if not held and m[2] then
  held = redis.call("LLEN", active) >= (tonumber(m[2]) or 0)
end
local priority = tonumber(redis.call("HGET", job, "priority")) or 0
if priority > 0 then
  local n = redis.call("INCR", pc)
  redis.call("ZADD", prioritized, priority * 4294967296 + n % 4294967296, id)
else
  local lifo = false
  local opts = redis.call("HGET", job, "opts")
  if opts then
    local okay, o = pcall(cjson.decode, opts)
    lifo = okay and type(o) == "table" and o.lifo == true
  end
  redis.call(lifo and "RPUSH" or "LPUSH", wait, id)
end
if not held then redis.call("ZADD", marker, 0, "0") end
local parent = redis.call("HGET", job, "parentKey")
if parent and redis.call("EXISTS", parent) == 1 then
  if redis.call("ZREM", parent .. ":unsuccessful", job) == 1
    or redis.call("HDEL", parent .. ":failed", job) == 1 then
    redis.call("SADD", parent .. ":dependencies", job)
  end
end
local maxlen = tonumber(redis.call("HGET", meta, "opts.maxLenEvents")) or 10000
redis.call("XADD", events, "MAXLEN", "~", maxlen, "*",
  "event", "waiting", "jobId", id, "prev", "failed")
return 1
"#;

/// Promotes a delayed BullMQ job, as BullMQ's `Job.promote()` does: off the
/// delayed set into `wait` (`prioritized` with a priority), its delay zeroed, the
/// marker set unless the queue is held back, a `waiting` event.
///
/// KEYS: job, delayed, wait, meta, active, marker, events, prioritized, priority
/// counter. ARGV: id. Returns 1, or -3 (not in the delayed set).
const BULLMQ_PROMOTE: &str = r#"
local job, delayed, wait, meta, active, marker, events, prioritized, pc =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local id = ARGV[1]
if redis.call("ZREM", delayed, id) == 0 then return -3 end
local m = redis.call("HMGET", meta, "paused", "concurrency")
local held = m[1] ~= false
if not held and m[2] then
  held = redis.call("LLEN", active) >= (tonumber(m[2]) or 0)
end
local priority = tonumber(redis.call("HGET", job, "priority")) or 0
if priority > 0 then
  local n = redis.call("INCR", pc)
  redis.call("ZADD", prioritized, priority * 4294967296 + n % 4294967296, id)
else
  redis.call("LPUSH", wait, id)
end
if not held then redis.call("ZADD", marker, 0, "0") end
redis.call("HSET", job, "delay", 0)
local maxlen = tonumber(redis.call("HGET", meta, "opts.maxLenEvents")) or 10000
redis.call("XADD", events, "MAXLEN", "~", maxlen, "*",
  "event", "waiting", "jobId", id, "prev", "delayed")
return 1
"#;

/// Retries a failed classic Bull job, as Bull's `Job.retry()` does: refused
/// while a worker holds the job's lock; off the failed set, the failure fields
/// cleared, pushed on `wait` (`paused` while the queue is paused), and announced
/// on the queue's `added` channel.
///
/// KEYS: job, job lock, failed, wait, paused, meta-paused. ARGV: id, reset
/// attempts, the `added` channel. Returns 1, -1 (no such job), -2 (locked), -3
/// (not in the failed set).
const BULL_RETRY: &str = r#"
local job, lock, failed, wait, paused, metapaused =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id = ARGV[1]
if redis.call("EXISTS", job) == 0 then return -1 end
if redis.call("EXISTS", lock) == 1 then return -2 end
if redis.call("ZREM", failed, id) == 0 then return -3 end
local clear = {"finishedOn", "processedOn", "failedReason"}
if ARGV[2] == "1" then table.insert(clear, "attemptsMade") end
redis.call("HDEL", job, unpack(clear))
local target = wait
if redis.call("EXISTS", metapaused) == 1 then target = paused end
local lifo = false
local opts = redis.call("HGET", job, "opts")
if opts then
  local okay, o = pcall(cjson.decode, opts)
  lifo = okay and type(o) == "table" and o.lifo == true
end
redis.call(lifo and "RPUSH" or "LPUSH", target, id)
redis.call("PUBLISH", ARGV[3], id)
return 1
"#;

/// Promotes a delayed classic Bull job, as Bull's `Job.promote()` does: off the
/// delayed set onto `wait`; a job with a priority goes into the `priority` set and
/// into `wait` behind the jobs of the same or a better (lower) priority.
///
/// KEYS: job, delayed, wait, priority set. ARGV: id. Returns 1, or -3.
const BULL_PROMOTE: &str = r#"
local job, delayed, wait, prio = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
if redis.call("ZREM", delayed, id) == 0 then return -3 end
local priority = tonumber(redis.call("HGET", job, "priority")) or 0
if priority == 0 then
  redis.call("LPUSH", wait, id)
else
  redis.call("ZADD", prio, priority, id)
  -- Workers take from the right end: the jobs ahead of this one (priority up to
  -- its own) are the rightmost ones, and it goes just left of them.
  local ahead = redis.call("ZCOUNT", prio, 0, priority) - 1
  local at = redis.call("LLEN", wait) - ahead
  if ahead <= 0 then
    redis.call("RPUSH", wait, id)
  elseif at <= 0 then
    redis.call("LPUSH", wait, id)
  else
    redis.call("LINSERT", wait, "BEFORE", redis.call("LINDEX", wait, at), id)
  end
end
redis.call("HSET", job, "delay", 0)
return 1
"#;

/// Removes the jobs of a finished state (completed or failed) that finished at
/// or before a time, as the libraries' `clean` does: their hashes and the keys
/// hanging off them, then their ids; BullMQ queues get a `cleaned` event.
///
/// KEYS: the state's sorted set, events. ARGV: the job key prefix, the latest
/// finish time (ms), the most jobs to remove, "1" to write the event. Returns the
/// number removed.
const CLEAN: &str = r#"
local set, events = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local ids = redis.call("ZRANGEBYSCORE", set, "-inf", ARGV[2], "LIMIT", 0, tonumber(ARGV[3]))
for i = 1, #ids, 1000 do
  local batch = {}
  for j = i, math.min(i + 999, #ids) do
    local k = prefix .. ids[j]
    for _, suffix in ipairs({"", ":logs", ":lock", ":dependencies", ":processed", ":failed", ":unsuccessful"}) do
      table.insert(batch, k .. suffix)
    end
  end
  redis.call("DEL", unpack(batch))
  redis.call("ZREM", set, unpack(ids, i, math.min(i + 999, #ids)))
end
if ARGV[4] == "1" then
  redis.call("XADD", events, "*", "event", "cleaned", "count", #ids)
end
return #ids
"#;

#[derive(Deserialize)]
pub(super) struct ActionBody {
    prefix: String,
    name: String,
    /// `retry`, `promote` or `clean`.
    action: String,
    id: Option<String>,
    /// For `clean`: `completed` or `failed`.
    state: Option<String>,
    /// For `clean`: only jobs finished at least this long ago.
    grace_ms: Option<u64>,
    /// For `clean`: at most this many (default and cap 10000).
    limit: Option<i64>,
    /// For `retry`: give the job its attempts back.
    #[serde(default)]
    reset_attempts: bool,
}

fn eval(script: &str, keys: &[String], argv: &[String]) -> Vec<Bytes> {
    let mut a = vec![
        Bytes::from_static(b"EVAL"),
        Bytes::copy_from_slice(script.as_bytes()),
        Bytes::from(keys.len().to_string()),
    ];
    a.extend(keys.iter().map(|k| Bytes::copy_from_slice(k.as_bytes())));
    a.extend(argv.iter().map(|v| Bytes::copy_from_slice(v.as_bytes())));
    a
}

/// Runs one action (admin sessions only): `{"prefix", "name", "action": "retry" |
/// "promote" | "clean", "id"?, "state"?, "grace_ms"?, "limit"?,
/// "reset_attempts"?}`.
pub(super) async fn action(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    body: BodyBytes,
) -> Response {
    let s = session_or_401!(st, headers);
    admin_or_403!(s);
    let b: ActionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("bad action: {e}")),
    };
    let Some((queue, info)) = st.find_queue(&s, &peer, b.prefix.clone(), b.name.clone()) else {
        return api_error(StatusCode::NOT_FOUND, "no such queue");
    };
    let k = |suffix: &str| queue.key(suffix);
    let id = b.id.clone().filter(|i| !i.is_empty());
    let argv = match (b.action.as_str(), info.kind, id) {
        ("retry" | "promote", _, None) => {
            return api_error(StatusCode::BAD_REQUEST, "this action needs 'id'")
        }
        ("retry", Kind::BullMq, Some(id)) => eval(
            BULLMQ_RETRY,
            &[
                k(&id),
                k("failed"),
                k("wait"),
                k("meta"),
                k("active"),
                k("marker"),
                k("events"),
                k("prioritized"),
                k("pc"),
            ],
            &[id, (b.reset_attempts as u8).to_string()],
        ),
        ("retry", Kind::Bull, Some(id)) => eval(
            BULL_RETRY,
            &[
                k(&id),
                format!("{}:lock", k(&id)),
                k("failed"),
                k("wait"),
                k("paused"),
                k("meta-paused"),
            ],
            &[id, (b.reset_attempts as u8).to_string(), k("added")],
        ),
        ("promote", Kind::BullMq, Some(id)) => eval(
            BULLMQ_PROMOTE,
            &[
                k(&id),
                k("delayed"),
                k("wait"),
                k("meta"),
                k("active"),
                k("marker"),
                k("events"),
                k("prioritized"),
                k("pc"),
            ],
            &[id],
        ),
        ("promote", Kind::Bull, Some(id)) => eval(
            BULL_PROMOTE,
            &[k(&id), k("delayed"), k("wait"), k("priority")],
            &[id],
        ),
        ("clean", kind, _) => {
            let state = b.state.as_deref().unwrap_or("");
            if !matches!(state, "completed" | "failed") {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "clean takes 'state': 'completed' or 'failed'",
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let before = now.saturating_sub(b.grace_ms.unwrap_or(0));
            let limit = b.limit.unwrap_or(MAX_CLEAN).clamp(1, MAX_CLEAN);
            eval(
                CLEAN,
                &[k(state), k("events")],
                &[
                    queue.job_prefix(),
                    before.to_string(),
                    limit.to_string(),
                    if kind == Kind::BullMq { "1" } else { "0" }.to_string(),
                ],
            )
        }
        _ => return api_error(StatusCode::BAD_REQUEST, "unknown action"),
    };
    let reply = match st.run(&s, &peer, &argv, true).await {
        Ok(r) => r,
        Err(e) => return run_err(e),
    };
    let n = match reply {
        Reply::Int(n) => n,
        other => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("unexpected reply: {}", reply_json(&other)),
            )
        }
    };
    match (b.action.as_str(), n) {
        ("clean", n) => ok(json!({ "ok": true, "removed": n })),
        (_, 1) => ok(json!({ "ok": true })),
        (_, -1) => api_error(StatusCode::NOT_FOUND, "no such job"),
        (_, -2) => api_error(
            StatusCode::CONFLICT,
            "the job is locked by a worker; try again when it is released",
        ),
        ("retry", _) => api_error(StatusCode::CONFLICT, "the job is not in the failed state"),
        _ => api_error(StatusCode::CONFLICT, "the job is not in the delayed state"),
    }
}

#[cfg(test)]
mod tests {
    use super::QueueRef;

    #[test]
    fn queue_keys() {
        let q = QueueRef::of_key("bull:mail:id", "id").unwrap();
        assert_eq!((q.prefix.as_str(), q.name.as_str()), ("bull", "mail"));
        assert_eq!(q.key("wait"), "bull:mail:wait");
        let q = QueueRef::of_key("{app}:jobs:q1:meta", "meta").unwrap();
        assert_eq!((q.prefix.as_str(), q.name.as_str()), ("{app}:jobs", "q1"));
        assert_eq!(QueueRef::of_key("q:id", "id"), None);
        assert_eq!(QueueRef::of_key("userid", "id"), None);
        assert_eq!(QueueRef::of_key(":x:id", "id"), None);
    }
}
