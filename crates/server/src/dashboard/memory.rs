//! Memory by key prefix, sampled as RedisInsight's analysis does: SCAN a bounded
//! number of keys, `MEMORY USAGE` each, group them by their first one or two
//! `:`-separated segments, and scale the sample's figures by `DBSIZE / sample` to
//! estimate the whole keyspace. A sample, not a census: the page says how many
//! keys it looked at.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{api_error, args, ok, read_err, DashState, Peer};

/// Keys sampled when the request does not say.
const DEFAULT_SAMPLE: usize = 2000;
/// Most keys one analysis samples.
const MAX_SAMPLE: usize = 20_000;
/// Most prefixes returned (the largest first).
const MAX_PREFIXES: usize = 200;
/// Keys asked about per batch of `MEMORY USAGE` calls.
const BATCH: usize = 500;

#[derive(Deserialize)]
pub(super) struct MemoryQuery {
    sample: Option<usize>,
    /// How many leading segments make a prefix: 1 or 2.
    depth: Option<usize>,
}

/// The group of `key`: its first `depth` `:`-separated segments, each followed by
/// the separator (`user:` or `user:profile:`); a key with fewer segments than
/// that groups under its own leading segments, and one without `:` under `(no
/// prefix)`.
fn prefix_of(key: &str, depth: usize) -> String {
    let parts: Vec<&str> = key.split(':').collect();
    if parts.len() < 2 {
        return "(no prefix)".into();
    }
    // The last segment is the key's own name, never part of its prefix.
    let take = depth.min(parts.len() - 1);
    let mut p = parts[..take].join(":");
    p.push(':');
    p
}

#[derive(Default)]
struct Group {
    keys: u64,
    bytes: u64,
}

pub(super) async fn by_prefix(
    State(st): State<Arc<DashState>>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Query(q): Query<MemoryQuery>,
) -> Response {
    let s = session_or_401!(st, headers);
    let limit = q.sample.unwrap_or(DEFAULT_SAMPLE).clamp(1, MAX_SAMPLE);
    let depth = q.depth.unwrap_or(1).clamp(1, 2);
    let (keys, complete) = match st.scan_sample(&s, &peer, None, None, limit) {
        Ok(r) => r,
        Err(e) => return read_err(&e),
    };
    let dbsize = st
        .read_one(&s, &peer, args(&[b"DBSIZE"]))
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(keys.len() as u64);
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut sampled_bytes = 0u64;
    let mut sampled = 0u64;
    for chunk in keys.chunks(BATCH) {
        let cmds: Vec<_> = chunk
            .iter()
            .map(|k| args(&[b"MEMORY", b"USAGE", k.as_bytes()]))
            .collect();
        for (k, r) in chunk.iter().zip(st.read_many(&s, &peer, &cmds)) {
            // A key that expired or was deleted since the SCAN answers nil.
            let tidewire_resp::Reply::Int(n) = r else {
                continue;
            };
            let n = n.max(0) as u64;
            let g = groups.entry(prefix_of(k, depth)).or_default();
            g.keys += 1;
            g.bytes += n;
            sampled += 1;
            sampled_bytes += n;
        }
    }
    // Every key seen: the figures are exact. Otherwise scaled to the keyspace.
    let factor = if complete || sampled == 0 {
        1.0
    } else {
        dbsize as f64 / sampled as f64
    };
    let mut list: Vec<(String, Group)> = groups.into_iter().collect();
    list.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(&b.0)));
    let total_prefixes = list.len();
    let prefixes: Vec<Value> = list
        .into_iter()
        .take(MAX_PREFIXES)
        .map(|(p, g)| {
            json!({
                "prefix": p,
                "keys": g.keys,
                "bytes": g.bytes,
                "share": if sampled_bytes > 0 { g.bytes as f64 / sampled_bytes as f64 } else { 0.0 },
                "est_keys": (g.keys as f64 * factor).round() as u64,
                "est_bytes": (g.bytes as f64 * factor).round() as u64,
            })
        })
        .collect();
    ok(json!({
        "sampled": sampled,
        "dbsize": dbsize,
        "complete": complete,
        "depth": depth,
        "factor": factor,
        "sampled_bytes": sampled_bytes,
        "est_total_bytes": (sampled_bytes as f64 * factor).round() as u64,
        "total_prefixes": total_prefixes,
        "prefixes": prefixes,
    }))
}

#[cfg(test)]
mod tests {
    use super::prefix_of;

    #[test]
    fn prefixes() {
        assert_eq!(prefix_of("user:1:profile", 1), "user:");
        assert_eq!(prefix_of("user:1:profile", 2), "user:1:");
        assert_eq!(prefix_of("user:1", 2), "user:");
        assert_eq!(prefix_of("plain", 1), "(no prefix)");
        assert_eq!(prefix_of(":x", 1), ":");
    }
}
