//! One client's session on the Redis engine: forwards its keyspace commands,
//! keeps its MULTI queue until EXEC sends the whole transaction to the one master
//! owning every queued key, and holds the client's own engine connections (for
//! blocking commands and WATCH, and for its subscriptions).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tidewire_engine::cluster::is_redirect;
use tidewire_engine::{key_slot, Cluster, DedicatedConnection};
use tidewire_resp::Reply;
use tidewire_store::command::{flag, ChannelArgs};
use tidewire_store::exec::resolve;
use tidewire_store::{Client, Command, Protocol, Store};

use super::fan_out::merge;
use super::primitives;
use super::route::{route, Route, TxControl, CROSSSLOT};
use super::scan;
use super::subscriptions::{Kind, Pushes, Subscriptions};
use super::tracking::Invalidations;
use super::transaction::{self, reads_only, Transaction};

pub struct EngineSession {
    pub(super) cluster: Arc<Cluster>,
    pub(super) transaction: Option<Transaction>,
    /// Whether the front door can wait (RESP); a REST request never waits.
    may_block: bool,
    /// The client's own engine connection, for the commands that block and for
    /// WATCH with the transaction it guards.
    own: DedicatedConnection,
    /// Keys watched, all in one slot, on the master `own` was on then.
    watching: Option<Watching>,
    /// The client's own connection to each master that `WAIT` waits on (see
    /// [`after_own_writes`]), kept from one wait to the next.
    waits: HashMap<Arc<str>, DedicatedConnection>,
    /// The client's subscriber connections to the engine.
    pub(super) subscriptions: Subscriptions,
    /// The node's listener for changes on the engine (`CLIENT TRACKING`).
    pub(super) invalidations: Invalidations,
}

/// What became of a command given to the session.
pub enum Forwarded {
    /// Not the engine's: the local store runs it.
    Local,
    /// The engine's answer.
    Reply(Reply),
    /// Answered out of band (SUBSCRIBE: its confirmations arrive as pushes).
    Pushed,
}

struct Watching {
    slot: u16,
    addr: String,
}

impl EngineSession {
    pub fn new(
        cluster: Arc<Cluster>,
        invalidations: Invalidations,
        may_block: bool,
    ) -> EngineSession {
        EngineSession {
            cluster,
            invalidations,
            transaction: None,
            may_block,
            own: DedicatedConnection::default(),
            watching: None,
            waits: HashMap::new(),
            subscriptions: Subscriptions::default(),
        }
    }

    /// Runs `argv` on the engine, unless it is the connection's or this node's
    /// own business.
    pub async fn execute(
        &mut self,
        store: &Store,
        client: &mut Client,
        argv: &[Bytes],
    ) -> Forwarded {
        if argv.is_empty() {
            return Forwarded::Local;
        }
        let cmd = match store.admit_forwarded(client, argv) {
            Ok(cmd) => cmd,
            Err(refusal) => {
                if let Some(tx) = self.transaction.as_mut() {
                    tx.aborted = true;
                }
                return Forwarded::Reply(refusal);
            }
        };
        // A RESP2 client holding subscriptions is in subscribed mode, as in Redis.
        if client.proto == Protocol::Resp2 && self.subscriptions.active() {
            if !cmd.has(flag::SUBSCRIBED_OK) {
                return Forwarded::Reply(Reply::Error(format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                    cmd.full_name
                )));
            }
            if cmd.full_name == "ping" {
                return Forwarded::Reply(Reply::Array(vec![
                    Reply::bulk_str("pong"),
                    Reply::Bulk(argv.get(1).cloned().unwrap_or_default()),
                ]));
            }
        }
        let route = route(cmd, argv);
        if client.tracking || client.caching.is_some() || cmd.full_name == "client|tracking" {
            self.track(store, client, cmd, argv, &route).await;
        }
        let start = std::time::Instant::now();
        let mut forwarded = self.dispatch(store, client, cmd, argv, route).await;
        if let Forwarded::Reply(reply) = &mut forwarded {
            store.account_forwarded(cmd, start.elapsed(), reply);
            bridge_publish(store, cmd, argv, reply);
        }
        forwarded
    }

    /// `CLIENT TRACKING` on the engine (see [`super::tracking`]), before the
    /// command is forwarded: `CLIENT CACHING`'s turn, and a tracking client's
    /// reads remembered (EXEC's: those it queued) once the node listens to
    /// every master, so a change racing the reply is announced.
    async fn track(
        &mut self,
        store: &Store,
        client: &mut Client,
        cmd: &Command,
        argv: &[Bytes],
        route: &Route,
    ) {
        if *route == Route::Local {
            // The listener is up before the store turns tracking on. By name:
            // Redis's tracking lives in this command's handler, the table has
            // no flag for it.
            let on = argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(b"on"));
            if cmd.full_name == "client|tracking" && on {
                self.invalidations.ensure().await;
            }
            // The store takes CLIENT CACHING's turn for what it runs.
            return;
        }
        client.caching_turn(self.transaction.is_some());
        if !client.tracking {
            return;
        }
        match (route, &self.transaction) {
            (Route::Transaction(TxControl::Exec), Some(tx)) => {
                let queued: Vec<(&'static Command, &Vec<Bytes>)> = tx
                    .commands
                    .iter()
                    .filter_map(|argv| Some((resolve(argv).ok()?, argv)))
                    .filter(|(cmd, _)| cmd.has(flag::READONLY))
                    .collect();
                if !queued.is_empty() {
                    self.invalidations.ensure().await;
                    for (cmd, argv) in queued {
                        store.remember_reads(client, cmd, argv);
                    }
                }
            }
            (_, None) if cmd.has(flag::READONLY) => {
                self.invalidations.ensure().await;
                store.remember_reads(client, cmd, argv);
            }
            _ => {}
        }
    }

    async fn dispatch(
        &mut self,
        store: &Store,
        client: &Client,
        cmd: &'static Command,
        argv: &[Bytes],
        route: Route,
    ) -> Forwarded {
        if let Route::Transaction(step) = route {
            return Forwarded::Reply(self.transaction_step(store, client, cmd, argv, step).await);
        }
        if let Some(tx) = self.transaction.as_mut() {
            return Forwarded::Reply(tx.queue(cmd, argv, route));
        }
        let subscription = match route {
            Route::Subscription => Some(None),
            Route::ShardSubscription(slot) => Some(slot),
            _ => None,
        };
        if let (Some(slot), true) = (subscription, self.may_block) {
            let subscribed = match (route, slot) {
                // SUNSUBSCRIBE of every shard channel: wherever there are some.
                (Route::ShardSubscription(_), None) => {
                    self.subscriptions.unsubscribe_every_shard(argv).await
                }
                (route, slot) => {
                    let kind = Kind {
                        shard: matches!(route, Route::ShardSubscription(_)),
                        // The subscribing commands name channels for ACL checks.
                        subscribing: cmd.spec.channels != ChannelArgs::None,
                    };
                    let pushes = Pushes::new(store, client);
                    self.subscriptions
                        .send(&self.cluster, pushes, argv, slot, kind)
                        .await
                }
            };
            return match subscribed {
                Ok(None) => Forwarded::Pushed,
                Ok(Some(reply)) => Forwarded::Reply(reply),
                Err(e) => Forwarded::Reply(engine_error(&e)),
            };
        }
        match self.run_route(store, cmd, client, argv, route).await {
            Some(reply) => Forwarded::Reply(reply),
            None => Forwarded::Local,
        }
    }

    /// Sends a command outside a transaction where its route says; `None` for
    /// the local store.
    async fn run_route(
        &mut self,
        store: &Store,
        cmd: &Command,
        client: &Client,
        argv: &[Bytes],
        route: Route,
    ) -> Option<Reply> {
        let proto = client.proto;
        match route {
            Route::Local => {
                if cmd.full_name == "reset" {
                    self.transaction = None;
                    self.watching = None;
                    self.own.close();
                    self.waits.clear();
                    self.subscriptions.release_all();
                }
                None
            }
            Route::Slot(slot) => {
                let retry = reads_only(cmd);
                let reply = self
                    .cluster
                    .run(proto, slot, &[argv.to_vec()], retry)
                    .await
                    .map(|mut replies| replies.pop().unwrap_or(Reply::Null));
                Some(reply.unwrap_or_else(|e| engine_error(&e)))
            }
            Route::EveryMaster(how) => {
                Some(match self.cluster.run_on_every_master(proto, argv).await {
                    Ok(replies) => merge(how, replies),
                    Err(e) => engine_error(&e),
                })
            }
            Route::Blocking(slot) if self.may_block => {
                let reply = self
                    .cluster
                    .run_dedicated(&mut self.own, proto, Some(slot), &[argv.to_vec()])
                    .await
                    .map(|mut replies| replies.pop().unwrap_or(Reply::Null));
                Some(reply.unwrap_or_else(|e| engine_error(&e)))
            }
            Route::AfterOwnWrites(how) if self.may_block => {
                Some(after_own_writes(&self.cluster, &mut self.waits, proto, argv, how).await)
            }
            Route::Blocking(_) | Route::AfterOwnWrites(_) => Some(Reply::Error(format!(
                "ERR blocking command {} is not supported over REST",
                cmd.full_name.to_ascii_uppercase()
            ))),
            Route::Native(slot) => {
                let waiting = if self.may_block {
                    primitives::Waiting::Allowed
                } else {
                    primitives::Waiting::Never
                };
                Some(match primitives::translate(cmd, argv, waiting) {
                    Ok(call) => {
                        let (reply, waited) = primitives::run(
                            &self.cluster,
                            &mut self.own,
                            proto,
                            slot,
                            call,
                            reads_only(cmd),
                        )
                        .await;
                        primitives::count(&store.stats.primitives, cmd, &reply, waited);
                        reply
                    }
                    Err(e) => e.into(),
                })
            }
            Route::ScanMasters => Some(self.scan(client, argv).await),
            Route::Refused(error) => Some(Reply::Error(error)),
            Route::Subscription | Route::ShardSubscription(_) => Some(Reply::Error(format!(
                "ERR {} is not supported over REST: use the Server-Sent Events endpoints",
                cmd.full_name.to_ascii_uppercase()
            ))),
            Route::Transaction(_) => None,
        }
    }

    /// One page of a SCAN over every master (see [`scan`]).
    async fn scan(&self, client: &Client, argv: &[Bytes]) -> Reply {
        let invalid = || Reply::error("ERR invalid cursor");
        let Some(cursor) = parse_u64(&argv[1]) else {
            return invalid();
        };
        let masters = self.cluster.masters();
        let (index, master_cursor) = scan::split(cursor);
        let Some(master) = masters.get(index) else {
            return invalid();
        };
        let mut forwarded = argv.to_vec();
        forwarded[1] = Bytes::from(master_cursor.to_string());
        let reply = match self
            .cluster
            .run_on_master(master, client.proto, &forwarded)
            .await
        {
            Ok(reply) => reply,
            Err(e) => return engine_error(&e),
        };
        let Reply::Array(mut page) = reply else {
            return reply;
        };
        let next = match page.first() {
            Some(Reply::Bulk(next)) => parse_u64(next),
            _ => None,
        };
        match next.and_then(|n| scan::next_cursor(index, masters.len(), n)) {
            Some(next) => {
                page[0] = Reply::Bulk(Bytes::from(next.to_string()));
                Reply::Array(page)
            }
            None => Reply::error("ERR engine protocol error: unexpected SCAN reply"),
        }
    }

    async fn transaction_step(
        &mut self,
        store: &Store,
        client: &Client,
        cmd: &Command,
        argv: &[Bytes],
        step: TxControl,
    ) -> Reply {
        match step {
            TxControl::Multi if self.transaction.is_some() => {
                Reply::error("ERR MULTI calls can not be nested")
            }
            TxControl::Multi => {
                self.transaction = Some(Transaction::new());
                Reply::ok()
            }
            TxControl::Discard => match self.transaction.take() {
                Some(_) => {
                    self.unwatch().await;
                    Reply::ok()
                }
                None => Reply::error("ERR DISCARD without MULTI"),
            },
            TxControl::Watch if self.transaction.is_some() => {
                Reply::error("ERR WATCH inside MULTI is not allowed")
            }
            TxControl::Watch => self.watch(client, cmd, argv).await,
            TxControl::Unwatch => {
                self.unwatch().await;
                Reply::ok()
            }
            TxControl::Exec => {
                let Some(mut tx) = self.transaction.take() else {
                    return Reply::error("ERR EXEC without MULTI");
                };
                let publishes = std::mem::take(&mut tx.publishes);
                let mut reply = match self.watching.take() {
                    None => self.exec(client, tx).await,
                    Some(watching) => self.exec_watched(tx, watching).await,
                };
                bridge_transaction(store, &publishes, &mut reply);
                reply
            }
        }
    }

    /// WATCH on the client's own connection to the keys' master. Every watched
    /// key must be in one slot, the one the transaction will use.
    async fn watch(&mut self, client: &Client, cmd: &Command, argv: &[Bytes]) -> Reply {
        if !self.may_block {
            return Reply::error("ERR WATCH is not supported over REST");
        }
        let positions = cmd.spec.keys.positions(argv);
        let Some(first) = positions.first() else {
            return Reply::error("ERR wrong number of arguments for 'watch' command");
        };
        let slot = key_slot(&argv[*first]);
        let same_slot = positions.iter().all(|p| key_slot(&argv[*p]) == slot)
            && self.watching.as_ref().is_none_or(|w| w.slot == slot);
        if !same_slot {
            return Reply::error(CROSSSLOT);
        }
        let reply = self
            .cluster
            .run_dedicated(&mut self.own, client.proto, Some(slot), &[argv.to_vec()])
            .await
            .map(|mut replies| replies.pop().unwrap_or(Reply::Null));
        match (reply, self.own.addr()) {
            (Ok(reply), Some(addr)) if !reply.is_error() => {
                self.watching = Some(Watching {
                    slot,
                    addr: addr.to_owned(),
                });
                reply
            }
            (Ok(reply), _) => reply,
            (Err(e), _) => engine_error(&e),
        }
    }

    /// Forgets the watched keys, on the engine too.
    async fn unwatch(&mut self) {
        if self.watching.take().is_some() {
            let _ = self
                .own
                .send_here(&[vec![Bytes::from_static(b"UNWATCH")]])
                .await;
        }
    }

    /// Sends MULTI, the queued commands and EXEC to the master owning their slot,
    /// in one write; EXEC's reply is the answer.
    async fn exec(&self, client: &Client, tx: Transaction) -> Reply {
        if let Some(refusal) = refusal(&tx) {
            return refusal;
        }
        if tx.commands.is_empty() {
            return Reply::Array(Vec::new());
        }
        let finishers = tx.finishers;
        let reply = match self
            .cluster
            .run(
                client.proto,
                tx.slot,
                &with_multi_exec(tx.commands),
                tx.reads_only,
            )
            .await
        {
            Ok(mut replies) => replies.pop().unwrap_or(Reply::NullArray),
            Err(e) => engine_error(&e),
        };
        transaction::finish(reply, &finishers)
    }

    /// A transaction guarded by WATCH runs on the connection that watched, or not
    /// at all: if that connection moved to another master, or the slot moved
    /// meanwhile, the watched keys count as changed and EXEC answers nil, so the
    /// client's optimistic loop tries again.
    async fn exec_watched(&mut self, tx: Transaction, watching: Watching) -> Reply {
        let unwatch = vec![Bytes::from_static(b"UNWATCH")];
        if let Some(refusal) = refusal(&tx) {
            let _ = self.own.send_here(&[unwatch]).await;
            return refusal;
        }
        if tx.slot.is_some_and(|s| s != watching.slot) {
            let _ = self.own.send_here(&[unwatch]).await;
            return Reply::error(CROSSSLOT);
        }
        if self.own.addr() != Some(watching.addr.as_str()) {
            return Reply::NullArray;
        }
        let finishers = tx.finishers;
        match self.own.send_here(&with_multi_exec(tx.commands)).await {
            Ok(replies) if replies.iter().any(is_redirect) => {
                let _ = self.own.send_here(&[unwatch]).await;
                Reply::NullArray
            }
            Ok(mut replies) => {
                transaction::finish(replies.pop().unwrap_or(Reply::NullArray), &finishers)
            }
            Err(e) => engine_error(&e),
        }
    }
}

/// EXEC's answer for a transaction that must not run: a command refused while
/// queued, or keys in several slots.
fn refusal(tx: &Transaction) -> Option<Reply> {
    if tx.aborted {
        return Some(Reply::error(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    tx.cross_slot.then(|| Reply::error(CROSSSLOT))
}

fn with_multi_exec(commands: Vec<Vec<Bytes>>) -> Vec<Vec<Bytes>> {
    let mut batch = Vec::with_capacity(commands.len() + 2);
    batch.push(vec![Bytes::from_static(b"MULTI")]);
    batch.extend(commands);
    batch.push(vec![Bytes::from_static(b"EXEC")]);
    batch
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A `PUBLISH` the engine took also reaches the realtime layer, as the
/// embedded store's `PUBLISH` does (the store's handler calls the bridge; on the
/// engine that handler never runs, so the name is what tells). The bridge's
/// receivers count in the reply as they do there.
fn bridge_publish(store: &Store, cmd: &Command, argv: &[Bytes], reply: &mut Reply) {
    if !is_publish(cmd) {
        return;
    }
    if let (Reply::Int(n), Some(channel), Some(message)) = (&*reply, argv.get(1), argv.get(2)) {
        let bridged = store.pubsub.publish_to_bridge(channel, message);
        *reply = Reply::Int(n + bridged as i64);
    }
}

/// A wait for the client's earlier writes to replicate (WAIT), on every
/// master at once: each over the client's own connection to it (`waits`),
/// first written to (a key of that master's set and deleted in one `MULTI`,
/// which readers never see), so that the wait covers everything the master
/// applied before, the client's writes among them. The replies merged as
/// Redis's tips say (WAIT: the fewest replicas).
async fn after_own_writes(
    cluster: &Cluster,
    waits: &mut HashMap<Arc<str>, DedicatedConnection>,
    proto: Protocol,
    argv: &[Bytes],
    how: super::fan_out::Merge,
) -> Reply {
    // Taken out while in use; only the current masters' are put back.
    let mut connections: Vec<(Arc<str>, DedicatedConnection)> = cluster
        .masters()
        .into_iter()
        .map(|addr| {
            let own = waits.remove(&addr).unwrap_or_default();
            (addr, own)
        })
        .collect();
    waits.clear();
    let each = connections.iter_mut().map(|(addr, own)| async move {
        let Some(key) = cluster.key_on_master(addr, WRITE_MARK) else {
            return Ok(Reply::Error(format!(
                "ERR engine master {addr} serves no slot"
            )));
        };
        let key = Bytes::from(key);
        let word = |w: &'static str| Bytes::from_static(w.as_bytes());
        let commands = vec![
            vec![word("MULTI")],
            vec![word("SET"), key.clone(), word("1")],
            vec![word("DEL"), key],
            vec![word("EXEC")],
            argv.to_vec(),
        ];
        let mut replies = cluster.run_at(own, addr, proto, &commands).await?;
        let waited = replies.pop().unwrap_or(Reply::Null);
        // A write that did not happen (a slot moving, a refusal) leaves the
        // wait covering less than the client wrote: its error instead.
        Ok(match replies.pop() {
            Some(Reply::Array(_)) => waited,
            Some(Reply::Error(e)) => Reply::Error(e),
            other => Reply::Error(format!(
                "ERR engine master {addr} did not take the write WAIT needs: {other:?}"
            )),
        })
    });
    let replies = futures_util::future::try_join_all(each).await;
    waits.extend(connections);
    match replies {
        Ok(replies) => merge(how, replies),
        Err(e) => engine_error(&e),
    }
}

/// The keys [`after_own_writes`] writes and deletes, one per master.
const WRITE_MARK: &str = "tidewire:wait:";

/// Whether `cmd` is `PUBLISH`, which the node bridges to the realtime layer.
pub(super) fn is_publish(cmd: &Command) -> bool {
    cmd.full_name == "publish"
}

/// The `PUBLISH`es of a transaction that ran reach the realtime layer too,
/// each counted in its own part of EXEC's reply.
fn bridge_transaction(store: &Store, publishes: &[(usize, Bytes, Bytes)], reply: &mut Reply) {
    let Reply::Array(items) = reply else {
        return;
    };
    for (at, channel, message) in publishes {
        if let Some(Reply::Int(n)) = items.get_mut(*at) {
            *n += store.pubsub.publish_to_bridge(channel, message) as i64;
        }
    }
}

pub(super) fn engine_error(e: &tidewire_engine::EngineError) -> Reply {
    Reply::Error(format!("ERR {e}"))
}
