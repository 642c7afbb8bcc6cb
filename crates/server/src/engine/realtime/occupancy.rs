//! Occupancy on the engine: each node's counts of a channel in one hash per
//! channel (field: the node), summed by whoever reads them; part of
//! [`RedisPresenceStore`] (see [`tidewire_realtime::engine::PresenceStore`] for
//! why it shares the presence store's node heartbeats).
//!
//! Keys: `…occupancy:{<len>:<channel>}:counts` (hash: node → its six counts in
//! `metrics` order, space-separated decimals) and, in the heartbeats' slot,
//! `…presence:{nodes}:occupancy:<node>` (set: the channels the node has counts
//! on), the index a reaper walks.
//!
//! Why no TTL: a node removes its field when its counts reach zero (Redis drops
//! the hash with its last field), so an idle channel keeps no key; a dead
//! node's fields are removed by the survivors' reaping, like its members, and a
//! stale field never counts past that. A TTL would instead make a channel whose
//! counts stay the same for longer than it lose them, unless every node
//! rewrote every channel's counts each period.
//!
//! Order of the writes, so that a reaper never misses counts: the index entry
//! is added (with a heartbeat) before the counts are written, and removed only
//! after they are; a node writes one channel's counts in order (the hub's
//! per-channel lanes).

use tidewire_realtime::engine::{EngineError, EngineResult};
use tidewire_realtime::presence::Occupancy;

use super::presence::{RedisPresenceStore, BEAT};
use super::{arg, array, channel_tag, eval, int, run_one, text};

/// Forgets node ARGV[1]'s occupancy index if its last beat is still before
/// ARGV[2] (one that beat since has written counts again).
const FORGET_INDEX: &str = r#"
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not last or tonumber(last) < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
end
return 1
"#;

/// Counts as the hash keeps them.
fn encode(counts: &Occupancy) -> String {
    counts
        .to_array()
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Inverse of [`encode`]; an error for a field no node wrote.
fn decode(value: &str) -> EngineResult<Occupancy> {
    let bad = || {
        EngineError(format!(
            "occupancy counts the engine keeps are unreadable: {value:?}"
        ))
    };
    let mut out = [0usize; 6];
    let mut parts = value.split(' ');
    for slot in &mut out {
        *slot = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Occupancy::from_array(out))
}

impl RedisPresenceStore {
    /// `channel`'s counts hash.
    fn counts_key(&self, channel: &str) -> String {
        format!("{}occupancy:{}:counts", self.prefix, channel_tag(channel))
    }

    /// The heartbeats and `node`'s occupancy index (one slot).
    fn occupancy_node_keys(&self, node: &str) -> Vec<String> {
        let mut keys = self.node_keys(node);
        let index = keys.swap_remove(2);
        vec![keys.swap_remove(0), index]
    }

    /// A heartbeat of `node` at `now_ms`, with `channel` added to its index.
    async fn beat_indexed(
        &self,
        node: &str,
        now_ms: i64,
        channel: Option<&str>,
    ) -> EngineResult<()> {
        let mut args = vec![arg(node), arg(now_ms.to_string())];
        args.extend(channel.map(arg));
        let keys = self.occupancy_node_keys(node);
        eval(&self.cluster, BEAT, &keys, args, true).await.map(drop)
    }

    pub(super) async fn set_occupancy_now(
        &self,
        channel: &str,
        node: &str,
        counts: Occupancy,
        now_ms: i64,
    ) -> EngineResult<()> {
        let key = self.counts_key(channel);
        if counts.is_zero() {
            let argv = vec![arg("HDEL"), arg(key.as_str()), arg(node)];
            run_one(&self.cluster, Some(&key), argv, true).await?;
            self.beat_indexed(node, now_ms, None).await?;
            let index = self.occupancy_node_keys(node).swap_remove(1);
            let argv = vec![arg("SREM"), arg(index.as_str()), arg(channel)];
            run_one(&self.cluster, Some(&index), argv, true)
                .await
                .map(drop)
        } else {
            self.beat_indexed(node, now_ms, Some(channel)).await?;
            let argv = vec![
                arg("HSET"),
                arg(key.as_str()),
                arg(node),
                arg(encode(&counts)),
            ];
            run_one(&self.cluster, Some(&key), argv, true)
                .await
                .map(drop)
        }
    }

    pub(super) async fn occupancy_now(
        &self,
        channel: &str,
    ) -> EngineResult<Vec<(String, Occupancy)>> {
        let key = self.counts_key(channel);
        let argv = vec![arg("HGETALL"), arg(key.as_str())];
        let reply = run_one(&self.cluster, Some(&key), argv, true).await?;
        let mut flat = array(reply)?.into_iter();
        let mut list = Vec::new();
        while let (Some(node), Some(value)) = (flat.next(), flat.next()) {
            let counts = decode(&text(value)?)?;
            if !counts.is_zero() {
                list.push((text(node)?, counts));
            }
        }
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(list)
    }

    /// The union of every heartbeating node's occupancy index (one slot).
    pub(super) async fn occupied_channels_now(&self) -> EngineResult<Vec<String>> {
        let beats = self.node_keys("").swap_remove(0);
        let argv = vec![arg("ZRANGE"), arg(beats.as_str()), arg("0"), arg("-1")];
        let nodes = array(run_one(&self.cluster, Some(&beats), argv, true).await?)?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv = vec![arg("SUNION")];
        for node in nodes {
            argv.push(arg(self.occupancy_node_keys(&text(node)?).swap_remove(1)));
        }
        array(run_one(&self.cluster, Some(&beats), argv, true).await?)?
            .into_iter()
            .map(text)
            .collect()
    }

    pub(super) async fn reap_occupancy_now(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> EngineResult<Vec<String>> {
        let cutoff = now_ms.saturating_sub(grace_ms);
        let mut reaped = Vec::new();
        for node in self.dead_nodes(cutoff).await? {
            let keys = self.occupancy_node_keys(&node);
            for channel in self.set_members(&keys[1]).await? {
                let key = self.counts_key(&channel);
                let argv = vec![arg("HDEL"), arg(key.as_str()), arg(node.as_str())];
                // Not retried: a retry after a lost reply would say "not there",
                // and the channel would be returned by no call.
                if int(&run_one(&self.cluster, Some(&key), argv, false).await?)? == 1 {
                    reaped.push(channel);
                }
            }
            let args = vec![arg(node.as_str()), arg(cutoff.to_string())];
            eval(&self.cluster, FORGET_INDEX, &keys, args, true).await?;
        }
        Ok(reaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_back_as_written_and_junk_is_refused() {
        let counts = Occupancy::from_array([1, 2, 3, 4, 5, 6]);
        assert_eq!(encode(&counts), "1 2 3 4 5 6");
        assert_eq!(decode(&encode(&counts)), Ok(counts));
        for junk in ["", "1 2 3", "1 2 3 4 5 6 7", "a b c d e f", "-1 0 0 0 0 0"] {
            assert!(decode(junk).is_err(), "{junk:?}");
        }
    }
}
