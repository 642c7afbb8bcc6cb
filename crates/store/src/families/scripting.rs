//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT, as Redis 7.2 has them.
//!
//! A script is a transaction with a body: it holds the whole keyspace while it
//! runs (`ALL_KEYS`: the keyspace gate exclusively, and each shard from its first
//! touch to the script's end), so no other client's command interleaves with it,
//! and it may touch keys it did not declare (BullMQ's scripts build job keys from
//! a prefix) without losing atomicity. Its writes are logged as the commands it
//! ran (effects replication, as Redis 7), wrapped in MULTI/EXEC when there are
//! several, so a replay after a crash applies all of a script or none of it.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tidewire_resp::{Protocol, Reply};

use crate::args::Args;
use crate::command::{cmd, flag::*, CommandSpec, Keys, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::server::help_lines;
use crate::scripting::cache::Script;
use crate::scripting::host::{ClientState, CommandHost, Rules};

/// EVAL-family key positions: `numkeys` at 2, the keys after it.
fn eval_keys(argv: &[Bytes]) -> Vec<usize> {
    let n = argv
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    (3..3usize.saturating_add(n).min(argv.len())).collect()
}

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("scripting");
    let eval_flags = NOSCRIPT | SKIP_MONITOR | STALE | ALL_KEYS;
    vec![
        s(cmd("eval", -3, eval_flags, Keys::Custom(eval_keys), eval)
            .summary("Executes a server-side Lua script.")),
        s(
            cmd("evalsha", -3, eval_flags, Keys::Custom(eval_keys), evalsha)
                .summary("Executes a server-side Lua script by SHA1 digest."),
        ),
        s(cmd(
            "eval_ro",
            -3,
            eval_flags | READONLY,
            Keys::Custom(eval_keys),
            eval_ro,
        )
        .summary("Executes a read-only server-side Lua script.")),
        s(cmd(
            "evalsha_ro",
            -3,
            eval_flags | READONLY,
            Keys::Custom(eval_keys),
            evalsha_ro,
        )
        .summary("Executes a read-only server-side Lua script by SHA1 digest.")),
        s(cmd("script", -2, NO_KEYSPACE, NO_KEYS, script_help)
            .summary("A container for Lua scripts management commands.")
            .subs(vec![
                cmd(
                    "load",
                    3,
                    NOSCRIPT | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    script_load,
                )
                .summary("Loads a server-side Lua script to the script cache."),
                cmd(
                    "exists",
                    -3,
                    NOSCRIPT | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    script_exists,
                )
                .summary("Determines whether server-side Lua scripts exist in the script cache."),
                cmd("flush", -2, NOSCRIPT | NO_KEYSPACE, NO_KEYS, script_flush)
                    .summary("Removes all server-side Lua scripts from the script cache."),
                cmd(
                    "kill",
                    2,
                    NOSCRIPT | ALLOW_BUSY | NO_KEYSPACE,
                    NO_KEYS,
                    script_kill,
                )
                .summary("Terminates a server-side Lua script during execution."),
                cmd(
                    "help",
                    2,
                    LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    script_help,
                )
                .summary("Returns helpful text about the different subcommands."),
            ])),
    ]
}

fn eval(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    run(ctx, args, By::Body, false)
}

fn evalsha(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    run(ctx, args, By::Sha, false)
}

fn eval_ro(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    run(ctx, args, By::Body, true)
}

fn evalsha_ro(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    run(ctx, args, By::Sha, true)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Body,
    Sha,
}

fn noscript() -> CmdError {
    CmdError::raw("NOSCRIPT No matching script. Please use EVAL.")
}

fn run(ctx: &mut Ctx<'_>, args: &mut Args<'_>, by: By, ro: bool) -> CmdResult {
    let store = ctx.store;
    let first = args.next_owned()?;
    // EVALSHA knows at once that a SHA of another length cannot match.
    if by == By::Sha && first.len() != 40 {
        return Err(noscript());
    }
    let numkeys = args.next_i64()?;
    let rest = args.rest();
    if numkeys > rest.len() as i64 {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    if numkeys < 0 {
        return Err(CmdError::err("Number of keys can't be negative"));
    }
    let (keys, argv) = rest.split_at(numkeys as usize);
    let (sha, script) = match by {
        By::Sha => {
            let sha = String::from_utf8_lossy(&first).to_ascii_lowercase();
            let script = store.scripts.get(&sha).ok_or_else(noscript)?;
            (sha, script)
        }
        By::Body => store.scripts.load(&first).map_err(CmdError::raw)?,
    };
    let rules = prepare(ctx, &script, ro)?;
    // The caller's own protocol shapes the final reply; the script's commands see
    // RESP2 unless it asks for RESP3 (`redis.setresp`).
    let caller_proto = ctx.client.proto;
    let saved = ClientState::save(ctx);
    ctx.client.proto = Protocol::Resp2;
    let log_from = ctx.ev.propagated.len();
    let dirty_before = ctx.ev.dirty;
    store.scripts.running.begin();
    let result = store.scripts.with_script(&sha, &script, |env| {
        let mut host = CommandHost::new(ctx, rules);
        let reply = env.run(&sha, keys, argv, caller_proto, &mut host);
        (reply, env.error_counted())
    });
    store.scripts.running.end();
    saved.restore(ctx);
    // The commands the script ran counted their own changes; the script itself is
    // not logged (its effects are) and counts none of its own.
    ctx.ev.dirty = dirty_before;
    ctx.propagate_nothing();
    ctx.own_touches();
    wrap_in_transaction(ctx, log_from);
    match result {
        // A command's error the script passed on was counted when the command
        // failed: the script's call fails, but the error is not counted twice.
        Ok((Reply::Error(e), true)) => {
            ctx.cmd.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
            Ok(Reply::Error(e))
        }
        Ok((Reply::Error(e), false)) => Err(CmdError::raw(e)),
        Ok((reply, _)) => Ok(reply),
        Err(e) => Err(CmdError::raw(e)),
    }
}

/// Redis's checks before a script with a shebang runs (scripts without one are
/// checked command by command instead, as in Redis's compatibility mode).
fn prepare(ctx: &Ctx<'_>, script: &Script, ro: bool) -> Result<Rules, CmdError> {
    let f = script.flags;
    if !f.shebang {
        return Ok(Rules {
            read_only: ro,
            allow_oom: false,
        });
    }
    if !f.no_writes {
        if let Some(e) = crate::persistence::write_refusal(ctx.store) {
            return Err(e);
        }
        if ro {
            return Err(CmdError::err(
                "Can not execute a script with write flag using *_ro command.",
            ));
        }
        if !f.allow_oom && crate::evict::over_limit(ctx.store) {
            return Err(CmdError::raw(
                "OOM allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'",
            ));
        }
    }
    Ok(Rules {
        read_only: ro || f.no_writes,
        allow_oom: f.allow_oom || f.no_writes,
    })
}

/// Several logged writes of one script become one MULTI … EXEC block, unless the
/// script runs inside a transaction, whose EXEC already wraps everything.
fn wrap_in_transaction(ctx: &mut Ctx<'_>, from: usize) {
    let ev = &mut *ctx.ev;
    if ev.in_transaction || ev.propagated.len() <= from + 1 {
        return;
    }
    let first_db = ev.propagated[from].0;
    let last_db = ev.propagated.last().map_or(first_db, |p| p.0);
    ev.propagated
        .insert(from, (first_db, vec![Bytes::from_static(b"MULTI")]));
    ev.propagated
        .push((last_db, vec![Bytes::from_static(b"EXEC")]));
}

fn script_load(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let body = args.next_owned()?;
    let (sha, _) = ctx.store.scripts.load(&body).map_err(CmdError::raw)?;
    Ok(Reply::Bulk(Bytes::from(sha)))
}

fn script_exists(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let scripts = &ctx.store.scripts;
    Ok(Reply::Array(
        args.rest()
            .iter()
            .map(|sha| {
                let known = std::str::from_utf8(sha).is_ok_and(|s| scripts.contains(s));
                Reply::Int(known as i64)
            })
            .collect(),
    ))
}

fn script_flush(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    match args.rest() {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {}
        _ => return Err(CmdError::err("SCRIPT FLUSH only support SYNC|ASYNC option")),
    }
    ctx.store.scripts.flush();
    Ok(Reply::ok())
}

fn script_kill(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let running = &ctx.store.scripts.running;
    if !running.is_running() {
        return Err(CmdError::raw("NOTBUSY No scripts in execution right now."));
    }
    if running.wrote.load(Ordering::SeqCst) {
        return Err(CmdError::raw(
            "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        ));
    }
    running.kill.store(true, Ordering::SeqCst);
    Ok(Reply::ok())
}

fn script_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(help_lines(
        "SCRIPT",
        &[
            "EXISTS <sha1> [<sha1> ...]",
            "    Tell which of the given SHA1 digests name a cached script (1) or not (0).",
            "FLUSH [ASYNC|SYNC]",
            "    Empty the script cache.",
            "KILL",
            "    Stop the script that is running, if it has not written anything yet.",
            "LOAD <script>",
            "    Compile a script and keep it in the cache without running it; reply with its SHA1.",
        ],
    ))
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn info_field(t: &mut TestClient, section: &str, field: &str) -> String {
        let b = match t.run(&["INFO", section]) {
            Reply::Bulk(b) | Reply::Verbatim(_, b) => b,
            other => panic!("INFO reply: {other:?}"),
        };
        let text = String::from_utf8_lossy(&b).into_owned();
        let prefix = format!("{field}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("{field} missing from INFO {section}"))
    }

    #[test]
    fn info_memory_counts_cached_scripts() {
        let mut t = TestClient::new();
        assert_eq!(
            info_field(&mut t, "memory", "number_of_cached_scripts"),
            "0"
        );
        for j in 0..3 {
            t.run(&["SCRIPT", "LOAD", &format!("return {j}")]);
        }
        assert_eq!(
            info_field(&mut t, "memory", "number_of_cached_scripts"),
            "3"
        );
        assert_eq!(
            info_field(&mut t, "memory", "used_memory_scripts_eval"),
            "24"
        );
        assert_ne!(info_field(&mut t, "memory", "used_memory_lua"), "0");
        t.run(&["SCRIPT", "FLUSH", "ASYNC"]);
        assert_eq!(
            info_field(&mut t, "memory", "number_of_cached_scripts"),
            "0"
        );
    }

    #[test]
    fn sort_by_constant_is_ordered_inside_scripts() {
        let mut t = TestClient::new();
        t.run(&["SADD", "s", "b", "aa", "a", "c", "azz"]);
        assert_eq!(
            t.run(&[
                "EVAL",
                "return redis.call('sort', KEYS[1], 'by', '_')",
                "1",
                "s"
            ]),
            bulks(&["a", "aa", "azz", "b", "c"])
        );
    }

    #[test]
    fn redis_call_takes_nearly_8000_arguments() {
        let mut t = TestClient::new();
        let body = "local a = {} for i = 1, 7999 do a[i] = 1 end \
                    return redis.call('lpush', KEYS[1], unpack(a))";
        assert_eq!(t.run(&["EVAL", body, "1", "l"]), Reply::Int(7999));
        let body = "local a = {} for i = 1, 7999 do a[i] = 1 end \
                    return redis.pcall('rpush', KEYS[1], unpack(a))";
        assert_eq!(t.run(&["EVAL", body, "1", "l"]), Reply::Int(15998));
    }

    /// Redis counts a command's error once: when the command inside the script
    /// fails or is refused, not again when the script passes it on.
    #[test]
    fn script_errors_are_counted_once() {
        let mut t = TestClient::new();
        t.run(&["CONFIG", "RESETSTAT"]);
        let r = t.run(&["EVAL_RO", "return redis.call('set','x','y')", "1", "x"]);
        assert!(
            matches!(r, Reply::Error(ref e) if e.starts_with("ERR Write commands are not allowed from read-only scripts.")),
            "{r:?}"
        );
        assert_eq!(info_field(&mut t, "errorstats", "errorstat_ERR"), "count=1");
        assert_eq!(info_field(&mut t, "stats", "total_error_replies"), "1");
        let set = info_field(&mut t, "commandstats", "cmdstat_set");
        assert!(
            set.starts_with("calls=0,") && set.ends_with("rejected_calls=1,failed_calls=0"),
            "{set}"
        );
        let eval = info_field(&mut t, "commandstats", "cmdstat_eval_ro");
        assert!(
            eval.starts_with("calls=1,") && eval.ends_with("rejected_calls=0,failed_calls=1"),
            "{eval}"
        );

        t.run(&["CONFIG", "RESETSTAT"]);
        let body = "local t = redis.pcall('select', 99) \
                    if t['err'] == 'ERR DB index is out of range' then return 1 end return 0";
        assert_eq!(t.run(&["EVAL", body, "0"]), Reply::Int(1));
        assert_eq!(info_field(&mut t, "errorstats", "errorstat_ERR"), "count=1");
        let eval = info_field(&mut t, "commandstats", "cmdstat_eval");
        assert!(eval.ends_with("rejected_calls=0,failed_calls=0"), "{eval}");

        t.run(&["CONFIG", "RESETSTAT"]);
        let r = t.run(&["EVAL", "return redis.error_reply('MY_ERR custom')", "0"]);
        assert_eq!(r, Reply::Error("MY_ERR custom".into()));
        assert_eq!(
            info_field(&mut t, "errorstats", "errorstat_MY_ERR"),
            "count=1"
        );
        assert_eq!(info_field(&mut t, "stats", "total_error_replies"), "1");
    }
}
