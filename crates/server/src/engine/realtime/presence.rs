//! [`RedisPresenceStore`]: presence members on the engine, per channel in two
//! hashes (member, owner) of one slot, with node heartbeats in one sorted set.
//!
//! Reaping, and why it announces each member once: a reaper reads the dead
//! nodes (beats older than the grace) and the channels they entered members on,
//! then removes each channel's members owned by a dead node with one script on
//! that channel's slot, which returns what it removed. Concurrent reapers on
//! any nodes run the same scripts; each member is removed, so returned, by
//! exactly one of them. A dead node is forgotten last, and only if it has not
//! beaten since (an enter beats first, so a node that comes back is not lost)
//! and its occupancy counts are reaped (see [`super::occupancy`], which shares
//! these heartbeats): whichever reap runs first, the other still finds it dead.

use bytes::Bytes;
use tidewire_realtime::engine::{BoxFuture, EngineError, EngineResult, PresenceStore};
use tidewire_realtime::presence::Occupancy;
use tidewire_realtime::protocol::PresenceMessage;
use tidewire_resp::Reply;

use super::{arg, array, bulk, channel_tag, eval, int, run_one, scope, text, Shared, PREFIX};

/// Records a heartbeat at ARGV[2] for node ARGV[1] unless a later one is kept,
/// and, given ARGV[3], that the node has members (or counts: KEYS[2] says which)
/// on that channel.
pub(super) const BEAT: &str = r#"
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not last or tonumber(last) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
if ARGV[3] then
  redis.call('SADD', KEYS[2], ARGV[3])
end
return 1
"#;

/// Stores member ARGV[2] under identity ARGV[1], owned by node ARGV[3].
const ENTER: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"#;

/// Removes the member with identity ARGV[1]; 1 if it was there.
const LEAVE: &str = r#"
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
"#;

/// Every member of the channel with its owner, as owner, member, owner, member…
/// (one script: the two hashes read at one moment).
const OWNED_MEMBERS: &str = r#"
local members = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #members, 2 do
  out[#out + 1] = redis.call('HGET', KEYS[2], members[i]) or ''
  out[#out + 1] = members[i + 1]
end
return out
"#;

/// Removes and returns every member of the channel owned by node ARGV[1].
const REAP_CHANNEL: &str = r#"
local owners = redis.call('HGETALL', KEYS[2])
local reaped = {}
for i = 1, #owners, 2 do
  if owners[i + 1] == ARGV[1] then
    local member = redis.call('HGET', KEYS[1], owners[i])
    redis.call('HDEL', KEYS[1], owners[i])
    redis.call('HDEL', KEYS[2], owners[i])
    if member then
      reaped[#reaped + 1] = member
    end
  end
end
return reaped
"#;

/// Forgets node ARGV[1] and its channels if its last beat is still before ARGV[2]
/// and none of its occupancy counts are left to reap (KEYS[3], their index).
const FORGET_NODE: &str = r#"
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if last and tonumber(last) < tonumber(ARGV[2]) and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
end
return 1
"#;

/// Presence members per channel with node ownership, on the engine (see the
/// module docs).
pub struct RedisPresenceStore {
    pub(super) cluster: Shared,
    /// [`PREFIX`] and the app's scope: every key of the store starts with it.
    pub(super) prefix: String,
}

impl RedisPresenceStore {
    pub fn new(cluster: Shared) -> Self {
        Self::scoped(cluster, "")
    }

    /// The store of the app `namespace` (see [`scope`]): its members, nodes and
    /// reaping apart from every other app's.
    pub fn scoped(cluster: Shared, namespace: &str) -> Self {
        RedisPresenceStore {
            cluster,
            prefix: format!("{PREFIX}{}", scope(namespace)),
        }
    }

    /// The channel's member and owner hashes (one slot).
    fn channel_keys(&self, channel: &str) -> Vec<String> {
        let (prefix, tag) = (&self.prefix, channel_tag(channel));
        vec![
            format!("{prefix}presence:{tag}:members"),
            format!("{prefix}presence:{tag}:owners"),
        ]
    }

    /// The heartbeats, `node`'s channel set and its occupancy channel set (one
    /// slot).
    pub(super) fn node_keys(&self, node: &str) -> Vec<String> {
        let prefix = &self.prefix;
        vec![
            format!("{prefix}presence:{{nodes}}:beats"),
            format!("{prefix}presence:{{nodes}}:channels:{node}"),
            format!("{prefix}presence:{{nodes}}:occupancy:{node}"),
        ]
    }

    async fn beat(&self, node: &str, now_ms: i64, channel: Option<&str>) -> EngineResult<()> {
        let mut args = vec![arg(node), arg(now_ms.to_string())];
        args.extend(channel.map(arg));
        eval(&self.cluster, BEAT, &self.node_keys(node), args, true)
            .await
            .map(drop)
    }

    /// Nodes whose last beat is before `cutoff`.
    pub(super) async fn dead_nodes(&self, cutoff: i64) -> EngineResult<Vec<String>> {
        let beats = self.node_keys("").swap_remove(0);
        let argv = vec![
            arg("ZRANGEBYSCORE"),
            arg(beats.as_str()),
            arg("-inf"),
            arg(format!("({cutoff}")),
        ];
        let reply = run_one(&self.cluster, Some(&beats), argv, true).await?;
        array(reply)?.into_iter().map(text).collect()
    }

    /// The channels `node` entered members on.
    async fn channels_of(&self, node: &str) -> EngineResult<Vec<String>> {
        let set = self.node_keys(node).swap_remove(1);
        self.set_members(&set).await
    }

    /// The members of the set `set`, as text.
    pub(super) async fn set_members(&self, set: &str) -> EngineResult<Vec<String>> {
        let argv = vec![arg("SMEMBERS"), arg(set)];
        let reply = run_one(&self.cluster, Some(set), argv, true).await?;
        array(reply)?.into_iter().map(text).collect()
    }
}

/// A member's identity on its channel, unambiguous for any two strings.
fn identity(connection_id: &str, client_id: &str) -> String {
    format!("{}:{connection_id}{client_id}", connection_id.len())
}

/// The order [`PresenceStore::members`] promises: (connectionId, clientId).
fn order_key(m: &PresenceMessage) -> (String, String) {
    (
        m.connection_id.clone().unwrap_or_default(),
        m.client_id.clone().unwrap_or_default(),
    )
}

/// A member as the engine keeps it (msgpack), from a script's reply.
fn decode_member(reply: Reply) -> EngineResult<PresenceMessage> {
    let value = bulk(reply)?.ok_or_else(|| EngineError("a nil presence member".into()))?;
    rmp_serde::from_slice(&value).map_err(|e| {
        EngineError(format!(
            "a presence member the engine keeps is unreadable: {e}"
        ))
    })
}

impl PresenceStore for RedisPresenceStore {
    fn enter<'a>(
        &'a self,
        channel: &'a str,
        node: &'a str,
        member: PresenceMessage,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<()>> {
        Box::pin(async move {
            let value = rmp_serde::to_vec_named(&member)
                .map_err(|e| EngineError(format!("cannot encode a presence member: {e}")))?;
            let (conn, client) = order_key(&member);
            // The beat and the channel index first: a reaper that finds the
            // member then also finds the node alive, or the channel indexed.
            self.beat(node, now_ms, Some(channel)).await?;
            let args = vec![arg(identity(&conn, &client)), Bytes::from(value), arg(node)];
            eval(
                &self.cluster,
                ENTER,
                &self.channel_keys(channel),
                args,
                true,
            )
            .await
            .map(drop)
        })
    }

    fn leave<'a>(
        &'a self,
        channel: &'a str,
        connection_id: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, EngineResult<bool>> {
        Box::pin(async move {
            let args = vec![arg(identity(connection_id, client_id))];
            // Not retried: a retry after a lost reply would say "was not there".
            let reply = eval(
                &self.cluster,
                LEAVE,
                &self.channel_keys(channel),
                args,
                false,
            )
            .await?;
            Ok(int(&reply)? == 1)
        })
    }

    fn owned_members<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<(String, PresenceMessage)>>> {
        Box::pin(async move {
            let reply = eval(
                &self.cluster,
                OWNED_MEMBERS,
                &self.channel_keys(channel),
                Vec::new(),
                true,
            )
            .await?;
            let mut flat = array(reply)?.into_iter();
            let mut list = Vec::new();
            while let (Some(owner), Some(member)) = (flat.next(), flat.next()) {
                list.push((text(owner)?, decode_member(member)?));
            }
            list.sort_by_key(|(_, m)| order_key(m));
            Ok(list)
        })
    }

    fn heartbeat<'a>(&'a self, node: &'a str, now_ms: i64) -> BoxFuture<'a, EngineResult<()>> {
        Box::pin(self.beat(node, now_ms, None))
    }

    fn reap(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> BoxFuture<'_, EngineResult<Vec<(String, PresenceMessage)>>> {
        Box::pin(async move {
            let cutoff = now_ms.saturating_sub(grace_ms);
            let mut reaped = Vec::new();
            for node in self.dead_nodes(cutoff).await? {
                for channel in self.channels_of(&node).await? {
                    let keys = self.channel_keys(&channel);
                    // Not retried: what a lost reply held is gone, and a retry
                    // would return nothing for it (the price of "at most once").
                    let reply = eval(
                        &self.cluster,
                        REAP_CHANNEL,
                        &keys,
                        vec![arg(node.as_str())],
                        false,
                    )
                    .await?;
                    for value in array(reply)? {
                        reaped.push((channel.clone(), decode_member(value)?));
                    }
                }
                let args = vec![arg(node.as_str()), arg(cutoff.to_string())];
                eval(
                    &self.cluster,
                    FORGET_NODE,
                    &self.node_keys(&node),
                    args,
                    true,
                )
                .await?;
            }
            Ok(reaped)
        })
    }

    fn set_occupancy<'a>(
        &'a self,
        channel: &'a str,
        node: &'a str,
        counts: Occupancy,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<()>> {
        Box::pin(self.set_occupancy_now(channel, node, counts, now_ms))
    }

    fn occupancy<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<(String, Occupancy)>>> {
        Box::pin(self.occupancy_now(channel))
    }

    fn reap_occupancy(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> BoxFuture<'_, EngineResult<Vec<String>>> {
        Box::pin(self.reap_occupancy_now(now_ms, grace_ms))
    }

    fn occupied_channels(&self) -> BoxFuture<'_, EngineResult<Vec<String>>> {
        Box::pin(self.occupied_channels_now())
    }
}
