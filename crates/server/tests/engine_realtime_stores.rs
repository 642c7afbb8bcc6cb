//! The realtime hub's engine interfaces on a real Redis Cluster (3 masters) and
//! on a standalone redis-server: each store's `contract_suite` from the realtime
//! crate, unchanged, with two engine clients as two nodes; and the Redis TTLs
//! the stores set, which no contract can see.
//!
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them).

mod redis_support;

use std::sync::Arc;

use redis_support::RedisCluster;
use tidewire_engine::{parse_seeds, Cluster};
use tidewire_realtime::engine::{
    broker, connection_state, dedupe, presence_store, Broker, ConnectionState,
    ConnectionStateStore, DedupeStore, PresenceStore,
};
use tidewire_realtime::registry::ConnectionRecord;
use tidewire_server::engine::realtime::{
    Fanout, RedisBroker, RedisConnectionStateStore, RedisDedupeStore, RedisPresenceStore,
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

    // Positions and history through each node's own client; the fan-out through
    // one process's subscriber connections, as every hub of a process shares
    // them (so both handlers have received a publication when it returns).
    // Fan-out between processes: tests/engine_realtime.rs.
    let fanout = Fanout::new(a.clone());
    let broker = |c: &Arc<Cluster>| -> Arc<dyn Broker> {
        Arc::new(RedisBroker::new(c.clone(), fanout.clone(), "contract-app"))
    };
    broker::contract_suite(broker(&a), broker(&b), tidewire_realtime::auth::now_ms()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_meet_their_contracts_on_a_redis_cluster() {
    let cluster = RedisCluster::started().await;
    run_contract_suites(&cluster.masters[0].url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_meet_their_contracts_on_a_standalone_redis() {
    let redis = tokio::task::spawn_blocking(redis_support::standalone)
        .await
        .expect("redis-server starts");
    run_contract_suites(&redis.node.url()).await;
}

/// What the contracts cannot see: the Redis TTLs that clean up after the stores.
/// A dedupe id lives for the window; a parked connection for the parked TTL; a
/// live one has none, so the engine never forgets a served connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_carry_the_ttls_the_module_docs_promise() {
    let redis = tokio::task::spawn_blocking(redis_support::standalone)
        .await
        .expect("redis-server starts");
    let (a, _) = two_nodes(&redis.node.url()).await;
    let ttl_of = |key: &str| -> i64 { redis.node.cmd(&["PTTL", key]) };

    let dedupe = RedisDedupeStore::new(a.clone(), 120_000);
    let seen = dedupe.first_seen("ttl", &["m1"], 1).await;
    assert_eq!(seen, Ok(vec![true]));
    let dedupe_ttl = ttl_of("tw:rt:dedupe:{3:ttl}:m1");
    assert!(
        (1..=120_000).contains(&dedupe_ttl),
        "dedupe id expires after the window: {dedupe_ttl}"
    );

    let connections = RedisConnectionStateStore::new(a.clone(), PARKED_TTL_MS);
    let mut state = ConnectionState {
        record: ConnectionRecord {
            connection_id: "c1".into(),
            connection_key: "k!c1".into(),
            client_id: None,
            key_name: "app.key".into(),
            connected_ms: 1,
            disconnected_ms: Some(2),
        },
        msg_serial: None,
        node: "n1".into(),
    };
    connections.save(state.clone()).await.expect("save parked");
    let parked_ttl = ttl_of("tw:rt:connection:c1");
    assert!(
        (1..=PARKED_TTL_MS).contains(&parked_ttl),
        "parked state expires: {parked_ttl}"
    );
    assert_eq!(connections.load("c1").await, Ok(Some(state.clone())));
    state.record.disconnected_ms = None;
    connections.save(state.clone()).await.expect("save live");
    assert_eq!(
        ttl_of("tw:rt:connection:c1"),
        -1,
        "live state does not expire"
    );
    assert_eq!(connections.load("c1").await, Ok(Some(state)));
}

/// A node whose subscriber connection the engine drops subscribes again on its
/// own: its handler is told of the gap once (it reads what it missed from
/// history), and publications after that reach it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_subscribes_again_after_its_connection_is_killed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Weak;
    use std::time::Duration;
    use tidewire_realtime::channel::Origin;
    use tidewire_realtime::engine::{BrokerHandler, Payload, Publication};

    #[derive(Default)]
    struct Count(AtomicUsize, AtomicUsize);
    impl BrokerHandler for Count {
        fn on_publication(&self, _: &Publication) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn on_gap(&self, channel: &str) {
            assert_eq!(channel, "room");
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    let redis = tokio::task::spawn_blocking(redis_support::standalone)
        .await
        .expect("redis-server starts");
    let (a, _) = two_nodes(&redis.node.url()).await;
    let broker = RedisBroker::new(a.clone(), Fanout::new(a.clone()), "app");
    let seen = Arc::new(Count::default());
    let weak: Weak<dyn BrokerHandler> = Arc::downgrade(&seen) as Weak<Count>;
    broker.register(weak);
    broker.subscribe("room").await.expect("subscribe");
    let publication = || Publication {
        channel: "room".into(),
        proto_id: "p:0".into(),
        connection_id: None,
        node: "n".into(),
        publisher_conn: None,
        timestamp: tidewire_realtime::auth::now_ms(),
        origin: Origin::Rest,
        retention: Duration::from_secs(60),
        payload: Payload::Messages(vec![Default::default()]),
        positions: Vec::new(),
    };
    broker.publish(publication()).await.expect("publish");
    assert_eq!(
        seen.0.load(Ordering::SeqCst),
        1,
        "delivered before the kill"
    );

    let killed: i64 = redis.node.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, 1, "the fan-out's one subscriber connection");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = seen.0.load(Ordering::SeqCst);
        broker.publish(publication()).await.expect("publish");
        if seen.0.load(Ordering::SeqCst) > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publications reach the node again after its connection was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen.1.load(Ordering::SeqCst),
        1,
        "the handler is told of the gap once"
    );
    let subscribers: Vec<redis::Value> = redis.node.cmd(&[
        "PUBSUB",
        "SHARDNUMSUB",
        "tw:rt:app:3:app:broker:{4:room}:fanout",
    ]);
    assert_eq!(
        subscribers.get(1),
        Some(&redis::Value::Int(1)),
        "subscribed once again, under the documented key"
    );
}

/// Two realtime apps on one engine may name the same channel: positions, history
/// and fan-out stay apart (each app's keys carry its id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_sharing_a_channel_name_stay_apart() {
    use std::sync::Mutex;
    use std::sync::Weak;
    use std::time::Duration;
    use tidewire_realtime::channel::Origin;
    use tidewire_realtime::engine::{BrokerHandler, Payload, Publication};

    #[derive(Default)]
    struct Seen(Mutex<Vec<u64>>);
    impl BrokerHandler for Seen {
        fn on_publication(&self, p: &Publication) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(&p.positions);
        }
    }

    let cluster = RedisCluster::started().await;
    let (c, _) = two_nodes(&cluster.masters[0].url()).await;
    let fanout = Fanout::new(c.clone());
    let one = RedisBroker::new(c.clone(), fanout.clone(), "one");
    let two = RedisBroker::new(c.clone(), fanout, "two");
    let (seen_one, seen_two) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    one.register(Arc::downgrade(&seen_one) as Weak<Seen>);
    two.register(Arc::downgrade(&seen_two) as Weak<Seen>);
    one.subscribe("room").await.expect("subscribe");
    two.subscribe("room").await.expect("subscribe");
    let p = one
        .publish(Publication {
            channel: "room".into(),
            proto_id: "p:0".into(),
            connection_id: None,
            node: "n".into(),
            publisher_conn: None,
            timestamp: tidewire_realtime::auth::now_ms(),
            origin: Origin::Rest,
            retention: Duration::from_secs(60),
            payload: Payload::Messages(vec![Default::default()]),
            positions: Vec::new(),
        })
        .await
        .expect("publish");
    let now = tidewire_realtime::auth::now_ms();
    assert_eq!(one.position("room").await, Ok(p.last_position()));
    assert_eq!(
        two.position("room").await,
        Ok(None),
        "the other app's channel"
    );
    let history = two.since("room", 0, 10, now).await.expect("since");
    assert!(
        history.page.messages.is_empty(),
        "no history in the other app"
    );
    assert_eq!(
        *seen_one.0.lock().unwrap_or_else(|e| e.into_inner()),
        p.positions
    );
    assert!(
        seen_two
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty(),
        "the other app's hub is not handed it"
    );
}

/// A channel whose slot moves to another master (the old owner unsubscribes its
/// shard channel) is subscribed again on the new owner: later publications reach
/// the node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_follows_a_moved_slot() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Weak;
    use std::time::Duration;
    use tidewire_engine::key_slot;
    use tidewire_realtime::channel::Origin;
    use tidewire_realtime::engine::{BrokerHandler, Payload, Publication};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl BrokerHandler for Count {
        fn on_publication(&self, _: &Publication) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    let cluster = RedisCluster::started().await;
    let (c, _) = two_nodes(&cluster.masters[0].url()).await;
    let broker = RedisBroker::new(c.clone(), Fanout::new(c.clone()), "app");
    let seen = Arc::new(Count::default());
    broker.register(Arc::downgrade(&seen) as Weak<Count>);
    broker.subscribe("moving").await.expect("subscribe");
    let publication = || Publication {
        channel: "moving".into(),
        proto_id: "p:0".into(),
        connection_id: None,
        node: "n".into(),
        publisher_conn: None,
        timestamp: tidewire_realtime::auth::now_ms(),
        origin: Origin::Rest,
        retention: Duration::from_secs(60),
        payload: Payload::Messages(vec![Default::default()]),
        positions: Vec::new(),
    };
    let first = broker.publish(publication()).await.expect("publish");
    assert_eq!(
        seen.0.load(Ordering::SeqCst),
        1,
        "delivered before the move"
    );

    let shard = "tw:rt:app:3:app:broker:{6:moving}:fanout";
    let slot = key_slot(shard.as_bytes());
    let source = cluster.owner_of(slot);
    let target = cluster
        .masters
        .iter()
        .find(|m| m.port != source.port)
        .expect("another master");
    let slot_text = slot.to_string();
    target.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source.id()]);
    source.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target.id()]);
    let moving: Vec<String> = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
    assert_eq!(moving.len(), 2, "the channel's position and history");
    let port = target.port.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(moving.iter().map(String::as_str));
    source.cmd::<()>(&migrate);
    for m in &cluster.masters {
        m.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target.id()]);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = first.last_position().unwrap_or(0);
    loop {
        let before = seen.0.load(Ordering::SeqCst);
        let p = broker.publish(publication()).await.expect("publish");
        assert!(p.positions[0] > last, "positions continue on the new owner");
        last = p.positions[0];
        if seen.0.load(Ordering::SeqCst) > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publications reach the node again after the slot moved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_target: Vec<redis::Value> = target.cmd(&["PUBSUB", "SHARDNUMSUB", shard]);
    assert_eq!(on_target.get(1), Some(&redis::Value::Int(1)));
}
