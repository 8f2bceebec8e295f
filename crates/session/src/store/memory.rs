//! [`MemorySessionStore`]: sessions in this process, for one node and for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::limits::check_limits;
use super::{
    CREATED_FIELD, Changes, LoadedSession, RESERVED_PREFIX, Renewal, SEEN_FIELD, SessionHandle,
    SessionStore, StoreError, USER_INDEX_KEEP, UserEntry, WritePolicy, millis, parse_redis_integer,
};
use crate::{SessionFields, SessionId};

/// Sessions in a map inside this process.
///
/// Same behaviour as [`super::RedisSessionStore`], checked by the same suite
/// (the same guards, limits, metadata and integer rules as
/// the scripts in `store/lua/`), but NOT shared between app nodes: behind a load
/// balancer each node would see its own sessions. Use it for a single node,
/// for development, and for fast tests.
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
    /// Each user's index (see `users.rs`), by user id.
    users: HashMap<String, UserIndex>,
    /// Writes since the last sweep.
    writes_since_sweep: usize,
}

#[derive(Debug)]
struct Entry {
    /// User fields and metadata, as Redis would hold them.
    fields: SessionFields,
    expires_at: Instant,
}

/// One user's index, as `user_index.lua` keeps it.
#[derive(Debug, Default)]
struct UserIndex {
    epoch: u64,
    /// Handle -> the entry.
    entries: BTreeMap<SessionHandle, IndexEntry>,
    /// The index is forgotten after this (as the Redis keys expire).
    expires_at: Option<Instant>,
}

/// One entry of a user's index, as `user_index.lua` keeps it.
#[derive(Debug)]
struct IndexEntry {
    id: SessionId,
    /// When its session was created, in ms since the Unix epoch.
    created: u64,
    /// Being ended (`x:<handle>` in Redis): no renewal moves it, and list
    /// hides it.
    doomed: bool,
}

impl UserIndex {
    fn prune(&mut self, now: Now, policy: Option<&WritePolicy>) {
        if let Some(absolute) = policy.and_then(WritePolicy::absolute_timeout) {
            let oldest_alive = now.ms.saturating_sub(millis(absolute));
            self.entries
                .retain(|_, entry| entry.created >= oldest_alive);
        }
    }

    /// Newest first; ties by handle, as Redis's ZRANGE ... REV orders them.
    /// Entries being ended only `with_doomed`.
    fn listed(&self, spare: Option<&SessionHandle>, with_doomed: bool) -> Vec<UserEntry> {
        let mut listed: Vec<UserEntry> = self
            .entries
            .iter()
            .filter(|(handle, entry)| Some(*handle) != spare && (with_doomed || !entry.doomed))
            .map(|(handle, entry)| UserEntry {
                handle: handle.clone(),
                id: entry.id.clone(),
                created: UNIX_EPOCH + Duration::from_millis(entry.created),
            })
            .collect();
        listed.sort_by(|a, b| b.created.cmp(&a.created).then(b.handle.cmp(&a.handle)));
        listed
    }

    /// As `user_index.lua`'s `expire`: the newest entry's deadline, and
    /// once the epoch was raised at least [`USER_INDEX_KEEP`].
    fn expire(&mut self, now: Now, policy: &WritePolicy) {
        let mut ttl = if self.epoch > 0 {
            USER_INDEX_KEEP
        } else {
            Duration::ZERO
        };
        if let Some(newest) = self.entries.values().map(|entry| entry.created).max() {
            ttl = ttl.max(match policy.absolute_timeout() {
                Some(absolute) => {
                    Duration::from_millis((newest + millis(absolute)).saturating_sub(now.ms))
                }
                None => USER_INDEX_KEEP,
            });
        }
        self.expires_at = Some(now.instant + ttl);
    }
}

/// The failure the memory store reports where Redis would raise an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidField(&'static str);

/// One moment, read from both clocks: wall time for the metadata (as Redis's
/// `TIME`), monotonic time for expiry.
#[derive(Debug, Clone, Copy)]
struct Now {
    instant: Instant,
    ms: u64,
}

impl Now {
    fn read() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            instant: Instant::now(),
            ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl MemorySessionStore {
    /// How many writes pass between two sweeps of expired sessions.
    pub const SWEEP_EVERY: usize = 1024;

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the state under the lock. Never holds the lock across an
    /// `.await`: there is none inside.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock cannot leave an entry half-written
        // (every check runs before the first mutation), so a poisoned lock
        // is safe to keep using.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }
}

impl State {
    fn live(&mut self, id: &SessionId, now: Now) -> Option<&mut Entry> {
        if self
            .sessions
            .get(id)
            .is_some_and(|entry| entry.expires_at <= now.instant)
        {
            self.sessions.remove(id);
        }
        self.sessions.get_mut(id)
    }

    /// The creation time (ms) of the live session `id`, ending it if it
    /// outlived its absolute lifetime: `live_created` in the Lua script.
    fn live_created(&mut self, id: &SessionId, now: Now, policy: &WritePolicy) -> Option<u64> {
        let entry = self.live(id, now)?;
        let created = entry
            .fields
            .get(CREATED_FIELD)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(now.ms);
        if let Some(absolute) = policy.absolute_timeout()
            && created.saturating_add(millis(absolute)) <= now.ms
        {
            self.sessions.remove(id);
            return None;
        }
        Some(created)
    }

    /// `user`'s index, unless it expired (then it is forgotten).
    fn user(&mut self, user: &str, now: Now) -> Option<&mut UserIndex> {
        let expired = self
            .users
            .get(user)
            .is_some_and(|index| index.expires_at.is_some_and(|at| at <= now.instant));
        if expired {
            self.users.remove(user);
        }
        self.users.get_mut(user)
    }

    fn user_or_new(&mut self, user: &str, now: Now) -> &mut UserIndex {
        if self.user(user, now).is_none() {
            self.users.insert(user.to_owned(), UserIndex::default());
        }
        self.users.get_mut(user).expect("just inserted")
    }

    fn count_write(&mut self, now: Now) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= MemorySessionStore::SWEEP_EVERY {
            self.writes_since_sweep = 0;
            self.sessions
                .retain(|_, entry| entry.expires_at > now.instant);
            // The user indexes too: an expired one is otherwise dropped
            // only when its user is next touched.
            self.users
                .retain(|_, index| index.expires_at.is_none_or(|at| at > now.instant));
        }
    }
}

/// `delete_fields`, `due` and `set_fields` in the Lua scripts: the change, then the
/// metadata and the sliding TTL, when `force` is set, when the session has
/// no stamp yet, or when its `__seen` is `touch_after` or more from now.
fn apply(
    entry: &mut Entry,
    changes: &Changes,
    created: u64,
    now: Now,
    policy: &WritePolicy,
    force: bool,
) {
    if changes.clear {
        entry
            .fields
            .retain(|field, _| field.starts_with(RESERVED_PREFIX));
    }
    for field in &changes.removals {
        entry.fields.remove(field);
    }
    for (field, value) in &changes.upserts {
        entry.fields.insert(field.clone(), value.clone());
    }
    let touch_ms = u64::try_from(policy.touch_after().as_millis()).unwrap_or(u64::MAX);
    let seen = entry
        .fields
        .get(SEEN_FIELD)
        .and_then(|text| text.parse::<u64>().ok());
    let refresh = force
        || touch_ms == 0
        || !entry.fields.contains_key(CREATED_FIELD)
        || seen.is_none_or(|seen| now.ms.abs_diff(seen) >= touch_ms);
    if !refresh {
        return;
    }
    entry
        .fields
        .insert(CREATED_FIELD.to_owned(), created.to_string());
    entry
        .fields
        .insert(SEEN_FIELD.to_owned(), now.ms.to_string());
    let mut ttl_ms = millis(policy.idle_timeout());
    if let Some(absolute) = policy.absolute_timeout() {
        ttl_ms = ttl_ms.min(
            created
                .saturating_add(millis(absolute))
                .saturating_sub(now.ms),
        );
    }
    // A WritePolicy holds at most a year, so this never saturates; if it
    // did, "far away" is the right reading, never a panic.
    entry.expires_at = now
        .instant
        .checked_add(Duration::from_millis(ttl_ms))
        .unwrap_or(now.instant + Duration::from_secs(crate::limits::MAX_TIMEOUT_SECS));
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| {
            state.live(id, now).map(|entry| {
                let ttl = entry.expires_at.saturating_duration_since(now.instant);
                LoadedSession::from_stored(entry.fields.clone(), Some(ttl))
            })
        }))
    }

    async fn create(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        let now = Now::read();
        let fresh = Changes {
            upserts: changes.upserts.clone(),
            ..Changes::default()
        };
        self.with_state(|state| {
            // The limits first, as the Redis store checks them before it
            // sends anything.
            check_limits(None, &fresh, policy)?;
            if state.live(id, now).is_some() {
                return Ok(false);
            }
            let mut entry = Entry {
                fields: SessionFields::new(),
                expires_at: now.instant,
            };
            apply(&mut entry, &fresh, now.ms, now, policy, true);
            state.sessions.insert(id.clone(), entry);
            state.count_write(now);
            Ok(true)
        })
    }

    async fn update(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        let now = Now::read();
        self.with_state(|state| {
            let Some(created) = state.live_created(id, now, policy) else {
                return Ok(false);
            };
            let entry = state.sessions.get_mut(id).ok_or_else(gone)?;
            check_limits(Some(&entry.fields), changes, policy)?;
            apply(entry, changes, created, now, policy, changes.is_empty());
            state.count_write(now);
            Ok(true)
        })
    }

    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        let now = Now::read();
        self.with_state(|state| {
            let Some(mut created) = state.live_created(old, now, policy) else {
                return Ok(Renewal::Missing);
            };
            // A sign-in sends `__created`: the lifetime starts anew.
            if let Some(restarted) = changes
                .upserts
                .iter()
                .find(|(field, _)| field == CREATED_FIELD)
                .and_then(|(_, ms)| ms.parse::<u64>().ok())
            {
                created = restarted;
            }
            if state.live(new, now).is_some() {
                return Ok(Renewal::Taken);
            }
            let fields = &state.sessions.get(old).ok_or_else(gone)?.fields;
            check_limits(Some(fields), changes, policy)?;
            let mut entry = state.sessions.remove(old).ok_or_else(gone)?;
            apply(&mut entry, changes, created, now, policy, true);
            state.sessions.insert(new.clone(), entry);
            state.count_write(now);
            Ok(Renewal::Renewed)
        })
    }

    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        policy: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        let now = Now::read();
        self.with_state(|state| {
            let Some(created) = state.live_created(id, now, policy) else {
                return Ok(None);
            };
            let entry = state.sessions.get_mut(id).ok_or_else(gone)?;
            let current = match entry.fields.get(field) {
                None => {
                    let added = Changes {
                        upserts: vec![(field.to_owned(), by.to_string())],
                        ..Changes::default()
                    };
                    check_limits(Some(&entry.fields), &added, policy)?;
                    0
                }
                Some(text) => parse_redis_integer(text)
                    .ok_or_else(|| invalid("hash value is not an integer"))?,
            };
            let value = current
                .checked_add(by)
                .ok_or_else(|| invalid("increment or decrement would overflow"))?;
            let change = Changes {
                upserts: vec![(field.to_owned(), value.to_string())],
                ..Changes::default()
            };
            // As the script: a longer number can pass max_bytes.
            if entry
                .fields
                .get(field)
                .is_some_and(|old| change.upserts[0].1.len() > old.len())
            {
                check_limits(Some(&entry.fields), &change, policy)?;
            }
            apply(entry, &change, created, now, policy, false);
            state.count_write(now);
            Ok(Some(value))
        })
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        policy: &WritePolicy,
    ) -> Result<Option<bool>, StoreError> {
        let now = Now::read();
        self.with_state(|state| {
            let Some(created) = state.live_created(id, now, policy) else {
                return Ok(None);
            };
            let entry = state.sessions.get_mut(id).ok_or_else(gone)?;
            if entry.fields.get(field).map(String::as_str) != expected {
                return Ok(Some(false));
            }
            let change = match new {
                Some(value) => Changes {
                    upserts: vec![(field.to_owned(), value.to_owned())],
                    ..Changes::default()
                },
                None => Changes {
                    removals: vec![field.to_owned()],
                    ..Changes::default()
                },
            };
            check_limits(Some(&entry.fields), &change, policy)?;
            apply(entry, &change, created, now, policy, false);
            state.count_write(now);
            Ok(Some(true))
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| {
            let existed = state.live(id, now).is_some();
            state.sessions.remove(id);
            existed
        }))
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| state.user(user, now).map_or(0, |index| index.epoch)))
    }

    async fn join_user(
        &self,
        user: &str,
        epoch: u64,
        entry: &UserEntry,
        policy: &WritePolicy,
        cap: usize,
    ) -> Result<Option<Vec<UserEntry>>, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| {
            let current = state.user(user, now).map_or(0, |index| index.epoch);
            if current != epoch {
                return None; // nothing written, no index made
            }
            let index = state.user_or_new(user, now);
            index.prune(now, Some(policy));
            let created = u64::try_from(
                entry
                    .created
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX);
            index.entries.insert(
                entry.handle.clone(),
                IndexEntry {
                    id: entry.id.clone(),
                    created,
                    doomed: false,
                },
            );
            // The oldest others: never the session signing in. Marked as
            // being ended, as the Redis script marks them.
            let mut oldest_first = index.listed(Some(&entry.handle), false);
            oldest_first.reverse();
            let over = index.entries.len().saturating_sub(cap);
            oldest_first.truncate(over);
            for doomed in &oldest_first {
                if let Some(entry) = index.entries.get_mut(&doomed.handle) {
                    entry.doomed = true;
                }
            }
            index.expire(now, policy);
            Some(oldest_first)
        }))
    }

    async fn user_entries(
        &self,
        user: &str,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| match state.user(user, now) {
            Some(index) => {
                index.prune(now, Some(policy));
                index.listed(None, true)
            }
            None => Vec::new(),
        }))
    }

    async fn rejoin_user(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| {
            let Some(index) = state.user(user, now) else {
                return false;
            };
            match index.entries.get_mut(handle) {
                Some(entry) if !entry.doomed && entry.id == *old => {
                    entry.id = new.clone();
                    true
                }
                _ => false,
            }
        }))
    }

    async fn take_user_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| {
            let entry = state.user(user, now)?.entries.get_mut(handle)?;
            entry.doomed = true;
            Some(UserEntry {
                handle: handle.clone(),
                id: entry.id.clone(),
                created: UNIX_EPOCH + Duration::from_millis(entry.created),
            })
        }))
    }

    async fn revoke_user(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        let now = Now::read();
        Ok(self.with_state(|state| {
            let index = state.user_or_new(user, now);
            index.epoch += 1;
            index.prune(now, Some(policy));
            let doomed = index.listed(spare, true);
            for (handle, entry) in &mut index.entries {
                if Some(handle) != spare {
                    entry.doomed = true;
                }
            }
            index.expire(now, policy);
            doomed
        }))
    }

    async fn drop_user_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError> {
        let now = Now::read();
        self.with_state(|state| {
            if let Some(index) = state.user(user, now) {
                // Only entries being ended: one a renewal holds stays.
                for handle in handles {
                    if index.entries.get(handle).is_some_and(|entry| entry.doomed) {
                        index.entries.remove(handle);
                    }
                }
            }
        });
        Ok(())
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Unreachable in practice: `live_created` has just seen the entry under the
/// same lock. An error rather than a panic all the same.
fn gone() -> StoreError {
    StoreError::Backend(Box::new(InvalidField(
        "the session vanished under the lock",
    )))
}

fn invalid(reason: &'static str) -> StoreError {
    StoreError::InvalidData(Box::new(InvalidField(reason)))
}
