//! The events log (`GET /v2/events`, the SDK's `logs()`): every state a message
//! passes through — `CREATED`, `ACTIVE` (a delivery started), `DELIVERED`,
//! `ERROR` (an attempt failed; `nextDeliveryTime` says when the next one is),
//! `FAILED` (moved to the DLQ), `CANCELED` — newest first. Kept in the stream
//! `qstash:events`, capped at the newest `[qstash] events` entries (`0`: no log).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tidewire_store::Reply;

use super::message::Message;
use super::storage::{argv, Storage};

const EVENTS: &str = "qstash:events";
/// Entries read per step while a filtered page fills.
const SCAN_STEP: usize = 256;

/// A message's states, as QStash names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Created,
    Active,
    Delivered,
    Error,
    Failed,
    Canceled,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Created => "CREATED",
            State::Active => "ACTIVE",
            State::Delivered => "DELIVERED",
            State::Error => "ERROR",
            State::Failed => "FAILED",
            State::Canceled => "CANCELED",
        }
    }
}

/// What a page of events is narrowed to (`GET /v2/events`'s query).
#[derive(Debug, Default)]
pub struct Filter {
    pub message_ids: Vec<String>,
    pub state: Option<String>,
    pub url: Option<String>,
    pub url_group: Option<String>,
    pub queue_name: Option<String>,
    pub schedule_id: Option<String>,
    /// Unix ms bounds, inclusive.
    pub from: Option<u64>,
    pub to: Option<u64>,
}

impl Filter {
    fn matches(&self, e: &Value) -> bool {
        let field = |name: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| e.get(name).and_then(Value::as_str) == Some(w))
        };
        let time = e.get("time").and_then(Value::as_u64).unwrap_or(0);
        (self.message_ids.is_empty()
            || e.get("messageId")
                .and_then(Value::as_str)
                .is_some_and(|id| self.message_ids.iter().any(|m| m == id)))
            && field("state", &self.state)
            && field("url", &self.url)
            && field("topicName", &self.url_group)
            && field("queueName", &self.queue_name)
            && field("scheduleId", &self.schedule_id)
            && self.from.is_none_or(|f| time >= f)
            && self.to.is_none_or(|t| time <= t)
    }
}

impl Storage {
    /// Appends `m`'s new `state`; `detail` adds fields (`error`,
    /// `nextDeliveryTime`).
    pub fn record(&self, state: State, m: &Message, now_ms: u64, detail: Value) {
        if self.events_kept == 0 {
            return;
        }
        let mut e = json!({
            "time": now_ms,
            "state": state.name(),
            "messageId": m.message_id,
            "url": m.url,
        });
        let optional = [
            ("topicName", &m.url_group),
            ("endpointName", &m.endpoint_name),
            ("queueName", &m.queue_name),
            ("scheduleId", &m.schedule_id),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                e[name] = json!(v);
            }
        }
        m.put_labels(&mut e);
        if state == State::Created {
            let header: serde_json::Map<String, Value> = m
                .header
                .iter()
                .map(|(k, v)| (k.clone(), json!(v.join(","))))
                .collect();
            e["header"] = Value::Object(header);
            e["body"] = json!(STANDARD.encode(&m.body));
        }
        if let Value::Object(extra) = detail {
            for (k, v) in extra {
                e[k] = v;
            }
        }
        self.run(&[vec![
            Bytes::from_static(b"XADD"),
            Bytes::from_static(EVENTS.as_bytes()),
            Bytes::from_static(b"MAXLEN"),
            Bytes::from_static(b"~"),
            Bytes::from(self.events_kept.to_string()),
            Bytes::from_static(b"*"),
            Bytes::from_static(b"e"),
            Bytes::from(e.to_string()),
        ]]);
    }

    /// Up to `count` events matching `filter`, newest first, from before the
    /// entry `cursor` (exclusive); and the cursor of the next page.
    pub fn events(
        &self,
        filter: &Filter,
        count: usize,
        cursor: Option<&str>,
    ) -> (Vec<Value>, Option<String>) {
        let mut out = Vec::new();
        let mut end = cursor.map_or("+".to_string(), |c| format!("({c}"));
        loop {
            let step = self.one(argv(&[
                "XREVRANGE",
                EVENTS,
                &end,
                "-",
                "COUNT",
                &SCAN_STEP.to_string(),
            ]));
            let entries = step.into_array().unwrap_or_default();
            let read = entries.len();
            for entry in entries {
                let Some((id, event)) = parse_entry(entry) else {
                    continue;
                };
                end = format!("({id}");
                if filter.matches(&event) {
                    out.push(event);
                    if out.len() == count {
                        return (out, Some(id));
                    }
                }
            }
            if read < SCAN_STEP {
                return (out, None);
            }
        }
    }
}

/// `[id, ["e", json]]` → (id, the event).
fn parse_entry(entry: Reply) -> Option<(String, Value)> {
    let mut parts = entry.into_array()?.into_iter();
    let id = match parts.next()? {
        Reply::Bulk(b) => String::from_utf8(b.to_vec()).ok()?,
        _ => return None,
    };
    let fields = parts.next()?.into_array()?;
    let json = match fields.get(1)? {
        Reply::Bulk(b) => serde_json::from_slice(b).ok()?,
        _ => return None,
    };
    Some((id, json))
}
