//! Connection commands: PING, ECHO, SELECT, AUTH, HELLO, QUIT, RESET.

use bytes::Bytes;
use tidewire_resp::{Protocol, Reply};

use crate::args::Args;
use crate::client::ReplyMode;
use crate::command::{cmd, flag::*, CommandSpec, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::keyspace::NUM_DBS;

pub fn commands() -> Vec<CommandSpec> {
    let conn = |c: CommandSpec| c.group("connection");
    vec![
        conn(
            cmd(
                "ping",
                -1,
                FAST | NO_KEYSPACE | SUBSCRIBED_OK,
                NO_KEYS,
                ping,
            )
            .summary("Returns the server's liveliness response."),
        ),
        conn(
            cmd("echo", 2, FAST | NO_KEYSPACE, NO_KEYS, echo).summary("Returns the given string."),
        ),
        // Cluster replica reads: a server without cluster support refuses them, as
        // Redis does (clients send them when told a node is a cluster replica).
        conn(
            cmd(
                "readonly",
                1,
                FAST | LOADING | STALE | NO_KEYSPACE,
                NO_KEYS,
                no_cluster,
            )
            .summary("Enables read-only queries for a connection to a Redis Cluster replica node."),
        ),
        conn(
            cmd(
                "readwrite",
                1,
                FAST | LOADING | STALE | NO_KEYSPACE,
                NO_KEYS,
                no_cluster,
            )
            .summary(
                "Enables read-write queries for a connection to a Redis Cluster replica node.",
            ),
        ),
        conn(
            cmd(
                "select",
                2,
                FAST | LOADING | STALE | NO_KEYSPACE,
                NO_KEYS,
                select,
            )
            .summary("Changes the selected database."),
        ),
        conn(
            cmd(
                "auth",
                -2,
                NO_AUTH | FAST | LOADING | STALE | NO_KEYSPACE | SUBSCRIBED_OK | NOSCRIPT,
                NO_KEYS,
                auth,
            )
            .summary("Authenticates the connection."),
        ),
        conn(
            cmd(
                "hello",
                -1,
                NO_AUTH | FAST | LOADING | STALE | NO_KEYSPACE | SUBSCRIBED_OK | NOSCRIPT,
                NO_KEYS,
                hello,
            )
            .summary("Handshakes with the Redis server."),
        ),
        conn(
            cmd(
                "quit",
                -1,
                NO_AUTH
                    | FAST
                    | LOADING
                    | STALE
                    | NO_KEYSPACE
                    | SUBSCRIBED_OK
                    | TX_CONTROL
                    | NOSCRIPT,
                NO_KEYS,
                quit,
            )
            .summary("Closes the connection."),
        ),
        conn(
            cmd(
                "reset",
                1,
                NO_AUTH
                    | FAST
                    | LOADING
                    | STALE
                    | NO_KEYSPACE
                    | SUBSCRIBED_OK
                    | TX_CONTROL
                    | NOSCRIPT,
                NO_KEYS,
                reset,
            )
            .summary("Resets the connection."),
        ),
    ]
}

fn ping(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if args.remaining() > 1 {
        return Err(CmdError::WrongArity("ping".into()));
    }
    let msg = args.peek().cloned();
    if ctx.client.proto == Protocol::Resp2 && ctx.client.subscription_count() > 0 {
        return Ok(Reply::Array(vec![
            Reply::bulk(Bytes::from_static(b"pong")),
            Reply::Bulk(msg.unwrap_or_default()),
        ]));
    }
    Ok(match msg {
        Some(m) => Reply::Bulk(m),
        None => Reply::Status("PONG"),
    })
}

fn echo(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Bulk(args.next_bytes()?.clone()))
}

/// Parses a database index with Redis's errors.
pub fn parse_db(arg: &[u8]) -> Result<usize, CmdError> {
    let n = crate::num::parse_i64(arg).ok_or(CmdError::NotInteger)?;
    if n < 0 || n as usize >= NUM_DBS {
        return Err(CmdError::DbIndexOutOfRange);
    }
    Ok(n as usize)
}

fn select(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let db = parse_db(args.next_bytes()?)?;
    ctx.client.select(db);
    Ok(Reply::ok())
}

fn check_password(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8]) -> Result<(), CmdError> {
    let name = String::from_utf8_lossy(user).into_owned();
    let ok = match ctx.store.acl.user(&name) {
        Some(u) if u.enabled => match (name.as_str(), ctx.store.config.requirepass()) {
            // `requirepass` is the default user's password (Redis keeps them one).
            ("default", Some(p)) => {
                pass == p.as_bytes() || u.passwords.contains(&crate::acl::sha256(pass))
            }
            _ => u.password_matches(pass),
        },
        _ => false,
    };
    if ok {
        ctx.client.authenticated = true;
        ctx.client.info.set_user(&name);
        ctx.client.acl_user = None;
        Ok(())
    } else {
        ctx.store.acl.log_denial(
            crate::acl::Refusal {
                reason: crate::acl::Denial::Auth,
                context: "toplevel",
                object: "AUTH",
                username: &name,
                client_info: crate::exec::acl_client_info(&ctx.client.info),
            },
            crate::clock::now_ms(),
            ctx.store.config.get_u64("acllog-max-len") as usize,
        );
        Err(CmdError::raw(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ))
    }
}

fn no_cluster(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Err(CmdError::err("This instance has cluster support disabled"))
}

fn auth(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if args.remaining() > 2 {
        return Err(CmdError::Syntax);
    }
    if args.remaining() == 1 {
        let pass = args.next_bytes()?;
        let default_nopass = ctx.store.acl.user("default").is_some_and(|u| u.nopass);
        if ctx.store.config.requirepass().is_none() && default_nopass {
            return Err(CmdError::err(
                "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ));
        }
        check_password(ctx, b"default", pass)?;
    } else {
        let user = args.next_bytes()?;
        let pass = args.next_bytes()?;
        check_password(ctx, user, pass)?;
    }
    Ok(Reply::ok())
}

fn hello(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mut proto = ctx.client.proto;
    if let Some(v) = args.peek() {
        let Some(n) = crate::num::parse_i64(v) else {
            return Err(CmdError::err(
                "Protocol version is not an integer or out of range",
            ));
        };
        args.next_bytes()?;
        proto = match n {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => return Err(CmdError::raw("NOPROTO unsupported protocol version")),
        };
    }
    let mut setname = None;
    // With several AUTH options the last one counts, as in Redis.
    let mut auth = None;
    while !args.is_empty() {
        if args.flag("AUTH") && args.remaining() >= 2 {
            auth = Some((args.next_bytes()?, args.next_bytes()?));
        } else if args.flag("SETNAME") && args.remaining() >= 1 {
            let name = args.next_bytes()?;
            super::server::validate_client_name(name)?;
            setname = Some(name.clone());
        } else {
            let opt = String::from_utf8_lossy(args.next_bytes()?).into_owned();
            return Err(CmdError::err(format!(
                "Syntax error in HELLO option '{opt}'"
            )));
        }
    }
    if let Some((user, pass)) = auth {
        check_password(ctx, user, pass)?;
    }
    if !ctx.client.authenticated {
        if ctx.store.requires_auth() {
            return Err(CmdError::raw("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
        }
        ctx.client.authenticated = true;
    }
    if let Some(name) = setname {
        *ctx.client.info.name.lock() = (!name.is_empty()).then_some(name);
    }
    ctx.client.proto = proto;
    ctx.client.info.resp.store(
        if proto == Protocol::Resp3 { 3 } else { 2 },
        std::sync::atomic::Ordering::Relaxed,
    );
    let s = |v: &str| Reply::bulk(Bytes::copy_from_slice(v.as_bytes()));
    Ok(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(super::REDIS_VERSION)),
        (
            s("proto"),
            Reply::Int(if proto == Protocol::Resp3 { 3 } else { 2 }),
        ),
        (s("id"), Reply::Int(ctx.client.id() as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(vec![])),
    ]))
}

fn quit(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    ctx.client.close_after_reply = true;
    Ok(Reply::ok())
}

fn reset(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    ctx.client.multi = None;
    ctx.client
        .info
        .in_multi
        .store(false, std::sync::atomic::Ordering::Relaxed);
    super::transactions::unwatch_all(ctx.store, ctx.client);
    super::pubsub::unsubscribe_all(ctx.store, ctx.client);
    if ctx.client.tracking {
        ctx.store.tracking.disable(ctx.client.id());
        ctx.client.tracking = false;
        ctx.client.caching = None;
    }
    ctx.client.select(0);
    ctx.client.proto = Protocol::Resp2;
    ctx.client
        .info
        .resp
        .store(2, std::sync::atomic::Ordering::Relaxed);
    ctx.client.reply_mode = ReplyMode::On;
    *ctx.client.info.name.lock() = None;
    ctx.client
        .info
        .no_evict
        .store(false, std::sync::atomic::Ordering::Relaxed);
    ctx.client
        .info
        .no_touch
        .store(false, std::sync::atomic::Ordering::Relaxed);
    if ctx.store.requires_auth() {
        ctx.client.authenticated = false;
    }
    Ok(Reply::Status("RESET"))
}
