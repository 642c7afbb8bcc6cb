//! Command families, one module each, in the spirit of Redis's `t_string.c`. Each
//! exports `commands()`, its part of the command table; `all()` gathers them.

pub mod acl;
pub mod bitops;
pub mod client;
pub mod command_docs;
pub mod connection;
pub mod debug;
pub mod dump;
pub mod fill;
pub mod geo;
pub mod hash_ttl;
pub mod hashes;
pub mod hyperloglog;
pub mod idempotency;
pub mod json;
pub mod keys;
pub mod latency;
pub mod lists;
pub mod lock;
pub mod longdouble;
pub mod migrate;
pub mod persistence;
pub mod pubsub;
pub mod records;
pub mod scripting;
pub mod server;
pub mod server_info;
pub mod sets;
pub mod sort;
pub mod streams;
pub mod strings;
pub mod throttle;
pub mod transactions;
pub mod zsets;

use crate::command::CommandSpec;

/// The version reported to clients (INFO, HELLO). BullMQ and ioredis read it.
pub const REDIS_VERSION: &str = "7.2.4";
pub const TIDEWIRE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn all() -> Vec<CommandSpec> {
    let mut v = Vec::new();
    v.extend(connection::commands());
    v.extend(acl::commands());
    v.extend(client::commands());
    v.extend(command_docs::commands());
    v.extend(keys::commands());
    v.extend(dump::commands());
    v.extend(strings::commands());
    v.extend(streams::commands());
    v.extend(bitops::commands());
    v.extend(server::commands());
    v.extend(latency::commands());
    v.extend(debug::commands());
    v.extend(pubsub::commands());
    v.extend(transactions::commands());
    v.extend(hashes::commands());
    v.extend(sets::commands());
    v.extend(zsets::commands());
    v.extend(lists::commands());
    v.extend(hyperloglog::commands());
    v.extend(sort::commands());
    v.extend(persistence::commands());
    v.extend(scripting::commands());
    v.extend(throttle::commands());
    v.extend(idempotency::commands());
    v.extend(lock::commands());
    v.extend(fill::commands());
    v.extend(geo::commands());
    v.extend(migrate::commands());
    v.extend(hash_ttl::commands());
    v.extend(json::commands());
    v
}
