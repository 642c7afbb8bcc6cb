//! `GET /metrics`: Prometheus text exposition (via `prometheus-client`).
//!
//! Most figures are read at scrape time from what the store already counts (command
//! table statistics, client registry, keyspace, pub/sub, allocator) and so need no
//! bookkeeping on the hot path. Two are recorded as they happen: REST responses by
//! status, and command latency per command family (`latency.rs`, fed by the store's
//! latency observer, installed once per process).

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidewire_store::command::registry;
use tidewire_store::keyspace::NUM_DBS;
use tidewire_store::pubsub::Kind;
use tidewire_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CmdLabel {
    cmd: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabel {
    door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabel {
    db: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What is recorded as it happens (process-wide, like the command table).
struct Live {
    rest_requests: Family<StatusLabel, Counter>,
    qstash_attempts: Family<OutcomeLabel, Counter>,
}

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| Live {
        rest_requests: Family::default(),
        qstash_attempts: Family::default(),
    })
}

/// Counts one QStash delivery attempt: `delivered`, `retrying` (failed, to be
/// tried again) or `dead_lettered` (failed for the last time).
pub fn qstash_attempt(outcome: &'static str) {
    live()
        .qstash_attempts
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

/// Starts feeding the latency histogram from every command the store runs.
pub fn install() {
    let _ = tidewire_store::exec::LATENCY_OBSERVER.set(crate::latency::observe);
}

/// REST responses of every status, for the dashboard's per-second figure.
static REST_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// REST responses since start, all statuses together.
pub fn rest_requests_total() -> u64 {
    REST_TOTAL.load(Ordering::Relaxed)
}

/// Counts one REST response.
pub fn rest_request(status: u16) {
    REST_TOTAL.fetch_add(1, Ordering::Relaxed);
    live()
        .rest_requests
        .get_or_create(&StatusLabel { status })
        .inc();
}

/// Reads one figure of an app's realtime metrics.
type Figure = fn(&tidewire_realtime::hub::HubMetrics) -> u64;

/// The exposition text for one scrape; `hubs` are the realtime apps.
pub fn render(store: &Store, hubs: &[std::sync::Arc<tidewire_realtime::Hub>]) -> String {
    let mut reg = Registry::with_prefix("tidewire");
    let l = live();
    reg.register(
        "rest_requests",
        "Upstash REST responses by HTTP status",
        l.rest_requests.clone(),
    );
    reg.register(
        "qstash_delivery_attempts",
        "QStash delivery attempts by outcome (delivered, retrying, dead_lettered)",
        l.qstash_attempts.clone(),
    );

    let processed = Family::<CmdLabel, Counter>::default();
    let failed = Family::<CmdLabel, Counter>::default();
    for c in registry().all() {
        let calls = c.stats.calls.get();
        if calls > 0 {
            let label = CmdLabel {
                cmd: c.full_name.clone(),
            };
            processed.get_or_create(&label).inc_by(calls);
            let f = c.stats.failed_calls.load(Ordering::Relaxed)
                + c.stats.rejected_calls.load(Ordering::Relaxed);
            if f > 0 {
                failed.get_or_create(&label).inc_by(f);
            }
        }
    }
    reg.register("commands_processed", "Commands run, by command", processed);
    reg.register(
        "commands_failed",
        "Commands that failed or were rejected, by command",
        failed,
    );

    let clients = Family::<DoorLabel, Gauge>::default();
    for door in ["resp", "http"] {
        clients
            .get_or_create(&DoorLabel { door })
            .set(store.connected_clients(door) as i64);
    }
    reg.register(
        "connected_clients",
        "Connected clients by front door (http: requests and SSE streams in flight)",
        clients,
    );

    let keys = Family::<DbLabel, Gauge>::default();
    let expiring = Family::<DbLabel, Gauge>::default();
    {
        let mut ks = store.keyspace.lock_all();
        for db in 0..NUM_DBS {
            let (mut n, mut e) = (0usize, 0usize);
            for part in ks.db_parts(db) {
                n += part.map.len();
                e += part.expires.len();
            }
            if n > 0 || db == 0 {
                let label = DbLabel { db: db.to_string() };
                keys.get_or_create(&label).set(n as i64);
                expiring.get_or_create(&label).set(e as i64);
            }
        }
    }
    reg.register("keyspace_keys", "Keys by database", keys);
    reg.register(
        "keyspace_expiring_keys",
        "Keys with a TTL by database",
        expiring,
    );

    let (_, _, expired) = store.keyspace_counters();
    let expired_c = Counter::<u64>::default();
    expired_c.inc_by(expired);
    reg.register(
        "expired_keys",
        "Keys removed because their TTL passed",
        expired_c,
    );
    let evicted = Counter::<u64>::default();
    evicted.inc_by(store.stats.evicted_keys.load(Ordering::Relaxed));
    reg.register("evicted_keys", "Keys evicted under maxmemory", evicted);

    let (allocated, resident) = tidewire_store::families::server_info::MEMORY_PROBE
        .get()
        .map_or((0, 0), |f| f());
    let g = Gauge::<i64>::default();
    g.set(allocated as i64);
    reg.register("memory_allocated_bytes", "Bytes allocated (jemalloc)", g);
    let g = Gauge::<i64>::default();
    g.set(resident as i64);
    reg.register("memory_resident_bytes", "Resident bytes (jemalloc)", g);

    let g = Gauge::<i64>::default();
    g.set(store.pubsub.len(Kind::Channel) as i64);
    reg.register("pubsub_channels", "Channels with subscribers", g);
    let g = Gauge::<i64>::default();
    g.set(store.pubsub.len(Kind::Pattern) as i64);
    reg.register("pubsub_patterns", "Patterns with subscribers", g);

    let gauges: [(&str, &str, Figure); 3] = [
        (
            "realtime_connections",
            "Realtime connections, by app",
            |m| m.connections,
        ),
        ("realtime_channels", "Live realtime channels, by app", |m| {
            m.channels
        }),
        (
            "realtime_presence_members",
            "Presence members over all channels, by app",
            |m| m.presence_members,
        ),
    ];
    let counters: [(&str, &str, Figure); 2] = [
        (
            "realtime_messages_in",
            "Messages published (REST, WebSocket, Redis bridge), by app",
            |m| m.messages_in,
        ),
        (
            "realtime_messages_out",
            "Messages delivered to subscribers (one per receiving attachment), by app",
            |m| m.messages_out,
        ),
    ];
    let primitives = Family::<DecisionLabel, Counter>::default();
    for (name, value) in store.stats.primitives.fields() {
        let label = DecisionLabel {
            decision: name.trim_start_matches("tw_").to_string(),
        };
        primitives.get_or_create(&label).inc_by(value);
    }
    reg.register(
        "primitive_decisions",
        "Native primitives' decisions (throttle allowed/limited, idempotency new/inflight/replayed, lock acquired/busy, fill hit/granted/waited)",
        primitives,
    );

    let figures: Vec<(String, tidewire_realtime::hub::HubMetrics)> =
        hubs.iter().map(|h| (h.app_id(), h.metrics())).collect();
    for (name, help, get) in gauges {
        let family = Family::<AppLabel, Gauge>::default();
        for (app, m) in &figures {
            family
                .get_or_create(&AppLabel { app: app.clone() })
                .set(get(m) as i64);
        }
        reg.register(name, help, family);
    }
    for (name, help, get) in counters {
        let family = Family::<AppLabel, Counter>::default();
        for (app, m) in &figures {
            family
                .get_or_create(&AppLabel { app: app.clone() })
                .inc_by(get(m));
        }
        reg.register(name, help, family);
    }

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    // The latency histogram is kept outside the registry (lock-free); it goes before
    // the OpenMetrics terminator.
    let mut latency = String::new();
    crate::latency::render(&mut latency);
    match out.rfind("# EOF") {
        Some(at) => out.insert_str(at, &latency),
        None => out.push_str(&latency),
    }
    out
}
