//! The realtime hub's engine interfaces on a real Redis Cluster (3 masters) and
//! on a standalone redis-server: each store's `contract_suite` from the realtime
//! crate, unchanged, with two engine clients as two nodes.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod redis_support;

use std::sync::Arc;

use redis_support::RedisCluster;
use tidewire_engine::{parse_seeds, Cluster};
use tidewire_realtime::engine::{
    connection_state, dedupe, presence_store, ConnectionStateStore, DedupeStore, PresenceStore,
};
use tidewire_server::engine::realtime::{
    RedisConnectionStateStore, RedisDedupeStore, RedisPresenceStore,
};

/// The parked connections' Redis TTL in these tests: longer than a run, so that
/// only the contract's own clock decides.
const PARKED_TTL_MS: i64 = 600_000;

/// Two engine clients on the engine at `url`: two nodes.
async fn two_nodes(url: &str) -> (Arc<Cluster>, Arc<Cluster>) {
    let connect = || async {
        Cluster::connect(parse_seeds(url).expect("seed URL"))
            .await
            .expect("engine client connects")
    };
    (connect().await, connect().await)
}

/// Every store's contract suite, a and b on the two clients.
async fn run_contract_suites(url: &str) {
    let (a, b) = two_nodes(url).await;
    let window = 120_000;
    let now = 1_800_000_000_000;
    let dedupe = |c: &Arc<Cluster>| -> Arc<dyn DedupeStore> {
        Arc::new(RedisDedupeStore::new(c.clone(), window))
    };
    dedupe::contract_suite(dedupe(&a), dedupe(&b), window, now).await;

    let connections = |c: &Arc<Cluster>| -> Arc<dyn ConnectionStateStore> {
        Arc::new(RedisConnectionStateStore::new(c.clone(), PARKED_TTL_MS))
    };
    connection_state::contract_suite(connections(&a), connections(&b)).await;

    let presence = |c: &Arc<Cluster>| -> Arc<dyn PresenceStore> {
        Arc::new(RedisPresenceStore::new(c.clone()))
    };
    presence_store::contract_suite(presence(&a), presence(&b), now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_meet_their_contracts_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster starts");
    run_contract_suites(&cluster.masters[0].url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_meet_their_contracts_on_a_standalone_redis() {
    let redis = tokio::task::spawn_blocking(redis_support::standalone)
        .await
        .expect("redis-server starts");
    run_contract_suites(&redis.node.url()).await;
}
