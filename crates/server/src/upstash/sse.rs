//! Server-Sent Events: `/subscribe/<channel>`, `/psubscribe/<pattern>` and `/monitor`
//! stream what a RESP subscriber would receive, one event per push, as Upstash
//! formats it: `data: subscribe,<channel>,1`, `data: message,<channel>,<message>`,
//! `data: pmessage,<pattern>,<channel>,<message>`; MONITOR lines as they are.
//!
//! A pump task owns the [`Client`] and feeds the response body through a short
//! queue. When the HTTP client goes away hyper drops the body, the pump sees its
//! queue closed and ends, and the subscription's drop runs `drop_client`: the
//! subscriptions (or the MONITOR slot) are gone at once. Shutdown, CLIENT KILL and
//! the pub/sub output buffer limit end the pump from the server side, even while
//! the client reads nothing.
//!
//! With `--engine`, `/subscribe` and `/psubscribe` subscribe on the engine
//! through an engine session of the subscription's own (its subscriber
//! connections live as long as the stream), so they hear every node's
//! `PUBLISH`; the engine's confirmations and messages arrive as pushes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tidewire_resp::Reply;
use tidewire_store::{Client, Store};
use tokio::sync::{mpsc, watch};

use super::auth::Access;
use super::{encode, json_error, RestState};
use crate::engine::Forwarded;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
    Monitor,
}

/// Comment lines keep idle streams alive through proxies and let the server notice
/// a vanished client even when nothing is published.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Subscription {
    store: Arc<Store>,
    client: Client,
    /// With `--engine`: holds the subscriber connections to the engine.
    _engine: Option<crate::engine::EngineSession>,
    rx: mpsc::UnboundedReceiver<(Reply, usize)>,
    /// Replies to send before any push (the subscribe confirmations).
    pending: VecDeque<Reply>,
    shutdown: watch::Receiver<bool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.store.drop_client(&mut self.client);
    }
}

pub async fn serve(
    st: &Arc<RestState>,
    peer: &str,
    kind: Kind,
    names: &[Bytes],
    access: Access,
) -> Response {
    if kind == Kind::Monitor && access != Access::ReadWrite {
        return json_error(
            StatusCode::BAD_REQUEST,
            "NOPERM this user has no permissions to run the 'monitor' command or its subcommand",
        );
    }
    if kind != Kind::Monitor && names.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "ERR wrong number of arguments: name a channel, e.g. /subscribe/<channel>",
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut client = st
        .store
        .new_client(peer.to_string(), st.local_addr.clone(), "http");
    client.no_block = true;
    client.authenticated = true;
    if let Access::User(i) = access {
        client.info.set_user(st.tokens.user_name(i));
    }
    client.info.set_push_channel(tx);
    let engine = match kind {
        Kind::Monitor => None,
        Kind::Channel | Kind::Pattern => st.engine.session(),
    };
    let mut sub = Subscription {
        store: st.store.clone(),
        client,
        _engine: None,
        rx,
        pending: VecDeque::new(),
        shutdown: st.shutdown.clone(),
    };
    match kind {
        Kind::Monitor => st.store.add_monitor(sub.client.info.clone()),
        Kind::Channel | Kind::Pattern => {
            let word: &'static [u8] = if kind == Kind::Channel {
                b"SUBSCRIBE"
            } else {
                b"PSUBSCRIBE"
            };
            let mut argv = Vec::with_capacity(names.len() + 1);
            argv.push(Bytes::from_static(word));
            argv.extend(names.iter().cloned());
            let mut out = Vec::new();
            if let Some(mut engine) = engine {
                match engine.execute(&st.store, &mut sub.client, &argv).await {
                    Forwarded::Pushed => {}
                    Forwarded::Reply(reply) => out.push(reply),
                    Forwarded::Local => {
                        st.store.execute(&mut sub.client, &argv, &mut out);
                    }
                }
                sub._engine = Some(engine);
            } else {
                st.store.execute(&mut sub.client, &argv, &mut out);
            }
            if let Some(Reply::Error(e)) = out.iter().find(|r| r.is_error()) {
                return json_error(StatusCode::BAD_REQUEST, e);
            }
            sub.pending.extend(out);
        }
    }
    // A pump task owns the subscription and hands events to the body through a
    // short queue. hyper polls the body only while the socket takes data, so a
    // subscription living inside the body would outlive a CLIENT KILL or an output
    // limit, still subscribed and holding its backlog, for as long as a client that
    // never reads keeps the connection open. The pump sees the kill at once and
    // drops the subscription, which unsubscribes it and frees what was queued.
    let (events_tx, events_rx) = mpsc::channel::<Event>(BODY_QUEUE);
    tokio::spawn(pump(sub, events_tx));
    let stream = futures_util::stream::unfold(events_rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, Infallible>(event), rx))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies such as nginx would otherwise buffer the stream.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}

/// Events encoded ahead of the socket: what stays stuck in the body when the
/// subscription is dropped, at most this many messages.
const BODY_QUEUE: usize = 16;

/// Moves a subscription's pushes into the response body until the HTTP client goes
/// away, the client is killed (CLIENT KILL, output buffer limit) or the server stops.
async fn pump(mut sub: Subscription, events: mpsc::Sender<Event>) {
    while let Some(r) = sub.pending.pop_front() {
        if events.send(event(&r)).await.is_err() {
            return;
        }
    }
    let info = sub.client.info.clone();
    loop {
        let reply = tokio::select! {
            biased;
            _ = info.killed() => return,
            _ = sub.shutdown.changed() => return,
            _ = events.closed() => return,
            msg = sub.rx.recv() => match msg {
                Some((reply, size)) => {
                    info.pushed(size);
                    reply
                }
                None => return,
            },
        };
        tokio::select! {
            biased;
            _ = info.killed() => return,
            _ = sub.shutdown.changed() => return,
            sent = events.send(event(&reply)) => if sent.is_err() { return },
        }
    }
}

fn event(reply: &Reply) -> Event {
    Event::default().data(encode::sse_line(reply))
}
