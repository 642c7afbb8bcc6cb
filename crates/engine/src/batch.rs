//! A client's pipeline sent together. Commands for single slots are grouped by
//! the master owning each slot now; each master gets its group in one write (in
//! the client's order, so a node runs them in that order), and the masters work
//! concurrently. Without this a pipeline of N commands cost N round trips.
//!
//! What a group cannot settle goes again one command at a time through
//! [`Cluster::run`], in the client's order, as an unbatched command would:
//! a redirect (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`), a connection that could
//! not be made, and a lost connection for commands that may run twice. A command
//! redirected away ran nowhere, so running it later cannot run it twice; the
//! caller keeps commands whose order against it could be seen apart (see the
//! server's `engine::pipeline`).

use std::sync::Arc;

use bytes::Bytes;
use tidewire_resp::{Protocol, Reply};

use crate::cluster::{is_redirect, Cluster};
use crate::error::EngineError;

/// One command of a batch.
pub struct Batched<'a> {
    /// The slot of every key of the command.
    pub slot: u16,
    pub argv: &'a [Bytes],
    /// The command may run twice (a read): a lost connection is retried.
    pub retry_if_lost: bool,
}

impl Cluster {
    /// Runs single-slot commands as one batch; one result per command, in order
    /// (see the module's doc).
    pub async fn run_batch(
        &self,
        proto: Protocol,
        commands: &[Batched<'_>],
    ) -> Vec<Result<Reply, EngineError>> {
        let mut owners = Vec::with_capacity(commands.len());
        for c in commands {
            owners.push(self.route(Some(c.slot)).await.ok());
        }
        let groups = group(&owners);
        let sends = groups.iter().map(|(addr, members)| {
            let wire: Vec<Vec<Bytes>> =
                members.iter().map(|i| commands[*i].argv.to_vec()).collect();
            async move { self.send(addr, proto, &wire).await }
        });
        let outcomes = futures_util::future::join_all(sends).await;
        // `None`: to run again on its own.
        let mut results: Vec<Option<Result<Reply, EngineError>>> =
            commands.iter().map(|_| None).collect();
        for ((_, members), outcome) in groups.iter().zip(outcomes) {
            match outcome {
                Ok(replies) if replies.len() == members.len() => {
                    for (i, reply) in members.iter().zip(replies) {
                        if !is_redirect(&reply) {
                            results[*i] = Some(Ok(reply));
                        }
                    }
                }
                Ok(replies) => {
                    let e = EngineError::Protocol(format!(
                        "{} replies to {} commands",
                        replies.len(),
                        members.len()
                    ));
                    for i in members {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
                // Never sent: every command may go again.
                Err(EngineError::Unreachable(_)) => {}
                Err(e @ EngineError::Lost(_)) => {
                    for i in members {
                        if !commands[*i].retry_if_lost {
                            results[*i] = Some(Err(e.clone()));
                        }
                    }
                }
                Err(e) => {
                    for i in members {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(commands.len());
        for (c, result) in commands.iter().zip(results) {
            let result = match result {
                Some(result) => result,
                None => self
                    .run(proto, Some(c.slot), &[c.argv.to_vec()], c.retry_if_lost)
                    .await
                    .map(|mut replies| replies.pop().unwrap_or(Reply::Null)),
            };
            out.push(result);
        }
        out
    }
}

/// The commands' indexes by owner, in order of first appearance and, within an
/// owner, in the client's order. A command without a known owner is in no group
/// (it runs on its own, which reads the topology).
fn group(owners: &[Option<Arc<str>>]) -> Vec<(Arc<str>, Vec<usize>)> {
    let mut groups: Vec<(Arc<str>, Vec<usize>)> = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let Some(owner) = owner else { continue };
        match groups.iter_mut().find(|(addr, _)| addr == owner) {
            Some((_, members)) => members.push(i),
            None => groups.push((owner.clone(), vec![i])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_the_client_order_per_master() {
        let a: Arc<str> = "a:1".into();
        let b: Arc<str> = "b:1".into();
        let owners = [
            Some(b.clone()),
            Some(a.clone()),
            None,
            Some(b.clone()),
            Some(a.clone()),
        ];
        assert_eq!(group(&owners), vec![(b, vec![0, 3]), (a, vec![1, 4])]);
    }
}
