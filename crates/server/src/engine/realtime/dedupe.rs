//! [`RedisDedupeStore`]: idempotent-publish ids on the engine, one key per
//! (channel, id), all of a channel's in one slot.

use bytes::Bytes;
use tidewire_realtime::engine::{BoxFuture, DedupeStore, EngineResult};

use super::{arg, array, channel_tag, eval, int, run_one, scope, Shared, PREFIX};

/// Checks and records every id of one call in one step, in order. The key holds
/// when the id was recorded, and the check compares that with the caller's
/// clock, not the key's TTL: the window is the caller's (as in the in-process
/// store), and the TTL (the window, from when it is written) only cleans up.
const FIRST_SEEN: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local fresh = {}
for i, key in ipairs(KEYS) do
  local seen = redis.call('GET', key)
  if seen and tonumber(seen) >= now - window then
    fresh[i] = 0
  else
    redis.call('SET', key, ARGV[1], 'PX', math.max(window, 1))
    fresh[i] = 1
  end
end
return fresh
"#;

/// Message ids seen per channel within a window, on the engine: one `EVAL` per
/// call (so one round trip, atomic on the channel's master: of concurrent offers
/// of one id on any nodes exactly one is first).
pub struct RedisDedupeStore {
    cluster: Shared,
    window_ms: i64,
    /// [`PREFIX`] and the app's scope.
    prefix: String,
}

impl RedisDedupeStore {
    /// A store forgetting ids `window_ms` after they were recorded.
    pub fn new(cluster: Shared, window_ms: i64) -> Self {
        Self::scoped(cluster, window_ms, "")
    }

    /// [`RedisDedupeStore::new`] for the app `namespace` (see [`scope`]).
    pub fn scoped(cluster: Shared, window_ms: i64, namespace: &str) -> Self {
        RedisDedupeStore {
            cluster,
            window_ms,
            prefix: format!("{PREFIX}{}", scope(namespace)),
        }
    }

    fn keys(&self, channel: &str, ids: &[&str]) -> Vec<String> {
        let (prefix, tag) = (&self.prefix, channel_tag(channel));
        ids.iter()
            .map(|id| format!("{prefix}dedupe:{tag}:{id}"))
            .collect()
    }
}

impl DedupeStore for RedisDedupeStore {
    fn first_seen<'a>(
        &'a self,
        channel: &'a str,
        ids: &'a [&'a str],
        now_ms: i64,
    ) -> BoxFuture<'a, EngineResult<Vec<bool>>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let args = vec![arg(now_ms.to_string()), arg(self.window_ms.to_string())];
            // Not retried if the connection is lost after sending: a retry would
            // find its own record and call a new message a duplicate.
            let reply = eval(
                &self.cluster,
                FIRST_SEEN,
                &self.keys(channel, ids),
                args,
                false,
            )
            .await?;
            array(reply)?.iter().map(|r| Ok(int(r)? == 1)).collect()
        })
    }

    fn release<'a>(
        &'a self,
        channel: &'a str,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, EngineResult<()>> {
        Box::pin(async move {
            let keys = self.keys(channel, ids);
            let Some(first) = keys.first() else {
                return Ok(());
            };
            let mut argv = vec![Bytes::from_static(b"DEL")];
            argv.extend(keys.iter().map(|k| arg(k.as_str())));
            run_one(&self.cluster, Some(first), argv, true)
                .await
                .map(drop)
        })
    }
}
