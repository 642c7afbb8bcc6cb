//! The [`DedupeStore`]: client-supplied message ids seen recently, so that a
//! publish retried with the same ids (on any node) is not published twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{ready, BoxFuture, EngineResult};

/// Ably's idempotent-publishing window: 2 minutes.
pub const ABLY_DEDUPE_WINDOW_MS: i64 = 120_000;

/// Message ids seen per channel within a window.
///
/// Promises:
/// - [`DedupeStore::first_seen`] checks and records each id as one atomic step per
///   (channel, id): of any number of concurrent callers (on any node) offering the
///   same id on the same channel inside the window, exactly one gets `true`.
/// - Ids of one call are taken in order, so an id repeated within one call is
///   `true` at most once.
/// - An id is forgotten once the window has passed since it was first recorded;
///   offering it again is then `true` (and starts a new window).
/// - Channels are independent: the same id on two channels is two ids.
/// - [`DedupeStore::release`] forgets ids at once (a publish that failed after
///   its ids were recorded), so that offering them again is `true`.
///
/// [`contract_suite`] checks these promises; run it against every implementation.
pub trait DedupeStore: Send + Sync {
    /// For each of `ids`, in order: whether it had not been seen on `channel`
    /// within the window before `now_ms`. Records the new ones at `now_ms`.
    fn first_seen<'a>(
        &'a self,
        channel: &'a str,
        ids: &'a [&'a str],
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<bool>>>;

    /// Forgets `ids` on `channel`, recorded by a [`DedupeStore::first_seen`] whose
    /// publish then failed: the client's retry must not count as a duplicate.
    fn release<'a>(
        &'a self,
        channel: &'a str,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, EngineResult<()>>;
}

/// The in-process dedupe cache: ids by (channel, id) with an expiry queue, under
/// one mutex (taken only by publishes that carry ids of their own).
pub struct MemoryDedupeStore {
    window_ms: i64,
    inner: Mutex<IdCache>,
}

#[derive(Default)]
struct IdCache {
    seen: HashMap<(String, String), i64>,
    order: VecDeque<(i64, (String, String))>,
}

impl IdCache {
    /// Records `id` on `channel`; false if it was already seen inside the window.
    fn insert(&mut self, channel: &str, id: &str, now: i64, window_ms: i64) -> bool {
        while let Some((t, _)) = self.order.front() {
            if *t >= now - window_ms {
                break;
            }
            if let Some((t, k)) = self.order.pop_front() {
                if self.seen.get(&k) == Some(&t) {
                    self.seen.remove(&k);
                }
            }
        }
        let k = (channel.to_owned(), id.to_owned());
        if self.seen.contains_key(&k) {
            return false;
        }
        self.seen.insert(k.clone(), now);
        self.order.push_back((now, k));
        true
    }
}

impl MemoryDedupeStore {
    /// A store forgetting ids `window_ms` after they were recorded.
    pub fn new(window_ms: i64) -> Self {
        MemoryDedupeStore {
            window_ms,
            inner: Mutex::new(IdCache::default()),
        }
    }
}

impl DedupeStore for MemoryDedupeStore {
    fn first_seen<'a>(
        &'a self,
        channel: &'a str,
        ids: &'a [&'a str],
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<bool>>> {
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = ids
            .iter()
            .map(|id| cache.insert(channel, id, now_ms, self.window_ms))
            .collect();
        ready(Ok(fresh))
    }

    fn release<'a>(
        &'a self,
        channel: &'a str,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, EngineResult<()>> {
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            // Its place in the expiry queue stays; pruning skips entries it no
            // longer matches.
            cache.seen.remove(&(channel.to_owned(), (*id).to_owned()));
        }
        ready(Ok(()))
    }
}

/// The [`DedupeStore`] contract as executable checks. `a` and `b` are two nodes'
/// handles on one fresh store whose window is `window_ms`; times start at
/// `now_ms`. Panics at the first violation. Needs a multi-threaded tokio runtime.
pub async fn contract_suite(
    a: Arc<dyn DedupeStore>,
    b: Arc<dyn DedupeStore>,
    window_ms: i64,
    now_ms: i64,
) {
    let c = "contract:dedupe";
    let t = now_ms;
    assert_eq!(
        a.first_seen(c, &["x", "y", "x"], t).await,
        Ok(vec![true, true, false]),
        "first sight, and a repeat within one call"
    );
    assert_eq!(
        b.first_seen(c, &["x", "z"], t + 1).await,
        Ok(vec![false, true]),
        "ids seen through a are seen through b"
    );
    assert_eq!(
        a.first_seen("contract:dedupe:other", &["x"], t + 1).await,
        Ok(vec![true]),
        "channels are independent"
    );
    assert_eq!(
        a.first_seen(c, &["x"], t + window_ms - 1).await,
        Ok(vec![false]),
        "still inside the window"
    );
    assert_eq!(
        b.first_seen(c, &["x"], t + window_ms + 1).await,
        Ok(vec![true]),
        "forgotten after the window"
    );
    assert_eq!(
        a.first_seen(c, &["x"], t + window_ms + 2).await,
        Ok(vec![false]),
        "seen again starts a new window"
    );

    // Released ids are new again, through either node; others stay seen.
    assert_eq!(
        a.first_seen(c, &["r1", "r2"], t + window_ms + 3).await,
        Ok(vec![true, true]),
        "first sight"
    );
    b.release(c, &["r1"]).await.expect("release");
    assert_eq!(
        a.first_seen(c, &["r1", "r2"], t + window_ms + 4).await,
        Ok(vec![true, false]),
        "a released id is new again"
    );

    // Concurrent offers of one id from both nodes: exactly one wins.
    for round in 0..20 {
        let id = format!("race-{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .first_seen("contract:dedupe:race", &[id.as_str()], t)
                    .await
                    .expect("first_seen")[0]
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.expect("task"));
        }
        assert_eq!(winners, 1, "exactly one concurrent offer of {id} is first");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_dedupe_meets_contract() {
        let store: Arc<dyn DedupeStore> = Arc::new(MemoryDedupeStore::new(1_000));
        contract_suite(store.clone(), store, 1_000, 5_000).await;
    }
}
