//! Server commands: FLUSHDB/FLUSHALL, DBSIZE, CONFIG, INFO, CLIENT, TIME, FUNCTION
//! FLUSH, DEBUG SLEEP.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, CommandSpec, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("server");
    vec![
        s(cmd("flushdb", -1, WRITE | ALL_KEYS, NO_KEYS, flushdb)
            .summary("Removes all keys from the current database.")),
        s(cmd("flushall", -1, WRITE | ALL_KEYS, NO_KEYS, flushall)
            .summary("Removes all keys from all databases.")),
        s(
            cmd("dbsize", 1, READONLY | FAST | ALL_KEYS, NO_KEYS, dbsize)
                .summary("Returns the number of keys in the database."),
        ),
        s(cmd(
            "time",
            1,
            LOADING | STALE | FAST | NO_KEYSPACE,
            NO_KEYS,
            time,
        )
        .summary("Returns the server time.")),
        s(cmd("config", -2, NO_KEYSPACE, NO_KEYS, help_stub)
            .summary("A container for server configuration commands.")
            .subs(vec![
                cmd(
                    "get",
                    -3,
                    ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    config_get,
                )
                .summary("Returns the effective values of configuration parameters."),
                cmd(
                    "set",
                    -4,
                    ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    config_set,
                )
                .summary("Sets configuration parameters in-flight."),
                cmd(
                    "resetstat",
                    2,
                    ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    config_resetstat,
                )
                .summary("Resets the server's statistics."),
            ])),
        s(
            cmd("info", -1, LOADING | STALE | NO_KEYSPACE, NO_KEYS, info)
                .summary("Returns information and statistics about the server."),
        ),
        s(cmd("function", -2, NO_KEYSPACE, NO_KEYS, help_stub)
            .summary("A container for function commands.")
            .group("scripting")
            .subs(vec![cmd(
                "flush",
                -2,
                WRITE | NOSCRIPT | NO_KEYSPACE,
                NO_KEYS,
                function_flush,
            )
            .summary("Deletes all libraries and functions.")])),
        s(cmd(
            "debug",
            -2,
            ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE,
            NO_KEYS,
            debug,
        )
        .summary("A container for debugging commands.")),
    ]
}

fn help_stub(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(vec![Reply::SimpleString(format!(
        "{} <subcommand> [<arg> [value] [opt] ...]",
        ctx.cmd.spec.name.to_ascii_uppercase()
    ))]))
}

/// Client names may not contain spaces, newlines or special characters.
pub fn validate_client_name(name: &[u8]) -> Result<(), CmdError> {
    if name.iter().any(|c| *c < b'!' || *c > b'~') {
        return Err(CmdError::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn flush_mode(args: &mut Args<'_>) -> Result<(), CmdError> {
    if !args.is_empty() && !args.flag("ASYNC") && !args.flag("SYNC") {
        return Err(CmdError::Syntax);
    }
    args.finish()
}

fn flushdb(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    flush_mode(args)?;
    let db = ctx.db();
    let n: usize = ctx
        .ks
        .db_parts(db)
        .map(|p| {
            let n = p.map.len();
            p.clear();
            n
        })
        .sum();
    ctx.ev.touched_dbs.push(Some(db));
    ctx.dirty(n.max(1) as u64);
    Ok(Reply::ok())
}

fn flushall(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    flush_mode(args)?;
    let mut n = 0;
    for db in 0..crate::keyspace::NUM_DBS {
        n += ctx
            .ks
            .db_parts(db)
            .map(|p| {
                let n = p.map.len();
                p.clear();
                n
            })
            .sum::<usize>();
    }
    ctx.ev.touched_dbs.push(None);
    ctx.dirty(n.max(1) as u64);
    Ok(Reply::ok())
}

fn dbsize(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let db = ctx.db();
    Ok(Reply::Int(ctx.ks.len(db) as i64))
}

fn time(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let us = crate::clock::now_us();
    Ok(Reply::Array(vec![
        Reply::bulk(Bytes::from((us / 1_000_000).to_string())),
        Reply::bulk(Bytes::from((us % 1_000_000).to_string())),
    ]))
}

fn config_get(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mut pairs = Vec::new();
    for pattern in args.rest() {
        for (k, v) in ctx.store.config.matching(pattern) {
            if !pairs.iter().any(|(pk, _): &(String, String)| *pk == k) {
                pairs.push((k, v));
            }
        }
    }
    Ok(Reply::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Reply::bulk(Bytes::from(k)), Reply::bulk(Bytes::from(v))))
            .collect(),
    ))
}

fn config_set(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let rest = args.rest();
    if !rest.len().is_multiple_of(2) {
        return Err(CmdError::WrongArity("config|set".into()));
    }
    for pair in rest.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]);
        let value = String::from_utf8_lossy(&pair[1]);
        ctx.store.config.set(&name, &value)?;
    }
    Ok(Reply::ok())
}

fn config_resetstat(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    for c in crate::command::registry().all() {
        c.stats.reset();
    }
    ctx.store
        .stats
        .total_error_replies
        .store(0, Ordering::Relaxed);
    ctx.store.slowlog.reset();
    Ok(Reply::ok())
}

fn info(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let sections: Vec<String> = args
        .rest()
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let text = crate::families::server_info::render(ctx.store, &sections);
    Ok(Reply::Verbatim("txt", Bytes::from(text)))
}

fn function_flush(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    flush_mode(args)?;
    Ok(Reply::ok())
}

fn debug(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let sub = args.next_upper()?;
    match sub.as_str() {
        "SLEEP" => {
            let secs = args.next_f64()?;
            if secs > 0.0 {
                std::thread::sleep(std::time::Duration::from_secs_f64(secs.min(3600.0)));
            }
            Ok(Reply::ok())
        }
        _ => Err(CmdError::err(format!(
            "unknown subcommand '{}'. Try DEBUG HELP.",
            sub.to_ascii_lowercase()
        ))),
    }
}
