//! Pub/Sub commands. Subscription confirmations are push replies: RESP3 clients get
//! `>` frames, RESP2 clients plain arrays, exactly as Redis sends them.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::client::Client;
use crate::command::{cmd, flag::*, ChannelArgs, CommandSpec, NO_KEYS};
use crate::error::CmdResult;
use crate::exec::Ctx;
use crate::pubsub::Kind;
use crate::Store;

pub fn commands() -> Vec<CommandSpec> {
    let p = |c: CommandSpec| c.group("pubsub");
    let sub_flags = PUBSUB | NOSCRIPT | LOADING | STALE | NO_KEYSPACE | SUBSCRIBED_OK;
    vec![
        p(cmd("subscribe", -2, sub_flags, NO_KEYS, subscribe).summary("Listens for messages published to channels.").channel_args(ChannelArgs::All)),
        p(cmd("unsubscribe", -1, sub_flags, NO_KEYS, unsubscribe).summary("Stops listening to messages posted to channels.")),
        p(cmd("psubscribe", -2, sub_flags, NO_KEYS, psubscribe).summary("Listens for messages published to channels that match one or more patterns.").channel_args(ChannelArgs::AllPatterns)),
        p(cmd("punsubscribe", -1, sub_flags, NO_KEYS, punsubscribe).summary("Stops listening to messages published to channels that match one or more patterns.")),
        p(cmd("ssubscribe", -2, sub_flags, NO_KEYS, ssubscribe).summary("Listens for messages published to shard channels.").channel_args(ChannelArgs::All)),
        p(cmd("sunsubscribe", -1, sub_flags, NO_KEYS, sunsubscribe).summary("Stops listening to messages posted to shard channels.")),
        p(cmd("publish", 3, PUBSUB | LOADING | STALE | FAST | NO_KEYSPACE, NO_KEYS, publish).summary("Posts a message to a channel.").channel_args(ChannelArgs::First)),
        p(cmd("spublish", 3, PUBSUB | LOADING | STALE | FAST | NO_KEYSPACE, NO_KEYS, spublish).summary("Post a message to a shard channel").channel_args(ChannelArgs::First)),
        p(cmd("pubsub", -2, NO_KEYSPACE, NO_KEYS, pubsub_help).summary("A container for Pub/Sub commands.").subs(vec![
            cmd("channels", -2, PUBSUB | LOADING | STALE | NO_KEYSPACE, NO_KEYS, channels).summary("Returns the active channels."),
            cmd("numsub", -2, PUBSUB | LOADING | STALE | NO_KEYSPACE, NO_KEYS, numsub).summary("Returns a count of subscribers to channels."),
            cmd("numpat", 2, PUBSUB | LOADING | STALE | NO_KEYSPACE, NO_KEYS, numpat).summary("Returns a count of unique pattern subscriptions."),
            cmd("shardchannels", -2, PUBSUB | LOADING | STALE | NO_KEYSPACE, NO_KEYS, shardchannels).summary("Returns the active shard channels."),
            cmd("shardnumsub", -2, PUBSUB | LOADING | STALE | NO_KEYSPACE, NO_KEYS, shardnumsub).summary("Returns the count of subscribers of shard channels."),
            cmd("help", 2, LOADING | STALE | NO_KEYSPACE, NO_KEYS, pubsub_help).summary("Returns helpful text about the different subcommands."),
        ])),
    ]
}

fn kind_names(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Channel => ("subscribe", "unsubscribe"),
        Kind::Pattern => ("psubscribe", "punsubscribe"),
        Kind::Shard => ("ssubscribe", "sunsubscribe"),
    }
}

fn set_of(client: &mut Client, kind: Kind) -> &mut HashSet<Bytes> {
    match kind {
        Kind::Channel => &mut client.channels,
        Kind::Pattern => &mut client.patterns,
        Kind::Shard => &mut client.shard_channels,
    }
}

fn sync_counts(client: &Client) {
    client
        .info
        .subscriptions
        .store(client.channels.len(), Ordering::Relaxed);
    client
        .info
        .psubscriptions
        .store(client.patterns.len(), Ordering::Relaxed);
    client
        .info
        .ssubscriptions
        .store(client.shard_channels.len(), Ordering::Relaxed);
}

/// The count Redis reports after (un)subscribing: shard channels are counted apart.
fn reported_count(client: &Client, kind: Kind) -> i64 {
    match kind {
        Kind::Shard => client.shard_channels.len() as i64,
        _ => (client.channels.len() + client.patterns.len()) as i64,
    }
}

fn confirm(word: &'static str, name: Option<Bytes>, count: i64) -> Reply {
    Reply::Push(vec![
        Reply::bulk(Bytes::from_static(word.as_bytes())),
        name.map_or(Reply::Null, Reply::Bulk),
        Reply::Int(count),
    ])
}

/// Replies go out one per name: all but the last as extra replies.
fn emit(ctx: &mut Ctx<'_>, mut replies: Vec<Reply>) -> CmdResult {
    let last = replies.pop().unwrap_or(Reply::Null);
    ctx.ev.extra_replies.extend(replies);
    Ok(last)
}

fn subscribe_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, kind: Kind) -> CmdResult {
    let (word, _) = kind_names(kind);
    let mut replies = Vec::new();
    for name in args.rest() {
        let name = Bytes::copy_from_slice(name);
        if set_of(ctx.client, kind).insert(name.clone()) {
            ctx.store
                .pubsub
                .subscribe(kind, name.clone(), &ctx.client.info);
        }
        replies.push(confirm(word, Some(name), reported_count(ctx.client, kind)));
    }
    sync_counts(ctx.client);
    emit(ctx, replies)
}

fn unsubscribe_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, kind: Kind) -> CmdResult {
    let (_, word) = kind_names(kind);
    let names: Vec<Bytes> = if args.is_empty() {
        let mut all: Vec<Bytes> = set_of(ctx.client, kind).iter().cloned().collect();
        all.sort();
        all
    } else {
        args.rest()
            .iter()
            .map(|n| Bytes::copy_from_slice(n))
            .collect()
    };
    if names.is_empty() {
        return Ok(confirm(word, None, reported_count(ctx.client, kind)));
    }
    let mut replies = Vec::new();
    for name in names {
        if set_of(ctx.client, kind).remove(&name) {
            ctx.store.pubsub.unsubscribe(kind, &name, ctx.client.id());
        }
        replies.push(confirm(word, Some(name), reported_count(ctx.client, kind)));
    }
    sync_counts(ctx.client);
    emit(ctx, replies)
}

fn subscribe(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Channel)
}
fn psubscribe(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Pattern)
}
fn ssubscribe(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Shard)
}
fn unsubscribe(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Channel)
}
fn punsubscribe(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Pattern)
}
fn sunsubscribe(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Shard)
}

/// Drops every subscription of a client (disconnect, RESET).
pub fn unsubscribe_all(store: &Store, client: &mut Client) {
    for (kind, set) in [
        (Kind::Channel, std::mem::take(&mut client.channels)),
        (Kind::Pattern, std::mem::take(&mut client.patterns)),
        (Kind::Shard, std::mem::take(&mut client.shard_channels)),
    ] {
        for name in set {
            store.pubsub.unsubscribe(kind, &name, client.id());
        }
    }
    sync_counts(client);
}

fn publish(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let channel = args.next_bytes()?;
    let message = args.next_bytes()?;
    let limit = ctx.store.config.pubsub_limit();
    Ok(Reply::Int(
        ctx.store.pubsub.publish(channel, message, limit) as i64,
    ))
}

fn spublish(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let channel = args.next_bytes()?;
    let message = args.next_bytes()?;
    let limit = ctx.store.config.pubsub_limit();
    Ok(Reply::Int(
        ctx.store.pubsub.spublish(channel, message, limit) as i64,
    ))
}

fn channels(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let pattern = args.peek().map(|p| &p[..]);
    Ok(Reply::bulks(ctx.store.pubsub.names(Kind::Channel, pattern)))
}

fn shardchannels(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let pattern = args.peek().map(|p| &p[..]);
    Ok(Reply::bulks(ctx.store.pubsub.names(Kind::Shard, pattern)))
}

fn numsub_generic(ctx: &mut Ctx<'_>, args: &mut Args<'_>, kind: Kind) -> CmdResult {
    let mut out = Vec::new();
    for ch in args.rest() {
        out.push(Reply::Bulk(ch.clone()));
        out.push(Reply::Int(ctx.store.pubsub.count(kind, ch) as i64));
    }
    Ok(Reply::Array(out))
}

fn numsub(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    numsub_generic(ctx, args, Kind::Channel)
}

fn shardnumsub(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    numsub_generic(ctx, args, Kind::Shard)
}

fn numpat(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(ctx.store.pubsub.len(Kind::Pattern) as i64))
}

fn pubsub_help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(
        [
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
            "HELP",
            "    Print this help.",
        ]
        .iter()
        .map(|s| Reply::SimpleString(s.to_string()))
        .collect(),
    ))
}
