//! INFO's text, section by section, with Redis's field names (clients such as
//! ioredis and BullMQ parse `redis_version`, `loading`, `maxmemory_policy`).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::command::registry;
use crate::keyspace::NUM_DBS;
use crate::Store;

const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "keyspace",
];
const ALL: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "errorstats",
    "keyspace",
];

/// Memory figures come from the binary (it owns the allocator); the store only asks.
pub static MEMORY_PROBE: std::sync::OnceLock<fn() -> (u64, u64)> = std::sync::OnceLock::new();

pub fn render(store: &Store, requested: &[String]) -> String {
    let mut sections: Vec<&str> = Vec::new();
    if requested.is_empty() {
        sections.extend(DEFAULT);
    }
    for r in requested {
        match r.as_str() {
            "all" | "everything" => sections.extend(ALL),
            "default" => sections.extend(DEFAULT),
            s => {
                if let Some(known) = ALL.iter().find(|k| **k == s) {
                    sections.push(known);
                }
            }
        }
    }
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        section(store, s, &mut out);
    }
    out
}

fn section(store: &Store, name: &str, o: &mut String) {
    let uptime = store.started.elapsed().as_secs();
    match name {
        "server" => {
            let _ = write!(
                o,
                "# Server\r\nredis_version:{}\r\ntidewire_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:10\r\nexecutable:tidewire\r\n",
                super::REDIS_VERSION,
                super::TIDEWIRE_VERSION,
                std::env::consts::OS,
                std::process::id(),
                store.run_id,
                store.config.get("port").unwrap_or_default(),
                crate::clock::now_us(),
                uptime,
                uptime / 86400
            );
        }
        "clients" => {
            let _ = write!(
                o,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\npubsub_clients:{}\r\n",
                store.connected_clients("resp"),
                store.config.get_u64("maxclients"),
                store.blocking.blocked_clients(),
                store
                    .clients()
                    .iter()
                    .filter(|c| c.subscriptions.load(Ordering::Relaxed) + c.psubscriptions.load(Ordering::Relaxed) + c.ssubscriptions.load(Ordering::Relaxed) > 0)
                    .count()
            );
        }
        "memory" => {
            let (used, rss) = crate::evict::memory(store);
            let peak = store
                .persist
                .peak_memory
                .fetch_max(used, Ordering::Relaxed)
                .max(used);
            let frag = if used > 0 {
                rss as f64 / used as f64
            } else {
                1.0
            };
            let _ = write!(
                o,
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nused_memory_peak:{peak}\r\nmaxmemory:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{frag:.2}\r\nmem_allocator:jemalloc\r\nevicted_keys:{}\r\n",
                used as f64 / 1048576.0,
                store.config.get_u64("maxmemory"),
                store.config.get("maxmemory-policy").unwrap_or_default(),
                store.stats.evicted_keys.load(Ordering::Relaxed)
            );
        }
        "persistence" => {
            o.push_str("# Persistence\r\n");
            crate::persistence::info(store, o);
        }
        "stats" => {
            let (hits, misses, expired_lazy) = store.keyspace_counters();
            let calls: u64 = registry()
                .all()
                .map(|c| c.stats.calls.load(Ordering::Relaxed))
                .sum();
            let _ = write!(
                o,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\npubsubshard_channels:{}\r\ntotal_error_replies:{}\r\n",
                store.stats.total_connections_received.load(Ordering::Relaxed),
                calls,
                store.stats.rejected_connections.load(Ordering::Relaxed),
                expired_lazy,
                store.stats.evicted_keys.load(Ordering::Relaxed),
                hits,
                misses,
                store.pubsub.len(crate::pubsub::Kind::Channel),
                store.pubsub.len(crate::pubsub::Kind::Pattern),
                store.pubsub.len(crate::pubsub::Kind::Shard),
                store.stats.total_error_replies.load(Ordering::Relaxed)
            );
        }
        "replication" => {
            o.push_str(
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n",
            );
        }
        "cpu" => {
            o.push_str("# CPU\r\n");
        }
        "commandstats" => {
            o.push_str("# Commandstats\r\n");
            let mut cmds: Vec<_> = registry()
                .all()
                .filter(|c| {
                    c.stats.calls.load(Ordering::Relaxed)
                        + c.stats.rejected_calls.load(Ordering::Relaxed)
                        > 0
                })
                .collect();
            cmds.sort_by(|a, b| a.full_name.cmp(&b.full_name));
            for c in cmds {
                let calls = c.stats.calls.load(Ordering::Relaxed);
                let usec = c.stats.usec.load(Ordering::Relaxed);
                let _ = write!(
                    o,
                    "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls={},failed_calls={}\r\n",
                    c.full_name,
                    calls,
                    usec,
                    if calls > 0 { usec as f64 / calls as f64 } else { 0.0 },
                    c.stats.rejected_calls.load(Ordering::Relaxed),
                    c.stats.failed_calls.load(Ordering::Relaxed)
                );
            }
        }
        "errorstats" => {
            o.push_str("# Errorstats\r\n");
        }
        "keyspace" => {
            o.push_str("# Keyspace\r\n");
            let mut ks = store.keyspace.lock_all_readonly();
            for db in 0..NUM_DBS {
                let (mut keys, mut expires) = (0, 0);
                for part in ks.db_parts(db) {
                    keys += part.map.len();
                    expires += part.expires.len();
                }
                if keys > 0 {
                    let _ = write!(o, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
                }
            }
        }
        _ => {}
    }
}
