//! Server commands: FLUSHDB/FLUSHALL, DBSIZE, CONFIG, INFO, TIME, LASTSAVE, SLOWLOG,
//! MONITOR, SHUTDOWN, FUNCTION FLUSH. (CLIENT is in `client.rs`,
//! COMMAND in `command_docs.rs`.)

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag::*, CommandSpec, RequestPolicy, ResponsePolicy, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let s = |c: CommandSpec| c.group("server");
    vec![
        s(cmd("flushdb", -1, WRITE | ALL_KEYS, NO_KEYS, flushdb)
            .summary("Removes all keys from the current database.").policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded)),
        s(cmd("flushall", -1, WRITE | ALL_KEYS, NO_KEYS, flushall)
            .summary("Removes all keys from all databases.").policy(RequestPolicy::AllShards, ResponsePolicy::AllSucceeded)),
        s(
            cmd("dbsize", 1, READONLY | FAST | ALL_KEYS, NO_KEYS, dbsize)
                .summary("Returns the number of keys in the database.")
                .policy(RequestPolicy::AllShards, ResponsePolicy::AggSum),
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
                cmd(
                    "rewrite",
                    2,
                    ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    config_rewrite,
                )
                .summary("Persists the effective configuration to file."),
                cmd(
                    "help",
                    2,
                    LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    config_help,
                )
                .summary("Returns helpful text about the different subcommands."),
            ])),
        s(cmd(
            "monitor",
            1,
            ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE | NO_MULTI,
            NO_KEYS,
            monitor,
        )
        .summary("Listens for all requests received by the server in real-time.")),
        s(cmd(
            "shutdown",
            -1,
            ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE | NO_MULTI | ALLOW_BUSY,
            NO_KEYS,
            shutdown,
        )
        .summary("Synchronously saves the database(s) to disk and shuts down the Redis server.")),
        s(cmd("slowlog", -2, NO_KEYSPACE, NO_KEYS, slowlog_help)
            .summary("A container for slow log commands.")
            .subs(vec![
                cmd(
                    "get",
                    -2,
                    ADMIN | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    slowlog_get,
                )
                .summary("Returns the slow log's entries."),
                cmd(
                    "len",
                    2,
                    ADMIN | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    slowlog_len,
                )
                .summary("Returns the number of entries in the slow log."),
                cmd(
                    "reset",
                    2,
                    ADMIN | LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    slowlog_reset,
                )
                .summary("Clears all entries from the slow log."),
                cmd(
                    "help",
                    2,
                    LOADING | STALE | NO_KEYSPACE,
                    NO_KEYS,
                    slowlog_help,
                )
                .summary("Show helpful text about the different subcommands"),
            ])),
        s(cmd("module", -2, NO_KEYSPACE, NO_KEYS, module_help)
            .summary("A container for module commands.")
            .subs(vec![
                cmd("help", 2, LOADING | STALE | NO_KEYSPACE, NO_KEYS, module_help)
                    .summary("Returns helpful text about the different subcommands."),
                cmd("list", 2, ADMIN | NOSCRIPT | NO_KEYSPACE, NO_KEYS, module_list)
                    .summary("Returns all loaded modules."),
                cmd("load", -3, ADMIN | NOSCRIPT | NO_KEYSPACE, NO_KEYS, module_load)
                    .protected_by("enable-module-command")
                    .summary("Loads a module."),
                cmd("loadex", -3, ADMIN | NOSCRIPT | NO_KEYSPACE, NO_KEYS, module_load)
                    .protected_by("enable-module-command")
                    .summary("Loads a module using extended parameters."),
                cmd("unload", 3, ADMIN | NOSCRIPT | NO_KEYSPACE, NO_KEYS, module_unload)
                    .protected_by("enable-module-command")
                    .summary("Unloads a module."),
            ])),
        s(cmd("cluster", -2, NO_KEYSPACE, NO_KEYS, cluster)
            .summary("A container for Redis Cluster commands.")
            .subs(cluster_subcommands())
            .group("cluster")),
        s(cmd("wait", 3, BLOCKING | NO_KEYSPACE | AFTER_OWN_WRITES, NO_KEYS, wait).summary(
            "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
        ).group("generic").acl_category("connection").unlisted(BLOCKING).policy(RequestPolicy::AllShards, ResponsePolicy::AggMin)),
        s(
            // ALL_KEYS, not NO_KEYSPACE: its keyspace sections read through the
            // command's own (lazy) lock, also inside a script or MULTI.
            cmd("info", -1, LOADING | STALE | ALL_KEYS, NO_KEYS, info)
                .summary("Returns information and statistics about the server."),
        ),
    ]
}

/// Redis's `addReplySubcommandSyntaxError`: a known subcommand with arguments its
/// handler refuses.
pub fn subcommand_syntax(ctx: &Ctx<'_>) -> CmdError {
    let sub: String = String::from_utf8_lossy(ctx.argv.get(1).map_or(&b""[..], |a| a))
        .chars()
        .take(128)
        .collect();
    CmdError::err(format!(
        "unknown subcommand or wrong number of arguments for '{sub}'. Try {} HELP.",
        String::from_utf8_lossy(&ctx.argv[0]).to_ascii_uppercase()
    ))
}

/// A HELP reply in Redis's shape: a title line, then the given lines, then HELP.
pub fn help_lines(name: &str, lines: &[&str]) -> Reply {
    let mut v = vec![Reply::SimpleString(format!(
        "{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ))];
    v.extend(lines.iter().map(|l| Reply::SimpleString(l.to_string())));
    v.push(Reply::SimpleString("HELP".into()));
    v.push(Reply::SimpleString("    Print this help.".into()));
    Reply::Array(v)
}

/// Redis 7.2's CLUSTER subcommands (name, arity, flags, summary). Tidewire answers
/// as a Redis without cluster support, to each of them, but lists them as Redis
/// does (COMMAND, ACL), so an unknown one is an unknown subcommand.
const CLUSTER_SUBCOMMANDS: &[(&str, i32, u32, &str)] = &[
    (
        "addslots",
        -3,
        ADMIN | STALE,
        "Assigns new hash slots to a node.",
    ),
    (
        "addslotsrange",
        -4,
        ADMIN | STALE,
        "Assigns new hash slot ranges to a node.",
    ),
    (
        "bumpepoch",
        2,
        ADMIN | STALE,
        "Advances the cluster config epoch.",
    ),
    (
        "count-failure-reports",
        3,
        ADMIN | STALE,
        "Returns the number of active failure reports active for a node.",
    ),
    (
        "countkeysinslot",
        3,
        STALE,
        "Returns the number of keys in a hash slot.",
    ),
    (
        "delslots",
        -3,
        ADMIN | STALE,
        "Sets hash slots as unbound for a node.",
    ),
    (
        "delslotsrange",
        -4,
        ADMIN | STALE,
        "Sets hash slot ranges as unbound for a node.",
    ),
    (
        "failover",
        -2,
        ADMIN | STALE,
        "Forces a replica to perform a manual failover of its master.",
    ),
    (
        "flushslots",
        2,
        ADMIN | STALE,
        "Deletes all slots information from a node.",
    ),
    (
        "forget",
        3,
        ADMIN | STALE,
        "Removes a node from the nodes table.",
    ),
    (
        "getkeysinslot",
        4,
        STALE,
        "Returns the key names in a hash slot.",
    ),
    (
        "help",
        2,
        LOADING | STALE,
        "Returns helpful text about the different subcommands.",
    ),
    (
        "info",
        2,
        STALE,
        "Returns information about the state of a node.",
    ),
    ("keyslot", 3, STALE, "Returns the hash slot for a key."),
    (
        "links",
        2,
        STALE,
        "Returns a list of all TCP links to and from peer nodes.",
    ),
    (
        "meet",
        -4,
        ADMIN | STALE,
        "Forces a node to handshake with another node.",
    ),
    ("myid", 2, STALE, "Returns the ID of a node."),
    ("myshardid", 2, STALE, "Returns the shard ID of a node."),
    (
        "nodes",
        2,
        STALE,
        "Returns the cluster configuration for a node.",
    ),
    (
        "replicas",
        3,
        ADMIN | STALE,
        "Lists the replica nodes of a master node.",
    ),
    (
        "replicate",
        3,
        ADMIN | STALE,
        "Configure a node as replica of a master node.",
    ),
    ("reset", -2, ADMIN | STALE | NOSCRIPT, "Resets a node."),
    (
        "saveconfig",
        2,
        ADMIN | STALE,
        "Forces a node to save the cluster configuration to disk.",
    ),
    (
        "set-config-epoch",
        3,
        ADMIN | STALE,
        "Sets the configuration epoch for a new node.",
    ),
    ("setslot", -4, ADMIN | STALE, "Binds a hash slot to a node."),
    (
        "shards",
        2,
        LOADING | STALE,
        "Returns the mapping of cluster slots to shards.",
    ),
    (
        "slaves",
        3,
        ADMIN | STALE,
        "Lists the replica nodes of a master node.",
    ),
    (
        "slots",
        2,
        LOADING | STALE,
        "Returns the mapping of cluster slots to nodes.",
    ),
];

fn cluster_subcommands() -> Vec<CommandSpec> {
    CLUSTER_SUBCOMMANDS
        .iter()
        .map(|&(name, arity, flags, summary)| {
            cmd(name, arity, flags | NO_KEYSPACE, NO_KEYS, cluster)
                .summary(summary)
                .group("cluster")
        })
        .collect()
}

/// Tidewire is not a Redis Cluster node (it scales out on one, see docs): every
/// CLUSTER subcommand gets the reply of a Redis started without cluster support.
fn cluster(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Err(CmdError::err("This instance has cluster support disabled"))
}

fn module_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(help_lines(
        "MODULE",
        &[
            "LIST",
            "    Return the loaded modules (Tidewire loads none: JSON and its other",
            "    commands are built in).",
            "LOAD <path> [<arg> ...]",
            "    Load a module library from <path>, with optional arguments.",
            "LOADEX <path> [[CONFIG NAME VALUE] [CONFIG NAME VALUE]] [ARGS ...]",
            "    Load a module library from <path>, with configurations and arguments.",
            "UNLOAD <name>",
            "    Unload a module.",
        ],
    ))
}

/// No module is ever loaded: the commands Redis users add modules for (JSON)
/// are built in.
fn module_list(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(Vec::new()))
}

fn module_load(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Err(CmdError::err(
        "Error loading the extension. Please check the server logs.",
    ))
}

fn module_unload(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Err(CmdError::err(
        "Error unloading module: no such module with that name",
    ))
}

/// WAIT numreplicas timeout: a server without replicas has none to acknowledge,
/// so the answer is 0 — at once when none are asked for or blocking is not allowed
/// (MULTI, scripts), else when the timeout (ms, 0 = none) passes, as Redis does.
fn wait(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let replicas = args.next_i64()?;
    let timeout = wait_timeout(args)?;
    if replicas <= 0 || ctx.no_block {
        return Ok(Reply::Int(0));
    }
    Ok(ctx.block(Vec::new(), timeout, Reply::Int(0)))
}

/// WAIT's and WAITAOF's timeout: integer milliseconds, 0 for none, as Redis
/// parses it (its own errors, not the generic integer one).
pub(crate) fn wait_timeout(args: &mut Args<'_>) -> Result<Option<std::time::Duration>, CmdError> {
    let ms = args
        .next_i64()
        .map_err(|_| CmdError::err("timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(CmdError::err("timeout is negative"));
    }
    Ok((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)))
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

/// What FLUSHDB/FLUSHALL tell others about database `db` before emptying it: the
/// WATCH of keys that exist, and only of those, breaks (Redis 7), and clients
/// blocked on its keys look again (a group reader learns its stream is gone).
fn before_flush(ctx: &mut Ctx<'_>, db: usize) {
    if ctx.store.blocking.has_waiters() {
        let waited = ctx.store.blocking.waited_keys(db);
        ctx.ev.ready.extend(waited);
    }
    let now = ctx.now;
    for key in ctx.store.watches.keys_in_db(db) {
        let live = ctx
            .ks
            .db(db, &key)
            .map
            .get(&key[..])
            .is_some_and(|e| !e.is_expired(now));
        if live {
            ctx.touch(db, &key);
        }
    }
}

/// Clients caching keys drop everything (Redis's trackingInvalidateKeysOnFlush).
fn invalidate_tracking(ctx: &Ctx<'_>) {
    let lookup = |id| ctx.store.client_by_id(id);
    ctx.store.tracking.flush(&lookup);
}

fn flushdb(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    flush_mode(args)?;
    invalidate_tracking(ctx);
    let db = ctx.db();
    before_flush(ctx, db);
    let n: usize = ctx
        .ks
        .db_parts(db)
        .map(|p| {
            let n = p.map.len();
            p.clear();
            n
        })
        .sum();
    ctx.dirty(n.max(1) as u64);
    Ok(Reply::ok())
}

fn flushall(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    flush_mode(args)?;
    invalidate_tracking(ctx);
    let mut n = 0;
    for db in 0..crate::keyspace::NUM_DBS {
        before_flush(ctx, db);
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
    let pairs: Vec<(String, String)> = rest
        .chunks(2)
        .map(|p| {
            (
                String::from_utf8_lossy(&p[0]).to_ascii_lowercase(),
                String::from_utf8_lossy(&p[1]).into_owned(),
            )
        })
        .collect();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(CmdError::err(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"
            )));
        }
    }
    for (name, value) in &pairs {
        if crate::config::IMMUTABLE.contains(&name.as_str()) {
            return Err(CmdError::err(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
            )));
        }
        // The listeners are bound by the server at start; re-binding at run time is
        // not supported, so only the current value is accepted.
        if (name == "port" || name == "bind")
            && ctx.store.config.get(name).as_deref() != Some(value)
        {
            return Err(CmdError::err(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - Unable to listen on this port: changing the listeners at run time is not supported"
            )));
        }
    }
    // All or nothing: on the first failure, put back what was already changed.
    let mut applied: Vec<(String, String)> = Vec::new();
    for (name, value) in &pairs {
        let old = ctx.store.config.get(name);
        if let Err(e) = ctx.store.config.set(name, value) {
            for (n, v) in applied.into_iter().rev() {
                let _ = ctx.store.config.set(&n, &v);
            }
            return Err(e);
        }
        if let Some(old) = old {
            applied.push((name.clone(), old));
        }
    }
    // Eviction settings read on every key access take effect at once (not at the
    // next cron tick): an LFU policy must count the very next reads.
    if pairs
        .iter()
        .any(|(n, _)| n.starts_with("maxmemory") || n.starts_with("lfu-"))
    {
        crate::evict::sync_config(ctx.store);
        // A lowered limit applies now, as in Redis, not at the next command (an
        // idle server would otherwise stay over it).
        let _ = crate::evict::check(ctx.store, false);
    }
    Ok(Reply::ok())
}

fn config_rewrite(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    rewrite_config_file(ctx.store, false)
}

/// CONFIG REWRITE and DEBUG CONFIG-REWRITE-FORCE-ALL: the binary's hook writes the
/// file; without one the server was started without a config file.
pub(crate) fn rewrite_config_file(store: &crate::Store, force_all: bool) -> CmdResult {
    let hooks = store.hooks.lock();
    let Some(rewrite) = hooks.config_rewrite.as_ref() else {
        return Err(CmdError::err("The server is running without a config file"));
    };
    match rewrite(force_all) {
        Ok(()) => Ok(Reply::ok()),
        Err(why) => {
            tracing::warn!("CONFIG REWRITE failed: {why}");
            Err(CmdError::err(format!("Rewriting config file: {why}")))
        }
    }
}

fn config_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(help_lines(
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
        ],
    ))
}

fn monitor(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    if ctx.client.no_block {
        return Err(CmdError::err(
            "MONITOR isn't allowed for DENY BLOCKING client",
        ));
    }
    if !ctx.client.info.is_monitor.load(Ordering::Relaxed) {
        ctx.store.add_monitor(ctx.client.info.clone());
    }
    Ok(Reply::ok())
}

fn shutdown(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    use crate::persistence::ShutdownSave;
    let mut choice = ShutdownSave::AsConfigured;
    while !args.is_empty() {
        let opt = args.next_upper()?;
        match opt.as_str() {
            "NOSAVE" => choice = ShutdownSave::NoSave,
            "SAVE" => choice = ShutdownSave::Save,
            "NOW" | "FORCE" => {}
            "ABORT" => return Err(CmdError::err("No shutdown in progress.")),
            _ => return Err(CmdError::Syntax),
        }
    }
    // While a script is past the busy threshold, only SHUTDOWN NOSAVE may stop
    // the server (it leaves the script's unfinished effects out, as Redis does).
    let running = &ctx.store.scripts.running;
    if choice != ShutdownSave::NoSave
        && running.is_running()
        && running.busy(ctx.store.config.get_u64("busy-reply-threshold"))
    {
        return Err(CmdError::raw(running.busy_error()));
    }
    ctx.store
        .persist
        .shutdown_save
        .store(choice as u8, Ordering::SeqCst);
    let hooks = ctx.store.hooks.lock();
    let Some(hook) = hooks.shutdown.as_ref() else {
        return Err(CmdError::err("Errors trying to SHUTDOWN. Check logs."));
    };
    tracing::info!(client = ctx.client.id(), "SHUTDOWN requested by a client");
    hook();
    // Like Redis, no reply: the connection just closes.
    ctx.client.reply_mode = crate::client::ReplyMode::Skip;
    ctx.client.close_after_reply = true;
    Ok(Reply::ok())
}

fn slowlog_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(help_lines(
        "SLOWLOG",
        &[
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
        ],
    ))
}

fn slowlog_get(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let count = if args.is_empty() {
        10
    } else {
        match crate::num::parse_i64(args.next_bytes()?) {
            Some(n) if n >= -1 => n,
            _ => return Err(CmdError::err("count should be greater than or equal to -1")),
        }
    };
    args.finish()?;
    let take = if count < 0 {
        usize::MAX
    } else {
        count as usize
    };
    Ok(ctx.store.slowlog.with_entries(|entries| {
        Reply::Array(
            entries
                .iter()
                .take(take)
                .map(|e| {
                    Reply::Array(vec![
                        Reply::Int(e.id as i64),
                        Reply::Int(e.time_secs as i64),
                        Reply::Int(e.duration_us as i64),
                        Reply::Array(e.argv.iter().cloned().map(Reply::Bulk).collect()),
                        Reply::bulk_str(&e.addr),
                        Reply::bulk_str(&e.name),
                    ])
                })
                .collect(),
        )
    }))
}

fn slowlog_len(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(ctx.store.slowlog.len() as i64))
}

fn slowlog_reset(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    ctx.store.slowlog.reset();
    Ok(Reply::ok())
}

fn config_resetstat(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    for c in crate::command::registry().all() {
        c.stats.reset();
    }
    ctx.store.stats.reset();
    ctx.store.slowlog.reset();
    crate::event_loop::EVENT_LOOP.reset();
    Ok(Reply::ok())
}

fn info(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let sections: Vec<String> = args
        .rest()
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let text = crate::families::server_info::render(ctx.store, &sections, ctx.ks);
    Ok(Reply::Verbatim("txt", Bytes::from(text)))
}
