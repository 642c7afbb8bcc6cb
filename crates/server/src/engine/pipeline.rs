//! A client's pipeline on the engine: the consecutive plain keyed commands
//! already read from its socket go to the engine together
//! ([`Cluster::run_batch`]: one write per master, the masters concurrently)
//! instead of one round trip each.
//!
//! Only commands whose order cannot be seen differently join a batch: each goes
//! to the one slot of its keys, outside a transaction and out of subscribed
//! mode. Anything else (MULTI/EXEC/WATCH, blocking, subscribing, local,
//! keyless, fanned-out commands) ends the batch and runs alone after it, as
//! before. Within a batch a master runs its commands in the client's order; a
//! command it redirects ran nowhere and is run again on its own, in the client's
//! order, after the others of the batch. A later command of the same slot that
//! was not redirected touched none of its keys (a slot moved answers `MOVED` to
//! all of them, a key being migrated `ASK` to every command on it) unless the
//! redirected one had several keys (`TRYAGAIN` for a partly moved set), so a
//! command with several keys, or a script, is the last of its slot in a batch.

use bytes::{Bytes, BytesMut};
use tidewire_engine::Batched;
use tidewire_resp::{Protocol, ProtocolError, Reply, RequestParser};
use tidewire_store::command::flag;
use tidewire_store::exec::resolve;
use tidewire_store::{Client, Command, Store};

use super::route::{route, Route};
use super::session::{engine_error, EngineSession, Forwarded};
use super::transaction::reads_only;

/// Commands in one batch at most: all of a batch's replies are held before the
/// first is written.
pub const MAX_BATCH: usize = 128;

/// The commands read after a first one, to be forwarded with it.
pub struct Gathered {
    first_slot: u16,
    rest: Vec<(u16, Vec<Bytes>)>,
}

/// The answers to a command, or to it and the commands gathered with it.
pub enum Answers {
    One(Forwarded),
    /// One reply per command of the batch, in the client's order.
    Many(Vec<Reply>),
}

impl EngineSession {
    /// Takes from `inbuf` the complete commands after `first` that may be
    /// forwarded together with it (`None`: it runs alone). The command that
    /// ends the batch, or the protocol error where parsing stopped, goes to
    /// `held`, to be run next the usual way.
    pub fn gather(
        &self,
        client: &Client,
        first: &[Bytes],
        parser: &mut RequestParser,
        inbuf: &mut BytesMut,
        held: &mut Option<Result<Vec<Bytes>, ProtocolError>>,
    ) -> Option<Gathered> {
        // Before AUTH the connection checks each request's size before parsing
        // it: no reading ahead.
        if !client.authenticated || inbuf.is_empty() {
            return None;
        }
        let (first_slot, several) = self.batch_slot(client, first)?;
        let mut last_of_slot: Vec<u16> = Vec::new();
        if several {
            last_of_slot.push(first_slot);
        }
        let mut rest = Vec::new();
        while rest.len() + 1 < MAX_BATCH {
            let next = match parser.next_command(inbuf) {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    *held = Some(Err(e));
                    break;
                }
            };
            match self.batch_slot(client, &next) {
                Some((slot, several)) if !last_of_slot.contains(&slot) => {
                    if several {
                        last_of_slot.push(slot);
                    }
                    rest.push((slot, next));
                }
                _ => {
                    *held = Some(Ok(next));
                    break;
                }
            }
        }
        (!rest.is_empty()).then_some(Gathered { first_slot, rest })
    }

    /// [`EngineSession::execute`] for `first` alone, or for it and the commands
    /// gathered with it: admission, ACL and statistics per command, as alone.
    pub async fn execute_pipelined(
        &mut self,
        store: &Store,
        client: &mut Client,
        first: &[Bytes],
        gathered: Option<Gathered>,
    ) -> Answers {
        let Some(Gathered { first_slot, rest }) = gathered else {
            return Answers::One(self.execute(store, client, first).await);
        };
        let commands: Vec<(u16, &[Bytes])> = std::iter::once((first_slot, first))
            .chain(rest.iter().map(|(slot, argv)| (*slot, &argv[..])))
            .collect();
        Answers::Many(run_batch(self, store, client, &commands).await)
    }

    /// How many of `commands`, from the first, go to the engine together, by the
    /// rules [`EngineSession::gather`] applies to a RESP pipeline (a REST
    /// `/pipeline`'s commands are all there at once); 0 or 1: the first runs
    /// alone.
    pub fn batch_len(&self, client: &Client, commands: &[Vec<Bytes>]) -> usize {
        let mut last_of_slot: Vec<u16> = Vec::new();
        let mut len = 0;
        for argv in commands.iter().take(MAX_BATCH) {
            match self.batch_slot(client, argv) {
                Some((slot, several)) if !last_of_slot.contains(&slot) => {
                    if several {
                        last_of_slot.push(slot);
                    }
                    len += 1;
                }
                _ => break,
            }
        }
        len
    }

    /// Forwards `commands` (a run [`EngineSession::batch_len`] accepted) as one
    /// batch: one reply per command, in order.
    pub async fn execute_batch(
        &mut self,
        store: &Store,
        client: &mut Client,
        commands: &[Vec<Bytes>],
    ) -> Vec<Reply> {
        let slotted: Vec<(u16, &[Bytes])> = commands
            .iter()
            .filter_map(|argv| Some((self.batch_slot(client, argv)?.0, &argv[..])))
            .collect();
        if slotted.len() != commands.len() {
            // Not a batch after all (cannot happen for a run batch_len gave):
            // one by one, as the client sent them.
            let mut replies = Vec::with_capacity(commands.len());
            for argv in commands {
                replies.push(match self.execute(store, client, argv).await {
                    Forwarded::Reply(reply) => reply,
                    Forwarded::Local | Forwarded::Pushed => {
                        Reply::error("ERR engine protocol error: not a batch")
                    }
                });
            }
            return replies;
        }
        run_batch(self, store, client, &slotted).await
    }

    /// The slot of a command that may join a batch, and whether it must be the
    /// last of its slot (several keys, or a script); `None`: it runs alone.
    fn batch_slot(&self, client: &Client, argv: &[Bytes]) -> Option<(u16, bool)> {
        if argv.is_empty()
            || self.transaction.is_some()
            || (client.proto == Protocol::Resp2 && self.subscriptions.active())
        {
            return None;
        }
        let cmd = resolve(argv).ok()?;
        match route(cmd, argv) {
            Route::Slot(Some(slot)) => Some((slot, several_keys(cmd, argv))),
            _ => None,
        }
    }
}

/// Whether a command may touch several keys of its slot.
fn several_keys(cmd: &Command, argv: &[Bytes]) -> bool {
    cmd.has(flag::NO_MANDATORY_KEYS)
        || (cmd.spec.keys.single(argv).is_none() && cmd.spec.keys.positions(argv).len() > 1)
}

async fn run_batch(
    session: &EngineSession,
    store: &Store,
    client: &mut Client,
    commands: &[(u16, &[Bytes])],
) -> Vec<Reply> {
    let start = std::time::Instant::now();
    let admitted: Vec<Result<&'static Command, Reply>> = commands
        .iter()
        .map(|(_, argv)| store.admit_forwarded(client, argv))
        .collect();
    track(session, store, client, commands, &admitted).await;
    let cluster = &session.cluster;
    let batch: Vec<Batched<'_>> = commands
        .iter()
        .zip(&admitted)
        .filter_map(|((slot, argv), admitted)| {
            let cmd = admitted.as_ref().ok()?;
            Some(Batched {
                slot: *slot,
                argv,
                retry_if_lost: reads_only(cmd),
            })
        })
        .collect();
    let mut results = cluster.run_batch(client.proto, &batch).await.into_iter();
    admitted
        .into_iter()
        .map(|admitted| match admitted {
            Err(refusal) => refusal,
            Ok(cmd) => {
                let reply = match results.next() {
                    Some(Ok(reply)) => reply,
                    Some(Err(e)) => engine_error(&e),
                    None => Reply::error("ERR engine protocol error: no reply"),
                };
                store.account_forwarded(cmd, start.elapsed(), &reply);
                reply
            }
        })
        .collect()
}

/// `CLIENT TRACKING` for a batch, as for a command alone (see
/// `EngineSession::track`): each command takes `CLIENT CACHING`'s turn in
/// order, and a tracking client's reads are remembered before the batch goes,
/// once the node listens to every master.
async fn track(
    session: &EngineSession,
    store: &Store,
    client: &mut Client,
    commands: &[(u16, &[Bytes])],
    admitted: &[Result<&'static Command, Reply>],
) {
    if !client.tracking && client.caching.is_none() {
        return;
    }
    let reads = client.tracking
        && admitted
            .iter()
            .any(|a| a.as_ref().is_ok_and(|cmd| cmd.has(flag::READONLY)));
    if reads {
        session.invalidations.ensure().await;
    }
    for ((_, argv), admitted) in commands.iter().zip(admitted) {
        if let Ok(cmd) = admitted {
            client.caching_turn(false);
            store.remember_reads(client, cmd, argv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn several(args: &[&str]) -> bool {
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let cmd = resolve(&argv).unwrap_or_else(|_| panic!("{args:?} does not resolve"));
        several_keys(cmd, &argv)
    }

    #[test]
    fn commands_that_may_touch_several_keys_end_their_slot_in_a_batch() {
        assert!(!several(&["GET", "k"]));
        assert!(!several(&["SET", "k", "v", "EX", "10"]));
        assert!(!several(&["DEL", "k"]));
        assert!(several(&["DEL", "{t}a", "{t}b"]));
        assert!(several(&["MSET", "{t}a", "1", "{t}b", "2"]));
        assert!(several(&["RENAME", "{t}a", "{t}b"]));
        assert!(several(&["EVAL", "return 1", "1", "k"]));
        assert!(several(&["FCALL", "f", "1", "k"]));
    }
}
