//! Routes of the dead-letter queue: `/v2/dlq` list, read, delete, retry.

use super::*;

fn dlq_matches(b: &Bulk, l: &storage::DeadLetter) -> bool {
    b.url.as_ref().is_none_or(|u| &l.message.url == u)
        && b.message_id
            .as_ref()
            .is_none_or(|id| &l.message.message_id == id)
}

/// The DLQ entries a bulk request names, and the cursor of the next page.
fn dlq_selection(q: &Qstash, b: &Bulk) -> (Vec<storage::DeadLetter>, Option<String>) {
    if !b.ids.is_empty() {
        let letters = b
            .ids
            .iter()
            .filter_map(|id| q.storage.dead_letter(id))
            .collect();
        return (letters, None);
    }
    let ids = q.storage.dead_letters(b.cursor, b.count);
    let cursor = next_cursor(b, ids.len());
    let letters = ids
        .iter()
        .filter_map(|id| q.storage.dead_letter(id))
        .filter(|l| dlq_matches(b, l))
        .collect();
    (letters, cursor)
}

pub(super) async fn list_dlq(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let b = bulk(req.uri().query(), "dlqIds");
    let (letters, cursor) = dlq_selection(&q, &b);
    let mut reply = json!({
        "messages": letters.iter().map(storage::DeadLetter::to_json).collect::<Vec<_>>(),
    });
    if let Some(c) = cursor {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}

pub(super) async fn get_dlq(State(q): State<Arc<Qstash>>, Path(id): Path<String>) -> Response {
    match q.storage.dead_letter(&id) {
        Some(l) => axum::Json(l.to_json()).into_response(),
        None => not_found("dlq message", &id),
    }
}

pub(super) async fn delete_dlq_one(
    State(q): State<Arc<Qstash>>,
    Path(id): Path<String>,
) -> Response {
    if q.storage.forget_dead_letter(&id) {
        axum::Json(json!({ "deleted": 1 })).into_response()
    } else {
        not_found("dlq message", &id)
    }
}

pub(super) async fn delete_dlq_many(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let mut b = bulk(req.uri().query(), "dlqIds");
    // Deleting removes what it lists: every page of "all" starts at the front.
    b.cursor = 0;
    let (letters, cursor) = dlq_selection(&q, &b);
    let deleted = letters
        .iter()
        .filter(|l| q.storage.forget_dead_letter(&l.dlq_id))
        .count();
    let mut reply = json!({ "deleted": deleted });
    if let Some(c) = cursor.filter(|_| b.ids.is_empty()) {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}

/// Publishes each named DLQ entry again as a new message with its retries reset,
/// and removes it from the DLQ.
pub(super) async fn retry_dlq(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let mut b = bulk(req.uri().query(), "dlqIds");
    b.cursor = 0;
    let (letters, cursor) = dlq_selection(&q, &b);
    let mut responses = Vec::with_capacity(letters.len());
    for l in letters {
        match q.retry_dead_letter(&l).await {
            Ok(id) => responses.push(json!({ "messageId": id })),
            Err(r) => return refused(r),
        }
    }
    let mut reply = json!({ "responses": responses });
    if let Some(c) = cursor.filter(|_| b.ids.is_empty()) {
        reply["cursor"] = c.into();
    }
    axum::Json(reply).into_response()
}
