//! Routes of URL groups: `/v2/topics` and their endpoints.

use super::*;

pub(super) async fn list_url_groups(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .url_groups()
        .iter()
        .map(url_group::UrlGroup::to_json)
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

pub(super) async fn get_url_group(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
) -> Response {
    match q.storage.url_group(&name) {
        Some(g) => axum::Json(g.to_json()).into_response(),
        None => not_found("url group", &name),
    }
}

pub(super) async fn delete_url_group(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
) -> Response {
    match q.storage.delete_url_group(&name) {
        (true, seq) => {
            q.wait_durable(seq).await;
            StatusCode::OK.into_response()
        }
        (false, _) => not_found("url group", &name),
    }
}

/// Adds endpoints to a group, creating it; an endpoint with a URL already in the
/// group replaces it (so its name can change).
pub(super) async fn add_endpoints(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    if !url_group::valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            "a url group name has only letters, digits, '-', '_' and '.' (at most 128)",
        );
    }
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let added = match url_group::parse_endpoints(&body, true) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    let now = delivery::now_ms();
    let mut g = q.storage.url_group(&name).unwrap_or(url_group::UrlGroup {
        name: name.clone(),
        created_at: now,
        updated_at: now,
        endpoints: Vec::new(),
    });
    for e in added {
        g.endpoints.retain(|old| old.url != e.url);
        g.endpoints.push(e);
    }
    if g.endpoints.len() > url_group::MAX_ENDPOINTS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "a url group holds at most {} endpoints",
                url_group::MAX_ENDPOINTS
            ),
        );
    }
    g.updated_at = now;
    let seq = match q.storage.save_url_group(&g) {
        Ok(seq) => seq,
        Err(e) => return refused(store_refused(e)),
    };
    q.wait_durable(seq).await;
    StatusCode::OK.into_response()
}

/// Removes the endpoints matching by name or by URL; a group left empty goes.
pub(super) async fn remove_endpoints(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let removed = match url_group::parse_endpoints(&body, false) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    let Some(mut g) = q.storage.url_group(&name) else {
        return not_found("url group", &name);
    };
    g.endpoints.retain(|e| {
        !removed.iter().any(|r| {
            (!r.url.is_empty() && r.url == e.url) || (r.name.is_some() && r.name == e.name)
        })
    });
    g.updated_at = delivery::now_ms();
    let seq = match q.storage.save_url_group(&g) {
        Ok(seq) => seq,
        Err(e) => return refused(store_refused(e)),
    };
    q.wait_durable(seq).await;
    StatusCode::OK.into_response()
}
