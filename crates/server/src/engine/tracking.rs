//! `CLIENT TRACKING` with `--engine`: the keys live on the engine, where any
//! node (or any client of the engine itself) may change them, so the node
//! listens to the engine for changes and tells its own tracking clients.
//!
//! While a client of this node has tracking on, the node holds one connection
//! per engine master in RESP3 with `CLIENT TRACKING ON BCAST` (no prefix): the
//! master announces every key changed on it (writes, expiries, evictions) as an
//! `invalidate` push, and a flush as `invalidate` nil. Those feed the store's
//! tracking table, which tells each local client what it would be told by the
//! embedded store: default mode, the keys it read; BCAST, the keys under its
//! prefixes; OPTIN / OPTOUT / REDIRECT as there. Who changed a key is not
//! announced, so NOLOOP does not hold back a client's own writes through the
//! engine (an extra invalidation costs one read; a missing one a stale cache).
//!
//! Reads are remembered before they are forwarded, and the listener is up on
//! every master first, so a change racing a read's reply is announced. A lost
//! listener connection (or a master it was not on) may have missed changes: the
//! local tracking clients are told to drop everything (`invalidate` nil, as
//! after a flush), at once and again once every master is listened to. With no
//! tracking client left for a while, the connections close: nodes without
//! tracking clients pay nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tidewire_engine::{Cluster, NodeConnection};
use tidewire_resp::Reply;
use tidewire_store::Store;

use crate::engine::owner_sink;

/// How often the listener checks that it is wanted and on every master.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// With no tracking client for this long, the connections close. Longer than
/// the moment between a `CLIENT TRACKING on` making sure of the listener and
/// the store turning tracking on for it.
const IDLE_BEFORE_CLOSE: Duration = Duration::from_secs(5);
/// After a master could not be listened to, reads go on without trying again
/// for this long (the periodic check tries): a refusing engine costs a
/// connection attempt per second, not one per read.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The node's listener for changes on the engine (see the module docs). One
/// per process; clones share it.
#[derive(Clone)]
pub struct Invalidations {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Arc<Cluster>,
    store: Weak<Store>,
    state: Mutex<State>,
    /// Held (an async lock) while connections open, so tracking clients reading
    /// at once wait for one opening instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

struct Listening {
    id: u64,
    connection: NodeConnection,
    /// The master confirmed `CLIENT TRACKING ON BCAST`.
    ready: bool,
}

impl Listening {
    fn listens(&self) -> bool {
        self.ready && self.connection.is_alive()
    }
}

#[derive(Default)]
struct State {
    /// Listening connections by master address.
    conns: HashMap<Arc<str>, Listening>,
    /// Every master was listened to at some point since the listener opened:
    /// a master found without a connection afterwards is a gap.
    covered: bool,
    /// Changes may have been missed since coverage was last complete: tracking
    /// clients drop everything once it is complete again.
    gap: bool,
    /// When a tracking client last needed the listener.
    last_wanted: Option<Instant>,
    /// When a master last could not be listened to.
    failed_at: Option<Instant>,
    /// The periodic check runs.
    checking: bool,
}

impl Invalidations {
    pub fn new(cluster: Arc<Cluster>, store: &Arc<Store>) -> Invalidations {
        Invalidations {
            inner: Arc::new(Inner {
                cluster,
                store: Arc::downgrade(store),
                state: Mutex::new(State::default()),
                opening: tokio::sync::Mutex::new(()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Makes sure every master is listened to, opening what is missing; called
    /// before a tracking client's read is forwarded and before tracking turns
    /// on. The read goes on if a master cannot be reached (it is likely to fail
    /// anyway): the tracking clients drop everything once it can.
    pub async fn ensure(&self) {
        let inner = &self.inner;
        if inner.missing().is_empty() {
            return;
        }
        let _opening = inner.opening.lock().await;
        let missing = inner.missing();
        let paused = {
            let st = inner.state.lock();
            st.failed_at.is_some_and(|t| t.elapsed() < RETRY_PAUSE)
        };
        if missing.is_empty() || paused {
            return;
        }
        let mut complete = true;
        for addr in missing {
            if let Err(e) = inner.open(addr.clone()).await {
                tracing::warn!(node = %addr, error = %e, "client tracking: cannot listen to the engine node's changes");
                complete = false;
            }
        }
        if !complete {
            // Reads go on meanwhile: once every master is listened to, the
            // tracking clients drop what they cached.
            let mut st = inner.state.lock();
            st.failed_at = Some(Instant::now());
            st.gap = true;
            return;
        }
        let gap = {
            let mut st = inner.state.lock();
            st.covered = true;
            st.failed_at = None;
            std::mem::take(&mut st.gap)
        };
        if gap {
            if let Some(store) = inner.store.upgrade() {
                store.invalidate_all_elsewhere();
            }
        }
    }
}

impl Inner {
    /// The masters not listened to (noting that a tracking client wants them
    /// all, and that missing one after full coverage is a gap).
    fn missing(self: &Arc<Self>) -> Vec<Arc<str>> {
        let masters = self.cluster.masters();
        let mut st = self.state.lock();
        st.last_wanted = Some(Instant::now());
        let missing: Vec<Arc<str>> = masters
            .into_iter()
            .filter(|m| !st.conns.get(m).is_some_and(Listening::listens))
            .collect();
        if !missing.is_empty() && st.covered {
            st.gap = true;
        }
        if !std::mem::replace(&mut st.checking, true) {
            tokio::spawn(check_loop(Arc::downgrade(self)));
        }
        missing
    }

    /// Opens the listening connection to `addr`, unless one is there by then.
    async fn open(self: &Arc<Self>, addr: Arc<str>) -> Result<(), tidewire_engine::EngineError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sink = owner_sink(
            self,
            id,
            |i, id, push| i.on_push(id, push),
            |i, id| i.on_lost(id),
        );
        let connection = self.cluster.open_subscriber_at(&addr, sink).await?;
        // Known before tracking is on, so no announcement is ignored; counted
        // as listening once the master confirmed.
        self.state.lock().conns.insert(
            addr.clone(),
            Listening {
                id,
                connection: connection.clone(),
                ready: false,
            },
        );
        let on = [
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"TRACKING"),
            Bytes::from_static(b"ON"),
            Bytes::from_static(b"BCAST"),
        ];
        let refused = match connection.send(&[on.to_vec()]).await {
            Ok(replies) => match replies.into_iter().next() {
                Some(Reply::Error(e)) => Some(tidewire_engine::EngineError::Config(format!(
                    "{addr} refused CLIENT TRACKING: {e}"
                ))),
                _ => None,
            },
            Err(e) => Some(e),
        };
        let mut st = self.state.lock();
        match refused {
            None => {
                if let Some(l) = st.conns.get_mut(&addr).filter(|l| l.id == id) {
                    l.ready = true;
                }
                Ok(())
            }
            Some(e) => {
                // Dropping the handle closes it; its end is then not news.
                st.conns.retain(|_, l| l.id != id);
                Err(e)
            }
        }
    }

    fn current(&self, id: u64) -> bool {
        self.state.lock().conns.values().any(|l| l.id == id)
    }

    /// An announcement from a master; runs on its connection's read task.
    fn on_push(&self, id: u64, push: Reply) {
        let Reply::Push(items) = push else {
            return;
        };
        let mut items = items.into_iter();
        match (items.next(), items.next()) {
            (Some(Reply::Bulk(kind)), Some(payload)) if &kind[..] == b"invalidate" => {
                if !self.current(id) {
                    return;
                }
                let Some(store) = self.store.upgrade() else {
                    return;
                };
                match payload {
                    Reply::Array(keys) => {
                        let keys = keys
                            .into_iter()
                            .filter_map(|k| match k {
                                Reply::Bulk(k) => Some(k),
                                _ => None,
                            })
                            .collect();
                        store.invalidate_changed_elsewhere(keys);
                    }
                    // nil: the master was flushed.
                    _ => store.invalidate_all_elsewhere(),
                }
            }
            _ => {}
        }
    }

    /// A listening connection ended: what changed on its master meanwhile is
    /// not known, so every tracking client drops everything, now and once the
    /// master is listened to again.
    fn on_lost(self: &Arc<Self>, id: u64) {
        {
            let mut st = self.state.lock();
            let before = st.conns.len();
            st.conns.retain(|_, l| l.id != id);
            if st.conns.len() == before {
                return;
            }
            st.gap = true;
        }
        tracing::warn!("client tracking: a connection listening to the engine was lost; tracking clients drop their caches");
        if let Some(store) = self.store.upgrade() {
            store.invalidate_all_elsewhere();
        }
    }
}

/// Every [`CHECK_EVERY`]: with tracking clients, listens again where a
/// connection was lost and to masters that joined; without any for
/// [`IDLE_BEFORE_CLOSE`], closes the connections and stops.
async fn check_loop(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(store) = inner.store.upgrade() else {
            return;
        };
        if store.tracking.any() {
            drop(store);
            Invalidations { inner }.ensure().await;
            continue;
        }
        let mut st = inner.state.lock();
        let idle = st
            .last_wanted
            .is_none_or(|t| t.elapsed() >= IDLE_BEFORE_CLOSE);
        if idle {
            // Dropping the handles closes the connections.
            st.conns.clear();
            st.covered = false;
            st.gap = false;
            st.failed_at = None;
            st.checking = false;
            return;
        }
    }
}
