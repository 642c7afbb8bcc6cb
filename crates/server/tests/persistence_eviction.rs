//! maxmemory and eviction policies, against the real binary (memory measured by
//! jemalloc). Each test fills the dataset, then lowers `maxmemory` below what is
//! used and writes more, and checks which keys went and which stayed. LRU/LFU/TTL
//! are approximated by sampling (as in Redis), so their assertions are about
//! proportions, with wide margins.

mod persistence_support;

use persistence_support::*;

const VALUE: usize = 1000;

fn used(node: &Node, c: &mut redis::Connection) -> u64 {
    node.info_field(c, "used_memory").unwrap().parse().unwrap()
}

fn put(c: &mut redis::Connection, prefix: &str, n: usize, ttl_ms: Option<u64>) {
    let v = "x".repeat(VALUE);
    let mut p = redis::pipe();
    for i in 0..n {
        let cmd = p.cmd("SET").arg(format!("{prefix}{i}")).arg(&v);
        if let Some(t) = ttl_ms {
            cmd.arg("PX").arg(t + i as u64);
        }
        cmd.ignore();
    }
    let _: () = p.query(c).unwrap();
}

fn present(c: &mut redis::Connection, prefix: &str, n: usize) -> usize {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let mut found = 0;
    for chunk in keys.chunks(500) {
        let n: usize = redis::cmd("EXISTS").arg(chunk).query(c).unwrap();
        found += n;
    }
    found
}

fn evicted(node: &Node, c: &mut redis::Connection) -> u64 {
    node.info_field(c, "evicted_keys").unwrap().parse().unwrap()
}

/// Starts a server with `policy`, fills it via `fill`, then limits memory to
/// `used - shrink` bytes and writes `extra` more keys without TTL.
fn squeeze(
    policy: &str,
    fill: impl FnOnce(&mut redis::Connection),
    shrink: u64,
    extra: usize,
) -> (Node, redis::Connection, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(
        tmp.path(),
        &[
            ("appendonly", "no"),
            ("save", ""),
            ("maxmemory-policy", policy),
            ("maxmemory-samples", "10"),
            ("lfu-log-factor", "0"),
        ],
    );
    let mut c = node.conn();
    fill(&mut c);
    let u = used(&node, &mut c);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(u - shrink)
        .query(&mut c)
        .unwrap();
    let v = "y".repeat(VALUE);
    for i in 0..extra {
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("new{i}"))
            .arg(&v)
            .query(&mut c);
    }
    (node, c, tmp)
}

#[test]
fn noeviction_refuses_writes_but_serves_reads_and_deletes() {
    let (node, mut c, _tmp) = squeeze("noeviction", |c| put(c, "k", 2000, None), 500_000, 0);
    let r: redis::RedisResult<()> = redis::cmd("SET").arg("x").arg("1").query(&mut c);
    let e = r.unwrap_err();
    assert_eq!(e.code(), Some("OOM"), "{e}");
    assert!(
        e.to_string()
            .contains("command not allowed when used memory > 'maxmemory'"),
        "{e}"
    );
    let r: redis::RedisResult<i64> = redis::cmd("INCR").arg("counter").query(&mut c);
    assert!(r.is_err());
    let v: Option<String> = redis::cmd("GET").arg("k1").query(&mut c).unwrap();
    assert!(v.is_some());
    let n: i64 = redis::cmd("DEL").arg("k1").arg("k2").query(&mut c).unwrap();
    assert_eq!(n, 2);
    assert_eq!(evicted(&node, &mut c), 0);
    assert_eq!(present(&mut c, "k", 2000), 1998);
}

fn volatile_never_touches_persistent_keys(policy: &str) {
    let (node, mut c, _tmp) = squeeze(
        policy,
        |c| {
            put(c, "keep", 1500, None);
            put(c, "vol", 1500, Some(3_600_000));
        },
        500_000,
        200,
    );
    assert_eq!(
        present(&mut c, "keep", 1500),
        1500,
        "{policy} evicted a key without TTL"
    );
    let vol = present(&mut c, "vol", 1500);
    assert!(vol < 1500, "{policy}: nothing evicted");
    assert!(evicted(&node, &mut c) > 0);
    // Once the volatile keys are gone the writes are refused.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let r: redis::RedisResult<()> = redis::cmd("SET").arg("late").arg("1").query(&mut c);
    assert_eq!(r.unwrap_err().code(), Some("OOM"));
    assert_eq!(present(&mut c, "keep", 1500), 1500);
    assert_eq!(present(&mut c, "vol", 1500), 0);
}

#[test]
fn volatile_lru_only_evicts_keys_with_ttl() {
    volatile_never_touches_persistent_keys("volatile-lru");
}

#[test]
fn volatile_lfu_only_evicts_keys_with_ttl() {
    volatile_never_touches_persistent_keys("volatile-lfu");
}

#[test]
fn volatile_random_only_evicts_keys_with_ttl() {
    volatile_never_touches_persistent_keys("volatile-random");
}

#[test]
fn volatile_ttl_evicts_nearest_expiry_first() {
    let (_node, mut c, _tmp) = squeeze(
        "volatile-ttl",
        |c| {
            put(c, "soon", 1500, Some(3_600_000));
            put(c, "late", 1500, Some(36_000_000));
        },
        500_000,
        100,
    );
    let soon_gone = 1500 - present(&mut c, "soon", 1500);
    let late_gone = 1500 - present(&mut c, "late", 1500);
    assert!(soon_gone > 100, "soon evicted: {soon_gone}");
    assert!(
        late_gone * 4 < soon_gone,
        "soon evicted {soon_gone}, late evicted {late_gone}"
    );
}

#[test]
fn allkeys_lru_keeps_recently_used_keys() {
    let (_node, mut c, _tmp) = squeeze(
        "allkeys-lru",
        |c| {
            put(c, "cold", 1500, None);
            put(c, "hot", 1500, None);
            // The LRU clock has one-second resolution.
            std::thread::sleep(std::time::Duration::from_millis(2100));
            for i in 0..1500 {
                let _: Option<String> = redis::cmd("GET").arg(format!("hot{i}")).query(c).unwrap();
            }
        },
        500_000,
        100,
    );
    let cold_gone = 1500 - present(&mut c, "cold", 1500);
    let hot_gone = 1500 - present(&mut c, "hot", 1500);
    assert!(cold_gone > 100, "cold evicted: {cold_gone}");
    assert!(
        hot_gone * 4 < cold_gone,
        "cold evicted {cold_gone}, hot evicted {hot_gone}"
    );
}

#[test]
fn allkeys_lfu_keeps_frequently_used_keys() {
    let (_node, mut c, _tmp) = squeeze(
        "allkeys-lfu",
        |c| {
            put(c, "rare", 1500, None);
            put(c, "freq", 1500, None);
            for _ in 0..5 {
                let mut p = redis::pipe();
                for i in 0..1500 {
                    p.cmd("GET").arg(format!("freq{i}")).ignore();
                }
                let _: () = p.query(c).unwrap();
            }
        },
        500_000,
        100,
    );
    let rare_gone = 1500 - present(&mut c, "rare", 1500);
    let freq_gone = 1500 - present(&mut c, "freq", 1500);
    assert!(rare_gone > 100, "rare evicted: {rare_gone}");
    assert!(
        freq_gone * 4 < rare_gone,
        "rare evicted {rare_gone}, frequent evicted {freq_gone}"
    );
}

#[test]
fn allkeys_random_evicts_any_key_and_logs_del() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
        ("maxmemory-policy", "allkeys-random"),
        ("notify-keyspace-events", "Ee"),
    ];
    let node = start(tmp.path(), &params);
    let mut c = node.conn();
    let mut sub = node.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("__keyevent@0__:evicted").unwrap();
    put(&mut c, "a", 1500, None);
    put(&mut c, "b", 1500, Some(3_600_000));
    let u = used(&node, &mut c);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(u - 500_000)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("trigger")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let a_gone = 1500 - present(&mut c, "a", 1500);
    let b_gone = 1500 - present(&mut c, "b", 1500);
    assert!(a_gone > 0 && b_gone > 0, "a {a_gone} b {b_gone}");
    let n = evicted(&node, &mut c);
    assert_eq!(n as usize, a_gone + b_gone);
    pubsub
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let msg = pubsub.get_message().unwrap();
    let key: String = msg.get_payload().unwrap();
    assert!(key.starts_with('a') || key.starts_with('b'), "{key}");
    drop(pubsub);
    // Evictions are in the log as DEL: a restart does not bring the keys back.
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    node.kill9();
    let node = start(
        tmp.path(),
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("save", ""),
        ],
    );
    let mut c = node.conn();
    let after: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(after, dbsize);
}

fn used_now(c: &mut redis::Connection) -> u64 {
    // INFO memory, not all: the reply being built counts as used memory too.
    let info: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .parse()
        .unwrap()
}

/// A server without persistence evicting `allkeys-random`.
fn random_evicting() -> (Node, redis::Connection, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(
        tmp.path(),
        &[
            ("appendonly", "no"),
            ("save", ""),
            ("maxmemory-policy", "allkeys-random"),
        ],
    );
    let c = node.conn();
    (node, c, tmp)
}

fn set_maxmemory(c: &mut redis::Connection, bytes: u64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query(c)
        .unwrap();
}

/// Redis's "is the memory limit honoured" check: 100 KB of headroom filled with
/// small keys, then as many again; memory ends within 4 KB of the limit because
/// it is measured exactly (the allocator's count) before every command.
#[test]
fn the_limit_holds_within_a_few_kilobytes() {
    let (node, mut c, _tmp) = random_evicting();
    let limit = used_now(&mut c) + 100 * 1024;
    set_maxmemory(&mut c, limit);
    let setex = |c: &mut redis::Connection, i: usize| {
        let _: () = redis::cmd("SETEX")
            .arg(format!("key:{i}"))
            .arg(10_000)
            .arg("x")
            .query(c)
            .unwrap();
    };
    let mut n = 0;
    while used_now(&mut c) + 4096 <= limit && n < 100_000 {
        setex(&mut c, n);
        n += 1;
    }
    assert!(n > 10, "only {n} keys fit");
    for i in n..2 * n {
        setex(&mut c, i);
    }
    let used = used_now(&mut c);
    assert!(used < limit + 4096, "used {used}, limit {limit}");
    assert!(evicted(&node, &mut c) > 0);
}

/// Memory held by clients counts, and any command (here a read) evicts to make
/// room, as in Redis: 30 clients each leave a 250 KB request unfinished.
#[test]
fn memory_held_by_unfinished_requests_makes_a_read_evict() {
    use std::io::Write;
    let (node, mut c, _tmp) = random_evicting();
    let big = "x".repeat(100_000);
    for i in 0..50 {
        let _: () = redis::cmd("SET").arg(i).arg(&big).query(&mut c).unwrap();
    }
    let limit = used_now(&mut c) + 2 * 1024 * 1024;
    set_maxmemory(&mut c, limit);
    let mut chunk = Vec::new();
    for _ in 0..249 {
        chunk.extend_from_slice(b"$1000\r\n");
        chunk.extend_from_slice(&[b'x'; 1000]);
        chunk.extend_from_slice(b"\r\n");
    }
    let idle: Vec<std::net::TcpStream> = (0..30)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
            s.write_all(b"*250\r\n").unwrap();
            s.write_all(&chunk).unwrap();
            s
        })
        .collect();
    // The server reads the unfinished requests at its own pace: ask until it has
    // (bounded), each DBSIZE being a chance to evict.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut keys = 50u64;
    while keys == 50 && std::time::Instant::now() < deadline {
        keys = redis::cmd("DBSIZE").query(&mut c).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(keys < 50, "nothing was evicted");
    assert!(evicted(&node, &mut c) > 0);
    drop(idle);
}
