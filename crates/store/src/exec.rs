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
use crate::counter::{thread_slot, ThreadSlot};
use crate::error::CmdError;
use crate::keyspace::{shard_index, Locked};
use crate::Store;

/// Called with each command's run time in microseconds (the binary feeds its
/// latency histogram from here). Set once per process.
pub static LATENCY_OBSERVER: std::sync::OnceLock<fn(&Command, u64)> = std::sync::OnceLock::new();

thread_local! {
    /// The highest write-log sequence number handed out on this thread since the
    /// last [`take_write_seq`]. `execute` is synchronous, so a connection that calls
    /// `take_write_seq` right after it gets the sequence of its own writes (EXEC,
    /// blocking retries and scripts included) without a field on every client.
    static LAST_WRITE_SEQ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Returns and clears the write-log sequence of the writes executed on this thread
/// since the last call (0: none). Connections wait for it to be durable before
/// sending replies when `appendfsync always`.
pub fn take_write_seq() -> u64 {
    LAST_WRITE_SEQ.with(|s| s.replace(0))
}

/// Side effects a command produced, applied by the dispatcher after the handler.
#[derive(Default)]
pub struct Events {
    /// Number of changes made (Redis's `server.dirty`): a write with 0 changes is not
    /// propagated.
    pub dirty: u64,
    /// Time (µs) the run that ended in blocking took: counted with the command's
    /// time once it completes, and dropped if its retry is refused (as Redis).
    pub blocked_us: u64,
    /// Replaces the default propagation (the command as received) when set.
    pub rewritten: Option<Vec<(usize, Vec<Bytes>)>>,
    /// Everything to hand to the write log, in order.
    pub propagated: Vec<(usize, Vec<Bytes>)>,
    pub notifications: Vec<(u32, &'static str, usize, Bytes)>,
    /// Keys that may now satisfy a blocked client.
    pub ready: Vec<(usize, Bytes)>,
    /// Keys whose watchers must be told (beyond the command's declared keys).
    pub touched: Vec<(usize, Bytes)>,
    /// Set by a handler that reports the keys it changed itself with `Ctx::touch`
    /// (SMOVE leaves its destination untouched when the member was already there);
    /// then the declared keys are not all touched. Reset after every command.
    pub own_touches: bool,
    /// Running inside EXEC, which wraps everything logged in MULTI/EXEC itself (a
    /// script inside it must not open a second block).
    pub in_transaction: bool,
    /// Running a script's commands: as in Redis, the slow log shows the script
    /// (EVAL, FCALL), not the commands it ran.
    pub in_script: bool,
    /// Databases changed as a whole (FLUSHDB …); `None` = all of them.
    pub touched_dbs: Vec<Option<usize>>,
    /// Replies to send before the command's own (SUBSCRIBE a b c).
    pub extra_replies: Vec<Reply>,
    /// Keys changed, for clients tracking them (`CLIENT TRACKING`), each with the
    /// id of the client whose command changed it (0: the server).
    pub invalidated: Vec<(Bytes, u64)>,
    /// The client whose commands produce these events (NOLOOP tracking).
    pub origin: u64,
    pub block: Option<BlockSpec>,
}

/// What a blocking command asks for when it cannot be served now.
pub struct BlockSpec {
    /// The command to run again when a key is ready, when it differs from the one
    /// received (XREAD's `$` resolved to the id it meant when the client blocked).
    pub retry_argv: Option<Vec<Bytes>>,
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

/// A blocked command run on its client's behalf: its replies, and the keys it made
/// ready in turn.
type Served = (Vec<Reply>, Vec<(usize, Bytes)>);

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
        if !self.store.logging() {
            // Nothing consumes log records: keep the write path allocation-free.
            self.ev.rewritten.get_or_insert_with(Vec::new);
            return;
        }
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

    /// Deletes `key` if it holds a collection that became empty, with the `del`
    /// event, as Redis does after the last element is removed.
    pub fn remove_if_empty(&mut self, key: &[u8]) {
        let (db, now) = (self.db(), self.now);
        let empty = self
            .ks
            .get(db, key, now)
            .is_some_and(|e| e.value.is_empty_collection());
        if empty {
            self.ks.remove(db, key);
            self.notify(notify::GENERIC, "del", key);
        }
    }

    /// A key got elements a blocked client may be waiting for.
    pub fn signal_ready(&mut self, key: &[u8]) {
        // Nobody blocked anywhere (the common case): no need to remember the key.
        if !self.store.blocking.has_waiters() {
            return;
        }
        self.ev
            .ready
            .push((self.client.db, Bytes::copy_from_slice(key)));
    }

    /// Tells watchers of a key that is not among the command's declared keys.
    pub fn touch(&mut self, db: usize, key: &[u8]) {
        self.ev.touched.push((db, Bytes::copy_from_slice(key)));
    }

    /// This command will `touch` the keys it changed itself instead of having all
    /// its declared keys touched.
    pub fn own_touches(&mut self) {
        self.ev.own_touches = true;
    }

    /// Asks to block on `keys` (only when blocking is allowed: check `no_block`).
    pub fn block(
        &mut self,
        keys: Vec<Bytes>,
        timeout: Option<Duration>,
        timeout_reply: Reply,
    ) -> Reply {
        self.ev.block = Some(BlockSpec {
            retry_argv: None,
            keys,
            timeout,
            timeout_reply,
        });
        Reply::Null
    }

    /// Like [`Ctx::block`], retrying `argv` instead of the command received.
    pub fn block_with(
        &mut self,
        argv: Vec<Bytes>,
        keys: Vec<Bytes>,
        timeout: Option<Duration>,
        timeout_reply: Reply,
    ) {
        self.ev.block = Some(BlockSpec {
            retry_argv: Some(argv),
            keys,
            timeout,
            timeout_reply,
        });
    }
}

/// A string-valued read used by many commands: `Ok(None)` if absent, WRONGTYPE if
/// the key holds another type.
pub fn read_string(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, CmdError> {
    let db = ctx.db();
    match ctx.ks.lookup_read(db, key, ctx.now) {
        None => Ok(None),
        Some(e) => match &e.value {
            crate::value::Value::Str(b) => Ok(Some(b.to_bytes())),
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
        self.execute_at(client, argv, out, Instant::now())
    }

    /// Runs one command for a client that never waits (`no_block`: REST requests,
    /// internal clients) and returns its reply. Should a handler still ask to
    /// block, the answer is the one its timeout would give.
    pub fn execute_now(&self, client: &mut Client, argv: &[Bytes]) -> Reply {
        let mut out = Vec::with_capacity(1);
        match self.execute(client, argv, &mut out) {
            Outcome::Replies => out.pop().unwrap_or(Reply::Null),
            Outcome::Blocked(b) => {
                self.blocking.unregister(&b.waiter, &b.keys);
                b.timeout_reply
            }
        }
    }

    /// [`Store::execute`] for a command that started at `start`. A connection
    /// running a pipelined batch passes the previous command's end
    /// (`client.last_end`), so each command costs one clock read, not two (clock
    /// reads were ~5 % of a pipelined GET's CPU); its run time then also covers
    /// parsing it.
    pub fn execute_at(
        &self,
        client: &mut Client,
        argv: &[Bytes],
        out: &mut Vec<Reply>,
        start: Instant,
    ) -> Outcome {
        if argv.is_empty() {
            return Outcome::Replies;
        }
        crate::event_loop::count_command();
        let in_multi = client.multi.is_some();
        client.caching_turn(in_multi);
        let now = crate::clock::unix_ms_at(start);
        client
            .info
            .last_interaction_ms
            .store(now, Ordering::Relaxed);
        let cached = client
            .last_command
            .get(&argv[0])
            .filter(|c| c.arity_ok(argv.len()));
        let resolved = match cached {
            Some(c) => Ok(c),
            None => resolve(argv).inspect(|c| client.last_command.set(&argv[0], c)),
        };
        let cmd = match resolved {
            Ok(c) => c,
            Err(e) => {
                // A container whose subcommands ACL rules treat as first arguments
                // (DEBUG) is checked before its unknown subcommand is reported:
                // `+debug|object` must answer NOPERM for any other DEBUG word.
                if let Some(c) = registry()
                    .get(&argv[0])
                    .filter(|c| c.has(flag::ACL_FIRST_ARG) && c.arity_ok(argv.len()))
                {
                    if let Err(refused) = self.protection(client, c) {
                        out.push(self.reject(client, c, refused));
                        return Outcome::Replies;
                    }
                    if client.authenticated && self.acl.restricted() {
                        let context = if client.multi.is_some() {
                            "multi"
                        } else {
                            "toplevel"
                        };
                        if let Err(denied) = self.acl_permit(client, c, argv, context) {
                            out.push(self.reject(client, c, denied));
                            return Outcome::Replies;
                        }
                    }
                }
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
        client.info.set_last_command(cmd);
        if let Err(e) = self.admit(client, cmd, argv) {
            out.push(self.reject(client, cmd, e));
            return Outcome::Replies;
        }
        if client.info.kind != "loader" {
            // An EXEC counts as the writes it holds.
            let exec_queue = match (cmd.spec.name, client.multi.as_ref()) {
                ("exec", Some(m)) => Some(m),
                _ => None,
            };
            let writes = cmd.has(flag::WRITE)
                || cmd.has(flag::DENYOOM)
                || exec_queue.is_some_and(|m| {
                    m.queue
                        .iter()
                        .any(|(c, _)| c.has(flag::WRITE) || c.has(flag::DENYOOM))
                });
            let refused = if writes {
                crate::persistence::write_refusal(self)
            } else {
                None
            };
            let refuse_when_full = crate::evict::refused_when_full(cmd, client.multi.as_ref());
            // Invalidations of keys evicted to make room reach a tracking client
            // before its reply, as in Redis (they happen before the command runs).
            let checked = if client.tracking {
                let (checked, early) = crate::tracking::capture_for(client.id(), || {
                    refused.map_or_else(|| crate::evict::check(self, refuse_when_full), Err)
                });
                out.extend(early);
                checked
            } else {
                refused.map_or_else(|| crate::evict::check(self, refuse_when_full), Err)
            };
            if let Err(e) = checked {
                out.push(self.reject(client, cmd, e));
                return Outcome::Replies;
            }
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
        let reply = self.run_locked(client, &mut ks, &mut ev, cmd, argv, now, start, no_block);
        let blocked = ev.block.take().map(|spec| {
            let keys: Vec<(usize, Bytes)> = spec.keys.into_iter().map(|k| (client.db, k)).collect();
            let job = crate::blocking::Job {
                argv: spec.retry_argv.unwrap_or_else(|| argv.to_vec()),
                db: client.db,
                proto: client.proto,
                info: client.info.clone(),
                kind: cmd.spec.block_kind,
                keys: keys.clone(),
                blocked_us: ev.blocked_us,
            };
            let waiter = self.blocking.register(client.id(), &keys, Some(job));
            Blocked {
                waiter,
                keys,
                // A deadline too far to represent is as good as none.
                deadline: spec.timeout.and_then(|t| Instant::now().checked_add(t)),
                timeout_reply: spec.timeout_reply,
            }
        });
        drop_replayed_log(client, &mut ev);
        self.finish_locked(&mut ks, &mut ev);
        drop(ks);
        self.after_unlock(&mut ev);
        // What WAITAOF waits for: this client's writes (and those it ran for the
        // waiters it served; their own clients take the log's head when served).
        let seq = LAST_WRITE_SEQ.with(std::cell::Cell::get);
        if seq > client.write_seq {
            client.write_seq = seq;
        }
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

    /// Counts a command another engine answered (INFO commandstats, latency,
    /// error stats), as a call run here is counted.
    pub fn account_forwarded(
        &self,
        cmd: &'static Command,
        elapsed: std::time::Duration,
        reply: &Reply,
    ) {
        let elapsed_us = elapsed.as_micros() as u64;
        let slot = thread_slot();
        cmd.stats.calls.add_at(slot, 1);
        cmd.stats.usec.add_at(slot, elapsed_us);
        self.track_latency(cmd, slot, elapsed.as_nanos() as u64);
        if let Some(observe) = LATENCY_OBSERVER.get() {
            observe(cmd, elapsed_us);
        }
        if reply.is_error() {
            cmd.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
            self.count_error(reply);
        }
    }

    /// A tracking client's read: remember its keys (Redis's
    /// trackingRememberKeys). Not for EVAL_RO / FCALL_RO themselves: a script's
    /// reads are its commands'. With `--engine`, called before a read is
    /// forwarded, so an invalidation racing its reply finds the keys.
    pub fn remember_reads(&self, client: &Client, cmd: &Command, argv: &[Bytes]) {
        if !client.tracking
            || !cmd.has(flag::READONLY)
            || cmd.has(flag::PUBSUB)
            || cmd.has(flag::NOSCRIPT)
        {
            return;
        }
        let positions = cmd.spec.keys.positions(argv);
        if positions.is_empty() {
            return;
        }
        let max = self
            .config
            .encoding
            .get_usize(crate::config::Limit::TrackingTableMaxKeys);
        let lookup = |id| self.client_by_id(id);
        self.tracking.remember(
            client.id(),
            client.caching,
            positions.iter().map(|p| &argv[*p]),
            max,
            &lookup,
        );
    }

    /// Keys changed outside this process (on the engine, by any node or any of
    /// its direct clients): tracking clients are told as for a local change.
    /// Who changed them is not known here, so NOLOOP does not hold them back.
    pub fn invalidate_changed_elsewhere(&self, keys: Vec<Bytes>) {
        if keys.is_empty() || !self.tracking.any() {
            return;
        }
        let changed: Vec<(Bytes, u64)> = keys.into_iter().map(|k| (k, 0)).collect();
        let lookup = |id| self.client_by_id(id);
        self.tracking.invalidate(&changed, &lookup);
    }

    /// Everything may have changed elsewhere (a flush on the engine, or
    /// announcements that could have been missed): every tracking client drops
    /// its whole cache, as after a local FLUSHALL.
    pub fn invalidate_all_elsewhere(&self) {
        if !self.tracking.any() {
            return;
        }
        let lookup = |id| self.client_by_id(id);
        self.tracking.flush(&lookup);
    }

    /// Counts the call of a blocked command that ends without being served (timeout,
    /// CLIENT UNBLOCK): its blocked run was not counted (`blocked_us`: its time).
    /// An error `reply` (`CLIENT UNBLOCK … ERROR`) is a failed call, counted in
    /// the error statistics as Redis counts it.
    pub fn account_unblocked(&self, argv: &[Bytes], blocked_us: u64, reply: &Reply) {
        if let Ok(cmd) = resolve(argv) {
            cmd.stats.calls.add(1);
            cmd.stats.usec.add(blocked_us);
            if reply.is_error() {
                cmd.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
                self.count_error(reply);
            }
            self.track_latency(cmd, thread_slot(), blocked_us.saturating_mul(1000));
        }
    }

    /// A finished call's run time: its command's latency histogram (unless
    /// `latency-tracking` is off) and the latency monitor's events.
    #[inline]
    fn track_latency(&self, cmd: &Command, slot: ThreadSlot, ns: u64) {
        if self.config.latency_tracking.load(Ordering::Relaxed) {
            cmd.stats.latency.record_at(slot, ns);
        }
        let event = if cmd.has(flag::FAST) {
            "fast-command"
        } else {
            "command"
        };
        self.note_latency(event, ns / 1_000_000);
    }

    /// A latency monitor sample of `event`, when it took at least
    /// `latency-monitor-threshold` milliseconds (and the monitor is on).
    pub fn note_latency(&self, event: &'static str, ms: u64) {
        let threshold_ms = self.config.latency_monitor_ms.load(Ordering::Relaxed);
        if threshold_ms > 0 && ms >= threshold_ms {
            self.latency_events.add(event, ms);
        }
    }

    fn count_error(&self, reply: &Reply) {
        if let Reply::Error(text) = reply {
            self.stats.count_error(text);
        }
    }

    /// The reply to a command refused before it ran (Redis's `rejectCommand`): a
    /// refused EXEC ends its transaction, none of it run; any other refused command
    /// inside MULTI makes the coming EXEC abort.
    fn reject(&self, client: &mut Client, cmd: &'static Command, e: CmdError) -> Reply {
        cmd.stats.rejected_calls.fetch_add(1, Ordering::Relaxed);
        let reply = if cmd.spec.name == "exec" && client.multi.is_some() {
            crate::families::transactions::discard_transaction(self, client);
            Reply::Error(format!(
                "EXECABORT Transaction discarded because of: {}",
                e.text()
            ))
        } else {
            if let Some(m) = client.multi.as_mut() {
                m.aborted = true;
            }
            e.into()
        };
        self.count_error(&reply);
        reply
    }

    /// The checks a front door makes before it forwards a command to another
    /// engine instead of running it here: the command exists with its arity, and
    /// the client may run it now (AUTH, ACL, busy script, loading). A refusal comes
    /// back as the reply, counted as the dispatcher counts it.
    pub fn admit_forwarded(
        &self,
        client: &mut Client,
        argv: &[Bytes],
    ) -> Result<&'static Command, Reply> {
        let cmd = resolve(argv).inspect_err(|e| self.count_error(e))?;
        self.admit(client, cmd, argv)
            .map_err(|e| self.reject(client, cmd, e))?;
        Ok(cmd)
    }

    /// Refuses a protected command its config does not allow for this client
    /// (see [`crate::command::CommandSpec::protected_by`]); checked before
    /// authentication, as Redis checks it.
    fn protection(&self, client: &Client, cmd: &'static Command) -> Result<(), CmdError> {
        let Some(config) = cmd.spec.protected_by else {
            return Ok(());
        };
        let allowed = match self.config.get(config).as_deref() {
            Some("yes") => true,
            // An address that is not a socket's is an internal client's.
            Some("local") => client
                .info
                .addr
                .parse::<std::net::SocketAddr>()
                .map_or(true, |a| a.ip().is_loopback()),
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        let name = cmd.full_name.split('|').next().unwrap_or_default();
        Err(CmdError::err(format!(
            "{} command not allowed. If the {config} option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.",
            name.to_ascii_uppercase()
        )))
    }

    /// The client's ACL user, looked up again after any ACL change.
    pub fn acl_user(&self, client: &mut Client) -> Option<Arc<crate::acl::User>> {
        let generation = self.acl.generation();
        match &client.acl_user {
            Some((g, u)) if *g == generation => Some(u.clone()),
            _ => {
                let u = self.acl.user(&client.info.user())?;
                client.acl_user = Some((generation, u.clone()));
                Some(u)
            }
        }
    }

    /// ACL check of one command (`context`: toplevel, multi or lua); a refusal is
    /// logged in ACL LOG and answered with NOPERM.
    pub fn acl_permit(
        &self,
        client: &mut Client,
        cmd: &'static Command,
        argv: &[Bytes],
        context: &'static str,
    ) -> Result<(), CmdError> {
        self.acl_verdict(client, cmd, argv, context)
            .map_err(|(denial, object)| crate::acl::noperm(denial, &client.info.user(), &object))
    }

    /// [`Store::acl_permit`]'s check and log entry, with the refusal's reason and
    /// object for callers that word the error themselves (EXEC).
    fn acl_verdict(
        &self,
        client: &mut Client,
        cmd: &'static Command,
        argv: &[Bytes],
        context: &'static str,
    ) -> Result<(), (crate::acl::Denial, String)> {
        // A user deleted while logged in has no permissions (its clients are
        // being disconnected).
        let verdict = match self.acl_user(client) {
            Some(user) => self.acl.check(&user, cmd, argv),
            None => Err((crate::acl::Denial::Command, cmd.full_name.clone())),
        };
        verdict.inspect_err(|(denial, object)| {
            let name = client.info.user();
            self.acl.log_denial(
                crate::acl::Refusal {
                    reason: *denial,
                    context,
                    object,
                    username: &name,
                    client_info: acl_client_info(&client.info),
                },
                crate::clock::now_ms(),
                self.config.get_u64("acllog-max-len") as usize,
            );
        })
    }

    /// Checks that may refuse a command before it runs or is queued.
    fn admit(
        &self,
        client: &mut Client,
        cmd: &'static Command,
        argv: &[Bytes],
    ) -> Result<(), CmdError> {
        self.protection(client, cmd)?;
        if !client.authenticated && !cmd.has(flag::NO_AUTH) {
            if self.requires_auth() {
                return Err(CmdError::NoAuth);
            }
            client.authenticated = true;
        }
        if self.acl.restricted() && !cmd.has(flag::NO_AUTH) {
            let context = if client.multi.is_some() {
                "multi"
            } else {
                "toplevel"
            };
            self.acl_permit(client, cmd, argv, context)?;
        }
        // One relaxed load on the common path: the threshold is read only while a
        // script runs on another thread.
        if !cmd.has(flag::ALLOW_BUSY)
            && self.scripts.running.is_running()
            && self
                .scripts
                .running
                .busy(self.config.get_u64("busy-reply-threshold"))
        {
            return Err(CmdError::raw(self.scripts.running.busy_error()));
        }
        if self.loading.load(Ordering::Relaxed)
            && !cmd.has(flag::LOADING)
            && client.info.kind != "loader"
        {
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
        // Reads need not wait for a snapshot in progress to copy their shards.
        let ro = cmd.has(flag::READONLY) && !cmd.has(flag::WRITE);
        if cmd.has(flag::NO_KEYSPACE) {
            self.keyspace.lock_none()
        } else if cmd.has(flag::ALL_KEYS) {
            if ro {
                self.keyspace.lock_all_readonly()
            } else {
                self.keyspace.lock_all()
            }
        } else if let Some(p) = cmd.spec.keys.single(argv) {
            self.keyspace.lock_one(shard_index(&argv[p]), !ro)
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
            } else if ro {
                self.keyspace.lock_readonly(shards)
            } else {
                self.keyspace.lock(shards)
            }
        }
    }

    /// Runs a resolved command against already-locked shards. Used directly by EXEC
    /// and scripts, which hold their locks across several commands. `start` is when
    /// the command began (its run time is measured from it).
    #[allow(clippy::too_many_arguments)]
    pub fn run_locked(
        &self,
        client: &mut Client,
        ks: &mut Locked,
        ev: &mut Events,
        cmd: &'static Command,
        argv: &[Bytes],
        now: u64,
        start: Instant,
        no_block: bool,
    ) -> Reply {
        // CLIENT NO-TOUCH: reads leave the keys' access data alone; TOUCH still
        // touches, as in Redis.
        ks.no_touch = client.info.no_touch.load(Ordering::Relaxed) && cmd.spec.name != "touch";
        ev.origin = client.id();
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
        let end = Instant::now();
        client.last_end = Some(end);
        let elapsed = end.saturating_duration_since(start);
        let elapsed_us = elapsed.as_micros() as u64;
        // A blocking command is counted once, when it completes: served on a later
        // run, or timed out / unblocked (`account_unblocked`).
        if !client.internal {
            if ev.block.is_none() {
                let slot = thread_slot();
                cmd.stats.calls.add_at(slot, 1);
                cmd.stats.usec.add_at(slot, elapsed_us);
                self.track_latency(cmd, slot, elapsed.as_nanos() as u64);
            } else {
                ev.blocked_us = elapsed_us;
            }
            if let Some(observe) = LATENCY_OBSERVER.get() {
                observe(cmd, elapsed_us);
            }
        }
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
            // Handlers that create keys themselves (`store_key`, also for other
            // databases) already raised `new`: don't raise it twice.
            let reported = |key: &[u8]| {
                ev.notifications[notes_before..]
                    .iter()
                    .any(|(c, _, d, k)| *c == notify::NEW && *d == db && k[..] == *key)
            };
            let created: Vec<_> = absent
                .into_iter()
                .filter(|p| ks.exists(db, &argv[*p], now) && !reported(&argv[*p]))
                .map(|p| (notify::NEW, "new", db, argv[p].clone()))
                .collect();
            ev.notifications.splice(notes_before..notes_before, created);
        }
        // Keys lazily expired during the command are logged before its own effects.
        self.reap_expired(ks, ev);
        let changed = ev.dirty - dirty_before;
        let own_touches = std::mem::take(&mut ev.own_touches);
        if changed > 0 {
            self.stats.dirty.add(changed);
            if self.watches.any() && !own_touches {
                for p in cmd.spec.keys.positions(argv) {
                    self.watches.touch(client.db, &argv[p]);
                }
            }
            if self.tracking.any() && !own_touches {
                for p in cmd.spec.keys.positions(argv) {
                    ev.invalidated.push((argv[p].clone(), client.id()));
                }
            }
            // As Redis's signalKeyAsReady / signalDeletedKeyAsReady: a key a
            // client waits on that was written (renamed over, deleted, restored
            // …) is looked at again by its waiters.
            if self.blocking.has_waiters() {
                for p in cmd.spec.keys.positions(argv) {
                    let k = (client.db, argv[p].clone());
                    if !ev.ready.contains(&k) && self.blocking.is_waited(k.0, &k.1) {
                        ev.ready.push(k);
                    }
                }
            }
            match ev.rewritten.take() {
                Some(cmds) => ev.propagated.extend(cmds),
                None if cmd.is_write() && self.logging() => {
                    ev.propagated.push((client.db, argv.to_vec()))
                }
                None => {}
            }
        } else if let Some(cmds) = ev.rewritten.take() {
            ev.propagated.extend(cmds);
        }
        // Also for the reads a script or EXEC makes.
        self.remember_reads(client, cmd, argv);
        let slower_than = self.config.slowlog_slower_than.load(Ordering::Relaxed);
        if elapsed_us >= slower_than
            && !ev.in_script
            && !cmd.has(flag::SKIP_SLOWLOG)
            && !cmd.has(flag::BLOCKING)
        {
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
        if !ks.expired_fields.is_empty() {
            self.reap_expired_fields(ks, ev);
        }
        if ks.expired.is_empty() {
            return;
        }
        let flags = self.config.notify_flags();
        let tracking = self.tracking.any();
        let waiting = self.blocking.has_waiters();
        for (db, key) in ks.expired.drain(..) {
            self.watches.touch(db, &key);
            // As Redis signals a deleted key: its waiters look again (a lock's
            // waiters take it over when it expires).
            if waiting
                && self.blocking.is_waited(db, &key)
                && !ev.ready.contains(&(db, key.clone()))
            {
                ev.ready.push((db, key.clone()));
            }
            if tracking {
                ev.invalidated.push((key.clone(), 0));
            }
            if flags & notify::EXPIRED != 0 {
                ev.notifications
                    .push((notify::EXPIRED, "expired", db, key.clone()));
            }
            if self.logging() {
                ev.propagated
                    .push((db, vec![Bytes::from_static(b"DEL"), key]));
            }
        }
    }

    /// Hash fields whose TTL passed (Redis 7.4): logged as HDEL, `hexpired` (and
    /// `del` when the hash went with them), watchers and tracking told.
    fn reap_expired_fields(&self, ks: &mut Locked, ev: &mut Events) {
        let flags = self.config.notify_flags();
        let tracking = self.tracking.any();
        for (db, key, fields, emptied) in ks.expired_fields.drain(..) {
            self.stats
                .expired_subkeys
                .fetch_add(fields.len() as u64, Ordering::Relaxed);
            self.watches.touch(db, &key);
            if tracking {
                ev.invalidated.push((key.clone(), 0));
            }
            if flags & notify::HASH != 0 {
                ev.notifications
                    .push((notify::HASH, "hexpired", db, key.clone()));
            }
            if emptied && flags & notify::GENERIC != 0 {
                ev.notifications
                    .push((notify::GENERIC, "del", db, key.clone()));
            }
            if self.logging() {
                let mut hdel = vec![Bytes::from_static(b"HDEL"), key];
                hdel.extend(fields);
                ev.propagated.push((db, hdel));
            }
        }
    }

    /// Work done while the locks are still held: hand writes to the log in order.
    pub fn finish_locked(&self, ks: &mut Locked, ev: &mut Events) {
        self.reap_expired(ks, ev);
        if !ev.propagated.is_empty() {
            if let Some(log) = self.write_log() {
                let seq = log.append(&ev.propagated);
                LAST_WRITE_SEQ.with(|s| s.set(s.get().max(seq)));
            }
        }
        let waiting = self.blocking.has_waiters();
        let tracking = self.tracking.any();
        for (db, key) in ev.touched.drain(..) {
            self.watches.touch(db, &key);
            if tracking {
                ev.invalidated.push((key.clone(), ev.origin));
            }
            if waiting
                && !ev.ready.iter().any(|(d, k)| *d == db && *k == key)
                && self.blocking.is_waited(db, &key)
            {
                ev.ready.push((db, key));
            }
        }
        for db in ev.touched_dbs.drain(..) {
            self.watches.touch_db(db);
        }
    }

    /// Work done after the locks are released: notifications, then serving the
    /// clients blocked on keys this command made ready.
    pub fn after_unlock(&self, ev: &mut Events) {
        if !ev.invalidated.is_empty() {
            let lookup = |id| self.client_by_id(id);
            self.tracking.invalidate(&ev.invalidated, &lookup);
            ev.invalidated.clear();
        }
        self.publish_notifications(ev);
        if !ev.ready.is_empty() && self.blocking.has_waiters() {
            let ready: Vec<(usize, Bytes)> = ev.ready.drain(..).collect();
            self.serve_ready(ready);
        }
        ev.ready.clear();
    }

    /// Serves blocked clients from ready keys, Redis's `handleClientsBlockedOnKeys`:
    /// per key, oldest waiter first, while the key holds the type the waiter wants;
    /// keys made ready by a served command (BLMOVE's destination) are served after.
    fn serve_ready(&self, ready: Vec<(usize, Bytes)>) {
        let mut queue: std::collections::VecDeque<(usize, Bytes)> = ready.into();
        while let Some((db, key)) = queue.pop_front() {
            // Kinds that found nothing to take: the waiters of that kind behind
            // would not either. Stream readers each wait for their own id.
            let mut exhausted: Vec<crate::blocking::BlockKind> = Vec::new();
            for w in self.blocking.queue(db, &key) {
                let Some(job) = w.job() else {
                    // A job-less waiter retries itself; wake it for poppable data.
                    use crate::blocking::BlockKind;
                    if self.key_serves(db, &key, BlockKind::List)
                        || self.key_serves(db, &key, BlockKind::ZSet)
                    {
                        self.blocking.signal(db, &key);
                    }
                    continue;
                };
                if exhausted.contains(&job.kind) {
                    continue;
                }
                if !self.key_serves(db, &key, job.kind) {
                    if job.kind.consumes() {
                        exhausted.push(job.kind);
                    }
                    continue;
                }
                if !w.begin_serving() {
                    continue;
                }
                match self.run_for_waiter(job) {
                    Some((replies, more)) => {
                        self.blocking.unregister(&w, &job.keys);
                        w.finish_served(replies);
                        queue.extend(more);
                    }
                    None => {
                        w.not_served();
                        if job.kind.consumes() {
                            exhausted.push(job.kind);
                        }
                    }
                }
            }
        }
    }

    /// Whether `key` currently holds a live value of the kind a waiter needs.
    fn key_serves(&self, db: usize, key: &[u8], kind: crate::blocking::BlockKind) -> bool {
        let mut ks = self.keyspace.lock_keys([key]);
        let now = crate::clock::now_ms();
        use crate::blocking::BlockKind;
        use crate::value::Value;
        // A group reader learns of any change: the key deleted or retyped, the
        // group destroyed (its retry then fails with Redis's error).
        if kind == BlockKind::StreamGroup {
            return true;
        }
        // A fill is over once its value is there or its lease has ended.
        if kind == BlockKind::Fill {
            let has_value = ks
                .db(db, key)
                .map
                .get(key)
                .is_some_and(|e| !e.is_expired(now));
            return has_value || self.fill_leases.holder(db, key, now).is_none();
        }
        // A lock is free once its key is gone.
        if kind == BlockKind::Lock {
            return ks
                .db(db, key)
                .map
                .get(key)
                .is_none_or(|e| e.is_expired(now));
        }
        match ks.db(db, key).map.get(key) {
            Some(e) if !e.is_expired(now) => matches!(
                (&e.value, kind),
                (Value::List(_), BlockKind::List)
                    | (Value::ZSet(_), BlockKind::ZSet)
                    | (Value::Stream(_), BlockKind::Stream)
            ),
            _ => false,
        }
    }

    /// Runs a blocked client's command on its behalf. `None` if it would block
    /// again; otherwise its replies and the keys it made ready in turn.
    fn run_for_waiter(&self, job: &crate::blocking::Job) -> Option<Served> {
        let cmd = resolve(&job.argv).ok()?;
        let mut proxy = Client::new(job.info.clone(), true);
        proxy.db = job.db;
        proxy.proto = job.proto;
        // The command is checked again, as Redis reprocesses it: the user's
        // permissions may have changed while it waited.
        if self.acl.restricted() {
            if let Err(denied) = self.acl_permit(&mut proxy, cmd, &job.argv, "toplevel") {
                cmd.stats.rejected_calls.fetch_add(1, Ordering::Relaxed);
                let reply: Reply = denied.into();
                self.count_error(&reply);
                return Some((vec![reply], Vec::new()));
            }
        }
        let now = crate::clock::now_ms();
        let mut ks = self.lock_for(cmd, &job.argv);
        let mut ev = Events::default();
        let reply = self.run_locked(
            &mut proxy,
            &mut ks,
            &mut ev,
            cmd,
            &job.argv,
            now,
            Instant::now(),
            false,
        );
        let blocked = ev.block.take().is_some();
        self.finish_locked(&mut ks, &mut ev);
        drop(ks);
        self.publish_notifications(&mut ev);
        // Keys the served command changed: its own client hears of them right
        // after its reply (Redis: "Unblocked BLMOVE gets notification after
        // response"), everyone else as usual.
        let (_, own) = crate::tracking::capture_for(job.info.id, || {
            let lookup = |id| self.client_by_id(id);
            self.tracking.invalidate(&ev.invalidated, &lookup);
        });
        ev.invalidated.clear();
        if blocked {
            return None;
        }
        cmd.stats.usec.add(job.blocked_us);
        let mut replies = std::mem::take(&mut ev.extra_replies);
        replies.push(reply);
        replies.extend(own);
        Some((replies, ev.ready.drain(..).collect()))
    }

    /// Keyspace notifications gathered by a command, published after unlocking.
    fn publish_notifications(&self, ev: &mut Events) {
        if ev.notifications.is_empty() {
            return;
        }
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
    }

    /// Runs a MULTI's queued commands atomically: all their shards are locked for the
    /// whole EXEC, and their writes reach the log as one MULTI … EXEC block.
    pub fn exec_transaction(&self, client: &mut Client, multi: MultiState) -> Reply {
        let now = crate::clock::now_ms();
        let needs_all = multi.queue.iter().any(|(c, _)| {
            // SCRIPT LOAD/FLUSH take the Lua state, which a running script holds
            // while it locks shards lazily: queued with a single-shard command they
            // would hold a shard while waiting for it. The exclusive gate keeps
            // scripts out instead.
            c.has(flag::ALL_KEYS) || c.full_name.starts_with("script|")
        });
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
        let mut ev = Events {
            in_transaction: true,
            ..Events::default()
        };
        let reply = if dirty {
            Reply::NullArray
        } else {
            let mut replies = Vec::with_capacity(multi.queue.len());
            for (cmd, argv) in &multi.queue {
                // Permissions are checked again at EXEC: they may have changed since
                // the command was queued (the log shows the client running EXEC).
                if self.acl.restricted() && !cmd.has(flag::NO_AUTH) {
                    if let Err((denial, _)) = self.acl_verdict(client, cmd, argv, "multi") {
                        use crate::acl::Denial;
                        let reason = match denial {
                            Denial::Key => "no permission to touch the specified keys",
                            Denial::Channel => {
                                "no permission to access one of the channels used as arguments"
                            }
                            Denial::Command => "no permission to execute the command or subcommand",
                            Denial::Auth => "no permission",
                        };
                        let line = format!(
                            "NOPERM ACLs rules changed between the moment the transaction was \
                             accumulated and the EXEC call. This command is no longer allowed for \
                             the following reason: {reason}"
                        );
                        self.stats.count_error(&line);
                        replies.push(Reply::Error(line));
                        continue;
                    }
                }
                // SELECT and friends inside MULTI need no keyspace but still run here.
                // Scripts show themselves to monitors, before their own commands.
                if !cmd.has(flag::SKIP_MONITOR) {
                    self.feed_monitors(client, argv);
                }
                replies.push(self.run_locked(
                    client,
                    &mut ks,
                    &mut ev,
                    cmd,
                    argv,
                    now,
                    Instant::now(),
                    true,
                ));
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
        drop_replayed_log(client, &mut ev);
        self.finish_locked(&mut ks, &mut ev);
        drop(ks);
        self.after_unlock(&mut ev);
        reply
    }
}

/// What the loader replays is already in the files it reads: it is not logged
/// again. (At startup the log is not open yet; DEBUG RELOAD replays while it is.)
fn drop_replayed_log(client: &Client, ev: &mut Events) {
    if client.is_loader() {
        ev.propagated.clear();
    }
}

/// The client as ACL LOG's `client-info` shows it.
pub fn acl_client_info(c: &crate::client::ClientInfo) -> String {
    let name = c
        .name
        .lock()
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    format!(
        "id={} addr={} laddr={} name={name} db={} cmd={} user={} resp={}",
        c.id,
        c.addr,
        c.laddr,
        c.db.load(Ordering::Relaxed),
        c.last_command_name(),
        c.user(),
        c.resp.load(Ordering::Relaxed),
    )
}
