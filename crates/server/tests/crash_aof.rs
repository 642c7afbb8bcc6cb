//! Crash tests: the real binary, several writing clients, `kill -9` at random
//! moments, restart on the same data directory, and check what survived.
//!
//! - `appendfsync always`: every acknowledged write is present, and what is present
//!   for each client is a prefix of what it sent (nothing out of order, no holes).
//! - `appendfsync everysec`: the same ordering, and at most about a second lost
//!   (asserted generously: everything acknowledged 3 s before the kill survives).

mod persistence_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use persistence_support::*;

const WRITERS: usize = 4;

/// What one writer did in one round.
#[derive(Default, Clone)]
struct Progress {
    /// Steps sent (the last may or may not have been applied).
    sent: u64,
    /// Steps acknowledged, with the time of each acknowledgement.
    acked: Vec<Instant>,
}

/// Runs writers until `stop` or the connection dies. Each step is one pipelined batch
/// `SET r<round>:t<t>:<i> <i>` + `INCR c:t<t>`.
fn writers(
    node: &Node,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Progress>> {
    (0..WRITERS)
        .map(|t| {
            let url = node.url();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut p = Progress::default();
                let Ok(client) = redis::Client::open(url) else {
                    return p;
                };
                let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(5)) else {
                    return p;
                };
                let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let i = p.sent;
                    p.sent += 1;
                    let r: redis::RedisResult<((), i64)> = redis::pipe()
                        .cmd("SET")
                        .arg(format!("r{round}:t{t}:{i}"))
                        .arg(i)
                        .cmd("INCR")
                        .arg(format!("c:t{t}"))
                        .query(&mut c);
                    match r {
                        Ok(_) => p.acked.push(Instant::now()),
                        Err(_) => break,
                    }
                }
                p
            })
        })
        .collect()
}

/// Checks every round so far: for each writer, the keys present are exactly
/// `0..m` with `acked <= m <= sent` (`must` = how many acknowledged steps must be
/// present). Returns the number present per writer.
fn verify(c: &mut redis::Connection, history: &[(usize, Vec<(u64, u64)>)]) -> Vec<u64> {
    let mut present_total = vec![0u64; WRITERS];
    for (round, per_writer) in history {
        for (t, &(must, sent)) in per_writer.iter().enumerate() {
            if sent == 0 {
                continue;
            }
            let keys: Vec<String> = (0..sent).map(|i| format!("r{round}:t{t}:{i}")).collect();
            let mut vals: Vec<Option<u64>> = Vec::new();
            for chunk in keys.chunks(1000) {
                let v: Vec<Option<u64>> = redis::cmd("MGET").arg(chunk).query(c).unwrap();
                vals.extend(v);
            }
            let m = vals.iter().take_while(|v| v.is_some()).count() as u64;
            assert!(
                m >= must,
                "round {round} writer {t}: only {m} of {must} acknowledged writes survived"
            );
            assert!(
                vals[m as usize..].iter().all(|v| v.is_none()),
                "round {round} writer {t}: writes survived out of order (hole at {m})"
            );
            for (i, v) in vals.iter().enumerate().take(m as usize) {
                assert_eq!(*v, Some(i as u64), "round {round} writer {t} key {i}");
            }
            present_total[t] += m;
        }
    }
    present_total
}

fn crash_rounds(
    params: &[(&str, &str)],
    rounds: usize,
    min_ms: u64,
    max_ms: u64,
    grace: Option<Duration>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    let mut history: Vec<(usize, Vec<(u64, u64)>)> = Vec::new();
    let mut acked_steps = [0u64; WRITERS];
    let mut sent_steps = [0u64; WRITERS];
    let started = Instant::now();
    for round in 0..rounds {
        if started.elapsed() > Duration::from_secs(240) {
            eprintln!("time budget reached after {round} rounds");
            break;
        }
        let node = start(tmp.path(), params);
        {
            let mut c = node.conn();
            let present = verify(&mut c, &history);
            for t in 0..WRITERS {
                let counter: Option<u64> = redis::cmd("GET")
                    .arg(format!("c:t{t}"))
                    .query(&mut c)
                    .unwrap();
                let counter = counter.unwrap_or(0);
                // SET and INCR are separate commands: a crash may split a step.
                assert!(
                    counter + history.len() as u64 >= present[t] && counter <= sent_steps[t],
                    "writer {t}: counter {counter}, present {}, sent {}",
                    present[t],
                    sent_steps[t]
                );
                if grace.is_none() {
                    assert!(
                        counter >= acked_steps[t],
                        "writer {t}: counter {counter} < acked {}",
                        acked_steps[t]
                    );
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handles = writers(&node, round, stop.clone());
        std::thread::sleep(Duration::from_millis(min_ms + rng.below(max_ms - min_ms)));
        let killed_at = Instant::now();
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut per_writer = Vec::new();
        for (t, h) in handles.into_iter().enumerate() {
            let p = h.join().unwrap();
            let must = match grace {
                None => p.acked.len() as u64,
                Some(g) => p
                    .acked
                    .iter()
                    .filter(|at| killed_at.duration_since(**at) >= g)
                    .count() as u64,
            };
            acked_steps[t] += if grace.is_none() {
                p.acked.len() as u64
            } else {
                0
            };
            sent_steps[t] += p.sent;
            per_writer.push((must, p.sent));
        }
        eprintln!("round {round}: {:?}", per_writer);
        history.push((round, per_writer));
    }
    let node = start(tmp.path(), params);
    let mut c = node.conn();
    verify(&mut c, &history);
    node.stop();
}

#[test]
fn crash_always_keeps_every_acknowledged_write_in_order() {
    crash_rounds(
        &[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("save", ""),
        ],
        10,
        100,
        700,
        None,
    );
}

#[test]
fn crash_everysec_loses_at_most_about_a_second() {
    crash_rounds(
        &[
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("save", ""),
        ],
        3,
        3500,
        4500,
        Some(Duration::from_secs(3)),
    );
}

/// Crash at random moments during BGREWRITEAOF (with writes going on): the
/// manifest swap is atomic, so the log set is always loadable and complete.
#[test]
fn crash_during_rewrite() {
    let params = [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    let mut history: Vec<(usize, Vec<(u64, u64)>)> = Vec::new();
    {
        let node = start(tmp.path(), &params);
        let mut c = node.conn();
        let mut p = redis::pipe();
        for i in 0..50_000u64 {
            p.cmd("SET").arg(format!("bulk:{i}")).arg(i).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        node.stop();
    }
    for round in 0..4 {
        let node = start(tmp.path(), &params);
        let mut c = node.conn();
        verify(&mut c, &history);
        assert_eq!(
            redis::cmd("GET")
                .arg("bulk:49999")
                .query::<u64>(&mut c)
                .unwrap(),
            49_999
        );
        let stop = Arc::new(AtomicBool::new(false));
        let handles = writers(&node, round, stop.clone());
        std::thread::sleep(Duration::from_millis(50));
        let r: String = redis::cmd("BGREWRITEAOF").query(&mut c).unwrap();
        assert!(
            r.starts_with("Background append only file rewriting"),
            "{r}"
        );
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        let per_writer: Vec<(u64, u64)> = handles
            .into_iter()
            .map(|h| {
                let p = h.join().unwrap();
                (p.acked.len() as u64, p.sent)
            })
            .collect();
        history.push((round, per_writer));
    }
    let node = start(tmp.path(), &params);
    let mut c = node.conn();
    verify(&mut c, &history);
    let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(n >= 50_000);
    node.stop();
}
