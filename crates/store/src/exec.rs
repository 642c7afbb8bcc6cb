//! The dispatcher: from an argument vector to a reply. Checks (existence, arity,
//! auth, subscribed mode, MULTI queueing) happen here once; handlers only do their
//! command's work through [`Ctx`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire_resp::{Protocol, Reply};

use crate::args::Args;
use crate::blocking::Waiter;
use crate::client::{Client, MultiState};
use crate::command::{flag, registry, Command};
use crate::config::notify;
use crate::error::CmdError;
use crate::keyspace::{shard_index, Locked};
use crate::Store;

/// Side effects a command produced, applied by the dispatcher after the handler.
#[derive(Default)]
pub struct Events {
    /// Number of changes made (Redis's `server.dirty`): a write with 0 changes is not
    /// propagated.
    pub dirty: u64,
    /// Replaces the default propagation (the command as received) when set.
    pub rewritten: Option<Vec<(usize, Vec<Bytes>)>>,
    /// Everything to hand to the write log, in order.
    pub propagated: Vec<(usize, Vec<Bytes>)>,
    pub notifications: Vec<(u32, &'static str, usize, Bytes)>,
    /// Keys that may now satisfy a blocked client.
    pub ready: Vec<(usize, Bytes)>,
    /// Keys whose watchers must be told (beyond the command's declared keys).
    pub touched: Vec<(usize, Bytes)>,
    /// Databases changed as a whole (FLUSHDB …); `None` = all of them.
    pub touched_dbs: Vec<Option<usize>>,
    /// Replies to send before the command's own (SUBSCRIBE a b c).
    pub extra_replies: Vec<Reply>,
    pub block: Option<BlockSpec>,
}

/// What a blocking command asks for when it cannot be served now.
pub struct BlockSpec {
    pub keys: Vec<Bytes>,
    /// `None` blocks forever.
    pub timeout: Option<Duration>,
    pub timeout_reply: Reply,
}

/// A client parked on keys; the connection awaits `waiter` or the deadline.
pub struct Blocked {
    pub waiter: Arc<Waiter>,
    pub keys: Vec<(usize, Bytes)>,
    pub deadline: Option<Instant>,
    pub timeout_reply: Reply,
}

pub enum Outcome {
    /// Replies to send, in order (usually one).
    Replies,
    Blocked(Blocked),
}

/// Everything a handler may use.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub client: &'a mut Client,
    pub ks: &'a mut Locked,
    pub ev: &'a mut Events,
    pub argv: &'a [Bytes],
    pub cmd: &'static Command,
    /// Unix milliseconds, fixed for the whole command (and the whole EXEC).
    pub now: u64,
    /// Inside EXEC or a script: blocking commands must not block.
    pub no_block: bool,
}

impl Ctx<'_> {
    pub fn db(&self) -> usize {
        self.client.db
    }

    pub fn resp3(&self) -> bool {
        self.client.proto == Protocol::Resp3
    }

    /// Counts a change made by this command.
    pub fn dirty(&mut self, n: u64) {
        self.ev.dirty += n;
    }

    /// Raises a keyspace notification if its class is enabled.
    pub fn notify(&mut self, class: u32, event: &'static str, key: &[u8]) {
        let flags = self.store.config.notify_flags();
        if flags & class != 0 && flags & (notify::KEYSPACE | notify::KEYEVENT) != 0 {
            self.ev
                .notifications
                .push((class, event, self.client.db, Bytes::copy_from_slice(key)));
        }
    }

    /// Logs these commands instead of the command as received (EXPIRE → PEXPIREAT,
    /// SPOP → SREM …). May be called several times; all are kept in order.
    pub fn propagate(&mut self, argv: Vec<Bytes>) {
        let db = self.client.db;
        self.ev
            .rewritten
            .get_or_insert_with(Vec::new)
            .push((db, argv));
    }

    /// Logs nothing for this command even though it changed data.
    pub fn propagate_nothing(&mut self) {
        self.ev.rewritten.get_or_insert_with(Vec::new);
    }

    /// A key got elements a blocked client may be waiting for.
    pub fn signal_ready(&mut self, key: &[u8]) {
        self.ev
            .ready
            .push((self.client.db, Bytes::copy_from_slice(key)));
    }

    /// Tells watchers of a key that is not among the command's declared keys.
    pub fn touch(&mut self, db: usize, key: &[u8]) {
        self.ev.touched.push((db, Bytes::copy_from_slice(key)));
    }

    /// Asks to block on `keys` (only when blocking is allowed: check `no_block`).
    pub fn block(
        &mut self,
        keys: Vec<Bytes>,
        timeout: Option<Duration>,
        timeout_reply: Reply,
    ) -> Reply {
        self.ev.block = Some(BlockSpec {
            keys,
            timeout,
            timeout_reply,
        });
        Reply::Null
    }
}

/// A string-valued read used by many commands: `Ok(None)` if absent, WRONGTYPE if
/// the key holds another type.
pub fn read_string(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(e) => match &e.value {
            crate::value::Value::Str(b) => Ok(Some(b.clone())),
            #[allow(unreachable_patterns)]
            _ => Err(CmdError::WrongType),
        },
    }
}

fn unknown_command_error(argv: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&argv[0]);
    let name: String = name.chars().take(128).collect();
    let mut args = String::new();
    for a in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let remaining = 128 - args.len();
        let s = String::from_utf8_lossy(a);
        let s: String = s.chars().take(remaining).collect();
        args.push_str(&format!("'{s}' "));
    }
    Reply::Error(format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ))
}

/// Resolves a command (and subcommand), checking arity. Errors are final replies.
pub fn resolve(argv: &[Bytes]) -> Result<&'static Command, Reply> {
    let cmd = registry()
        .get(&argv[0])
        .ok_or_else(|| unknown_command_error(argv))?;
    if !cmd.arity_ok(argv.len()) {
        return Err(CmdError::WrongArity(cmd.full_name.clone()).into());
    }
    // A container called alone (COMMAND) runs its own handler.
    if cmd.subs.is_empty() || argv.len() < 2 {
        return Ok(cmd);
    }
    let Some(sub) = cmd.sub(&argv[1]) else {
        return Err(Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(&argv[1])
                .chars()
                .take(128)
                .collect::<String>(),
            cmd.spec.name.to_ascii_uppercase()
        )));
    };
    if !sub.arity_ok(argv.len()) {
        return Err(CmdError::WrongArity(sub.full_name.clone()).into());
    }
    Ok(sub)
}

impl Store {
    /// Runs one command for `client`, appending its reply (or replies) to `out`.
    /// Returns `Outcome::Blocked` when the client must wait on keys; the caller then
    /// awaits the waiter or the deadline and calls `execute` again (or sends the
    /// timeout reply).
    pub fn execute(&self, client: &mut Client, argv: &[Bytes], out: &mut Vec<Reply>) -> Outcome {
        if argv.is_empty() {
            return Outcome::Replies;
        }
        let now = crate::clock::now_ms();
        client
            .info
            .last_interaction_ms
            .store(now, Ordering::Relaxed);
        let cmd = match resolve(argv) {
            Ok(c) => c,
            Err(e) => {
                if let Some(m) = client.multi.as_mut() {
                    m.aborted = true;
                }
                // A known command refused for its arity counts as a rejected call.
                // (An unknown subcommand is not a call of anything.)
                let found = registry().get(&argv[0]).and_then(|c| match argv.get(1) {
                    Some(sub) if !c.subs.is_empty() => c.sub(sub),
                    _ => Some(c),
                });
                if let Some(c) = found {
                    c.stats.rejected_calls.fetch_add(1, Ordering::Relaxed);
                }
                self.count_error(&e);
                out.push(e);
                return Outcome::Replies;
            }
        };
        *client.info.last_cmd.lock() = cmd.full_name.as_str();
        if let Err(e) = self.admit(client, cmd) {
            cmd.stats.rejected_calls.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = client.multi.as_mut() {
                m.aborted = true;
            }
            let e: Reply = e.into();
            self.count_error(&e);
            out.push(e);
            return Outcome::Replies;
        }
        if let Some(multi) = client.multi.as_mut() {
            if !cmd.has(flag::TX_CONTROL) {
                multi.queue.push((cmd, argv.to_vec()));
                out.push(Reply::Status("QUEUED"));
                return Outcome::Replies;
            }
        }
        // Like Redis, admin commands (CONFIG, MONITOR …) are not shown to monitors,
        // and a blocked command is shown once, not again when it is retried.
        let feed = !cmd.has(flag::SKIP_MONITOR) && !cmd.has(flag::ADMIN) && !client.retrying;
        let mut ks = self.lock_for(cmd, argv);
        let mut ev = Events::default();
        let no_block = client.no_block;
        let reply = self.run_locked(client, &mut ks, &mut ev, cmd, argv, now, no_block);
        let blocked = ev.block.take().map(|spec| {
            let keys: Vec<(usize, Bytes)> = spec.keys.into_iter().map(|k| (client.db, k)).collect();
            let waiter = self.blocking.register(client.id(), &keys);
            Blocked {
                waiter,
                keys,
                deadline: spec.timeout.map(|t| Instant::now() + t),
                timeout_reply: spec.timeout_reply,
            }
        });
        self.finish_locked(&mut ks, &mut ev);
        drop(ks);
        self.after_unlock(&mut ev);
        // Monitors see a command after it ran, so EXEC follows its commands.
        if feed {
            self.feed_monitors(client, argv);
        }
        if let Some(b) = blocked {
            return Outcome::Blocked(b);
        }
        out.append(&mut ev.extra_replies);
        out.push(reply);
        Outcome::Replies
    }

    fn count_error(&self, reply: &Reply) {
        if let Reply::Error(text) = reply {
            self.stats.count_error(text);
        }
    }

    /// Checks that may refuse a command before it runs or is queued.
    fn admit(&self, client: &mut Client, cmd: &'static Command) -> Result<(), CmdError> {
        if !client.authenticated && !cmd.has(flag::NO_AUTH) {
            if self.requires_auth() {
                return Err(CmdError::NoAuth);
            }
            client.authenticated = true;
        }
        if self.loading.load(Ordering::Relaxed) && !cmd.has(flag::LOADING) {
            return Err(CmdError::raw(
                "LOADING Redis is loading the dataset in memory",
            ));
        }
        if client.proto == Protocol::Resp2
            && client.subscription_count() > 0
            && !cmd.has(flag::SUBSCRIBED_OK)
        {
            return Err(CmdError::err(format!(
                "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                cmd.full_name
            )));
        }
        if client.multi.is_some() && cmd.has(flag::NO_MULTI) {
            return Err(CmdError::err("Command not allowed inside a transaction"));
        }
        Ok(())
    }

    /// Locks what a command needs: nothing, its keys' shards, or everything.
    pub fn lock_for(&self, cmd: &Command, argv: &[Bytes]) -> Locked {
        if cmd.has(flag::NO_KEYSPACE) {
            self.keyspace.lock_none()
        } else if cmd.has(flag::ALL_KEYS) {
            self.keyspace.lock_all()
        } else {
            let shards: Vec<usize> = cmd
                .spec
                .keys
                .positions(argv)
                .into_iter()
                .map(|p| shard_index(&argv[p]))
                .collect();
            if shards.is_empty() {
                self.keyspace.lock_none()
            } else {
                self.keyspace.lock(shards)
            }
        }
    }

    /// Runs a resolved command against already-locked shards. Used directly by EXEC
    /// and scripts, which hold their locks across several commands.
    #[allow(clippy::too_many_arguments)]
    pub fn run_locked(
        &self,
        client: &mut Client,
        ks: &mut Locked,
        ev: &mut Events,
        cmd: &'static Command,
        argv: &[Bytes],
        now: u64,
        no_block: bool,
    ) -> Reply {
        let start = Instant::now();
        let dirty_before = ev.dirty;
        let first_arg = if cmd.is_sub { 2 } else { 1 };
        let mut args = Args::new(argv, first_arg);
        // `notify-keyspace-events n`: keys this write creates raise a `new` event,
        // before the command's own events (as Redis's dbAdd does).
        let flags = self.config.notify_flags();
        let notes_before = ev.notifications.len();
        let absent: Vec<usize> = if cmd.is_write()
            && flags & notify::NEW != 0
            && flags & (notify::KEYSPACE | notify::KEYEVENT) != 0
        {
            cmd.spec
                .keys
                .positions(argv)
                .into_iter()
                .filter(|p| !ks.exists(client.db, &argv[*p], now))
                .collect()
        } else {
            Vec::new()
        };
        let result = {
            let mut ctx = Ctx {
                store: self,
                client,
                ks,
                ev,
                argv,
                cmd,
                now,
                no_block,
            };
            (cmd.spec.handler)(&mut ctx, &mut args)
        };
        let elapsed_us = start.elapsed().as_micros() as u64;
        cmd.stats.calls.fetch_add(1, Ordering::Relaxed);
        cmd.stats.usec.fetch_add(elapsed_us, Ordering::Relaxed);
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                cmd.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
                let e: Reply = e.into();
                self.count_error(&e);
                e
            }
        };
        if !absent.is_empty() {
            let db = client.db;
            let created: Vec<_> = absent
                .into_iter()
                .filter(|p| ks.exists(db, &argv[*p], now))
                .map(|p| (notify::NEW, "new", db, argv[p].clone()))
                .collect();
            ev.notifications.splice(notes_before..notes_before, created);
        }
        // Keys lazily expired during the command are logged before its own effects.
        self.reap_expired(ks, ev);
        let changed = ev.dirty - dirty_before;
        if changed > 0 {
            self.stats.dirty.fetch_add(changed, Ordering::Relaxed);
            if self.watches.any() {
                for p in cmd.spec.keys.positions(argv) {
                    self.watches.touch(client.db, &argv[p]);
                }
            }
            match ev.rewritten.take() {
                Some(cmds) => ev.propagated.extend(cmds),
                None if cmd.is_write() => ev.propagated.push((client.db, argv.to_vec())),
                None => {}
            }
        } else if let Some(cmds) = ev.rewritten.take() {
            ev.propagated.extend(cmds);
        }
        let slower_than = self.config.slowlog_slower_than.load(Ordering::Relaxed);
        if elapsed_us >= slower_than && !cmd.has(flag::SKIP_SLOWLOG) && !cmd.has(flag::BLOCKING) {
            self.slowlog.push(
                argv,
                elapsed_us,
                client.info.addr.clone(),
                client.info.name_string(),
                self.config.slowlog_max_len.load(Ordering::Relaxed),
            );
        }
        reply
    }

    /// Turns keys found expired into DEL records, notifications and watch touches.
    pub fn reap_expired(&self, ks: &mut Locked, ev: &mut Events) {
        if ks.expired.is_empty() {
            return;
        }
        let flags = self.config.notify_flags();
        for (db, key) in ks.expired.drain(..) {
            self.watches.touch(db, &key);
            if flags & notify::EXPIRED != 0 {
                ev.notifications
                    .push((notify::EXPIRED, "expired", db, key.clone()));
            }
            ev.propagated
                .push((db, vec![Bytes::from_static(b"DEL"), key]));
        }
    }

    /// Work done while the locks are still held: hand writes to the log in order.
    pub fn finish_locked(&self, ks: &mut Locked, ev: &mut Events) {
        self.reap_expired(ks, ev);
        if !ev.propagated.is_empty() {
            if let Some(log) = self.write_log() {
                log.append(&ev.propagated);
            }
        }
        for (db, key) in ev.touched.drain(..) {
            self.watches.touch(db, &key);
        }
        for db in ev.touched_dbs.drain(..) {
            self.watches.touch_db(db);
        }
    }

    /// Work done after the locks are released: notifications and wake-ups.
    pub fn after_unlock(&self, ev: &mut Events) {
        let limit = self.config.pubsub_limit();
        let flags = self.config.notify_flags();
        for (_class, event, db, key) in ev.notifications.drain(..) {
            if flags & notify::KEYSPACE != 0 {
                let mut ch = format!("__keyspace@{db}__:").into_bytes();
                ch.extend_from_slice(&key);
                self.pubsub.publish(&ch, event.as_bytes(), limit);
            }
            if flags & notify::KEYEVENT != 0 {
                let ch = format!("__keyevent@{db}__:{event}");
                self.pubsub.publish(ch.as_bytes(), &key, limit);
            }
        }
        for (db, key) in ev.ready.drain(..) {
            self.blocking.signal(db, &key);
        }
    }

    /// Runs a MULTI's queued commands atomically: all their shards are locked for the
    /// whole EXEC, and their writes reach the log as one MULTI … EXEC block.
    pub fn exec_transaction(&self, client: &mut Client, multi: MultiState) -> Reply {
        let now = crate::clock::now_ms();
        let needs_all = multi.queue.iter().any(|(c, _)| c.has(flag::ALL_KEYS));
        let mut ks = if needs_all {
            self.keyspace.lock_all()
        } else {
            let mut shards: Vec<usize> = Vec::new();
            for (c, argv) in &multi.queue {
                if c.has(flag::NO_KEYSPACE) {
                    continue;
                }
                shards.extend(
                    c.spec
                        .keys
                        .positions(argv)
                        .into_iter()
                        .map(|p| shard_index(&argv[p])),
                );
            }
            shards.extend(client.watch.keys.iter().map(|(_, k, _)| shard_index(k)));
            if shards.is_empty() {
                self.keyspace.lock_none()
            } else {
                self.keyspace.lock(shards)
            }
        };
        // A watched key that was live when watched and has since expired counts as
        // changed, as in Redis 7.
        let mut expired_watched = false;
        for (db, key, had_ttl) in &client.watch.keys {
            if *had_ttl && ks.get(*db, key, now).is_none() {
                expired_watched = true;
            }
        }
        let dirty = client.watch.dirty.load(Ordering::SeqCst) || expired_watched;
        let mut ev = Events::default();
        let reply = if dirty {
            Reply::NullArray
        } else {
            let mut replies = Vec::with_capacity(multi.queue.len());
            for (cmd, argv) in &multi.queue {
                // SELECT and friends inside MULTI need no keyspace but still run here.
                self.feed_monitors(client, argv);
                replies.push(self.run_locked(client, &mut ks, &mut ev, cmd, argv, now, true));
            }
            Reply::Array(replies)
        };
        if ev.propagated.len() > 1 {
            let first_db = ev.propagated[0].0;
            ev.propagated
                .insert(0, (first_db, vec![Bytes::from_static(b"MULTI")]));
            let last_db = ev.propagated.last().map_or(first_db, |p| p.0);
            ev.propagated
                .push((last_db, vec![Bytes::from_static(b"EXEC")]));
        }
        self.finish_locked(&mut ks, &mut ev);
        drop(ks);
        self.after_unlock(&mut ev);
        reply
    }
}
