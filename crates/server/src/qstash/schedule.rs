//! Schedules: a message template published again at every tick of a cron
//! pattern (`Upstash-Cron`, five fields, UTC unless prefixed with
//! `CRON_TZ=<IANA zone>`). Each firing is an ordinary message with its own id,
//! retries and DLQ entry, carrying `Upstash-Schedule-Id`.
//!
//! A firing is published with the deduplication id `<schedule>:<tick>`, so a
//! restart between publishing it and recording the next tick cannot fire the
//! same tick twice. Ticks missed while the server was down fire once, at start.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::message::{new_id, Message, Refused};
use super::url_group::UrlGroup;

/// A schedule as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub schedule_id: String,
    pub cron: String,
    /// The message each tick publishes (its id, times and counts are per firing).
    pub template: Message,
    /// Added to each tick's time before delivery (`Upstash-Delay`).
    pub delay_ms: u64,
    pub created_at: u64,
    pub is_paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<u64>,
    /// The next tick (unix ms); meaningless while paused.
    pub next_schedule_time: u64,
}

/// The first tick of `cron` strictly after `after_ms`.
pub fn next_tick(cron: &str, after_ms: u64) -> Result<u64, Refused> {
    let bad = |e: String| Refused(400, format!("invalid cron expression {cron:?}: {e}"));
    let (zone, pattern) = match cron.trim().strip_prefix("CRON_TZ=") {
        Some(rest) => {
            let (zone, pattern) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("no pattern after CRON_TZ".into()))?;
            let zone = chrono_tz::Tz::from_str(zone)
                .map_err(|_| bad(format!("unknown time zone {zone}")))?;
            (zone, pattern.trim())
        }
        None => (chrono_tz::UTC, cron.trim()),
    };
    let parsed = croner::Cron::from_str(pattern).map_err(|e| bad(e.to_string()))?;
    let start = Utc
        .timestamp_millis_opt(after_ms as i64)
        .single()
        .ok_or_else(|| bad("time out of range".into()))?
        .with_timezone(&zone);
    let next = parsed
        .find_next_occurrence(&start, false)
        .map_err(|e| bad(e.to_string()))?;
    u64::try_from(next.timestamp_millis()).map_err(|_| bad("time out of range".into()))
}

impl Schedule {
    /// The messages the tick at `tick_ms` publishes: one, or one per endpoint of
    /// the URL group the schedule targets (`group`: that group as it is now; none
    /// left, nothing is published).
    pub fn firings(&self, group: Option<&UrlGroup>, tick_ms: u64, now_ms: u64) -> Vec<Message> {
        let one = |url: &str, endpoint: Option<&String>| {
            let mut m = self.template.clone();
            m.message_id = new_id("msg_");
            m.created_at = now_ms;
            m.not_before = tick_ms.max(now_ms) + self.delay_ms;
            m.retried = 0;
            m.schedule_id = Some(self.schedule_id.clone());
            m.url = url.to_string();
            m.endpoint_name = endpoint.cloned();
            m
        };
        match (&self.template.url_group, group) {
            (None, _) => vec![one(&self.template.url, None)],
            (Some(_), Some(g)) => g
                .endpoints
                .iter()
                .map(|e| one(&e.url, e.name.as_ref()))
                .collect(),
            (Some(_), None) => Vec::new(),
        }
    }

    /// QStash's view of a schedule.
    pub fn to_json(&self) -> Value {
        let t = &self.template;
        let mut v = json!({
            "scheduleId": self.schedule_id,
            "cron": self.cron,
            "createdAt": self.created_at,
            "destination": t.url_group.as_deref().unwrap_or(&t.url),
            "method": t.method,
            "header": t.header,
            "retries": t.max_retries,
            "isPaused": self.is_paused,
            "callerIP": t.caller_ip,
        });
        t.put_body(&mut v);
        t.put_labels(&mut v);
        if self.delay_ms > 0 {
            v["delay"] = json!(self.delay_ms / 1000);
        }
        if !self.is_paused {
            v["nextScheduleTime"] = json!(self.next_schedule_time);
        }
        if let Some(last) = self.last_schedule_time {
            v["lastScheduleTime"] = json!(last);
        }
        let optional: BTreeMap<&str, &Option<String>> = [
            ("callback", &t.callback),
            ("failureCallback", &t.failure_callback),
            ("retryDelayExpression", &t.retry_delay),
        ]
        .into();
        for (name, value) in optional {
            if let Some(value) = value {
                v[name] = json!(value);
            }
        }
        if let Some(queue) = &t.queue_name {
            v["queueName"] = json!(queue);
        }
        if let Some(f) = &t.flow_control {
            v["flowControlKey"] = json!(f.key);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_pattern_and_zone() {
        // 2026-01-01T00:00:30Z
        let t0 = 1_767_225_630_000;
        assert_eq!(next_tick("* * * * *", t0).unwrap(), 1_767_225_660_000);
        assert_eq!(
            next_tick("*/15 * * * *", t0).unwrap(),
            t0 - 30_000 + 15 * 60_000
        );
        // 04:00 in New York is 09:00 UTC in January.
        assert_eq!(
            next_tick("CRON_TZ=America/New_York 0 4 * * *", t0).unwrap(),
            t0 - 30_000 + 9 * 3_600_000
        );
        assert_eq!(
            next_tick("0 4 * * *", t0).unwrap(),
            t0 - 30_000 + 4 * 3_600_000
        );
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "CRON_TZ=Mars/Base * * * * *",
            "CRON_TZ=UTC",
        ] {
            assert_eq!(next_tick(bad, t0).unwrap_err().0, 400, "{bad:?}");
        }
    }
}
