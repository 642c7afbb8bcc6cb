//! Per-connection state (`Client`) and the part of it other connections may see or
//! act on (`ClientInfo`: CLIENT LIST, CLIENT KILL, pub/sub delivery).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tidewire_resp::{Protocol, Reply};
use tokio::sync::{mpsc, Notify};

use crate::command::Command;

/// What other connections can see of a client and how they can reach it.
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    /// `resp`, `http`, `history` (realtime channel history), `loader`, `internal`
    /// (tests): which front door made it. Only `resp` and `internal` clients are
    /// listed and killable by CLIENT LIST/KILL.
    pub kind: &'static str,
    pub created_ms: u64,
    pub name: Mutex<Option<Bytes>>,
    /// The ACL user this client is logged in as (`default` until AUTH says otherwise).
    user: Mutex<Arc<str>>,
    pub lib_name: Mutex<Option<Bytes>>,
    pub lib_ver: Mutex<Option<Bytes>>,
    pub db: AtomicUsize,
    pub last_interaction_ms: AtomicU64,
    /// The last command run, as the address of its registry entry (0: none yet):
    /// written on every command, so a plain atomic store rather than a lock; read
    /// back by [`ClientInfo::last_command_name`] for CLIENT LIST.
    pub last_cmd: AtomicUsize,
    pub resp: AtomicUsize,
    pub subscriptions: AtomicUsize,
    pub psubscriptions: AtomicUsize,
    pub ssubscriptions: AtomicUsize,
    pub in_multi: AtomicBool,
    pub is_monitor: AtomicBool,
    pub blocked: AtomicBool,
    pub no_evict: AtomicBool,
    pub no_touch: AtomicBool,
    /// When the pushes pending for this client first went over the soft output
    /// limit (unix ms; 0 = not over it).
    soft_since_ms: AtomicU64,
    /// Bytes queued for this client by others (pub/sub, monitor) but not yet written.
    pub pending_push_bytes: AtomicUsize,
    killed: AtomicBool,
    kill_notify: Notify,
    /// CLIENT UNBLOCK: 1 = timeout, 2 = error.
    pub unblock: AtomicUsize,
    pub unblock_notify: Notify,
    push_tx: Mutex<Option<mpsc::UnboundedSender<(Reply, usize)>>>,
}

impl ClientInfo {
    /// The ACL user this client is logged in as.
    pub fn user(&self) -> Arc<str> {
        self.user.lock().clone()
    }

    pub fn set_user(&self, name: &str) {
        *self.user.lock() = Arc::from(name);
    }

    /// Records `cmd` as this client's last command.
    pub fn set_last_command(&self, cmd: &'static crate::command::Command) {
        self.last_cmd.store(
            cmd as *const crate::command::Command as usize,
            Ordering::Relaxed,
        );
    }

    /// The full name of the last command (`NULL` before the first), as CLIENT LIST
    /// shows it. Rarely called, so a scan of the registry is fine.
    pub fn last_command_name(&self) -> &'static str {
        let addr = self.last_cmd.load(Ordering::Relaxed);
        crate::command::registry()
            .all()
            .find(|c| *c as *const crate::command::Command as usize == addr)
            .map_or("NULL", |c| c.full_name.as_str())
    }

    pub fn new(id: u64, addr: String, laddr: String, kind: &'static str) -> Self {
        let now = crate::clock::now_ms();
        ClientInfo {
            id,
            addr,
            laddr,
            kind,
            created_ms: now,
            name: Mutex::new(None),
            user: Mutex::new(Arc::from("default")),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            db: AtomicUsize::new(0),
            last_interaction_ms: AtomicU64::new(now),
            last_cmd: AtomicUsize::new(0),
            resp: AtomicUsize::new(2),
            subscriptions: AtomicUsize::new(0),
            psubscriptions: AtomicUsize::new(0),
            ssubscriptions: AtomicUsize::new(0),
            in_multi: AtomicBool::new(false),
            is_monitor: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            no_evict: AtomicBool::new(false),
            no_touch: AtomicBool::new(false),
            soft_since_ms: AtomicU64::new(0),
            pending_push_bytes: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
            kill_notify: Notify::new(),
            unblock: AtomicUsize::new(0),
            unblock_notify: Notify::new(),
            push_tx: Mutex::new(None),
        }
    }

    /// Asks the connection to close (CLIENT KILL, output buffer limit, shutdown).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // Closing the push channel wakes a connection idle in its read loop: that loop
        // waits only on the socket and this channel (one wake-up source fewer to poll
        // per command), and a killed client gets no more pushes anyway.
        self.push_tx.lock().take();
        // Every other waiter: a connection may be in a write or a blocking wait
        // (`killed` enables its future before checking the flag, so a kill between
        // the two is not missed).
        self.kill_notify.notify_waiters();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Resolves once the client has been killed.
    pub async fn killed(&self) {
        loop {
            let notified = self.kill_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    /// Installs the channel on which out-of-band replies (pub/sub, monitor) reach the
    /// connection's writer.
    /// Closed (the sender dropped) when the client is killed.
    pub fn set_push_channel(&self, tx: mpsc::UnboundedSender<(Reply, usize)>) {
        let mut slot = self.push_tx.lock();
        if !self.is_killed() {
            *slot = Some(tx);
        }
    }

    /// Queues an out-of-band reply. `size` is its approximate wire size, counted
    /// against the output-buffer limits (`client-output-buffer-limit pubsub`): a client
    /// over the hard limit, or over the soft limit for longer than its seconds, is
    /// disconnected rather than allowed to grow memory without bound.
    pub fn push(&self, reply: Reply, size: usize, limit: usize) -> bool {
        self.push_limited(reply, size, OutputLimit::hard(limit))
    }

    /// As [`ClientInfo::push`] with the full hard/soft limit.
    pub fn push_limited(&self, reply: Reply, size: usize, limit: OutputLimit) -> bool {
        if self.is_killed() {
            return false;
        }
        let pending = self.pending_push_bytes.fetch_add(size, Ordering::Relaxed) + size;
        if limit.hard > 0 && pending > limit.hard {
            tracing::warn!(
                client = self.id,
                pending,
                "client output buffer hard limit reached, closing"
            );
            self.kill();
            return false;
        }
        if limit.soft > 0 {
            if pending > limit.soft {
                let now = crate::clock::now_ms();
                let since = self.soft_since_ms.load(Ordering::Relaxed);
                if since == 0 {
                    self.soft_since_ms.store(now, Ordering::Relaxed);
                } else if now.saturating_sub(since) > limit.soft_secs * 1000 {
                    tracing::warn!(
                        client = self.id,
                        pending,
                        "client output buffer soft limit exceeded for too long, closing"
                    );
                    self.kill();
                    return false;
                }
            } else {
                self.soft_since_ms.store(0, Ordering::Relaxed);
            }
        }
        match self.push_tx.lock().as_ref() {
            Some(tx) => tx.send((reply, size)).is_ok(),
            None => false,
        }
    }

    /// Called by the writer once pushed bytes reached the socket.
    pub fn pushed(&self, size: usize) {
        let _ = self
            .pending_push_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(size))
            });
    }

    pub fn name_string(&self) -> String {
        self.name
            .lock()
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default()
    }
}

/// A queued MULTI.
pub struct MultiState {
    pub queue: Vec<(&'static Command, Vec<Bytes>)>,
    /// A command failed to queue: EXEC must answer EXECABORT.
    pub aborted: bool,
}

/// Keys watched by WATCH and the flag any change to them raises.
#[derive(Default)]
pub struct WatchState {
    /// (db, key, had a TTL and was live when watched)
    pub keys: Vec<(usize, Bytes, bool)>,
    pub dirty: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyMode {
    #[default]
    On,
    Off,
    /// Drop the replies of the command being run, then back to `On`.
    Skip,
    /// Set by CLIENT REPLY SKIP: drop its own reply, then `Skip` the next command's.
    SkipNext,
}

/// An output-buffer limit: `hard` bytes at once, or `soft` bytes for longer than
/// `soft_secs` seconds; 0 disables either.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputLimit {
    pub hard: usize,
    pub soft: usize,
    pub soft_secs: u64,
}

impl From<usize> for OutputLimit {
    fn from(hard: usize) -> Self {
        OutputLimit::hard(hard)
    }
}

impl OutputLimit {
    pub fn hard(hard: usize) -> Self {
        OutputLimit {
            hard,
            ..Default::default()
        }
    }
}

/// A connection's private state, owned by the task serving it.
pub struct Client {
    pub info: Arc<ClientInfo>,
    pub db: usize,
    pub proto: Protocol,
    pub authenticated: bool,
    pub multi: Option<MultiState>,
    pub watch: WatchState,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    pub shard_channels: HashSet<Bytes>,
    pub reply_mode: ReplyMode,
    /// Set by QUIT: the connection closes once this reply is written.
    pub close_after_reply: bool,
    /// True for clients that must never block (HTTP, scripts).
    pub no_block: bool,
    /// Set by the connection while it re-runs a blocked command (MONITOR shows a
    /// blocked command once).
    pub retrying: bool,
    /// When the last command run for this client finished (set by the dispatcher).
    /// A connection running a pipelined batch starts the next command's clock from
    /// it instead of reading the clock again (see `Store::execute_at`).
    pub last_end: Option<std::time::Instant>,
    /// See [`crate::command::LastCommand`].
    pub last_command: crate::command::LastCommand,
    /// `CLIENT TRACKING on` (the options live in `Store::tracking`).
    pub tracking: bool,
    /// `CLIENT CACHING yes|no`, for the next command (or the next transaction).
    pub caching: Option<bool>,
    /// Set by CLIENT CACHING: the next command is the one `caching` is for.
    pub caching_fresh: bool,
    /// Tidewire's own client (the realtime layer's history): its commands are not
    /// users' commands, so they are left out of command statistics and latency.
    pub internal: bool,
    /// The client's ACL user as last looked up, with the ACL generation it is of.
    pub acl_user: Option<(u64, Arc<crate::acl::User>)>,
    /// Write-log sequence of this client's latest write (Redis's `woff`): what
    /// WAITAOF waits to see fsynced.
    pub write_seq: u64,
}

impl Client {
    pub fn new(info: Arc<ClientInfo>, authenticated: bool) -> Self {
        Client {
            info,
            db: 0,
            proto: Protocol::Resp2,
            authenticated,
            multi: None,
            watch: WatchState::default(),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shard_channels: HashSet::new(),
            reply_mode: ReplyMode::On,
            close_after_reply: false,
            no_block: false,
            retrying: false,
            last_end: None,
            write_seq: 0,
            last_command: Default::default(),
            tracking: false,
            caching: None,
            caching_fresh: false,
            internal: false,
            acl_user: None,
        }
    }

    /// Before each command: `CLIENT CACHING` applies to the one command after
    /// it, or to the whole MULTI … EXEC that follows (`in_transaction`).
    pub fn caching_turn(&mut self, in_transaction: bool) {
        if self.caching.is_some() {
            if !self.caching_fresh && !in_transaction {
                self.caching = None;
            }
            self.caching_fresh = false;
        }
    }

    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// The client that replays the AOF and snapshots at startup.
    pub fn is_loader(&self) -> bool {
        self.info.kind == "loader"
    }

    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    pub fn select(&mut self, db: usize) {
        self.db = db;
        self.info.db.store(db, Ordering::Relaxed);
    }
}
