//! Tidewire's state layer: the keyspace, the value types, and the command engine.
//!
//! Data flow: a front door (RESP listener, REST API, scripts) owns a [`Client`] and
//! hands each command's arguments to [`Store::execute`]. The dispatcher in [`exec`]
//! finds the command in the table ([`command`]), checks arity, auth and flags once,
//! locks the shards of the command's keys ([`keyspace`]), runs the handler from its
//! family module ([`families`]) and, while the locks are still held, hands the
//! effects of a write to the [`WriteLog`] in execution order (persistence, later
//! replication). After unlocking it delivers keyspace notifications ([`pubsub`]),
//! wakes clients blocked on keys ([`blocking`]) and feeds MONITOR.

#![forbid(unsafe_code)]

pub mod acl;
pub mod args;
pub mod blocking;
pub mod client;
pub mod clock;
pub mod command;
pub mod config;
pub mod counter;
pub mod dense;
pub mod dump_payload;
pub mod durable;
pub mod error;
pub mod event_loop;
pub mod evict;
pub mod exec;
pub mod expire;
pub mod families;
pub mod geohash;
pub mod glob;
pub mod keyspace;
pub mod latency_histogram;
pub mod latency_monitor;
pub mod lzf;
pub mod num;
pub mod persistence;
pub mod pubsub;
pub mod rdb_value;
pub mod scripting;
pub mod slowlog;
pub mod small_bytes;
pub mod str_value;
#[doc(hidden)]
pub mod testkit;
pub mod tracking;
pub mod types;
pub mod value;
pub mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

pub use args::Args;
pub use client::{Client, ClientInfo};
pub use command::{registry, Command};
pub use error::{CmdError, CmdResult};
pub use exec::{Blocked, Ctx, Outcome};
pub use tidewire_resp::{Protocol, Reply};

/// Where executed writes go, in execution order: the append-only log, later replicas.
/// `append` is called while the written keys' shards are still locked, so two writes
/// to one key always arrive in the order they were applied. It must not block on I/O.
pub trait WriteLog: Send + Sync {
    /// Records the effects of one command (or one whole transaction) as commands to
    /// replay, each tagged with its database. Returns a sequence number that
    /// [`WriteLog::durable_waiter`] can wait for.
    fn append(&self, cmds: &[(usize, Vec<Bytes>)]) -> u64;

    /// With `appendfsync always`: waits for a sequence number to be on disk. A
    /// connection holds the replies of a batch until it covers the batch's writes.
    /// `None` when replies need not wait.
    fn durable_waiter(&self) -> Option<durable::DurableWaiter> {
        None
    }

    /// Attaches the runtime's committer task (`None` detaches it): see
    /// [`Store::start_log_committer`].
    fn attach_committer(&self, _committer: Option<LogCommitter>) {}

    /// Run by the committer task when signalled: the group commit, on its thread.
    fn commit_here(&self) {}
}

/// The runtime's committer task, as a write log sees it (see
/// [`Store::start_log_committer`]).
#[derive(Clone)]
pub struct LogCommitter {
    /// Wakes the task, which then calls [`Store::commit_log_here`].
    pub signal: Arc<tokio::sync::Notify>,
    /// Whether it also writes (without fsync) under `appendfsync everysec` and `no`.
    /// Only on a single-threaded runtime: elsewhere each call would cost a
    /// hand-over to a blocking thread, more than the log's writer thread does.
    pub every_policy: bool,
}

/// Server-wide counters for INFO.
#[derive(Default)]
pub struct Stats {
    pub total_connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub expired_keys_active: AtomicU64,
    /// Hash fields deleted because their TTL passed (INFO `expired_subkeys`).
    pub expired_subkeys: AtomicU64,
    pub evicted_keys: AtomicU64,
    /// Bumped on every read/write by every worker: spread across cache lines.
    pub total_net_input_bytes: counter::SpreadCounter,
    pub total_net_output_bytes: counter::SpreadCounter,
    /// Socket reads and reply writes of RESP connections (Redis's
    /// `total_reads_processed` / `total_writes_processed`).
    pub total_reads_processed: counter::SpreadCounter,
    pub total_writes_processed: counter::SpreadCounter,
    pub total_error_replies: AtomicU64,
    pub unexpected_error_replies: AtomicU64,
    pub dirty: counter::SpreadCounter,
    /// Non-blocking polls made by the server's busy poller (`busy-poll-us`).
    pub busy_polls: AtomicU64,
    /// INFO errorstats: error replies counted by their prefix (`ERR`, `WRONGTYPE`).
    pub error_codes: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The native primitives' decisions (INFO stats `tw_*`, `/metrics`).
    pub primitives: PrimitiveStats,
}

/// What the native primitives decided, since start (or CONFIG RESETSTAT).
#[derive(Default)]
pub struct PrimitiveStats {
    pub throttle_allowed: AtomicU64,
    pub throttle_limited: AtomicU64,
    /// TW.IDEM.BEGIN answers: the key taken, found in flight, found done (a replay).
    pub idem_new: AtomicU64,
    pub idem_inflight: AtomicU64,
    pub idem_replayed: AtomicU64,
    /// TW.LOCK.ACQUIRE: taken at once, found held (then refused or queued).
    pub lock_acquired: AtomicU64,
    pub lock_busy: AtomicU64,
    /// TW.FILL.GET: the value found, the caller made the filler, a fill found in
    /// flight (then waited for, or not).
    pub fill_hit: AtomicU64,
    pub fill_granted: AtomicU64,
    pub fill_waited: AtomicU64,
}

impl PrimitiveStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (name, value) pairs, in INFO's order.
    pub fn fields(&self) -> [(&'static str, u64); 10] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("tw_throttle_allowed", g(&self.throttle_allowed)),
            ("tw_throttle_limited", g(&self.throttle_limited)),
            ("tw_idem_new", g(&self.idem_new)),
            ("tw_idem_inflight", g(&self.idem_inflight)),
            ("tw_idem_replayed", g(&self.idem_replayed)),
            ("tw_lock_acquired", g(&self.lock_acquired)),
            ("tw_lock_busy", g(&self.lock_busy)),
            ("tw_fill_hit", g(&self.fill_hit)),
            ("tw_fill_granted", g(&self.fill_granted)),
            ("tw_fill_waited", g(&self.fill_waited)),
        ]
    }
}

/// Redis tracks at most this many distinct error prefixes.
const MAX_ERROR_CODES: usize = 128;

impl Stats {
    /// Counts one error reply under its prefix (the text up to the first space).
    pub fn count_error(&self, text: &str) {
        self.total_error_replies.fetch_add(1, Ordering::Relaxed);
        let code = text.split(' ').next().unwrap_or("ERR");
        let mut codes = self.error_codes.lock();
        if let Some(n) = codes.get_mut(code) {
            *n += 1;
        } else if codes.len() < MAX_ERROR_CODES {
            codes.insert(code.to_string(), 1);
        }
    }

    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for c in [
            &self.total_connections_received,
            &self.rejected_connections,
            &self.expired_keys_active,
            &self.expired_subkeys,
            &self.evicted_keys,
            &self.total_error_replies,
            &self.unexpected_error_replies,
            &self.busy_polls,
            &self.primitives.throttle_allowed,
            &self.primitives.throttle_limited,
            &self.primitives.idem_new,
            &self.primitives.idem_inflight,
            &self.primitives.idem_replayed,
            &self.primitives.lock_acquired,
            &self.primitives.lock_busy,
            &self.primitives.fill_hit,
            &self.primitives.fill_granted,
            &self.primitives.fill_waited,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.total_net_input_bytes.reset();
        self.total_net_output_bytes.reset();
        self.total_reads_processed.reset();
        self.total_writes_processed.reset();
        self.error_codes.lock().clear();
    }
}

/// The whole state layer. Shared by every front door as `Arc<Store>`.
pub struct Store {
    pub keyspace: keyspace::Keyspace,
    pub pubsub: pubsub::PubSub,
    pub config: config::Config,
    pub stats: Stats,
    pub blocking: blocking::Blocking,
    pub watches: watch::Watches,
    /// Client-side caching: who tracks which keys (`CLIENT TRACKING`).
    pub tracking: tracking::Tracking,
    pub slowlog: slowlog::Slowlog,
    /// `LATENCY LATEST | HISTORY | RESET`'s events.
    pub latency_events: latency_monitor::LatencyMonitor,
    /// ACL users and the refusal log.
    pub acl: acl::Acl,
    clients: RwLock<std::collections::HashMap<u64, Arc<ClientInfo>>>,
    monitors: RwLock<Vec<Arc<ClientInfo>>>,
    has_monitors: AtomicBool,
    next_client_id: AtomicU64,
    write_log: RwLock<Option<Arc<dyn WriteLog>>>,
    /// The runtime's committer, attached to every log installed.
    log_committer: RwLock<Option<LogCommitter>>,
    /// Mirrors `write_log.is_some()` so the write path can skip building log
    /// records (and touching the lock) when nothing consumes them.
    logging: AtomicBool,
    pub loading: AtomicBool,
    /// Off only by `DEBUG SET-ACTIVE-EXPIRE 0` (Redis's tests use it to see lazy
    /// expiry alone).
    pub active_expire: AtomicBool,
    /// The first shard the next active expiry tick visits (see `expire`).
    pub expire_cursor: std::sync::atomic::AtomicUsize,
    pub started: Instant,
    pub started_ms: u64,
    pub last_save_secs: AtomicU64,
    /// Server-level hooks the binary installs (SHUTDOWN, BGSAVE …).
    pub hooks: Mutex<Hooks>,
    pub run_id: String,
    /// AOF, snapshots, background jobs (`persistence`).
    pub persist: persistence::Persistence,
    /// EVAL's script cache and the script running now.
    pub scripts: scripting::cache::ScriptCache,
    /// Single-flight fills in flight (TW.FILL.GET's leases).
    pub fill_leases: families::fill::Leases,
    /// Redis Functions: the loaded libraries and their Lua state.
    pub functions: scripting::functions::Functions,
    /// This store's own `Arc`, for work that must own a handle to it (a running
    /// script's host lives in the Lua state, which outlives any borrow).
    me: std::sync::Weak<Store>,
}

/// Callbacks for commands whose work belongs to the server binary, not the store.
#[derive(Default)]
pub struct Hooks {
    pub shutdown: Option<Box<dyn Fn() + Send + Sync>>,
    /// CONFIG REWRITE: writes the running configuration into the file the server
    /// was started with (the file's format is the binary's). The flag asks for
    /// every parameter, not only those that differ from the defaults
    /// (`DEBUG CONFIG-REWRITE-FORCE-ALL`). `Err` is the reason, for the reply.
    pub config_rewrite: Option<ConfigRewrite>,
}

/// See [`Hooks::config_rewrite`].
pub type ConfigRewrite = Box<dyn Fn(bool) -> Result<(), String> + Send + Sync>;

impl Store {
    pub fn new() -> Arc<Store> {
        let now = clock::now_ms();
        let store = Arc::new_cyclic(|me| Store {
            me: me.clone(),
            keyspace: Default::default(),
            pubsub: Default::default(),
            config: Default::default(),
            stats: Default::default(),
            blocking: Default::default(),
            watches: Default::default(),
            tracking: Default::default(),
            slowlog: Default::default(),
            latency_events: Default::default(),
            acl: Default::default(),
            clients: Default::default(),
            monitors: Default::default(),
            has_monitors: AtomicBool::new(false),
            next_client_id: AtomicU64::new(1),
            write_log: RwLock::new(None),
            log_committer: RwLock::new(None),
            logging: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            active_expire: AtomicBool::new(true),
            expire_cursor: std::sync::atomic::AtomicUsize::new(0),
            started: Instant::now(),
            started_ms: now,
            last_save_secs: AtomicU64::new(now / 1000),
            hooks: Mutex::new(Hooks::default()),
            run_id: random_hex(40),
            persist: Default::default(),
            scripts: Default::default(),
            fill_leases: Default::default(),
            functions: Default::default(),
        });
        store.persist.init(Arc::downgrade(&store));
        store
    }

    /// A counted handle to this store; `None` only while it is being dropped.
    pub fn handle(&self) -> Option<Arc<Store>> {
        self.me.upgrade()
    }

    pub fn set_write_log(&self, log: Arc<dyn WriteLog>) {
        if let Some(committer) = self.log_committer.read().clone() {
            log.attach_committer(Some(committer));
        }
        *self.write_log.write() = Some(log);
        self.logging.store(true, Ordering::SeqCst);
    }

    /// Lets the server's runtime do the log's group commit under `appendfsync
    /// always` (Redis's `beforeSleep`), rather than a hand-over to the log's writer
    /// thread and back; with `every_policy`, also its plain writes under `everysec`
    /// and `no` (see [`LogCommitter`]). The caller runs a task that awaits the
    /// returned signal and then calls [`Store::commit_log_here`], and calls
    /// [`Store::stop_log_committer`] when it stops.
    pub fn start_log_committer(&self, every_policy: bool) -> Arc<tokio::sync::Notify> {
        let committer = LogCommitter {
            signal: Arc::new(tokio::sync::Notify::new()),
            every_policy,
        };
        *self.log_committer.write() = Some(committer.clone());
        if let Some(log) = self.write_log() {
            log.attach_committer(Some(committer.clone()));
        }
        committer.signal
    }

    /// Back to the log's own writer thread (the committer task is ending).
    pub fn stop_log_committer(&self) {
        *self.log_committer.write() = None;
        if let Some(log) = self.write_log() {
            log.attach_committer(None);
        }
    }

    /// See [`Store::start_log_committer`].
    pub fn commit_log_here(&self) {
        if let Some(log) = self.write_log() {
            let start = std::time::Instant::now();
            log.commit_here();
            event_loop::EVENT_LOOP.add_aof(start.elapsed());
        }
    }

    /// Stops handing writes to a log (`appendonly no` at runtime).
    pub fn clear_write_log(&self) {
        *self.write_log.write() = None;
        self.logging.store(false, Ordering::SeqCst);
    }

    /// Whether executed writes are being logged (a [`WriteLog`] is installed).
    pub fn logging(&self) -> bool {
        self.logging.load(Ordering::SeqCst)
    }

    pub fn write_log(&self) -> Option<Arc<dyn WriteLog>> {
        self.write_log.read().clone()
    }

    /// See [`WriteLog::durable_waiter`].
    pub fn durable_waiter(&self) -> Option<durable::DurableWaiter> {
        self.write_log.read().as_ref()?.durable_waiter()
    }

    /// Creates a client for a new connection and registers it for CLIENT LIST.
    pub fn new_client(&self, addr: String, laddr: String, kind: &'static str) -> Client {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo::new(id, addr, laddr, kind));
        self.clients.write().insert(id, info.clone());
        if kind == "resp" {
            self.stats
                .total_connections_received
                .fetch_add(1, Ordering::Relaxed);
        }
        let authenticated = !self.requires_auth();
        Client::new(info, authenticated)
    }

    /// A client for Tidewire's own work on the keyspace (realtime history, the
    /// QStash API), on database `db`: authenticated, never blocking, left out of
    /// command statistics, and of a kind of its own so CLIENT LIST/KILL leave it
    /// alone.
    pub fn new_internal_client(&self, name: &str, kind: &'static str, db: usize) -> Client {
        let mut c = self.new_client(name.to_string(), "internal".into(), kind);
        c.authenticated = true;
        c.no_block = true;
        c.internal = true;
        c.select(db);
        c
    }

    /// Forgets a closed connection: its subscriptions, watches, monitor slot.
    pub fn drop_client(&self, client: &mut Client) {
        families::pubsub::unsubscribe_all(self, client);
        families::transactions::unwatch_all(self, client);
        if client.tracking {
            self.tracking.disable(client.id());
        }
        self.clients.write().remove(&client.id());
        if client.info.is_monitor.load(Ordering::Relaxed) {
            self.monitors.write().retain(|m| m.id != client.id());
            self.has_monitors
                .store(!self.monitors.read().is_empty(), Ordering::Relaxed);
        }
    }

    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self.clients.read().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Asks every connection of `kind` to close (shutdown).
    pub fn kill_clients(&self, kind: &str) {
        for c in self.clients.read().values().filter(|c| c.kind == kind) {
            c.kill();
        }
    }

    pub fn client_by_id(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.clients.read().get(&id).cloned()
    }

    pub fn connected_clients(&self, kind: &str) -> usize {
        self.clients
            .read()
            .values()
            .filter(|c| c.kind == kind)
            .count()
    }

    pub fn add_monitor(&self, info: Arc<ClientInfo>) {
        info.is_monitor.store(true, Ordering::Relaxed);
        self.monitors.write().push(info);
        self.has_monitors.store(true, Ordering::Relaxed);
    }

    pub(crate) fn feed_monitors(&self, client: &Client, argv: &[Bytes]) {
        let source = if client.info.kind == "resp" {
            client.info.addr.as_str()
        } else {
            client.info.kind
        };
        self.feed_monitors_as(client, source, argv);
    }

    /// A command a script ran, shown as Redis shows it: `[<db> lua] …`.
    pub(crate) fn feed_monitors_from_script(&self, client: &Client, argv: &[Bytes]) {
        self.feed_monitors_as(client, "lua", argv);
    }

    fn feed_monitors_as(&self, client: &Client, source: &str, argv: &[Bytes]) {
        if !self.has_monitors.load(Ordering::Relaxed) {
            return;
        }
        let us = clock::now_us();
        let mut line = format!(
            "{}.{:06} [{} {}]",
            us / 1_000_000,
            us % 1_000_000,
            client.db,
            source
        );
        for a in argv {
            line.push(' ');
            line.push_str(&quote_arg(a));
        }
        let limit = self.config.pubsub_output_limit.load(Ordering::Relaxed);
        for m in self.monitors.read().iter() {
            if m.id != client.id() {
                m.push(Reply::SimpleString(line.clone()), line.len() + 3, limit);
            }
        }
    }

    /// Whether connections must AUTH before running commands.
    /// Whether a new connection must authenticate: `requirepass` is set, or the
    /// `default` user is off or has passwords.
    pub fn requires_auth(&self) -> bool {
        self.config.requirepass().is_some() || !self.acl.default_open()
    }

    /// Disconnects subscribers whose user may no longer use a channel or pattern
    /// they are subscribed to (after ACL SETUSER or LOAD), as Redis does.
    pub fn kill_unpermitted_subscribers(&self) {
        let mut doomed = Vec::new();
        self.pubsub.for_each_subscription(|kind, name, c| {
            let allowed = self
                .acl
                .user(&c.user())
                .is_some_and(|u| u.subscription_allowed(kind, name));
            if !allowed {
                doomed.push(c.clone());
            }
        });
        for c in doomed {
            c.kill();
        }
    }

    /// Clients logged in as one of `users` (ACL DELUSER disconnects them).
    pub fn kill_clients_of(&self, users: &[&str]) {
        for info in self.clients.read().values() {
            if users.contains(&&*info.user()) {
                info.kill();
            }
        }
    }

    /// Sums keyspace hit/miss/expired counters over shards.
    pub fn keyspace_counters(&self) -> (u64, u64, u64) {
        keyspace_counters_in(&mut self.keyspace.lock_all_readonly())
    }
}

/// [`Store::keyspace_counters`] over an all-shards lock the caller holds: INFO runs
/// under its own, so that inside a script or MULTI it never locks the keyspace a
/// second time (which would wait for itself).
pub fn keyspace_counters_in(ks: &mut keyspace::Locked) -> (u64, u64, u64) {
    ks.shards_mut().fold((0, 0, 0), |t, s| {
        (t.0 + s.hits, t.1 + s.misses, t.2 + s.expired_keys)
    })
}

/// Quotes an argument as MONITOR and SLOWLOG show it (Redis's `sdscatrepr`).
pub fn quote_arg(a: &[u8]) -> String {
    let mut s = String::with_capacity(a.len() + 2);
    s.push('"');
    for &c in a {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            7 => s.push_str("\\a"),
            8 => s.push_str("\\b"),
            c if c.is_ascii_graphic() || c == b' ' => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

pub fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}
