//! The user index on Redis: `user_index.lua`, one script for every op, on
//! two keys that share the user's hash tag (one slot on Redis Cluster).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use redis_client::ScriptCall;
use redis_client::redis::Script;

use super::redis::RedisSessionStore;
use super::users::{SessionHandle, UserEntry, user_tag};
use super::{StoreError, USER_INDEX_KEEP, WritePolicy, millis};
use crate::SessionId;

const USER_INDEX_SOURCE: &str = include_str!("user_index.lua");
/// `user_index.lua` for the ops that end sessions or move them (rejoin,
/// take, revoke, drop): flagged `allow-oom` (Redis 7+, Valkey 7.2+), so
/// that at `maxmemory` under `noeviction` a revocation still marks, raises
/// the epoch and drops its entries instead of failing with `OOM`. What
/// they write is a few bytes; what they delete is more.
static USER_INDEX_ENDING_SOURCE: LazyLock<String> =
    LazyLock::new(|| format!("#!lua flags=allow-oom\n{USER_INDEX_SOURCE}"));
/// The same script unflagged, for join and list: a full Redis refuses a
/// new sign-in's entry, as it refuses the sign-in's session.
static USER_INDEX: LazyLock<Script> = LazyLock::new(|| Script::new(USER_INDEX_SOURCE));
static USER_INDEX_ENDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(&USER_INDEX_ENDING_SOURCE));

/// A user's keys: `{user_index_prefix}{<tag>}` and its `:created` sorted
/// set, and, while the store reads it, the same pair in the layout before
/// this version (`{key_prefix}user:{<tag>}`), which shares the hash tag and
/// so the cluster slot.
struct UserKeys {
    index: String,
    created: String,
    legacy: Option<(String, String)>,
}

impl RedisSessionStore {
    fn user_keys(&self, user: &str) -> UserKeys {
        let tag = user_tag(user);
        let index = format!("{}{{{tag}}}", self.user_index_prefix());
        let created = format!("{index}:created");
        // A prefix with a hash tag of its own put the old keys in its slot,
        // not the user's: no script can read them beside the new ones.
        let legacy_readable = !self.key_prefix().contains('{');
        let legacy = (self.reads_legacy_user_index() && legacy_readable).then(|| {
            let index = format!("{}user:{{{tag}}}", self.key_prefix());
            let created = format!("{index}:created");
            (index, created)
        });
        UserKeys {
            index,
            created,
            legacy,
        }
    }

    /// The call's first arguments: op, the absolute lifetime entries are
    /// pruned by (`None`: prune nothing), how long the keys stay at least.
    /// `join` and the epoch read never name the legacy keys: nothing new
    /// is written there.
    fn user_call(keys: &UserKeys, op: &str, policy: Option<&WritePolicy>) -> ScriptCall<'static> {
        let script: &'static Script = match op {
            "join" | "list" => &USER_INDEX,
            _ => &USER_INDEX_ENDING,
        };
        let mut call = match (&keys.legacy, op) {
            (Some((index, created)), "rejoin" | "take" | "list" | "revoke" | "drop") => {
                ScriptCall::new(script, &[&keys.index, &keys.created, index, created])
            }
            _ => ScriptCall::new(script, &[&keys.index, &keys.created]),
        };
        call.arg(op)
            .arg(
                policy
                    .and_then(WritePolicy::absolute_timeout)
                    .map_or(0, millis),
            )
            .arg(millis(USER_INDEX_KEEP));
        call
    }

    /// The user index scripts' sources, for the store to load at start-up.
    pub(super) fn user_scripts(&self) -> [&'static str; 2] {
        [USER_INDEX_SOURCE, &USER_INDEX_ENDING_SOURCE]
    }

    pub(super) async fn user_epoch_of(&self, user: &str) -> Result<u64, StoreError> {
        let keys = self.user_keys(user);
        let epoch = self.redis().hash_get(&keys.index, "epoch").await?;
        epoch.map_or(Ok(0), |text| {
            text.parse()
                .map_err(|_| StoreError::Backend("a user index epoch is not a number".into()))
        })
    }

    pub(super) async fn join_user_index(
        &self,
        user: &str,
        epoch: u64,
        entry: &UserEntry,
        policy: &WritePolicy,
        cap: usize,
    ) -> Result<Option<Vec<UserEntry>>, StoreError> {
        let keys = self.user_keys(user);
        let mut call = Self::user_call(&keys, "join", Some(policy));
        call.arg(epoch)
            .arg(entry.handle.as_str())
            // With hashed ids, the hash: the index names no usable id.
            .arg(self.index_name(&entry.id))
            .arg(since_epoch_ms(entry.created))
            .arg(cap);
        // Durable: an entry a failover lost would be a session that "sign
        // out everywhere" cannot find.
        let reply: Vec<String> = self.redis().run_script_durably(&call, &keys.index).await?;
        match reply.split_first() {
            Some((status, rest)) if status == "1" => Ok(Some(parse_entries(rest)?)),
            Some((status, _)) if status == "0" => Ok(None),
            _ => Err(StoreError::Backend("user_index.lua join: odd reply".into())),
        }
    }

    pub(super) async fn rejoin_user_index(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError> {
        let keys = self.user_keys(user);
        let mut call = Self::user_call(&keys, "rejoin", None);
        call.arg(handle.as_str()).arg(self.index_name(new));
        // The names the entry may hold for the old id: the store's own,
        // and with hashed ids the raw one too (an entry written before
        // session.hash_ids was turned on).
        let stored = self.index_name(old);
        if stored != old.as_str() {
            call.arg(old.as_str());
        }
        call.arg(stored);
        // Durable, as a join: a move that a failover lost would leave the
        // entry naming a dead id, and the live session out of reach.
        let reply: Vec<String> = self.redis().run_script_durably(&call, &keys.index).await?;
        match reply.first().map(String::as_str) {
            Some("1") => Ok(true),
            Some("0") => Ok(false),
            _ => Err(StoreError::Backend(
                "user_index.lua rejoin: odd reply".into(),
            )),
        }
    }

    pub(super) async fn take_user_index_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError> {
        let keys = self.user_keys(user);
        let mut call = Self::user_call(&keys, "take", None);
        call.arg(handle.as_str());
        // Durable: a mark that a failover lost would let a renewal move
        // the entry away from the revocation. Marking twice marks the same.
        let reply: Vec<String> = self.redis().run_script_durably(&call, &keys.index).await?;
        Ok(parse_entries(&reply)?.into_iter().next())
    }

    pub(super) async fn user_index_entries(
        &self,
        user: &str,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        let keys = self.user_keys(user);
        let call = Self::user_call(&keys, "list", Some(policy));
        // Pruning twice prunes the same: safe to send again.
        let reply: Vec<String> = self
            .redis()
            .run_script(&call, redis_client::Retry::Idempotent)
            .await?;
        parse_entries(&reply)
    }

    pub(super) async fn revoke_user_index(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        let keys = self.user_keys(user);
        let mut call = Self::user_call(&keys, "revoke", Some(policy));
        call.arg(spare.map_or("", SessionHandle::as_str));
        // Durable: a raise of the epoch that a failover lost would let a
        // racing sign-in join after all.
        let reply: Vec<String> = self.redis().run_script_durably(&call, &keys.index).await?;
        parse_entries(&reply)
    }

    pub(super) async fn drop_user_index_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError> {
        if handles.is_empty() {
            return Ok(());
        }
        let keys = self.user_keys(user);
        let mut call = Self::user_call(&keys, "drop", None);
        for handle in handles {
            call.arg(handle.as_str());
        }
        let _: Vec<String> = self
            .redis()
            .run_script(&call, redis_client::Retry::Idempotent)
            .await?;
        Ok(())
    }
}

/// `{handle, id, created ms, ...}` as entries. Anything malformed is a
/// fault of the index, not of one user's data.
fn parse_entries(flat: &[String]) -> Result<Vec<UserEntry>, StoreError> {
    if !flat.len().is_multiple_of(3) {
        return Err(StoreError::Backend("user_index.lua: odd reply".into()));
    }
    flat.chunks_exact(3)
        .map(|triple| {
            let handle = SessionHandle::parse(&triple[0]);
            let id = SessionId::parse(&triple[1]).or_else(|| SessionId::parse_hashed(&triple[1]));
            let created = triple[2]
                .parse::<f64>()
                .ok()
                .filter(|ms| ms.is_finite() && *ms >= 0.0);
            match (handle, id, created) {
                (Some(handle), Some(id), Some(ms)) => Ok(UserEntry {
                    handle,
                    id,
                    // Scores come back as text; whole ms by construction.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    created: SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64),
                }),
                _ => Err(StoreError::Backend(
                    "a user index entry is not a handle, a session id and a time".into(),
                )),
            }
        })
        .collect()
}

fn since_epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
