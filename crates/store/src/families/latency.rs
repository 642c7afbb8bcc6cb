//! LATENCY: the per-command latency histograms (`HISTOGRAM`, Redis 7) and the
//! latency monitor's events (`LATEST`, `HISTORY`, `RESET`, and the text reports
//! drawn from them, `GRAPH` and `DOCTOR`).

use std::collections::BTreeMap;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, registry, Command, CommandSpec, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::latency_histogram::Counts;

pub fn commands() -> Vec<CommandSpec> {
    let admin = ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE;
    let sub = |name, arity, flags, handler, summary| {
        cmd(name, arity, flags, NO_KEYS, handler)
            .summary(summary)
            .group("server")
    };
    vec![cmd("latency", -2, NO_KEYSPACE, NO_KEYS, help)
        .summary("A container for latency diagnostics commands.")
        .group("server")
        .subs(vec![
            sub(
                "histogram",
                -2,
                admin,
                histogram,
                "Returns the cumulative distribution of latencies of a subset or all commands.",
            ),
            sub(
                "latest",
                2,
                admin,
                latest,
                "Returns the latest latency samples for all events.",
            ),
            sub(
                "history",
                3,
                admin,
                history,
                "Returns timestamp-latency samples for an event.",
            ),
            sub(
                "reset",
                -2,
                admin,
                reset,
                "Resets the latency data for one or more events.",
            ),
            sub(
                "graph",
                3,
                admin,
                graph,
                "Returns a latency graph for an event.",
            ),
            sub(
                "doctor",
                2,
                admin,
                doctor,
                "Returns a human-readable latency analysis report.",
            ),
            sub(
                "help",
                2,
                LOADING | STALE | NO_KEYSPACE,
                help,
                "Returns helpful text about the different subcommands.",
            ),
        ])]
}

fn help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(super::server::help_lines(
        "LATENCY",
        &[
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "GRAPH <event>",
            "    Return an ASCII latency graph for the <event> class.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HISTOGRAM [COMMAND ...]",
            "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
            "    If no commands are specified then all histograms are replied.",
        ],
    ))
}

/// `name => {calls, histogram_usec => {bound => runs below}}` of each command
/// (or subcommand of a named container) that ran since start or RESETSTAT.
fn histogram(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let commands: Vec<&'static Command> = if args.is_empty() {
        registry().all().collect()
    } else {
        let mut named: Vec<&'static Command> = Vec::new();
        let found = args
            .rest()
            .iter()
            .filter_map(|n| registry().by_full_name(n));
        for c in found.flat_map(|c| std::iter::once(c).chain(c.subs.values())) {
            // A command named twice (`LATENCY HISTOGRAM set set`) counts once.
            if !named.iter().any(|n| std::ptr::eq(*n, c)) {
                named.push(c);
            }
        }
        named
    };
    let mut out = Vec::new();
    for (name, counts) in histograms(commands) {
        let cdf = counts
            .power_of_two_cdf()
            .into_iter()
            .map(|(usec, runs)| (Reply::Int(usec as i64), Reply::Int(runs as i64)))
            .collect();
        out.push((
            Reply::bulk(name),
            Reply::Map(vec![
                (Reply::bulk("calls"), Reply::Int(counts.total as i64)),
                (Reply::bulk("histogram_usec"), Reply::Map(cdf)),
            ]),
        ));
    }
    Ok(Reply::Map(out))
}

/// The histograms of `commands` that ran, by the name their statistics show
/// (see `Registry::stats_owner`: DEBUG's subcommands make one `debug`).
pub fn histograms(
    commands: impl IntoIterator<Item = &'static Command>,
) -> BTreeMap<&'static str, Counts> {
    let mut out: BTreeMap<&'static str, Counts> = BTreeMap::new();
    for c in commands {
        let Some(counts) = c.stats.latency.counts() else {
            continue;
        };
        let name = registry().stats_owner(c).full_name.as_str();
        match out.get_mut(name) {
            Some(sum) => sum.add(&counts),
            None => {
                out.insert(name, counts);
            }
        }
    }
    out
}

/// `[event, time of the last sample, its latency (ms), the highest latency]`
/// per event.
fn latest(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(
        ctx.store
            .latency_events
            .latest()
            .into_iter()
            .map(|(event, time, latency, max)| {
                Reply::Array(vec![
                    Reply::bulk(event),
                    Reply::Int(time as i64),
                    Reply::Int(latency as i64),
                    Reply::Int(max as i64),
                ])
            })
            .collect(),
    ))
}

fn history(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let event = args.next_bytes()?;
    Ok(Reply::Array(
        ctx.store
            .latency_events
            .history(event)
            .into_iter()
            .map(|(time, latency)| {
                Reply::Array(vec![Reply::Int(time as i64), Reply::Int(latency as i64)])
            })
            .collect(),
    ))
}

fn reset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let events: Vec<&[u8]> = args.rest().iter().map(|e| &e[..]).collect();
    Ok(Reply::Int(ctx.store.latency_events.reset(&events) as i64))
}

/// Rows of a GRAPH's bars.
const GRAPH_ROWS: u64 = 4;

/// An event's samples as a bar chart, oldest on the left: a header with the
/// highest and lowest sample kept and the highest ever, then one column per
/// sample (`#` its top, `|` below), then how long ago the first and last were.
fn graph(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let event = args.next_bytes()?;
    let monitor = &ctx.store.latency_events;
    let samples = monitor.history(event);
    let Some(max_ever) = monitor
        .latest()
        .into_iter()
        .find(|(e, ..)| e.as_bytes() == &event[..])
        .map(|(.., max)| max)
    else {
        return Err(CmdError::err(format!(
            "No samples available for event '{}'",
            String::from_utf8_lossy(event)
        )));
    };
    let high = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let low = samples.iter().map(|s| s.1).min().unwrap_or(0);
    let mut out = format!(
        "{} - high {high} ms, low {low} ms (all time high {max_ever} ms)\n{}\n",
        String::from_utf8_lossy(event),
        "-".repeat(80)
    );
    let level = |latency: u64| {
        if high == low {
            GRAPH_ROWS
        } else {
            1 + (latency - low) * (GRAPH_ROWS - 1) / (high - low)
        }
    };
    let shown = &samples[samples.len().saturating_sub(80)..];
    for row in (1..=GRAPH_ROWS).rev() {
        let line: String = shown
            .iter()
            .map(|s| match level(s.1) {
                l if l == row => '#',
                l if l > row => '|',
                _ => ' ',
            })
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let now = crate::clock::now_ms() / 1000;
    if let (Some(first), Some(last)) = (shown.first(), shown.last()) {
        out.push_str(&format!(
            "{} samples, one per column: the first {} s ago, the last {} s ago\n",
            shown.len(),
            now.saturating_sub(first.0),
            now.saturating_sub(last.0)
        ));
    }
    Ok(Reply::Verbatim("txt", Bytes::from(out)))
}

/// A plain-text reading of the monitor's events: per event, how many spikes,
/// their average and the worst, and what usually causes that kind of event.
fn doctor(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let threshold = ctx
        .store
        .config
        .latency_monitor_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let monitor = &ctx.store.latency_events;
    let events = monitor.latest();
    let mut out = String::new();
    if events.is_empty() {
        if threshold == 0 {
            out.push_str(
                "The latency monitor is off (latency-monitor-threshold is 0), so there is \
                 nothing to analyse. CONFIG SET latency-monitor-threshold <milliseconds> \
                 records every call and expire cycle that takes at least that long.\n",
            );
        } else {
            out.push_str(&format!(
                "No latency spike recorded: nothing took {threshold} ms or more \
                 (latency-monitor-threshold) since the monitor was last reset.\n"
            ));
        }
        return Ok(Reply::Verbatim("txt", Bytes::from(out)));
    }
    out.push_str(&format!(
        "Latency spikes of {threshold} ms or more (latency-monitor-threshold), per event:\n\n"
    ));
    for (i, (event, _, _, max)) in events.iter().enumerate() {
        let samples = monitor.history(event.as_bytes());
        let n = samples.len().max(1) as u64;
        let avg = samples.iter().map(|s| s.1).sum::<u64>() / n;
        out.push_str(&format!(
            "{}. {event}: {} spikes kept, {avg} ms on average, the worst ever {max} ms.\n",
            i + 1,
            samples.len()
        ));
        let advice = match *event {
            "command" => {
                "   Slow commands: SLOWLOG GET lists them. Commands over big values (KEYS, \
                 SMEMBERS of large sets, LRANGE 0 -1 of long lists, long scripts) hold a \
                 worker for their whole run; SCAN and smaller ranges spread the work."
            }
            "fast-command" => {
                "   Commands that are O(1) or O(log N) took long: the machine was likely \
                 busy (other processes, CPU steal on a VM) or swapping."
            }
            "expire-cycle" => {
                "   The active expire cycle took long: many keys expiring at the same \
                 time. Spreading their TTLs (a little jitter) spreads the work."
            }
            _ => "   See SLOWLOG GET and INFO for what ran at those times.",
        };
        out.push_str(advice);
        out.push_str("\n\n");
    }
    Ok(Reply::Verbatim("txt", Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestClient;

    fn info_latencystats(t: &mut TestClient) -> String {
        match t.run(&["INFO", "latencystats"]) {
            Reply::Bulk(b) | Reply::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO reply: {other:?}"),
        }
    }

    fn line<'a>(info: &'a str, command: &str) -> Option<&'a str> {
        let prefix = format!("latency_percentiles_usec_{command}:");
        info.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    /// Command statistics are process-wide and other tests run beside this one:
    /// it never resets them, and the command it counts exactly (ECHO) is one no
    /// other test of this crate calls.
    #[test]
    fn percentiles_follow_the_config_and_tracking_can_be_off() {
        let mut t = TestClient::new();
        t.run(&["SET", "k", "v"]);
        let info = info_latencystats(&mut t);
        let set = line(&info, "set").unwrap_or_else(|| panic!("{info}"));
        let values: Vec<(&str, f64)> = set
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("p=v");
                assert_eq!(v.split_once('.').map(|(_, d)| d.len()), Some(3), "{set}");
                (k, v.parse().expect("a number"))
            })
            .collect();
        assert_eq!(
            values.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["p50", "p99", "p99.9"]
        );
        assert!(values.windows(2).all(|w| w[0].1 <= w[1].1), "{set}");

        let ok = Reply::ok();
        assert_eq!(
            t.run(&[
                "CONFIG",
                "SET",
                "latency-tracking-info-percentiles",
                "0.0 50.0 100.0"
            ]),
            ok
        );
        assert_eq!(
            t.run(&["CONFIG", "GET", "latency-tracking-info-percentiles"]),
            Reply::Map(vec![(
                Reply::Bulk("latency-tracking-info-percentiles".into()),
                Reply::Bulk("0 50 100".into())
            )])
        );
        let info = info_latencystats(&mut t);
        let set = line(&info, "set").unwrap_or_else(|| panic!("{info}"));
        assert!(
            set.starts_with("p0=") && set.contains(",p50=") && set.contains(",p100="),
            "{set}"
        );
        for bad in ["10.0 50.0 a", "10.0 50.0 101.0"] {
            assert!(matches!(
                t.run(&["CONFIG", "SET", "latency-tracking-info-percentiles", bad]),
                Reply::Error(e) if e.starts_with("ERR CONFIG SET failed")
            ));
        }
        assert_eq!(
            t.run(&["CONFIG", "GET", "latency-tracking-info-percentiles"]),
            Reply::Map(vec![(
                Reply::Bulk("latency-tracking-info-percentiles".into()),
                Reply::Bulk("0 50 100".into())
            )])
        );

        // Off: no line, and runs are not recorded.
        assert_eq!(t.run(&["CONFIG", "SET", "latency-tracking", "no"]), ok);
        assert_eq!(info_latencystats(&mut t), "# Latencystats\r\n");
        t.run(&["ECHO", "x"]);
        assert_eq!(t.run(&["LATENCY", "HISTOGRAM", "echo"]), Reply::Map(vec![]));
        assert_eq!(t.run(&["CONFIG", "SET", "latency-tracking", "yes"]), ok);
        t.run(&["ECHO", "x"]);
        let Reply::Map(echo) = t.run(&["LATENCY", "HISTOGRAM", "echo", "nosuch"]) else {
            panic!()
        };
        assert_eq!(echo.len(), 1);
        assert_eq!(echo[0].0, Reply::Bulk("echo".into()));
        let Reply::Map(fields) = &echo[0].1 else {
            panic!("{echo:?}")
        };
        assert_eq!(fields[0], (Reply::Bulk("calls".into()), Reply::Int(1)));
        let Reply::Map(cdf) = &fields[1].1 else {
            panic!("{fields:?}")
        };
        assert_eq!(fields[1].0, Reply::Bulk("histogram_usec".into()));
        assert_eq!(cdf.last().map(|(_, n)| n), Some(&Reply::Int(1)), "{cdf:?}");
    }

    #[test]
    fn histogram_of_a_container_lists_its_subcommands() {
        let mut t = TestClient::new();
        t.run(&["CLIENT", "ID"]);
        let Reply::Map(all) = t.run(&["LATENCY", "HISTOGRAM", "client"]) else {
            panic!()
        };
        assert!(
            all.iter()
                .any(|(k, _)| *k == Reply::Bulk("client|id".into())),
            "{all:?}"
        );
        let Reply::Map(one) = t.run(&["LATENCY", "HISTOGRAM", "client|id"]) else {
            panic!()
        };
        assert_eq!(one.len(), 1);
        let Reply::Map(every) = t.run(&["LATENCY", "HISTOGRAM"]) else {
            panic!()
        };
        assert!(every
            .iter()
            .any(|(k, _)| *k == Reply::Bulk("client|id".into())));
    }

    #[test]
    fn the_monitor_keeps_calls_over_its_threshold() {
        let mut t = TestClient::with_debug();
        assert_eq!(t.run(&["LATENCY", "LATEST"]), Reply::Array(vec![]));
        t.run(&["DEBUG", "SLEEP", "0.02"]);
        assert_eq!(
            t.run(&["LATENCY", "LATEST"]),
            Reply::Array(vec![]),
            "off by default"
        );
        // Well above what a preempted thread on a loaded machine could add to the
        // test's own commands (they are monitored too).
        t.run(&["CONFIG", "SET", "latency-monitor-threshold", "200"]);
        t.run(&["DEBUG", "SLEEP", "0.25"]);
        let Reply::Array(latest) = t.run(&["LATENCY", "LATEST"]) else {
            panic!()
        };
        assert_eq!(latest.len(), 1, "{latest:?}");
        let Reply::Array(event) = &latest[0] else {
            panic!()
        };
        assert_eq!(event[0], Reply::Bulk("command".into()));
        assert!(matches!(event[2], Reply::Int(ms) if ms >= 250), "{event:?}");
        assert!(matches!(event[3], Reply::Int(ms) if ms >= 250), "{event:?}");
        let Reply::Array(history) = t.run(&["LATENCY", "HISTORY", "command"]) else {
            panic!()
        };
        assert!(!history.is_empty());
        assert_eq!(
            t.run(&["LATENCY", "HISTORY", "nosuch"]),
            Reply::Array(vec![])
        );
        assert_eq!(t.run(&["LATENCY", "RESET", "nosuch"]), Reply::Int(0));
        assert_eq!(t.run(&["LATENCY", "RESET"]), Reply::Int(1));
        assert_eq!(t.run(&["LATENCY", "LATEST"]), Reply::Array(vec![]));
        // DEBUG's subcommands are arguments of one command in Redis: its calls
        // show as `debug`.
        let Reply::Map(debug) = t.run(&["LATENCY", "HISTOGRAM", "debug"]) else {
            panic!()
        };
        assert_eq!(debug.len(), 1);
        assert_eq!(debug[0].0, Reply::Bulk("debug".into()));
        let stats = match t.run(&["INFO", "commandstats"]) {
            Reply::Bulk(b) | Reply::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("{other:?}"),
        };
        assert!(stats.contains("\r\ncmdstat_debug:calls="), "{stats}");
        assert!(!stats.contains("cmdstat_debug|"), "{stats}");
        let text = |r: Reply| match r {
            Reply::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("{other:?}"),
        };
        let doctor = text(t.run(&["LATENCY", "DOCTOR"]));
        assert!(doctor.contains("No latency spike recorded"), "{doctor}");
        t.run(&["DEBUG", "SLEEP", "0.25"]);
        let doctor = text(t.run(&["LATENCY", "DOCTOR"]));
        assert!(doctor.contains("1. command: 1 spikes kept"), "{doctor}");
        let graph = text(t.run(&["LATENCY", "GRAPH", "command"]));
        let mut lines = graph.lines();
        let head = lines.next().unwrap_or_default();
        assert!(
            head.starts_with("command - high ") && head.contains(" ms, low "),
            "{graph}"
        );
        assert_eq!(lines.next(), Some("-".repeat(80).as_str()));
        assert_eq!(lines.next(), Some("#"), "{graph}");
        assert!(matches!(
            t.run(&["LATENCY", "GRAPH", "nosuch"]),
            Reply::Error(e) if e == "ERR No samples available for event 'nosuch'"
        ));
    }
}
