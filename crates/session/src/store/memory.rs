//! [`MemorySessionStore`]: sessions in this process, for one node and for tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{SessionStore, StoreError, ttl_secs};
use crate::{SessionFields, SessionId};

/// Sessions in a map inside this process.
///
/// Same behaviour as [`super::RedisSessionStore`], checked by the same suite,
/// but NOT shared between app nodes: behind a load balancer each node would
/// see its own sessions. Use it for a single node, for development, and for
/// fast tests.
///
/// Expired sessions are invisible at once and their memory is reclaimed by a
/// sweep every [`MemorySessionStore::SWEEP_EVERY`] writes, so memory stays
/// bounded by the sessions alive within one TTL.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    /// Every session, live or expired-but-not-yet-swept, by id.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Entry>,
    /// Writes since the last sweep.
    writes_since_sweep: usize,
}

#[derive(Debug)]
struct Entry {
    fields: SessionFields,
    expires_at: Instant,
}

/// The failure the memory store reports where Redis would raise an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidField(&'static str);

impl MemorySessionStore {
    /// How many writes pass between two sweeps of expired sessions.
    pub const SWEEP_EVERY: usize = 1024;

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the live entry for `id`, if any. Never holds the lock
    /// across an `.await`: there is none inside.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock cannot leave an entry half-written
        // (every mutation below is a single insert/remove), so a poisoned
        // lock is safe to keep using.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }
}

impl State {
    fn live(&mut self, id: &SessionId, now: Instant) -> Option<&mut Entry> {
        if self
            .sessions
            .get(id)
            .is_some_and(|entry| entry.expires_at <= now)
        {
            self.sessions.remove(id);
        }
        self.sessions.get_mut(id)
    }

    fn count_write(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= MemorySessionStore::SWEEP_EVERY {
            self.writes_since_sweep = 0;
            self.sessions.retain(|_, entry| entry.expires_at > now);
        }
    }
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    now + Duration::from_secs(ttl_secs(ttl))
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionFields>, StoreError> {
        let now = Instant::now();
        Ok(self.with_state(|state| state.live(id, now).map(|entry| entry.fields.clone())))
    }

    async fn load_with_ttl(
        &self,
        id: &SessionId,
    ) -> Result<Option<(SessionFields, Option<Duration>)>, StoreError> {
        let now = Instant::now();
        Ok(self.with_state(|state| {
            state.live(id, now).map(|entry| {
                (
                    entry.fields.clone(),
                    Some(entry.expires_at.saturating_duration_since(now)),
                )
            })
        }))
    }

    async fn create(
        &self,
        id: &SessionId,
        fields: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        require_fields(fields)?;
        let now = Instant::now();
        Ok(self.with_state(|state| {
            if state.live(id, now).is_some() {
                return false;
            }
            let entry = Entry {
                fields: fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                expires_at: expiry(now, ttl),
            };
            state.sessions.insert(id.clone(), entry);
            state.count_write(now);
            true
        }))
    }

    async fn update(
        &self,
        id: &SessionId,
        fields: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        require_fields(fields)?;
        let now = Instant::now();
        Ok(self.with_state(|state| {
            let Some(entry) = state.live(id, now) else {
                return false;
            };
            for (field, value) in fields {
                entry
                    .fields
                    .insert((*field).to_owned(), (*value).to_owned());
            }
            entry.expires_at = expiry(now, ttl);
            state.count_write(now);
            true
        }))
    }

    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let now = Instant::now();
        self.with_state(|state| {
            let Some(entry) = state.live(id, now) else {
                return Ok(None);
            };
            // Same rules as Redis's HINCRBY: a missing field is 0; anything
            // but a 64-bit decimal integer, or an overflow, is refused and
            // nothing changes.
            let current = match entry.fields.get(field) {
                None => 0,
                Some(text) => parse_redis_integer(text)
                    .ok_or_else(|| invalid("hash value is not an integer"))?,
            };
            let next = current
                .checked_add(by)
                .ok_or_else(|| invalid("increment or decrement would overflow"))?;
            entry.fields.insert(field.to_owned(), next.to_string());
            entry.expires_at = expiry(now, ttl);
            state.count_write(now);
            Ok(Some(next))
        })
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with_state(|state| match state.live(id, now) {
            Some(entry) => {
                entry.expires_at = expiry(now, ttl);
                true
            }
            None => false,
        }))
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with_state(|state| {
            let existed = state.live(id, now).is_some();
            state.sessions.remove(id);
            existed
        }))
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn require_fields(fields: &[(&str, &str)]) -> Result<(), StoreError> {
    if fields.is_empty() {
        return Err(invalid("a session needs at least one field"));
    }
    Ok(())
}

fn invalid(reason: &'static str) -> StoreError {
    StoreError::InvalidData(Box::new(InvalidField(reason)))
}

/// Redis's rule for integers in hashes: optional '-', decimal digits, no
/// leading '+', no leading zeros, no spaces, within i64.
fn parse_redis_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if canonical { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_integers_count_as_integers() {
        assert_eq!(parse_redis_integer("0"), Some(0));
        assert_eq!(parse_redis_integer("-17"), Some(-17));
        assert_eq!(parse_redis_integer("9223372036854775807"), Some(i64::MAX));
        for text in [
            "",
            "+1",
            "01",
            " 1",
            "1 ",
            "1.0",
            "-",
            "-0",
            "abc",
            "9223372036854775808",
        ] {
            assert_eq!(parse_redis_integer(text), None, "{text:?}");
        }
    }
}
