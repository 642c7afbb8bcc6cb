//! The WebSocket front door at `/`: upgrade, adapt axum's socket to [`Frame`]s, hand
//! over to [`run_session`].
//!
//! The upgrade is always completed, even for bad credentials: the session then sends
//! an ERROR frame and closes, which clients treat as a definitive answer, whereas a
//! refused upgrade looks like a network failure they retry forever.

use std::collections::HashMap;
use std::future::ready;
use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};

/// Per-connection read buffer of the WebSocket transport.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Bytes buffered before a write is pushed to the socket.
const WS_WRITE_BUFFER: usize = 16 * 1024;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use crate::codec::Frame;
use crate::connection::run_session;
use crate::error::{AblyError, ErrorCode};
use crate::hub::Hub;

fn to_frame(m: WsMessage) -> Frame {
    match m {
        WsMessage::Text(t) => Frame::Text(t.as_str().to_owned()),
        WsMessage::Binary(b) => Frame::Binary(b),
        WsMessage::Ping(b) => Frame::Ping(b),
        WsMessage::Pong(b) => Frame::Pong(b),
        WsMessage::Close(_) => Frame::Close,
    }
}

fn to_ws(f: Frame) -> WsMessage {
    match f {
        Frame::Text(t) => WsMessage::Text(t.into()),
        // Built from a `String`, so the check passes; it is a linear scan, cheaper
        // than the per-recipient copy it replaces.
        Frame::SharedText(b) => match Utf8Bytes::try_from(b.clone()) {
            Ok(t) => WsMessage::Text(t),
            Err(_) => WsMessage::Text(String::from_utf8_lossy(&b).into_owned().into()),
        },
        Frame::Binary(b) => WsMessage::Binary(b),
        Frame::Ping(b) => WsMessage::Ping(b),
        Frame::Pong(b) => WsMessage::Pong(b),
        Frame::Close => WsMessage::Close(None),
    }
}

/// `GET /` with `Upgrade: websocket`.
pub async fn ws_root(
    State(hub): State<Arc<Hub>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return AblyError::new(
            ErrorCode::BadRequest,
            "Expected a WebSocket upgrade (Ably realtime endpoint)",
        )
        .into_response();
    };
    let query = query.map(|Query(q)| q).unwrap_or_default();
    // Transport limit above maxFrameSize so that oversize publishes still get a
    // NACK 40009 instead of a dropped connection.
    let limit = hub.config().max_frame_size.saturating_mul(2).max(1024);
    // Small socket buffers: the library's 128 KiB defaults are zero-filled per
    // connection and dominated the memory of 10,000 idle subscribers. Larger
    // messages still assemble up to `limit`; frames just arrive in smaller reads.
    ws.read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket: WebSocket| async move {
            let (tx, rx) = socket.split();
            let sink = tx.with(|f: Frame| ready(Ok::<_, axum::Error>(to_ws(f))));
            let stream = rx.map(|r| r.map(to_frame));
            run_session(hub, query, Box::pin(sink), stream).await;
        })
}
