//! [`RedisConnectionStateStore`]: connection state on the engine, one hash per
//! connection, so that any node can resume a connection another node served.
//!
//! Expiry, and why it is split: a parked connection (disconnected, waiting for a
//! resume) is saved with a Redis TTL of the parked TTL, so the engine forgets it
//! even if no node ever calls [`ConnectionStateStore::expire`]; a live one is
//! saved without, so it is never forgotten while served. `expire` still does
//! what the trait promises against the caller's clock: it walks the
//! `parked-connections` index (parked ids by disconnection time) below the
//! cutoff and deletes each connection with a script that first checks, on the
//! connection's own hash, that it is still parked and since before the cutoff.
//! The hash is the truth and the index only a hint: a connection resumed or
//! re-parked since it was indexed is left alone.

use std::collections::HashMap;

use bytes::Bytes;
use tidewire_realtime::engine::{
    BoxFuture, ConnectionState, ConnectionStateStore, EngineError, EngineResult,
};
use tidewire_realtime::registry::ConnectionRecord;

use super::{arg, array, eval, int, run_one, Shared, PREFIX};

/// Writes a connection's hash whole: unconditionally (`save`) or only if its
/// current connectionKey is the one expected (`take`). ARGV: mode, expected key,
/// Redis TTL in ms (0: none, a live connection), then the fields, `key` and the
/// new connectionKey first (ARGV[4], ARGV[5]). A takeover whose new key is
/// already there is its own retry (after a lost reply) and succeeds again:
/// connectionKeys are unique per takeover, so no other writer has that key.
const WRITE: &str = r#"
if ARGV[1] == 'take' then
  local current = redis.call('HGET', KEYS[1], 'key')
  if current ~= ARGV[2] and current ~= ARGV[5] then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"#;

/// Deletes a connection's hash if its connectionKey is ARGV[1].
const REMOVE: &str = r#"
if redis.call('HGET', KEYS[1], 'key') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Deletes a connection's hash if it is parked since before ARGV[1] (ms).
const EXPIRE: &str = r#"
local since = redis.call('HGET', KEYS[1], 'disconnected')
if since and tonumber(since) < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Parked ids taken from the index per round of [`ConnectionStateStore::expire`].
const EXPIRE_BATCH: usize = 256;

/// Connection state by connectionId on the engine (see the module docs).
pub struct RedisConnectionStateStore {
    cluster: Shared,
    parked_ttl_ms: i64,
}

impl RedisConnectionStateStore {
    /// `parked_ttl_ms`: the Redis TTL of a parked connection's state, counted
    /// from when it is saved parked; give the TTL the hub passes to `expire`.
    pub fn new(cluster: Shared, parked_ttl_ms: i64) -> Self {
        RedisConnectionStateStore {
            cluster,
            parked_ttl_ms,
        }
    }

    fn key(connection_id: &str) -> String {
        format!("{PREFIX}connection:{connection_id}")
    }

    fn index() -> String {
        format!("{PREFIX}parked-connections")
    }

    /// Writes `state` (`expected`: only over that connectionKey) and keeps the
    /// parked index in step; whether it was written.
    async fn write(&self, expected: Option<&str>, state: &ConnectionState) -> EngineResult<bool> {
        let record = &state.record;
        let parked_ttl = match record.disconnected_ms {
            Some(_) => self.parked_ttl_ms.max(1),
            None => 0,
        };
        let mut args = vec![
            arg(if expected.is_some() { "take" } else { "save" }),
            arg(expected.unwrap_or_default()),
            arg(parked_ttl.to_string()),
        ];
        let mut field = |name: &'static str, value: String| {
            args.push(Bytes::from_static(name.as_bytes()));
            args.push(arg(value));
        };
        // `key` first: the script reads the new connectionKey at ARGV[5].
        field("key", record.connection_key.clone());
        field("key_name", record.key_name.clone());
        field("connected", record.connected_ms.to_string());
        field("node", state.node.clone());
        if let Some(client) = &record.client_id {
            field("client", client.clone());
        }
        if let Some(since) = record.disconnected_ms {
            field("disconnected", since.to_string());
        }
        if let Some(serial) = state.msg_serial {
            field("serial", serial.to_string());
        }
        let keys = [Self::key(&record.connection_id)];
        let written = int(&eval(&self.cluster, WRITE, &keys, args, true).await?)? == 1;
        if written {
            self.index_update(&record.connection_id, record.disconnected_ms)
                .await?;
        }
        Ok(written)
    }

    /// Adds a parked connection to the index, or drops a live one from it.
    async fn index_update(
        &self,
        connection_id: &str,
        parked_since: Option<i64>,
    ) -> EngineResult<()> {
        let index = Self::index();
        let argv = match parked_since {
            Some(since) => vec![
                arg("ZADD"),
                arg(index.as_str()),
                arg(since.to_string()),
                arg(connection_id),
            ],
            None => vec![arg("ZREM"), arg(index.as_str()), arg(connection_id)],
        };
        run_one(&self.cluster, Some(&index), argv, true)
            .await
            .map(drop)
    }
}

/// A connection's state from its hash's fields (`HGETALL`'s reply).
fn parse_state(
    connection_id: &str,
    reply: Vec<tidewire_resp::Reply>,
) -> EngineResult<ConnectionState> {
    let mut fields = HashMap::new();
    let mut items = reply.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        fields.insert(super::text(name)?, super::text(value)?);
    }
    let number = |name: &str, value: &str| {
        value.parse::<i64>().map_err(|_| {
            EngineError(format!(
                "connection {connection_id}: {name} is not a number"
            ))
        })
    };
    let required = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError(format!("connection {connection_id}: no {name}")))
    };
    Ok(ConnectionState {
        record: ConnectionRecord {
            connection_id: connection_id.to_owned(),
            connection_key: required("key")?,
            client_id: fields.get("client").cloned(),
            key_name: required("key_name")?,
            connected_ms: number("connected", &required("connected")?)?,
            disconnected_ms: fields
                .get("disconnected")
                .map(|v| number("disconnected", v))
                .transpose()?,
        },
        msg_serial: fields
            .get("serial")
            .map(|v| number("serial", v))
            .transpose()?,
        node: required("node")?,
    })
}

impl ConnectionStateStore for RedisConnectionStateStore {
    fn save(&self, state: ConnectionState) -> BoxFuture<'_, EngineResult<()>> {
        Box::pin(async move { self.write(None, &state).await.map(drop) })
    }

    fn load<'a>(
        &'a self,
        connection_id: &'a str,
    ) -> BoxFuture<'a, EngineResult<Option<ConnectionState>>> {
        Box::pin(async move {
            let key = Self::key(connection_id);
            let reply = run_one(
                &self.cluster,
                Some(&key),
                vec![arg("HGETALL"), arg(key.as_str())],
                true,
            )
            .await?;
            let fields = array(reply)?;
            if fields.is_empty() {
                return Ok(None);
            }
            parse_state(connection_id, fields).map(Some)
        })
    }

    fn take_over<'a>(
        &'a self,
        expected_key: &'a str,
        state: ConnectionState,
    ) -> BoxFuture<'a, EngineResult<bool>> {
        Box::pin(async move { self.write(Some(expected_key), &state).await })
    }

    fn remove<'a>(
        &'a self,
        connection_id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, EngineResult<bool>> {
        Box::pin(async move {
            let keys = [Self::key(connection_id)];
            // Not retried: after a lost reply a retry would find nothing and
            // say "not removed" of what was.
            let removed =
                int(&eval(&self.cluster, REMOVE, &keys, vec![arg(key)], false).await?)? == 1;
            if removed {
                self.index_update(connection_id, None).await?;
            }
            Ok(removed)
        })
    }

    fn expire(&self, now_ms: i64, ttl_ms: i64) -> BoxFuture<'_, EngineResult<usize>> {
        Box::pin(async move {
            let cutoff = now_ms.saturating_sub(ttl_ms);
            let index = Self::index();
            let mut expired = 0;
            loop {
                let argv = vec![
                    arg("ZRANGEBYSCORE"),
                    arg(index.as_str()),
                    arg("-inf"),
                    arg(format!("({cutoff}")),
                    arg("LIMIT"),
                    arg("0"),
                    arg(EXPIRE_BATCH.to_string()),
                ];
                let ids = array(run_one(&self.cluster, Some(&index), argv, true).await?)?;
                let ids: Vec<String> =
                    ids.into_iter().map(super::text).collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    return Ok(expired);
                }
                // One script per connection: their keys are in different slots.
                for id in &ids {
                    let keys = [Self::key(id)];
                    let args = vec![arg(cutoff.to_string())];
                    expired += usize::from(
                        int(&eval(&self.cluster, EXPIRE, &keys, args, true).await?)? == 1,
                    );
                }
                let mut forget = vec![arg("ZREM"), arg(index.as_str())];
                forget.extend(ids.iter().map(|id| arg(id.as_str())));
                run_one(&self.cluster, Some(&index), forget, true).await?;
                if ids.len() < EXPIRE_BATCH {
                    return Ok(expired);
                }
            }
        })
    }
}
