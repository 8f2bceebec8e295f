//! [`SessionStore`]: where session fields live, and the two stores we ship.
//!
//! A store knows nothing about cookies or HTTP. It keeps, per [`SessionId`],
//! a map of string fields with an idle timeout and an absolute lifetime, and
//! offers the few operations the session layer needs, each atomic and each a
//! single round trip to the backend. Both stores pass the same behaviour
//! suite (`tests/store_suite/`), so the app can switch between them by one
//! setting.
//!
//! # The rules every store keeps
//!
//! - **Nothing re-creates a session.** Only [`SessionStore::create`] makes
//!   one, and only under an unused id. Every other write checks, in the same
//!   atomic step, that the session is alive, so a session that was purged or
//!   expired while a request was in flight stays gone.
//! - **Writes slide the TTL once it is due** ([`WritePolicy::touch_after`];
//!   on every write when it is zero): to the idle timeout, but never past
//!   the absolute lifetime counted from `__created`.
//! - **Limits or nothing.** A write that would take the session over
//!   `max_fields` or `max_bytes` fails whole with
//!   [`StoreError::LimitExceeded`]; nothing of it is written.
//! - **Metadata** lives beside the user's fields, in fields named `__…`:
//!   [`CREATED_FIELD`] and [`SEEN_FIELD`]. Users cannot write those names.

mod limits;
mod memory;
mod redis;
mod redis_users;
mod scripts;
mod users;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use self::memory::MemorySessionStore;
pub use self::redis::RedisSessionStore;
pub(crate) use self::users::is_valid_user_id;
pub use self::users::{MAX_USER_ID_BYTES, SessionHandle, UserEntry};
use crate::limits::{
    ConfigError, MAX_SESSION_BYTES, MAX_SESSION_FIELDS, MAX_TIMEOUT_SECS, seconds,
};
use crate::{SessionFields, SessionId};

/// Metadata field: when the session was created, in ms since the Unix epoch.
pub(crate) const CREATED_FIELD: &str = "__created";
/// Metadata field: when the session was last written or refreshed, in ms
/// since the Unix epoch.
pub(crate) const SEEN_FIELD: &str = "__seen";
/// Metadata field: the signed-in user's id (see `users.rs`).
pub(crate) const USER_FIELD: &str = "__user";
/// Metadata field: the session's handle in its user's index.
pub(crate) const HANDLE_FIELD: &str = "__handle";
/// Metadata field: the user agent that signed in, at most 256 bytes.
pub(crate) const AGENT_FIELD: &str = "__ua";
/// Metadata field: the salt that binds a session's sealed values to it
/// (see `protect/envelope.rs`). Written once, never changed.
pub(crate) const SALT_FIELD: &str = "__salt";
/// How long a sign-in may take from [`crate::Session::begin_sign_in`] to
/// its commit: an older ticket is refused.
pub(crate) const SIGN_IN_TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// Once a user's epoch was raised, how long the index keys live at least:
/// far longer than a ticket (checked again just before its join) plus a
/// request's whole store budget (at most a minute), so that no sign-in in
/// flight can find the epoch expired and back at 0.
pub(crate) const USER_INDEX_KEEP: Duration = Duration::from_secs(600);
/// Field names with this prefix belong to the session layer.
pub(crate) const RESERVED_PREFIX: &str = "__";

/// Which limit a write would have broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Limit {
    /// More user fields than `session.max_fields`.
    #[error("a session holds at most {0} fields")]
    Fields(usize),
    /// More bytes than `session.max_bytes`.
    #[error("a session holds at most {0} bytes")]
    Bytes(usize),
}

/// Why a store operation failed, sorted by who can fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time. Passes by
    /// itself: answer 503 with `Retry-After`.
    #[error("the session store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Bad data in this one session: a field that is not an integer, an
    /// increment that would overflow, bytes that are not UTF-8. Nothing was
    /// written. Other sessions are fine; this one may be started over.
    #[error("the stored session data is invalid for this operation")]
    InvalidData(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The write would break a size limit. Nothing was written.
    #[error("the session is too large")]
    LimitExceeded(#[source] Limit),

    /// The backend ran the operation and failed it: a key of another type
    /// where a session should be (`WRONGTYPE`), a script error, keys in two
    /// cluster slots (`CROSSSLOT`). A server-side fault or a bug, not the
    /// user's data and not an outage: a 500, logged with its cause.
    #[error("the session store failed the operation")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The backend refuses this client: wrong credentials, or an ACL that
    /// denies a command or a key. A deployment mistake that no retry fixes:
    /// a 500, logged with its cause, never a 503.
    #[error("the session store refuses this client: check its credentials and ACL")]
    Misconfigured(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// True for [`StoreError::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// How long sessions live and how large they may grow: the rules every
/// write enforces. Only [`WritePolicy::new`] makes one, and its values
/// cannot be changed after, so a store never meets a TTL it cannot hold or
/// a limit its script cannot keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePolicy {
    /// The sliding TTL.
    idle_timeout: Duration,
    /// The hard cap from creation, if any.
    absolute_timeout: Option<Duration>,
    /// Most user fields.
    max_fields: usize,
    /// Most bytes of user field names and values.
    max_bytes: usize,
    /// A write slides the TTL only once it has run down by this much.
    touch_after: Duration,
    /// The idle timeout is the caller's, per call
    /// ([`crate::SessionService::set_session`]), not the deployment's: the
    /// Redis scripts then take it as an argument rather than as a constant,
    /// so the TTLs callers pass share one set of scripts (Redis never
    /// evicts a loaded script). See `store/scripts.rs`.
    ttl_per_call: bool,
}

impl WritePolicy {
    /// The sliding TTL: a write sets the key's TTL to this, cut short by
    /// the absolute lifetime (see [`WritePolicy::touch_after`] for when).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How far a session's TTL may run down before a write slides it
    /// again: zero (the default) slides it on every write. With it set, a
    /// busy session is not refreshed on every request (in Redis: no
    /// `HSET __seen` and no `PEXPIRE`), and it ends between
    /// `idle_timeout - touch_after` and `idle_timeout` after its last
    /// request. A write that only refreshes ([`SessionStore::update`]
    /// with no change), a renewal and a creation always slide it.
    /// `session.touch_after_fraction` sets it in the middleware.
    pub fn touch_after(&self) -> Duration {
        self.touch_after
    }

    /// The same policy, sliding the TTL only once it has run down by
    /// `touch_after`, cut to half the idle timeout: a threshold near the
    /// idle timeout itself would let a busy session's TTL run out before
    /// any write found it due.
    ///
    /// ```
    /// use std::time::Duration;
    /// let policy = session::WritePolicy::new(Duration::from_secs(60), None, 16, 4096)
    ///     .unwrap()
    ///     .with_touch_after(Duration::from_secs(15));
    /// assert_eq!(policy.touch_after(), Duration::from_secs(15));
    /// ```
    #[must_use]
    pub fn with_touch_after(self, touch_after: Duration) -> Self {
        Self {
            touch_after: touch_after.min(self.idle_timeout / 2),
            ..self
        }
    }

    /// The same policy, with an idle timeout that is the caller's and may
    /// differ on every call: the Redis store sends it as an argument of
    /// scripts shared by every such TTL, rather than generating scripts
    /// with it written in (the deployment's own policy keeps those: they
    /// cost Redis less per call).
    #[must_use]
    pub(crate) fn with_ttl_per_call(self) -> Self {
        Self {
            ttl_per_call: true,
            ..self
        }
    }

    /// Whether the idle timeout is the caller's, per call: see
    /// [`WritePolicy::with_ttl_per_call`].
    pub(crate) fn ttl_per_call(&self) -> bool {
        self.ttl_per_call
    }

    /// The hard cap from creation, if any.
    pub fn absolute_timeout(&self) -> Option<Duration> {
        self.absolute_timeout
    }

    /// Most user fields a session may hold.
    pub fn max_fields(&self) -> usize {
        self.max_fields
    }

    /// Most bytes of user field names and values a session may hold.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// What one request changes in a session: applied whole or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Delete every user field first.
    pub clear: bool,
    /// Fields to delete (after `clear`).
    pub removals: Vec<String>,
    /// Fields to set (last), as stored text.
    pub upserts: Vec<(String, String)>,
    /// The session's salt (`__salt`) as this request read it, if it did:
    /// lets an encrypting store ([`crate::SealedStore`]) seal without
    /// reading it first. Not a change: stores themselves ignore it.
    pub salt: Option<String>,
}

impl Changes {
    /// True if applying it would change no field (a pure TTL refresh).
    pub fn is_empty(&self) -> bool {
        !self.clear && self.removals.is_empty() && self.upserts.is_empty()
    }
}

/// A live session as read by [`SessionStore::load`]. A store of your own
/// builds one with [`LoadedSession::from_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadedSession {
    /// The user's fields (metadata removed).
    pub fields: SessionFields,
    /// When it was created, if stamped (a NestJS-written session is not,
    /// until a Rust node first writes it).
    pub created: Option<SystemTime>,
    /// When it was last written or refreshed, if stamped.
    pub seen: Option<SystemTime>,
    /// Time left before it expires (`None`: no expiry).
    pub ttl: Option<Duration>,
    /// The signed-in user (see [`crate::Session::sign_in`]).
    pub user: Option<String>,
    /// Its handle in the user's index.
    pub handle: Option<SessionHandle>,
    /// The user agent that signed in.
    pub user_agent: Option<String>,
    /// The salt of its sealed values, if it has any (see
    /// [`crate::SealedStore`]).
    pub salt: Option<String>,
    /// Only from [`SessionStore::load_many`] of a [`crate::SealedStore`]:
    /// the session is alive, but its sealed values do not open on this
    /// node (a key it lacks, say), so they are left out. [`SessionStore::load`]
    /// says `None` for such a session instead; a listing must not take it
    /// for a gone one.
    pub sealed_unreadable: bool,
}

impl LoadedSession {
    /// A loaded session from the hash a store holds (user fields and the
    /// `__…` metadata side by side), and its time left.
    pub fn from_fields(fields: SessionFields, ttl: Option<Duration>) -> Self {
        Self::from_stored(fields, ttl)
    }

    /// Splits a stored hash into user fields and metadata.
    pub(crate) fn from_stored(mut fields: SessionFields, ttl: Option<Duration>) -> Self {
        let created = fields
            .remove(CREATED_FIELD)
            .and_then(|ms| parse_millis(&ms));
        let seen = fields.remove(SEEN_FIELD).and_then(|ms| parse_millis(&ms));
        let user = fields.remove(USER_FIELD);
        let handle = fields
            .remove(HANDLE_FIELD)
            .and_then(|text| SessionHandle::parse(&text));
        let user_agent = fields.remove(AGENT_FIELD);
        let salt = fields.remove(SALT_FIELD);
        fields.retain(|name, _| !name.starts_with(RESERVED_PREFIX));
        Self {
            fields,
            created,
            seen,
            ttl,
            user,
            handle,
            user_agent,
            salt,
            sealed_unreadable: false,
        }
    }
}

/// The outcome of [`SessionStore::renew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Renewal {
    /// The data now lives under the new id; the old id is dead.
    Renewed,
    /// The old session is gone (expired or purged). Nothing was written.
    Missing,
    /// The new id is taken. Nothing was written.
    Taken,
}

/// A place that keeps session fields with an expiry.
///
/// Every method is atomic: a concurrent caller sees the state before it or
/// after it, never half of it. See the module docs for the rules.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// The live session `id`, or `None` if it does not exist or expired.
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError>;

    /// As [`SessionStore::load`], from the store's source of truth: never a
    /// replica that may lag behind a logout. The session layer uses it for
    /// a load whose answer authorises a write to other keys (who is signed
    /// in, before listing or revoking that user's sessions), and only when
    /// [`SessionStore::reads_from_replicas`] says plain loads may be stale.
    /// The default is [`SessionStore::load`].
    async fn load_from_primary(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        self.load(id).await
    }

    /// Whether [`SessionStore::load`] may be answered by a replica, and so
    /// be stale (the Redis store with `redis.read_from_replicas`). Default
    /// false.
    fn reads_from_replicas(&self) -> bool {
        false
    }

    /// Creates session `id` holding `changes.upserts` (the rest of `changes`
    /// is moot for a new session), only if `id` is unused. Returns false,
    /// writing nothing, if it is taken.
    async fn create(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError>;

    /// Applies `changes` to the live session `id` and slides its TTL when due (empty
    /// `changes`: only the TTL). Returns false, writing nothing, if the
    /// session is gone.
    async fn update(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError>;

    /// Moves the live session `old` to the unused id `new`, applying
    /// `changes`, in one atomic step. It keeps `old`'s creation time, and
    /// so its absolute deadline, unless `changes` sets `__created` (a
    /// sign-in does: the lifetime then counts from that time). Take `new` from
    /// [`SessionStore::id_for_renewal`]: on Redis Cluster it must share
    /// `old`'s slot.
    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<Renewal, StoreError>;

    /// Adds `by` to the integer `field` of the live session `id` (a missing
    /// field counts as 0) and slides its TTL when due. Returns the new value, or
    /// `None`, writing nothing, if the session is gone.
    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        policy: &WritePolicy,
    ) -> Result<Option<i64>, StoreError>;

    /// Sets `field` to `new` (`None`: deletes it) if it now holds `expected`
    /// (`None`: if it is absent), and then slides the TTL when due. Returns whether it
    /// swapped, or `None`, writing nothing, if the session is gone.
    async fn compare_and_set(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        policy: &WritePolicy,
    ) -> Result<Option<bool>, StoreError>;

    /// A fresh id that [`SessionStore::renew`] can move `old` to. The Redis
    /// store draws it so that its key hashes to `old`'s Redis Cluster slot
    /// (a cross-slot rename is impossible on a cluster); others need nothing
    /// special.
    fn id_for_renewal(&self, old: &SessionId) -> SessionId {
        let _ = old;
        SessionId::generate()
    }

    /// Whether this store encrypts `field` at rest, so that it cannot
    /// [`SessionStore::increment`] it or [`SessionStore::compare_and_set`]
    /// it (Redis would see only sealed bytes). Only [`crate::SealedStore`]
    /// says yes.
    fn seals_field(&self, field: &str) -> bool {
        let _ = field;
        false
    }

    /// Whether this store keeps session ids hashed at rest (see
    /// [`crate::RedisSessionStore::with_hashed_ids`]).
    fn hashes_ids(&self) -> bool {
        false
    }

    /// Deletes the session. Returns whether it existed.
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// The live sessions `ids`, in order: as [`SessionStore::load`] for
    /// each, all at once where the backend can (Redis: concurrently, one
    /// round trip on a single server).
    async fn load_many(&self, ids: &[SessionId]) -> Result<Vec<Option<LoadedSession>>, StoreError> {
        let mut loaded = Vec::with_capacity(ids.len());
        for id in ids {
            loaded.push(self.load(id).await?);
        }
        Ok(loaded)
    }

    /// `user`'s sign-in epoch: 0 until "revoke all" first raised it. Read
    /// before the credentials are checked; see `users.rs`.
    async fn user_epoch(&self, user: &str) -> Result<u64, StoreError>;

    /// Adds `entry` to `user`'s index, in one atomic step, only if the
    /// epoch is still `epoch`, after pruning entries past `policy`'s
    /// absolute lifetime. `None`: the epoch moved, nothing was written.
    /// `Some(over)`: the oldest entries beyond `cap`, marked as being ended
    /// and left in place for the caller to end and then drop (so that a
    /// crash in between leaves them revocable).
    async fn join_user(
        &self,
        user: &str,
        epoch: u64,
        entry: &UserEntry,
        policy: &WritePolicy,
        cap: usize,
    ) -> Result<Option<Vec<UserEntry>>, StoreError>;

    /// Moves `user`'s entry `handle` from the session `old` to `new` (a
    /// renewal keeps its handle), in one atomic step, only if the entry
    /// still names `old` and is not being ended. `false`: nothing was
    /// written, and the renewal must not stand (the session was revoked,
    /// logged out or signed out everywhere while it ran: each marks the
    /// entries it ends first).
    async fn rejoin_user(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError>;

    /// Marks `user`'s entry `handle` as being ended and returns it, in one
    /// atomic step: from then on no renewal can move it
    /// ([`SessionStore::rejoin_user`] fails), and the caller ends the
    /// session it names (whatever renewal moved it there first), then
    /// drops it. `None` if there is no such entry. Entries so marked are
    /// still listed and returned by [`SessionStore::revoke_user`], so that
    /// a failure before the drop leaves them revocable.
    async fn take_user_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError>;

    /// `user`'s entries, newest first, after pruning those past `policy`'s
    /// absolute lifetime; those being ended included.
    async fn user_entries(
        &self,
        user: &str,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError>;

    /// Raises `user`'s epoch, then returns every entry but `spare`'s
    /// (those already being ended included), each marked as being ended
    /// and left in place: the caller ends their sessions, then drops them.
    /// A sign-in that read the old epoch can no longer join, nor a renewal
    /// move its entry.
    async fn revoke_user(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError>;

    /// Removes the entries of `handles` from `user`'s index that are being
    /// ended (marked by [`SessionStore::take_user_entry`],
    /// [`SessionStore::revoke_user`] or a join past the cap); an entry not
    /// so marked stays, since a renewal may have moved it to a live
    /// session since the caller read it. Mark first, end the session,
    /// then drop.
    async fn drop_user_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError>;

    /// Gets ready to serve: for Redis, loads the script, so that the first
    /// write costs one round trip. Called once at start-up.
    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Gets ready to serve writes under `policy`: for Redis, loads the
    /// scripts made for it (each policy has its own, see `store/lua/`), so
    /// that the first write costs one round trip. Without it the first
    /// write of each policy on each Redis node pays one more (`NOSCRIPT`,
    /// then the load). The middleware calls it with its own policy when
    /// [`crate::SessionService::prepare`] runs.
    async fn prepare_policy(&self, policy: &WritePolicy) -> Result<(), StoreError> {
        let _ = policy;
        Ok(())
    }

    /// Whether the backend answers right now (for `/readyz`).
    async fn check_health(&self) -> Result<(), StoreError>;
}

impl WritePolicy {
    /// The rules a store enforces on every write, checked: an idle timeout
    /// above zero and at most a year, an absolute lifetime the same, 1 to
    /// 1024 fields and 1 byte to 1 MiB.
    ///
    /// ```
    /// use std::time::Duration;
    /// let policy = session::WritePolicy::new(Duration::from_secs(60), None, 16, 4096).unwrap();
    /// assert_eq!(policy.max_fields(), 16);
    /// assert!(session::WritePolicy::new(Duration::ZERO, None, 16, 4096).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the matching `session.*` key.
    pub fn new(
        idle_timeout: Duration,
        absolute_timeout: Option<Duration>,
        max_fields: usize,
        max_bytes: usize,
    ) -> Result<Self, ConfigError> {
        let longest = Duration::from_secs(MAX_TIMEOUT_SECS);
        if idle_timeout.is_zero() || idle_timeout > longest {
            return Err(ConfigError::new(
                "session.idle_timeout_secs",
                format!(
                    "must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {}",
                    seconds(idle_timeout)
                ),
            ));
        }
        if let Some(absolute) = absolute_timeout
            && (absolute.is_zero() || absolute > longest)
        {
            return Err(ConfigError::new(
                "session.absolute_timeout_secs",
                format!(
                    "must be at most {MAX_TIMEOUT_SECS} seconds (0 = off), got {}",
                    seconds(absolute)
                ),
            ));
        }
        if max_fields == 0 || max_fields > MAX_SESSION_FIELDS {
            return Err(ConfigError::new(
                "session.max_fields",
                format!("must be between 1 and {MAX_SESSION_FIELDS}, got {max_fields}"),
            ));
        }
        if max_bytes == 0 || max_bytes > MAX_SESSION_BYTES {
            return Err(ConfigError::new(
                "session.max_bytes",
                format!("must be between 1 and {MAX_SESSION_BYTES}, got {max_bytes}"),
            ));
        }
        Ok(Self {
            idle_timeout,
            absolute_timeout,
            max_fields,
            max_bytes,
            touch_after: Duration::ZERO,
            ttl_per_call: false,
        })
    }
}

/// Whether `name` may name a user field: non-empty, and not `__…`, which
/// is the session layer's own metadata (`__created` anchors the absolute
/// lifetime: a caller who could write it could make a session immortal).
pub(crate) fn is_user_field(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(RESERVED_PREFIX)
}

/// Redis's rule for integers in hashes, which `HINCRBY` applies: optional
/// '-', decimal digits, no leading '+', no leading zeros, no spaces, within
/// i64. Every Rust-side integer check uses it, so that no store and no
/// request-local count accepts what Redis refuses.
pub(crate) fn parse_redis_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if canonical { text.parse().ok() } else { None }
}

/// Milliseconds since the Unix epoch, as the metadata fields hold them.
pub(crate) fn parse_millis(text: &str) -> Option<SystemTime> {
    let ms: u64 = text.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Whole milliseconds, at least 1: `PEXPIRE 0` would delete the key.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_whole_milliseconds_and_never_zero() {
        assert_eq!(millis(Duration::from_secs(1800)), 1_800_000);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::ZERO), 1);
    }

    #[test]
    fn loading_splits_metadata_from_user_fields() {
        let stored: SessionFields = [
            ("count", "3"),
            (CREATED_FIELD, "1700000000000"),
            (SEEN_FIELD, "1700000001000"),
            ("__future_metadata", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let loaded = LoadedSession::from_stored(stored, None);
        assert_eq!(loaded.fields.len(), 1);
        assert_eq!(
            loaded.created,
            UNIX_EPOCH.checked_add(Duration::from_millis(1_700_000_000_000))
        );
        assert_eq!(
            loaded.seen,
            UNIX_EPOCH.checked_add(Duration::from_millis(1_700_000_001_000))
        );
    }

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

    #[test]
    fn garbage_metadata_reads_as_unknown() {
        assert_eq!(parse_millis("yesterday"), None);
        assert_eq!(parse_millis("-5"), None);
    }
}
