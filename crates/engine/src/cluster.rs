//! Routing by slot. A request goes to the master that owns its slot (any master
//! when it has no key); `-MOVED` updates the slot map and goes where it says, `-ASK`
//! goes there once, preceded by `ASKING`; a connection that cannot be made, and
//! `-TRYAGAIN` / `-CLUSTERDOWN`, refresh the map and retry after a short pause. All
//! of it is bounded: past [`MAX_ATTEMPTS`] the caller gets an error.
//!
//! Besides redirects, the map is read again in the background (see
//! [`crate::refresh`]): every few seconds, and promptly after a connection is
//! lost, so a failover or a resharding is noticed before a request hits it, and
//! connections to nodes that stopped being masters are closed.
//!
//! Locks guard only the slot map and the connection table, and are never held
//! across an `.await`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tidewire_resp::{Protocol, Reply};

use crate::connection::{Connector, NodeConnection, PushSink};
use crate::error::EngineError;
use crate::seed::Seed;
use crate::tls::EngineTls;
use crate::topology::{join_addr, split_addr, SlotMap};

/// Tries of one request: redirects and retries together.
pub const MAX_ATTEMPTS: usize = 16;
/// Connecting (and the handshake) must not take longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A request not answered by then counts as a lost connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Full topology reads are at least this far apart.
const REFRESH_INTERVAL_MS: u64 = 100;
/// Pause before retrying after TRYAGAIN, CLUSTERDOWN or a connection failure;
/// doubled on every retry up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(1000);

/// What a node said about where a request belongs.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Moved {
        slot: u16,
        addr: String,
    },
    Ask {
        addr: String,
    },
    /// TRYAGAIN (a multi-key request during a migration) or CLUSTERDOWN.
    Wait,
}

/// How to reach the engine beyond what the seed URLs say.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// For `rediss://`: the CA (PEM) the nodes' certificates must chain to;
    /// `None`: the webpki roots.
    pub tls_ca: Option<PathBuf>,
    /// How often a cluster's slot map is read in the background; periods
    /// under 250 ms count as 250 ms.
    pub refresh_every: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls_ca: None,
            refresh_every: crate::refresh::DEFAULT_EVERY,
        }
    }
}

/// The engine: its seeds, slot map and one connection per node and protocol.
pub struct Cluster {
    seeds: Vec<String>,
    /// Credentials, TLS and the lost-connection signal, for every connection.
    connector: Connector,
    /// The engine answered as a standalone server: its map never changes.
    standalone: AtomicBool,
    slots: RwLock<SlotMap>,
    /// Shared connections by address: `[RESP2, RESP3]`. Looked up by `&str`, so
    /// finding one allocates nothing.
    connections: Mutex<[HashMap<Arc<str>, NodeConnection>; 2]>,
    started: Instant,
    last_refresh_ms: AtomicU64,
}

impl Cluster {
    /// Connects to the first seed that answers and reads the topology. Fails if
    /// none does, or if the credentials are refused, so a misconfigured node does
    /// not start.
    pub async fn connect(seeds: Vec<Seed>) -> Result<Arc<Cluster>, EngineError> {
        Cluster::connect_with(seeds, ConnectOptions::default()).await
    }

    /// [`Cluster::connect`] with options; a cluster (not a standalone server)
    /// gets its background topology refresh.
    pub async fn connect_with(
        seeds: Vec<Seed>,
        options: ConnectOptions,
    ) -> Result<Arc<Cluster>, EngineError> {
        let first = seeds.first();
        // The seeds share one scheme (`parse_seeds` checks), so the first tells.
        let tls = if first.is_some_and(|s| s.tls) {
            Some(EngineTls::new(options.tls_ca.as_deref())?)
        } else {
            None
        };
        let lost = Arc::new(tokio::sync::Notify::new());
        let connector = Connector {
            credentials: first.and_then(|s| s.credentials.clone()),
            tls,
            lost: Some(lost.clone()),
        };
        let cluster = Arc::new(Cluster {
            seeds: seeds.into_iter().map(|s| s.addr).collect(),
            connector,
            standalone: AtomicBool::new(false),
            slots: RwLock::new(SlotMap::default()),
            connections: Mutex::new([HashMap::new(), HashMap::new()]),
            started: Instant::now(),
            last_refresh_ms: AtomicU64::new(0),
        });
        cluster.read_topology().await?;
        if !cluster.standalone.load(Ordering::Relaxed) {
            crate::refresh::spawn(&cluster, lost, options.refresh_every);
        }
        Ok(cluster)
    }

    /// The masters known now.
    pub fn masters(&self) -> Vec<Arc<str>> {
        self.slots.read().masters().to_vec()
    }

    /// Runs `commands` back to back on the master owning `slot` (any master for
    /// `None`) and returns one reply per command. `retry_if_lost`: the commands
    /// may run twice (reads), so a connection lost after sending is retried.
    pub async fn run(
        &self,
        proto: Protocol,
        slot: Option<u16>,
        commands: &[Vec<Bytes>],
        retry_if_lost: bool,
    ) -> Result<Vec<Reply>, EngineError> {
        self.run_via(None, proto, slot, commands, retry_if_lost)
            .await
    }

    /// [`Cluster::run`] on a client's own connection, for commands that block
    /// (BLPOP …): they would hold up every other client on a shared one, and
    /// their reply may take as long as they ask, so no reply timeout applies. A
    /// lost connection is not retried (the command may have popped something).
    pub async fn run_dedicated(
        &self,
        own: &mut DedicatedConnection,
        proto: Protocol,
        slot: Option<u16>,
        commands: &[Vec<Bytes>],
    ) -> Result<Vec<Reply>, EngineError> {
        self.run_via(Some(own), proto, slot, commands, false).await
    }

    async fn run_via(
        &self,
        mut own: Option<&mut DedicatedConnection>,
        proto: Protocol,
        slot: Option<u16>,
        commands: &[Vec<Bytes>],
        retry_if_lost: bool,
    ) -> Result<Vec<Reply>, EngineError> {
        let mut addr = self.route(slot).await?;
        let mut asking = false;
        let mut pause = FIRST_PAUSE;
        let mut last_error = EngineError::GaveUp("no attempt made".into());
        for _ in 0..MAX_ATTEMPTS {
            let sent = self
                .send_via(own.as_deref_mut(), &addr, proto, commands, asking)
                .await;
            asking = false;
            let replies = match sent {
                Ok(replies) => replies,
                Err(e @ EngineError::Lost(_)) if !retry_if_lost => return Err(e),
                Err(e @ (EngineError::Unreachable(_) | EngineError::Lost(_))) => {
                    tracing::debug!(node = %addr, error = %e, "engine node failed, retrying");
                    last_error = e;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    let _ = self.read_topology().await;
                    addr = self.route(slot).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match find_redirect(&replies) {
                None => return Ok(replies),
                Some(Redirect::Moved {
                    slot: moved,
                    addr: to,
                }) => {
                    let to = resolve_host(&to, &addr);
                    self.slots.write().moved(moved, &to);
                    last_error = EngineError::GaveUp(format!("moved to {to}"));
                    addr = to.into();
                }
                Some(Redirect::Ask { addr: to }) => {
                    let to = resolve_host(&to, &addr);
                    last_error = EngineError::GaveUp(format!("asked to go to {to}"));
                    addr = to.into();
                    asking = true;
                }
                Some(Redirect::Wait) => {
                    last_error = EngineError::GaveUp(first_error(&replies).to_string());
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    let _ = self.read_topology().await;
                    addr = self.route(slot).await?;
                }
            }
        }
        Err(last_error)
    }

    /// Runs one command on every master, in turn; the replies in master order.
    pub async fn run_on_every_master(
        &self,
        proto: Protocol,
        argv: &[Bytes],
    ) -> Result<Vec<Reply>, EngineError> {
        let mut replies = Vec::new();
        for addr in self.masters() {
            replies.push(self.run_on_master(&addr, proto, argv).await?);
        }
        Ok(replies)
    }

    /// Runs one command on the master at `addr` (one of [`Cluster::masters`]),
    /// with no redirect followed: for commands about that master's own keys
    /// (SCAN).
    pub async fn run_on_master(
        &self,
        addr: &str,
        proto: Protocol,
        argv: &[Bytes],
    ) -> Result<Reply, EngineError> {
        let mut replies = self.send(addr, proto, &[argv.to_vec()]).await?;
        Ok(replies.pop().unwrap_or(Reply::Null))
    }

    /// [`Cluster::run_on_master`] on a connection of the caller's own (see
    /// [`Cluster::run_dedicated`]): `commands` back to back, no redirect
    /// followed, no reply timeout. For a wait that must not hold up a shared
    /// connection (WAIT).
    pub async fn run_at(
        &self,
        own: &mut DedicatedConnection,
        addr: &str,
        proto: Protocol,
        commands: &[Vec<Bytes>],
    ) -> Result<Vec<Reply>, EngineError> {
        own.send(addr, proto, &self.connector, commands).await
    }

    /// A key `prefix{n}` in a slot the master at `addr` serves now (the
    /// smallest such `n`); `None` if it serves none.
    pub fn key_on_master(&self, addr: &str, prefix: &str) -> Option<Vec<u8>> {
        let map = self.slots.read();
        // Each try lands on a slot at random: a master serving a share 1/m of
        // the slots is found in about m tries.
        (0..1_000_000u32).find_map(|n| {
            let key = format!("{prefix}{{{n}}}").into_bytes();
            let owner = map.owner(crate::key_slot(&key))?;
            (&*owner == addr).then_some(key)
        })
    }

    /// A subscriber connection (see [`NodeConnection::open_subscriber`]) to any
    /// master: a cluster passes every PUBLISH to every node.
    /// `slot`: to the master owning it (SSUBSCRIBE: shard channels live there).
    pub async fn open_subscriber(
        &self,
        slot: Option<u16>,
        pushes: PushSink,
    ) -> Result<(Arc<str>, NodeConnection), EngineError> {
        let addr = self.route(slot).await?;
        let conn = NodeConnection::open_subscriber(&addr, &self.connector, CONNECT_TIMEOUT, pushes)
            .await?;
        Ok((addr, conn))
    }

    /// A subscriber connection to the master at `addr` (one of
    /// [`Cluster::masters`]): for what that master announces about its own keys
    /// (`CLIENT TRACKING … BCAST` invalidations).
    pub async fn open_subscriber_at(
        &self,
        addr: &str,
        pushes: PushSink,
    ) -> Result<NodeConnection, EngineError> {
        NodeConnection::open_subscriber(addr, &self.connector, CONNECT_TIMEOUT, pushes).await
    }

    /// The master serving `slot` now (any master for `None`).
    pub async fn owner(&self, slot: Option<u16>) -> Result<Arc<str>, EngineError> {
        self.route(slot).await
    }

    /// The owner of `slot`, or any master; reads the topology once if none is
    /// known.
    pub(crate) async fn route(&self, slot: Option<u16>) -> Result<Arc<str>, EngineError> {
        for _ in 0..2 {
            {
                let map = self.slots.read();
                let owner = match slot {
                    Some(s) => map.owner(s),
                    None => None,
                };
                if let Some(addr) = owner.or_else(|| map.masters().first().cloned()) {
                    return Ok(addr);
                }
            }
            self.read_topology().await?;
        }
        Err(EngineError::Unreachable(
            "the engine has no master serving this slot".into(),
        ))
    }

    /// Sends on the client's own connection if it has one, else the shared one.
    /// `asking`: the commands are preceded by `ASKING`, which admits the next
    /// command for a slot being imported, or a whole `MULTI … EXEC` (the flag
    /// lasts through a transaction); its reply is dropped. Requests are one
    /// command or one transaction, so one `ASKING` covers them.
    async fn send_via(
        &self,
        own: Option<&mut DedicatedConnection>,
        addr: &str,
        proto: Protocol,
        commands: &[Vec<Bytes>],
        asking: bool,
    ) -> Result<Vec<Reply>, EngineError> {
        let with_asking;
        let commands = if asking {
            with_asking = [vec![vec![Bytes::from_static(b"ASKING")]], commands.to_vec()].concat();
            &with_asking[..]
        } else {
            commands
        };
        let mut replies = match own {
            None => self.send(addr, proto, commands).await?,
            Some(own) => own.send(addr, proto, &self.connector, commands).await?,
        };
        if asking {
            if replies.is_empty() {
                return Err(EngineError::Protocol("no reply to ASKING".into()));
            }
            replies.remove(0);
        }
        Ok(replies)
    }

    pub(crate) async fn send(
        &self,
        addr: &str,
        proto: Protocol,
        commands: &[Vec<Bytes>],
    ) -> Result<Vec<Reply>, EngineError> {
        let conn = self.connection(addr, proto).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, conn.send(commands)).await {
            Ok(result) => result,
            Err(_) => {
                conn.abandon();
                Err(EngineError::Lost(format!("{addr}: no reply in time")))
            }
        }
    }

    /// The live connection to `addr` for `proto`, opened if there is none.
    async fn connection(&self, addr: &str, proto: Protocol) -> Result<NodeConnection, EngineError> {
        let table = usize::from(proto == Protocol::Resp3);
        if let Some(conn) = self.connections.lock()[table]
            .get(addr)
            .filter(|c| c.is_alive())
        {
            return Ok(conn.clone());
        }
        let conn = NodeConnection::open(addr, &self.connector, proto, CONNECT_TIMEOUT).await?;
        self.connections.lock()[table].insert(addr.into(), conn.clone());
        Ok(conn)
    }

    /// The nodes this engine client holds shared connections to (diagnostics,
    /// tests): the masters it has sent to, never a node that stopped being one.
    pub fn connected_nodes(&self) -> Vec<Arc<str>> {
        let tables = self.connections.lock();
        let mut nodes: Vec<Arc<str>> = tables.iter().flat_map(|t| t.keys().cloned()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Reads the slot map again (the background refresh).
    pub(crate) async fn refresh(&self) -> Result<(), EngineError> {
        self.read_topology().await
    }

    /// Reads the slot map from a known master or a seed, unless that was done a
    /// moment ago; masters already connected are asked first (they answer
    /// without a new connection), and shared connections to nodes the new map
    /// does not name as masters are closed.
    async fn read_topology(&self) -> Result<(), EngineError> {
        let now = self.started.elapsed().as_millis() as u64 + REFRESH_INTERVAL_MS;
        let last = self.last_refresh_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < REFRESH_INTERVAL_MS {
            return Ok(());
        }
        self.last_refresh_ms.store(now, Ordering::Relaxed);
        let mut candidates: Vec<String> = self.masters().iter().map(|m| m.to_string()).collect();
        {
            let tables = self.connections.lock();
            let live = |m: &String| tables[0].get(m.as_str()).is_some_and(|c| c.is_alive());
            candidates.sort_by_key(|m| !live(m));
        }
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let slots_command = vec![Bytes::from_static(b"CLUSTER"), Bytes::from_static(b"SLOTS")];
        let mut last_error = EngineError::Unreachable("no seed node".into());
        for addr in candidates {
            let reply = match self
                .send(&addr, Protocol::Resp2, std::slice::from_ref(&slots_command))
                .await
            {
                Ok(mut replies) => replies.pop().unwrap_or(Reply::Null),
                Err(e @ EngineError::Config(_)) => return Err(e),
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let map = match &reply {
                Reply::Error(e) if e.contains("cluster support disabled") => {
                    self.standalone.store(true, Ordering::Relaxed);
                    SlotMap::standalone(&addr)
                }
                Reply::Error(e) if e.starts_with("NOAUTH") => {
                    return Err(EngineError::Config(format!(
                        "{addr}: {e} (the engine URL needs redis://[user]:password@…)"
                    )));
                }
                Reply::Error(e) => {
                    last_error = EngineError::Protocol(format!("{addr}: CLUSTER SLOTS: {e}"));
                    continue;
                }
                other => match SlotMap::from_cluster_slots(other, &addr) {
                    Some(map) if !map.masters().is_empty() => map,
                    _ => {
                        last_error =
                            EngineError::Protocol(format!("{addr}: no slots in CLUSTER SLOTS"));
                        continue;
                    }
                },
            };
            let masters = map.masters().to_vec();
            *self.slots.write() = map;
            for table in self.connections.lock().iter_mut() {
                table.retain(|node, _| masters.contains(node));
            }
            return Ok(());
        }
        Err(last_error)
    }
}

/// One client's own engine connection (see [`Cluster::run_dedicated`]), kept
/// while it goes to the same master with the same protocol.
#[derive(Default)]
pub struct DedicatedConnection {
    current: Option<(Arc<str>, Protocol, NodeConnection)>,
}

impl DedicatedConnection {
    /// The master this connection is on, if it is open.
    pub fn addr(&self) -> Option<&str> {
        self.current.as_ref().map(|(addr, _, _)| &**addr)
    }

    /// Sends on the connection as it is: no new connection, no redirect followed.
    /// For a transaction guarded by WATCH, which only the connection that
    /// watched can run.
    pub async fn send_here(&mut self, commands: &[Vec<Bytes>]) -> Result<Vec<Reply>, EngineError> {
        let Some((addr, proto, conn)) = self.current.take() else {
            return Err(EngineError::Lost("the watching connection is gone".into()));
        };
        let replies = conn.send(commands).await?;
        self.current = Some((addr, proto, conn));
        Ok(replies)
    }

    /// Closes the connection (RESET).
    pub fn close(&mut self) {
        self.current = None;
    }

    async fn send(
        &mut self,
        addr: &str,
        proto: Protocol,
        connector: &Connector,
        commands: &[Vec<Bytes>],
    ) -> Result<Vec<Reply>, EngineError> {
        // Taken out while a request is in flight: a caller that gives up on it
        // (its client left) drops the future and with it the connection, so a
        // reply meant for the abandoned command never answers a later one, and
        // the engine, seeing the connection close, stops blocking for it.
        let conn = match self.current.take() {
            Some((a, p, c)) if &*a == addr && p == proto && c.is_alive() => c,
            _ => NodeConnection::open(addr, connector, proto, CONNECT_TIMEOUT).await?,
        };
        let replies = conn.send(commands).await?;
        self.current = Some((addr.into(), proto, conn));
        Ok(replies)
    }
}

/// Whether a reply says the request belongs elsewhere or later (MOVED, ASK,
/// TRYAGAIN, CLUSTERDOWN).
pub fn is_redirect(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if parse_redirect(e).is_some())
}

/// The first redirect among the replies (a transaction's queued commands each
/// answer for themselves).
fn find_redirect(replies: &[Reply]) -> Option<Redirect> {
    replies.iter().find_map(|r| match r {
        Reply::Error(e) => parse_redirect(e),
        _ => None,
    })
}

fn parse_redirect(error: &str) -> Option<Redirect> {
    let mut words = error.split(' ');
    match words.next()? {
        "MOVED" => {
            let slot = words.next()?.parse().ok()?;
            let addr = words.next()?.to_owned();
            Some(Redirect::Moved { slot, addr })
        }
        "ASK" => {
            let _slot = words.next()?;
            let addr = words.next()?.to_owned();
            Some(Redirect::Ask { addr })
        }
        "TRYAGAIN" | "CLUSTERDOWN" => Some(Redirect::Wait),
        _ => None,
    }
}

fn first_error(replies: &[Reply]) -> &str {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Error(e) => Some(e.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// A redirect to `:port` (a node that does not know its own address) means the
/// host of the node that answered.
fn resolve_host(to: &str, from: &str) -> String {
    let (host, port) = split_addr(to);
    if !host.is_empty() {
        return to.to_owned();
    }
    let port: i64 = port.parse().unwrap_or(0);
    join_addr(split_addr(from).0, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        assert_eq!(
            parse_redirect("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            parse_redirect("ASK 3999 127.0.0.1:6381"),
            Some(Redirect::Ask {
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            parse_redirect("TRYAGAIN Multiple keys request during rehashing of slot"),
            Some(Redirect::Wait)
        );
        assert_eq!(
            parse_redirect("CLUSTERDOWN The cluster is down"),
            Some(Redirect::Wait)
        );
        assert_eq!(parse_redirect("ERR MOVED"), None);
        assert_eq!(parse_redirect("MOVED notaslot h:1"), None);
        let replies = [Reply::ok(), Reply::Error("MOVED 1 h:2".into())];
        assert!(matches!(
            find_redirect(&replies),
            Some(Redirect::Moved { slot: 1, .. })
        ));
    }

    #[test]
    fn hostless_redirects_use_the_answering_host() {
        assert_eq!(resolve_host(":7001", "10.0.0.1:7000"), "10.0.0.1:7001");
        assert_eq!(
            resolve_host("10.0.0.2:7001", "10.0.0.1:7000"),
            "10.0.0.2:7001"
        );
    }
}
