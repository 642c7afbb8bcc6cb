//! The AOF in-process: a rewrite while clients write applies every write exactly
//! once after a restart (no loss, no double application), and `appendfsync always`
//! shares fsyncs between clients (group commit).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tidewire_server::{Config, Server};

async fn boot(dir: &std::path::Path, params: &[(&str, &str)]) -> Server {
    let config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.to_path_buf(),
        redis: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Config::default()
    };
    tidewire_server::start(config).await.unwrap()
}

async fn conn(s: &Server) -> MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", s.resp_addr))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn info_field(c: &mut MultiplexedConnection, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg("all").query_async(c).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .to_string()
}

const PARAMS: &[(&str, &str)] = &[
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("save", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_during_writes_applies_each_write_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = boot(tmp.path(), PARAMS).await;
    let mut c = conn(&s).await;
    let mut p = redis::pipe();
    for i in 0..100_000 {
        p.cmd("SET").arg(format!("pre:{i}")).arg(i).ignore();
    }
    let _: () = p.query_async(&mut c).await.unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut wc = conn(&s).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0i64;
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                last = redis::cmd("INCR")
                    .arg(format!("n{t}"))
                    .query_async(&mut wc)
                    .await
                    .unwrap();
            }
            last
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r: String = redis::cmd("BGREWRITEAOF")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(r, "Background append only file rewriting started");
    let mut done = false;
    for _ in 0..3000 {
        if info_field(&mut c, "aof_rewrites").await == "1"
            && info_field(&mut c, "aof_rewrite_in_progress").await == "0"
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "rewrite did not finish");
    assert_eq!(info_field(&mut c, "aof_last_bgrewrite_status").await, "ok");
    let pause: f64 = info_field(&mut c, "aof_rewrite_max_pause_ms")
        .await
        .parse()
        .unwrap();
    eprintln!("aof_rewrite_max_pause_ms: {pause}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut finals = Vec::new();
    for t in tasks {
        finals.push(t.await.unwrap());
    }
    drop(c);
    s.shutdown().await;

    // The old files are gone: one base, one incremental file.
    let dir = tmp.path().join("appendonlydir");
    let manifest = std::fs::read_to_string(dir.join("appendonly.aof.manifest")).unwrap();
    assert_eq!(manifest.lines().count(), 2, "{manifest}");
    assert!(
        manifest.contains("type b") && manifest.contains("type i"),
        "{manifest}"
    );
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 3, "manifest + base + incr");

    let s = boot(tmp.path(), PARAMS).await;
    let mut c = conn(&s).await;
    for (t, want) in finals.iter().enumerate() {
        let got: i64 = redis::cmd("GET")
            .arg(format!("n{t}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(got, *want, "counter n{t}");
    }
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 100_004);
    drop(c);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_shares_fsyncs_between_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let s = boot(tmp.path(), PARAMS).await;
    let mut tasks = Vec::new();
    for t in 0..20 {
        // One connection per client (a multiplexed connection per task).
        let mut c = conn(&s).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let _: () = redis::cmd("SET")
                    .arg(format!("g{t}:{i}"))
                    .arg(i)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = conn(&s).await;
    let fsyncs: u64 = info_field(&mut c, "aof_fsyncs").await.parse().unwrap();
    eprintln!("1000 writes from 20 clients, {fsyncs} fsyncs");
    assert!(
        fsyncs < 1000,
        "no group commit: {fsyncs} fsyncs for 1000 writes"
    );
    assert!(fsyncs > 0);
    drop(c);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appendonly_can_be_turned_on_and_off_at_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let off = [("appendonly", "no"), ("save", "")];
    let s = boot(tmp.path(), &off).await;
    let mut c = conn(&s).await;
    for i in 0..1000 {
        let _: () = redis::cmd("SET")
            .arg(format!("before:{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut on = false;
    for _ in 0..500 {
        if info_field(&mut c, "aof_enabled").await == "1"
            && info_field(&mut c, "aof_rewrite_in_progress").await == "0"
            && tmp
                .path()
                .join("appendonlydir/appendonly.aof.manifest")
                .exists()
        {
            on = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(on, "AOF did not turn on");
    for i in 0..1000 {
        let _: () = redis::cmd("SET")
            .arg(format!("after:{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    drop(c);
    s.shutdown().await;
    // No snapshot was written (save ""): everything comes from the new log.
    assert!(!tmp.path().join("dump.tw").exists());
    let s = boot(tmp.path(), &[("appendonly", "yes"), ("save", "")]).await;
    let mut c = conn(&s).await;
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 2000);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query_async(&mut c)
        .await
        .unwrap();
    for _ in 0..500 {
        if info_field(&mut c, "aof_enabled").await == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(info_field(&mut c, "aof_enabled").await, "0");
    drop(c);
    s.shutdown().await;
}

/// Restarting a snapshot-only server with `appendonly yes` starts the log from the
/// snapshot's data (as a base), so the next restart loads it from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_the_aof_on_across_a_restart_keeps_the_snapshot_data() {
    let tmp = tempfile::tempdir().unwrap();
    let s = boot(tmp.path(), &[("appendonly", "no"), ("save", "3600 1")]).await;
    let mut c = conn(&s).await;
    for i in 0..500 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    drop(c);
    s.shutdown().await;
    let on = [("appendonly", "yes"), ("save", "")];
    let s = boot(tmp.path(), &on).await;
    let mut c = conn(&s).await;
    let _: () = redis::cmd("SET")
        .arg("more")
        .arg("1")
        .query_async(&mut c)
        .await
        .unwrap();
    drop(c);
    s.shutdown().await;
    std::fs::remove_file(tmp.path().join("dump.tw")).unwrap();
    let s = boot(tmp.path(), &on).await;
    let mut c = conn(&s).await;
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 501);
    drop(c);
    s.shutdown().await;
}

/// BGREWRITEAOF with `appendonly no`, as Redis allows: the AOF directory gets a base
/// of the dataset and a manifest naming only it (a second rewrite replaces the
/// first's files), and a later start with `appendonly yes` loads from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_with_the_aof_off_leaves_a_loadable_base() {
    let tmp = tempfile::tempdir().unwrap();
    let off = [("appendonly", "no"), ("save", "")];
    let s = boot(tmp.path(), &off).await;
    let mut c = conn(&s).await;
    for round in 1..=2 {
        let _: () = redis::cmd("RPUSH")
            .arg("list")
            .arg(round)
            .query_async(&mut c)
            .await
            .unwrap();
        let r: String = redis::cmd("BGREWRITEAOF")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(r, "Background append only file rewriting started");
        for _ in 0..500 {
            if info_field(&mut c, "aof_rewrites").await == round.to_string()
                && info_field(&mut c, "aof_rewrite_in_progress").await == "0"
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(info_field(&mut c, "aof_last_bgrewrite_status").await, "ok");
    }
    let dir = tmp.path().join("appendonlydir");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["appendonly.aof.2.base.tws", "appendonly.aof.manifest"],
        "the second rewrite replaced the first's base"
    );
    drop(c);
    s.shutdown().await;
    let s = boot(tmp.path(), &[("appendonly", "yes"), ("save", "")]).await;
    let mut c = conn(&s).await;
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(list, ["1", "2"]);
    drop(c);
    s.shutdown().await;
}

/// WAITAOF answers once the client's own writes are fsynced, under each
/// `appendfsync`; a wait for a replica (there are none) ends at its timeout with
/// the local count as it then stands; turning the log off ends a local wait with
/// Redis's error; a log turned on again counts the writes made before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waitaof_waits_for_the_clients_writes_to_be_fsynced() {
    let tmp = tempfile::tempdir().unwrap();
    let s = boot(
        tmp.path(),
        &[
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("save", ""),
        ],
    )
    .await;
    let mut c = conn(&s).await;
    let mut admin = conn(&s).await;
    async fn waitaof(
        c: &mut MultiplexedConnection,
        args: [i64; 3],
    ) -> redis::RedisResult<Vec<i64>> {
        redis::cmd("WAITAOF").arg(&args[..]).query_async(c).await
    }
    async fn incr(c: &mut MultiplexedConnection) {
        let _: i64 = redis::cmd("INCR").arg("foo").query_async(c).await.unwrap();
    }
    // The cron (10 Hz) applies a changed `appendfsync` or `appendonly`.
    async fn set(c: &mut MultiplexedConnection, name: &str, value: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(c)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    // No write yet: nothing to wait for.
    assert_eq!(waitaof(&mut c, [1, 0, 0]).await.unwrap(), [1, 0]);
    // everysec: the next fsync, within about a second, acknowledges it.
    incr(&mut c).await;
    let started = std::time::Instant::now();
    assert_eq!(waitaof(&mut c, [1, 0, 0]).await.unwrap(), [1, 0]);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A replica is asked for: the wait lasts its timeout and says what is local.
    incr(&mut c).await;
    let started = std::time::Instant::now();
    assert_eq!(waitaof(&mut c, [1, 1, 2500]).await.unwrap(), [1, 0]);
    assert!(started.elapsed() >= Duration::from_millis(2400));

    // `no` never fsyncs: the timeout ends it, nothing local.
    set(&mut admin, "appendfsync", "no").await;
    incr(&mut c).await;
    assert_eq!(waitaof(&mut c, [1, 0, 50]).await.unwrap(), [0, 0]);
    // `always`: the reply to the write came after its fsync.
    set(&mut admin, "appendfsync", "always").await;
    incr(&mut c).await;
    let started = std::time::Instant::now();
    assert_eq!(waitaof(&mut c, [1, 0, 0]).await.unwrap(), [1, 0]);
    assert!(started.elapsed() < Duration::from_secs(2));

    // A local wait that cannot end (`no`) ends with the error once the log is off.
    set(&mut admin, "appendfsync", "no").await;
    incr(&mut c).await;
    let mut waiting = c.clone();
    let wait = tokio::spawn(async move { waitaof(&mut waiting, [1, 0, 0]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "it waits");
    set(&mut admin, "appendonly", "no").await;
    let e = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("released")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e.detail(),
        Some("WAITAOF cannot be used when numlocal is set but appendonly is disabled."),
        "{e}"
    );
    let e = waitaof(&mut c, [1, 0, 0]).await.unwrap_err();
    assert_eq!(e.code(), Some("ERR"), "{e}");
    assert_eq!(waitaof(&mut c, [0, 0, 0]).await.unwrap(), [0, 0]);

    // On again: the new log's base holds the earlier writes, and its sequence
    // continues past the old log's, so they count as on disk.
    set(&mut admin, "appendfsync", "everysec").await;
    set(&mut admin, "appendonly", "yes").await;
    assert_eq!(waitaof(&mut c, [1, 0, 3000]).await.unwrap(), [1, 0]);
    incr(&mut c).await;
    assert_eq!(waitaof(&mut c, [1, 0, 3000]).await.unwrap(), [1, 0]);
    drop(s);
}
