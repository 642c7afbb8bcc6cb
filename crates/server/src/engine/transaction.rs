//! A MULTI queue kept on the node until EXEC sends it whole to the engine.

use bytes::Bytes;
use tidewire_resp::Reply;
use tidewire_store::command::flag;
use tidewire_store::Command;

use super::primitives::{self, Finish};
use super::route::Route;

/// Commands queued since MULTI.
#[derive(Default)]
pub struct Transaction {
    pub commands: Vec<Vec<Bytes>>,
    /// The slot of every key queued so far, once there is one.
    pub slot: Option<u16>,
    /// Keys of different commands in different slots: EXEC answers CROSSSLOT.
    pub cross_slot: bool,
    /// A command was refused while queued: EXEC answers EXECABORT.
    pub aborted: bool,
    /// Every queued command only reads, so a lost connection may retry it.
    pub reads_only: bool,
    /// Native commands queued as scripts: their index among `commands` and what
    /// turns the script's part of EXEC's reply into the command's.
    pub finishers: Vec<(usize, Finish)>,
    /// `PUBLISH`es queued: their index among `commands`, channel and message,
    /// bridged to the realtime layer once EXEC ran them.
    pub publishes: Vec<(usize, Bytes, Bytes)>,
}

impl Transaction {
    pub fn new() -> Transaction {
        Transaction {
            reads_only: true,
            ..Transaction::default()
        }
    }

    /// Queues a command, or refuses it (and the transaction with it).
    pub fn queue(&mut self, cmd: &Command, argv: &[Bytes], route: Route) -> Reply {
        // Inside a transaction a blocking command does not block (as in Redis).
        let route = match route {
            Route::Blocking(slot) => Route::Slot(Some(slot)),
            other => other,
        };
        let mut argv = argv;
        let script;
        let route = match route {
            // Sent as its script inside the transaction; nothing waits there.
            Route::Native(slot) => {
                let (eval, finish) = primitives::queued(cmd, argv);
                script = eval;
                argv = &script;
                self.finishers.push((self.commands.len(), finish));
                Route::Slot(Some(slot))
            }
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
                if let (true, Some(channel), Some(message)) =
                    (super::session::is_publish(cmd), argv.get(1), argv.get(2))
                {
                    self.publishes
                        .push((self.commands.len(), channel.clone(), message.clone()));
                }
                self.commands.push(argv.to_vec());
                Reply::Status("QUEUED")
            }
            Route::Refused(error) => {
                self.aborted = true;
                Reply::Error(error)
            }
            Route::Local
            | Route::EveryMaster(_)
            | Route::AfterOwnWrites(_)
            | Route::ScanMasters
            | Route::Subscription
            | Route::ShardSubscription(_)
            | Route::Blocking(_)
            | Route::Native(_)
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
pub fn reads_only(cmd: &Command) -> bool {
    cmd.has(flag::READONLY) && !cmd.has(flag::WRITE)
}

/// EXEC's reply with each native command's part made into the command's reply.
pub fn finish(reply: Reply, finishers: &[(usize, Finish)]) -> Reply {
    match reply {
        Reply::Array(mut items) if !finishers.is_empty() => {
            for (at, finish) in finishers {
                if let Some(item) = items.get_mut(*at) {
                    *item = finish(std::mem::replace(item, Reply::Null));
                }
            }
            Reply::Array(items)
        }
        other => other,
    }
}
