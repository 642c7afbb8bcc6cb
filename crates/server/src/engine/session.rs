//! One client's session on the Redis engine: forwards its keyspace commands, and
//! keeps its MULTI queue until EXEC sends the whole transaction to the one master
//! owning every queued key.

use std::sync::Arc;

use bytes::Bytes;
use tidewire_engine::{Cluster, DedicatedConnection};
use tidewire_resp::Reply;
use tidewire_store::command::flag;
use tidewire_store::{Client, Command, Store};

use super::fan_out::merge;
use super::route::{route, Route, TxControl, CROSSSLOT};
use super::scan;

pub struct EngineSession {
    cluster: Arc<Cluster>,
    transaction: Option<Transaction>,
    /// Whether the front door can wait (RESP); a REST request never waits.
    may_block: bool,
    /// The client's own engine connection, for the commands that block.
    own: DedicatedConnection,
}

/// Commands queued since MULTI.
#[derive(Default)]
struct Transaction {
    commands: Vec<Vec<Bytes>>,
    /// The slot of every key queued so far, once there is one.
    slot: Option<u16>,
    /// Keys of different commands in different slots: EXEC answers CROSSSLOT.
    cross_slot: bool,
    /// A command was refused while queued: EXEC answers EXECABORT.
    aborted: bool,
    /// Every queued command only reads, so a lost connection may retry it.
    reads_only: bool,
}

impl EngineSession {
    pub fn new(cluster: Arc<Cluster>, may_block: bool) -> EngineSession {
        EngineSession {
            cluster,
            transaction: None,
            may_block,
            own: DedicatedConnection::default(),
        }
    }

    /// Runs `argv` on the engine and returns its reply; `None` when it is the
    /// connection's or this node's own business and the local store runs it.
    pub async fn execute(
        &mut self,
        store: &Store,
        client: &mut Client,
        argv: &[Bytes],
    ) -> Option<Reply> {
        if argv.is_empty() {
            return None;
        }
        let cmd = match store.admit_forwarded(client, argv) {
            Ok(cmd) => cmd,
            Err(refusal) => {
                if let Some(tx) = self.transaction.as_mut() {
                    tx.aborted = true;
                }
                return Some(refusal);
            }
        };
        let route = route(cmd, argv);
        if let Route::Transaction(step) = route {
            return Some(self.transaction_step(client, step).await);
        }
        if let Some(tx) = self.transaction.as_mut() {
            return Some(tx.queue(cmd, argv, route));
        }
        let proto = client.proto;
        match route {
            Route::Local => {
                if cmd.full_name == "reset" {
                    self.transaction = None;
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
            Route::Blocking(_) => Some(Reply::Error(format!(
                "ERR blocking command {} is not supported over REST",
                cmd.full_name.to_ascii_uppercase()
            ))),
            Route::ScanMasters => Some(self.scan(client, argv).await),
            Route::Refused(error) => Some(Reply::Error(error)),
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

    async fn transaction_step(&mut self, client: &Client, step: TxControl) -> Reply {
        match step {
            TxControl::Multi if self.transaction.is_some() => {
                Reply::error("ERR MULTI calls can not be nested")
            }
            TxControl::Multi => {
                self.transaction = Some(Transaction {
                    reads_only: true,
                    ..Transaction::default()
                });
                Reply::ok()
            }
            TxControl::Discard => match self.transaction.take() {
                Some(_) => Reply::ok(),
                None => Reply::error("ERR DISCARD without MULTI"),
            },
            TxControl::Watch if self.transaction.is_some() => {
                Reply::error("ERR WATCH inside MULTI is not allowed")
            }
            TxControl::Watch => Reply::error(
                "ERR WATCH is not supported with --engine yet: it needs a dedicated engine connection",
            ),
            // Nothing is ever watched, so there is nothing to forget.
            TxControl::Unwatch => Reply::ok(),
            TxControl::Exec => {
                let Some(tx) = self.transaction.take() else {
                    return Reply::error("ERR EXEC without MULTI");
                };
                self.exec(client, tx).await
            }
        }
    }

    /// Sends MULTI, the queued commands and EXEC to the master owning their slot,
    /// in one write; EXEC's reply is the answer.
    async fn exec(&self, client: &Client, tx: Transaction) -> Reply {
        if tx.aborted {
            return Reply::error("EXECABORT Transaction discarded because of previous errors.");
        }
        if tx.cross_slot {
            return Reply::error(CROSSSLOT);
        }
        if tx.commands.is_empty() {
            return Reply::Array(Vec::new());
        }
        let mut batch = Vec::with_capacity(tx.commands.len() + 2);
        batch.push(vec![Bytes::from_static(b"MULTI")]);
        batch.extend(tx.commands);
        batch.push(vec![Bytes::from_static(b"EXEC")]);
        match self
            .cluster
            .run(client.proto, tx.slot, &batch, tx.reads_only)
            .await
        {
            Ok(mut replies) => replies.pop().unwrap_or(Reply::NullArray),
            Err(e) => engine_error(&e),
        }
    }
}

impl Transaction {
    /// Queues a command, or refuses it (and the transaction with it).
    fn queue(&mut self, cmd: &Command, argv: &[Bytes], route: Route) -> Reply {
        // Inside a transaction a blocking command does not block (as in Redis).
        let route = match route {
            Route::Blocking(slot) => Route::Slot(Some(slot)),
            other => other,
        };
        match route {
            Route::Slot(slot) => {
                match (self.slot, slot) {
                    (Some(queued), Some(this)) if queued != this => self.cross_slot = true,
                    (None, Some(this)) => self.slot = Some(this),
                    _ => {}
                }
                self.reads_only &= reads_only(cmd);
                self.commands.push(argv.to_vec());
                Reply::Status("QUEUED")
            }
            Route::Refused(error) => {
                self.aborted = true;
                Reply::Error(error)
            }
            Route::Local
            | Route::EveryMaster(_)
            | Route::ScanMasters
            | Route::Blocking(_)
            | Route::Transaction(_) => {
                self.aborted = true;
                Reply::Error(format!(
                    "ERR {} inside MULTI is not supported with --engine",
                    cmd.full_name.to_ascii_uppercase().replace('|', " ")
                ))
            }
        }
    }
}

/// Whether running the command twice is harmless (a read), so a request lost
/// with its connection may be sent again.
fn reads_only(cmd: &Command) -> bool {
    cmd.has(flag::READONLY) && !cmd.has(flag::WRITE)
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn engine_error(e: &tidewire_engine::EngineError) -> Reply {
    Reply::Error(format!("ERR {e}"))
}
