//! Runtime configuration: every parameter CONFIG GET/SET knows, with Redis's names and
//! defaults. Parameters that only tune Redis's internal encodings are accepted and
//! stored (Redis's own test suite sets them) even where Tidewire's representation does
//! not depend on them. The few read on hot paths are mirrored in atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::error::CmdError;
use crate::glob::glob_match;

/// Keyspace notification classes (`notify-keyspace-events`).
pub mod notify {
    pub const KEYSPACE: u32 = 1 << 0;
    pub const KEYEVENT: u32 = 1 << 1;
    pub const GENERIC: u32 = 1 << 2;
    pub const STRING: u32 = 1 << 3;
    pub const LIST: u32 = 1 << 4;
    pub const SET: u32 = 1 << 5;
    pub const HASH: u32 = 1 << 6;
    pub const ZSET: u32 = 1 << 7;
    pub const EXPIRED: u32 = 1 << 8;
    pub const EVICTED: u32 = 1 << 9;
    pub const STREAM: u32 = 1 << 10;
    pub const KEY_MISS: u32 = 1 << 11;
    pub const MODULE: u32 = 1 << 12;
    pub const NEW: u32 = 1 << 13;
    pub const ALL: u32 =
        GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

    pub fn parse(s: &str) -> Option<u32> {
        let mut flags = 0;
        for c in s.chars() {
            flags |= match c {
                'A' => ALL,
                'g' => GENERIC,
                '$' => STRING,
                'l' => LIST,
                's' => SET,
                'h' => HASH,
                'z' => ZSET,
                'x' => EXPIRED,
                'e' => EVICTED,
                'K' => KEYSPACE,
                'E' => KEYEVENT,
                't' => STREAM,
                'm' => KEY_MISS,
                'd' => MODULE,
                'n' => NEW,
                _ => return None,
            };
        }
        Some(flags)
    }

    pub fn to_string(flags: u32) -> String {
        let mut s = String::new();
        if flags & ALL == ALL {
            s.push('A');
        } else {
            for (f, c) in [
                (GENERIC, 'g'),
                (STRING, '$'),
                (LIST, 'l'),
                (SET, 's'),
                (HASH, 'h'),
                (ZSET, 'z'),
                (EXPIRED, 'x'),
                (EVICTED, 'e'),
                (STREAM, 't'),
                (MODULE, 'd'),
            ] {
                if flags & f != 0 {
                    s.push(c);
                }
            }
        }
        for (f, c) in [
            (KEYSPACE, 'K'),
            (KEYEVENT, 'E'),
            (KEY_MISS, 'm'),
            (NEW, 'n'),
        ] {
            if flags & f != 0 {
                s.push(c);
            }
        }
        s
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Memory,
    Bool,
    Enum(&'static [&'static str]),
    Special,
    /// A memory value or a percentage (`maxmemory-clients`).
    MemoryOrPercent,
    /// Percentiles between 0 and 100, kept in Redis's shortest form
    /// (`latency-tracking-info-percentiles "50.0 99.0"` reads back `50 99`).
    Percentiles,
}

const YES_NO: Kind = Kind::Bool;

/// (name, default, kind). Aliases (the `ziplist` names) are entries of their own kept
/// equal to their `listpack` partner (see [`ALIASES`]).
const PARAMS: &[(&str, &str, Kind)] = &[
    ("requirepass", "", Kind::Str),
    // ACL users file (ACL SAVE / ACL LOAD; loaded at start when set).
    ("aclfile", "", Kind::Str),
    ("acllog-max-len", "128", Kind::Int),
    (
        "acl-pubsub-default",
        "resetchannels",
        Kind::Enum(&["allchannels", "resetchannels"]),
    ),
    ("bind", "127.0.0.1", Kind::Str),
    ("port", "6379", Kind::Int),
    ("dir", "./data", Kind::Str),
    ("dbfilename", "dump.tw", Kind::Str),
    ("appendonly", "no", YES_NO),
    // TLS (rustls): the RESP port's and the HTTPS port's certificate, read again when
    // a file or setting changes. `tls-port` / `https-port` are bound at start only.
    ("tls-port", "0", Kind::Int),
    ("https-port", "0", Kind::Int),
    ("tls-cert-file", "", Kind::Str),
    ("tls-key-file", "", Kind::Str),
    ("tls-ca-cert-file", "", Kind::Str),
    (
        "tls-auth-clients",
        "yes",
        Kind::Enum(&["yes", "no", "optional"]),
    ),
    ("tls-protocols", "", Kind::Str),
    ("appendfilename", "appendonly.aof", Kind::Str),
    ("appenddirname", "appendonlydir", Kind::Str),
    (
        "appendfsync",
        "everysec",
        Kind::Enum(&["always", "everysec", "no"]),
    ),
    ("auto-aof-rewrite-percentage", "100", Kind::Int),
    ("auto-aof-rewrite-min-size", "67108864", Kind::Memory),
    ("aof-load-truncated", "yes", YES_NO),
    ("aof-use-rdb-preamble", "yes", YES_NO),
    ("aof-timestamp-enabled", "no", YES_NO),
    ("no-appendfsync-on-rewrite", "no", YES_NO),
    ("save", "3600 1 300 100 60 10000", Kind::Str),
    ("stop-writes-on-bgsave-error", "yes", YES_NO),
    ("rdbcompression", "yes", YES_NO),
    ("rdbchecksum", "yes", YES_NO),
    ("maxmemory", "0", Kind::Memory),
    (
        "maxmemory-policy",
        "noeviction",
        Kind::Enum(&[
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "noeviction",
        ]),
    ),
    ("maxmemory-samples", "5", Kind::Int),
    ("maxmemory-eviction-tenacity", "10", Kind::Int),
    ("lfu-log-factor", "10", Kind::Int),
    ("lfu-decay-time", "1", Kind::Int),
    ("notify-keyspace-events", "", Kind::Special),
    ("hash-max-listpack-entries", "128", Kind::Int),
    ("hash-max-listpack-value", "64", Kind::Memory),
    ("hash-max-ziplist-entries", "128", Kind::Int),
    ("hash-max-ziplist-value", "64", Kind::Memory),
    ("set-max-intset-entries", "512", Kind::Int),
    ("set-max-listpack-entries", "128", Kind::Int),
    ("set-max-listpack-value", "64", Kind::Memory),
    ("zset-max-listpack-entries", "128", Kind::Int),
    ("zset-max-listpack-value", "64", Kind::Memory),
    ("zset-max-ziplist-entries", "128", Kind::Int),
    ("zset-max-ziplist-value", "64", Kind::Memory),
    ("list-max-listpack-size", "-2", Kind::Int),
    ("list-max-ziplist-size", "-2", Kind::Int),
    ("list-compress-depth", "0", Kind::Int),
    ("stream-node-max-bytes", "4096", Kind::Memory),
    ("stream-node-max-entries", "100", Kind::Int),
    ("hll-sparse-max-bytes", "3000", Kind::Memory),
    ("proto-max-bulk-len", "536870912", Kind::Memory),
    ("client-query-buffer-limit", "1073741824", Kind::Memory),
    (
        "client-output-buffer-limit",
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        Kind::Str,
    ),
    ("lua-time-limit", "5000", Kind::Int),
    ("busy-reply-threshold", "5000", Kind::Int),
    ("hz", "10", Kind::Int),
    ("dynamic-hz", "yes", YES_NO),
    ("timeout", "0", Kind::Int),
    ("tcp-keepalive", "300", Kind::Int),
    ("databases", "16", Kind::Int),
    ("maxclients", "10000", Kind::Int),
    ("slowlog-log-slower-than", "10000", Kind::Int),
    ("slowlog-max-len", "128", Kind::Int),
    ("latency-monitor-threshold", "0", Kind::Int),
    ("latency-tracking", "yes", YES_NO),
    ("activerehashing", "yes", YES_NO),
    ("active-expire-effort", "1", Kind::Int),
    ("lazyfree-lazy-eviction", "no", YES_NO),
    ("lazyfree-lazy-expire", "no", YES_NO),
    ("lazyfree-lazy-server-del", "no", YES_NO),
    ("lazyfree-lazy-user-del", "no", YES_NO),
    ("lazyfree-lazy-user-flush", "no", YES_NO),
    ("protected-mode", "yes", YES_NO),
    (
        "loglevel",
        "notice",
        Kind::Enum(&["debug", "verbose", "notice", "warning", "nothing"]),
    ),
    ("io-threads", "1", Kind::Int),
    ("appendonly-fsync-always-group", "yes", YES_NO),
    // Tidewire's own: microseconds the event loop keeps polling after the last
    // request before it sleeps (0: sleep at once). See the server's `busy_poll`.
    ("busy-poll-us", "50", Kind::Int),
    ("close-on-oom", "no", YES_NO),
    (
        "enable-debug-command",
        "no",
        Kind::Enum(&["no", "yes", "local"]),
    ),
    (
        "enable-module-command",
        "no",
        Kind::Enum(&["no", "yes", "local"]),
    ),
    ("set-proc-title", "yes", YES_NO),
    ("replica-read-only", "yes", YES_NO),
    ("min-replicas-to-write", "0", Kind::Int),
    ("cluster-enabled", "no", YES_NO),
    ("tracking-table-max-keys", "1000000", Kind::Int),
    ("activedefrag", "no", YES_NO),
    ("jemalloc-bg-thread", "yes", YES_NO),
    (
        "sanitize-dump-payload",
        "no",
        Kind::Enum(&["no", "yes", "clients"]),
    ),
    ("lua-replicate-commands", "yes", YES_NO),
    ("oom-score-adj", "no", Kind::Str),
    (
        "latency-tracking-info-percentiles",
        "50 99 99.9",
        Kind::Percentiles,
    ),
    ("masterauth", "", Kind::Str),
    ("masteruser", "", Kind::Str),
    ("shutdown-on-sigterm", "default", Kind::Str),
    ("shutdown-on-sigint", "default", Kind::Str),
    ("shutdown-timeout", "10", Kind::Int),
    ("repl-ping-replica-period", "10", Kind::Int),
    ("repl-timeout", "60", Kind::Int),
    ("rdb-key-save-delay", "0", Kind::Int),
    ("replica-serve-stale-data", "yes", YES_NO),
    ("maxmemory-clients", "0", Kind::MemoryOrPercent),
    ("repl-backlog-size", "1048576", Kind::Memory),
    ("repl-backlog-ttl", "3600", Kind::Int),
    ("replicaof", "", Kind::Str),
    ("slaveof", "", Kind::Str),
    ("daemonize", "no", YES_NO),
    ("key-load-delay", "0", Kind::Int),
    ("rdb-del-sync-files", "no", YES_NO),
];

/// The longest `busy-poll-us`: a poll window of more than a millisecond saves
/// nothing a sleep would cost and burns the rest of the core.
const MAX_BUSY_POLL_US: i64 = 1000;

/// Parameters `CONFIG GET` lists only when asked for by exact name.
const HIDDEN: &[&str] = &["key-load-delay"];

/// Parameters that cannot change at run time (`CONFIG SET` refuses them).
pub const IMMUTABLE: &[&str] = &[
    "daemonize",
    "databases",
    "io-threads",
    "cluster-enabled",
    "enable-debug-command",
    "enable-module-command",
];

/// Redis 7's old names for the listpack settings: setting either name sets both.
const ALIASES: &[(&str, &str)] = &[
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
    // Redis 7 renamed the script time limit; the old name still sets it.
    ("lua-time-limit", "busy-reply-threshold"),
];

/// Whether `name` (any case) is a configuration parameter (or an alias of one):
/// what `CONFIG SET` and the `[redis]` table accept, and `--name value` on the
/// command line, as `redis-server --name value`.
pub fn is_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    PARAMS.iter().any(|(n, _, _)| *n == name) || alias_of(&name).is_some()
}

/// Whether `name` may appear in a configuration (file, flags): a parameter, or a
/// directive read only at start — `user <name> <rules…>`, an ACL user as
/// redis.conf defines one.
pub fn is_directive(name: &str) -> bool {
    is_parameter(name) || name.eq_ignore_ascii_case("user")
}

impl Config {
    /// The parameters `CONFIG REWRITE` writes, with their current values: every
    /// parameter under its own name, not the old alias names (`hash-max-ziplist-*`,
    /// `lua-time-limit`), which follow their partner anyway.
    pub fn rewritable(&self) -> Vec<(&'static str, String)> {
        let values = self.values.read();
        PARAMS
            .iter()
            .filter(|(n, _, _)| canonical_name(n) == *n)
            .filter_map(|(n, _, _)| values.get(n).map(|v| (*n, v.clone())))
            .collect()
    }
}

/// A parameter's own name for one of its old alias names (`hash-max-ziplist-entries`
/// → `hash-max-listpack-entries`); any other name as it is.
pub fn canonical_name(name: &str) -> &str {
    ALIASES
        .iter()
        .find_map(|(old, new)| (*old == name).then_some(*new))
        .unwrap_or(name)
}

fn alias_of(name: &str) -> Option<&'static str> {
    ALIASES.iter().find_map(|(a, b)| {
        if *a == name {
            Some(*b)
        } else if *b == name {
            Some(*a)
        } else {
            None
        }
    })
}

/// The encoding thresholds every collection write consults, mirrored from the
/// config as atomics: looking them up by name under the config lock and parsing
/// the text cost more than the write itself (SADD did three such lookups).
pub struct EncodingLimits {
    slots: [AtomicI64; LIMIT_NAMES.len()],
}

/// A parameter mirrored in [`EncodingLimits`]; the order of [`LIMIT_NAMES`].
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    HashMaxListpackEntries,
    HashMaxListpackValue,
    SetMaxIntsetEntries,
    SetMaxListpackEntries,
    SetMaxListpackValue,
    ZsetMaxListpackEntries,
    ZsetMaxListpackValue,
    ListMaxListpackSize,
    HllSparseMaxBytes,
    StreamNodeMaxBytes,
    StreamNodeMaxEntries,
    TrackingTableMaxKeys,
}

const LIMIT_NAMES: [&str; 12] = [
    "hash-max-listpack-entries",
    "hash-max-listpack-value",
    "set-max-intset-entries",
    "set-max-listpack-entries",
    "set-max-listpack-value",
    "zset-max-listpack-entries",
    "zset-max-listpack-value",
    "list-max-listpack-size",
    "hll-sparse-max-bytes",
    "stream-node-max-bytes",
    "stream-node-max-entries",
    "tracking-table-max-keys",
];

impl EncodingLimits {
    fn new() -> Self {
        let slots = LIMIT_NAMES.map(|n| {
            let default = PARAMS
                .iter()
                .find(|(p, _, _)| *p == n)
                .and_then(|(_, d, _)| d.parse().ok())
                .unwrap_or(0);
            AtomicI64::new(default)
        });
        EncodingLimits { slots }
    }

    fn update(&self, name: &str, value: &str) {
        if let Some(i) = LIMIT_NAMES.iter().position(|n| *n == name) {
            self.slots[i].store(value.parse().unwrap_or(0), Ordering::Relaxed);
        }
    }

    pub fn get(&self, limit: Limit) -> i64 {
        self.slots[limit as usize].load(Ordering::Relaxed)
    }

    /// A threshold that is a count or size (never negative for these).
    pub fn get_usize(&self, limit: Limit) -> usize {
        self.get(limit).max(0) as usize
    }
}

pub struct Config {
    values: RwLock<BTreeMap<&'static str, String>>,
    pub encoding: EncodingLimits,
    /// Hot values mirrored from `values`.
    pub notify_flags: AtomicU32,
    pub proto_max_bulk_len: AtomicU64,
    pub pubsub_output_limit: AtomicUsize,
    pub pubsub_output_soft: AtomicUsize,
    pub pubsub_output_soft_secs: AtomicU64,
    /// `client-query-buffer-limit`: a connection whose unparsed input grows past
    /// this is closed.
    pub query_buf_limit: AtomicU64,
    pub slowlog_slower_than: AtomicU64,
    pub slowlog_max_len: AtomicUsize,
    pub maxmemory: AtomicU64,
    /// `busy-poll-us`, read by the server's poller each time it wakes.
    pub busy_poll_us: AtomicU64,
    /// `latency-tracking`: whether commands record their run time in their
    /// latency histograms.
    pub latency_tracking: AtomicBool,
    /// `latency-monitor-threshold` (ms; 0: the latency monitor is off).
    pub latency_monitor_ms: AtomicU64,
    requirepass: RwLock<Option<String>>,
}

impl Default for Config {
    fn default() -> Self {
        let values = PARAMS.iter().map(|(n, d, _)| (*n, d.to_string())).collect();

        Config {
            values: RwLock::new(values),
            encoding: EncodingLimits::new(),
            notify_flags: AtomicU32::new(0),
            proto_max_bulk_len: AtomicU64::new(512 * 1024 * 1024),
            pubsub_output_limit: AtomicUsize::new(32 * 1024 * 1024),
            pubsub_output_soft: AtomicUsize::new(8 * 1024 * 1024),
            pubsub_output_soft_secs: AtomicU64::new(60),
            query_buf_limit: AtomicU64::new(1 << 30),
            slowlog_slower_than: AtomicU64::new(10_000),
            slowlog_max_len: AtomicUsize::new(128),
            maxmemory: AtomicU64::new(0),
            busy_poll_us: AtomicU64::new(50),
            latency_tracking: AtomicBool::new(true),
            latency_monitor_ms: AtomicU64::new(0),
            requirepass: RwLock::new(None),
        }
    }
}

fn set_failed(name: &str, why: &str) -> CmdError {
    CmdError::err(format!(
        "CONFIG SET failed (possibly related to argument '{name}') - {why}"
    ))
}

/// Parses `100`, `1kb`, `5mb`, `1gb` (and `k`/`m`/`g` as powers of ten) like Redis.
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let units: [(&str, u64); 6] = [
        ("gb", 1 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1_000),
    ];
    for (suffix, mul) in units {
        if let Some(n) = lower.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(mul);
        }
    }
    if let Some(n) = lower.strip_suffix('b') {
        return n.parse().ok();
    }
    lower.parse().ok()
}

impl Config {
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.read().get(name).cloned()
    }

    pub fn get_u64(&self, name: &str) -> u64 {
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn get_bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v == "yes")
    }

    /// Every (name, value) whose name matches the glob, for CONFIG GET.
    pub fn matching(&self, pattern: &[u8]) -> Vec<(String, String)> {
        self.values
            .read()
            .iter()
            .filter(|(n, _)| {
                if HIDDEN.contains(n) {
                    pattern.eq_ignore_ascii_case(n.as_bytes())
                } else {
                    glob_match(pattern, n.as_bytes(), true)
                }
            })
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    pub fn requirepass(&self) -> Option<String> {
        self.requirepass.read().clone()
    }

    /// Sets a parameter after validating it; the value stored is the normalised one
    /// CONFIG GET will report.
    pub fn set(&self, name: &str, value: &str) -> Result<(), CmdError> {
        let lname = name.to_ascii_lowercase();
        let Some((pname, _, kind)) = PARAMS.iter().find(|(n, _, _)| *n == lname) else {
            return Err(CmdError::err(format!(
                "Unknown option or number of arguments for CONFIG SET - '{name}'"
            )));
        };
        let normalised = match kind {
            Kind::Str => value.to_string(),
            Kind::Percentiles => {
                let parsed: Option<Vec<f64>> = value
                    .split_whitespace()
                    .map(|p| p.parse::<f64>().ok().filter(|f| (0.0..=100.0).contains(f)))
                    .collect();
                let Some(parsed) = parsed else {
                    return Err(set_failed(
                        pname,
                        &format!("{pname} parameter should be between 0.0 and 100.0"),
                    ));
                };
                parsed
                    .iter()
                    .map(|p| crate::num::fmt_percentile(*p))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            Kind::Int => value
                .parse::<i64>()
                .map_err(|_| set_failed(pname, "argument couldn't be parsed into an integer"))?
                .to_string(),
            Kind::Memory => {
                if let Some(stripped) = value.strip_prefix('-') {
                    // Only list sizes may be negative; memory values never.
                    let _ = stripped;
                    return Err(set_failed(pname, "argument must be a memory value"));
                }
                parse_memory(value)
                    .ok_or_else(|| set_failed(pname, "argument must be a memory value"))?
                    .to_string()
            }
            Kind::Bool => match value.to_ascii_lowercase().as_str() {
                "yes" => "yes".into(),
                "no" => "no".into(),
                _ => return Err(set_failed(pname, "argument must be 'yes' or 'no'")),
            },
            Kind::Enum(options) => {
                let v = value.to_ascii_lowercase();
                if !options.contains(&v.as_str()) {
                    return Err(set_failed(
                        pname,
                        &format!(
                            "argument(s) must be one of the following: {}",
                            options.join(", ")
                        ),
                    ));
                }
                v
            }
            Kind::MemoryOrPercent => {
                if let Some(p) = value.strip_suffix('%') {
                    let n: i64 = p.parse().map_err(|_| {
                        set_failed(pname, "argument must be a memory or percent value")
                    })?;
                    if n > 100 {
                        return Err(set_failed(
                            pname,
                            "percentage argument must be less or equal to 100",
                        ));
                    }
                    if n < 0 {
                        return Err(set_failed(
                            pname,
                            "argument must be a memory or percent value",
                        ));
                    }
                    format!("{n}%")
                } else {
                    parse_memory(value)
                        .ok_or_else(|| {
                            set_failed(pname, "argument must be a memory or percent value")
                        })?
                        .to_string()
                }
            }
            Kind::Special => {
                let flags = notify::parse(value).ok_or_else(|| {
                    set_failed(
                        pname,
                        "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.",
                    )
                })?;
                self.notify_flags.store(flags, Ordering::Relaxed);
                notify::to_string(flags)
            }
        };
        self.apply_hot(pname, &normalised)?;
        let mut values = self.values.write();
        if let Some(partner) = alias_of(pname) {
            self.encoding.update(partner, &normalised);
            values.insert(partner, normalised.clone());
        }
        self.encoding.update(pname, &normalised);
        values.insert(pname, normalised);
        Ok(())
    }

    fn apply_hot(&self, name: &str, value: &str) -> Result<(), CmdError> {
        match name {
            "requirepass" => {
                *self.requirepass.write() = (!value.is_empty()).then(|| value.to_string());
            }
            "proto-max-bulk-len" => {
                let v: u64 = value.parse().unwrap_or(0);
                if v < 1024 * 1024 {
                    // Redis refuses values below 1mb.
                    return Err(set_failed(
                        name,
                        "argument must be between 1048576 and 9223372036854775807 inclusive",
                    ));
                }
                self.proto_max_bulk_len.store(v, Ordering::Relaxed);
            }
            "client-output-buffer-limit" => {
                let parts: Vec<&str> = value.split_whitespace().collect();
                if !parts.len().is_multiple_of(4) {
                    return Err(set_failed(
                        name,
                        "Wrong number of arguments in buffer limit configuration.",
                    ));
                }
                let mut parsed = Vec::new();
                for chunk in parts.chunks(4) {
                    if !matches!(chunk[0], "normal" | "slave" | "replica" | "pubsub") {
                        return Err(set_failed(
                            name,
                            "Invalid client class specified in buffer limit configuration.",
                        ));
                    }
                    let bad = || {
                        set_failed(name, "Error in hard, soft or soft_seconds setting in buffer limit configuration.")
                    };
                    let hard = parse_memory(chunk[1]).ok_or_else(bad)?;
                    let soft = parse_memory(chunk[2]).ok_or_else(bad)?;
                    let secs: u64 = chunk[3].parse().map_err(|_| bad())?;
                    parsed.push((chunk[0], hard, soft, secs));
                }
                // Validate everything before applying anything.
                for (class, hard, soft, secs) in parsed {
                    if class == "pubsub" {
                        self.pubsub_output_limit
                            .store(hard as usize, Ordering::Relaxed);
                        self.pubsub_output_soft
                            .store(soft as usize, Ordering::Relaxed);
                        self.pubsub_output_soft_secs.store(secs, Ordering::Relaxed);
                    }
                }
            }
            "client-query-buffer-limit" => {
                let v: u64 = value.parse().unwrap_or(0);
                if v < 1024 * 1024 {
                    return Err(set_failed(
                        name,
                        "argument must be between 1048576 and 9223372036854775807 inclusive",
                    ));
                }
                self.query_buf_limit.store(v, Ordering::Relaxed);
            }
            "busy-poll-us" => {
                let v: i64 = value.parse().unwrap_or(-1);
                if !(0..=MAX_BUSY_POLL_US).contains(&v) {
                    return Err(set_failed(
                        name,
                        &format!("argument must be between 0 and {MAX_BUSY_POLL_US} inclusive"),
                    ));
                }
                self.busy_poll_us.store(v as u64, Ordering::Relaxed);
            }
            "latency-tracking" => {
                self.latency_tracking
                    .store(value.eq_ignore_ascii_case("yes"), Ordering::Relaxed);
            }
            "latency-monitor-threshold" => {
                let Ok(ms) = value.parse::<u64>() else {
                    return Err(set_failed(
                        name,
                        "argument must be between 0 and 9223372036854775807 inclusive",
                    ));
                };
                self.latency_monitor_ms.store(ms, Ordering::Relaxed);
            }
            "slowlog-log-slower-than" => {
                let v: i64 = value.parse().unwrap_or(10_000);
                self.slowlog_slower_than
                    .store(if v < 0 { u64::MAX } else { v as u64 }, Ordering::Relaxed);
            }
            "slowlog-max-len" => {
                self.slowlog_max_len
                    .store(value.parse().unwrap_or(128), Ordering::Relaxed);
            }
            "maxmemory" => {
                self.maxmemory
                    .store(value.parse().unwrap_or(0), Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(())
    }

    /// The `pubsub` class of `client-output-buffer-limit`, applied to every push.
    pub fn pubsub_limit(&self) -> crate::client::OutputLimit {
        crate::client::OutputLimit {
            hard: self.pubsub_output_limit.load(Ordering::Relaxed),
            soft: self.pubsub_output_soft.load(Ordering::Relaxed),
            soft_secs: self.pubsub_output_soft_secs.load(Ordering::Relaxed),
        }
    }

    pub fn notify_flags(&self) -> u32 {
        self.notify_flags.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_limits_follow_config_set_and_aliases() {
        let c = Config::default();
        assert_eq!(c.encoding.get(Limit::HashMaxListpackEntries), 128);
        assert_eq!(c.encoding.get(Limit::ListMaxListpackSize), -2);
        c.set("hash-max-ziplist-entries", "7").unwrap();
        assert_eq!(c.encoding.get(Limit::HashMaxListpackEntries), 7);
        c.set("SET-MAX-INTSET-ENTRIES", "9").unwrap();
        assert_eq!(c.encoding.get_usize(Limit::SetMaxIntsetEntries), 9);
        assert!(c.set("zset-max-listpack-value", "x").is_err());
        assert_eq!(c.encoding.get(Limit::ZsetMaxListpackValue), 64);
    }

    #[test]
    fn set_and_get() {
        let c = Config::default();
        c.set("maxmemory", "1mb").unwrap();
        assert_eq!(c.get("maxmemory").unwrap(), "1048576");
        c.set("notify-keyspace-events", "KEA").unwrap();
        assert_eq!(c.get("notify-keyspace-events").unwrap(), "AKE");
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("appendfsync", "sometimes").is_err());
        c.set("hash-max-ziplist-entries", "5").unwrap();
        // The old ziplist names are aliases of the listpack ones, both ways.
        assert_eq!(c.get("hash-max-listpack-entries").unwrap(), "5");
        c.set("zset-max-listpack-value", "32").unwrap();
        assert_eq!(c.get("zset-max-ziplist-value").unwrap(), "32");
        assert_eq!(c.matching(b"hash-max-*-entries").len(), 2);
    }

    #[test]
    fn lua_time_limit_is_busy_reply_threshold() {
        let c = Config::default();
        c.set("lua-time-limit", "10").unwrap();
        assert_eq!(c.get_u64("busy-reply-threshold"), 10);
        c.set("busy-reply-threshold", "20").unwrap();
        assert_eq!(c.get("lua-time-limit").unwrap(), "20");
    }

    #[test]
    fn busy_poll_window_is_bounded_and_mirrored() {
        let c = Config::default();
        assert_eq!(c.busy_poll_us.load(Ordering::Relaxed), 50);
        c.set("busy-poll-us", "0").unwrap();
        assert_eq!(c.busy_poll_us.load(Ordering::Relaxed), 0);
        for bad in ["-1", "1001"] {
            let e = c.set("busy-poll-us", bad).unwrap_err();
            assert!(e.to_string().contains("between 0 and 1000"), "{e}");
        }
        assert!(c.set("busy-poll-us", "soon").is_err());
        let e = c.set("latency-monitor-threshold", "-1").unwrap_err();
        assert!(
            e.text()
                .ends_with("argument must be between 0 and 9223372036854775807 inclusive"),
            "{}",
            e.text()
        );
        assert_eq!(c.get("latency-monitor-threshold").unwrap(), "0");
        c.set("latency-monitor-threshold", "100").unwrap();
        assert_eq!(c.latency_monitor_ms.load(Ordering::Relaxed), 100);
        assert_eq!(c.get("busy-poll-us").unwrap(), "0");
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("1gb"), Some(1 << 30));
        assert_eq!(parse_memory("2k"), Some(2000));
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("x"), None);
    }
}
