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
use crate::command::{cmd, flag::*, CommandSpec, Keys, RequestPolicy, ResponsePolicy, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::families::server::help_lines;
use crate::families::server::subcommand_syntax;
use crate::scripting::host::{ClientState, CommandHost, Rules};
use crate::scripting::ScriptFlags;

/// EVAL-family key positions: `numkeys` at 2, the keys after it.
fn eval_keys(argv: &[Bytes]) -> Vec<usize> {
    let n = argv
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    // More keys declared than arguments given: no keys (the command itself then
    // fails), as Redis's key specs read it.
    if 3usize.saturating_add(n) > argv.len() {
        return Vec::new();
    }
    (3..3 + n).collect()
}

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("scripting");
    let eval_flags = NOSCRIPT | SKIP_MONITOR | STALE | ALL_KEYS | NO_MANDATORY_KEYS;
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
        s(cmd("fcall", -3, eval_flags, Keys::Custom(eval_keys), fcall)
            .summary("Invokes a function.")),
        s(cmd(
            "fcall_ro",
            -3,
            eval_flags | READONLY,
            Keys::Custom(eval_keys),
            fcall_ro,
        )
        .summary("Invokes a read-only function.")),
        s(cmd("function", -2, NO_KEYSPACE, NO_KEYS, function_help)
            .summary("A container for function commands.")
            .subs(function_subcommands())),
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
                .summary("Loads a server-side Lua script to the script cache.")
                .policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded),
                cmd(
                    "exists",
                    -3,
                    NOSCRIPT | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    script_exists,
                )
                .summary("Determines whether server-side Lua scripts exist in the script cache.")
                .policy(RequestPolicy::AllShards, ResponsePolicy::AggLogicalAnd),
                cmd("flush", -2, NOSCRIPT | NO_KEYSPACE, NO_KEYS, script_flush)
                    .summary("Removes all server-side Lua scripts from the script cache.")
                    .policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded),
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

/// FUNCTION's subcommands. Those that change the libraries hold every shard, so
/// that a snapshot's cut sees them wholly before or wholly after it.
fn function_subcommands() -> Vec<CommandSpec> {
    let info = NOSCRIPT | NO_KEYSPACE;
    vec![
        cmd(
            "load",
            -3,
            WRITE | DENYOOM | NOSCRIPT | ALL_KEYS,
            NO_KEYS,
            function_load,
        )
        .summary("Creates a library.")
        .policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded),
        cmd(
            "delete",
            3,
            WRITE | NOSCRIPT | ALL_KEYS,
            NO_KEYS,
            function_delete,
        )
        .summary("Deletes a library and its functions.")
        .policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded),
        cmd(
            "flush",
            -2,
            WRITE | NOSCRIPT | ALL_KEYS,
            NO_KEYS,
            function_flush,
        )
        .summary("Deletes all libraries and functions.")
        .policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded),
        cmd(
            "restore",
            -3,
            WRITE | DENYOOM | NOSCRIPT | ALL_KEYS,
            NO_KEYS,
            function_restore,
        )
        .summary("Restores all libraries from a payload.")
        .policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded),
        cmd("dump", 2, info, NO_KEYS, function_dump)
            .summary("Dumps all libraries into a serialized binary payload."),
        cmd("list", -2, info, NO_KEYS, function_list)
            .summary("Returns information about all libraries."),
        cmd("stats", 2, info | ALLOW_BUSY, NO_KEYS, function_stats)
            .summary("Returns information about a function during execution."),
        cmd("kill", 2, info | ALLOW_BUSY, NO_KEYS, function_kill)
            .summary("Terminates a function during execution."),
        cmd(
            "help",
            2,
            LOADING | STALE | NO_KEYSPACE,
            NO_KEYS,
            function_help,
        )
        .summary("Returns helpful text about the different subcommands."),
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

/// A script cannot run while the store itself is being dropped.
fn shutting_down() -> Reply {
    Reply::Error("ERR the server is shutting down".into())
}

fn noscript() -> CmdError {
    CmdError::raw("NOSCRIPT No matching script. Please use EVAL.")
}

/// Reads `numkeys` and splits the rest into keys and arguments, with Redis's errors.
/// `bad_numkeys` replaces the usual not-an-integer error (FCALL has its own).
fn keys_and_args<'a>(
    args: &'a mut Args<'_>,
    bad_numkeys: Option<&str>,
) -> Result<(&'a [Bytes], &'a [Bytes]), CmdError> {
    let numkeys = match (args.next_i64(), bad_numkeys) {
        (Ok(n), _) => n,
        (Err(_), Some(msg)) => return Err(CmdError::err(msg)),
        (Err(e), None) => return Err(e),
    };
    let rest = args.rest();
    if numkeys > rest.len() as i64 {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    if numkeys < 0 {
        return Err(CmdError::err("Number of keys can't be negative"));
    }
    Ok(rest.split_at(numkeys as usize))
}

fn run(ctx: &mut Ctx<'_>, args: &mut Args<'_>, by: By, ro: bool) -> CmdResult {
    let store = ctx.store;
    // Shown to monitors before the commands the script runs, as Redis does.
    store.feed_monitors(ctx.client, ctx.argv);
    let first = args.next_owned()?;
    // EVALSHA knows at once that a SHA of another length cannot match.
    if by == By::Sha && first.len() != 40 {
        return Err(noscript());
    }
    let (keys, argv) = keys_and_args(args, None)?;
    let (sha, script): (std::borrow::Cow<'_, str>, _) = match by {
        By::Sha => {
            // Lowercase, as the cache keeps them (clients send them so: no copy).
            let sha: std::borrow::Cow<'_, str> = match std::str::from_utf8(&first) {
                Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => s.into(),
                _ => String::from_utf8_lossy(&first).to_ascii_lowercase().into(),
            };
            let script = store.scripts.get(&sha).ok_or_else(noscript)?;
            (sha, script)
        }
        By::Body => {
            let (sha, script) = store.scripts.load(&first).map_err(CmdError::raw)?;
            (sha.into(), script)
        }
    };
    let rules = prepare(ctx, script.flags, ro)?;
    store.scripts.running.begin();
    execute(ctx, |ctx| {
        store.scripts.with_script(&sha, &script, |env| {
            let Some(host) = CommandHost::lend(ctx, rules) else {
                return (shutting_down(), false);
            };
            let (reply, host) = env.run(&sha, keys, argv, host);
            host.give_back(ctx);
            (reply, env.error_counted())
        })
    })
}

/// Runs a script or function (`invoke`, which gets the Lua state and runs it with
/// a [`CommandHost`]) as its caller's client and turns its outcome into the reply.
/// `store.scripts.running` must have been begun; it is ended here.
fn execute(
    ctx: &mut Ctx<'_>,
    invoke: impl FnOnce(&mut Ctx<'_>) -> Result<(Reply, bool), String>,
) -> CmdResult {
    let store = ctx.store;
    // The caller's own protocol shapes the final reply; the script's commands see
    // RESP2 unless it asks for RESP3 (`redis.setresp`).
    let saved = ClientState::save(ctx);
    ctx.client.proto = Protocol::Resp2;
    let log_from = ctx.ev.propagated.len();
    let dirty_before = ctx.ev.dirty;
    let result = invoke(ctx);
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
fn prepare(ctx: &Ctx<'_>, f: ScriptFlags, ro: bool) -> Result<Rules, CmdError> {
    if !f.shebang {
        return Ok(Rules {
            read_only: ro,
            allow_oom: false,
        });
    }
    // Upstash's REST API runs an `_RO` call of a script or function without
    // `no-writes` read-only, refusing its writes as they come, where Redis refuses
    // the call: @upstash/redis's own tests expect it ("Upstash behavior").
    if ro && !f.no_writes && ctx.client.info.kind == "http" {
        return Ok(Rules {
            read_only: true,
            allow_oom: true,
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

fn fcall(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    run_function(ctx, args, false)
}

fn fcall_ro(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    run_function(ctx, args, true)
}

fn run_function(ctx: &mut Ctx<'_>, args: &mut Args<'_>, ro: bool) -> CmdResult {
    let store = ctx.store;
    store.feed_monitors(ctx.client, ctx.argv);
    let name = args.next_owned()?;
    let info = store
        .functions
        .get(&name)
        .ok_or_else(|| CmdError::err("Function not found"))?;
    let (keys, argv) = keys_and_args(args, Some("Bad number of keys provided"))?;
    let rules = prepare(ctx, info.flags, ro)?;
    store.scripts.running.begin_function(&info.name, ctx.argv);
    execute(ctx, |ctx| {
        store.functions.with_function(&info, |env, callback| {
            let Some(host) = CommandHost::lend(ctx, rules) else {
                return (shutting_down(), false);
            };
            let (reply, host) = env.call_function(callback, &info.name, keys, argv, host);
            host.give_back(ctx);
            (reply, env.error_counted())
        })
    })
}

/// Counts a change of the libraries: the command is logged (AOF) as it was given.
fn functions_changed(ctx: &mut Ctx<'_>) {
    ctx.ev.dirty += 1;
}

fn function_load(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let all = args.rest();
    let (options, code) = all.split_at(all.len() - 1);
    let mut replace = false;
    for opt in options {
        if opt.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else {
            return Err(CmdError::err(format!(
                "Unknown option given: {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    let code = code[0].clone();
    // Loading from the log or a snapshot has no time limit (as Redis's
    // `mustObeyClient`): what loaded once must load again.
    let timeout = if ctx.client.info.kind == "loader" {
        0
    } else {
        crate::scripting::functions::LOAD_TIMEOUT_MS
    };
    let name = ctx
        .store
        .functions
        .load(&code, replace, timeout)
        .map_err(CmdError::err)?;
    functions_changed(ctx);
    // Logged with REPLACE, so that replaying it over a snapshot that already has
    // the library is harmless.
    ctx.propagate(vec![
        Bytes::from_static(b"FUNCTION"),
        Bytes::from_static(b"LOAD"),
        Bytes::from_static(b"REPLACE"),
        code,
    ]);
    Ok(Reply::Bulk(Bytes::from(name)))
}

fn function_delete(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let name = args.next_owned()?;
    ctx.store.functions.delete(&name).map_err(CmdError::err)?;
    functions_changed(ctx);
    Ok(Reply::ok())
}

fn function_flush(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    match args.rest() {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {}
        [_] => {
            return Err(CmdError::err(
                "FUNCTION FLUSH only supports SYNC|ASYNC option",
            ))
        }
        _ => return Err(subcommand_syntax(ctx)),
    }
    ctx.store.functions.flush();
    functions_changed(ctx);
    Ok(Reply::ok())
}

fn function_restore(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    use crate::scripting::functions::RestorePolicy;
    let payload = args.next_owned()?;
    let policy = match args.rest() {
        [] => RestorePolicy::Append,
        [p] if p.eq_ignore_ascii_case(b"append") => RestorePolicy::Append,
        [p] if p.eq_ignore_ascii_case(b"replace") => RestorePolicy::Replace,
        [p] if p.eq_ignore_ascii_case(b"flush") => RestorePolicy::Flush,
        [_] => {
            return Err(CmdError::err(
                "Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            ))
        }
        _ => return Err(subcommand_syntax(ctx)),
    };
    ctx.store
        .functions
        .restore(&payload, policy)
        .map_err(CmdError::err)?;
    functions_changed(ctx);
    Ok(Reply::ok())
}

fn function_dump(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Bulk(ctx.store.functions.dump()))
}

fn bulk_str(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn function_list(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mut with_code = false;
    let mut pattern: Option<Bytes> = None;
    let rest = args.rest();
    let mut i = 0;
    while i < rest.len() {
        let a = &rest[i];
        if !with_code && a.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if pattern.is_none() && a.eq_ignore_ascii_case(b"libraryname") {
            let Some(p) = rest.get(i + 1) else {
                return Err(CmdError::err("library name argument was not given"));
            };
            pattern = Some(p.clone());
            i += 1;
        } else {
            return Err(CmdError::err(format!(
                "Unknown argument {}",
                String::from_utf8_lossy(a)
            )));
        }
        i += 1;
    }
    let mut out = Vec::new();
    for lib in ctx.store.functions.libraries() {
        if let Some(p) = &pattern {
            if !crate::glob::glob_match(p, lib.name.as_bytes(), true) {
                continue;
            }
        }
        let functions = lib
            .functions
            .iter()
            .map(|f| {
                Reply::Map(vec![
                    (bulk_str("name"), bulk_str(&f.name)),
                    (
                        bulk_str("description"),
                        f.description.clone().map_or(Reply::Null, Reply::Bulk),
                    ),
                    (
                        bulk_str("flags"),
                        Reply::Set(f.flag_names().into_iter().map(Reply::Status).collect()),
                    ),
                ])
            })
            .collect();
        let mut fields = vec![
            (bulk_str("library_name"), bulk_str(&lib.name)),
            (bulk_str("engine"), bulk_str("LUA")),
            (bulk_str("functions"), Reply::Array(functions)),
        ];
        if with_code {
            fields.push((bulk_str("library_code"), Reply::Bulk(lib.code.clone())));
        }
        out.push(Reply::Map(fields));
    }
    Ok(Reply::Array(out))
}

fn function_stats(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let running = &ctx.store.scripts.running;
    if running.is_running() && !running.is_function() {
        return Err(CmdError::raw(crate::scripting::cache::BUSY_EVAL));
    }
    let script = match running.current_function() {
        Some((name, argv)) if running.is_running() => Reply::Map(vec![
            (bulk_str("name"), bulk_str(&name)),
            (
                bulk_str("command"),
                Reply::Array(argv.into_iter().map(Reply::Bulk).collect()),
            ),
            (
                bulk_str("duration_ms"),
                Reply::Int(running.elapsed_ms() as i64),
            ),
        ]),
        _ => Reply::Null,
    };
    let (libraries, functions) = ctx.store.functions.counts();
    Ok(Reply::Map(vec![
        (bulk_str("running_script"), script),
        (
            bulk_str("engines"),
            Reply::Map(vec![(
                bulk_str("LUA"),
                Reply::Map(vec![
                    (bulk_str("libraries_count"), Reply::Int(libraries as i64)),
                    (bulk_str("functions_count"), Reply::Int(functions as i64)),
                ]),
            )]),
        ),
    ]))
}

fn function_kill(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    kill(ctx, true)
}

fn function_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(help_lines(
        "FUNCTION",
        &[
            "LOAD [REPLACE] <FUNCTION CODE>",
            "    Load a library from its code (starting with '#!lua name=<library>'); REPLACE",
            "    replaces a library of the same name.",
            "DELETE <LIBRARY NAME>",
            "    Delete a library and its functions.",
            "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
            "    List the libraries (those whose name matches PATTERN), their engine and",
            "    functions, and with WITHCODE their code.",
            "STATS",
            "    Tell which function runs now (name, command, duration in ms), and how many",
            "    libraries and functions each engine has.",
            "KILL",
            "    Stop the function that is running, if it has not written anything yet.",
            "FLUSH [ASYNC|SYNC]",
            "    Delete every library.",
            "DUMP",
            "    Serialize every library into a payload for FUNCTION RESTORE.",
            "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
            "    Load the libraries of a payload. APPEND (default) fails if a library exists;",
            "    REPLACE replaces existing ones; FLUSH deletes all others first.",
        ],
    ))
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
    kill(ctx, false)
}

/// SCRIPT KILL (`function` false) or FUNCTION KILL: each stops only its own kind.
fn kill(ctx: &mut Ctx<'_>, function: bool) -> CmdResult {
    use crate::scripting::cache::{BUSY_EVAL, BUSY_FUNCTION};
    let running = &ctx.store.scripts.running;
    if !running.is_running() {
        return Err(CmdError::raw("NOTBUSY No scripts in execution right now."));
    }
    if running.wrote.load(Ordering::SeqCst) {
        return Err(CmdError::raw(
            "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        ));
    }
    match (function, running.is_function()) {
        (false, true) => return Err(CmdError::raw(BUSY_FUNCTION)),
        (true, false) => return Err(CmdError::raw(BUSY_EVAL)),
        _ => {}
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

    /// As in Redis, the slow log has the script, not the commands it ran.
    #[test]
    fn slowlog_shows_the_script_not_its_commands() {
        let mut t = TestClient::new();
        t.run(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
        t.run(&["SLOWLOG", "RESET"]);
        t.run(&[
            "EVAL",
            "return redis.call('set', KEYS[1], 'v')",
            "1",
            "slowkey",
        ]);
        // SLOWLOG RESET (logged once it has run) and the EVAL, not the SET it ran.
        assert_eq!(t.run(&["SLOWLOG", "LEN"]), Reply::Int(2));
        let log = format!("{:?}", t.run(&["SLOWLOG", "GET", "10"]));
        assert!(log.contains("return redis.call"), "{log}");
        assert!(
            !log.contains("Bulk(b\"set\")"),
            "a script's command reached the slow log: {log}"
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
        // Strings (BullMQ deletes in batches of 7000 keys) ...
        let body = "local a = {} for i = 1, 7000 do a[i] = 'k' .. i end \
                    return redis.call('rpush', KEYS[1], unpack(a))";
        assert_eq!(t.run(&["EVAL", body, "1", "s"]), Reply::Int(7000));
        // ... and past the binding's bound, one line of error, no traceback.
        let body = "local a = {} for i = 1, 7999 do a[i] = 'k' .. i end \
                    return redis.call('rpush', KEYS[1], unpack(a))";
        match t.run(&["EVAL", body, "1", "s"]) {
            Reply::Error(e) => assert!(
                e.starts_with("ERR out of Lua stack")
                    && !e.contains('\n')
                    && !e.contains("traceback"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A command's `calls`, `rejected_calls` and `failed_calls` (zeros when INFO
    /// does not list it yet).
    fn command_counts(t: &mut TestClient, name: &str) -> [u64; 3] {
        let b = match t.run(&["INFO", "commandstats"]) {
            Reply::Bulk(b) | Reply::Verbatim(_, b) => b,
            other => panic!("INFO reply: {other:?}"),
        };
        let text = String::from_utf8_lossy(&b).into_owned();
        let prefix = format!("cmdstat_{name}:");
        let Some(line) = text.lines().find_map(|l| l.strip_prefix(&prefix)) else {
            return [0; 3];
        };
        let field = |f: &str| -> u64 {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{f}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{f} missing in {line}"))
        };
        [
            field("calls"),
            field("rejected_calls"),
            field("failed_calls"),
        ]
    }

    /// Redis counts a command's error once: when the command inside the script
    /// fails or is refused, not again when the script passes it on.
    ///
    /// Command statistics are process-wide and the other tests of this crate run
    /// beside this one, so nothing here resets them (CONFIG RESETSTAT would clear
    /// what those tests count): the commands counted are EVAL_RO and RPUSHX, which
    /// no other test calls, by their change. Error statistics are per store: each
    /// case starts from a new one.
    #[test]
    fn script_errors_are_counted_once() {
        let mut t = TestClient::new();
        let (rpushx0, eval0) = (
            command_counts(&mut t, "rpushx"),
            command_counts(&mut t, "eval_ro"),
        );
        let r = t.run(&["EVAL_RO", "return redis.call('rpushx','x','y')", "1", "x"]);
        assert!(
            matches!(r, Reply::Error(ref e) if e.starts_with("ERR Write commands are not allowed from read-only scripts.")),
            "{r:?}"
        );
        assert_eq!(info_field(&mut t, "errorstats", "errorstat_ERR"), "count=1");
        assert_eq!(info_field(&mut t, "stats", "total_error_replies"), "1");
        let delta = |now: [u64; 3], before: [u64; 3]| [0, 1, 2].map(|i| now[i] - before[i]);
        assert_eq!(delta(command_counts(&mut t, "rpushx"), rpushx0), [0, 1, 0]);
        let eval1 = command_counts(&mut t, "eval_ro");
        assert_eq!(delta(eval1, eval0), [1, 0, 1]);

        let mut t = TestClient::new();
        let body = "local t = redis.pcall('select', 99) \
                    if t['err'] == 'ERR DB index is out of range' then return 1 end return 0";
        assert_eq!(t.run(&["EVAL_RO", body, "0"]), Reply::Int(1));
        assert_eq!(info_field(&mut t, "errorstats", "errorstat_ERR"), "count=1");
        assert_eq!(delta(command_counts(&mut t, "eval_ro"), eval1), [1, 0, 0]);

        // A command's error table returned as the script's result: still once.
        let mut t = TestClient::new();
        t.run(&["SET", "str", "abc"]);
        let r = t.run(&["EVAL", "return redis.pcall('incr', KEYS[1])", "1", "str"]);
        assert_eq!(
            r,
            Reply::Error("ERR value is not an integer or out of range".into())
        );
        assert_eq!(info_field(&mut t, "errorstats", "errorstat_ERR"), "count=1");
        assert_eq!(info_field(&mut t, "stats", "total_error_replies"), "1");

        let mut t = TestClient::new();
        let r = t.run(&["EVAL", "return redis.error_reply('MY_ERR custom')", "0"]);
        assert_eq!(r, Reply::Error("MY_ERR custom".into()));
        assert_eq!(
            info_field(&mut t, "errorstats", "errorstat_MY_ERR"),
            "count=1"
        );
        assert_eq!(info_field(&mut t, "stats", "total_error_replies"), "1");
    }
}
