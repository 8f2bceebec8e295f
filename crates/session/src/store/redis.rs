//! [`RedisSessionStore`]: sessions as Redis hashes, shared by every app node.

use std::time::Duration;

use async_trait::async_trait;
use redis_client::{RedisClientError, RedisService, WriteCondition};

use super::{SessionStore, StoreError, ttl_secs};
use crate::{SessionFields, SessionId};

/// Sessions as Redis hashes at `{key_prefix}{id}` (by default `sid_<id>`,
/// the NestJS design's layout), one field per attribute, with the key's TTL
/// as the session's idle timeout.
///
/// Each method is one round trip: see the table in the crate docs.
#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    /// The pooled client; shared with anything else that was handed a clone.
    redis: RedisService,
    /// Prepended to every id to make the key, e.g. `sid_`.
    key_prefix: String,
}

impl RedisSessionStore {
    /// A store writing keys `{key_prefix}{id}` through `redis`.
    pub fn new(redis: RedisService, key_prefix: impl Into<String>) -> Self {
        Self {
            redis,
            key_prefix: key_prefix.into(),
        }
    }

    /// The Redis key of a session: the one allocation per operation.
    pub fn key(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.key_prefix.len() + id.as_str().len());
        key.push_str(&self.key_prefix);
        key.push_str(id.as_str());
        key
    }

    /// The client this store uses.
    pub fn redis(&self) -> &RedisService {
        &self.redis
    }
}

impl From<RedisClientError> for StoreError {
    fn from(error: RedisClientError) -> Self {
        if error.is_unavailable() {
            Self::Unavailable(Box::new(error))
        } else {
            Self::InvalidData(Box::new(error))
        }
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionFields>, StoreError> {
        let fields = self.redis.hash_get_all(&self.key(id)).await?;
        // Redis has no empty hashes: no fields means no session.
        Ok((!fields.is_empty()).then_some(fields))
    }

    async fn load_with_ttl(
        &self,
        id: &SessionId,
    ) -> Result<Option<(SessionFields, Option<Duration>)>, StoreError> {
        let found = self.redis.hash_get_all_with_ttl(&self.key(id)).await?;
        Ok(found.map(|(fields, ttl_ms)| (fields, ttl_ms.map(Duration::from_millis))))
    }

    async fn create(
        &self,
        id: &SessionId,
        fields: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let written = self
            .redis
            .hash_write(
                &self.key(id),
                fields,
                ttl_secs(ttl),
                WriteCondition::CreateIfAbsent,
            )
            .await?;
        Ok(written)
    }

    async fn update(
        &self,
        id: &SessionId,
        fields: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let written = self
            .redis
            .hash_write(
                &self.key(id),
                fields,
                ttl_secs(ttl),
                WriteCondition::UpdateIfPresent,
            )
            .await?;
        Ok(written)
    }

    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let value = self
            .redis
            .hash_incr_if_exists(&self.key(id), field, by, ttl_secs(ttl))
            .await?;
        Ok(value)
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.redis.expire(&self.key(id), ttl_secs(ttl)).await?)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.redis.delete(&self.key(id)).await?)
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(self.redis.ping().await?)
    }
}
