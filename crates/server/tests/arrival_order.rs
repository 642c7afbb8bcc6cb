//! With one worker thread, commands that arrive together on different connections
//! run in the order they arrived, as in Redis's event loop. Redis's own suite relies
//! on it ("BRPOPLPUSH does not affect WATCH while still blocked"): an EXEC sent just
//! before an LPUSH that wakes a BRPOPLPUSH into the watched key must still commit.
//! Runs the real binary, since the runtime is chosen in `main`.

mod persistence_support;

use std::time::Duration;

use persistence_support as support;

#[test]
fn exec_sent_before_a_conflicting_push_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let node = support::try_start_with_env(
        tmp.path(),
        &[("appendonly", "no")],
        &[("TIDEWIRE_THREADS", "1")],
    )
    .unwrap_or_else(|e| panic!("tidewire did not start: {e}"));
    let mut main = node.conn();
    // The multi-threaded scheduler reversed the pair in most rounds (4 of 20 right).
    for round in 0..20 {
        let _: () = redis::cmd("DEL")
            .arg(&["src", "dst", "somekey"])
            .query(&mut main)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(&["somekey", "somevalue"])
            .query(&mut main)
            .unwrap();

        let mut blocked = node.conn();
        blocked
            .send_packed_command(
                &redis::cmd("BRPOPLPUSH")
                    .arg(&["src", "dst", "0"])
                    .get_packed_command(),
            )
            .unwrap();
        wait_blocked(&mut main, 1);

        let mut watching = node.conn();
        let _: () = redis::cmd("WATCH").arg("dst").query(&mut watching).unwrap();
        let _: () = redis::cmd("MULTI").query(&mut watching).unwrap();
        let _: () = redis::cmd("GET")
            .arg("somekey")
            .query(&mut watching)
            .unwrap();
        // EXEC goes out first; its reply is read only after the LPUSH.
        watching
            .send_packed_command(&redis::cmd("EXEC").get_packed_command())
            .unwrap();
        let _: i64 = redis::cmd("LPUSH")
            .arg(&["src", "element"])
            .query(&mut main)
            .unwrap();
        let exec = watching.recv_response().unwrap();
        assert_eq!(
            exec,
            redis::Value::Array(vec![redis::Value::BulkString(b"somevalue".to_vec())]),
            "round {round}: EXEC was aborted, so the LPUSH ran before it"
        );
        let moved = blocked.recv_response().unwrap();
        assert_eq!(
            moved,
            redis::Value::BulkString(b"element".to_vec()),
            "round {round}"
        );
    }
    node.stop();
}

/// Waits (bounded) until INFO reports `n` blocked clients.
fn wait_blocked(c: &mut redis::Connection, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query(c).unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if blocked == Some(n) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {n} blocked clients"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
