//! [`RedisSessionStore`]: sessions as Redis hashes, shared by every app node.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis_client::ScriptCall;
use redis_client::redis::Script;
use redis_client::{RedisClientError, RedisService, Retry};

use super::{
    Changes, Limit, LoadedSession, Renewal, SessionStore, StoreError, WritePolicy, millis,
};
use crate::SessionId;

/// Every write, in one script: `session_write.lua` beside this file.
static SESSION_WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("session_write.lua")));

/// Sessions as Redis hashes at `{key_prefix}{id}` (by default `sid_<id>`,
/// the NestJS design's layout), one field per attribute, plus the metadata
/// fields `__created` and `__seen`. The key's TTL is the idle timeout, cut
/// short by the absolute lifetime.
///
/// Reads are `HGETALL` + `PTTL` in one pipeline; every write is one
/// `EVALSHA` of `session_write.lua`. Each method is one round trip.
#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    /// The pooled client; shared with anything else that was handed a clone.
    redis: RedisService,
    /// Prepended to every id to make the key, e.g. `sid_`.
    key_prefix: String,
}

/// What the script reports: see the header of `session_write.lua`.
type ScriptReply = (i64, String);

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

    /// The least-privilege Redis ACL rules for a user that only serves
    /// sessions under `key_prefix`: its keys and nothing else, and only the
    /// commands this store sends, including those its script calls (Redis
    /// checks a script's commands against the caller's ACL too). Give it to
    /// `ACL SETUSER <user> on ><password> <rules>`, or to a `user` line of
    /// an ACL file.
    ///
    /// ```
    /// let rules = session::RedisSessionStore::acl_rules("sid_");
    /// assert!(rules.starts_with("resetkeys ~sid_* resetchannels -@all "));
    /// assert!(rules.contains(" +evalsha ") && !rules.contains("+@"));
    /// ```
    ///
    /// The set is proven by the store behaviour suite, which runs under
    /// exactly these rules over TLS (`tests/tls_acl_store.rs`).
    pub fn acl_rules(key_prefix: &str) -> String {
        // Glob characters in the prefix are escaped: a prefix `a*` must not
        // open every key starting with `a`.
        let mut pattern = String::with_capacity(key_prefix.len() + 1);
        for c in key_prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
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
            // The session script: loaded at start-up, then EVALSHA (EVAL
            // after a restart that lost it).
            "+script|load",
            "+evalsha",
            "+eval",
            // Loads, and logout.
            "+hgetall",
            "+pttl",
            "+unlink",
            // Inside session_write.lua.
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
        ];
        format!(
            "resetkeys ~{pattern}* resetchannels -@all {}",
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

    /// Runs the script and turns the limit codes into errors.
    async fn write(
        &self,
        call: &ScriptCall<'_>,
        policy: &WritePolicy,
        retry: Retry,
    ) -> Result<ScriptReply, StoreError> {
        let reply: ScriptReply = self.redis.run_script(call, retry).await?;
        match reply.0 {
            -2 => Err(StoreError::LimitExceeded(Limit::Fields(policy.max_fields))),
            -3 => Err(StoreError::LimitExceeded(Limit::Bytes(policy.max_bytes))),
            -4 => Err(StoreError::InvalidData(
                "the field is not a 64-bit integer, or the sum overflows".into(),
            )),
            _ => Ok(reply),
        }
    }
}

/// The arguments every op starts with: ARGV[1..=5].
fn invocation(keys: &[&str], op: &str, policy: &WritePolicy) -> ScriptCall<'static> {
    let mut call = ScriptCall::new(&SESSION_WRITE, keys);
    call.arg(op)
        .arg(millis(policy.idle_timeout))
        .arg(policy.absolute_timeout.map_or(0, millis))
        .arg(policy.max_fields)
        .arg(policy.max_bytes);
    call
}

/// ARGV[6..]: clear flag, removal count, removals, then field/value pairs.
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
        if error.is_unavailable() {
            Self::Unavailable(Box::new(error))
        } else {
            Self::InvalidData(Box::new(error))
        }
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        let found = self.redis.hash_get_all_with_ttl(&self.key(id)).await?;
        Ok(found.map(|(fields, ttl_ms)| {
            LoadedSession::from_stored(fields, ttl_ms.map(std::time::Duration::from_millis))
        }))
    }

    async fn create(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        let key = self.key(id);
        let mut call = invocation(&[&key], "create", policy);
        add_changes(&mut call, changes);
        // A replay would find its own key and report the id as taken.
        Ok(self.write(&call, policy, Retry::NotIdempotent).await?.0 == 1)
    }

    async fn update(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        let key = self.key(id);
        let mut call = invocation(&[&key], "update", policy);
        add_changes(&mut call, changes);
        // A TTL refresh may run twice. Field writes may not: replayed after
        // another request's write of the same field, ours would undo theirs.
        let retry = if changes.is_empty() {
            Retry::Idempotent
        } else {
            Retry::NotIdempotent
        };
        Ok(self.write(&call, policy, retry).await?.0 == 1)
    }

    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        let (old_key, new_key) = (self.key(old), self.key(new));
        let mut call = invocation(&[&old_key, &new_key], "renew", policy);
        add_changes(&mut call, changes);
        // A replay would find the old id gone and report the session missing.
        Ok(
            match self.write(&call, policy, Retry::NotIdempotent).await?.0 {
                1 => Renewal::Renewed,
                -1 => Renewal::Taken,
                _ => Renewal::Missing,
            },
        )
    }

    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        policy: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        let key = self.key(id);
        let mut call = invocation(&[&key], "incr", policy);
        call.arg(field).arg(by);
        // Never replayed after a lost reply: that could count twice.
        let (status, value) = self.write(&call, policy, Retry::NotIdempotent).await?;
        if status != 1 {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|error| StoreError::InvalidData(Box::new(error)))
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        policy: &WritePolicy,
    ) -> Result<Option<bool>, StoreError> {
        let key = self.key(id);
        let mut call = invocation(&[&key], "cas", policy);
        call.arg(field)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.unwrap_or(""));
        // A replay would see its own new value and report a lost race.
        let (status, swapped) = self.write(&call, policy, Retry::NotIdempotent).await?;
        Ok((status == 1).then_some(swapped == "1"))
    }

    fn id_for_renewal(&self, old: &SessionId) -> SessionId {
        // 16,384 draws on average; getrandom failing here means the OS has
        // no randomness left, where a plain draw would fail the same way.
        crate::slot::generate_in_same_slot(&self.key_prefix, old)
            .unwrap_or_else(|error| panic!("the OS random source failed: {error}"))
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.redis.delete(&self.key(id)).await?)
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(self.redis.load_script(&SESSION_WRITE).await?)
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(self.redis.ping().await?)
    }
}
