//! A client's subscriptions on the engine: one subscriber connection per master
//! it subscribed on (SUBSCRIBE's master, the owners of its shard channels), whose
//! pushes reach the client as its own.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tidewire_engine::{Cluster, EngineError, NodeConnection, PushSink};
use tidewire_resp::Reply;
use tidewire_store::client::OutputLimit;
use tidewire_store::{Client, ClientInfo, Store};

#[derive(Default)]
pub struct Subscriptions {
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    addr: Arc<str>,
    connection: NodeConnection,
    /// SSUBSCRIBE went through it: SUNSUBSCRIBE of every shard channel goes
    /// there (and only there, or masters without any would answer too).
    shard_channels: bool,
    /// Cleared when the session lets the connection go (RESET, the client
    /// leaving): its end then means nothing for the client.
    wanted: Arc<AtomicBool>,
    /// The connection's subscriptions (channels and patterns, shard channels)
    /// as the engine's last confirmation counted them.
    counts: Arc<Counts>,
}

struct Counts {
    plain: AtomicI64,
    shard: AtomicI64,
    /// The client, whose own counters (CLIENT LIST, INFO, and whether it is in
    /// subscribed mode as a tracking REDIRECT target) include these.
    info: Arc<ClientInfo>,
    /// What the confirmations added to those counters so far.
    mirrored_plain: AtomicI64,
    mirrored_shard: AtomicI64,
}

impl Counts {
    fn new(info: Arc<ClientInfo>) -> Counts {
        Counts {
            plain: AtomicI64::new(0),
            shard: AtomicI64::new(0),
            info,
            mirrored_plain: AtomicI64::new(0),
            mirrored_shard: AtomicI64::new(0),
        }
    }

    /// Takes the count a subscribe or unsubscribe confirmation carries (the
    /// engine counts channels and patterns together: the client's channel
    /// counter carries both).
    fn update(&self, push: &Reply) {
        let Reply::Push(items) = push else {
            return;
        };
        let (Some(Reply::Bulk(kind)), Some(Reply::Int(count))) = (items.first(), items.get(2))
        else {
            return;
        };
        match &kind[..] {
            b"subscribe" | b"psubscribe" | b"unsubscribe" | b"punsubscribe" => {
                self.plain.store(*count, Ordering::Relaxed);
                mirror(&self.info.subscriptions, &self.mirrored_plain, *count);
            }
            b"ssubscribe" | b"sunsubscribe" => {
                self.shard.store(*count, Ordering::Relaxed);
                mirror(&self.info.ssubscriptions, &self.mirrored_shard, *count);
            }
            _ => {}
        }
    }

    /// The connection is let go, its subscriptions with it.
    fn clear(&self) {
        mirror(&self.info.subscriptions, &self.mirrored_plain, 0);
        mirror(&self.info.ssubscriptions, &self.mirrored_shard, 0);
    }

    fn any(&self) -> bool {
        self.plain.load(Ordering::Relaxed) > 0 || self.shard.load(Ordering::Relaxed) > 0
    }
}

impl Subscriber {
    fn release(&self) {
        self.wanted.store(false, Ordering::Relaxed);
        self.counts.clear();
    }
}

/// What a subscription command does.
#[derive(Clone, Copy)]
pub struct Kind {
    /// On shard channels (SSUBSCRIBE, SUNSUBSCRIBE).
    pub shard: bool,
    /// Adds subscriptions (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE).
    pub subscribing: bool,
}

/// Where a new subscriber connection's pushes go: the client, within the pubsub
/// output-buffer limit.
pub struct Pushes {
    info: Arc<ClientInfo>,
    limit: OutputLimit,
}

impl Pushes {
    pub fn new(store: &Store, client: &Client) -> Pushes {
        Pushes {
            info: client.info.clone(),
            limit: store.config.pubsub_limit(),
        }
    }
}

impl Subscriptions {
    /// SUBSCRIBE and the like on the client's subscriber connection to the
    /// master owning `slot` (the first master for `None`), opened on first use;
    /// what the engine pushes back (confirmations, messages) reaches the client
    /// as its pushes. If that connection breaks, its subscriptions are gone: the
    /// client is disconnected, so that it reconnects and subscribes again, as
    /// after a server restart.
    pub async fn send(
        &mut self,
        cluster: &Cluster,
        pushes: Pushes,
        argv: &[Bytes],
        slot: Option<u16>,
        kind: Kind,
    ) -> Result<Option<Reply>, EngineError> {
        let Kind { shard, subscribing } = kind;
        let addr = cluster.owner(slot).await?;
        if shard {
            if let Some(s) = self.subscribers.iter_mut().find(|s| s.addr == addr) {
                s.shard_channels = true;
            }
        }
        let open = self
            .subscribers
            .iter()
            .find(|s| s.addr == addr)
            .map(|s| s.connection.clone())
            .filter(NodeConnection::is_alive);
        let connection = match open {
            Some(connection) => connection,
            None => {
                let Pushes { info, limit } = pushes;
                let wanted = Arc::new(AtomicBool::new(true));
                let still_wanted = wanted.clone();
                let counts = Arc::new(Counts::new(info.clone()));
                let counted = counts.clone();
                let sink: PushSink = Arc::new(move |push| match push {
                    Some(push) => {
                        counted.update(&push);
                        let size = push_size(&push);
                        info.push_limited(push, size, limit);
                    }
                    None if still_wanted.load(Ordering::Relaxed) => info.kill(),
                    None => {}
                });
                let (addr, connection) = cluster.open_subscriber(slot, sink).await?;
                self.subscribers.retain(|s| s.addr != addr);
                self.subscribers.push(Subscriber {
                    addr,
                    connection: connection.clone(),
                    shard_channels: shard,
                    wanted,
                    counts,
                });
                connection
            }
        };
        if subscribing {
            // Subscribed from now on, before the confirmation comes back.
            if let Some(s) = self.subscribers.iter().find(|s| s.addr == addr) {
                let count = if shard {
                    &s.counts.shard
                } else {
                    &s.counts.plain
                };
                count.fetch_max(1, Ordering::Relaxed);
            }
        }
        connection.send_without_reply(&[argv.to_vec()]).await?;
        Ok(None)
    }

    /// Whether the client holds any subscription (a RESP2 client is then in
    /// subscribed mode).
    pub fn active(&self) -> bool {
        self.subscribers.iter().any(|s| s.counts.any())
    }

    /// SUNSUBSCRIBE without channels, on every subscriber connection; Redis's
    /// answer for a client with none.
    pub async fn unsubscribe_every_shard(
        &mut self,
        argv: &[Bytes],
    ) -> Result<Option<Reply>, EngineError> {
        let mut live = Vec::new();
        for subscriber in &mut self.subscribers {
            if std::mem::take(&mut subscriber.shard_channels) && subscriber.connection.is_alive() {
                live.push(subscriber.connection.clone());
            }
        }
        if live.is_empty() {
            return Ok(Some(Reply::Push(vec![
                Reply::bulk_str("sunsubscribe"),
                Reply::Null,
                Reply::Int(0),
            ])));
        }
        for connection in live {
            connection.send_without_reply(&[argv.to_vec()]).await?;
        }
        Ok(None)
    }

    /// Lets every subscriber connection go (RESET, the client leaving).
    pub fn release_all(&mut self) {
        for subscriber in self.subscribers.drain(..) {
            subscriber.release();
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Moves the client's `counter` by the change from what `mirrored` says was
/// added to it to `count`.
fn mirror(counter: &AtomicUsize, mirrored: &AtomicI64, count: i64) {
    let by = count - mirrored.swap(count, Ordering::Relaxed);
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        Some(usize::try_from(n as i64 + by).unwrap_or(0))
    });
}

/// About the wire size of a push, counted against the output-buffer limit.
fn push_size(push: &Reply) -> usize {
    match push {
        Reply::Push(items) => items.iter().map(push_size).sum::<usize>() + 16,
        Reply::Bulk(b) => b.len() + 16,
        _ => 16,
    }
}
