//! What `redis.call` runs: a command from a script, checked by Redis's script
//! rules and run against the shards the script already holds.
//!
//! The script runs as its caller's client (its database, its name in CLIENT LIST),
//! with the protocol the script chose (`redis.setresp`), and a `SELECT` inside it
//! does not outlast it (the caller's database is restored afterwards, as Redis 7).
//! Each command's writes reach the log as their own records; the family wraps
//! them in MULTI/EXEC, so a replay applies a script whole or not at all.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tidewire_resp::{Protocol, Reply};

use super::ScriptHost;
use crate::client::Client;
use crate::command::{flag, registry, Command, RecentCommands};
use crate::exec::{resolve, Ctx, Events};
use crate::keyspace::Locked;
use crate::Store;

/// The rules a running script is held to.
pub struct Rules {
    /// EVAL_RO / EVALSHA_RO, or a `no-writes` shebang: no write command may run.
    pub read_only: bool,
    /// `allow-oom` (or `no-writes`): writes run even over `maxmemory`.
    pub allow_oom: bool,
}

/// A running script's host. It owns what the script's commands need — the
/// caller's client, the shards its command holds, the command's side effects — for
/// the length of the run: the Lua state keeps its host between runs in a slot of
/// its own (see `scripting::env`), so it cannot borrow them. [`CommandHost::lend`]
/// takes them from the caller's command context and [`CommandHost::give_back`]
/// returns them.
pub struct CommandHost {
    store: Arc<Store>,
    client: Client,
    ks: Locked,
    ev: Events,
    now: u64,
    rules: Rules,
    /// Whether a write command already ran: from then on the script cannot be
    /// refused half-way for memory, as in Redis.
    wrote: bool,
    /// Script run time (ms) at which this thread next gives its runtime worker's
    /// queued tasks away.
    next_hand_off_ms: u64,
}

/// A script that has run this long gives its worker thread's other tasks to a new
/// worker: the runtime's accept loop, the connections that would answer -BUSY
/// and SCRIPT KILL, must not wait behind it.
const HAND_OFF_AFTER_MS: u64 = 2;
/// How often a long script repeats the hand-off (each costs it 1 ms).
const HAND_OFF_EVERY_MS: u64 = 100;

thread_local! {
    /// The commands this thread's scripts called lately (see [`RecentCommands`]).
    static RECENT: std::cell::RefCell<RecentCommands> = std::cell::RefCell::default();
}

/// On a multi-threaded runtime, moves the tasks queued on this worker to a new
/// worker thread and lets the script go on here (`block_in_place`; the short
/// sleep lets the new worker take them before this thread would take them back).
fn hand_off_worker() {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| std::thread::sleep(std::time::Duration::from_millis(1)));
    }
}

impl CommandHost {
    /// Takes the client, held shards and events out of `ctx` for a run (leaving
    /// stand-ins). `None` only while the store is being dropped.
    pub fn lend(ctx: &mut Ctx<'_>, rules: Rules) -> Option<CommandHost> {
        let store = ctx.store.handle()?;
        let stand_in = Client::new(ctx.client.info.clone(), true);
        let mut ev = std::mem::take(ctx.ev);
        ev.in_script = true;
        Some(CommandHost {
            client: std::mem::replace(ctx.client, stand_in),
            ks: std::mem::replace(ctx.ks, store.keyspace.lock_none()),
            ev,
            now: ctx.now,
            store,
            rules,
            wrote: false,
            next_hand_off_ms: 0,
        })
    }

    /// Puts the client, shards and events back into `ctx` after the run.
    pub fn give_back(self, ctx: &mut Ctx<'_>) {
        *ctx.client = self.client;
        *ctx.ks = self.ks;
        *ctx.ev = self.ev;
        ctx.ev.in_script = false;
    }

    /// Redis's checks before a script's command runs; the error line on refusal.
    fn admit(&mut self, argv: &[Bytes]) -> Result<&'static Command, String> {
        let cmd = match RECENT.with_borrow(|r| r.get(&argv[0])) {
            Some(cmd) if cmd.arity_ok(argv.len()) => cmd,
            _ => {
                // A container with an unknown subcommand is an unknown command,
                // as Redis's lookup has it.
                let cmd = resolve(argv).map_err(|_| {
                    if known_command(argv).is_some() {
                        "ERR Wrong number of args calling Redis command from script".to_string()
                    } else {
                        "ERR Unknown Redis command called from script".to_string()
                    }
                })?;
                RECENT.with_borrow_mut(|r| r.set(&argv[0], cmd));
                cmd
            }
        };
        if cmd.has(flag::NOSCRIPT) {
            return Err("ERR This Redis command is not allowed from script".into());
        }
        // A script runs with its caller's permissions.
        if self.store.acl.restricted() {
            self.store
                .acl_permit(&mut self.client, cmd, argv, "lua")
                .map_err(|e| e.text())?;
        }
        let writes = cmd.has(flag::WRITE);
        if self.rules.read_only && writes {
            return Err("ERR Write commands are not allowed from read-only scripts.".into());
        }
        if writes && !self.wrote {
            if let Some(e) = crate::persistence::write_refusal(&self.store) {
                return Err(e.text());
            }
        }
        if cmd.has(flag::DENYOOM)
            && !self.wrote
            && !self.rules.allow_oom
            && crate::evict::over_limit(&self.store)
        {
            return Err(crate::evict::oom().text());
        }
        Ok(cmd)
    }
}

impl ScriptHost for CommandHost {
    fn call(&mut self, argv: &[Bytes]) -> Reply {
        if argv.is_empty() {
            return Reply::Error(
                "ERR Please specify at least one argument for this redis lib call".into(),
            );
        }
        let cmd = match self.admit(argv) {
            Ok(cmd) => cmd,
            Err(e) => {
                // As Redis: a refusal is the command's rejected call and an error
                // reply of its own, whether or not the script then fails with it.
                if let Some(c) = known_command(argv) {
                    c.stats.rejected_calls.fetch_add(1, Ordering::Relaxed);
                }
                self.store.stats.count_error(&e);
                return Reply::Error(e);
            }
        };
        if cmd.has(flag::WRITE) && !self.wrote {
            let running = &self.store.scripts.running;
            // SCRIPT KILL came between two polls: the first write must not run
            // (once it has, the script can no longer be stopped).
            if running.kill.load(Ordering::SeqCst) {
                return Reply::Error("ERR Script killed by user with SCRIPT KILL...".into());
            }
            self.wrote = true;
            running.wrote.store(true, Ordering::SeqCst);
        }
        self.store.feed_monitors_from_script(&self.client, argv);
        self.store.run_locked(
            &mut self.client,
            &mut self.ks,
            &mut self.ev,
            cmd,
            argv,
            self.now,
            Instant::now(),
            true,
        )
    }

    fn set_resp(&mut self, resp: Protocol) {
        self.client.proto = resp;
    }

    fn interrupt(&mut self) -> Option<String> {
        let store = &*self.store;
        let running = &store.scripts.running;
        // Again every HAND_OFF_EVERY_MS: on a loaded machine the new worker may not
        // have taken the queued tasks before this thread took its core back, and
        // those tasks (SCRIPT KILL among them) must not wait for the script's end.
        let elapsed = running.elapsed_ms();
        if elapsed >= HAND_OFF_AFTER_MS && elapsed >= self.next_hand_off_ms {
            self.next_hand_off_ms = elapsed + HAND_OFF_EVERY_MS;
            hand_off_worker();
        }
        // A script that has written is never stopped half-way (SCRIPT KILL
        // refuses it; a shutdown's kill request passes it by): its effects are
        // logged when it ends, all together.
        if !self.wrote && running.kill.load(Ordering::SeqCst) {
            return Some("ERR Script killed by user with SCRIPT KILL...".into());
        }
        // Where no other thread can answer SCRIPT KILL (one worker thread), a
        // script that has written nothing is stopped once it is past the busy
        // threshold, as SCRIPT KILL would stop it; otherwise one endless loop
        // would stop the whole server. A script that wrote runs to its end, as an
        // UNKILLABLE one does in Redis: stopping it would break its atomicity.
        if !self.wrote
            && running.no_killer.load(Ordering::Relaxed)
            && running.busy(store.config.get_u64("busy-reply-threshold"))
        {
            return Some(
                "ERR Script killed by the server: it ran longer than busy-reply-threshold \
                 and no other worker thread can serve SCRIPT KILL"
                    .into(),
            );
        }
        None
    }

    /// redis.acl_check_cmd: whether the script's user may run the command with
    /// these arguments (commands and keys), as Redis checks it — also with an
    /// argument count the command would refuse.
    fn acl_check(&mut self, argv: &[Bytes]) -> Result<bool, String> {
        let cmd = match resolve(argv) {
            Ok(c) => c,
            Err(_) => known_command(argv)
                .ok_or_else(|| "ERR Invalid command passed to redis.acl_check_cmd()".to_string())?,
        };
        if !self.store.acl.restricted() {
            return Ok(true);
        }
        Ok(self
            .store
            .acl_user(&mut self.client)
            .is_some_and(|user| self.store.acl.check(&user, cmd, argv).is_ok()))
    }
}

/// The command (or subcommand) `argv` names, if there is one, even when its
/// arguments are wrong.
fn known_command(argv: &[Bytes]) -> Option<&'static Command> {
    let c = registry().get(argv.first()?)?;
    match argv.get(1) {
        Some(sub) if !c.subs.is_empty() => c.sub(sub),
        _ => Some(c),
    }
}

/// Sets the client up to run a script and puts it back afterwards: the protocol
/// the script's commands see is chosen by the script (RESP2 unless
/// `redis.setresp(3)`), which the environment handles; the database a `SELECT`
/// picks inside the script is the script's own.
pub struct ClientState {
    db: usize,
    proto: Protocol,
}

impl ClientState {
    pub fn save(ctx: &Ctx<'_>) -> Self {
        ClientState {
            db: ctx.client.db,
            proto: ctx.client.proto,
        }
    }

    pub fn restore(self, ctx: &mut Ctx<'_>) {
        ctx.client.db = self.db;
        ctx.client.proto = self.proto;
    }
}
