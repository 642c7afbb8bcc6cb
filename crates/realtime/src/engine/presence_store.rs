//! The [`PresenceStore`]: every channel's presence members, each owned by the node
//! whose connection entered it, so that a dead node's members can be made to leave;
//! and every node's occupancy counts of each channel, summed by whoever reads them.
//!
//! Why occupancy lives here rather than in a store of its own: its counts belong
//! to nodes exactly as members do, and a dead node's must stop counting exactly
//! when its members leave. Sharing the node heartbeats gives one heartbeat and
//! one liveness rule per node for both, and no further engine call per sweep.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{ready, BoxFuture, EngineResult};
use crate::presence::Occupancy;
use crate::protocol::PresenceMessage;

/// Presence members per channel with node ownership and node liveness.
///
/// Promises:
/// - A member is keyed by (connectionId, clientId) on its channel; entering again
///   replaces it (and its owner). [`PresenceStore::members`] returns a channel's
///   members ordered by that key, as stored, from any node.
/// - Each call is atomic: a reader sees a member entirely before or after a change.
/// - A node is alive while its last heartbeat ([`PresenceStore::heartbeat`], or an
///   enter, which counts as one) is at most `grace_ms` old. [`PresenceStore::reap`]
///   removes every member of nodes that are not, and returns them: each reaped
///   member is returned by exactly one call (on any node), so exactly one node
///   announces its LEAVE. Members of live nodes are never reaped.
/// - Occupancy: each node keeps its own counts per channel
///   ([`PresenceStore::set_occupancy`], which also counts as a heartbeat); a
///   reader gets every node's ([`PresenceStore::occupancy`]) and sums them.
///   All-zero counts are not kept, so a channel nobody is on keeps nothing.
///   [`PresenceStore::reap_occupancy`] forgets the counts of nodes that are not
///   alive (by the rule above) and returns the channels that had some, each
///   returned by one call only; it and [`PresenceStore::reap`] may run in either
///   order, on any nodes: neither makes the other miss a dead node.
///
/// [`contract_suite`] checks these promises; run it against every implementation.
pub trait PresenceStore: Send + Sync {
    /// Adds or replaces `member` on `channel`, owned by `node`, at `now_ms`.
    fn enter<'a>(
        &'a self,
        channel: &'a str,
        node: &'a str,
        member: PresenceMessage,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<()>>;

    /// Removes a member; whether it was there.
    fn leave<'a>(
        &'a self,
        channel: &'a str,
        connection_id: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, EngineResult<bool>>;

    /// `channel`'s members with the node owning each, ordered by (connectionId,
    /// clientId). A node's SYNC takes the other nodes' members from here (its own
    /// are in its channels, changed under their locks).
    fn owned_members<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<(String, PresenceMessage)>>>;

    /// `channel`'s members, ordered by (connectionId, clientId).
    fn members<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<PresenceMessage>>> {
        Box::pin(async move {
            let owned = self.owned_members(channel).await?;
            Ok(owned.into_iter().map(|(_, m)| m).collect())
        })
    }

    /// Records that `node` is alive at `now_ms`.
    fn heartbeat<'a>(&'a self, node: &'a str, now_ms: i64) -> BoxFuture<'a, EngineResult<()>>;

    /// Removes and returns (channel, member) for every member of a node not heard
    /// from for more than `grace_ms`.
    fn reap(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> BoxFuture<'_, EngineResult<Vec<(String, PresenceMessage)>>>;

    /// Records `node`'s occupancy `counts` of `channel` at `now_ms` (a heartbeat
    /// too), replacing what it recorded before; all-zero counts forget them.
    fn set_occupancy<'a>(
        &'a self,
        channel: &'a str,
        node: &'a str,
        counts: Occupancy,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<()>>;

    /// Every node's counts of `channel`, ordered by node (nodes with none left
    /// out).
    fn occupancy<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<(String, Occupancy)>>>;

    /// Forgets the counts of every node not heard from for more than
    /// `grace_ms`; returns the channels that had some.
    fn reap_occupancy(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> BoxFuture<'_, EngineResult<Vec<String>>>;

    /// Every channel some node has counts on (a dead node's until they are
    /// reaped), in no particular order: the channels active anywhere.
    fn occupied_channels(&self) -> BoxFuture<'_, EngineResult<Vec<String>>>;
}

type Key = (String, String);

#[derive(Default)]
struct Members {
    /// channel → (connectionId, clientId) → (owner node, member).
    channels: HashMap<String, BTreeMap<Key, (String, PresenceMessage)>>,
    /// node → last heartbeat.
    nodes: HashMap<String, i64>,
    /// channel → node → its counts (never all zero).
    occupancy: HashMap<String, BTreeMap<String, Occupancy>>,
}

/// The in-process presence store: one map under a mutex. (The hub's channels keep
/// their own copy of their members for SYNC, changed under the channel lock; this
/// store is what other nodes and REST read.)
#[derive(Default)]
pub struct MemoryPresenceStore {
    inner: Mutex<Members>,
}

fn key_of(m: &PresenceMessage) -> Key {
    (
        m.connection_id.clone().unwrap_or_default(),
        m.client_id.clone().unwrap_or_default(),
    )
}

impl MemoryPresenceStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Members {
    fn beat(&mut self, node: &str, now_ms: i64) {
        let beat = self.nodes.entry(node.to_owned()).or_insert(now_ms);
        *beat = (*beat).max(now_ms);
    }
}

impl PresenceStore for MemoryPresenceStore {
    fn enter<'a>(
        &'a self,
        channel: &'a str,
        node: &'a str,
        member: PresenceMessage,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<()>> {
        let mut m = self.lock();
        m.beat(node, now_ms);
        m.channels
            .entry(channel.to_owned())
            .or_default()
            .insert(key_of(&member), (node.to_owned(), member));
        ready(Ok(()))
    }

    fn leave<'a>(
        &'a self,
        channel: &'a str,
        connection_id: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, EngineResult<bool>> {
        let mut m = self.lock();
        let Some(members) = m.channels.get_mut(channel) else {
            return ready(Ok(false));
        };
        let gone = members
            .remove(&(connection_id.to_owned(), client_id.to_owned()))
            .is_some();
        if members.is_empty() {
            m.channels.remove(channel);
        }
        ready(Ok(gone))
    }

    fn owned_members<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<(String, PresenceMessage)>>> {
        let m = self.lock();
        let list = m
            .channels
            .get(channel)
            .map(|ms| ms.values().cloned().collect())
            .unwrap_or_default();
        ready(Ok(list))
    }

    fn heartbeat<'a>(&'a self, node: &'a str, now_ms: i64) -> BoxFuture<'a, EngineResult<()>> {
        self.lock().beat(node, now_ms);
        ready(Ok(()))
    }

    fn reap(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> BoxFuture<'_, EngineResult<Vec<(String, PresenceMessage)>>> {
        let mut m = self.lock();
        let dead: Vec<String> = m
            .nodes
            .iter()
            .filter(|(_, beat)| now_ms - **beat > grace_ms)
            .map(|(n, _)| n.clone())
            .collect();
        if dead.is_empty() {
            return ready(Ok(Vec::new()));
        }
        let mut reaped = Vec::new();
        m.channels.retain(|channel, members| {
            members.retain(|_, (node, member)| {
                let keep = !dead.contains(node);
                if !keep {
                    reaped.push((channel.clone(), member.clone()));
                }
                keep
            });
            !members.is_empty()
        });
        for n in &dead {
            m.nodes.remove(n);
        }
        ready(Ok(reaped))
    }

    fn set_occupancy<'a>(
        &'a self,
        channel: &'a str,
        node: &'a str,
        counts: Occupancy,
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<()>> {
        let mut m = self.lock();
        m.beat(node, now_ms);
        if counts.is_zero() {
            if let Some(nodes) = m.occupancy.get_mut(channel) {
                nodes.remove(node);
                if nodes.is_empty() {
                    m.occupancy.remove(channel);
                }
            }
        } else {
            m.occupancy
                .entry(channel.to_owned())
                .or_default()
                .insert(node.to_owned(), counts);
        }
        ready(Ok(()))
    }

    fn occupancy<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, EngineResult<Vec<(String, Occupancy)>>> {
        let m = self.lock();
        let list = m
            .occupancy
            .get(channel)
            .map(|nodes| nodes.iter().map(|(n, o)| (n.clone(), *o)).collect())
            .unwrap_or_default();
        ready(Ok(list))
    }

    fn reap_occupancy(
        &self,
        now_ms: i64,
        grace_ms: i64,
    ) -> BoxFuture<'_, EngineResult<Vec<String>>> {
        let mut m = self.lock();
        let Members {
            nodes, occupancy, ..
        } = &mut *m;
        // A node with counts but no heartbeat was forgotten by `reap`: dead too.
        let alive = |node: &String| nodes.get(node).is_some_and(|b| now_ms - *b <= grace_ms);
        let mut reaped = Vec::new();
        occupancy.retain(|channel, counts| {
            let before = counts.len();
            counts.retain(|node, _| alive(node));
            if counts.len() != before {
                reaped.push(channel.clone());
            }
            !counts.is_empty()
        });
        ready(Ok(reaped))
    }

    fn occupied_channels(&self) -> BoxFuture<'_, EngineResult<Vec<String>>> {
        ready(Ok(self.lock().occupancy.keys().cloned().collect()))
    }
}

/// The [`PresenceStore`] contract as executable checks. `a` and `b` are two nodes'
/// handles on one fresh store; times start at `now_ms`. Panics at the first
/// violation. Needs a multi-threaded tokio runtime.
pub async fn contract_suite(a: Arc<dyn PresenceStore>, b: Arc<dyn PresenceStore>, now_ms: i64) {
    fn member(conn: &str, client: &str, data: &str) -> PresenceMessage {
        PresenceMessage {
            id: Some(format!("{conn}:0:0")),
            action: Some(crate::presence::actions::PRESENT),
            client_id: Some(client.to_owned()),
            connection_id: Some(conn.to_owned()),
            data: Some(crate::protocol::MessageData::String(data.to_owned())),
            timestamp: Some(1),
            ..Default::default()
        }
    }
    let keys =
        |ms: &[PresenceMessage]| -> Vec<(String, String)> { ms.iter().map(key_of).collect() };
    let (c, other) = ("contract:presence", "contract:presence:other");
    let t = now_ms;
    let grace = 1_000;

    a.enter(c, "n1", member("c2", "bob", "x"), t)
        .await
        .expect("enter");
    a.enter(c, "n1", member("c1", "zed", "x"), t)
        .await
        .expect("enter");
    b.enter(c, "n2", member("c1", "amy", "x"), t)
        .await
        .expect("enter");
    b.enter(other, "n2", member("c3", "cat", "x"), t)
        .await
        .expect("enter");
    let seen = b.members(c).await.expect("members");
    assert_eq!(
        keys(&seen),
        vec![
            ("c1".to_owned(), "amy".to_owned()),
            ("c1".to_owned(), "zed".to_owned()),
            ("c2".to_owned(), "bob".to_owned()),
        ],
        "members from every node, ordered by (connectionId, clientId)"
    );
    assert_eq!(seen[2], member("c2", "bob", "x"), "stored as given");
    assert_eq!(
        a.members(c).await,
        Ok(seen.clone()),
        "same from either node"
    );

    let owners: Vec<(String, (String, String))> = b
        .owned_members(c)
        .await
        .expect("owned members")
        .iter()
        .map(|(node, m)| (node.clone(), key_of(m)))
        .collect();
    assert_eq!(
        owners,
        vec![
            ("n2".to_owned(), ("c1".to_owned(), "amy".to_owned())),
            ("n1".to_owned(), ("c1".to_owned(), "zed".to_owned())),
            ("n1".to_owned(), ("c2".to_owned(), "bob".to_owned())),
        ],
        "each member with the node that entered it"
    );

    // Entering again replaces (and the new enterer owns it).
    b.enter(c, "n2", member("c2", "bob", "w"), t)
        .await
        .expect("enter");
    assert_eq!(
        a.owned_members(c)
            .await
            .expect("owned members")
            .iter()
            .find(|(_, m)| key_of(m) == ("c2".to_owned(), "bob".to_owned()))
            .map(|(node, _)| node.as_str()),
        Some("n2"),
        "entering again takes ownership"
    );
    a.enter(c, "n1", member("c2", "bob", "y"), t)
        .await
        .expect("enter");
    let now = a.members(c).await.expect("members");
    assert_eq!(now.len(), 3, "replaced, not added");
    assert_eq!(now[2].data, member("c2", "bob", "y").data, "new data");

    // Leaving.
    assert_eq!(b.leave(c, "c2", "bob").await, Ok(true), "leave");
    assert_eq!(a.leave(c, "c2", "bob").await, Ok(false), "leave twice");
    assert_eq!(a.members(c).await.map(|m| m.len()), Ok(2), "left");
    assert_eq!(
        a.members(other).await.map(|m| m.len()),
        Ok(1),
        "channels apart"
    );
    assert_eq!(
        a.members("contract:none").await,
        Ok(Vec::new()),
        "unknown channel"
    );

    // Expiry: n1 keeps beating, n2 stops; after the grace n2's members go, once.
    assert_eq!(
        a.reap(t + grace, grace).await,
        Ok(Vec::new()),
        "within grace"
    );
    a.heartbeat("n1", t + grace).await.expect("heartbeat");
    let mut reaped = a.reap(t + grace + 1, grace).await.expect("reap");
    reaped.sort_by_key(|(ch, m)| (ch.clone(), key_of(m)));
    assert_eq!(
        reaped,
        vec![
            (c.to_owned(), member("c1", "amy", "x")),
            (other.to_owned(), member("c3", "cat", "x")),
        ],
        "a dead node's members are reaped, on every channel"
    );
    assert_eq!(
        b.reap(t + grace + 2, grace).await,
        Ok(Vec::new()),
        "reaped once"
    );
    assert_eq!(
        keys(&b.members(c).await.expect("members")),
        vec![("c1".to_owned(), "zed".to_owned())],
        "a live node's members stay"
    );
    assert_eq!(
        b.members(other).await,
        Ok(Vec::new()),
        "dead node's channel empty"
    );

    // Concurrent reapers on both nodes: every member is announced exactly once.
    for i in 0..20 {
        a.enter(c, "n3", member(&format!("d{i}"), "x", "x"), t + 5 * grace)
            .await
            .expect("enter");
    }
    a.heartbeat("n1", t + 7 * grace).await.expect("heartbeat");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.reap(t + 7 * grace, grace).await.expect("reap").len()
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    assert_eq!(total, 20, "concurrent reaps announce each member once");
    assert_eq!(
        a.members(c).await.map(|m| m.len()),
        Ok(1),
        "only n1's member stays"
    );

    occupancy_contract(&a, &b, t + 10 * grace, grace).await;
}

/// The occupancy part of [`contract_suite`], from `t` on (later than any time
/// the members part used).
async fn occupancy_contract(
    a: &Arc<dyn PresenceStore>,
    b: &Arc<dyn PresenceStore>,
    t: i64,
    grace: i64,
) {
    let counts = |n: usize| Occupancy {
        connections: n,
        publishers: 1,
        subscribers: n,
        presence_connections: 2,
        presence_members: n + 1,
        presence_subscribers: 3,
    };
    let list = |l: &[(&str, Occupancy)]| -> Vec<(String, Occupancy)> {
        l.iter().map(|(n, o)| ((*n).to_owned(), *o)).collect()
    };
    let (c, other) = ("contract:occupancy", "contract:occupancy:other");
    a.set_occupancy(c, "n1", counts(2), t)
        .await
        .expect("set occupancy");
    b.set_occupancy(c, "n4", counts(3), t)
        .await
        .expect("set occupancy");
    b.set_occupancy(other, "n4", counts(1), t)
        .await
        .expect("set occupancy");
    assert_eq!(
        b.occupancy(c).await,
        Ok(list(&[("n1", counts(2)), ("n4", counts(3))])),
        "every node's counts, by node"
    );
    assert_eq!(
        a.occupancy(c).await,
        b.occupancy(c).await,
        "same from either node"
    );
    for store in [a, b] {
        let mut occupied = store.occupied_channels().await.expect("occupied");
        occupied.sort();
        assert_eq!(
            occupied,
            vec![c.to_owned(), other.to_owned()],
            "the channels with counts, from either node"
        );
    }
    b.set_occupancy(c, "n1", counts(5), t)
        .await
        .expect("set occupancy");
    assert_eq!(
        a.occupancy(c).await,
        Ok(list(&[("n1", counts(5)), ("n4", counts(3))])),
        "a node's new counts replace its old ones"
    );
    a.set_occupancy(c, "n1", Occupancy::default(), t)
        .await
        .expect("set occupancy");
    assert_eq!(
        a.occupancy(c).await,
        Ok(list(&[("n4", counts(3))])),
        "zero counts are forgotten"
    );
    assert_eq!(
        a.occupancy("contract:occupancy:none").await,
        Ok(Vec::new()),
        "unknown channel"
    );

    // n1 keeps beating, n4 stops. The members' reap may run first: n4's counts
    // are still reaped after it, once.
    a.set_occupancy(c, "n1", counts(1), t)
        .await
        .expect("set occupancy");
    a.heartbeat("n1", t + grace).await.expect("heartbeat");
    assert_eq!(
        a.reap_occupancy(t + grace, grace).await,
        Ok(Vec::new()),
        "within grace"
    );
    b.reap(t + grace + 1, grace).await.expect("reap");
    let mut gone = a
        .reap_occupancy(t + grace + 1, grace)
        .await
        .expect("reap occupancy");
    gone.sort();
    assert_eq!(
        gone,
        vec![c.to_owned(), other.to_owned()],
        "a dead node's counts go, on every channel"
    );
    assert_eq!(
        b.reap_occupancy(t + grace + 2, grace).await,
        Ok(Vec::new()),
        "reaped once"
    );
    assert_eq!(
        b.occupancy(c).await,
        Ok(list(&[("n1", counts(1))])),
        "a live node's counts stay"
    );
    assert_eq!(b.occupancy(other).await, Ok(Vec::new()), "none left");

    // A node that comes back counts again.
    b.set_occupancy(other, "n4", counts(4), t + 2 * grace)
        .await
        .expect("set occupancy");
    assert_eq!(
        a.occupancy(other).await,
        Ok(list(&[("n4", counts(4))])),
        "counted again"
    );
    b.set_occupancy(other, "n4", Occupancy::default(), t + 2 * grace)
        .await
        .expect("set occupancy");
    a.set_occupancy(c, "n1", Occupancy::default(), t + 2 * grace)
        .await
        .expect("set occupancy");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_presence_store_meets_contract() {
        let store: Arc<dyn PresenceStore> = Arc::new(MemoryPresenceStore::default());
        contract_suite(store.clone(), store, 10_000).await;
    }
}
