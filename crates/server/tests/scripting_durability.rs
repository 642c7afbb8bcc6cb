//! What the AOF keeps of a script: the writes it made (not the script), as one
//! MULTI/EXEC block, so a restart applies the script whole.

mod persistence_support;

use persistence_support::*;

#[test]
fn a_scripts_writes_are_logged_as_one_block_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[("appendfsync", "always")]);
    let mut c = node.conn();
    let n: i64 = redis::cmd("EVAL")
        .arg("redis.call('set', KEYS[1], ARGV[1]) redis.call('rpush', 'undeclared', 'a', 'b') return redis.call('incrby', KEYS[2], 5)")
        .arg(2)
        .arg("k")
        .arg("counter")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 5);
    // A read-only script logs nothing.
    let _: Option<String> = redis::cmd("EVAL")
        .arg("return redis.call('get', KEYS[1])")
        .arg(1)
        .arg("k")
        .query(&mut c)
        .unwrap();
    let log: Vec<u8> = incr_files(&node.dir)
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    let log = String::from_utf8_lossy(&log).to_lowercase();
    assert!(
        !log.contains("eval"),
        "the script itself is not logged: {log}"
    );
    let multi = log.find("multi").expect("MULTI opens the block");
    let set = log.find("\r\nset\r\n").expect("SET logged");
    let rpush = log.find("rpush").expect("RPUSH logged");
    let exec = log.rfind("exec").expect("EXEC closes the block");
    assert!(multi < set && set < rpush && rpush < exec, "{log}");
    node.kill9();
    let node = start(dir.path(), &[]);
    let mut c = node.conn();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("undeclared")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(list, ["a", "b"]);
    let n: i64 = redis::cmd("GET").arg("counter").query(&mut c).unwrap();
    assert_eq!(n, 5);
}

#[test]
fn over_maxmemory_scripts_are_refused_before_they_write_and_never_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[("maxmemory-policy", "allkeys-lru")]);
    let mut c = node.conn();
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut c)
        .unwrap();
    // Below what the server itself needs: eviction empties the dataset and
    // memory stays over the limit.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query::<()>(&mut c)
        .unwrap();
    let err = redis::cmd("EVAL")
        .arg("#!lua\nreturn redis.call('set', 'a', 'b')")
        .arg(0)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("allow-oom flag is not set on the script"),
        "{err}"
    );
    let err = redis::cmd("EVAL")
        .arg("return redis.call('set', 'a', 'b')")
        .arg(0)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("command not allowed when used memory"),
        "{err}"
    );
    let one: i64 = redis::cmd("EVAL")
        .arg("#!lua flags=no-writes\nreturn 1")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(one, 1);
    let ok: String = redis::cmd("EVAL")
        .arg("#!lua flags=allow-oom\nreturn redis.call('set', 'a', 'b')")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query::<()>(&mut c)
        .unwrap();
    let ok: String = redis::cmd("EVAL")
        .arg("return redis.call('set', 'c', 'd')")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
}

/// With one worker thread nothing could answer SCRIPT KILL: an endless script
/// that wrote nothing is stopped past `busy-reply-threshold`, and every other
/// client is served again.
#[test]
fn an_endless_read_only_script_cannot_stop_a_single_threaded_server() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with_threads(dir.path(), 1, &[("busy-reply-threshold", "200")]);
    let mut looping = node.conn();
    let err = redis::cmd("EVAL")
        .arg("local n = 0 while true do n = n + 1 end")
        .arg(0)
        .query::<()>(&mut looping)
        .unwrap_err();
    assert!(
        err.to_string().contains("Script killed by the server"),
        "{err}"
    );
    let mut other = node.conn();
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");
    // A script that wrote is not stopped half-way: its writes stay whole.
    let n: i64 = redis::cmd("EVAL")
        .arg("redis.call('set', 'a', 1) local t = redis.call('time') return 1")
        .arg(0)
        .query(&mut other)
        .unwrap();
    assert_eq!(n, 1);
}

/// A server with `threads` worker threads and `params` in its config.
fn start_with_threads(dir: &std::path::Path, threads: u32, params: &[(&str, &str)]) -> Node {
    let threads = threads.to_string();
    try_start_with_env(dir, params, &[("TIDEWIRE_THREADS", threads.as_str())]).expect("starts")
}

/// Sends `cmd` (a script that will be busy) on a connection of its own, in the
/// background; the handle gives its reply.
fn in_background(node: &Node, cmd: redis::Cmd) -> std::thread::JoinHandle<redis::RedisResult<()>> {
    let mut c = node.conn();
    std::thread::spawn(move || cmd.query::<()>(&mut c))
}

/// PINGs (bounded, 20 s) until the server answers -BUSY; returns that error.
fn until_busy(c: &mut redis::Connection) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match redis::cmd("PING").query::<String>(c) {
            Err(e) if e.to_string().contains("BUSY") => return e.to_string(),
            _ if std::time::Instant::now() > deadline => panic!("PING never got -BUSY"),
            _ => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// With two worker threads another client sees `-BUSY` once a script is past
/// `busy-reply-threshold`, and SCRIPT KILL stops it.
#[test]
fn script_kill_stops_a_busy_script_on_a_multi_threaded_server() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with_threads(dir.path(), 2, &[("busy-reply-threshold", "100")]);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg("local n = 0 while true do n = n + 1 end").arg(0);
    let runner = in_background(&node, cmd);
    // Connections made while the script runs are accepted and served: a
    // command on a key waits for the threshold, then gets -BUSY. (A probe first
    // makes sure the script is running: the runner's EVAL may still be on its way.)
    let mut probe = node.conn();
    until_busy(&mut probe);
    let mut other = node.conn();
    let err = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut other)
        .unwrap_err();
    assert!(err.to_string().contains("BUSY"), "{err}");
    until_busy(&mut other);
    let ok: String = redis::cmd("SCRIPT").arg("KILL").query(&mut other).unwrap();
    assert_eq!(ok, "OK");
    let err = runner.join().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("Script killed by user with SCRIPT KILL"),
        "{err}"
    );
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");
}

/// A busy function: other clients get the FUNCTION KILL flavour of -BUSY,
/// FUNCTION STATS names it, SCRIPT KILL refuses it, FUNCTION KILL stops it.
#[test]
fn function_kill_stops_a_busy_function_and_script_kill_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with_threads(dir.path(), 2, &[("busy-reply-threshold", "100")]);
    let mut c = node.conn();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=spin\nredis.register_function('spin', function() local n = 0 while true do n = n + 1 end end)")
        .query(&mut c)
        .unwrap();
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("spin").arg(0);
    let runner = in_background(&node, cmd);
    let busy = until_busy(&mut c);
    assert!(
        busy.contains("You can only call FUNCTION KILL or SHUTDOWN NOSAVE"),
        "{busy}"
    );
    let stats: redis::Value = redis::cmd("FUNCTION").arg("STATS").query(&mut c).unwrap();
    let text = format!("{stats:?}");
    assert!(
        text.contains("spin") && text.contains("duration_ms"),
        "{text}"
    );
    let err = redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("FUNCTION KILL"), "{err}");
    let ok: String = redis::cmd("FUNCTION").arg("KILL").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let err = runner.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("Script killed by user"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

/// Waits (bounded) until INFO persistence shows `done` rewrites/saves finished.
fn wait_info(node: &Node, c: &mut redis::Connection, field: &str, want: &str) {
    for _ in 0..500 {
        if node.info_field(c, field).as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{field} never became {want}");
}

fn fcall(c: &mut redis::Connection, f: &str, keys: &[&str]) -> redis::RedisResult<redis::Value> {
    redis::cmd("FCALL")
        .arg(f)
        .arg(keys.len())
        .arg(keys)
        .query(c)
}

fn libraries(c: &mut redis::Connection) -> Vec<String> {
    let list: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("FUNCTION").arg("LIST").query(c).unwrap();
    let mut names: Vec<String> = list
        .iter()
        .map(|m| redis::from_redis_value(&m["library_name"]).unwrap())
        .collect();
    names.sort();
    names
}

const LIB_A: &str = "#!lua name=liba\nredis.register_function('fa', function(keys) return redis.call('incr', keys[1]) end)";
const LIB_B: &str = "#!lua name=libb\nredis.register_function{function_name='fb', callback=function() return 'b' end, flags={'no-writes'}}";
const LIB_C: &str = "#!lua name=libc\nredis.register_function('fc', function() return 'c' end)";

/// Functions are data, as in Redis: the log keeps FUNCTION LOAD / DELETE, a
/// rewrite's base file keeps the libraries, and a restart (after a crash, after an
/// AOF rewrite, from a snapshot alone) has them all back.
#[test]
fn function_libraries_survive_crashes_rewrites_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[("appendfsync", "always")]);
    let mut c = node.conn();
    for lib in [LIB_A, LIB_B, LIB_C] {
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(lib)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("libc")
        .query(&mut c)
        .unwrap();
    assert_eq!(fcall(&mut c, "fa", &["n"]).unwrap(), redis::Value::Int(1));
    node.kill9();

    // After a crash: replayed from the log.
    let node = start(dir.path(), &[("appendfsync", "always")]);
    let mut c = node.conn();
    assert_eq!(libraries(&mut c), ["liba", "libb"]);
    assert_eq!(fcall(&mut c, "fa", &["n"]).unwrap(), redis::Value::Int(2));
    let _: () = redis::cmd("BGREWRITEAOF").query(&mut c).unwrap();
    wait_info(&node, &mut c, "aof_rewrite_in_progress", "0");
    wait_info(&node, &mut c, "aof_rewrites", "1");
    // Changed after the rewrite's cut: goes to the new incremental file.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB_C)
        .query(&mut c)
        .unwrap();
    node.kill9();

    let node = start(dir.path(), &[("appendfsync", "always")]);
    let mut c = node.conn();
    assert_eq!(libraries(&mut c), ["liba", "libb", "libc"]);
    let fb: String = redis::cmd("FCALL_RO")
        .arg("fb")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(fb, "b");
    assert_eq!(fcall(&mut c, "fa", &["n"]).unwrap(), redis::Value::Int(3));
    node.stop();

    // A snapshot alone (no AOF) keeps them too.
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[("appendonly", "no")]);
    let mut c = node.conn();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB_A)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    node.kill9();
    let node = start(dir.path(), &[("appendonly", "no")]);
    let mut c = node.conn();
    assert_eq!(libraries(&mut c), ["liba"]);
    // FUNCTION FLUSH is durable as well.
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut c).unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    node.kill9();
    let node = start(dir.path(), &[("appendonly", "no")]);
    let mut c = node.conn();
    assert!(libraries(&mut c).is_empty());
}

/// The log keeps the order of effects on each key while scripts lock shards
/// lazily: single-key SETs and scripts that INCRBY the same keys (undeclared, so
/// each shard is locked only when the script reaches it, after it touched another
/// key) run from several threads; SET then INCRBY and INCRBY then SET replay to
/// different values, so a record out of order would show after the restart.
#[test]
fn lazily_locked_scripts_and_single_key_writes_replay_in_their_order() {
    const COUNTERS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let params = [("appendfsync", "everysec")];
    let node = start_with_threads(dir.path(), 4, &params);
    let script = "redis.call('incr', 'side') \
                  for i = 0, tonumber(ARGV[1]) - 1 do redis.call('incrby', 'counter:' .. i, 1) end \
                  return 1";
    let url = node.url();
    let workers: Vec<_> = (0..6u64)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut rng = Rng(w * 7919 + 17);
                for _ in 0..300 {
                    if w % 2 == 0 {
                        let _: i64 = redis::cmd("EVAL")
                            .arg(script)
                            .arg(0)
                            .arg(COUNTERS)
                            .query(&mut c)
                            .unwrap();
                    } else {
                        let key = format!("counter:{}", rng.below(COUNTERS as u64));
                        let v = rng.below(1000);
                        let _: () = redis::cmd("SET").arg(key).arg(v).query(&mut c).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let read = |c: &mut redis::Connection| -> Vec<Option<i64>> {
        (0..COUNTERS)
            .map(|i| {
                redis::cmd("GET")
                    .arg(format!("counter:{i}"))
                    .query(c)
                    .unwrap()
            })
            .collect()
    };
    let before = read(&mut node.conn());
    node.stop();
    let node = start(dir.path(), &[]);
    assert_eq!(
        read(&mut node.conn()),
        before,
        "the replay reordered writes"
    );
}

/// A busy script that has written can be stopped only by SHUTDOWN NOSAVE (plain
/// SHUTDOWN gets -BUSY, SCRIPT KILL -UNKILLABLE): the process exits at once, and
/// after a restart every acknowledged write is there and none of the script's.
#[test]
fn shutdown_nosave_stops_the_server_under_a_busy_script_that_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_with_threads(
        dir.path(),
        2,
        &[("busy-reply-threshold", "100"), ("appendfsync", "always")],
    );
    let mut c = node.conn();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg("redis.call('set', 'inscript', 'x') while true do end")
        .arg(0);
    let runner = in_background(&node, cmd);
    until_busy(&mut c);
    let err = redis::cmd("SHUTDOWN").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("BUSY"), "{err}");
    let err = redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("UNKILLABLE"), "{err}");
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut c);
    assert!(
        node.exited_within(std::time::Duration::from_secs(10)),
        "SHUTDOWN NOSAVE did not stop the server"
    );
    assert!(
        runner.join().unwrap().is_err(),
        "the script's caller got a reply"
    );
    let node = start(dir.path(), &[]);
    let mut c = node.conn();
    let before: Option<String> = redis::cmd("GET").arg("before").query(&mut c).unwrap();
    assert_eq!(before.as_deref(), Some("1"));
    let inscript: Option<String> = redis::cmd("GET").arg("inscript").query(&mut c).unwrap();
    assert_eq!(inscript, None, "half of the script survived");
}

/// An EXEC that arrives while a script is busy is refused as Redis refuses it:
/// `-EXECABORT … because of: BUSY …`, none of the transaction runs, and the
/// connection leaves MULTI.
#[test]
fn exec_during_a_busy_script_aborts_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with_threads(dir.path(), 2, &[("busy-reply-threshold", "50")]);
    let mut c = node.conn();
    let _: () = redis::cmd("SET").arg("xx").arg("1").query(&mut c).unwrap();
    let mut tx = node.conn();
    let _: () = redis::cmd("MULTI").query(&mut tx).unwrap();
    let queued: String = redis::cmd("INCR").arg("xx").query(&mut tx).unwrap();
    assert_eq!(queued, "QUEUED");
    let mut cmd = redis::cmd("EVAL");
    cmd.arg("while true do end").arg(0);
    let runner = in_background(&node, cmd);
    until_busy(&mut c);
    let err = redis::cmd("EXEC").query::<()>(&mut tx).unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::ExecAbortError, "{err}");
    assert!(
        err.to_string()
            .contains("Transaction discarded because of: BUSY"),
        "{err}"
    );
    let ok: String = redis::cmd("SCRIPT").arg("KILL").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    assert!(runner.join().unwrap().is_err());
    let xx: String = redis::cmd("GET").arg("xx").query(&mut c).unwrap();
    assert_eq!(xx, "1", "part of the transaction ran");
    let pong: String = redis::cmd("PING").arg("asdf").query(&mut tx).unwrap();
    assert_eq!(pong, "asdf", "the connection is still in MULTI");
}
