//! The QStash view: counts, pending messages, the dead-letter queue (retry,
//! delete), schedules, queues, flow-control keys and the newest events. For
//! full-access sessions only: messages are read outside the command path (so no
//! ACL key pattern narrows them) and carry what publishers sent.

use std::sync::Arc;

use axum::body::Bytes as BodyBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{api_error, ok, DashState};

pub(super) async fn overview(State(st): State<Arc<DashState>>, headers: HeaderMap) -> Response {
    let s = session_or_401!(st, headers);
    admin_or_403!(s);
    match st.qstash.as_ref() {
        Some(q) => ok(q.overview()),
        None => api_error(
            StatusCode::NOT_FOUND,
            "the QStash API is off ([qstash] enabled = false)",
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct ActionBody {
    action: String,
    id: String,
}

/// `{"action": "retry" | "delete", "id": dlqId}` on a DLQ entry, or
/// `{"action": "cancel", "id": messageId}` on a pending message.
pub(super) async fn action(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    body: BodyBytes,
) -> Response {
    let s = session_or_401!(st, headers);
    admin_or_403!(s);
    let Some(q) = st.qstash.as_ref() else {
        return api_error(StatusCode::NOT_FOUND, "the QStash API is off");
    };
    let b: ActionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("bad action: {e}")),
    };
    let gone = || api_error(StatusCode::NOT_FOUND, &format!("{} not found", b.id));
    match b.action.as_str() {
        "retry" => match q.storage.dead_letter(&b.id) {
            Some(l) => match q.retry_dead_letter(&l).await {
                Ok(id) => ok(json!({ "messageId": id })),
                Err(r) => api_error(
                    StatusCode::from_u16(r.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &r.1,
                ),
            },
            None => gone(),
        },
        "delete" if q.storage.forget_dead_letter(&b.id) => ok(json!({ "deleted": 1 })),
        "cancel" if q.storage.cancel(&b.id) => ok(json!({ "cancelled": 1 })),
        "delete" | "cancel" => gone(),
        other => api_error(StatusCode::BAD_REQUEST, &format!("unknown action {other}")),
    }
}
