//! [`RedisService`]: the hash operations sessions need, one round trip each.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::ScriptCall;
use deadpool::managed::{Object, PoolError};
use deadpool_redis::redis::{
    self, Cmd, ErrorKind, FromRedisValue, RedisError, Script, ServerErrorKind,
};

use crate::error::POOL_TIMEOUT;
use crate::pool::{Connection, ConnectionManager, Pool, Role, SharedConnection, build_pool};
use crate::sentinel_watch::{self, FailoverState, Watchers};
use crate::{RedisClientError, RedisMode, RedisSettings, metric_names};
use deadpool_redis::redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};

/// Connections and their states, for health checks and metrics.
pub use deadpool::Status as PoolStatus;

/// A pooled Redis client offering hash operations that each cost ONE round
/// trip: a single command, or a Lua script run with EVALSHA.
///
/// Cheap to clone (the pool is shared), and meant to be built once per
/// process. Every operation finishes within the configured timeouts, and a
/// connection whose command failed is dropped rather than handed out again.
#[derive(Clone)]
pub struct RedisService {
    /// Connections to the master (or the server, or the cluster); clones of
    /// the service share them.
    primary: Lane,
    /// Sentinel with `redis.read_from_replicas`: connections to a replica,
    /// for session loads only.
    replica: Option<Lane>,
    /// `redis.url` without its password, for messages.
    redacted_url: String,
    /// Sentinel mode: the tasks that watch the Sentinels' event channels
    /// (see `sentinel_watch.rs`), stopped by [`RedisService::close`].
    watchers: Option<Arc<Watchers>>,
}

/// A pool and its key in the per-thread leases.
#[derive(Clone)]
struct Lane {
    pool: Pool,
    pool_id: u64,
    /// Redis Cluster: redirects are followed per command, not inside a
    /// pipeline, so reads that go together are one script instead.
    cluster: bool,
    /// `redis.idle_check_after_ms`: a leased connection unused this long is
    /// PINGed before the next request rides on it.
    idle_check_after: Duration,
    /// The most a thread waits to lease or open its connection:
    /// `wait_timeout_ms + connect_timeout_ms`.
    lease_budget: Duration,
    /// Sentinel mode: refuses calls while the master is being replaced.
    failover: Option<Arc<FailoverState>>,
    /// Where a failover can lose a write (Sentinel, Cluster), unless
    /// `redis.durable_write_timeout_ms` is 0: what durable writes use.
    durable: Option<Durable>,
}

/// Durable writes (a write, then `WAIT 1 <ms>`) run on connections of
/// their own: WAIT blocks the client that sends it, so on a thread's
/// shared connection it would hold up every request behind it, and taken
/// from the lane's pool a burst of logouts facing a slow replica would hold
/// the connections that new threads need. A second, smaller pool keeps
/// them apart.
#[derive(Clone)]
struct Durable {
    pool: Pool,
    /// `redis.durable_write_timeout_ms`.
    wait: Duration,
}

impl Lane {
    fn new(
        settings: &RedisSettings,
        role: Role,
        failover: Option<Arc<FailoverState>>,
    ) -> Result<Self, RedisClientError> {
        Ok(Self {
            pool: build_pool(settings, role, failover.clone(), settings.pool_max_size)?,
            failover: failover.clone(),
            pool_id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            cluster: settings.mode == RedisMode::Cluster,
            idle_check_after: Duration::from_millis(settings.idle_check_after_ms),
            lease_budget: settings.wait_timeout() + settings.connect_timeout(),
            durable: if role == Role::Master
                && settings.mode != RedisMode::Standalone
                && settings.durable_write_timeout_ms > 0
            {
                let size = (settings.pool_max_size / 2).max(1);
                Some(Durable {
                    pool: build_pool(settings, role, failover.clone(), size)?,
                    wait: Duration::from_millis(settings.durable_write_timeout_ms),
                })
            } else {
                None
            },
        })
    }
}

/// `EVALSHA`; on `NOSCRIPT` (a restarted or flushed server, or a new node
/// after a failover) loads the script and sends the call again, once.
async fn invoke<T: FromRedisValue>(
    call: &ScriptCall<'_>,
    connection: &mut impl redis::aio::ConnectionLike,
) -> Result<T, RedisError> {
    match call.command().query_async(connection).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            call.script().load_async(connection).await?;
            call.command().query_async(connection).await
        }
        result => result,
    }
}

/// Sends one request on `connection`.
async fn send<T: FromRedisValue>(
    request: Request<'_>,
    connection: &mut Connection,
) -> Result<T, RedisError> {
    match request {
        Request::Command(command) => command.query_async(connection).await,
        Request::Script(call) => invoke(call, connection).await,
        Request::Pipeline(pipeline) => pipeline.query_async(connection).await,
        Request::Load(script) => match script.load_async(connection).await {
            Ok(sha) => {
                T::from_redis_value(redis::Value::SimpleString(sha)).map_err(RedisError::from)
            }
            Err(error) => Err(error),
        },
    }
}

/// `HGETALL` and `PTTL` of one key as ONE command, for Redis Cluster: the
/// cluster client follows `MOVED` / `ASK` for a command, but hands back a
/// pipeline's in-band redirect as an error (found by the slot migration
/// test in `crates/session/tests/cluster_store.rs`). Read-only.
static HASH_WITH_TTL: LazyLock<Script> = LazyLock::new(|| {
    Script::new("return {redis.call('HGETALL', KEYS[1]), redis.call('PTTL', KEYS[1])}")
});

impl std::fmt::Debug for RedisService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisService")
            .field("url", &self.redacted_url)
            .field("pool", &self.primary.pool.status())
            .field(
                "replica_pool",
                &self.replica.as_ref().map(|lane| lane.pool.status()),
            )
            .finish()
    }
}

/// Whether a request may be sent a second time when it is unknown whether
/// Redis ran it, and what [`RedisService`] does on a failure.
///
/// Every request is retried once, on a new connection, when Redis answered
/// that it did not run it (`READONLY` from a master demoted by a failover,
/// `MASTERDOWN`, `LOADING`, `TRYAGAIN`, `CLUSTERDOWN`). When the connection
/// dropped under the request, Redis may have run it and only the reply was
/// lost: then only [`Retry::Idempotent`] requests go again. Timeouts are
/// never retried: the time budget is spent, and the request may still run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Running it twice leaves Redis as running it once, even with other
    /// clients writing in between: reads, `UNLINK`, `EXPIRE`, a TTL refresh.
    Idempotent,
    /// A second run could count twice (`HINCRBY`), undo a concurrent
    /// writer's newer value (`HSET` replayed after someone else's), or
    /// report a different outcome (a compare-and-set, a rename). Retried
    /// only when Redis proved it did not run the first. A caller that sees
    /// the error cannot know whether the write happened: at most once.
    NotIdempotent,
}

impl Retry {
    fn allows_another_try_after(self, error: &RedisClientError) -> bool {
        error.proves_not_run() || (self == Self::Idempotent && error.is_dropped_connection())
    }
}

/// One request to send: a plain command or a script call.
#[derive(Clone, Copy)]
enum Request<'a> {
    Command(&'a Cmd),
    Script(&'a ScriptCall<'a>),
    /// Several commands sent together: one round trip.
    Pipeline(&'a redis::Pipeline),
    /// `SCRIPT LOAD`, so that the first EVALSHA finds the script.
    Load(&'a Script),
}

impl RedisService {
    /// Validates the settings and builds the pool. Connects lazily: call
    /// [`RedisService::wait_until_ready`] to find out whether Redis answers.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::InvalidSettings`] for settings that can never work,
    /// such as a malformed URL or a pool of size 0.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisClientError> {
        settings.validate()?;
        let failover =
            (settings.mode == RedisMode::Sentinel).then(|| Arc::new(FailoverState::default()));
        let primary = Lane::new(settings, Role::Master, failover.clone())?;
        let replica = settings
            .read_from_replicas
            .then(|| Lane::new(settings, Role::Replica, failover.clone()))
            .transpose()?;
        let watchers = match failover {
            Some(state) => sentinel_watch::spawn(
                &settings.sentinels,
                crate::pool::tls_certificates(settings)?.filter(|_| settings.uses_tls()),
                &settings.master_name,
                state,
            )
            .map(Arc::new),
            None => None,
        };
        Ok(Self {
            primary,
            replica,
            redacted_url: settings.redacted_target(),
            watchers,
        })
    }

    /// How many connections exist, how many are idle, how many requests wait.
    pub fn pool_status(&self) -> PoolStatus {
        self.primary.pool.status()
    }

    /// True in `redis.mode = "cluster"`: keys that one script touches must
    /// then share a hash slot.
    pub fn is_cluster(&self) -> bool {
        self.primary.cluster
    }

    /// Where this service connects (the URL, or the cluster's seed nodes),
    /// with any password hidden.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Retries PING until Redis answers or `max_wait` has passed.
    ///
    /// # Errors
    ///
    /// The last [`RedisClientError`] seen when time ran out.
    pub async fn wait_until_ready(&self, max_wait: Duration) -> Result<(), RedisClientError> {
        let deadline = Instant::now() + max_wait;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.ping().await {
                Ok(()) => break,
                // A wrong password or ACL does not fix itself: say so now.
                Err(error) if error.is_misconfigured() => return Err(error),
                Err(error) if Instant::now() + pause < deadline => {
                    log::debug!("Redis at {} not ready yet: {error}", self.redacted_url);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(error) => return Err(error),
            }
        }
        self.warn_if_no_replica().await;
        Ok(())
    }

    /// Durable writes wait for a replica: on a Sentinel master without one,
    /// every logout and login would answer 503. Said once, loudly, at
    /// start-up. (A cluster's masters are not asked: that takes a walk of
    /// the topology; the first 503 says it there.)
    async fn warn_if_no_replica(&self) {
        if self.primary.durable.is_none() || self.primary.cluster {
            return;
        }
        let role: Result<redis::Role, _> = self
            .primary
            .read(Request::Command(&redis::cmd("ROLE")))
            .await;
        if let Ok(redis::Role::Primary { replicas, .. }) = role
            && replicas.is_empty()
        {
            log::warn!(
                "the Redis master has no replica, and logouts and logins wait for one (redis.durable_write_timeout_ms): they will answer 503 until a replica is attached; set redis.durable_write_timeout_ms = 0 for a group without replicas"
            );
        }
    }

    /// One PING.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Unavailable`] when Redis does not answer.
    pub async fn ping(&self) -> Result<(), RedisClientError> {
        // A read: answered during a Sentinel promotion too, so that every
        // node's readiness does not fail at the same moment.
        let _pong: String = self
            .primary
            .read(Request::Command(&redis::cmd("PING")))
            .await?;
        Ok(())
    }

    /// The server's clock (`TIME`), as time since the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Unavailable`] when Redis does not answer,
    /// [`RedisClientError::BadReply`] for a reply that is not two integers.
    pub async fn server_time(&self) -> Result<Duration, RedisClientError> {
        let (seconds, micros): (u64, u64) = self
            .primary
            .read(Request::Command(&redis::cmd("TIME")))
            .await?;
        Ok(Duration::from_secs(seconds) + Duration::from_micros(micros))
    }

    /// One server setting (`CONFIG GET <name>`): `None` when the server has
    /// no such setting. On Redis Cluster, the node the client picks.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Misconfigured`] when the ACL denies `CONFIG`
    /// (managed offerings often do), [`RedisClientError::Rejected`] when
    /// the server renamed or lacks it, else unavailable.
    pub async fn config_get(&self, name: &str) -> Result<Option<String>, RedisClientError> {
        let mut command = redis::cmd("CONFIG");
        command.arg("GET").arg(name);
        // A map in RESP3, pairs in RESP2: both read as one.
        let mut settings: HashMap<String, String> =
            self.primary.read(Request::Command(&command)).await?;
        Ok(settings.remove(name))
    }

    /// All fields of a hash (`HGETALL`). An absent key gives an empty map.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Rejected`] if the key holds another type,
    /// [`RedisClientError::BadReply`] if a field is not UTF-8, else unavailable.
    pub async fn hash_get_all(
        &self,
        key: &str,
    ) -> Result<HashMap<String, String>, RedisClientError> {
        let mut command = redis::cmd("HGETALL");
        command.arg(key);
        self.primary.read(Request::Command(&command)).await
    }

    /// One field of a hash (`HGET`); `None` if the key or field is absent.
    ///
    /// # Errors
    ///
    /// As [`RedisService::hash_get_all`].
    pub async fn hash_get(
        &self,
        key: &str,
        field: &str,
    ) -> Result<Option<String>, RedisClientError> {
        let mut command = redis::cmd("HGET");
        command.arg(key).arg(field);
        self.primary.read(Request::Command(&command)).await
    }

    /// All fields of a hash and its remaining TTL in milliseconds, in one
    /// round trip (`HGETALL` and `PTTL`, pipelined; on a cluster, one
    /// read-only script, so that `MOVED` / `ASK` are followed). `None` for
    /// an absent key.
    ///
    /// With `redis.read_from_replicas` (Sentinel), asked of a replica first,
    /// then of the master if the replica lacks the key or fails: see
    /// [`RedisSettings::read_from_replicas`] for the staleness this allows.
    ///
    /// # Errors
    ///
    /// As [`RedisService::hash_get_all`].
    pub async fn hash_get_all_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(HashMap<String, String>, Option<u64>)>, RedisClientError> {
        if let Some(replica) = &self.replica {
            // A replica that lacks the key may just lag behind a session
            // created a moment ago (or be cut off): the master decides.
            match Self::fields_and_ttl(replica, key).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(error) => log::debug!("replica read failed, asking the master: {error}"),
            }
            metrics::counter!(metric_names::REPLICA_FALLBACKS_TOTAL).increment(1);
        }
        Self::fields_and_ttl(&self.primary, key).await
    }

    /// As [`RedisService::hash_get_all_with_ttl`], from the master alone,
    /// whatever `redis.read_from_replicas` says: for a read whose answer
    /// authorises a write (who is signed in, before revoking sessions), which
    /// a replica that has not yet seen a logout must not give.
    ///
    /// # Errors
    ///
    /// As [`RedisService::hash_get_all`].
    pub async fn hash_get_all_with_ttl_from_master(
        &self,
        key: &str,
    ) -> Result<Option<(HashMap<String, String>, Option<u64>)>, RedisClientError> {
        Self::fields_and_ttl(&self.primary, key).await
    }

    /// Whether loads may be answered by a replica (`redis.read_from_replicas`
    /// on Sentinel).
    pub fn reads_from_replicas(&self) -> bool {
        self.replica.is_some()
    }

    async fn fields_and_ttl(
        lane: &Lane,
        key: &str,
    ) -> Result<Option<(HashMap<String, String>, Option<u64>)>, RedisClientError> {
        let (fields, ttl_ms): (HashMap<String, String>, i64) = if lane.cluster {
            let call = ScriptCall::new(&HASH_WITH_TTL, &[key]);
            lane.read(Request::Script(&call)).await?
        } else {
            let mut pipeline = redis::pipe();
            pipeline.cmd("HGETALL").arg(key).cmd("PTTL").arg(key);
            lane.read(Request::Pipeline(&pipeline)).await?
        };
        // Redis has no empty hashes: no fields means no key. PTTL is -1 for
        // a key without expiry, -2 for no key.
        Ok((!fields.is_empty()).then(|| (fields, u64::try_from(ttl_ms).ok())))
    }

    /// Runs a Lua script with `EVALSHA` (one round trip). If the server does
    /// not know the script (restarted, flushed, or a new node after a
    /// failover), it loads the script and sends the call once more.
    ///
    /// Callers build the call with [`ScriptCall`]; every key must hash to
    /// one slot for the script to run on Redis Cluster. `retry` says whether
    /// the script may run twice: see [`Retry`]. (`NOSCRIPT` proves the
    /// script did not run, so the second send is always safe.)
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Rejected`] if the script raised an error,
    /// [`RedisClientError::BadReply`] if its reply is not a `T`, else
    /// [`RedisClientError::Unavailable`].
    pub async fn run_script<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
        retry: Retry,
    ) -> Result<T, RedisClientError> {
        self.primary.execute(Request::Script(call), retry).await
    }

    /// Loads `script` into Redis's script cache (`SCRIPT LOAD`), so that the
    /// first [`RedisService::run_script`] after start-up costs one round trip.
    ///
    /// # Errors
    ///
    /// As [`RedisService::run_script`].
    pub async fn load_script(&self, script: &Script) -> Result<(), RedisClientError> {
        let _sha: String = self
            .primary
            .execute(Request::Load(script), Retry::Idempotent)
            .await?;
        Ok(())
    }

    /// Loads the script of each of `sources` (`SCRIPT LOAD`): in one
    /// pipelined round trip on a single server or Sentinel, one load each
    /// (sent to every master) on Redis Cluster.
    ///
    /// # Errors
    ///
    /// As [`RedisService::load_script`].
    pub async fn load_scripts(&self, sources: &[&str]) -> Result<(), RedisClientError> {
        if self.primary.cluster {
            for source in sources {
                self.load_script(&Script::new(source)).await?;
            }
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for source in sources {
            pipeline.cmd("SCRIPT").arg("LOAD").arg(*source);
        }
        let _shas: Vec<String> = self
            .primary
            .execute(Request::Pipeline(&pipeline), Retry::Idempotent)
            .await?;
        Ok(())
    }

    /// Sets the key's TTL (`EXPIRE`). Returns false if the key does not exist.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Unavailable`] when Redis does not answer.
    pub async fn expire(&self, key: &str, ttl_secs: u64) -> Result<bool, RedisClientError> {
        let mut command = redis::cmd("EXPIRE");
        command.arg(key).arg(ttl_secs);
        self.query(&command).await
    }

    /// Deletes the key (`UNLINK`: the memory is freed off the main thread).
    /// Returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Unavailable`] when Redis does not answer.
    pub async fn delete(&self, key: &str) -> Result<bool, RedisClientError> {
        let mut command = redis::cmd("UNLINK");
        command.arg(key);
        let removed: i64 = self.query(&command).await?;
        Ok(removed > 0)
    }

    /// Whether [`RedisService::delete_durably`] and
    /// [`RedisService::run_script_durably`] wait for a replica: on Sentinel
    /// and Cluster, unless `redis.durable_write_timeout_ms` is 0.
    pub fn waits_for_replicas(&self) -> bool {
        self.primary.durable.is_some()
    }

    /// [`RedisService::delete`], then, on Sentinel and Cluster, `WAIT 1`
    /// for a replica to confirm it, so that a failover cannot bring the key
    /// back. On a single server (or with `redis.durable_write_timeout_ms =
    /// 0`) it is a plain delete.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Unavailable`] if no replica confirmed within
    /// `redis.durable_write_timeout_ms`: the master deleted the key, but a
    /// failover now could undo it, so the caller must not report success.
    pub async fn delete_durably(&self, key: &str) -> Result<bool, RedisClientError> {
        Ok(self.delete_all_durably(&[key]).await? > 0)
    }

    /// [`RedisService::delete_durably`] of several keys in ONE `UNLINK`
    /// (atomic: no command runs between the deletes); how many existed. On
    /// Redis Cluster the keys must share a slot (else `CROSSSLOT`).
    ///
    /// # Errors
    ///
    /// As [`RedisService::delete_durably`].
    pub async fn delete_all_durably(&self, keys: &[&str]) -> Result<u64, RedisClientError> {
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let mut command = redis::cmd("UNLINK");
        command.arg(keys);
        let removed: i64 = match &self.primary.durable {
            Some(durable) => self.primary.durable(&command, None, first, durable).await?,
            None => self.query(&command).await?,
        };
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// [`RedisService::run_script`], then, on Sentinel and Cluster, `WAIT 1`
    /// for a replica to confirm it; `key` names the slot on a cluster. Sent
    /// again only when Redis proved it did not run (`READONLY`, `NOSCRIPT`,
    /// `TRYAGAIN`...): never after a dropped connection or a timeout.
    ///
    /// # Errors
    ///
    /// As [`RedisService::run_script`], and as
    /// [`RedisService::delete_durably`] when no replica confirmed.
    pub async fn run_script_durably<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
        key: &str,
    ) -> Result<T, RedisClientError> {
        let Some(durable) = &self.primary.durable else {
            return self.run_script(call, Retry::NotIdempotent).await;
        };
        self.primary
            .durable(call.command(), Some(call.script()), key, durable)
            .await
    }

    /// The remaining TTL of a key in seconds (`TTL`): `None` if the key does
    /// not exist or has no expiry.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::Unavailable`] when Redis does not answer.
    pub async fn ttl(&self, key: &str) -> Result<Option<u64>, RedisClientError> {
        let mut command = redis::cmd("TTL");
        command.arg(key);
        let seconds: i64 = self.primary.read(Request::Command(&command)).await?;
        Ok(u64::try_from(seconds).ok())
    }

    /// Every plain command this service sends is idempotent.
    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, RedisClientError> {
        self.primary
            .execute(Request::Command(command), Retry::Idempotent)
            .await
    }

    /// Closes the pools: idle connections are dropped, and every later call
    /// fails at once with "the pool is closed". For a graceful shutdown,
    /// after the last request.
    pub fn close(&self) {
        if let Some(watchers) = &self.watchers {
            watchers.close();
        }
        self.primary.pool.close();
        if let Some(durable) = &self.primary.durable {
            durable.pool.close();
        }
        if let Some(replica) = &self.replica {
            replica.pool.close();
        }
    }
}

impl Lane {
    /// Sends the request, and once more on a new connection when `retry`
    /// and the failure allow it.
    async fn execute<T: FromRedisValue>(
        &self,
        request: Request<'_>,
        retry: Retry,
    ) -> Result<T, RedisClientError> {
        self.execute_as(request, retry, true).await
    }

    /// [`Lane::execute`] for a read-only request: sent even while the
    /// Sentinels promote a replica, since the master still has every write
    /// it acknowledged and a read loses nothing.
    async fn read<T: FromRedisValue>(&self, request: Request<'_>) -> Result<T, RedisClientError> {
        self.execute_as(request, Retry::Idempotent, false).await
    }

    async fn execute_as<T: FromRedisValue>(
        &self,
        request: Request<'_>,
        retry: Retry,
        writes: bool,
    ) -> Result<T, RedisClientError> {
        match self.attempt(request, writes).await {
            Err(error) if retry.allows_another_try_after(&error) => {
                metrics::counter!(metric_names::RETRIES_TOTAL).increment(1);
                log::debug!("retrying once on a new connection after: {error}");
                self.attempt(request, writes).await
            }
            result => result,
        }
    }

    /// Checks out a connection, sends one request, and keeps the pool healthy.
    async fn attempt<T: FromRedisValue>(
        &self,
        request: Request<'_>,
        writes: bool,
    ) -> Result<T, RedisClientError> {
        if writes {
            self.check_failover()?;
        }
        let shared = self.connection().await.map_err(count_error)?;
        if writes {
            // Again: opening a connection can take a while, and a promotion
            // may have begun meanwhile.
            self.check_failover()?;
        }
        let mut connection = shared.connection.clone();
        let started = Instant::now();
        let reply: Result<T, RedisError> = send(request, &mut connection).await;
        metrics::histogram!(metric_names::ROUND_TRIP_SECONDS).record(started.elapsed());
        let result = reply.map_err(|error| count_error(RedisClientError::from(error)));
        // Any answer proves the connection alive, an error reply too.
        if result
            .as_ref()
            .err()
            .is_none_or(|error| !error.breaks_connection())
        {
            shared.touch(started);
        }
        if let Err(error) = &result
            && error.breaks_connection()
        {
            // Never hand a broken or timed-out connection to the next request.
            shared.mark_broken();
        }
        result
    }

    /// Sends `request` and `WAIT 1 <ms>` as ONE pipeline on a connection of
    /// the durable pool: one round trip, and the WAIT is sure to run on the
    /// client, and the node, that took the write (WAIT counts the replicas
    /// that have this client's writes; sent apart, on a cluster whose slot
    /// moved in between, it could count another node's replicas). Sent
    /// again only when Redis proved the write did not run (`READONLY` from a
    /// master demoted under us, `NOSCRIPT`, `TRYAGAIN`...).
    async fn durable<T: FromRedisValue>(
        &self,
        write: &Cmd,
        script: Option<&Script>,
        key: &str,
        durable: &Durable,
    ) -> Result<T, RedisClientError> {
        match self.durable_attempt(write, script, key, durable).await {
            Err(error) if error.proves_not_run() => {
                metrics::counter!(metric_names::RETRIES_TOTAL).increment(1);
                log::debug!("retrying a durable write once on a new connection after: {error}");
                self.durable_attempt(write, script, key, durable).await
            }
            result => result,
        }
    }

    /// `write` is a plain command, or the EVALSHA of `script`.
    async fn durable_attempt<T: FromRedisValue>(
        &self,
        write: &Cmd,
        script: Option<&Script>,
        key: &str,
        durable: &Durable,
    ) -> Result<T, RedisClientError> {
        self.check_failover()?;
        let object = durable
            .pool
            .get()
            .await
            .map_err(pool_error)
            .map_err(count_error)?;
        let shared = SharedConnection::clone(&object);
        let mut connection = shared.connection.clone();
        let fail = |error: RedisError| {
            let error = count_error(RedisClientError::from(error));
            if error.breaks_connection() {
                shared.mark_broken();
            }
            error
        };
        self.check_failover()?; // again, after a wait for a connection
        let mut pipeline = redis::pipe();
        pipeline
            .add_command(write.clone())
            .cmd("WAIT")
            .arg(1)
            .arg(u64::try_from(durable.wait.as_millis()).unwrap_or(u64::MAX));
        let started = Instant::now();
        let mut replies = write_and_wait(&mut connection, &pipeline, key)
            .await
            .map_err(fail)?;
        if let (Some(script), Some(Err(error))) = (script, replies.first().map(reply_error))
            && error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
        {
            // The WAIT after it confirmed nothing. Load, and send both again.
            script.load_async(&mut connection).await.map_err(fail)?;
            replies = write_and_wait(&mut connection, &pipeline, key)
                .await
                .map_err(fail)?;
        }
        metrics::histogram!(metric_names::ROUND_TRIP_SECONDS).record(started.elapsed());
        shared.touch(started);
        let mut replies = replies.into_iter();
        let (Some(written), Some(waited)) = (replies.next(), replies.next()) else {
            return Err(fail(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "a write and WAIT pipeline answered fewer than two replies",
            ))));
        };
        let reply = written
            .extract_error()
            .and_then(|value| T::from_redis_value(value).map_err(RedisError::from))
            .map_err(fail)?;
        // Whatever stopped the WAIT (a master demoted under it answers
        // UNBLOCKED, a timeout), the write is unconfirmed: a failover may
        // yet undo it. Unavailable, never a fault.
        let acknowledged = match waited
            .extract_error()
            .and_then(|value| i64::from_redis_value(value).map_err(RedisError::from))
        {
            Ok(count) => count,
            // An ACL without +wait: every logout would fail; say so.
            Err(error) if RedisClientError::from(error.clone()).is_misconfigured() => {
                return Err(fail(error));
            }
            Err(error) => {
                log::warn!("WAIT for a replica failed, so the write is unconfirmed: {error}");
                0
            }
        };
        // Back to the pool only now, after any `fail` above marked it.
        drop(object);
        if acknowledged < 1 {
            metrics::counter!(metric_names::DURABLE_WRITE_UNCONFIRMED_TOTAL).increment(1);
            return Err(count_error(RedisClientError::unavailable(format!(
                "no replica confirmed the write within {} ms (redis.durable_write_timeout_ms): a failover could undo it",
                durable.wait.as_millis()
            ))));
        }
        Ok(reply)
    }

    /// Refuses the call while the Sentinels are promoting a replica: the
    /// master it would reach is about to be demoted, and would throw its
    /// acknowledged writes away.
    fn check_failover(&self) -> Result<(), RedisClientError> {
        match &self.failover {
            Some(state) => state.check().map_err(count_error),
            None => Ok(()),
        }
    }

    /// A handle to this thread's connection (see `pool.rs`): the leased one,
    /// or, the first time, one leased now, opened on this thread.
    async fn connection(&self) -> Result<SharedConnection, RedisClientError> {
        if let Some(shared) = self.leased() {
            if shared.idle_for(Instant::now()) < self.idle_check_after {
                return Ok(shared);
            }
            // Idle for long: a NAT or a load balancer may have dropped it
            // without a word, and a request sent on it would wait out the
            // response timeout and fail. A PING finds out first.
            return Box::pin(self.probe_idle_lease(shared)).await;
        }
        // Boxed: opening a connection (TLS, cluster discovery, Sentinel) is a
        // large future. Inline, it would make every request's future that
        // large, and every request would pay to copy it.
        Box::pin(self.lease_or_open()).await
    }

    /// [`Lane::connection`] for a lease that sat idle: PING it, and replace
    /// it if it does not answer within the response timeout.
    async fn probe_idle_lease(
        &self,
        shared: SharedConnection,
    ) -> Result<SharedConnection, RedisClientError> {
        let mut connection = shared.connection.clone();
        let started = Instant::now();
        let pong: Result<String, RedisError> =
            redis::cmd("PING").query_async(&mut connection).await;
        if matches!(pong.as_deref(), Ok("PONG")) {
            shared.touch(started);
            return Ok(shared);
        }
        log::info!(
            "a Redis connection idle for {} ms did not answer PING; opening a new one",
            shared.idle_for(started).as_millis()
        );
        shared.mark_broken(); // `leased()` now drops it
        self.lease_or_open().await
    }

    /// [`Lane::connection`]'s slow path: this thread has no usable lease.
    /// Bounded as a whole by `wait_timeout_ms + connect_timeout_ms`, the
    /// wait for another request on this thread that is opening the
    /// connection included.
    async fn lease_or_open(&self) -> Result<SharedConnection, RedisClientError> {
        tokio::time::timeout(self.lease_budget, self.lease_or_open_unbounded())
            .await
            .map_err(|_| RedisClientError::unavailable(format!("{POOL_TIMEOUT} (lease)")))?
    }

    async fn lease_or_open_unbounded(&self) -> Result<SharedConnection, RedisClientError> {
        // One lease at a time per thread: a burst of requests at start-up
        // waits for the first to open the connection instead of each opening
        // one.
        let lock = LEASE_LOCK.with(Arc::clone);
        let _leasing = lock.lock().await;
        if let Some(shared) = self.leased() {
            return Ok(shared);
        }
        let here = std::thread::current().id();
        // At most twice: once to find an idle connection from another thread
        // (dropped, so the pool has room), once to open this thread's own.
        for _ in 0..2 {
            let object = self.pool.get().await.map_err(pool_error)?;
            let shared = SharedConnection::clone(&object);
            let status = self.pool.status();
            // Never lease the last connection: threads without a lease of
            // their own share what is left.
            let room_after_lease = status.available > 0 || status.size < status.max_size;
            if shared.opened_on == here {
                if room_after_lease {
                    LEASES.with_borrow_mut(|leases| leases.push((self.pool_id, object)));
                }
                return Ok(shared);
            }
            if status.size < status.max_size {
                // Another thread opened it and does not lease it: forget it
                // (requests holding handles finish on it), open one here.
                drop(Object::take(object));
                continue;
            }
            return Ok(shared); // full: share this one for now
        }
        let object = self.pool.get().await.map_err(pool_error)?;
        Ok(SharedConnection::clone(&object))
    }

    /// This thread's leased connection for this pool, unless it broke (then
    /// it is discarded) or the pool was closed.
    fn leased(&self) -> Option<SharedConnection> {
        LEASES.with_borrow_mut(|leases| {
            let index = leases.iter().position(|(id, _)| *id == self.pool_id)?;
            let usable = !leases[index].1.is_broken() && !self.pool.is_closed();
            if usable {
                return Some(SharedConnection::clone(&leases[index].1));
            }
            let (_, object) = leases.swap_remove(index);
            drop(Object::take(object));
            None
        })
    }
}

thread_local! {
    /// Held while this thread leases a connection.
    static LEASE_LOCK: Arc<tokio::sync::Mutex<()>> = Arc::new(tokio::sync::Mutex::new(()));
    /// The connection each pool leased to this thread, by pool id.
    static LEASES: RefCell<Vec<(u64, Object<ConnectionManager>)>> = const { RefCell::new(Vec::new()) };
}

/// A write and its WAIT, pipelined: on a cluster, to the master of `key`'s
/// slot. Each reply is handed back raw, errors included, for the caller to
/// tell a refused write from an unconfirmed one.
async fn write_and_wait(
    connection: &mut Connection,
    pipeline: &redis::Pipeline,
    key: &str,
) -> Result<Vec<redis::Value>, RedisError> {
    use redis::aio::ConnectionLike;
    match connection {
        Connection::Standalone(standalone) => standalone.req_packed_commands(pipeline, 0, 2).await,
        Connection::Cluster(cluster) => {
            let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
            cluster.route_pipeline(pipeline.clone(), 0, 2, route).await
        }
    }
}

/// The error a raw reply carries, if it is one.
fn reply_error(value: &redis::Value) -> Result<(), RedisError> {
    value.clone().extract_error().map(drop)
}

/// Tells pools apart in [`LEASES`]: an address could be reused.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(0);

/// Counts a failure by kind, and timeouts apart, then hands it on.
fn count_error(error: RedisClientError) -> RedisClientError {
    metrics::counter!(metric_names::ERRORS_TOTAL, "kind" => error.kind_label()).increment(1);
    if error.is_timeout() {
        metrics::counter!(metric_names::TIMEOUTS_TOTAL).increment(1);
    }
    error
}

fn pool_error(error: PoolError<RedisError>) -> RedisClientError {
    match error {
        PoolError::Backend(error) => RedisClientError::from(error),
        PoolError::Timeout(kind) => {
            RedisClientError::unavailable(format!("{POOL_TIMEOUT} ({kind:?})").to_lowercase())
        }
        PoolError::Closed => RedisClientError::unavailable("the pool is closed"),
        PoolError::NoRuntimeSpecified => {
            RedisClientError::unavailable("no async runtime for pool timeouts")
        }
        PoolError::PostCreateHook(error) => RedisClientError::unavailable(error.to_string()),
    }
}
