//! The binary's runtime reports its event loop as Redis does (INFO stats'
//! `eventloop_*`, INFO debug): the counters come from the runtime's park and
//! unpark hooks, which only the real binary installs.

mod persistence_support;

use std::time::{Duration, Instant};

fn number(node: &persistence_support::Node, c: &mut redis::Connection, field: &str) -> u64 {
    node.info_field(c, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing or not a number"))
}

#[test]
fn the_binary_counts_its_event_loop_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let node = persistence_support::start(dir.path(), &[("appendonly", "no"), ("save", "")]);
    let mut c = node.conn();
    for i in 0..100 {
        let _: () = redis::cmd("SET").arg(i).arg(i).query(&mut c).unwrap();
    }
    let cycles = number(&node, &mut c, "eventloop_cycles");
    assert!(cycles > 0);
    assert!(number(&node, &mut c, "eventloop_duration_sum") > 0);
    assert!(number(&node, &mut c, "eventloop_duration_cmd_sum") > 0);
    // The instantaneous figures come from the cron's samples (10 Hz).
    let deadline = Instant::now() + Duration::from_secs(10);
    while number(&node, &mut c, "instantaneous_eventloop_cycles_per_sec") == 0 {
        assert!(Instant::now() < deadline, "no instantaneous cycles");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(number(&node, &mut c, "eventloop_cycles") > cycles);
    // INFO debug only when asked for by name: not in INFO all.
    assert_eq!(node.info_field(&mut c, "eventloop_duration_max"), None);
    let debug: String = redis::cmd("INFO").arg("debug").query(&mut c).unwrap();
    let field = |name: &str| -> u64 {
        debug
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {debug}"))
    };
    assert!(field("eventloop_duration_cron_sum") > 0, "{debug}");
    assert!(field("eventloop_duration_max") > 0, "{debug}");
    assert!(field("eventloop_cmd_per_cycle_max") > 0, "{debug}");
    field("eventloop_duration_aof_sum");
}
