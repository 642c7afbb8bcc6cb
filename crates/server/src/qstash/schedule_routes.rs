//! Routes of schedules: `/v2/schedules` create, list, read, delete, pause, resume.

use super::*;

pub(super) async fn list_schedules(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .schedules()
        .iter()
        .map(schedule::Schedule::to_json)
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

/// `/v2/schedules/<rest>`: one route, as a destination URL (POST) holds slashes
/// an id (GET, DELETE, PATCH …/pause) does not.
pub(super) async fn schedules(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/v2/schedules/")
        .unwrap_or("")
        .to_string();
    let method = req.method().clone();
    match method.as_str() {
        "POST" => create_schedule(q, req).await,
        "GET" => match q.storage.schedule(&rest) {
            Some(s) => axum::Json(s.to_json()).into_response(),
            None => not_found("schedule", &rest),
        },
        "DELETE" => match q.storage.delete_schedule(&rest) {
            (true, seq) => {
                q.wait_durable(seq).await;
                StatusCode::OK.into_response()
            }
            (false, _) => not_found("schedule", &rest),
        },
        "PATCH" => {
            let (id, pause) = match rest.rsplit_once('/') {
                Some((id, "pause")) => (id, true),
                Some((id, "resume")) => (id, false),
                _ => return error(StatusCode::NOT_FOUND, "Not Found"),
            };
            let Some(mut s) = q.storage.schedule(id) else {
                return not_found("schedule", id);
            };
            if s.is_paused != pause {
                s.is_paused = pause;
                if !pause {
                    match schedule::next_tick(&s.cron, delivery::now_ms()) {
                        Ok(next) => s.next_schedule_time = next,
                        Err(r) => return refused(r),
                    }
                }
                let seq = match q.storage.save_schedule(&s) {
                    Ok(seq) => seq,
                    Err(e) => return refused(store_refused(e)),
                };
                q.wait_durable(seq).await;
                q.wake.notify_one();
            }
            StatusCode::OK.into_response()
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    }
}

/// A schedule from a publish-shaped request with `Upstash-Cron`;
/// `Upstash-Schedule-Id` names it (replacing the schedule of that id).
async fn create_schedule(q: Arc<Qstash>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let destination = {
        let rest = path.strip_prefix("/v2/schedules/").unwrap_or("");
        let mut d = decode_destination(rest);
        if let Some(query) = req.uri().query() {
            d.push('?');
            d.push_str(query);
        }
        d
    };
    let ip = caller_ip(&req);
    let (parts, body) = req.into_parts();
    let Some(cron) = parts
        .headers
        .get("upstash-cron")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "Upstash-Cron header is required");
    };
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = delivery::now_ms();
    let next = match schedule::next_tick(cron, now) {
        Ok(t) => t,
        Err(r) => return refused(r),
    };
    // Not-before means nothing for a template; its delay applies to each tick.
    let mut headers = parts.headers.clone();
    headers.remove("upstash-not-before");
    // A group's schedule keeps the group's name and fans out at each tick, to the
    // endpoints the group has then.
    let group = if message::is_url(&destination) || !url_group::valid_name(&destination) {
        None
    } else {
        match q.storage.url_group(&destination) {
            Some(g) => Some(g),
            None => return not_found("url group", &destination),
        }
    };
    let template_url = group
        .as_ref()
        .and_then(|g| g.endpoints.first())
        .map_or(destination.as_str(), |e| e.url.as_str());
    let mut publish = match Message::from_publish(template_url, &headers, body, &q.config, now, &ip)
    {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    publish.message.url_group = group.map(|g| g.name);
    // `Upstash-Queue-Name`: each tick's messages wait their turn in that queue.
    if let Some(name) = parts
        .headers
        .get("upstash-queue-name")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        if !url_group::valid_name(name) {
            return error(StatusCode::BAD_REQUEST, "invalid Upstash-Queue-Name");
        }
        if let Err(r) = q.ensure_queue(name, now).await {
            return refused(r);
        }
        publish.message.queue_name = Some(name.to_string());
    }
    let id = match parts
        .headers
        .get("upstash-schedule-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(id) if id.len() <= 256 && !id.contains('/') => id.to_string(),
        Some(_) => return error(StatusCode::BAD_REQUEST, "invalid Upstash-Schedule-Id"),
        None => message::new_id("scd_"),
    };
    let created_at = q.storage.schedule(&id).map_or(now, |old| old.created_at);
    let template = publish.message;
    let s = schedule::Schedule {
        schedule_id: id.clone(),
        cron: cron.to_string(),
        delay_ms: template.not_before.saturating_sub(now),
        template,
        created_at,
        is_paused: false,
        last_schedule_time: None,
        next_schedule_time: next,
    };
    let seq = match q.storage.save_schedule(&s) {
        Ok(seq) => seq,
        Err(e) => return refused(store_refused(e)),
    };
    q.wait_durable(seq).await;
    q.wake.notify_one();
    axum::Json(json!({ "scheduleId": id })).into_response()
}
