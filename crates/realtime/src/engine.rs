//! Where the hub keeps the realtime state that several nodes would have to share:
//! the seams between the [`crate::Hub`] and the engine behind it.
//!
//! Key types:
//! - [`Broker`]: channel positions, history appends and fan-out to every node,
//!   atomic per channel; "everything since position P" for resume and rewind.
//! - [`PresenceStore`]: presence members per channel, owned by a node, reaped when
//!   their node stops heartbeating; and each node's occupancy counts per
//!   channel, summed by readers and reaped alike.
//! - [`ConnectionStateStore`]: what a resume or recover needs of a connection, so
//!   that a node other than the one that served it can take it over.
//! - [`DedupeStore`]: client-supplied message ids seen recently, for idempotent
//!   publishing across nodes.
//!
//! - [`OrderedCalls`]: engine calls the hub cannot wait for, kept in each
//!   channel's order.
//!
//! [`Engine::in_process`] bundles the in-process implementations, the default
//! engine; the server's `engine::realtime` module has the Redis/Valkey Cluster
//! ones (`--engine`). Each interface states its ordering and atomicity
//! promises in its docs and has one contract suite (`contract_suite` in its
//! module) that every implementation must pass.
//!
//! Why async: a shared engine (a Redis Cluster) answers over the network, so every
//! call returns a [`BoxFuture`]; the in-process implementations do their work when
//! called and return a ready future, so the one-node fan-out path costs no more
//! than before. Callers never hold a lock across one of these futures.

pub mod broker;
pub mod connection_state;
pub mod dedupe;
pub mod ordered;
pub mod presence_store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use broker::{Broker, BrokerHandler, MemoryBroker, Payload, Publication, Snapshot};
pub use connection_state::{ConnectionState, ConnectionStateStore, MemoryConnectionStateStore};
pub use dedupe::{DedupeStore, MemoryDedupeStore};
pub use ordered::OrderedCalls;
pub use presence_store::{MemoryPresenceStore, PresenceStore};

use crate::history::HistoryStore;

/// A boxed, sendable future: what every engine call returns. A type alias rather
/// than `async fn` in traits so that the traits stay object safe (`Arc<dyn Broker>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An already completed engine call (what in-process implementations return).
pub fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

/// An engine call that failed (the engine was unreachable, refused, or answered
/// nonsense). The hub reports it to clients as Ably's internal error (50000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError(pub String);

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "engine error: {}", self.0)
    }
}

impl std::error::Error for EngineError {}

impl From<EngineError> for crate::AblyError {
    fn from(e: EngineError) -> Self {
        crate::AblyError::new(crate::ErrorCode::Internal, e.0)
    }
}

/// Result of an engine call.
pub type EngineResult<T> = Result<T, EngineError>;

/// The interfaces one hub uses, with their implementations.
#[derive(Clone)]
pub struct Engine {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceStore>,
    pub connections: Arc<dyn ConnectionStateStore>,
    pub dedupe: Arc<dyn DedupeStore>,
}

impl Engine {
    /// Everything in this process, history in `history` (the default engine).
    pub fn in_process(history: Arc<dyn HistoryStore>) -> Engine {
        Engine {
            broker: Arc::new(MemoryBroker::new(history)),
            presence: Arc::new(MemoryPresenceStore::default()),
            connections: Arc::new(MemoryConnectionStateStore::default()),
            dedupe: Arc::new(MemoryDedupeStore::new(dedupe::ABLY_DEDUPE_WINDOW_MS)),
        }
    }
}

/// Completes `fut` now if it is ready at once (every in-process engine call is),
/// else hands it to the runtime to finish and returns `None`. For the few
/// synchronous entry points kept for callers that cannot wait (the Redis
/// `PUBLISH` bridge): they must not block a runtime thread on the network.
pub(crate) fn now_or_spawn<T: Send + 'static>(mut fut: BoxFuture<'static, T>) -> Option<T> {
    use futures_util::FutureExt;
    if let Some(v) = (&mut fut).now_or_never() {
        return Some(v);
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(fut);
        }
        Err(_) => tracing::error!("engine call left unfinished: no runtime to finish it"),
    }
    None
}
