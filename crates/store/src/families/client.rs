//! CLIENT: connection introspection and control (ID, SETNAME, LIST, INFO, KILL,
//! REPLY, UNBLOCK, SETINFO, NO-EVICT, NO-TOUCH, PAUSE). Other connections are reached
//! through their shared `ClientInfo`: killing or unblocking one sets a flag and wakes
//! its connection task, which does the actual work.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::client::{ClientInfo, ReplyMode};
use crate::command::{cmd, flag::*, CommandSpec, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let f = ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE;
    let c = NOSCRIPT | LOADING | STALE | NO_KEYSPACE;
    vec![cmd("client", -2, NO_KEYSPACE, NO_KEYS, help)
        .group("connection")
        .summary("A container for client connection commands.")
        .subs(vec![
            cmd("id", 2, c, NO_KEYS, id).summary("Returns the unique client ID of the connection."),
            cmd("getname", 2, c, NO_KEYS, getname).summary("Returns the name of the connection."),
            cmd("setname", 3, c, NO_KEYS, setname).summary("Sets the connection name."),
            cmd("setinfo", 4, c, NO_KEYS, setinfo)
                .summary("Sets information specific to the client or connection."),
            cmd("list", -2, f, NO_KEYS, list).summary("Lists open connections."),
            cmd("info", 2, c, NO_KEYS, info).summary("Returns information about the connection."),
            cmd("kill", -3, f, NO_KEYS, kill).summary("Terminates open connections."),
            cmd("reply", 3, c, NO_KEYS, reply)
                .summary("Instructs the server whether to reply to commands."),
            cmd("unblock", -3, f, NO_KEYS, unblock).summary(
                "Unblocks a client blocked by a blocking command from a different connection.",
            ),
            cmd("no-evict", 3, f, NO_KEYS, no_evict)
                .summary("Sets the client eviction mode of the connection."),
            cmd("no-touch", 3, c, NO_KEYS, no_touch).summary(
                "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
            ),
            cmd("tracking", -3, c, NO_KEYS, tracking)
                .summary("Controls server-assisted client-side caching for the connection."),
            cmd("caching", 3, c, NO_KEYS, caching).summary(
                "Instructs the server whether to track the keys in the next request.",
            ),
            cmd("getredir", 2, c, NO_KEYS, getredir).summary(
                "Returns the client ID to which the connection's tracking notifications are redirected.",
            ),
            cmd("trackinginfo", 2, c, NO_KEYS, trackinginfo).summary(
                "Returns information about server-assisted client-side caching for the connection.",
            ),
            cmd("pause", -3, f, NO_KEYS, pause).summary("Suspends commands processing."),
            cmd("unpause", 2, f, NO_KEYS, unpause)
                .summary("Resumes processing commands from paused clients."),
            cmd("help", 2, LOADING | STALE | NO_KEYSPACE, NO_KEYS, help)
                .summary("Returns helpful text about the different subcommands."),
        ])]
}

fn help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(super::server::help_lines(
        "CLIENT",
        &[
            "CACHING (YES|NO)",
            "    Whether the next command's keys are tracked (YES under OPTIN, NO under OPTOUT).",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "    * ID <client-id>",
            "      Kill connections by client id.",
            "    * MAXAGE <maxage>",
            "      Kill connections older than the specified age.",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "UNPAUSE",
            "    Stop the current client pause, resuming traffic.",
            "PAUSE <timeout> [WRITE|ALL]",
            "    Accepted; Tidewire does not pause clients.",
            "REPLY (ON|OFF|SKIP)",
            "    Control the replies sent to the current connection.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "SETINFO <option> <value>",
            "    Set client meta attr. Options are:",
            "    * LIB-NAME: the client lib name.",
            "    * LIB-VER: the client lib version.",
            "UNBLOCK <clientid> [TIMEOUT|ERROR]",
            "    Unblock the specified blocked client.",
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
            "NO-TOUCH (ON|OFF)",
            "    Will not touch LRU/LFU stats when this mode is on.",
        ],
    ))
}

fn id(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(ctx.client.id() as i64))
}

fn getname(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(ctx
        .client
        .info
        .name
        .lock()
        .clone()
        .map_or(Reply::Null, Reply::Bulk))
}

fn setname(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let name = args.next_owned()?;
    super::server::validate_client_name(&name)?;
    *ctx.client.info.name.lock() = (!name.is_empty()).then_some(name);
    Ok(Reply::ok())
}

fn setinfo(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let attr = args.next_bytes()?;
    let value = args.next_owned()?;
    let slot = if attr.eq_ignore_ascii_case(b"lib-name") {
        &ctx.client.info.lib_name
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        &ctx.client.info.lib_ver
    } else {
        return Err(CmdError::err(format!(
            "Unrecognized option '{}'",
            String::from_utf8_lossy(attr)
        )));
    };
    if value.iter().any(|c| *c < b'!' || *c > b'~') {
        return Err(CmdError::err(format!(
            "{} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(attr).to_ascii_lowercase()
        )));
    }
    *slot.lock() = (!value.is_empty()).then_some(value);
    Ok(Reply::ok())
}

/// Redis's client types, as CLIENT LIST/KILL TYPE name them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientType {
    Normal,
    Replica,
    Master,
    PubSub,
}

fn parse_type(arg: &[u8]) -> Result<ClientType, CmdError> {
    let s = String::from_utf8_lossy(arg).to_ascii_lowercase();
    match s.as_str() {
        "normal" => Ok(ClientType::Normal),
        "slave" | "replica" => Ok(ClientType::Replica),
        "master" => Ok(ClientType::Master),
        "pubsub" => Ok(ClientType::PubSub),
        _ => Err(CmdError::err(format!(
            "Unknown client type '{}'",
            String::from_utf8_lossy(arg)
        ))),
    }
}

/// As Redis's `getClientType`: a RESP2 client with subscriptions is a pub/sub
/// client (RESP3 clients may run any command while subscribed, so they stay normal).
fn type_of(c: &ClientInfo) -> ClientType {
    if c.resp.load(Ordering::Relaxed) == 2 && subscriptions(c) > 0 {
        ClientType::PubSub
    } else {
        ClientType::Normal
    }
}

fn subscriptions(c: &ClientInfo) -> usize {
    c.subscriptions.load(Ordering::Relaxed)
        + c.psubscriptions.load(Ordering::Relaxed)
        + c.ssubscriptions.load(Ordering::Relaxed)
}

/// Only RESP connections are listed and killable: HTTP requests and scripts are
/// not connections a user can address.
fn listed(store: &crate::Store) -> Vec<std::sync::Arc<ClientInfo>> {
    store
        .clients()
        .into_iter()
        .filter(|c| c.kind == "resp" || c.kind == "internal")
        .collect()
}

/// One CLIENT LIST line, fields in Redis 7.2's order. `qbuf` is the size of the
/// command being run for the calling client (the query buffer holds it while it
/// runs), 0 for others.
fn line(ctx: &Ctx<'_>, c: &ClientInfo, qbuf: usize) -> String {
    let now = crate::clock::now_ms();
    let mut flags = String::new();
    if c.is_monitor.load(Ordering::Relaxed) {
        flags.push('O');
    }
    if subscriptions(c) > 0 {
        flags.push('P');
    }
    if c.in_multi.load(Ordering::Relaxed) {
        flags.push('x');
    }
    if c.blocked.load(Ordering::Relaxed) {
        flags.push('b');
    }
    let tracking = ctx.store.tracking.options(c.id);
    if let Some((opts, broken)) = &tracking {
        flags.push('t');
        if *broken {
            flags.push('R');
        }
        if opts.bcast {
            flags.push('B');
        }
    }
    if c.is_killed() {
        flags.push('A');
    }
    if c.no_evict.load(Ordering::Relaxed) {
        flags.push('e');
    }
    if c.no_touch.load(Ordering::Relaxed) {
        flags.push('T');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let multi = if c.id == ctx.client.id() {
        ctx.client
            .multi
            .as_ref()
            .map_or(-1, |m| m.queue.len() as i64)
    } else if c.in_multi.load(Ordering::Relaxed) {
        0
    } else {
        -1
    };
    let opt = |v: &parking_lot::Mutex<Option<Bytes>>| {
        v.lock()
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={} qbuf-free={} argv-mem={} multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={} user={} redir={} resp={} lib-name={} lib-ver={}",
        c.id,
        c.addr,
        c.laddr,
        c.id + 7,
        opt(&c.name),
        now.saturating_sub(c.created_ms) / 1000,
        now.saturating_sub(c.last_interaction_ms.load(Ordering::Relaxed)) / 1000,
        flags,
        c.db.load(Ordering::Relaxed),
        c.subscriptions.load(Ordering::Relaxed),
        c.psubscriptions.load(Ordering::Relaxed),
        c.ssubscriptions.load(Ordering::Relaxed),
        multi,
        qbuf,
        if qbuf > 0 { 16384usize.saturating_sub(qbuf) } else { 0 },
        if qbuf > 0 { qbuf.saturating_sub(16) } else { 0 },
        c.pending_push_bytes.load(Ordering::Relaxed),
        16384 + c.pending_push_bytes.load(Ordering::Relaxed),
        c.last_command_name(),
        c.user(),
        tracking.as_ref().map_or(-1, |(o, _)| o.redirect as i64),
        c.resp.load(Ordering::Relaxed),
        opt(&c.lib_name),
        opt(&c.lib_ver),
    );
    s
}

/// The RESP size of the running command: what Redis reports as its `qbuf`.
fn own_qbuf(argv: &[Bytes]) -> usize {
    let mut n = 1 + argv.len().to_string().len() + 2;
    for a in argv {
        n += 1 + a.len().to_string().len() + 2 + a.len() + 2;
    }
    n
}

fn list(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mut ty = None;
    let mut ids: Option<Vec<u64>> = None;
    if !args.is_empty() {
        if args.flag("TYPE") && args.remaining() == 1 {
            ty = Some(parse_type(args.next_bytes()?)?);
        } else if args.flag("ID") && !args.is_empty() {
            let mut v = Vec::new();
            for a in args.rest() {
                match crate::num::parse_i64(a) {
                    Some(n) if n > 0 => v.push(n as u64),
                    _ => return Err(CmdError::err("Invalid client ID")),
                }
            }
            ids = Some(v);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let qbuf = own_qbuf(ctx.argv);
    let mut out = String::new();
    for c in listed(ctx.store) {
        if ty.is_some_and(|t| t != type_of(&c)) {
            continue;
        }
        if ids.as_ref().is_some_and(|ids| !ids.contains(&c.id)) {
            continue;
        }
        let q = if c.id == ctx.client.id() { qbuf } else { 0 };
        out.push_str(&line(ctx, &c, q));
        out.push('\n');
    }
    Ok(Reply::Verbatim("txt", Bytes::from(out)))
}

fn info(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let me = ctx.client.info.clone();
    let mut s = line(ctx, &me, own_qbuf(ctx.argv));
    s.push('\n');
    Ok(Reply::Verbatim("txt", Bytes::from(s)))
}

#[derive(Default)]
struct KillFilter {
    addr: Option<Bytes>,
    laddr: Option<Bytes>,
    id: Option<u64>,
    ty: Option<ClientType>,
    maxage: Option<u64>,
    skipme: bool,
}

fn kill(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if args.remaining() == 1 {
        // Old form: CLIENT KILL ip:port.
        let addr = args.next_bytes()?;
        let target = listed(ctx.store)
            .into_iter()
            .find(|c| c.addr.as_bytes() == &addr[..]);
        return match target {
            Some(c) => {
                c.kill();
                Ok(Reply::ok())
            }
            None => Err(CmdError::err("No such client")),
        };
    }
    let mut f = KillFilter {
        skipme: true,
        ..KillFilter::default()
    };
    while !args.is_empty() {
        if args.remaining() < 2 {
            return Err(CmdError::Syntax);
        }
        let opt = args.next_upper()?;
        let val = args.next_bytes()?;
        match opt.as_str() {
            "ID" => match crate::num::parse_i64(val) {
                Some(n) if n > 0 => f.id = Some(n as u64),
                _ => return Err(CmdError::err("client-id should be greater than 0")),
            },
            "TYPE" => f.ty = Some(parse_type(val)?),
            "USER" => {
                if &val[..] != b"default" {
                    return Err(CmdError::err(format!(
                        "No such user '{}'",
                        String::from_utf8_lossy(val)
                    )));
                }
            }
            "ADDR" => f.addr = Some(val.clone()),
            "LADDR" => f.laddr = Some(val.clone()),
            "SKIPME" => {
                if val.eq_ignore_ascii_case(b"yes") {
                    f.skipme = true;
                } else if val.eq_ignore_ascii_case(b"no") {
                    f.skipme = false;
                } else {
                    return Err(CmdError::Syntax);
                }
            }
            "MAXAGE" => match crate::num::parse_i64(val) {
                Some(n) if n >= 0 => f.maxage = Some(n as u64),
                _ => return Err(CmdError::Syntax),
            },
            _ => return Err(CmdError::Syntax),
        }
    }
    let now = crate::clock::now_ms();
    let mut killed = 0;
    for c in listed(ctx.store) {
        if f.skipme && c.id == ctx.client.id() {
            continue;
        }
        if f.id.is_some_and(|id| id != c.id)
            || f.ty.is_some_and(|t| t != type_of(&c))
            || f.addr.as_ref().is_some_and(|a| c.addr.as_bytes() != &a[..])
            || f.laddr
                .as_ref()
                .is_some_and(|a| c.laddr.as_bytes() != &a[..])
            || f.maxage
                .is_some_and(|m| now.saturating_sub(c.created_ms) / 1000 < m)
        {
            continue;
        }
        c.kill();
        killed += 1;
    }
    Ok(Reply::Int(killed))
}

fn reply(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mode = args.next_upper()?;
    ctx.client.reply_mode = match mode.as_str() {
        "ON" => ReplyMode::On,
        "OFF" => ReplyMode::Off,
        "SKIP" => ReplyMode::SkipNext,
        _ => return Err(CmdError::Syntax),
    };
    Ok(Reply::ok())
}

fn unblock(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let id = args.next_i64()?;
    let how = if args.is_empty() {
        1
    } else {
        let w = args.next_upper()?;
        match w.as_str() {
            "TIMEOUT" => 1,
            "ERROR" => 2,
            _ => {
                return Err(CmdError::err(
                    "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
                ))
            }
        }
    };
    args.finish()?;
    let target = (id > 0)
        .then(|| ctx.store.client_by_id(id as u64))
        .flatten();
    match target {
        Some(c) if c.blocked.load(Ordering::SeqCst) => {
            c.unblock.store(how, Ordering::SeqCst);
            c.unblock_notify.notify_one();
            Ok(Reply::Int(1))
        }
        _ => Ok(Reply::Int(0)),
    }
}

/// CLIENT TRACKING on|off [REDIRECT id] [PREFIX p …] [BCAST] [OPTIN] [OPTOUT]
/// [NOLOOP], with Redis's checks in Redis's order.
fn tracking(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    use crate::tracking::TrackingOptions;
    let mode = args.next_bytes()?.clone();
    let mut opts = TrackingOptions::default();
    while let Some(opt) = args.peek().cloned() {
        args.next_bytes()?;
        let more = !args.is_empty();
        if opt.eq_ignore_ascii_case(b"redirect") && more {
            if opts.redirect != 0 {
                return Err(CmdError::err(
                    "A client can only redirect to a single other client",
                ));
            }
            let id = args.next_i64()?;
            if id <= 0 || ctx.store.client_by_id(id as u64).is_none() {
                return Err(CmdError::err(
                    "The client ID you want redirect to does not exist",
                ));
            }
            opts.redirect = id as u64;
        } else if opt.eq_ignore_ascii_case(b"bcast") {
            opts.bcast = true;
        } else if opt.eq_ignore_ascii_case(b"optin") {
            opts.optin = true;
        } else if opt.eq_ignore_ascii_case(b"optout") {
            opts.optout = true;
        } else if opt.eq_ignore_ascii_case(b"noloop") {
            opts.noloop = true;
        } else if opt.eq_ignore_ascii_case(b"prefix") && more {
            opts.prefixes.push(args.next_owned()?);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let id = ctx.client.id();
    if mode.eq_ignore_ascii_case(b"on") {
        if !opts.bcast && !opts.prefixes.is_empty() {
            return Err(CmdError::err(
                "PREFIX option requires BCAST mode to be enabled",
            ));
        }
        let current = ctx.store.tracking.options(id).map(|(o, _)| o);
        if let Some(cur) = &current {
            if cur.bcast != opts.bcast {
                return Err(CmdError::err("You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."));
            }
        }
        if opts.bcast && (opts.optin || opts.optout) {
            return Err(CmdError::err(
                "OPTIN and OPTOUT are not compatible with BCAST",
            ));
        }
        if opts.optin && opts.optout {
            return Err(CmdError::err(
                "You can't specify both OPTIN mode and OPTOUT mode",
            ));
        }
        if let Some(cur) = &current {
            if (opts.optin && cur.optout) || (opts.optout && cur.optin) {
                return Err(CmdError::err("You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."));
            }
        }
        if opts.bcast {
            ctx.store
                .tracking
                .check_prefixes(id, &opts.prefixes)
                .map_err(CmdError::Err)?;
        }
        ctx.store.tracking.enable(&ctx.client.info, opts);
        ctx.client.tracking = true;
    } else if mode.eq_ignore_ascii_case(b"off") {
        ctx.store.tracking.disable(id);
        ctx.client.tracking = false;
        ctx.client.caching = None;
    } else {
        return Err(CmdError::Syntax);
    }
    Ok(Reply::ok())
}

/// CLIENT CACHING yes|no: OPTIN / OPTOUT for the next command.
fn caching(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let Some((opts, _)) = ctx.store.tracking.options(ctx.client.id()) else {
        return Err(CmdError::err("CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"));
    };
    let v = args.next_bytes()?;
    let yes = if v.eq_ignore_ascii_case(b"yes") {
        if !opts.optin {
            return Err(CmdError::err(
                "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
        true
    } else if v.eq_ignore_ascii_case(b"no") {
        if !opts.optout {
            return Err(CmdError::err(
                "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
        false
    } else {
        return Err(CmdError::Syntax);
    };
    ctx.client.caching = Some(yes);
    ctx.client.caching_fresh = true;
    Ok(Reply::ok())
}

fn getredir(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(
        ctx.store
            .tracking
            .options(ctx.client.id())
            .map_or(-1, |(o, _)| o.redirect as i64),
    ))
}

fn trackinginfo(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let s = |v: &'static str| Reply::Bulk(Bytes::from_static(v.as_bytes()));
    let state = ctx.store.tracking.options(ctx.client.id());
    let mut flags = vec![s(if state.is_some() { "on" } else { "off" })];
    let (redirect, prefixes) = match &state {
        None => (-1, Vec::new()),
        Some((o, broken)) => {
            if o.bcast {
                flags.push(s("bcast"));
            }
            if o.optin {
                flags.push(s("optin"));
                if ctx.client.caching == Some(true) {
                    flags.push(s("caching-yes"));
                }
            }
            if o.optout {
                flags.push(s("optout"));
                if ctx.client.caching == Some(false) {
                    flags.push(s("caching-no"));
                }
            }
            if o.noloop {
                flags.push(s("noloop"));
            }
            if *broken {
                flags.push(s("broken_redirect"));
            }
            let prefixes = if o.bcast {
                o.prefixes.iter().cloned().map(Reply::Bulk).collect()
            } else {
                Vec::new()
            };
            (o.redirect as i64, prefixes)
        }
    };
    Ok(Reply::Map(vec![
        (s("flags"), Reply::Set(flags)),
        (s("redirect"), Reply::Int(redirect)),
        (s("prefixes"), Reply::Array(prefixes)),
    ]))
}

fn on_off(args: &mut Args<'_>) -> Result<bool, CmdError> {
    let v = args.next_upper()?;
    match v.as_str() {
        "ON" => Ok(true),
        "OFF" => Ok(false),
        _ => Err(CmdError::Syntax),
    }
}

fn no_evict(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let on = on_off(args)?;
    ctx.client.info.no_evict.store(on, Ordering::Relaxed);
    Ok(Reply::ok())
}

fn no_touch(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let on = on_off(args)?;
    ctx.client.info.no_touch.store(on, Ordering::Relaxed);
    Ok(Reply::ok())
}

fn pause(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let timeout = args
        .next_i64()
        .map_err(|_| CmdError::err("timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(CmdError::err("timeout is negative"));
    }
    if !args.is_empty() && !args.flag("WRITE") && !args.flag("ALL") {
        return Err(CmdError::Syntax);
    }
    args.finish()?;
    Ok(Reply::ok())
}

fn unpause(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::ok())
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    fn text(r: Reply) -> String {
        match r {
            Reply::Verbatim(_, b) | Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn name_and_id() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["CLIENT", "GETNAME"]), Reply::Null);
        assert_eq!(t.run(&["CLIENT", "SETNAME", "myname"]), ok());
        assert_eq!(t.run(&["CLIENT", "GETNAME"]), Reply::bulk_str("myname"));
        assert_eq!(
            t.run(&["CLIENT", "SETNAME", "a b"]),
            Reply::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into()
            )
        );
        let id = t.client.id() as i64;
        assert_eq!(t.run(&["CLIENT", "ID"]), Reply::Int(id));
        let l = text(t.run(&["CLIENT", "LIST"]));
        assert!(l.contains("name=myname "), "{l}");
        assert!(
            l.contains(" flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=26 "),
            "{l}"
        );
        assert!(
            l.contains(" cmd=client|list user=default redir=-1 resp=2 lib-name= lib-ver=\n"),
            "{l}"
        );
    }

    #[test]
    fn setinfo_and_errors() {
        let mut t = TestClient::new();
        assert_eq!(t.run(&["CLIENT", "SETINFO", "lib-name", "redis.py"]), ok());
        assert_eq!(t.run(&["CLIENT", "SETINFO", "LIB-VER", "1.2.3"]), ok());
        assert!(text(t.run(&["CLIENT", "INFO"])).contains("lib-name=redis.py lib-ver=1.2.3"));
        assert_eq!(
            t.run(&["CLIENT", "SETINFO", "badger", "x"]),
            Reply::Error("ERR Unrecognized option 'badger'".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "SETINFO", "lib-name", "a b"]),
            Reply::Error(
                "ERR lib-name cannot contain spaces, newlines or special characters.".into()
            )
        );
        assert_eq!(
            t.run(&["CLIENT", "KILL"]),
            Reply::Error("ERR wrong number of arguments for 'client|kill' command".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "KILL", "id", "0"]),
            Reply::Error("ERR client-id should be greater than 0".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "KILL", "type", "x"]),
            Reply::Error("ERR Unknown client type 'x'".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "KILL", "user", "bob"]),
            Reply::Error("ERR No such user 'bob'".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "KILL", "skipme", "maybe"]),
            Reply::Error("ERR syntax error".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "KILL", "1.2.3.4:5"]),
            Reply::Error("ERR No such client".into())
        );
        assert_eq!(
            t.run(&["CLIENT", "NOPE"]),
            Reply::Error("ERR unknown subcommand 'NOPE'. Try CLIENT HELP.".into())
        );
    }

    #[test]
    fn kill_by_id() {
        let mut t = TestClient::new();
        let other = t.other();
        let id = other.client.id().to_string();
        assert_eq!(t.run(&["CLIENT", "KILL", "ID", &id]), Reply::Int(1));
        assert!(other.client.info.is_killed());
        assert_eq!(t.run(&["CLIENT", "UNBLOCK", &id]), Reply::Int(0));
    }
}
