//! [`RedisBroker`]: channel positions, history and fan-out on the engine.
//!
//! A channel's three keys share its hash tag, so one script on the channel's
//! master does a whole publish: it takes the next positions, appends the history
//! entries, trims what expired and `SPUBLISH`es the publication on the channel's
//! shard channel. Redis runs a script alone, so positions, history and the order
//! of the fan-out are one atomic step in position order, whichever node
//! published.
//!
//! History is a sorted set scored by position (exact: positions, about 1.8e15,
//! are below 2^53). A sorted set rather than a stream because reads go by
//! position both ways (ZRANGEBYSCORE / ZREVRANGEBYSCORE from an exclusive
//! position), which is what the Ably serials are; a stream's ids would be a
//! second numbering to map. Members lead with fixed-width digits (position,
//! expiry, receive time; see [`publication::history_bodies`]) so scripts trim and
//! filter without decoding.
//!
//! The fanned-out copy carries the first position and the unstamped publication;
//! every receiver stamps it with [`Publication::stamp`], as the publisher does
//! with the positions the script returns: the script never has to write msgpack.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tidewire_engine::key_slot;
use tidewire_realtime::engine::{
    BoxFuture, Broker, BrokerHandler, EngineError, EngineResult, Payload, Publication, Snapshot,
};
use tidewire_realtime::history::{self, Direction, HistoryQuery, StoredMessage};
use tidewire_realtime::hub::{presence_history_key, PRESENCE_HISTORY_PREFIX};
use tidewire_realtime::protocol::Annotation;
use tidewire_resp::Reply;

use super::fanout::{Fanout, Listener};
use super::{arg, array, channel_tag, eval, int, publication, scope, text, Shared, PREFIX};

/// How far (in positions, about microseconds of publishing: a position is at
/// least its publish time in µs) this node's fan-out of a channel may trail a
/// publish made here before the publish waits for it. Within it a publish
/// returns once positioned, so one connection's publishes do not wait in turn
/// for each other's fan-out; past it publishers are held back to the speed this
/// node delivers at, which also bounds what the engine buffers for this node's
/// subscriber connection.
const FANOUT_LAG: u64 = 1_000_000;
/// The longest a publish waits for this node's fan-out to catch up.
const FANOUT_WAIT: Duration = Duration::from_secs(2);
/// History kept per channel at most (as the in-memory store), whatever the
/// retention.
const MAX_ENTRIES: usize = 100_000;
/// A channel's position is kept at least this long after its last publish
/// (longer with its history); after that the time floor keeps positions new.
const POSITION_TTL_MS: i64 = 60_000;

/// KEYS: position, history, then for a new version of a message or an
/// annotation the message's versions or annotations list, for presence events
/// the presence history's position and history. ARGV: shard channel, positions
/// needed, time floor (ms * 1000), now (ms), history TTL (ms), max entries,
/// position TTL (ms), fan-out body, list entry ('' for none), whether the
/// fan-out carries the list ('1'), history bodies… Returns the first position
/// (0 for a publication that takes none: presence events, kept in the presence
/// history only, and occupancy changes).
const PUBLISH: &str = r#"
local n = tonumber(ARGV[2])
-- Presence events take no position of the channel's: their entries go to the
-- channel's presence history (KEYS[3], KEYS[4]), numbered on its own.
local count, pos, hist = n, KEYS[1], KEYS[2]
if n == 0 then count, pos, hist = #ARGV - 10, KEYS[3], KEYS[4] end
local first = 0
if count > 0 then
  local last = tonumber(redis.call('GET', pos) or '0')
  if last == 0 then
    local top = redis.call('ZRANGE', hist, -1, -1, 'WITHSCORES')
    if top[2] then last = tonumber(top[2]) end
  end
  first = math.max(last + 1, tonumber(ARGV[3]))
  local final = first + count - 1
  local ttl = tonumber(ARGV[5])
  redis.call('SET', pos, string.format('%.0f', final), 'PX', math.max(ttl, tonumber(ARGV[7])))
  for i = 11, #ARGV do
    local at = first + i - 11
    redis.call('ZADD', hist, string.format('%.0f', at), string.format('%016.0f', at) .. ARGV[i])
  end
  if #ARGV >= 11 then
    local now = tonumber(ARGV[4])
    local oldest = redis.call('ZRANGE', hist, 0, 99)
    local expired = 0
    for _, m in ipairs(oldest) do
      if tonumber(string.sub(m, 17, 31)) > now then break end
      expired = expired + 1
    end
    if expired > 0 then redis.call('ZREMRANGEBYRANK', hist, 0, expired - 1) end
    local over = redis.call('ZCARD', hist) - tonumber(ARGV[6])
    if over > 0 then redis.call('ZREMRANGEBYRANK', hist, 0, over - 1) end
    if redis.call('PTTL', hist) < ttl then redis.call('PEXPIRE', hist, ttl) end
  end
  if n > 0 and KEYS[3] and ARGV[9] ~= '' then
    redis.call('RPUSH', KEYS[3], string.format('%016.0f', first) .. ARGV[9])
    if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
  end
end
if n == 0 then
  redis.call('SPUBLISH', ARGV[1], '0\n' .. ARGV[8])
  return 0
end
local head = string.format('%.0f', first)
if ARGV[10] == '1' then
  local parts = {head, ';', tostring(#ARGV[8]), '\n', ARGV[8]}
  for _, m in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    parts[#parts + 1] = tostring(#m) .. '\n' .. m
  end
  redis.call('SPUBLISH', ARGV[1], table.concat(parts))
else
  redis.call('SPUBLISH', ARGV[1], head .. '\n' .. ARGV[8])
end
return first
"#;

/// KEYS: position, history. ARGV: 'f' or 'b', from position ('' for none),
/// start ('' for none), end ('' for none), now (ms), how many. Returns the
/// channel's position (as text) and up to that many live members in the range,
/// in the query's direction: the position and the page from one moment.
const READ: &str = r#"
local pos = tonumber(redis.call('GET', KEYS[1]) or '0')
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then pos = math.max(pos, tonumber(top[2])) end
local forwards = ARGV[1] == 'f'
local cursor = ARGV[2]
local start = tonumber(ARGV[3])
local stop = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local want = tonumber(ARGV[6])
local out = {}
local batch = 256
while #out < want do
  local items
  if forwards then
    local min = '-inf'
    if cursor ~= '' then min = '(' .. cursor end
    items = redis.call('ZRANGEBYSCORE', KEYS[2], min, '+inf', 'LIMIT', 0, batch)
  else
    local max = '+inf'
    if cursor ~= '' then max = '(' .. cursor end
    items = redis.call('ZREVRANGEBYSCORE', KEYS[2], max, '-inf', 'LIMIT', 0, batch)
  end
  for _, m in ipairs(items) do
    cursor = string.sub(m, 1, 16)
    local expires = tonumber(string.sub(m, 17, 31))
    local received = tonumber(string.sub(m, 32, 46))
    if expires > now and (not start or received >= start) and (not stop or received <= stop) then
      out[#out + 1] = m
      if #out >= want then break end
    end
  end
  if #items < batch then break end
end
return {string.format('%.0f', pos), out}
"#;

/// KEYS: a message's versions or annotations list. ARGV: now (ms). Returns
/// the members that have not expired, oldest first (each kept as long as
/// history keeps what its publication appended).
const LIST: &str = r#"
local now = tonumber(ARGV[1])
local out = {}
for _, m in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if tonumber(string.sub(m, 17, 31)) > now then out[#out + 1] = m end
end
return out
"#;

/// KEYS: position, history. Returns the channel's last position (0: none).
const POSITION: &str = r#"
local pos = tonumber(redis.call('GET', KEYS[1]) or '0')
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then pos = math.max(pos, tonumber(top[2])) end
return string.format('%.0f', pos)
"#;

/// The [`Broker`] on the engine: one app's channels (its `namespace`), fanned
/// out through the process's [`Fanout`].
pub struct RedisBroker {
    cluster: Shared,
    fanout: Fanout,
    listener: Arc<Listener>,
    /// [`PREFIX`] and the app's scope.
    prefix: String,
}

/// A channel's keys and shard channel.
struct Keys {
    position: String,
    history: String,
    fanout: String,
}

impl Keys {
    fn both(&self) -> Vec<String> {
        vec![self.position.clone(), self.history.clone()]
    }
}

impl RedisBroker {
    /// The broker of the app `namespace` ("" for none) on `cluster`.
    pub fn new(cluster: Shared, fanout: Fanout, namespace: &str) -> Self {
        RedisBroker {
            listener: fanout.listener(),
            cluster,
            fanout,
            prefix: format!("{PREFIX}{}", scope(namespace)),
        }
    }

    /// The list of the message at `serial` on `channel` named `what`
    /// (`versions`, `annotations`), in the channel's slot.
    fn list_key(&self, channel: &str, what: &str, serial: u64) -> String {
        format!(
            "{}broker:{}:{what}:{serial}",
            self.prefix,
            channel_tag(channel)
        )
    }

    /// The live members of a message's list.
    async fn list(&self, key: String, now_ms: i64) -> EngineResult<Vec<Bytes>> {
        let reply = eval(
            &self.cluster,
            LIST,
            &[key],
            vec![arg(now_ms.to_string())],
            true,
        )
        .await?;
        Ok(array(reply)?
            .into_iter()
            .filter_map(|m| match m {
                Reply::Bulk(b) => Some(b),
                _ => None,
            })
            .collect())
    }

    /// A channel's keys. A channel's presence history (read as the channel
    /// [`presence_history_key`] names) is kept beside the channel, in its slot,
    /// so that the publish of its presence events appends to it in one script.
    fn keys(&self, channel: &str) -> Keys {
        let (base, part) = match channel.strip_prefix(PRESENCE_HISTORY_PREFIX) {
            Some(base) => (base, "presence-"),
            None => (channel, ""),
        };
        let (prefix, tag) = (&self.prefix, channel_tag(base));
        Keys {
            position: format!("{prefix}broker:{tag}:{part}position"),
            history: format!("{prefix}broker:{tag}:{part}history"),
            fanout: format!("{prefix}broker:{tag}:fanout"),
        }
    }

    async fn publish_now(&self, mut p: Publication) -> EngineResult<Publication> {
        let keys = self.keys(&p.channel);
        let n = p.positions_needed();
        let retention_ms = p.retention.as_millis().min(i64::MAX as u128 / 2) as i64;
        let floor = (p.timestamp.max(0) as u64).saturating_mul(1000);
        let mut args = vec![
            arg(keys.fanout.as_str()),
            arg(n.to_string()),
            arg(floor.to_string()),
            arg(p.timestamp.to_string()),
            arg(retention_ms.max(1).to_string()),
            arg(MAX_ENTRIES.to_string()),
            arg(POSITION_TTL_MS.to_string()),
            Bytes::from(publication::encode(&p)),
            Bytes::from(publication::list_entry(&p)),
            Bytes::from_static(if p.annotation_of().is_some() {
                b"1"
            } else {
                b"0"
            }),
        ];
        args.extend(publication::history_bodies(&p).into_iter().map(Bytes::from));
        let mut script_keys = keys.both();
        script_keys.extend(
            p.version_of()
                .map(|of| self.list_key(&p.channel, "versions", of))
                .or_else(|| {
                    p.annotation_of()
                        .map(|of| self.list_key(&p.channel, "annotations", of))
                }),
        );
        if matches!(p.payload, Payload::Presence(_)) {
            script_keys.extend(self.keys(&presence_history_key(&p.channel)).both());
        }
        // Not retried if the reply is lost: a retry would publish twice.
        let reply = eval(&self.cluster, PUBLISH, &script_keys, args, false).await?;
        let first =
            u64::try_from(int(&reply)?).map_err(|_| EngineError("a negative position".into()))?;
        let positions: Vec<u64> = (0..n as u64).map(|i| first + i).collect();
        p.stamp(positions);
        if let Some(last) = p.last_position() {
            let behind = last.saturating_sub(FANOUT_LAG);
            self.fanout
                .delivered(&keys.fanout, behind, FANOUT_WAIT)
                .await;
        }
        Ok(p)
    }

    async fn read_now(
        &self,
        channel: &str,
        q: HistoryQuery,
        now_ms: i64,
    ) -> EngineResult<Snapshot> {
        let keys = self.keys(channel);
        let forwards = q.direction == Direction::Forwards;
        let opt = |v: Option<String>| arg(v.unwrap_or_default());
        let limit = q.limit.max(1);
        let args = vec![
            arg(if forwards { "f" } else { "b" }),
            opt(q.from_serial.map(|s| s.to_string())),
            opt(q.start.map(|s| s.to_string())),
            opt(q.end.map(|s| s.to_string())),
            arg(now_ms.to_string()),
            arg((limit + 1).to_string()),
        ];
        let reply = eval(&self.cluster, READ, &keys.both(), args, true).await?;
        let mut parts = array(reply)?.into_iter();
        let position = parse_position(text(parts.next().unwrap_or(Reply::Null))?)?;
        let mut candidates: Vec<StoredMessage> = array(parts.next().unwrap_or(Reply::Null))?
            .into_iter()
            .filter_map(|m| match m {
                Reply::Bulk(b) => publication::history_entry(&b),
                _ => None,
            })
            .collect();
        if !forwards {
            candidates.reverse();
        }
        Ok(Snapshot {
            page: history::page_of(&candidates, &q),
            position,
        })
    }
}

fn parse_position(text: String) -> EngineResult<u64> {
    text.parse()
        .map_err(|_| EngineError(format!("a position that is not a number: {text}")))
}

impl Broker for RedisBroker {
    fn register(&self, handler: Weak<dyn BrokerHandler>) {
        self.listener.register(handler);
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<()>> {
        Box::pin(async move {
            let shard = self.keys(channel).fanout;
            let slot = key_slot(shard.as_bytes());
            self.fanout
                .subscribe(&self.listener, &shard, channel, slot)
                .await
        })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<()>> {
        self.fanout
            .unsubscribe(&self.listener, &self.keys(channel).fanout);
        tidewire_realtime::engine::ready(Ok(()))
    }

    fn publish(&self, publication: Publication) -> BoxFuture<'_, EngineResult<Publication>> {
        Box::pin(self.publish_now(publication))
    }

    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Snapshot>> {
        Box::pin(self.read_now(channel, query, now_ms))
    }

    fn position<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<Option<u64>>> {
        Box::pin(async move {
            let reply = eval(
                &self.cluster,
                POSITION,
                &self.keys(channel).both(),
                Vec::new(),
                true,
            )
            .await?;
            let position = parse_position(text(reply)?)?;
            Ok((position > 0).then_some(position))
        })
    }

    fn versions<'a>(
        &'a self,
        channel: &'a str,
        serial: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<StoredMessage>>> {
        Box::pin(async move {
            let key = self.list_key(channel, "versions", serial);
            Ok(self
                .list(key, now_ms)
                .await?
                .iter()
                .filter_map(|m| publication::history_entry(m))
                .collect())
        })
    }

    fn annotations<'a>(
        &'a self,
        channel: &'a str,
        serial: u64,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<Annotation>>> {
        Box::pin(async move {
            let key = self.list_key(channel, "annotations", serial);
            Ok(self
                .list(key, now_ms)
                .await?
                .iter()
                .filter_map(|m| publication::annotation_entry(m, now_ms))
                .collect())
        })
    }

    fn has_interest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, EngineResult<bool>> {
        Box::pin(async move {
            // Every node attached to the channel holds one SSUBSCRIBE of its
            // shard channel on the master that owns it.
            let shard = self.keys(channel).fanout;
            let argv = vec![arg("PUBSUB"), arg("SHARDNUMSUB"), arg(shard.as_str())];
            let reply = super::run_one(&self.cluster, Some(&shard), argv, true).await?;
            let counts = array(reply)?;
            Ok(counts.get(1).map(int).transpose()?.unwrap_or(0) > 0)
        })
    }

    fn expire(&self, _now_ms: i64) -> BoxFuture<'_, EngineResult<()>> {
        // Every publish trims its channel's expired entries, reads skip them, and
        // the keys of an idle channel carry TTLs: nothing to sweep.
        tidewire_realtime::engine::ready(Ok(()))
    }
}
