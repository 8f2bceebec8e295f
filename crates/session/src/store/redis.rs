//! [`RedisSessionStore`]: sessions as Redis hashes, shared by every app node.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis_client::ScriptCall;
use redis_client::redis::{self as redis_rs, FromRedisValue, Value};
use redis_client::{RedisClientError, RedisService, RedisSettings, Retry};

use super::scripts::{self, Op, Scripts};
use super::{
    Changes, Limit, LoadedSession, Renewal, SessionHandle, SessionStore, StoreError, UserEntry,
    WritePolicy, limits, millis,
};
use crate::{ConfigError, SessionId};

/// The NestJS design's key layout: `sid_<id>`.
pub(crate) const DEFAULT_KEY_PREFIX: &str = "sid_";
/// Where users' indexes live: `user_sessions:{<tag>}`. Never under the
/// session prefix: a Nest node writes `sid_<whatever the cookie says>`.
pub(crate) const DEFAULT_USER_INDEX_PREFIX: &str = "user_sessions:";

/// Sessions as Redis hashes at `{key_prefix}{id}` (by default `sid_<id>`,
/// the NestJS design's layout), one field per attribute, plus the metadata
/// fields `__created` and `__seen`. The key's TTL is the idle timeout, cut
/// short by the absolute lifetime.
///
/// Reads are `HGETALL` + `PTTL` in one pipeline; every write is one
/// `EVALSHA` of its op's script (`lua/`, generated per policy by
/// `scripts.rs`). Each method is one round trip.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_client::RedisSettings;
/// // Connects, waits for Redis (`redis.startup_wait_ms`), loads the script.
/// let store = session::RedisSessionStore::connect(&RedisSettings::default()).await?;
/// assert_eq!(store.key_prefix(), "sid_");
/// let store = store.with_key_prefix("shop_sid_")?; // keys shop_sid_<id>
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    /// The pooled client; shared with anything else that was handed a clone.
    redis: RedisService,
    /// Prepended to every id to make the key: `sid_` unless
    /// [`RedisSessionStore::with_key_prefix`] set another. The one place
    /// the prefix lives.
    key_prefix: String,
    /// Prepended to each user's index keys (see `store/users.rs`):
    /// `user_sessions:` unless [`RedisSessionStore::with_user_index_prefix`]
    /// set another. Neither prefix may start with the other.
    user_index_prefix: String,
    /// Whether list and revoke also read the user index in the layout
    /// before this version (`{key_prefix}user:{<tag>}`): see
    /// [`RedisSessionStore::with_legacy_user_index`].
    legacy_user_index: bool,
    /// How ids become key names: see [`RedisSessionStore::with_hashed_ids`].
    ids: IdsAtRest,
}

/// How session ids appear in key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdsAtRest {
    /// `sid_<id>`: the NestJS layout.
    Raw,
    /// `sid_<SHA-256 hex of the id>`; with `adopt_raw`, a session still
    /// under its raw key is moved to its hashed key when first met.
    Hashed { adopt_raw: bool },
}

/// What `incr.lua` replies: the new value, or a status.
enum IncrReply {
    Value(i64),
    Status(i64),
}

impl FromRedisValue for IncrReply {
    fn from_redis_value_ref(value: &Value) -> Result<Self, redis_rs::ParsingError> {
        match value {
            Value::Int(n) => Ok(Self::Value(*n)),
            // Past 2^53 the script sends the stored text.
            Value::BulkString(_) | Value::SimpleString(_) => {
                let text: String = FromRedisValue::from_redis_value_ref(value)?;
                text.parse().map(Self::Value).map_err(|_| {
                    "incr replied with text that is not an integer"
                        .to_owned()
                        .into()
                })
            }
            Value::Array(status) if status.len() == 1 => Ok(Self::Status(
                FromRedisValue::from_redis_value_ref(&status[0])?,
            )),
            _ => Err("incr replied with neither a value nor a status"
                .to_owned()
                .into()),
        }
    }

    fn from_redis_value(value: Value) -> Result<Self, redis_rs::ParsingError> {
        Self::from_redis_value_ref(&value)
    }
}

/// How far this node's clock may be from Redis's before start-up warns.
pub(crate) const CLOCK_SKEW_WARNING: std::time::Duration = std::time::Duration::from_secs(1);

/// Now, by this node's clock, in ms since the Unix epoch: every script's
/// `ARGV[1]` (see `lua/prelude.lua` for the skew it trusts).
fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl RedisSessionStore {
    /// A store writing keys `sid_<id>` through `redis`. It sends nothing
    /// yet: call [`SessionStore::prepare`] to load its script, or build it
    /// with [`RedisSessionStore::connect`].
    pub fn new(redis: RedisService) -> Self {
        Self {
            redis,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            user_index_prefix: DEFAULT_USER_INDEX_PREFIX.to_owned(),
            legacy_user_index: true,
            ids: IdsAtRest::Raw,
        }
    }

    /// Builds the client from `settings`, waits up to
    /// `settings.startup_wait_ms` for Redis to answer, and loads the
    /// script: a store whose first write is one round trip.
    ///
    /// # Errors
    ///
    /// [`StoreError::Misconfigured`] for settings that can never work or
    /// credentials Redis refuses; [`StoreError::Unavailable`] if Redis did
    /// not answer in time.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let redis = RedisService::new(settings)?;
        let max_wait = std::time::Duration::from_millis(settings.startup_wait_ms);
        redis.wait_until_ready(max_wait).await?;
        let store = Self::new(redis);
        store.prepare().await?;
        Ok(store)
    }

    /// The same store with keys `{key_prefix}{id}` instead: 1 to 64 visible
    /// ASCII characters. Several apps can then share one Redis without
    /// sharing sessions.
    ///
    /// A prefix that holds a Redis Cluster hash tag (`{...}`) puts every
    /// session in ONE slot, so on a cluster one node would carry them all.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `store.key_prefix`.
    pub fn with_key_prefix(self, key_prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let key_prefix = key_prefix.into();
        Self::check_key_prefix(&key_prefix)?;
        Self::check_user_index_prefix(&self.user_index_prefix, &key_prefix)?;
        let store = Self { key_prefix, ..self };
        store.check_hashed_layout()?;
        Ok(store)
    }

    /// With hashed ids on a cluster, the key's `{tag}` must be its hash
    /// tag: a prefix with a lone brace would swallow it.
    fn check_hashed_layout(&self) -> Result<(), ConfigError> {
        let lone_brace = (self.key_prefix.contains('{') || self.key_prefix.contains('}'))
            && !crate::slot::has_hash_tag(&self.key_prefix);
        if self.ids != IdsAtRest::Raw && self.redis.is_cluster() && lone_brace {
            return Err(ConfigError::new(
                "store.key_prefix",
                format!(
                    "holds a brace but no {{hash tag}}, which with session.hash_ids on Redis \
                     Cluster would change every key's slot, got {:?}",
                    self.key_prefix
                ),
            ));
        }
        Ok(())
    }

    /// The same store keeping each user's index at
    /// `{user_index_prefix}{<tag>}` (and `…:created`) instead of
    /// `user_sessions:{<tag>}`: for two apps that share a Redis but not
    /// their users. Same rules as the key prefix, and neither prefix may
    /// start with the other: no key but a session's may start with the
    /// session prefix, since a Nest node writes `sid_<cookie>` for any
    /// cookie it is sent.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = session::RedisSessionStore::connect(&Default::default()).await?;
    /// let store = store.with_user_index_prefix("shop_users:")?;
    /// assert!(store.clone().with_user_index_prefix("sid_users:").is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `store.user_index_prefix`.
    pub fn with_user_index_prefix(
        self,
        user_index_prefix: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let user_index_prefix = user_index_prefix.into();
        Self::check_user_index_prefix(&user_index_prefix, &self.key_prefix)?;
        Ok(Self {
            user_index_prefix,
            ..self
        })
    }

    /// Whether "where you're signed in" also reads the user index in the
    /// layout before this version, `{key_prefix}user:{<tag>}` (default
    /// true): sessions signed in before an upgrade stay listed and
    /// revocable. Those keys are read, pruned and emptied, never created
    /// or joined, and only while they are a hash and a sorted set (a Nest
    /// node's counter planted there is left alone). Turn it off
    /// (`store.legacy_user_index = false`) once
    /// `session.absolute_timeout_secs` has passed since the last node of
    /// the old version stopped: every entry there has expired by then. With
    /// a key prefix that holds a brace, the old keys sat in the prefix's
    /// cluster slot rather than the user's, and are not read.
    #[must_use]
    pub fn with_legacy_user_index(self, read: bool) -> Self {
        Self {
            legacy_user_index: read,
            ..self
        }
    }

    /// The rule [`RedisSessionStore::with_user_index_prefix`] applies, for
    /// an app that checks its settings before it connects.
    ///
    /// ```
    /// use session::RedisSessionStore;
    /// assert!(RedisSessionStore::check_user_index_prefix("user_sessions:", "sid_").is_ok());
    /// let error = RedisSessionStore::check_user_index_prefix("sid_users:", "sid_").unwrap_err();
    /// assert_eq!(error.key(), "store.user_index_prefix");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `store.user_index_prefix`, unless it is 1 to
    /// 64 visible ASCII characters without braces, and neither it nor
    /// `key_prefix` starts with the other.
    pub fn check_user_index_prefix(
        user_index_prefix: &str,
        key_prefix: &str,
    ) -> Result<(), ConfigError> {
        let key = "store.user_index_prefix";
        if user_index_prefix.is_empty()
            || user_index_prefix.len() > 64
            || !user_index_prefix
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '{' && c != '}')
        {
            return Err(ConfigError::new(
                key,
                format!(
                    "must be 1 to 64 visible ASCII characters without braces, got {user_index_prefix:?}"
                ),
            ));
        }
        if user_index_prefix.starts_with(key_prefix) || key_prefix.starts_with(user_index_prefix) {
            return Err(ConfigError::new(
                key,
                format!(
                    "must not start with store.key_prefix {key_prefix:?} nor be its start, got \
                     {user_index_prefix:?}: a Nest node writes <key_prefix><cookie> for any cookie"
                ),
            ));
        }
        Ok(())
    }

    /// The prefix of every user index key.
    pub fn user_index_prefix(&self) -> &str {
        &self.user_index_prefix
    }

    /// Whether list and revoke read the legacy user index too.
    pub(super) fn reads_legacy_user_index(&self) -> bool {
        self.legacy_user_index
    }

    /// The rule [`RedisSessionStore::with_key_prefix`] applies, for an app
    /// that checks its settings before it connects to anything.
    ///
    /// ```
    /// use session::RedisSessionStore;
    /// assert!(RedisSessionStore::check_key_prefix("sid_").is_ok());
    /// assert_eq!(RedisSessionStore::check_key_prefix("a b").unwrap_err().key(), "store.key_prefix");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `store.key_prefix`, unless `key_prefix` is 1
    /// to 64 visible ASCII characters.
    pub fn check_key_prefix(key_prefix: &str) -> Result<(), ConfigError> {
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "store.key_prefix",
                format!("must be 1 to 64 visible ASCII characters, got {key_prefix:?}"),
            ));
        }
        Ok(())
    }

    /// The same store keeping ids hashed at rest (`session.hash_ids`): the
    /// key of session `id` is `{prefix}{hex SHA-256 of id}`, so a dump, a
    /// replica or `MONITOR` shows no id that works as a cookie. (On Redis
    /// Cluster it is `{prefix}{<last 4 characters of id>}<hex>`: the hash
    /// tag keeps a renewal's rename in one slot without hashing a candidate
    /// per try, and 16 of 122 bits name no session.) The user index holds
    /// the same hashed names. Nest nodes can no longer find these sessions.
    ///
    /// With `adopt_raw_keys` (`session.accept_raw_keys`, the migration
    /// switch), a session a node without hash_ids wrote under its raw key
    /// still loads: the first operation that misses its hashed key moves it
    /// there (one more round trip, once per session, and once for each
    /// unknown id while the switch is on).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `session.accept_raw_keys` on Redis Cluster:
    /// the raw and hashed keys of one session live in different slots, so
    /// nothing can move one to the other atomically; or naming
    /// `store.key_prefix` on a cluster for a prefix with a lone brace.
    pub fn with_hashed_ids(self, adopt_raw_keys: bool) -> Result<Self, ConfigError> {
        if adopt_raw_keys && self.redis.is_cluster() {
            return Err(ConfigError::new(
                "session.accept_raw_keys",
                "must be false on Redis Cluster (a raw key and its hashed key live in different \
                 slots): turning session.hash_ids on there ends the sessions under raw keys",
            ));
        }
        let store = Self {
            ids: IdsAtRest::Hashed {
                adopt_raw: adopt_raw_keys,
            },
            ..self
        };
        store.check_hashed_layout()?;
        Ok(store)
    }

    /// What follows the prefix in `id`'s key: the id, or its hash (an id
    /// read back from a hashed user index is already one).
    fn stored_name<'a>(&self, id: &'a SessionId) -> std::borrow::Cow<'a, SessionId> {
        match self.ids {
            IdsAtRest::Hashed { .. } if !id.is_hashed() => {
                let tag = self.redis.is_cluster().then(|| crate::slot::id_tag(id));
                std::borrow::Cow::Owned(id.hashed(tag))
            }
            _ => std::borrow::Cow::Borrowed(id),
        }
    }

    /// The name a user index entry holds for `id`: see `stored_name`.
    pub(super) fn index_name(&self, id: &SessionId) -> String {
        self.stored_name(id).as_str().to_owned()
    }

    /// The Redis key of a session: `{prefix}{id}`, or `{prefix}{hash}`
    /// with hashed ids.
    pub fn key(&self, id: &SessionId) -> String {
        let name = self.stored_name(id);
        let mut key = String::with_capacity(self.key_prefix.len() + name.as_str().len());
        key.push_str(&self.key_prefix);
        key.push_str(name.as_str());
        key
    }

    /// Whether the migration switch is on and `id` may still sit under its
    /// raw key.
    fn may_be_raw(&self, id: &SessionId) -> bool {
        matches!(self.ids, IdsAtRest::Hashed { adopt_raw: true }) && !id.is_hashed()
    }

    /// Moves session `id` from its raw key to its hashed one, if it is
    /// under the raw key and the switch allows it. True if the session is
    /// now under its hashed key (moved by this call, or by a concurrent
    /// request that met it first): the caller then runs its operation
    /// again.
    async fn adopt_raw(
        &self,
        id: &SessionId,
        policy: Option<&WritePolicy>,
    ) -> Result<bool, StoreError> {
        if !self.may_be_raw(id) {
            return Ok(false);
        }
        let (hashed, raw) = (self.key(id), format!("{}{}", self.key_prefix, id.as_str()));
        let fallback;
        let policy = match policy {
            Some(policy) => policy,
            None => {
                // `adopt` reads no limit: the default policy's script does,
                // and `prepare` loaded it.
                fallback = crate::config::default_policy();
                &fallback
            }
        };
        let scripts = scripts::for_policy(policy);
        let call = invocation(&scripts, Op::Adopt, &[&hashed, &raw], policy);
        // A replay finds the raw key gone and moves nothing: safe.
        let hashed_now: i64 = self.redis.run_script(&call, Retry::Idempotent).await?;
        Ok(hashed_now == 1)
    }

    /// Compares this node's clock with Redis's, once, at start-up: the
    /// scripts trust the app node's clock (see `lua/prelude.lua`), and a
    /// skew of `d` moves every absolute end and refresh by `d`. Past
    /// [`CLOCK_SKEW_WARNING`] it says so, at WARN, so that a node with a
    /// broken clock is found before it ends sessions early.
    async fn check_clock(&self) -> Result<(), StoreError> {
        let before = SystemTime::now();
        let server = self.redis.server_time().await?;
        let after = SystemTime::now();
        // The middle of the round trip, against the server's reading.
        let local = before
            .checked_add(after.duration_since(before).unwrap_or_default() / 2)
            .unwrap_or(after)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let skew = local.abs_diff(server);
        if skew > CLOCK_SKEW_WARNING {
            log::warn!(
                "this node's clock is {} ms {} Redis's: session lifetimes and refreshes \
                 move by as much (run NTP on every node)",
                skew.as_millis(),
                if local > server { "ahead of" } else { "behind" }
            );
        }
        Ok(())
    }

    /// The least-privilege Redis ACL rules for a user that only serves
    /// sessions under `key_prefix` and user indexes under
    /// `user_index_prefix`: those keys and nothing else, and only the
    /// commands this store sends, including those its script calls (Redis
    /// checks a script's commands against the caller's ACL too). Give it to
    /// `ACL SETUSER <user> on ><password> <rules>`, or to a `user` line of
    /// an ACL file.
    ///
    /// ```
    /// let rules = session::RedisSessionStore::acl_rules("sid_", "user_sessions:");
    /// assert!(rules.starts_with("resetkeys ~sid_* ~user_sessions:* resetchannels -@all "));
    /// assert!(rules.contains(" +evalsha ") && !rules.contains("+@"));
    /// ```
    ///
    /// The set is proven by the store behaviour suite, which runs under
    /// exactly these rules over TLS (`tests/tls_acl_store.rs`).
    pub fn acl_rules(key_prefix: &str, user_index_prefix: &str) -> String {
        // Glob characters in a prefix are escaped: a prefix `a*` must not
        // open every key starting with `a`.
        let pattern = |prefix: &str| {
            let mut pattern = String::with_capacity(prefix.len() + 1);
            for c in prefix.chars() {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern
        };
        let commands = [
            // Health checks. (redis-rs's `CLIENT SETINFO` on connect may be
            // denied: it ignores the answer, and 7.0 has no such command.)
            "+ping",
            // Sentinel mode checks the master's role; cluster mode reads the
            // slot map and follows ASK redirects.
            "+role",
            "+cluster|slots",
            "+cluster|shards",
            "+asking",
            // The session scripts: loaded at start-up, then EVALSHA; after a
            // restart that lost them, SCRIPT LOAD again (never EVAL).
            "+script|load",
            "+evalsha",
            // Loads, and logout.
            "+hgetall",
            "+pttl",
            "+unlink",
            // Sentinel and Cluster: a logout or a login waits for a replica.
            "+wait",
            // Inside the session scripts (lua/).
            "+exists",
            "+hget",
            "+hset",
            "+hdel",
            "+hmget",
            "+hkeys",
            "+hincrby",
            "+pexpire",
            "+rename",
            "+del",
            "+time",
            // Inside user_index.lua (its HGET, HSET, HDEL, HINCRBY, EXISTS,
            // PEXPIRE and TIME are above): a user's sorted set of sessions.
            "+hexists",
            "+zadd",
            "+zcard",
            "+zrange",
            "+zscore",
            // The user index checks the old layout's keys before using them.
            "+type",
            "+zrem",
        ];
        format!(
            "resetkeys ~{}* ~{}* resetchannels -@all {}",
            pattern(key_prefix),
            pattern(user_index_prefix),
            commands.join(" ")
        )
    }

    /// The prefix of every session key.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The client this store uses.
    pub fn redis(&self) -> &RedisService {
        &self.redis
    }

    /// Runs a script that replies with a status, and turns the limit codes
    /// into errors.
    async fn write(
        &self,
        call: &ScriptCall<'_>,
        policy: &WritePolicy,
        retry: Retry,
    ) -> Result<i64, StoreError> {
        let status: i64 = self.redis.run_script(call, retry).await?;
        Self::check_status(status, policy)
    }

    /// The limit and data codes every script shares, as errors.
    fn check_status(status: i64, policy: &WritePolicy) -> Result<i64, StoreError> {
        match status {
            -2 => Err(StoreError::LimitExceeded(Limit::Fields(
                policy.max_fields(),
            ))),
            -3 => Err(StoreError::LimitExceeded(Limit::Bytes(policy.max_bytes()))),
            -4 => Err(StoreError::InvalidData(
                "the field is not a 64-bit integer, or the sum overflows".into(),
            )),
            _ => Ok(status),
        }
    }
}

/// A call of `op`'s script with its first argument, ARGV[1]: now; before
/// it, for a TTL per call, the TTL (the scripts take it off first: see
/// `scripts.rs`).
fn invocation<'a>(
    scripts: &'a Scripts,
    op: Op,
    keys: &[&str],
    policy: &WritePolicy,
) -> ScriptCall<'a> {
    let mut call = ScriptCall::new(scripts.get(op), keys);
    if policy.ttl_per_call() {
        call.arg(millis(policy.idle_timeout()));
    }
    call.arg(now_ms());
    call
}

/// ARGV[2..]: clear flag, removal count, removals, then field/value pairs.
fn add_changes(call: &mut ScriptCall<'_>, changes: &Changes) {
    call.arg(if changes.clear { "1" } else { "0" })
        .arg(changes.removals.len());
    for field in &changes.removals {
        call.arg(field);
    }
    for (field, value) in &changes.upserts {
        call.arg(field).arg(value);
    }
}

impl From<RedisClientError> for StoreError {
    fn from(error: RedisClientError) -> Self {
        match error {
            RedisClientError::Unavailable { .. } => Self::Unavailable(Box::new(error)),
            RedisClientError::InvalidSettings(_) | RedisClientError::Misconfigured { .. } => {
                Self::Misconfigured(Box::new(error))
            }
            // WRONGTYPE, a script error, CROSSSLOT, a reply of the wrong
            // shape, and anything new. (A load maps its own unreadable
            // reply, a field that is not UTF-8, to bad data: see `load`.)
            _ => Self::Backend(Box::new(error)),
        }
    }
}

/// Each write once, on the key `key(id)` names: the trait's methods add
/// the hash_ids migration around them.
impl RedisSessionStore {
    async fn load_once(
        &self,
        id: &SessionId,
        from_master: bool,
    ) -> Result<Option<LoadedSession>, StoreError> {
        let key = self.key(id);
        let found = if from_master {
            self.redis.hash_get_all_with_ttl_from_master(&key).await
        } else {
            self.redis.hash_get_all_with_ttl(&key).await
        };
        let found = found.map_err(|error| match error {
            // The fields could not be read as text: bytes that are not
            // UTF-8, which another writer put in this one session.
            RedisClientError::BadReply(_) => StoreError::InvalidData(Box::new(error)),
            other => other.into(),
        })?;
        Ok(found.map(|(fields, ttl_ms)| {
            LoadedSession::from_stored(fields, ttl_ms.map(std::time::Duration::from_millis))
        }))
    }

    async fn update_once(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        let key = self.key(id);
        let scripts = scripts::for_policy(policy);
        let mut call = invocation(&scripts, Op::Update, &[&key], policy);
        add_changes(&mut call, changes);
        // A TTL refresh may run twice. Field writes may not: replayed after
        // another request's write of the same field, ours would undo theirs.
        let retry = if changes.is_empty() {
            Retry::Idempotent
        } else {
            Retry::NotIdempotent
        };
        Ok(self.write(&call, policy, retry).await? == 1)
    }

    async fn renew_once(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        let (old_key, new_key) = (self.key(old), self.key(new));
        let scripts = scripts::for_policy(policy);
        let mut call = invocation(&scripts, Op::Renew, &[&old_key, &new_key], policy);
        add_changes(&mut call, changes);
        // A login: on Sentinel and Cluster it waits for a replica, so that
        // a failover cannot hand the old id back. Never replayed: a replay
        // would find the old id gone and report the session missing.
        let status: i64 = self.redis.run_script_durably(&call, &old_key).await?;
        Ok(match Self::check_status(status, policy)? {
            1 => Renewal::Renewed,
            -1 => Renewal::Taken,
            _ => Renewal::Missing,
        })
    }

    async fn increment_once(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        policy: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        let key = self.key(id);
        let scripts = scripts::for_policy(policy);
        let mut call = invocation(&scripts, Op::Incr, &[&key], policy);
        call.arg(field).arg(by);
        // Never replayed after a lost reply: that could count twice. A
        // reply that is neither a value nor a status is a fault of the
        // script (a bad reply), not of the session's data.
        let reply: IncrReply = self.redis.run_script(&call, Retry::NotIdempotent).await?;
        match reply {
            IncrReply::Value(value) => Ok(Some(value)),
            IncrReply::Status(0) => Ok(None),
            IncrReply::Status(status) => {
                Self::check_status(status, policy)?;
                // Any other status is a fault of the script.
                Err(StoreError::Backend(
                    format!("incr replied with the unknown status {status}").into(),
                ))
            }
        }
    }

    async fn compare_and_set_once(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        policy: &WritePolicy,
    ) -> Result<Option<bool>, StoreError> {
        let key = self.key(id);
        let scripts = scripts::for_policy(policy);
        let mut call = invocation(&scripts, Op::Cas, &[&key], policy);
        call.arg(field)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.unwrap_or(""));
        // A replay would see its own new value and report a lost race.
        Ok(
            match self.write(&call, policy, Retry::NotIdempotent).await? {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
        )
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        let found = self.load_once(id, false).await?;
        if found.is_none() && self.adopt_raw(id, None).await? {
            return self.load_once(id, false).await;
        }
        Ok(found)
    }

    async fn load_from_primary(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        let found = self.load_once(id, true).await?;
        if found.is_none() && self.adopt_raw(id, None).await? {
            return self.load_once(id, true).await;
        }
        Ok(found)
    }

    fn reads_from_replicas(&self) -> bool {
        self.redis.reads_from_replicas()
    }

    async fn create(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        // The limits first, in Rust: a new session holds exactly these
        // fields, so nothing in Redis needs reading, and create.lua need not
        // count them.
        // (With no fields to start from, a clear or a removal changes
        // nothing: the upserts alone are counted.)
        limits::check_limits(None, changes, policy)?;
        let key = self.key(id);
        let scripts = scripts::for_policy(policy);
        let mut call = invocation(&scripts, Op::Create, &[&key], policy);
        for (field, value) in &changes.upserts {
            call.arg(field).arg(value);
        }
        // A replay would find its own key and report the id as taken.
        Ok(self.write(&call, policy, Retry::NotIdempotent).await? == 1)
    }

    async fn update(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        if self.update_once(id, changes, policy).await? {
            return Ok(true);
        }
        if self.adopt_raw(id, Some(policy)).await? {
            return self.update_once(id, changes, policy).await;
        }
        Ok(false)
    }

    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        let renewal = self.renew_once(old, new, changes, policy).await?;
        if renewal == Renewal::Missing && self.adopt_raw(old, Some(policy)).await? {
            return self.renew_once(old, new, changes, policy).await;
        }
        Ok(renewal)
    }

    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        policy: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        let counted = self.increment_once(id, field, by, policy).await?;
        if counted.is_none() && self.adopt_raw(id, Some(policy)).await? {
            return self.increment_once(id, field, by, policy).await;
        }
        Ok(counted)
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        policy: &WritePolicy,
    ) -> Result<Option<bool>, StoreError> {
        let swapped = self
            .compare_and_set_once(id, field, expected, new, policy)
            .await?;
        if swapped.is_none() && self.adopt_raw(id, Some(policy)).await? {
            return self
                .compare_and_set_once(id, field, expected, new, policy)
                .await;
        }
        Ok(swapped)
    }

    fn id_for_renewal(&self, old: &SessionId) -> SessionId {
        // Only a cluster refuses a RENAME across slots. Elsewhere any fresh
        // id will do, and the search would be pure cost.
        if !self.redis.is_cluster() {
            return SessionId::generate();
        }
        match self.ids {
            IdsAtRest::Raw => crate::slot::generate_in_same_slot(&self.key_prefix, old),
            // A prefix with a hash tag puts every key in one slot.
            IdsAtRest::Hashed { .. } if crate::slot::has_hash_tag(&self.key_prefix) => {
                SessionId::generate()
            }
            IdsAtRest::Hashed { .. } => {
                let slot = crate::slot::key_slot(self.key(old).as_bytes());
                crate::slot::generate_with_tag_in_slot(slot, old).unwrap_or_else(|| {
                    // Only an id whose tag no fresh id can share (a legacy
                    // one): the rename will fail with CROSSSLOT, loudly.
                    log::error!("no fresh id shares the slot of session {old}'s key");
                    SessionId::generate()
                })
            }
        }
    }

    fn hashes_ids(&self) -> bool {
        self.ids != IdsAtRest::Raw
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        // A logout: on Sentinel and Cluster it waits for a replica, so that
        // a failover cannot bring the session back; unconfirmed, it fails.
        if self.may_be_raw(id) {
            // Under either key (never on a cluster): both in ONE UNLINK, so
            // that no adoption can move the session between two deletes.
            let raw = format!("{}{}", self.key_prefix, id.as_str());
            let removed = self
                .redis
                .delete_all_durably(&[&self.key(id), &raw])
                .await?;
            return Ok(removed > 0);
        }
        Ok(self.redis.delete_durably(&self.key(id)).await?)
    }

    async fn load_many(&self, ids: &[SessionId]) -> Result<Vec<Option<LoadedSession>>, StoreError> {
        // Concurrently: on one server they pipeline on the thread's
        // connection (one round trip); on a cluster each goes to its node.
        futures_util::future::join_all(ids.iter().map(|id| self.load(id)))
            .await
            .into_iter()
            .collect()
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, StoreError> {
        self.user_epoch_of(user).await
    }

    async fn join_user(
        &self,
        user: &str,
        epoch: u64,
        entry: &UserEntry,
        policy: &WritePolicy,
        cap: usize,
    ) -> Result<Option<Vec<UserEntry>>, StoreError> {
        self.join_user_index(user, epoch, entry, policy, cap).await
    }

    async fn user_entries(
        &self,
        user: &str,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        self.user_index_entries(user, policy).await
    }

    async fn rejoin_user(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError> {
        self.rejoin_user_index(user, handle, old, new).await
    }

    async fn take_user_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError> {
        self.take_user_index_entry(user, handle).await
    }

    async fn revoke_user(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        self.revoke_user_index(user, spare, policy).await
    }

    async fn drop_user_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError> {
        self.drop_user_index_entries(user, handles).await
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        self.check_clock().await?;
        // With the scripts of the default policy: a store that serves it
        // (the middleware's defaults) has each script loaded from the start.
        let defaults = scripts::for_policy(&crate::config::default_policy());
        let mut sources: Vec<&str> = defaults.sources().collect();
        sources.extend(self.user_scripts());
        Ok(self.redis.load_scripts(&sources).await?)
    }

    async fn prepare_policy(&self, policy: &WritePolicy) -> Result<(), StoreError> {
        let scripts = scripts::for_policy(policy);
        let sources: Vec<&str> = scripts.sources().collect();
        Ok(self.redis.load_scripts(&sources).await?)
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(self.redis.ping().await?)
    }
}
