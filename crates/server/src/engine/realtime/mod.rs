//! The realtime hub's engine interfaces ([`tidewire_realtime::engine`]) kept on
//! the Redis/Valkey Cluster engine, so that several nodes share them.
//!
//! With `--engine`, every hub of the node runs on them
//! ([`crate::realtime::RealtimeEngine`]): [`RedisBroker`] (positions, history and
//! fan-out over sharded pub/sub, through the process's one [`Fanout`]),
//! [`RedisPresenceStore`], [`RedisConnectionStateStore`] and [`RedisDedupeStore`].
//! Without it the hub keeps its in-process engine. docs/scale-out.md says what
//! stays per node.
//!
//! Key layout, all under [`PREFIX`] (`tw:rt:`), then the app's [`scope`]
//! (`app:<len>:<appId>:`; empty for a store built with `new`, as the contract
//! tests do) for the per-app stores (broker, presence and occupancy, dedupe: two apps may name
//! the same channel); connection state is not scoped (connectionIds are unique).
//! A channel's keys carry
//! `{<len>:<channel>}` as their hash tag, so that they share one slot (one script
//! may touch them all) whatever characters the channel name holds; the length
//! keeps the tag non-empty and the key names unambiguous.
//! - `…broker:{<len>:<channel>}:position` — string: the last position; TTL the
//!   retention, at least a minute. `…:history` — sorted set by position, members
//!   the entries (see `publication.rs`), TTL the retention. `…:fanout` — the shard
//!   channel publications are `SPUBLISH`ed on ([`broker`], [`fanout`]).
//! - `tw:rt:dedupe:{<len>:<channel>}:<id>` — string: when the id was first
//!   recorded (ms), with a Redis TTL of the window so it cleans itself up
//!   ([`dedupe`]).
//! - `tw:rt:connection:<connectionId>` — hash: one connection's state, fields
//!   `key`, `client`, `key_name`, `connected`, `disconnected` (parked only),
//!   `serial`, `node` ([`connection_state`]).
//! - `tw:rt:parked-connections` — sorted set: parked connectionIds by when they
//!   were disconnected, the index [`ConnectionStateStore::expire`] walks.
//! - `tw:rt:presence:{<len>:<channel>}:members` / `…:owners` — hashes by member
//!   identity: the member (msgpack) and the node that owns it ([`presence`]).
//! - `tw:rt:presence:{nodes}:beats` — sorted set: every node by its last
//!   heartbeat; `tw:rt:presence:{nodes}:channels:<node>` — set: the channels a
//!   node has entered members on (one slot with the beats, so a heartbeat and
//!   the index change together); `…:occupancy:<node>` — set: the channels a
//!   node has occupancy counts on.
//! - `tw:rt:occupancy:{<len>:<channel>}:counts` — hash: each node's occupancy
//!   counts of the channel, summed on read ([`occupancy`]).
//!
//! [`ConnectionStateStore::expire`]: tidewire_realtime::engine::ConnectionStateStore::expire

pub mod broker;
pub mod connection_state;
pub mod dedupe;
pub mod fanout;
pub mod occupancy;
pub mod presence;
mod publication;

use std::sync::Arc;

use bytes::Bytes;
use tidewire_engine::{key_slot, Cluster};
use tidewire_realtime::engine::{EngineError, EngineResult};
use tidewire_resp::{Protocol, Reply};

pub use broker::RedisBroker;
pub use connection_state::RedisConnectionStateStore;
pub use dedupe::RedisDedupeStore;
pub use fanout::Fanout;
pub use presence::RedisPresenceStore;

/// Every realtime key starts with this.
pub const PREFIX: &str = "tw:rt:";

/// The hash tag of `channel`'s keys: `{<len>:<channel>}`. Its slot is that of
/// `<len>:<channel>` up to the first `}`, the same for every key of the channel.
fn channel_tag(channel: &str) -> String {
    format!("{{{}:{channel}}}", channel.len())
}

/// The key segment after [`PREFIX`] that keeps one realtime app's keys apart
/// from another's: empty for none, else `app:<len>:<id>:` (the length keeps it
/// unambiguous whatever the id holds).
fn scope(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!("app:{}:{namespace}:", namespace.len())
    }
}

/// A key argument or value as a command argument.
fn arg(value: impl Into<Vec<u8>>) -> Bytes {
    Bytes::from(value.into())
}

/// Runs `script` with `keys` (all in one slot, the first one's) and `args` on the
/// engine. `retry_if_lost`: only for scripts that may run twice with no harm.
async fn eval(
    cluster: &Cluster,
    script: &'static str,
    keys: &[String],
    args: Vec<Bytes>,
    retry_if_lost: bool,
) -> EngineResult<Reply> {
    let mut argv = Vec::with_capacity(3 + keys.len() + args.len());
    argv.push(Bytes::from_static(b"EVAL"));
    argv.push(Bytes::from_static(script.as_bytes()));
    argv.push(arg(keys.len().to_string()));
    argv.extend(keys.iter().map(|k| arg(k.as_str())));
    argv.extend(args);
    run_one(
        cluster,
        keys.first().map(String::as_str),
        argv,
        retry_if_lost,
    )
    .await
}

/// Runs one command on the master owning `key`'s slot; an error reply is an
/// error.
async fn run_one(
    cluster: &Cluster,
    key: Option<&str>,
    argv: Vec<Bytes>,
    retry_if_lost: bool,
) -> EngineResult<Reply> {
    let slot = key.map(|k| key_slot(k.as_bytes()));
    let mut replies = cluster
        .run(Protocol::Resp2, slot, &[argv], retry_if_lost)
        .await
        .map_err(|e| EngineError(e.to_string()))?;
    match replies.pop() {
        Some(Reply::Error(e)) => Err(EngineError(e)),
        Some(reply) => Ok(reply),
        None => Err(EngineError("the engine sent no reply".into())),
    }
}

/// The elements of an array reply (the empty array for nil).
fn array(reply: Reply) -> EngineResult<Vec<Reply>> {
    match reply {
        Reply::Array(items) | Reply::Set(items) => Ok(items),
        Reply::Bulks(bulks) => Ok(bulks
            .iter()
            .map(|b| Reply::Bulk(Bytes::copy_from_slice(b)))
            .collect()),
        Reply::Null | Reply::NullArray => Ok(Vec::new()),
        other => Err(unexpected("an array", &other)),
    }
}

/// An integer reply.
fn int(reply: &Reply) -> EngineResult<i64> {
    match reply {
        Reply::Int(n) => Ok(*n),
        other => Err(unexpected("an integer", other)),
    }
}

/// A bulk string reply (`None` for nil).
fn bulk(reply: Reply) -> EngineResult<Option<Bytes>> {
    match reply {
        Reply::Bulk(b) => Ok(Some(b)),
        Reply::Null => Ok(None),
        other => Err(unexpected("a string", &other)),
    }
}

/// A bulk string reply as text.
fn text(reply: Reply) -> EngineResult<String> {
    let bytes = bulk(reply)?.ok_or_else(|| EngineError("nil where a string was due".into()))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| EngineError("a string that is not UTF-8".into()))
}

fn unexpected(wanted: &str, got: &Reply) -> EngineError {
    EngineError(format!(
        "the engine answered {got:?} where {wanted} was due"
    ))
}

/// The engine these stores share, as each store holds it.
type Shared = Arc<Cluster>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Any channel name, even one with braces, keeps all its keys in one slot,
    /// and the key names stay distinct.
    #[test]
    fn a_channels_keys_share_a_slot_whatever_its_name() {
        for channel in ["plain", "}starts", "mid}dle", "{braced}", "", "a{b}c"] {
            let tag = channel_tag(channel);
            let slots: Vec<u16> = ["dedupe", "presence"]
                .iter()
                .flat_map(|kind| {
                    [
                        format!("{PREFIX}{kind}:{tag}:members"),
                        format!("{PREFIX}{kind}:{tag}:x}}y"),
                    ]
                })
                .map(|k| key_slot(k.as_bytes()))
                .collect();
            assert!(
                slots.iter().all(|s| *s == slots[0]),
                "{channel:?}: {slots:?}"
            );
        }
        assert_ne!(
            channel_tag("a}:b"),
            channel_tag("a"),
            "the length sets them apart"
        );
    }
}
