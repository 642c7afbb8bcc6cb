//! A MULTI queue kept on the node until EXEC sends it whole to the engine.

use bytes::Bytes;
use tidewire_resp::Reply;
use tidewire_store::command::flag;
use tidewire_store::Command;

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
            | Route::Subscription
            | Route::ShardSubscription(_)
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
pub fn reads_only(cmd: &Command) -> bool {
    cmd.has(flag::READONLY) && !cmd.has(flag::WRITE)
}
