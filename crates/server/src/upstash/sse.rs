//! Server-Sent Events: `/subscribe/<channel>`, `/psubscribe/<pattern>` and `/monitor`
//! stream what a RESP subscriber would receive, one event per push, as Upstash
//! formats it: `data: subscribe,<channel>,1`, `data: message,<channel>,<message>`,
//! `data: pmessage,<pattern>,<channel>,<message>`; MONITOR lines as they are.
//!
//! The stream owns its [`Client`]. When the HTTP client goes away hyper drops the
//! response body, and with it the stream, whose drop runs `drop_client`: the
//! subscriptions (or the MONITOR slot) are gone at once. Shutdown and CLIENT KILL end
//! the stream from the server side.

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

pub fn serve(
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
    client.info.set_push_channel(tx);
    let mut sub = Subscription {
        store: st.store.clone(),
        client,
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
            st.store.execute(&mut sub.client, &argv, &mut out);
            if let Some(Reply::Error(e)) = out.iter().find(|r| r.is_error()) {
                return json_error(StatusCode::BAD_REQUEST, e);
            }
            sub.pending.extend(out);
        }
    }
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        if let Some(r) = sub.pending.pop_front() {
            return Some((Ok::<_, Infallible>(event(&r)), sub));
        }
        let info = sub.client.info.clone();
        tokio::select! {
            biased;
            _ = info.killed() => None,
            _ = sub.shutdown.changed() => None,
            msg = sub.rx.recv() => {
                let (reply, size) = msg?;
                info.pushed(size);
                Some((Ok(event(&reply)), sub))
            }
        }
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

fn event(reply: &Reply) -> Event {
    Event::default().data(encode::sse_line(reply))
}
