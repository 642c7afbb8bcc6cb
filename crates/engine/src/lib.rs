//! The engine client: Tidewire nodes that share one Redis/Valkey Cluster (or one
//! standalone server) send their keyspace commands here.
//!
//! - [`seed`]: the `redis[s]://[user:pass@]host:port` URLs the engine is given;
//! - [`slot`]: Redis Cluster's hash slots (CRC16 of the key or its `{tag}`);
//! - [`topology`]: which master owns which slot, read with `CLUSTER SLOTS`;
//! - [`connection`]: one pipelined connection to one node, authenticated, over
//!   TCP or (`rediss://`) [`tls`];
//! - [`cluster`]: routing by slot, `MOVED`/`ASK` redirects, bounded retries;
//! - [`refresh`]: the slot map read again in the background;
//! - [`batch`]: a client's pipeline sent together, one write per master.
//!
//! Replies come back as [`tidewire_resp::Reply`] values decoded from the node's own
//! protocol: the caller picks RESP2 or RESP3 per request, so a client's reply has
//! the shape the engine gave for that protocol, not a conversion of the other one.

#![forbid(unsafe_code)]

pub mod batch;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod refresh;
pub mod seed;
pub mod slot;
pub mod tls;
pub mod topology;

pub use batch::Batched;
pub use cluster::{Cluster, ConnectOptions, DedicatedConnection};
pub use connection::{Connector, NodeConnection, PushSink};
pub use error::EngineError;
pub use seed::{parse_seeds, Credentials, Seed};
pub use slot::{key_slot, SLOT_COUNT};
pub use tls::EngineTls;
