//! The pub/sub hub: channel, pattern and shard-channel subscriptions, and delivery
//! as push replies to each subscriber's connection. Keyspace notifications and the
//! realtime bridge publish through here too.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tidewire_resp::Reply;

use crate::client::{ClientInfo, OutputLimit};
use crate::glob::glob_match;

type Subscribers = HashMap<u64, Arc<ClientInfo>>;

/// Something outside the Redis side that also wants published messages (the realtime
/// layer). It returns how many receivers it delivered to, which PUBLISH counts.
pub trait PublishBridge: Send + Sync {
    fn on_publish(&self, channel: &[u8], message: &[u8]) -> usize;
}

#[derive(Default)]
pub struct PubSub {
    channels: RwLock<HashMap<Bytes, Subscribers>>,
    patterns: RwLock<HashMap<Bytes, Subscribers>>,
    shard_channels: RwLock<HashMap<Bytes, Subscribers>>,
    bridge: RwLock<Option<Arc<dyn PublishBridge>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl PubSub {
    fn table(&self, kind: Kind) -> &RwLock<HashMap<Bytes, Subscribers>> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard_channels,
        }
    }

    /// Calls `f` for every (kind, channel or pattern, subscriber).
    pub fn for_each_subscription(&self, mut f: impl FnMut(Kind, &[u8], &Arc<ClientInfo>)) {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for (name, subs) in self.table(kind).read().iter() {
                for c in subs.values() {
                    f(kind, name, c);
                }
            }
        }
    }

    pub fn set_bridge(&self, bridge: Arc<dyn PublishBridge>) {
        *self.bridge.write() = Some(bridge);
    }

    pub fn subscribe(&self, kind: Kind, name: Bytes, client: &Arc<ClientInfo>) {
        self.table(kind)
            .write()
            .entry(name)
            .or_default()
            .insert(client.id, client.clone());
    }

    pub fn unsubscribe(&self, kind: Kind, name: &[u8], client_id: u64) {
        let mut table = self.table(kind).write();
        if let Some(subs) = table.get_mut(name) {
            subs.remove(&client_id);
            if subs.is_empty() {
                table.remove(name);
            }
        }
    }

    /// Delivers `message` to Redis subscribers and to the bridge (the realtime layer);
    /// returns the number of receivers, as PUBLISH replies.
    pub fn publish(&self, channel: &[u8], message: &[u8], limit: impl Into<OutputLimit>) -> usize {
        let mut receivers = self.publish_local(channel, message, limit);
        let bridge = self.bridge.read().clone();
        if let Some(bridge) = bridge {
            receivers += bridge.on_publish(channel, message);
        }
        receivers
    }

    /// Hands a `PUBLISH` that another engine delivered to Redis subscribers (a
    /// shared Redis engine, `--engine`) to the bridge alone; returns the bridge's
    /// receivers.
    pub fn publish_to_bridge(&self, channel: &[u8], message: &[u8]) -> usize {
        let bridge = self.bridge.read().clone();
        bridge.map_or(0, |b| b.on_publish(channel, message))
    }

    /// Delivers `message` to Redis subscribers only: used for messages that came from
    /// the bridge, so they do not loop back into it.
    pub fn publish_local(
        &self,
        channel: &[u8],
        message: &[u8],
        limit: impl Into<OutputLimit>,
    ) -> usize {
        let limit = limit.into();
        let mut receivers = 0;
        let size = channel.len() + message.len() + 32;
        let channel_b = Bytes::copy_from_slice(channel);
        let message_b = Bytes::copy_from_slice(message);
        if let Some(subs) = self.channels.read().get(channel) {
            for c in subs.values() {
                let reply = Reply::Push(vec![
                    Reply::bulk(Bytes::from_static(b"message")),
                    Reply::Bulk(channel_b.clone()),
                    Reply::Bulk(message_b.clone()),
                ]);
                if c.push_limited(reply, size, limit) {
                    receivers += 1;
                }
            }
        }
        for (pattern, subs) in self.patterns.read().iter() {
            if !glob_match(pattern, channel, false) {
                continue;
            }
            for c in subs.values() {
                let reply = Reply::Push(vec![
                    Reply::bulk(Bytes::from_static(b"pmessage")),
                    Reply::Bulk(pattern.clone()),
                    Reply::Bulk(channel_b.clone()),
                    Reply::Bulk(message_b.clone()),
                ]);
                if c.push_limited(reply, size + pattern.len(), limit) {
                    receivers += 1;
                }
            }
        }
        receivers
    }

    pub fn spublish(&self, channel: &[u8], message: &[u8], limit: impl Into<OutputLimit>) -> usize {
        let limit = limit.into();
        let mut receivers = 0;
        let size = channel.len() + message.len() + 32;
        if let Some(subs) = self.shard_channels.read().get(channel) {
            for c in subs.values() {
                let reply = Reply::Push(vec![
                    Reply::bulk(Bytes::from_static(b"smessage")),
                    Reply::bulk(Bytes::copy_from_slice(channel)),
                    Reply::bulk(Bytes::copy_from_slice(message)),
                ]);
                if c.push_limited(reply, size, limit) {
                    receivers += 1;
                }
            }
        }
        receivers
    }

    /// Active channels (with at least one subscriber) matching an optional pattern.
    pub fn names(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.table(kind)
            .read()
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    pub fn count(&self, kind: Kind, name: &[u8]) -> usize {
        self.table(kind).read().get(name).map_or(0, |s| s.len())
    }

    pub fn len(&self, kind: Kind) -> usize {
        self.table(kind).read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.read().is_empty() && self.patterns.read().is_empty()
    }
}
