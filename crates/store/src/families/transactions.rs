//! MULTI / EXEC / DISCARD / WATCH / UNWATCH with Redis's semantics: errors while
//! queueing abort the transaction (EXECABORT), run-time errors are per command, and
//! any change to a watched key (including expiry and FLUSH) makes EXEC return nil.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::client::{Client, MultiState};
use crate::command::{cmd, flag::*, key_flag as kf, keys, CommandSpec, KeyRoles, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::Store;

pub fn commands() -> Vec<CommandSpec> {
    let t = |c: CommandSpec| c.group("transactions");
    vec![
        t(cmd(
            "multi",
            1,
            NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | NO_KEYSPACE | TX_CONTROL,
            NO_KEYS,
            multi,
        )
        .summary("Starts a transaction.")),
        t(cmd(
            "exec",
            1,
            NOSCRIPT | LOADING | STALE | SKIP_SLOWLOG | NO_KEYSPACE | TX_CONTROL,
            NO_KEYS,
            exec,
        )
        .summary("Executes all commands in a transaction.")),
        t(cmd(
            "discard",
            1,
            NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | NO_KEYSPACE | TX_CONTROL,
            NO_KEYS,
            discard,
        )
        .summary("Discards a transaction.")),
        t(cmd(
            "watch",
            -2,
            NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | TX_CONTROL,
            keys(1, -1, 1),
            watch,
        )
        .key_roles(KeyRoles::Each(&[kf::RO]))
        .summary("Monitors changes to keys to determine the execution of a transaction.")),
        t(cmd(
            "unwatch",
            1,
            NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | NO_KEYSPACE,
            NO_KEYS,
            unwatch,
        )
        .summary("Forgets about watched keys of a transaction.")),
    ]
}

fn multi(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err("MULTI calls can not be nested"));
    }
    ctx.client.multi = Some(MultiState {
        queue: Vec::new(),
        aborted: false,
    });
    ctx.client.info.in_multi.store(true, Ordering::Relaxed);
    Ok(Reply::ok())
}

fn exec(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let Some(multi) = ctx.client.multi.take() else {
        return Err(CmdError::err("EXEC without MULTI"));
    };
    ctx.client.info.in_multi.store(false, Ordering::Relaxed);
    if multi.aborted {
        unwatch_all(ctx.store, ctx.client);
        return Err(CmdError::raw(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    let reply = ctx.store.exec_transaction(ctx.client, multi);
    unwatch_all(ctx.store, ctx.client);
    Ok(reply)
}

fn discard(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    if discard_transaction(ctx.store, ctx.client).is_none() {
        return Err(CmdError::err("DISCARD without MULTI"));
    }
    Ok(Reply::ok())
}

/// Leaves MULTI without running anything (DISCARD, a refused EXEC): the queue goes
/// and the watched keys are forgotten. Returns the queue, if there was one.
pub fn discard_transaction(store: &Store, client: &mut Client) -> Option<MultiState> {
    let multi = client.multi.take()?;
    client.info.in_multi.store(false, Ordering::Relaxed);
    unwatch_all(store, client);
    Some(multi)
}

fn watch(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err("WATCH inside MULTI is not allowed"));
    }
    let db = ctx.db();
    let now = ctx.now;
    for key in args.rest() {
        if ctx
            .client
            .watch
            .keys
            .iter()
            .any(|(d, k, _)| *d == db && k == key)
        {
            continue;
        }
        let live_with_ttl = ctx.ks.get(db, key, now).is_some_and(|e| e.expire_at != 0);
        let key = Bytes::copy_from_slice(key);
        ctx.store
            .watches
            .watch(db, key.clone(), ctx.client.id(), &ctx.client.watch.dirty);
        ctx.client.watch.keys.push((db, key, live_with_ttl));
    }
    Ok(Reply::ok())
}

fn unwatch(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    unwatch_all(ctx.store, ctx.client);
    Ok(Reply::ok())
}

/// Forgets all of a client's watched keys and resets its dirty flag.
pub fn unwatch_all(store: &Store, client: &mut Client) {
    for (db, key, _) in client.watch.keys.drain(..) {
        store.watches.unwatch(db, &key, client.info.id);
    }
    client.watch.dirty = Arc::new(std::sync::atomic::AtomicBool::new(false));
}
