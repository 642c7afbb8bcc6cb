//! Clients blocked on keys (BLPOP and friends). A blocked command registers a waiter
//! on each of its keys while still holding the keys' shard locks, so a push that
//! happens afterwards always finds it; pushes signal "ready" keys after releasing
//! their locks, waking the oldest waiter of each key (FIFO). The woken client simply
//! runs its command again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::CmdError;

/// A blocking command's timeout argument: float seconds with millisecond resolution
/// (rounded up, as Redis does), `None` for 0 = forever. Redis's error texts.
pub fn parse_timeout(arg: &[u8]) -> Result<Option<Duration>, CmdError> {
    let secs = crate::num::parse_f64(arg)
        .ok_or_else(|| CmdError::err("timeout is not a float or out of range"))?;
    let ms = secs * 1000.0;
    if ms > i64::MAX as f64 {
        return Err(CmdError::err("timeout is out of range"));
    }
    let ms = ms.ceil();
    if ms < 0.0 {
        return Err(CmdError::err("timeout is negative"));
    }
    if ms == 0.0 {
        return Ok(None);
    }
    let ms = ms as i64;
    if ms > i64::MAX - crate::clock::now_ms() as i64 {
        return Err(CmdError::err("timeout is out of range"));
    }
    Ok(Some(Duration::from_millis(ms as u64)))
}

pub struct Waiter {
    pub client_id: u64,
    pub notify: Notify,
    woken: AtomicBool,
}

impl Waiter {
    pub fn take_wakeup(&self) -> bool {
        self.woken.swap(false, Ordering::SeqCst)
    }
}

/// (db, key) → waiters in arrival order.
type WaiterQueues = HashMap<(usize, Bytes), VecDeque<Arc<Waiter>>>;

#[derive(Default)]
pub struct Blocking {
    waiters: Mutex<WaiterQueues>,
    blocked_clients: AtomicUsize,
}

impl Blocking {
    pub fn register(&self, client_id: u64, keys: &[(usize, Bytes)]) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter {
            client_id,
            notify: Notify::new(),
            woken: AtomicBool::new(false),
        });
        let mut map = self.waiters.lock();
        for k in keys {
            map.entry(k.clone()).or_default().push_back(waiter.clone());
        }
        self.blocked_clients.fetch_add(1, Ordering::Relaxed);
        waiter
    }

    /// Removes a waiter from every key (served, timed out, or disconnected).
    /// A waiter that was woken but leaves without having run its command again
    /// (disconnect, timeout, CLIENT UNBLOCK racing the wake-up) passes its wake-up
    /// on, so the data it was woken for does not wait for the next push.
    pub fn unregister(&self, waiter: &Arc<Waiter>, keys: &[(usize, Bytes)]) {
        {
            let mut map = self.waiters.lock();
            for k in keys {
                if let Some(q) = map.get_mut(k) {
                    q.retain(|w| !Arc::ptr_eq(w, waiter));
                    if q.is_empty() {
                        map.remove(k);
                    }
                }
            }
        }
        self.blocked_clients.fetch_sub(1, Ordering::Relaxed);
        if waiter.take_wakeup() {
            for (db, key) in keys {
                self.signal(*db, key);
            }
        }
    }

    /// Wakes the oldest not-yet-woken waiter on the key.
    pub fn signal(&self, db: usize, key: &[u8]) {
        let map = self.waiters.lock();
        if map.is_empty() {
            return;
        }
        if let Some(q) = map.get(&(db, Bytes::copy_from_slice(key))) {
            if let Some(w) = q.iter().find(|w| !w.woken.load(Ordering::SeqCst)) {
                w.woken.store(true, Ordering::SeqCst);
                w.notify.notify_one();
            }
        }
    }

    pub fn has_waiters(&self) -> bool {
        !self.waiters.lock().is_empty()
    }

    pub fn blocked_clients(&self) -> usize {
        self.blocked_clients.load(Ordering::Relaxed)
    }
}
