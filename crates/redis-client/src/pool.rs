//! Our deadpool manager for multiplexed Redis connections.
//!
//! Connections are SHARED and PER THREAD. Each thread that talks to Redis
//! (an actix worker, say) leases one connection from the pool, opened on that
//! thread, and keeps it; every request on the thread uses a handle to it
//! ([`SharedConnection`]). Many requests' commands then travel on one
//! connection, pipelined by redis-rs, so Redis and the app make one `read`
//! and one `write` for a batch of requests instead of one each; and the
//! connection's driver task runs on the same thread as the requests, so no
//! request wakes another thread. Both were found by profiling: see
//! `benches/results/`. The pool still opens, checks and replaces the
//! connections; a connection that failed is flagged
//! [`SharedConnection::mark_broken`] and replaced at once.
//!
//! Why not `deadpool_redis::Manager`: its `recycle` sends `UNWATCH` + `PING`
//! every time a connection leaves the pool. That is a second round trip on
//! every request, doubling the latency a session costs. This manager trusts a
//! connection that was in use recently, because [`crate::RedisService`] takes
//! every connection whose command failed out of the pool for good, and it
//! PINGs only those that sat idle long enough for a NAT, a firewall or a
//! server restart to have cut them. We never use WATCH, so UNWATCH is not needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, RedisError, aio::MultiplexedConnection,
};

use crate::{RedisClientError, RedisSettings};

/// The pool of connections, as handed around inside a [`crate::RedisService`].
pub(crate) type Pool = managed::Pool<ConnectionManager>;

/// Opens connections with the configured timeouts and recycles them cheaply.
pub(crate) struct ConnectionManager {
    /// Parsed once from `redis.url`; opening a connection reuses it.
    client: Client,
    /// Connect and response timeouts applied to every new connection.
    connection_config: AsyncConnectionConfig,
    /// Idle time after which a connection is PINGed before reuse.
    idle_check_after: Duration,
}

impl ConnectionManager {
    fn new(settings: &RedisSettings) -> Result<Self, RedisClientError> {
        let client = Client::open(settings.url.as_str()).map_err(|error| {
            // The parse error may quote the URL; never let it carry the password.
            RedisClientError::InvalidSettings(format!(
                "redis.url is not a valid Redis URL ({}): {}",
                error.category(),
                settings.redacted_url()
            ))
        })?;
        Ok(Self {
            client,
            connection_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout()))
                .set_response_timeout(Some(settings.response_timeout())),
            idle_check_after: Duration::from_millis(settings.idle_check_after_ms),
        })
    }
}

/// One multiplexed connection, shared by every request that holds a clone,
/// and whether one of them saw it fail.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    pub(crate) connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    /// The thread whose runtime runs the connection's driver task.
    pub(crate) opened_on: ThreadId,
}

impl SharedConnection {
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// A command on this connection failed in a way that leaves it unusable
    /// (I/O, timeout): the pool replaces it at its next checkout.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

impl managed::Manager for ConnectionManager {
    type Type = SharedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<SharedConnection, RedisError> {
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.connection_config)
            .await?;
        Ok(SharedConnection {
            connection,
            broken: Arc::new(AtomicBool::new(false)),
            opened_on: std::thread::current().id(),
        })
    }

    async fn recycle(
        &self,
        shared: &mut SharedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if shared.is_broken() {
            return Err(RecycleError::message("a command on it failed"));
        }
        if metrics.last_used() < self.idle_check_after {
            return Ok(());
        }
        let reply: String = redis::cmd("PING")
            .query_async(&mut shared.connection)
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(RecycleError::message("unexpected reply to PING"))
        }
    }
}

/// Builds the pool. Connects lazily: no I/O happens here.
pub(crate) fn build_pool(settings: &RedisSettings) -> Result<Pool, RedisClientError> {
    let manager = ConnectionManager::new(settings)?;
    Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout()))
        .create_timeout(Some(settings.connect_timeout()))
        .recycle_timeout(Some(settings.response_timeout()))
        .build()
        .map_err(|error| {
            RedisClientError::InvalidSettings(format!("cannot build the Redis pool: {error}"))
        })
}
