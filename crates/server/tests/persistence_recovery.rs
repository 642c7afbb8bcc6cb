//! Recovery from damaged logs: a truncated last entry is dropped with a warning;
//! corruption in the middle stops startup with the file and byte offset, and
//! `tidewire check-aof --fix` repairs it. Plus snapshots: SAVE/BGSAVE/LASTSAVE, a
//! crash during BGSAVE, and the snapshot written on shutdown.

mod persistence_support;

use std::io::Write;
use std::time::{Duration, Instant};

use persistence_support::*;
use tidewire_store::persistence::format::log_end;

const AOF: &[(&str, &str)] = &[
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("save", ""),
];

fn fill(node: &Node, prefix: &str, n: u64) {
    let mut c = node.conn();
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
}

fn count(c: &mut redis::Connection, prefix: &str, n: u64) -> u64 {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(c).unwrap();
    vals.iter().filter(|v| v.is_some()).count() as u64
}

/// Starts with the AOF, writes `k0..k{n}`, crashes (SIGKILL) and returns the
/// incremental file the writes went to.
fn fill_and_crash(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let node = start(dir, AOF);
    fill(&node, "k", n);
    let data = node.dir.clone();
    node.kill9();
    incr_files(&data).pop().unwrap()
}

/// Runs `tidewire check-aof` with `args`.
fn check_aof(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("check-aof")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn truncated_tail_is_dropped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let incr = fill_and_crash(tmp.path(), 100);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&incr)
        .unwrap();
    f.write_all(b"*3\r\n$3\r\nSET\r\n$5\r\nhalf").unwrap();
    drop(f);
    // The file was cut back, so new writes follow a valid entry.
    restart_write_and_restart(tmp.path(), 100).kill9();
}

/// Restarts, checks `k0..k{n}`, writes `after`, crashes, restarts and checks that
/// both survived: a write after a recovered log lands where the loader reads it.
fn restart_write_and_restart(dir: &std::path::Path, n: u64) -> Node {
    let node = start(dir, AOF);
    let mut c = node.conn();
    assert_eq!(count(&mut c, "k", n), n);
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut c)
        .unwrap();
    node.kill9();
    let node = start(dir, AOF);
    let mut c = node.conn();
    assert_eq!(count(&mut c, "k", n), n);
    assert_eq!(
        redis::cmd("GET")
            .arg("after")
            .query::<String>(&mut c)
            .unwrap(),
        "1"
    );
    node
}

#[test]
fn truncated_tail_refused_when_aof_load_truncated_is_no() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [
        ("appendonly", "yes"),
        ("save", ""),
        ("aof-load-truncated", "no"),
    ];
    let node = start(tmp.path(), &params);
    fill(&node, "k", 10);
    let data = node.dir.clone();
    node.stop();
    let incr = incr_files(&data).pop().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&incr)
        .unwrap();
    f.write_all(b"*2\r\n$3\r\nDEL").unwrap();
    drop(f);
    let err = try_start(tmp.path(), &params)
        .err()
        .expect("must refuse to start");
    assert!(err.contains("byte offset"), "{err}");
}

#[test]
fn corruption_mid_file_names_file_and_offset_and_check_aof_fixes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let incr = fill_and_crash(tmp.path(), 200);
    let entry = break_entry_of(&incr, "k150");

    let err = try_start(tmp.path(), AOF)
        .err()
        .expect("must refuse to start");
    let file_name = incr.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&file_name), "{err}");
    assert!(err.contains(&format!("byte offset {entry}")), "{err}");

    let out = check_aof(&[incr.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("byte offset {entry}")));
    let out = check_aof(&["--fix".as_ref(), incr.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&incr).unwrap().len(), entry as u64);

    let node = start(tmp.path(), AOF);
    let mut c = node.conn();
    assert_eq!(count(&mut c, "k", 150), 150);
    assert_eq!(count(&mut c, "k", 200), 150);
}

#[test]
fn corruption_before_a_value_of_zeros_is_not_mistaken_for_a_torn_tail() {
    // A zero sector only means "never reached the disk" where parsing stopped. A
    // damaged entry far before a value that holds 1 KiB of zeros must still refuse
    // to start rather than drop everything after it as a torn tail.
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), AOF);
    fill(&node, "k", 100);
    let mut c = node.conn();
    let _: () = redis::cmd("SET")
        .arg("blob")
        .arg(vec![0u8; 1024])
        .query(&mut c)
        .unwrap();
    fill(&node, "m", 10);
    let data = node.dir.clone();
    node.kill9();
    let incr = incr_files(&data).pop().unwrap();
    // The crashed, still preallocated log is valid as it is.
    let out = check_aof(&[incr.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = break_entry_of(&incr, "k50");
    let err = try_start(tmp.path(), AOF)
        .err()
        .expect("must refuse to start");
    assert!(err.contains(&format!("byte offset {entry}")), "{err}");
}

/// Breaks the array header of the entry that writes `key` in `incr`; returns its
/// offset.
fn break_entry_of(incr: &std::path::Path, key: &str) -> usize {
    let mut bytes = std::fs::read(incr).unwrap();
    let needle = format!("\r\n${}\r\n{key}\r\n", key.len());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    let entry = bytes[..at].iter().rposition(|b| *b == b'*').unwrap();
    bytes[entry] = b'?';
    std::fs::write(incr, &bytes).unwrap();
    entry
}

#[test]
fn always_writes_into_zeroed_space_and_shutdown_leaves_a_plain_log() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), AOF);
    fill(&node, "k", 100);
    let data = node.dir.clone();
    let incr = incr_files(&data).pop().unwrap();
    // Numbered from 1, as Redis does (its manifest parser refuses `seq 0`).
    assert!(
        incr.ends_with("appendonlydir/appendonly.aof.1.incr.aof"),
        "{incr:?}"
    );
    // Writes land in space zeroed ahead (one fdatasync flush each, no size change).
    let bytes = std::fs::read(&incr).unwrap();
    let end = log_end(&bytes);
    assert!(
        bytes.len() >= end + 512 * 1024,
        "{} bytes, log ends at {end}",
        bytes.len()
    );
    let mut c = node.conn();
    assert_eq!(
        node.info_field(&mut c, "aof_current_size").unwrap(),
        end.to_string()
    );
    // A crash leaves the zeros; the restart reads past them and appends at the log's
    // end, not after the zeros.
    node.kill9();
    let node = restart_write_and_restart(tmp.path(), 100);
    // A clean shutdown cuts the zeros off: the file is a plain RESP log again.
    node.stop();
    let bytes = std::fs::read(&incr).unwrap();
    assert!(
        bytes.ends_with(b"$5\r\nafter\r\n$1\r\n1\r\n"),
        "{:?}",
        &bytes[bytes.len().saturating_sub(40)..]
    );
    assert_eq!(log_end(&bytes), bytes.len());
    let out = check_aof(&[incr.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_write_that_never_reached_the_disk_is_dropped_at_load() {
    // A power loss can keep a later page of an unsynced write and lose an earlier
    // one: an entry beyond a zeroed gap. It was never acknowledged, so the load
    // drops it (with the truncated-tail warning) instead of refusing to start.
    let tmp = tempfile::tempdir().unwrap();
    let incr = fill_and_crash(tmp.path(), 50);
    let mut bytes = std::fs::read(&incr).unwrap();
    let end = log_end(&bytes);
    assert!(bytes.len() > end + 8192, "preallocated");
    let ghost = b"*3\r\n$3\r\nSET\r\n$5\r\nghost\r\n$1\r\n1\r\n";
    bytes[end + 4096..end + 4096 + ghost.len()].copy_from_slice(ghost);
    std::fs::write(&incr, &bytes).unwrap();
    let node = start(tmp.path(), AOF);
    let mut c = node.conn();
    assert_eq!(count(&mut c, "k", 50), 50);
    let ghost: Option<String> = redis::cmd("GET").arg("ghost").query(&mut c).unwrap();
    assert_eq!(ghost, None);
    assert!(node.stderr().contains("truncated"), "{}", node.stderr());
    // Cut back to the last entry: the next write follows it.
    assert_eq!(std::fs::metadata(&incr).unwrap().len() as usize, end);
}

#[test]
fn snapshot_save_bgsave_lastsave_and_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [("appendonly", "no"), ("save", "3600 1")];
    let node = start(tmp.path(), &params);
    let mut c = node.conn();
    fill(&node, "a", 100);
    let before: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let after: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(after > before);
    assert_eq!(
        node.info_field(&mut c, "rdb_changes_since_last_save")
            .as_deref(),
        Some("0")
    );
    fill(&node, "b", 100);
    let r: String = redis::cmd("BGSAVE").query(&mut c).unwrap();
    assert_eq!(r, "Background saving started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.info_field(&mut c, "rdb_bgsave_in_progress").as_deref() != Some("0") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        node.info_field(&mut c, "rdb_last_bgsave_status").as_deref(),
        Some("ok")
    );
    // Written after the BGSAVE: only the shutdown snapshot keeps it.
    fill(&node, "c", 10);
    node.stop();
    let node = start(tmp.path(), &params);
    let mut c = node.conn();
    assert_eq!(count(&mut c, "a", 100), 100);
    assert_eq!(count(&mut c, "b", 100), 100);
    assert_eq!(count(&mut c, "c", 10), 10);
}

/// A crash during BGSAVE leaves the previous snapshot or the new one, never a
/// broken file, and the snapshot is one point in time.
#[test]
fn crash_during_bgsave() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [("appendonly", "no"), ("save", "")];
    let mut rng = Rng(seed());
    for round in 0..4u64 {
        let node = start(tmp.path(), &params);
        let mut c = node.conn();
        // Every earlier round's batch is there in full or not at all.
        for r in 0..round {
            let n = count(&mut c, &format!("r{r}:"), 5000);
            assert!(n == 0 || n == 5000, "round {r}: {n} of 5000 keys");
        }
        let mut p = redis::pipe();
        for i in 0..5000 {
            p.cmd("SET").arg(format!("r{round}:{i}")).arg(i).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        let _: String = redis::cmd("BGSAVE").query(&mut c).unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        node.kill9();
    }
    let node = start(tmp.path(), &params);
    drop(node);
    // Temp files of interrupted saves are cleaned up at startup.
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("temp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A failed background save with save points set stops writes (`-MISCONF`, as
/// Redis with `stop-writes-on-bgsave-error yes`) until a save succeeds.
#[test]
fn failed_bgsave_stops_writes_until_a_save_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let params = [("appendonly", "no"), ("save", "3600 1")];
    let node = start(tmp.path(), &params);
    let mut c = node.conn();
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let good: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("dir")
        .arg(blocker.join("sub").to_string_lossy().to_string())
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("BGSAVE").query(&mut c).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.info_field(&mut c, "rdb_last_bgsave_status").as_deref() != Some("err") {
        assert!(Instant::now() < deadline, "BGSAVE did not fail");
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = redis::cmd("SET")
        .arg("b")
        .arg("2")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("MISCONF"), "{e}");
    assert_eq!(
        redis::cmd("GET").arg("a").query::<String>(&mut c).unwrap(),
        "1"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("dir")
        .arg(&good[1])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("b").arg("2").query(&mut c).unwrap();
}
