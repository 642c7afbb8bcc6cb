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
