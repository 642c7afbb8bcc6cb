//! The [`ConnectionStateStore`]: what resuming or recovering a connection needs,
//! kept where another node can read it when the node that served the connection
//! is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ready, BoxFuture, EngineResult};
use crate::registry::ConnectionRecord;

/// A connection as another node would need it to take the connection over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionState {
    pub record: ConnectionRecord,
    /// Last msgSerial the connection's publishes reached (so that re-sent
    /// publishes are not applied twice), `None` before any.
    pub msg_serial: Option<i64>,
    /// The node serving it, or that served it last.
    pub node: String,
}

/// Connection state by connectionId.
///
/// Promises:
/// - [`ConnectionStateStore::save`] replaces a connection's state atomically; a
///   later [`ConnectionStateStore::load`] on any node returns it (or a later save).
/// - [`ConnectionStateStore::take_over`] replaces the state only if its current
///   connectionKey is the one given, as one step: of concurrent takeovers with the
///   same key (two nodes resuming one connection) exactly one succeeds. A node
///   also writes a connection it serves (parked, say) this way, so that a node
///   that lost it to a resume elsewhere cannot overwrite the new owner's state.
/// - [`ConnectionStateStore::remove`] likewise forgets a connection only under the
///   key given.
/// - [`ConnectionStateStore::expire`] forgets connections disconnected for more than
///   the TTL, never a live one (`disconnected_ms` is `None`).
///
/// [`contract_suite`] checks these promises; run it against every implementation.
pub trait ConnectionStateStore: Send + Sync {
    /// Stores `state`, replacing what was kept for its connectionId.
    fn save(&self, state: ConnectionState) -> BoxFuture<'_, EngineResult<()>>;

    /// The state of `connection_id`, if kept.
    fn load<'a>(
        &'a self,
        connection_id: &'a str,
    ) -> BoxFuture<'a, EngineResult<Option<ConnectionState>>>;

    /// Replaces the state of `state.record.connection_id` with `state` if its
    /// connectionKey is `expected_key`; whether it did.
    fn take_over<'a>(
        &'a self,
        expected_key: &'a str,
        state: ConnectionState,
    ) -> BoxFuture<'a, EngineResult<bool>>;

    /// Forgets `connection_id` if its connectionKey is `key`; whether it did.
    fn remove<'a>(
        &'a self,
        connection_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, EngineResult<bool>>;

    /// Forgets connections disconnected for more than `ttl_ms` at `now_ms`; how many.
    fn expire(&self, now_ms: i64, ttl_ms: i64) -> BoxFuture<'_, EngineResult<usize>>;
}

/// The in-process connection state: a map under a mutex.
#[derive(Default)]
pub struct MemoryConnectionStateStore {
    inner: Mutex<HashMap<String, ConnectionState>>,
}

impl MemoryConnectionStateStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectionState>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ConnectionStateStore for MemoryConnectionStateStore {
    fn save(&self, state: ConnectionState) -> BoxFuture<'_, EngineResult<()>> {
        self.lock()
            .insert(state.record.connection_id.clone(), state);
        ready(Ok(()))
    }

    fn load<'a>(
        &'a self,
        connection_id: &'a str,
    ) -> BoxFuture<'a, EngineResult<Option<ConnectionState>>> {
        ready(Ok(self.lock().get(connection_id).cloned()))
    }

    fn take_over<'a>(
        &'a self,
        expected_key: &'a str,
        state: ConnectionState,
    ) -> BoxFuture<'a, EngineResult<bool>> {
        let mut map = self.lock();
        let id = state.record.connection_id.clone();
        let matches = map
            .get(&id)
            .is_some_and(|s| s.record.connection_key == expected_key);
        if matches {
            map.insert(id, state);
        }
        ready(Ok(matches))
    }

    fn remove<'a>(
        &'a self,
        connection_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, EngineResult<bool>> {
        let mut map = self.lock();
        let matches = map
            .get(connection_id)
            .is_some_and(|s| s.record.connection_key == key);
        if matches {
            map.remove(connection_id);
        }
        ready(Ok(matches))
    }

    fn expire(&self, now_ms: i64, ttl_ms: i64) -> BoxFuture<'_, EngineResult<usize>> {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| {
            s.record
                .disconnected_ms
                .is_none_or(|t| now_ms - t <= ttl_ms)
        });
        ready(Ok(before - map.len()))
    }
}

/// The [`ConnectionStateStore`] contract as executable checks. `a` and `b` are two
/// nodes' handles on one fresh store. Panics at the first violation. Needs a
/// multi-threaded tokio runtime.
pub async fn contract_suite(a: Arc<dyn ConnectionStateStore>, b: Arc<dyn ConnectionStateStore>) {
    fn state(id: &str, key: &str, node: &str, disconnected: Option<i64>) -> ConnectionState {
        ConnectionState {
            record: ConnectionRecord {
                connection_id: id.to_owned(),
                connection_key: key.to_owned(),
                client_id: Some("ann".into()),
                key_name: "app.key".into(),
                connected_ms: 1_000,
                disconnected_ms: disconnected,
            },
            msg_serial: Some(7),
            node: node.to_owned(),
        }
    }
    let s = state("contract1", "k1!contract1", "n1", None);
    a.save(s.clone()).await.expect("save");
    assert_eq!(
        b.load("contract1").await,
        Ok(Some(s.clone())),
        "read from b"
    );
    assert_eq!(
        b.load("contract:none").await,
        Ok(None),
        "unknown connection"
    );

    // The node dies: its last save says when the transport was lost.
    let parked = state("contract1", "k1!contract1", "n1", Some(2_000));
    a.save(parked.clone()).await.expect("save");
    assert_eq!(b.load("contract1").await, Ok(Some(parked)), "parked state");

    // Takeover: only with the current key, and only once.
    let taken = state("contract1", "k2!contract1", "n2", None);
    assert_eq!(
        b.take_over("stale!contract1", taken.clone()).await,
        Ok(false),
        "a stale key takes nothing"
    );
    assert_eq!(
        b.take_over("k1!contract1", taken.clone()).await,
        Ok(true),
        "takeover"
    );
    assert_eq!(
        a.load("contract1").await,
        Ok(Some(taken.clone())),
        "taken over"
    );
    assert_eq!(
        a.take_over(
            "k1!contract1",
            state("contract1", "k3!contract1", "n1", None)
        )
        .await,
        Ok(false),
        "the replaced key cannot take it back"
    );

    // Concurrent takeovers with one key: exactly one wins.
    for round in 0..20 {
        let id = format!("race{round}");
        let key = format!("k0!{id}");
        a.save(state(&id, &key, "n1", Some(2_000)))
            .await
            .expect("save");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let next = state(&id, &format!("k{}!{id}", i + 1), &format!("n{i}"), None);
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store.take_over(&key, next).await.expect("take_over")
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.expect("task"));
        }
        assert_eq!(winners, 1, "exactly one takeover of {id}");
        assert_eq!(
            a.remove(&id, &key).await,
            Ok(false),
            "removed only under its key"
        );
        assert!(b.load(&id).await.expect("load").is_some(), "still kept");
        let owner = b.load(&id).await.expect("load").expect("kept");
        assert_eq!(
            a.remove(&id, &owner.record.connection_key).await,
            Ok(true),
            "removed under the winner's key"
        );
        assert_eq!(b.load(&id).await, Ok(None), "removed");
    }

    // Expiry: parked connections past the TTL go, live ones and recent ones stay.
    a.save(state("old", "k!old", "n1", Some(1_000)))
        .await
        .expect("save");
    a.save(state("recent", "k!recent", "n1", Some(5_000)))
        .await
        .expect("save");
    assert_eq!(b.expire(6_000, 2_000).await, Ok(1), "one expired");
    assert_eq!(a.load("old").await, Ok(None), "expired");
    assert!(
        a.load("recent").await.expect("load").is_some(),
        "within ttl"
    );
    assert!(
        a.load("contract1").await.expect("load").is_some(),
        "live stays"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_connection_state_meets_contract() {
        let store: Arc<dyn ConnectionStateStore> = Arc::new(MemoryConnectionStateStore::default());
        contract_suite(store.clone(), store).await;
    }
}
