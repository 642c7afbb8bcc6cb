//! Persistence and memory commands: SAVE, BGSAVE, BGREWRITEAOF, LASTSAVE, WAITAOF,
//! MEMORY.
//! The work itself lives in `crate::persistence` and `crate::evict`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::blocking::BlockKind;
use crate::command::{
    cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, RequestPolicy, ResponsePolicy,
    NO_KEYS,
};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::persistence::{self, RewriteStart};

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("server");
    vec![
        s(cmd(
            "save",
            1,
            ADMIN | NOSCRIPT | NO_MULTI | NO_KEYSPACE,
            NO_KEYS,
            save,
        )
        .summary("Synchronously saves the database(s) to disk.")),
        s(cmd(
            "bgsave",
            -1,
            ADMIN | NOSCRIPT | NO_KEYSPACE,
            NO_KEYS,
            bgsave,
        )
        .summary("Asynchronously saves the database(s) to disk.")),
        s(cmd(
            "bgrewriteaof",
            1,
            ADMIN | NOSCRIPT | NO_KEYSPACE,
            NO_KEYS,
            bgrewriteaof,
        )
        .summary("Asynchronously rewrites the append-only file to disk.")),
        s(cmd(
            "lastsave",
            1,
            LOADING | STALE | FAST | NO_KEYSPACE,
            NO_KEYS,
            lastsave,
        )
        .summary("Returns the Unix timestamp of the last successful save to disk.")),
        s(cmd(
            "waitaof",
            4,
            NOSCRIPT | BLOCKING | NO_KEYSPACE | AFTER_OWN_WRITES,
            NO_KEYS,
            waitaof,
        )
        .blocks_on(BlockKind::Fsync)
        .summary("Blocks until all of the preceding write commands sent by the connection are written to the append-only file of the master and/or replicas.")
        .group("generic")
        .acl_category("connection")
        .unlisted(BLOCKING)
        .policy(RequestPolicy::AllShards, ResponsePolicy::AggMin)),
        s(cmd("memory", -2, NO_KEYSPACE, NO_KEYS, memory_help)
            .summary("A container for memory diagnostics commands.")
            .subs(vec![
                cmd("usage", -3, READONLY, keys(2, 2, 1), memory_usage)
                    .key_roles(KeyRoles::Each(&[kf::RO]))
                    .summary("Estimates the memory usage of a key."),
                cmd("stats", 2, ALL_KEYS, NO_KEYS, memory_stats)
                    .summary("Returns details about memory usage."),
                cmd("doctor", 2, ALL_KEYS, NO_KEYS, memory_doctor)
                    .summary("Outputs a memory problems report."),
                cmd("malloc-stats", 2, ALL_KEYS, NO_KEYS, memory_malloc_stats)
                    .summary("Returns the allocator statistics."),
                cmd("purge", 2, NO_KEYSPACE, NO_KEYS, memory_purge)
                    .summary("Asks the allocator to release memory."),
                cmd(
                    "help",
                    2,
                    LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    memory_help,
                )
                .summary("Returns helpful text about the different subcommands."),
            ])),
    ]
}

fn save(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    persistence::save_now(ctx.store).map_err(CmdError::err)?;
    Ok(Reply::ok())
}

fn bgsave(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let schedule = args.flag("SCHEDULE");
    args.finish()?;
    match persistence::bgsave(ctx.store) {
        Ok(()) => Ok(Reply::Status("Background saving started")),
        Err(_) if schedule && ctx.store.persist.job().is_some() => {
            // Runs when the current job ends (the cron's save points pick it up
            // only with changes, so start it from the scheduler flag instead).
            ctx.store
                .persist
                .save_scheduled
                .store(true, Ordering::Relaxed);
            Ok(Reply::Status("Background saving scheduled"))
        }
        Err(e) => Err(CmdError::err(e)),
    }
}

fn bgrewriteaof(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    match persistence::bgrewrite(ctx.store).map_err(CmdError::err)? {
        RewriteStart::Started => Ok(Reply::Status(
            "Background append only file rewriting started",
        )),
        RewriteStart::Scheduled => Ok(Reply::Status(
            "Background append only file rewriting scheduled",
        )),
    }
}

fn lastsave(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(
        ctx.store.last_save_secs.load(Ordering::Relaxed) as i64
    ))
}

/// WAITAOF numlocal numreplicas timeout: waits until this client's writes are
/// fsynced to the local append-only file (`numlocal` 1) and `numreplicas`
/// replicas (there are none: such a wait ends at its timeout). Replies
/// `[local, replicas]` as they stand when it ends; without blocking (MULTI) at once.
fn waitaof(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let numlocal = args.next_i64()?;
    if !(0..=1).contains(&numlocal) {
        return Err(CmdError::err(
            "value is out of range, value must between 0 and 1",
        ));
    }
    let numreplicas = args.next_i64()?;
    if numreplicas < 0 {
        return Err(CmdError::err("value is out of range, must be positive"));
    }
    let timeout = super::server::wait_timeout(args)?;
    if numlocal > 0 && !ctx.store.config.get_bool("appendonly") {
        return Err(CmdError::err(
            "WAITAOF cannot be used when numlocal is set but appendonly is disabled.",
        ));
    }
    let local = ctx
        .store
        .persist
        .aof()
        .and_then(|aof| aof.fsynced())
        .is_some_and(|synced| synced >= ctx.client.write_seq) as i64;
    let reply = Reply::Array(vec![Reply::Int(local), Reply::Int(0)]);
    if (local >= numlocal && numreplicas == 0) || ctx.no_block {
        return Ok(reply);
    }
    Ok(ctx.block(Vec::new(), timeout, reply))
}

fn memory_usage(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let key = args.next_bytes()?.clone();
    if args.flag("SAMPLES") {
        let n = args.next_i64()?;
        if n < 0 {
            return Err(CmdError::Syntax);
        }
    }
    args.finish()?;
    let db = ctx.db();
    match ctx.ks.get(db, &key, ctx.now) {
        None => Ok(Reply::Null),
        Some(e) => Ok(Reply::Int(crate::evict::entry_size(&key, e) as i64)),
    }
}

fn memory_stats(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    // Over the command's own lock (ALL_KEYS): see `evict::memory_in`.
    let (used, rss) = crate::evict::memory_in(ctx.ks);
    let (keys, dataset) = crate::evict::dataset_in(ctx.ks);
    let field = |k: &str, v: Reply| (Reply::bulk(Bytes::from(k.to_string())), v);
    let peak = ctx
        .store
        .persist
        .peak_memory
        .fetch_max(used, Ordering::Relaxed)
        .max(used);
    Ok(Reply::Map(vec![
        field("peak.allocated", Reply::Int(peak as i64)),
        field("total.allocated", Reply::Int(used as i64)),
        field("startup.allocated", Reply::Int(0)),
        field("keys.count", Reply::Int(keys as i64)),
        field(
            "keys.bytes-per-key",
            Reply::Int(dataset.checked_div(keys).unwrap_or(0) as i64),
        ),
        field("dataset.bytes", Reply::Int(dataset as i64)),
        field(
            "dataset.percentage",
            Reply::Double(if used > 0 {
                dataset as f64 * 100.0 / used as f64
            } else {
                0.0
            }),
        ),
        field("allocator.resident", Reply::Int(rss as i64)),
        field(
            "fragmentation",
            Reply::Double(if used > 0 {
                rss as f64 / used as f64
            } else {
                1.0
            }),
        ),
        field(
            "evicted.keys",
            Reply::Int(ctx.store.stats.evicted_keys.load(Ordering::Relaxed) as i64),
        ),
    ]))
}

fn memory_doctor(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let (used, rss) = crate::evict::memory_in(ctx.ks);
    let max = ctx.store.config.maxmemory.load(Ordering::Relaxed);
    let mut notes = Vec::new();
    if used < 5 << 20 {
        notes.push("Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting.".to_string());
    } else {
        if max > 0 && used > max {
            notes.push(format!("* Used memory ({used} bytes) is above maxmemory ({max} bytes): writes are refused or keys are evicted, per maxmemory-policy."));
        }
        if rss as f64 > used as f64 * 1.5 {
            notes.push(format!(
                "* High fragmentation: RSS is {:.2} times the allocated memory.",
                rss as f64 / used as f64
            ));
        }
        if notes.is_empty() {
            notes.push("Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.".to_string());
        }
    }
    Ok(Reply::Verbatim("txt", Bytes::from(notes.join("\n"))))
}

fn memory_malloc_stats(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let (used, rss) = crate::evict::memory_in(ctx.ks);
    Ok(Reply::Verbatim(
        "txt",
        Bytes::from(format!("allocated: {used}\nresident: {rss}\n")),
    ))
}

fn memory_purge(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::ok())
}

fn memory_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let lines = [
        "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "DOCTOR",
        "    Return memory problems reports.",
        "MALLOC-STATS",
        "    Return internal statistics report from the memory allocator.",
        "PURGE",
        "    Attempt to purge dirty pages for reclamation by the allocator.",
        "STATS",
        "    Return information about the memory usage of the server.",
        "USAGE <key> [SAMPLES <count>]",
        "    Return memory in bytes used by <key> and its value. Nested values are",
        "    sampled up to <count> times (default: 5, 0 means sample all).",
        "HELP",
        "    Print this help.",
    ];
    Ok(Reply::Array(
        lines
            .iter()
            .map(|l| Reply::SimpleString(l.to_string()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;

    #[test]
    fn lastsave_and_memory_usage() {
        let mut t = TestClient::new();
        assert!(matches!(t.run(&["LASTSAVE"]), tidewire_resp::Reply::Int(n) if n > 0));
        assert_eq!(
            t.run(&["MEMORY", "USAGE", "nope"]),
            tidewire_resp::Reply::Null
        );
        t.run(&["SET", "k", "hello"]);
        assert!(matches!(t.run(&["MEMORY", "USAGE", "k"]), tidewire_resp::Reply::Int(n) if n > 5));
        assert_eq!(
            t.run(&["MEMORY", "NOPE"]),
            err("ERR unknown subcommand 'NOPE'. Try MEMORY HELP.")
        );
    }

    #[test]
    fn waitaof_checks_its_arguments_as_redis() {
        use tidewire_resp::Reply;
        let mut t = TestClient::new();
        let cases = [
            (
                ["x", "0", "0"],
                "ERR value is not an integer or out of range",
            ),
            (
                ["2", "0", "0"],
                "ERR value is out of range, value must between 0 and 1",
            ),
            (
                ["-1", "0", "0"],
                "ERR value is out of range, value must between 0 and 1",
            ),
            (
                ["0", "x", "0"],
                "ERR value is not an integer or out of range",
            ),
            (
                ["0", "-1", "0"],
                "ERR value is out of range, must be positive",
            ),
            (
                ["0", "0", "x"],
                "ERR timeout is not an integer or out of range",
            ),
            (["0", "0", "-5"], "ERR timeout is negative"),
            // Every argument is read before the log is looked at.
            (["1", "0", "-5"], "ERR timeout is negative"),
            (
                ["1", "0", "0"],
                "ERR WAITAOF cannot be used when numlocal is set but appendonly is disabled.",
            ),
        ];
        for (args, e) in cases {
            let mut argv = vec!["WAITAOF"];
            argv.extend(args);
            assert_eq!(t.run(&argv), err(e), "{args:?}");
        }
        assert_eq!(
            t.run(&["WAITAOF", "1", "0"]),
            err("ERR wrong number of arguments for 'waitaof' command")
        );
        // No log and no replicas: nothing to count, nothing to wait for.
        let none = Reply::Array(vec![Reply::Int(0), Reply::Int(0)]);
        assert_eq!(t.run(&["WAITAOF", "0", "0", "0"]), none);
        // Inside MULTI it never waits, even for a replica that does not exist.
        t.run(&["MULTI"]);
        t.run(&["WAITAOF", "0", "1", "0"]);
        assert_eq!(t.run(&["EXEC"]), Reply::Array(vec![none]));
        // Nor in a script: it is not allowed there.
        let r = t.run(&["EVAL", "return redis.call('waitaof', 0, 0, 0)", "0"]);
        assert!(
            matches!(&r, Reply::Error(e) if e.starts_with("ERR This Redis command is not allowed from script")),
            "{r:?}"
        );
    }
}
