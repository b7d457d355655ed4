//! Tokens, rate limits, presence and last-seen times in Redis (fred), shared
//! by every node. Every command is bounded by a timeout; while Redis is down
//! fred reconnects by itself and calls fail fast with `unavailable`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use troupe_actors::limits::now_ms;
use troupe_actors::store::{EphemeralStore, StoreError, StoreResult, TokenInfo};

#[derive(Debug, thiserror::Error)]
#[error("redis {url} unreachable: {reason}")]
pub struct RedisError {
    pub url: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: String,
}

fn unavailable(e: fred::error::Error) -> StoreError {
    troupe_actors::metrics::STORE_ERRORS_PRESENCE.inc();
    StoreError::Unavailable {
        store: "redis",
        message: e.to_string(),
    }
}

/// A token bucket: refills `rate` a second up to `burst`; takes `cost` (0:
/// only looks) if it holds at least max(cost, 1). Returns 0 when it did,
/// else the milliseconds until it would (rounded up). Redis's clock is the
/// one every node shares.
const TOKEN_BUCKET: &str = r#"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local need = math.max(cost, 1)
local wait = 0
if tokens >= need then
  tokens = tokens - cost
else
  wait = math.max(1, math.ceil((need - tokens) / rate * 1000))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"#;

/// Heartbeat: `user\0node` members scored by their deadline (Redis's clock),
/// and when each was last renewed (KEYS[2]): the last seen of a user whose
/// node dies without saying goodbye.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], deadline, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], now)
end
return 1
"#;

/// Drops expired members (a node that died: their users' last seen becomes
/// the last heartbeat, unless a later one is known), then lists the live ones.
/// KEYS: online, heartbeats, last_seen.
const ONLINE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local at = tonumber(redis.call('HGET', KEYS[2], m))
  if at then
    local user = string.match(m, '^([^%z]*)')
    local seen = tonumber(redis.call('HGET', KEYS[3], user))
    if seen == nil or seen < at then
      redis.call('HSET', KEYS[3], user, at)
    end
    redis.call('HDEL', KEYS[2], m)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

impl RedisStore {
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisStore, RedisError> {
        let fail = |reason: String| RedisError {
            url: crate::db::redact(url),
            reason,
        };
        let config = Config::from_url(url).map_err(|e| fail(e.to_string()))?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            // Reconnect forever, quickly: Redis coming back must heal the node.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        tokio::time::timeout(timeout, client.init())
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(RedisStore {
            client,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// Fails fast while the connection is down (fred reconnects meanwhile),
    /// so nobody waits a command timeout per request during an outage.
    fn up(&self) -> StoreResult<()> {
        if self.client.is_connected() {
            Ok(())
        } else {
            troupe_actors::metrics::STORE_ERRORS_PRESENCE.inc();
            Err(StoreError::Unavailable {
                store: "redis",
                message: "not connected (reconnecting)".into(),
            })
        }
    }

    /// Does Redis answer? (For `/ready`.)
    pub async fn ping(&self) -> StoreResult<()> {
        self.up()?;
        self.client
            .get::<Option<String>, _>(self.key("ping"))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl EphemeralStore for RedisStore {
    async fn put_token(&self, token: &str, info: &TokenInfo) -> StoreResult<()> {
        self.up()?;
        let ttl = (info.expires_at - now_ms()).max(1);
        let value = serde_json::json!({
            "user_id": info.user_id,
            "username": info.username,
            "expires_at": info.expires_at,
            "parent": info.parent,
        })
        .to_string();
        self.client
            .set::<(), _, _>(
                self.key(&format!("token:{token}")),
                value,
                Some(Expiration::PX(ttl)),
                None,
                false,
            )
            .await
            .map_err(unavailable)
    }

    async fn token(&self, token: &str) -> StoreResult<Option<TokenInfo>> {
        self.up()?;
        let value: Option<String> = self
            .client
            .get(self.key(&format!("token:{token}")))
            .await
            .map_err(unavailable)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&value).unwrap_or_default();
        let info = TokenInfo {
            user_id: v["user_id"].as_i64().unwrap_or_default(),
            username: v["username"].as_str().unwrap_or_default().to_string(),
            expires_at: v["expires_at"].as_i64().unwrap_or_default(),
            parent: v["parent"].as_str().map(String::from),
        };
        Ok((info.expires_at > now_ms() && !info.username.is_empty()).then_some(info))
    }

    async fn revoke_token(&self, token: &str) -> StoreResult<()> {
        self.up()?;
        self.client
            .del::<(), _>(self.key(&format!("token:{token}")))
            .await
            .map_err(unavailable)
    }

    async fn rate_limit(
        &self,
        key: &str,
        burst: u32,
        per_second: f64,
        cost: u32,
    ) -> StoreResult<Option<Duration>> {
        self.up()?;
        let wait_ms: i64 = self
            .client
            .eval(
                TOKEN_BUCKET,
                vec![self.key(&format!("rate:{key}"))],
                vec![burst.to_string(), per_second.to_string(), cost.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    async fn set_last_seen(&self, user: &str, ts: i64) -> StoreResult<()> {
        self.up()?;
        self.client
            .hset::<(), _, _>(self.key("last_seen"), (user, ts))
            .await
            .map_err(unavailable)
    }

    async fn last_seen(&self, users: &[String]) -> StoreResult<HashMap<String, i64>> {
        self.up()?;
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let values: Vec<Option<i64>> = self
            .client
            .hmget(self.key("last_seen"), users.to_vec())
            .await
            .map_err(unavailable)?;
        Ok(users
            .iter()
            .zip(values)
            .filter_map(|(u, ts)| ts.map(|ts| (u.clone(), ts)))
            .collect())
    }

    async fn heartbeat(&self, node: &str, users: &[String], ttl: Duration) -> StoreResult<()> {
        self.up()?;
        if users.is_empty() {
            return Ok(());
        }
        let mut args = vec![ttl.as_millis().to_string()];
        args.extend(users.iter().map(|u| format!("{u}\0{node}")));
        self.client
            .eval::<i64, _, _, _>(
                HEARTBEAT,
                vec![self.key("online"), self.key("heartbeats")],
                args,
            )
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn offline(&self, node: &str, user: &str) -> StoreResult<()> {
        self.up()?;
        let member = format!("{user}\0{node}");
        self.client
            .zrem::<(), _, _>(self.key("online"), member.as_str())
            .await
            .map_err(unavailable)?;
        self.client
            .hdel::<(), _, _>(self.key("heartbeats"), member)
            .await
            .map_err(unavailable)
    }

    async fn online(&self) -> StoreResult<Vec<String>> {
        self.up()?;
        let members: Vec<String> = self
            .client
            .eval(
                ONLINE,
                vec![
                    self.key("online"),
                    self.key("heartbeats"),
                    self.key("last_seen"),
                ],
                Vec::<String>::new(),
            )
            .await
            .map_err(unavailable)?;
        let mut users: Vec<String> = members
            .into_iter()
            .filter_map(|m| m.split('\0').next().map(String::from))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }
}
