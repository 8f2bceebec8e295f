//! [`SessionStore`]: where session fields live, and the two stores we ship.
//!
//! A store knows nothing about cookies or HTTP. It keeps, per [`SessionId`],
//! a map of string fields that expires after a TTL, and offers the few
//! operations the session layer needs, each atomic and each a single round
//! trip to the backend. Both stores pass the same behaviour suite
//! (`tests/store_suite/`), so the app can switch between them by one setting.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemorySessionStore;
pub use self::redis::RedisSessionStore;
use crate::{SessionFields, SessionId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time. Passes by
    /// itself; the app answers 503 with `Retry-After`.
    #[error("the session store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The stored data cannot serve this operation: a field that is not an
    /// integer, an increment that would overflow, a key of another type, or
    /// bytes that are not UTF-8. Nothing was written.
    #[error("the stored session data is invalid for this operation")]
    InvalidData(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// True for [`StoreError::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A place that keeps session fields with an expiry.
///
/// Every method is atomic: a concurrent caller sees the state before it or
/// after it, never half of it. None of them creates a session except
/// [`SessionStore::create`], so a session that expired or was deleted stays
/// gone whatever requests were in flight when it went.
///
/// TTLs are whole seconds; a sub-second remainder rounds up.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// The fields of a live session, or `None` if it does not exist or expired.
    async fn load(&self, id: &SessionId) -> Result<Option<SessionFields>, StoreError>;

    /// Like [`SessionStore::load`], with the time left before the session
    /// expires (`None` inside if it has no expiry). One round trip.
    async fn load_with_ttl(
        &self,
        id: &SessionId,
    ) -> Result<Option<(SessionFields, Option<Duration>)>, StoreError>;

    /// Creates a session holding `fields`, only if `id` is not taken. Returns
    /// false, writing nothing, if it is. `fields` must not be empty.
    async fn create(
        &self,
        id: &SessionId,
        fields: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Sets `fields` and restarts the TTL, only if the session exists.
    /// Returns false, writing nothing, if it does not. `fields` must not be empty.
    async fn update(
        &self,
        id: &SessionId,
        fields: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Adds `by` to the integer `field` (a missing field counts as 0) and
    /// restarts the TTL, only if the session exists. Returns the new value,
    /// or `None` if the session does not exist.
    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError>;

    /// Restarts the TTL. Returns false if the session does not exist.
    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError>;

    /// Deletes the session. Returns whether it existed.
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Whether the backend answers right now (for `/readyz`).
    async fn check_health(&self) -> Result<(), StoreError>;
}

/// Whole seconds, rounding up, at least 1: `EXPIRE 0` would delete the key.
pub(crate) fn ttl_secs(ttl: Duration) -> u64 {
    let whole = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds_and_never_reach_zero() {
        assert_eq!(ttl_secs(Duration::from_secs(1800)), 1800);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }
}
