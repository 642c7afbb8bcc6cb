//! Routes of queues (`/v2/enqueue`, `/v2/queues`) and flow-control keys
//! (`/v2/flowControl`, `/v2/globalParallelism`): both are lanes ([`super::lanes`]).

use super::*;

/// `/v2/enqueue/<queue>/<destination>`: a publish whose messages wait their turn
/// in the queue.
pub(super) async fn enqueue(State(q): State<Arc<Qstash>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v2/enqueue/").unwrap_or("");
    let (name, dest) = rest.split_once('/').unwrap_or((rest, ""));
    if !url_group::valid_name(name) {
        return error(StatusCode::BAD_REQUEST, "invalid queue name");
    }
    let name = name.to_string();
    let mut destination = decode_destination(dest);
    if let Some(query) = req.uri().query() {
        destination.push('?');
        destination.push_str(query);
    }
    let ip = caller_ip(&req);
    let (parts, body) = req.into_parts();
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = delivery::now_ms();
    let mut publishes = match q.expand(&destination, &parts.headers, body, now, &ip) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    if let Err(r) = q.ensure_queue(&name, now).await {
        return refused(r);
    }
    for p in &mut publishes {
        p.message.queue_name = Some(name.clone());
    }
    match q.accept_all(&destination, publishes).await {
        Ok((status, reply)) => (status, axum::Json(reply)).into_response(),
        Err(r) => refused(r),
    }
}

pub(super) async fn list_queues(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .lanes(false)
        .iter()
        .map(|(lane, s)| s.queue_json(q.storage.lag(lane)))
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

pub(super) async fn get_queue(State(q): State<Arc<Qstash>>, Path(name): Path<String>) -> Response {
    let lane = Lane::Queue(name);
    match q.storage.lane(&lane) {
        Some(s) => axum::Json(s.queue_json(q.storage.lag(&lane))).into_response(),
        None => not_found("queue", lane.name()),
    }
}

/// `{"queueName","parallelism","paused"}`: creates or changes a queue.
pub(super) async fn upsert_queue(State(q): State<Arc<Qstash>>, body: Body) -> Response {
    let body = match read_body(&q, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (name, parallelism, paused) = match lanes::parse_upsert(&body) {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let now = delivery::now_ms();
    let lane = Lane::Queue(name);
    let mut s = q
        .storage
        .lane(&lane)
        .unwrap_or_else(|| LaneSettings::queue(lane.name(), now));
    if let Some(p) = parallelism {
        s.parallelism = p;
    }
    if let Some(p) = paused {
        s.paused = p;
    }
    s.updated_at = now;
    q.save_lane(&lane, &s).await
}

impl Qstash {
    /// Stores a lane's settings (durably), wakes the loop, answers 200.
    async fn save_lane(&self, lane: &Lane, s: &LaneSettings) -> Response {
        match self.storage.save_lane(lane, s) {
            Ok(seq) => {
                self.wait_durable(seq).await;
                self.wake.notify_one();
                StatusCode::OK.into_response()
            }
            Err(e) => refused(store_refused(e)),
        }
    }

    /// Changes a lane that exists (404 otherwise) and saves it.
    async fn change_lane(&self, lane: Lane, change: impl FnOnce(&mut LaneSettings)) -> Response {
        let what = match lane {
            Lane::Queue(_) => "queue",
            Lane::Flow(_) => "flow control key",
        };
        let Some(mut s) = self.storage.lane(&lane) else {
            return not_found(what, lane.name());
        };
        change(&mut s);
        s.updated_at = delivery::now_ms();
        self.save_lane(&lane, &s).await
    }
}

pub(super) async fn delete_queue(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
) -> Response {
    match q.storage.delete_lane(&Lane::Queue(name.clone())) {
        (true, seq) => {
            q.wait_durable(seq).await;
            StatusCode::OK.into_response()
        }
        (false, _) => not_found("queue", &name),
    }
}

pub(super) async fn pause_queue(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
) -> Response {
    q.change_lane(Lane::Queue(name), |s| s.paused = true).await
}

pub(super) async fn resume_queue(
    State(q): State<Arc<Qstash>>,
    Path(name): Path<String>,
) -> Response {
    q.change_lane(Lane::Queue(name), |s| s.paused = false).await
}

/// QStash's view of a flow-control key.
fn flow_json(q: &Qstash, lane: &Lane, s: &LaneSettings) -> Value {
    let (used, left) = q.storage.rate_used(lane);
    let period_ms = s.period_secs.max(1) * 1000;
    json!({
        "flowControlKey": lane.name(),
        "waitListSize": q.storage.lag(lane),
        "parallelismMax": s.parallelism,
        "parallelismCount": q.storage.in_flight(lane),
        "rateMax": s.rate,
        "rateCount": used,
        "ratePeriod": s.period_secs,
        "ratePeriodStart": if left > 0 { delivery::now_ms() + left - period_ms } else { 0 },
        "isPaused": s.paused,
        "isPinnedParallelism": s.pinned_parallelism,
        "isPinnedRate": s.pinned_rate,
    })
}

pub(super) async fn list_flows(State(q): State<Arc<Qstash>>) -> Response {
    let all: Vec<Value> = q
        .storage
        .lanes(true)
        .iter()
        .map(|(lane, s)| flow_json(&q, lane, s))
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

pub(super) async fn get_flow(State(q): State<Arc<Qstash>>, Path(key): Path<String>) -> Response {
    let lane = Lane::Flow(key);
    match q.storage.lane(&lane) {
        Some(s) => axum::Json(flow_json(&q, &lane, &s)).into_response(),
        None => not_found("flow control key", lane.name()),
    }
}

/// `POST /v2/flowControl/<key>/pause|resume|pin|unpin|resetRate`.
pub(super) async fn flow_action(
    State(q): State<Arc<Qstash>>,
    Path((key, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    let lane = Lane::Flow(key);
    let pairs = query_pairs(req.uri().query());
    let number = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
    };
    match action.as_str() {
        "pause" => q.change_lane(lane, |s| s.paused = true).await,
        "resume" => q.change_lane(lane, |s| s.paused = false).await,
        "pin" => {
            let limit = |n: u64| n.min(u64::from(lanes::MAX_PARALLELISM)) as u32;
            let (parallelism, rate, period) =
                (number("parallelism"), number("rate"), number("period"));
            q.change_lane(lane, |s| {
                if let Some(p) = parallelism {
                    s.parallelism = limit(p);
                    s.pinned_parallelism = true;
                }
                if let Some(r) = rate {
                    s.rate = limit(r);
                    s.pinned_rate = true;
                }
                if let Some(p) = period {
                    s.period_secs = p.max(1);
                    s.pinned_rate = true;
                }
            })
            .await
        }
        "unpin" => {
            let (parallelism, rate) = (flag("parallelism"), flag("rate"));
            q.change_lane(lane, |s| {
                s.pinned_parallelism &= !parallelism;
                s.pinned_rate &= !rate;
            })
            .await
        }
        "resetRate" => {
            if q.storage.lane(&lane).is_none() {
                return not_found("flow control key", lane.name());
            }
            q.storage.reset_rate(&lane);
            q.wake.notify_one();
            StatusCode::OK.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Deliveries in flight over all lanes and none, against the loop's slots.
pub(super) async fn global_parallelism(State(q): State<Arc<Qstash>>) -> Response {
    axum::Json(json!({
        "parallelismMax": q.config.parallelism,
        "parallelismCount": q.in_flight.load(std::sync::atomic::Ordering::Relaxed),
    }))
    .into_response()
}
