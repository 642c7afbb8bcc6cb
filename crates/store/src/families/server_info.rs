//! INFO's text, section by section, with Redis's field names (clients such as
//! ioredis and BullMQ parse `redis_version`, `loading`, `maxmemory_policy`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::command::registry;
use crate::keyspace::{Locked, NUM_DBS};
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
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
];
/// Sections that `all` does not include but can be asked for by name.
/// Given only when asked for by name (or `everything`), as in Redis.
const EXTRA: &[&str] = &["keysizes", "debug"];

/// Memory figures come from the binary (it owns the allocator); the store only asks.
pub static MEMORY_PROBE: std::sync::OnceLock<fn() -> (u64, u64)> = std::sync::OnceLock::new();
/// Bytes in use, exact and cheap enough to read before every command (the binary's
/// counting allocator): what eviction compares with `maxmemory`.
pub static ALLOCATED: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Keys with a TTL looked at per shard part to estimate `avg_ttl`.
const TTL_SAMPLE: usize = 16;

/// Redis's `bytesToHuman`: `512B`, `31.00K`, `1.50M`, ...
fn bytes_to_human(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "P"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    match UNITS.iter().find(|(u, _)| n >= *u) {
        Some((u, suffix)) => format!("{:.2}{suffix}", n as f64 / *u as f64),
        None => format!("{n}B"),
    }
}

/// INFO memory's scripting lines, in Redis 7.2's order: EVAL's Lua state and
/// script cache, then the functions' Lua state and library code.
fn scripting_memory(store: &Store) -> String {
    let lua = store.scripts.lua_memory() as u64;
    let bodies = store.scripts.body_bytes();
    let vm_functions = store.functions.lua_memory() as u64;
    let (libraries, functions) = store.functions.counts();
    let code = store.functions.code_bytes() as u64;
    let vm_total = lua + vm_functions;
    let scripts = bodies + code;
    format!(
        "used_memory_lua:{lua}\r\nused_memory_vm_eval:{lua}\r\nused_memory_lua_human:{}\r\nused_memory_scripts_eval:{bodies}\r\nnumber_of_cached_scripts:{}\r\nnumber_of_functions:{functions}\r\nnumber_of_libraries:{libraries}\r\nused_memory_vm_functions:{vm_functions}\r\nused_memory_vm_total:{vm_total}\r\nused_memory_vm_total_human:{}\r\nused_memory_functions:{code}\r\nused_memory_scripts:{scripts}\r\nused_memory_scripts_human:{}\r\n",
        bytes_to_human(lua),
        store.scripts.len(),
        bytes_to_human(vm_total),
        bytes_to_human(scripts),
    )
}

/// Commands per second over the last sampling window (Redis samples every 100 ms
/// over 1.6 s; one window of at least a second is close enough for a gauge).
fn ops_per_sec(calls: u64) -> u64 {
    use std::sync::Mutex;
    static LAST: Mutex<Option<(std::time::Instant, u64, u64)>> = Mutex::new(None);
    let now = std::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match *last {
        Some((t, _, rate)) if now.duration_since(t).as_secs_f64() < 1.0 => rate,
        Some((t, c, _)) => {
            let rate =
                (calls.saturating_sub(c) as f64 / now.duration_since(t).as_secs_f64()) as u64;
            *last = Some((now, calls, rate));
            rate
        }
        None => {
            *last = Some((now, calls, 0));
            0
        }
    }
}

/// `latency_percentiles_usec_<command>:p50=…,p99=…` for each command that ran
/// since start or CONFIG RESETSTAT, at the percentiles of
/// `latency-tracking-info-percentiles`, in microseconds with three decimals.
fn latency_percentiles(store: &Store, o: &mut String) {
    let percentiles: Vec<(String, f64)> = store
        .config
        .get("latency-tracking-info-percentiles")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| Some((p.to_string(), p.parse().ok()?)))
        .collect();
    for (name, counts) in crate::families::latency::histograms(registry().all()) {
        let values: Vec<String> = percentiles
            .iter()
            .map(|(label, p)| {
                let usec = counts.at_percentile(*p) as f64 / 1000.0;
                format!("p{label}={usec:.3}")
            })
            .collect();
        let _ = write!(
            o,
            "latency_percentiles_usec_{name}:{}\r\n",
            values.join(",")
        );
    }
}

/// `ks`: the command's own all-shards lock (INFO is `ALL_KEYS`), through which the
/// keyspace is read, so that INFO inside a script or MULTI does not lock it again.
pub fn render(store: &Store, requested: &[String], ks: &mut Locked) -> String {
    let mut sections: Vec<&str> = Vec::new();
    let add = |s: &'static str, v: &mut Vec<&str>| {
        if !v.contains(&s) {
            v.push(s);
        }
    };
    if requested.is_empty() {
        for s in DEFAULT {
            add(s, &mut sections);
        }
    }
    for r in requested {
        match r.as_str() {
            "all" => ALL.iter().for_each(|s| add(s, &mut sections)),
            "everything" => ALL.iter().chain(EXTRA).for_each(|s| add(s, &mut sections)),
            "default" => DEFAULT.iter().for_each(|s| add(s, &mut sections)),
            s => {
                if let Some(known) = ALL.iter().chain(EXTRA).find(|k| **k == s) {
                    add(known, &mut sections);
                }
            }
        }
    }
    // Sections keep Redis's order whatever order they were asked in.
    let order: Vec<&str> = ALL.iter().chain(EXTRA).copied().collect();
    sections.sort_by_key(|s| order.iter().position(|o| o == s));
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        section(store, s, &mut out, ks);
    }
    out
}

/// Process CPU times (user, system) in seconds, from /proc on Linux.
fn cpu_times() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0;
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (get(11), get(12))
}

fn section(store: &Store, name: &str, o: &mut String, ks: &mut Locked) {
    let uptime = store.started.elapsed().as_secs();
    match name {
        "server" => {
            let _ = write!(
                o,
                "# Server\r\nredis_version:{}\r\ntidewire_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmonotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:epoll\r\natomicvar_api:c11-builtin\r\ngcc_version:0.0.0\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nlru_clock:{}\r\nexecutable:tidewire\r\nconfig_file:\r\nio_threads_active:0\r\nlistener0:name=tcp,bind={},port={}\r\n",
                super::REDIS_VERSION,
                super::TIDEWIRE_VERSION,
                std::env::consts::OS,
                std::process::id(),
                store.run_id,
                store.config.get("port").unwrap_or_default(),
                crate::clock::now_us(),
                uptime,
                uptime / 86400,
                crate::clock::lru_clock(),
                store.config.get("bind").unwrap_or_default(),
                store.config.get("port").unwrap_or_default(),
            );
        }
        "clients" => {
            let clients = store.clients();
            let pubsub = clients
                .iter()
                .filter(|c| {
                    c.subscriptions.load(Ordering::Relaxed)
                        + c.psubscriptions.load(Ordering::Relaxed)
                        + c.ssubscriptions.load(Ordering::Relaxed)
                        > 0
                })
                .count();
            let (blocking_keys, blocking_nokey) = store.blocking.key_counts();
            let _ = write!(
                o,
                "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{}\r\ntracking_clients:{}\r\npubsub_clients:{}\r\nclients_in_timeout_table:{}\r\ntotal_blocking_keys:{}\r\ntotal_blocking_keys_on_nokey:{}\r\n",
                store.connected_clients("resp"),
                store.config.get_u64("maxclients"),
                store.blocking.blocked_clients(),
                store.tracking.clients(),
                pubsub,
                store.blocking.blocked_clients(),
                blocking_keys,
                blocking_nokey,
            );
        }
        "memory" => {
            let (used, rss) = crate::evict::memory_in(ks);
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
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{:.2}M\r\nused_memory_peak:{peak}\r\n{}maxmemory:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{frag:.2}\r\nmem_allocator:jemalloc\r\nmem_not_counted_for_evict:0\r\nlazyfree_pending_objects:0\r\nevicted_keys:{}\r\n",
                used as f64 / 1048576.0,
                rss as f64 / 1048576.0,
                scripting_memory(store),
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
            let (hits, misses, expired_lazy) = crate::keyspace_counters_in(ks);
            let calls: u64 = registry().all().map(|c| c.stats.calls.get()).sum();
            let st = &store.stats;
            let (tracked_keys, tracked_items) = store.tracking.table_size();
            let _ = write!(
                o,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\ninstantaneous_input_kbps:0.00\r\ninstantaneous_output_kbps:0.00\r\nrejected_connections:{}\r\nsync_full:0\r\nsync_partial_ok:0\r\nsync_partial_err:0\r\nexpired_keys:{}\r\nexpired_subkeys:{}\r\nexpired_stale_perc:0.00\r\nexpired_time_cap_reached_count:0\r\nexpire_cycle_cpu_milliseconds:0\r\nevicted_keys:{}\r\nevicted_clients:0\r\ntotal_eviction_exceeded_time:0\r\ncurrent_eviction_exceeded_time:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\npubsubshard_channels:{}\r\nlatest_fork_usec:0\r\ntotal_forks:0\r\nmigrate_cached_sockets:0\r\nslave_expires_tracked_keys:0\r\nactive_defrag_hits:0\r\nactive_defrag_misses:0\r\nactive_defrag_key_hits:0\r\nactive_defrag_key_misses:0\r\ntotal_active_defrag_time:0\r\ncurrent_active_defrag_time:0\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\nunexpected_error_replies:{}\r\ntotal_error_replies:{}\r\ndump_payload_sanitizations:0\r\ntotal_reads_processed:{}\r\ntotal_writes_processed:{}\r\nio_threaded_reads_processed:0\r\nio_threaded_writes_processed:0\r\nreply_buffer_shrinks:0\r\nreply_buffer_expands:0\r\n{}acl_access_denied_auth:{}\r\nacl_access_denied_cmd:{}\r\nacl_access_denied_key:{}\r\nacl_access_denied_channel:{}\r\nbusy_polls:{}\r\n",
                st.total_connections_received.load(Ordering::Relaxed),
                calls,
                ops_per_sec(calls),
                st.total_net_input_bytes.get(),
                st.total_net_output_bytes.get(),
                st.rejected_connections.load(Ordering::Relaxed),
                expired_lazy + st.expired_keys_active.load(Ordering::Relaxed),
                st.expired_subkeys.load(Ordering::Relaxed),
                st.evicted_keys.load(Ordering::Relaxed),
                hits,
                misses,
                store.pubsub.len(crate::pubsub::Kind::Channel),
                store.pubsub.len(crate::pubsub::Kind::Pattern),
                store.pubsub.len(crate::pubsub::Kind::Shard),
                tracked_keys,
                tracked_items,
                store.tracking.prefix_count(),
                st.unexpected_error_replies.load(Ordering::Relaxed),
                st.total_error_replies.load(Ordering::Relaxed),
                st.total_reads_processed.get(),
                st.total_writes_processed.get(),
                crate::event_loop::EVENT_LOOP
                    .stats_lines(registry().all().map(|c| c.stats.usec.get()).sum()),
                store.acl.denied(crate::acl::Denial::Auth),
                store.acl.denied(crate::acl::Denial::Command),
                store.acl.denied(crate::acl::Denial::Key),
                store.acl.denied(crate::acl::Denial::Channel),
                st.busy_polls.load(Ordering::Relaxed)
            );
            for (name, value) in st.primitives.fields() {
                let _ = write!(o, "{name}:{value}\r\n");
            }
        }
        "replication" => {
            o.push_str(
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n",
            );
        }
        "cpu" => {
            let (user, sys) = cpu_times();
            let _ = write!(
                o,
                "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\nused_cpu_sys_main_thread:{sys:.6}\r\nused_cpu_user_main_thread:{user:.6}\r\n"
            );
        }
        "modules" => o.push_str("# Modules\r\n"),
        "debug" => {
            o.push_str("# Debug\r\n");
            o.push_str(&crate::event_loop::EVENT_LOOP.debug_lines());
        }
        "cluster" => o.push_str("# Cluster\r\ncluster_enabled:0\r\n"),
        "latencystats" => {
            o.push_str("# Latencystats\r\n");
            if store.config.latency_tracking.load(Ordering::Relaxed) {
                latency_percentiles(store, o);
            }
        }
        "keysizes" => o.push_str("# Keysizes\r\n"),
        "commandstats" => {
            o.push_str("# Commandstats\r\n");
            // (calls, usec, rejected, failed) per line, by name.
            let mut rows: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
            for c in registry().all() {
                let s = &c.stats;
                let counts = [
                    s.calls.get(),
                    s.usec.get(),
                    s.rejected_calls.load(Ordering::Relaxed),
                    s.failed_calls.load(Ordering::Relaxed),
                ];
                if counts[0] + counts[2] == 0 {
                    continue;
                }
                let row = rows
                    .entry(registry().stats_owner(c).full_name.as_str())
                    .or_default();
                for (sum, n) in row.iter_mut().zip(counts) {
                    *sum += n;
                }
            }
            for (name, [calls, usec, rejected, failed]) in rows {
                let _ = write!(
                    o,
                    "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={:.2},rejected_calls={rejected},failed_calls={failed}\r\n",
                    if calls > 0 { usec as f64 / calls as f64 } else { 0.0 },
                );
            }
        }
        "errorstats" => {
            o.push_str("# Errorstats\r\n");
            for (code, n) in store.stats.error_codes.lock().iter() {
                let _ = write!(o, "errorstat_{code}:count={n}\r\n");
            }
        }
        "keyspace" => {
            o.push_str("# Keyspace\r\n");
            let now = crate::clock::now_ms();
            for db in 0..NUM_DBS {
                let (mut keys, mut expires) = (0, 0);
                // avg_ttl from a bounded sample of each part's keys with a TTL.
                let (mut ttl_sum, mut ttl_n) = (0u64, 0u64);
                for part in ks.db_parts(db) {
                    keys += part.map.len();
                    expires += part.expires.len();
                    for k in part.expires.keys().take(TTL_SAMPLE) {
                        if let Some(e) = part.map.get(k) {
                            if e.expire_at > now {
                                ttl_sum += e.expire_at - now;
                                ttl_n += 1;
                            }
                        }
                    }
                }
                if keys > 0 {
                    let avg = ttl_sum.checked_div(ttl_n).unwrap_or(0);
                    let _ = write!(o, "db{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n");
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_to_human;

    /// INFO and MEMORY STATS read the keyspace through the command's own lock, so
    /// inside a script or a MULTI holding a key's shard they do not lock it again
    /// and wait for themselves (they once hung the whole server there).
    #[test]
    fn info_and_memory_stats_inside_scripts_and_multi_do_not_hang() {
        use crate::testkit::*;
        use std::time::Duration;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut t = TestClient::new();
            t.run(&["SET", "a", "1"]);
            let script = "return {redis.call('INFO'), redis.call('MEMORY', 'STATS')}";
            let r = t.run(&["EVAL", script, "1", "a"]);
            assert!(
                matches!(r, tidewire_resp::Reply::Array(ref v) if v.len() == 2),
                "{r:?}"
            );
            t.run(&["MULTI"]);
            t.run(&["SET", "a", "2"]);
            t.run(&["INFO", "stats"]);
            t.run(&["INFO", "keyspace"]);
            t.run(&["MEMORY", "STATS"]);
            let r = t.run(&["EXEC"]);
            assert!(
                matches!(r, tidewire_resp::Reply::Array(ref v) if v.len() == 4),
                "{r:?}"
            );
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("INFO or MEMORY STATS hung inside a script or MULTI");
    }

    #[test]
    fn bytes_to_human_matches_redis() {
        assert_eq!(bytes_to_human(0), "0B");
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(31744), "31.00K");
        assert_eq!(bytes_to_human(3 << 19), "1.50M");
        assert_eq!(bytes_to_human(1 << 30), "1.00G");
    }
}
