//! Where a command goes when the keyspace lives on the Redis engine. Decided from
//! the command table: flags, key positions, and Redis's request/response policy
//! tips for the keyless commands every master runs. Names are looked at only
//! where Redis itself tells commands apart by their handler, each place saying
//! so: the transaction commands, shard pub/sub, SCAN, the database commands a
//! cluster refuses, and the engine's SCRIPT / FUNCTION containers.

use bytes::Bytes;
use tidewire_engine::key_slot;
use tidewire_store::command::{flag, RequestPolicy, ResponsePolicy};
use tidewire_store::Command;

use super::fan_out::Merge;

/// Redis Cluster's reply to keys in more than one slot.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// About this connection or this node: the local store answers.
    Local,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: the session's own transaction.
    Transaction(TxControl),
    /// To the master owning this slot (`None`: the command has no key, any master).
    Slot(Option<u16>),
    /// A command that blocks (BLPOP …), to the master owning this slot on the
    /// client's own engine connection.
    Blocking(u16),
    /// To every master, the replies merged.
    EveryMaster(Merge),
    /// A wait for the client's writes to replicate (flag `AFTER_OWN_WRITES`:
    /// WAIT): on every master, over a connection of the client's own written
    /// to first, the replies merged.
    AfterOwnWrites(Merge),
    /// SCAN: one master after the other, behind one cursor.
    ScanMasters,
    /// SUBSCRIBE, PSUBSCRIBE and their UNSUBSCRIBEs: on the client's subscriber
    /// connection, answered by pushes.
    Subscription,
    /// SSUBSCRIBE / SUNSUBSCRIBE of channels in this slot, on a subscriber
    /// connection to its owner; `None`: SUNSUBSCRIBE of them all.
    ShardSubscription(Option<u16>),
    /// A Tidewire-native command (flag `NATIVE`), run as a script on the master
    /// owning this slot (see `primitives`).
    Native(u16),
    /// Not served with an engine: this error.
    Refused(String),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TxControl {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// The transaction commands, by name because Redis's `processCommand` tells
/// them apart by handler too (MULTI, EXEC, DISCARD and WATCH are the ones it
/// does not queue); UNWATCH is the session's as well, since WATCH is.
const TRANSACTION: &[(&str, TxControl)] = &[
    ("multi", TxControl::Multi),
    ("exec", TxControl::Exec),
    ("discard", TxControl::Discard),
    ("watch", TxControl::Watch),
    ("unwatch", TxControl::Unwatch),
];

/// Decides where `argv` (already resolved to `cmd`, arity checked) goes.
pub fn route(cmd: &Command, argv: &[Bytes]) -> Route {
    let name = cmd.full_name.as_str();
    if let Some((_, step)) = TRANSACTION.iter().find(|(n, _)| *n == name) {
        return Route::Transaction(*step);
    }
    if cmd.has(flag::PUBSUB) {
        return pubsub(cmd, argv);
    }
    let blocks =
        cmd.has(flag::BLOCKING) && (!cmd.has(flag::BLOCKS_ON_OPTION) || asks_to_block(argv));
    let positions = cmd.spec.keys.positions(argv);
    if let Some((first, rest)) = positions.split_first() {
        let slot = key_slot(&argv[*first]);
        if rest.iter().any(|p| key_slot(&argv[*p]) != slot) {
            return Route::Refused(CROSSSLOT.into());
        }
        // The engine has no such command: the node runs it as a script there
        // (waiting, if asked, on the client's own connection).
        if cmd.has(flag::NATIVE) {
            return Route::Native(slot);
        }
        return if blocks {
            Route::Blocking(slot)
        } else {
            Route::Slot(Some(slot))
        };
    }
    let merge = match cmd.spec.policy.response {
        ResponsePolicy::AggSum => Merge::Sum,
        ResponsePolicy::AllSucceeded => Merge::First,
        ResponsePolicy::Default => Merge::Concat,
        ResponsePolicy::AnyNonNil => Merge::AnyNonNull,
        ResponsePolicy::AggLogicalAnd => Merge::AllTrue,
        ResponsePolicy::AggMin => Merge::Min,
    };
    if cmd.has(flag::AFTER_OWN_WRITES) {
        return Route::AfterOwnWrites(merge);
    }
    if blocks {
        return not_yet(cmd, "it waits on the node's own replicas");
    }
    if cmd.spec.policy.request == RequestPolicy::AllShards {
        return Route::EveryMaster(merge);
    }
    // Redis's SELECT and SWAPDB refuse other databases themselves when cluster
    // mode is on (in their handlers, not by a flag).
    if name == "swapdb" || (name == "select" && argv.get(1).is_some_and(|db| &db[..] != b"0")) {
        return Route::Refused(format!(
            "ERR {} is not allowed in cluster mode",
            cmd.spec.name.to_ascii_uppercase()
        ));
    }
    // Redis's tip for SCAN is `request_policy:special`: cluster clients walk
    // the masters with code written for SCAN by name.
    if name == "scan" {
        return Route::ScanMasters;
    }
    // The engine's scripts and functions, not the node's: what the policy does
    // not send everywhere (FUNCTION LIST, FUNCTION DUMP …) any master answers,
    // as every master got the same loads. The table has no flag for "about the
    // script cache" (Redis's subcommands carry none either), so the containers
    // are named.
    if name.starts_with("script|") || name.starts_with("function|") {
        return Route::Slot(None);
    }
    // EVAL / FCALL with no key: any master runs it, as in a cluster (here they
    // count as keyspace-wide, since a script may touch undeclared keys).
    if cmd.has(flag::NO_MANDATORY_KEYS) {
        return Route::Slot(None);
    }
    // Whole-keyspace commands without a merge: INFO, MEMORY and DEBUG describe
    // this node and stay local.
    if cmd.has(flag::ALL_KEYS) && cmd.spec.group != "server" {
        return not_yet(cmd, "the keyspace is spread over the engine's masters");
    }
    Route::Local
}

/// Pub/sub commands: subscribing ones (allowed in subscribed mode) on the
/// client's subscriber connection, the others forwarded.
fn pubsub(cmd: &Command, argv: &[Bytes]) -> Route {
    // Shard channels by name, as Redis Cluster's own routing does
    // (`getNodeByQuery` compares the handlers of SSUBSCRIBE, SUNSUBSCRIBE and
    // SPUBLISH): a channel is not a key in the table.
    let shard = matches!(
        cmd.full_name.as_str(),
        "ssubscribe" | "sunsubscribe" | "spublish"
    );
    if !cmd.has(flag::SUBSCRIBED_OK) {
        // A cluster passes PUBLISH to every node; SPUBLISH belongs to the
        // channel's slot. PUBSUB CHANNELS/NUMSUB … answer for the master the
        // nodes subscribe on.
        return match argv.get(1) {
            Some(channel) if shard => Route::Slot(Some(key_slot(channel))),
            _ => Route::Slot(None),
        };
    }
    if !shard {
        return Route::Subscription;
    }
    match argv.get(1) {
        None => Route::ShardSubscription(None),
        Some(first) => {
            let slot = key_slot(first);
            if argv[2..].iter().any(|c| key_slot(c) != slot) {
                Route::Refused(CROSSSLOT.into())
            } else {
                Route::ShardSubscription(Some(slot))
            }
        }
    }
}

fn not_yet(cmd: &Command, why: &str) -> Route {
    Route::Refused(format!(
        "ERR {} is not supported with --engine yet: {why}",
        cmd.full_name.to_ascii_uppercase().replace('|', " ")
    ))
}

/// Whether a command that blocks only on request (XREAD … BLOCK ms) asks to: a
/// `BLOCK` option before `STREAMS` (what follows are keys and IDs).
fn asks_to_block(argv: &[Bytes]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .any(|a| a.eq_ignore_ascii_case(b"block"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewire_store::exec::resolve;

    fn route_of(args: &[&str]) -> Route {
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let cmd = resolve(&argv).unwrap_or_else(|_| panic!("{args:?} does not resolve"));
        route(cmd, &argv)
    }

    fn refused(r: Route) -> String {
        match r {
            Route::Refused(e) => e,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn keyed_commands_go_to_their_slot() {
        assert_eq!(route_of(&["GET", "foo"]), Route::Slot(Some(12182)));
        assert_eq!(route_of(&["set", "{foo}.x", "1"]), Route::Slot(Some(12182)));
        assert_eq!(
            route_of(&["MSET", "{t}a", "1", "{t}b", "2"]),
            Route::Slot(Some(key_slot(b"t")))
        );
        assert_eq!(
            route_of(&["MSET", "a", "1", "b", "2"]),
            Route::Refused(CROSSSLOT.into())
        );
        assert_eq!(
            route_of(&["EVAL", "return 1", "2", "a", "b"]),
            Route::Refused(CROSSSLOT.into())
        );
        assert_eq!(
            route_of(&["EVAL", "return 1", "1", "foo"]),
            Route::Slot(Some(12182))
        );
        assert_eq!(route_of(&["EVAL", "return 1", "0"]), Route::Slot(None));
        assert_eq!(
            route_of(&["XINFO", "STREAM", "foo"]),
            Route::Slot(Some(12182))
        );
        assert_eq!(
            route_of(&["XREAD", "COUNT", "1", "STREAMS", "foo", "0"]),
            Route::Slot(Some(12182))
        );
    }

    #[test]
    fn connection_and_node_commands_stay_local() {
        for args in [
            &["PING"][..],
            &["ECHO", "x"],
            &["HELLO", "3"],
            &["AUTH", "pw"],
            &["SELECT", "0"],
            &["CLIENT", "SETNAME", "n"],
            &["CLIENT", "ID"],
            &["COMMAND"],
            &["INFO"],
            &["QUIT"],
            &["RESET"],
            &["CONFIG", "GET", "maxmemory"],
        ] {
            assert_eq!(route_of(args), Route::Local, "{args:?}");
        }
    }

    #[test]
    fn keyspace_wide_commands_fan_out_or_are_refused() {
        assert_eq!(route_of(&["DBSIZE"]), Route::EveryMaster(Merge::Sum));
        assert_eq!(route_of(&["KEYS", "*"]), Route::EveryMaster(Merge::Concat));
        assert_eq!(route_of(&["FLUSHALL"]), Route::EveryMaster(Merge::First));
        assert_eq!(
            route_of(&["RANDOMKEY"]),
            Route::EveryMaster(Merge::AnyNonNull)
        );
        assert_eq!(
            route_of(&["SCRIPT", "LOAD", "return 1"]),
            Route::EveryMaster(Merge::First)
        );
        assert_eq!(route_of(&["FLUSHDB"]), Route::EveryMaster(Merge::First));
        assert_eq!(
            route_of(&["FUNCTION", "DELETE", "lib"]),
            Route::EveryMaster(Merge::First)
        );
        assert_eq!(
            route_of(&["SCRIPT", "FLUSH"]),
            Route::EveryMaster(Merge::First)
        );
        assert_eq!(route_of(&["SCAN", "0", "MATCH", "k*"]), Route::ScanMasters);
        assert_eq!(route_of(&["FUNCTION", "LIST"]), Route::Slot(None));
        assert_eq!(
            route_of(&["SCRIPT", "EXISTS", "abc"]),
            Route::EveryMaster(Merge::AllTrue)
        );
        assert_eq!(
            refused(route_of(&["SELECT", "1"])),
            "ERR SELECT is not allowed in cluster mode"
        );
        assert_eq!(
            refused(route_of(&["SWAPDB", "0", "1"])),
            "ERR SWAPDB is not allowed in cluster mode"
        );
    }

    #[test]
    fn blocking_and_pubsub_commands_go_to_their_slot_or_connection() {
        assert_eq!(
            route_of(&["BLPOP", "q", "0"]),
            Route::Blocking(key_slot(b"q"))
        );
        assert_eq!(
            route_of(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
            Route::Blocking(key_slot(b"s"))
        );
        assert_eq!(
            route_of(&["BLPOP", "a", "b", "0"]),
            Route::Refused(CROSSSLOT.into())
        );
        assert_eq!(
            route_of(&["WAITAOF", "1", "0", "0"]),
            Route::AfterOwnWrites(Merge::Min)
        );
        assert_eq!(
            route_of(&["WAIT", "1", "0"]),
            Route::AfterOwnWrites(Merge::Min)
        );
        assert_eq!(route_of(&["SUBSCRIBE", "c"]), Route::Subscription);
        assert_eq!(route_of(&["PUNSUBSCRIBE"]), Route::Subscription);
        assert_eq!(route_of(&["PUBLISH", "c", "m"]), Route::Slot(None));
        assert_eq!(
            route_of(&["SPUBLISH", "c", "m"]),
            Route::Slot(Some(key_slot(b"c")))
        );
        assert_eq!(route_of(&["PUBSUB", "NUMSUB", "c"]), Route::Slot(None));
        assert_eq!(
            route_of(&["SSUBSCRIBE", "{c}1", "{c}2"]),
            Route::ShardSubscription(Some(key_slot(b"c")))
        );
        assert_eq!(
            route_of(&["SSUBSCRIBE", "a", "b"]),
            Route::Refused(CROSSSLOT.into())
        );
        assert_eq!(route_of(&["SUNSUBSCRIBE"]), Route::ShardSubscription(None));
    }

    #[test]
    fn native_primitives_run_as_scripts_on_their_slot() {
        let slot = key_slot(b"k");
        for args in [
            &["CL.THROTTLE", "k", "1", "1", "1"][..],
            &["TW.THROTTLE", "k", "TIER", "a", "1", "1", "1000"],
            &["TW.IDEM.BEGIN", "k", "1000"],
            &["TW.LOCK.ACQUIRE", "k", "1000", "WAIT", "10"],
            &["TW.LOCK.INFO", "k"],
            &["TW.FILL.GET", "k", "1000", "WAIT", "10"],
            &["TW.FILL.SET", "k", "t", "v"],
        ] {
            assert_eq!(route_of(args), Route::Native(slot), "{args:?}");
        }
    }

    #[test]
    fn transaction_commands_are_the_session_s() {
        assert_eq!(route_of(&["MULTI"]), Route::Transaction(TxControl::Multi));
        assert_eq!(route_of(&["exec"]), Route::Transaction(TxControl::Exec));
        assert_eq!(
            route_of(&["WATCH", "k"]),
            Route::Transaction(TxControl::Watch)
        );
    }
}
