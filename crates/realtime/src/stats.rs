//! App statistics (`GET /stats`): per-minute records of what an app did, summed
//! into hours, days or months when asked, in Ably's flat `entries` form
//! (`messages.inbound.realtime.messages.count` …).
//!
//! Records come from the hub itself (every publish counts its messages and bytes,
//! by transport) and, in sandbox apps, from fixtures posted to `POST /stats`, as
//! Ably's sandbox takes them for SDK test suites. Kept in memory: minutes older
//! than [`KEEP_MINUTES`] are dropped as new ones arrive (fixtures are kept).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::error::{AblyError, ErrorCode};

/// The schema Ably names in stats records.
const SCHEMA: &str = "https://schemas.ably.com/json/app-stats-0.0.5.json";
/// Minutes of the hub's own counts kept (31 days).
const KEEP_MINUTES: i64 = 31 * 24 * 60;
const MINUTE_MS: i64 = 60_000;

/// Flat entries of one interval.
pub type Entries = BTreeMap<String, f64>;

/// The unit stats are summed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Month,
}

impl Unit {
    pub fn parse(s: &str) -> Result<Unit, AblyError> {
        match s {
            "minute" => Ok(Unit::Minute),
            "hour" => Ok(Unit::Hour),
            "day" => Ok(Unit::Day),
            "month" => Ok(Unit::Month),
            _ => Err(AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid unit {s:?}: expected minute, hour, day or month"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Month => "month",
        }
    }

    /// Start (ms) of the interval of this unit that holds `ms`.
    fn floor(self, ms: i64) -> i64 {
        match self {
            Unit::Minute => ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            Unit::Hour => ms.div_euclid(3_600_000) * 3_600_000,
            Unit::Day => ms.div_euclid(86_400_000) * 86_400_000,
            Unit::Month => {
                let (y, m, _) = civil_from_days(ms.div_euclid(86_400_000));
                days_from_civil(y, m, 1) * 86_400_000
            }
        }
    }

    /// Start (ms) of the interval after the one starting at `start`.
    fn next(self, start: i64) -> i64 {
        match self {
            Unit::Minute => start + MINUTE_MS,
            Unit::Hour => start + 3_600_000,
            Unit::Day => start + 86_400_000,
            Unit::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(86_400_000));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * 86_400_000
            }
        }
    }

    /// Ably's interval id: `2026-12-06:15:04`, `2026-12-06:15`, `2026-12-06`, `2026-12`.
    fn interval_id(self, start: i64) -> String {
        let (y, mo, d) = civil_from_days(start.div_euclid(86_400_000));
        let secs = start.rem_euclid(86_400_000) / 1000;
        let (h, mi) = (secs / 3600, secs % 3600 / 60);
        match self {
            Unit::Minute => format!("{y:04}-{mo:02}-{d:02}:{h:02}:{mi:02}"),
            Unit::Hour => format!("{y:04}-{mo:02}-{d:02}:{h:02}"),
            Unit::Day => format!("{y:04}-{mo:02}-{d:02}"),
            Unit::Month => format!("{y:04}-{mo:02}"),
        }
    }
}

/// What `GET /stats` asks for.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub unit: Unit,
    /// Earliest interval start included (ms).
    pub start: Option<i64>,
    /// Intervals starting at or before this (ms) are included.
    pub end: Option<i64>,
    pub forwards: bool,
    pub limit: usize,
    /// Where the previous page stopped: the next page starts with the interval
    /// after (forwards) or before (backwards) this interval start.
    pub cursor: Option<i64>,
}

impl StatsQuery {
    /// The unit's name, as in the `unit` parameter.
    pub fn unit_name(&self) -> &'static str {
        self.unit.name()
    }
}

/// A time parameter: epoch ms, or an interval id of any unit. As `start` it means
/// the interval's first ms, as `end` its last.
pub fn parse_time(s: &str, as_end: bool) -> Result<i64, AblyError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        AblyError::new(
            ErrorCode::InvalidParameterValue,
            format!("Invalid time {s:?}: expected ms since the epoch or an interval id"),
        )
    };
    let (unit, start) = parse_interval_id(s).ok_or_else(bad)?;
    Ok(if as_end { unit.next(start) - 1 } else { start })
}

/// `2026-12-06:15:04` (minute), `…:15` (hour), `2026-12-06` (day), `2026-12` (month).
fn parse_interval_id(s: &str) -> Option<(Unit, i64)> {
    let (date, time) = match s.split_once(':') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let mo: i64 = parts.next()?.parse().ok()?;
    let day = parts.next();
    if parts.next().is_some() || !(1..=12).contains(&mo) {
        return None;
    }
    let Some(day) = day else {
        return (time.is_none()).then(|| (Unit::Month, days_from_civil(y, mo, 1) * 86_400_000));
    };
    let d: i64 = day.parse().ok()?;
    if !(1..=31).contains(&d) {
        return None;
    }
    let base = days_from_civil(y, mo, d) * 86_400_000;
    let Some(time) = time else {
        return Some((Unit::Day, base));
    };
    let (h, mi) = match time.split_once(':') {
        Some((h, m)) => (h.parse::<i64>().ok()?, Some(m.parse::<i64>().ok()?)),
        None => (time.parse::<i64>().ok()?, None),
    };
    if !(0..24).contains(&h) || mi.is_some_and(|m| !(0..60).contains(&m)) {
        return None;
    }
    Some(match mi {
        Some(m) => (Unit::Minute, base + h * 3_600_000 + m * MINUTE_MS),
        None => (Unit::Hour, base + h * 3_600_000),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's method).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Where a publish came from, for the `messages.inbound.<transport>` entries.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Realtime = 0,
    Rest = 1,
}

/// The hub's own counts of one minute: [messages, bytes] by [`Transport`].
#[derive(Debug, Default, Clone, Copy)]
struct Counts([[u64; 2]; 2]);

impl Counts {
    /// The minute as Ably's flat entries.
    fn entries(&self) -> Entries {
        let mut e = Entries::new();
        let mut all = [0u64; 2];
        for (name, c) in [("realtime", self.0[0]), ("rest", self.0[1])] {
            if c[0] == 0 {
                continue;
            }
            e.insert(
                format!("messages.inbound.{name}.messages.count"),
                c[0] as f64,
            );
            e.insert(
                format!("messages.inbound.{name}.messages.data"),
                c[1] as f64,
            );
            all[0] += c[0];
            all[1] += c[1];
        }
        for prefix in ["messages.inbound.all", "messages.all"] {
            e.insert(format!("{prefix}.messages.count"), all[0] as f64);
            e.insert(format!("{prefix}.messages.data"), all[1] as f64);
        }
        e
    }
}

/// One app's statistics, by minute (start ms).
#[derive(Default)]
pub struct Stats {
    /// The hub's own counts, the oldest dropped past [`KEEP_MINUTES`].
    live: Mutex<BTreeMap<i64, Counts>>,
    /// Posted fixtures, kept as they are.
    fixtures: Mutex<BTreeMap<i64, Entries>>,
}

impl Stats {
    /// Counts a publish: `count` messages of `bytes` in all, from `transport`.
    /// Plain counters (named entries are made only when stats are read): this
    /// runs on every publish.
    pub fn record_inbound(&self, transport: Transport, count: usize, bytes: usize, now_ms: i64) {
        let minute = Unit::Minute.floor(now_ms);
        let mut minutes = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if !minutes.contains_key(&minute) {
            // A new minute: forget the oldest beyond what is kept.
            let horizon = minute - KEEP_MINUTES * MINUTE_MS;
            while let Some((&first, _)) = minutes.first_key_value() {
                if first >= horizon {
                    break;
                }
                minutes.pop_first();
            }
        }
        let c = &mut minutes.entry(minute).or_default().0[transport as usize];
        c[0] += count as u64;
        c[1] += bytes as u64;
    }

    /// Loads Ably sandbox fixtures: an array of `{intervalId: "2025-02-03:15:03",
    /// inbound: {realtime: {messages: {count, data}}}, outbound: …, …}`.
    pub fn load_fixtures(&self, body: &Value) -> Result<(), AblyError> {
        let bad = |m: &str| AblyError::new(ErrorCode::InvalidRequestBody, m.to_owned());
        let list = match body {
            Value::Array(a) => a.as_slice(),
            Value::Object(_) => std::slice::from_ref(body),
            _ => return Err(bad("expected an array of stats records")),
        };
        let mut parsed = Vec::new();
        for rec in list {
            let id = rec
                .get("intervalId")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a stats record needs an intervalId"))?;
            let (_, start) = parse_interval_id(id).ok_or_else(|| bad("invalid intervalId"))?;
            let mut entries = Entries::new();
            for (k, v) in rec.as_object().into_iter().flatten() {
                match k.as_str() {
                    "intervalId" | "unit" => {}
                    "inbound" | "outbound" => flatten_direction(k, v, &mut entries),
                    "persisted" => flatten(&format!("messages.{k}"), v, &mut entries),
                    _ => flatten(k, v, &mut entries),
                }
            }
            parsed.push((Unit::Minute.floor(start), entries));
        }
        let mut minutes = self.fixtures.lock().unwrap_or_else(|e| e.into_inner());
        for (start, entries) in parsed {
            let e = minutes.entry(start).or_default();
            for (k, v) in entries {
                *e.entry(k).or_default() += v;
            }
        }
        Ok(())
    }

    /// The records `q` asks for, and the cursor of the next page when there is one.
    pub fn query(&self, q: &StatsQuery, app_id: &str, now_ms: i64) -> (Vec<Value>, Option<i64>) {
        let start = q.start.unwrap_or(i64::MIN);
        let end = q.end.unwrap_or(now_ms);
        let mut buckets: BTreeMap<i64, Entries> = BTreeMap::new();
        let live: Vec<(i64, Entries)> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&m, c)| (m, c.entries()))
            .collect();
        let fixtures = self.fixtures.lock().unwrap_or_else(|e| e.into_inner());
        let sources = live.iter().map(|(m, e)| (m, e)).chain(fixtures.iter());
        for (&minute, entries) in sources {
            let bucket = q.unit.floor(minute);
            if bucket < q.unit.floor(start.max(i64::MIN / 2)) || bucket > end {
                continue;
            }
            match q.cursor {
                Some(c) if q.forwards && bucket <= c => continue,
                Some(c) if !q.forwards && bucket >= c => continue,
                _ => {}
            }
            let b = buckets.entry(bucket).or_default();
            for (k, v) in entries {
                *b.entry(k.clone()).or_default() += v;
            }
        }
        drop(fixtures);
        let ordered: Vec<(i64, Entries)> = if q.forwards {
            buckets.into_iter().collect()
        } else {
            buckets.into_iter().rev().collect()
        };
        let more = ordered.len() > q.limit;
        let page: Vec<(i64, Entries)> = ordered.into_iter().take(q.limit).collect();
        let next = match (more, page.last()) {
            (true, Some((last, _))) => Some(*last),
            _ => None,
        };
        let current = q.unit.floor(now_ms);
        let records = page
            .into_iter()
            .map(|(bucket, entries)| {
                let mut r = Map::new();
                r.insert("intervalId".into(), q.unit.interval_id(bucket).into());
                r.insert("unit".into(), q.unit.name().into());
                r.insert("schema".into(), SCHEMA.into());
                r.insert("appId".into(), app_id.into());
                if bucket == current {
                    r.insert(
                        "inProgress".into(),
                        Unit::Minute.interval_id(Unit::Minute.floor(now_ms)).into(),
                    );
                }
                let entries: Map<String, Value> =
                    entries.into_iter().map(|(k, v)| (k, number(v))).collect();
                r.insert("entries".into(), Value::Object(entries));
                Value::Object(r)
            })
            .collect();
        (records, next)
    }
}

/// Integers as integers, other numbers as they are.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// `inbound: {realtime: {messages: {count: 5}}}` → `messages.inbound.realtime.messages.count`,
/// also summed into `messages.inbound.all.…`.
fn flatten_direction(dir: &str, v: &Value, out: &mut Entries) {
    let Some(transports) = v.as_object() else {
        return;
    };
    for (transport, types) in transports {
        let mut own = Entries::new();
        flatten(&format!("messages.{dir}.{transport}"), types, &mut own);
        for (k, n) in own {
            if transport != "all" {
                let all = k.replacen(
                    &format!("messages.{dir}.{transport}."),
                    &format!("messages.{dir}.all."),
                    1,
                );
                *out.entry(all).or_default() += n;
            }
            *out.entry(k).or_default() += n;
        }
    }
}

/// Numbers of a nested object under dotted keys.
fn flatten(prefix: &str, v: &Value, out: &mut Entries) {
    match v {
        Value::Number(n) => {
            if let Some(n) = n.as_f64() {
                *out.entry(prefix.to_owned()).or_default() += n;
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(
        unit: Unit,
        start: Option<&str>,
        end: Option<&str>,
        forwards: bool,
        limit: usize,
    ) -> StatsQuery {
        StatsQuery {
            unit,
            start: start.map(|s| parse_time(s, false).unwrap()),
            end: end.map(|s| parse_time(s, true).unwrap()),
            forwards,
            limit,
            cursor: None,
        }
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-1000, 0, 59, 60, 365, 11_016, 20_000, 20_793] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            parse_time("2025-02-03:15:03", false).unwrap(),
            1_738_594_980_000
        );
        assert_eq!(parse_time("2025-02", true).unwrap(), 1_740_787_199_999);
        assert_eq!(Unit::Month.interval_id(1_738_594_980_000), "2025-02");
        assert!(parse_time("2025-13", false).is_err());
    }

    #[test]
    fn fixtures_sum_into_units_and_pages() {
        let s = Stats::default();
        s.load_fixtures(&json!([
            {"intervalId": "2025-02-03:15:03", "inbound": {"realtime": {"messages": {"count": 50, "data": 5000}}},
             "outbound": {"realtime": {"messages": {"count": 20, "data": 2000}}}},
            {"intervalId": "2025-02-03:15:04", "inbound": {"realtime": {"messages": {"count": 60, "data": 6000}}}},
            {"intervalId": "2025-02-03:15:05", "inbound": {"realtime": {"messages": {"count": 70, "data": 7000}}},
             "channels": {"peak": 50}}
        ]))
        .unwrap();
        let now = parse_time("2026-12-06:15:00", false).unwrap();
        let key = "messages.inbound.all.messages.count";
        let (recs, next) = s.query(
            &q(
                Unit::Minute,
                Some("2025-02-03:15:03"),
                Some("2025-02-03:15:05"),
                true,
                100,
            ),
            "app",
            now,
        );
        assert_eq!(recs.len(), 3);
        assert!(next.is_none());
        assert_eq!(recs[0]["entries"][key], 50);
        assert_eq!(recs[2]["entries"]["channels.peak"], 50);
        let (recs, _) = s.query(
            &q(Unit::Hour, None, Some("2025-02-03:18"), true, 100),
            "app",
            now,
        );
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["entries"][key], 180);
        assert_eq!(recs[0]["intervalId"], "2025-02-03:15");
        let mut page = q(Unit::Minute, None, Some("2025-02-03:15:05"), false, 1);
        let (recs, next) = s.query(&page, "app", now);
        assert_eq!(recs[0]["entries"][key], 70);
        page.cursor = next;
        let (recs, _) = s.query(&page, "app", now);
        assert_eq!(recs[0]["entries"][key], 60);
    }

    #[test]
    fn publishes_are_counted_in_the_current_interval() {
        let s = Stats::default();
        s.load_fixtures(&json!({"intervalId": "2025-02-03:15:03", "channels": {"peak": 5}}))
            .unwrap();
        let now = parse_time("2026-12-06:15:07", false).unwrap() + 1234;
        s.record_inbound(Transport::Rest, 2, 10, now);
        // The hub's own counts never push fixtures out.
        let old = s.query(
            &q(Unit::Month, Some("2025-02"), Some("2025-02"), true, 10),
            "app",
            now,
        );
        assert_eq!(old.0.len(), 1);
        let (recs, _) = s.query(&q(Unit::Hour, None, None, false, 10), "app", now);
        assert_eq!(
            recs[0]["entries"]["messages.inbound.rest.messages.count"],
            2
        );
        assert_eq!(recs[0]["inProgress"], "2026-12-06:15:07");
        assert_eq!(recs[0]["appId"], "app");
    }
}
