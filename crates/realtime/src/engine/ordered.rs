//! [`OrderedCalls`]: engine calls a caller cannot wait for but that must take
//! effect in the order they were made, per key (one channel's presence changes:
//! an ENTER overtaken by its own LEAVE would leave a ghost member on the engine
//! and show other nodes the events backwards).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::BoxFuture;

/// Runs calls per key in order: at once when nothing of the key's lane is
/// pending and the call completes immediately (every in-process engine call
/// does, so one node pays nothing), else behind the lane's earlier calls on a
/// task of the lane's own. Keys share [`LANES`] lanes by hash, so that a slow
/// engine call holds back only a fraction of the channels.
pub struct OrderedCalls {
    lanes: Vec<Lane>,
}

/// How many lanes (each a task once first needed).
pub const LANES: usize = 8;

#[derive(Default)]
struct Lane {
    /// Calls sent to the lane's task and not yet finished.
    pending: Arc<AtomicUsize>,
    tx: OnceLock<mpsc::UnboundedSender<BoxFuture<'static, ()>>>,
}

impl Default for OrderedCalls {
    fn default() -> Self {
        OrderedCalls {
            lanes: (0..LANES).map(|_| Lane::default()).collect(),
        }
    }
}

impl OrderedCalls {
    /// Runs `call` after every earlier call of `key` (see the type's docs).
    pub fn run(&self, key: &str, mut call: BoxFuture<'static, ()>) {
        let lane = &self.lanes[lane_of(key)];
        if lane.pending.load(Ordering::Acquire) == 0 && (&mut call).now_or_never().is_some() {
            return;
        }
        let Some(tx) = lane.sender() else {
            tracing::error!("engine call left unfinished: no runtime to finish it");
            return;
        };
        lane.pending.fetch_add(1, Ordering::AcqRel);
        if tx.send(call).is_err() {
            lane.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Lane {
    /// The lane's queue, starting its task on first use (needs a runtime).
    fn sender(&self) -> Option<&mpsc::UnboundedSender<BoxFuture<'static, ()>>> {
        if let Some(tx) = self.tx.get() {
            return Some(tx);
        }
        let rt = tokio::runtime::Handle::try_current().ok()?;
        Some(self.tx.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
            let pending = self.pending.clone();
            // Ends when the lanes are dropped (their senders with them).
            rt.spawn(async move {
                while let Some(call) = rx.recv().await {
                    call.await;
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
            });
            tx
        }))
    }
}

fn lane_of(key: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % LANES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn calls_of_one_key_finish_in_order_even_when_the_first_is_slow() {
        let calls = OrderedCalls::default();
        let done = Arc::new(Mutex::new(Vec::new()));
        for (i, delay) in [(1, 30u64), (2, 0), (3, 10), (4, 0)] {
            let done = done.clone();
            calls.run(
                "channel",
                Box::pin(async move {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    done.lock().unwrap().push(i);
                }),
            );
        }
        for _ in 0..100 {
            if done.lock().unwrap().len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*done.lock().unwrap(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_ready_call_runs_at_once() {
        let calls = OrderedCalls::default();
        let done = Arc::new(Mutex::new(false));
        let d = done.clone();
        calls.run(
            "k",
            Box::pin(async move {
                *d.lock().unwrap() = true;
            }),
        );
        assert!(*done.lock().unwrap(), "no task, no wait");
    }
}
