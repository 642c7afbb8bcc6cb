//! The delivery loop: takes due messages from the keyspace, sends each to its
//! destination with a fresh `Upstash-Signature`, and on the answer removes it
//! (2xx), schedules a retry with backoff, or moves it to the dead-letter queue
//! once its retries are used up. Callbacks are messages too, so they are signed,
//! retried and persisted the same way.
//!
//! At least once: a message stays stored until its destination answered
//! 2xx. While it is being delivered its next attempt is pushed past the
//! delivery's timeout, so a restart in the middle delivers it again.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use super::events::State;
use super::lanes::{Lane, Next};
use super::message::{new_id, Message};
use super::schedule::next_tick;
use super::storage::DeadLetter;
use super::{signature, Qstash};
pub use tidewire_store::clock::now_ms;

/// Beyond a delivery's own timeout, how long its lease lasts.
const LEASE_MARGIN_MS: u64 = 5_000;
/// Longest the loop sleeps without looking at the queue (a publish wakes it).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Bytes of a destination's response kept for callbacks and the DLQ.
const MAX_RESPONSE_KEPT: usize = 256 * 1024;
/// `Upstash-NonRetryable-Error: true` with this status sends a message straight
/// to the DLQ.
const NON_RETRYABLE_STATUS: u16 = 489;
/// Schedules fired per pass of the loop (the rest on the next pass).
const SCHEDULES_PER_PASS: usize = 100;
/// How long a firing's deduplication id is kept: past any restart's catch-up.
const SCHEDULE_DEDUP_SECS: u64 = 86_400;

pub async fn run(q: Arc<Qstash>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(q.config.parallelism.max(1)));
    // Nothing is there to deliver (and the store refuses commands) until the
    // dataset is loaded.
    while q.store.loading.load(std::sync::atomic::Ordering::Acquire) {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.changed() => {}
        }
    }
    q.storage.requeue_in_flight();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        fire_schedules(&q, now);
        let free = slots.available_permits();
        // Due entries handled this pass (delivered, moved into their queue, or
        // dropped): while there are some, the next pass comes at once.
        let mut progressed = 0;
        // When a lane held back by its rate may start again.
        let mut rate_free_at = None;
        if free > 0 {
            for id in q.storage.claim_due(now, free) {
                progressed += 1;
                // Only this loop takes slots, so one is free for each id claimed.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some(m) = q.storage.get(&id) else {
                    // A schedule entry whose message is gone (cancelled meanwhile).
                    q.storage.cancel(&id);
                    continue;
                };
                if let Some(lane) = Lane::of(&m) {
                    // Its time has come: now it waits for its lane's turn; a
                    // deleted queue's messages go with it.
                    if q.storage.lane(&lane).is_some() {
                        q.storage.join(&lane, &id);
                    } else {
                        q.storage.cancel(&id);
                    }
                    continue;
                }
                q.storage
                    .reschedule(&id, now + m.timeout_secs * 1000 + LEASE_MARGIN_MS);
                spawn_delivery(&q, m, permit);
            }
            let (started, rate_wait) = start_waiting(&q, &slots);
            progressed += started;
            rate_free_at = rate_wait.map(|ms| now + ms);
        }
        let wait = if progressed > 0 && slots.available_permits() > 0 {
            Duration::ZERO
        } else {
            let next = [
                q.storage.next_due(),
                q.storage.next_schedule_due(),
                rate_free_at,
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t > now => Duration::from_millis(t - now).min(IDLE_WAIT),
                // Due now but every slot is busy: a finished delivery wakes us.
                Some(_) => IDLE_WAIT,
                None => IDLE_WAIT,
            }
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = q.wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}

fn spawn_delivery(q: &Arc<Qstash>, m: Message, permit: tokio::sync::OwnedSemaphorePermit) {
    let q = q.clone();
    q.in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        deliver(&q, m).await;
        q.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        drop(permit);
        q.wake.notify_one();
    });
}

/// Starts the head of every unpaused lane with messages waiting while
/// it and the loop have free slots: how many it started, and the soonest a lane
/// held back by its rate may start again (ms from now).
fn start_waiting(q: &Arc<Qstash>, slots: &Arc<Semaphore>) -> (usize, Option<u64>) {
    let mut started = 0;
    let mut rate_wait: Option<u64> = None;
    for (lane, settings) in q.storage.ready_lanes() {
        if settings.paused {
            continue;
        }
        while slots.available_permits() > 0 {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                return (started, rate_wait);
            };
            match q.storage.start_next(&lane, &settings) {
                Next::Started(m) => {
                    started += 1;
                    spawn_delivery(q, *m, permit);
                }
                Next::Full => break,
                Next::Empty => {
                    q.storage.retire_if_empty(&lane);
                    break;
                }
                Next::RateLimited(ms) => {
                    rate_wait = Some(rate_wait.map_or(ms, |w| w.min(ms)));
                    break;
                }
            }
        }
    }
    (started, rate_wait)
}

/// Publishes the firing of every schedule whose tick has come, and records its
/// next tick.
fn fire_schedules(q: &Qstash, now: u64) {
    for (id, tick) in q.storage.due_schedules(now, SCHEDULES_PER_PASS) {
        let Some(mut s) = q.storage.schedule(&id) else {
            q.storage.delete_schedule(&id);
            continue;
        };
        if s.is_paused {
            // Saving a paused schedule takes it out of the due set.
            let _ = q.storage.save_schedule(&s);
            continue;
        }
        let group = s
            .template
            .url_group
            .as_deref()
            .and_then(|g| q.storage.url_group(g));
        let mut published = true;
        for firing in s.firings(group.as_ref(), tick, now) {
            let dedup = format!("schedule:{id}:{tick}:{}", firing.url);
            if let Err(e) = q
                .storage
                .enqueue_dedup_for(&firing, Some(&dedup), SCHEDULE_DEDUP_SECS)
            {
                // The tick stays due: the next pass tries again (its deduplication
                // id keeps the endpoints already published from a second copy).
                tracing::warn!(schedule = %id, error = %e, "qstash: a schedule's tick could not be published");
                published = false;
            }
        }
        if !published {
            continue;
        }
        s.last_schedule_time = Some(tick);
        match next_tick(&s.cron, now) {
            Ok(next) => s.next_schedule_time = next,
            // A pattern with no tick left (its year is past) stops.
            Err(_) => s.is_paused = true,
        }
        let _ = q.storage.save_schedule(&s);
        q.wake.notify_one();
    }
}

/// What the destination answered, kept for callbacks and the DLQ.
struct Answer {
    status: Option<u16>,
    header: std::collections::BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    non_retryable: bool,
}

impl Answer {
    /// What went wrong, as the events log shows it.
    fn error(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(1024)]);
        match self.status {
            Some(s) => format!("{s} {body}"),
            None => body.into_owned(),
        }
    }
}

async fn deliver(q: &Qstash, mut m: Message) {
    q.storage.record(State::Active, &m, now_ms(), Value::Null);
    let answer = attempt(q, &m).await;
    if answer.status.is_some_and(|s| (200..300).contains(&s)) {
        q.storage.complete(&m);
        crate::metrics::qstash_attempt("delivered");
        q.storage
            .record(State::Delivered, &m, now_ms(), Value::Null);
        if let Some(url) = m.callback.clone() {
            enqueue_callback(q, &m, &url, &answer, None);
        }
        return;
    }
    m.retried += 1;
    if m.retried > m.max_retries || answer.non_retryable {
        let letter = DeadLetter {
            dlq_id: new_id("dlq_"),
            failed_at: now_ms(),
            response_status: answer.status,
            response_header: answer.header.clone(),
            response_body: String::from_utf8_lossy(&answer.body).into_owned(),
            message: m.clone(),
        };
        q.storage.bury(&letter);
        crate::metrics::qstash_attempt("dead_lettered");
        q.storage.record(
            State::Failed,
            &m,
            letter.failed_at,
            json!({ "error": answer.error(), "dlqId": letter.dlq_id }),
        );
        tracing::info!(message = %m.message_id, url = %m.url, status = ?answer.status,
            "qstash: message moved to the dead-letter queue");
        if let Some(url) = m.failure_callback.clone() {
            enqueue_callback(q, &m, &url, &answer, Some(&letter.dlq_id));
        }
        return;
    }
    let next = now_ms().saturating_add(m.retry_delay_ms());
    q.storage.retry_later(&m, next);
    crate::metrics::qstash_attempt("retrying");
    q.storage.record(
        State::Error,
        &m,
        now_ms(),
        json!({ "error": answer.error(), "nextDeliveryTime": next }),
    );
}

/// One HTTP request to the destination.
async fn attempt(q: &Qstash, m: &Message) -> Answer {
    let now = now_ms();
    let method = reqwest::Method::from_bytes(m.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let signature = signature::sign(
        &q.keys.current,
        &m.url,
        &m.body,
        now / 1000,
        &new_id("jwt_"),
    );
    let mut req = q
        .http
        .request(method, &m.url)
        .timeout(Duration::from_secs(m.timeout_secs.max(1)))
        .header("Upstash-Signature", signature)
        .header("Upstash-Message-Id", &m.message_id)
        .header("Upstash-Retried", m.retried.to_string())
        .header("User-Agent", "Upstash-QStash")
        .body(m.body.clone());
    if let Some(s) = &m.schedule_id {
        req = req.header("Upstash-Schedule-Id", s.as_str());
    }
    for (name, values) in &m.header {
        for v in values {
            req = req.header(name.as_str(), v.as_str());
        }
    }
    match req.send().await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut header = std::collections::BTreeMap::<String, Vec<String>>::new();
            for (k, v) in resp.headers() {
                if let Ok(v) = v.to_str() {
                    header
                        .entry(k.as_str().to_string())
                        .or_default()
                        .push(v.to_string());
                }
            }
            let non_retryable = status == NON_RETRYABLE_STATUS
                && resp
                    .headers()
                    .get("upstash-nonretryable-error")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let room = MAX_RESPONSE_KEPT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_RESPONSE_KEPT {
                    break;
                }
            }
            Answer {
                status: Some(status),
                header,
                body,
                non_retryable,
            }
        }
        Err(e) => Answer {
            status: None,
            header: Default::default(),
            body: format!("delivery failed: {}", error_chain(&e)).into_bytes(),
            non_retryable: false,
        },
    }
}

/// An error with its causes (`error sending request …: connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reports a delivery (or its final failure) to `url`, as QStash's callbacks do:
/// a JSON body with the response (base64) and the source message.
fn enqueue_callback(
    q: &Qstash,
    source: &Message,
    url: &str,
    answer: &Answer,
    dlq_id: Option<&str>,
) {
    let mut body = json!({
        "status": answer.status.unwrap_or(0),
        "header": answer.header,
        "body": STANDARD.encode(&answer.body),
        "retried": source.retried,
        "maxRetries": source.max_retries,
        "sourceMessageId": source.message_id,
        "url": source.url,
        "method": source.method,
        "sourceHeader": source.header,
        "sourceBody": STANDARD.encode(&source.body),
        "notBefore": source.not_before,
        "createdAt": source.created_at,
        "callerIP": source.caller_ip,
        "topicName": source.url_group.as_deref().unwrap_or(""),
        "endpointName": source.endpoint_name.as_deref().unwrap_or(""),
        "scheduleId": source.schedule_id.as_deref().unwrap_or(""),
    });
    if let Some(id) = dlq_id {
        body["dlqId"] = id.into();
    }
    let now = now_ms();
    let callback = Message {
        message_id: new_id("msg_"),
        url: url.to_string(),
        method: "POST".into(),
        header: [(
            "Content-Type".to_string(),
            vec!["application/json".to_string()],
        )]
        .into(),
        body: body.to_string().into_bytes(),
        max_retries: q.config.retries.min(q.config.max_retries),
        retried: 0,
        retry_delay: None,
        not_before: now,
        created_at: now,
        callback: None,
        failure_callback: None,
        timeout_secs: q.config.timeout_secs,
        caller_ip: source.caller_ip.clone(),
        labels: Vec::new(),
        source_message_id: Some(source.message_id.clone()),
        schedule_id: None,
        url_group: None,
        endpoint_name: None,
        queue_name: None,
        flow_control: None,
    };
    if let Err(e) = q.storage.enqueue(&callback, None) {
        tracing::warn!(source = %source.message_id, error = %e, "qstash: a callback could not be stored");
    }
    q.wake.notify_one();
}
